"""The prompt-learning methods, one file per paper; each is an `nn.Module` around a frozen CLIP with a
`Config` dataclass, and saves only its learned tensors (`prompt_state_dict()`).

- CoOp (arXiv 2109.01134): `tinyprompt.methods.coop`
- TaI-DPT (arXiv 2211.12739): `tinyprompt.methods.taidpt`
- ILM-VP (arXiv 2211.11635): `tinyprompt.methods.ilmvp` (label mappings in `label_mapping`)
- SHIP (arXiv 2307.07397): `tinyprompt.methods.ship` (`SHIP` is its generator, `SHIPGenerator`)
- POMP (arXiv 2304.04704): `tinyprompt.methods.pomp`

Names are imported on first use, so `import tinyprompt.methods` stays light.
"""
import importlib

# public name -> module that defines it
_PUBLIC = {
    "CoOp": "tinyprompt.methods.coop",
    "CoOpConfig": "tinyprompt.methods.coop",
    "ILMVP": "tinyprompt.methods.ilmvp", "ILMVPConfig": "tinyprompt.methods.ilmvp",
    "TaIDPT": "tinyprompt.methods.taidpt", "TaIDPTConfig": "tinyprompt.methods.taidpt",
    "POMP": "tinyprompt.methods.pomp", "POMPConfig": "tinyprompt.methods.pomp",
    "SHIP": "tinyprompt.methods.ship", "SHIPGenerator": "tinyprompt.methods.ship", "SHIPConfig": "tinyprompt.methods.ship",
}
__all__ = list(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # cache: later lookups skip this function
        return value
    raise AttributeError(f"module 'tinyprompt.methods' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
