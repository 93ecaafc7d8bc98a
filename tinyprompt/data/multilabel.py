"""Multi-label image sets for evaluation: MS-COCO 2014, PASCAL VOC 2007, NUS-WIDE and a generic list.

Multi-label recognition (as evaluated by TaI-DPT, arXiv 2211.12739, and DualCoOp before it) scores
every class of every image and reports mAP. Every reader returns a `MultiLabelData`: image paths, a
0/1 label matrix and the class names in label order. Conventions of the official evaluation:
- COCO: instances_val2014.json; classes in the order of its "categories"; images in the order of its
  "images", those without any object included (all-zero rows).
- VOC 2007: ImageSets/Main/<split>.txt ids; labels from Annotations/<id>.xml (or, without that folder,
  from the per-class ImageSets/Main/<class>_<split>.txt files: 1 present, -1 absent, 0 difficult). An
  image whose only objects of a class are "difficult" is a NEGATIVE for it, as the official mAP scores
  it; `difficult="ignore"` leaves those entries out of the AP instead (`MultiLabelData.ignore`).
- NUS-WIDE: Concepts81.txt, ImageList/<Split>Imagelist.txt (paths under Flickr/, either slash) and
  Groundtruth/TrainTestLabels/Labels_<concept>_<Split>.txt (one 0/1 per image).
- generic: CSV with columns path,labels (names joined by ';') or JSONL {"path": ..., "labels": [...]}.
Errors name the file and the entry (missing image, unknown class, malformed annotation).
"""
import csv
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

__all__ = [
    "MultiLabelData",
    "MultiLabelDataset",
    "read_coco_instances",
    "read_voc2007",
    "read_nuswide",
    "read_label_list",
    "read_multilabel",
]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


@dataclass
class MultiLabelData:
    paths: list  # (N,) image files
    labels: torch.Tensor  # (N, C) uint8: 1 present, 0 absent (VOC difficult-only is 0 unless ignored)
    classnames: list  # (C,) in label order
    ignore: torch.Tensor = None  # (N, C) bool, True = left out of the AP (VOC difficult with "ignore")

    def __len__(self) -> int:
        return len(self.paths)

    def select_classes(self, order) -> "MultiLabelData":
        """The same images with the label columns in `order` (indices into this data's classes)."""
        order = list(order)
        ignore = None if self.ignore is None else self.ignore[:, order]
        return MultiLabelData(self.paths, self.labels[:, order], [self.classnames[i] for i in order], ignore)


class MultiLabelDataset(Dataset):
    """(transformed image, labels (C,) uint8) for a MultiLabelData; images decoded with Pillow."""

    def __init__(self, data: MultiLabelData, transform):
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i):
        from tinyprompt.data.folder import open_image

        return self.transform(open_image(self.data.paths[i])), self.data.labels[i]


def _check_files(paths, source, entries) -> None:
    for path, entry in zip(paths, entries):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{source}: {entry} refers to image {path}, which does not exist")


def _labels(rows, n_cls) -> torch.Tensor:
    labels = torch.zeros(len(rows), n_cls, dtype=torch.uint8)
    for n, idx in enumerate(rows):
        labels[n, list(idx)] = 1
    return labels


def read_coco_instances(json_path, image_root=None, check_files: bool = True) -> MultiLabelData:
    """COCO instances JSON (e.g. instances_val2014.json); images under image_root (default: beside it)."""
    json_path = Path(json_path)
    image_root = Path(image_root) if image_root else json_path.parent
    try:
        info = json.loads(json_path.read_text(encoding="utf-8"))
        images, categories, annotations = info["images"], info["categories"], info["annotations"]
        cat_index = {c["id"]: k for k, c in enumerate(categories)}
        classnames = [c["name"] for c in categories]
        image_index = {im["id"]: n for n, im in enumerate(images)}
        paths = [str(image_root / im["file_name"]) for im in images]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(
            f"{json_path} is not a COCO instances file ({type(e).__name__}: {e}); it needs 'images' "
            "[{id, file_name}], 'categories' [{id, name}] and 'annotations' [{image_id, category_id}]"
        ) from None
    rows = [set() for _ in images]
    for k, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise ValueError(f"{json_path}: annotations[{k}] is not an object {{image_id, category_id}}: {str(ann)[:200]}")
        if ann.get("image_id") not in image_index:
            raise ValueError(f"{json_path}: annotations[{k}] names image_id {ann.get('image_id')!r}, not in 'images'")
        if ann.get("category_id") not in cat_index:
            raise ValueError(
                f"{json_path}: annotations[{k}] names category_id {ann.get('category_id')!r}, not in 'categories'"
            )
        rows[image_index[ann["image_id"]]].add(cat_index[ann["category_id"]])
    if check_files:
        _check_files(paths, json_path, [f"image id {im['id']}" for im in images])
    return MultiLabelData(paths, _labels(rows, len(classnames)), classnames)


def _voc_xml(path: Path):
    """{class name: difficult-only?} of one VOC annotation file, and the image file name."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise ValueError(f"VOC annotation {path} cannot be parsed: {e}") from None
    objects = {}
    for k, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise ValueError(f"VOC annotation {path}: object {k} has class {name!r}, not one of the 20 VOC classes")
        flag = (obj.findtext("difficult") or "0").strip()
        if flag not in ("0", "1"):
            raise ValueError(f"VOC annotation {path}: object {k} ({name}) has <difficult>{flag}</difficult>; use 0 or 1")
        objects[name] = objects.get(name, True) and flag == "1"
    return objects, (root.findtext("filename") or "").strip()


def _voc_class_files(main: Path, split: str, ids: list):
    """{id: {class: difficult-only?}} from the per-class files <class>_<split>.txt (1 / -1 / 0)."""
    table = {i: {} for i in ids}
    for cls in VOC_CLASSES:
        path = main / f"{cls}_{split}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"VOC labels: neither Annotations/ nor {path} exists")
        for n, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("1", "-1", "0") or parts[0] not in table:
                raise ValueError(f"{path} line {n}: {line!r} is not '<image id in {split}.txt> 1|-1|0'")
            if parts[1] != "-1":
                table[parts[0]][cls] = parts[1] == "0"
    return table


def read_voc2007(root, split: str = "test", difficult: str = "negative", check_files: bool = True) -> MultiLabelData:
    """PASCAL VOC 2007 at `root` (the VOC2007 folder); difficult-only classes "negative" or "ignore"."""
    if difficult not in ("negative", "ignore"):
        raise ValueError(f"difficult={difficult!r}: use 'negative' (the official evaluation) or 'ignore'")
    root = Path(root)
    main = root / "ImageSets" / "Main"
    id_file = main / f"{split}.txt"
    if not id_file.is_file():
        raise FileNotFoundError(f"VOC split file {id_file} does not exist (is {root} the VOC2007 folder?)")
    ids = [line.split()[0] for line in id_file.read_text().splitlines() if line.strip()]
    paths = [str(root / "JPEGImages" / f"{i}.jpg") for i in ids]
    if (root / "Annotations").is_dir():
        table = {}
        for n, i in enumerate(ids):
            xml = root / "Annotations" / f"{i}.xml"
            if not xml.is_file():
                raise FileNotFoundError(f"{id_file} lists image {i!r}, whose annotation {xml} does not exist")
            table[i], filename = _voc_xml(xml)
            paths[n] = str(root / "JPEGImages" / (filename or f"{i}.jpg"))
    else:
        table = _voc_class_files(main, split, ids)
    positive = torch.zeros(len(ids), len(VOC_CLASSES), dtype=torch.uint8)
    hard = torch.zeros(len(ids), len(VOC_CLASSES), dtype=torch.bool)  # present, but only as difficult
    for n, i in enumerate(ids):
        for cls, difficult_only in table[i].items():
            (hard if difficult_only else positive)[n, VOC_CLASSES.index(cls)] = 1
    if check_files:
        _check_files(paths, id_file, [f"image {i!r}" for i in ids])
    return MultiLabelData(paths, positive, list(VOC_CLASSES), hard if difficult == "ignore" else None)


def nuswide_labels(root) -> Path:
    """The folder of NUS-WIDE's Labels_<concept>_<split>.txt files: Groundtruth/TrainTestLabels, where NUS-WIDE's
    Groundtruth.zip puts it, or TrainTestLabels directly under the root, where TaI-DPT's README draws it."""
    official, readme = Path(root) / "Groundtruth" / "TrainTestLabels", Path(root) / "TrainTestLabels"
    return readme if readme.is_dir() and not official.is_dir() else official


def read_nuswide(root, split: str = "Test", check_files: bool = True) -> MultiLabelData:
    """NUS-WIDE at `root`: Concepts81.txt, ImageList/<split>Imagelist.txt, the label files (`nuswide_labels`)."""
    root = Path(root)
    concepts_file, list_file = root / "Concepts81.txt", root / "ImageList" / f"{split}Imagelist.txt"
    for f in (concepts_file, list_file):
        if not f.is_file():
            raise FileNotFoundError(f"NUS-WIDE file {f} does not exist (is {root} the NUS-WIDE folder?)")
    classnames = [c.strip() for c in concepts_file.read_text().splitlines() if c.strip()]
    names = [n.strip().replace("\\", "/") for n in list_file.read_text().splitlines() if n.strip()]
    paths = [str(root / "Flickr" / n) for n in names]
    labels = torch.zeros(len(names), len(classnames), dtype=torch.uint8)
    for k, concept in enumerate(classnames):
        path = nuswide_labels(root) / f"Labels_{concept}_{split}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"NUS-WIDE labels of concept {concept!r}: {path} does not exist")
        values = [v.strip() for v in path.read_text().splitlines() if v.strip()]
        if len(values) != len(names):
            raise ValueError(f"{path} has {len(values)} labels but {list_file} lists {len(names)} images")
        for n, v in enumerate(values):
            if v not in ("0", "1"):
                raise ValueError(f"{path} line {n + 1}: label {v!r} for image {names[n]!r} is not 0 or 1")
            labels[n, k] = v == "1"
    if check_files:
        _check_files(paths, list_file, [f"line {n + 1} ({name!r})" for n, name in enumerate(names)])
    return MultiLabelData(paths, labels, classnames)


def _list_rows(path: Path):
    """[(entry description, image path, [label names])] of a CSV or JSONL label list."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                image, names = row["path"], row["labels"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f'{path} line {n}: {line[:200]!r} is not {{"path": ..., "labels": [...]}}') from None
            if not isinstance(image, str) or not isinstance(names, list):
                raise ValueError(f"{path} line {n}: 'path' must be a string and 'labels' a list of class names")
            rows.append((f"line {n}", image, [str(x) for x in names]))
        return rows
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or not {"path", "labels"} <= set(reader.fieldnames):
        raise ValueError(f"{path}: the CSV header must name the columns 'path' and 'labels' (got {reader.fieldnames})")
    return [
        (f"line {n}", row["path"], [s.strip() for s in (row["labels"] or "").split(";") if s.strip()])
        for n, row in enumerate(reader, 2)
    ]


def read_label_list(path, image_root=None, classnames=None, check_files: bool = True) -> MultiLabelData:
    """A CSV (path,labels with ';' between names) or JSONL list; classes default to the sorted names seen."""
    path = Path(path)
    image_root = Path(image_root) if image_root else path.parent
    rows = _list_rows(path)
    if not rows:
        raise ValueError(f"label list {path} has no entries")
    if classnames is None:
        classnames = sorted({name for _, _, names in rows for name in names})
    index = {name: k for k, name in enumerate(classnames)}
    picked = []
    for entry, _, names in rows:
        unknown = [x for x in names if x not in index]
        if unknown:
            raise ValueError(f"{path} {entry}: unknown class names {unknown}; known classes: {list(classnames)}")
        picked.append({index[x] for x in names})
    paths = [str(image_root / image) for _, image, _ in rows]
    if check_files:
        _check_files(paths, path, [entry for entry, _, _ in rows])
    return MultiLabelData(paths, _labels(picked, len(classnames)), list(classnames))


def read_multilabel(path, image_root=None, split=None, difficult: str = "negative", check_files: bool = True):
    """Any of the formats above, recognised from `path`: a COCO .json, a .csv/.jsonl list, a VOC2007 or
    NUS-WIDE folder. `split` defaults to "test" (VOC) / "Test" (NUS-WIDE)."""
    path = Path(path)
    if path.is_dir() and (path / "ImageSets" / "Main").is_dir():
        return read_voc2007(path, split or "test", difficult, check_files)
    if path.is_dir() and (path / "Concepts81.txt").is_file():
        return read_nuswide(path, split or "Test", check_files)
    if path.is_file() and path.suffix.lower() == ".json":
        return read_coco_instances(path, image_root, check_files)
    if path.is_file() and path.suffix.lower() in (".csv", ".jsonl"):
        return read_label_list(path, image_root, check_files=check_files)
    raise ValueError(
        f"cannot tell the format of {path}: give a COCO instances .json, a .csv/.jsonl label list, a VOC2007 "
        "folder (with ImageSets/Main) or a NUS-WIDE folder (with Concepts81.txt)"
    )
