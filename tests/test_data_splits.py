"""Tests of tinyprompt.data.splits: CoOp split files and their errors, Dassl's few-shot selection, the Dataset."""
import json
import random
from collections import defaultdict

import numpy as np
import pytest
import torch

from tinyprompt.data.splits import (Item, ImageDataset, classnames_from_items, few_shot, few_shot_splits, folder_items,
                                    make_loader, read_split_file)

PIL = pytest.importorskip("PIL.Image")


def write_png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.new("RGB", (3, 2), color=(value, 255 - value, 7)).save(path)


def write_split(tmp_path, split, images=True):
    """A split file (and its images, value = entry number) under tmp_path; returns (split file, image root)."""
    root = tmp_path / "images"
    if images:
        for n, entry in enumerate(e for part in ("train", "val", "test") for e in split.get(part, [])):
            write_png(root / entry[0], n)
    root.mkdir(exist_ok=True)
    path = tmp_path / "split_zhou_Toy.json"
    path.write_text(json.dumps(split))
    return path, root


GOOD = {
    "train": [["sea_lion/1.png", 2, "sea lion"], ["dog/1.png", 0, "dog"], ["cat/1.png", 1, "cat"], ["dog/2.png", 0, "dog"]],
    "val": [["cat/2.png", 1, "cat"]],
    "test": [["dog/3.png", 0, "dog"], ["sea_lion/2.png", 2, "sea lion"]],
}


def test_read_split_file(tmp_path):
    path, root = write_split(tmp_path, GOOD)
    splits = read_split_file(path, root)
    assert splits["train"][0] == Item(str(root / "sea_lion" / "1.png"), 2, "sea lion")
    assert [(i.label, i.classname) for i in splits["test"]] == [(0, "dog"), (2, "sea lion")]
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "val": 1, "test": 2}
    assert classnames_from_items(splits["train"]) == ["dog", "cat", "sea lion"]


def _with(part, entries):
    return {**GOOD, part: entries}


@pytest.mark.parametrize("split, images, error, message", [
    (_with("test", [["dog/9.png", 0, "dog"]]), "skip:dog/9.png", FileNotFoundError,
     r"lists 'dog/9.png', which does not exist under root .*images"),
    (_with("val", [["cat/2.png", 1, "kitten"]]), None, ValueError, r"val\[0\] names label 1 'kitten'.*'cat'"),
    (_with("val", [["cat/2.png", 3, "cat"]]), None, ValueError, r"class name 'cat' for labels 1 and 3"),
    (_with("test", [["x/1.png", 3, "fox"]]), None, ValueError, r"class 3 \('fox'\) is in test but has no train images"),
    ({"train": [["dog/1.png", 0, "dog"], ["sea_lion/1.png", 2, "sea lion"]], "val": [], "test": [["dog/2.png", 0, "dog"]]},
     None, ValueError, r"no entry has label 1, so class 1 is empty"),
    (_with("train", [["dog/1.png", "0", "dog"]]), None, ValueError, r"train\[0\] is \['dog/1.png', '0', 'dog'\]: each entry"),
    (_with("train", [["dog/1.png", 0]]), None, ValueError, r"each entry must be \[relative_path, label"),
    ({"train": [], "test": []}, None, ValueError, r"must be a JSON object with lists 'train', 'val' and 'test'"),
], ids=["missing-image", "mismatched-name", "two-labels-one-name", "unknown-class", "empty-class", "label-not-int",
        "short-entry", "missing-split"])
def test_bad_split_files_name_the_problem(tmp_path, split, images, error, message):
    path, root = write_split(tmp_path, split)
    if images:
        (root / images.split(":")[1]).unlink()
    with pytest.raises(error, match=message) as info:
        read_split_file(path, root)
    assert str(path) in str(info.value)


def test_unparsable_or_absent_split_file(tmp_path):
    bad = tmp_path / "split.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=rf"split file {bad} is not valid JSON"):
        read_split_file(bad, tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist: pass the split_zhou"):
        read_split_file(tmp_path / "absent.json", tmp_path)
    path, _ = write_split(tmp_path, GOOD, images=False)
    with pytest.raises(FileNotFoundError, match=rf"image root {tmp_path / 'nowhere'} for split file"):
        read_split_file(path, tmp_path / "nowhere")


def test_unreadable_image_is_named(tmp_path):
    path, root = write_split(tmp_path, GOOD)
    (root / "cat" / "1.png").write_bytes(b"not a png")
    dataset = ImageDataset(read_split_file(path, root)["train"])
    with pytest.raises(ValueError, match=r"cannot read image .*cat/1.png"):
        dataset[2]


def dassl_fewshot(train, val, num_shots, seed):
    """Independent re-implementation of Dassl's DatasetBase.generate_fewshot_dataset as CoOp's datasets call it:
    set_random_seed(cfg.SEED), then train with NUM_SHOTS, then val with min(NUM_SHOTS, 4), global `random`."""

    def generate(data_source, shots):
        if shots < 1:
            return data_source
        tracker = defaultdict(list)  # split_dataset_by_label
        for item in data_source:
            tracker[item.label].append(item)
        dataset = []
        for _, items in tracker.items():
            dataset.extend(random.sample(items, shots) if len(items) >= shots else items)
        return dataset

    state = random.getstate()
    random.seed(seed)
    try:
        return generate(train, num_shots), generate(val, min(num_shots, 4))
    finally:
        random.setstate(state)


def test_few_shot_reproduces_dassl(tmp_path):
    rng = random.Random(0)
    names = ["maple", "oak", "fir", "yew", "elm", "ash"]
    counts = {0: 20, 1: 3, 2: 17, 3: 9, 4: 1, 5: 12}  # some classes below the shot count: all of them are kept
    entries = {}
    for part, share in (("train", 1), ("val", 2), ("test", 2)):  # val and test get half as many, at least 1
        entries[part] = [[f"{names[c]}/{part}{i}.png", c, names[c]] for c in counts for i in range(max(counts[c] // share, 1))]
    for part in entries:
        rng.shuffle(entries[part])  # labels appear out of order, so first-appearance order matters
    path, root = write_split(tmp_path, entries, images=False)
    splits = read_split_file(path, root, check_files=False)
    for shots in (0, 1, 2, 4, 8, 16):
        for seed in (1, 2, 3):
            want_train, want_val = dassl_fewshot(splits["train"], splits["val"], shots, seed)
            got_train, got_val = few_shot_splits(splits["train"], splits["val"], shots, seed)
            assert got_train == want_train and got_val == want_val, (shots, seed)
            assert few_shot(splits["train"], shots, seed) == want_train
    train16, _ = few_shot_splits(splits["train"], splits["val"], 16, 1)
    assert sorted(sum(i.label == c for i in train16) for c in counts) == sorted(min(n, 16) for n in counts.values())


def to_tensor(image):
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float() / 255  # (3, H, W)


def test_image_dataset_and_loader_with_workers(tmp_path):
    path, root = write_split(tmp_path, GOOD)
    dataset = ImageDataset(read_split_file(path, root)["train"], to_tensor)
    image, label = dataset[1]
    assert label == 0 and image.shape == (3, 2, 3) and image[0, 0, 0].item() == pytest.approx(1 / 255)
    serial = list(make_loader(dataset, batch_size=3))
    parallel = list(make_loader(dataset, batch_size=3, num_workers=2))
    assert len(serial) == 2 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(serial, parallel))
    order = [torch.cat([y for _, y in make_loader(dataset, 2, shuffle=True, seed=s)]).tolist() for s in (5, 5, 6)]
    assert order[0] == order[1] and sorted(order[0]) == [0, 0, 1, 2]


def test_folder_items(tmp_path):
    write_png(tmp_path / "tabby_cat" / "a.png", 1)
    write_png(tmp_path / "dog" / "x" / "b.png", 2)
    items = folder_items(tmp_path)
    assert items == [Item(str(tmp_path / "dog" / "x" / "b.png"), 0, "dog"), Item(str(tmp_path / "tabby_cat" / "a.png"), 1, "tabby_cat")]
    with pytest.raises(ValueError, match=r"labels \[1\] have no items"):
        classnames_from_items([Item("a", 0, "dog"), Item("b", 2, "cat")])
