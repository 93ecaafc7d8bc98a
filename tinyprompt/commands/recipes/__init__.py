"""Runnable training recipes, one module per method, run by `tinyprompt train <method> ...` (commands/train.py).

A recipe module provides `add_args(parser)` and `run(args)`. This file holds what recipes share: the run flags
(what to do with an earlier run in --out, workers, device, --compile), --text-chunk's values, the check of --out
before any work, the image-classification data of a run (a CoOp split file, or train/val/test image folders) and
the items' part of a run's data fingerprint. Argument types every command shares are in `tinyprompt.commands.args`.
"""
import argparse
import os
from pathlib import Path

from tinyprompt.commands.args import (REQUIRED, add_model_config_arg, check_data_source, int_at_least,
                                      non_negative_float, positive_float, single_label_dataset)
from tinyprompt.data.datasets import DATASETS
from tinyprompt.data.folder import find_classes
from tinyprompt.data.splits import classnames_from_items, folder_items, read_split_file
from tinyprompt.engine import PRECISIONS, TrainConfig, check_out_dir
from tinyprompt.prompts import AUTO

__all__ = ["FLAGS", "add_model_arg", "add_split_args", "add_sgd_args", "add_precision_arg", "add_run_args", "train_config", "prepare_out", "load_run_data", "load_splits",
           "item_list", "text_chunk_arg", "TEXT_CHUNK_HELP", "add_compile_arg"]

# the engine's messages name these flags instead of its parameters (engine.PARAMETERS); no recipe has grad_clip
FLAGS = {"out_dir": "--out", "resume": "--resume", "overwrite": "--overwrite", "lr": "--lr",
         "precision": "--precision fp32"}


# how --text-chunk's "auto" resolves (tinyprompt.prompts.AUTO_ENCODING), for the recipes' help texts
TEXT_CHUNK_HELP = ("'auto' = by device: 256 on CPU (little padding, less cache traffic), one pass on CUDA (a step of "
                   "~1,000 prompts is bound by kernel launches)")


def text_chunk_arg(text: str):
    """--text-chunk: 'auto' (resolved on the device the prompts are encoded on) or an int >= 0."""
    if text == AUTO:
        return AUTO
    try:
        return int_at_least(0)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"use 'auto' or an int >= 0, got {text!r}") from None


def add_compile_arg(group) -> None:
    group.add_argument("--compile", nargs="?", const=True, default=False, metavar="BACKEND",
                       help="torch.compile the step's loss (inductor, or the named backend, e.g. aot_eager); "
                            "the first steps pay the compilation")  # fmt: skip


def add_model_arg(group) -> None:
    group.add_argument("--model", **REQUIRED, help="CLIP model name (see `tinyprompt models`) or checkpoint path")
    add_model_config_arg(group)


def add_split_args(group) -> None:
    """--data and --split, or --dataset and --root: an image-classification dataset as `load_run_data` reads it."""
    group.add_argument("--data", default=None, help="image root of --split, or (without --split) a folder with "
                       "train/, test/ and optionally val/, each with one sub-folder per class; or use --dataset")  # fmt: skip
    group.add_argument("--split", default=None, help="CoOp split file (split_zhou_*.json) with paths relative to --data")
    names = ", ".join(name for name, entry in DATASETS.items() if not entry.multilabel)
    group.add_argument("--dataset", default=None, help=f"a registered dataset instead of --data: {names} (CoOp's "
                       f"layouts under --root; class names from the official files)")  # fmt: skip
    group.add_argument("--root", default=None, help="the data root holding --dataset's folder (CoOp's DATASET.ROOT)")


def add_sgd_args(group, *, epochs, epochs_help: str, batch_size: int, batch_help: str, lr, lr_help: str,
                 learned: str = "the context") -> None:
    """The optimisation flags of the CoOp-style recipes (CoOp, POMP, TaI-DPT): SGD with momentum and L2 weight
    decay, cosine after a constant warm-up, as Dassl builds it; the recipe gives its official defaults."""
    group.add_argument("--epochs", type=int_at_least(1), default=epochs, help=epochs_help)
    group.add_argument("--batch-size", type=int_at_least(1), default=batch_size, help=batch_help)
    group.add_argument("--lr", type=positive_float, default=lr, help=lr_help)
    group.add_argument("--momentum", type=non_negative_float, default=0.9, help="SGD momentum")
    group.add_argument("--weight-decay", type=non_negative_float, default=5e-4, help=f"L2 weight decay on {learned}")
    group.add_argument("--warmup-epochs", type=int_at_least(0), default=1, help="epochs at the constant --warmup-lr")
    group.add_argument("--warmup-lr", type=positive_float, default=1e-5, help="learning rate of the warm-up epochs")
    add_precision_arg(group)


def add_precision_arg(group, note: str = "") -> None:
    group.add_argument("--precision", default="auto", choices=PRECISIONS,
                       help="auto = fp32 on CPU, bf16 autocast on CUDA" + note)


# TrainConfig field -> the shared flag that sets it (add_sgd_args, add_precision_arg, add_run_args, add_compile_arg,
# --seed)
_CONFIG_FLAGS = {"max_epoch": "epochs", "batch_size": "batch_size", "lr": "lr", "momentum": "momentum",
                 "weight_decay": "weight_decay", "warmup_epochs": "warmup_epochs", "warmup_lr": "warmup_lr",
                 "precision": "precision", "seed": "seed", "num_workers": "workers", "compile": "compile"}


def train_config(args, **fields) -> TrainConfig:
    """The TrainConfig of a recipe's run: each shared flag the recipe has (and that is set), then `fields`, the
    recipe's own settings and defaults resolved from its flags, on top."""
    flags = {field: getattr(args, flag) for field, flag in _CONFIG_FLAGS.items() if getattr(args, flag, None) is not None}
    return TrainConfig(**{**flags, **fields})


def add_run_args(group, resume_help: str = "continue from --out/checkpoint.pt when it exists") -> None:
    """The run flags every recipe shares: what to do with an earlier run in --out, the workers, the device."""
    group.add_argument("--resume", action="store_true", help=resume_help)
    group.add_argument("--overwrite", action="store_true", help="replace the run already in --out (its files are "
                       "replaced as the new run writes them); without --resume or --overwrite such an --out is refused")
    group.add_argument("--workers", type=int_at_least(0), default=0, help="DataLoader worker processes decoding images")
    group.add_argument("--device", default="auto", help="torch device; 'auto' = cuda when available, else cpu")


def prepare_out(args, stages=("",)) -> None:
    """Before any work: --out is a writable folder (created), and an earlier run in it is claimed by --resume or
    --overwrite. stages: the sub-folders the recipe's engine runs write into ("" = --out itself)."""
    check_out_dir(args.out, args.resume, args.overwrite, FLAGS, stages)


def load_run_data(args) -> tuple[dict, list, Path]:
    """(splits, class names, root of the item paths) of a run: --dataset under --root, or --data (with --split)."""
    check_data_source(args, "FOLDER (with --split, or train/ and test/ class folders)")
    if args.dataset is None:
        return (*load_splits(args.data, args.split), Path(args.data))
    what = "this recipe trains single-label classification"
    return (*single_label_dataset(args.dataset, args.root, what), Path(args.root))


def load_splits(data, split=None) -> tuple[dict, list]:
    """({"train", "val", "test"}: lists of Items, class names ordered by label) of a run's data.

    With `split` (CoOp's split_zhou_*.json): its entries, with paths under the image root `data`.
    Without: the folders data/train, data/test and optionally data/val, each one sub-folder per class
    (the same class folders in each); class names are the folder names.
    """
    if split is not None:
        splits = read_split_file(split, data)
        return splits, classnames_from_items(splits["train"])
    root = Path(data)
    missing = [name for name in ("train", "test") if not (root / name).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{root} has no {' or '.join(f'{name}/' for name in missing)} folder: pass --split FILE (a CoOp "
            f"split_zhou_*.json whose paths start at {root}), or lay the images out as {root}/train/<class>/..., "
            f"{root}/test/<class>/... (and optionally {root}/val/<class>/...)"
        )
    classes = find_classes(root / "train")
    splits = {}
    for name in ("train", "val", "test"):
        folder = root / name
        if not folder.is_dir():  # only val may be absent
            splits[name] = []
            continue
        if find_classes(folder) != classes:
            extra, absent = sorted(set(find_classes(folder)) - set(classes)), sorted(set(classes) - set(find_classes(folder)))
            raise ValueError(f"{folder} must have the same class folders as {root / 'train'}: "
                             f"extra {extra[:5]}, missing {absent[:5]}; add or remove folders so the labels agree")
        splits[name] = folder_items(folder)
    return splits, classes


def item_list(items, root) -> list:
    """[[path relative to root, label], ...]: the items' part of a data fingerprint, the same wherever root is."""
    return [[os.path.relpath(item.path, root), item.label] for item in items]
