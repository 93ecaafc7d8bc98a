"""`tinyprompt models`: the names `--model` takes, their download sizes, and which are on this machine.

The named checkpoints are OpenAI's released CLIP models ("Learning Transferable Visual Models From Natural
Language Supervision", Radford et al., arXiv 2103.00020), listed by `weights/manifest.json`, and with --open-clip
also open_clip's pretrained tags that tinyprompt builds ("ViT-B-32/laion2b_s34b_b79k", `weights/open_clip.json`).
A model is cached when its file is in the tinyprompt cache or OpenAI's `~/.cache/clip` (its sha256 is checked when
it is loaded, see `tinyprompt.hub`). A tag trained with other image preprocessing than OpenAI's says which (its
model and preprocess follow it). Built-in models ship inside the package and are never downloaded.
"""
from tinyprompt.hub import (BUILTIN_MODELS, available_models, builtin_file, builtin_record, cached_checkpoint,
                            manifest_entry, open_clip_preprocessing)
from tinyprompt.transforms import OPENAI_PREPROCESSING


def _size(n_bytes: int) -> str:
    if n_bytes >= 1e10:  # open_clip's largest (ViT-bigG-14, 10 GB): keep the column 7 wide
        return f"{n_bytes / 1e9:.1f} GB"
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes < 1e7 else f"{n_bytes / 1e6:.0f} MB"


def add_args(parser) -> None:
    """The command only reads the manifests and looks for local files."""
    parser.add_argument("--open-clip", action="store_true",
                        help="also list open_clip's pretrained tags that tinyprompt builds (ARCH/TAG, after OpenAI's "
                             "names); sizes of Hugging Face files are estimates (4 bytes per weight)")


def run(args) -> int:
    rows = []
    for name in available_models(open_clip=args.open_clip):
        path = cached_checkpoint(name)
        where = f"cached: {path}" if path is not None else "not cached: downloaded on first use"
        own = open_clip_preprocessing(name)
        if own != OPENAI_PREPROCESSING:
            where += f"; its own preprocessing: {own.resize_mode} resize, mean {own.mean}, std {own.std}"
        rows.append((name, _size(manifest_entry(name)["approx_size_bytes"]), where))
    for name in BUILTIN_MODELS:
        where = f"built in, with its own {builtin_record(name)['vocab_size']}-token vocabulary"
        rows.append((name, _size(builtin_file(name).stat().st_size), where))
    width = max(len(name) for name, _, _ in rows)
    print(f"{'model':<{width}}  {'size':>7}  on this machine")
    for name, size, where in rows:
        print(f"{name:<{width}}  {size:>7}  {where}")
    print("--model also takes a checkpoint path (an OpenAI .pt archive or a saved state dict).")
    return 0
