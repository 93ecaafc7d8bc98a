"""Suite `ops`: dispatched aten ops per training step of every method against its official formulation, at the
encoding knobs "auto" picks on CPU and on CUDA (`python -m bench ops`).

A GPU step of ~1,000 short prompts is bound by kernel launches, and every dispatched op is at most one launch
(`bench/opcount.py`), so this is the goal of the GPU-ready steps, measured where no GPU is at hand: at the CUDA
knobs (`tinyprompt.prompts.AUTO_ENCODING["accelerator"]`: one pass, nothing recomputed, no separate prefix pass)
tinyprompt's step must dispatch no more ops than the official one. The CPU knobs trade ops for arithmetic and
memory (chunks of 256 length-sorted prompts, recomputed in backward) and are shown beside them.

Each method's step is the one its own bench times (`bench/{pomp,coop,taidpt,ship}.py`; ILM-VP's is the official
loss itself), on a narrow CLIP: a step's op count does not depend on the tower widths (tests/test_opcount.py checks
it), only on the depth, so the text tower has the 12 blocks of every OpenAI CLIP and the vision tower one block
(only the official CoOp/SHIP/TaI-DPT steps re-encode images or captions, which the count then under-states). bf16
counts the casts of a CUDA autocast step. The fused losses run their reference twin here (plain PyTorch ops),
a few Triton kernels on CUDA: tinyprompt's counts are upper bounds.
"""
import contextlib

import torch
import torch.nn.functional as F

from bench import coop as coop_bench, harness, pomp as pomp_bench, ship as ship_bench, taidpt as taidpt_bench
from bench.opcount import count_ops
from tinyprompt import prompts
from tinyprompt.clip import CLIP
from tinyprompt.engine import TrainConfig, build_optimizer
from tinyprompt.methods.ilmvp import ILMVP, AdditivePrompt, CLIPClassifier

__all__ = ["METHOD_STEPS", "knobs_of", "narrow_clip", "steps_ops"]


def narrow_clip(seed: int = 0) -> CLIP:
    """ViT of 32 px and one block; text tower of width 32 and 12 blocks (the depth of every OpenAI CLIP)."""
    torch.manual_seed(seed)
    return CLIP(16, 32, 1, 64, 16, 77, 49408, 32, 2, 12).eval()


@contextlib.contextmanager
def knobs_of(device: str):
    """Within it, "auto" resolves on this machine as it would on `device` ("cpu" or "accelerator")."""
    saved = prompts.AUTO_ENCODING["cpu"]
    prompts.AUTO_ENCODING["cpu"] = prompts.AUTO_ENCODING[device]
    try:
        yield
    finally:
        prompts.AUTO_ENCODING["cpu"] = saved


def steps_ops(steps: dict) -> dict:
    """{variant: ops of one step}, each counted after a first call (the optimiser's state exists by then)."""
    for step in steps.values():
        step()
    return {variant: count_ops(step).total for variant, step in steps.items()}


def _pomp(clip, dtype):
    # 4 images x 2 views, K - 1 = 16 negatives of N = 16 classes: every label is also drawn as a negative, so the step
    # takes the branch that encodes a repeated class once (the count's worst case)
    return {v: pomp_bench.step_fn(clip, v, 17, 4, 2, 16, dtype=dtype) for v in ("official", "tinyprompt")}


def _coop(clip, dtype):
    return {v: coop_bench.step_fn(clip, 10, v, 8, dtype=dtype) for v in ("official", "tinyprompt")}


def _taidpt(clip, dtype):
    return taidpt_bench.step_fns(clip, 64, 10, 16, dtype=dtype)[0]


def _ship(stage):
    def steps(clip, dtype):
        return {p: ship_bench.step_fn(clip, stage, p, 4, dtype=dtype) for p in ship_bench.PROVIDERS}

    return steps


def _ilmvp(clip, dtype):
    """ILM-VP's step is the official one (`ILMVP.loss`); the official formulation as its CLIP script writes it."""
    texts = F.normalize(torch.randn(30, clip.embed_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    model = ILMVP(CLIPClassifier(clip, texts), AdditivePrompt(32, 4), 10).train()
    optimizer = build_optimizer([model.prompt.prompt], TrainConfig(lr=40.0, momentum=0.9, weight_decay=0.0))
    images, labels = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 10

    def official_loss():
        features = clip.encode_image(images + model.prompt.prompt * model.prompt.mask)
        features = features / features.norm(dim=-1, keepdim=True)
        return F.cross_entropy((clip.logit_scale.exp() * features @ texts.t())[:, model.mapping], labels)

    def step(loss_fn):
        def run():
            with harness.autocast("cpu", dtype):
                loss = loss_fn()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return run

    return {"official": step(official_loss), "tinyprompt": step(lambda: model.loss(model(images), labels))}


# method -> (clip, dtype) -> {"official" | "tinyprompt": a zero-argument training step}
METHOD_STEPS = {"pomp": _pomp, "coop": _coop, "taidpt": _taidpt, "ship_vae": _ship("vae"),
                "ship_finetune": _ship("finetune"), "ilmvp": _ilmvp}  # fmt: skip


def add_args(parser) -> None:
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                        help="step precisions counted (bf16: with the autocast casts of a CUDA step)")


def run(args):
    if args.device != "cpu":
        raise SystemExit("bench ops counts on the CPU (the count is the proxy for a GPU): use --device cpu")
    report = harness.Report("ops", "cpu", args.out)
    for dtype in args.dtypes:
        for method, build in METHOD_STEPS.items():
            counts = {}
            for knobs in ("cpu", "accelerator"):
                with knobs_of(knobs):
                    counts[knobs] = steps_ops(build(narrow_clip(), dtype))
            for knobs, ops in counts.items():
                row = report.add(method=method, dtype=dtype, knobs="cuda" if knobs == "accelerator" else "cpu",
                                 official=ops["official"], tinyprompt=ops["tinyprompt"],
                                 ratio=ops["tinyprompt"] / ops["official"])  # fmt: skip
                if knobs == "accelerator":  # the CPU knobs trade ops for arithmetic: no goal there
                    row["goal"] = "met" if ops["tinyprompt"] <= ops["official"] else "MISSED"
            print(f"{method} {dtype}: cuda knobs {counts['accelerator']['tinyprompt']} vs official "
                  f"{counts['accelerator']['official']} ops; cpu knobs {counts['cpu']['tinyprompt']}")
    report.write(["method", "dtype", "knobs", "official", "tinyprompt", "ratio", "goal"],
                 title="Dispatched aten ops per training step: tinyprompt vs the official formulation (narrow CLIP, "
                       "12 text blocks; goal at the CUDA knobs: tinyprompt <= official)")  # fmt: skip
    return 0
