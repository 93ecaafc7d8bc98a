"""Suite `ship`: one SHIP generator epoch and one fine-tune epoch, official formulation vs tinyprompt (`python -m bench ship`).

SHIP (Wang et al., "Improving Zero-Shot Generalization for CLIP with Synthesized Prompts", arXiv 2307.07397)
trains a VAE prompt generator on base classes (stage `vae`), then CoOp over base + new classes on real base
features mixed 1:1 with synthetic new-class features (stage `finetune`). Workload: 16 shots x 50 base
classes = 800 images per epoch at batch 256 (steps of 256, 256, 256, 32), 50 new classes (names only), a
full-size ViT-B/16 CLIP with random weights (OpenAI's init); fp32 on CPU, bf16 autocast on CUDA (`--dtype`). Made-up
class names of 1-3 words (`bench.clip_text.class_names`). A step is forward + backward + optimiser update, its
dispatched aten ops (`bench.opcount`) reported beside its time:
- `official`, as mrflogs/SHIP `main_coop_vae.py` does it: the batch's images go through the frozen image
  encoder at every step, and every prompt (generator, synthesis and CoOp) runs all 77 positions;
- `tinyprompt`: cached image features (the encoder is skipped: features are read from the cache),
  EOT-truncated prompts, and CoOp's shared SOS + context prefix encoded once.
Both start from the same weights and see the same inputs (the cached features are the encoder's output on
the same images; fixed VAE noise, synthetic labels and latents), so their first-step losses must agree.
Left out of the official side (so its times are a lower bound): image decoding and augmentation, and the
rebuilding of the token tables at every step.

Epoch times are extrapolated, not measured whole: the official step at batch 256 needs tens of GB for
the backward through 256 x 77 positions. Both providers are timed at two small batch sizes (`--batches`;
all four steps interleaved, so both sizes see the same machine load), a step's time is fitted as a + b·B
(every cost is linear in the batch, plus a per-step constant: the optimiser, and in `finetune` the
100-class CoOp text pass), and the epoch is 4a + 800b.
tinyprompt's epoch is also measured directly (a step at 256 and at 32, after a warm-up), a check on the fit.
"""
import torch

from bench import harness
from bench.clip_text import VIT_B16, class_names
from bench.opcount import count_ops
from tinyprompt.clip import CLIP
from tinyprompt.engine import TrainConfig, build_optimizer
from tinyprompt.methods.coop import CoOp, CoOpConfig
from tinyprompt.methods.ship import SHIPConfig, SHIPGenerator, finetune_loss

SHOTS, N_BASE, N_NEW, BATCH = 16, 50, 50, 256
EPOCH_BATCHES = [BATCH] * (SHOTS * N_BASE // BATCH) + [SHOTS * N_BASE % BATCH]  # [256, 256, 256, 32]
PROVIDERS = {"official": True, "tinyprompt": False}  # name -> official formulation (re-encode, 77 positions)
STAGES = ("vae", "finetune")


def build_clip(seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    return CLIP(*VIT_B16).eval().requires_grad_(False)


def step_fn(clip, stage: str, provider: str, batch: int, seed: int = 0, dtype: str = "auto"):
    """One training step of `stage` on fixed random inputs, as a zero-argument callable returning the loss."""
    official = PROVIDERS[provider]
    names = class_names(N_BASE + N_NEW, seed)
    g = torch.Generator().manual_seed(seed + batch)
    device, resolution = clip.token_embedding.weight.device, clip.visual.input_resolution
    images = torch.randn(batch, 3, resolution, resolution, generator=g).to(device)
    labels = torch.randint(N_BASE, (batch,), generator=g).to(device)
    amp = dict(device=str(device), dtype=dtype)
    cached = None if official else _normalise(_encode(clip, images, amp))  # what the feature cache returns
    torch.manual_seed(seed)  # the same generator weights for both providers
    generator = SHIPGenerator(clip, names, SHIPConfig(full_length=official))

    def features():
        return _normalise(_encode(clip, images, amp)) if official else cached

    if stage == "vae":
        eps = torch.randn(batch, generator.latent_dim, generator=g).to(device)
        optimizer = build_optimizer([p for p in generator.parameters() if p.requires_grad],
                                    TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.01))  # fmt: skip

        def step():
            x = features()
            with harness.autocast(**amp):
                loss = generator(x, labels, eps=eps)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.detach()

        return step
    generator.eval()
    syn_labels = torch.randint(N_BASE, N_BASE + N_NEW, (batch,), generator=g).to(device)
    z = torch.randn(batch, generator.latent_dim, generator=g).to(device)
    encoding = dict(full_length=True, share_prefix=False) if official else {}
    coop = CoOp(clip, names, CoOpConfig(n_ctx=4, ctx_init="a photo of a", **encoding)).train()
    optimizer = build_optimizer([coop.ctx], TrainConfig(lr=2e-3, momentum=0.0, weight_decay=0.0))

    def step():
        x = features()
        with harness.autocast(**amp):
            loss = finetune_loss(coop, generator, x, labels, N_BASE, syn_labels=syn_labels, z=z)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def _encode(clip, images, amp):
    with torch.no_grad(), harness.autocast(**amp):  # the frozen image encoder: no graph, as in the official code
        return clip.encode_image(images)


def _normalise(x):  # in fp32, as the generator checks unit norms to 1e-3
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True)


def add_args(parser) -> None:
    parser.add_argument("--batches", default="8,64", help="the two batch sizes timed for the linear fit")
    parser.add_argument("--reps", type=int, default=None, help="timed steps per provider and batch (default 3, quick 1)")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated, from " + ", ".join(STAGES))
    parser.add_argument("--no-direct", action="store_true", help="skip the directly measured tinyprompt epoch")
    harness.add_dtype_arg(parser)


def run(args):
    small, large = (int(b) for b in args.batches.split(","))
    reps = args.reps or (1 if args.quick else 3)
    report = harness.Report("ship", args.device, args.out)
    clip = build_clip().to(args.device)
    dtype = harness.dtype_label(args.device, args.dtype)
    for stage in args.stages.split(","):
        # all four (provider, batch) steps round-robin: both batch sizes see the same machine load
        steps = {(p, batch): step_fn(clip, stage, p, batch, dtype=args.dtype) for batch in (small, large)
                 for p in PROVIDERS}  # fmt: skip
        losses = {key: float(fn()) for key, fn in steps.items()}  # first step (and warm-up): same loss per batch
        ops = {key: count_ops(fn).total for key, fn in steps.items()}
        measured = harness.time_interleaved(steps, args.device, warmup=0, reps=reps)
        del steps
        fits, times = {}, {}
        for (provider, batch), seconds in measured.items():
            stats = harness.summarize(seconds)
            times[provider, batch] = stats["median_s"]
            diff = abs(losses[provider, batch] - losses["official", batch])
            report.add(stage=stage, provider=provider, batch=batch, dtype=dtype, backbone="ViT-B/16",
                       ops=ops[provider, batch], ops_vs_official=ops[provider, batch] / ops["official", batch],
                       **stats, first_loss=losses[provider, batch], loss_diff_vs_official=diff)  # fmt: skip
        for provider in PROVIDERS:
            b = (times[provider, large] - times[provider, small]) / (large - small)  # seconds per sample
            a = times[provider, small] - b * small  # seconds per step
            note = f"a + b·B fit: a = {a:.3g} s/step, b = {b:.3g} s/sample"
            if b > 0:
                fits[provider] = sum(a + b * n for n in EPOCH_BATCHES)
            else:  # a larger batch timed faster: load noise, not a cost model; no epoch from it
                note += f" (invalid: t({large}) <= t({small}), timing noise; rerun with more --reps)"
            report.add(stage=stage, provider=provider, batch="epoch (fit)", backbone="ViT-B/16", dtype=dtype,
                       epoch_s=fits.get(provider), note=note)  # fmt: skip
        row = {"stage": stage, "provider": "speedup", "batch": "epoch (fit)"}
        if len(fits) == len(PROVIDERS):
            row["speedup_vs_official"] = fits["official"] / fits["tinyprompt"]
        if not args.no_direct:
            direct = _direct_epoch(clip, stage, args.device, args.dtype)
            report.add(stage=stage, provider="tinyprompt", batch="epoch (measured)", backbone="ViT-B/16", dtype=dtype,
                       epoch_s=direct, note="steps at the real batch sizes: 3 x t(256) + t(32)")  # fmt: skip
            if "official" in fits:
                row["note"] = (f"official fit {fits['official']:.1f} s / tinyprompt measured {direct:.1f} s = "
                               f"{fits['official'] / direct:.1f}x")
        report.add(**row)
    report.write(["stage", "provider", "batch", "ops", "ops_vs_official", "median_s", "p20_s", "p80_s", "reps",
                  "epoch_s", "speedup_vs_official", "first_loss", "loss_diff_vs_official", "note"],
                 title=f"SHIP epoch ({SHOTS} shots x {N_BASE} base + {N_NEW} new classes, batch {BATCH}): official "
                       f"formulation vs tinyprompt (ViT-B/16 random weights, {args.device} {dtype})")  # fmt: skip
    return 0


def _direct_epoch(clip, stage: str, device: str, dtype: str) -> float:
    """Seconds of one tinyprompt epoch: a step at each of the epoch's batch sizes, timed once after a warm-up."""
    total = 0.0
    for batch in sorted(set(EPOCH_BATCHES)):
        step = step_fn(clip, stage, "tinyprompt", batch, dtype=dtype)
        seconds = harness.time_interleaved({"step": step}, device, warmup=1, reps=1)["step"][0]
        total += seconds * EPOCH_BATCHES.count(batch)
    return total
