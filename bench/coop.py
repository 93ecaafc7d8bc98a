"""Suite `coop`: one CoOp training step, the official formulation vs tinyprompt's (`python -m bench coop`).

CoOp (Zhou et al., "Learning to Prompt for Vision-Language Models", arXiv 2109.01134) trains 16 context
vectors through a frozen CLIP. A step is forward + backward + SGD update of ctx for a batch of 32 images,
its loss `CoOp.loss` (cross-entropy of the scaled cosine logits, as the official code) in every variant:
- `official`: as KaiyangZhou/CoOp does it: every class prompt runs all 77 positions of the text
  transformer, and the batch's images go through the frozen image encoder at every step;
- `tinyprompt`: the same function, computed with tinyprompt's exact shortcuts: EOT truncation and cached
  image features (the encoder is skipped: features are read from the cache); on CPU also the shared SOS +
  context prefix encoded once and prompts sorted by length into chunks of `--text-chunk` ("auto": 256 on
  CPU, one pass without a prefix pass on CUDA, where a step is bound by kernel launches);
- `tinyprompt_reencode`: tinyprompt's text side, images re-encoded every step (isolates the cache);
- `tinyprompt_ckpt` (n_cls >= 1000): tinyprompt with each text chunk activation-checkpointed (memory
  bounded by one chunk, one more text forward).
Full-size backbones with random weights (OpenAI's init): RN50 and ViT-B/16 (`architectures.json`
configs), n_ctx 16, made-up class names of 1-3 words (`bench.clip_text.class_names`); fp32 on CPU, bf16
autocast on CUDA (`--dtype`).

Reported: step time (median, p20, p80), images/s, dispatched aten ops of one step (`bench.opcount`), peak
extra memory of one step in a fresh process (`harness.peak_memory`; CPU: RSS, CUDA: allocated), and the
epoch of 16-shot x 100 classes (1,600 images = 50 steps of 32): cached
vs re-encoded, from the measured step times x 50 (data decoding and augmentation, which only the
re-encoding path pays every step, are left out, so the ratio is conservative). The official formulation
keeps the activations of all 77 positions of every prompt for the backward: ~2.7 GB per 100 classes
(measured: 2.68 GB at 100, 8.0 GB at 300, 26.8 GB at 1000), so above `--official-max-classes` it is
skipped and its row is marked as not measured; raise the limit on a machine with the memory.
`--quick`: RN50 at n_cls = 100 only, 2 timed steps per provider.
"""
import torch

from bench import harness
from bench.clip_text import RN50, VIT_B16, class_names
from bench.opcount import count_ops
from tinyprompt.clip import CLIP
from tinyprompt.commands.recipes import text_chunk_arg
from tinyprompt.engine import TrainConfig, build_optimizer
from tinyprompt.methods.coop import CoOp, CoOpConfig
from tinyprompt.prompts import AUTO

BACKBONES = {"RN50": RN50, "ViT-B/16": VIT_B16}
# variant -> (CoOpConfig overrides, image features cached?)
VARIANTS = {
    "official": (dict(full_length=True, share_prefix=False), False),
    "tinyprompt": ({}, True),
    "tinyprompt_reencode": ({}, False),
    "tinyprompt_ckpt": (dict(checkpoint=True), True),
}
SHOTS, EPOCH_CLASSES = 16, 100  # the epoch comparison: 16-shot x 100 classes


def build_clip(backbone: str, seed: int = 0, device: str = "cpu") -> CLIP:
    torch.manual_seed(seed)
    return CLIP(*BACKBONES[backbone]).to(device).eval()


def step_fn(clip, n_cls: int, variant: str, batch: int = 32, text_chunk=AUTO, seed: int = 0, dtype: str = "auto"):
    """One CoOp training step (forward + backward + SGD) on fixed random inputs, as a zero-argument callable; its
    `encoding` attribute holds the knobs the prompts are encoded with on this device."""
    overrides, cached = VARIANTS[variant]
    chunk = 0 if overrides.get("full_length") else text_chunk
    torch.manual_seed(seed)
    model = CoOp(clip, class_names(n_cls, seed), CoOpConfig(n_ctx=16, text_chunk=chunk, **overrides)).train()
    optimizer = build_optimizer([model.ctx], TrainConfig())  # SGD lr 0.002, momentum 0.9, wd 5e-4
    device, resolution = model.ctx.device, clip.visual.input_resolution
    images = torch.randn(batch, 3, resolution, resolution).to(device)
    labels = torch.randint(n_cls, (batch,)).to(device)

    def encode():  # the frozen encoder: no graph, as in the official code
        with torch.no_grad(), harness.autocast(str(device), dtype):
            return clip.encode_image(images)

    features = encode() if cached else None  # what the feature cache returns

    def step():
        inputs = features if cached else encode()
        with harness.autocast(str(device), dtype):
            loss = model.loss(inputs, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    step.encoding = model.prompts.encoding(device)
    return step


def factory(backbone: str, n_cls: int, variant: str, batch: int = 32, text_chunk=AUTO, device: str = "cpu",
            dtype: str = "auto"):
    """For `harness.peak_memory`: build the backbone in the fresh process, return its step."""
    return step_fn(build_clip(backbone, device=device), n_cls, variant, batch, text_chunk, dtype=dtype)


def add_args(parser) -> None:
    parser.add_argument("--backbones", default="RN50,ViT-B/16", help="comma-separated, from " + ", ".join(BACKBONES))
    parser.add_argument("--classes", default="100,1000", help="comma-separated n_cls values")
    parser.add_argument("--official-max-classes", type=int, default=100,
                        help="largest n_cls at which the official formulation runs (memory: ~2.7 GB / 100 classes)")
    parser.add_argument("--text-chunk", type=text_chunk_arg, default=AUTO,
                        help="tinyprompt's class prompts per text-encoder pass (auto = by device: 256 on CPU, one "
                             "pass on CUDA)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=32, help="images per step")
    parser.add_argument("--reps", type=int, default=None, help="timed steps per provider (default: 5; --quick: 2)")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process peak-memory runs")
    harness.add_dtype_arg(parser)


def run(args):
    quick = args.quick
    backbones = ["RN50"] if quick else args.backbones.split(",")
    classes = [EPOCH_CLASSES] if quick else [int(c) for c in args.classes.split(",")]
    official_max = args.official_max_classes
    reps = args.reps or (2 if quick else 5)
    report = harness.Report("coop", args.device, args.out)
    for backbone in backbones:
        clip = build_clip(backbone, device=args.device)
        for n_cls in classes:
            variants = ["tinyprompt"]
            variants += ["official"] if n_cls <= official_max else []
            variants += ["tinyprompt_reencode"] if n_cls == EPOCH_CLASSES else []  # for the epoch comparison
            variants += ["tinyprompt_ckpt"] if n_cls >= 1000 else []
            steps = {v: step_fn(clip, n_cls, v, args.batch, args.text_chunk, dtype=args.dtype) for v in variants}
            # the warm-up call; every variant starts from the same ctx and inputs, so the same loss
            losses = {v: float(fn().detach()) for v, fn in steps.items()}
            ops = {v: count_ops(fn).total for v, fn in steps.items()}
            times = harness.time_interleaved(steps, args.device, warmup=0, reps=reps)
            rows = {}
            for variant in variants:
                stats = harness.summarize(times[variant])
                row = dict(backbone=backbone, n_cls=n_cls, variant=variant, batch=args.batch, n_ctx=16,
                           dtype=harness.dtype_label(args.device, args.dtype), **steps[variant].encoding,
                           ops=ops[variant], **stats, images_per_s=args.batch / stats["median_s"],
                           first_loss=losses[variant])  # fmt: skip
                if not args.no_memory:
                    kwargs = dict(backbone=backbone, n_cls=n_cls, variant=variant, batch=args.batch,
                                  text_chunk=args.text_chunk, device=args.device, dtype=args.dtype)  # fmt: skip
                    row["peak_gb"] = harness.peak_memory("bench.coop:factory", kwargs, args.device) / 2**30
                rows[variant] = report.add(**row)
            if "official" not in rows:
                report.add(backbone=backbone, n_cls=n_cls, variant="official", note=f"not run: n_cls > {official_max}")
            _speedups(report, rows, backbone, n_cls)
        del clip
    report.write(["backbone", "n_cls", "variant", "dtype", "text_chunk", "share_prefix", "ops", "ops_vs_official",
                  "median_s", "p20_s", "p80_s", "images_per_s", "peak_gb", "speedup_vs_official",
                  "memory_ratio_vs_official", "first_loss", "note"],
                 title=f"CoOp training step: official formulation vs tinyprompt ({args.device}, "
                       f"{harness.dtype_label(args.device, args.dtype)}, batch {args.batch}, n_ctx 16)")  # fmt: skip
    report.plot("n_cls", "median_s", "variant", "seconds per step")
    return 0


def _speedups(report, rows, backbone, n_cls):
    """Ratios to the official row, and the 16-shot x 100-class epoch (50 steps) cached vs re-encoded."""
    official = rows.get("official")
    for variant, row in rows.items():
        if official is not None and variant != "official":
            row["speedup_vs_official"] = official["median_s"] / row["median_s"]
            row["ops_vs_official"] = row["ops"] / official["ops"]
            if "peak_gb" in row:
                row["memory_ratio_vs_official"] = official["peak_gb"] / row["peak_gb"]
    if n_cls == EPOCH_CLASSES and {"tinyprompt", "tinyprompt_reencode"} <= set(rows):
        steps = SHOTS * EPOCH_CLASSES // rows["tinyprompt"]["batch"]
        cached, reencode = (rows[v]["median_s"] * steps for v in ("tinyprompt", "tinyprompt_reencode"))
        note = (f"epoch of {SHOTS}-shot x {EPOCH_CLASSES} classes ({steps} steps, from measured medians): cached "
                f"{cached:.1f} s vs re-encoding {reencode:.1f} s = {reencode / cached:.1f}x")
        if "official" in rows:
            note += f"; official {rows['official']['median_s'] * steps:.1f} s = {rows['official']['median_s'] / rows['tinyprompt']['median_s']:.1f}x"
        report.add(backbone=backbone, n_cls=n_cls, variant="epoch", note=note,
                   epoch_cached_s=cached, epoch_reencode_s=reencode, epoch_speedup=reencode / cached)  # fmt: skip
        print(note)
