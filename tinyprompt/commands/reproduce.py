"""`tinyprompt reproduce METHOD --root DATA`: a paper's table on your data, as one resumable command.

Runs the grid of a protocol (`tinyprompt.protocols`: few-shot, base-to-new, cross-dataset, domain generalisation,
multi-label, visual prompting) over the datasets of the registry (`tinyprompt.data.datasets`, the official layouts
under --root) and the seeds, then writes the tables, laid out like the paper's, with the published numbers beside
ours (where `tinyprompt/data/published.json` holds them):

    tinyprompt reproduce coop --root $DATA --model ViT-B/16                         # CoOp's and CoCoOp's tables
    tinyprompt reproduce ship --root $DATA --model ViT-B/16                         # SHIP's base-to-new table
    tinyprompt reproduce pomp --root $DATA --model ViT-B/16 --prompt pomp/prompt.pt # POMP's transfer tables
    tinyprompt reproduce taidpt --root $DATA --model RN50                           # TaI-DPT's mAP table
    tinyprompt reproduce ilmvp --root $DATA --sources clip:ViT-B/32 torchvision:resnet18   # ILM-VP's tables

Each training run is the method's recipe (`tinyprompt train METHOD`, its official defaults) in its own folder
under --out/runs/, kept; each evaluated number is a JSON file under --out/evaluations/. Run the same command
again after an interruption: finished runs and evaluations are skipped, an interrupted run resumes from its
last checkpoint. Tables: --out/results/<method>-<protocol>.{md,csv,json} (+ the few-shot curves as .png with
matplotlib). Progress shows the run, its place in the grid and the ETA.
"""
import argparse
import hashlib
import json
import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from tinyprompt.commands.args import add_model_config_arg, int_at_least, resolve_device
from tinyprompt.commands.recipes import coop, ilmvp, ship, taidpt
from tinyprompt.data.datasets import DATASETS, get_dataset
from tinyprompt.data.datasets import load as load_dataset
from tinyprompt.data.features import cached_features
from tinyprompt.data.splits import Item
from tinyprompt.data.synthetic_tasks import BENCHMARK_LAYOUTS, write_benchmark_root
from tinyprompt.hub import load
from tinyprompt.io import atomic_write
from tinyprompt.methods import load_prompt, read_prompt
from tinyprompt.metrics import accuracy, mean_average_precision
from tinyprompt.protocols import PROTOCOLS, SEEDS, plan, plot_few_shot, subsample_classes, tables, tables_csv
from tinyprompt.templates import CUSTOM_TEMPLATES, get_templates
from tinyprompt.zeroshot import zeroshot_classifier


@dataclass(frozen=True)
class Method:
    """How a method's grid runs: `recipe` trains each run (None: the prompt is given with --prompt, and only
    base-to-new trains: CoOp initialised from it); `protocols` are its paper's tables; `result(metrics)` reads a
    run's number from its metrics.json where the recipe measures it (None: reproduce evaluates the run's prompt)."""

    recipe: object
    protocols: tuple
    result: object = None


METHODS = {
    "coop": Method(coop, ("few_shot", "base_to_new", "cross_dataset", "domain_generalization")),
    "ship": Method(ship, ("base_to_new",)),
    "pomp": Method(None, ("cross_dataset", "domain_generalization", "base_to_new")),
    "taidpt": Method(taidpt, ("multilabel",), lambda metrics: metrics["test"]["final"]["map_merged"]),
    "ilmvp": Method(ilmvp, ("visual_prompting",), lambda metrics: metrics["test"]["top1"]),
}
CLASS_LISTS = {"voc2007": "voc2007", "coco2014": "coco", "nuswide": "nuswide"}  # TaI-DPT's class list per test set
# ILM-VP's image side for a CNN source (data/prepare_data.py, prepare_expansive_data): the 32-pixel sets at 32, the
# others resized to 128 (the recipe's --image-size default); a CLIP source takes CLIP's own preprocessing
VP_IMAGE_SIZE = {"cifar10": 32, "cifar100": 32, "svhn": 32, "gtsrb": 32}
# TaI-DPT's caption corpus per test set under --root (the official datasets/*_distill.py and its README's DATAROOT):
# MS-COCO's 2017 train captions for VOC2007 and COCO2014, OpenImages' localized narratives for NUS-WIDE
COCO_CAPTIONS = "COCO/annotations/captions_train2017.json"
CAPTIONS = {"voc2007": COCO_CAPTIONS, "coco2014": COCO_CAPTIONS,
            "nuswide": "OpenImages/captions/open_images_train_v6_captions.jsonl"}
# --quick: a grid small enough for CI on 2 CPU cores (a smoke test of the whole path, not the papers' numbers)
QUICK = {"shots": (1, 2), "seeds": (1, 2),
         "train_args": {"coop": "--epochs 2 --views 2", "pomp": "--epochs 2 --views 2", "taidpt": "--epochs 2",
                        "ship": "--vae-epochs 2 --finetune-every 1 --epochs 2 --views 2", "ilmvp": "--epochs 2"}}  # fmt: skip


def add_args(parser) -> None:
    parser.add_argument("method", choices=list(METHODS), help="whose tables: coop (CoOp, CoCoOp), ship (SHIP), pomp "
                        "(POMP: evaluates the pre-trained --prompt; base-to-new fine-tunes CoOp from it), taidpt "
                        "(TaI-DPT), ilmvp (ILM-VP)")  # fmt: skip
    parser.add_argument("--root", required=True, help="data root holding the datasets in their official layouts "
                        "(CoOp's DATASETS.md, TaI-DPT's README; see tinyprompt.data.datasets)")  # fmt: skip
    parser.add_argument("--model", default="ViT-B/16", help="CLIP model name or checkpoint path (the papers' tables: "
                        "ViT-B/16; CoOp's few-shot figure and TaI-DPT: RN50; ILM-VP's CLIP: ViT-B/32)")  # fmt: skip
    add_model_config_arg(parser)
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
    parser.add_argument("--captions", type=Path, default=None,
                        help=f"taidpt: the caption corpus the prompts of every test set learn from; default: "
                             f"TaI-DPT's, --root/{CAPTIONS['voc2007']} (VOC2007, COCO2014) and --root/"
                             f"{CAPTIONS['nuswide']} (NUS-WIDE)")  # fmt: skip
    parser.add_argument("--sources", nargs="+", default=None, help="ilmvp: source classifiers, as `tinyprompt train "
                        "ilmvp --source` takes them (clip:NAME, torchvision:NAME, a TorchScript file); default: "
                        "clip:--model")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="grid folder (runs, evaluations, results); "
                        "default: reproduce-METHOD")  # fmt: skip
    parser.add_argument("--train-args", default="", help="extra flags for every training run, as one string, e.g. "
                        "'--epochs 50 --precision fp32' (see tinyprompt train METHOD --help)")  # fmt: skip
    parser.add_argument("--synthetic-data", action="store_true", help="first write the built-in synthetic world into "
                        "--root in the official layout of each dataset missing there: with --model synthetic, an "
                        "offline dry run of the whole path (tinyprompt.data.synthetic_tasks.write_benchmark_root)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help=f"a tiny grid to check the whole path: shots "
                        f"{QUICK['shots']}, seeds {QUICK['seeds']}, 2 epochs (not the papers' settings)")  # fmt: skip
    parser.add_argument("--batch-size", type=int_at_least(1), default=64, help="images per encoder pass (evaluation)")
    parser.add_argument("--workers", type=int_at_least(0), default=0, help="DataLoader worker processes decoding images")
    parser.add_argument("--device", default="auto", help="torch device; 'auto' = cuda when available, else cpu")


def _settings(args) -> dict:
    """What defines the grid's numbers; a --out made with other settings is refused (its results would mix)."""
    train_args = args.train_args or (QUICK["train_args"].get(args.method, "") if args.quick else "")
    captions = {name: str((args.captions or Path(args.root) / path).resolve()) for name, path in CAPTIONS.items()}
    prompt = None
    if args.prompt is not None:  # by content: a prompt retrained in place must not reuse the old one's numbers
        prompt = {"path": str(args.prompt.resolve()), "sha256": hashlib.sha256(args.prompt.read_bytes()).hexdigest()}
    return {"method": args.method, "model": str(args.model), "model_config": args.model_config,
            "root": str(Path(args.root).resolve()), "train_args": shlex.split(train_args), "prompt": prompt,
            "captions": captions if args.method == "taidpt" else None}  # fmt: skip


def _claim(out: Path, settings: dict) -> None:
    path = out / "grid.json"
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in settings if before.get(k) != settings[k])
        if changed:
            was = ", ".join(f"{k}={before.get(k)!r}" for k in changed)
            raise ValueError(f"{out} holds a grid made with other {', '.join(changed)} ({was}): its runs would mix "
                             f"with these; pass another --out")  # fmt: skip
        return
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        json.dump(settings, f, indent=1)


class _Data:
    """Registry datasets, loaded once, and their test images' features under the grid's CLIP (feature cache)."""

    def __init__(self, root, clip, preprocess, encode):
        self.root, self.clip, self.preprocess, self.encode = root, clip, preprocess, encode
        self.loaded, self.features = {}, {}

    def test(self, dataset: str, subset: str) -> tuple:
        """(features (N, E), labels (N,) or multi-label (N, C), classnames, VOC's ignore mask or None) of the test
        split of `dataset`'s classes `subset`."""
        if dataset not in self.loaded:
            self.loaded[dataset] = load_dataset(dataset, self.root)
        if get_dataset(dataset).multilabel:
            data = self.loaded[dataset][0]["test"]
            items = [Item(path, 0, "") for path in data.paths]  # cached_features keys on the image files
            labels, classnames, ignore = data.labels, data.classnames, data.ignore
        else:
            splits, classnames = subsample_classes(*self.loaded[dataset], subset)
            items, ignore = splits["test"], None
            labels = torch.tensor([item.label for item in items])
        if not items:
            raise ValueError(f"{dataset} under {self.root} has no test images: every protocol reports test numbers")
        key = (dataset, subset)
        if key not in self.features:
            self.features[key] = cached_features(self.clip.encode_image, items, self.preprocess, **self.encode)[0]
        return self.features[key], labels, classnames, ignore


def _evaluate(evaluation, data: _Data, prompt) -> dict:
    """{"value", "metric", "images", "classes"} of a prompt on an evaluation's test images. Zero-shot (prompt None):
    CLIP with the dataset's hand template (CoOp's; "a photo of a {}." where CoOp has none, as TaI-DPT's ZSCLIP)."""
    features, labels, classnames, ignore = data.test(evaluation.dataset, evaluation.subset)
    features = features.to(data.clip.logit_scale.device)
    with torch.no_grad():
        if prompt is None:
            name = get_dataset(evaluation.dataset).official_name
            templates = get_templates(name if name in CUSTOM_TEMPLATES else "single")
            classifier = zeroshot_classifier(data.clip, classnames, templates)  # (C, E)
            logits = F.normalize(features, dim=-1) @ classifier.t()  # (N, C)
        else:
            logits = load_prompt(data.clip, prompt, classnames).forward_features(features)  # (N, C)
    if labels.dim() == 2:  # multi-label: mAP, the official convention (tinyprompt.metrics)
        value, metric = mean_average_precision(logits.cpu(), labels, ignore)[0], "mAP"
    else:
        value, metric = accuracy(logits, labels.to(logits.device))[0], "top1"
    return {"value": value, "metric": metric, "images": len(labels), "classes": len(classnames)}


def _train(args, run, folder: Path, settings: dict) -> None:
    """Train `run` with the method's recipe into `folder` (resumed when it holds a checkpoint)."""
    recipe = METHODS[args.method].recipe or coop  # a given prompt (POMP's) is fine-tuned by CoOp
    argv = ["--seed", str(run.seed), "--out", str(folder), "--resume", "--workers", str(args.workers),
            "--device", args.device]  # fmt: skip
    if args.prompt is not None:
        argv += ["--init-prompt", str(args.prompt)]
    if args.model_config is not None:  # the checkpoint path's open_clip config (ILM-VP: of a clip:PATH source)
        argv += ["--model-config", str(args.model_config)]
    if recipe is taidpt:  # learned from captions, with the test set's class names; its recipe measures the mAP
        argv += ["--model", str(args.model), "--captions", settings["captions"][run.dataset], "--classes",
                 CLASS_LISTS[run.dataset], "--eval-dataset", run.dataset, "--root", str(args.root)]  # fmt: skip
    elif recipe is ilmvp:
        argv += ["--source", run.source, "--dataset", run.dataset, "--root", str(args.root), "--shots", str(run.shots)]
        if not run.source.startswith("clip:") and run.dataset in VP_IMAGE_SIZE:
            argv += ["--image-size", str(VP_IMAGE_SIZE[run.dataset])]
    else:
        argv += ["--model", str(args.model), "--dataset", run.dataset, "--root", str(args.root), "--shots", str(run.shots)]
        if run.subset != "all" and recipe is coop:  # the SHIP recipe splits base and new itself
            argv += ["--subsample", run.subset]
    parser = argparse.ArgumentParser(prog=f"tinyprompt train {args.method}")
    recipe.add_args(parser)
    recipe.run(parser.parse_args(argv + settings["train_args"]))


def _done(folder: Path) -> bool:
    """A run is finished once its recipe wrote prompt.pt (its last file but metrics.json's test numbers)."""
    metrics = folder / "metrics.json"
    return (folder / "prompt.pt").is_file() and metrics.is_file() and "test" in json.loads(metrics.read_text())


def run(args) -> int:
    method = METHODS[args.method]
    protocols = args.protocol or list(method.protocols)
    foreign = [p for p in protocols if p not in method.protocols]
    if foreign:
        raise ValueError(f"{args.method}'s paper reports {', '.join(method.protocols)}, not {', '.join(foreign)}")
    if method.recipe is None and args.prompt is None:
        raise ValueError(f"reproduce {args.method} evaluates a pre-trained prompt: pass --prompt FILE (train one with "
                         f"`tinyprompt train {args.method}`, or import the official release with `tinyprompt import-prompt`)")  # fmt: skip
    for flag, owner in (("prompt", "pomp"), ("captions", "taidpt"), ("sources", "ilmvp")):
        if getattr(args, flag) is not None and args.method != owner:
            raise ValueError(f"--{flag} is for reproduce {owner}, not {args.method}: drop it")
    given = read_prompt(args.prompt) if args.prompt is not None else None
    seeds = args.seeds or (QUICK["seeds"] if args.quick else SEEDS)
    shots = args.shots or (QUICK["shots"] if args.quick else None)
    sources = args.sources or [f"clip:{args.model}"]
    trains = {p: method.recipe is not None or p == "base_to_new" for p in protocols}  # else: one given prompt
    grid = {p: plan(p, args.datasets, shots if p == "few_shot" else None, seeds if trains[p] else (0,),
                    sources=sources) for p in protocols}  # fmt: skip
    settings = _settings(args)
    if args.synthetic_data:
        missing = [name for name in BENCHMARK_LAYOUTS if not (Path(args.root) / DATASETS[name].folder).exists()]
        if missing:
            write_benchmark_root(args.root, missing)
            print(f"[reproduce] wrote the synthetic world's {', '.join(missing)} into {args.root}")
    needed = sorted({e.dataset for evals in grid.values() for e in evals} |
                    {e.run.dataset for p, evals in grid.items() for e in evals if e.run and trains[p]})  # fmt: skip
    for name in needed:  # a wrong root fails now, naming the missing path, not after hours of training
        try:
            get_dataset(name).home(args.root)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e}; or choose the datasets you have with --datasets (cross-dataset and domain "
                                    f"generalisation also need imagenet, their source) and --protocol") from None
    for name in needed if settings["captions"] is not None else ():
        if name in CAPTIONS and not Path(settings["captions"][name]).is_file():
            raise FileNotFoundError(f"the caption corpus {settings['captions'][name]} does not exist: pass --captions "
                                    f"FILE (COCO captions .json, .jsonl or one caption per line)")  # fmt: skip
    out = args.out or Path(f"reproduce-{args.method}")
    _claim(out, settings)

    runs = list(dict.fromkeys(e.run for p, evals in grid.items() for e in evals if e.run is not None and trains[p]))
    folder = {r: out / "runs" / args.method / r.folder for r in runs}
    todo = [r for r in runs if not _done(folder[r])]
    print(f"[reproduce] {args.method} on {settings['root']}: {', '.join(protocols)}; {len(runs)} training runs "
          f"({len(runs) - len(todo)} done), seeds {list(seeds)}; model {args.model}; writing {out}")
    started = time.perf_counter()
    for i, r in enumerate(todo):
        eta = "" if i == 0 else f", ETA {_duration((time.perf_counter() - started) / i * (len(todo) - i))}"
        print(f"[reproduce] run {i + 1}/{len(todo)}: {args.method}{' ' + r.source if r.source else ''} on {r.dataset}"
              f"{' (base classes)' if r.subset == 'base' else ''}, {r.shots or 'all'} shots, seed {r.seed}{eta}")
        _train(args, r, folder[r], settings)

    device = resolve_device(args.device)
    clip, preprocess = load(args.model, device=device, config=args.model_config)
    data = _Data(args.root, clip, preprocess, dict(batch_size=args.batch_size, device=device, num_workers=args.workers))
    written = []
    for protocol, evals in grid.items():
        results = []
        for e in evals:
            path = out / "evaluations" / ("zeroshot" if e.run is None else args.method) / f"{e.name}.json"
            if path.is_file():
                results.append(json.loads(path.read_text(encoding="utf-8")))
                continue
            if e.run is not None and method.result is not None:  # the recipe measured it on the run's test split
                metrics = json.loads((folder[e.run] / "metrics.json").read_text(encoding="utf-8"))
                value = {"value": method.result(metrics), "metric": "mAP" if protocol == "multilabel" else "top1"}
            else:
                prompt = None if e.run is None else folder[e.run] / "prompt.pt" if trains[protocol] else given
                value = _evaluate(e, data, prompt)
            result = {"run": asdict(e.run) if e.run else None, "dataset": e.dataset, "subset": e.subset, **value}
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
