"""Labelled tasks of the synthetic world, one for each claim a prompt-learning method makes, as tensors or files.

The world is `tinyprompt.data.synthetic` (coloured shapes on patterned backgrounds, with captions). Each
builder returns a `Task`: class names, hand-written zero-shot templates, and "train" / "val" / "test"
`Split`s of uint8 images (N, 3, R, R), labels and one caption per image, balanced over the classes and
drawn from a seed. The tasks, and the paper each one is for:

    shapes, colours, combinations   single-label zero-shot (CLIP, arXiv 2103.00020): 8, 8 and 64 classes
    backgrounds                     CoOp (arXiv 2109.01134): the background's colour, while the object has
                                    another colour of the same palette, so the generic hand prompt
                                    "a photo of a {}." mostly finds the object's colour; a learned context can
                                    point the class name at the background instead
    scenes                          TaI-DPT (arXiv 2211.12739): 1-4 objects, labels = the shapes present
                                    (multi-label, mAP), captions to train on
    large_label_space, held_out     POMP (arXiv 2304.04704): size x background colour x background pattern x
                                    shape, named like "small red checkered star" (a star on a red checkered
                                    background; the hand prompt reads "red checkered" as the star's); a
                                    quarter of the (background, shape) pairs never occur in the large space
                                    and make the held-out set the pre-trained prompt must transfer to
    base_new                        SHIP (arXiv 2307.07397): 64 colour-shape classes; the 32 base classes have
                                    4 colours, the 32 new (names-only) classes the other 4
    source_target                   ILM-VP (arXiv 2211.11635): a 64-class colour-shape source task at 32 px and
                                    a colour target task of 28 px images with different labels

The `write_*` functions put a task on disk in the formats the real-data commands read: a folder per
class, CoOp's split_zhou JSON, a multi-label JSONL list with a caption file, and an ImageNet-21K-style
folder per class id with a "wnid<TAB>name" file. Images are PNG files (Pillow, imported on first use).
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tinyprompt.data.synthetic import COLOURS, PATTERNS, SHAPES, SIZES, derive_seed, describe, render, sample_scenes
from tinyprompt.io import atomic_write

__all__ = [
    "Split", "Task", "shapes", "colours", "combinations", "backgrounds", "scenes", "large_label_space", "held_out",
    "base_new", "source_target", "write_image_folder", "write_split_file", "write_multilabel", "write_large_label",
]

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, 3, R, R)
    labels: torch.Tensor  # (N,) long class indices, or (N, C) uint8 0/1 for a multi-label task
    captions: list  # (N,) one caption per image, describing what it shows

    def __len__(self) -> int:
        return len(self.captions)


@dataclass
class Task:
    name: str
    classnames: list  # (C,) in label order
    templates: list  # hand-written zero-shot prompts, each with one "{}" for the class name
    splits: dict  # "train" | "val" | "test" -> Split
    info: dict = field(default_factory=dict)  # what a method needs beyond this (base/new labels, source classes)

    @property
    def multilabel(self) -> bool:
        return self.splits["test"].labels.dim() == 2

    def __getitem__(self, split: str) -> Split:
        if split not in self.splits:
            raise KeyError(f"task {self.name!r} has splits {list(self.splits)}, not {split!r}")
        return self.splits[split]


def _counts(per_class) -> dict:
    """(train, val, test) images per class -> {split: count}; 0 leaves a split out."""
    if len(per_class) != 3 or any(not isinstance(n, int) or n < 0 for n in per_class):
        raise ValueError(f"per_class must be 3 ints >= 0 (train, val, test images per class), got {per_class}")
    return {split: n for split, n in zip(SPLITS, per_class) if n}


def _background_other_than(colour: torch.Tensor, seed: int) -> torch.Tensor:
    """A random background colour different from each object colour (N,) -> (N,)."""
    shift = torch.randint(1, len(COLOURS), colour.shape, generator=torch.Generator().manual_seed(seed))
    return (colour + shift) % len(COLOURS)


def _classification(name, classnames, templates, attributes, per_class, seed, resolution, info=None) -> Task:
    """A single-object task: class c fixes the attributes `attributes[c]` ({name: index}) of the object."""
    splits = {}
    for split, n in _counts(per_class).items():
        labels = torch.arange(len(classnames)).repeat_interleave(n)  # (N,), grouped by class
        fixed = {key: torch.tensor([attributes[c][key] for c in labels.tolist()]) for key in attributes[0]}
        if "colour" in fixed:
            fixed["background"] = _background_other_than(fixed["colour"], derive_seed(seed, name, split, "bg"))
        scenes = sample_scenes(len(labels), derive_seed(seed, name, split), fixed=fixed)
        splits[split] = Split(render(scenes, resolution), labels, describe(scenes, derive_seed(seed, name, split)))
    return Task(name, list(classnames), list(templates), splits, info or {})


def shapes(per_class=(32, 8, 50), seed: int = 0, resolution: int = 32) -> Task:
    """8 classes: the object's shape; every other attribute random."""
    return _classification("shapes", SHAPES, ["a photo of a {}."], [{"shape": s} for s in range(len(SHAPES))],
                            per_class, seed, resolution)


def colours(per_class=(32, 8, 50), seed: int = 0, resolution: int = 32) -> Task:
    """8 classes: the object's colour (the background always has another one)."""
    return _classification("colours", list(COLOURS), ["a photo of a {} object."],
                           [{"colour": c} for c in range(len(COLOURS))], per_class, seed, resolution)


def _pairs(pairs) -> tuple:
    """(class names "red circle", attributes) of (colour, shape) index pairs."""
    names = [f"{list(COLOURS)[c]} {SHAPES[s]}" for c, s in pairs]
    return names, [{"colour": c, "shape": s} for c, s in pairs]


ALL_PAIRS = [(c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES))]


def combinations(per_class=(16, 4, 20), seed: int = 0, resolution: int = 32) -> Task:
    """64 classes: colour x shape ("red circle")."""
    names, attributes = _pairs(ALL_PAIRS)
    return _classification("combinations", names, ["a photo of a {}."], attributes, per_class, seed, resolution)


def backgrounds(per_class=(32, 8, 50), seed: int = 0, resolution: int = 32) -> Task:
    """8 classes: the background's colour (CoOp's task: the generic hand prompt is weak here, see above)."""
    return _classification("backgrounds", list(COLOURS), ["a photo of a {}."],
                           [{"background": c} for c in range(len(COLOURS))], per_class, seed, resolution)


def scenes(sizes=(2000, 200, 800), seed: int = 0, resolution: int = 32) -> Task:
    """Multi-label: scenes of 1-4 objects (train, val, test images); labels (N, 8) = the shapes present."""
    splits = {}
    for split, n in zip(SPLITS, sizes):
        if n:
            s = sample_scenes(n, derive_seed(seed, "scenes", split), objects=(1, 4))
            labels = torch.zeros(n, len(SHAPES), dtype=torch.uint8)
            rows, slots = s.present.nonzero(as_tuple=True)
            labels[rows, s.shape[rows, slots]] = 1
            splits[split] = Split(render(s, resolution), labels, describe(s, derive_seed(seed, "scenes", split)))
    return Task("scenes", list(SHAPES), ["a photo of a {}."], splits)


def _held_out_pair(background: int, shape: int) -> bool:
    """A quarter of the (background colour, shape) pairs: each colour with 2 shapes, each shape with 2 colours."""
    return (background + shape) % 4 == 0


def _fine_classes(held: bool) -> tuple:
    """(names "small red checkered circle", attributes) of every size x background colour x background pattern
    x shape class whose (background colour, shape) pair is held out (held=True) or not. The colour and pattern
    words name the BACKGROUND (the object has another colour, any texture): a hand prompt reads them as the
    object's, a learned context can learn to read them right."""
    names, attributes = [], []
    for b, s in ALL_PAIRS:
        if _held_out_pair(b, s) != held:
            continue
        for z, size in enumerate(SIZES):
            for p, pattern in enumerate(PATTERNS):
                names.append(f"{size} {list(COLOURS)[b]} {pattern} {SHAPES[s]}")
                attributes.append({"size": z, "background": b, "pattern": p, "shape": s})
    return names, attributes


def large_label_space(per_class=(4, 0, 0), seed: int = 0, resolution: int = 32) -> Task:
    """POMP's pre-training label space: 288 size x background colour x pattern x shape classes (no held-out pair)."""
    names, attributes = _fine_classes(held=False)
    return _classification("large_label_space", names, ["a photo of a {}."], attributes, per_class, seed, resolution)


def held_out(per_class=(0, 0, 10), seed: int = 0, resolution: int = 32) -> Task:
    """POMP's transfer test: the 96 classes whose (background colour, shape) pair never occurs in `large_label_space`."""
    names, attributes = _fine_classes(held=True)
    return _classification("held_out", names, ["a photo of a {}."], attributes, per_class, seed, resolution)


def base_new(per_class=(16, 4, 20), seed: int = 0, resolution: int = 32) -> Task:
    """SHIP's base-to-new split of the 64 colour-shape classes: labels 0..31 base, 32..63 new (names only).

    Base classes have the colours red, orange, yellow, green; new classes blue, purple, white, black (every
    shape in both halves), so the new classes name colours no training image of the object shows. The
    classes are ordered base first, so the usual rule (the first ceil(C/2) labels are base) finds them.
    """
    pairs = sorted(ALL_PAIRS, key=lambda p: (p[0] >= len(COLOURS) // 2, p))
    names, attributes = _pairs(pairs)
    half = len(pairs) // 2
    return _classification("base_new", names, ["a photo of a {}."], attributes, per_class, seed, resolution,
                           info={"base": list(range(half)), "new": list(range(half, len(pairs)))})


def source_target(per_class=(16, 4, 20), seed: int = 0, source_resolution: int = 32,
                  target_resolution: int = 28) -> tuple:
    """ILM-VP: (source, target). The source task is the 64 colour-shape classes at `source_resolution`
    (what the frozen source classifier predicts); the target task, with other labels, is the object's
    colour (8 classes) in smaller images, which a padding prompt enlarges to the source size."""
    if not 8 <= target_resolution <= source_resolution:
        raise ValueError(f"need 8 <= target_resolution <= source_resolution, got {target_resolution} and {source_resolution}")
    source = combinations(per_class, seed, source_resolution)
    target = colours(per_class, derive_seed(seed, "target"), target_resolution)
    target.name, target.info = "target", {"source_classnames": source.classnames, "source_resolution": source_resolution}
    return source, target


# ------------------------------------------------------------------------------------------ on disk

def _save_png(image: torch.Tensor, path: Path) -> None:
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError("writing synthetic images needs Pillow: pip install 'tinyprompt[images]'") from e
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(path, format="PNG")


def _folder(classname: str) -> str:
    return classname.replace(" ", "_")  # readers turn "_" back into a space in prompts


def _write_images(task: Task, split: str, root: Path, folders) -> list:
    """Save split's images as root/<folders[label]>/<split>_<i>.png; returns the paths relative to root."""
    data = task[split]
    paths = []
    for i, image in enumerate(data.images):
        relative = Path(folders[int(data.labels[i])]) / f"{split}_{i:05d}.png"
        _save_png(image, root / relative)
        paths.append(relative.as_posix())
    return paths


def write_image_folder(task: Task, root, split: str = "test") -> Path:
    """One split as a folder per class (sorted folder names = label order only if the class names sort so;
    `tinyprompt zeroshot --data root` reads it)."""
    if task.multilabel:
        raise ValueError(f"task {task.name!r} is multi-label: use write_multilabel")
    _write_images(task, split, Path(root), [_folder(c) for c in task.classnames])
    return Path(root)


def write_split_file(task: Task, root) -> Path:
    """Every split's images under root/images/<class>/ and CoOp's split file root/split_zhou_<name>.json
    ({"train": [[relative path, label, classname], ...], "val": ..., "test": ...})."""
    root = Path(root)
    record = {split: [] for split in SPLITS}
    for split in task.splits:
        paths = _write_images(task, split, root / "images", [_folder(c) for c in task.classnames])
        labels = task[split].labels.tolist()
        record[split] = [[path, label, task.classnames[label]] for path, label in zip(paths, labels)]
    path = root / f"split_zhou_{task.name}.json"
    with atomic_write(path, "w") as f:
        json.dump(record, f)
    return path


def write_multilabel(task: Task, root, split: str = "test") -> tuple:
    """A multi-label split as root/images/*.png, root/<split>.jsonl ({"path", "labels": [names]}) and
    root/<split>_captions.jsonl ({"caption"}); returns (label list path, caption file path)."""
    if not task.multilabel:
        raise ValueError(f"task {task.name!r} is single-label: use write_image_folder or write_split_file")
    root, data = Path(root), task[split]
    labels, captions = [], []
    for i, (image, row, caption) in enumerate(zip(data.images, data.labels, data.captions)):
        relative = f"images/{split}_{i:05d}.png"
        _save_png(image, root / relative)
        labels.append(json.dumps({"path": relative, "labels": [task.classnames[k] for k in row.nonzero().flatten().tolist()]}))
        captions.append(json.dumps({"caption": caption}))
    paths = root / f"{split}.jsonl", root / f"{split}_captions.jsonl"
    for path, lines in zip(paths, (labels, captions)):
        with atomic_write(path, "w") as f:
            f.write("\n".join(lines) + "\n")
    return paths


def write_large_label(task: Task, root, split: str = "train") -> Path:
    """A split as ImageNet-21K-style folders root/s0000/, root/s0001/, ... and root/classnames.txt
    ("s0000<TAB>small red plain circle" lines), as POMP's data reader expects; returns that file."""
    root = Path(root)
    wnids = [f"s{c:04d}" for c in range(len(task.classnames))]
    _write_images(task, split, root, wnids)
    path = root / "classnames.txt"
    with atomic_write(path, "w") as f:
        f.write("".join(f"{w}\t{name}\n" for w, name in zip(wnids, task.classnames)))
    return path
