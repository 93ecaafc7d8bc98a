"""Large label spaces: an ImageNet-21K-style image folder with a class-name file, capped per class.

POMP ("Prompt Pre-Training with Twenty-Thousand Classes for Open-Vocabulary Visual Recognition",
arXiv 2304.04704) pre-trains a prompt on ImageNet-21K (winter21 ImageNet-21K-P: 10,450 class folders),
16 images per class, several augmented views of each image per step. The data on disk:

    root/
      n00004475/  a.JPEG  b.JPEG ...       one folder per class, named by its WordNet id (wnid)
      n00005787/  ...
    classnames.txt                          one "wnid<TAB>name" line per class ("n02084071<TAB>dog");
                                            underscores in names become spaces ("golden_retriever")

Classes are the folders present, in sorted wnid order (label = position); the name file may list more
wnids (e.g. all 21,843), and must name every folder. The per-class cap is CoOp's few-shot draw (Dassl's
`generate_fewshot_dataset`, `tinyprompt.data.splits.few_shot`): one `random.Random(seed)`, classes in
label order, `sample(files, cap)` from a class with at least `cap` images, else all of them. It is done
folder by folder, so the file list of 10-20 million images is never held at once.
Training reuses the feature cache (`tinyprompt.data.features.cached_features`): V augmented views of
every image are encoded once, and `ViewsDataset` serves several distinct views of each image per step.
"""
import os
import random
import re
from pathlib import Path

import torch

from tinyprompt.data.features import FeatureDataset
from tinyprompt.data.folder import IMAGE_EXTENSIONS, find_classes
from tinyprompt.data.splits import Item

__all__ = ["read_class_names", "read_class_list", "large_label_items", "ViewsDataset"]


WNID_LINE = re.compile(r"n\d{8} \S")  # a WordNet id, one space, a name: CoOp's ImageNet classnames.txt


def read_class_names(path, sep: str = "\t") -> dict:
    """{wnid: name} from a "wnid<TAB>name" file, in file order; underscores in names become spaces.

    sep=" " reads CoOp's ImageNet classnames.txt ("n01440764 tench": the name is all after the first space).
    """
    path = Path(path)
    form = "wnid" + ("<TAB>" if sep == "\t" else sep) + "name"  # as the messages spell a line
    if not path.is_file():
        raise FileNotFoundError(f"class-name file {path} does not exist: pass a file of '{form}' lines")
    names = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        wnid, found, name = line.strip().partition(sep)
        wnid, name = wnid.strip(), name.strip().replace("_", " ")
        if not found or not wnid or not name:
            raise ValueError(f"class-name file {path} line {number}: {line!r} is not '{form}'; "
                             f"write one class per line, its folder name, {sep!r}, then its name")
        if wnid in names:
            raise ValueError(f"class-name file {path} line {number}: {wnid!r} is listed twice "
                             f"({names[wnid]!r} and {name!r}); keep one line per class")
        names[wnid] = name
    if not names:
        raise ValueError(f"class-name file {path} is empty: write one '{form}' line per class")
    return names


def class_file_separator(text: str) -> str | None:
    """How a class file pairs folders with names: "\t" ("wnid<TAB>name" lines), " " (CoOp's ImageNet
    classnames.txt, every line "n01440764 tench"), or None (one name per line, no folder ids). Without this, a
    classnames.txt read as one name per line gives names like "n01440764 tench", silently."""
    if "\t" in text:
        return "\t"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " " if lines and all(WNID_LINE.match(line) for line in lines) else None


def read_class_list(path) -> list:
    """Class names in file order: "wnid<TAB>name" or "wnid name" lines (as `read_class_names`), or one name
    per line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class file {path} does not exist: pass one class name per line "
                                f"(or 'wnid<TAB>name' lines)")
    text = path.read_text(encoding="utf-8")
    sep = class_file_separator(text)
    if sep is not None:
        return list(read_class_names(path, sep).values())
    names = [line.strip().replace("_", " ") for line in text.splitlines() if line.strip()]
    if not names:
        raise ValueError(f"class file {path} has no class names: write one name per line")
    return names


def _class_images(folder: Path) -> list:
    """Sorted image files below one class folder (as `tinyprompt.data.folder.list_images` finds them)."""
    files = []
    for directory, subdirs, names in os.walk(folder):
        subdirs.sort()
        files.extend(os.path.join(directory, n) for n in names if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
    return sorted(files, key=Path)


def large_label_items(root, class_names=None, images_per_class: int = 16, seed: int = 1) -> tuple:
    """(items, classnames) of a folder-per-wnid dataset, at most `images_per_class` per class (0 = all).

    class_names: a "wnid<TAB>name" file (or None: the folder names are the class names).
    items: `tinyprompt.data.splits.Item`s (absolute path, label, name), classes in sorted folder order.
    """
    root = Path(root)
    if images_per_class < 0:
        raise ValueError(f"images_per_class = {images_per_class}: use 0 (all images) or a cap >= 1")
    wnids = find_classes(root)
    names = read_class_names(class_names) if class_names is not None else {w: w.replace("_", " ") for w in wnids}
    unnamed = [w for w in wnids if w not in names]
    if unnamed:
        raise ValueError(f"class-name file {class_names} has no name for {len(unnamed)} class folder(s) of {root}, "
                         f"e.g. {unnamed[:5]}: add a 'wnid<TAB>name' line for each, or remove those folders")
    rng = random.Random(seed)  # Dassl's few-shot draw: one generator, classes in label order
    items = []
    for label, wnid in enumerate(wnids):
        files = _class_images(root / wnid)
        if not files:
            raise ValueError(f"class folder {root / wnid} has no image files (extensions {', '.join(IMAGE_EXTENSIONS)}): "
                             f"add its images or remove the folder")
        if images_per_class and len(files) >= images_per_class:
            files = rng.sample(files, images_per_class)
        items.extend(Item(os.path.abspath(f), label, names[wnid]) for f in files)
    return items, [names[w] for w in wnids]


class ViewsDataset(FeatureDataset):
    """`dataset[i]` -> (features [M, E] of M distinct cached views of item i, label), from [V, N, E].

    POMP's official trainer feeds M (K_TRANSFORMS = 4) augmented views of every image per step. Each
    epoch draws, per item, M distinct views of its V cached ones, seeded by (seed, epoch): the same in
    every run and after a resume (`tinyprompt.engine.train` calls `set_epoch`).
    """

    def __init__(self, features: torch.Tensor, labels, views_per_item: int, seed: int = 0):
        if features.dim() != 3 or not 1 <= views_per_item <= features.shape[0]:
            raise ValueError(f"ViewsDataset needs features [V, N, E] with V >= views_per_item = {views_per_item}, "
                             f"got {tuple(features.shape)}: cache at least {views_per_item} views per image")
        self.views_per_item = views_per_item
        super().__init__(features, labels, seed)

    def set_epoch(self, epoch: int):
        generator = torch.Generator().manual_seed(random.Random(f"{self.seed}:{epoch}").getrandbits(63))
        order = torch.rand(len(self.labels), self.features.shape[0], generator=generator).argsort(1)  # (N, V)
        self.view = order[:, : self.views_per_item]  # (N, M) distinct views per item

    def __getitem__(self, index: int):
        return self.features[self.view[index], index], self.labels[index]  # (M, E), ()
