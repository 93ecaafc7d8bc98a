"""Suite `kernels`: the two fused losses against eager PyTorch, torch.compile and their reference twins.

`python -m bench kernels [--quick] [--device cpu|cuda]`. Kernel A is `sampled_softmax_loss` (POMP, arXiv
2304.04704; CoOp's full softmax) on the all-shared layout with a per-row margin and one ignored column
per row, so every provider does the full 2/4/6 B M D FLOPs. Kernel B is `ranking_loss` (TaI-DPT, arXiv
2211.12739), hinge by default. Providers:
- eager: the obvious PyTorch, materialising the (B, M) logits (A; loss math in fp32 as autocast does) or
  the (B, C, C) pair tensor (B; skipped where that tensor would not fit);
- reference: the plain-PyTorch twin (column-chunked A; sort-based B);
- compile: torch.compile(eager, dynamic=True) (GPU only; one compilation shared by all shapes);
- triton: the fused kernels (GPU only).
Modes: forward (the training forward: inputs require grad), backward (autograd.grad of a recorded
graph), full (both). Each case is timed interleaved (median, p20, p80). TFLOP/s counts the useful
2/4/6 B M D FLOPs (A's recomputation not counted); GB/s counts each input read and each output written
once (B); "% roof" is the floor time (FLOPs at the measured matmul rate or bytes at the measured copy
bandwidth, whichever is larger) over the measured time. Peak extra memory (a fresh process per
provider, mode full) includes the gradients of the inputs, given separately as grad MiB.
"""
import torch
import torch.nn.functional as F

from bench import harness
from tinyprompt.kernels import ranking as rk_module
from tinyprompt.kernels import ranking_loss, sampled_softmax_loss
from tinyprompt.kernels import sampled_softmax as ss_module

A_GRID = [(b, m, d) for b in (256, 1024, 4096) for m in (1000, 5000, 21000) for d in (512, 1024)]
A_CPU = [(256, 1000, 512), (1024, 5000, 512), (4096, 21000, 512)]  # the CPU goal shape last
A_QUICK = [(256, 1000, 512), (1024, 5000, 512)]
B_GRID = [(b, c) for b in (256, 4096) for c in (80, 1000, 21000)]
B_QUICK = [(256, 80), (256, 1000)]
# shapes whose peak memory is measured (a fresh process per provider: slow, so only the goal shapes)
A_MEMORY = {"cpu": {(1024, 5000, 512), (4096, 21000, 512)}, "cuda": {(4096, 21000, 1024)}}
B_MEMORY = {"cpu": {(256, 1000)}, "cuda": {(4096, 1000), (256, 21000)}}
MODES = ("forward", "backward", "full")
PAIR_LIMIT = {"cpu": 3e8, "cuda": 1.1e9}  # largest B*C*C for the pairwise eager ranking loss
# --sweep: each row times one module setting changed from its default, full pass, Triton only
SWEEP_A = [dict()] + [
    dict(TILE_CONFIGS={**ss_module.TILE_CONFIGS,
                       "16bit": dict(BLOCK_B=b, BLOCK_N=n, BLOCK_K=k, num_warps=warps, num_stages=stages)})
    for b, n, k, warps, stages in ((64, 128, 64, 4, 4), (128, 128, 64, 4, 4), (128, 256, 64, 8, 3))
] + [dict(CHUNK_BYTES=32 << 20)]
SWEEP_B = [dict(), dict(PROGRAMS_PER_SM=1), dict(PROGRAMS_PER_SM=4), dict(ROW_TILE={"cuda": 512, "interpret": 16}),
           dict(ROW_TILE={"cuda": 2048, "interpret": 16})]
COLUMNS = ["kernel", "shape", "dtype", "mode", "provider", "median_ms", "p20_ms", "p80_ms", "tflops", "gbps",
           "pct_roof", "x_eager", "peak_extra_MiB", "grad_MiB", "note"]


def add_args(parser):
    parser.add_argument("--kernel", default="all", choices=["all", "sampled_softmax", "ranking"],
                        help="which kernel to benchmark (default: all)")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="input dtype (default: bfloat16 on cuda, float32 on cpu)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per provider (default: 10, cpu 5)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--threads", type=int, default=None,
                        help="cpu: torch threads for every provider (default: torch's); 1 avoids waiting on a "
                             "descheduled worker thread when the machine is shared")
    parser.add_argument("--goals-only", action="store_true",
                        help="only the shapes and measurements the issue's goals name (A: B >= 1024, M >= 5000 and "
                             "the memory of the roofline shape; B: B*C >= 4e6, no memory)")
    parser.add_argument("--sweep", action="store_true",
                        help="cuda: only time the Triton paths' alternative settings (SWEEP) at the goal shapes")


# ----------------------------------------------------------------------------- eager formulations
def eager_sampled_softmax(x, w, target, scale, margin, ignore):
    """The obvious PyTorch: the (B, M) logits in the input dtype, the loss math in fp32 (as under autocast)."""
    logits = (scale * (x @ w.T)).float()
    cols = torch.arange(w.shape[0], device=x.device)
    not_target = cols[None, :] != target[:, None]
    logits = logits + margin[:, None] * not_target
    logits = logits.masked_fill((cols[None, :] == ignore[:, None]) & not_target, float("-inf"))
    return F.cross_entropy(logits, target)


def eager_ranking(scores, labels, margin=1.0):
    """The official formulation: the (B, C, C) pairwise hinge, pairs summed, batch mean."""
    s = scores.float()
    pos, neg = (labels == 1).float(), (labels == 0).float()
    pairs = margin - s[:, :, None] + s[:, None, :]  # (B, i, j): margin - s_i + s_j
    return (torch.clamp(pairs, min=0) * pos[:, :, None] * neg[:, None, :]).sum((1, 2)).mean()


_COMPILED = {}


def _compiled(fn):
    if fn not in _COMPILED:
        # "backward" mode replays one recorded graph (retain_graph), which donated buffers forbid
        import torch._functorch.config as functorch_config

        functorch_config.donated_buffer = False
        _COMPILED[fn] = torch.compile(fn, dynamic=True)
    return _COMPILED[fn]


# ----------------------------------------------------------------------------- factories (importable)
def softmax_inputs(n_rows, n_cols, dim, dtype, device, seed=0):
    """Unit-norm features (as CLIP's), scale 100 (CLIP's), a per-row margin and one ignored column per row."""
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(n_rows, dim, generator=g), dim=1)
    w = F.normalize(torch.randn(n_cols, dim, generator=g), dim=1)
    target = torch.randint(0, n_cols, (n_rows,), generator=g)
    ignore = (target + 1 + torch.randint(0, n_cols - 1, (n_rows,), generator=g)) % n_cols
    margin = torch.rand(n_rows, generator=g)
    to = dict(device=device)
    return x.to(dtype=dtype, **to), w.to(dtype=dtype, **to), target.to(**to), margin.to(**to), ignore.to(**to)


def ranking_inputs(n_rows, n_cols, dtype, device, seed=0):
    """Scores ~ 1.5 N(0, 1); about 5% positives, 5% ignored (VOC "difficult"), the rest negatives."""
    g = torch.Generator().manual_seed(seed)
    scores = 1.5 * torch.randn(n_rows, n_cols, generator=g)
    u = torch.rand(n_rows, n_cols, generator=g)
    labels = torch.where(u < 0.05, 1, torch.where(u < 0.10, -1, 0))
    return scores.to(device=device, dtype=dtype), labels.to(device)


def make_softmax_call(provider, mode, n_rows, n_cols, dim, dtype, device):
    """Zero-argument callable doing one `mode` of kernel A with `provider`."""
    x, w, target, margin, ignore = softmax_inputs(n_rows, n_cols, dim, getattr(torch, dtype), device)
    x.requires_grad_()
    w.requires_grad_()
    if provider in ("eager", "compile"):
        fn = eager_sampled_softmax if provider == "eager" else _compiled(eager_sampled_softmax)

        def forward():
            return fn(x, w, target, 100.0, margin, ignore)
    else:
        def forward():
            return sampled_softmax_loss(x, w, target, 100.0, margin, 0, ignore, backend=provider)
    return _mode_call(mode, forward, (x, w))


def make_ranking_call(provider, mode, n_rows, n_cols, dtype, device, kind="hinge"):
    scores, labels = ranking_inputs(n_rows, n_cols, getattr(torch, dtype), device)
    scores.requires_grad_()
    if provider in ("eager", "compile"):
        fn = eager_ranking if provider == "eager" else _compiled(eager_ranking)

        def forward():
            return fn(scores, labels)
    else:
        def forward():
            return ranking_loss(scores, labels, 1.0, kind, backend=provider)
    return _mode_call(mode, forward, (scores,))


def _mode_call(mode, forward, inputs):
    if mode == "forward":
        return forward
    if mode == "full":
        return lambda: torch.autograd.grad(forward(), inputs)
    loss = forward()  # backward only: replay the recorded graph
    return lambda: torch.autograd.grad(loss, inputs, retain_graph=True)


# ----------------------------------------------------------------------------- the suite
def run(args):
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    if args.threads:
        torch.set_num_threads(args.threads)  # the memory child processes inherit it (harness.peak_memory)
    dtype = args.dtype or ("bfloat16" if device == "cuda" else "float32")
    reps = args.reps or (3 if args.quick else 10 if device == "cuda" else 5)
    report = harness.Report("kernels-sweep" if args.sweep else "kernels", device, args.out)
    matmul = harness.measure_matmul_tflops(device, getattr(torch, dtype))
    copy = harness.measure_copy_gbps(device)
    report.add(kernel="roofline", provider="measured", shape="", dtype=dtype, mode="",
               note=f"matmul {matmul:.3g} TFLOP/s ({dtype}), copy {copy:.3g} GB/s")
    providers = ["eager", "reference"] + (["compile", "triton"] if device == "cuda" else [])
    if args.sweep:
        if device != "cuda":
            raise SystemExit("--sweep times the Triton paths' settings: it needs --device cuda")
        _sweep(report, dtype, reps, matmul, copy)
        report.write(COLUMNS, title=f"kernels settings sweep · {device} · {dtype}")
        return
    if args.kernel in ("all", "sampled_softmax"):
        grid = A_QUICK if args.quick else (A_GRID if device == "cuda" else A_CPU)
        if args.goals_only and device == "cuda":
            grid = [(b, m, d) for b, m, d in grid if b >= 1024 and m >= 5000]
        for n_rows, n_cols, dim in grid:
            _case_a(report, providers, (n_rows, n_cols, dim), dtype, device, reps, matmul, copy, args)
    if args.kernel in ("all", "ranking"):
        grid = B_QUICK if args.quick else B_GRID
        if args.goals_only:
            grid = [(b, c) for b, c in grid if b * c >= 4e6]
        for n_rows, n_cols in grid:
            _case_b(report, providers, (n_rows, n_cols), dtype, device, reps, copy, args)
    md = report.write(COLUMNS, title=f"kernels · {device} · {dtype}")
    goals = _goals(report.rows, device)
    with open(md, "a") as f:
        f.write("\n## Goals\n\n" + "\n".join(goals) + "\n")
    print("\n".join(goals))
    every_row = report.rows  # plot the full passes only: speed-up over eager per shape and provider
    report.rows = [r for r in every_row if r.get("mode") == "full" and r.get("kernel") in ("A", "B hinge")]
    report.plot(x="shape", y="x_eager", group="provider", ylabel="full pass: speed-up over eager (x)")
    report.rows = every_row


def _working(report, make, providers, base):
    """{provider: callable} for the providers whose first call succeeds; a failure becomes a row, not a crash."""
    calls = {}
    for provider in providers:
        try:
            call = make(provider)
            call()
            calls[provider] = call
        except Exception as e:  # noqa: BLE001 - reported in the results, the other providers still run
            report.add(**base, provider=provider, note=f"failed: {type(e).__name__}: {str(e)[:200]}")
    return calls


def _time_case(calls, device, reps, base):
    """Time the providers of one (shape, mode) interleaved; one row per provider."""
    times = harness.time_interleaved(calls, device, warmup=2 if device == "cuda" else 1, reps=reps)
    rows = {}
    for provider, seconds in times.items():
        stats = harness.summarize(seconds)
        rows[provider] = dict(base, provider=provider, median_ms=1e3 * stats["median_s"], p20_ms=1e3 * stats["p20_s"],
                              p80_ms=1e3 * stats["p80_s"], reps=stats["reps"])
    return rows


def _case_a(report, providers, shape, dtype, device, reps, matmul, copy, args):
    n_rows, n_cols, dim = shape
    elt = getattr(torch, dtype).itemsize
    for mode in MODES:
        flops = {"forward": 2, "backward": 4, "full": 6}[mode] * n_rows * n_cols * dim
        nbytes = (n_rows + n_cols) * dim * elt * (2 if mode == "full" else 1)  # inputs read (+ grads written)
        base = dict(kernel="A", shape=f"B{n_rows} M{n_cols} D{dim}", dtype=dtype, mode=mode, B=n_rows, M=n_cols,
                    D=dim, flops=flops)
        calls = _working(report, lambda p: make_softmax_call(p, mode, n_rows, n_cols, dim, dtype, device), providers,
                         base)
        rows = _time_case(calls, device, reps, base)
        del calls
        floor = max(flops / (matmul * 1e12), nbytes / (copy * 1e9))
        for provider, row in rows.items():
            t = row["median_ms"] / 1e3
            row.update(tflops=flops / t / 1e12, pct_roof=100 * floor / t)
            if "eager" in rows:
                row["x_eager"] = rows["eager"]["median_ms"] / row["median_ms"]
            if mode == "full" and shape in A_MEMORY[device] and not args.no_memory and provider != "compile":
                kwargs = dict(provider=provider, mode=mode, n_rows=n_rows, n_cols=n_cols, dim=dim, dtype=dtype,
                              device=device)
                row["peak_extra_MiB"] = harness.peak_memory("bench.kernels:make_softmax_call", kwargs, device) / 2**20
                row["grad_MiB"] = (n_rows + n_cols) * dim * elt / 2**20
            report.add(**row)


def _case_b(report, providers, shape, dtype, device, reps, copy, args):
    n_rows, n_cols = shape
    elt = getattr(torch, dtype).itemsize
    pairwise_ok = n_rows * n_cols * n_cols <= PAIR_LIMIT[device]
    usable = [p for p in providers if pairwise_ok or p not in ("eager", "compile")]
    for mode in MODES:
        if mode == "backward" and not pairwise_ok:
            continue  # the fused kernels do their work in the forward; backward alone only rescales
        # scores (elt) and int64 labels read once; the gradient (elt) written once
        nbytes = n_rows * n_cols * {"forward": elt + 8, "backward": elt, "full": 2 * elt + 8}[mode]
        skipped = "" if pairwise_ok else f"pairwise eager skipped: B*C*C = {n_rows * n_cols**2:.2g}"
        base = dict(kernel="B hinge", shape=f"B{n_rows} C{n_cols}", dtype=dtype, mode=mode, B=n_rows, C=n_cols,
                    bytes=nbytes, note=skipped)
        calls = _working(report, lambda p: make_ranking_call(p, mode, n_rows, n_cols, dtype, device), usable, base)
        rows = _time_case(calls, device, reps, base)
        del calls
        for provider, row in rows.items():
            t = row["median_ms"] / 1e3
            row.update(gbps=nbytes / t / 1e9, pct_roof=100 * (nbytes / t / 1e9) / copy)
            if "eager" in rows:
                row["x_eager"] = rows["eager"]["median_ms"] / row["median_ms"]
            if mode == "full" and shape in B_MEMORY[device] and not (args.no_memory or args.goals_only) \
                    and provider != "compile":
                kwargs = dict(provider=provider, mode=mode, n_rows=n_rows, n_cols=n_cols, dtype=dtype, device=device)
                row["peak_extra_MiB"] = harness.peak_memory("bench.kernels:make_ranking_call", kwargs, device) / 2**20
                row["grad_MiB"] = n_rows * n_cols * elt / 2**20
            report.add(**row)


def _sweep(report, dtype, reps, matmul, copy):
    """The SWEEP settings of the Triton paths, one at a time, at A's roofline goal shape and B's largest shape."""
    cases = [("A sweep", ss_module, SWEEP_A, (4096, 21000, 1024), make_softmax_call),
             ("B hinge sweep", rk_module, SWEEP_B, (4096, 21000), make_ranking_call)]
    for kernel, module, settings, shape, make in cases:
        for setting in settings:
            defaults = {name: getattr(module, name) for name in setting}
            letters = "BMD" if len(shape) == 3 else "BC"
            base = dict(kernel=kernel, shape=" ".join(f"{k}{v}" for k, v in zip(letters, shape)), dtype=dtype,
                        mode="full", provider="triton", note=str(setting or "defaults"))
            try:
                for name, value in setting.items():
                    setattr(module, name, value)
                call = make("triton", "full", *shape, dtype, "cuda")
                stats = harness.summarize(harness.time_interleaved({"t": call}, "cuda", warmup=2, reps=reps)["t"])
            except Exception as e:  # noqa: BLE001 - a setting the compiler rejects becomes a row
                report.add(**dict(base, note=f"{setting}: {type(e).__name__}: {str(e)[:200]}"))
                continue
            finally:
                for name, value in defaults.items():
                    setattr(module, name, value)
            t = stats["median_s"]
            row = dict(base, median_ms=1e3 * t, p20_ms=1e3 * stats["p20_s"], p80_ms=1e3 * stats["p80_s"])
            if len(shape) == 3:
                flops = 6 * shape[0] * shape[1] * shape[2]
                row.update(tflops=flops / t / 1e12, pct_roof=100 * flops / (matmul * 1e12) / t)
            else:
                nbytes = shape[0] * shape[1] * (2 * getattr(torch, dtype).itemsize + 8)
                row.update(gbps=nbytes / t / 1e9, pct_roof=100 * nbytes / t / 1e9 / copy)
            report.add(**row)


def _goals(rows, device):
    """The issue's goals, checked on this run's rows (each line says PASS / MISS with the numbers)."""
    rows = [r for r in rows if "median_ms" in r]

    def find(**kw):
        return next((r for r in rows if all(r.get(k) == v for k, v in kw.items())), None)

    def line(name, ok, detail):
        return f"- {'PASS' if ok else 'MISS'} {name}: {detail}"

    out = []
    if device == "cpu":
        ref, eager = (find(kernel="A", B=4096, M=21000, D=512, mode="full", provider=p) for p in ("reference", "eager"))
        if ref and eager:
            ratio = ref["median_ms"] / eager["median_ms"]
            out.append(line("A reference time <= 1.2x eager (B4096 M21000 D512 fp32, full)", ratio <= 1.2,
                            f"{ref['median_ms']:.0f} ms vs {eager['median_ms']:.0f} ms = {ratio:.2f}x"))
            if "peak_extra_MiB" in ref and "peak_extra_MiB" in eager:
                m = ref["peak_extra_MiB"] / eager["peak_extra_MiB"]
                out.append(line("A reference peak memory <= 1/10 eager", m <= 0.1,
                                f"{ref['peak_extra_MiB']:.0f} MiB vs {eager['peak_extra_MiB']:.0f} MiB = {m:.3f}"))
        ref, eager = (find(kernel="B hinge", B=256, C=1000, mode="full", provider=p) for p in ("reference", "eager"))
        if ref and eager:
            speed = eager["median_ms"] / ref["median_ms"]
            out.append(line("B hinge reference >= 50x faster than pairwise eager (B256 C1000, full)", speed >= 50,
                            f"{ref['median_ms']:.2f} ms vs {eager['median_ms']:.0f} ms = {speed:.0f}x"))
            if "peak_extra_MiB" in ref:
                pair_mib = 256 * 1000 * 1000 * 4 / 2**20  # one (B, C, C) fp32 tensor
                out.append(line("B hinge reference without O(C^2) memory", ref["peak_extra_MiB"] < pair_mib,
                                f"{ref['peak_extra_MiB']:.1f} MiB (one B*C*C fp32 tensor: {pair_mib:.0f} MiB)"))
        return out
    for r in rows:
        if r.get("kernel") == "A" and r.get("provider") == "triton" and r["mode"] == "full" and r["B"] >= 1024 \
                and r["M"] >= 5000:
            comp = find(kernel="A", B=r["B"], M=r["M"], D=r["D"], mode="full", provider="compile")
            x_comp = comp["median_ms"] / r["median_ms"] if comp else float("nan")
            x_eager = r.get("x_eager", float("nan"))
            out.append(line(f"A {r['shape']} full: >= 1.5x eager and >= 1.2x compile", x_eager >= 1.5 and x_comp >= 1.2,
                            f"{r['median_ms']:.3f} ms, {x_eager:.2f}x eager, {x_comp:.2f}x compile"))
    r = find(kernel="A", B=4096, M=21000, D=1024, mode="full", provider="triton")
    if r:
        out.append(line("A B4096 M21000 D1024: >= 50% of the 6BMD roofline", r["pct_roof"] >= 50,
                        f"{r['tflops']:.0f} TFLOP/s = {r['pct_roof']:.1f}%"))
        if "peak_extra_MiB" in r:
            work = r["peak_extra_MiB"] - r["grad_MiB"]
            out.append(line("A extra memory <= 64 MiB (beyond the input gradients)", work <= 64,
                            f"{r['peak_extra_MiB']:.0f} MiB peak - {r['grad_MiB']:.0f} MiB gradients = {work:.0f} MiB"))
    for r in rows:
        if r.get("kernel") == "B hinge" and r.get("provider") == "triton" and r["mode"] == "full" \
                and r["B"] * r["C"] >= 4e6:
            out.append(line(f"B {r['shape']} full: >= 80% of HBM bandwidth", r["pct_roof"] >= 80,
                            f"{r['gbps']:.0f} GB/s = {r['pct_roof']:.1f}%"))
    return out
