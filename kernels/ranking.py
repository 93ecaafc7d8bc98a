"""Multi-label ranking loss, fused: TaI-DPT's pairwise hinge, and LSEP.

TaI-DPT: "Texts as Images in Prompt Tuning for Multi-Label Image Recognition" (Guo et al., arXiv
2211.12739) trains with a pairwise hinge ranking loss (official trainers/utils.py::ranking_loss, called
with scale 1, margin 1). LSEP: "Improving Pairwise Ranking for Multi-label Image Classification" (Li
et al., arXiv 1704.03135).

labels: 1 positive, 0 negative, anything else (e.g. -1: VOC "difficult", partial labels) ignored.
Per row b, over its positives P and negatives N:
  hinge: loss_b = sum_{i in P} sum_{j in N} max(0, margin - s_i + s_j)
  lsep:  loss_b = log(1 + sum_{i in P} sum_{j in N} exp(s_j - s_i)) = softplus(LSE_N(s) + LSE_P(-s))
reduction "mean" is the mean of loss_b over rows (TaI-DPT's convention: rows without pairs count as 0).

The hinge without the (B, C, C) pair tensor. With kappa_i = s_i - margin, pair (i, j) is active when
s_j > kappa_i, and  sum_{j in N} max(0, s_j - kappa_i) = (sum of active s_j) - kappa_i * #active.
Sort a row's keys {kappa_i of positives, s_j of negatives} in descending order (positives first among
equal keys): the negatives before a positive are exactly its active ones, so prefix counts and sums
give the loss and the gradients in O(C log C):
  dloss/ds_i = -(#{j: s_j > kappa_i} + #{j: s_j == kappa_i} / 2)
  dloss/ds_j = +(#{i: kappa_i < s_j} + #{i: kappa_i == s_j} / 2)
The halves reproduce the official torch.maximum, whose gradient is 0.5 at an exact kink (the golden
hand_case has one); tied keys are counted with a segmented scan.

Triton: one program per row packs (key, class, column) into one int64 per entry, sorts the row in
registers (tl.sort) when it fits MAX_SORT_IN_REGISTERS, else the row is packed, sorted by torch.sort and
scanned in tiles with carries (top to bottom, then bottom to top for the positives' gradients). The
forward pass writes the loss and dloss_b/ds together; the backward only rescales it by dL/dloss_b.
The official function also mutates its input; this one does not.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import _backend

KINDS = ("hinge", "lsep")
REDUCTIONS = ("mean", "sum", "none")
MAX_SORT_IN_REGISTERS = 4096  # longest row (power of two) sorted inside one program
MAX_SORT_INTERPRETED = 16  # the same under the interpreter, which runs tl.sort's xor reductions in Python
SCAN_TILE = 1024  # tile of a row for the tiled hinge path and for LSEP
tl = None  # triton.language, bound by _backend.jit_in_place on the first Triton call


# ----------------------------------------------------------------------------- Triton kernels
def _pack(S, L, row, cols, n_cols, margin, stride_sb, stride_sc, stride_lb, stride_lc):
    """int64 keys that sort (descending) by kappa_i / s_j, positives first among equal keys; padding last.

    Layout: [key as order-preserving int32 | class code (2 positive, 1 negative, 0 ignored) | column (30 bits)].
    """
    ok = cols < n_cols
    s = tl.load(S + row * stride_sb + cols * stride_sc, mask=ok, other=0.0).to(tl.float32)
    label = tl.load(L + row * stride_lb + cols * stride_lc, mask=ok, other=-1)
    is_pos = ok & (label == 1)
    is_neg = ok & (label == 0)
    key = tl.where(is_pos, s - margin, tl.where(is_neg, s, float("-inf"))) + 0.0  # +0.0: -0.0 packs as +0.0
    bits = key.to(tl.int32, bitcast=True)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # signed-int order == float order
    code = tl.where(is_pos, 2, tl.where(is_neg, 1, 0)).to(tl.int64)
    packed = (ordered.to(tl.int64) << 32) | (code << 30) | cols.to(tl.int64)
    return tl.where(ok, packed, tl.full(cols.shape, 1, tl.int64) << 63)  # padding: the smallest int64


def _count_at_max_key(key_a, count_a, key_b, count_b):
    """Scan combine: over a set of entries, (largest key, how many counted entries have it). Commutative."""
    key = tl.maximum(key_a, key_b)
    return key, tl.where(key_a == key, count_a, 0) + tl.where(key_b == key, count_b, 0)


def _count_at_min_key(key_a, count_a, key_b, count_b):
    key = tl.minimum(key_a, key_b)
    return key, tl.where(key_a == key, count_a, 0) + tl.where(key_b == key, count_b, 0)


def _unpack(packed):
    """(key with -inf for ignored entries and padding, is_pos, is_neg, column) of packed keys."""
    ordered = (packed >> 32).to(tl.int32)
    key = (ordered ^ ((ordered >> 31) & 0x7FFFFFFF)).to(tl.float32, bitcast=True)
    code = (packed >> 30) & 3
    return tl.where(code == 0, float("-inf"), key), code == 2, code == 1, packed & 0x3FFFFFFF


def _has_ties(key):
    """Whether two neighbours of a sorted tile share a key (then the segmented scans are needed)."""
    idx = tl.arange(0, key.shape[0])
    following = tl.gather(key, tl.minimum(idx + 1, key.shape[0] - 1), 0)
    return tl.max(((key == following) & (idx + 1 < key.shape[0]) & (key != float("-inf"))).to(tl.int32), 0) > 0


def _hinge_down(packed, carry_neg, carry_negsum, carry_pos, carry_key, carry_eq, n_pos, GRAD, row,
                stride_gb, stride_gc, WRITE_GRAD: tl.constexpr):
    """A descending-sorted tile, visited first to last: the loss, and the gradients of negatives/ignored.

    Carries from the tiles above: negatives (count, sum), positives, and the positives whose key equals
    the last key seen (carry_key): ties run across tile borders.
    """
    key, is_pos, is_neg, col = _unpack(packed)
    neg = is_neg.to(tl.int32)
    pos = is_pos.to(tl.int32)
    neg_val = tl.where(is_neg, key, 0.0)
    neg_above = tl.cumsum(neg, 0) - neg + carry_neg  # negatives strictly above (positives lead a tie)
    negsum_above = tl.cumsum(neg_val, 0) - neg_val + carry_negsum
    loss = tl.sum(tl.where(is_pos, negsum_above - neg_above.to(tl.float32) * key, 0.0), 0)
    if WRITE_GRAD:
        pos_upto = tl.cumsum(pos, 0) + carry_pos  # positives at or above
        pos_tied = tl.where(key == carry_key, carry_eq, 0)  # tied positives in the tiles above
        if _has_ties(key):  # ... and in this tile, at or above, with the same key
            pos_tied += tl.associative_scan((key, pos), 0, _count_at_min_key)[1]
        grad = tl.where(is_neg, (n_pos - pos_upto).to(tl.float32) + 0.5 * pos_tied.to(tl.float32), 0.0)
        padding = packed == (tl.full(packed.shape, 1, tl.int64) << 63)
        tl.store(GRAD + row * stride_gb + col * stride_gc, grad, mask=~(is_pos | padding))
    last_key = tl.min(key, 0)
    carry_eq = tl.sum(tl.where(key == last_key, pos, 0), 0) + tl.where(last_key == carry_key, carry_eq, 0)
    return loss, carry_neg + tl.sum(neg, 0), carry_negsum + tl.sum(neg_val, 0), carry_pos + tl.sum(pos, 0), \
        last_key, carry_eq


def _hinge_up(packed, carry_neg, carry_key, carry_eq, n_neg, GRAD, row, stride_gb, stride_gc):
    """The same tile visited last to first: the gradients of positives, -(#above + #tied / 2)."""
    key, is_pos, is_neg, col = _unpack(packed)
    neg = is_neg.to(tl.int32)
    neg_from = tl.cumsum(neg, 0, reverse=True) + carry_neg  # negatives at or below
    neg_tied = tl.where(key == carry_key, carry_eq, 0)  # tied negatives in the tiles below
    if _has_ties(key):  # ... and in this tile, at or below, with the same key
        neg_tied += tl.associative_scan((key, neg), 0, _count_at_max_key, reverse=True)[1]
    grad = -((n_neg - neg_from).to(tl.float32) + 0.5 * neg_tied.to(tl.float32))
    tl.store(GRAD + row * stride_gb + col * stride_gc, grad, mask=is_pos)
    first_key = tl.max(key, 0)
    carry_eq = tl.sum(tl.where(key == first_key, neg, 0), 0) + tl.where(first_key == carry_key, carry_eq, 0)
    return carry_neg + tl.sum(neg, 0), first_key, carry_eq


def _hinge_kernel(S, L, SORTED, NPOS, LOSS, GRAD, n_cols, margin,
                  stride_sb, stride_sc, stride_lb, stride_lc, stride_gb, stride_gc,
                  PHASE: tl.constexpr,  # 0: whole row sorted in registers; 1: pack to SORTED; 2: scan SORTED
                  WRITE_GRAD: tl.constexpr, BLOCK_C: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_C)
    if PHASE == 0:
        packed = tl.sort(_pack(S, L, row, cols, n_cols, margin, stride_sb, stride_sc, stride_lb, stride_lc),
                         descending=True)
        n_pos = tl.sum((((packed >> 30) & 3) == 2).to(tl.int32), 0)
        loss, n_neg, _, _, _, _ = _hinge_down(packed, 0, 0.0, 0, float("inf"), 0, n_pos, GRAD, row, stride_gb,
                                              stride_gc, WRITE_GRAD)
        if WRITE_GRAD:
            _hinge_up(packed, 0, float("-inf"), 0, n_neg, GRAD, row, stride_gb, stride_gc)
        tl.store(LOSS + row, loss)
    elif PHASE == 1:
        n_pos = 0
        for c0 in range(0, n_cols, BLOCK_C):
            packed = _pack(S, L, row, c0 + cols, n_cols, margin, stride_sb, stride_sc, stride_lb, stride_lc)
            tl.store(SORTED + row * n_cols + c0 + cols, packed, mask=c0 + cols < n_cols)
            n_pos += tl.sum((((packed >> 30) & 3) == 2).to(tl.int32), 0)
        tl.store(NPOS + row, n_pos)
    else:
        n_pos = tl.load(NPOS + row)
        padding = tl.full([BLOCK_C], 1, tl.int64) << 63
        loss = 0.0
        n_neg = 0
        negsum = 0.0
        pos_seen = 0
        carry_key = float("inf")
        carry_eq = 0
        for c0 in range(0, n_cols, BLOCK_C):
            packed = tl.load(SORTED + row * n_cols + c0 + cols, mask=c0 + cols < n_cols, other=padding)
            tile_loss, n_neg, negsum, pos_seen, carry_key, carry_eq = _hinge_down(
                packed, n_neg, negsum, pos_seen, carry_key, carry_eq, n_pos, GRAD, row, stride_gb, stride_gc,
                WRITE_GRAD)
            loss += tile_loss
        tl.store(LOSS + row, loss)
        if WRITE_GRAD:
            neg_below = 0
            carry_key = float("-inf")
            carry_eq = 0
            n_tiles = tl.cdiv(n_cols, BLOCK_C)
            for i in range(0, n_tiles):
                c0 = (n_tiles - 1 - i) * BLOCK_C
                packed = tl.load(SORTED + row * n_cols + c0 + cols, mask=c0 + cols < n_cols, other=padding)
                neg_below, carry_key, carry_eq = _hinge_up(packed, neg_below, carry_key, carry_eq, n_neg, GRAD,
                                                           row, stride_gb, stride_gc)


def _online_lse(run_max, run_sum, v):
    new_max = tl.maximum(run_max, tl.max(v, 0))
    safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)  # nothing seen yet
    return new_max, run_sum * tl.exp(run_max - safe_max) + tl.sum(tl.exp(v - safe_max), 0)


def _lsep_kernel(S, L, LOSS, GRAD, n_cols, stride_sb, stride_sc, stride_lb, stride_lc, stride_gb, stride_gc,
                 WRITE_GRAD: tl.constexpr, BLOCK_C: tl.constexpr):
    """Row program: LSE_N(s) and LSE_P(-s) in one pass, loss = softplus of their sum; dloss/ds in a second."""
    row = tl.program_id(0)
    neg_max = float("-inf")
    neg_sum = 0.0
    pos_max = float("-inf")
    pos_sum = 0.0
    for c0 in range(0, n_cols, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        ok = cols < n_cols
        s = tl.load(S + row * stride_sb + cols * stride_sc, mask=ok, other=0.0).to(tl.float32)
        label = tl.load(L + row * stride_lb + cols * stride_lc, mask=ok, other=-1)
        neg_max, neg_sum = _online_lse(neg_max, neg_sum, tl.where(ok & (label == 0), s, float("-inf")))
        pos_max, pos_sum = _online_lse(pos_max, pos_sum, tl.where(ok & (label == 1), -s, float("-inf")))
    lse_neg = neg_max + tl.log(neg_sum)  # -inf for a row without negatives
    lse_pos = pos_max + tl.log(pos_sum)
    a = lse_neg + lse_pos  # log of the pair sum; -inf when the row has no pairs
    t = tl.exp(-tl.abs(a))
    log1p_t = tl.where(t < 1e-4, t * (1.0 - 0.5 * t), tl.log(1.0 + t))  # log1p without libdevice
    tl.store(LOSS + row, tl.maximum(a, 0.0) + log1p_t)
    if WRITE_GRAD:
        sig = tl.where(a >= 0, 1.0 / (1.0 + t), t / (1.0 + t))  # sigmoid(a) = dloss/da
        for c0 in range(0, n_cols, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            ok = cols < n_cols
            s = tl.load(S + row * stride_sb + cols * stride_sc, mask=ok, other=0.0).to(tl.float32)
            label = tl.load(L + row * stride_lb + cols * stride_lc, mask=ok, other=-1)
            grad = tl.where(label == 0, sig * tl.exp(s - lse_neg), 0.0)
            grad = tl.where(label == 1, -sig * tl.exp(-s - lse_pos), grad)
            tl.store(GRAD + row * stride_gb + cols * stride_gc, grad, mask=ok)


_TRITON_FUNCTIONS = ("_pack", "_count_at_max_key", "_count_at_min_key", "_unpack", "_has_ties", "_hinge_down",
                     "_hinge_up",
                     "_hinge_kernel", "_online_lse", "_lsep_kernel")


def _triton_ranking(scores, labels, margin, kind, need_grad):
    """(loss_b (B,), dloss_b/ds (B, C) fp32 or None) from the Triton kernels."""
    _backend.jit_in_place(globals(), _TRITON_FUNCTIONS)
    n_rows, n_cols = scores.shape
    losses = torch.empty(n_rows, device=scores.device, dtype=torch.float32)
    grad = torch.empty((n_rows, n_cols), device=scores.device, dtype=torch.float32) if need_grad else losses[:, None]
    strides = (scores.stride(0), scores.stride(1), labels.stride(0), labels.stride(1), grad.stride(0), grad.stride(1))
    tile = min(SCAN_TILE, _next_pow2(n_cols))
    if kind == "lsep":
        _lsep_kernel[(n_rows,)](scores, labels, losses, grad, n_cols, *strides, WRITE_GRAD=need_grad, BLOCK_C=tile,
                                num_warps=4)
        return losses, (grad if need_grad else None)
    block = _next_pow2(n_cols)
    if block <= (MAX_SORT_IN_REGISTERS if scores.is_cuda else MAX_SORT_INTERPRETED):
        _hinge_kernel[(n_rows,)](scores, labels, losses, losses, losses, grad, n_cols, margin, *strides, PHASE=0,
                                 WRITE_GRAD=need_grad, BLOCK_C=block, num_warps=4 if block <= 1024 else 8)
    else:
        packed = torch.empty((n_rows, n_cols), device=scores.device, dtype=torch.int64)
        n_pos = torch.empty(n_rows, device=scores.device, dtype=torch.int32)
        _hinge_kernel[(n_rows,)](scores, labels, packed, n_pos, losses, grad, n_cols, margin, *strides, PHASE=1,
                                 WRITE_GRAD=need_grad, BLOCK_C=tile, num_warps=4)
        packed = torch.sort(packed, dim=1, descending=True).values
        _hinge_kernel[(n_rows,)](scores, labels, packed, n_pos, losses, grad, n_cols, margin, *strides, PHASE=2,
                                 WRITE_GRAD=need_grad, BLOCK_C=tile, num_warps=4)
    return losses, (grad if need_grad else None)


def _next_pow2(n: int) -> int:
    return 1 << max(4, math.ceil(math.log2(n)))  # at least 16: the smallest tile the kernels use


# ----------------------------------------------------------------------------- reference (plain PyTorch)
def _reference_ranking(scores, labels, margin, kind, need_grad):
    """Same results with torch ops: O(B C) memory, O(C log C) per row (one sort, then prefix sums)."""
    s = scores.float()
    pos, neg = labels == 1, labels == 0
    if kind == "lsep":
        lse_neg = torch.logsumexp(s.masked_fill(~neg, float("-inf")), 1)  # (B,)
        lse_pos = torch.logsumexp((-s).masked_fill(~pos, float("-inf")), 1)
        a = lse_neg + lse_pos
        if not need_grad:
            return F.softplus(a), None
        sig = torch.sigmoid(a)[:, None]
        grad = torch.where(neg, sig * torch.exp(s - lse_neg[:, None]), 0.0)
        return F.softplus(a), torch.where(pos, -sig * torch.exp(-s - lse_pos[:, None]), grad)
    # the kernel's algorithm with torch ops: one sort of packed keys (descending; positives first among
    # equal keys), then prefix counts and sums along the sorted rows
    key = torch.where(pos, s - margin, torch.where(neg, s, float("-inf"))) + 0.0  # (B, C); +0.0: no -0.0
    bits = key.view(torch.int32)
    ordered = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).long()  # signed-int order == float order
    code = 2 * pos.long() + neg.long()
    cols = torch.arange(s.shape[1], device=s.device)
    packed = torch.sort((ordered << 32) | (code << 30) | cols, dim=1, descending=True).values
    col = packed & 0x3FFFFFFF  # (B, C): original column of each sorted entry
    key = key.gather(1, col)
    sorted_code = (packed >> 30) & 3
    is_pos, is_neg = sorted_code == 2, sorted_code == 1
    neg_above = is_neg.cumsum(1) - is_neg.long()  # negatives strictly above each entry
    neg_val = torch.where(is_neg, key, 0.0)
    negsum_above = neg_val.cumsum(1) - neg_val
    losses = torch.where(is_pos, negsum_above - neg_above * key, 0.0).sum(1)
    if not need_grad:
        return losses, None
    pos_below = pos.sum(1, keepdim=True) - is_pos.cumsum(1)  # positives strictly below (kappa_i < s_j)
    neg_tied = pos_tied = 0  # s_j == kappa_i exactly: the kink counts 1/2 (found only when a tie exists)
    starts = torch.ones_like(is_pos)
    starts[:, 1:] = key[:, 1:] != key[:, :-1]
    if not torch.all(starts | (key == float("-inf"))):  # ignored entries (-inf) tie harmlessly
        run = starts.cumsum(1) - 1  # (B, C): index of each entry's run of equal keys
        neg_tied = torch.zeros_like(key).scatter_add_(1, run, is_neg.float()).gather(1, run)
        pos_tied = torch.zeros_like(key).scatter_add_(1, run, is_pos.float()).gather(1, run)
    grad = torch.where(is_pos, -(neg_above + 0.5 * neg_tied), torch.where(is_neg, pos_below + 0.5 * pos_tied, 0.0))
    return losses, torch.empty_like(grad).scatter_(1, col, grad)


class _Ranking(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores, labels, margin, kind, reduction, engine):
        losses, grad = engine(scores, labels, margin, kind, ctx.needs_input_grad[0])  # (B,), (B, C) or None
        ctx.save_for_backward(grad)
        ctx.reduction, ctx.dtype = reduction, scores.dtype
        if reduction == "mean":
            return losses.mean()
        return losses.sum() if reduction == "sum" else losses

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        gout = grad_out.float()
        if ctx.reduction == "none":
            gout = gout[:, None]
        elif ctx.reduction == "mean":
            gout = gout / grad.shape[0]
        return (grad * gout).to(ctx.dtype), None, None, None, None, None


# ----------------------------------------------------------------------------- public functions
def ranking_loss(scores, labels, margin=1.0, kind="hinge", reduction="mean", backend="auto"):
    """Pairwise ranking loss over each row's (positive, negative) pairs; see the module docstring.

    scores (B, C) fp32/fp16/bf16 (fp32 math); labels (B, C): 1 positive, 0 negative, other values ignored.
    margin: the hinge margin (LSEP has none). kind: "hinge" | "lsep". reduction: "mean" (over rows) |
    "sum" | "none" -> (B,). backend: "auto" | "triton" | "reference". The loss is fp32.
    """
    _validate(scores, labels, margin, kind, reduction)
    engine = _triton_ranking if _backend.use_triton(backend, scores) else _reference_ranking
    return _Ranking.apply(scores, labels, float(margin), kind, reduction, engine)


def ranking_loss_reference(scores, labels, margin=1.0, kind="hinge", reduction="mean"):
    """The plain-PyTorch twin (one sort and prefix sums, no pair tensor). Same arguments and result."""
    _validate(scores, labels, margin, kind, reduction)
    return _Ranking.apply(scores, labels, float(margin), kind, reduction, _reference_ranking)


def _validate(scores, labels, margin, kind, reduction):
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or scores.numel() == 0:
        raise ValueError(f"scores must be a non-empty 2-D tensor (B, C), got {getattr(scores, 'shape', type(scores))}")
    if scores.dtype not in _backend.FLOAT_DTYPES:
        raise TypeError(f"scores has dtype {scores.dtype}; use float32, float16 or bfloat16")
    if not isinstance(labels, torch.Tensor) or labels.shape != scores.shape:
        raise ValueError(f"labels must be a tensor of the scores' shape {tuple(scores.shape)}, "
                         f"got {getattr(labels, 'shape', type(labels))}")
    if labels.is_complex():
        raise TypeError(f"labels must be real (1 positive, 0 negative, -1 ignored), got {labels.dtype}")
    if scores.shape[1] >= 1 << 30:
        raise ValueError(f"at most 2**30 - 1 classes, got {scores.shape[1]}")
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {KINDS}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not one of {REDUCTIONS}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
        raise ValueError(f"margin must be a finite float, got {margin!r}")
    _backend.check_same_device(scores=scores, labels=labels)
