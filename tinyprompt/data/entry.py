"""The base of a registry entry: a dataset's folder under the data root and the check that its layout is there.

Every dataset of `tinyprompt.data.datasets.DATASETS` is an `Entry`: the folder its official code reads under the
data root (CoOp's dataset_dir, a TaI-DPT or torchvision folder), its name in that code, and the paths of its
layout (`needs()`), checked before anything is read, so that a missing file is reported with the whole layout,
e.g. "caltech-101/{101_ObjectCategories/, split_zhou_Caltech101.json}". Each kind of entry, one per official
layout, adds `needs()` and `read(home)`: CoOp's (SplitFile, AircraftLists, WnidFolders, NumberedFolders) in
`tinyprompt.data.datasets` ("Learning to Prompt for Vision-Language Models", arXiv 2109.01134), TaI-DPT's
multi-label sets in `tinyprompt.data.multilabel_sets` (arXiv 2211.12739) and ILM-VP's targets in
`tinyprompt.data.vp_targets` (arXiv 2211.11635). `class_folder_items` reads a folder of class folders under
any of them (ImageNet and its variants, GTSRB's training images).
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tinyprompt.data.folder import list_images
from tinyprompt.data.splits import Item

__all__ = ["Entry", "class_folder_items"]


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


def class_folder_items(folder: Path, label_of: dict, names: list) -> list:
    """The images of `folder`/<class folder>/ as Items labelled label_of[class folder], in label order."""
    classes, samples = list_images(folder)
    items = []
    for sample in samples:
        label = label_of[classes[sample.label]]
        items.append(Item(os.path.abspath(sample.path), label, names[label]))
    return sorted(items, key=lambda item: item.label)  # V2's folders list as 0, 1, 10, ...: put them in label order
