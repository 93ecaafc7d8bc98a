"""tinyprompt.hub with open_clip's pretrained tags: weights/open_clip.json, load("ARCH/TAG") from a Hugging Face-like
server on 127.0.0.1 (the sha256 it states in X-Linked-Etag, refusals, resume), load(path, config=...), safetensors.

The served checkpoint is a tiny open_clip-style CLIP (2-layer ViT and text tower, erf GELU, 32-wide vision heads) made
at test time; the committed manifest is checked against `CLIPConfig.from_open_clip` (what build_model refuses options
with) and, where open_clip is installed, against open_clip's own tables.
"""
import hashlib
import importlib.resources
import io
import json
import os
import sys
import warnings

import pytest
import torch
from torch import nn

from golden import GOLDEN, load as load_golden
from httpserver import FileServer, _Handler
from test_clip import randomise_
from tinyprompt import hub
from tinyprompt.clip import CLIP, QuickGELU
from tinyprompt.clip_checkpoint import build_model
from tinyprompt.clip_config import CLIPConfig
from tinyprompt.commands.cli import main
from tinyprompt.transforms import (OPENAI_PREPROCESSING, ClipPreprocess, Preprocessing, clip_preprocess,
                                  model_preprocessing)

TINY = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 64, "heads": 2, "layers": 2}}  # fmt: skip
ARCH, NAME = "Tiny-2L", "Tiny-2L/fake_s1m"
REPO = "tinyprompt-tests/CLIP-Tiny-2L-fake"  # a Hugging Face repository name
FILE = f"{REPO}/open_clip_pytorch_model.bin"
BLOB = "/blobs/open_clip_pytorch_model.bin"  # where the resolve endpoint redirects (Hugging Face: its CDN)
OPENAI_URL = "https://openaipublic.azureedge.net/clip/models/"
TINY_JIT = GOLDEN / "clip" / "clip_tiny_vit_jit.pt"  # a TorchScript archive of a tiny CLIP made by OpenAI's code


@pytest.fixture(autouse=True)
def home(monkeypatch, tmp_path):
    """A throwaway home, so OpenAI's cache ~/.cache/clip is the test's own (empty)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def weights():
    """The tiny CLIP's state dict, every tensor random (LayerNorms included), in open_clip's key names."""
    torch.manual_seed(0)
    return randomise_(CLIP(**vars(CLIPConfig.from_open_clip(TINY)))).state_dict()


@pytest.fixture(scope="module")
def checkpoint_bytes(weights):
    """The bytes of the tiny CLIP as open_clip's open_clip_pytorch_model.bin: a torch.save of its state dict."""
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    return buffer.getvalue()


@pytest.fixture
def tiny_arch(monkeypatch):
    """Architecture "Tiny-2L" in the open_clip manifest's configs."""
    monkeypatch.setitem(hub._open_clip()["configs"], ARCH, TINY)


class HubHandler(_Handler):
    """FileServer's handler plus Hugging Face's resolve endpoint: HEAD and GET of /<repo>/resolve/main/<file> answer
    302 to the blob, and the HEAD's answer states the blob's sha256, quoted, as X-Linked-Etag where `stated` has it."""

    def do_HEAD(self):
        self.resolve()

    def do_GET(self):
        if "/resolve/main/" in self.path:
            self.resolve()
        else:
            super().do_GET()

    def resolve(self):
        owner = self.server.owner
        owner.requests.append((f"{self.command} {self.path}", None))
        self.send_response(302)
        self.send_header("Location", owner.url(BLOB))
        if self.command == "HEAD" and owner.stated:
            self.send_header("X-Linked-Etag", f'"{owner.stated}"')
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def served(checkpoint_bytes, tiny_arch, monkeypatch):
    """A Hugging Face-like server with the tiny checkpoint, and the open_clip manifest entry NAME pointing at it."""
    with FileServer({BLOB: checkpoint_bytes}) as server:
        server._server.RequestHandlerClass = HubHandler  # read per request: every request gets the resolve endpoint
        server.stated = hashlib.sha256(checkpoint_bytes).hexdigest()
        entry = {"name": NAME, "config": ARCH, "quick_gelu": False, "file": FILE,
                 "url": server.url(f"/{REPO}/resolve/main/open_clip_pytorch_model.bin"), "sha256": None,
                 "approx_size_bytes": len(checkpoint_bytes)}  # fmt: skip
        monkeypatch.setitem(hub._open_clip()["models"], NAME, entry)
        monkeypatch.setenv("TINYPROMPT_OFFLINE", "0")
        yield server


def files(folder):
    """Every file under `folder`, as paths relative to it."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def assert_same_model(model, want):
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    tokens = torch.randint(1, 1000, (3, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # the same tensors and the same modules: bit for bit
        assert torch.equal(model.encode_image(images), want.encode_image(images))
        assert torch.equal(model.encode_text(tokens), want.encode_text(tokens))
    assert model.config == want.config and not model.training


# --------------------------------------------------------------------------------------- load by tag

@pytest.mark.parametrize("quick_gelu", [False, True], ids=["gelu", "quickgelu"])
def test_load_by_tag_verifies_the_stated_sha256_and_builds_the_tags_config(served, weights, tmp_path, monkeypatch,
                                                                           quick_gelu):
    monkeypatch.setitem(hub._open_clip()["models"][NAME], "quick_gelu", quick_gelu)  # what the weights trained with
    root = tmp_path / "weights"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a tag knows its config: build_model has nothing to warn about
        model, preprocess = hub.load(NAME, download_root=root)
    want = build_model(weights, {**TINY, "quick_gelu": quick_gelu})
    assert_same_model(model, want)
    assert model.config == CLIPConfig.from_open_clip({**TINY, "quick_gelu": quick_gelu})
    assert model.config.vision_head_width == 32 and model.visual.transformer.resblocks[0].attn.heads == 2
    activation = QuickGELU if quick_gelu else nn.GELU
    assert all(type(block.mlp.gelu) is activation
               for tower in (model.visual.transformer, model.transformer) for block in tower.resblocks)  # fmt: skip
    assert preprocess == ClipPreprocess(32)
    # HEAD for the sha256 (not following the redirect to the blob), then the download, which follows it
    assert [r[0] for r in served.requests] == [f"HEAD /{REPO}/resolve/main/open_clip_pytorch_model.bin",
                                               f"GET /{REPO}/resolve/main/open_clip_pytorch_model.bin", BLOB]
    assert files(root) == [FILE, FILE + ".sha256"]  # the verified file and the sha256 it was verified against
    assert (root / (FILE + ".sha256")).read_text() == served.stated + "\n"
    monkeypatch.setenv("TINYPROMPT_OFFLINE", "1")  # later loads check the file against its record, offline
    assert_same_model(hub.load(NAME, download_root=root)[0], want)
    assert len(served.requests) == 3


@pytest.mark.parametrize("stated", ["0" * 64, "F" * 64], ids=["lowercase", "uppercase"])
def test_a_file_that_does_not_match_the_stated_sha256_is_refused(served, tmp_path, stated):
    served.stated = stated
    root = tmp_path / "weights"
    with pytest.raises(RuntimeError, match=f"expected {stated.lower()}; it was deleted and not used"):
        hub.load(NAME, download_root=root)
    assert files(root) == []  # not the file, not the .part, not a record


@pytest.mark.parametrize("stated", [None, "a" * 40], ids=["none", "git-sha1"])  # a small file's etag is its git sha1
def test_a_server_stating_no_sha256_is_refused(served, tmp_path, stated):
    served.stated = stated
    root = tmp_path / "weights"
    refused = (rf"states no sha256 for '{NAME}' .* refused\. Download the file yourself, check it, and load it by "
               rf"path, tinyprompt\.load\(path, config='{NAME}'\)")
    with pytest.raises(RuntimeError, match=refused):
        hub.load(NAME, download_root=root)
    assert [r[0].split()[0] for r in served.requests] == ["HEAD"]  # nothing downloaded
    assert files(root) == []


def test_a_file_on_disk_that_nothing_verifies_is_not_used(served, checkpoint_bytes, weights, tmp_path, monkeypatch):
    root = tmp_path / "weights"
    (root / REPO).mkdir(parents=True)
    (root / FILE).write_bytes(checkpoint_bytes)  # the right bytes, but no record of what the server stated
    monkeypatch.setenv("TINYPROMPT_OFFLINE", "1")
    unverified = r"cannot be verified \(no manifest sha256 for .*, no open_clip_pytorch_model\.bin\.sha256 beside it\)"
    offline = "TINYPROMPT_OFFLINE is set.*load it by path.*unset TINYPROMPT_OFFLINE"
    with pytest.warns(UserWarning, match=unverified), pytest.raises(RuntimeError, match=offline):
        hub.load(NAME, download_root=root)
    assert served.requests == []
    monkeypatch.setenv("TINYPROMPT_OFFLINE", "0")
    (root / (FILE + ".sha256")).write_text("0" * 64 + "\n")  # a record the file does not match: corrupt
    with pytest.warns(UserWarning, match="expected 0{64} for .*: it is incomplete or corrupt and is not used"):
        model, _ = hub.load(NAME, download_root=root)
    assert_same_model(model, build_model(weights, TINY))
    assert (root / (FILE + ".sha256")).read_text() == served.stated + "\n"  # replaced by a verified download


def test_truncated_transfer_resumes_through_the_redirect(served, checkpoint_bytes, tmp_path):
    root = tmp_path / "weights"
    served.truncate_next = 4096
    with pytest.raises(RuntimeError, match="stopped after 4096 of .* the next attempt resumes"):
        hub.load(NAME, download_root=root)
    assert files(root) == [FILE + ".part"]
    hub.load(NAME, download_root=root)
    assert served.requests[-1] == (BLOB, "bytes=4096-")  # the Range header survives the redirect
    assert (root / FILE).read_bytes() == checkpoint_bytes and files(root) == [FILE, FILE + ".sha256"]


def test_default_download_root_is_the_cache(served, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYPROMPT_CACHE", str(tmp_path / "cache"))
    assert hub.cached_checkpoint(NAME) is None
    hub.load(NAME)
    root = tmp_path / "cache" / "clip"  # the folder of OpenAI's names: their archives are shared by the openai tags
    assert files(root) == [FILE, FILE + ".sha256"] and hub.cached_checkpoint(NAME) == root / FILE


@pytest.mark.skipif(not TINY_JIT.is_file(), reason=f"golden file {TINY_JIT} not found (set TINYPROMPT_GOLDEN)")
def test_a_tag_of_openais_archive_is_verified_by_the_manifest(tmp_path, monkeypatch):
    """The openai tags name OpenAI's archives, whose sha256 the manifest records: no HEAD request, no record file."""
    data, golden = TINY_JIT.read_bytes(), load_golden(GOLDEN / "clip" / "clip_tiny_vit.pt")
    config = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 128, "patch_size": 8},
              "text_cfg": {"width": 64, "heads": 1, "layers": 2}}  # fmt: skip
    with FileServer({"/tiny.pt": data}) as server:
        monkeypatch.setitem(hub._open_clip()["configs"], "Tiny-openai", config)
        monkeypatch.setitem(hub._open_clip()["models"], "Tiny-openai/openai", {
            "name": "Tiny-openai/openai", "config": "Tiny-openai", "quick_gelu": True, "file": "tiny.pt",
            "url": server.url("/tiny.pt"), "sha256": hashlib.sha256(data).hexdigest(), "approx_size_bytes": len(data)})
        monkeypatch.setenv("TINYPROMPT_OFFLINE", "0")
        model, _ = hub.load("Tiny-openai/openai", download_root=tmp_path / "weights")
    assert server.requests == [("/tiny.pt", None)] and files(tmp_path / "weights") == ["tiny.pt"]
    assert model.config.quick_gelu and model.config.transformer_heads == 1
    with torch.no_grad():  # the archive's fp16 tensors widened: the golden outputs of OpenAI's code
        torch.testing.assert_close(model.encode_image(golden["image"]), golden["encode_image"], atol=1e-5, rtol=0)
        torch.testing.assert_close(model.encode_text(golden["text"]), golden["encode_text"], atol=1e-5, rtol=0)


def test_a_tag_name_takes_no_config(served):
    with pytest.raises(ValueError, match=f"config='ViT-B-32' is for checkpoint paths: '{NAME}' is a model name"):
        hub.load(NAME, config="ViT-B-32")
    assert served.requests == []


def test_an_unknown_name_suggests_the_tag(tmp_path):
    with pytest.raises(ValueError, match=r"open_clip pretrained tags .*\(did you mean \['ViT-B-32/laion2b_s34b_b79k'"):
        hub.load("ViT-B-32:laion2b_s34b_b79k")  # open_clip's "arch:tag" spelling


# ------------------------------------------------------------------------------ load(path, config)

@pytest.mark.parametrize("config", [TINY, ARCH, NAME], ids=["dict", "architecture", "tag"])
def test_load_path_with_config(tiny_arch, checkpoint_bytes, weights, tmp_path, monkeypatch, config):
    monkeypatch.setitem(hub._open_clip()["models"], NAME, {"name": NAME, "config": ARCH, "quick_gelu": False})
    path = tmp_path / "open_clip_pytorch_model.bin"
    path.write_bytes(checkpoint_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the config says the activation and head width: no warning
        model, _ = hub.load(path, config=config)
    assert_same_model(model, build_model(weights, TINY))


SQUASH_HALF = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "resize_mode": "squash"}  # not OpenAI's


def test_a_tag_with_its_own_preprocessing_carries_it(served, tiny_arch, checkpoint_bytes, tmp_path, monkeypatch):
    """A tag trained on other image statistics / resizing (open_clip's pretrained config, the manifest's "preprocess")
    gives its model and preprocess those, by name and as a path's config; OpenAI's otherwise."""
    monkeypatch.setitem(hub._open_clip()["models"][NAME], "preprocess", SQUASH_HALF)
    own = Preprocessing((0.5,) * 3, (0.5,) * 3, "squash")
    assert hub.open_clip_preprocessing(NAME) == own
    model, preprocess = hub.load(NAME, download_root=tmp_path / "weights")
    assert model.preprocessing == own == model_preprocessing(model) and preprocess == ClipPreprocess(32, own)
    path = tmp_path / "open_clip_pytorch_model.bin"
    path.write_bytes(checkpoint_bytes)
    model, preprocess = hub.load(path, config=NAME)  # the tag named as the file's config
    assert model.preprocessing == own and preprocess == ClipPreprocess(32, own)
    for config in (ARCH, TINY):  # an architecture says nothing about images: OpenAI's, as open_clip's default
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, preprocess = hub.load(path, config=config)
        assert model.preprocessing == OPENAI_PREPROCESSING and preprocess == ClipPreprocess(32)
        # ... but its name could be the wrong word for this file: the tags with their own preprocessing are named
        said = [str(w.message) for w in caught]
        assert said == ([f"config='{ARCH}' is an architecture, which does not say the image preprocessing, and these "
                         f"open_clip tags of it were trained with their own: {NAME} (squash resize, mean (0.5, 0.5, "
                         f"0.5), std (0.5, 0.5, 0.5)). OpenAI's is used; if this file holds one of those tags' weights, "
                         f"pass config= that tag (--model-config {NAME}) instead"] if config == ARCH else [])  # fmt: skip
    mine = Preprocessing((0.4, 0.4, 0.4), (0.3, 0.3, 0.3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the user's word for an unknown file: nothing to warn about
        model, preprocess = hub.load(path, config=ARCH, preprocessing=mine)
    assert model.preprocessing == mine and preprocess == ClipPreprocess(32, mine)
    with pytest.raises(ValueError, match=f"preprocessing= is for checkpoint paths: '{NAME}' is a model name"):
        hub.load(NAME, preprocessing=mine)
    with pytest.raises(TypeError, match="preprocessing must be a tinyprompt.transforms.Preprocessing"):
        hub.load(path, config=ARCH, preprocessing={"mean": (0.5,) * 3})


def test_load_path_with_a_wrong_or_unknown_config(tiny_arch, checkpoint_bytes, tmp_path):
    path = tmp_path / "open_clip_pytorch_model.bin"
    path.write_bytes(checkpoint_bytes)
    with pytest.raises(ValueError, match=r"unknown open_clip architecture 'ViT-B-99': config takes one of \['RN50'"):
        hub.load(path, config="ViT-B-99")
    with pytest.raises(ValueError, match=f"{path}: the open_clip config does not describe this state dict"):
        hub.load(path, config="ViT-B-32")


def test_safetensors_file(weights, tmp_path):
    safetensors = pytest.importorskip("safetensors.torch", reason="the optional safetensors package is not installed")
    path = tmp_path / "open_clip_model.safetensors"
    safetensors.save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
    model, _ = hub.load(path, config=TINY)
    assert_same_model(model, build_model(weights, TINY))
    path.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=f"{path} is not a CLIP checkpoint: .* nor a safetensors file"):
        hub.load(path, config=TINY)


def test_safetensors_file_without_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)  # what an environment without the package sees
    path = tmp_path / "open_clip_model.safetensors"
    path.write_bytes(b"{}")
    with pytest.raises(ImportError, match="is a safetensors file: pip install safetensors to read it"):
        hub.load(path, config=TINY)


# ------------------------------------------------------------------------------ the committed manifest

def committed():
    text = importlib.resources.files("tinyprompt.weights").joinpath("open_clip.json").read_text(encoding="utf-8")
    return len(text.encode()), json.loads(text)


def test_committed_manifest():
    size, table = committed()
    assert size < 100_000
    entries = table["models"]
    names = [e["name"] for e in entries]
    assert len(set(names)) == len(names) > 80
    assert hub.available_models(open_clip=True) == hub.available_models() + names  # OpenAI's names first
    openai = {e["url"]: e for e in json.loads(importlib.resources.files("tinyprompt.weights").joinpath(
        "manifest.json").read_text(encoding="utf-8"))["models"]}  # fmt: skip
    sources = {}
    for e in entries:
        arch, tag = e["name"].split("/")
        assert e["config"] == arch and arch in table["configs"] and tag
        # the check build_model makes (infer_config -> from_open_clip), with no model allocated
        arch_config = CLIPConfig.from_open_clip(hub.open_clip_config(arch))
        tag_config = CLIPConfig.from_open_clip(hub.open_clip_config(e["name"]))
        assert tag_config.quick_gelu is e["quick_gelu"] and vars(tag_config) == {**vars(arch_config),
                                                                                 "quick_gelu": e["quick_gelu"]}
        if e["sha256"] is not None:  # OpenAI's archive: the same file, digest and size as its OpenAI name's
            assert e["url"].startswith(OPENAI_URL) and tag == "openai"
            assert {k: e[k] for k in ("file", "sha256", "approx_size_bytes")} == {
                k: openai[e["url"]][k] for k in ("file", "sha256", "approx_size_bytes")}  # fmt: skip
        else:  # a Hugging Face file: its repository and name, under the download folder
            repo, filename = e["file"].rsplit("/", 1)
            assert e["url"] == f"https://huggingface.co/{repo}/resolve/main/{filename}" and filename.endswith(".bin")
            assert 1e8 < e["approx_size_bytes"] < 1.1e10
        assert sources.setdefault(e["file"], e["url"]) == e["url"]  # a shared file is one download
        if "preprocess" in e:  # stated only where it is not OpenAI's
            assert set(e["preprocess"]) == {"mean", "std", "resize_mode"}
            assert Preprocessing(**e["preprocess"]) != OPENAI_PREPROCESSING
    assert hub.open_clip_preprocessing("ViT-L-14/laion2b_s32b_b82k") == Preprocessing((0.5,) * 3, (0.5,) * 3)
    assert hub.open_clip_preprocessing("ViT-H-14/dfn5b").resize_mode == "squash"
    assert hub.open_clip_preprocessing("ViT-B-32/laion2b_s34b_b79k") == OPENAI_PREPROCESSING
    assert hub.manifest_entry("ViT-B-32/laion2b_s34b_b79k")["url"] == (
        "https://huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/main/open_clip_pytorch_model.bin")


def test_models_command_lists_the_tags_with_open_clip(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("TINYPROMPT_CACHE", str(tmp_path / "cache"))
    assert main(["models", "--open-clip"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(hub.available_models(open_clip=True)) + 1 + 1
    assert lines[1].startswith("RN50 ") and lines[10].startswith("RN50/openai ")  # OpenAI's names first
    rows = {line.split()[0]: line.split(None, 1)[1] for line in lines[1:-1]}
    assert rows["ViT-B-32/laion2b_s34b_b79k"] == "605 MB  not cached: downloaded on first use"
    assert rows["ViT-bigG-14/laion2b_s39b_b160k"].startswith("10.2 GB  ")
    assert rows["ViT-L-14/laion2b_s32b_b82k"] == ("1710 MB  not cached: downloaded on first use; its own "
                                                  "preprocessing: shortest resize, mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5)")


# ------------------------------------------------------------------------- against open_clip itself

@pytest.fixture(scope="module")
def open_clip():
    try:
        return pytest.importorskip("open_clip", reason="open_clip is not installed (how: tests/test_openclip.py)")
    except RuntimeError as err:  # a torchvision built for another torch: "operator torchvision::nms does not exist"
        pytest.skip(f"open_clip is installed but does not import: {err}")


def test_committed_manifest_agrees_with_open_clip(open_clip):
    from open_clip.constants import HF_WEIGHTS_NAME, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    _, table = committed()
    for e in table["models"]:
        arch, tag = e["name"].split("/")
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        assert cfg, e["name"]
        assert table["configs"][arch] == open_clip.get_model_config(arch)
        assert e["quick_gelu"] is cfg.get("quick_gelu", False)
        if e["sha256"] is not None:  # open_clip's url, OpenAI's: the sha256 is its second-to-last path component
            assert e["url"] == cfg["url"] and e["url"].split("/")[-2] == e["sha256"]
        else:  # open_clip's hf_hub "<repo>/<filename>", the filename open_clip defaults to where it names none
            repo, filename = os.path.split(cfg["hf_hub"])
            assert e["url"] == f"https://huggingface.co/{repo}/resolve/main/{filename or HF_WEIGHTS_NAME}"
            assert not cfg["url"].startswith(OPENAI_URL)  # the archive with a known sha256 is preferred where it exists
    # every pair open_clip lists whose towers tinyprompt builds is there, with its preprocessing where not OpenAI's
    openai_preprocess = (OPENAI_DATASET_MEAN, OPENAI_DATASET_STD, "shortest")
    want, stated = [], {e["name"]: e.get("preprocess") for e in table["models"]}
    for arch, tag in open_clip.list_pretrained():
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        try:
            CLIPConfig.from_open_clip(open_clip.get_model_config(arch))
        except ValueError:
            continue
        want.append(f"{arch}/{tag}")
        assert cfg["interpolation"] == "bicubic", want[-1]  # the one interpolation the transforms implement
        trained = (tuple(cfg["mean"]), tuple(cfg["std"]), cfg["resize_mode"])
        if trained == openai_preprocess:
            assert stated.get(want[-1]) is None, want[-1]
        else:
            assert stated.get(want[-1]) == {"mean": list(trained[0]), "std": list(trained[1]),
                                            "resize_mode": trained[2]}, want[-1]  # fmt: skip
    assert [e["name"] for e in table["models"]] == want


def test_preprocess_equals_open_clips_for_every_tag_with_its_own(open_clip):
    """The evaluation transform of each tag whose preprocessing is not OpenAI's equals open_clip's image_transform
    for it, bit for bit (the same Pillow resize, crop and normalisation)."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for name in [e["name"] for e in committed()[1]["models"] if "preprocess" in e]:
        arch, tag = name.split("/")
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        n_px = open_clip.get_model_config(arch)["vision_cfg"]["image_size"]
        want = open_clip.image_transform(n_px, is_train=False, mean=cfg["mean"], std=cfg["std"],
                                         interpolation=cfg["interpolation"], resize_mode=cfg["resize_mode"])
        ours = clip_preprocess(n_px, hub.open_clip_preprocessing(name))
        for height, width in ((300, 451), (n_px, n_px), (97, 64)):
            pixels = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=generator)
            image = Image.fromarray(pixels.numpy())
            assert torch.equal(ours(image), want(image)), (name, height, width)
