"""The prompt-learning methods, one file per paper; each is an `nn.Module` around a frozen CLIP with a
`Config` dataclass, and saves only its learned tensors (`prompt_state_dict()`, which names its method).

- CoOp (arXiv 2109.01134): `tinyprompt.methods.coop`
- TaI-DPT (arXiv 2211.12739): `tinyprompt.methods.taidpt`
- ILM-VP (arXiv 2211.11635): `tinyprompt.methods.ilmvp` (label mappings in `label_mapping`)
- SHIP (arXiv 2307.07397): `tinyprompt.methods.ship` (`SHIP` is its generator, `SHIPGenerator`)
- POMP (arXiv 2304.04704): `tinyprompt.methods.pomp`

`load_prompt(clip, path, classnames)` rebuilds whichever method a saved prompt names, for any class list;
`import_prompt` / `export_prompt` read and write the official repositories' files (`official_formats`).
"""
from pathlib import Path

import torch

from tinyprompt.methods.coop import CoOp, CoOpConfig
from tinyprompt.methods.ilmvp import ILMVP, ILMVPConfig
from tinyprompt.methods.official_formats import export_prompt, import_prompt
from tinyprompt.methods.pomp import POMP, POMPConfig
from tinyprompt.methods.ship import SHIP, SHIPConfig, SHIPGenerator
from tinyprompt.methods.taidpt import TaIDPT, TaIDPTConfig

__all__ = ["CoOp", "CoOpConfig", "ILMVP", "ILMVPConfig", "TaIDPT", "TaIDPTConfig", "POMP", "POMPConfig", "SHIP",
           "SHIPGenerator", "SHIPConfig", "METHODS", "read_prompt", "load_prompt", "import_prompt", "export_prompt"]

# prompt_state_dict()["method"] -> the class that rebuilds it around a CLIP for any class list. ILM-VP is not
# here: its prompt belongs to a source classifier and a label mapping, which a CLIP and class names cannot rebuild.
METHODS = {"coop": CoOp, "pomp": POMP, "taidpt": TaIDPT, "ship": SHIPGenerator}


def read_prompt(path) -> dict:
    """A saved prompt: prompt.pt / best.pt, or the prompt inside a training checkpoint.pt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist: pass the prompt.pt written by `tinyprompt train`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a saved prompt torch.load can read ({type(e).__name__}: {e})") from e
    if isinstance(state, dict) and isinstance(state.get("prompt"), dict):  # a training checkpoint
        state = state["prompt"]
    if isinstance(state, dict) and state.get("method") == "ilmvp":
        raise ValueError(f"{path} is an ILM-VP prompt: it belongs to its source classifier and label mapping, so "
                         f"rebuild the ILMVP model and call load_prompt_state_dict on it")
    if not isinstance(state, dict) or state.get("method") not in METHODS:
        got = state.get("method") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path} is not a tinyprompt prompt of a known method (method {got!r}; known: "
                         f"{sorted(METHODS)}): pass the prompt.pt written by `tinyprompt train`")
    return state


def load_prompt(clip_model, prompt, classnames, **overrides):
    """The method a saved prompt names, around `clip_model`, for `classnames`, holding the saved prompt.

    prompt: a file (see `read_prompt`) or a `prompt_state_dict()`; overrides: encoding knobs (e.g. text_chunk).
    """
    state = prompt if isinstance(prompt, dict) else read_prompt(prompt)
    if state.get("method") not in METHODS:
        raise ValueError(f"a prompt of method {state.get('method')!r} cannot be loaded here; known: {sorted(METHODS)}")
    return METHODS[state["method"]].from_prompt_state_dict(clip_model, classnames, state, **overrides)
