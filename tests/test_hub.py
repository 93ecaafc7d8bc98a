"""tinyprompt.hub: the manifest, load() by name (download from a server on 127.0.0.1, cache reuse,
corrupt/partial files, offline) and by path (OpenAI TorchScript archive, plain state dict), bad inputs."""
import hashlib
import importlib.resources
import json
import re
import urllib.request
import warnings

import pytest
import torch

from golden import GOLDEN, load as load_golden
from httpserver import FileServer
from tinyprompt import hub

TINY = GOLDEN / "clip" / "clip_tiny_vit.pt"
TINY_JIT = GOLDEN / "clip" / "clip_tiny_vit_jit.pt"
needs_tiny = pytest.mark.skipif(not TINY.is_file(), reason=f"golden file {TINY} not found (set TINYPROMPT_GOLDEN)")

NAMES = ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px"]
RESOLUTION = {"RN50x4": 288, "RN50x16": 384, "RN50x64": 448, "ViT-L/14@336px": 336}


@pytest.fixture(autouse=True)
def home(monkeypatch, tmp_path):
    """A throwaway home, so OpenAI's cache ~/.cache/clip is the test's own (empty unless a test fills it)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def tiny():
    return load_golden(TINY)


@pytest.fixture(scope="module")
def tiny_bytes(tiny, tmp_path_factory):
    """The tiny ViT's state dict as the bytes of a torch.save file (made at test time, never committed)."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(tiny["state_dict"], path)
    return path.read_bytes()


@pytest.fixture
def served(tiny_bytes, monkeypatch):
    """A file server with the tiny checkpoint, and a manifest entry "tiny-test" pointing at it."""
    with FileServer({"/models/tiny-test.pt": tiny_bytes}) as server:
        entry = {"name": "tiny-test", "file": "tiny-test.pt", "url": server.url("/models/tiny-test.pt"),
                 "sha256": hashlib.sha256(tiny_bytes).hexdigest(), "approx_size_bytes": len(tiny_bytes),
                 "input_resolution": 32}
        monkeypatch.setitem(hub._manifest(), "tiny-test", entry)
        monkeypatch.setenv("TINYPROMPT_OFFLINE", "0")
        yield server


def assert_matches_golden(model, tiny):
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(tiny["image"]), tiny["encode_image"], atol=1e-5, rtol=0)
        torch.testing.assert_close(model.encode_text(tiny["text"]), tiny["encode_text"], atol=1e-5, rtol=0)
    assert all(p.dtype == torch.float32 for p in model.parameters()) and not model.training


def files(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ------------------------------------------------------------------------------------------ manifest

def test_manifest_lists_the_nine_openai_checkpoints():
    text = importlib.resources.files("tinyprompt.weights").joinpath("manifest.json").read_text(encoding="utf-8")
    entries = json.loads(text)["models"]
    assert [e["name"] for e in entries] == NAMES == hub.available_models()
    for e in entries:
        parts = e["url"].split("/")
        assert e["url"].startswith("https://openaipublic.azureedge.net/clip/models/")
        assert parts[-2] == e["sha256"] and len(e["sha256"]) == 64 and int(e["sha256"], 16) >= 0
        assert parts[-1] == e["file"] == e["name"].replace("/", "-").replace("@", "-") + ".pt"
        assert e["input_resolution"] == RESOLUTION.get(e["name"], 224)
        assert 2e8 < e["approx_size_bytes"] < 1.5e9


# --------------------------------------------------------------------------------- load by name

@needs_tiny
def test_load_by_name_downloads_once_then_reuses(served, tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYPROMPT_CACHE", str(tmp_path / "cache"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a named model is OpenAI's layout: build_model has nothing to warn about
        model, preprocess = hub.load("tiny-test")
    assert_matches_golden(model, tiny)
    assert files(tmp_path / "cache" / "clip") == ["tiny-test.pt"]  # verified, renamed into place, no .part
    assert len(served.requests) == 1
    hub.load("tiny-test")
    assert len(served.requests) == 1  # the verified file on disk is reused


@needs_tiny
def test_download_root_and_openai_cache(served, tiny_bytes, tmp_path, home, monkeypatch):
    root = tmp_path / "weights"
    hub.load("tiny-test", download_root=root)
    assert files(root) == ["tiny-test.pt"]
    # a verified copy in OpenAI's cache is reused without any network access
    (home / ".cache" / "clip").mkdir(parents=True)
    (home / ".cache" / "clip" / "tiny-test.pt").write_bytes(tiny_bytes)
    monkeypatch.setenv("TINYPROMPT_OFFLINE", "1")
    assert hub.checkpoint_file("tiny-test", tmp_path / "elsewhere") == home / ".cache" / "clip" / "tiny-test.pt"
    assert len(served.requests) == 1


@needs_tiny
def test_corrupt_file_on_disk_is_never_used(served, tiny_bytes, tmp_path, monkeypatch):
    root = tmp_path / "weights"
    root.mkdir()
    (root / "tiny-test.pt").write_bytes(tiny_bytes[:-10])  # e.g. an older, interrupted copy
    monkeypatch.setenv("TINYPROMPT_OFFLINE", "1")
    with pytest.warns(UserWarning, match="incomplete or corrupt and is not used"):
        with pytest.raises(RuntimeError, match="TINYPROMPT_OFFLINE is set"):
            hub.load("tiny-test", download_root=root)
    monkeypatch.setenv("TINYPROMPT_OFFLINE", "0")
    with pytest.warns(UserWarning, match="incomplete or corrupt"):
        path = hub.checkpoint_file("tiny-test", root)
    assert path.read_bytes() == tiny_bytes and files(root) == ["tiny-test.pt"]  # replaced by a verified download


@needs_tiny
def test_wrong_sha_leaves_no_file(served, tmp_path, monkeypatch):
    monkeypatch.setitem(hub._manifest()["tiny-test"], "sha256", "f" * 64)
    with pytest.raises(RuntimeError, match="expected f{64}; it was deleted and not used"):
        hub.load("tiny-test", download_root=tmp_path / "weights")
    assert files(tmp_path / "weights") == []  # not even the .part


@needs_tiny
def test_truncated_transfer_then_resume(served, tiny, tiny_bytes, tmp_path):
    root = tmp_path / "weights"
    served.truncate_next = 1 << 20
    with pytest.raises(RuntimeError, match="stopped after 1048576 of .* the next attempt resumes"):
        hub.load("tiny-test", download_root=root)
    assert files(root) == ["tiny-test.pt.part"]  # the final name never holds a partial file
    model, _ = hub.load("tiny-test", download_root=root)
    assert served.requests[-1][1] == "bytes=1048576-"
    assert (root / "tiny-test.pt").read_bytes() == tiny_bytes and files(root) == ["tiny-test.pt"]
    assert_matches_golden(model, tiny)


@needs_tiny
def test_server_down_is_a_clear_error(served, tmp_path):
    served.stop()
    with pytest.raises(RuntimeError, match="cannot reach http://127.0.0.1.*place it at .*tiny-test.pt"):
        hub.load("tiny-test", download_root=tmp_path / "weights")
    assert files(tmp_path / "weights") == []


@needs_tiny
def test_offline_never_touches_the_network(served, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYPROMPT_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used in offline mode")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(RuntimeError, match="not on disk and TINYPROMPT_OFFLINE is set.*unset TINYPROMPT_OFFLINE"):
        hub.load("tiny-test", download_root=tmp_path / "weights")
    assert served.requests == []


# ---------------------------------------------------------------------------------- load by path

@pytest.mark.skipif(not TINY_JIT.is_file(), reason=f"golden file {TINY_JIT} not found (set TINYPROMPT_GOLDEN)")
@needs_tiny
def test_torchscript_archive(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # torch.jit.load's deprecation notice is kept quiet
        with pytest.warns(UserWarning, match="not a released OpenAI checkpoint"):  # tiny: not one of the nine
            model, preprocess = hub.load(TINY_JIT)
    assert model.visual.input_resolution == 32
    assert_matches_golden(model, tiny)  # the archive's fp16 tensors were widened to fp32 exactly


@needs_tiny
@pytest.mark.parametrize("form", ["state_dict", "wrapped", "ddp"])
def test_plain_state_dict(tiny, tmp_path, form):
    path = tmp_path / "tiny.pth"
    weights = tiny["state_dict"]
    if form == "ddp":  # a DistributedDataParallel training checkpoint (open_clip's layout): keys "module.*"
        weights = {f"module.{k}": v for k, v in weights.items()}
    torch.save(weights if form == "state_dict" else {"state_dict": weights, "epoch": 3}, path)
    with pytest.warns(UserWarning, match="not a released OpenAI checkpoint"):  # shapes cannot tell it is OpenAI's
        model, _ = hub.load(str(path))
    assert_matches_golden(model, tiny)


# ------------------------------------------------------------------------------------- bad inputs

def test_unknown_name_lists_models_and_mentions_paths():
    with pytest.raises(ValueError, match=r"unknown model 'ViT-B/99'.*'ViT-B/32'.*path to a checkpoint"):
        hub.load("ViT-B/99")


@pytest.mark.parametrize("content", [b"", b"definitely not a checkpoint\n" * 10], ids=["empty", "text"])
def test_non_checkpoint_file(tmp_path, content):
    path = tmp_path / "notes.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"{re.escape(str(path))} is not a CLIP checkpoint"):
        hub.load(path)


@pytest.mark.parametrize("obj", [
    {"fc.weight": torch.randn(4, 3), "fc.bias": torch.randn(4)},  # a state dict of another model
    [torch.randn(2)],                                            # not a dict at all
], ids=["other_model", "list"])
def test_checkpoint_of_something_else(tmp_path, obj):
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}: .*CLIP"):
        hub.load(path)
