"""Tests of tinyprompt.data.features: the feature cache (hits, every kind of miss, atomic and corrupt files),
seeded augmented views, and FeatureDataset."""
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from tinyprompt.data.features import FeatureDataset, cached_features, encode_images, feature_key
from tinyprompt.data.splits import Item
from tinyprompt.engine import TrainConfig, train

PIL = pytest.importorskip("PIL.Image")


class MeanEncoder(nn.Module):
    """A stand-in image encoder: the mean colour through a Linear; counts the batches it encodes."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 4)
        with torch.no_grad():
            self.proj.weight.copy_(torch.arange(12.0).reshape(4, 3) / 10)
            self.proj.bias.fill_(0.5)
        self.calls = 0

    def forward(self, images):  # (B, 3, H, W) -> (B, 4)
        self.calls += 1
        return self.proj(images.mean(dim=(2, 3)))


class ToTensor:
    def __init__(self, scale=1.0):
        self.scale = scale

    def __call__(self, image):
        return self.scale * torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float() / 255

    def __repr__(self):
        return f"ToTensor(scale={self.scale})"


class Jitter(ToTensor):
    """A random augmentation drawing from torch, python and numpy RNGs."""

    def __call__(self, image):
        x = super().__call__(image)
        return torch.roll(x, random.randint(0, 3), dims=2) * (1 + 0.1 * float(np.random.rand())) + 0.2 * torch.rand(3, 1, 1)

    def __repr__(self):
        return "Jitter()"


@pytest.fixture
def items(tmp_path):
    rng = np.random.default_rng(0)
    out = []
    for i in range(5):
        path = tmp_path / "img" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        PIL.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(path)
        out.append(Item(str(path), i % 2, ["a", "b"][i % 2]))
    return out


def test_encode_images_in_order(items):
    encoder = MeanEncoder()
    got = encode_images(encoder, items, ToTensor(), batch_size=2)
    with torch.no_grad():
        want = torch.stack([encoder(ToTensor()(PIL.open(item.path))[None])[0] for item in items])
    assert got.shape == (5, 4) and got.dtype == torch.float32
    torch.testing.assert_close(got, want)


def test_second_call_loads_the_cache(items, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYPROMPT_CACHE", str(tmp_path / "cache"))
    encoder = MeanEncoder()
    first = cached_features(encoder.forward, items, ToTensor(), batch_size=2)
    assert encoder.calls == 3 and first.shape == (1, 5, 4)
    torch.testing.assert_close(first[0], encode_images(encoder, items, ToTensor()))
    encoder.calls = 0
    second = cached_features(encoder, items, ToTensor(), batch_size=2)  # the module itself: the same encoder
    assert encoder.calls == 0 and torch.equal(first, second)
    files = list((tmp_path / "cache" / "features").iterdir())
    assert [f.name for f in files] == [f"{feature_key(items, ToTensor(), _parts(encoder))}.pt"]


def _parts(encoder):
    from tinyprompt.data.features import _model_id
    return _model_id(encoder, None)


def _touch(path, seconds):
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds * 10**9))


def _resize_file(path):
    """Rewrite the image with other bytes (a different size) but the same mtime."""
    stat = os.stat(path)
    PIL.new("RGB", (4, 4), "red").save(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_size != stat.st_size and os.stat(path).st_mtime_ns == stat.st_mtime_ns


CHANGES = {  # name -> function(items, encoder) returning the changed call's keyword arguments
    "mtime": lambda items, enc: _touch(items[2].path, 10) or {},
    "size": lambda items, enc: _resize_file(items[3].path) or {},
    "file list": lambda items, enc: {"items": items[:4]},
    "transform": lambda items, enc: {"transform": ToTensor(scale=2.0)},
    "views": lambda items, enc: {"views": 2},
    "seed": lambda items, enc: {"seed": 1},
    "model weights": lambda items, enc: enc.proj.bias.data.fill_(0.25) is None or {},
    "key_parts": lambda items, enc: {"key_parts": {"split": "val"}},
}


@pytest.mark.parametrize("change", CHANGES)
def test_any_change_misses_the_cache(items, tmp_path, change):
    encoder = MeanEncoder()
    base = dict(items=items, transform=ToTensor(), key_parts=None, views=1, seed=0, cache_root=tmp_path / "c")
    cached_features(encoder, **base)
    encoder.calls = 0
    cached_features(encoder, **base)
    assert encoder.calls == 0
    kwargs = {**base, **CHANGES[change](items, encoder)}
    features = cached_features(encoder, **kwargs)
    assert encoder.calls > 0, f"a change of {change} must miss the cache"
    assert len(list((tmp_path / "c").iterdir())) == 2
    torch.testing.assert_close(features[-1], encode_images(encoder, kwargs["items"], kwargs["transform"]))


def test_named_model_replaces_the_fingerprint(items, tmp_path):
    encoder = MeanEncoder()
    with pytest.raises(ValueError, match=r"pass key_parts=\{'model'"):
        cached_features(lambda x: encoder(x), items, ToTensor(), cache_root=tmp_path / "c")
    a = cached_features(lambda x: encoder(x), items, ToTensor(), key_parts={"model": "sha-a"}, cache_root=tmp_path / "c")
    calls = encoder.calls
    encoder.proj.bias.data.fill_(0.0)  # invisible to the key: the caller named the model
    b = cached_features(lambda x: encoder(x), items, ToTensor(), key_parts={"model": "sha-a"}, cache_root=tmp_path / "c")
    assert encoder.calls == calls and torch.equal(a, b)
    with pytest.warns(UserWarning, match="memory address"):
        cached_features(encoder, items, lambda image: ToTensor()(image), cache_root=tmp_path / "c")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other key"])
def test_corrupt_cache_file_is_recomputed_with_a_warning(items, tmp_path, damage):
    encoder = MeanEncoder()
    good = cached_features(encoder, items, ToTensor(), cache_root=tmp_path / "c")
    (path,) = (tmp_path / "c").iterdir()
    data = path.read_bytes()
    if damage == "other key":
        stored = torch.load(path, weights_only=True)
        torch.save({**stored, "key": "0" * 64}, path)
    else:
        path.write_bytes(b"\x00garbage" if damage == "garbage" else data[: len(data) // 2])
    encoder.calls = 0
    with pytest.warns(UserWarning, match=rf"feature cache file {path} is unreadable or does not match"):
        again = cached_features(encoder, items, ToTensor(), cache_root=tmp_path / "c")
    assert encoder.calls > 0 and torch.equal(again, good)
    encoder.calls = 0
    assert torch.equal(cached_features(encoder, items, ToTensor(), cache_root=tmp_path / "c"), good) and encoder.calls == 0


def test_cache_file_is_written_atomically(items, tmp_path, monkeypatch):
    real_save = torch.save

    def fail_half_way(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail_half_way)
    with pytest.raises(OSError, match="disk full"):
        cached_features(MeanEncoder(), items, ToTensor(), cache_root=tmp_path / "c")
    assert list((tmp_path / "c").iterdir()) == []  # neither a half file under the key nor a temporary
    monkeypatch.setattr(torch, "save", real_save)
    encoder = MeanEncoder()
    cached_features(encoder, items, ToTensor(), cache_root=tmp_path / "c")
    assert encoder.calls > 0 and len(list((tmp_path / "c").iterdir())) == 1


def test_augmented_views_are_reproducible_from_their_seeds(items, tmp_path):
    encoder = MeanEncoder()
    torch.manual_seed(0)
    three = cached_features(encoder, items, Jitter(), views=3, seed=7, cache_root=tmp_path / "a")
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), after)  # the caller's RNG is left as it was
    assert not torch.equal(three[0], three[1]) and not torch.equal(three[1], three[2])  # the views differ
    workers = cached_features(encoder, items, Jitter(), views=3, seed=7, num_workers=2, cache_root=tmp_path / "b")
    two = cached_features(encoder, items, Jitter(), views=2, seed=7, cache_root=tmp_path / "c")
    other_seed = cached_features(encoder, items, Jitter(), views=1, seed=8, cache_root=tmp_path / "d")
    assert torch.equal(three, workers)  # the same views with any number of workers
    assert torch.equal(two, three[:2])  # view v depends on (seed, v) only
    assert not torch.equal(other_seed[0], three[0])


def test_feature_dataset_draws_one_view_per_item_per_epoch():
    features = torch.arange(3 * 10 * 2, dtype=torch.float32).reshape(3, 10, 2)  # (V, N, E)
    labels = list(range(10))
    a, b = FeatureDataset(features, labels, seed=4), FeatureDataset(features, labels, seed=4)
    picks = []
    for epoch in range(3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        rows = [a[i] for i in range(10)]
        assert all(torch.equal(f, features[a.view[i], i]) and y.item() == i for i, (f, y) in enumerate(rows))
        assert torch.equal(a.view, b.view)
        picks.append(a.view.tolist())
    assert picks[0] != picks[1] and set(sum(picks, [])) == {0, 1, 2}
    single = FeatureDataset(features[0], labels)
    assert torch.equal(single[3][0], features[0, 3])
    with pytest.raises(ValueError, match=r"features \(3, 10, 2\) and 9 labels"):
        FeatureDataset(features, labels[:9])


def test_engine_sets_the_epoch_of_a_feature_dataset():
    class Spy(FeatureDataset):
        epochs = []

        def set_epoch(self, epoch):
            Spy.epochs.append(epoch)
            super().set_epoch(epoch)

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(2))

    seen = []

    def loss_fn(model, batch, info):
        seen.append((info.epoch, batch[0]))
        return (model.w * batch[0]).sum()

    features = torch.randn(2, 6, 2)
    dataset = Spy(features, list(range(6)), seed=1)
    train(Probe(), loss_fn, dataset, TrainConfig(max_epoch=2, batch_size=6, log_every=100))
    assert Spy.epochs == [0, 0, 1]  # once at construction, then by the engine before each epoch
    for epoch, rows in seen:
        dataset.set_epoch(epoch)
        expected = {tuple(features[dataset.view[i], i].tolist()) for i in range(6)}
        assert {tuple(r.tolist()) for r in rows} == expected
