"""The dataset registry: `load(name, root)` reads a benchmark of the prompt-learning tables from its official layout.

CoOp ("Learning to Prompt for Vision-Language Models", arXiv 2109.01134) fixes, in its DATASETS.md and
`datasets/*.py`, where 11 image-classification datasets and 4 ImageNet variants live under one data root
and how their splits and class names are read; this module holds those entry kinds (`SplitFile`,
`AircraftLists`, `WnidFolders`, `NumberedFolders`) and the registry. `root` is that data root (CoOp's
DATASET.ROOT), e.g.

    $DATA/
      imagenet/       images/train/<wnid>/*.JPEG, images/val/<wnid>/*.JPEG, classnames.txt ("n01440764 tench")
      caltech-101/    101_ObjectCategories/<class>/*.jpg, split_zhou_Caltech101.json
      imagenetv2/     imagenetv2-matched-frequency-format-val/<0..999>/*.jpeg, classnames.txt

The same root holds the multi-label sets of TaI-DPT ("Texts as Images in Prompt Tuning for Multi-Label Image
Recognition", arXiv 2211.12739; the layout of its README: VOCdevkit/VOC2007/, COCO/, NUSWIDE/; entry kinds
in `tinyprompt.data.multilabel_sets`) and the targets of ILM-VP ("Understanding and Improving Visual
Prompting: A Label-Mapping Perspective", arXiv 2211.11635) in torchvision's layouts (cifar-10-batches-py/,
cifar-100-python/, svhn/, gtsrb/; entry kinds in `tinyprompt.data.vp_targets`), the root being torchvision's
`root`.

`DATASETS[name].layout` spells each dataset's layout; a missing file or folder is reported with it (the
`Entry` base, `tinyprompt.data.entry`). `load` returns ({"train" | "val" | "test": list of `Item`s}, class
names ordered by label). The ImageNet variants are test sets only (empty train and val); ImageNet-A and -R
hold 200 of the 1000 classes, labelled 0..199, and `DATASETS[name].imagenet_labels(root)` gives each one's
ImageNet label. Entries with `multilabel` True return a `MultiLabelData` (tinyprompt.data.multilabel) or None
per split instead, "test" being the split TaI-DPT evaluates on. CIFAR's and SVHN's images are arrays inside
pickles / MAT-files: they are decoded once into PNG files in the tinyprompt cache, so that their Items are
ordinary image files.
"""
import os
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from tinyprompt.data.entry import Entry, class_folder_items
from tinyprompt.data.folder import find_classes
from tinyprompt.data.largelabel import read_class_names
from tinyprompt.data.multilabel_sets import COCOInstances, NUSWIDELists, VOCDevkit
from tinyprompt.data.splits import SPLITS, Item, classnames_from_items, read_split_file
from tinyprompt.data.vp_targets import GTSRB_CLASSES, CifarPickles, GTSRBFolders, SvhnMat

__all__ = ["SplitFile", "AircraftLists", "WnidFolders", "NumberedFolders", "DATASETS", "get_dataset", "load"]


@dataclass(frozen=True)
class SplitFile(Entry):
    """CoOp's split file <folder>/split_zhou_<official_name>.json, its paths relative to <folder>/<images>/.

    Class names are the file's, with `renames` applied: CoOp renamed these classes when it wrote its split
    files (NEW_CNAMES), so a split written from the raw folder names reads the same.
    """

    images: str  # the folder the split's paths start from ("" = the dataset folder itself)
    renames: dict = field(default_factory=dict)  # class folder name -> CoOp's class name

    @property
    def split_file(self) -> str:
        return f"split_zhou_{self.official_name}.json"

    def needs(self) -> tuple:
        images = (f"{self.images}/",) if self.images else ()
        return (*images, self.split_file)

    def read(self, home: Path) -> tuple:
        raw = read_split_file(home / self.split_file, home / self.images)
        splits = {split: [item._replace(classname=self.renames.get(item.classname, item.classname)) for item in items]
                  for split, items in raw.items()}
        return splits, classnames_from_items(splits["train"])


@dataclass(frozen=True)
class AircraftLists(Entry):
    """FGVC-Aircraft's own lists, which CoOp reads instead of a split file: variants.txt (one class name per
    line, in label order) and images_variant_{train,val,test}.txt ('<image id> <variant>' lines), images
    at images/<image id>.jpg."""

    def needs(self) -> tuple:
        return ("images/", "variants.txt", *(f"images_variant_{split}.txt" for split in SPLITS))

    def read(self, home: Path) -> tuple:
        variants = home / "variants.txt"
        classnames = [line.strip() for line in variants.read_text(encoding="utf-8").splitlines() if line.strip()]
        label_of = {name: label for label, name in enumerate(classnames)}
        splits = {}
        for split in SPLITS:
            path, items = home / f"images_variant_{split}.txt", []
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                image_id, _, variant = line.strip().partition(" ")  # variants have spaces: "Cessna 172"
                if not image_id:
                    continue
                if variant not in label_of:
                    raise ValueError(f"{path} line {number}: variant {variant!r} is not in {variants}: use the lists "
                                     f"of one fgvc-aircraft-2013b download")
                image = home / "images" / f"{image_id}.jpg"
                if not image.is_file():
                    raise FileNotFoundError(f"{path} line {number} lists image {image_id!r}, but {image} does not "
                                            f"exist: restore the images/ folder of fgvc-aircraft-2013b")
                items.append(Item(os.path.abspath(image), label_of[variant], variant))
            splits[split] = items
        return splits, classnames


def _imagenet_names(home: Path) -> dict:
    """{wnid: name} of ImageNet's classes in label order, from CoOp's classnames.txt ('n01440764 tench' lines)."""
    path = home / "classnames.txt"
    names = read_class_names(path, sep=" ")
    wnids = list(names)
    for before, after in pairwise(wnids):
        if after < before:  # CoOp labels the sorted class folders; V2's folder i and A/R's mapping index this order
            raise ValueError(f"{path} lists {after!r} after {before!r}: ImageNet's labels are its wnids in sorted "
                             f"order, the order of CoOp's classnames.txt; sort the file")
    return names


def _check_folders(folder: Path, found: list, expected, subset: bool, source: str) -> None:
    """Every class folder `found` under `folder` is `expected`; unless `subset`, every expected one is found."""
    unknown = [name for name in found if name not in expected]
    if unknown:
        raise ValueError(f"{folder} has class folders {unknown[:5]} that {source} does not list: remove them, or "
                         f"put the dataset's own classnames.txt beside it")
    missing = [] if subset else sorted(set(expected) - set(found))
    if missing:
        raise ValueError(f"{folder} has no folder for {len(missing)} classes of {source}, e.g. {missing[:5]}: restore "
                         f"them (without them the labels would not be ImageNet's)")


@dataclass(frozen=True)
class WnidFolders(Entry):
    """ImageNet or a variant with class folders named by wnid, <folder>/<test>/<wnid>/*, named through the
    ImageNet classnames.txt beside them (CoOp copies it into each variant's folder)."""

    test: str  # the test split's folder (ImageNet: its val set, the standard test set)
    train: str = ""  # the train split's folder ("" = a test-only variant)
    subset: bool = False  # ImageNet-A/R: 200 of the 1000 classes, labelled 0..199 in sorted-wnid order

    def needs(self) -> tuple:
        return (*(f"{split}/" for split in (self.train, self.test) if split), "classnames.txt")

    def _wnids(self, home: Path, folder: str, names: dict) -> list:
        """The wnids of home/folder's class folders in label order (sorted, as CoOp lists them)."""
        wnids = find_classes(home / folder)
        _check_folders(home / folder, wnids, names, self.subset, str(home / "classnames.txt"))
        return wnids

    def read(self, home: Path) -> tuple:
        names = _imagenet_names(home)
        splits = {split: [] for split in SPLITS}  # no val split (CoOp reuses test): nothing gets tuned on test images
        for split, folder in (("train", self.train), ("test", self.test)):
            if folder:
                wnids = self._wnids(home, folder, names)
                label_of = {wnid: label for label, wnid in enumerate(wnids)}
                splits[split] = class_folder_items(home / folder, label_of, [names[w] for w in wnids])
        return splits, classnames_from_items(splits["test"])

    def imagenet_labels(self, root) -> list:
        """ImageNet's label of each class, indexed by this dataset's label (ImageNet-A/R: 200 of 0..999)."""
        home = self.home(root)
        names = _imagenet_names(home)
        index = {wnid: label for label, wnid in enumerate(names)}
        return [index[wnid] for wnid in self._wnids(home, self.test, names)]


@dataclass(frozen=True)
class NumberedFolders(Entry):
    """ImageNet-V2: <folder>/<test>/<i>/*.jpeg holds ImageNet class i (numeric order 0, 1, 2, ..., not the
    string order 0, 1, 10, 100, ...), named by the ImageNet classnames.txt beside it."""

    test: str  # the folder of numbered class folders

    def needs(self) -> tuple:
        return f"{self.test}/", "classnames.txt"

    def read(self, home: Path) -> tuple:
        names = list(_imagenet_names(home).values())
        folder, label_of = home / self.test, {str(label): label for label in range(len(names))}
        _check_folders(folder, find_classes(folder), label_of, False,
                       f"{home / 'classnames.txt'} (folders 0..{len(names) - 1})")
        return {"train": [], "val": [], "test": class_folder_items(folder, label_of, names)}, names

    def imagenet_labels(self, root) -> list:
        """ImageNet's label of each class: the same label."""
        return list(range(len(_imagenet_names(self.home(root)))))


CALTECH101_RENAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
EUROSAT_RENAMES = {  # CoOp's descriptive names for the land-cover classes
    "AnnualCrop": "Annual Crop Land", "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road", "Industrial": "Industrial Buildings", "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land", "Residential": "Residential Buildings", "SeaLake": "Sea or Lake",
}

# name -> entry: CoOp's configs/datasets/*.yaml names with the folders and files of CoOp's DATASETS.md; TaI-DPT's
# multi-label sets in the folders of its README; ILM-VP's targets in torchvision's folders
DATASETS = {
    "imagenet": WnidFolders("imagenet", "ImageNet", test="images/val", train="images/train"),
    "caltech101": SplitFile("caltech-101", "Caltech101", images="101_ObjectCategories", renames=CALTECH101_RENAMES),
    "oxford_pets": SplitFile("oxford_pets", "OxfordPets", images="images"),
    "stanford_cars": SplitFile("stanford_cars", "StanfordCars", images=""),  # paths start cars_train/, cars_test/
    "oxford_flowers": SplitFile("oxford_flowers", "OxfordFlowers", images="jpg"),
    "food101": SplitFile("food-101", "Food101", images="images"),
    "fgvc_aircraft": AircraftLists("fgvc_aircraft", "FGVCAircraft"),
    "sun397": SplitFile("sun397", "SUN397", images="SUN397"),
    "dtd": SplitFile("dtd", "DescribableTextures", images="images"),
    "eurosat": SplitFile("eurosat", "EuroSAT", images="2750", renames=EUROSAT_RENAMES),
    "ucf101": SplitFile("ucf101", "UCF101", images="UCF-101-midframes"),
    "imagenetv2": NumberedFolders("imagenetv2", "ImageNetV2", test="imagenetv2-matched-frequency-format-val"),
    "imagenet_sketch": WnidFolders("imagenet-sketch", "ImageNetSketch", test="images"),
    "imagenet_a": WnidFolders("imagenet-adversarial", "ImageNetA", test="imagenet-a", subset=True),
    "imagenet_r": WnidFolders("imagenet-rendition", "ImageNetR", test="imagenet-r", subset=True),
    "voc2007": VOCDevkit("VOCdevkit/VOC2007", "VOC2007", splits={"train": "train", "val": "val", "test": "test"}),
    "coco2014": COCOInstances("COCO", "COCO2014", splits={"train": "train2014", "test": "val2014"}),
    "nuswide": NUSWIDELists("NUSWIDE", "NUS-WIDE", splits={"train": "Train", "test": "Test"}),
    "cifar10": CifarPickles("cifar-10-batches-py", "CIFAR10", train=tuple(f"data_batch_{k}" for k in range(1, 6)),
                            test="test_batch", meta="batches.meta", labels=b"labels", names=b"label_names"),
    "cifar100": CifarPickles("cifar-100-python", "CIFAR100", train=("train",), test="test", meta="meta",
                             labels=b"fine_labels", names=b"fine_label_names"),
    "svhn": SvhnMat("svhn", "SVHN"),
    "gtsrb": GTSRBFolders("gtsrb", "GTSRB", classnames=GTSRB_CLASSES),
}


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def get_dataset(name: str) -> Entry:
    """The entry of `name`: a key of DATASETS or an official name, in any case, '-' and '_' ignored."""
    for key, entry in DATASETS.items():
        if _key(name) in (_key(key), _key(entry.official_name)):
            return entry
    raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")


def load(name: str, root) -> tuple:
    """({"train" | "val" | "test": list of Items}, class names ordered by label) of dataset `name` under `root`;
    for a `multilabel` entry a mapping of the same keys to MultiLabelData or None, its splits read on first use."""
    entry = get_dataset(name)
    return entry.read(entry.home(root))
