"""Checkpoint manifest, installed as `tinyprompt.weights` (read by `tinyprompt.hub`).

`manifest.json` lists OpenAI's nine released CLIP checkpoints, in the order of openai/CLIP's
`clip/clip.py` `_MODELS`. Per model:
- `name`: the name `tinyprompt.load` accepts ("ViT-B/32"); `file`: OpenAI's file name ("ViT-B-32.pt"),
  also the name looked up in OpenAI's own cache `~/.cache/clip`;
- `url`: OpenAI's download address; `sha256`: the file's digest, which is also the URL's
  second-to-last path component (that is how OpenAI's loader verifies it);
- `approx_size_bytes`: the tensor payload of the archive (fp16 Conv/Linear/projection weights, fp32
  the rest), within ~1 MB of the file size; `input_resolution`: the image side the model expects.

Checkpoint binaries are never committed: `tinyprompt.load(name)` downloads them into the cache folder
($TINYPROMPT_CACHE, default ~/.cache/tinyprompt) and uses them only after the sha256 matches.
"""
