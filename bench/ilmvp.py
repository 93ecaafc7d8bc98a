"""ILM-VP benchmarks: the greedy label mapping at ImageNet-21K x ImageNet-1K size, one training step of the CLIP
variant, and the share of the per-epoch mapping pass in an epoch of it, at ViT-B/32 size.

1. `greedy_label_mapping` (tinyprompt, vectorised) vs `official_greedy_mapping` (the official procedure
   written plainly: T times argmax over the whole S x T matrix, then strike out the row and column),
   S = 21,843, T = 1,000, on frequency matrices of N top-1 predictions (N = 50,000 and 1,281,167, the
   ImageNet-1K train size; predictions drawn from per-class source preferences plus popular "hub"
   classes) and, as a stress case, a dense random matrix. Outputs are checked identical.
2. One training step of the CLIP variant (forward + backward + SGD of the frame prompt, `--batch-size` images,
   81 x C source texts): the official step's function and ops, as `ILMVP.loss` is the official loss (the official
   code adds the prompt in place, here out of place: one op either way). fp32 on CPU, bf16 autocast on CUDA
   (the official scripts: fp16 autocast); the only part that runs on CUDA, as parts 1 and 3 are CPU work.
3. The CLIP variant (81 templates x C classes as source labels, additive frame prompt) with a random
   ViT-B/32: one epoch through `tinyprompt.engine.train` (SGD, forward + backward + step) and the
   fresh frequency pass before it (forward only, no grad), timed separately; the pass's share is
   pass / (pass + training). Text features are computed once and reported apart.
Every part reports the aten ops one call dispatches (`bench.opcount`) beside its time.
"""
import time

import torch
import torch.nn.functional as F

from bench import harness
from bench.harness import Report, summarize, time_interleaved
from bench.opcount import count_ops
from tinyprompt.methods.label_mapping import frequency_matrix, greedy_label_mapping, official_greedy_mapping

VIT_B32 = (512, 224, 12, 768, 32, 77, 49408, 512, 8, 12)  # OpenAI's CLIP(...) arguments for ViT-B/32


def add_args(parser):
    parser.add_argument("--num-source", type=int, default=21843, help="S, source classes (default: 21843)")
    parser.add_argument("--num-target", type=int, default=1000, help="T, target classes (default: 1000)")
    parser.add_argument("--images", type=int, default=128, help="training images in the CLIP epoch (default: 128; --quick: 32)")
    parser.add_argument("--batch-size", type=int, default=32, help="CLIP epoch batch size (default: 32; --quick: 16)")
    parser.add_argument("--classes", type=int, default=10, help="C, target classes of the CLIP variant (default: 10)")
    harness.add_dtype_arg(parser)


def simulated_frequencies(n_source, n_target, n, seed=0):
    """A frequency matrix of n top-1 predictions: 60% from 20 preferred sources per class, 40% from 200 hubs."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_target, (n,), generator=g)
    preferred = torch.randint(0, n_source, (n_target, 20), generator=g)
    hubs = torch.randint(0, n_source, (200,), generator=g)
    own = preferred[labels, torch.randint(0, 20, (n,), generator=g)]
    other = hubs[torch.randint(0, 200, (n,), generator=g)]
    predictions = torch.where(torch.rand(n, generator=g) < 0.6, own, other)
    return frequency_matrix(predictions, labels, n_source, n_target)


def bench_greedy(report, args):
    S, T = args.num_source, args.num_target
    cases = {"sim N=50,000": simulated_frequencies(S, T, 50_000)}
    if not args.quick:
        cases["sim N=1,281,167"] = simulated_frequencies(S, T, 1_281_167, seed=1)
        cases["dense randint(0,100)"] = torch.randint(0, 100, (S, T), generator=torch.Generator().manual_seed(2))
    for name, freq in cases.items():
        fast = greedy_label_mapping(freq)  # also the warm-up of the vectorised path
        same = torch.equal(fast, official_greedy_mapping(freq))
        fns = {"tinyprompt": lambda: greedy_label_mapping(freq), "loop": lambda: official_greedy_mapping(freq)}
        ops = {provider: count_ops(fn).total for provider, fn in fns.items()}
        times = time_interleaved(fns, "cpu", warmup=0, reps=2)
        ours, loop = summarize(times["tinyprompt"]), summarize(times["loop"])
        for provider, stats in (("tinyprompt", ours), ("loop", loop)):
            report.add(part="greedy", case=name, S=S, T=T, nonzero=int(torch.count_nonzero(freq)), provider=provider,
                       dtype="int64", identical=same, ops=ops[provider], speedup=loop["median_s"] / ours["median_s"],
                       **stats)  # fmt: skip


def bench_step(report, args):
    from tinyprompt.clip import CLIP
    from tinyprompt.engine import TrainConfig, build_optimizer
    from tinyprompt.methods.ilmvp import ILM_TEMPLATES, ILMVP, AdditivePrompt, CLIPClassifier

    torch.manual_seed(0)
    clip = CLIP(*VIT_B32).to(args.device).eval()  # random weights (OpenAI's initialisation)
    C, bs = args.classes, (16 if args.quick else args.batch_size)
    texts = F.normalize(torch.randn(len(ILM_TEMPLATES) * C, clip.embed_dim), dim=-1)  # fixed: random is as good
    model = ILMVP(CLIPClassifier(clip, texts), AdditivePrompt(224, 30), C).to(args.device).train()
    optimizer = build_optimizer([model.prompt.prompt], TrainConfig(lr=40.0, momentum=0.9, weight_decay=0.0))
    images, labels = torch.randn(bs, 3, 224, 224).to(args.device), (torch.arange(bs) % C).to(args.device)

    def step():
        with harness.autocast(args.device, args.dtype):
            loss = model.loss(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    step()  # warm-up
    ops = count_ops(step).total
    stats = summarize(time_interleaved({"step": step}, args.device, warmup=0, reps=2 if args.quick else 5)["step"])
    report.add(part="step", case=f"ViT-B/32 random, batch {bs}, C={C} ({len(ILM_TEMPLATES) * C} texts)",
               provider="tinyprompt = official", dtype=harness.dtype_label(args.device, args.dtype), ops=ops,
               **stats, note="ILMVP.loss is the official loss: one step, the same ops")  # fmt: skip


def bench_clip_epoch(report, args):
    from tinyprompt.clip import CLIP
    from tinyprompt.engine import TrainConfig, train
    from tinyprompt.methods.ilmvp import ILM_TEMPLATES, ILMVP, AdditivePrompt, CLIPClassifier

    torch.manual_seed(0)
    clip = CLIP(*VIT_B32).eval()  # random weights (OpenAI's initialisation)
    C, n, bs = args.classes, (32 if args.quick else args.images), (16 if args.quick else args.batch_size)
    tokens = torch.randint(1, 49405, (len(ILM_TEMPLATES) * C, 77))  # 81 C texts of realistic length
    tokens[:, 0], tokens[:, 10], tokens[:, 11:] = 49406, 49407, 0  # SOT, 9 content ids, EOT, padding
    started = time.perf_counter()
    with torch.no_grad():
        text = torch.cat([clip.encode_text(chunk) for chunk in tokens.split(256)])
    text_s = time.perf_counter() - started
    model = ILMVP(CLIPClassifier(clip, text / text.norm(dim=-1, keepdim=True)), AdditivePrompt(224, 30), C)
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(n, 3, 224, 224, generator=g), torch.arange(n) % C
    batches = list(zip(images.split(bs), labels.split(bs)))
    passes = []

    def epoch_start(model, epoch):
        started = time.perf_counter()
        model.update_mapping(batches, epoch)  # a fresh no-grad pass over all training images
        passes.append(time.perf_counter() - started)

    loss_fn = lambda model, batch, info: model.loss(model(batch[0]), batch[1])  # noqa: E731
    config = TrainConfig(max_epoch=2, batch_size=bs, lr=40.0, momentum=0.9, weight_decay=0.0, scheduler="cosine_iter",
                         warmup_epochs=0, precision="fp32", log_every=10**6)
    history = train(model, loss_fn, lambda epoch: batches, config, epoch_start_fn=epoch_start)["epochs"]
    for epoch, (mapping_s, log) in enumerate(zip(passes, history)):
        report.add(part="clip_epoch", case=f"ViT-B/32 random, {n} images, batch {bs}, C={C} ({81 * C} texts)",
                   epoch=epoch, provider="tinyprompt", dtype="float32", mapping_pass_s=mapping_s,
                   train_s=log["time_s"], mapping_share=mapping_s / (mapping_s + log["time_s"]),
                   text_features_once_s=text_s)


def run(args):
    torch.manual_seed(0)
    report = Report("ilmvp", args.device, args.out)
    if args.device == "cpu":  # the greedy mapping and the epoch's mapping pass are CPU work
        bench_greedy(report, args)
    bench_step(report, args)
    if args.device == "cpu":
        bench_clip_epoch(report, args)
    report.write(["part", "case", "provider", "dtype", "ops", "median_s", "p20_s", "p80_s", "speedup", "identical",
                  "epoch", "mapping_pass_s", "train_s", "mapping_share", "note"],
                 title="ILM-VP: greedy label mapping, the CLIP variant's step and its mapping pass")  # fmt: skip
