"""Tests of tinyprompt.data.datasets: every registry entry on a tiny copy of its official layout, and the errors."""
import functools
import io
import json

import pytest

from tinyprompt.commands.cli import main
from tinyprompt.data.datasets import DATASETS, AircraftLists, NumberedFolders, SplitFile, get_dataset, load
from tinyprompt.data.folder import open_image
from tinyprompt.data.splits import Item
from tinyprompt.templates import CUSTOM_TEMPLATES

PIL = pytest.importorskip("PIL.Image")

# CLIP's names of ImageNet's first 11 classes, as CoOp's classnames.txt lists them
IMAGENET = [("n01440764", "tench"), ("n01443537", "goldfish"), ("n01484850", "great white shark"),
            ("n01491361", "tiger shark"), ("n01494475", "hammerhead shark"), ("n01496331", "electric ray"),
            ("n01498041", "stingray"), ("n01514668", "rooster"), ("n01514859", "hen"), ("n01518878", "ostrich"),
            ("n01530575", "brambling")]
SUBSET = (1, 3, 7)  # the ImageNet labels of the classes our tiny ImageNet-A/R hold
WNID_FILES = {  # image file names in each wnid-folder layout (k = 1, 2)
    "images/train": "{wnid}_1002{k}.JPEG", "images/val": "ILSVRC2012_val_0000029{k}.JPEG", "images": "sketch_{k}.JPEG",
    "imagenet-a": "0.00011{k}_{name} _ {name}_0.865662.jpg", "imagenet-r": "art_{k}.jpg",
}

# per split-file dataset, two classes: (image path, {n} = 1, 2, 3 for train, val, test; name in the file; name loaded)
SPLIT_CASES = {
    "caltech101": [("accordion/image_000{n}.jpg", "accordion", "accordion"),
                   ("Faces/image_000{n}.jpg", "Faces", "face")],  # renamed as CoOp does
    "oxford_pets": [("Abyssinian_{n}.jpg", "abyssinian", "abyssinian"),
                    ("american_bulldog_1{n}.jpg", "american_bulldog", "american_bulldog")],
    "stanford_cars": [("cars_train/0000{n}.jpg", "2012 Audi TTS Coupe", "2012 Audi TTS Coupe"),
                      ("cars_test/0001{n}.jpg", "2012 Acura TL Sedan", "2012 Acura TL Sedan")],
    "oxford_flowers": [("image_0673{n}.jpg", "pink primrose", "pink primrose"),
                       ("image_0674{n}.jpg", "hard-leaved pocket orchid", "hard-leaved pocket orchid")],
    "food101": [("apple_pie/100564{n}.jpg", "apple_pie", "apple_pie"),
                ("baby_back_ribs/100529{n}.jpg", "baby_back_ribs", "baby_back_ribs")],
    "sun397": [("a/abbey/sun_aaalbzqrimafwbi{n}.jpg", "abbey", "abbey"),
               ("a/apartment_building/outdoor/sun_aabbqmkcdwxnfza{n}.jpg", "outdoor apartment_building",
                "outdoor apartment_building")],
    "dtd": [("banded/banded_000{n}.jpg", "banded", "banded"), ("blotchy/blotchy_000{n}.jpg", "blotchy", "blotchy")],
    "eurosat": [("AnnualCrop/AnnualCrop_{n}.jpg", "AnnualCrop", "Annual Crop Land"),  # renamed as CoOp does
                ("Highway/Highway_{n}.jpg", "Highway or Road", "Highway or Road")],  # already CoOp's name
    "ucf101": [("Apply_Eye_Makeup/v_ApplyEyeMakeup_g01_c0{n}.jpg", "Apply_Eye_Makeup", "Apply_Eye_Makeup"),
               ("Band_Marching/v_BandMarching_g01_c0{n}.jpg", "Band_Marching", "Band_Marching")],
}
VARIANTS = ["707-320", "A300B4", "Cessna 172", "F/A-18"]  # FGVC-Aircraft names have spaces and slashes
AIRCRAFT_LISTS = {"train": "1025794 707-320\n0056978 F/A-18\n", "val": "1340192 Cessna 172\n",
                  "test": "0062765 A300B4\n\n"}


@functools.cache
def encoded(suffix: str) -> bytes:
    buffer = io.BytesIO()
    PIL.new("RGB", (2, 2), (10, 200, 30)).save(buffer, "PNG" if suffix == ".png" else "JPEG")
    return buffer.getvalue()


def write_image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded(path.suffix.lower()))


def write_classnames(home, classes):
    home.mkdir(parents=True, exist_ok=True)
    (home / "classnames.txt").write_text("".join(f"{wnid} {name}\n" for wnid, name in classes))


def build(name, root):
    """A tiny copy of dataset `name` in its official layout under the data root `root`; returns its folder."""
    entry = DATASETS[name]
    home = root / entry.folder
    if isinstance(entry, SplitFile):
        split = {part: [[path.format(n=n), label, raw] for label, (path, raw, _) in enumerate(SPLIT_CASES[name])]
                 for n, part in enumerate(("train", "val", "test"), 1)}
        for part in split.values():
            for path, _, _ in part:
                write_image(home / entry.images / path)
        (home / entry.split_file).write_text(json.dumps(split))
    elif isinstance(entry, AircraftLists):
        for part, text in AIRCRAFT_LISTS.items():
            for line in filter(None, text.splitlines()):
                write_image(home / "images" / f"{line.split()[0]}.jpg")
            (home / f"images_variant_{part}.txt").write_text(text)
        (home / "variants.txt").write_text("\n".join(VARIANTS) + "\n")
    elif isinstance(entry, NumberedFolders):
        write_classnames(home, IMAGENET)
        for label in range(len(IMAGENET)):
            write_image(home / entry.test / str(label) / f"{label:04x}9b4f2f3c.jpeg")
    else:  # wnid folders: ImageNet (3 classes) and Sketch whole, A/R a subset of ImageNet's 11 listed classes
        classes = [IMAGENET[i] for i in SUBSET] if entry.subset else IMAGENET[:3]
        write_classnames(home, IMAGENET if entry.subset else classes)
        for folder in filter(None, (entry.train, entry.test)):
            for wnid, classname in classes:
                for k in (1, 2):
                    write_image(home / folder / wnid / WNID_FILES[folder].format(wnid=wnid, name=classname, k=k))
        if entry.subset:
            (home / entry.test / "README.txt").write_text("ImageNet-A/R ship a README beside the class folders")
    return home


def test_registry_covers_coops_datasets():
    assert {entry.coop_name for entry in DATASETS.values()} == set(CUSTOM_TEMPLATES)
    assert set(SPLIT_CASES) == {name for name, entry in DATASETS.items() if isinstance(entry, SplitFile)}
    assert get_dataset("OxfordFlowers") is get_dataset("oxford-flowers") is DATASETS["oxford_flowers"]
    assert get_dataset("ImageNet-A") is DATASETS["imagenet_a"] and get_dataset("IMAGENETV2") is DATASETS["imagenetv2"]
    assert DATASETS["caltech101"].layout == "caltech-101/{101_ObjectCategories/, split_zhou_Caltech101.json}"
    assert DATASETS["imagenet"].layout == "imagenet/{images/train/, images/val/, classnames.txt}"
    with pytest.raises(ValueError, match="unknown dataset 'cifar10': use one of imagenet, caltech101, "):
        get_dataset("cifar10")


@pytest.mark.parametrize("name", sorted(SPLIT_CASES))
def test_split_file_datasets(tmp_path, name):
    home = build(name, tmp_path) / DATASETS[name].images
    splits, classnames = load(name, tmp_path)
    assert classnames == [loaded for _, _, loaded in SPLIT_CASES[name]]
    for n, part in enumerate(("train", "val", "test"), 1):
        assert splits[part] == [Item(str(home / path.format(n=n)), label, loaded)
                                for label, (path, _, loaded) in enumerate(SPLIT_CASES[name])]
    assert open_image(splits["test"][1].path).size == (2, 2)  # the listed files are the images


def test_fgvc_aircraft_reads_its_variant_lists(tmp_path):
    home = build("fgvc_aircraft", tmp_path)
    splits, classnames = load("fgvc_aircraft", tmp_path)
    assert classnames == VARIANTS
    assert [(item.label, item.classname) for item in splits["train"]] == [(0, "707-320"), (3, "F/A-18")]
    assert splits["val"] == [Item(str(home / "images" / "1340192.jpg"), 2, "Cessna 172")]
    assert splits["test"] == [Item(str(home / "images" / "0062765.jpg"), 1, "A300B4")]


def test_imagenet_names_are_the_human_names(tmp_path):
    home = build("imagenet", tmp_path)
    splits, classnames = load("imagenet", tmp_path)
    assert classnames == ["tench", "goldfish", "great white shark"]  # from classnames.txt, not the wnids
    assert [(item.label, item.classname) for item in splits["train"][::2]] == [
        (0, "tench"), (1, "goldfish"), (2, "great white shark")]
    assert [item.label for item in splits["train"]] == [0, 0, 1, 1, 2, 2]
    assert splits["val"] == []  # ImageNet has no val split; its val images are the test set
    assert splits["test"][2] == Item(str(home / "images/val/n01443537/ILSVRC2012_val_00000291.JPEG"), 1, "goldfish")
    assert DATASETS["imagenet"].imagenet_labels(tmp_path) == [0, 1, 2]


def test_imagenet_sketch(tmp_path):
    build("imagenet_sketch", tmp_path)
    splits, classnames = load("imagenet_sketch", tmp_path)
    assert classnames == ["tench", "goldfish", "great white shark"]
    assert splits["train"] == splits["val"] == []
    assert [item.label for item in splits["test"]] == [0, 0, 1, 1, 2, 2]


def test_imagenet_v2_folders_are_labels_in_numeric_order(tmp_path):
    home = build("imagenetv2", tmp_path) / DATASETS["imagenetv2"].test
    splits, classnames = load("imagenetv2", tmp_path)
    assert classnames == [name for _, name in IMAGENET]
    assert splits["train"] == splits["val"] == []
    test = splits["test"]
    assert [item.label for item in test] == list(range(11))  # not 0, 1, 10, 2, ... (the folders' string order)
    assert test[10] == Item(str(home / "10" / "000a9b4f2f3c.jpeg"), 10, "brambling")
    assert test[2] == Item(str(home / "2" / "00029b4f2f3c.jpeg"), 2, "great white shark")
    assert DATASETS["imagenetv2"].imagenet_labels(tmp_path) == list(range(11))


@pytest.mark.parametrize("name", ["imagenet_a", "imagenet_r"])
def test_imagenet_a_r_are_subsets_with_imagenet_names_and_labels(tmp_path, name):
    build(name, tmp_path)
    splits, classnames = load(name, tmp_path)
    assert classnames == ["goldfish", "tiger shark", "rooster"]  # ImageNet's names of the subset, sorted by wnid
    assert splits["train"] == splits["val"] == []
    assert [(item.label, item.classname) for item in splits["test"][::2]] == [
        (0, "goldfish"), (1, "tiger shark"), (2, "rooster")]
    assert DATASETS[name].imagenet_labels(tmp_path) == list(SUBSET)


def _rewrite_classnames(classes):
    return lambda home: write_classnames(home, classes)


# (dataset, how its tiny root is broken, error, message): each kind of wrong or partial root
BROKEN = [
    ("caltech101", None, FileNotFoundError,  # nothing under the root
     r"caltech-101 does not exist: Caltech101 needs .*/caltech-101/\{101_ObjectCategories/, split_zhou_Caltech101"),
    ("caltech101", lambda home: (home / "split_zhou_Caltech101.json").unlink(), FileNotFoundError,
     r"caltech-101/split_zhou_Caltech101.json does not exist: Caltech101 needs"),
    ("dtd", lambda home: (home / "images/banded/banded_0003.jpg").unlink(), FileNotFoundError,
     r"lists 'banded/banded_0003.jpg', which does not exist under root .*dtd/images"),
    ("eurosat", lambda home: (home / "2750").rename(home / "EuroSAT"), FileNotFoundError,
     r"eurosat/2750 does not exist: EuroSAT needs .*eurosat/\{2750/, split_zhou_EuroSAT.json\}"),
    ("fgvc_aircraft", lambda home: (home / "images_variant_test.txt").write_text("0062765 747-400\n"), ValueError,
     r"images_variant_test.txt line 1: variant '747-400' is not in .*variants.txt"),
    ("fgvc_aircraft", lambda home: (home / "images/1340192.jpg").unlink(), FileNotFoundError,
     r"images_variant_val.txt line 1 lists image '1340192', but .*images/1340192.jpg does not exist"),
    ("imagenet", lambda home: (home / "classnames.txt").unlink(), FileNotFoundError,
     r"imagenet/classnames.txt does not exist: ImageNet needs .*imagenet/\{images/train/, images/val/, classnames"),
    ("imagenet", lambda home: (home / "images/val").rename(home / "images/validation"), FileNotFoundError,
     r"imagenet/images/val does not exist"),
    ("imagenet", _rewrite_classnames(IMAGENET[:2]), ValueError,  # a class folder not in classnames.txt
     r"images/train has class folders \['n01484850'\] that .*imagenet/classnames.txt does not list"),
    ("imagenet", _rewrite_classnames(IMAGENET[:4]), ValueError,  # a partial ImageNet: a class without its folder
     r"images/train has no folder for 1 classes of .*classnames.txt, e.g. \['n01491361'\]"),
    ("imagenet", _rewrite_classnames([IMAGENET[1], IMAGENET[0], IMAGENET[2]]), ValueError,
     r"lists 'n01440764' after 'n01443537': ImageNet's labels are its wnids in sorted order"),
    ("imagenet", lambda home: (home / "classnames.txt").write_text("n01440764\tn01443537\n"), ValueError,
     r"classnames.txt line 1: 'n01440764\\tn01443537' is not 'wnid name'"),
    ("imagenet_sketch", lambda home: (home / "images/n01440764").rename(home / "images/tench"), ValueError,
     r"imagenet-sketch/images has class folders \['tench'\] that .*classnames.txt does not list"),
    ("imagenet_a", _rewrite_classnames(IMAGENET[:2]), ValueError,
     r"imagenet-a has class folders \['n01491361', 'n01514668'\] that .*imagenet-adversarial/classnames.txt"),
    ("imagenet_r", lambda home: (home / "classnames.txt").unlink(), FileNotFoundError,
     r"imagenet-rendition/classnames.txt does not exist: ImageNetR needs .*\{imagenet-r/, classnames.txt\}"),
    ("imagenetv2", lambda home: (home / "imagenetv2-matched-frequency-format-val/5").rename(home / "5"), ValueError,
     r"format-val has no folder for 1 classes of .*classnames.txt \(folders 0..10\), e.g. \['5'\]"),
    ("imagenetv2", _rewrite_classnames(IMAGENET[:10]), ValueError,
     r"format-val has class folders \['10'\] that .*classnames.txt \(folders 0..9\) does not list"),
]


@pytest.mark.parametrize("name, damage, error, message", BROKEN)
def test_broken_roots_name_the_missing_piece_and_the_layout(tmp_path, name, damage, error, message):
    if damage is not None:
        damage(build(name, tmp_path))
    with pytest.raises(error, match=message) as caught:
        load(name, tmp_path)
    assert "\n" not in str(caught.value)  # one line


def test_zeroshot_on_a_registered_dataset(tmp_path):
    """`tinyprompt zeroshot --dataset NAME --root DATA` evaluates the registry's test split with its class names."""
    build("imagenet", tmp_path)
    out = tmp_path / "predictions.jsonl"
    assert main(["zeroshot", "--model", "synthetic", "--dataset", "ImageNet", "--root", str(tmp_path),
                 "--templates", "single", "--predictions", str(out), "--device", "cpu"]) == 0  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["true"] for row in rows] == [name for _, name in IMAGENET[:3] for _ in (1, 2)]  # human names
    assert all("/images/val/" in row["path"] for row in rows)  # the test split is ImageNet's val folder
    with pytest.raises(ValueError, match="pass either --data FOLDER .* or --dataset NAME with --root DATA"):
        main(["zeroshot", "--model", "synthetic", "--dataset", "imagenet"])
    with pytest.raises(FileNotFoundError, match="needs"):  # a wrong root fails before the model loads
        main(["zeroshot", "--model", "no-such-model", "--dataset", "dtd", "--root", str(tmp_path)])
