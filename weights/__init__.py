"""Checkpoint manifest, installed as `tinyprompt.weights` (read by `tinyprompt.hub`).

`manifest.json` lists OpenAI's nine released CLIP checkpoints, in the order of openai/CLIP's
`clip/clip.py` `_MODELS`. Per model:
- `name`: the name `tinyprompt.load` accepts ("ViT-B/32"); `file`: OpenAI's file name ("ViT-B-32.pt"),
  also the name looked up in OpenAI's own cache `~/.cache/clip`;
- `url`: OpenAI's download address; `sha256`: the file's digest, which is also the URL's
  second-to-last path component (that is how OpenAI's loader verifies it);
- `approx_size_bytes`: the tensor payload of the archive (fp16 Conv/Linear/projection weights, fp32
  the rest), within ~1 MB of the file size; `input_resolution`: the image side the model expects.

`open_clip.json` lists open_clip's pretrained tags (github.com/mlfoundations/open_clip, `open_clip.list_pretrained()`)
whose architecture tinyprompt's CLIP builds exactly (`CLIPConfig.from_open_clip` accepts its model config), all 96 of
them, in open_clip's order. It was written from open_clip 3.3.0's `pretrained.py` and `model_configs/*.json` by a
one-off script. `configs`: architecture -> open_clip's model config, verbatim
(`open_clip.get_model_config(arch)`), shared by the tags of that architecture. Per tag, in `models`:
- `name`: "<architecture>/<tag>" ("ViT-B-32/laion2b_s34b_b79k"), what `tinyprompt.load` accepts;
  `config`: its architecture, a key of `configs`;
- `quick_gelu`: the activation the weights were trained with (open_clip's tag records it; it overrides the config's,
  e.g. OpenAI's ViT-B-32 weights are QuickGELU where open_clip's "ViT-B-32" config says GELU);
- `url`, `file`, `sha256`: where the weights come from. open_clip's `url` where its full sha256 is known offline
  (OpenAI's archives: `file` and `sha256` as in `manifest.json`, the same file on disk); else the Hugging Face file
  open_clip downloads without the safetensors package, https://huggingface.co/<repo>/resolve/main/<filename> from
  open_clip's `hf_hub` "<repo>/<filename>" (filename "open_clip_pytorch_model.bin" where it names none), `file`
  "<repo>/<filename>" under the download folder and `sha256` null: the server states it when the file is
  downloaded (see `tinyprompt.hub`). open_clip's other URLs carry no digest (dl.fbaipublicfiles.com) or only an
  8-hex prefix of it (its GitHub releases, "...-d867053b.pt"); every such tag has a Hugging Face file too;
- `approx_size_bytes`: the file size (OpenAI's archives, as in `manifest.json`) or, for Hugging Face files, 4 bytes
  per element of the fp32 state dict;
- `preprocess` (only where it is not OpenAI's: mean, std, bicubic resize of the shortest side and centre crop): the
  image `mean`, `std` and `resize_mode` of open_clip's pretrained config, which `load` gives the model and its
  preprocess (`tinyprompt.transforms.Preprocessing`): ViT-L-14/laion2b_s32b_b82k normalises with mean = std = 0.5,
  the four DFN5B ViT-H-14 tags resize by squashing (both sides to the input size, no crop).

Checkpoint binaries are never committed: `tinyprompt.load(name)` downloads them into the cache folder
($TINYPROMPT_CACHE, default ~/.cache/tinyprompt) and uses them only after the sha256 matches.
"""
