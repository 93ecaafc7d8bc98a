"""Runnable training recipes, one module per method, run by `tinyprompt train <method> ...` (tinyprompt/train.py).

A recipe module provides `add_args(parser)` and `run(args)`. This file holds what recipes share: argparse
value checks that fail with a clear message, the device choice, and the image-classification data of a
run (a CoOp split file, or train/val/test image folders).
"""
import argparse
from pathlib import Path

import torch

from tinyprompt.data.folder import find_classes
from tinyprompt.data.splits import classnames_from_items, folder_items, read_split_file

__all__ = ["REQUIRED", "int_at_least", "positive_float", "non_negative_float", "resolve_device", "load_splits"]

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


def _float_where(ok, what: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value

    parse.__name__ = f"number {what}"
    return parse


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
