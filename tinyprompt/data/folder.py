"""Image classification from a folder per class (the layout of ImageNet-style datasets).

    root/
      golden_retriever/  a.jpg  b.png ...
      tabby_cat/         c.jpg ...

Classes are the sub-folders in sorted order (label = position), images are the files below each one
(searched recursively, sorted) whose extension is in IMAGE_EXTENSIONS. Decoding uses Pillow, imported
on first use (`pip install 'tinyprompt[images]'`). Every error names the folder or file and the fix.
"""
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

__all__ = ["IMAGE_EXTENSIONS", "Sample", "find_classes", "list_images", "open_image", "ImageFolder"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass(frozen=True)
class Sample:
    path: Path  # the image file
    label: int  # index into the sorted class folders


def find_classes(root) -> list[str]:
    """Sorted names of the class folders under `root` (hidden folders such as .cache are skipped)."""
    root = Path(root)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise FileNotFoundError(f"image folder {root} {what}: pass a folder with one sub-folder of images per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"image folder {root} has no class sub-folders: put each class's images in root/<class>/")
    return classes


def list_images(root) -> tuple[list[str], list[Sample]]:
    """(class names, samples) of the folder-per-class dataset at `root`; no class may be empty."""
    root = Path(root)
    classes = find_classes(root)
    samples = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise ValueError(
                f"class folder {root / name} has no image files (extensions {', '.join(IMAGE_EXTENSIONS)}): "
                f"add its images or remove the folder"
            )
        samples.extend(Sample(path, label) for path in files)
    return classes, samples


def open_image(path):
    """Decode `path` with Pillow, fully read (the file is closed), in its stored mode.

    The mode is left alone on purpose: CLIP's preprocessing converts to RGB after resizing, and
    converting earlier would change the pixels of palette or grayscale images.
    """
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError("reading images needs Pillow: pip install 'tinyprompt[images]'") from e
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # UnidentifiedImageError is an OSError
        raise ValueError(f"cannot read image {path} ({e}): replace the file or remove it from the folder") from e
    return image


class ImageFolder(Dataset):
    """`dataset[i]` -> (transform(image), label) over `list_images(root)`; `.classes`, `.samples`."""

    def __init__(self, root, transform=None):
        self.root = Path(root)
        self.classes, self.samples = list_images(self.root)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        image = open_image(sample.path)
        return (self.transform(image) if self.transform is not None else image), sample.label
