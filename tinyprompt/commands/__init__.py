"""Everything a user types: `tinyprompt COMMAND` (cli.py wires them) and the per-method training recipes.

Each command module has `add_args(parser)` and `run(args)`; the library below (`tinyprompt.*` outside this
folder) never imports from here.
"""
