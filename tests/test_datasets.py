"""Tests of tinyprompt.data.datasets and the entry kinds it registers (tinyprompt.data.multilabel_sets,
tinyprompt.data.vp_targets): every registry entry on a tiny copy of its official layout, and the errors."""
import functools
import io
import json
import os
import pickle
from collections.abc import Mapping

import numpy as np
import pytest

from tinyprompt.commands.cli import main
from tinyprompt.data.datasets import DATASETS, AircraftLists, NumberedFolders, SplitFile, WnidFolders, get_dataset, load
from tinyprompt.data.folder import open_image
from tinyprompt.data.multilabel import VOC_CLASSES
from tinyprompt.data.multilabel_sets import COCOInstances, MultiLabelEntry, NUSWIDELists, VOCDevkit
from tinyprompt.data.splits import ImageDataset, Item
from tinyprompt.data.vp_targets import CifarPickles, GTSRBFolders, SvhnMat
from tinyprompt.templates import CUSTOM_TEMPLATES
from test_matfile import write_mat

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

# VOC 2007: image id -> (split, its objects as (class, difficult)); 000004's cat is difficult only, so a negative
VOC = {"000005": ("train", [("chair", 0), ("chair", 1)]), "000007": ("val", [("car", 0)]),
       "000001": ("test", [("dog", 0), ("person", 0)]), "000004": ("test", [("cat", 1)])}
# COCO 2014: category ids as COCO numbers them; per split, image id -> the category ids of its annotations
COCO_CATEGORIES = [("person", 1, "person"), ("vehicle", 3, "car"), ("animal", 18, "dog")]
COCO = {"train2014": {9: [1, 18, 18]}, "val2014": {42: [18, 18], 73: [3], 74: []}}  # 74: no objects, kept
# NUS-WIDE: 3 of its 81 concepts; per split, (image list line, its 0/1 label per concept)
NUS_CONCEPTS = ["airport", "animal", "beach"]
NUS = {"Train": [("actor\\0001_2124494179.jpg", "010")],
       "Test": [("adobehouses\\0002_48231235.jpg", "110"), ("beach\\0003_2214712340.jpg", "001")]}
CIFAR_NAMES = {"cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
               "cifar100": ["apple", "aquarium_fish", "maple_tree"]}  # 3 of CIFAR-100's 100, two with '_'
GTSRB_TEST = [("00000.ppm", 16), ("00001.ppm", 1), ("00002.ppm", 42)]  # GT-final_test.csv: file, ClassId
GTSRB_COLUMNS = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"


@functools.cache
def encoded(suffix: str) -> bytes:
    buffer = io.BytesIO()
    PIL.new("RGB", (2, 2), (10, 200, 30)).save(buffer, {".png": "PNG", ".ppm": "PPM"}.get(suffix, "JPEG"))
    return buffer.getvalue()


def write_image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded(path.suffix.lower()))


def write_classnames(home, classes):
    home.mkdir(parents=True, exist_ok=True)
    (home / "classnames.txt").write_text("".join(f"{wnid} {name}\n" for wnid, name in classes))


def write_voc(home):
    for split in ("train", "val", "trainval", "test"):
        ids = [image for image, (part, _) in VOC.items() if part in split]  # "trainval" holds train and val
        (home / "ImageSets/Main").mkdir(parents=True, exist_ok=True)
        (home / "ImageSets/Main" / f"{split}.txt").write_text("".join(f"{image}\n" for image in ids))
    for image, (_, objects) in VOC.items():
        body = "".join(f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated><difficult>{hard}"
                       f"</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object>"
                       for name, hard in objects)  # fmt: skip
        (home / "Annotations").mkdir(exist_ok=True)
        (home / "Annotations" / f"{image}.xml").write_text(
            f"<annotation><folder>VOC2007</folder><filename>{image}.jpg</filename>{body}</annotation>")
        write_image(home / "JPEGImages" / f"{image}.jpg")


def coco_instances(split, images):
    """A COCO instances file of `images` {image id: [category id per annotation]}, with COCO's fields."""
    return {"info": {"description": "COCO 2014 Dataset"}, "licenses": [],
            "images": [{"license": 1, "file_name": f"COCO_{split}_{image:012d}.jpg", "height": 2, "width": 2,
                        "id": image} for image in images],
            "annotations": [{"segmentation": [[1, 1, 2, 1, 2, 2]], "area": 1.0, "iscrowd": 0, "image_id": image,
                             "bbox": [1, 1, 1, 1], "category_id": category, "id": 100 * image + k}
                            for image, categories in images.items() for k, category in enumerate(categories)],
            "categories": [{"supercategory": sup, "id": cid, "name": name} for sup, cid, name in COCO_CATEGORIES]}


def write_coco(home):
    for split, images in COCO.items():
        (home / "annotations").mkdir(parents=True, exist_ok=True)
        (home / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco_instances(split, images)))
        for image in images:
            write_image(home / split / f"COCO_{split}_{image:012d}.jpg")


def write_nuswide(home):
    home.mkdir(parents=True)
    (home / "Concepts81.txt").write_text("\n".join(NUS_CONCEPTS) + "\n")
    for split, rows in NUS.items():
        (home / "ImageList").mkdir(exist_ok=True)
        (home / "ImageList" / f"{split}Imagelist.txt").write_text("".join(f"{line}\n" for line, _ in rows))
        for k, concept in enumerate(NUS_CONCEPTS):
            labels = home / "Groundtruth/TrainTestLabels" / f"Labels_{concept}_{split}.txt"
            labels.parent.mkdir(parents=True, exist_ok=True)
            labels.write_text("".join(f"{bits[k]}\n" for _, bits in rows))
        for line, _ in rows:
            write_image(home / "Flickr" / line.replace("\\", "/"))


def cifar_batches(name):
    """{file: the dict its pickle holds} of a tiny CIFAR: 2 images per training batch, 3 test images."""
    entry, names = DATASETS[name], CIFAR_NAMES[name]
    rng = np.random.default_rng(len(names))
    files = {}
    for k, batch in enumerate((*entry.train, entry.test)):
        n = 3 if batch == entry.test else 2
        files[batch] = {b"batch_label": f"batch {k}".encode(),
                        entry.labels: [(3 * k + i) % len(names) for i in range(n)],
                        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                        b"filenames": [f"image_{k}_{i}.png".encode() for i in range(n)]}  # fmt: skip
    files[entry.meta] = {entry.names: [name.encode() for name in names], b"num_vis": 3072}
    return files


def write_pickle(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(value, protocol=2))  # protocol 2, as the Python 2 originals


def python2_batch(pixels, labels) -> bytes:
    """A CIFAR batch as the official files hold it, pickled by Python 2's cPickle: str keys (opcode U), the
    array rebuilt by numpy.core.multiarray._reconstruct, its pixels one str (T), the labels a list of ints."""
    return (b"\x80\x02}U\x04data" b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
            b"(K\x01K" + bytes([len(pixels)]) + b"M\x00\x0c\x86"  # state: version 1, shape (N, 3072)
            b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"  # uint8
            b"\x89T" + pixels.nbytes.to_bytes(4, "little") + pixels.tobytes() + b"tbs"  # C order, the raw bytes
            b"U\x06labels](" + b"".join(b"K" + bytes([label]) for label in labels) + b"es.")


def write_gtsrb(home):
    for label in range(43):
        folder = home / "GTSRB/Training" / f"{label:05d}"
        write_image(folder / "00000_00000.ppm")
        (folder / f"GT-{label:05d}.csv").write_text(f"{GTSRB_COLUMNS}\n00000_00000.ppm;2;2;0;0;1;1;{label}\n")
    for image, _ in GTSRB_TEST:
        write_image(home / "GTSRB/Final_Test/Images" / image)
    (home / "GT-final_test.csv").write_text(
        f"{GTSRB_COLUMNS}\n" + "".join(f"{image};2;2;0;0;1;1;{label}\n" for image, label in GTSRB_TEST))


def build(name, root):
    """A tiny copy of dataset `name` in its official layout under the data root `root`; returns its folder."""
    entry = DATASETS[name]
    home = root / entry.folder
    if isinstance(entry, CifarPickles):
        for file, value in cifar_batches(name).items():
            write_pickle(home / file, value)
    elif isinstance(entry, SvhnMat):
        home.mkdir(parents=True)
        for file, (pixels, digits) in svhn_arrays().items():
            write_mat(home / file, {"X": pixels, "y": digits}, compact=("y",))
    elif isinstance(entry, VOCDevkit):
        write_voc(home)
    elif isinstance(entry, COCOInstances):
        write_coco(home)
    elif isinstance(entry, NUSWIDELists):
        write_nuswide(home)
    elif isinstance(entry, GTSRBFolders):
        write_gtsrb(home)
    elif isinstance(entry, SplitFile):
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
    coop = (SplitFile, AircraftLists, WnidFolders, NumberedFolders)
    assert {entry.official_name for entry in DATASETS.values() if isinstance(entry, coop)} == set(CUSTOM_TEMPLATES)
    assert {name for name, entry in DATASETS.items() if not isinstance(entry, coop)} == {
        "voc2007", "coco2014", "nuswide", "cifar10", "cifar100", "svhn", "gtsrb"}  # TaI-DPT's and ILM-VP's
    assert {name for name, entry in DATASETS.items() if entry.multilabel} == {"voc2007", "coco2014", "nuswide"}
    assert all(isinstance(entry, MultiLabelEntry) == entry.multilabel for entry in DATASETS.values())
    assert set(SPLIT_CASES) == {name for name, entry in DATASETS.items() if isinstance(entry, SplitFile)}
    assert get_dataset("OxfordFlowers") is get_dataset("oxford-flowers") is DATASETS["oxford_flowers"]
    assert get_dataset("ImageNet-A") is DATASETS["imagenet_a"] and get_dataset("IMAGENETV2") is DATASETS["imagenetv2"]
    assert DATASETS["caltech101"].layout == "caltech-101/{101_ObjectCategories/, split_zhou_Caltech101.json}"
    assert DATASETS["imagenet"].layout == "imagenet/{images/train/, images/val/, classnames.txt}"
    assert get_dataset("NUS-WIDE") is DATASETS["nuswide"] and get_dataset("CIFAR-100") is DATASETS["cifar100"]
    assert DATASETS["voc2007"].layout == "VOCdevkit/VOC2007/{Annotations/, JPEGImages/, ImageSets/Main/test.txt}"
    assert DATASETS["coco2014"].layout == "COCO/{annotations/instances_val2014.json, val2014/}"
    assert DATASETS["cifar100"].layout == "cifar-100-python/{train, test, meta}"
    with pytest.raises(ValueError, match="unknown dataset 'mnist': use one of imagenet, caltech101, .*, gtsrb$"):
        get_dataset("mnist")


def svhn_arrays():
    """{file: (X, y)} of a tiny SVHN: X uint8 (32, 32, 3, N), y (N, 1) the digit with 10 for 0, as the .mat holds."""
    rng = np.random.default_rng(5)
    return {file: (rng.integers(0, 256, (32, 32, 3, len(digits)), dtype=np.uint8), np.array(digits, float)[:, None])
            for file, digits in (("train_32x32.mat", [10, 3, 7, 1]), ("test_32x32.mat", [5, 10, 9]))}  # fmt: skip


def test_svhn_decodes_its_mat_files_into_pngs_in_the_cache(tmp_path, monkeypatch):
    """SVHN's MAT-files (MATLAB -v7: compressed, 'y' stored compactly) read without scipy, as torchvision reads them:
    image n is X[:, :, :, n] (H, W, RGB), the digit 10 is label 0; the names are ILM-VP's, '0'..'9'."""
    monkeypatch.setenv("TINYPROMPT_CACHE", str(tmp_path / "cache"))
    home = build("svhn", tmp_path / "data")
    assert get_dataset("SVHN") is DATASETS["svhn"]
    assert DATASETS["svhn"].layout == "svhn/{train_32x32.mat, test_32x32.mat}"
    splits, classnames = load("svhn", tmp_path / "data")
    assert classnames == [str(d) for d in range(10)] and splits["val"] == []
    for split, (pixels, digits) in zip(("train", "test"), svhn_arrays().values()):
        want = [int(d) % 10 for d in digits[:, 0]]
        assert [(item.label, item.classname) for item in splits[split]] == [(k, str(k)) for k in want]
        for n, item in enumerate(splits[split]):
            assert item.path.startswith(str(tmp_path / "cache" / "datasets" / "svhn"))
            assert np.array_equal(np.asarray(open_image(item.path)), pixels[:, :, :, n])  # exact
    assert sorted(p.name for p in home.iterdir()) == ["test_32x32.mat", "train_32x32.mat"]  # nothing written there


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


def _rows(data):
    """(image file name, [class names]) per image of a MultiLabelData."""
    return [(path.rsplit("/", 1)[1], [data.classnames[k] for k in row.nonzero().flatten().tolist()])
            for path, row in zip(data.paths, data.labels)]


def test_voc2007_reads_vocs_splits(tmp_path):
    home = build("voc2007", tmp_path)
    splits, classnames = load("voc2007", tmp_path)
    assert isinstance(splits, Mapping) and list(splits) == ["train", "val", "test"]
    assert classnames == list(VOC_CLASSES) == splits["test"].classnames
    assert _rows(splits["test"]) == [("000001.jpg", ["dog", "person"]), ("000004.jpg", [])]  # difficult cat: negative
    assert splits["test"].paths[0] == str(home / "JPEGImages" / "000001.jpg")
    assert _rows(splits["train"]) == [("000005.jpg", ["chair"])] and _rows(splits["val"]) == [("000007.jpg", ["car"])]


def test_coco2014_tests_on_val2014(tmp_path):
    home = build("coco2014", tmp_path)
    splits, classnames = load("coco2014", tmp_path)
    assert classnames == ["person", "car", "dog"]  # the order of "categories", not of their ids
    test = splits["test"]
    assert test.paths == [str(home / "val2014" / f"COCO_val2014_{image:012d}.jpg") for image in (42, 73, 74)]
    assert test.labels.tolist() == [[0, 0, 1], [0, 1, 0], [0, 0, 0]]  # an image without objects is kept
    assert splits["val"] is None  # COCO's val2014 is the test split: nothing to tune on
    assert _rows(splits["train"]) == [("COCO_train2014_000000000009.jpg", ["person", "dog"])]


def test_multilabel_train_split_is_read_when_used(tmp_path):
    """Evaluating needs only the test split: the train files may be absent until the train split is asked for."""
    home = build("coco2014", tmp_path)
    (home / "annotations/instances_train2014.json").unlink()
    splits, _ = load("coco2014", tmp_path)
    assert len(splits["test"]) == 3
    with pytest.raises(FileNotFoundError, match=r"COCO/annotations/instances_train2014.json does not exist: COCO2014 "
                                                r"needs .*COCO/\{annotations/instances_train2014.json, train2014/\}"):
        splits["train"]
    shuffled = coco_instances("train2014", COCO["train2014"])
    shuffled["categories"].reverse()  # another release's class order would silently permute the labels
    (home / "annotations/instances_train2014.json").write_text(json.dumps(shuffled))
    with pytest.raises(ValueError, match=r"COCO2014's train2014 split has classes \['dog', 'car', 'person'\]\.\.\., "
                                         r"its val2014 split \['person', 'car', 'dog'\]"):
        load("coco2014", tmp_path)[0]["train"]


def test_nuswide_reads_the_concept_label_files(tmp_path):
    home = build("nuswide", tmp_path)
    splits, classnames = load("nuswide", tmp_path)
    assert classnames == NUS_CONCEPTS
    test = splits["test"]
    assert test.paths == [str(home / "Flickr" / line.replace("\\", "/")) for line, _ in NUS["Test"]]  # '\\' read as '/'
    assert test.paths[0] == str(home / "Flickr/adobehouses/0002_48231235.jpg")
    assert test.labels.tolist() == [[1, 1, 0], [0, 0, 1]]
    assert splits["val"] is None and splits["train"].labels.tolist() == [[0, 1, 0]]


def test_nuswide_as_taidpts_readme_draws_it_reads_the_same(tmp_path):
    """TaI-DPT's README puts TrainTestLabels/ directly under NUSWIDE/ (NUS-WIDE's zip: under Groundtruth/)."""
    build("nuswide", tmp_path / "official")
    home = build("nuswide", tmp_path / "readme")
    _nuswide_as_taidpt_draws_it(home)
    for split in ("train", "test"):
        official, readme = load("nuswide", tmp_path / "official")[0][split], load("nuswide", tmp_path / "readme")[0][split]
        assert readme.labels.tolist() == official.labels.tolist() and readme.classnames == official.classnames
    (home / "TrainTestLabels").rename(home / "Labels")  # in neither place: the official place is named
    with pytest.raises(FileNotFoundError, match=r"NUSWIDE/Groundtruth/TrainTestLabels does not exist"):
        load("nuswide", tmp_path / "readme")


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_decodes_its_pickles_into_pngs_in_the_cache(tmp_path, monkeypatch, name):
    monkeypatch.setenv("TINYPROMPT_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    build(name, root)
    before = sorted(root.rglob("*"))
    splits, classnames = load(name, root)
    assert sorted(root.rglob("*")) == before  # nothing written into the data root
    assert classnames == [n.replace("_", " ") for n in CIFAR_NAMES[name]]  # 'aquarium_fish' -> 'aquarium fish'
    batches, entry = cifar_batches(name), DATASETS[name]
    for split, files in (("train", entry.train), ("test", (entry.test,))):
        labels = [label for file in files for label in batches[file][entry.labels]]
        assert [(item.label, item.classname) for item in splits[split]] == [(k, classnames[k]) for k in labels]
        pixels = np.concatenate([batches[file][b"data"] for file in files]).reshape(-1, 3, 32, 32)
        for item, image in zip(splits[split], pixels, strict=True):
            assert item.path.startswith(str(tmp_path / "cache" / "datasets" / entry.folder))
            assert np.array_equal(np.asarray(open_image(item.path)), image.transpose(1, 2, 0))  # (H, W, RGB), exact
    assert (len(splits["train"]), splits["val"], len(splits["test"])) == (2 * len(entry.train), [], 3)
    image, label = ImageDataset(splits["test"])[2]  # what every consumer of Items does
    assert (image.size, label) == ((32, 32), splits["test"][2].label)
    stamps = [(item.path, os.stat(item.path).st_mtime_ns) for item in splits["test"]]  # what the feature cache keys on
    again, _ = load(name, root)  # decoded once: the second load finds the same files, not rewritten
    assert [(item.path, os.stat(item.path).st_mtime_ns) for item in again["test"]] == stamps


def test_cifar_reads_the_python2_pickles_of_the_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYPROMPT_CACHE", str(tmp_path / "cache"))
    home = build("cifar10", tmp_path)
    pixels = np.random.default_rng(1).integers(0, 256, (2, 3072), dtype=np.uint8)
    (home / "test_batch").write_bytes(python2_batch(pixels, [7, 3]))
    test = load("cifar10", tmp_path)[0]["test"]
    assert [(item.label, item.classname) for item in test] == [(7, "horse"), (3, "cat")]
    assert np.array_equal(np.asarray(open_image(test[1].path)), pixels[1].reshape(3, 32, 32).transpose(1, 2, 0))


def test_gtsrb_uses_ilmvp_class_names(tmp_path):
    home = build("gtsrb", tmp_path)
    splits, classnames = load("gtsrb", tmp_path)
    assert len(classnames) == 43
    assert (classnames[0], classnames[6], classnames[14], classnames[42]) == (
        "20 speed", "80 lifted", "stop", "lifted no overtaking trucks")  # ILM-VP's names, '_' -> ' '
    assert [item.label for item in splits["train"]] == list(range(43))  # the folder number is the label
    assert splits["train"][16] == Item(str(home / "GTSRB/Training/00016/00000_00000.ppm"), 16, classnames[16])
    assert splits["val"] == []
    assert splits["test"] == [Item(str(home / "GTSRB/Final_Test/Images" / image), label, classnames[label])
                              for image, label in GTSRB_TEST]
    assert open_image(splits["test"][0].path).size == (2, 2)


def _rewrite_pickle(file, **entries):
    """Rewrite one CIFAR pickle of the tiny copy with some entries replaced (keys as str, written as bytes)."""
    def damage(home):
        value = pickle.loads((home / file).read_bytes(), encoding="bytes")
        write_pickle(home / file, {**value, **{key.encode(): entry for key, entry in entries.items()}})
    return damage


def _nuswide_as_taidpt_draws_it(home):
    (home / "Groundtruth/TrainTestLabels").rename(home / "TrainTestLabels")
    (home / "Groundtruth").rmdir()


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
    ("voc2007", None, FileNotFoundError, (r"VOCdevkit/VOC2007 does not exist: VOC2007 needs .*VOCdevkit/VOC2007/"
                                          r"\{Annotations/, JPEGImages/, ImageSets/Main/test.txt\}, with root .* "
                                          r"\(TaI-DPT's README\)")),
    ("voc2007", lambda home: (home / "Annotations/000004.xml").unlink(), FileNotFoundError,
     r"test.txt lists image '000004', whose annotation .*Annotations/000004.xml does not exist"),
    ("coco2014", lambda home: (home / "annotations/instances_val2014.json").unlink(), FileNotFoundError,
     r"COCO/annotations/instances_val2014.json does not exist: COCO2014 needs .*COCO/\{annotations/instances_val2014"),
    ("coco2014", lambda home: (home / "val2014/COCO_val2014_000000000073.jpg").unlink(), FileNotFoundError,
     r"instances_val2014.json: image id 73 refers to image .*COCO_val2014_000000000073.jpg, which does not exist"),
    ("nuswide", lambda home: (home / "Concepts81.txt").unlink(), FileNotFoundError,
     r"NUSWIDE/Concepts81.txt does not exist: NUS-WIDE needs .*NUSWIDE/\{Concepts81.txt, ImageList/TestImagelist"),
    ("cifar10", lambda home: (home / "data_batch_3").unlink(), FileNotFoundError,
     (r"data_batch_3 does not exist: CIFAR10 needs .*cifar-10-batches-py/\{data_batch_1, .*, test_batch, "
      r"batches.meta\}, with root .* \(torchvision's CIFAR root\)")),
    ("cifar10", lambda home: (home / "test_batch").write_bytes(b"<html>Not Found</html>"), ValueError,
     r"cifar-10-batches-py/test_batch is not a CIFAR python pickle \(UnpicklingError"),
    ("cifar10", _rewrite_pickle("data_batch_2", data=np.zeros((2, 32, 32, 3), np.uint8)), ValueError,
     r"data_batch_2: b'data' is uint8 \(2, 32, 32, 3\), not uint8 \(N, 3072\)"),
    ("cifar100", lambda home: (home / "meta").unlink(), FileNotFoundError, r"meta does not exist: CIFAR100 needs"),
    ("cifar100", _rewrite_pickle("test", fine_labels=[0, 5, 1]), ValueError,
     r"cifar-100-python/test: b'fine_labels' holds \[5\], not labels 0..2 of the 3 classes of meta"),
    ("cifar100", lambda home: write_pickle(home / "meta", {b"label_names": [b"apple"]}), ValueError,  # CIFAR-10's
     r"meta has no b'fine_label_names' entry"),
    ("svhn", lambda home: (home / "test_32x32.mat").unlink(), FileNotFoundError,
     (r"svhn/test_32x32.mat does not exist: SVHN needs .*svhn/\{train_32x32.mat, test_32x32.mat\}, with root .* "
      r"\(torchvision's SVHN root\)")),
    ("svhn", lambda home: write_mat(home / "train_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8),
                                                                "y": np.array([[1.0], [11.0]])}), ValueError,
     r"train_32x32.mat: 'y' must hold one digit 1..10 per image \(2\), it holds 2 values in \[1.0, 11.0\]"),
    ("svhn", lambda home: write_mat(home / "test_32x32.mat", {"X": np.zeros((32, 32, 2), np.uint8)}), ValueError,
     r"test_32x32.mat holds no array named y: use the original download"),
    ("gtsrb", lambda home: (home / "GT-final_test.csv").unlink(), FileNotFoundError,
     (r"gtsrb/GT-final_test.csv does not exist: GTSRB needs .*gtsrb/\{GTSRB/Training/, GTSRB/Final_Test/Images/, "
      r"GT-final_test.csv\}, with root .* \(torchvision's GTSRB root\)")),
    ("gtsrb", lambda home: (home / "GTSRB/Training/00042").rename(home / "GTSRB/Training/00043"), ValueError,
     r"Training must hold the 43 class folders 00000..00042: it has \['00043'\] extra and lacks \['00042'\]"),
    ("gtsrb", lambda home: (home / "GTSRB/Final_Test/Images/00001.ppm").unlink(), FileNotFoundError,
     r"GT-final_test.csv line 3 lists '00001.ppm', but .*Final_Test/Images/00001.ppm does not exist"),
    ("gtsrb", lambda home: (home / "GT-final_test.csv").write_text(f"{GTSRB_COLUMNS}\n00000.ppm;2;2;0;0;1;1;43\n"),
     ValueError, r"GT-final_test.csv line 2: ClassId '43' is not a label 0..42"),
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
