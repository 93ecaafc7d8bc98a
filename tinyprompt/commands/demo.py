"""`tinyprompt demo [--quick]`: zero-shot CLIP and the five prompt-learning methods, end to end, offline.

Everything runs on the built-in synthetic world (`tinyprompt.data.synthetic`: coloured shapes on
patterned backgrounds, with captions) and the tiny CLIP pre-trained on it (`tinyprompt.load("synthetic")`),
so nothing is downloaded. Each experiment reproduces the claim of its paper on a task made for it
(`tinyprompt.data.synthetic_tasks`) and reports one row: method, task, metric, before -> after, time.

    zero-shot  CLIP, arXiv 2103.00020     shapes: hand prompt vs chance
    CoOp       arXiv 2109.01134           backgrounds: a learned context vs the hand prompt "a photo of a {}."
    TaI-DPT    arXiv 2211.12739           multi-label scenes: prompts trained on captions only vs zero-shot mAP
    ILM-VP     arXiv 2211.11635           a colour task through a frozen 64-class source: random, frequency
                                          and iterative label mapping, each with a learned padding prompt
    SHIP       arXiv 2307.07397           base-to-new: CoOp on the base classes vs CoOp on base + features
                                          synthesised for the names-only new classes
    POMP       arXiv 2304.04704           a prompt pre-trained over 288 classes with sampled negatives,
                                          zero-shot on 96 held-out classes vs the hand prompt it started from

Every experiment is a function `run_<method>(clip, settings, progress) -> dict` built only from the public
API (methods, `tinyprompt.engine.train`, metrics): read one to see how to embed that method; `progress.train`
is `train` plus a step counter. The image encoder is frozen, so features are computed once per image (ILM-VP,
which learns pixels, is the exception).
"""
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from tinyprompt.data import synthetic_tasks as tasks
from tinyprompt.data.captions import label_captions
from tinyprompt.data.features import FeatureDataset
from tinyprompt.data.synthetic import SHAPES, derive_seed, describe, sample_scenes
from tinyprompt.engine import TrainConfig, train
from tinyprompt.io import atomic_write
from tinyprompt.metrics import accuracy, mean_average_precision
from tinyprompt.tokenizer import tokenize_for
from tinyprompt.transforms import CLIP_MEAN, CLIP_STD, preprocess_tensor
from tinyprompt.zeroshot import zeroshot_classifier

__all__ = ["DemoSettings", "PRESETS", "Progress", "run_zeroshot", "run_coop", "run_taidpt", "run_ilmvp", "run_ship",
           "run_pomp", "run_demo", "EXPERIMENTS"]

HAND = ["a photo of a {}."]  # the hand-written prompt every method is compared with


@dataclass
class DemoSettings:
    shots: int = 16  # training images per class (CoOp, ILM-VP, SHIP's base classes)
    test_per_class: int = 50  # test images per class of the single-label tasks
    coop_epochs: int = 50  # CoOp and SHIP's fine-tune
    taidpt_captions: int = 4000  # captions TaI-DPT trains on (no image is used for training)
    taidpt_epochs: int = 30
    taidpt_test: int = 400  # multi-label test scenes
    ilmvp_epochs: int = 60  # per mapping mode
    ship_vae_epochs: int = 30
    pomp_shots: int = 4  # images per class of the 288-class pre-training set
    pomp_epochs: int = 20
    pomp_k: int = 32  # logit columns per row: the positive + 31 sampled negatives (of 288)
    seed: int = 0  # seeds every task, initialisation and shuffle


PRESETS = {
    "full": DemoSettings(),
    "quick": DemoSettings(test_per_class=25, coop_epochs=25, taidpt_captions=2000, taidpt_epochs=15,
                          taidpt_test=200, ilmvp_epochs=30, ship_vae_epochs=15, pomp_epochs=10),
}  # fmt: skip


def _quiet(**fields) -> TrainConfig:
    """A TrainConfig that prints no progress lines (the demo prints one row per experiment)."""
    return TrainConfig(log_every=0, **fields)


class Progress:
    """Progress inside a demo row, e.g. `SHIP: generator, step 40/120, ~15 s left`, so a slow row is never silent.

    On a terminal one line is rewritten in place (\\r) and blanked before the row prints; elsewhere (a pipe, a
    log file) a plain line at most every `every` seconds.
    """

    def __init__(self, stream=None, every: float | None = None):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.every = (0.2 if self.tty else 15.0) if every is None else every
        self.method, self.width, self.last = "", 0, time.perf_counter()

    def start(self, method: str) -> None:
        """A row begins: a terminal shows its name at once (features and baselines come before any training)."""
        self.method, self.last = method, time.perf_counter()
        if self.tty:
            self._write(f"{method}: preparing")

    def train(self, label: str, model, loss_fn, data, config: TrainConfig, **kwargs) -> dict:
        """`tinyprompt.engine.train` with a step counter. The engine calls loss_fn once per step, so wrapping it
        counts steps without changing anything the training computes."""
        total = math.ceil(len(data) / config.batch_size) * config.max_epoch  # the engine keeps the last short batch
        second = None  # when step 2 began: the rate is timed from there, as the first step pays one-off costs

        def counted(model, batch, info):
            nonlocal second
            done, now = info.global_step, time.perf_counter()
            if done == 1:
                second = now
            elif done > 1 and now - self.last >= self.every:
                left = (now - second) / (done - 1) * (total - done)
                self._write(f"{self.method}: {label}, step {done + 1}/{total}, ~{left:.0f} s left")
            return loss_fn(model, batch, info)

        return train(model, counted, data, config, **kwargs)

    def clear(self) -> None:
        """Blank the updating line, so the row prints on a clean line."""
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0

    def _write(self, line: str) -> None:
        self.last = time.perf_counter()
        if self.tty:  # pad over the rest of a longer previous line
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


@torch.no_grad()
def image_features(clip, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """(N, E) unnormalised features of uint8 images (N, 3, R, R) through the frozen image encoder."""
    n_px = clip.visual.input_resolution
    return torch.cat([clip.encode_image(preprocess_tensor(chunk, n_px)) for chunk in images.split(batch_size)])


def _top1(image_feats: torch.Tensor, text_feats: torch.Tensor, labels) -> float:
    """Top-1 accuracy (percent) of cosine scores between image (N, E) and class (C, E) features."""
    return accuracy(F.normalize(image_feats, dim=-1) @ F.normalize(text_feats, dim=-1).t(), torch.as_tensor(labels))[0]


def _row(method, task, metric, before, after, started, baseline, note="", **extra) -> dict:
    """One result row; `baseline` names what `before` measures (chance, the hand prompt, ...)."""
    return {"method": method, "task": task, "metric": metric, "before": round(before, 2), "after": round(after, 2),
            "seconds": round(time.perf_counter() - started, 1), "baseline": baseline,
            "note": f"before = {baseline}" + (f"; {note}" if note else ""), **extra}


# ------------------------------------------------------------------------------------------ zero-shot

def run_zeroshot(clip, s: DemoSettings, progress: Progress) -> dict:
    """CLIP's claim: a text prompt per class classifies images it was never trained to label. (Nothing is
    trained, so `progress` has no steps to count.)"""
    started = time.perf_counter()
    task = tasks.shapes(per_class=(0, 0, s.test_per_class), seed=s.seed)
    test = task["test"]
    acc = _top1(image_features(clip, test.images), zeroshot_classifier(clip, task.classnames, HAND), test.labels)
    return _row("zero-shot", f"shapes ({len(task.classnames)})", "top-1 %", 100 / len(task.classnames), acc, started,
                "chance")


# ------------------------------------------------------------------------------------------ CoOp

def run_coop(clip, s: DemoSettings, progress: Progress) -> dict:
    """CoOp's claim: a learned context beats a hand prompt where the hand prompt is weak. In `backgrounds`
    the class is the background colour, while "a photo of a {}." mostly finds the object's colour."""
    from tinyprompt.methods.coop import CoOp, CoOpConfig

    started = time.perf_counter()
    task = tasks.backgrounds(per_class=(s.shots, 0, s.test_per_class), seed=s.seed)
    train_feats, test_feats = image_features(clip, task["train"].images), image_features(clip, task["test"].images)
    before = _top1(test_feats, zeroshot_classifier(clip, task.classnames, HAND), task["test"].labels)
    torch.manual_seed(s.seed)
    coop = CoOp(clip, task.classnames, CoOpConfig(n_ctx=4))
    progress.train("context", coop, lambda m, b, i: m.loss(*b), FeatureDataset(train_feats, task["train"].labels),
                   _quiet(max_epoch=s.coop_epochs, batch_size=32, seed=s.seed))  # CoOp: SGD lr 0.002, warm-up + cosine
    with torch.no_grad():
        after = _top1(test_feats, coop.text_features(), task["test"].labels)
    return _row("CoOp", f"backgrounds ({len(task.classnames)}, {s.shots}-shot)", "top-1 %", before, after, started,
                "hand prompt")


# ------------------------------------------------------------------------------------------ TaI-DPT

def synthetic_captions(n: int, seed: int):
    """(captions, labels (N, 8)) of n scenes of 1-4 objects: labels derived from the text alone, as TaI-DPT
    does; captions that name no shape ("a red object.") are dropped."""
    scenes = sample_scenes(n, derive_seed(seed, "taidpt captions"), objects=(1, 4))
    captions = describe(scenes, derive_seed(seed, "taidpt wording"))
    kept, labels, _ = label_captions(captions, SHAPES, [(shape,) for shape in SHAPES])
    return kept, labels


def run_taidpt(clip, s: DemoSettings, progress: Progress) -> dict:
    """TaI-DPT's claim: prompts trained on captions only (texts as images) beat zero-shot on multi-label images."""
    from tinyprompt.methods.taidpt import TaIDPT, TaIDPTConfig, encode_captions

    started = time.perf_counter()
    captions, labels = synthetic_captions(s.taidpt_captions, s.seed)
    corpus = encode_captions(clip, tokenize_for(clip, captions))  # frozen: encoded once
    task = tasks.scenes(sizes=(0, 0, s.taidpt_test), seed=s.seed)
    images, test_labels = task["test"].images, task["test"].labels
    hand = zeroshot_classifier(clip, task.classnames, HAND)
    before = mean_average_precision(F.normalize(image_features(clip, images), dim=-1) @ hand.t(), test_labels)[0]
    torch.manual_seed(s.seed)
    model = TaIDPT(clip, task.classnames, TaIDPTConfig(n_ctx=8))
    # the official recipe (SGD, warm-up epoch, cosine) at lr 0.002, not 1e-4: hundreds of steps, not thousands;
    # the engine batches caption indices, the loss gathers their cached features
    progress.train("prompts", model, lambda m, idx, i: m.caption_loss(corpus, idx, labels[idx]), range(len(captions)),
                   _quiet(max_epoch=s.taidpt_epochs, batch_size=128, lr=0.002, seed=s.seed))
    model.eval()
    with torch.no_grad():  # global and per-location image features, scored by both prompts and merged
        scores = model(preprocess_tensor(images, clip.visual.input_resolution))[2]
    after = mean_average_precision(scores, test_labels)[0]
    return _row("TaI-DPT", f"scenes ({len(task.classnames)} labels, 1-4 objects)", "mAP %", before, after, started,
                "hand prompt", note=f"trained on {len(captions)} captions, no images")


# ------------------------------------------------------------------------------------------ ILM-VP

def run_ilmvp(clip, s: DemoSettings, progress: Progress) -> dict:
    """ILM-VP's claim: re-mapping labels while the visual prompt learns beats a fixed (frequency) mapping,
    which beats a random one. The frozen source is the tiny CLIP as a 64-class colour-shape classifier; the
    target task (object colour, 8 classes, 28 px images) has other labels and a smaller input, which a
    learned padding frame enlarges to 32 px."""
    from tinyprompt.methods.ilmvp import ILMVP, CLIPClassifier, ILMVPConfig, PaddingPrompt

    started = time.perf_counter()
    source_task, target = tasks.source_target(per_class=(s.shots, 0, s.test_per_class), seed=s.seed)
    source = CLIPClassifier(clip, zeroshot_classifier(clip, source_task.classnames, HAND), source_task.classnames)
    pixels = {split: target[split].images.float() / 255 for split in ("train", "test")}  # [0, 1], as the prompt expects
    labels = {split: target[split].labels for split in ("train", "test")}
    data = list(zip(pixels["train"].split(64), labels["train"].split(64)))  # the mapping passes
    scores = {}
    for mode in ("rlm", "flm", "ilm"):
        prompt = PaddingPrompt(pixels["train"].shape[-1], clip.visual.input_resolution, CLIP_MEAN, CLIP_STD)
        model = ILMVP(source, prompt, len(target.classnames), ILMVPConfig(mapping=mode, seed=s.seed), target.classnames)
        # the official CNN recipe (Adam, x0.1 at 50% and 72% of the epochs) at lr 0.05, not 0.01: tens of epochs, not 200
        progress.train(f"{mode.upper()} prompt", model, lambda m, b, i: m.loss(m(b[0]), b[1]),
                       torch.utils.data.TensorDataset(pixels["train"], labels["train"]),
                       _quiet(max_epoch=s.ilmvp_epochs, batch_size=32, optimizer="adam", lr=0.05, scheduler="multistep",
                              warmup_epochs=0, weight_decay=0.0, seed=s.seed),
                       epoch_start_fn=lambda model, epoch: model.update_mapping(data, epoch))  # fmt: skip
        model.eval()
        with torch.no_grad():
            scores[mode] = accuracy(model(pixels["test"]), labels["test"])[0]
    return _row("ILM-VP", f"colours via a 64-class source ({s.shots}-shot)", "top-1 %", scores["rlm"], scores["ilm"],
                started, "random label mapping",
                note=f"frequency mapping {scores['flm']:.1f}, after = iterative mapping",
                random=scores["rlm"], frequency=scores["flm"],
                iterative=scores["ilm"])  # fmt: skip


# ------------------------------------------------------------------------------------------ SHIP

def run_ship(clip, s: DemoSettings, progress: Progress) -> dict:
    """SHIP's claim: features synthesised for names-only classes let CoOp generalise to them. The new classes
    have colours no base image shows. Both arms are CoOp from "a photo of a"; SHIP's also sees one
    generated new-class feature per real base feature."""
    from tinyprompt.methods.coop import CoOp, CoOpConfig
    from tinyprompt.methods.ship import SHIPConfig, SHIPGenerator, base_new_accuracy, coop_loss, finetune_loss

    started = time.perf_counter()
    task = tasks.base_new(per_class=(s.shots, 0, s.test_per_class), seed=s.seed)
    n_base = len(task.info["base"])
    train_feats = F.normalize(image_features(clip, task["train"].images), dim=-1)
    train_labels = task["train"].labels  # base classes only are trained on: keep those rows
    base_rows = train_labels < n_base
    train_feats, train_labels = train_feats[base_rows], train_labels[base_rows]
    test_feats, test_labels = F.normalize(image_features(clip, task["test"].images), dim=-1), task["test"].labels
    is_base = test_labels < n_base

    def base_new(coop):
        with torch.no_grad():
            return base_new_accuracy(coop.text_features(), n_base, test_feats[is_base], test_labels[is_base],
                                     test_feats[~is_base], test_labels[~is_base] - n_base)  # fmt: skip

    fine_tune = dict(max_epoch=s.coop_epochs, batch_size=32, lr=0.002, momentum=0.0, weight_decay=0.0,
                     scheduler="cosine_iter", warmup_epochs=0, seed=s.seed)  # SHIP's official fine-tune
    # CoOp alone: trained over the base classes, then its context is used for every class
    torch.manual_seed(s.seed)
    coop = CoOp(clip, task.classnames[:n_base], CoOpConfig(ctx_init="a photo of a"))
    progress.train("CoOp on base", coop, lambda m, b, i: coop_loss(m, *b),
                   FeatureDataset(train_feats, train_labels), _quiet(**fine_tune))
    coop = CoOp.from_prompt_state_dict(clip, task.classnames, coop.prompt_state_dict())
    plain = base_new(coop)
    # SHIP: the generator learns to reconstruct base features through the text encoder (a CVAE) ...
    torch.manual_seed(s.seed)
    generator = SHIPGenerator(clip, task.classnames, SHIPConfig())
    progress.train("generator", generator, lambda m, b, i: m(*b)["loss"],
                   FeatureDataset(train_feats, train_labels),
                   _quiet(max_epoch=s.ship_vae_epochs, batch_size=64, optimizer="adamw", lr=1e-3, weight_decay=0.01,
                          scheduler="constant", warmup_epochs=0, seed=s.seed))  # fmt: skip
    generator.eval()
    # ... then CoOp trains on real base features plus one synthesised new-class feature each
    torch.manual_seed(s.seed)
    coop = CoOp(clip, task.classnames, CoOpConfig(ctx_init="a photo of a"))
    progress.train("CoOp + synthesised", coop,
                   lambda m, b, i: finetune_loss(m, generator, *b, n_base),
                   FeatureDataset(train_feats, train_labels), _quiet(**fine_tune))
    ship = base_new(coop)
    return _row("SHIP", f"base-to-new ({n_base} + {len(task.classnames) - n_base} colour-shape)", "new-class top-1 %",
                plain["new"], ship["new"], started, "CoOp on base only", coop=plain, ship=ship,
                note=f"H {plain['H']:.1f} -> {ship['H']:.1f}")


# ------------------------------------------------------------------------------------------ POMP

def run_pomp(clip, s: DemoSettings, progress: Progress) -> dict:
    """POMP's claim: a prompt pre-trained over a large label space with sampled negatives transfers zero-shot
    to classes it never saw. The class names ("small red checkered star") give the background's colour and
    pattern, which the hand prompt reads as the object's; the prompt, initialised from "a photo of a" and
    trained over 288 classes with 31 sampled negatives per step, is tested on the 96 classes whose
    (background colour, shape) pair it never saw."""
    from tinyprompt.methods.pomp import POMP, POMPConfig

    started = time.perf_counter()
    large = tasks.large_label_space(per_class=(s.pomp_shots, 0, 0), seed=s.seed)
    held = tasks.held_out(per_class=(0, 0, max(s.test_per_class // 5, 5)), seed=s.seed)
    train_feats, held_feats = image_features(clip, large["train"].images), image_features(clip, held["test"].images)
    before = _top1(held_feats, zeroshot_classifier(clip, held.classnames, HAND), held["test"].labels)
    torch.manual_seed(s.seed)
    pomp = POMP(clip, large.classnames, POMPConfig(ctx_init="a photo of a", k=s.pomp_k, sampler_seed=s.seed))
    # POMP's recipe (SGD, warm-up epoch, cosine) at lr 0.05 instead of 0.002: hundreds of steps, not ~10^5;
    # one cached view per image, and step t's negatives
    progress.train("prompt", pomp, lambda m, b, i: m.step_loss(*b, i.global_step, i.rank),
                   FeatureDataset(train_feats, large["train"].labels),
                   _quiet(max_epoch=s.pomp_epochs, batch_size=32, lr=0.05, seed=s.seed))  # fmt: skip
    transferred = POMP.from_prompt_state_dict(clip, held.classnames, pomp.prompt_state_dict())
    with torch.no_grad():
        after = _top1(held_feats, transferred.text_features(), held["test"].labels)
    return _row("POMP", f"{len(held.classnames)} held-out classes (pre-trained on {len(large.classnames)})",
                "top-1 %", before, after, started, "hand prompt")


EXPERIMENTS = {"zero-shot": run_zeroshot, "CoOp": run_coop, "TaI-DPT": run_taidpt, "ILM-VP": run_ilmvp,
               "SHIP": run_ship, "POMP": run_pomp}  # fmt: skip


# ------------------------------------------------------------------------------------------ the command

def run_demo(settings: DemoSettings, methods=None, model: str = "synthetic", log=print, progress=None) -> dict:
    """Run the experiments (all, or the named ones) and return {"rows": [...], ...} for the results JSON.
    `progress` reports inside each row (default: a `Progress` on stdout)."""
    from tinyprompt.hub import load

    progress = progress or Progress()
    torch.manual_seed(settings.seed)
    clip, _ = load(model)
    rows = []
    for name in methods or EXPERIMENTS:
        progress.start(name)
        try:
            row = EXPERIMENTS[name](clip, settings, progress)
        finally:  # an error message, too, starts on a clean line
            progress.clear()
        log(_format_row(row))
        rows.append(row)
    return {"rows": rows, "settings": asdict(settings), "model": model, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "machine": platform.machine()}


def _format_row(row) -> str:
    return (f"{row['method']:<10} {row['task']:<48} {row['metric']:<19} {row['before']:>6.1f} -> {row['after']:>6.1f}"
            f"  {row['seconds']:>5.1f} s  ({row['note']})")


def _chart(rows, path: Path) -> bool:
    """A bar chart of before/after per method, when matplotlib is installed; returns whether it was written."""
    try:  # lazy: matplotlib is the optional `plot` extra
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(10, 4.8))
    x = torch.arange(len(rows)).float()
    for offset, key, label in ((-0.2, "before", "before: the baseline named under each method (chance, the untrained "
                                                "hand prompt, or a weaker variant)"),
                               (0.2, "after", "after: the method (zero-shot: CLIP with the hand prompt)")):
        bars = ax.bar(x + offset, [r[key] for r in rows], 0.4, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(x.tolist(), [f"{r['method']}\n{r['metric']}\nbefore:\n{r['baseline']}" for r in rows], fontsize=7)
    ax.set_ylabel("score, % (the metric under each method)")
    ax.set_ylim(0, 125)  # room above 100 % for the value labels and the legend
    ax.set_yticks(range(0, 101, 20))
    ax.set_title("tinyprompt demo on the built-in synthetic world: each method against its baseline", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return True


REAL_DATA = """\
The papers' tables on real data (the datasets in their official layouts under DATA; OpenAI's checkpoints are
downloaded once, sha256-verified); each is one resumable grid over datasets and seeds, with the published numbers:
  tinyprompt reproduce coop   --root DATA --model ViT-B/16    few-shot, base-to-new, cross-dataset, domain generalisation
  tinyprompt reproduce ship   --root DATA --model ViT-B/16    base-to-new
  tinyprompt reproduce pomp   --root DATA --model ViT-B/16 --prompt runs/pomp/prompt.pt    transfer of the prompt
  tinyprompt reproduce taidpt --root DATA --model RN50        multi-label mAP, learned from captions
  tinyprompt reproduce ilmvp  --root DATA --model ViT-B/32    visual prompting per target task
  tinyprompt train pomp --model ViT-B/16 --data DATA/imagenet21k/train --classes DATA/imagenet21k/names.tsv --out runs/pomp
Offline dry run of the same path: tinyprompt reproduce coop --root runs/synthetic-data --synthetic-data --model synthetic --quick
(one run at a time: tinyprompt zeroshot / train METHOD / eval, each with --help; see the README)"""


def add_args(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="smaller settings: about a third of the full run's time")
    parser.add_argument("--methods", default=None,
                        help=f"comma-separated subset of {', '.join(EXPERIMENTS)} (any case)")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder for results.json (and results.png)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the world, the initialisations and the shuffles")


def chosen_methods(text: str) -> list:
    """`--methods coop,Zero-Shot` -> ["CoOp", "zero-shot"]: names as EXPERIMENTS spells them, in any case."""
    by_lower = {name.lower(): name for name in EXPERIMENTS}
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m.lower() not in by_lower]
    if unknown:
        raise ValueError(f"--methods {','.join(unknown)}: unknown; choose from {', '.join(EXPERIMENTS)} (any case)")
    return [by_lower[m.lower()] for m in names]


def run(args) -> int:
    methods = chosen_methods(args.methods) if args.methods else None
    settings = PRESETS["quick" if args.quick else "full"]
    settings = DemoSettings(**{**asdict(settings), "seed": args.seed})
    print("tinyprompt demo: the built-in synthetic world (procedural shapes and captions) and its tiny CLIP, "
          "pre-trained by `python -m tinyprompt.commands.pretrain_synthetic`; numbers here say what each method does, "
          "not how it scores on real benchmarks.")
    print(f"{torch.get_num_threads()} CPU thread(s): `tinyprompt --threads N demo` changes it (`tinyprompt --help`: "
          "how the default is chosen)")
    print(f"{'method':<10} {'task':<48} {'metric':<19} before -> after    time")
    started = time.perf_counter()
    result = run_demo(settings, methods)
    result["seconds"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out / "results.json", "w") as f:
        json.dump(result, f, indent=1)
    chart = _chart(result["rows"], args.out / "results.png")
    print(f"total {result['seconds']:.0f} s; wrote {args.out / 'results.json'}"
          + (f" and {args.out / 'results.png'}" if chart else ' (pip install -e ".[plot]" adds a chart)'))
    print(REAL_DATA)
    return 0

