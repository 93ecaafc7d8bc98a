"""The evaluation protocols of the prompt-learning papers: which prompts to train, where each is evaluated, and
how the seeds of a grid become the papers' tables (mean ± std), with the published numbers beside ours.

    few_shot               CoOp (arXiv 2109.01134, Fig. 3): 1/2/4/8/16 training images per class, seeds 1/2/3,
                           test accuracy on each of the 11 datasets; zero-shot CLIP (CoOp's hand template of the
                           dataset) is the row every learned prompt is compared with
    base_to_new            CoCoOp (arXiv 2203.05557, Table 1; SHIP, arXiv 2307.07397, Table 1): the first ceil(n/2)
                           sorted labels are base, the rest new; 16 shots of the base classes train the prompt;
                           base accuracy is measured among the base classes only, new accuracy among the new
                           classes only, and H = 2·base·new / (base + new)
    cross_dataset          CoCoOp Table 2 (POMP, arXiv 2304.04704, Table 2): a prompt learned on ImageNet
                           (16 shots) is evaluated on the other 10 datasets, unchanged
    domain_generalization  CoOp Table 2 / CoCoOp Table 3: the ImageNet prompt on ImageNet-V2, -Sketch, -A and -R
    multilabel             TaI-DPT (arXiv 2211.12739, Table 1): prompts learned from captions only, with each
                           dataset's class names; mAP on VOC2007 test, COCO2014 val and NUS-WIDE test; the zero-shot
                           row is CLIP's global feature with "a photo of a {}." (ZSCLIP)
    visual_prompting       ILM-VP (arXiv 2211.11635, Tables 1-2): a visual prompt and label mapping per target task
                           and source classifier, top-1 accuracy on the task's test split; the zero-shot row is CLIP
                           with the dataset's hand template

A grid is a list of `Evaluation`s, each naming the `Run` (a training run; None for zero-shot CLIP) whose prompt
it evaluates; cross-dataset and domain generalisation share their ImageNet runs. Model selection never sees a
test set: the protocols report the final prompt of each run, as the papers do (CoOp's last epoch).

Averages follow the papers: per seed, the mean over datasets (base-to-new: H of the mean base and mean new
accuracies, as CoCoOp's "Average over 11 datasets"), then mean ± std over seeds; std is numpy's population std,
as CoOp's `parse_test_res.py` reports it. The published numbers are data (`tinyprompt/data/published.json`:
each table with its paper, table number, backbone and source).
"""
import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

from tinyprompt.io import atomic_write
from tinyprompt.methods.ship import relabel, split_base_new
from tinyprompt.metrics import harmonic_mean

__all__ = ["PROTOCOLS", "CLASSIFICATION", "TRANSFER_TARGETS", "VARIANTS", "SHOTS", "SEEDS", "Run", "Evaluation",
           "plan", "subsample_classes", "Stat", "Table", "tables", "tables_csv", "published", "plot_few_shot"]

# CoOp's 11 image-classification datasets, in the order of its tables (keys of tinyprompt.data.datasets.DATASETS)
CLASSIFICATION = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                  "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
TRANSFER_TARGETS = CLASSIFICATION[1:]  # cross-dataset: ImageNet is the source
VARIANTS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")  # domain generalisation targets
MULTILABEL = ("voc2007", "coco2014", "nuswide")  # TaI-DPT's test sets
# ILM-VP's target tasks, in its tables' order (its 13th, ABIDE, is brain-scan data, not an image set)
VISUAL_PROMPTING = ("oxford_flowers", "dtd", "ucf101", "food101", "gtsrb", "svhn", "eurosat", "oxford_pets",
                    "stanford_cars", "sun397", "cifar10", "cifar100")
SOURCE = "imagenet"
SHOTS = (1, 2, 4, 8, 16)
SEEDS = (1, 2, 3)
TRANSFER_SHOTS = 16  # base-to-new, cross-dataset and domain generalisation train on 16 shots
SUBSETS = ("all", "base", "new")
METHOD_NAMES = {"coop": "CoOp", "ship": "CoOp+SHIP", "pomp": "POMP", "taidpt": "TaI-DPT", "ilmvp": "ILM-VP"}

# protocol -> (one-line title, default datasets)
PROTOCOLS = {
    "few_shot": ("few-shot accuracy (%) by training images per class", CLASSIFICATION),
    "base_to_new": ("base-to-new generalisation: accuracy (%) on base and new classes, harmonic mean H",
                    CLASSIFICATION),
    "cross_dataset": ("cross-dataset transfer: trained on ImageNet (16 shots), accuracy (%) on each dataset",
                      TRANSFER_TARGETS),
    "domain_generalization": ("domain generalisation: trained on ImageNet (16 shots), accuracy (%) on its variants",
                              VARIANTS),
    "multilabel": ("multi-label recognition learned from captions only: mAP (%) on each dataset's test images",
                   MULTILABEL),
    "visual_prompting": ("visual prompt + label mapping per target task: top-1 accuracy (%) on its test split",
                         VISUAL_PROMPTING),
}  # fmt: skip
TRANSFER = ("cross_dataset", "domain_generalization")  # ImageNet-trained prompts: the source is the first column


@dataclass(frozen=True)
class Run:
    """One training run of a grid: a prompt learned from `shots` images per class of `dataset` (0: all; subset
    'base': of its base classes only), seeded by `seed`; `source`: ILM-VP's source classifier ('' otherwise)."""

    dataset: str
    shots: int
    seed: int
    subset: str = "all"
    source: str = ""

    @property
    def folder(self) -> str:
        """The run's folder under the grid's output folder, e.g. 'oxford_pets-base/16shots/seed1', 'dtd/all/seed1'."""
        name = self.dataset if self.subset == "all" else f"{self.dataset}-{self.subset}"
        source = "".join(c if c.isalnum() or c in "-." else "_" for c in self.source)
        return f"{source + '/' if source else ''}{name}/{f'{self.shots}shots' if self.shots else 'all'}/seed{self.seed}"


@dataclass(frozen=True)
class Evaluation:
    """One number of a table: the prompt of `run` (None: zero-shot CLIP) on the test split of `dataset`, among its
    classes `subset` ('all', or the 'base' / 'new' half of the base-to-new split)."""

    run: Run | None
    dataset: str
    subset: str = "all"

    @property
    def name(self) -> str:
        """A file name unique within the grid, e.g. 'imagenet-16shots-seed1-on-imagenet_a' or 'zeroshot-on-dtd-new'."""
        source = "zeroshot" if self.run is None else self.run.folder.replace("/", "-")
        return f"{source}-on-{self.dataset}" + ("" if self.subset == "all" else f"-{self.subset}")


def plan(protocol: str, datasets=None, shots=None, seeds=SEEDS, sources=()) -> list:
    """The evaluations of `protocol` over `datasets` (default: the protocol's), `shots`, `seeds` (and for
    visual_prompting the source classifiers `sources`), zero-shot CLIP included, in the order a grid runs them."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    datasets = tuple(datasets or PROTOCOLS[protocol][1])
    if not seeds:
        raise ValueError("no seeds given: the protocols average over seeds, pass at least one (the papers use 1 2 3)")
    if protocol == "few_shot":
        shots = tuple(shots or SHOTS)
        return [*(Evaluation(None, d) for d in datasets),
                *(Evaluation(Run(d, k, seed), d) for d in datasets for k in shots for seed in seeds)]
    if protocol in ("multilabel", "visual_prompting"):  # TaI-DPT trains on captions, ILM-VP on the whole train split
        if shots:
            raise ValueError(f"{protocol} trains on all the training data in its paper: drop --shots")
        if protocol == "visual_prompting" and not sources:
            raise ValueError("visual_prompting needs at least one source classifier, e.g. clip:ViT-B/32")
        return [*(Evaluation(None, d) for d in datasets),
                *(Evaluation(Run(d, 0, seed, source=source), d)
                  for source in (sources if protocol == "visual_prompting" else ("",)) for d in datasets
                  for seed in seeds)]  # fmt: skip
    if shots and tuple(shots) != (TRANSFER_SHOTS,):
        raise ValueError(f"{protocol} trains on {TRANSFER_SHOTS} shots in every paper; --shots {shots} applies to "
                         f"few_shot only: drop it, or pass {TRANSFER_SHOTS}")  # fmt: skip
    if protocol == "base_to_new":
        return [*(Evaluation(None, d, part) for d in datasets for part in ("base", "new")),
                *(Evaluation(Run(d, TRANSFER_SHOTS, seed, "base"), d, part)
                  for d in datasets for seed in seeds for part in ("base", "new"))]  # fmt: skip
    targets = (SOURCE, *(d for d in datasets if d != SOURCE))  # the source's own accuracy is the first column
    return [*(Evaluation(None, d) for d in targets),
            *(Evaluation(Run(SOURCE, TRANSFER_SHOTS, seed), d) for seed in seeds for d in targets)]


def subsample_classes(splits: dict, classnames: list, subset: str) -> tuple:
    """(splits, classnames) of the `subset` classes: 'all' (unchanged), or CoCoOp's 'base' / 'new' half
    (`tinyprompt.methods.ship.split_base_new`: of the train labels, sorted, the first ceil(n/2) are base),
    relabelled from 0 in label order, as CoCoOp's DATASET.SUBSAMPLE_CLASSES."""
    if subset not in SUBSETS:
        raise ValueError(f"unknown class subset {subset!r}: use one of {', '.join(SUBSETS)}")
    if subset == "all":
        return splits, classnames
    base, new = split_base_new(item.label for item in splits["train"])
    labels = base if subset == "base" else new
    if not labels:
        raise ValueError(f"the 'new' half of {len(base)} class(es) is empty: base-to-new needs at least 2 classes")
    return {name: relabel(items, labels) for name, items in splits.items()}, [classnames[i] for i in labels]


# ---- tables ----
@dataclass(frozen=True)
class Stat:
    """A table entry: the mean over seeds, its population std and the number of seeds (published: std None)."""

    mean: float
    std: float | None = None
    n: int = 1

    @classmethod
    def of(cls, values):
        values = list(values)
        if not values:
            return None
        mean = sum(values) / len(values)
        return cls(mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)), len(values))

    def __str__(self) -> str:
        return f"{self.mean:.2f}" if self.std is None or self.n < 2 else f"{self.mean:.2f} ± {self.std:.2f}"


@dataclass
class Table:
    """Rows of (group, label, {column: Stat}); group is the dataset in per-dataset layouts ('' otherwise)."""

    title: str
    group_header: str
    columns: list
    rows: list

    def markdown(self) -> str:
        head = ([self.group_header] if self.group_header else []) + ["method", *self.columns]
        lines = [f"### {self.title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for group, label, values in self.rows:
            cells = [*([group] if self.group_header else []), label, *(str(values.get(c) or "—") for c in self.columns)]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def records(self) -> list:
        """One dict per (row, column) that holds a value: for CSV and JSON."""
        return [{"table": self.title, self.group_header or "group": group, "method": label, "column": column,
                 "mean": round(stat.mean, 4), "std": None if stat.std is None else round(stat.std, 4), "seeds": stat.n}
                for group, label, values in self.rows
                for column, stat in values.items() if stat is not None]  # fmt: skip


def _by_seed(results, **match) -> dict:
    """{seed (0 for zero-shot): value} of the results whose evaluation fields equal `match`."""
    out = {}
    for r in results:
        run = r["run"]
        fields = {"dataset": r["dataset"], "subset": r["subset"], "shots": run["shots"] if run else 0,
                  "trained": run is not None, "source": run.get("source", "") if run else ""}  # fmt: skip
        if all(fields[k] == v for k, v in match.items()):
            out[run["seed"] if run else 0] = r["value"]
    return out


def _average(per_dataset: list) -> Stat | None:
    """Stat over seeds of the per-seed mean over datasets; only seeds present in every dataset count."""
    if not per_dataset or any(not d for d in per_dataset):
        return None
    seeds = set.intersection(*(set(d) for d in per_dataset))
    return Stat.of(sum(d[s] for d in per_dataset) / len(per_dataset) for s in sorted(seeds))


def _published_rows(method: str, protocol: str) -> list:
    """[(row label, {dataset: {column: value}})] of the published tables of `method`'s paper for `protocol`."""
    rows = []
    for table in published(method, protocol):
        for name, values in table["rows"].items():
            rows.append((f"{name} (paper: {table['table']}, {table['model']})", values))
    return rows


def _stat(value) -> Stat | None:
    return None if value is None else Stat(float(value))


def tables(protocol: str, results: list, method: str, shots=None, datasets=None) -> list:
    """The protocol's tables from evaluation results ({"run": asdict(Run) | None, "dataset", "subset", "value"}),
    laid out like the paper's: ours (mean ± std over seeds), zero-shot CLIP, and the paper's published rows."""
    title = f"{METHOD_NAMES.get(method, method)}: {PROTOCOLS[protocol][0]}"
    ours, clip = f"{METHOD_NAMES.get(method, method)} (ours)", "zero-shot CLIP (ours)"
    paper = _published_rows(method, protocol)
    datasets = list(datasets or PROTOCOLS[protocol][1])
    if protocol == "few_shot":
        shots = [str(k) for k in (shots or SHOTS)]
        columns, rows = ["zero-shot", *shots], []
        per_shot = {k: [] for k in shots}
        zs_all = []
        for d in datasets:
            zs = _by_seed(results, dataset=d, trained=False)
            zs_all.append(zs)
            rows.append((d, clip, {"zero-shot": Stat.of(zs.values())}))
            seeds = {k: _by_seed(results, dataset=d, trained=True, shots=int(k)) for k in shots}
            for k in shots:
                per_shot[k].append(seeds[k])
            rows.append((d, ours, {k: Stat.of(seeds[k].values()) for k in shots}))
            rows += [(d, label, {k: _stat(values.get(d, {}).get(k)) for k in columns}) for label, values in paper]
        rows.append(("average", clip, {"zero-shot": _average(zs_all)}))
        rows.append(("average", ours, {k: _average(per_shot[k]) for k in shots}))
        rows += [("average", label, {k: _stat(values.get("average", {}).get(k)) for k in columns})
                 for label, values in paper]  # fmt: skip
        return [Table(title, "dataset", columns, rows)]
    if protocol == "base_to_new":
        columns, rows = ["base", "new", "H"], []
        sums = {(trained, part): [] for trained in (False, True) for part in ("base", "new")}
        for d in datasets:
            for trained, label in ((False, clip), (True, ours)):
                parts = {part: _by_seed(results, dataset=d, subset=part, trained=trained) for part in ("base", "new")}
                for part in parts:
                    sums[trained, part].append(parts[part])
                seeds = sorted(set(parts["base"]) & set(parts["new"]))
                rows.append((d, label, {"base": Stat.of(parts["base"].values()), "new": Stat.of(parts["new"].values()),
                                        "H": Stat.of(harmonic_mean(parts["base"][s], parts["new"][s]) for s in seeds)}))
            rows += [(d, label, {c: _stat(values.get(d, {}).get(c)) for c in columns}) for label, values in paper]
        for trained, label in ((False, clip), (True, ours)):
            base, new = _average(sums[trained, "base"]), _average(sums[trained, "new"])
            h = None if base is None or new is None else Stat(harmonic_mean(base.mean, new.mean), None, base.n)
            rows.append(("average", label, {"base": base, "new": new, "H": h}))
        rows += [("average", label, {c: _stat(values.get("average", {}).get(c)) for c in columns})
                 for label, values in paper]  # fmt: skip
        return [Table(title, "dataset", columns, rows)]
    # one row per method, one column per dataset; transfer tables lead with the source, left out of the average
    targets = [d for d in datasets if d != SOURCE] if protocol in TRANSFER else datasets
    columns = [*([SOURCE] if protocol in TRANSFER else []), *targets, "average"]
    sources = sorted({r["run"].get("source", "") for r in results if r["run"]})
    rows = []
    methods = [(False, clip, ""), *((True, f"{ours[:-7]} {s} (ours)" if s else ours, s) for s in sources)]
    for trained, label, source in methods:
        seeds = {d: _by_seed(results, dataset=d, trained=trained, source=source) for d in columns[:-1]}
        values = {d: Stat.of(seeds[d].values()) for d in columns[:-1]}
        rows.append(("", label, {**values, "average": _average([seeds[d] for d in targets])}))
    for label, values in paper:
        rows.append(("", label, {d: _stat(next(iter(values.get(d, {}).values()), None)) for d in columns}))  # 1 column
    return [Table(title, "", columns, rows)]


_PUBLISHED = Path(__file__).parent / "data" / "published.json"


def published(method: str, protocol: str) -> list:
    """The published tables (tinyprompt/data/published.json) of `method`'s paper for `protocol`."""
    if not _PUBLISHED.is_file():
        return []
    data = json.loads(_PUBLISHED.read_text(encoding="utf-8"))
    return [table for key, table in data.items() if key.startswith(f"{method}_") and table["protocol"] == protocol]


def tables_csv(tables_: list) -> str:
    text = io.StringIO()
    records = [r for t in tables_ for r in t.records()]
    if records:
        fields = list(dict.fromkeys(k for r in records for k in r))
        writer = csv.DictWriter(text, fieldnames=fields)
        writer.writeheader()
        writer.writerows(records)
    return text.getvalue()


def plot_few_shot(table: Table, path) -> bool:
    """CoOp's Fig. 3 from a few-shot table: accuracy vs shots per dataset (ours ± std, zero-shot CLIP as a star,
    the paper's curves dashed), written as a PNG. False (nothing written) when matplotlib is not installed."""
    try:
        import matplotlib  # optional: only the figure needs it

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    groups = list(dict.fromkeys(group for group, _, _ in table.rows))
    shots = [c for c in table.columns if c != "zero-shot"]
    cols = min(4, len(groups))
    rows_ = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(3.2 * cols, 2.6 * rows_), squeeze=False)
    for ax, group in zip(axes.flat, groups):
        for _, label, values in (row for row in table.rows if row[0] == group):
            points = [(int(k), values[k]) for k in shots if values.get(k) is not None]
            if points:
                xs, stats = zip(*points)
                style = "--" if "paper" in label else "-"
                ax.errorbar(xs, [s.mean for s in stats], yerr=[s.std or 0 for s in stats], fmt=style + "o",
                            markersize=3, capsize=2, label=label)  # fmt: skip
            if values.get("zero-shot") is not None:
                ax.plot([0], [values["zero-shot"].mean], "*", markersize=9, label=label)
        ax.set_title(group, fontsize=9)
        ax.set_xscale("symlog", base=2, linthresh=1)
        ax.set_xticks([0, *(int(k) for k in shots)], ["0", *shots])
        ax.set_xlabel("shots per class", fontsize=8)
        ax.set_ylabel("accuracy (%)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(table.title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    with atomic_write(path) as f:
        f.write(png.getvalue())
    return True
