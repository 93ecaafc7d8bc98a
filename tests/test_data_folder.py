"""tinyprompt.data.folder: class discovery, image listing, decoding, and errors that name the file."""
import sys

import numpy as np
import pytest
import torch

from tinyprompt.data.folder import ImageFolder, find_classes, list_images, open_image

Image = pytest.importorskip("PIL.Image")


def save_image(path, size=(12, 10), mode="RGB", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "L": 1}[mode]
    pixels = torch.randint(0, 256, (size[1], size[0], channels), generator=torch.Generator().manual_seed(seed),
                           dtype=torch.uint8).squeeze(-1).numpy()
    Image.fromarray(pixels, mode=mode).save(path)
    return pixels


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "data"
    save_image(root / "zebra" / "b.png", seed=1)
    save_image(root / "zebra" / "a.jpg", seed=2)
    save_image(root / "zebra" / "more" / "c.PNG", seed=3)  # nested and upper-case extension
    save_image(root / "ant" / "x.bmp", mode="L", seed=4)
    (root / "ant" / "notes.txt").write_text("not an image")
    (root / ".cache").mkdir()  # hidden folders are not classes
    (root / "README.md").write_text("files at the top level are ignored")
    return root


def test_classes_sorted_and_samples_listed(folder):
    classes, samples = list_images(folder)
    assert classes == find_classes(folder) == ["ant", "zebra"]
    assert [(s.path.relative_to(folder).as_posix(), s.label) for s in samples] == [
        ("ant/x.bmp", 0), ("zebra/a.jpg", 1), ("zebra/b.png", 1), ("zebra/more/c.PNG", 1),
    ]


def test_dataset_items(folder):
    dataset = ImageFolder(folder)
    assert len(dataset) == 4 and dataset.classes == ["ant", "zebra"]
    image, label = dataset[0]
    assert label == 0 and image.mode == "L" and image.size == (12, 10)  # the stored mode is kept
    expected = save_image(folder.parent / "copy.png", seed=1)
    image, label = dataset[2]  # zebra/b.png, lossless
    assert label == 1 and np.array_equal(np.asarray(image), expected)
    sized = ImageFolder(folder, transform=lambda im: torch.tensor(im.size))
    assert [sized[i][0].tolist() for i in range(len(sized))] == [[12, 10]] * 4


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"image folder {tmp_path / 'nope'} does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="is a file, not a folder"):
        ImageFolder(tmp_path / "file.txt")


def test_no_class_folders(tmp_path):
    with pytest.raises(ValueError, match=f"image folder {tmp_path} has no class sub-folders"):
        find_classes(tmp_path)


def test_empty_class_folder(folder):
    (folder / "moth").mkdir()
    (folder / "moth" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=f"class folder {folder / 'moth'} has no image files.*add its images"):
        list_images(folder)


@pytest.mark.parametrize("content", [b"not an image at all", None], ids=["garbage", "truncated"])
def test_unreadable_image(tmp_path, content):
    path = tmp_path / "broken.png"
    if content is None:  # a real PNG cut in half
        save_image(path, size=(64, 64))
        content = path.read_bytes()[: len(path.read_bytes()) // 2]
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"cannot read image {path} .*replace the file or remove it"):
        open_image(path)


def test_missing_pillow_says_what_to_install(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes `from PIL import Image` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'tinyprompt\[images\]'"):
        open_image(folder / "zebra" / "b.png")
