"""Feature cache for frozen image encoders: encode images (or V augmented views of them) once, keep them on disk.

Prompt learning on CLIP keeps the image encoder frozen (CoOp, arXiv 2109.01134; SHIP, arXiv 2307.07397;
POMP, arXiv 2304.04704), so an image feature is a pure function of the weights, the preprocessing, the
image file and the random draws of its augmentation. Computing the features of the test set, and of V
augmented views of the few-shot train set, once lets training skip the image encoder entirely (an exact
speed-up: the same features the official code recomputes every step).

The cache file is `cache_dir()/features/<key>.pt`, where key = sha256 over everything that affects the
result: the model (a checkpoint sha256 passed in `key_parts["model"]`, or a fingerprint of the encoder
module's weights), the encoder function, `repr(transform)`, every file's path, size and mtime, the number
of views and each view's seed. Files are written atomically; an unreadable or mismatching file is
recomputed with a warning. View v of item i is drawn with every RNG seeded from (seed, v, i), so it is
the same image in every run and with any number of DataLoader workers.
"""
import hashlib
import json
import os
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from tinyprompt.data.splits import ImageDataset, make_loader
from tinyprompt.io import atomic_save, cache_dir

__all__ = ["encode_images", "cached_features", "feature_key", "module_fingerprint", "FeatureDataset"]

FORMAT = 1  # bump when the stored layout or the view seeding changes: old cache files then miss


def _derive(*parts) -> int:
    """A 60-bit seed from a tuple of values (stable across runs and platforms, unlike hash())."""
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:15], 16)


def module_fingerprint(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes and bytes): identifies the weights."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class _SeededViews(ImageDataset):
    """ImageDataset whose (random) transform of item i draws from torch, python and numpy RNGs seeded by
    (view_seed, i); the caller's RNG states are restored afterwards."""

    def __init__(self, items, transform, view_seed):
        super().__init__(items, transform)
        self.view_seed = view_seed

    def __getitem__(self, index):
        seed = _derive(self.view_seed, index)
        saved = torch.get_rng_state(), random.getstate(), np.random.get_state()
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            return super().__getitem__(index)
        finally:
            torch.set_rng_state(saved[0])
            random.setstate(saved[1])
            np.random.set_state(saved[2])


def _encode(encoder, dataset, batch_size, device, num_workers) -> torch.Tensor:
    chunks = []
    with torch.no_grad():
        for images, _ in make_loader(dataset, batch_size, num_workers, device=device):
            chunks.append(encoder(images.to(device)).float().cpu())  # (B, E)
    return torch.cat(chunks)  # (N, E)


def encode_images(encoder, items, transform, batch_size: int = 64, device="cpu", num_workers: int = 0) -> torch.Tensor:
    """encoder(transform(image)) of every item, in order, without gradients: a float32 CPU tensor [N, E]."""
    if not items:
        raise ValueError("encode_images got no items: pass at least one image")
    return _encode(encoder, ImageDataset(items, transform), batch_size, device, num_workers)


def _model_id(encoder, key_parts) -> dict:
    """key_parts plus what identifies the encoder: its function, and its weights unless key_parts names the model."""
    owner = getattr(encoder, "__self__", encoder)  # model.encode_image -> model
    parts = dict(key_parts or {})
    # the function that encodes: "CLIP.encode_image"; a module is called through its forward
    parts["encoder"] = getattr(encoder, "__qualname__", None) or f"{type(encoder).__qualname__}.forward"
    if "model" not in parts:
        if not isinstance(owner, torch.nn.Module):
            raise ValueError("cached_features cannot fingerprint this encoder (not an nn.Module or a method of one): "
                             "pass key_parts={'model': <checkpoint sha256 or another unique name of the weights>}")
        parts["model"] = module_fingerprint(owner)
    return parts


def feature_key(items, transform, key_parts: dict, views: int = 1, seed: int = 0) -> str:
    """The cache key: sha256 over key_parts, repr(transform), the files (path, size, mtime), views and view seeds."""
    files = []
    for item in items:
        try:
            stat = os.stat(item.path)
        except FileNotFoundError:
            raise FileNotFoundError(f"image {item.path} does not exist: restore it or rebuild the item list") from None
        files.append([str(item.path), stat.st_size, stat.st_mtime_ns])
    transform_repr = repr(transform)
    if re.search(r" at 0x[0-9a-f]+>", transform_repr):
        warnings.warn(f"the transform's repr {transform_repr!r} holds a memory address, so the feature cache key "
                      f"changes every run: give the transform a __repr__ that describes it", stacklevel=3)
    payload = {"format": FORMAT, "parts": key_parts, "transform": transform_repr, "views": views,
               "view_seeds": [_derive(seed, v) for v in range(views)], "files": files}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def cached_features(encoder, items, transform, key_parts: dict | None = None, views: int = 1, seed: int = 0,
                    batch_size: int = 64, device="cpu", num_workers: int = 0, cache_root=None) -> torch.Tensor:
    """Features [V, N, E] (float32, CPU) of `views` transformed views of every item, from the cache when present.

    key_parts: JSON values naming what the key cannot see, e.g. {"model": <checkpoint sha256>} (without
    "model", the encoder module's weights are fingerprinted). With a deterministic transform use views=1.
    Under torch.distributed, rank 0 computes and writes the file and the other ranks load it.
    """
    if views < 1:
        raise ValueError(f"views = {views}: use 1 for a deterministic transform, or the number of augmented views")
    if not items:
        raise ValueError("cached_features got no items: pass at least one image")
    key = feature_key(items, transform, _model_id(encoder, key_parts), views, seed)
    path = Path(cache_root if cache_root is not None else cache_dir() / "features") / f"{key}.pt"
    shared = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if not shared or dist.get_rank() == 0:
        features = _load(path, key, views, len(items))
        if features is None:
            features = torch.stack([_encode(encoder, _SeededViews(items, transform, _derive(seed, v)), batch_size,
                                            device, num_workers) for v in range(views)])  # (V, N, E)
            atomic_save({"format": FORMAT, "key": key, "features": features}, path)
    if shared:
        dist.barrier()
        if dist.get_rank() != 0:
            features = _load(path, key, views, len(items))
    return features


def _load(path: Path, key: str, views: int, n: int):
    """The stored features when the file is intact and matches, else None (with a warning for a bad file)."""
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        features = stored["features"]
        if stored["key"] != key or tuple(features.shape[:2]) != (views, n) or features.dim() != 3:
            raise ValueError(f"it holds {tuple(features.shape)} for key {stored['key'][:12]}…")
        if not torch.isfinite(features).all():
            raise ValueError("it holds non-finite values")
    except Exception as e:  # torch.load raises many types on a truncated or foreign file; all mean "recompute"
        warnings.warn(f"feature cache file {path} is unreadable or does not match ({type(e).__name__}: {e}); "
                      f"recomputing it", stacklevel=3)
        return None
    return features


class FeatureDataset(Dataset):
    """`dataset[i]` -> (feature [E], label) over cached features [V, N, E] (or [N, E]).

    Each epoch uses one view per item, drawn from (seed, epoch): call `set_epoch(epoch)` before an epoch
    (`tinyprompt.engine.train` does), so the views a run sees are the same in every run and after a resume.
    """

    def __init__(self, features: torch.Tensor, labels, seed: int = 0):
        self.features = features if features.dim() == 3 else features.unsqueeze(0)  # (V, N, E)
        self.labels = torch.as_tensor(labels, dtype=torch.long)  # (N,)
        if self.features.dim() != 3 or self.features.shape[1] != len(self.labels):
            raise ValueError(f"FeatureDataset got features {tuple(features.shape)} and {len(self.labels)} labels: "
                             f"pass [V, N, E] or [N, E] features with one label per item")
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int):
        generator = torch.Generator().manual_seed(_derive(self.seed, epoch))
        self.view = torch.randint(self.features.shape[0], (len(self.labels),), generator=generator)  # (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.features[self.view[index], index], self.labels[index]
