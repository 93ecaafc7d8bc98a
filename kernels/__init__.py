"""tinyprompt.kernels: fused losses whose cost grows with the label space, each with a reference twin.

- `sampled_softmax_loss`: POMP's sampled-negative softmax cross-entropy (arXiv 2304.04704); CoOp's
  full softmax (arXiv 2109.01134) is its shared_from=0 case.
- `ranking_loss`: TaI-DPT's multi-label pairwise ranking loss (arXiv 2211.12739), hinge or LSEP.
- `sampled_softmax_loss_naive`, `ranking_loss_naive`: the same losses as plain formulas in float64, the
  oracles the tests hold both paths to (small inputs only).

Importing this package never imports triton: the Triton path loads it on first use (see
`_backend.py`, which also explains how CPU tensors run under the Triton interpreter).
"""
from .ranking import ranking_loss, ranking_loss_naive
from .sampled_softmax import sampled_softmax_loss, sampled_softmax_loss_naive

__all__ = ["sampled_softmax_loss", "ranking_loss", "sampled_softmax_loss_naive", "ranking_loss_naive"]
