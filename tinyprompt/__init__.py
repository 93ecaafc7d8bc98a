"""tinyprompt: prompt learning on CLIP in plain PyTorch.

A lean CLIP (exact to OpenAI's numerics) with hook points, its BPE tokenizer, Triton fused losses
(`tinyprompt.kernels`), and five prompt-learning methods (`tinyprompt.methods`): CoOp, TaI-DPT,
ILM-VP, SHIP and POMP. `import tinyprompt` never pulls in Triton, Pillow or matplotlib: each is
imported where it is first needed.
"""
from tinyprompt.clip_checkpoint import build_model
from tinyprompt.hub import available_models, load
from tinyprompt.tokenizer import tokenize, tokenize_for

__version__ = "0.1.0"

# tokenize: OpenAI's vocabulary; tokenize_for(model, texts): the model's own tokenizer and context length
__all__ = ["__version__", "available_models", "load", "build_model", "tokenize", "tokenize_for"]
