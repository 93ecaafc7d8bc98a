"""Suite `taidpt`: a TaI-DPT training epoch, the official formulation vs tinyprompt's (`python -m bench taidpt`).

TaI-DPT (Guo et al., "Texts as Images in Prompt Tuning for Multi-Label Image Recognition", arXiv
2211.12739) trains two contexts on captions. One step = forward + backward + SGD update of both
contexts for a batch of 512 captions, C = 80 classes (COCO), n_ctx 16:
- `official`: as guozix/TaI-DPT does it (`tinyprompt.methods.taidpt.official_loss`): the batch's captions
  go through the frozen text encoder at all 77 positions every step; both sets of 80 class prompts run all
  77 positions; the local aggregation spans 77 positions with the additive -10000 padding mask; the
  pairwise (B, C, C) hinge;
- `tinyprompt`: `TaIDPT.caption_loss`, the same function with tinyprompt's exact shortcuts: caption
  features encoded ONCE (EOT-truncated, packed) and gathered per step, class prompts EOT-truncated with
  the shared SOS + context prefix encoded once, `tinyprompt.kernels.ranking_loss` (sort-based hinge, no
  (B, C, C) tensor).
Both run on the same CLIP, batch and contexts, and their first losses are compared.

Backbone: the RN50 CLIP's text tower (width 512, 8 heads, 12 layers, embed 1024; random weights, the
ResNet built too); fp32 on CPU, bf16 autocast on CUDA (`--dtype`). Captions: random token ids with COCO-like
lengths (10-22 tokens incl. SOT and EOT; random ids instead of text so no corpus is needed), ~2.9 labels per
caption (COCO's mean).
An epoch of N captions has ceil(N / B) steps; epoch times are the measured median step x steps (the
official step is too slow to run whole epochs here). tinyprompt's one-time caption encoding is timed
on a subset and scaled linearly to N, and reported both alone and amortised over the 20 epochs of the
official recipe. The ranking-loss share is the loss's forward + backward (both branches) over the step. Each
step's dispatched aten ops (`bench.opcount`: forward, backward and update) are reported beside its time.
On a shared CPU pass `--threads 1`: with more threads than free cores every parallel op waits for a
descheduled worker, which slows tinyprompt's many small ops far more than the official large ones.
"""
import math
import time

import torch

from bench import harness
from bench.clip_text import RN50
from bench.opcount import count_ops
from tinyprompt.clip import CLIP
from tinyprompt.data.classlists import get_class_list
from tinyprompt.engine import TrainConfig, build_optimizer
from tinyprompt.kernels import ranking_loss
from tinyprompt.methods.taidpt import TaIDPT, TaIDPTConfig, encode_captions, official_loss, official_ranking_loss
from tinyprompt.prompts import ClassPrompts

EPOCHS = 20  # the official recipe: the one-time caption encoding is shared by this many epochs
LABELS_PER_CAPTION = 2.9


def build_clip(seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    return CLIP(*RN50).eval().requires_grad_(False)


def caption_data(n: int, n_cls: int, seed: int = 0):
    """(tokens (n, 77) with COCO-like lengths, multi-hot labels (n, C) with >= 1 positive per row)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(10, 23, (n,), generator=gen)
    tokens = torch.randint(1, 49406, (n, 77), generator=gen)
    positions = torch.arange(77)
    tokens[positions[None] >= lengths[:, None]] = 0  # padding
    tokens[:, 0] = 49406  # SOT
    tokens[torch.arange(n), lengths - 1] = 49407  # EOT
    labels = (torch.rand(n, n_cls, generator=gen) < LABELS_PER_CAPTION / n_cls).long()
    labels[torch.arange(n), torch.randint(n_cls, (n,), generator=gen)] = 1
    return tokens, labels


def step_fns(clip, n_captions: int, n_cls: int = 80, batch: int = 512, seed: int = 0, dtype: str = "auto"):
    """({"official", "tinyprompt"}: zero-argument training steps, caption encoding info)."""
    classnames = list(get_class_list("coco").classnames)[:n_cls]
    tokens, labels = caption_data(n_captions, n_cls, seed)
    idx = torch.randperm(n_captions, generator=torch.Generator().manual_seed(seed))[:batch]  # one fixed batch
    torch.manual_seed(seed)
    model = TaIDPT(clip, classnames, TaIDPTConfig(n_ctx=16)).train()
    start = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    full = ClassPrompts(clip, classnames, 16, full_length=True, share_prefix=False)  # the official prompt encoding
    official_ctx = [torch.nn.Parameter(start["ctx_global"].clone()), torch.nn.Parameter(start["ctx_local"].clone())]
    subset = min(n_captions, 1024)
    t0 = time.perf_counter()
    encode_captions(clip, tokens[:subset])  # timed on a subset, scaled to the corpus below
    encode_s = (time.perf_counter() - t0) * n_captions / subset
    device = clip.token_embedding.weight.device
    cache = encode_captions(clip, tokens[idx]).to(device)  # the step only reads the batch's rows: cache just those
    rows = torch.arange(batch, device=device)

    def optimizer(params):
        return build_optimizer(params, TrainConfig(lr=1e-4, momentum=0.9, weight_decay=5e-4))

    opt_official, opt_tiny = optimizer(official_ctx), optimizer([model.ctx_global, model.ctx_local])
    batch_tokens, batch_labels = tokens[idx].to(device), labels[idx].to(device)

    def official():
        with harness.autocast(str(device), dtype):
            loss = official_loss(clip, full, *official_ctx, batch_tokens, batch_labels)
        opt_official.zero_grad(set_to_none=True)
        loss.backward()
        opt_official.step()
        return loss

    def tinyprompt():
        with harness.autocast(str(device), dtype):
            loss = model.caption_loss(cache, rows, batch_labels)
        opt_tiny.zero_grad(set_to_none=True)
        loss.backward()
        opt_tiny.step()
        return loss

    return {"official": official, "tinyprompt": tinyprompt}, {"encode_s": encode_s, "encode_subset": subset}


def loss_times(n_cls: int, batch: int, device, reps: int):
    """Median seconds of one ranking loss forward + backward on (batch, n_cls) logits, per implementation."""
    scores = torch.randn(batch, n_cls, device=device).requires_grad_(True)
    _, labels = caption_data(batch, n_cls, seed=1)

    def run(loss_fn):
        def once():
            (grad,) = torch.autograd.grad(loss_fn(scores, labels.to(device)), scores)
            return grad

        return once

    fns = {"official": run(official_ranking_loss), "tinyprompt": run(ranking_loss)}
    diff = (fns["official"]() - fns["tinyprompt"]()).abs().max().item()
    times = harness.time_interleaved(fns, device, warmup=2, reps=reps)
    return {name: harness.summarize(t)["median_s"] for name, t in times.items()}, diff


def add_args(parser) -> None:
    parser.add_argument("--captions", type=int, default=20000, help="captions in the epoch")
    parser.add_argument("--classes", type=int, default=80, help="number of classes (the first COCO names)")
    parser.add_argument("--batch", type=int, default=512, help="captions per step (official recipe: 512)")
    parser.add_argument("--reps", type=int, default=None, help="timed steps per provider (default 3, quick 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="cpu: torch threads for both providers (default: torch's); 1 avoids waiting on a "
                             "descheduled worker thread when the machine is shared")
    harness.add_dtype_arg(parser)


def run(args):
    batch = 128 if args.quick else args.batch
    reps = args.reps or (1 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)  # before the Report, whose device label names the thread count
    report = harness.Report("taidpt", args.device, args.out)
    clip = build_clip().to(args.device)
    steps, info = step_fns(clip, args.captions, args.classes, batch, dtype=args.dtype)
    losses = {name: fn().item() for name, fn in steps.items()}  # same contexts and batch: the same loss
    ops = {name: count_ops(fn).total for name, fn in steps.items()}
    times = harness.time_interleaved(steps, args.device, warmup=0, reps=reps)  # the first call above warmed up
    loss_s, loss_grad_diff = loss_times(args.classes, batch, args.device, reps=20)
    n_steps = math.ceil(args.captions / batch)
    rows = {}
    for name in steps:
        stats = harness.summarize(times[name])
        rows[name] = report.add(variant=name, captions=args.captions, n_cls=args.classes, batch=batch, n_ctx=16,
                                dtype=harness.dtype_label(args.device, args.dtype), ops=ops[name],
                                steps_per_epoch=n_steps, **stats, epoch_s=stats["median_s"] * n_steps,
                                loss_share=2 * loss_s[name] / stats["median_s"], first_loss=losses[name])  # fmt: skip
    tiny, official = rows["tinyprompt"], rows["official"]
    tiny["caption_encode_once_s"] = info["encode_s"]
    tiny["epoch_amortised_s"] = tiny["epoch_s"] + info["encode_s"] / EPOCHS
    tiny["ops_vs_official"] = tiny["ops"] / official["ops"]
    tiny["speedup_epoch"] = official["epoch_s"] / tiny["epoch_s"]
    tiny["speedup_epoch_amortised"] = official["epoch_s"] / tiny["epoch_amortised_s"]
    tiny["speedup_first_epoch"] = official["epoch_s"] / (tiny["epoch_s"] + info["encode_s"])
    tiny["first_loss_abs_diff"] = abs(losses["official"] - losses["tinyprompt"])
    tiny["note"] = (f"caption encoding timed on {info['encode_subset']} captions, scaled to {args.captions}; "
                    f"epochs = median step x {n_steps}; ranking loss grads differ by {loss_grad_diff:.1e}")  # fmt: skip
    report.write(["variant", "batch", "dtype", "ops", "ops_vs_official", "median_s", "p20_s", "p80_s", "epoch_s",
                  "caption_encode_once_s",
                  "epoch_amortised_s", "speedup_epoch", "speedup_epoch_amortised", "speedup_first_epoch",
                  "loss_share", "first_loss", "first_loss_abs_diff", "note"],
                 title=f"TaI-DPT training epoch: official vs tinyprompt (RN50 text tower, {args.device} "
                       f"{harness.dtype_label(args.device, args.dtype)}, "
                       f"{args.captions} captions, C={args.classes}, batch {batch})")  # fmt: skip
    report.plot("variant", "epoch_s", "variant", "seconds per epoch")
    return 0
