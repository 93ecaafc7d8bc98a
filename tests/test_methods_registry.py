"""tinyprompt.methods: one registry for saved prompts. A saved prompt names its method; `load_prompt` rebuilds
that method around a CLIP for any class list, from a file or a state dict, and `tinyprompt eval` uses it."""

import pytest
import torch

from golden import needs_vocab
from tinyprompt.clip import CLIP
from tinyprompt.commands.cli import main
from tinyprompt.methods import (METHODS, POMP, CoOp, CoOpConfig, POMPConfig, SHIPConfig, SHIPGenerator, TaIDPT, TaIDPTConfig,
                                load_prompt, read_prompt)

pytestmark = needs_vocab
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


@pytest.mark.parametrize("build", [
    lambda clip: CoOp(clip, NAMES, CoOpConfig(n_ctx=4)),
    lambda clip: POMP(clip, NAMES, POMPConfig(n_ctx=4, k=3)),
    lambda clip: TaIDPT(clip, NAMES, TaIDPTConfig(n_ctx=4)),
    lambda clip: SHIPGenerator(clip, NAMES, SHIPConfig(enc_hidden=8, gen_hidden=8)),
], ids=["coop", "pomp", "taidpt", "ship"])
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
    torch.save({"method": "maple", "ctx": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a tinyprompt prompt of a known method \\(method 'maple'"):
        read_prompt(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_prompt(tmp_path / "missing.pt")
    assert "ilmvp" not in METHODS  # ILM-VP loads through its own module: ILMVP(...).load_prompt_state_dict


def test_eval_refuses_a_prompt_without_single_label_accuracy_before_any_work(clip, tmp_path):
    torch.save(TaIDPT(clip, NAMES, TaIDPTConfig(n_ctx=4)).prompt_state_dict(), tmp_path / "taidpt.pt")
    args = ["eval", "--prompt", str(tmp_path / "taidpt.pt"), "--model", "no-such-model", "--data", str(tmp_path)]
    with pytest.raises(ValueError, match="is a taidpt prompt: `tinyprompt eval` measures the single-label accuracy"):
        main(args)  # refused before the (missing) model or data are looked at
