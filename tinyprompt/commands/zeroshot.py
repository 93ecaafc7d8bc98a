"""`tinyprompt zeroshot --model M --data DIR`: zero-shot accuracy of a CLIP on a folder-per-class image set,
`--data ROOT --split FILE`: on a part of a CoOp split file, or `--dataset NAME --root DATA`: on a part of a
registered dataset (`tinyprompt.data.datasets`); --subset picks the part (default: test).

Builds the classifier from the class names and templates (`tinyprompt.zeroshot`, where the math is), prints
top-1 (and top-5) accuracy, and with `--predictions` writes one row per image.
"""
import csv
import io
import json
from pathlib import Path

from torch.utils.data import DataLoader

from tinyprompt.commands.args import (REQUIRED, add_eval_data_args, add_model_config_arg, check_eval_data_args,
                                      eval_items, resolve_device)
from tinyprompt.data.splits import ImageDataset
from tinyprompt.hub import load
from tinyprompt.io import atomic_write
from tinyprompt.templates import get_templates
from tinyprompt.zeroshot import zeroshot_classifier, zeroshot_logits

_FORMATS = (".csv", ".jsonl")  # --predictions file types, chosen by suffix


def add_args(parser) -> None:
    parser.add_argument("--model", **REQUIRED, help="model name (see `tinyprompt models`) or checkpoint path")
    add_model_config_arg(parser)
    add_eval_data_args(parser)
    parser.add_argument(
        "--templates", default="ensemble7",
        help="'single', 'ensemble7', 'imagenet80', a dataset name (e.g. OxfordPets), several joined with '+', "
        "or a file with one template per line",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images (and prompts) per forward pass")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes decoding images")
    parser.add_argument("--device", default="auto", help="torch device; 'auto' = cuda when available, else cpu")
    parser.add_argument(
        "--predictions", default=None, type=Path,
        help="write one row per image (path, true, predicted, score = softmax probability of the prediction) "
        "to this .csv or .jsonl file",
    )


def _write_predictions(path: Path, rows: list[dict]) -> None:
    text = io.StringIO()
    if path.suffix.lower() == ".csv":
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    else:
        text.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    with atomic_write(path) as f:
        f.write(text.getvalue().encode("utf-8"))


def run(args) -> int:
    if args.predictions is not None and args.predictions.suffix.lower() not in _FORMATS:
        raise ValueError(f"--predictions {args.predictions}: use a file name ending in .csv or .jsonl")
    if args.batch_size < 1 or args.workers < 0:
        raise ValueError(f"--batch-size must be >= 1 and --workers >= 0, got {args.batch_size} and {args.workers}")
    templates = get_templates(args.templates)
    device = resolve_device(args.device)
    what = "zero-shot CLIP gives single-label accuracy"
    check_eval_data_args(args)
    registered = args.dataset is not None or args.split is not None  # a bad root or split file fails before the model
    if registered:
        samples, classnames, source = eval_items(args, what)
    model, preprocess = load(args.model, device=device, config=args.model_config)
    if not registered:  # an image folder is read once the model name is known good
        samples, classnames, source = eval_items(args, what)
    dataset = ImageDataset(samples, transform=preprocess)
    classifier = zeroshot_classifier(model, classnames, templates, batch_size=args.batch_size)  # (C, E)

    k = min(5, len(classnames))
    top1 = topk = 0
    rows = []
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers, shuffle=False)
    for images, labels in loader:
        probs = zeroshot_logits(model, images.to(device), classifier).softmax(dim=-1).cpu()  # (B, C)
        scores, best = probs.topk(k, dim=-1)  # (B, k), best first
        top1 += (best[:, 0] == labels).sum().item()
        topk += (best == labels[:, None]).any(dim=-1).sum().item()
        for label, pred, score in zip(labels.tolist(), best[:, 0].tolist(), scores[:, 0].tolist()):
            sample = samples[len(rows)]  # shuffle=False: rows follow dataset order
            rows.append({"path": str(sample.path), "true": classnames[label], "predicted": classnames[pred],
                         "score": round(score, 6)})

    n = len(rows)
    print(f"zero-shot {args.model} on {source}: {n} images, {len(classnames)} classes, {len(templates)} templates")
    print(f"top-1 accuracy: {100 * top1 / n:.2f}% ({top1}/{n})")
    if len(classnames) >= 5:
        print(f"top-5 accuracy: {100 * topk / n:.2f}% ({topk}/{n})")
    if args.predictions is not None:
        _write_predictions(args.predictions, rows)
        print(f"predictions written to {args.predictions}")
    return 0
