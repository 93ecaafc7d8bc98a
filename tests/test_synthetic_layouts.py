"""Tests of tinyprompt.data.synthetic_tasks.write_benchmark_root: every CoOp registry entry loads from the root."""
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tinyprompt.data.datasets import DATASETS, AircraftLists, SplitFile, load
from tinyprompt.data.folder import open_image
from tinyprompt.data.synthetic import COLOURS, PATTERNS, POSITIONS, SHAPES, SIZES, TEXTURES
from tinyprompt.data.synthetic_tasks import BENCHMARK_LAYOUTS, write_benchmark_root

pytest.importorskip("PIL.Image")

PER_CLASS, RESOLUTION = (3, 1, 2), 24  # not the defaults, so that both are seen to reach the files
COLOUR, IMAGENET = list(COLOURS), [f"{c} {s}" for c in COLOURS for s in SHAPES]
SUBSETS = {"imagenet_a": list(range(1, 64, 4)), "imagenet_r": list(range(2, 64, 4))}  # their ImageNet labels
CLASSES = {  # CoOp's 15 datasets -> the class names each one is meant to hold, in label order
    "imagenet": IMAGENET,
    "caltech101": list(SHAPES),
    "oxford_pets": COLOUR,
    "stanford_cars": [f"{z} {c}" for z in SIZES for c in COLOURS],
    "oxford_flowers": [f"{c} {t}" for c in COLOURS for t in TEXTURES],
    "food101": [f"{z}_{s}" for z in SIZES for s in SHAPES],
    "fgvc_aircraft": [f"{s} {p}" for s in SHAPES for p in PATTERNS],
    "sun397": [f"{p} {b}" for p in PATTERNS for b in COLOURS],
    "dtd": list(PATTERNS),
    "eurosat": [f"{b} land" for b in COLOURS],
    "ucf101": [p.replace(" ", "_") for p in POSITIONS],
    "imagenetv2": IMAGENET,
    "imagenet_sketch": IMAGENET,
    **{name: [IMAGENET[k] for k in labels] for name, labels in SUBSETS.items()},
}
BACKGROUND = {"eurosat": lambda name: name.split()[0], "sun397": lambda name: name.split()[1]}  # class -> its colour


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_benchmark_root(tmp_path_factory.mktemp("data"), per_class=PER_CLASS, resolution=RESOLUTION)


def expected_sizes(name) -> dict:
    """Images per class of each split: all three for split files and lists, ImageNet has no val, variants test only."""
    entry = DATASETS[name]
    train, val, test = PER_CLASS
    if isinstance(entry, (SplitFile, AircraftLists)):
        return {"train": train, "val": val, "test": test}
    return {"train": train if name == "imagenet" else 0, "val": 0, "test": test}


def test_layouts_are_coops_datasets():
    assert set(BENCHMARK_LAYOUTS) == set(CLASSES) and len(CLASSES) == 15
    assert set(CLASSES) <= set(DATASETS)
    assert all(len(set(names)) == len(names) for names in CLASSES.values())


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_dataset_loads_with_its_classes_and_sizes(root, name):
    splits, classnames = load(name, root)
    assert classnames == CLASSES[name]
    home = root / DATASETS[name].folder
    for split, per_class in expected_sizes(name).items():
        items = splits[split]
        assert Counter(item.label for item in items) == ({label: per_class for label in range(len(classnames))}
                                                         if per_class else {})
        assert all(item.classname == classnames[item.label] for item in items)
        for item in items:
            path = Path(item.path)
            assert path.is_relative_to(home)
            assert path.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG content, as the .jpg / .jpeg / .JPEG name says
            image = open_image(path)
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (RESOLUTION, RESOLUTION))


def test_imagenet_v2_folders_are_labels_in_numeric_order(root):
    splits, _ = load("imagenetv2", root)
    folders = [int(Path(item.path).parent.name) for item in splits["test"]]
    assert folders == [item.label for item in splits["test"]] == sorted(folders)  # folder i holds label i
    assert sorted(map(str, set(folders))) != [str(label) for label in sorted(set(folders))]  # "10" < "2": it matters
    assert DATASETS["imagenetv2"].imagenet_labels(root) == list(range(64))


@pytest.mark.parametrize("name", sorted(SUBSETS))
def test_imagenet_a_r_map_to_their_imagenet_classes(root, name):
    _, imagenet = load("imagenet", root)
    splits, classnames = load(name, root)
    labels = DATASETS[name].imagenet_labels(root)
    assert labels == SUBSETS[name]
    assert classnames == [imagenet[k] for k in labels]
    assert {Path(item.path).parent.name for item in splits["test"]} == {f"n{k:08d}" for k in labels}
    imagenet_wnids = {Path(item.path).parent.name: item.label for item in load("imagenet", root)[0]["test"]}
    assert all(imagenet_wnids[Path(item.path).parent.name] == labels[item.label] for item in splits["test"])
    assert (root / DATASETS[name].folder / DATASETS[name].test / "README.txt").is_file()


def nearest_colour(pixel) -> str:
    return min(COLOURS, key=lambda c: sum((a - b) ** 2 for a, b in zip(pixel, COLOURS[c])))


@pytest.mark.parametrize("name", sorted(BACKGROUND))
def test_images_show_their_class(root, name):
    """The labels are the pictures': a background-colour class's top-left pixel (never under the object,
    the first tone of every pattern) has that colour, through noise and JPEG."""
    splits, classnames = load(name, root)
    for item in (item for items in splits.values() for item in items):
        assert nearest_colour(open_image(item.path).getpixel((0, 0))) == BACKGROUND[name](classnames[item.label])


def test_sketches_have_no_colour(root):
    splits, _ = load("imagenet_sketch", root)
    spread = [int(np.ptp(np.asarray(open_image(item.path)), axis=2).max()) for item in splits["test"]]  # max - min RGB
    assert max(spread) <= 3  # grey up to JPEG rounding
    assert np.ptp(np.asarray(open_image(load("imagenetv2", root)[0]["test"][0].path)), axis=2).max() > 100


def files(root) -> dict:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_the_root_is_a_function_of_the_seed(tmp_path):
    written = [files(write_benchmark_root(tmp_path / f"{seed}-{k}", ["dtd", "fgvc_aircraft", "imagenet_r"],
                                          per_class=(1, 1, 1), seed=seed)) for seed, k in ((0, 0), (0, 1), (1, 0))]
    assert written[0] == written[1]
    assert written[0].keys() == written[2].keys()  # another seed: the same numbered names, other pictures
    changed = {path for path in written[0] if written[0][path] != written[2][path]}
    assert changed == {path for path in written[0] if path.endswith(".jpg")}


def test_refuses_existing_folders_and_bad_arguments(tmp_path):
    write_benchmark_root(tmp_path, ["dtd"], per_class=(1, 0, 1))
    before = files(tmp_path)
    with pytest.raises(FileExistsError, match=r"dtd already exist: write_benchmark_root writes whole dataset folders"):
        write_benchmark_root(tmp_path, ["caltech101", "dtd"])
    assert files(tmp_path) == before and not (tmp_path / "caltech-101").exists()  # nothing written
    with pytest.raises(ValueError, match=r"no synthetic layout for datasets \['cifar10'\]: use names of imagenet, "):
        write_benchmark_root(tmp_path / "other", ["cifar10"])
    with pytest.raises(ValueError, match=r"per_class must give >= 1 train and >= 1 test image per class"):
        write_benchmark_root(tmp_path / "other", per_class=(0, 1, 1))
    with pytest.raises(ValueError, match=r"per_class must be 3 ints >= 0"):
        write_benchmark_root(tmp_path / "other", per_class=(1, 1))
