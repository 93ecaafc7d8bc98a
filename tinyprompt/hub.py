"""Checkpoints by name or by path: OpenAI's nine CLIP models, verified downloads, and loading.

CLIP: "Learning Transferable Visual Models From Natural Language Supervision" (Radford et al.,
arXiv 2103.00020). The released checkpoints are TorchScript archives; like OpenAI's loader
(`clip.load(..., jit=False)`) we take the archive's `state_dict()` and build our own modules from it,
so the same code also loads a plain state dict. Two deliberate differences from OpenAI's loader:
weights stay fp32 (the archives' fp16 tensors are widened exactly), and downloads go through
`tinyprompt.io.download` (temporary file, atomic rename, sha256, resume) so a partial or corrupt
file is never loaded.

Where a named checkpoint comes from, in order: `download_root` (default: the `clip` folder of the
tinyprompt cache, $TINYPROMPT_CACHE), then OpenAI's own cache `~/.cache/clip`, each used only when
its sha256 matches the manifest; else a download into `download_root` (never with
TINYPROMPT_OFFLINE=1).

Built-in models ship inside the package and are never downloaded: "synthetic", the tiny CLIP pre-trained
on tinyprompt's synthetic world (`tinyprompt.commands.pretrain_synthetic`), described by `weights/synthetic.json`
(its files and their sha256). Its preprocess also takes uint8 RGB tensors, and it carries its own BPE
vocabulary as `model.tokenizer` (what `tinyprompt.tokenize_for(model, texts)` and every method use), loaded
by name or by the path of a copy of its file (recognised by size and sha256).
"""
import functools
import importlib.resources
import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from tinyprompt.clip import build_model
from tinyprompt.io import cache_dir, download, sha256_file
from tinyprompt.tokenizer import get_tokenizer
from tinyprompt.transforms import clip_preprocess, preprocess_tensor

__all__ = ["available_models", "load", "checkpoint_file", "cached_checkpoint", "builtin_file", "builtin_record",
           "manifest_entry", "BUILTIN_MODELS"]

BUILTIN_MODELS = ("synthetic",)  # shipped in tinyprompt/weights as <name>.json + its files


@functools.lru_cache(maxsize=None)
def _manifest() -> dict:
    """name -> manifest entry (file, url, sha256, approx_size_bytes, input_resolution)."""
    text = importlib.resources.files("tinyprompt.weights").joinpath("manifest.json").read_text(encoding="utf-8")
    return {entry["name"]: entry for entry in json.loads(text)["models"]}


def available_models() -> list[str]:
    """Names `load` accepts, e.g. "ViT-B/32" (any checkpoint path is accepted too)."""
    return list(_manifest())


def manifest_entry(name: str) -> dict:
    """The manifest entry of model `name`: file, url, sha256, approx_size_bytes, input_resolution."""
    if name not in _manifest():
        raise _unknown(name)
    return _manifest()[name]


def _unknown(name: str) -> ValueError:
    return ValueError(
        f"unknown model {name!r}: it is neither one of {available_models() + list(BUILTIN_MODELS)} nor an existing file. "
        f"Pass a model name or the path to a checkpoint (OpenAI .pt archive or a saved state dict)."
    )


def _openai_cache() -> Path:
    return Path.home() / ".cache" / "clip"


def _local_paths(name: str, download_root=None) -> list[Path]:
    """Where manifest model `name` may be on disk, in the order tried; the first is the download target."""
    file = manifest_entry(name)["file"]
    root = Path(download_root) if download_root is not None else cache_dir() / "clip"
    return list(dict.fromkeys([root / file, _openai_cache() / file]))  # dedupe, keep order


def cached_checkpoint(name: str, download_root=None) -> Path | None:
    """The file on disk that `load(name)` would try first, or None (not verified here: `load` checks its sha256)."""
    return next((path for path in _local_paths(name, download_root) if path.is_file()), None)


def checkpoint_file(name: str, download_root=None) -> Path:
    """The verified local file of manifest model `name`: reused from disk, else downloaded.

    A file on disk whose sha256 differs from the manifest is never loaded: it is reported with a
    warning and (in `download_root`) replaced by the download.
    """
    entry, paths = manifest_entry(name), _local_paths(name, download_root)
    for candidate in paths:
        if not candidate.is_file():
            continue
        got = sha256_file(candidate)  # ~1 s per 500 MB; cheap next to building the model
        if got == entry["sha256"]:
            return candidate
        warnings.warn(
            f"{candidate} has sha256 {got}, expected {entry['sha256']} for {name}: it is incomplete or "
            f"corrupt and is not used", stacklevel=2,
        )
    return download(entry["url"], paths[0], entry["sha256"])


@functools.lru_cache(maxsize=None)
def builtin_record(name: str) -> dict:
    """The <name>.json of built-in model `name`: its files, their sha256, vocab_size, how it was made."""
    if name not in BUILTIN_MODELS:
        raise _unknown(name)
    text = importlib.resources.files("tinyprompt.weights").joinpath(f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text)


def builtin_file(name: str, kind: str = "file") -> Path:
    """A file of built-in model `name` ("file": the state dict, "bpe": the merges), checked against the
    sha256 its <name>.json records."""
    record = builtin_record(name)
    path = Path(str(importlib.resources.files("tinyprompt.weights").joinpath(record[kind])))
    got = sha256_file(path) if path.is_file() else "missing"
    if got != record[f"{kind}_sha256" if kind != "file" else "sha256"]:
        raise ValueError(f"{path} (sha256 {got}) does not match {name}.json: rebuild it with `{record['reproduce']}` "
                         f"or restore it from the repository")
    return path


def _builtin_copy(path: Path) -> str | None:
    """The built-in model whose state dict `path` holds byte for byte (size, then sha256), else None."""
    for name in BUILTIN_MODELS:
        own = builtin_file(name)
        if path.stat().st_size == own.stat().st_size and sha256_file(path) == builtin_record(name)["sha256"]:
            return name
    return None


@dataclass(frozen=True)
class AnyImagePreprocess:
    """CLIP preprocessing of PIL images and of uint8 RGB tensors (3, H, W) / (N, 3, H, W) alike."""

    n_px: int

    def __call__(self, image) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            return preprocess_tensor(image, self.n_px)
        return clip_preprocess(self.n_px)(image)


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a `constants.pkl` (torch.save zips have none)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(member.endswith("/constants.pkl") for member in archive.namelist())


def _read_checkpoint(path: Path):
    """What `path` holds: an OpenAI TorchScript archive's state_dict(), else torch.load(weights_only=True).

    A {"state_dict": ...} wrapper (training checkpoints) is unwrapped; build_model strips DDP's "module." prefix
    and checks the rest.
    """
    if _is_torchscript(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates torch.jit.load
            return torch.jit.load(str(path), map_location="cpu").state_dict()
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # whatever torch.load fails with, the file is not a checkpoint we can read
        reason = str(e).partition("\n")[0]
        raise ValueError(
            f"{path} is not a CLIP checkpoint: it is neither an OpenAI TorchScript archive nor a file "
            f"torch.load(weights_only=True) can read ({type(e).__name__}: {reason}). "
            f"Pass one of {available_models()} or a file saved with torch.save(model.state_dict(), path)."
        ) from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        return state["state_dict"]
    return state


def load(name_or_path, device="cpu", download_root=None):
    """(model, preprocess) for a model name from `available_models()`, a built-in name ("synthetic"),
    or a checkpoint path.

    The model is fp32, in eval mode, on `device`; `preprocess` maps a PIL image to the model's
    normalised input tensor `(3, R, R)`, R = `model.visual.input_resolution` (a built-in model's
    also maps uint8 tensors (3, H, W) or (N, 3, H, W)). A built-in model, by name or by path, carries its
    own tokenizer as `model.tokenizer`; OpenAI's models have none and read OpenAI's BPE vocabulary.
    A file that is not a released OpenAI archive loads with OpenAI's activation and head width and a warning:
    an open_clip checkpoint needs its model config, `build_model(state_dict, open_clip.get_model_config(name))`.
    """
    key = os.fspath(name_or_path)
    builtin = key if key in BUILTIN_MODELS else None
    if builtin:
        path = builtin_file(key)
    elif key in _manifest():
        path = checkpoint_file(key, download_root)
    elif os.path.isfile(key):
        path = Path(key)
        builtin = _builtin_copy(path)  # a built-in by path is the same model: its own tokenizer and preprocess
    else:
        raise _unknown(key)
    state_dict = _read_checkpoint(path)
    # a name is a checkpoint of OpenAI's or tinyprompt's CLIP code: OpenAI's activation and head width, no warning;
    # a file is recognised by its shapes, else build_model warns that they cannot tell
    config = "openai" if builtin or key in _manifest() else None
    try:
        model = build_model(state_dict, config)  # fp32 (the archives' fp16 tensors widen exactly), eval mode
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"{path}: {e}") from e
    model = model.to(device)
    if builtin:  # its own vocabulary: everything tokenizes through `tokenizer.model_tokenizer(model)`
        model.tokenizer = get_tokenizer(builtin_file(builtin, "bpe"))
    n_px = model.visual.input_resolution
    return model, AnyImagePreprocess(n_px) if builtin else clip_preprocess(n_px)
