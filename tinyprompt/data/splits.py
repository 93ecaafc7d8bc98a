"""Image-classification splits: CoOp's split files, image folders, Dassl's few-shot sampling, the Dataset.

CoOp ("Learning to Prompt for Vision-Language Models", arXiv 2109.01134) fixes the train/val/test split
of each dataset in a `split_zhou_<Dataset>.json` file,

    {"train": [[relative_path, label, classname], ...], "val": [...], "test": [...]}

with paths relative to the dataset's image folder, and trains on K images per class drawn by Dassl's
`generate_fewshot_dataset`: `random.seed(seed)` once, then for the train and then the val split (val with
min(K, 4) shots), per label in order of first appearance, `random.sample(items_of_label, K)`, or every
item of a label that has fewer than K. `few_shot_splits` reproduces that selection for the same seed.
"""
import json
import os
import random
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset

from tinyprompt.data.folder import list_images, open_image

__all__ = ["Item", "read_split_file", "folder_items", "classnames_from_items", "few_shot", "few_shot_splits",
           "ImageDataset", "make_loader"]

SPLITS = ("train", "val", "test")


class Item(NamedTuple):
    path: str  # absolute path of the image
    label: int
    classname: str


def read_split_file(path, image_root, check_files: bool = True) -> dict:
    """{"train" | "val" | "test": list[Item]} from a CoOp split file, paths joined onto `image_root`.

    Checks everything up front, so that a bad entry fails here and never half-way through training:
    the JSON structure, every entry, one class name per label (and one label per name), labels
    0..C-1 all present in train, and (check_files) every image on disk.
    """
    path, root = Path(path), Path(image_root)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"split file {path} does not exist: "
                                f"pass the split_zhou_*.json of the dataset") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"split file {path} is not valid JSON ({e}): re-download it or fix the file") from e
    if not isinstance(raw, dict) or any(name not in raw or not isinstance(raw[name], list) for name in SPLITS):
        has = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"split file {path} must be a JSON object with lists 'train', 'val' and 'test' "
                         f"(CoOp's split_zhou_*.json format); it has {has}")
    if check_files and not root.is_dir():
        raise FileNotFoundError(f"image root {root} for split file {path} does not exist: pass the folder the "
                                f"split's relative paths start from")
    names, splits = {}, {}  # label -> class name (consistent across all splits)
    for split in SPLITS:
        items = []
        for i, entry in enumerate(raw[split]):
            where = f"split file {path}, {split}[{i}]"
            if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                    and isinstance(entry[1], int) and not isinstance(entry[1], bool) and entry[1] >= 0
                    and isinstance(entry[2], str)):
                raise ValueError(f"{where} is {entry!r}: "
                                 f"each entry must be [relative_path, label (int >= 0), classname]")
            rel, label, name = entry
            if names.setdefault(label, name) != name:
                raise ValueError(f"{where} names label {label} {name!r}, but an earlier entry names it "
                                 f"{names[label]!r}: one class name per label, fix the file")
            image = root / rel
            if check_files and not image.is_file():
                raise FileNotFoundError(f"split file {path} lists {rel!r}, which does not exist under root {root}: "
                                        f"pass the dataset's image folder as the root, or restore the file")
            items.append(Item(os.path.abspath(image), label, name))
        splits[split] = items
    by_name = {}
    for label, name in names.items():
        if by_name.setdefault(name, label) != label:
            raise ValueError(f"split file {path} uses class name {name!r} for labels {by_name[name]} and {label}: "
                             f"one label per class name, fix the file")
    used = {split: {item.label for item in items} for split, items in splits.items()}
    for label in range(max(names, default=-1) + 1):
        if label not in names:
            raise ValueError(f"split file {path}: no entry has label {label}, so class {label} is empty "
                             f"(labels must run 0..{max(names)} with images for every class): fix the file")
        if label not in used["train"]:
            where = " and ".join(split for split in ("val", "test") if label in used[split])
            raise ValueError(f"split file {path}: class {label} ({names[label]!r}) is in {where} but has no train "
                             f"images, so it cannot be learned: fix the file")
    return splits


def folder_items(root) -> list:
    """The items of a folder-per-class dataset (`tinyprompt.data.folder` layout); class names are the folder names."""
    classes, samples = list_images(root)
    return [Item(os.path.abspath(s.path), s.label, classes[s.label]) for s in samples]


def classnames_from_items(items) -> list:
    """Class names ordered by label (labels must cover 0..C-1)."""
    names = {}
    for item in items:
        names.setdefault(item.label, item.classname)
    missing = sorted(set(range(max(names, default=-1) + 1)) - set(names))
    if missing:
        raise ValueError(f"labels {missing[:10]} have no items, so their class names are unknown: "
                         f"labels must be 0..C-1 with at least one item each")
    return [names[label] for label in range(len(names))]


def _sample(items, shots, rng: random.Random) -> list:
    """Dassl's generate_fewshot_dataset for one split: per label in first-appearance order, sample `shots`."""
    if shots < 1:  # Dassl: NUM_SHOTS < 1 means the whole split
        return list(items)
    by_label = {}
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    picked = []
    for group in by_label.values():
        picked.extend(rng.sample(group, shots) if len(group) >= shots else group)
    return picked


def few_shot(items, shots: int, seed: int) -> list:
    """`shots` items per label of one split, as Dassl picks them after `random.seed(seed)`."""
    return _sample(items, shots, random.Random(seed))


def few_shot_splits(train, val, shots: int, seed: int) -> tuple:
    """(train, val) few-shot subsets exactly as CoOp's datasets draw them: one seed, train first, val min(shots, 4)."""
    rng = random.Random(seed)  # a private generator with the same sequence as random.seed(seed)
    return _sample(train, shots, rng), _sample(val, min(shots, 4), rng)


class ImageDataset(Dataset):
    """`dataset[i]` -> (transform(image), label) over a list of Items; images decoded with Pillow."""

    def __init__(self, items, transform=None):
        self.items, self.transform = list(items), transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        image = open_image(item.path)
        return (self.transform(image) if self.transform is not None else image), item.label


def make_loader(dataset, batch_size: int, num_workers: int = 0, shuffle: bool = False, seed: int = 0,
                device="cpu") -> DataLoader:
    """A DataLoader for evaluation or feature extraction: `num_workers` processes, pinned memory on CUDA.

    Its own generator, seeded by `seed`, fixes the shuffled order (with shuffle) and the workers' seeds,
    and leaves the global RNG alone (training loaders are built by `tinyprompt.engine.train`).
    """
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=num_workers,
                      pin_memory=str(device).startswith("cuda"), persistent_workers=False)
