"""Checkpoint manifest (`manifest.json`: name, file, url, sha256, size), installed as `tinyprompt.weights`.

Checkpoint binaries are never committed: `tinyprompt.load(name)` downloads them into the cache folder
($TINYPROMPT_CACHE, default ~/.cache/tinyprompt), verified against the sha256 listed here.
"""
