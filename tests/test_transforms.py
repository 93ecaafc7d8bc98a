"""tinyprompt.transforms: exact CLIP preprocessing on the golden cases, the tensor path, train augmentation."""
import functools
import pickle
import sys

import pytest
import torch

from golden import golden_params, load
from tinyprompt import transforms as T

Image = pytest.importorskip("PIL.Image", reason="the image transforms need Pillow: pip install 'tinyprompt[images]'")


@functools.lru_cache(maxsize=None)
def _golden(path):
    return load(path)


def _golden_cases():
    """One param per (file, case, n_px) of every preprocess/*.pt, with id stem-name-n_px."""
    params = []
    for file_param in golden_params("preprocess/*.pt"):
        path = file_param.values[0]
        if path is None:
            params.append(pytest.param(None, None, None, id=file_param.id, marks=file_param.marks))
            continue
        data = _golden(path)
        for i, case in enumerate(data["cases"]):
            params += [pytest.param(path, i, n, id=f"{path.stem}-{case['name']}-{n}") for n in data["n_px"]]
    return params


def _rebuild(case):
    """The source PIL image of a golden case, as its README says."""
    image = Image.frombytes(case["mode"], tuple(case["size_wh"]), case["pixels"].numpy().tobytes())
    if case["palette"] is not None:
        image.putpalette(case["palette"].numpy().tobytes())
    return image


def _rgb_tensor(image):
    """A PIL image -> uint8 (3, H, W) RGB tensor."""
    rgb = image.convert("RGB")
    return torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).view(rgb.height, rgb.width, 3).permute(2, 0, 1)


@pytest.mark.parametrize("path,index,n_px", _golden_cases())
def test_golden_pil_path(path, index, n_px):
    case = _golden(path)["cases"][index]
    width, height = case["size_wh"]
    resized = T.resize_shape(width, height, n_px)
    assert list(resized) == list(case[f"resized_size_wh_{n_px}"])
    assert list(T.center_crop_offsets(*resized, n_px)) == list(case[f"crop_left_top_{n_px}"])
    out = T.clip_preprocess(n_px)(_rebuild(case))
    assert out.dtype == torch.float32 and out.shape == (3, n_px, n_px)
    torch.testing.assert_close(out, case[f"out_{n_px}"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("path,index,n_px", _golden_cases())
def test_golden_tensor_path(path, index, n_px):
    # The tensor path evaluates Pillow's own fixed-point bicubic, so on RGB input it is bit-identical
    # to the PIL path: measured max abs difference 0 on every golden case. RGB and L sources therefore
    # match the golden output; P, RGBA, LA and CMYK sources differ from it only because the golden
    # resizes BEFORE converting to RGB (measured vs golden, in levels of 255, max / mean: P 198 / 63,
    # RGBA 255 / 29, LA 255 / 2.8, CMYK 15 / 0.9), so for them compare with the PIL path on RGB.
    case = _golden(path)["cases"][index]
    image = _rebuild(case)
    out = T.preprocess_tensor(_rgb_tensor(image), n_px)
    assert out.dtype == torch.float32 and out.shape == (3, n_px, n_px)
    expected = case[f"out_{n_px}"] if case["mode"] in ("RGB", "L") else T.clip_preprocess(n_px)(image.convert("RGB"))
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_crop_rounding_is_half_to_even():
    assert T.center_crop_offsets(224, 301, 224) == (0, 38)  # 38.5 -> 38
    assert T.center_crop_offsets(37, 32, 32) == (2, 0)  # 2.5 -> 2
    assert T.center_crop_offsets(299, 224, 224) == (38, 0)  # 37.5 -> 38
    assert T.resize_shape(1000, 3, 224) == (74666, 224)  # truncated, not rounded


def _random_rgb(seed, width, height):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8)
    return Image.frombytes("RGB", (width, height), pixels.numpy().tobytes())


@pytest.mark.parametrize("size", [(61, 47), (40, 90), (32, 32), (20, 13)])
def test_tensor_path_batched_equals_pil(size):
    images = [_random_rgb(seed, *size) for seed in range(3)]
    batch = torch.stack([_rgb_tensor(im) for im in images])  # (3, 3, H, W)
    out = T.preprocess_tensor(batch, 32)
    assert out.shape == (3, 3, 32, 32)
    for i, image in enumerate(images):
        torch.testing.assert_close(out[i], T.clip_preprocess(32)(image), atol=1e-6, rtol=0)


@pytest.mark.skipif(
    int(Image.__version__.split(".")[0]) < 13, reason="Pillow < 13 always resizes horizontally first (golden: 13.0.0)"
)
def test_tensor_path_pass_order_matches_pillow():
    # Pillow rounds to uint8 between its two passes, so their order shows in the output; sizes drawn
    # so that both orders occur (vertical first when the height shrinks by > 2x the width's shrink)
    rng = torch.Generator().manual_seed(0)
    orders = set()
    for seed in range(16):
        width, height = (int(v) for v in torch.randint(3, 90, (2,), generator=rng))
        n_px = int(torch.randint(2, min(width, height) + 40, (1,), generator=rng))
        new_w, new_h = T.resize_shape(width, height, n_px)
        orders.add(new_h < height and height - new_h > 2 * (width - new_w))
        image = _random_rgb(seed, width, height)
        out = T.preprocess_tensor(_rgb_tensor(image), n_px)
        torch.testing.assert_close(out, T.clip_preprocess(n_px)(image), atol=1e-6, rtol=0, msg=f"{image.size} {n_px}")
    assert orders == {True, False}


def test_tensor_path_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8 RGB images"):
        T.preprocess_tensor(torch.zeros(3, 8, 8), 4)
    with pytest.raises(ValueError, match="uint8 RGB images"):
        T.preprocess_tensor(torch.zeros(4, 8, 8, dtype=torch.uint8), 4)
    with pytest.raises(ValueError, match="n_px must be a positive int"):
        T.preprocess_tensor(torch.zeros(3, 8, 8, dtype=torch.uint8), 0)


def test_preprocess_object_is_picklable_and_readable():
    preprocess = T.clip_preprocess(224)
    assert repr(preprocess) == "ClipPreprocess(n_px=224)"
    clone = pickle.loads(pickle.dumps(preprocess))
    image = _random_rgb(0, 50, 40)
    assert torch.equal(clone(image), preprocess(image))
    with pytest.raises(ValueError, match="n_px must be a positive int"):
        T.clip_preprocess(-1)


def test_missing_pillow_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"pip install 'tinyprompt\[images\]'"):
        T.clip_preprocess(32)(object())


# ---- train augmentation -------------------------------------------------------------------------


def test_train_transform_output_and_normalisation():
    grey = Image.new("RGB", (90, 60), (128, 64, 200))
    out = T.train_transform(32)(grey, generator=0)
    assert out.dtype == torch.float32 and out.shape == (3, 32, 32)
    values = torch.tensor([128, 64, 200]) / 255.0
    expected = (values - torch.tensor(T.CLIP_MEAN)) / torch.tensor(T.CLIP_STD)
    torch.testing.assert_close(out, expected[:, None, None].expand(3, 32, 32), atol=1e-6, rtol=0)
    assert repr(T.train_transform(32, scale=(0.5, 1))) == (
        "TrainTransform(n_px=32, scale=(0.5, 1), ratio=(0.75, 1.3333333333333333), flip=True)"
    )


def test_train_transform_reproducible():
    image = _random_rgb(1, 80, 64)
    transform = T.train_transform(24)
    a = transform(image, generator=7)
    assert torch.equal(a, transform(image, generator=7))
    assert torch.equal(a, transform(image, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(a, transform(image, generator=8))
    torch.manual_seed(3)  # no generator: the global RNG, as torchvision
    b = transform(image)
    torch.manual_seed(3)
    assert torch.equal(b, transform(image))
    assert torch.equal(pickle.loads(pickle.dumps(transform))(image, generator=7), a)


def test_flip_really_flips():
    image = _random_rgb(2, 70, 50)
    flipped = 0
    for seed in range(16):  # the flip is drawn after the crop, so both transforms crop the same box
        plain = T.train_transform(16, flip=False)(image, generator=seed)
        maybe = T.train_transform(16, flip=True)(image, generator=seed)
        if torch.equal(maybe, plain.flip(-1)):
            flipped += 1
        else:
            assert torch.equal(maybe, plain)
    assert 3 <= flipped <= 13  # p = 1/2 over 16 seeds


def test_crop_box_follows_scale_and_ratio():
    transform = T.TrainTransform(32, scale=(0.25, 0.5))
    width, height = 300, 200
    for seed in range(200):
        left, top, w, h = transform.crop_box(width, height, generator=seed)
        assert 0 <= left <= width - w and 0 <= top <= height - h
        slack = (w + h) / 2 + 0.25  # from rounding w and h to integers
        assert 0.25 * width * height - slack <= w * h <= 0.5 * width * height + slack
        assert 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02
    # no attempt fits a 1000 x 10 image at ratio <= 4/3: the central fallback crop of ratio 4/3
    assert T.TrainTransform(32).crop_box(1000, 10, generator=0) == ((1000 - 13) // 2, 0, 13, 10)


def test_train_transform_validates():
    with pytest.raises(ValueError, match="scale must satisfy"):
        T.train_transform(32, scale=(0.5, 0.1))
    with pytest.raises(ValueError, match="ratio must satisfy"):
        T.TrainTransform(32, ratio=(0.0, 1.0))


# ---- a checkpoint's own preprocessing (open_clip tags trained on other statistics / squash resizing) ------------

HALF = T.Preprocessing((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
SQUASH = T.Preprocessing(resize_mode="squash")


def test_preprocessing_validates_and_defaults_to_openais():
    assert T.Preprocessing() == T.OPENAI_PREPROCESSING == T.Preprocessing(list(T.CLIP_MEAN), list(T.CLIP_STD))
    assert T.model_preprocessing(torch.nn.Linear(1, 1)) == T.OPENAI_PREPROCESSING  # a model that states none
    with pytest.raises(ValueError, match="mean must be 3 finite numbers"):
        T.Preprocessing((0.5, 0.5))
    with pytest.raises(ValueError, match="std must be 3 positive numbers"):
        T.Preprocessing(std=(0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match="resize_mode 'longest' is not supported: one of \\('shortest', 'squash'\\)"):
        T.Preprocessing(resize_mode="longest")


def test_normalisation_follows_the_statistics():
    grey = Image.new("RGB", (40, 30), (128, 64, 200))
    values = (torch.tensor([128, 64, 200]) / 255.0)[:, None, None]
    # the same ops in the same order as torchvision's Normalize: (x - mean) / std, exact
    assert torch.equal(T.clip_preprocess(16, HALF)(grey), ((values - 0.5) / 0.5).expand(3, 16, 16))
    train = T.train_transform(16, preprocessing=HALF)(grey, generator=0)
    assert torch.equal(train, ((values - 0.5) / 0.5).expand(3, 16, 16))
    pixels = _rgb_tensor(grey)
    assert torch.equal(T.preprocess_tensor(pixels, 16, HALF), T.clip_preprocess(16, HALF)(grey))


@pytest.mark.parametrize("size", [(61, 47), (40, 90), (32, 32), (20, 13), (7, 100)])
def test_squash_resizes_both_sides_without_a_crop(size):
    """squash: Pillow's bicubic resize of the whole image to n_px x n_px (no centre crop); the tensor path equals the
    PIL path bit for bit (the same fixed-point sums), whichever axis grows or shrinks."""
    image = _random_rgb(3, *size)
    out = T.clip_preprocess(32, SQUASH)(image)
    want = T.clip_preprocess(32)(image.resize((32, 32), Image.Resampling.BICUBIC))  # already 32 x 32: no crop
    assert torch.equal(out, want)
    assert torch.equal(T.preprocess_tensor(_rgb_tensor(image), 32, SQUASH), out)


def test_repr_names_the_preprocessing_only_where_it_is_not_openais():
    """The repr is the feature cache's key for a transform: OpenAI's reads as before, another names its statistics."""
    assert repr(T.clip_preprocess(224, T.Preprocessing())) == "ClipPreprocess(n_px=224)"
    assert repr(T.clip_preprocess(224, HALF)) == (
        "ClipPreprocess(n_px=224, preprocessing=Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), "
        "resize_mode='shortest'))")  # fmt: skip
    assert "preprocessing=Preprocessing(" in repr(T.train_transform(32, preprocessing=SQUASH))
    assert pickle.loads(pickle.dumps(T.clip_preprocess(32, HALF))) == T.clip_preprocess(32, HALF)
