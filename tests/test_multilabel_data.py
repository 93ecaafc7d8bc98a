"""Multi-label evaluation data readers on tiny generated COCO / VOC / NUS-WIDE / CSV / JSONL files."""
import json

import pytest
import torch

from tinyprompt.data.multilabel import (VOC_CLASSES, MultiLabelDataset, read_coco_instances, read_label_list,
                                        read_multilabel, read_nuswide, read_voc2007)


def _touch(*paths):
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


# ---- COCO ----
def _coco(tmp_path, annotations=None, images=None):
    info = {
        "images": images or [{"id": 7, "file_name": "a.jpg"}, {"id": 3, "file_name": "b.jpg"}, {"id": 5, "file_name": "c.jpg"}],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}],
        "annotations": annotations
        if annotations is not None
        else [{"image_id": 7, "category_id": 18}, {"image_id": 7, "category_id": 1}, {"image_id": 3, "category_id": 18},
              {"image_id": 7, "category_id": 18}],
    }  # fmt: skip
    path = tmp_path / "instances_val2014.json"
    path.write_text(json.dumps(info))
    _touch(*(tmp_path / "val2014" / im["file_name"] for im in info["images"]))
    return path


def test_coco_instances(tmp_path):
    data = read_coco_instances(_coco(tmp_path), tmp_path / "val2014")
    assert data.classnames == ["person", "car", "dog"]  # the order of "categories"
    assert [p.split("/")[-1] for p in data.paths] == ["a.jpg", "b.jpg", "c.jpg"]  # the order of "images"
    assert data.labels.tolist() == [[1, 0, 1], [0, 0, 1], [0, 0, 0]]  # an image without objects stays
    assert data.ignore is None and len(data) == 3
    assert read_multilabel(tmp_path / "instances_val2014.json", tmp_path / "val2014").labels.tolist() == data.labels.tolist()
    assert data.select_classes([2, 0]).labels.tolist() == [[1, 1], [1, 0], [0, 0]]


def test_coco_errors(tmp_path):
    with pytest.raises(ValueError, match=r"annotations\[0\] names category_id 99"):
        read_coco_instances(_coco(tmp_path, [{"image_id": 7, "category_id": 99}]), tmp_path / "val2014")
    with pytest.raises(ValueError, match=r"annotations\[1\] names image_id 4"):
        read_coco_instances(_coco(tmp_path, [{"image_id": 7, "category_id": 1}, {"image_id": 4, "category_id": 1}]),
                            tmp_path / "val2014")  # fmt: skip
    path = _coco(tmp_path)
    (tmp_path / "val2014" / "b.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"image id 3 refers to image .*b\.jpg, which does not exist"):
        read_coco_instances(path, tmp_path / "val2014")
    with pytest.raises(ValueError, match=r"annotations\[1\] is not an object"):
        read_coco_instances(_coco(tmp_path, [{"image_id": 7, "category_id": 1}, [7, 1]]), tmp_path / "val2014")
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="not a COCO instances file"):
        read_coco_instances(path)
    path.write_text(json.dumps({"images": [{"id": 1}], "categories": [], "annotations": []}))
    with pytest.raises(ValueError, match="instances_val2014.json is not a COCO instances file .*file_name"):
        read_coco_instances(path)


# ---- VOC 2007 ----
def _voc_xml(objects, filename=None):
    body = "".join(
        f"<object><name>{name}</name><difficult>{int(difficult)}</difficult></object>" for name, difficult in objects
    )
    return f"<annotation>{f'<filename>{filename}</filename>' if filename else ''}{body}</annotation>"


def _voc(tmp_path, annotations):
    root = tmp_path / "VOC2007"
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{i}\n" for i in annotations))
    for image_id, objects in annotations.items():
        (root / "Annotations").mkdir(exist_ok=True)
        (root / "Annotations" / f"{image_id}.xml").write_text(_voc_xml(objects))
        _touch(root / "JPEGImages" / f"{image_id}.jpg")
    return root


ANNOTATIONS = {
    "000001": [("dog", False), ("person", False), ("dog", True)],
    "000002": [("cat", True), ("cat", True), ("sofa", False)],  # cat only as difficult
    "000004": [],
}


def test_voc_difficult_is_negative_by_default(tmp_path):
    root = _voc(tmp_path, ANNOTATIONS)
    data = read_voc2007(root)
    assert data.classnames == list(VOC_CLASSES) and data.ignore is None
    dog, person, cat, sofa = (VOC_CLASSES.index(c) for c in ("dog", "person", "cat", "sofa"))
    assert data.labels.nonzero().tolist() == [[0, dog], [0, person], [1, sofa]]  # the difficult cat is negative
    ignored = read_voc2007(root, difficult="ignore")
    assert torch.equal(ignored.labels, data.labels)
    assert ignored.ignore.nonzero().tolist() == [[1, cat]]
    assert read_multilabel(root, difficult="ignore").ignore.nonzero().tolist() == [[1, cat]]


def test_voc_per_class_files_give_the_same_labels(tmp_path):
    root = _voc(tmp_path, ANNOTATIONS)
    xml = read_voc2007(root, difficult="ignore")
    # the official code reads <class>_test.txt: 1 present, -1 absent, 0 difficult only
    for k, cls in enumerate(VOC_CLASSES):
        lines = [f"{image_id} {1 if xml.labels[n, k] else 0 if xml.ignore[n, k] else -1}" for n, image_id in enumerate(ANNOTATIONS)]
        (root / "ImageSets" / "Main" / f"{cls}_test.txt").write_text("\n".join(lines) + "\n")
    for f in (root / "Annotations").iterdir():
        f.unlink()
    (root / "Annotations").rmdir()
    files = read_voc2007(root, difficult="ignore")
    assert torch.equal(files.labels, xml.labels) and torch.equal(files.ignore, xml.ignore)
    (root / "ImageSets" / "Main" / "dog_test.txt").write_text("000001 2\n")
    with pytest.raises(ValueError, match=r"dog_test\.txt line 1"):
        read_voc2007(root)


def test_voc_errors(tmp_path):
    root = _voc(tmp_path, {"000001": [("unicorn", False)]})
    with pytest.raises(ValueError, match=r"000001\.xml: object 0 has class 'unicorn'"):
        read_voc2007(root)
    (root / "Annotations" / "000001.xml").write_text("<annotation><object><name>dog</name>")
    with pytest.raises(ValueError, match=r"000001\.xml cannot be parsed"):
        read_voc2007(root)
    (root / "Annotations" / "000001.xml").write_text(_voc_xml([("dog", False)]).replace("<difficult>0", "<difficult>x"))
    with pytest.raises(ValueError, match="use 0 or 1"):
        read_voc2007(root)
    (root / "Annotations" / "000001.xml").write_text(_voc_xml([("dog", False)]))
    (root / "JPEGImages" / "000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"image '000001' refers to image .*000001\.jpg"):
        read_voc2007(root)
    assert len(read_voc2007(root, check_files=False)) == 1
    (root / "Annotations" / "000001.xml").unlink()
    with pytest.raises(FileNotFoundError, match="annotation .* does not exist"):
        read_voc2007(root)
    with pytest.raises(ValueError, match="difficult="):
        read_voc2007(root, difficult="drop")
    with pytest.raises(FileNotFoundError, match="split file"):
        read_voc2007(root, split="val")


# ---- NUS-WIDE ----
def _nus(tmp_path, labels):
    root = tmp_path / "nus"
    (root / "ImageList").mkdir(parents=True)
    (root / "Groundtruth" / "TrainTestLabels").mkdir(parents=True)
    (root / "Concepts81.txt").write_text("sky\nwater\n")
    names = ["actor\\0001_1.jpg", "beach/0002_2.jpg"]
    (root / "ImageList" / "TestImagelist.txt").write_text("\r\n".join(names) + "\r\n")
    for concept, column in zip(("sky", "water"), labels):
        (root / "Groundtruth" / "TrainTestLabels" / f"Labels_{concept}_Test.txt").write_text("".join(f"{v}\n" for v in column))
    _touch(root / "Flickr" / "actor" / "0001_1.jpg", root / "Flickr" / "beach" / "0002_2.jpg")
    return root


def test_nuswide(tmp_path):
    root = _nus(tmp_path, [[1, 0], [1, 1]])
    data = read_nuswide(root)
    assert data.classnames == ["sky", "water"] and data.labels.tolist() == [[1, 1], [0, 1]]
    assert data.paths[0].endswith("Flickr/actor/0001_1.jpg")  # Windows separators in the list
    assert read_multilabel(root).labels.tolist() == [[1, 1], [0, 1]]


def test_nuswide_errors(tmp_path):
    root = _nus(tmp_path, [[1, 0], [1, 2]])
    with pytest.raises(ValueError, match=r"Labels_water_Test\.txt line 2: label '2' for image 'beach/0002_2.jpg'"):
        read_nuswide(root)
    root = _nus(tmp_path / "b", [[1], [1, 1]])
    with pytest.raises(ValueError, match=r"Labels_sky_Test\.txt has 1 labels but .* lists 2 images"):
        read_nuswide(root)
    (root / "Groundtruth" / "TrainTestLabels" / "Labels_sky_Test.txt").unlink()
    with pytest.raises(FileNotFoundError, match="concept 'sky'"):
        read_nuswide(root)
    with pytest.raises(FileNotFoundError, match="Concepts81.txt does not exist"):
        read_nuswide(tmp_path)
    root = _nus(tmp_path / "c", [[1, 0], [0, 1]])
    (root / "Flickr" / "beach" / "0002_2.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"TestImagelist\.txt: line 2 \('beach/0002_2\.jpg'\) refers to image"):
        read_nuswide(root)
    assert read_nuswide(root, check_files=False).labels.tolist() == [[1, 0], [0, 1]]


# ---- generic CSV / JSONL ----
def test_label_lists(tmp_path):
    _touch(tmp_path / "img" / "1.jpg", tmp_path / "img" / "2.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text('path,labels\nimg/1.jpg,dog;person\nimg/2.jpg,""\n')
    data = read_label_list(csv)
    assert data.classnames == ["dog", "person"] and data.labels.tolist() == [[1, 1], [0, 0]]
    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text('{"path": "1.jpg", "labels": ["cat"]}\n\n{"path": "2.jpg", "labels": ["dog", "cat"]}\n')
    data = read_label_list(jsonl, image_root=tmp_path / "img", classnames=["dog", "cat", "bird"])
    assert data.labels.tolist() == [[0, 1, 0], [1, 1, 0]]
    assert read_multilabel(jsonl, image_root=tmp_path / "img").classnames == ["cat", "dog"]


def test_label_list_errors(tmp_path):
    _touch(tmp_path / "1.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,labels\n1.jpg,dog;unicorn\n")
    with pytest.raises(ValueError, match=r"labels\.csv line 2: unknown class names \['unicorn'\]"):
        read_label_list(csv, classnames=["dog"])
    csv.write_text("file,classes\n1.jpg,dog\n")
    with pytest.raises(ValueError, match="must name the columns"):
        read_label_list(csv)
    csv.write_text("path,labels\n1.jpg,dog\nmissing.jpg,dog\n")
    with pytest.raises(FileNotFoundError, match=r"labels\.csv: line 3 refers to image .*missing\.jpg"):
        read_label_list(csv)
    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text('{"path": "1.jpg", "labels": ["dog"]}\n{"path": "1.jpg"}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_label_list(jsonl)
    jsonl.write_text('{"path": "1.jpg", "labels": "dog"}\n')
    with pytest.raises(ValueError, match="a list of class names"):
        read_label_list(jsonl)
    with pytest.raises(ValueError, match="cannot tell the format"):
        read_multilabel(tmp_path / "1.jpg")


def test_dataset_decodes_images(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    Image.new("RGB", (4, 3), (255, 0, 0)).save(tmp_path / "1.png")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,labels\n1.png,dog\n")
    dataset = MultiLabelDataset(read_label_list(csv, classnames=["cat", "dog"]), lambda im: torch.tensor(im.size))
    image, labels = dataset[0]
    assert image.tolist() == [4, 3] and labels.tolist() == [0, 1] and len(dataset) == 1
