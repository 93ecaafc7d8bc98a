"""`tinyprompt reproduce METHOD --root DATA`: a paper's table on your data, as one resumable command.

Runs the grid of a protocol (`tinyprompt.protocols`: few-shot, base-to-new, cross-dataset, domain generalisation)
over the datasets of the registry (`tinyprompt.data.datasets`, CoOp's layouts under --root) and the seeds, then
writes the tables, laid out like the paper's, with the published numbers beside ours:

    tinyprompt reproduce coop --root $DATA --model ViT-B/16                         # CoOp's and CoCoOp's tables
    tinyprompt reproduce ship --root $DATA --model ViT-B/16                         # SHIP's base-to-new table
    tinyprompt reproduce pomp --root $DATA --model ViT-B/16 --prompt pomp/prompt.pt # POMP's transfer tables

Each training run is the method's recipe (`tinyprompt train METHOD`, its official defaults) in its own folder
under --out/runs/, kept; each evaluated number is a JSON file under --out/evaluations/. Run the same command
again after an interruption: finished runs and evaluations are skipped, an interrupted run resumes from its
last checkpoint. Tables: --out/results/<method>-<protocol>.{md,csv,json} (+ the few-shot curves as .png with
matplotlib). Progress shows the run, its place in the grid and the ETA.
"""
import argparse
import json
import shlex
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from tinyprompt.commands.args import int_at_least, resolve_device
from tinyprompt.commands.recipes import coop, ship
from tinyprompt.data.datasets import get_dataset
from tinyprompt.data.datasets import load as load_dataset
from tinyprompt.data.features import cached_features
from tinyprompt.hub import load
from tinyprompt.io import atomic_write
from tinyprompt.methods import load_prompt, read_prompt
from tinyprompt.metrics import accuracy, accuracy_of_features
from tinyprompt.protocols import PROTOCOLS, SEEDS, plan, plot_few_shot, subsample_classes, tables, tables_csv
from tinyprompt.templates import get_templates
from tinyprompt.zeroshot import zeroshot_classifier

# method -> (the recipe that trains its runs (None: the prompt is given, --prompt), the protocols of its paper's tables)
METHODS = {
    "coop": (coop, ("few_shot", "base_to_new", "cross_dataset", "domain_generalization")),
    "ship": (ship, ("base_to_new",)),
    "pomp": (None, ("cross_dataset", "domain_generalization")),
}
# --quick: a grid small enough for CI on 2 CPU cores (a smoke test of the whole path, not the papers' numbers)
QUICK = {"shots": (1, 2), "seeds": (1, 2),
         "train_args": {"coop": "--epochs 2 --views 2", "ship": "--vae-epochs 2 --finetune-every 1 --epochs 2 --views 2"}}


def add_args(parser) -> None:
    parser.add_argument("method", choices=list(METHODS), help="whose tables: coop (CoOp, CoCoOp), ship (SHIP), "
                        "pomp (POMP: evaluates the pre-trained --prompt)")  # fmt: skip
    parser.add_argument("--root", required=True, help="data root holding the datasets in CoOp's layouts "
                        "(DATASETS.md; see tinyprompt.data.datasets)")  # fmt: skip
    parser.add_argument("--model", default="ViT-B/16", help="CLIP model name or checkpoint path (the papers' tables: "
                        "ViT-B/16; CoOp's few-shot figure: RN50)")  # fmt: skip
    parser.add_argument("--protocol", nargs="+", default=None, choices=list(PROTOCOLS),
                        help="protocols to run; default: every one of METHOD's paper")
    parser.add_argument("--datasets", nargs="+", default=None, help="datasets (registry names) instead of the "
                        "protocol's: the 11 of CoOp; cross-dataset: the 10 targets; domain generalisation: the 4 "
                        "ImageNet variants (ImageNet itself is always the source)")  # fmt: skip
    parser.add_argument("--shots", nargs="+", type=int_at_least(1), default=None,
                        help="few-shot: training images per class (default 1 2 4 8 16; the other protocols use 16)")
    parser.add_argument("--seeds", nargs="+", type=int_at_least(0), default=None, help="seeds (default 1 2 3)")
    parser.add_argument("--prompt", type=Path, default=None, help="pomp: the pre-trained prompt to evaluate "
                        "(prompt.pt of `tinyprompt train pomp`, or POMP's release after `tinyprompt import-prompt`)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="grid folder (runs, evaluations, results); "
                        "default: reproduce-METHOD")  # fmt: skip
    parser.add_argument("--train-args", default="", help="extra flags for every training run, as one string, e.g. "
                        "'--epochs 50 --precision fp32' (see tinyprompt train METHOD --help)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help=f"a tiny grid to check the whole path: shots "
                        f"{QUICK['shots']}, seeds {QUICK['seeds']}, 2 epochs (not the papers' settings)")  # fmt: skip
    parser.add_argument("--batch-size", type=int_at_least(1), default=64, help="images per encoder pass (evaluation)")
    parser.add_argument("--workers", type=int_at_least(0), default=0, help="DataLoader worker processes decoding images")
    parser.add_argument("--device", default="auto", help="torch device; 'auto' = cuda when available, else cpu")


def _settings(args) -> dict:
    """What defines the grid's numbers; a --out made with other settings is refused (its results would mix)."""
    train_args = args.train_args or (QUICK["train_args"].get(args.method, "") if args.quick else "")
    return {"method": args.method, "model": str(args.model), "root": str(Path(args.root).resolve()),
            "train_args": shlex.split(train_args), "prompt": str(args.prompt.resolve()) if args.prompt else None}


def _claim(out: Path, settings: dict) -> None:
    path = out / "grid.json"
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in settings if before.get(k) != settings[k])
        if changed:
            raise ValueError(f"{out} holds a grid made with other {', '.join(changed)} ({', '.join(f'{k}={before.get(k)!r}' for k in changed)}): "
                             f"its runs would mix with these; pass another --out")  # fmt: skip
        return
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        json.dump(settings, f, indent=1)


class _Data:
    """Registry datasets, loaded once, and their test features under the grid's CLIP (feature cache on disk)."""

    def __init__(self, root, clip, preprocess, encode):
        self.root, self.clip, self.preprocess, self.encode = root, clip, preprocess, encode
        self.loaded, self.features = {}, {}

    def test(self, dataset: str, subset: str) -> tuple:
        """(features (N, E), labels, classnames) of the test split of `dataset`'s classes `subset`."""
        if dataset not in self.loaded:
            self.loaded[dataset] = load_dataset(dataset, self.root)
        splits, classnames = subsample_classes(*self.loaded[dataset], subset)
        items = splits["test"]
        if not items:
            raise ValueError(f"{dataset} under {self.root} has no test images: every protocol reports test accuracy")
        key = (dataset, subset)
        if key not in self.features:
            self.features[key] = cached_features(self.clip.encode_image, items, self.preprocess, **self.encode)[0]
        return self.features[key], [item.label for item in items], classnames


def _evaluate(evaluation, data: _Data, prompt) -> dict:
    """{"top1", "images", "classes"} of a prompt (None: zero-shot CLIP with CoOp's template of the dataset)."""
    features, labels, classnames = data.test(evaluation.dataset, evaluation.subset)
    if prompt is None:
        templates = get_templates(get_dataset(evaluation.dataset).official_name)
        classifier = zeroshot_classifier(data.clip, classnames, templates)  # (C, E)
        with torch.no_grad():
            logits = F.normalize(features.to(classifier.device), dim=-1) @ classifier.t()  # (N, C)
        top1 = accuracy(logits, torch.tensor(labels, device=logits.device))[0]
    else:
        model = load_prompt(data.clip, prompt, classnames)
        top1 = accuracy_of_features(model, features, labels, topk=(1,))["top1"]
    return {"top1": top1, "images": len(labels), "classes": len(classnames)}


def _train(args, run, folder: Path, train_args: list) -> Path:
    """Train `run` with the method's recipe into `folder` (resumed when it holds a checkpoint); its prompt.pt."""
    recipe = METHODS[args.method][0]
    argv = ["--model", str(args.model), "--dataset", run.dataset, "--root", str(args.root), "--shots", str(run.shots),
            "--seed", str(run.seed), "--out", str(folder), "--resume", "--workers", str(args.workers),
            "--device", args.device]  # fmt: skip
    if run.subset != "all" and recipe is coop:  # the SHIP recipe splits base and new itself
        argv += ["--subsample", run.subset]
    parser = argparse.ArgumentParser(prog=f"tinyprompt train {args.method}")
    recipe.add_args(parser)
    recipe.run(parser.parse_args(argv + train_args))
    return folder / "prompt.pt"


def run(args) -> int:
    recipe, own = METHODS[args.method]
    protocols = args.protocol or list(own)
    foreign = [p for p in protocols if p not in own]
    if foreign:
        raise ValueError(f"{args.method}'s paper reports {', '.join(own)}, not {', '.join(foreign)}")
    if recipe is None and args.prompt is None:
        raise ValueError(f"reproduce {args.method} evaluates a pre-trained prompt: pass --prompt FILE (train one with "
                         f"`tinyprompt train {args.method}`, or import the official release with `tinyprompt import-prompt`)")  # fmt: skip
    if recipe is not None and args.prompt is not None:
        raise ValueError(f"--prompt is for pomp; reproduce {args.method} trains its prompts: drop --prompt")
    given = read_prompt(args.prompt) if args.prompt is not None else None
    seeds = args.seeds or (QUICK["seeds"] if args.quick else SEEDS)
    shots = args.shots or (QUICK["shots"] if args.quick else None)
    grid = {p: plan(p, args.datasets, shots if p == "few_shot" else None, seeds if recipe else (0,)) for p in protocols}  # pomp: one prompt
    needed = sorted({e.dataset for evals in grid.values() for e in evals} |
                    {e.run.dataset for evals in grid.values() for e in evals if e.run and recipe})  # fmt: skip
    for name in needed:  # a wrong root fails now, naming the missing path, not after hours of training
        try:
            get_dataset(name).home(args.root)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e}; or choose the datasets you have with --datasets (cross-dataset and domain "
                                    f"generalisation also need imagenet, their source) and --protocol") from None
    out = args.out or Path(f"reproduce-{args.method}")
    settings = _settings(args)
    _claim(out, settings)

    runs = list(dict.fromkeys(e.run for evals in grid.values() for e in evals if e.run is not None and recipe))
    todo = [r for r in runs if not (out / "runs" / args.method / r.folder / "prompt.pt").is_file()]
    print(f"[reproduce] {args.method} on {settings['root']}: {', '.join(protocols)}; {len(runs)} training runs "
          f"({len(runs) - len(todo)} done), seeds {list(seeds)}; model {args.model}; writing {out}")
    started = time.perf_counter()
    for i, r in enumerate(todo):
        eta = "" if i == 0 else f", ETA {_duration((time.perf_counter() - started) / i * (len(todo) - i))}"
        print(f"[reproduce] run {i + 1}/{len(todo)}: {args.method} on {r.dataset}"
              f"{' (base classes)' if r.subset == 'base' else ''}, {r.shots} shots, seed {r.seed}{eta}")
        _train(args, r, out / "runs" / args.method / r.folder, settings["train_args"])

    device = resolve_device(args.device)
    clip, preprocess = load(args.model, device=device)
    data = _Data(args.root, clip, preprocess, dict(batch_size=args.batch_size, device=device, num_workers=args.workers))
    written = []
    for protocol, evals in grid.items():
        results = []
        for e in evals:
            path = out / "evaluations" / ("zeroshot" if e.run is None else args.method) / f"{e.name}.json"
            if path.is_file():
                result = json.loads(path.read_text(encoding="utf-8"))
            else:
                prompt = None if e.run is None else (given if recipe is None else
                                                     out / "runs" / args.method / e.run.folder / "prompt.pt")  # fmt: skip
                result = {"run": asdict(e.run) if e.run else None, "dataset": e.dataset, "subset": e.subset,
                          **_evaluate(e, data, prompt)}  # fmt: skip
                with atomic_write(path, "w") as f:
                    json.dump(result, f, indent=1)
            results.append(result)
        written += _write_tables(out / "results", args.method, protocol, results, shots, args.datasets)
    print(f"[reproduce] done in {_duration(time.perf_counter() - started)}: " + ", ".join(str(p) for p in written))
    return 0


def _write_tables(folder: Path, method: str, protocol: str, results: list, shots, datasets) -> list:
    """Write the protocol's tables as markdown, CSV and JSON (+ the few-shot PNG); print the markdown."""
    made = tables(protocol, results, method, shots=shots, datasets=datasets)
    stem = folder / f"{method}-{protocol}"
    text = "\n".join(t.markdown() for t in made)
    print(text)
    files = {stem.with_suffix(".md"): text, stem.with_suffix(".csv"): tables_csv(made),
             stem.with_suffix(".json"): json.dumps({"tables": [r for t in made for r in t.records()],
                                                    "evaluations": results}, indent=1)}  # fmt: skip
    for path, content in files.items():
        with atomic_write(path, "w") as f:
            f.write(content)
    written = list(files)
    if protocol == "few_shot" and plot_few_shot(made[0], stem.with_suffix(".png")):
        written.append(stem.with_suffix(".png"))
    return written


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
