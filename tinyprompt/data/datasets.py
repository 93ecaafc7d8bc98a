"""The dataset registry: `load(name, root)` reads a benchmark of the prompt-learning tables from its official layout.

CoOp ("Learning to Prompt for Vision-Language Models", arXiv 2109.01134) fixes, in its DATASETS.md and
`datasets/*.py`, where 11 image-classification datasets and 4 ImageNet variants live under one data root
and how their splits and class names are read. `root` is that data root (CoOp's DATASET.ROOT), e.g.

    $DATA/
      imagenet/       images/train/<wnid>/*.JPEG, images/val/<wnid>/*.JPEG, classnames.txt ("n01440764 tench")
      caltech-101/    101_ObjectCategories/<class>/*.jpg, split_zhou_Caltech101.json
      imagenetv2/     imagenetv2-matched-frequency-format-val/<0..999>/*.jpeg, classnames.txt

The same root holds the multi-label sets of TaI-DPT ("Texts as Images in Prompt Tuning for Multi-Label Image
Recognition", arXiv 2211.12739; the layout of its README: VOCdevkit/VOC2007/, COCO/, NUSWIDE/) and the
targets of ILM-VP ("Understanding and Improving Visual Prompting: A Label-Mapping Perspective", arXiv
2211.11635) in torchvision's layouts (cifar-10-batches-py/, cifar-100-python/, gtsrb/), the root being
torchvision's `root`. SVHN is not registered: its .mat files need scipy (`get_dataset("svhn")` says what to do).

`DATASETS[name].layout` spells each dataset's layout; a missing file or folder is reported with it.
`load` returns ({"train" | "val" | "test": list of `Item`s}, class names ordered by label). The ImageNet
variants are test sets only (empty train and val); ImageNet-A and -R hold 200 of the 1000 classes,
labelled 0..199, and `DATASETS[name].imagenet_labels(root)` gives each one's ImageNet label. Entries with
`multilabel` True return a `MultiLabelData` (tinyprompt.data.multilabel) or None per split instead, "test"
being the split TaI-DPT evaluates on. CIFAR's images are arrays inside pickles: they are decoded once into
PNG files in the tinyprompt cache, so that their Items are ordinary image files (see `CifarPickles`).
"""
import csv
import hashlib
import os
import pickle
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import ClassVar

import numpy as np

from tinyprompt.data.folder import find_classes, list_images
from tinyprompt.data.largelabel import read_class_names
from tinyprompt.data.multilabel import read_coco_instances, read_nuswide, read_voc2007
from tinyprompt.data.splits import SPLITS, Item, classnames_from_items, read_split_file
from tinyprompt.io import cache_dir

__all__ = ["Entry", "SplitFile", "AircraftLists", "WnidFolders", "NumberedFolders", "MultiLabelEntry", "VOCDevkit",
           "COCOInstances", "NUSWIDELists", "CifarPickles", "GTSRBFolders", "DATASETS", "get_dataset", "load"]


@dataclass(frozen=True)
class Entry:
    """A registered dataset: its folder under the data root; each kind adds `needs()` and `read(home)`."""

    folder: str  # the dataset's folder under the data root (CoOp's dataset_dir)
    official_name: str  # its name in its official code: CoOp's class (a templates.CUSTOM_TEMPLATES key), torchvision's
    multilabel: ClassVar[bool] = False  # True: `load` gives MultiLabelData splits, not lists of Items
    source: ClassVar[str] = "CoOp's DATASETS.md"  # where the layout is specified, named in errors

    @property
    def layout(self) -> str:
        """What `load` reads, e.g. 'caltech-101/{101_ObjectCategories/, split_zhou_Caltech101.json}'."""
        return f"{self.folder}/{_braced(self.needs())}"

    def home(self, root) -> Path:
        """The dataset's folder under `root`, once every path of its layout is there."""
        home = Path(root) / self.folder
        self.require(home, self.needs())
        return home

    def require(self, home: Path, needs) -> None:
        """Every path of `needs` (relative to the dataset folder `home`) exists, or a FileNotFoundError naming it."""
        for path in (home, *(home / need for need in needs)):
            if not path.exists():
                raise FileNotFoundError(f"{path} does not exist: {self.official_name} needs {home}/{_braced(needs)}, "
                                        f"with root the folder that holds the dataset folders ({self.source})")


def _braced(needs) -> str:
    return f"{{{', '.join(needs)}}}"


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


def _items(folder: Path, label_of: dict, names: list) -> list:
    """The images of `folder`/<class folder>/ as Items labelled label_of[class folder], in label order."""
    classes, samples = list_images(folder)
    items = []
    for sample in samples:
        label = label_of[classes[sample.label]]
        items.append(Item(os.path.abspath(sample.path), label, names[label]))
    return sorted(items, key=lambda item: item.label)  # V2's folders list as 0, 1, 10, ...: put them in label order


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
                splits[split] = _items(home / folder, {w: i for i, w in enumerate(wnids)}, [names[w] for w in wnids])
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
        return {"train": [], "val": [], "test": _items(folder, label_of, names)}, names

    def imagenet_labels(self, root) -> list:
        """ImageNet's label of each class: the same label."""
        return list(range(len(_imagenet_names(self.home(root)))))


class _LazySplits(Mapping):
    """{"train" | "val" | "test": MultiLabelData or None} that reads a split on first access: an evaluation
    reads only the test split, and COCO's train split is ~330 MB of JSON, NUS-WIDE's 81 files of 161,789 labels."""

    def __init__(self, read, loaded: dict):
        self._read, self._loaded = read, dict(loaded)  # read(split) -> MultiLabelData or None

    def __getitem__(self, split: str):
        if split not in SPLITS:
            raise KeyError(f"no split {split!r}: the splits are {', '.join(SPLITS)}")
        if split not in self._loaded:
            self._loaded[split] = self._read(split)
        return self._loaded[split]

    def __iter__(self):
        return iter(SPLITS)

    def __len__(self) -> int:
        return len(SPLITS)


@dataclass(frozen=True)
class MultiLabelEntry(Entry):
    """A multi-label set in TaI-DPT's layout; each kind adds `files(split)` and `read_split(home, split)`.

    `splits` maps our split to the official one it reads; a split it does not map is None. The test split
    (what TaI-DPT evaluates on, and where the class names come from) is read by `load`, the others on first
    access, each after a check that its files are there.
    """

    multilabel: ClassVar[bool] = True
    source: ClassVar[str] = "TaI-DPT's README"
    splits: dict = field(default_factory=dict)  # "train" | "val" | "test" -> the official split's name

    def needs(self) -> tuple:
        return self.files(self.splits["test"])

    def read(self, home: Path) -> tuple:
        test = self.read_split(home, self.splits["test"])
        return _LazySplits(partial(self._read_other, home, test.classnames), {"test": test}), test.classnames

    def _read_other(self, home: Path, classnames: list, split: str):
        official = self.splits.get(split)
        if official is None:
            return None
        self.require(home, self.files(official))
        data = self.read_split(home, official)
        if data.classnames != classnames:  # COCO: each instances file lists its own categories
            raise ValueError(f"{self.official_name}'s {official} split has classes {data.classnames[:4]}..., its "
                             f"{self.splits['test']} split {classnames[:4]}...: put the files of one release in {home}")
        return data


@dataclass(frozen=True)
class VOCDevkit(MultiLabelEntry):
    """PASCAL VOC 2007, the folder TaI-DPT's VOC2007_distill reads ('VOCdevkit/VOC2007', VOCtrainval and
    VOCtest extracted into one VOCdevkit/):

        VOCdevkit/VOC2007/
          Annotations/<id>.xml                   objects: <name>, <difficult>
          ImageSets/Main/{train,val,test}.txt    image ids of each split (trainval.txt = train + val)
          JPEGImages/<id>.jpg

    Labels as `tinyprompt.data.multilabel.read_voc2007` reads them (difficult-only objects are negatives, as
    the official mAP scores them). VOC's train, val and test are ours; TaI-DPT evaluates on test.
    """

    def files(self, split: str) -> tuple:
        return "Annotations/", "JPEGImages/", f"ImageSets/Main/{split}.txt"

    def read_split(self, home: Path, split: str):
        return read_voc2007(home, split)


@dataclass(frozen=True)
class COCOInstances(MultiLabelEntry):
    """MS-COCO 2014, the folder TaI-DPT's COCO2014_distill reads ('COCO'):

        COCO/
          annotations/instances_{train,val}2014.json    COCO's instances files (2014 train/val annotations)
          train2014/COCO_train2014_<12-digit id>.jpg
          val2014/COCO_val2014_<12-digit id>.jpg

    Classes in the order of the file's "categories", images in the order of its "images"
    (`tinyprompt.data.multilabel.read_coco_instances`). COCO's test2014 has no labels: val2014 is the test
    split, as in TaI-DPT (and DualCoOp), and there is no val split.
    """

    def files(self, split: str) -> tuple:
        return f"annotations/instances_{split}.json", f"{split}/"

    def read_split(self, home: Path, split: str):
        return read_coco_instances(home / "annotations" / f"instances_{split}.json", home / split)


@dataclass(frozen=True)
class NUSWIDELists(MultiLabelEntry):
    """NUS-WIDE, the folder TaI-DPT's nuswide_distill_limit reads ('NUSWIDE'), with the label files where
    NUS-WIDE's own Groundtruth.zip puts them:

        NUSWIDE/
          Concepts81.txt                                   the 81 concepts, one a line, in label order
          ImageList/{Train,Test}Imagelist.txt              one image a line, 'actor\\0001_2124494179.jpg'
          Groundtruth/TrainTestLabels/Labels_<concept>_{Train,Test}.txt    one 0/1 per image of the list
          Flickr/<concept folder>/<image>.jpg

    TaI-DPT's README draws TrainTestLabels/ directly under NUSWIDE/; `read_nuswide` reads the official
    Groundtruth/TrainTestLabels/, and a TrainTestLabels/ in TaI-DPT's place is reported with the move to make.
    NUS-WIDE's Train and Test lists are our train and test; TaI-DPT evaluates on test.
    """

    def files(self, split: str) -> tuple:
        return "Concepts81.txt", f"ImageList/{split}Imagelist.txt", "Groundtruth/TrainTestLabels/", "Flickr/"

    def require(self, home: Path, needs) -> None:
        labels, official = home / "TrainTestLabels", home / "Groundtruth" / "TrainTestLabels"
        if labels.is_dir() and not official.exists():
            raise FileNotFoundError(f"{labels} is where TaI-DPT's README puts NUS-WIDE's label files, but they are "
                                    f"read from {official}, where NUS-WIDE's Groundtruth.zip puts them: move it there")
        super().require(home, needs)

    def read_split(self, home: Path, split: str):
        return read_nuswide(home, split)


def _ilmvp_name(name: str) -> str:
    """ILM-VP's refine_classnames (data/prepare_data.py): 'aquarium_fish' -> 'aquarium fish'."""
    return name.lower().replace("_", " ").replace("-", " ")


def _unpickle(path: Path, raw: bytes) -> dict:
    """One CIFAR file as CIFAR's page reads it in Python 3, pickle.load(f, encoding="bytes"): keys are bytes.
    (Unpickling runs code the file names: read only the official download.)"""
    try:
        batch = pickle.loads(raw, encoding="bytes")  # bytes: the Python 2 strings stay bytes, numpy data intact
    except Exception as e:  # a damaged pickle fails in any of a dozen ways (UnpicklingError, EOFError, ...)
        raise ValueError(f"{path} is not a CIFAR python pickle ({type(e).__name__}: {e}): extract it again from "
                         f"the python version of the download") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path} holds a {type(batch).__name__}, not CIFAR's dict: extract it again from the "
                         f"python version of the download")
    return batch


def _entry(batch: dict, key: bytes, path: Path):
    if key not in batch:
        raise ValueError(f"{path} has no {key!r} entry (it has {sorted(batch)}): it is not the file of that name "
                         f"in the python version of the download")
    return batch[key]


def _write_pngs(folder: Path, images: dict) -> None:
    """folder/<split>/<index>.png for images {split: (N, 32, 32, 3) uint8}, written into a temporary folder
    beside `folder` and renamed to it when complete: `folder` exists only whole."""
    try:
        from PIL import Image  # optional dependency: only decoding images needs it
    except ImportError as e:
        raise ImportError("decoding CIFAR into PNG files needs Pillow: pip install 'tinyprompt[images]'") from e
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        for split, pixels in images.items():
            (tmp / split).mkdir()
            for index, image in enumerate(pixels):
                Image.fromarray(np.ascontiguousarray(image)).save(tmp / split / f"{index:05d}.png", format="PNG")
        try:
            os.rename(tmp, folder)
        except OSError:
            if not folder.is_dir():  # else another process (e.g. a DDP rank) renamed its identical copy first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename; else a half-written or a second copy


@dataclass(frozen=True)
class CifarPickles(Entry):
    """CIFAR-10 or CIFAR-100 in the official python pickles, torchvision's layout under the root:

        cifar-10-batches-py/    data_batch_1 .. data_batch_5, test_batch, batches.meta (b"label_names")
        cifar-100-python/       train, test, meta (b"fine_label_names")

    Each batch is a dict with b"data", uint8 (N, 3072) (the 1024 red, then green, then blue values of a
    32x32 image, row-major), and the labels b"labels" (CIFAR-10) or b"fine_labels" (CIFAR-100). Class names
    are the meta file's, refined as ILM-VP does ('aquarium_fish' -> 'aquarium fish'); no val split.

    The images are not files, and every consumer of Items opens `item.path` (ImageDataset) or keys on its
    size and mtime (the feature cache); so, rather than a special path scheme those would all have to learn,
    the pickles are decoded once (about 20 s for 60,000 images) into PNG files (lossless: the same pixels) in
    the tinyprompt cache, `cache_dir()/datasets/<folder>/<sha256 of the pickles, 16 hex>/{train,test}/<index>.png`,
    never in the data root. Every `load` reads the pickles (to hash them, and for the labels), not the PNGs.
    """

    train: tuple  # the training batches, in order
    test: str  # the test batch
    meta: str  # the file with the class names
    labels: bytes  # the key of a batch's labels
    names: bytes  # the key of the meta file's class names
    source: ClassVar[str] = "torchvision's CIFAR root"

    def needs(self) -> tuple:
        return (*self.train, self.test, self.meta)

    def read(self, home: Path) -> tuple:
        digest, files = hashlib.sha256(), {}
        for name in self.needs():
            raw = (home / name).read_bytes()
            digest.update(f"{name}:{len(raw)}:".encode() + raw)
            files[name] = _unpickle(home / name, raw)
        classnames = [_ilmvp_name(name.decode()) for name in _entry(files[self.meta], self.names, home / self.meta)]
        images, labels = {}, {}
        for split, batches in (("train", self.train), ("test", (self.test,))):
            parts = [self._batch(home / name, files[name], len(classnames)) for name in batches]
            images[split] = np.concatenate([data for data, _ in parts]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            labels[split] = [label for _, part in parts for label in part]  # (N,) in file order
        folder = Path(os.path.abspath(cache_dir() / "datasets" / self.folder / digest.hexdigest()[:16]))
        if not folder.is_dir():
            _write_pngs(folder, images)
        splits = {split: [Item(str(folder / split / f"{index:05d}.png"), label, classnames[label])
                          for index, label in enumerate(labels[split])] for split in images}
        return {"train": splits["train"], "val": [], "test": splits["test"]}, classnames

    def _batch(self, path: Path, batch: dict, n_cls: int) -> tuple:
        """(data uint8 (N, 3072), labels list of N ints in 0..n_cls-1) of one batch, checked."""
        data, labels = _entry(batch, b"data", path), list(_entry(batch, self.labels, path))
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
            raise ValueError(f"{path}: b'data' is {getattr(data, 'dtype', type(data).__name__)} "
                             f"{getattr(data, 'shape', '')}, not uint8 (N, 3072): extract the file again")
        if len(labels) != len(data):
            raise ValueError(f"{path} has {len(data)} images but {len(labels)} {self.labels!r}: extract it again")
        wrong = [label for label in labels if not (isinstance(label, int) and 0 <= label < n_cls)]
        if wrong:
            raise ValueError(f"{path}: {self.labels!r} holds {wrong[:3]}, not labels 0..{n_cls - 1} of the "
                             f"{n_cls} classes of {self.meta}: use the files of one download")
        return data, labels


@dataclass(frozen=True)
class GTSRBFolders(Entry):
    """GTSRB in torchvision's layout (torchvision.datasets.GTSRB, the files of its download):

        gtsrb/
          GTSRB/Training/<class 00000..00042>/<track>_<image>.ppm    (and GT-<class>.csv, not read)
          GTSRB/Final_Test/Images/<image>.ppm
          GT-final_test.csv        'Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId' rows

    The training folder's number is the label; the test labels are the ClassId column. GTSRB ships no class
    names: `classnames` are ILM-VP's (GTSRB_LABEL_MAP in data/const.py), refined as ILM-VP does. No val split.
    """

    classnames: tuple  # by label: ILM-VP's names
    source: ClassVar[str] = "torchvision's GTSRB root"

    def needs(self) -> tuple:
        return "GTSRB/Training/", "GTSRB/Final_Test/Images/", "GT-final_test.csv"

    def read(self, home: Path) -> tuple:
        names = [_ilmvp_name(name) for name in self.classnames]
        train, folders = home / "GTSRB" / "Training", [f"{label:05d}" for label in range(len(names))]
        found = find_classes(train)
        if found != folders:
            extra, missing = sorted(set(found) - set(folders)), sorted(set(folders) - set(found))
            raise ValueError(f"{train} must hold the {len(folders)} class folders 00000..{folders[-1]}: it has "
                             f"{extra[:5]} extra and lacks {missing[:5]}; extract GTSRB-Training_fixed.zip again")
        label_of = {folder: label for label, folder in enumerate(folders)}
        return {"train": _items(train, label_of, names), "val": [], "test": self._test(home, names)}, names

    def _test(self, home: Path, names: list) -> list:
        path, images = home / "GT-final_test.csv", home / "GTSRB" / "Final_Test" / "Images"
        rows = csv.DictReader(path.read_text(encoding="utf-8").splitlines(), delimiter=";", skipinitialspace=True)
        if not {"Filename", "ClassId"} <= set(rows.fieldnames or ()):
            raise ValueError(f"{path} has columns {rows.fieldnames}, not GTSRB's 'Filename;...;ClassId': use the "
                             f"GT-final_test.csv of GTSRB_Final_Test_GT.zip")
        items = []
        for number, row in enumerate(rows, 2):
            filename, label = row["Filename"] or "", row["ClassId"] or ""  # None: a short row
            if not (label.isdigit() and int(label) < len(names)):
                raise ValueError(f"{path} line {number}: ClassId {label!r} is not a label 0..{len(names) - 1}")
            image = images / filename
            if not image.is_file():
                raise FileNotFoundError(f"{path} line {number} lists {filename!r}, but {image} does not exist: "
                                        f"extract GTSRB_Final_Test_Images.zip into {home}")
            items.append(Item(os.path.abspath(image), int(label), names[int(label)]))
        return items


CALTECH101_RENAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
EUROSAT_RENAMES = {  # CoOp's descriptive names for the land-cover classes
    "AnnualCrop": "Annual Crop Land", "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road", "Industrial": "Industrial Buildings", "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land", "Residential": "Residential Buildings", "SeaLake": "Sea or Lake",
}

# GTSRB's 43 classes as ILM-VP names them: GTSRB_LABEL_MAP in OPTML-Group/ILM-VP data/const.py, verbatim
GTSRB_CLASSES = (
    "20_speed", "30_speed", "50_speed", "60_speed", "70_speed", "80_speed", "80_lifted", "100_speed", "120_speed",
    "no_overtaking_general", "no_overtaking_trucks", "right_of_way_crossing", "right_of_way_general", "give_way",
    "stop", "no_way_general", "no_way_trucks", "no_way_one_way", "attention_general", "attention_left_turn",
    "attention_right_turn", "attention_curvy", "attention_bumpers", "attention_slippery", "attention_bottleneck",
    "attention_construction", "attention_traffic_light", "attention_pedestrian", "attention_children",
    "attention_bikes", "attention_snowflake", "attention_deer", "lifted_general", "turn_right", "turn_left",
    "turn_straight", "turn_straight_right", "turn_straight_left", "turn_right_down", "turn_left_down", "turn_circle",
    "lifted_no_overtaking_general", "lifted_no_overtaking_trucks",
)

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
    "gtsrb": GTSRBFolders("gtsrb", "GTSRB", classnames=GTSRB_CLASSES),
}

# names that are deliberately not registered -> why, and what to do instead
UNREGISTERED = {
    "svhn": "SVHN's official files (train_32x32.mat, test_32x32.mat) are MATLAB v5 files, which only scipy reads, "
            "and tinyprompt does not depend on scipy: convert them once (scipy.io.loadmat: 'X' is (32, 32, 3, N) "
            "uint8, 'y' holds 10 for the digit 0) into a folder per class, svhn/{train,test}/<digit>/*.png, then "
            "pass --data ROOT/svhn to a recipe or --data ROOT/svhn/test to zeroshot",
}


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def get_dataset(name: str) -> Entry:
    """The entry of `name`: a key of DATASETS or an official name, in any case, '-' and '_' ignored."""
    for key, entry in DATASETS.items():
        if _key(name) in (_key(key), _key(entry.official_name)):
            return entry
    if _key(name) in UNREGISTERED:
        raise ValueError(f"dataset {name!r} is not registered: {UNREGISTERED[_key(name)]}")
    raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")


def load(name: str, root) -> tuple:
    """({"train" | "val" | "test": list of Items}, class names ordered by label) of dataset `name` under `root`;
    for a `multilabel` entry a mapping of the same keys to MultiLabelData or None, its splits read on first use."""
    entry = get_dataset(name)
    return entry.read(entry.home(root))
