"""`tinyprompt eval`: the accuracy of a saved prompt on a labelled image set, with any class list (TaI-DPT: mAP).

Every method's prompt: CoOp's and POMP's (and the CoOp prompt.pt of a SHIP run) for any class list; TaI-DPT's
with mAP on a multi-label set; ILM-VP's on its own target classes, through the source classifier recorded in
its run folder (source.json, written by `tinyprompt train ilmvp`; --model names that source).

A learned prompt is a few tensors (`prompt.pt`, written by `tinyprompt train`); its context transfers to
classes it never saw (CoOp, arXiv 2109.01134, section 4.2: ImageNet -> ImageNet-V2/-Sketch/-A/-R; POMP,
arXiv 2304.04704: a prompt pre-trained on ImageNet-21K evaluated zero-shot on other datasets). This
command rebuilds the method around a CLIP for the class names of the evaluation data and reports
top-1 / top-5 accuracy; a TaI-DPT prompt gets the mAP of its global, local and merged scores on a multi-label
set (a registered one, or a COCO instances .json / VOC2007 / NUS-WIDE folder / label list as --data). Image
features come from the feature cache (`tinyprompt.data.features`), so evaluating several prompts on one dataset
encodes its images once.

    tinyprompt eval --prompt runs/coop/prompt.pt --model ViT-B/16 --data imagenet-a/   (folder per class)
    tinyprompt eval --prompt runs/coop/prompt.pt --model ViT-B/16 --data caltech/ --split split_zhou_Caltech101.json
    tinyprompt eval --prompt runs/coop/prompt.pt --model ViT-B/16 --dataset imagenet_r --root $DATA   (registry)
    tinyprompt eval --prompt runs/taidpt/prompt.pt --model RN50 --dataset voc2007 --root $DATA          (mAP)
"""
import json
from pathlib import Path

from tinyprompt.commands.args import (add_eval_data_args, add_prompt_args, check_eval_data_args, eval_items,
                                      int_at_least, resolve_device)
from tinyprompt.commands.recipes.ilmvp import evaluate as ilmvp_accuracy
from tinyprompt.commands.recipes.ilmvp import load_run_model
from tinyprompt.commands.recipes.taidpt import eval_features, evaluate_map
from tinyprompt.data.datasets import DATASETS, get_dataset
from tinyprompt.data.datasets import load as load_dataset
from tinyprompt.data.features import cached_features
from tinyprompt.data.multilabel import read_multilabel
from tinyprompt.data.splits import ImageDataset, make_loader
from tinyprompt.hub import load
from tinyprompt.io import atomic_write
from tinyprompt.methods import load_prompt, read_prompt_file
from tinyprompt.metrics import accuracy_of_features


def add_args(parser) -> None:
    add_prompt_args(parser)
    add_eval_data_args(parser)
    parser.add_argument("--batch-size", type=int_at_least(1), default=64, help="images per encoder pass")
    parser.add_argument("--workers", type=int_at_least(0), default=0, help="DataLoader worker processes decoding images")
    parser.add_argument("--text-chunk", type=int_at_least(0), default=0,
                        help="class prompts per text-encoder pass, grouped by prompt length (no padding: faster on CPU); "
                        "0 = all in one padded pass")
    parser.add_argument("--device", default="auto", help="torch device; 'auto' = cuda when available, else cpu")
    parser.add_argument("--output", type=Path, default=None, help="also write the result as JSON to this file")


def _multilabel(args, state, device) -> int:
    """mAP (global, local, merged scores: TaI-DPT's evaluation) of a TaI-DPT prompt on a multi-label test set."""
    check_eval_data_args(args)
    if args.dataset is not None:
        if not get_dataset(args.dataset).multilabel:
            raise ValueError(f"--dataset {args.dataset} is single-label: a TaI-DPT prompt is scored with mAP on a "
                             f"multi-label set ({', '.join(n for n, e in DATASETS.items() if e.multilabel)})")  # fmt: skip
        data, source = load_dataset(args.dataset, args.root)[0][args.subset], f"{args.dataset} ({args.subset})"
        if data is None:
            raise ValueError(f"{args.dataset} has no {args.subset} split: use --subset test")
    else:  # a COCO instances .json, a VOC2007 or NUS-WIDE folder, or a CSV/JSONL label list
        if args.split is not None or args.classes is not None or args.subset != "test":
            raise ValueError(f"--data {args.data} is scored as read (a VOC2007 or NUS-WIDE folder: its test split): "
                             f"--split, --classes and --subset are for single-label data; for another split of a "
                             f"registered set pass --dataset NAME --root DATA --subset SPLIT")  # fmt: skip
        data, source = read_multilabel(args.data), str(args.data)
    clip, _ = load(args.model, device=device, config=args.model_config)
    model = load_prompt(clip, state, data.classnames, text_chunk=args.text_chunk)
    glob, local = eval_features(clip, data, clip.visual.input_resolution, args.batch_size, args.workers, device)
    result = evaluate_map(model, glob, local, data.labels, data.ignore)
    result = {"prompt": str(args.prompt), "model": str(args.model), "data": source, "images": len(data),
              "classes": len(data.classnames), **result}  # fmt: skip
    print(f"taidpt prompt {args.prompt} on {source}: {len(data)} images, {len(data.classnames)} classes")
    print("  ".join(f"mAP {k.removeprefix('map_')} {result[k]:.2f}" for k in ("map_global", "map_local", "map_merged")))
    if args.output is not None:
        with atomic_write(args.output, "w") as f:
            json.dump(result, f, indent=1)
    return 0


def run(args) -> int:
    device = resolve_device(args.device)
    state = read_prompt_file(args.prompt)  # a prompt of any method, or one line naming the file
    if state["method"] == "ship":
        raise ValueError(f"{args.prompt} is SHIP's generator: what SHIP classifies with is the CoOp prompt it trains, "
                         f"the prompt.pt in the SHIP run's --out; evaluate that one")  # fmt: skip
    if state["method"] == "taidpt":
        return _multilabel(args, state, device)
    items, classnames, source = eval_items(args, f"a {state['method']} prompt gives single-label accuracy")
    if state["method"] == "ilmvp":  # the prompt and mapping belong to the run's source classifier and classes
        if list(state.get("classnames") or []) != list(classnames):
            raise ValueError(f"{args.prompt} maps the classes {list(state.get('classnames') or [])[:5]}..., {source} "
                             f"has {classnames[:5]}...: an ILM-VP label mapping holds for its own target classes, "
                             f"in their order")  # fmt: skip
        model, transform, spec = load_run_model(args.prompt, state, device)
        if str(args.model) not in (spec, spec.removeprefix("clip:")):
            raise ValueError(f"{args.prompt} was trained through the source {spec}, not --model {args.model}: pass "
                             f"--model {spec}")  # fmt: skip
        loader = make_loader(ImageDataset(items, transform), args.batch_size, args.workers, device=device)
        result = {"top1": ilmvp_accuracy(model, loader, device)}
    else:
        clip, preprocess = load(args.model, device=device, config=args.model_config)
        features = cached_features(clip.encode_image, items, preprocess, views=1, batch_size=args.batch_size,
                                   device=device, num_workers=args.workers)[0]  # fmt: skip
        model = load_prompt(clip, state, classnames, text_chunk=args.text_chunk)
        result = accuracy_of_features(model, features, [item.label for item in items])
    result = {"prompt": str(args.prompt), "model": str(args.model), "data": source, "images": len(items),
              "classes": len(classnames), **result}  # fmt: skip
    print(f"{state['method']} prompt {args.prompt} on {source}: {len(items)} images, {len(classnames)} classes")
    print("  ".join(f"{k} accuracy: {result[k]:.2f}%" for k in ("top1", "top5") if k in result))
    if args.output is not None:
        with atomic_write(args.output, "w") as f:
            json.dump(result, f, indent=1)
    return 0
