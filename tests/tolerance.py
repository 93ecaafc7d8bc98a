"""Tolerances derived from fp32 rounding, for tests that compare two computations of the same function.

Two kinds of comparison appear in this suite:
- the same ops in the same order (a copy, a gather, a mask, the same kernel on the same shapes): exact by
  construction, compared with `torch.equal` and a comment saying why;
- the same function through a different order of operations (chunked or length-sorted batches, a shared
  prefix, a fused or reordered sum, another BLAS path or vector width, another thread count): equal only up
  to rounding, which differs between CPUs. Those use the bounds below, never an atol tuned on one machine.
"""
import math

import torch

U = 2.0**-24  # unit roundoff of fp32 (round to nearest)


def gamma(k: int) -> float:
    """Higham's bound on the relative error of a k-term fp32 sum or dot product: |fl(Σx) - Σx| <= γ_k Σ|x|."""
    return k * U / (1 - k * U)


def rounding_bound(expected: torch.Tensor, k: int, depth: int = 1) -> float:
    """Absolute bound on |a - e| when a and e are two evaluation orders of `depth` chained reductions of
    length <= k in fp32 (each a matmul, a softmax sum or a LayerNorm mean).

    Derivation: each reduction commits at most γ_k · Σ|terms| of error (Higham, Accuracy and Stability of
    Numerical Algorithms, eq. 3.4); two evaluation orders can each commit it, and to first order the errors of
    earlier reductions pass through later ones with gain about 1 (LayerNorm re-normalises the residual stream,
    softmax and the normalised projections are 1-Lipschitz). That gives 2 · depth · γ_k · S. Σ|terms| is not
    observable from outside, so S is the largest magnitude of the result, max|e| (at least 1 ulp's worth of
    scale for an all-zero tensor): worst case in k, the output magnitude in place of the terms'.
    """
    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    return 2 * depth * gamma(k) * max(scale, torch.finfo(torch.float32).tiny)


def assert_rounding_close(actual, expected, k: int, depth: int = 1, msg=None) -> None:
    """`actual` equals `expected` up to the rounding bound above (see `rounding_bound`)."""
    atol = rounding_bound(expected, k, depth)
    torch.testing.assert_close(actual.detach(), expected.detach(), atol=atol, rtol=0, msg=msg)


def steps_depth(depth_per_step: int, steps: int) -> int:
    """The depth of `steps` optimiser steps, each `depth_per_step` chained reductions deep: to first order the
    rounding of each step's gradient moves the parameters once and the moves add up (small learning rates keep
    the update map close to the identity)."""
    return depth_per_step * steps


def tower_depth(transformer, longest_other: int, backward: bool = False) -> tuple[int, int]:
    """(k, depth) of one of CLIP's transformer towers for `rounding_bound`: the longest reduction is the MLP's
    hidden width (4 · width), or `longest_other` (the attention over the context, a patch convolution); each
    residual block chains its attention and MLP, plus the input and output projections; a gradient runs the
    chain twice (forward, then backward)."""
    k = max(4 * transformer.width, longest_other)
    depth = 2 * transformer.layers + 2
    return k, 2 * depth if backward else depth


def text_depth(clip_model, backward: bool = False) -> tuple[int, int]:
    """`tower_depth` of CLIP's text tower (attention over up to context_length positions)."""
    return tower_depth(clip_model.transformer, clip_model.context_length, backward)


def adam_first_step_bound(grad: torch.Tensor, grad_error: float, lr: float, eps: float) -> torch.Tensor:
    """Per-entry bound on how far the first Adam(W) step can move a parameter when its gradient is known only
    to within `grad_error` (the gradient tolerance of the test).

    The first step moves p by lr · g / (|g| + eps) (bias-corrected m̂ = g, v̂ = g²). The map x -> x / (|x| + eps)
    has slope eps / (|x| + eps)² <= 1 / (|x| + eps) and range (-1, 1), so a gradient off by δ moves the update by
    at most lr · min(2, δ / (|g| - δ + eps)): tiny for entries with |g| >> δ, up to a sign flip (2 lr) for
    entries whose gradient is within rounding of zero. Weight decay (lr · wd · p) is computed the same way on
    both sides; the update itself is rounded once more to p's ulp, added by the caller's `+ ulp` term.
    """
    near = (grad.abs() - grad_error).clamp_min(0) + eps
    return lr * torch.clamp(grad_error / near, max=2.0)


def adam_reach(lrs, betas=(0.9, 0.999)) -> list[float]:
    """Per step t, the farthest Adam can have moved any entry so far: Σ_{s<=t} lr_s · R_s, R_s the largest
    normalised step at s. Two trajectories that differ by rounding differ by at most twice this (a sign flip at
    every step); where the gradients differ only by a relative ρ, each normalised step m̂/sqrt(v̂) (homogeneous
    of degree 0 in the gradients) moves by at most 2ρ of its size, so those entries differ by 2ρ times this.

    R_s = |m̂_s| / sqrt(v̂_s) <= (1 - β1) / sqrt(1 - β2) · sqrt(Σ_{j<s} (β1² / β2)^j) · sqrt(1 - β2^s) / (1 - β1^s),
    by Cauchy-Schwarz on m_s = (1 - β1) Σ β1^j g_{s-j} against v_s = (1 - β2) Σ β2^j g_{s-j}²; R_1 = 1.
    """
    b1, b2 = betas
    reach, total, series = [], 0.0, 0.0
    for t, lr in enumerate(lrs, start=1):
        series += (b1 * b1 / b2) ** (t - 1)
        total += lr * (1 - b1) / math.sqrt(1 - b2) * math.sqrt(series) * math.sqrt(1 - b2**t) / (1 - b1**t)
        reach.append(total)
    return reach


def assert_within(actual, expected, bound, msg=""):
    """|actual - expected| <= bound elementwise (bound: a tensor of per-entry tolerances, or a float)."""
    diff = (actual.detach() - expected).abs()
    excess = diff - bound
    if excess.numel() and float(excess.max()) > 0:
        i = int(excess.argmax())
        bound_i = float(bound.flatten()[i]) if torch.is_tensor(bound) else bound
        raise AssertionError(f"{msg}: {int((excess > 0).sum())} of {diff.numel()} entries off; worst at flat index "
                             f"{i}: |{float(actual.flatten()[i])} - {float(expected.flatten()[i])}| > {bound_i:.3g}")
