"""TaI-DPT's multi-label sets as registry entries: PASCAL VOC 2007, MS-COCO 2014 and NUS-WIDE.

TaI-DPT ("Texts as Images in Prompt Tuning for Multi-Label Image Recognition", arXiv 2211.12739) reads its
evaluation sets from the folders its README draws under the data root:

    $DATA/
      VOCdevkit/VOC2007/    Annotations/, ImageSets/Main/{train,val,test}.txt, JPEGImages/
      COCO/                 annotations/instances_{train,val}2014.json, train2014/, val2014/
      NUSWIDE/              Concepts81.txt, ImageList/, Groundtruth/TrainTestLabels/, Flickr/

Each entry (`multilabel` True) reads a split with the readers of `tinyprompt.data.multilabel` into a
`MultiLabelData`, and `load` returns a mapping of "train" | "val" | "test" to those (None for a split the
official code does not have) that reads a split on first access: only the test split, TaI-DPT's evaluation
split and the source of the class names, is read at once. Registered in `tinyprompt.data.datasets.DATASETS`.
"""
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import ClassVar

from tinyprompt.data.entry import Entry
from tinyprompt.data.multilabel import nuswide_labels, read_coco_instances, read_nuswide, read_voc2007
from tinyprompt.data.splits import SPLITS

__all__ = ["MultiLabelEntry", "VOCDevkit", "COCOInstances", "NUSWIDELists"]


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

    TaI-DPT's README draws TrainTestLabels/ directly under NUSWIDE/: that place is read too (`nuswide_labels`).
    NUS-WIDE's Train and Test lists are our train and test; TaI-DPT evaluates on test.
    """

    def files(self, split: str) -> tuple:
        return "Concepts81.txt", f"ImageList/{split}Imagelist.txt", "Groundtruth/TrainTestLabels/", "Flickr/"

    def require(self, home: Path, needs) -> None:
        labels = nuswide_labels(home).relative_to(home).as_posix() + "/"  # NUS-WIDE's place or TaI-DPT's README's
        super().require(home, tuple(labels if need == "Groundtruth/TrainTestLabels/" else need for need in needs))

    def read_split(self, home: Path, split: str):
        return read_nuswide(home, split)
