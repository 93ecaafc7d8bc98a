"""Suite `pomp`: one POMP training step, the official formulation vs tinyprompt's (`python -m bench pomp`).

POMP (Ren et al., "Prompt Pre-Training with Twenty-Thousand Classes for Open-Vocabulary Visual
Recognition", arXiv 2304.04704) trains 16 shared context vectors against K classes per step: each row's
positive plus K-1 negatives sampled from N = 10,450 classes. A step is forward + backward + SGD update of
ctx for `--images` images x `--views` augmented views (the paper: 32 x 4 = 128 rows, K = 1000):
- `official`: as amazon-science/prompt-pretraining computes it: B·views + K - 1 prompts (one positive
  per row, duplicates and views included, then the negatives), each through all 77 positions of the
  text transformer with autograd, then the materialised (B, K) logits (`official_logits`, official
  base-10 margin, -1e6 mask) and `F.cross_entropy` (`tinyprompt.methods.pomp.official_loss`);
- `tinyprompt`: `POMP.step_loss`: each class encoded once (dedup of positives and collisions), EOT
  truncation, and the fused `sampled_softmax_loss` (CUDA: Triton, no (B, K) logits kept; CPU: its reference twin,
  the logits materialised while they fit one chunk); its encoding knobs are the
  library's "auto" (`tinyprompt.prompts.AUTO_ENCODING`): on CPU the shared SOS + context prefix and prompts
  sorted by length into activation-checkpointed chunks of 256, on CUDA one pass of all rows with nothing
  recomputed. Several `--text-chunk` values give one variant each (`tinyprompt c256`, `tinyprompt cauto`, ...),
  measured in the same run: fewer, larger passes launch fewer kernels (what a GPU step is bound by at this
  size), smaller ones pad less. Each row names the knobs it ran with.
Both compute the same loss (reported, with its difference) on the same inputs and negatives. The image
encoder is frozen and its features are cached in tinyprompt (the official trainer re-encodes every
step): both variants take the image features as given, so the image side is not in either number.
Backbone: the full-size ViT-B/16 text tower (width 512, 12 layers, 8 heads, 77 positions) with random
weights (OpenAI's init); class names made up (1-3 words, `bench.clip_text.class_names`).
Precision: fp32 on CPU; on CUDA both run under bf16 autocast (the official default is fp16 weights).
Reported: step time (median, p20, p80), dispatched aten ops of one step (`bench.opcount`: forward, backward
and update; the CPU proxy of a launch-bound GPU step), peak extra memory of one step in a fresh process (CPU:
RSS; CUDA: max_memory_allocated), text rows encoded per step, speed and memory ratios.
Op counts do not depend on the text width (counted equal at widths 64 and 512): `--text-width 64 --ops-only`
counts the ops of a K 1000 step on a small CPU, where the official step at width 512 would take minutes and
tens of GB; `--encoding accelerator --dtype bf16` adds the knobs and casts of a CUDA step (whose fused loss runs
as a few Triton kernels where the CPU runs its plain-PyTorch reference twin).
"""
import gc

import torch

from bench import harness
from bench.clip_text import class_names, text_tower
from bench.opcount import count_ops
from tinyprompt.commands.recipes import text_chunk_arg
from tinyprompt.engine import TrainConfig, build_optimizer
from tinyprompt.methods.pomp import POMP, POMPConfig, official_loss, view_rows
from tinyprompt.prompts import AUTO, AUTO_ENCODING

N_CLASSES = 10450  # ImageNet-21K-P winter21, the released setting


def variant_names(text_chunks: list) -> list:
    """["official", "tinyprompt"] for one --text-chunk value, else one "tinyprompt cN" per value."""
    return ["official"] + (["tinyprompt"] if len(text_chunks) == 1 else [f"tinyprompt c{c}" for c in text_chunks])


def build(clip, variant: str, k: int, n_cls: int, text_chunk, seed: int = 0, encoding: str = AUTO) -> POMP:
    """encoding: "auto" leaves the knobs to the device; "cpu" / "accelerator" sets them to that side of AUTO_ENCODING
    (an explicit text_chunk wins), e.g. to count on a CPU the ops of the step a CUDA device runs."""
    torch.manual_seed(seed)  # the same ctx for both variants
    if variant == "official":  # all 77 positions, nothing shared or chunked, one row per image row
        config = POMPConfig(k=k, margin="official", dedup=False, full_length=True, share_prefix=False, text_chunk=0,
                            checkpoint=False)  # fmt: skip
    else:
        knobs = {} if encoding == AUTO else dict(AUTO_ENCODING[encoding])
        if text_chunk != AUTO:
            knobs["text_chunk"] = text_chunk
        config = POMPConfig(k=k, margin="official", **knobs)
    return POMP(clip, class_names(n_cls, seed), config).train()


def step_fn(clip, variant: str, k: int, images: int = 32, views: int = 4, n_cls: int = N_CLASSES,
            text_chunk=AUTO, seed: int = 0, dtype: str = "auto", encoding: str = AUTO):
    """One training step (forward + backward + SGD on ctx) on fixed inputs, as a zero-argument callable; its
    `encoding` attribute holds the knobs the prompts are encoded with on this device."""
    model = build(clip, variant, k, n_cls, text_chunk, seed, encoding)
    device = model.ctx.device
    optimizer = build_optimizer([model.ctx], TrainConfig())  # SGD lr 0.002, momentum 0.9, wd 5e-4
    g = torch.Generator().manual_seed(seed + 1)
    labels = torch.randint(n_cls, (images,), generator=g).to(device)  # (B,)
    features = torch.randn(images, views, clip.embed_dim, generator=g).to(device)  # (B, M, E) cached image features

    def step():  # step 0's negatives in both variants: the same seeded draw
        with harness.autocast(str(device), dtype):
            if variant == "official":
                loss = official_loss(model, *view_rows(features, labels), model.negatives(step=0))
            else:
                loss = model.step_loss(features, labels, step=0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    neg_ids = model.negatives(step=0)
    step.text_rows = images * views + k - 1 if variant == "official" else torch.cat([labels, neg_ids]).unique().numel()
    step.encoding = model.prompt.prompts.encoding(device)
    return step


def factory(variant: str, k: int, images: int, views: int, n_cls: int, text_chunk, device: str, width: int = 512,
            dtype: str = "auto", encoding: str = AUTO):
    """For `harness.peak_memory`: build the text tower in the fresh process, return its step."""
    return step_fn(text_tower(device, width=width), variant, k, images, views, n_cls, text_chunk, dtype=dtype,
                   encoding=encoding)


def add_args(parser) -> None:
    parser.add_argument("--k", type=int, default=None, help="classes per step (default: 1000 on cuda, 256 on cpu; quick 64)")
    parser.add_argument("--images", type=int, default=None, help="images per step (default: 32; quick 8)")
    parser.add_argument("--views", type=int, default=4, help="augmented views per image (official K_TRANSFORMS)")
    parser.add_argument("--classes", type=int, default=None, help=f"N, classes sampled from (default: {N_CLASSES}; quick 2000)")
    parser.add_argument("--text-chunk", type=text_chunk_arg, nargs="+", default=[AUTO],
                        help="tinyprompt's prompts per text-encoder pass (0 = all in one; auto = by device, the "
                             "library default); several values: one variant each")  # fmt: skip
    parser.add_argument("--encoding", default=AUTO, choices=[AUTO, *AUTO_ENCODING],
                        help="the knobs tinyprompt's 'auto' picks: by device (auto), or those of cpu / accelerator "
                             "(CUDA's) on any device, e.g. a CUDA step's ops counted on a CPU "
                             "(default: auto)")  # fmt: skip
    parser.add_argument("--text-width", type=int, default=512,
                        help="text tower width (512 = ViT-B/16); the op counts do not depend on it (default: 512)")
    parser.add_argument("--reps", type=int, default=None, help="timed steps per variant (default: 3, quick 2)")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process peak-memory runs")
    parser.add_argument("--ops-only", action="store_true",
                        help="count each step's ops (and its loss), no timing or memory")
    harness.add_dtype_arg(parser)


def run(args):
    cuda = args.device.startswith("cuda")
    k = args.k or (64 if args.quick else 1000 if cuda else 256)
    images = args.images or (8 if args.quick else 32)
    n_cls = args.classes or (2000 if args.quick else N_CLASSES)
    reps = args.reps or (2 if args.quick else 3)
    clip = text_tower(args.device, width=args.text_width)
    variants = variant_names(args.text_chunk)
    chunks = dict(zip(variants[1:], args.text_chunk))  # the official step has no chunks
    steps = {v: step_fn(clip, v, k, images, args.views, n_cls, chunks.get(v, 0), dtype=args.dtype,
                        encoding=args.encoding) for v in variants}  # fmt: skip
    losses = {v: float(fn()) for v, fn in steps.items()}  # also the warm-up (the first SGD step changes ctx equally)
    ops = {v: count_ops(fn).total for v, fn in steps.items()}
    times = {} if args.ops_only else harness.time_interleaved(steps, args.device, warmup=0, reps=reps)
    text_rows = {v: fn.text_rows for v, fn in steps.items()}
    encoding = {v: fn.encoding for v, fn in steps.items()}
    del steps, clip  # free this process's models before the fresh-process memory runs
    gc.collect()
    report = harness.Report("pomp", args.device, args.out)
    rows = {}
    for variant in variants:
        knobs = {} if variant == "official" else encoding[variant]  # the official step: one pass, nothing shared
        row = dict(variant=variant, images=images, views=args.views, B=images * args.views, K=k, N=n_cls,
                   dtype=harness.dtype_label(args.device, args.dtype), n_ctx=16, text_width=args.text_width,
                   text_rows=text_rows[variant], positions="77" if variant == "official" else "to EOT", **knobs,
                   ops=ops[variant], **(harness.summarize(times[variant]) if times else {}),
                   first_loss=losses[variant], loss_diff=abs(losses[variant] - losses["official"]))  # fmt: skip
        if not (args.no_memory or args.ops_only):
            kwargs = dict(variant=variant, k=k, images=images, views=args.views, n_cls=n_cls,
                          text_chunk=chunks.get(variant, 0), device=args.device, width=args.text_width,
                          dtype=args.dtype, encoding=args.encoding)  # fmt: skip
            row["peak_gb"] = harness.peak_memory("bench.pomp:factory", kwargs, args.device) / 2**30
        rows[variant] = report.add(**row)
    official = rows["official"]
    for variant in variants[1:]:
        ours = rows[variant]
        ours["ops_vs_official"] = ours["ops"] / official["ops"]
        if times:
            ours["speedup_vs_official"] = official["median_s"] / ours["median_s"]
        if "peak_gb" in ours:
            ours["memory_ratio_vs_official"] = official["peak_gb"] / ours["peak_gb"]
        print(f"{variant} vs official: {ours['ops']} vs {official['ops']} ops per step"
              + (f", {ours['speedup_vs_official']:.2f}x faster step" if times else "")
              + (f", {ours['memory_ratio_vs_official']:.1f}x lower peak memory" if "peak_gb" in ours else ""))
    report.write(["variant", "B", "K", "N", "dtype", "text_rows", "positions", "text_chunk", "checkpoint",
                  "share_prefix", "ops", "ops_vs_official", "median_s", "p20_s", "p80_s", "peak_gb",
                  "speedup_vs_official", "memory_ratio_vs_official", "first_loss", "loss_diff"],
                 title=f"POMP training step: official formulation vs tinyprompt ({args.device}, {images} images x "
                       f"{args.views} views, K {k}, N {n_cls}, ViT-B/16 text tower at width {args.text_width}, "
                       f"n_ctx 16)")  # fmt: skip
    if times:
        report.plot("K", "median_s", "variant", "seconds per step")
    return 0
