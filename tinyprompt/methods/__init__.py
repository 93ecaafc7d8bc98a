"""The prompt-learning methods, one file per paper; each is an `nn.Module` around a frozen CLIP with a
`Config` dataclass, and saves only its learned tensors (`prompt_state_dict()`, which names its method).

- CoOp (arXiv 2109.01134): `tinyprompt.methods.coop`
- TaI-DPT (arXiv 2211.12739): `tinyprompt.methods.taidpt`
- ILM-VP (arXiv 2211.11635): `tinyprompt.methods.ilmvp` (label mappings in `label_mapping`)
- SHIP (arXiv 2307.07397): `tinyprompt.methods.ship` (`SHIP` is its generator, `SHIPGenerator`)
- POMP (arXiv 2304.04704): `tinyprompt.methods.pomp`

`load_prompt(clip, path, classnames)` rebuilds whichever method a saved prompt names, for any class list;
`import_prompt` / `export_prompt` read and write the official repositories' files (`official_formats`).

A prompt file is `torch.save(prompt_state_dict())` (.pt, the default), or, with the optional `safetensors` package,
a .safetensors file (no pickle): the tensors in the file, every other field (method, config, classnames, ...) as
JSON in its metadata header. `save_prompt` writes either by the suffix; `read_prompt_file` reads either, and the
prompt inside a training checkpoint.pt, for every method; `read_prompt` only the methods `load_prompt` rebuilds.
"""
import json
from pathlib import Path

import torch

from tinyprompt.io import atomic_save, atomic_write
from tinyprompt.methods.coop import CoOp, CoOpConfig
from tinyprompt.methods.ilmvp import ILMVP, ILMVPConfig
from tinyprompt.methods.official_formats import export_prompt, import_prompt
from tinyprompt.methods.pomp import POMP, POMPConfig
from tinyprompt.methods.ship import SHIP, SHIPConfig, SHIPGenerator
from tinyprompt.methods.taidpt import TaIDPT, TaIDPTConfig

__all__ = ["CoOp", "CoOpConfig", "ILMVP", "ILMVPConfig", "TaIDPT", "TaIDPTConfig", "POMP", "POMPConfig", "SHIP",
           "SHIPGenerator", "SHIPConfig", "METHODS", "SAVED_METHODS", "save_prompt", "read_prompt_file", "read_prompt",
           "load_prompt", "import_prompt", "export_prompt"]

# prompt_state_dict()["method"] -> the class that rebuilds it around a CLIP for any class list. ILM-VP is not
# here: its prompt belongs to a source classifier and a label mapping, which a CLIP and class names cannot rebuild.
METHODS = {"coop": CoOp, "pomp": POMP, "taidpt": TaIDPT, "ship": SHIPGenerator}
# every method whose prompt_state_dict() a prompt file holds
SAVED_METHODS = (*METHODS, "ilmvp")
SAFETENSORS = ".safetensors"


def save_prompt(state: dict, path) -> None:
    """Write a `prompt_state_dict()` to `path` atomically: a .safetensors file for that suffix (needs the
    `safetensors` package), else torch.save (prompt.pt, what `tinyprompt train` writes)."""
    if Path(path).suffix != SAFETENSORS:
        atomic_save(state, path)
        return
    save_file, _ = _safetensors(path)
    tensors, fields = {}, {}
    for key, value in state.items():
        if torch.is_tensor(value) or (isinstance(value, dict) and value and all(map(torch.is_tensor, value.values()))):
            if "." in key:  # a '.' separates a nested dict's name from its keys (SHIP's "encoder.fc.weight")
                raise ValueError(f"prompt field {key!r} holds tensors and has a '.', which a {SAFETENSORS} prompt "
                                 f"file cannot tell from a nested key: rename it or save as .pt")
            nested = value.items() if isinstance(value, dict) else [(None, value)]
            # safetensors refuses tensors that share memory or are not contiguous: compact CPU copies
            tensors.update({key if name is None else f"{key}.{name}": v.detach().to("cpu", copy=True).contiguous()
                            for name, v in nested})
        else:
            fields[key] = value
    try:
        text = json.dumps(fields)
    except TypeError as e:  # e.g. a dict mixing tensors and other values
        raise ValueError(f"the prompt's fields {sorted(fields)} cannot be written as JSON, which the metadata of a "
                         f"{SAFETENSORS} prompt file is ({e}): save it as .pt") from None
    if json.loads(text) != fields:  # e.g. a tuple, which JSON reads back as a list
        raise ValueError(f"the prompt's fields {sorted(fields)} do not survive JSON unchanged, which the metadata of a "
                         f"{SAFETENSORS} prompt file is: save it as .pt")
    with atomic_write(path) as f:
        f.write(save_file(tensors, metadata={"format": "pt", "tinyprompt": text}))  # "format": as Hugging Face writes


def read_prompt_file(path) -> dict:
    """A saved prompt of any method (SAVED_METHODS, ILM-VP's too): prompt.pt / best.pt, the prompt inside a training
    checkpoint.pt, or a .safetensors file written by `save_prompt`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist: pass the prompt.pt written by `tinyprompt train`")
    state = _read_safetensors(path) if path.suffix == SAFETENSORS else _read_torch(path)
    if not isinstance(state, dict) or state.get("method") not in SAVED_METHODS:
        got = state.get("method") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path} is not a tinyprompt prompt of a known method (method {got!r}; known: "
                         f"{sorted(SAVED_METHODS)}): pass the prompt.pt written by `tinyprompt train`")
    return state


def read_prompt(path) -> dict:
    """A saved prompt that `load_prompt` rebuilds (METHODS): `read_prompt_file`, with ILM-VP's refused."""
    state = read_prompt_file(path)
    if state["method"] == "ilmvp":
        raise ValueError(f"{path} is an ILM-VP prompt: it belongs to its source classifier and label mapping, so "
                         f"rebuild the ILMVP model and call load_prompt_state_dict on it")
    return state


def _read_torch(path: Path):
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a saved prompt torch.load can read ({type(e).__name__}: {e})") from e
    if isinstance(state, dict) and isinstance(state.get("prompt"), dict):  # a training checkpoint
        state = state["prompt"]
    return state


def _read_safetensors(path: Path) -> dict:
    """The prompt state `save_prompt` wrote as .safetensors: its metadata's fields, then its tensors (nested by '.')."""
    _, safe_open = _safetensors(path)
    try:
        with safe_open(path, framework="pt") as f:
            text = (f.metadata() or {}).get("tinyprompt")
            tensors = {key: f.get_tensor(key) for key in f.keys()}
        state = None if text is None else json.loads(text)
    except Exception as e:  # safetensors' own error type (a truncated or foreign file), or broken JSON
        raise ValueError(f"{path} is not a prompt file safetensors can read ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict):
        raise ValueError(f"{path} is a safetensors file without tinyprompt's metadata (method, config, classnames), "
                         f"so it is not a prompt tinyprompt saved: write one with tinyprompt.methods.save_prompt")
    for key, tensor in tensors.items():
        name, dot, inner = key.partition(".")
        if dot:
            state.setdefault(name, {})[inner] = tensor
        else:
            state[key] = tensor
    return state


def _safetensors(path):
    """(save, safe_open) of the optional `safetensors` package, imported only for a .safetensors file."""
    try:  # lazy: safetensors is an optional dependency
        from safetensors import safe_open
        from safetensors.torch import save
    except ImportError as e:
        raise ImportError(f"{path} is a {SAFETENSORS} prompt file, which needs the safetensors package: "
                          f"pip install safetensors (or use a .pt file)") from e
    return save, safe_open


def load_prompt(clip_model, prompt, classnames, **overrides):
    """The method a saved prompt names, around `clip_model`, for `classnames`, holding the saved prompt.

    prompt: a file (see `read_prompt`) or a `prompt_state_dict()`; overrides: encoding knobs (e.g. text_chunk).
    """
    state = prompt if isinstance(prompt, dict) else read_prompt(prompt)
    if state.get("method") not in METHODS:
        raise ValueError(f"a prompt of method {state.get('method')!r} cannot be loaded here; known: {sorted(METHODS)}")
    return METHODS[state["method"]].from_prompt_state_dict(clip_model, classnames, state, **overrides)
