"""tinyprompt.build_model against open_clip itself (github.com/mlfoundations/open_clip), with no download.

Every open_clip model config whose towers tinyprompt's CLIP implements: a random-init open_clip model (every
LayerNorm, bias and BatchNorm statistic moved off its initial value) loaded with its config gives open_clip's heads,
activation and MLP width in every block at full size (built on the meta device: shapes only), and open_clip's image
features, text features and logits up to fp32 rounding with one block per tower (so that the 2.5B-parameter configs
run in seconds); two small configs run at full depth. Every other config is refused by an error that names the
option. Over open_clip.list_pretrained(), no (arch, tag) pair loads wrong: with its config, or without one (then
only OpenAI's own archives load without a warning).

Skipped unless open_clip imports. It needs torchvision, and PyPI's torchvision for torch 2.13 is a CUDA build that
does not import beside the CPU torch; torchvision 0.16.2's Python code does (its C++ ops go unused here):
pip install --no-deps open_clip_torch timm torchvision==0.16.2 tqdm huggingface_hub safetensors, then requests
and huggingface_hub's dependencies (click httpx2 hf-xet) with pip's resolver. Run as a script to
print the counts: python tests/test_openclip.py
"""
import functools
import json
import re
import warnings
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from test_clip import randomise_
from tolerance import assert_rounding_close, gamma, rounding_bound, tower_depth
from tinyprompt.clip_checkpoint import build_model, infer_config
from tinyprompt.clip_config import OPENAI_MODELS, CLIPConfig

try:
    open_clip = pytest.importorskip("open_clip", reason="open_clip is not installed (how: this file's docstring)")
except RuntimeError as err:  # a torchvision built for another torch: "operator torchvision::nms does not exist"
    pytest.skip(f"open_clip is installed but does not import: {err}", allow_module_level=True)

TEXTS = ["a diagram", "a photo of a dog", "it's don't", "fish &amp; chips", "emoji 🐶🐱"]
ARCHIVE_SCALARS = ("input_resolution", "context_length", "vocab_size")  # OpenAI's TorchScript archives have them


def _trained_config(name, tag):
    """The config of pair (name, tag) with the activation its weights were trained with, which the tag says: OpenAI's
    weights of "ViT-B-32" are QuickGELU where the config's default is GELU (open_clip warns of the mismatch)."""
    trained = open_clip.get_pretrained_cfg(name, tag).get("quick_gelu", False)
    return {**open_clip.get_model_config(name), "quick_gelu": trained}


def _implemented(config) -> bool:
    try:
        CLIPConfig.from_open_clip(config)
    except ValueError:
        return False
    return True


MODELS = open_clip.list_models()
IMPLEMENTED = [name for name in MODELS if _implemented(open_clip.get_model_config(name))]
REFUSED = [name for name in MODELS if name not in IMPLEMENTED]


def _open_clip_model(config, seed=0):
    torch.manual_seed(seed)
    return randomise_(open_clip.CLIP(**config).eval())


def _one_block(config):
    """`config` with one block per tower (per ResNet stage) and a 2 x 2 grid: every option that shapes the math of
    a block is kept, the depth and the token count are what make the big ones slow."""
    vision, text = config["vision_cfg"], config["text_cfg"]
    resnet = isinstance(vision["layers"], list)
    vision["layers"], vision["image_size"] = ([1, 1, 1, 1], 64) if resnet else (1, 2 * vision["patch_size"])
    text["layers"] = 1
    return config


def _layout(model):
    """What a CLIP's shapes do not show, block by block: (heads, activation, MLP width); and its attention pool's
    heads. The same attribute names in open_clip's modules and ours, but `num_heads` (nn.MultiheadAttention)."""
    towers = [model.transformer] + ([model.visual.transformer] if hasattr(model.visual, "transformer") else [])
    blocks = [(getattr(block.attn, "num_heads", getattr(block.attn, "heads", None)), repr(block.mlp.gelu),
               block.mlp.c_fc.out_features) for tower in towers for block in tower.resblocks]  # fmt: skip
    pool = getattr(model.visual, "attnpool", None)
    return blocks, pool and pool.num_heads


def _assert_same_layout(config):
    with torch.device("meta"):  # full size, shapes only
        theirs = open_clip.CLIP(**config)
    ours = build_model(theirs.state_dict(), config)  # a strict load: every key and shape
    assert _layout(ours) == _layout(theirs)


def _assert_same_numbers(config):
    theirs = _open_clip_model(config)
    ours = build_model(theirs.state_dict(), config)
    side = ours.visual.input_resolution
    images = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    tokens = open_clip.tokenize(TEXTS)
    with torch.no_grad():
        image, want_image = ours.encode_image(images), theirs.encode_image(images)
        text, want_text = ours.encode_text(tokens), theirs.encode_text(tokens)
        logits, want_logits = ours(images, tokens)[0], theirs.get_logits(images, tokens)[0]
        scale = ours.logit_scale.exp().item()
        if ours.config.is_resnet:  # the trunk: the same ops in the same order, exact; then the attention pool
            visual = theirs.visual
            trunk = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(images)))))
            assert torch.equal(ours.image_feature_map(images), trunk)
            image_k, image_depth = trunk.shape[1], 4  # q/k/v, softmax, weighted sum, c_proj
        else:  # the tower, its longest reduction the MLP's or the patch convolution's
            patch = ours.config.vision_patch_size
            image_k, image_depth = tower_depth(ours.visual.transformer, max(3 * patch**2, ours.config.vision_mlp_width))
    text_k, text_depth = tower_depth(ours.transformer, max(ours.context_length, ours.config.text_mlp_width))
    assert_rounding_close(image, want_image, image_k, image_depth)
    assert_rounding_close(text, want_text, text_k, text_depth)
    # logits = s <a, b> of unit vectors a, b (entries at most 1): |error| <= s (sum |error of a| + sum |error of b|)
    # + the dot product's own rounding, each unit vector off by its features' bound and the norm's reduction
    dim = image.shape[1]
    units = ((want_image, image_k, image_depth), (want_text, text_k, text_depth))
    error = sum(rounding_bound(F.normalize(want, dim=-1), k, depth + 1) for want, k, depth in units)
    torch.testing.assert_close(logits, want_logits, atol=scale * (dim * error + gamma(dim)), rtol=0)


def _outcome(config) -> str:
    """How open_clip config `config` loads: "refused" (a ValueError naming the option) or "exact" (open_clip's layout
    at full size, its numbers with one block per tower); else an AssertionError. Checked once per distinct config
    (ViT-B-32 with OpenAI's QuickGELU weights is ViT-B-32-quickgelu)."""
    return _checked(json.dumps(config, sort_keys=True))


@functools.lru_cache(maxsize=None)
def _checked(config_json: str) -> str:
    config = json.loads(config_json)
    try:
        CLIPConfig.from_open_clip(config)
    except ValueError as err:
        assert "not supported by tinyprompt's CLIP" in str(err)
        return "refused"
    _assert_same_layout(config)
    _assert_same_numbers(_one_block(json.loads(config_json)))
    return "exact"


@functools.lru_cache(maxsize=None)
def _without_config(config_json: str, archive: bool) -> tuple[str, bool]:
    """build_model, given no config, on the state dict of open_clip config `config_json` (from OpenAI's TorchScript
    `archive`, with its scalar buffers, or from one of open_clip's files): ("warned" | "silent, right" | "silent,
    WRONG", whether assuming OpenAI's layout wherever the shapes are one of OpenAI's nine would be wrong here)."""
    truth = CLIPConfig.from_open_clip(json.loads(config_json))
    with torch.device("meta"):
        state = open_clip.CLIP(**json.loads(config_json)).state_dict()
    if archive:
        state.update({key: torch.tensor(0, device="meta") for key in ARCHIVE_SCALARS})
    by_shapes = infer_config(state)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assumed = build_model(state).config
    if any("not a released OpenAI checkpoint" in str(w.message) for w in caught):
        outcome = "warned"
    else:
        outcome = "silent, right" if assumed == truth else "silent, WRONG"
    return outcome, by_shapes in OPENAI_MODELS.values() and by_shapes != truth


def count_pretrained() -> Counter:
    """Over open_clip.list_pretrained(): how each (arch, tag) pair loads with its config (its activation as the tag
    says it was trained), and without one (pairs whose config is implemented)."""
    counts = Counter()
    for name, tag in open_clip.list_pretrained():
        config = _trained_config(name, tag)
        try:
            outcome = _outcome(config)
        except AssertionError:
            outcome = "WRONG"
        counts[f"with config: {outcome}"] += 1
        if outcome == "exact":  # tag "openai": OpenAI's own archive (open_clip's other files have no scalar buffers)
            alone, shapes_would_be_wrong = _without_config(json.dumps(config, sort_keys=True), tag == "openai")
            counts[f"without config: {alone}"] += 1
            counts["(had OpenAI's layout been assumed by shapes alone: silent, wrong)"] += shapes_would_be_wrong
    return counts


@pytest.mark.parametrize("name", IMPLEMENTED)
def test_implemented_config_matches_open_clip(name):
    assert _outcome(open_clip.get_model_config(name)) == "exact"


@pytest.mark.parametrize("name", ["ViT-S-32", "RN50"])
def test_full_depth_matches_open_clip(name):  # every block stacked, at the config's own resolution
    _assert_same_numbers(open_clip.get_model_config(name))


@pytest.mark.parametrize("name", REFUSED)
def test_other_configs_are_refused_by_name(name):
    with pytest.raises(ValueError, match=r"open_clip config sets \S+=.*not supported by tinyprompt's CLIP"):
        build_model({}, open_clip.get_model_config(name))  # named before any key of a state dict is looked for


@pytest.mark.parametrize("name, option", [
    ("ViT-M-16-alt", "vision_cfg.ls_init_value=0.0001"),  # LayerScale
    ("ViT-H-14-CLIPA", "vision_cfg.no_ln_pre=True, vision_cfg.pool_type='avg', vision_cfg.final_ln_after_pool=True"),
    ("EVA02-B-16", "vision_cfg.timm_model_name='eva02_base_patch16_clip_224'"),
    ("ViT-B-16-SigLIP", "init_logit_bias=-10"),
    ("convnext_base", "vision_cfg.timm_model_name='convnext_base'"),
    ("xlm-roberta-base-ViT-B-32", "text_cfg.hf_model_name='xlm-roberta-base'"),
    ("ViT-H-14-worldwide", "text_cfg.hf_tokenizer_name='facebook/xlm-v-base', text_cfg.pool_type='eos'"),
    ("coca_ViT-B-32", "multimodal_cfg={...}"),
])  # fmt: skip
def test_refusals_name_the_option(name, option):
    with pytest.raises(ValueError, match="sets .*" + re.escape(option)):
        CLIPConfig.from_open_clip(open_clip.get_model_config(name))


def test_no_pretrained_pair_loads_wrong():
    counts = count_pretrained()
    assert not [key for key in counts if "WRONG" in key], counts
    assert counts["with config: exact"] > 0 and counts["with config: refused"] > 0
    assert counts["with config: exact"] == sum(v for k, v in counts.items() if k.startswith("without config: "))


if __name__ == "__main__":
    for key, value in sorted(count_pretrained().items()):
        print(f"{value:4d}  {key}")
