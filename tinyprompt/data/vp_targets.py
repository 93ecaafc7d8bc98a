"""ILM-VP's target datasets as registry entries: CIFAR-10, CIFAR-100, SVHN and GTSRB in torchvision's layouts.

ILM-VP ("Understanding and Improving Visual Prompting: A Label-Mapping Perspective", arXiv 2211.11635) loads
its targets through torchvision, so their layouts are torchvision's, under torchvision's `root`:

    $DATA/
      cifar-10-batches-py/    data_batch_1 .. data_batch_5, test_batch, batches.meta
      cifar-100-python/       train, test, meta
      svhn/                   train_32x32.mat, test_32x32.mat
      gtsrb/                  GTSRB/Training/<class>/*.ppm, GTSRB/Final_Test/Images/*.ppm, GT-final_test.csv

Class names are refined as ILM-VP does ('aquarium_fish' -> 'aquarium fish'); GTSRB ships none, so its 43 are
ILM-VP's (`GTSRB_CLASSES`); SVHN's are the digits '0'..'9', as ILM-VP names them. CIFAR's and SVHN's images are
arrays inside pickles / MAT-files (`tinyprompt.data.matfile`, no scipy): `CifarPickles` and `SvhnMat` decode
them once into PNG files in the tinyprompt cache, so that their Items are ordinary image files. Registered in
`tinyprompt.data.datasets.DATASETS`.
"""
import csv
import hashlib
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from tinyprompt.data.entry import Entry, class_folder_items
from tinyprompt.data.folder import find_classes
from tinyprompt.data.matfile import read_mat
from tinyprompt.data.splits import Item
from tinyprompt.io import cache_dir

__all__ = ["CifarPickles", "SvhnMat", "GTSRBFolders", "GTSRB_CLASSES"]


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


def _decoded(folder: str, digest: str, images, labels: dict, classnames: list) -> dict:
    """Splits of Items over the PNG files of `images()` {split: (N, H, W, 3) uint8}, in the cache folder of these
    files' digest: the pixels are assembled only the first time, when that folder is written; labels {split: N ints}."""
    home = Path(os.path.abspath(cache_dir() / "datasets" / folder / digest[:16]))
    if not home.is_dir():
        _write_pngs(home, images())
    splits = {split: [Item(str(home / split / f"{index:05d}.png"), label, classnames[label])
                      for index, label in enumerate(labels[split])] for split in labels}  # fmt: skip
    return {"train": splits["train"], "val": [], "test": splits["test"]}


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
        parts, labels = {}, {}
        for split, batches in (("train", self.train), ("test", (self.test,))):
            parts[split] = [self._batch(home / name, files[name], len(classnames)) for name in batches]
            labels[split] = [label for _, part in parts[split] for label in part]  # (N,) in file order

        def images():  # (N, 32, 32, 3): rows of 1024 red, green, blue values
            return {split: np.concatenate([data for data, _ in p]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
                    for split, p in parts.items()}  # fmt: skip

        return _decoded(self.folder, digest.hexdigest(), images, labels, classnames), classnames

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
class SvhnMat(Entry):
    """SVHN's cropped digits in the official MAT-files, torchvision's layout (torchvision.datasets.SVHN's root):

        svhn/    train_32x32.mat, test_32x32.mat

    Each holds 'X', uint8 (32, 32, 3, N): image n is X[:, :, :, n], height x width x RGB; and 'y', (N, 1) the digit,
    with 10 for the digit 0 (torchvision maps it to label 0, as here). Class names: ILM-VP's, '0'..'9'; no val
    split. Decoded once into PNG files in the tinyprompt cache, as `CifarPickles` (read by `tinyprompt.data.matfile`,
    level-5 MAT-files without scipy).
    """

    files: tuple = ("train_32x32.mat", "test_32x32.mat")  # the train, then the test file
    source: ClassVar[str] = "torchvision's SVHN root"

    def needs(self) -> tuple:
        return self.files

    def read(self, home: Path) -> tuple:
        classnames, digest = [str(digit) for digit in range(10)], hashlib.sha256()
        images, labels = {}, {}
        for split, name in zip(("train", "test"), self.files):
            raw = (home / name).read_bytes()  # read once: hashed, then decoded
            digest.update(f"{name}:".encode() + hashlib.sha256(raw).digest())
            arrays = read_mat(home / name, ["X", "y"], raw)
            pixels, digits = arrays["X"], arrays["y"].reshape(-1)
            if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[:3] != (32, 32, 3):
                raise ValueError(f"{home / name}: 'X' is {pixels.dtype} {pixels.shape}, not SVHN's uint8 (32, 32, 3, "
                                 f"N): use the original {name}")  # fmt: skip
            if len(digits) != pixels.shape[3] or not np.isin(digits, np.arange(1, 11)).all():
                raise ValueError(f"{home / name}: 'y' must hold one digit 1..10 per image ({pixels.shape[3]}), it "
                                 f"holds {len(digits)} values in {sorted(set(digits.tolist()))[:5]}...: use the "
                                 f"original {name}")  # fmt: skip
            images[split] = pixels.transpose(3, 0, 1, 2)  # (N, 32, 32, 3)
            labels[split] = [int(d) % 10 for d in digits]  # 10 is the digit 0
        return _decoded(self.folder, digest.hexdigest(), lambda: images, labels, classnames), classnames


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
        return {"train": class_folder_items(train, label_of, names), "val": [], "test": self._test(home, names)}, names

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
