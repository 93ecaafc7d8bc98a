"""Sampled-negative softmax cross-entropy, fused: POMP's loss, with CoOp's full softmax as a special case.

POMP: "Prompt Pre-Training with Twenty-Thousand Classes" (Ren et al., arXiv 2304.04704) contrasts every
image with its own class and K-1 classes sampled once for the batch ("local contrast"), adding a margin
to the negatives ("local correction"). CoOp: "Learning to Prompt for Vision-Language Models" (Zhou et
al., arXiv 2109.01134) is the same loss over all classes (shared_from=0).

The columns of class_features w (M, D) come in two parts:
  [0, shared_from)  private positives: row i sees column j only if j == target[i];
  [shared_from, M)  shared negatives: every row sees them, except column ignore[i] (POMP masks a
                    sampled negative that equals the row's own class).
  z[i, j] = s <x_i, w_j> + (margin_i if j != target[i] else 0)
  loss_i  = logsumexp_{j visible to i} z[i, j] - z[i, target[i]]        (0 when only the target is visible)

How the Triton path and the reference twin's chunked path compute it, never holding the (B, M) logits (the
reference computes the formula itself, logits materialised, while they fit in CHUNK_BYTES: `_reference`):
- forward: private target logits are row dot products; the shared columns are swept in column tiles
  with an online log-sum-exp (Triton: one program per (row block, column split); a second small kernel
  combines the splits in a fixed order). The loss is formed relative to the target logit,
  log sum_j exp(z_j - z_t), so it stays exact for logits near 100. Only loss_i and z_t (B,) are kept.
- backward: the shared columns are recomputed chunk by chunk (CHUNK_BYTES of dL/dz at a time):
  G = s dL/dz for the chunk, then dX += G @ W_c and dW_c = G^T @ X (cuBLAS on GPU). Each class row
  is written once, so nothing needs atomics; ds sums dL/dz_ij <x_i, w_j> per row.
- private positives: their class gradients are per-class sums over rows (duplicate labels).
  With DETERMINISTIC (default True) the Triton path sums them in a fixed order (rows sorted by
  class); False uses index_add_ (CUDA atomics: last-bit differences between runs). Every other
  reduction is always in a fixed order.
Cost: 2BMD FLOPs forward and 6BMD backward over the shared columns.
"""
from __future__ import annotations

import functools
import math

import torch

from . import _backend

REDUCTIONS = ("mean", "sum", "none")
DETERMINISTIC = True
CHUNK_BYTES = 16 << 20  # dL/dz buffer per backward chunk (reference: fp32; Triton: the input dtype)
# Triton tile shapes per kind of input; `bench.kernels --sweep` times alternatives by overriding these.
TILE_CONFIGS = {
    "16bit": dict(BLOCK_B=128, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=3),
    "fp32": dict(BLOCK_B=64, BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=3),
    "interpret": dict(BLOCK_B=32, BLOCK_N=64, BLOCK_K=32),  # no tuning knobs in the interpreter
}


# ----------------------------------------------------------------------------- Triton kernels
@functools.cache
def _triton_kernels():
    """Import triton and define the kernels as module globals, on the first Triton call (why: _backend.py)."""
    global tl, _tile_epilogue, _softmax_tile_kernel, _finish_kernel, _segment_sum_kernel
    import triton
    import triton.language as tl

    @triton.jit
    def _tile_epilogue(dot, cols, col_ok, rows, row_ok, target, ignore, margin, scale, z_t, loss, gout, G, stride_gb,
                       col0, run_max, run_sum, z_target, ds_rows, MODE: tl.constexpr, SCALE_GRAD: tl.constexpr):
        """One (BLOCK_B, BLOCK_N) tile of <x_i, w_j>: update the row carries (MODE 0) or write G (MODE 1)."""
        is_target = (cols[None, :] == target[:, None]) & col_ok[None, :]
        visible = row_ok[:, None] & col_ok[None, :] & ((cols[None, :] != ignore[:, None]) | is_target)
        z = dot * scale + tl.where(is_target, 0.0, margin[:, None])  # the target column has no margin
        z = tl.where(visible, z, float("-inf"))
        if MODE == 0:
            new_max = tl.maximum(run_max, tl.max(z, 1))
            safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)  # a row with nothing visible yet
            run_sum = run_sum * tl.exp(run_max - safe_max) + tl.sum(tl.exp(z - safe_max[:, None]), 1)
            run_max = new_max
            z_target += tl.sum(tl.where(is_target, z, 0.0), 1)
        else:
            p = tl.exp((z - z_t[:, None]) - loss[:, None])  # softmax, exact for large logits; 0 where invisible
            grad_z = gout[:, None] * (p - is_target.to(tl.float32))
            if SCALE_GRAD:
                ds_rows += tl.sum(grad_z * dot, 1)
            g_ptrs = G + rows.to(tl.int64)[:, None] * stride_gb + (cols - col0)[None, :]
            tl.store(g_ptrs, (grad_z * scale).to(G.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])
        return run_max, run_sum, z_target, ds_rows

    @triton.jit
    def _softmax_tile_kernel(
        X, W, TARGET, IGNORE, MARGIN, SCALE, ZT, LOSS, GOUT, G, PART,
        n_rows, dim, col_end, col0, cols_per_split,
        stride_xb, stride_xd, stride_wm, stride_wd, stride_gb,
        MODE: tl.constexpr,  # 0: partial (max, log sum exp, target logit) per split; 1: write G = s dL/dz
        HAS_IGNORE: tl.constexpr, SCALE_GRAD: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr,
    ):
        """Program (row block, split) sweeps shared columns [lo, hi) of [col0, col_end) in BLOCK_N tiles."""
        rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        row_ok = rows < n_rows
        target = tl.load(TARGET + rows, mask=row_ok, other=-1)
        if HAS_IGNORE:
            ignore = tl.load(IGNORE + rows, mask=row_ok, other=-1)
        else:
            ignore = tl.full([BLOCK_B], -1, tl.int64)
        margin = tl.load(MARGIN + rows, mask=row_ok, other=0.0)
        scale = tl.load(SCALE)
        # MODE 1 only (dummy buffers in MODE 0): z_target, loss_i and dL/dloss_i of each row
        z_t = tl.load(ZT + rows, mask=row_ok, other=0.0)
        loss = tl.load(LOSS + rows, mask=row_ok, other=0.0)
        gout = tl.load(GOUT + rows, mask=row_ok, other=0.0)
        lo = col0 + tl.program_id(1) * cols_per_split
        hi = tl.minimum(lo + cols_per_split, col_end)
        ks = tl.arange(0, BLOCK_K)
        x_ptrs = X + rows.to(tl.int64)[:, None] * stride_xb + ks[None, :] * stride_xd  # (BLOCK_B, BLOCK_K)
        run_max = tl.full([BLOCK_B], float("-inf"), tl.float32)
        run_sum = tl.zeros([BLOCK_B], tl.float32)
        z_target = tl.zeros([BLOCK_B], tl.float32)
        ds_rows = tl.zeros([BLOCK_B], tl.float32)
        for c in range(lo, hi, BLOCK_N):
            cols = c + tl.arange(0, BLOCK_N)
            col_ok = cols < hi
            w_ptrs = W + cols.to(tl.int64)[None, :] * stride_wm + ks[:, None] * stride_wd  # (BLOCK_K, BLOCK_N)
            dot = tl.zeros([BLOCK_B, BLOCK_N], tl.float32)
            for k in range(0, dim, BLOCK_K):
                k_ok = ks + k < dim
                xt = tl.load(x_ptrs + k * stride_xd, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
                wt = tl.load(w_ptrs + k * stride_wd, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
                dot = tl.dot(xt, wt, dot, input_precision=DOT_PRECISION)
            run_max, run_sum, z_target, ds_rows = _tile_epilogue(
                dot, cols, col_ok, rows, row_ok, target, ignore, margin, scale, z_t, loss, gout, G, stride_gb, col0,
                run_max, run_sum, z_target, ds_rows, MODE, SCALE_GRAD)
        part = PART + tl.program_id(1) * n_rows + rows  # PART: (quantity, split, row)
        if MODE == 0:
            stride_q = tl.num_programs(1) * n_rows
            tl.store(part, run_max, mask=row_ok)
            tl.store(part + stride_q, tl.log(run_sum), mask=row_ok)
            tl.store(part + 2 * stride_q, z_target, mask=row_ok)
        elif SCALE_GRAD:
            tl.store(part, ds_rows, mask=row_ok)

    @triton.jit
    def _finish_kernel(X, W, TARGET, SCALE, PART, LOSS, ZT, DOTP, n_rows, n_splits, dim, shared_from,
                       stride_xb, stride_xd, stride_wm, stride_wd, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
        """Per row: the private target logit, the splits combined relative to the target logit, the loss.

        loss_i = log sum_j exp(z_j - z_t): the shared columns give sum_s exp((m_s - z_t) + log l_s); a private
        target adds its own exp(0) = 1, i.e. loss = softplus(shared part). Never lse - z_t, which would lose
        ~1e-5 absolute to fp32 rounding when the logits are near 100.
        """
        rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        row_ok = rows < n_rows
        target = tl.load(TARGET + rows, mask=row_ok, other=0)
        private = row_ok & (target < shared_from)
        dot = tl.zeros([BLOCK_B], tl.float32)
        if shared_from > 0:
            for d0 in range(0, dim, BLOCK_D):
                d = d0 + tl.arange(0, BLOCK_D)
                mask = private[:, None] & (d < dim)[None, :]
                x = tl.load(X + rows.to(tl.int64)[:, None] * stride_xb + d[None, :] * stride_xd, mask=mask, other=0.0)
                w = tl.load(W + target[:, None] * stride_wm + d[None, :] * stride_wd, mask=mask, other=0.0)
                dot += tl.sum(x.to(tl.float32) * w.to(tl.float32), 1)
        z_shared = tl.zeros([BLOCK_B], tl.float32)
        for split in range(0, n_splits):
            z_shared += tl.load(PART + (2 * n_splits + split) * n_rows + rows, mask=row_ok, other=0.0)
        z_t = tl.where(private, tl.load(SCALE) * dot, z_shared)
        top = tl.full([BLOCK_B], float("-inf"), tl.float32)
        for split in range(0, n_splits):
            v = tl.load(PART + split * n_rows + rows, mask=row_ok, other=0.0) - z_t
            top = tl.maximum(top, v + tl.load(PART + (n_splits + split) * n_rows + rows, mask=row_ok, other=0.0))
        safe_top = tl.where(top == float("-inf"), 0.0, top)
        total = tl.zeros([BLOCK_B], tl.float32)
        for split in range(0, n_splits):
            v = tl.load(PART + split * n_rows + rows, mask=row_ok, other=0.0) - z_t
            total += tl.exp(v + tl.load(PART + (n_splits + split) * n_rows + rows, mask=row_ok, other=0.0) - safe_top)
        shared = safe_top + tl.log(total)  # -inf when no shared column is visible
        t = tl.exp(-tl.abs(shared))
        log1p_t = tl.where(t < 1e-4, t * (1.0 - 0.5 * t), tl.log(1.0 + t))  # log1p without libdevice
        loss = tl.where(private, tl.maximum(shared, 0.0) + log1p_t, shared)
        tl.store(LOSS + rows, loss, mask=row_ok)
        tl.store(ZT + rows, z_t, mask=row_ok)
        tl.store(DOTP + rows, dot, mask=row_ok)

    @triton.jit
    def _segment_sum_kernel(X, COEF, ORDER, OFFSETS, OUT, dim, stride_xb, stride_xd, stride_ob, stride_od,
                            BLOCK_D: tl.constexpr):
        """OUT[c] = sum of COEF[r] * X[r] over the rows r of class c, in sorted row order (deterministic)."""
        cls = tl.program_id(0)
        d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        d_ok = d < dim
        acc = tl.zeros([BLOCK_D], tl.float32)
        for r in range(tl.load(OFFSETS + cls), tl.load(OFFSETS + cls + 1)):
            row = tl.load(ORDER + r)
            coef = tl.load(COEF + row)
            acc += coef * tl.load(X + row * stride_xb + d * stride_xd, mask=d_ok, other=0.0).to(tl.float32)
        tl.store(OUT + cls * stride_ob + d * stride_od, acc.to(OUT.dtype.element_ty), mask=d_ok)


# ----------------------------------------------------------------------------- launchers
def _launch_tiles(mode, x, w, scale, target, margin, ignore, col0, col_end, z_target=None, loss=None, gout=None,
                  g=None, scale_grad=False):
    """Run the tile kernel over columns [col0, col_end); returns its PART buffer (quantity, split, row)."""
    _triton_kernels()
    interpret = x.device.type == "cpu"
    if interpret:
        cfg, precision = TILE_CONFIGS["interpret"], "ieee"
    elif x.dtype == torch.float32:  # follow torch's own switch for fp32 matmuls on tensor cores
        cfg, precision = TILE_CONFIGS["fp32"], "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
    else:
        cfg, precision = TILE_CONFIGS["16bit"], "tf32"  # ignored for 16-bit inputs
    n_rows, n_cols = x.shape[0], col_end - col0
    row_blocks = math.ceil(n_rows / cfg["BLOCK_B"])
    # enough column splits to fill the device; each split a whole number of tiles
    n_splits = max(1, min(math.ceil(_backend.num_programs_target(x.device) / row_blocks),
                          math.ceil(n_cols / cfg["BLOCK_N"])))
    cols_per_split = math.ceil(n_cols / n_splits / cfg["BLOCK_N"]) * cfg["BLOCK_N"]
    n_splits = math.ceil(n_cols / cols_per_split)
    part = torch.empty((3 if mode == 0 else 1, n_splits, n_rows), device=x.device, dtype=torch.float32)
    dummy = margin  # any fp32 buffer, for pointers a mode does not read
    _softmax_tile_kernel[(row_blocks, n_splits)](
        x, w, target, target if ignore is None else ignore, margin, scale,
        dummy if z_target is None else z_target, dummy if loss is None else loss, dummy if gout is None else gout,
        part if g is None else g, part,
        n_rows, x.shape[1], col_end, col0, cols_per_split,
        x.stride(0), x.stride(1), w.stride(0), w.stride(1), 0 if g is None else g.stride(0),
        MODE=mode, HAS_IGNORE=ignore is not None, SCALE_GRAD=scale_grad, DOT_PRECISION=precision, **cfg,
    )
    return part


def _triton_operands(x, w):
    # the interpreter runs tl.dot through numpy, which has no bf16: give it fp32 (the same products)
    return (x.float(), w.float()) if x.device.type == "cpu" else (x, w)


def _triton_forward(x, w, scale, target, margin, ignore, shared_from, targets):
    """(loss_i, z_target, <x_i, w_target> of private rows (else 0)), each (B,): two launches."""
    _triton_kernels()
    n_rows, n_cols = x.shape[0], w.shape[0]
    part = torch.empty((3, 0, n_rows), device=x.device)  # no shared columns: no split
    if shared_from < n_cols:
        part = _launch_tiles(0, x, w, scale, target, margin, ignore, shared_from, n_cols)
    losses, z_target, dot_private = torch.empty((3, n_rows), device=x.device)
    block_b = 32
    _finish_kernel[(math.ceil(n_rows / block_b),)](
        x, w, target, scale, part, losses, z_target, dot_private, n_rows, part.shape[1], x.shape[1], shared_from,
        x.stride(0), x.stride(1), w.stride(0), w.stride(1), BLOCK_B=block_b, BLOCK_D=64,
    )
    return losses, z_target, dot_private


def _triton_grad_chunk(x, w, scale, target, margin, ignore, z_target, loss, gout, c0, c1, scale_grad, targets):
    g = torch.empty((x.shape[0], c1 - c0), device=x.device, dtype=x.dtype)
    part = _launch_tiles(1, x, w, scale, target, margin, ignore, c0, c1, z_target, loss, gout, g, scale_grad)
    return g, (part[0].sum(0) if scale_grad else None)


def _triton_class_sum(out, coef, x, target, private):
    """out[c] = sum over private rows r with target[r] == c of coef[r] * x[r]; private (B,) bool, None: every row."""
    if not (DETERMINISTIC or torch.are_deterministic_algorithms_enabled()):
        return _reference_class_sum(out, coef, x, target, private)
    _triton_kernels()
    n_cls = out.shape[0]
    key = target if private is None else torch.where(private, target, n_cls)  # shared-target rows sort last
    order = torch.argsort(key, stable=True)
    offsets = torch.zeros(n_cls + 1, device=x.device, dtype=torch.int64)
    offsets[1:] = torch.bincount(key, minlength=n_cls + 1)[:n_cls].cumsum(0)
    block_d = 128
    _segment_sum_kernel[(n_cls, math.ceil(x.shape[1] / block_d))](
        x, coef, order, offsets, out, x.shape[1], x.stride(0), x.stride(1), out.stride(0), out.stride(1),
        BLOCK_D=block_d,
    )


# ----------------------------------------------------------------------------- autograd Function and public function
class _Engine:
    """The two ways to sweep the shared columns; everything else is common code in _SampledSoftmax."""

    def __init__(self, operands, forward, grad_chunk, class_sum):
        self.operands, self.forward, self.grad_chunk, self.class_sum = operands, forward, grad_chunk, class_sum


_TRITON = _Engine(_triton_operands, _triton_forward, _triton_grad_chunk, _triton_class_sum)


def _chunks(start, stop, n_rows, itemsize):
    """Column ranges [c0, c1) covering [start, stop) with at most CHUNK_BYTES of (n_rows, c) per chunk."""
    width = max(256, CHUNK_BYTES // (n_rows * itemsize) // 256 * 256)
    return [(c0, min(c0 + width, stop)) for c0 in range(start, stop, width)]


class _SampledSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, class_features, scale, target, margin, ignore, shared_from, targets, reduction, engine):
        x, w = engine.operands(features, class_features)
        s = scale.float()  # (no graph is recorded inside forward: no detach needed)
        losses, z_target, dot_private = engine.forward(x, w, s, target, margin, ignore, shared_from, targets)  # (B,)
        ctx.save_for_backward(features, class_features, s, target, margin, ignore, z_target, losses, dot_private)
        ctx.shared_from, ctx.targets, ctx.reduction, ctx.engine = shared_from, targets, reduction, engine
        ctx.scale_shape, ctx.scale_dtype = scale.shape, scale.dtype
        if reduction == "mean":
            return losses.mean()
        return losses.sum() if reduction == "sum" else losses

    @staticmethod
    def backward(ctx, grad):
        features, class_features, s, target, margin, ignore, z_target, losses, dot_private = ctx.saved_tensors
        need_x, need_w, need_s = ctx.needs_input_grad[:3]
        engine, shared_from, targets = ctx.engine, ctx.shared_from, ctx.targets
        x, w = engine.operands(features, class_features)
        n_rows, n_cols = x.shape[0], w.shape[0]
        gout = grad.float().expand(n_rows)
        gout = (gout / n_rows if ctx.reduction == "mean" else gout).contiguous()  # dL/dloss_i, (B,)
        dx = None  # fp32 sum of the column chunks' and the private targets' terms
        dw = torch.zeros_like(class_features) if need_w else None
        ds = torch.zeros((), device=x.device) if need_s else None
        for c0, c1 in _chunks(shared_from, n_cols, n_rows, 4 if engine is _REFERENCE else x.element_size()):
            g, ds_rows = engine.grad_chunk(x, w, s, target, margin, ignore, z_target, losses, gout, c0, c1, need_s,
                                           targets)  # fmt: skip
            if need_x:
                dx = _accumulate(dx, g @ w[c0:c1].to(g.dtype))
            if need_w and dw.dtype == g.dtype:
                torch.mm(g.T, x, out=dw[c0:c1])  # no temporary
            elif need_w:
                dw[c0:c1] = g.T @ x.to(g.dtype)
            if need_s:
                ds += ds_rows.sum()
        if shared_from > 0 and targets != "shared":  # private positives: dL/dz_target = gout (p_target - 1)
            coef = gout * torch.expm1(-losses)  # p_target = exp(-loss_i)
            private = None  # every target private
            if targets == "mixed":
                private = target < shared_from
                coef = torch.where(private, coef, 0.0)
            scaled = s * coef
            if need_x:
                dx = _accumulate(dx, scaled[:, None] * w[target].float())
            if need_w:
                engine.class_sum(dw[:shared_from], scaled, x, target, private)
            if need_s:
                ds += (coef * dot_private).sum()
        if need_x:
            dx = (torch.zeros(x.shape, device=x.device) if dx is None else dx).to(features.dtype)
        ds = ds.to(ctx.scale_dtype).reshape(ctx.scale_shape) if need_s else None
        return dx, dw, ds, None, None, None, None, None, None, None


def _accumulate(total, term):
    """total + term in fp32, the first term taken as the total (a sum starting from zeros, one op less)."""
    return term.float() if total is None else total.add_(term)


def sampled_softmax_loss(features, class_features, target, scale, margin=0.0, shared_from=0, ignore=None,
                         reduction="mean", backend="auto", check=True):
    """Softmax cross-entropy over each row's visible columns (see the module docstring); loss in fp32.

    features (B, D) and class_features (M, D): fp32, fp16 or bf16 (same dtype; fp32 accumulation).
    target (B,) int: each row's positive column. scale: float or 0-d tensor (gets a gradient if it
    requires one). margin: float or (B,) tensor added to non-target columns (no gradient).
    shared_from: columns [0, shared_from) are private positives, [shared_from, M) shared negatives.
    ignore: None or (B,) int, a shared column hidden from row i (negative = none).
    reduction: "mean" | "sum" | "none". backend: "auto" | "triton" | "reference".
    check: test the data (indices in range, ignore never a target, a finite scale) at the cost of one device sync;
    False skips it where the indices are valid by construction (POMP's `sampled_columns`): no sync, fewer ops.
    Reductions run in a fixed order unless the module switch DETERMINISTIC is set to False.
    """
    args = _validated(features, class_features, target, scale, margin, shared_from, ignore, reduction, check)
    if _backend.use_triton(backend, features):
        return _SampledSoftmax.apply(*args, _TRITON)
    return _reference(*args)


def _validated(features, class_features, target, scale, margin, shared_from, ignore, reduction, check=True):
    """The checked arguments of `_SampledSoftmax` (scale and margin as tensors), with `targets`: where the rows'
    targets lie, "private" (all in [0, shared_from)), "shared" (all after) or "mixed" (both, or not known)."""
    for name, t in (("features", features), ("class_features", class_features)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            raise ValueError(f"{name} must be a 2-D tensor (rows, dim), got {getattr(t, 'shape', type(t))}")
        if t.dtype not in _backend.FLOAT_DTYPES:
            raise TypeError(f"{name} has dtype {t.dtype}; use float32, float16 or bfloat16")
    if features.dtype != class_features.dtype:
        raise TypeError(f"features is {features.dtype} but class_features is {class_features.dtype}; "
                        "cast one to the other's dtype")
    (n_rows, dim), n_cols = features.shape, class_features.shape[0]
    if class_features.shape[1] != dim:
        raise ValueError(f"features has dim {dim} but class_features has dim {class_features.shape[1]}")
    if n_rows == 0 or n_cols == 0 or dim == 0:
        raise ValueError(f"empty input: features {tuple(features.shape)}, class_features {tuple(class_features.shape)}")
    _check_index("target", target, n_rows)
    if ignore is not None:
        _check_index("ignore", ignore, n_rows)
    if isinstance(shared_from, bool) or not isinstance(shared_from, int) or not 0 <= shared_from <= n_cols:
        raise ValueError(f"shared_from must be an int in [0, {n_cols}] (the number of class rows), got {shared_from!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not one of {REDUCTIONS}")
    device = features.device
    if isinstance(scale, torch.Tensor):
        if scale.dim() != 0 or not scale.is_floating_point():
            raise ValueError(f"scale must be a float or a 0-d float tensor, got {tuple(scale.shape)} {scale.dtype}")
    elif isinstance(scale, (int, float)) and math.isfinite(scale):
        scale = torch.full((), float(scale), device=device)  # a fill, not a host-to-device copy
    else:
        raise ValueError(f"scale must be a finite float or a 0-d float tensor, got {scale!r}")
    if isinstance(margin, torch.Tensor):
        if margin.shape not in ((), (n_rows,)) or not margin.is_floating_point():
            raise ValueError(f"margin must be a float or a ({n_rows},) float tensor, "
                             f"got {tuple(margin.shape)} {margin.dtype}")
        margin = margin.detach() if margin.requires_grad else margin  # no gradient; detach only when needed (an op)
        margin = margin.float() if margin.shape == (n_rows,) else margin.float().expand(n_rows).contiguous()
    elif isinstance(margin, (int, float)):
        margin = torch.full((n_rows,), float(margin), device=device)
    else:
        raise ValueError(f"margin must be a float or a ({n_rows},) float tensor, got {margin!r}")
    _backend.check_same_device(features=features, class_features=class_features, target=target, scale=scale,
                               margin=margin, ignore=ignore)
    target = target.long().contiguous()
    ignore = None if ignore is None else ignore.long().contiguous()
    if not check:  # trusted indices: where the targets lie is not known (no sync), so the engines assume both kinds
        return features, class_features, scale, target, margin, ignore, shared_from, "mixed", reduction
    # the data checks and what the engines skip by knowing them cost one device sync together, a few reductions
    # (as few ops as they can: a launch-bound GPU step pays per op); the messages are built only on failure
    with torch.no_grad():
        stats = [*torch.aminmax(target), scale.double()]  # float64 holds every index exactly
        if ignore is not None:
            stats += [ignore.max(), (ignore == target).any()]
        lowest, highest, scale_value, *ignored = torch.stack(stats).tolist()
    if lowest < 0 or highest >= n_cols:
        i = int(torch.nonzero((target < 0) | (target >= n_cols))[0])
        raise ValueError(f"target[{i}] = {int(target[i])} is outside [0, {n_cols}) (the class_features rows)")
    if ignored and (ignored[0] >= n_cols or ignored[1]):
        i = int(torch.nonzero((ignore >= n_cols) | (ignore == target))[0])
        raise ValueError(f"ignore[{i}] = {int(ignore[i])} must be < {n_cols} and differ from target[{i}] "
                         "(use -1 for no ignored column)")
    if not math.isfinite(scale_value):
        raise ValueError(f"scale is not finite: {scale_value}")
    if ignored and ignored[0] < 0:  # no row hides a column: the same loss without the mask
        ignore = None
    targets = "private" if highest < shared_from else "shared" if lowest >= shared_from else "mixed"
    return features, class_features, scale, target, margin, ignore, shared_from, targets, reduction


def _check_index(name, t, n_rows):
    if not isinstance(t, torch.Tensor) or t.shape != (n_rows,):
        raise ValueError(f"{name} must be a ({n_rows},) integer tensor, got {getattr(t, 'shape', type(t))}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got dtype {t.dtype}")


# ----------------------------------------------------------------------------- reference twin (plain PyTorch)
def _reference(features, class_features, scale, target, margin, ignore, shared_from, targets, reduction):
    """The plain-PyTorch path, on checked arguments: the formula itself, with materialised (B, M) logits and
    autograd's backward, when those fp32 logits fit in CHUNK_BYTES (the fewest ops, nothing recomputed: a
    launch-bound step's choice, and the faster one on CPU); above that, column chunks recomputed in backward, the
    Triton path's scheme in plain PyTorch (memory of one chunk)."""
    n_rows, n_cols = features.shape[0], class_features.shape[0]
    if n_rows * n_cols * 4 > CHUNK_BYTES:
        return _SampledSoftmax.apply(features, class_features, scale, target, margin, ignore, shared_from, targets,
                                     reduction, _REFERENCE)  # fmt: skip
    x, w = features.float(), class_features.float()
    cols = torch.arange(n_cols, device=x.device)
    is_target = cols == target[:, None]  # (B, M)
    hidden = None  # (B, M) the columns a row does not see: others' private positives, its ignored negative
    if shared_from > 0:
        hidden = (cols < shared_from) > is_target  # a private column that is not the row's target
    if ignore is not None:
        ignored = cols == ignore[:, None]  # never the target (checked)
        hidden = ignored if hidden is None else hidden | ignored
    bias = margin[:, None].masked_fill(is_target, 0.0)  # (B, M): no margin on the target column
    if hidden is not None:
        bias.masked_fill_(hidden, float("-inf"))  # in the bias, which has no gradient: nothing to mask in backward
    z = scale.float() * (x @ w.T) + bias
    # log_softmax forms z_t - max - log sum exp(z - max): no cancellation of two logits near 100 either
    return torch.nn.functional.cross_entropy(z, target, reduction=reduction)


def _reference_operands(x, w):
    return x.float(), w  # class rows are cast chunk by chunk


def _reference_logits(x, w, scale, target, margin, ignore, c0, c1, keep_dot, targets):
    """(dot or None, z, is_target or None) for shared columns [c0, c1): z = s <x_i, w_j> + margin_i, no margin on
    the target column and -inf on the ignored one; is_target (B, C) marks targets, None when every target is private.
    Masks compare column ids with target and ignore (no nonzero: no device sync)."""
    dot = x @ w[c0:c1].float().T  # (B, C)
    z = dot * scale if keep_dot else dot.mul_(scale)
    is_target = None
    if targets != "private" or ignore is not None:
        cols = torch.arange(c0, c1, device=x.device)
    if targets != "private":
        is_target = cols == target[:, None]
        z.add_(torch.where(is_target, 0.0, margin[:, None]))  # the target column has no margin (+ 0.0 is exact)
    else:
        z.add_(margin[:, None])
    if ignore is not None:  # ignore never equals the target (checked)
        z.masked_fill_(cols == ignore[:, None], float("-inf"))
    return (dot if keep_dot else None), z, is_target


def _reference_forward(x, w, scale, target, margin, ignore, shared_from, targets):
    """(loss_i, z_target, <x_i, w_target> of private rows (else 0; None when no target is private)), each (B,),
    from column chunks; `targets` says where the targets lie (`_validated`): all-private rows skip the masks."""
    n_rows = x.shape[0]
    dot_private = None
    if targets != "shared":
        dot_private = (x * w[target].float()).sum(1)
        if targets == "mixed":
            dot_private = torch.where(target < shared_from, dot_private, 0.0)
    z_target = torch.zeros(n_rows, device=x.device) if targets != "private" else None  # of shared targets
    parts = []  # per chunk: the max and the log sum exp relative to it of the row's visible columns, (B,) each
    for c0, c1 in _chunks(shared_from, w.shape[0], n_rows, 4):
        _, z, is_target = _reference_logits(x, w, scale, target, margin, ignore, c0, c1, False, targets)
        if is_target is not None:
            z_target += torch.where(is_target, z, 0.0).sum(1)  # one target column per row, in one chunk
        z_max = z.amax(1)  # -inf where nothing is visible: clamped, so z - max stays -inf there (not nan)
        parts.append((z_max, z.sub_(z_max.clamp(min=torch.finfo(z.dtype).min)[:, None]).exp_().sum(1).log_()))
    if targets != "shared":
        private_z = scale * dot_private
        z_target = private_z if targets == "private" else torch.where(target < shared_from, private_z, z_target)
    # loss_i = log sum_j exp(z_j - z_t), formed relative to the target logit, never as lse - z_t: with
    # logits near 100 that difference would lose ~1e-5 absolute to fp32 rounding
    if not parts:  # no shared column
        shared = torch.full((n_rows,), float("-inf"), device=x.device)
    elif len(parts) == 1:  # logsumexp of one term, without its ops
        shared = (parts[0][0] - z_target) + parts[0][1]
    else:
        maxes, log_sums = (torch.stack(t) for t in zip(*parts))
        shared = torch.logsumexp((maxes - z_target) + log_sums, 0)  # -inf: none visible
    if targets == "shared":
        return shared, z_target, dot_private
    with_target = torch.logaddexp(shared, torch.zeros_like(shared))  # + exp(0) of a private z_t
    losses = with_target if targets == "private" else torch.where(target < shared_from, with_target, shared)
    return losses, z_target, dot_private


def _reference_grad_chunk(x, w, scale, target, margin, ignore, z_target, loss, gout, c0, c1, scale_grad, targets):
    dot, z, is_target = _reference_logits(x, w, scale, target, margin, ignore, c0, c1, scale_grad, targets)
    grad_z = z.sub_(z_target[:, None]).sub_(loss[:, None]).exp_().mul_(gout[:, None])  # softmax * dL/dloss_i
    if is_target is not None:
        grad_z.sub_(torch.where(is_target, gout[:, None], 0.0))  # - dL/dloss_i at the target (- 0.0 is exact)
    ds_rows = (grad_z * dot).sum(1) if scale_grad else None
    return grad_z.mul_(scale), ds_rows


def _reference_class_sum(out, coef, x, target, private):
    """out (zeros) [c] = sum over private rows r with target[r] == c of coef[r] * x[r]; private None: every row."""
    rows = coef[:, None] * x.float()
    index = target if private is None else torch.where(private, target, 0)  # non-private rows add coef 0 to class 0
    if out.dtype == torch.float32:
        out.index_add_(0, index, rows)
    else:  # sum in fp32, round once
        out.copy_(torch.zeros(out.shape, device=x.device, dtype=torch.float32).index_add_(0, index, rows))


_REFERENCE = _Engine(_reference_operands, _reference_forward, _reference_grad_chunk, _reference_class_sum)


def sampled_softmax_loss_reference(features, class_features, target, scale, margin=0.0, shared_from=0,
                                   ignore=None, reduction="mean"):
    """The plain-PyTorch twin (materialised logits when they fit CHUNK_BYTES, else column chunks; the CPU path).
    Same arguments and result."""
    return _reference(*_validated(features, class_features, target, scale, margin, shared_from, ignore, reduction))


# ----------------------------------------------------------------------------- naive formula (float64)
def sampled_softmax_loss_naive(features, class_features, target, scale, margin=0.0, shared_from=0, ignore=None,
                               reduction="mean"):
    """The loss as defined, in float64 over the dense (B, M) logits: the oracle the tests hold both paths to.
    O(B M) memory, so small inputs only; no validation. Same arguments as sampled_softmax_loss.

      z[i, j]  = scale <x_i, w_j> + (margin_i if j != target[i] else 0)
      j visible to row i  <=>  j == target[i], or (j >= shared_from and j != ignore[i])
      loss_i   = logsumexp_{j visible to i} z[i, j] - z[i, target[i]]
    """
    x, w = features.double(), class_features.double()
    n_rows, n_cols = x.shape[0], w.shape[0]
    cols = torch.arange(n_cols, device=x.device)
    is_target = cols[None, :] == target[:, None]  # (B, M)
    margin = torch.as_tensor(margin, dtype=torch.float64, device=x.device).expand(n_rows)
    z = torch.as_tensor(scale, dtype=torch.float64) * x @ w.T + torch.where(is_target, 0.0, margin[:, None])
    visible = (cols[None, :] >= shared_from) | is_target
    if ignore is not None:
        visible &= (cols[None, :] != ignore[:, None]) | is_target
    z = z.masked_fill(~visible, float("-inf"))
    losses = torch.logsumexp(z, 1) - z[torch.arange(n_rows, device=x.device), target]
    return {"mean": losses.mean(), "sum": losses.sum(), "none": losses}[reduction]
