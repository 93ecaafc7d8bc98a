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

`write_benchmark_root` writes a whole data root for `tinyprompt.data.datasets.load`: each of CoOp's 15
registry entries in its exact official layout (folders, split files, lists, classnames.txt; JPEG files,
as the real datasets ship), each filled with a synthetic task of its own (`BENCHMARK_LAYOUTS`), so the
real-data commands (`tinyprompt reproduce coop`) run end to end without downloading a dataset.
"""
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tinyprompt.data.datasets import DATASETS, AircraftLists, SplitFile
from tinyprompt.data.synthetic import (COLOURS, PATTERNS, POSITIONS, SHAPES, SIZES, TEXTURES, derive_seed, describe,
                                       render, sample_scenes)
from tinyprompt.io import atomic_write

__all__ = [
    "Split", "Task", "shapes", "colours", "combinations", "backgrounds", "scenes", "large_label_space", "held_out",
    "base_new", "source_target", "write_image_folder", "write_split_file", "write_multilabel", "write_large_label",
    "Layout", "BENCHMARK_LAYOUTS", "write_benchmark_root",
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

ENCODINGS = {".png": {"format": "PNG"}, ".jpg": {"format": "JPEG", "quality": 90},
             ".jpeg": {"format": "JPEG", "quality": 90}}  # suffix -> Pillow's save options (JPEG: 4:2:0, as photos)


def _save_image(image: torch.Tensor, path: Path) -> None:
    """Save a uint8 (3, R, R) image in the encoding its suffix names (.png, .jpg or .jpeg, any case)."""
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError("writing synthetic images needs Pillow: pip install 'tinyprompt[images]'") from e
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(path, **ENCODINGS[path.suffix.lower()])


def _folder(classname: str) -> str:
    return classname.replace(" ", "_")  # readers turn "_" back into a space in prompts


def _write_images(task: Task, split: str, root: Path, folders) -> list:
    """Save split's images as root/<folders[label]>/<split>_<i>.png; returns the paths relative to root."""
    data = task[split]
    paths = []
    for i, image in enumerate(data.images):
        relative = Path(folders[int(data.labels[i])]) / f"{split}_{i:05d}.png"
        _save_image(image, root / relative)
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
        _save_image(image, root / relative)
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


# ------------------------------------------------------------------ a benchmark root in CoOp's layouts

ATTRIBUTE_VALUES = {"shape": SHAPES, "colour": tuple(COLOURS), "size": tuple(SIZES), "texture": TEXTURES,
                    "position": tuple(POSITIONS), "background": tuple(COLOURS), "pattern": PATTERNS}


@dataclass(frozen=True)
class Layout:
    """One registry entry of the benchmark root: the synthetic classes it holds and where their images go.

    A path is a format string under the dataset folder, or one per split; its fields are the class's
    attribute values ("top left" as "top_left"), {name} (the class name), {n} (the image's number in the
    dataset, from 1), {hash} (16 hex digits drawn from it) and, in the ImageNet family, {label} and {wnid}
    (the class's ImageNet label and its wnid n00000000 + label).
    """

    attributes: tuple  # the attributes whose values make a class: ("colour", "shape") -> 8 x 8 = 64 classes
    name: str  # a class's name from its attribute values, e.g. "{colour} {shape}"
    path: str | dict  # where an image goes, see above
    imagenet: tuple = ()  # ImageNet-A/R: the ImageNet labels the variant holds (() = all of them)
    grey: bool = False  # ImageNet-Sketch: the same classes without colour, another rendering


_IMAGENET = {"attributes": ("colour", "shape"), "name": "{colour} {shape}"}  # 64 classes, as `combinations`

# registry name -> its task and the official file names (CoOp's DATASETS.md). Each dataset has its own
# classes; EuroSAT's are the CoOp task of `backgrounds` (land = background). ImageNet-A holds the squares
# and rings, ImageNet-R the triangles and stars: 16 of the 64 classes each, drawn with other seeds.
BENCHMARK_LAYOUTS = {
    "imagenet": Layout(**_IMAGENET, path={"train": "images/train/{wnid}/{wnid}_{n}.JPEG",
                                          "test": "images/val/{wnid}/ILSVRC2012_val_{n:08d}.JPEG"}),
    "caltech101": Layout(("shape",), "{shape}", "101_ObjectCategories/{name}/image_{n:04d}.jpg"),
    "oxford_pets": Layout(("colour",), "{colour}", "images/{name}_{n}.jpg"),
    "stanford_cars": Layout(("size", "colour"), "{size} {colour}", {"train": "cars_train/{n:05d}.jpg",
                                                                    "val": "cars_train/{n:05d}.jpg",
                                                                    "test": "cars_test/{n:05d}.jpg"}),
    "oxford_flowers": Layout(("colour", "texture"), "{colour} {texture}", "jpg/image_{n:05d}.jpg"),
    "food101": Layout(("size", "shape"), "{size}_{shape}", "images/{name}/{n}.jpg"),
    "fgvc_aircraft": Layout(("shape", "pattern"), "{shape} {pattern}", "images/{n:07d}.jpg"),
    "sun397": Layout(("pattern", "background"), "{pattern} {background}",  # SUN's "a/apartment_building/outdoor"
                     "SUN397/{background[0]}/{background}/{pattern}/sun_{hash}.jpg"),  # is "outdoor apartment_building"
    "dtd": Layout(("pattern",), "{pattern}", "images/{name}/{name}_{n:04d}.jpg"),
    "eurosat": Layout(("background",), "{background} land", "2750/{background}/{background}_{n}.jpg"),
    "ucf101": Layout(("position",), "{position}", "UCF-101-midframes/{name}/v_{name}_g{n:02d}_c01.jpg"),
    "imagenetv2": Layout(**_IMAGENET, path="imagenetv2-matched-frequency-format-val/{label}/{hash}.jpeg"),
    "imagenet_sketch": Layout(**_IMAGENET, path="images/{wnid}/sketch_{n}.JPEG", grey=True),
    "imagenet_a": Layout(**_IMAGENET, path="imagenet-a/{wnid}/0.{n:06d}_{name}.jpg", imagenet=tuple(range(1, 64, 4))),
    "imagenet_r": Layout(**_IMAGENET, path="imagenet-r/{wnid}/art_{n}.jpg", imagenet=tuple(range(2, 64, 4))),
}


def _layout_classes(layout: Layout) -> tuple:
    """(words, attributes) of every class of `layout` in label order: {attribute: value name} and
    {attribute: value index} of each combination of the attribute values, the last attribute fastest."""
    tables = [ATTRIBUTE_VALUES[a] for a in layout.attributes]
    words, attributes = [], []
    for values in itertools.product(*(range(len(table)) for table in tables)):
        words.append({a: table[v].replace(" ", "_") for a, table, v in zip(layout.attributes, tables, values)})
        attributes.append(dict(zip(layout.attributes, values)))
    return words, attributes


def _entry_splits(entry) -> tuple:
    """The splits an entry reads from disk: a split file or list all three, ImageNet train and test (its val
    folder is the test set), a variant test only."""
    if isinstance(entry, (SplitFile, AircraftLists)):
        return SPLITS
    return ("train", "test") if getattr(entry, "train", "") else ("test",)


def _grey(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, R, R) uint8 -> the same with every pixel its luma (ITU-R 601, Pillow's "L"), still RGB."""
    luma = (images.float() * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, keepdim=True)
    return luma.round().to(torch.uint8).expand_as(images).contiguous()


def _write_lines(path: Path, lines) -> None:
    with atomic_write(path, "w") as f:
        f.write("".join(f"{line}\n" for line in lines))


def _write_dataset(name: str, home: Path, per_class, seed: int, resolution: int) -> None:
    """Dataset `name` of BENCHMARK_LAYOUTS in its official layout under its folder `home`."""
    entry, layout = DATASETS[name], BENCHMARK_LAYOUTS[name]
    words, attributes = _layout_classes(layout)
    names = [layout.name.format(**w) for w in words]
    held = list(layout.imagenet or range(len(names)))  # task label -> class index (ImageNet label)
    counts = tuple(n if split in _entry_splits(entry) else 0 for split, n in zip(SPLITS, per_class))
    task = _classification(name, [names[k] for k in held], ["a photo of a {}."], [attributes[k] for k in held],
                           counts, seed, resolution)
    written, n = {split: [] for split in SPLITS}, 0  # split -> [(path under home, task label)]
    for split, data in task.splits.items():
        template = layout.path[split] if isinstance(layout.path, dict) else layout.path
        images = _grey(data.images) if layout.grey else data.images
        for image, label in zip(images, data.labels.tolist()):
            n, k = n + 1, held[label]
            path = template.format(**words[k], name=names[k], n=n, hash=f"{derive_seed(name, seed, n):016x}",
                                   label=k, wnid=f"n{k:08d}")
            _save_image(image, home / path)
            written[split].append((path, label))
    if isinstance(entry, SplitFile):  # [[path under the image folder, label, class name], ...] per split
        record = {split: [[Path(path).relative_to(entry.images).as_posix(), label, task.classnames[label]]
                          for path, label in items] for split, items in written.items()}
        with atomic_write(home / entry.split_file, "w") as f:
            json.dump(record, f, indent=4, separators=(",", ": "))  # as Dassl's write_json writes it
    elif isinstance(entry, AircraftLists):  # variants.txt in label order, "<image id> <variant>" lists
        _write_lines(home / "variants.txt", task.classnames)
        for split, items in written.items():
            _write_lines(home / f"images_variant_{split}.txt",
                         [f"{Path(path).stem} {task.classnames[label]}" for path, label in items])
    else:  # the ImageNet family: every variant has ImageNet's whole classnames.txt beside its images
        _write_lines(home / "classnames.txt", [f"n{k:08d} {names[k]}" for k in range(len(names))])
        if getattr(entry, "subset", False):  # ImageNet-A/R ship a README beside their class folders
            _write_lines(home / entry.test / "README.txt", [f"{name}: {len(held)} of the {len(names)} classes"])


def write_benchmark_root(root, datasets=None, per_class=(8, 2, 4), seed: int = 0, resolution: int = 32) -> Path:
    """A data root under which `tinyprompt.data.datasets.load(name, root)` reads each dataset of
    BENCHMARK_LAYOUTS (or of `datasets`, a list of its names) from its official layout; returns root.

    per_class: (train, val, test) images per class. The ImageNet family has no val split (ImageNet: train and
    test, the variants: test only). Deterministic for a seed. A dataset folder that already exists is
    refused, never written into: it may be real data, and stale images would be read as part of the split.
    """
    _counts(per_class)  # 3 ints >= 0
    if per_class[0] < 1 or per_class[2] < 1:
        raise ValueError(f"per_class must give >= 1 train and >= 1 test image per class (a split file's classes "
                         f"need train images, ImageNet's folders need images), got {per_class}")
    names = list(BENCHMARK_LAYOUTS) if datasets is None else [datasets] if isinstance(datasets, str) else list(datasets)
    unknown = [name for name in names if name not in BENCHMARK_LAYOUTS]
    if unknown:
        raise ValueError(f"no synthetic layout for datasets {unknown}: use names of {', '.join(BENCHMARK_LAYOUTS)}")
    root = Path(root)
    homes = {name: root / DATASETS[name].folder for name in names}
    existing = [str(home) for home in homes.values() if home.exists()]
    if existing:
        raise FileExistsError(f"{', '.join(existing)} already exist: write_benchmark_root writes whole dataset "
                              f"folders and never into existing ones; remove them or pass another root")
    for name, home in homes.items():
        _write_dataset(name, home, per_class, seed, resolution)
    return root
