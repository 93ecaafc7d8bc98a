"""The package as a user meets it: a light `import tinyprompt`, the public surface the README documents, the
installed metadata (requirements, extras, console script), and `python -m tinyprompt` / `tinyprompt`."""
import importlib.metadata
import inspect
import os
import shutil
import subprocess
import sys
from dataclasses import is_dataclass

import pytest
import torch

import tinyprompt
from tinyprompt.clip import CLIP
from tinyprompt.tokenizer import SimpleTokenizer

HEAVY = ("triton", "PIL", "matplotlib")  # optional or slow to import: only on first use


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_stays_light():
    # the public names, the methods, the engine and the CLI parser are reachable without the heavy imports
    code = f"""
import sys
import tinyprompt
before = [m for m in {HEAVY!r} if m in sys.modules]
tinyprompt.load, tinyprompt.tokenize, tinyprompt.build_model, tinyprompt.available_models
from tinyprompt.methods import CoOp
import tinyprompt.engine, tinyprompt.zeroshot
from tinyprompt.commands.cli import build_parser
build_parser()
print(before, [m for m in {HEAVY!r} if m in sys.modules])
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "[] []"


def test_public_surface():
    assert {"available_models", "load", "build_model", "tokenize"} <= set(tinyprompt.__all__)
    signatures = {
        tinyprompt.load: "(name_or_path, device='cpu', download_root=None, config=None, "
                         "preprocessing: tinyprompt.transforms.Preprocessing | None = None)",
        SimpleTokenizer: "(bpe_path=None)",
        CLIP.encode_text_embeddings: "(self, embeddings, eot_index)",
        CLIP.encode_image_dense: "(self, images, positional_embedding: bool = True)",
    }
    for function, signature in signatures.items():
        assert str(inspect.signature(function)) == signature, function
    tokenize = inspect.signature(tinyprompt.tokenize).parameters
    assert [(p.name, p.default) for p in list(tokenize.values())[:3]] == [
        ("texts", inspect.Parameter.empty), ("context_length", 77), ("truncate", False)]
    assert list(inspect.signature(tinyprompt.build_model).parameters) == ["state_dict", "config"]  # config: open_clip's model config, or "openai"
    assert inspect.signature(tinyprompt.build_model).return_annotation is CLIP
    for name in ("encode_image", "encode_text", "forward"):
        assert callable(getattr(CLIP, name))
    import tinyprompt.kernels as kernels
    import tinyprompt.methods as methods

    assert callable(kernels.sampled_softmax_loss) and callable(kernels.ranking_loss)
    for name in ("CoOp", "TaIDPT", "ILMVP", "SHIP", "POMP"):  # each an nn.Module with a Config dataclass
        assert issubclass(getattr(methods, name), torch.nn.Module) and is_dataclass(getattr(methods, name + "Config"))
    assert list(inspect.signature(methods.CoOp).parameters) == ["clip_model", "classnames", "config"]
    assert methods.SHIP is methods.SHIPGenerator  # SHIP's learned module is its prompt generator


def _installed():
    try:
        return importlib.metadata.distribution("tinyprompt")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("tinyprompt is not installed (pip install -e '.[test]'): no metadata to check")


def test_installed_requirements_and_entry_point():
    dist = _installed()
    requires = sorted(r.replace(" ", "") for r in dist.requires)
    assert requires == sorted([
        "torch", "numpy", "ftfy", "regex", 'triton;platform_system=="Linux"',
        'Pillow;extra=="images"', 'matplotlib;extra=="plot"', 'pytest;extra=="test"', 'Pillow;extra=="test"',
        'safetensors;extra=="safetensors"',
    ])  # fmt: skip
    scripts = {e.name: e.value for e in dist.entry_points if e.group == "console_scripts"}
    assert scripts == {"tinyprompt": "tinyprompt.commands.cli:entry"}


def test_python_dash_m_lists_the_commands():
    done = subprocess.run([sys.executable, "-m", "tinyprompt", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    listed = set(done.stdout.split())
    assert {"zeroshot", "train", "eval"} <= listed


def test_console_script_turns_a_user_error_into_one_line(tmp_path):
    script = shutil.which("tinyprompt", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if script is None:
        pytest.skip("the `tinyprompt` console script is not installed (pip install -e '.[test]')")
    missing = tmp_path / "missing"
    done = subprocess.run([script, "zeroshot", "--model", "ViT-B/99", "--data", str(missing)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinyprompt: error: unknown model 'ViT-B/99'"), done.stderr
