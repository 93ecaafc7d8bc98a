"""CLIP's image preprocessing (exact parity with OpenAI's PIL pipeline), a tensor path, and train augmentation.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision" (arXiv
2103.00020) preprocesses with `clip._transform(n)`: bicubic resize of the short side to n, centre crop
n x n, RGB, ToTensor, normalise. `clip_preprocess` reproduces it without torchvision, with the quirks
it keeps: the long side truncated, not rounded; Python's round-half-even crop offsets; convert("RGB")
AFTER resizing, so palette images resample NEAREST and RGBA ones premultiplied (the golden tests
compare it with OpenAI's pipeline on such images).

`preprocess_tensor` is the same pipeline for uint8 RGB tensors (batched, any device) without Pillow:
it evaluates Pillow's antialiased bicubic resampling (Keys a = -0.5, support scaled by the reduction
factor, 22-bit fixed-point weights, a uint8 rounding after each of the two separable passes) as two
matrix products over only the rows and columns the centre crop keeps, in Pillow 13's pass order;
float64 makes the fixed-point sums exact. So it is bit-identical to the PIL path on RGB input (max
abs difference 0 on every golden RGB and L case). P, RGBA, LA and CMYK sources differ, because the PIL
path resamples them before converting to RGB (measured on the golden cases, in levels of 255, max /
mean: P 198 / 63, RGBA 255 / 29, LA 255 / 2.8, CMYK 15 / 0.9); convert such images to RGB first.

`train_transform` is the augmentation CoOp-style methods train with: torchvision's
RandomResizedCrop sampling rule, bicubic, random horizontal flip; each call can take a seed or a
`torch.Generator`, so an augmented view can be reproduced.

Every transform normalises with OpenAI's statistics unless given a `Preprocessing`: the mean, std and resize mode
a checkpoint was trained with. Most open_clip checkpoints use OpenAI's; a few do not (open_clip's pretrained
table: ViT-L-14/laion2b_s32b_b82k normalises with mean = std = 0.5; the DFN5B ViT-H-14 models "squash" the image:
bicubic resize of both sides to n, no crop), and their features are only right with their own. `tinyprompt.load`
sets `model.preprocessing` from the checkpoint's name; `model_preprocessing(model)` reads it (OpenAI's when unset).
"""
import math
from dataclasses import dataclass, fields

import torch

__all__ = [
    "CLIP_MEAN", "CLIP_STD", "Preprocessing", "OPENAI_PREPROCESSING", "RESIZE_MODES", "model_preprocessing",
    "clip_preprocess", "preprocess_tensor", "train_transform",
    "ClipPreprocess", "TrainTransform", "resize_shape", "center_crop_offsets",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PRECISION_BITS = 22  # Pillow's fixed-point weights for 8-bit images: 32 - 8 - 2 bits
# how the image reaches n_px x n_px: "shortest" (OpenAI's: the short side to n_px, then the centre crop) or
# "squash" (both sides to n_px, the aspect ratio not kept: open_clip's resize_mode "squash")
RESIZE_MODES = ("shortest", "squash")


@dataclass(frozen=True)
class Preprocessing:
    """The image statistics and resize mode a checkpoint was trained with (open_clip's pretrained config: mean, std,
    resize_mode; its interpolation is bicubic for every checkpoint tinyprompt builds). Default: OpenAI's."""

    mean: tuple = CLIP_MEAN
    std: tuple = CLIP_STD
    resize_mode: str = "shortest"

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != 3 or not all(math.isfinite(v) for v in self.mean):
            raise ValueError(f"Preprocessing mean must be 3 finite numbers (R, G, B), got {self.mean}")
        if len(self.std) != 3 or not all(math.isfinite(v) and v > 0 for v in self.std):
            raise ValueError(f"Preprocessing std must be 3 positive numbers (R, G, B), got {self.std}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"Preprocessing resize_mode {self.resize_mode!r} is not supported: one of {RESIZE_MODES} "
                             f"(open_clip's 'longest' pads, which no checkpoint tinyprompt builds uses)")

    def output_size(self, width: int, height: int, n_px: int) -> tuple:
        """(width, height) the image is resized to before the centre crop (squash: n_px x n_px, no crop)."""
        return (n_px, n_px) if self.resize_mode == "squash" else resize_shape(width, height, n_px)


OPENAI_PREPROCESSING = Preprocessing()


def model_preprocessing(model) -> Preprocessing:
    """The preprocessing `model` was trained with: `model.preprocessing` (set by `tinyprompt.load`), else OpenAI's."""
    found = getattr(model, "preprocessing", None)
    return found if isinstance(found, Preprocessing) else OPENAI_PREPROCESSING


def _pil_image():
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError("tinyprompt's image transforms need Pillow: pip install 'tinyprompt[images]'") from e
    return Image


def resize_shape(width: int, height: int, n_px: int) -> tuple:
    """(width, height) after resizing the short side to n_px; the long side is truncated, not rounded."""
    if width <= height:
        return n_px, int(n_px * height / width)
    return int(n_px * width / height), n_px


def center_crop_offsets(width: int, height: int, n_px: int) -> tuple:
    """(left, top) of the centred n_px x n_px crop, with Python's round (half to even: 38.5 -> 38)."""
    return int(round((width - n_px) / 2.0)), int(round((height - n_px) / 2.0))


def _normalize(x: torch.Tensor, preprocessing: Preprocessing = OPENAI_PREPROCESSING) -> torch.Tensor:
    """(x - mean) / std per channel of (..., 3, H, W) float32 values in [0, 1], as torchvision's Normalize."""
    mean = torch.tensor(preprocessing.mean, dtype=x.dtype, device=x.device)[:, None, None]
    std = torch.tensor(preprocessing.std, dtype=x.dtype, device=x.device)[:, None, None]
    return x.sub(mean).div(std)


def _to_tensor(image, preprocessing: Preprocessing = OPENAI_PREPROCESSING) -> torch.Tensor:
    """An RGB PIL image -> normalised float32 (3, H, W), as torchvision's ToTensor + Normalize."""
    width, height = image.size
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(height, width, 3)
    return _normalize(pixels.permute(2, 0, 1).float().div(255), preprocessing)


def _repr(transform) -> str:
    """The dataclass repr without `preprocessing` where it is OpenAI's, so the repr (a feature cache key) of an
    OpenAI-preprocessed transform reads, and keys, as it did before checkpoints carried their preprocessing."""
    shown = [f"{f.name}={getattr(transform, f.name)!r}" for f in fields(transform)
             if not (f.name == "preprocessing" and transform.preprocessing == OPENAI_PREPROCESSING)]  # fmt: skip
    return f"{type(transform).__name__}({', '.join(shown)})"


def _check_n_px(n_px) -> None:
    if not isinstance(n_px, int) or n_px < 1:
        raise ValueError(f"n_px must be a positive int (the output side in pixels), got {n_px!r}")


@dataclass(frozen=True, repr=False)
class ClipPreprocess:
    """`clip._transform(n_px)`: PIL image -> float32 (3, n_px, n_px). Picklable for DataLoader workers."""

    n_px: int = 224  # output side; CLIP's checkpoints use 224 (336 for ViT-L/14@336px, 288+ for RN50x*)
    preprocessing: Preprocessing = OPENAI_PREPROCESSING  # statistics and resize mode (part of repr: cache keys)

    def __post_init__(self):
        _check_n_px(self.n_px)

    __repr__ = _repr

    def __call__(self, image) -> torch.Tensor:
        Image = _pil_image()
        size = self.preprocessing.output_size(*image.size, self.n_px)
        if size != image.size:  # torchvision returns the image unchanged when the size already matches
            image = image.resize(size, Image.Resampling.BICUBIC)
        left, top = center_crop_offsets(*size, self.n_px)
        image = image.crop((left, top, left + self.n_px, top + self.n_px))
        # convert after resizing: reproduced, see module docstring
        return _to_tensor(image.convert("RGB"), self.preprocessing)


def clip_preprocess(n_px: int = 224, preprocessing: Preprocessing = OPENAI_PREPROCESSING) -> ClipPreprocess:
    """CLIP's evaluation preprocessing for PIL images, exact to OpenAI's `clip._transform(n_px)` (with another
    checkpoint's `preprocessing`: to open_clip's evaluation transform for it)."""
    return ClipPreprocess(n_px, preprocessing)


def _bicubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5, in Pillow's operation order (same float64 rounding)."""
    x = x.abs()
    near = (1.5 * x - 2.5) * x * x + 1  # ((a + 2) x - (a + 3)) x^2 + 1 for |x| < 1
    far = (((x - 5) * x + 8) * x - 4) * -0.5  # ((x - 5) x + 8) x - 4) a for 1 <= |x| < 2
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _resample_weights(in_size: int, out_size: int, first: int, count: int, device) -> tuple:
    """Pillow's fixed-point bicubic weights for outputs first .. first + count - 1 of an in -> out resize.

    Returns (weights (count, stop - start), start, stop): only input positions start .. stop - 1 feed
    these outputs. Follows Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` (Resample.c): output
    j samples the input around center = (j + 0.5) * scale; when shrinking, the kernel is stretched by
    the scale (antialiasing); weights are normalised to sum 1, then rounded to integers out of 2**22.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale  # the bicubic kernel's support is 2
    taps = math.ceil(support) * 2 + 1
    start = max(int((first + 0.5) * scale - support + 0.5), 0)  # int() truncates, as Pillow's (int)
    stop = min(int((first + count - 0.5) * scale + support + 0.5), in_size)
    center = (torch.arange(first, first + count, dtype=torch.float64, device=device) + 0.5) * scale  # (count,)
    lo = (center - support + 0.5).long().clamp(min=0)
    hi = (center + support + 0.5).long().clamp(max=in_size)
    index = lo[:, None] + torch.arange(taps, device=device)  # (count, taps)
    w = torch.where(index < hi[:, None], _bicubic((index.double() - center[:, None] + 0.5) * (1.0 / filterscale)), 0.0)
    total = torch.zeros_like(center)
    for t in range(taps):  # summed tap by tap, in Pillow's order, so the float64 rounding matches
        total = total + w[:, t]
    w = torch.where(total[:, None] != 0, w / total[:, None], w)
    w = torch.where(w < 0, (w * 2**PRECISION_BITS - 0.5).trunc(), (w * 2**PRECISION_BITS + 0.5).trunc())
    weights = torch.zeros(count, stop - start, dtype=torch.float64, device=device)
    # taps beyond the window carry weight 0; clamping their index only keeps the scatter in bounds
    return weights.scatter_add_(1, (index - start).clamp(0, stop - start - 1), w), start, stop


def _round_clip8(acc: torch.Tensor) -> torch.Tensor:
    """Pillow's clip8: (sum + 2**21) >> 22, clamped to 0..255. Exact in float64 (sums < 2**53)."""
    return torch.floor((acc + 2 ** (PRECISION_BITS - 1)) / 2**PRECISION_BITS).clamp_(0, 255)


def preprocess_tensor(images: torch.Tensor, n_px: int = 224,
                      preprocessing: Preprocessing = OPENAI_PREPROCESSING) -> torch.Tensor:
    """CLIP preprocessing of uint8 RGB tensors (3, H, W) or (N, 3, H, W) -> float32 (..., 3, n_px, n_px).

    Pillow's bicubic resize of the short side + centre crop, computed only for the kept pixels, on the
    tensor's device; equal to `clip_preprocess` on RGB images (see the module docstring).
    """
    _check_n_px(n_px)
    if images.dtype != torch.uint8 or images.dim() not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(
            f"preprocess_tensor expects uint8 RGB images shaped (3, H, W) or (N, 3, H, W), got "
            f"{images.dtype} {tuple(images.shape)}; convert grey or RGBA images to RGB first"
        )
    height, width = images.shape[-2:]
    new_w, new_h = preprocessing.output_size(width, height, n_px)
    left, top = center_crop_offsets(new_w, new_h, n_px)
    # per axis: fixed-point weights (None when that side keeps its size) and the input span they read
    cols, c0, c1 = (None, left, left + n_px)
    if new_w != width:
        cols, c0, c1 = _resample_weights(width, new_w, left, n_px, images.device)
    rows, r0, r1 = (None, top, top + n_px)
    if new_h != height:
        rows, r0, r1 = _resample_weights(height, new_h, top, n_px, images.device)
    x = images[..., r0:r1, c0:c1].double()  # (..., 3, r1 - r0, c1 - c0)

    def horizontal(x):
        return x if cols is None else _round_clip8(x @ cols.T)  # (..., 3, rows, n)

    def vertical(x):
        return x if rows is None else _round_clip8(rows @ x)  # (..., 3, n, cols)

    # Each pass rounds to uint8 levels, so the order matters. Pillow 13 (the golden files' version)
    # runs the vertical pass first when the height shrinks by more than twice as many pixels as the
    # width does (found by probing it: 0 mismatches on ~700 random size pairs), else horizontal first.
    vertical_first = new_h < height and height - new_h > 2 * (width - new_w)
    x = horizontal(vertical(x)) if vertical_first else vertical(horizontal(x))  # (..., 3, n, n)
    return _normalize(x.float().div(255), preprocessing)


def _generator(seed_or_generator) -> torch.Generator:
    if seed_or_generator is None or isinstance(seed_or_generator, torch.Generator):
        return seed_or_generator  # None: the global RNG, as torchvision
    return torch.Generator().manual_seed(int(seed_or_generator))


@dataclass(frozen=True, repr=False)
class TrainTransform:
    """Random resized crop + bicubic resize + horizontal flip + normalise: PIL image -> (3, n_px, n_px)."""

    n_px: int = 224  # output side
    scale: tuple = (0.08, 1.0)  # crop area as a fraction of the image area (torchvision's default)
    ratio: tuple = (3 / 4, 4 / 3)  # crop aspect ratio range, width / height (torchvision's default)
    flip: bool = True  # mirror left-right with probability 1/2
    preprocessing: Preprocessing = OPENAI_PREPROCESSING  # its statistics normalise (the crop is always random)

    def __post_init__(self):
        _check_n_px(self.n_px)
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1 (fractions of the image area), got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < low <= high (width / height), got {self.ratio}")

    __repr__ = _repr

    def crop_box(self, width: int, height: int, generator=None) -> tuple:
        """(left, top, w, h): torchvision's RandomResizedCrop.get_params with the same random draws."""
        g = _generator(generator)
        area = height * width
        log_ratio = torch.log(torch.tensor(self.ratio))
        for _ in range(10):  # 10 attempts of (area, log-uniform aspect ratio); keep the first that fits
            target_area = area * torch.empty(1).uniform_(self.scale[0], self.scale[1], generator=g).item()
            aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0].item(), log_ratio[1].item(), generator=g)).item()
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = torch.randint(0, height - h + 1, size=(1,), generator=g).item()
                left = torch.randint(0, width - w + 1, size=(1,), generator=g).item()
                return left, top, w, h
        in_ratio = width / height  # fallback: the largest central crop with a ratio in range
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            w, h = int(round(height * max(self.ratio))), height
        else:
            w, h = width, height
        return (width - w) // 2, (height - h) // 2, w, h

    def __call__(self, image, generator=None) -> torch.Tensor:
        """One augmented view; `generator` (a torch.Generator or an int seed) makes it reproducible."""
        Image = _pil_image()
        g = _generator(generator)
        image = image.convert("RGB")  # first, as CoOp's (Dassl's) image reader: no palette/alpha resampling
        left, top, w, h = self.crop_box(*image.size, generator=g)
        image = image.crop((left, top, left + w, top + h)).resize((self.n_px, self.n_px), Image.Resampling.BICUBIC)
        if self.flip and torch.rand(1, generator=g).item() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return _to_tensor(image, self.preprocessing)


def train_transform(n_px: int = 224, scale=(0.08, 1.0), flip: bool = True,
                    preprocessing: Preprocessing = OPENAI_PREPROCESSING) -> TrainTransform:
    """The training augmentation (random resized crop, bicubic, flip, normalise) without torchvision."""
    return TrainTransform(n_px, tuple(scale), flip=flip, preprocessing=preprocessing)
