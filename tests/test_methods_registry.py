"""tinyprompt.methods: one registry for saved prompts. A saved prompt names its method; `load_prompt` rebuilds
that method around a CLIP for any class list, from a file or a state dict, and `tinyprompt eval` uses it.
`save_prompt` / `read_prompt_file` keep every method's prompt (ILM-VP's too) as .pt or, with the optional safetensors
package, as .safetensors (tensors in the file, the other fields as JSON metadata): read back bit for bit."""
import json
import sys
from types import SimpleNamespace

import pytest
import torch

from golden import needs_vocab
from tinyprompt.clip import CLIP
from tinyprompt.commands.cli import main
from tinyprompt.methods import (ILMVP, METHODS, POMP, SAVED_METHODS, CoOp, CoOpConfig, ILMVPConfig, POMPConfig,
                                SHIPConfig, SHIPGenerator, TaIDPT, TaIDPTConfig, load_prompt, read_prompt,
                                read_prompt_file, save_prompt)
from tinyprompt.methods.ilmvp import PaddingPrompt

pytestmark = needs_vocab
NO_SAFETENSORS = "the optional safetensors package is not installed"
NAMES, OTHER = ["cat", "dog", "golden retriever"], ["tabby cat", "boeing 747"]


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return CLIP(16, 32, 1, 64, 16, 77, 49408, 32, 2, 2).eval()


def learned(module) -> dict:
    """The learned tensors of a prompt_state_dict, flattened (SHIP nests its encoder and decoder)."""
    flat = {}
    for key, value in module.prompt_state_dict().items():
        if isinstance(value, dict) and key != "config":
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif torch.is_tensor(value):
            flat[key] = value
    return flat


BUILDS = {  # a tiny model of every method, its learned tensors moved off their init (so a copy is told from a rebuild)
    "coop": lambda clip: CoOp(clip, NAMES, CoOpConfig(n_ctx=4)),
    "coop-csc": lambda clip: CoOp(clip, NAMES, CoOpConfig(n_ctx=3, csc=True, class_token_position="middle")),
    "pomp": lambda clip: POMP(clip, NAMES, POMPConfig(n_ctx=4, k=3)),
    "taidpt": lambda clip: TaIDPT(clip, NAMES, TaIDPTConfig(n_ctx=4, temperature_image=4.0)),
    "ship": lambda clip: SHIPGenerator(clip, NAMES, SHIPConfig(enc_hidden=8, gen_hidden=8)),
    "ilmvp": lambda clip: ILMVP(SimpleNamespace(n_cls=20), PaddingPrompt(8, 16), 3, ILMVPConfig(mapping="rlm", seed=3),
                                NAMES),
    "ilmvp-unnamed": lambda clip: ILMVP(SimpleNamespace(n_cls=20), PaddingPrompt(8, 16), 3),  # classnames None
}


def trained(module):
    """The module with its learned tensors moved off their init (what a file of a trained prompt holds)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=generator))
    return module


def trained_state(clip, name) -> dict:
    torch.manual_seed(1)  # the module's own init
    return trained(BUILDS[name](clip)).prompt_state_dict()


def assert_same_state(got: dict, want: dict):
    """Equal fields and bit-equal tensors of the same dtype, one level of nesting (SHIP's encoder / decoder)."""
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        if torch.is_tensor(value):
            assert got[key].dtype == value.dtype and torch.equal(got[key], value), key
        elif isinstance(value, dict) and key != "config":
            assert_same_state(got[key], value)
        else:
            assert got[key] == value and type(got[key]) is type(value), key


@pytest.mark.parametrize("build", [BUILDS[name] for name in METHODS], ids=list(METHODS))
def test_every_registered_method_reloads_for_another_class_list(clip, build, tmp_path):
    torch.manual_seed(1)
    model = build(clip)
    path = tmp_path / "prompt.pt"
    torch.save(model.prompt_state_dict(), path)
    assert METHODS[read_prompt(path)["method"]] is type(model)
    for source in (path, model.prompt_state_dict()):  # a file or the state itself
        loaded = load_prompt(clip, source, OTHER, text_chunk=1)
        assert type(loaded) is type(model) and loaded.classnames == OTHER and loaded.config.text_chunk == 1
        ours, theirs = learned(model), learned(loaded)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)  # copied, not computed
    with pytest.raises(ValueError, match="only .* can be changed when loading"):
        load_prompt(clip, path, OTHER, n_ctx=2)


def test_prompts_a_clip_cannot_rebuild_are_refused_with_the_reason(clip, tmp_path):
    torch.save({"method": "ilmvp", "config": {}, "prompt": torch.zeros(1)}, tmp_path / "ilmvp.pt")
    with pytest.raises(ValueError, match="ILM-VP prompt: it belongs to its source classifier"):
        read_prompt(tmp_path / "ilmvp.pt")
    assert read_prompt_file(tmp_path / "ilmvp.pt")["method"] == "ilmvp"  # the one reader: any method
    assert sorted(SAVED_METHODS) == sorted([*METHODS, "ilmvp"])
    torch.save({"method": "maple", "ctx": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a tinyprompt prompt of a known method \\(method 'maple'"):
        read_prompt(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_prompt(tmp_path / "missing.pt")
    assert "ilmvp" not in METHODS  # ILM-VP loads through its own module: ILMVP(...).load_prompt_state_dict


def test_eval_refuses_what_it_cannot_score_before_any_work(clip, tmp_path):
    torch.save(TaIDPT(clip, NAMES, TaIDPTConfig(n_ctx=4)).prompt_state_dict(), tmp_path / "taidpt.pt")
    args = ["eval", "--prompt", str(tmp_path / "taidpt.pt"), "--model", "no-such-model", "--dataset", "dtd",
            "--root", str(tmp_path)]  # fmt: skip
    with pytest.raises(ValueError, match="dtd is single-label: a TaI-DPT prompt is scored with mAP on a multi-label"):
        main(args)  # refused before the (missing) model or data are looked at
    torch.save(trained_state(clip, "ship"), tmp_path / "generator.pt")
    args = ["eval", "--prompt", str(tmp_path / "generator.pt"), "--model", "no-such-model", "--data", str(tmp_path)]
    with pytest.raises(ValueError, match="is SHIP's generator: .* the prompt.pt in the SHIP run's --out"):
        main(args)


# ----------------------------------------------------------------------------- prompt files: .pt and .safetensors
@pytest.mark.parametrize("name", list(BUILDS))
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_every_methods_prompt_file_reads_back_bit_for_bit(clip, tmp_path, name, suffix):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors", reason=NO_SAFETENSORS)
    state = trained_state(clip, name)
    path = tmp_path / f"prompt{suffix}"
    save_prompt(state, path)
    back = read_prompt_file(path)
    assert_same_state(back, state)
    if state["method"] in METHODS:  # read_prompt and load_prompt take the file as they take prompt.pt
        assert_same_state(read_prompt(path), state)
        names = NAMES if state["config"].get("csc") else OTHER  # class-specific contexts load for their classes only
        loaded = load_prompt(clip, path, names).prompt_state_dict()
        assert_same_state({**loaded, "classnames": state["classnames"]}, state)
    if suffix == ".pt":  # also inside a training checkpoint, as engine.py writes it
        torch.save({"epoch": 3, "prompt": state, "optimizer": {}}, tmp_path / "checkpoint.pt")
        assert_same_state(read_prompt_file(tmp_path / "checkpoint.pt"), state)


def test_a_safetensors_prompt_file_holds_no_pickle(clip, tmp_path):
    safetensors = pytest.importorskip("safetensors", reason=NO_SAFETENSORS)
    state = trained_state(clip, "ship")
    save_prompt(state, tmp_path / "ship.safetensors")
    with safetensors.safe_open(tmp_path / "ship.safetensors", framework="pt") as f:
        keys, metadata = sorted(f.keys()), f.metadata()
    assert keys == sorted(["ctx", *(f"{part}.{k}" for part in ("encoder", "decoder") for k in state[part])])
    assert metadata["format"] == "pt" and all(isinstance(v, str) for v in metadata.values())  # strings only
    assert json.loads(metadata["tinyprompt"]) == {k: state[k] for k in ("method", "config", "classnames")}


def test_safetensors_errors_name_the_fix(clip, tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch", reason=NO_SAFETENSORS)
    state = trained_state(clip, "coop")
    with pytest.raises(ValueError, match="do not survive JSON unchanged.*save it as .pt"):
        save_prompt({**state, "config": {**state["config"], "sizes": (1, 2)}}, tmp_path / "tuple.safetensors")
    with pytest.raises(ValueError, match="cannot be written as JSON"):
        save_prompt({**state, "extra": {"a": torch.zeros(1), "b": 1}}, tmp_path / "mixed.safetensors")
    assert not list(tmp_path.iterdir())  # nothing half-written
    safetensors_torch.save_file({"ctx": torch.zeros(2, 3)}, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="without tinyprompt's metadata"):
        read_prompt_file(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a prompt file safetensors can read"):
        read_prompt_file(tmp_path / "junk.safetensors")
    save_prompt({**state, "method": "maple"}, tmp_path / "maple.safetensors")
    with pytest.raises(ValueError, match="not a tinyprompt prompt of a known method \\(method 'maple'"):
        read_prompt_file(tmp_path / "maple.safetensors")


def test_without_safetensors_only_its_files_need_it(clip, tmp_path, monkeypatch):
    state = trained_state(clip, "coop")
    (tmp_path / "x.safetensors").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if not installed: importing it raises ImportError
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    for call in (lambda: save_prompt(state, tmp_path / "prompt.safetensors"),
                 lambda: read_prompt_file(tmp_path / "x.safetensors")):
        with pytest.raises(ImportError, match="needs the safetensors package: pip install safetensors"):
            call()
    save_prompt(state, tmp_path / "prompt.pt")  # .pt, the default, never needs it
    assert_same_state(read_prompt_file(tmp_path / "prompt.pt"), state)
