"""What every command's arguments share: argparse value types that fail with a clear message, flags without
a default, the device choice, the model (--model, --model-config) and saved prompt to load, the labelled images
an evaluation reads (--data / --split or --dataset / --root, --subset, --classes), and display names for class
folders (`--classes`)."""
import argparse
import math
from pathlib import Path

import torch

from tinyprompt.data.datasets import DATASETS, get_dataset
from tinyprompt.data.datasets import load as load_dataset
from tinyprompt.data.folder import find_classes
from tinyprompt.data.largelabel import class_file_separator, read_class_names
from tinyprompt.data.splits import classnames_from_items, folder_items, read_split_file

__all__ = ["REQUIRED", "int_at_least", "finite_float", "positive_float", "non_negative_float", "resolve_device",
           "class_names", "add_model_config_arg", "add_prompt_args", "add_eval_data_args", "check_eval_data_args",
           "single_label_dataset", "eval_items"]

# add_argument(..., **REQUIRED): a flag with no default, so `--help` shows none ("(default: None)" would mislead)
REQUIRED = {"required": True, "default": argparse.SUPPRESS}


def int_at_least(low: int):
    """An argparse type: an int >= low, else an error naming the value and the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


def _float_where(ok=None, what: str = ""):
    """An argparse type: a finite float (float() also reads 'inf' and 'nan', which no flag means) where ok(value)."""
    number = f"a finite number {what}".rstrip()

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {number}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be {number}, got {text!r}")
        if ok is not None and not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value

    parse.__name__ = number.removeprefix("a ")
    return parse


finite_float = _float_where()
positive_float = _float_where(lambda v: v > 0, "> 0")
non_negative_float = _float_where(lambda v: v >= 0, ">= 0")


def resolve_device(name: str) -> torch.device:
    """'auto' = cuda when available, else cpu; anything else must be a torch device that exists."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"--device {name!r} is not a torch device ({e}): use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu (or auto)")
    return device


MODEL_CONFIG_HELP = ("for a --model checkpoint path that is not OpenAI's: its open_clip model config, as an "
                     "architecture or pretrained tag of `tinyprompt models --open-clip` (e.g. ViT-B-32 or "
                     "ViT-B-32/laion2b_s34b_b79k), open_clip's model-config .json file, or 'openai' (tensor shapes "
                     "cannot tell GELU from QuickGELU)")


def add_model_config_arg(group, flag: str = "--model") -> None:
    """--model-config: `tinyprompt.load`'s config of a checkpoint path (flag: the option that names the path)."""
    group.add_argument("--model-config", default=None, help=MODEL_CONFIG_HELP.replace("--model", flag))


def add_prompt_args(parser) -> None:
    """--prompt and the CLIP it was trained with (--model, --model-config): what eval and export-classifier load."""
    parser.add_argument("--prompt", **REQUIRED, help="prompt.pt (or best.pt / checkpoint.pt) written by `tinyprompt train`")
    parser.add_argument("--model", **REQUIRED, help="the CLIP the prompt was trained with: a model name (see "
                        "`tinyprompt models`) or checkpoint path")  # fmt: skip
    add_model_config_arg(parser)


def add_eval_data_args(parser) -> None:
    """The labelled images an evaluation reads (`eval_items`): a folder per class, a CoOp split file, or a
    registered dataset; --subset picks the split; --classes renames class folders."""
    parser.add_argument("--data", default=None, help="image folder with one sub-folder per class (sorted = label "
                        "order), or with --split the image root of the split file; or use --dataset and --root")  # fmt: skip
    parser.add_argument("--split", default=None, help="a CoOp split_zhou_*.json with paths under --data")
    parser.add_argument("--dataset", default=None, help=f"a registered dataset: {', '.join(DATASETS)} (the official "
                        f"layouts under --root)")  # fmt: skip
    parser.add_argument("--root", default=None, help="the data root holding --dataset's folder (CoOp's DATASET.ROOT)")
    parser.add_argument("--subset", default="test", choices=["train", "val", "test"],
                        help="which part of --split or --dataset")
    parser.add_argument("--classes", default=None, help="display names for the class folders of --data (None: the "
                        "folder names): a comma-separated list or a file with one name per line (both in sorted "
                        "folder order), or a file of 'folder<TAB>name' lines")  # fmt: skip


def single_label_dataset(name: str, root, what: str) -> tuple:
    """(splits, classnames) of registered dataset `name`, refused when it is multi-label (top-1 accuracy and
    single-label training are undefined there); `what` says what needs single labels, e.g. 'zero-shot CLIP
    gives single-label accuracy'."""
    if get_dataset(name).multilabel:
        raise ValueError(f"--dataset {name} is multi-label: {what}; TaI-DPT prompts are scored on it with mAP")
    return load_dataset(name, root)


def check_data_source(args, data: str) -> None:
    """--data (`data` says what it holds) or --dataset with --root name exactly one source of images; --split is
    --data's: a --dataset reads its own split file."""
    if (args.data is None) == (args.dataset is None) or (args.dataset is None) != (args.root is None):
        raise ValueError(f"pass either --data {data} or --dataset NAME with --root DATA")
    if args.split is not None and args.data is None:
        raise ValueError(f"--split is for --data, the folder its image paths start from; --dataset {args.dataset} "
                         f"reads its own split file: drop --split")  # fmt: skip


def check_eval_data_args(args) -> None:
    """The arguments `add_eval_data_args` adds name one source of images, and --classes only where it applies."""
    check_data_source(args, "FOLDER (one sub-folder per class, or the image root of --split)")
    if (args.dataset is not None or args.split is not None) and args.classes is not None:
        raise ValueError("--classes renames class folders; a --dataset or --split names its own classes: drop --classes")


def eval_items(args, what: str) -> tuple:
    """(items, classnames, a description of the source) of the arguments `add_eval_data_args` adds, checked before
    any model loads; `what` as in `single_label_dataset`."""
    check_eval_data_args(args)
    if args.dataset is not None:
        splits, classnames = single_label_dataset(args.dataset, args.root, what)
        items, source = splits[args.subset], f"{args.dataset} ({args.subset} split) under {args.root}"
    elif args.split is not None:
        splits = read_split_file(args.split, args.data)
        items, classnames = splits[args.subset], classnames_from_items(splits["train"])
        source = f"{args.split} ({args.subset} split)"
    else:
        items, source = folder_items(args.data), str(args.data)
        classnames = class_names(args.classes, find_classes(args.data), args.data)
    if not items:
        raise ValueError(f"{source} holds no images: pick another --subset")
    return items, classnames, source


def class_names(spec, folders: list[str], root) -> list[str]:
    """Display names for the sorted class folders from --classes (None: the folder names)."""
    if spec is None:
        return folders
    path = Path(spec)
    if not path.is_file():
        names = [name.strip() for name in spec.split(",")]
    else:
        text = path.read_text(encoding="utf-8")
        sep = class_file_separator(text)
        if sep is not None:  # "folder<TAB>name" or CoOp's "wnid name" lines: names by folder, in any order
            mapping = read_class_names(path, sep)
            missing = [folder for folder in folders if folder not in mapping]
            if missing:
                raise ValueError(f"--classes {path} has no name for the class folder(s) {missing[:5]} of {root}")
            return [mapping[folder] for folder in folders]
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != len(folders) or not all(names):
        more = ", ..." if len(folders) > 5 else ""
        raise ValueError(
            f"--classes gives {len(names)} names but {root} has {len(folders)} class folders "
            f"({', '.join(folders[:5])}{more}): give one non-empty name per folder, in sorted folder order"
        )
    return names
