"""Checkpoints by name or by path: OpenAI's nine CLIP models, open_clip's pretrained tags, verified downloads, loading.

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

open_clip (github.com/mlfoundations/open_clip) trains the same towers; `weights/open_clip.json` lists its pretrained
tags whose towers tinyprompt's CLIP builds ("ViT-B-32/laion2b_s34b_b79k"), each with the architecture's model config,
so loading needs no open_clip. They load like OpenAI's names, from the same folders, with one difference in
verification: most are files on Hugging Face, whose sha256 open_clip's table does not record. For those the expected
digest is the one the server states in the `X-Linked-Etag` header of its answer to a HEAD request (what
huggingface_hub verifies against), recorded beside the verified file as `<file>.sha256` for later loads. A server
that states no sha256 gets its file refused, and a file on disk that nothing verifies is not used: tinyprompt never
loads a named checkpoint it could not verify (a path is the user's own file, loaded as it is). A tag whose images
were normalised or resized otherwise than OpenAI's (open_clip's pretrained config: ViT-L-14/laion2b_s32b_b82k,
mean = std = 0.5; the DFN5B ViT-H-14 tags, "squash" resizing) carries that as "preprocess" in the manifest: its
model's `preprocessing` and the returned preprocess follow it, as do the recipes' image transforms.

Built-in models ship inside the package and are never downloaded: "synthetic", the tiny CLIP pre-trained
on tinyprompt's synthetic world (`tinyprompt.commands.pretrain_synthetic`), described by `weights/synthetic.json`
(its files and their sha256). Its preprocess also takes uint8 RGB tensors, and it carries its own BPE
vocabulary as `model.tokenizer` (what `tinyprompt.tokenize_for(model, texts)` and every method use), loaded
by name or by the path of a copy of its file (recognised by size and sha256).
"""
import copy
import difflib
import functools
import http.client
import importlib.resources
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from tinyprompt.clip_checkpoint import build_model
from tinyprompt.io import atomic_write, cache_dir, download, offline, sha256_file
from tinyprompt.tokenizer import get_tokenizer
from tinyprompt.transforms import OPENAI_PREPROCESSING, Preprocessing, clip_preprocess, preprocess_tensor

__all__ = ["available_models", "load", "checkpoint_file", "cached_checkpoint", "builtin_file", "builtin_record",
           "manifest_entry", "open_clip_config", "open_clip_preprocessing", "BUILTIN_MODELS"]

BUILTIN_MODELS = ("synthetic",)  # shipped in tinyprompt/weights as <name>.json + its files


@functools.lru_cache(maxsize=None)
def _manifest() -> dict:
    """name -> manifest entry (file, url, sha256, approx_size_bytes, input_resolution)."""
    text = importlib.resources.files("tinyprompt.weights").joinpath("manifest.json").read_text(encoding="utf-8")
    return {entry["name"]: entry for entry in json.loads(text)["models"]}


@functools.lru_cache(maxsize=None)
def _open_clip() -> dict:
    """weights/open_clip.json as {"configs": architecture -> open_clip model config, "models": name -> entry
    (config, quick_gelu, file, url, sha256 or None, approx_size_bytes)}."""
    text = importlib.resources.files("tinyprompt.weights").joinpath("open_clip.json").read_text(encoding="utf-8")
    table = json.loads(text)
    return {"configs": table["configs"], "models": {entry["name"]: entry for entry in table["models"]}}


def available_models(open_clip: bool = False) -> list[str]:
    """Names `load` accepts: OpenAI's nine ("ViT-B/32"); with `open_clip=True`, then open_clip's pretrained tags
    that tinyprompt builds ("ViT-B-32/laion2b_s34b_b79k"). Any checkpoint path is accepted too."""
    return list(_manifest()) + (list(_open_clip()["models"]) if open_clip else [])


def manifest_entry(name: str) -> dict:
    """The manifest entry of model `name`: file, url, sha256 (None: the server states it), approx_size_bytes; an
    OpenAI name's also input_resolution, an open_clip tag's its config and quick_gelu."""
    entry = _manifest().get(name) or _open_clip()["models"].get(name)
    if entry is None:
        raise _unknown(name)
    return entry


def open_clip_config(name: str) -> dict:
    """open_clip's model config, for `build_model` or `load(path, config=...)`, of an architecture of the open_clip
    manifest ("ViT-B-32", as `open_clip.get_model_config`), of a pretrained tag ("ViT-B-32/laion400m_e31": the
    architecture's, with the activation those weights were trained with, which open_clip's tag records), or in a
    model-config .json file (open_clip's model_configs/*.json)."""
    if name.endswith(".json"):
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"model config {path} does not exist: pass open_clip's model-config .json, or an "
                                    f"architecture name such as ViT-B-32")  # fmt: skip
        return json.loads(path.read_text(encoding="utf-8"))
    table = _open_clip()
    if name in table["models"]:
        entry = table["models"][name]
        return {**copy.deepcopy(table["configs"][entry["config"]]), "quick_gelu": entry["quick_gelu"]}
    if name in table["configs"]:
        return copy.deepcopy(table["configs"][name])
    raise ValueError(f"unknown open_clip architecture {name!r}: config takes one of {list(table['configs'])}, a "
                     f"pretrained tag such as 'ViT-B-32/laion2b_s34b_b79k', 'openai', or open_clip's model config "
                     f"dict (open_clip.get_model_config(name))")


def open_clip_preprocessing(name: str) -> Preprocessing:
    """The image preprocessing open_clip's pretrained tag `name` was trained with (its manifest "preprocess": mean,
    std, resize mode), OpenAI's for a tag that states none and for anything that is not a tag (an architecture's
    model config says nothing about images: open_clip then uses OpenAI's too)."""
    spec = _open_clip()["models"].get(name, {}).get("preprocess")
    return Preprocessing(**spec) if spec else OPENAI_PREPROCESSING


def _warn_if_tags_differ(architecture: str) -> None:
    """A path loaded with config= an architecture name whose open_clip tags do not all share OpenAI's preprocessing:
    the file may hold one of those, which the name cannot tell, so say which and how to name it."""
    own = {name: Preprocessing(**entry["preprocess"]) for name, entry in _open_clip()["models"].items()
           if entry["config"] == architecture and entry.get("preprocess")}  # fmt: skip
    if own:
        which = ", ".join(f"{name} ({p.resize_mode} resize, mean {p.mean}, std {p.std})" for name, p in own.items())
        warnings.warn(f"config={architecture!r} is an architecture, which does not say the image preprocessing, and "
                      f"these open_clip tags of it were trained with their own: {which}. OpenAI's is used; if this "
                      f"file holds one of those tags' weights, pass config= that tag (--model-config "
                      f"{next(iter(own))}) instead", stacklevel=3)  # fmt: skip


def _unknown(name: str) -> ValueError:
    close = difflib.get_close_matches(name, available_models(open_clip=True) + list(BUILTIN_MODELS), n=3)
    hint = f" (did you mean {close}?)" if close else ""  # e.g. open_clip's "ViT-B-32:laion2b_s34b_b79k" spelling
    return ValueError(
        f"unknown model {name!r}: it is neither one of {available_models() + list(BUILTIN_MODELS)}, nor one of the "
        f"{len(_open_clip()['models'])} open_clip pretrained tags such as 'ViT-B-32/laion2b_s34b_b79k' "
        f"(available_models(open_clip=True), `tinyprompt models --open-clip`), nor an existing file{hint}. "
        f"Pass a model name or the path to a checkpoint (OpenAI .pt archive, a saved state dict, or an open_clip "
        f"checkpoint with config= its architecture)."
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


def _recorded(path: Path) -> Path:
    """Where the sha256 the server stated for a downloaded file is kept: beside it, as <file>.sha256."""
    return path.with_name(path.name + ".sha256")


def _recorded_sha256(path: Path) -> str | None:
    record = _recorded(path)
    text = record.read_text(encoding="utf-8").strip() if record.is_file() else ""
    return text if re.fullmatch(r"[0-9a-f]{64}", text) else None


def checkpoint_file(name: str, download_root=None) -> Path:
    """The verified local file of manifest model `name`: reused from disk, else downloaded.

    The expected sha256 is the manifest's, else (open_clip's files on Hugging Face) the one the server stated when
    the file was downloaded, kept as <file>.sha256. A file on disk whose sha256 differs, or that nothing verifies,
    is never loaded: it is reported with a warning and (in `download_root`) replaced by the download.
    """
    entry, paths = manifest_entry(name), _local_paths(name, download_root)
    for candidate in paths:
        if not candidate.is_file():
            continue
        want = entry["sha256"] or _recorded_sha256(candidate)
        got = sha256_file(candidate) if want else None  # ~1 s per 500 MB; cheap next to building the model
        if want and got == want:
            return candidate
        reason = (f"has sha256 {got}, expected {want} for {name}: it is incomplete or corrupt" if want else
                  f"cannot be verified (no manifest sha256 for {name}, no {_recorded(candidate).name} beside it)")
        warnings.warn(f"{candidate} {reason} and is not used", stacklevel=2)
    if entry["sha256"]:
        return download(entry["url"], paths[0], entry["sha256"])
    sha256 = _server_sha256(name, entry["url"], paths[0])
    path = download(entry["url"], paths[0], sha256)
    with atomic_write(_recorded(path), "w") as f:  # after the file: a file without its record is re-downloaded
        f.write(sha256 + "\n")
    return path


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # None: the redirect answer itself is returned, as an HTTPError
        return None


def _server_sha256(name: str, url: str, dest: Path) -> str:
    """The sha256 the server states for `url`: Hugging Face's X-Linked-Etag header (quoted), which its resolve
    endpoint sends for the large (LFS) files it stores and huggingface_hub verifies against. Read from a HEAD
    request that, like huggingface_hub's, follows redirects within the host (a renamed repository) but not the one
    to the CDN, whose answer has no such header. No sha256 stated: the file is refused, never used unverified."""
    if offline():
        raise RuntimeError(
            f"{dest.name} is not on disk and TINYPROMPT_OFFLINE is set, so it cannot be downloaded from {url}. "
            f"Download it elsewhere and load it by path, tinyprompt.load(path, config={name!r}), or unset "
            f"TINYPROMPT_OFFLINE."
        )
    opener = urllib.request.build_opener(_NoRedirect)
    for _ in range(5):
        request = urllib.request.Request(url, method="HEAD", headers={"Accept-Encoding": "identity"})
        try:
            with opener.open(request, timeout=60.0) as response:
                headers = response.headers
        except urllib.error.HTTPError as e:
            if not 300 <= e.code < 400:
                raise RuntimeError(f"asking {url} for its sha256 failed: HTTP {e.code} {e.reason}") from e
            headers = e.headers
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise RuntimeError(f"cannot reach {url} ({e}). Check the network, or download the file elsewhere and "
                               f"load it by path, tinyprompt.load(path, config={name!r}).") from e
        location = headers.get("Location", "")
        if headers.get("X-Linked-Etag") or not location.startswith("/"):
            break
        url = urllib.parse.urljoin(url, location)
    stated = (headers.get("X-Linked-Etag") or "").removeprefix("W/").strip('"').lower()
    if not re.fullmatch(r"[0-9a-f]{64}", stated):
        raise RuntimeError(
            f"{url} states no sha256 for {name!r} (X-Linked-Etag: {stated or 'none'}) and the manifest records none, "
            f"so a download could not be verified: refused. Download the file yourself, check it, and load it by path, "
            f"tinyprompt.load(path, config={name!r})."
        )
    return stated


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


def _safetensors_reader(path: Path):
    """safetensors' `load_file`, for the .safetensors file `path`; an ImportError that says what to install."""
    try:
        from safetensors.torch import load_file  # optional: only .safetensors files need the package
    except ImportError as e:
        raise ImportError(f"{path} is a safetensors file: pip install safetensors to read it, or use the "
                          f"checkpoint's torch.save form (open_clip's open_clip_pytorch_model.bin)") from e
    return load_file


def _read_checkpoint(path: Path):
    """What `path` holds: an OpenAI TorchScript archive's state_dict(), a .safetensors file's tensors (open_clip's
    open_clip_model.safetensors), else torch.load(weights_only=True) (open_clip's .bin and .pt files too).

    A {"state_dict": ...} wrapper (training checkpoints) is unwrapped; build_model strips DDP's "module." prefix
    and checks the rest.
    """
    if _is_torchscript(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates torch.jit.load
            return torch.jit.load(str(path), map_location="cpu").state_dict()
    if path.suffix == ".safetensors":
        read, form = _safetensors_reader(path), "a safetensors file"
    else:
        read = functools.partial(torch.load, weights_only=True, map_location="cpu")
        form = "a file torch.load(weights_only=True) can read"
    try:
        state = read(path)  # on the CPU: safetensors' load_file's default
    except Exception as e:  # whatever the reader fails with, the file is not a checkpoint we can read
        reason = str(e).partition("\n")[0]
        raise ValueError(
            f"{path} is not a CLIP checkpoint: it is neither an OpenAI TorchScript archive nor {form} "
            f"({type(e).__name__}: {reason}). "
            f"Pass one of {available_models()} or a file saved with torch.save(model.state_dict(), path)."
        ) from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        return state["state_dict"]
    return state


def load(name_or_path, device="cpu", download_root=None, config=None, preprocessing: Preprocessing | None = None):
    """(model, preprocess) for a model name from `available_models(open_clip=True)` (OpenAI's, then open_clip's
    pretrained tags), a built-in name ("synthetic"), or a checkpoint path.

    The model is fp32, in eval mode, on `device`; `preprocess` maps a PIL image to the model's
    normalised input tensor `(3, R, R)`, R = `model.visual.input_resolution` (a built-in model's
    also maps uint8 tensors (3, H, W) or (N, 3, H, W)). A built-in model, by name or by path, carries its
    own tokenizer as `model.tokenizer`; OpenAI's models have none and read OpenAI's BPE vocabulary.
    `config` is for a path, as `build_model`'s: open_clip's model config dict or .json file, the name of an
    architecture or pretrained tag of the open_clip manifest ("ViT-B-32", `open_clip_config`), or "openai". Without one, a file
    that is not a released OpenAI archive loads with OpenAI's activation and head width and a warning.
    `model.preprocessing` (`tinyprompt.transforms.Preprocessing`) is the image normalisation and resize mode the
    weights were trained with: a tag's own (by name, or a path with config= the tag), else OpenAI's; `preprocess`
    applies it. `preprocessing` sets it for a path whose tag the manifest does not know.
    """
    key = os.fspath(name_or_path)
    tag = key in _open_clip()["models"]
    named = key in BUILTIN_MODELS or key in _manifest() or tag
    if named and (config is not None or preprocessing is not None):
        given = f"config={str(config)[:40]!r}" if config is not None else "preprocessing="
        raise ValueError(f"{given} is for checkpoint paths: {key!r} is a model name, which knows its own "
                         f"{given.partition('=')[0]}")
    if preprocessing is not None and not isinstance(preprocessing, Preprocessing):
        raise TypeError(f"preprocessing must be a tinyprompt.transforms.Preprocessing(mean, std, resize_mode), got "
                        f"{type(preprocessing).__name__}")
    if preprocessing is None:  # a tag's own (by name, or named as a path's config), else OpenAI's
        preprocessing = open_clip_preprocessing(key if tag else config if isinstance(config, str) else "")
        if isinstance(config, str):
            _warn_if_tags_differ(config)
    if isinstance(config, str) and config != "openai":
        config = open_clip_config(config)  # an unknown name fails here, before a large file is read
    builtin = key if key in BUILTIN_MODELS else None
    if builtin:
        path = builtin_file(key)
    elif named:
        path = checkpoint_file(key, download_root)
    elif os.path.isfile(key):
        path = Path(key)
        # a built-in by path is the same model: its own tokenizer and preprocess
        builtin = _builtin_copy(path) if config is None else None
    else:
        raise _unknown(key)
    state_dict = _read_checkpoint(path)
    # a name says its config: OpenAI's or tinyprompt's CLIP code (OpenAI's activation and head width), or open_clip's
    # tag; a file without a config is recognised by its shapes, else build_model warns that they cannot tell
    if tag:
        config = open_clip_config(key)
    elif builtin or named:
        config = "openai"
    try:
        model = build_model(state_dict, config)  # fp32 (the archives' fp16 tensors widen exactly), eval mode
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"{path}: {e}") from e
    model = model.to(device)
    model.preprocessing = preprocessing
    if builtin:  # its own vocabulary: everything tokenizes through `tokenizer.model_tokenizer(model)`
        model.tokenizer = get_tokenizer(builtin_file(builtin, "bpe"))
    n_px = model.visual.input_resolution
    return model, AnyImagePreprocess(n_px) if builtin else clip_preprocess(n_px, preprocessing)
