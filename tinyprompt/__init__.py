"""tinyprompt: prompt learning on CLIP in plain PyTorch.

A lean CLIP (exact to OpenAI's numerics) with hook points, its BPE tokenizer, Triton fused losses
(`tinyprompt.kernels`), and five prompt-learning methods (`tinyprompt.methods`): CoOp, TaI-DPT,
ILM-VP, SHIP and POMP. The public names below are imported on first use, so `import tinyprompt`
stays light and never pulls in Triton, Pillow or matplotlib.
"""
import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    "available_models": "tinyprompt.hub",
    "load": "tinyprompt.hub",
    "build_model": "tinyprompt.clip",
    "tokenize": "tinyprompt.tokenizer",  # OpenAI's vocabulary
    "tokenize_for": "tinyprompt.tokenizer",  # the model's own tokenizer and context length: use it with any model
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # cache: later lookups skip this function
        return value
    raise AttributeError(f"module 'tinyprompt' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
