"""Zero-shot classification with CLIP: classifier weights from class names and templates, and the CLI.

CLIP (Radford et al., arXiv 2103.00020) classifies an image by comparing its feature with the text
features of prompts such as "a photo of a {class}."; CoOp's zero-shot baselines (Zhou et al., arXiv
2109.01134, `trainers/zsclip.py`) do exactly this with one template (ZeroshotCLIP) or an ensemble
(ZeroshotCLIP2). For template t and class c:

    f_tc        = normalise(encode_text(tokenize(t.format(c))))      ("_" in c becomes a space)
    w_c         = normalise(mean_t f_tc)                              classifier row, (C, E)
    logits(x)   = exp(logit_scale) * normalise(encode_image(x)) @ W.T

`tinyprompt zeroshot --model M --data DIR` runs this over a folder-per-class image set and prints
top-1 (and top-5) accuracy; `--predictions` writes one row per image. Two class names that give the same
prompt are refused (`tinyprompt.prompts.prompt_names`): the prediction between them would be arbitrary.
"""
import csv
import io
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from tinyprompt.data.folder import ImageFolder
from tinyprompt.hub import load
from tinyprompt.io import atomic_write
from tinyprompt.prompts import prompt_names
from tinyprompt.recipes import REQUIRED, resolve_device
from tinyprompt.templates import get_templates
from tinyprompt.tokenizer import tokenize_for

__all__ = ["format_prompts", "template_features", "zeroshot_classifier", "zeroshot_logits"]


def format_prompts(classnames, templates) -> list[str]:
    """Template-major prompts: [t0(c0), t0(c1), ..., t1(c0), ...] (T * C strings)."""
    if not classnames:
        raise ValueError("no class names given: zero-shot classification needs at least one class")
    if not templates:
        raise ValueError("no templates given: pass at least one, e.g. get_templates('single')")
    for template in templates:
        if template.count("{}") != 1:
            raise ValueError(f"template {template!r} must contain exactly one '{{}}' for the class name")
    names = prompt_names(classnames)  # "golden_retriever" -> "golden retriever"; duplicates raise
    return [template.format(name) for template in templates for name in names]


@torch.no_grad()
def template_features(model, classnames, templates, batch_size: int = 256):
    """L2-normalised text features of every (template, class) prompt: (T, C, E)."""
    texts = format_prompts(classnames, templates)
    tokens = tokenize_for(model, texts)  # (T * C, context_length); too-long prompts raise, naming the text
    device = model.logit_scale.device
    # encode_text runs each batch only up to its longest EOT, so batching by template keeps lengths close
    features = torch.cat([model.encode_text(chunk.to(device)) for chunk in tokens.split(batch_size)])
    return F.normalize(features, dim=-1).view(len(templates), len(classnames), -1)


def zeroshot_classifier(model, classnames, templates, batch_size: int = 256):
    """Classifier weights (C, E): per class, the mean of its normalised template features, re-normalised."""
    return F.normalize(template_features(model, classnames, templates, batch_size).mean(dim=0), dim=-1)


@torch.no_grad()
def zeroshot_logits(model, images, classifier):
    """exp(logit_scale) * normalised image features @ classifier.T: (N, 3, R, R) -> (N, C)."""
    features = F.normalize(model.encode_image(images), dim=-1)  # (N, E)
    return model.logit_scale.exp() * features @ classifier.t()


# ---------------------------------------------------------------------------- the `zeroshot` command

_FORMATS = (".csv", ".jsonl")  # --predictions file types, chosen by suffix


def add_args(parser) -> None:
    parser.add_argument("--model", **REQUIRED, help="model name (see `tinyprompt models`) or checkpoint path")
    parser.add_argument("--data", **REQUIRED, help="image folder with one sub-folder per class (sorted = label order)")
    parser.add_argument(
        "--classes", default=None,
        help="display names for the class folders (None: the folder names): a comma-separated list or a file "
        "with one name per line (both in sorted folder order), or a file of 'folder<TAB>name' lines",
    )
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


def _class_names(spec, folders: list[str], root) -> list[str]:
    """Display names for the sorted class folders from --classes (None: the folder names)."""
    if spec is None:
        return folders
    path = Path(spec)
    if not path.is_file():
        names = [name.strip() for name in spec.split(",")]
    else:
        lines = [(i, line) for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()]
        if any("\t" in line for _, line in lines):  # "folder<TAB>name" lines (ImageNet's wnid -> name files)
            mapping = {}
            for i, line in lines:
                folder, tab, name = line.partition("\t")
                if not tab:
                    raise ValueError(
                        f"--classes {path} line {i}: {line!r} has no TAB; write 'folder<TAB>name' on every line"
                    )
                mapping[folder.strip()] = name.strip()
            missing = [folder for folder in folders if folder not in mapping]
            if missing:
                raise ValueError(f"--classes {path} has no name for the class folder(s) {missing[:5]} of {root}")
            return [mapping[folder] for folder in folders]
        names = [line.strip() for _, line in lines]
    if len(names) != len(folders) or not all(names):
        more = ", ..." if len(folders) > 5 else ""
        raise ValueError(
            f"--classes gives {len(names)} names but {root} has {len(folders)} class folders "
            f"({', '.join(folders[:5])}{more}): give one non-empty name per folder, in sorted folder order"
        )
    return names


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
    model, preprocess = load(args.model, device=device)
    dataset = ImageFolder(args.data, transform=preprocess)
    classnames = _class_names(args.classes, dataset.classes, args.data)
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
            sample = dataset.samples[len(rows)]  # shuffle=False: rows follow dataset order
            rows.append({"path": str(sample.path), "true": classnames[label], "predicted": classnames[pred],
                         "score": round(score, 6)})

    n = len(rows)
    print(f"zero-shot {args.model} on {args.data}: {n} images, {len(classnames)} classes, {len(templates)} templates")
    print(f"top-1 accuracy: {100 * top1 / n:.2f}% ({top1}/{n})")
    if len(classnames) >= 5:
        print(f"top-5 accuracy: {100 * topk / n:.2f}% ({topk}/{n})")
    if args.predictions is not None:
        _write_predictions(args.predictions, rows)
        print(f"predictions written to {args.predictions}")
    return 0
