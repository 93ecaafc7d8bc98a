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
s_j > kappa_i. For a negative j let below_j = #{i in P: kappa_i < s_j} and upto_j = #{i: kappa_i <= s_j};
with the positives' kappa sorted (kappa_(0) <= kappa_(1) <= ...) and their prefix sums:
  loss_b       = sum_{j in N} (below_j s_j - sum_{k < below_j} kappa_(k))
  dloss/ds_j   = below_j + (upto_j - below_j) / 2
  dloss/ds_(k) = -(#{j: below_j > k} + #{j: below_j <= k < upto_j} / 2)
The halves reproduce the official torch.maximum, whose gradient is 0.5 at an exact kink (the golden
hand_case has one).

Triton (hinge): only the positives are sorted, the usually few of a multi-label row. A persistent
program takes rows in turn: pass 1 reads the labels, counts, and writes the packed (kappa, column) keys
of the positives to its scratch; they are sorted in registers (tl.sort, up to POSITIVES_PER_CHUNK at a
time) with their prefix sums; pass 2 reads the row again and finds below_j (and upto_j when a tie
exists) by binary search, writes the negatives' gradients and counts below_j in a scratch histogram
(integer atomics: exact); its prefix sums give the positives' gradients. A row with more positives
takes one such pass per chunk of them: O(C log K) work for K <= POSITIVES_PER_CHUNK positives, O(C)
memory traffic. The forward writes the loss and dloss_b/ds (fp32) together; the backward is one more
kernel that scales it by dL/dloss_b into the scores' dtype. LSEP: one program per row, two passes.
The official function also mutates its input; this one does not.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from . import _backend

KINDS = ("hinge", "lsep")
REDUCTIONS = ("mean", "sum", "none")
POSITIVES_PER_CHUNK = {"cuda": 2048, "interpret": 16}  # K: positives sorted in registers at a time
ROW_TILE = {"cuda": 1024, "interpret": 16}  # columns per loop step of a row (run 4's sweep: 1024 beat 512, 2048)
PROGRAMS_PER_SM = 2  # hinge: persistent programs, few so a row is still in L2 for pass 2 (sweep: 2 = 4 > 1)


# ----------------------------------------------------------------------------- Triton kernels
@functools.cache
def _triton_kernels():
    """Import triton and define the kernels as module globals, on the first Triton call (why: _backend.py)."""
    global tl, _pack, _unpack, _compact, _count_below, _hinge_kernel, _online_lse, _lsep_kernel, _scale_kernel
    import triton
    import triton.language as tl

    @triton.jit
    def _pack(kappa, cols):
        """int64 keys that sort (ascending) by kappa, then column: [order-preserving int32 of kappa | column]."""
        bits = (kappa + 0.0).to(tl.int32, bitcast=True)  # +0.0: -0.0 packs as +0.0
        ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # signed-int order == float order
        return (ordered.to(tl.int64) << 32) | cols.to(tl.int64)

    @triton.jit
    def _unpack(packed):
        """(kappa, column) of packed keys."""
        ordered = (packed >> 32).to(tl.int32)
        kappa = (ordered ^ ((ordered >> 31) & 0x7FFFFFFF)).to(tl.float32, bitcast=True)
        return kappa, (packed & 0x7FFFFFFF).to(tl.int32)

    @triton.jit
    def _compact(S_row, L_row, PACKED, n_cols, margin, first, stride_sc, stride_lc, BLOCK_C: tl.constexpr,
                 K: tl.constexpr):
        """Write the packed keys of the positives of rank [first, first + K) (column order) to PACKED[0, K);
        return the row's numbers of positives and negatives."""
        n_pos = 0
        n_neg = 0
        for c0 in range(0, n_cols, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            ok = cols < n_cols
            label = tl.load(L_row + cols * stride_lc, mask=ok, other=-1)
            is_pos = ok & (label == 1)
            rank = n_pos + tl.cumsum(is_pos.to(tl.int32), 0) - 1
            take = is_pos & (rank >= first) & (rank < first + K)
            s = tl.load(S_row + cols * stride_sc, mask=take, other=0.0).to(tl.float32)
            tl.store(PACKED + (rank - first), _pack(s - margin, cols), mask=take)
            n_pos += tl.sum(is_pos.to(tl.int32), 0)
            n_neg += tl.sum((ok & (label == 0)).to(tl.int32), 0)
        return n_pos, n_neg

    @triton.jit
    def _count_below(KAPPA, s, STRICT: tl.constexpr, K: tl.constexpr, LOG_K: tl.constexpr):
        """#{k: KAPPA[k] < s} (STRICT) or #{k: KAPPA[k] <= s} per element of s: a branchless binary search
        of the sorted, +inf-padded KAPPA[0, K)."""
        lo = tl.zeros(s.shape, tl.int32)
        for step in tl.static_range(LOG_K):
            half = K >> (step + 1)
            probe = tl.load(KAPPA + lo + (half - 1))
            if STRICT:
                lo = tl.where(probe < s, lo + half, lo)
            else:
                lo = tl.where(probe <= s, lo + half, lo)
        probe = tl.load(KAPPA + lo)  # lo <= K - 1 here
        if STRICT:
            lo = tl.where(probe < s, lo + 1, lo)
        else:
            lo = tl.where(probe <= s, lo + 1, lo)
        return lo

    @triton.jit
    def _hinge_kernel(S, L, LOSS, GRAD, SCRATCH, n_rows, n_cols, margin,
                      stride_sb, stride_sc, stride_lb, stride_lc, stride_gb, stride_gc,
                      WRITE_GRAD: tl.constexpr, BLOCK_C: tl.constexpr, K: tl.constexpr, LOG_K: tl.constexpr):
        """Persistent program: rows pid, pid + #programs, ...; the algorithm is in the module docstring.

        SCRATCH: 10 K int32 words per program: packed keys (K int64), sorted kappa (K), its exclusive prefix
        sums (K + 1), the histogram of below_j (K + 1 bins) and the tie differences (+1 at below_j, -1 at upto_j).
        """
        base = SCRATCH + tl.program_id(0).to(tl.int64) * (10 * K)
        PACKED = base.to(tl.pointer_type(tl.int64))
        KAPPA = (base + 2 * K).to(tl.pointer_type(tl.float32))
        PREFIX = (base + 3 * K).to(tl.pointer_type(tl.float32))
        BELOW = base + 5 * K
        TIED = base + 7 * K
        ks = tl.arange(0, K)
        bins = tl.arange(0, 2 * K)
        padding = tl.full([K], 0x7FFFFFFFFFFFFFFF, tl.int64)  # sorts after every key
        first_row = tl.program_id(0).to(tl.int64)
        for i in range(0, tl.cdiv(n_rows - first_row, tl.num_programs(0))):
            row = first_row + i * tl.num_programs(0)
            S_row = S + row * stride_sb
            L_row = L + row * stride_lb
            G_row = GRAD + row * stride_gb
            n_pos, n_neg = _compact(S_row, L_row, PACKED, n_cols, margin, 0, stride_sc, stride_lc, BLOCK_C, K)
            n_chunks = tl.where(n_neg > 0, tl.maximum(tl.cdiv(n_pos, K), 1), 1)  # one pass writes zeros at least
            loss = 0.0
            for q in range(0, n_chunks):
                if q > 0:
                    tl.debug_barrier()  # the previous chunk is done with PACKED and the histograms
                    _compact(S_row, L_row, PACKED, n_cols, margin, q * K, stride_sc, stride_lc, BLOCK_C, K)
                tl.debug_barrier()  # PACKED written by every thread
                m = tl.minimum(n_pos - q * K, K)  # positives in this chunk
                kappa, col = _unpack(tl.sort(tl.load(PACKED + ks, mask=ks < m, other=padding)))
                real = tl.where(ks < m, kappa, 0.0)
                tl.store(KAPPA + ks, tl.where(ks < m, kappa, float("inf")))
                tl.store(PREFIX, 0.0)
                tl.store(PREFIX + 1 + ks, tl.cumsum(real, 0))  # PREFIX[k]: the sum of the k smallest kappa
                if WRITE_GRAD:
                    tl.store(BELOW + bins, tl.zeros([2 * K], tl.int32))
                    tl.store(TIED + bins, tl.zeros([2 * K], tl.int32))
                tl.debug_barrier()
                for c0 in range(0, n_cols, BLOCK_C):
                    cols = c0 + tl.arange(0, BLOCK_C)
                    ok = cols < n_cols
                    label = tl.load(L_row + cols * stride_lc, mask=ok, other=-1)
                    is_neg = ok & (label == 0)
                    s = tl.load(S_row + cols * stride_sc, mask=is_neg, other=0.0).to(tl.float32)
                    below = _count_below(KAPPA, s, True, K, LOG_K)  # (BLOCK_C,) kappa_i < s_j
                    pair_sum = below.to(tl.float32) * s - tl.load(PREFIX + below, mask=is_neg, other=0.0)
                    loss += tl.sum(tl.where(is_neg, pair_sum, 0.0), 0)
                    if WRITE_GRAD:
                        tied = is_neg & (tl.load(KAPPA + below, mask=is_neg & (below < K), other=0.0) == s)
                        tied &= below < K
                        upto = below
                        if tl.max(tied.to(tl.int32), 0) > 0:  # a kink: kappa_i == s_j exactly
                            upto = tl.where(tied, _count_below(KAPPA, s, False, K, LOG_K), below)
                            tl.atomic_add(TIED + below, 1, mask=tied, sem="relaxed")
                            tl.atomic_add(TIED + upto, -1, mask=tied, sem="relaxed")
                        tl.atomic_add(BELOW + below, 1, mask=is_neg, sem="relaxed")
                        grad = below.to(tl.float32) + 0.5 * (upto - below).to(tl.float32)
                        grad += tl.load(G_row + cols * stride_gc, mask=is_neg & (q > 0), other=0.0)  # earlier chunks
                        # chunk 0 writes every entry (0 for positives until their chunk, and for ignored ones)
                        tl.store(G_row + cols * stride_gc, tl.where(is_neg, grad, 0.0), mask=is_neg | (ok & (q == 0)))
                if WRITE_GRAD:
                    tl.debug_barrier()  # histograms complete, positives' zeros written
                    # the atomics were done in L2: read them from there (.cg)
                    n_below = tl.cumsum(tl.load(BELOW + ks, cache_modifier=".cg"), 0)  # negatives with below_j <= k
                    n_tied = tl.cumsum(tl.load(TIED + ks, cache_modifier=".cg"), 0)  # ... with below_j <= k < upto_j
                    grad = -((n_neg - n_below).to(tl.float32) + 0.5 * n_tied.to(tl.float32))
                    tl.store(G_row + col * stride_gc, grad, mask=ks < m)
            tl.store(LOSS + row, loss)
            tl.debug_barrier()  # the next row reuses the scratch

    @triton.jit
    def _online_lse(run_max, run_sum, v):
        new_max = tl.maximum(run_max, tl.max(v, 0))
        safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)  # nothing seen yet
        return new_max, run_sum * tl.exp(run_max - safe_max) + tl.sum(tl.exp(v - safe_max), 0)

    @triton.jit
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

    @triton.jit
    def _scale_kernel(GRAD, GOUT, OUT, n_cols, stride_gout, divisor, stride_ob, stride_oc, BLOCK: tl.constexpr):
        """OUT[b, c] = GRAD[b, c] dL/dloss_b in OUT's dtype (GRAD contiguous fp32): the backward pass."""
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        ok = cols < n_cols
        gout = tl.load(GOUT + row * stride_gout) / divisor
        grad = tl.load(GRAD + row * n_cols + cols, mask=ok, other=0.0)
        tl.store(OUT + row * stride_ob + cols * stride_oc, (grad * gout).to(OUT.dtype.element_ty), mask=ok)


# ----------------------------------------------------------------------------- launchers
def _triton_ranking(scores, labels, margin, kind, need_grad):
    """(loss_b (B,), dloss_b/ds (B, C) fp32 or None) from the Triton kernels."""
    _triton_kernels()
    n_rows, n_cols = scores.shape
    where = "interpret" if scores.device.type == "cpu" else "cuda"
    losses = torch.empty(n_rows, device=scores.device, dtype=torch.float32)
    grad = torch.empty((n_rows, n_cols), device=scores.device, dtype=torch.float32) if need_grad else losses[:, None]
    strides = (scores.stride(0), scores.stride(1), labels.stride(0), labels.stride(1), grad.stride(0), grad.stride(1))
    tile = min(ROW_TILE[where], _next_pow2(n_cols))
    if kind == "lsep":
        _lsep_kernel[(n_rows,)](scores, labels, losses, grad, n_cols, *strides, WRITE_GRAD=need_grad, BLOCK_C=tile,
                                num_warps=4)
        return losses, (grad if need_grad else None)
    k = min(POSITIVES_PER_CHUNK[where], _next_pow2(n_cols))
    if where == "cuda":
        sms = torch.cuda.get_device_properties(scores.device).multi_processor_count
        n_programs = min(n_rows, PROGRAMS_PER_SM * sms)
    else:
        n_programs = min(n_rows, 3)  # a few, so that the tests run programs over several rows
    scratch = torch.empty(n_programs * 10 * k, device=scores.device, dtype=torch.int32)
    _hinge_kernel[(n_programs,)](scores, labels, losses, grad, scratch, n_rows, n_cols, margin, *strides,
                                 WRITE_GRAD=need_grad, BLOCK_C=tile, K=k, LOG_K=k.bit_length() - 1,
                                 num_warps=8 if k >= 1024 else 4)
    return losses, (grad if need_grad else None)


def _triton_scale(grad, grad_out, divisor, dtype):
    """dL/ds = dloss_b/ds * dL/dloss_b, in the scores' dtype: one launch."""
    _triton_kernels()
    n_rows, n_cols = grad.shape
    out = torch.empty((n_rows, n_cols), device=grad.device, dtype=dtype)
    block = min(4096, _next_pow2(n_cols))
    _scale_kernel[(n_rows, math.ceil(n_cols / block))](
        grad, grad_out, out, n_cols, grad_out.stride(0) if grad_out.dim() else 0, float(divisor), out.stride(0),
        out.stride(1), BLOCK=block, num_warps=4,
    )
    return out


def _next_pow2(n: int) -> int:
    return 1 << max(4, math.ceil(math.log2(n)))  # at least 16: the smallest tile the kernels use


# ----------------------------------------------------------------------------- autograd Function and public function
class _Engine:
    def __init__(self, forward, scale):
        self.forward, self.scale = forward, scale


_TRITON = _Engine(_triton_ranking, _triton_scale)


class _Ranking(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores, labels, margin, kind, reduction, engine):
        losses, grad = engine.forward(scores, labels, margin, kind, ctx.needs_input_grad[0])  # (B,), (B, C) or None
        ctx.save_for_backward(grad)
        ctx.reduction, ctx.dtype, ctx.engine = reduction, scores.dtype, engine
        if reduction == "mean":
            return losses.mean()
        return losses.sum() if reduction == "sum" else losses

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        divisor = grad.shape[0] if ctx.reduction == "mean" else 1  # "none": grad_out is per row
        return ctx.engine.scale(grad, grad_out, divisor, ctx.dtype), None, None, None, None, None


def ranking_loss(scores, labels, margin=1.0, kind="hinge", reduction="mean", backend="auto"):
    """Pairwise ranking loss over each row's (positive, negative) pairs; see the module docstring.

    scores (B, C) fp32/fp16/bf16 (fp32 math); labels (B, C): 1 positive, 0 negative, other values ignored.
    margin: the hinge margin (LSEP has none). kind: "hinge" | "lsep". reduction: "mean" (over rows) |
    "sum" | "none" -> (B,). backend: "auto" | "triton" | "reference". The loss is fp32.
    """
    _validate(scores, labels, margin, kind, reduction)
    engine = _TRITON if _backend.use_triton(backend, scores) else _REFERENCE
    return _Ranking.apply(scores, labels, float(margin), kind, reduction, engine)


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


# ----------------------------------------------------------------------------- reference twin (plain PyTorch)
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


def _reference_scale(grad, grad_out, divisor, dtype):
    gout = grad_out.float()
    return (grad * (gout[:, None] if gout.dim() else gout / divisor)).to(dtype)


_REFERENCE = _Engine(_reference_ranking, _reference_scale)


def ranking_loss_reference(scores, labels, margin=1.0, kind="hinge", reduction="mean"):
    """The plain-PyTorch twin (one sort and prefix sums, no pair tensor). Same arguments and result."""
    _validate(scores, labels, margin, kind, reduction)
    return _Ranking.apply(scores, labels, float(margin), kind, reduction, _REFERENCE)


# ----------------------------------------------------------------------------- naive formula (float64)
def ranking_loss_naive(scores, labels, margin=1.0, kind="hinge", reduction="mean"):
    """The loss as written in the papers, in float64 over the explicit (B, C, C) pair tensor: the oracle the
    tests hold both paths to. O(B C^2) memory, so small inputs only; no validation.

    With pair[b, i, j] = [labels[b, i] == 1] [labels[b, j] == 0] (i a positive, j a negative of row b):
      hinge: loss_b = sum_{i, j} pair[b, i, j] max(0, margin - s_bi + s_bj)
      lsep:  loss_b = log(1 + sum_{i, j} pair[b, i, j] exp(s_bj - s_bi))
    reduction: "mean" over rows (rows without pairs count as 0) | "sum" | "none" -> (B,).
    """
    s = scores.double()
    pair = (labels == 1).double()[:, :, None] * (labels == 0).double()[:, None, :]  # (B, i, j)
    diff = s[:, None, :] - s[:, :, None]  # (B, i, j): s_j - s_i
    if kind == "hinge":  # torch.maximum, as the official code: gradient 1/2 at an exact kink
        losses = (torch.maximum(margin + diff, torch.zeros_like(diff)) * pair).sum((1, 2))
    else:
        losses = torch.log1p((torch.exp(diff) * pair).sum((1, 2)))
    return {"mean": losses.mean(), "sum": losses.sum(), "none": losses}[reduction]
