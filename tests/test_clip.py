"""tinyprompt.clip: golden parity with openai/CLIP, config inference for the nine architectures, the
exact EOT truncation, dense features (TaI-DPT), a reference twin with non-trivial LayerNorms and
biases (the golden models have OpenAI's initial all-one/all-zero values there), and bad inputs."""
import copy
import json
import re
import warnings

import pytest
import torch
import torch.nn.functional as F

from golden import GOLDEN, golden_params, load
from tolerance import U, assert_rounding_close, text_depth, tower_depth
from tinyprompt.clip import CLIP, LayerNorm, eot_index
from tinyprompt.clip_checkpoint import build_model, infer_config, strip_ddp_prefix
from tinyprompt.clip_config import OPENAI_MODELS, CLIPConfig

TINY_VIT = (32, 32, 2, 64, 16, 77, 500, 64, 2, 2)  # 2x2 patches, 1 vision head, 2 text heads
TINY_RN = (32, 64, (1, 1, 1, 1), 4, None, 77, 500, 64, 2, 2)  # 2x2 final map, attention pool 2 heads


def randomise_(model):
    """Every floating tensor of a CLIP (ours or open_clip's) moved off its initial value in place, LayerNorm weights
    and biases and BatchNorm statistics included, from the global seed: a parity test then exercises all of them."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif t.is_floating_point() and name != "logit_scale":
                t.add_(0.1 * torch.randn_like(t))
    return model


def _randomised(config, seed=0, **layout):
    """A tiny CLIP with every tensor random; `layout`: CLIPConfig's fields after OpenAI's ten (open_clip's models)."""
    torch.manual_seed(seed)
    return randomise_(CLIP(*config, **layout).eval())


def _tokens(n, vocab, lengths, seed=0):
    """(n, 77) rows: SOT, random ids, EOT at lengths[i] - 1, zero padding (EOT = the largest id)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(n, 77, dtype=torch.long)
    for i, length in enumerate(lengths):
        tokens[i, :length] = torch.randint(1, vocab - 2, (length,), generator=g)
        tokens[i, 0], tokens[i, length - 1] = vocab - 2, vocab - 1
    return tokens


def _golden_state_dict(path):
    if path.name.endswith("_jit.pt"):  # an OpenAI-style TorchScript archive; outputs live in its plain twin
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            archive = torch.jit.load(str(path), map_location="cpu")
        return archive.state_dict(), load(path.with_name(path.name.replace("_jit.pt", ".pt")))
    data = load(path)
    return data["state_dict"], data


@pytest.mark.parametrize("path", golden_params("clip/clip_*.pt"))
def test_golden_clip(path):
    state_dict, data = _golden_state_dict(path)
    model = build_model(state_dict, "openai")  # made by OpenAI's code: its layout, which tiny shapes cannot show
    assert not model.training and all(p.dtype == torch.float32 for p in model.parameters())
    weights = model.state_dict()  # fp16 entries of an archive are cast exactly, archive scalars are ignored
    assert all(torch.equal(weights[k], v.float()) for k, v in state_dict.items() if k in weights)
    with torch.no_grad():
        image = model.encode_image(data["image"])
        text = model.encode_text(data["text"])
        text_full = model.encode_text(data["text"], full_length=True)
        logits_per_image, logits_per_text = model(data["image"], data["text"])
    torch.testing.assert_close(image, data["encode_image"], atol=1e-5, rtol=0)
    torch.testing.assert_close(text, data["encode_text"], atol=1e-5, rtol=0)
    torch.testing.assert_close(text_full, data["encode_text"], atol=1e-5, rtol=0)
    assert_rounding_close(text, text_full, *text_depth(model))  # truncation shortens the attention sums
    torch.testing.assert_close(logits_per_image, data["logits_per_image"], atol=1e-4, rtol=0)
    torch.testing.assert_close(logits_per_text, data["logits_per_text"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["clip_tiny_vit", "clip_tiny_rn"])
def test_seeded_init_matches_openai(name):
    """README section 1: seed 0, CLIP(*config), then build_model's fp16 rounding and logit_scale = ln 100."""
    path = GOLDEN / "clip" / f"{name}.pt"
    if not path.is_file():
        pytest.skip(f"{path} not found (set TINYPROMPT_GOLDEN)")
    data = load(path)
    torch.manual_seed(0)
    ours = CLIP(*data["config"]).state_dict()
    rounded = ("conv", "downsample.0", "_proj", "c_fc", "out_proj")  # build_model's fp16 set (README section 3)
    for key, value in data["state_dict"].items():
        if key == "logit_scale" or not value.is_floating_point() or "bn" in key or "downsample.1" in key:
            continue  # set by hand / BatchNorm re-drawn after init
        fp16 = key.endswith(("in_proj_weight", "in_proj_bias")) or key in ("visual.proj", "text_projection") or (
            key.endswith((".weight", ".bias")) and any(part in key for part in rounded)
        )
        # torch's normal_ draws the same uniforms everywhere but turns them into normals (Box-Muller: a log, a
        # sqrt, a cos, a few products) with a vectorised or a scalar libm depending on the CPU path, each within
        # an ulp or two: at most 16 u of the largest draw apart. fp16-rounded keys can then land on the
        # neighbouring half, one fp16 ulp (2^-10 relative, 2^-24 absolute for subnormals) away.
        atol = 16 * U * float(value.abs().max()) + (2.0**-24 if fp16 else 0.0)
        torch.testing.assert_close(ours[key].half().float() if fp16 else ours[key], value,
                                   rtol=2.0**-10 if fp16 else 0.0, atol=atol, msg=key)  # fmt: skip


def _architectures():
    path = GOLDEN / "clip" / "architectures.json"
    if not path.is_file():
        return [pytest.param(None, id="no-golden", marks=pytest.mark.skip(reason=f"{path} not found"))]
    models = json.loads(path.read_text())["models"]
    return [pytest.param({**spec, "name": name}, id=name) for name, spec in models.items()]


@pytest.mark.parametrize("spec", _architectures())
def test_architecture(spec):
    config = CLIPConfig(*spec["config"])
    with torch.device("meta"):  # shapes only: no memory, no random init
        model = CLIP(*spec["config"])
    state = model.state_dict()
    assert [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state.items()] == [
        row[:3] for row in spec["state_dict"]
    ]
    params = dict(model.named_parameters())
    assert [k for k, *_ in (r for r in spec["state_dict"] if r[3] == "parameter")] == list(params)
    assert sum(p.numel() for p in params.values()) == spec["num_parameters"]
    assert sum(p.numel() for k, p in params.items() if k.startswith("visual.")) == spec["num_visual_parameters"]
    assert sum(p.numel() for k, p in params.items() if not k.startswith("visual.")) == spec["num_text_parameters"]
    assert len(state) == spec["num_state_dict_tensors"]
    assert sum(v.numel() for v in state.values()) == spec["state_dict_numel"]
    # OpenAI's loader rules recover the config; archive scalars are ignored, and mark a released archive: its
    # layout (QuickGELU, 64-wide heads) is assumed silently; the same shapes without them may be open_clip's
    scalars = {k: torch.tensor(0, device="meta") for k in ("input_resolution", "context_length", "vocab_size")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        built = build_model({**state, **scalars})
    assert infer_config(state) == config == built.config == OPENAI_MODELS[spec["name"]]
    with pytest.warns(UserWarning, match="not a released OpenAI checkpoint.*open_clip.get_model_config"):
        assert build_model(state).config == config
    inferred = spec["inferred_by_build_model"]
    assert config.vision_heads == inferred.get("attnpool_heads", inferred.get("vision_heads"))
    if config.is_resnet:
        pool = built.visual.attnpool
        assert (pool.num_heads, pool.k_proj.in_features) == (inferred["attnpool_heads"], inferred["attnpool_dim"])
        assert pool.positional_embedding.shape[0] == inferred["attnpool_tokens"]
    else:
        assert built.visual.positional_embedding.shape[0] == inferred["vision_tokens"]


def test_eot_truncation_is_exact():
    """Exact in math (causal mask); in fp32 the kernels' reductions depend on the sequence length, so
    truncated and full differ by rounding only (tests/tolerance.py)."""
    model = _randomised(TINY_VIT)
    tokens = _tokens(6, 500, [3, 9, 17, 5, 30, 12])
    eot = eot_index(tokens)
    padded = tokens.clone()
    after = torch.arange(77) > eot[:, None]
    padded[after] = torch.randint(1, 498, (int(after.sum()),), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        short, full = model.encode_text(tokens), model.encode_text(tokens, full_length=True)
        from_embeddings = model.encode_text_embeddings(model.token_embedding(tokens)[:, : int(eot.max()) + 1], eot)
        # any id below EOT after the EOT keeps the pooled position and changes nothing
        assert torch.equal(model.encode_text(padded), short)
        assert torch.equal(model.encode_text(padded, full_length=True), full)
    assert eot.tolist() == [2, 8, 16, 4, 29, 11]
    assert torch.equal(from_embeddings, short)
    k, depth = text_depth(model)
    assert_rounding_close(short, full, k, depth)
    assert_rounding_close(F.normalize(short, dim=-1), F.normalize(full, dim=-1), k, depth + 1)  # + the norm's sum


def test_text_prefix_cache_is_the_same_function():
    """Prompts sharing their first P positions: the prefix's keys and values, computed once (`text_prefix`), read
    by every row (`encode_text_after_prefix`) give encode_text_embeddings of the whole prompts. Exact in math
    (causal: the prefix never sees the rows); other attention shapes, so equal up to rounding, gradients too."""
    model, p = _randomised(TINY_VIT), 3
    tokens = _tokens(3, 500, [4, 11, 7])
    eot = eot_index(tokens)
    embeddings = model.token_embedding(tokens)[:, : int(eot.max()) + 1].detach()
    head, rest = embeddings[:1, :p].clone().requires_grad_(), embeddings[:, p:].clone().requires_grad_()
    cot = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    outs, grads = [], []
    for flag in (False, True):  # gradient checkpointing recomputes the rows' blocks with the same prefix
        model.transformer.grad_checkpointing = flag
        prefix = model.text_prefix(head)
        assert [tuple(t.shape) for kv in prefix for t in kv] == [(1, p, 64)] * 4  # keys and values per block
        outs.append(model.encode_text_after_prefix(prefix, rest, eot - p))
        grads.append(torch.autograd.grad((outs[-1] * cot).sum(), (head, rest)))
    model.transformer.grad_checkpointing = False
    full = model.encode_text_embeddings(torch.cat([head.expand(3, p, 64), rest], dim=1), eot)
    full_grads = torch.autograd.grad((full * cot).sum(), (head, rest))
    k, depth = text_depth(model)
    k_back, depth_back = text_depth(model, backward=True)
    for out, grad in zip(outs, grads):
        assert_rounding_close(out, full, k, depth)
        for g, want in zip(grad, full_grads):
            assert_rounding_close(g, want, k_back, depth_back)
    with pytest.raises(ValueError, match=r"\(N, L <= 74, 64\)"):  # P = 3 positions are taken by the prefix
        model.encode_text_after_prefix(model.text_prefix(head), torch.zeros(3, 75, 64), eot)
    with pytest.raises(ValueError, match="needs a causal transformer"):  # the vision tower's prefix sees the rest
        model.visual.transformer.prefix(torch.zeros(1, 2, 64))


def test_first_eot_wins():
    tokens = torch.tensor([[49406, 320, 49407, 1929, 49407, 0], [49406, 49407, 0, 0, 0, 0]])
    assert eot_index(tokens).tolist() == [2, 1]


def _ref_block(block, x, causal):  # OpenAI's formulation: sequence-first, nn.MultiheadAttention math, -inf mask
    length, width = x.shape[0], x.shape[-1]
    mask = torch.full((length, length), float("-inf")).triu(1) if causal else None
    h = F.layer_norm(x, (width,), block.ln_1.weight, block.ln_1.bias)
    attn = block.attn
    x = x + F.multi_head_attention_forward(
        h, h, h, width, attn.heads, attn.in_proj_weight, attn.in_proj_bias, None, None, False, 0.0,
        attn.out_proj.weight, attn.out_proj.bias, training=False, need_weights=False, attn_mask=mask,
    )[0]  # fmt: skip
    h = F.layer_norm(x, (width,), block.ln_2.weight, block.ln_2.bias)
    h = F.linear(h, block.mlp.c_fc.weight, block.mlp.c_fc.bias)
    h = F.gelu(h) if isinstance(block.mlp.gelu, torch.nn.GELU) else h * torch.sigmoid(1.702 * h)
    return x + F.linear(h, block.mlp.c_proj.weight, block.mlp.c_proj.bias)


# open_clip's layouts that shapes do not show, on TINY_VIT: erf GELU, 32-wide vision heads (2, not 1), MLPs 2.5x
OPEN_CLIP_LAYOUT = {"vision_head_width": 32, "vision_mlp_width": 160, "text_mlp_width": 160, "quick_gelu": False}


@pytest.mark.parametrize("layout", [{}, OPEN_CLIP_LAYOUT], ids=["openai", "open_clip"])
def test_reference_twin_with_nontrivial_layernorms_and_biases(layout):
    vit = _randomised(TINY_VIT, **layout)
    assert vit.visual.transformer.resblocks[0].attn.heads == (2 if layout else 1)  # its 64 features: 1 x 64 or 2 x 32
    tokens = _tokens(3, 500, [4, 11, 7])
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        x = (vit.token_embedding(tokens) + vit.positional_embedding).transpose(0, 1)  # (77, N, W)
        for block in vit.transformer.resblocks:
            x = _ref_block(block, x, causal=True)
        x = F.layer_norm(x.transpose(0, 1), (64,), vit.ln_final.weight, vit.ln_final.bias)
        text_ref = x[torch.arange(3), eot_index(tokens)] @ vit.text_projection
        v = vit.visual
        x = v.conv1(images).flatten(2).permute(2, 0, 1)  # (HW, N, W)
        x = torch.cat([v.class_embedding.expand(1, 2, -1), x]) + v.positional_embedding[:, None]
        x = F.layer_norm(x, (64,), v.ln_pre.weight, v.ln_pre.bias)
        for block in v.transformer.resblocks:
            x = _ref_block(block, x, causal=False)
        image_ref = F.layer_norm(x[0], (64,), v.ln_post.weight, v.ln_post.bias) @ v.proj
        # the same math through torch's reference attention: equal up to rounding
        assert_rounding_close(vit.encode_text(tokens), text_ref, *text_depth(vit))
        assert_rounding_close(vit.encode_image(images), image_ref, *tower_depth(vit.visual.transformer, 3 * 2 * 2))


def test_reference_twin_attention_pool():
    rn = _randomised(TINY_RN, seed=1)
    with torch.no_grad():
        fmap = rn.image_feature_map(torch.randn(2, 3, 64, 64))
        pool = rn.visual.attnpool
        x = fmap.flatten(2).permute(2, 0, 1)
        x = torch.cat([x.mean(0, keepdim=True), x]) + pool.positional_embedding[:, None]
        pool_ref = F.multi_head_attention_forward(
            x[:1], x, x, x.shape[-1], pool.num_heads, None,
            torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]), None, None, False, 0.0,
            pool.c_proj.weight, pool.c_proj.bias, use_separate_proj_weight=True,
            q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
            training=False, need_weights=False,
        )[0][0]  # fmt: skip
        assert_rounding_close(pool(fmap), pool_ref, k=fmap.shape[1], depth=4)  # q/k/v, softmax, weighted sum, c_proj


def _backbone(clip_file):  # TaI-DPT's files name their CLIP by file name, kept in clip/
    return build_model(load(GOLDEN / "clip" / clip_file)["state_dict"], "openai")


@pytest.mark.parametrize("path", golden_params("taidpt/image_forward*.pt"))
def test_taidpt_dense_image_features(path):
    data = load(path)
    model = _backbone(data["clip_file"])
    for case in data["cases"]:
        with torch.no_grad():
            fmap = model.image_feature_map(case["images"])
            global_feat, local_feat = model.encode_image_dense(case["images"], positional_embedding=False)
        assert local_feat.shape == (case["B"], case["H"] * case["W"], global_feat.shape[-1])
        torch.testing.assert_close(fmap, case["backbone_map"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(global_feat, case["global_feat"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(local_feat, case["local_feat"], atol=1e-5, rtol=1e-5)
        if "global_feat_if_pos_true" in case:  # native resolution: with positions it is stock encode_image
            with torch.no_grad():
                with_pos, _ = model.encode_image_dense(case["images"])
                image = model.encode_image(case["images"])
            torch.testing.assert_close(with_pos, case["global_feat_if_pos_true"], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(image, case["global_feat_stock_encode_image"], atol=1e-5, rtol=1e-5)
            assert torch.equal(with_pos, image)
        elif case["resolution"] != model.visual.input_resolution:
            with pytest.raises(ValueError, match="positional_embedding=False"):
                model.encode_image_dense(case["images"])


@pytest.mark.parametrize("path", golden_params("taidpt/text_forward*.pt"))
def test_taidpt_text_token_features(path):
    data = load(path)
    model = _backbone(data["clip_file"])
    with torch.no_grad():
        pooled, per_token = model.encode_text_tokens(data["tokens"])
    length = int(data["eot_index"].max()) + 1
    assert per_token.shape[1] == length
    torch.testing.assert_close(per_token, data["caption_token_feat"][:, :length], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled, data["caption_global_feat"], atol=1e-5, rtol=1e-5)


def test_dense_shapes_and_globals():
    vit, rn = _randomised(TINY_VIT), _randomised(TINY_RN)
    with torch.no_grad():
        images = torch.randn(2, 3, 32, 32)
        global_feat, local_feat = vit.encode_image_dense(images)
        assert vit.image_feature_map(images).shape == (2, 5, 64)
        assert local_feat.shape == (2, 4, 32)
        # the dense path runs the same tower on the same batch, through its own calls: equal up to rounding
        assert_rounding_close(global_feat, vit.encode_image(images), *tower_depth(vit.visual.transformer, 3 * 2 * 2))
        images = torch.randn(2, 3, 64, 64)
        global_feat, local_feat = rn.encode_image_dense(images)
        assert rn.image_feature_map(images).shape == (2, 128, 2, 2) and local_feat.shape == (2, 4, 32)
        assert torch.equal(global_feat, rn.encode_image(images))
        fmap = rn.image_feature_map(images)  # local = c_proj(v_proj(x_l)) at l = h W + w
        pool = rn.visual.attnpool
        plain = pool.c_proj(pool.v_proj(fmap[:, :, 0, 1]))  # two matmuls over one position instead of all four
        assert_rounding_close(local_feat[:, 1], plain, k=fmap.shape[1], depth=2)
    with pytest.raises(ValueError, match="cannot be left out"):
        vit.encode_image_dense(torch.randn(1, 3, 32, 32), positional_embedding=False)
    with pytest.raises(ValueError, match="32px"):
        vit.encode_image(torch.randn(1, 3, 48, 48))


def test_autocast_and_fp32_layernorm():
    model = _randomised(TINY_VIT)
    tokens = _tokens(3, 500, [4, 11, 7])
    with torch.no_grad():
        reference = model.encode_text(tokens)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model.encode_text(tokens)
    assert mixed.dtype == torch.bfloat16
    torch.testing.assert_close(mixed.float(), reference, atol=0.05 * reference.abs().max().item(), rtol=0)
    norm = _randomised(TINY_VIT).ln_final
    x = torch.randn(4, 64).to(torch.bfloat16)
    expected = F.layer_norm(x.float(), (64,), norm.weight, norm.bias).to(torch.bfloat16)
    assert isinstance(norm, LayerNorm) and torch.equal(norm(x), expected)


def test_grad_checkpointing_gives_same_gradients():
    model = _randomised(TINY_VIT)
    tokens = _tokens(3, 500, [4, 11, 7])
    eot = eot_index(tokens)
    grads = []
    for flag in (False, True):
        model.transformer.grad_checkpointing = flag
        embeddings = model.token_embedding(tokens)[:, :11].detach().requires_grad_()
        model.encode_text_embeddings(embeddings, eot).square().sum().backward()
        grads.append(embeddings.grad)
    assert grads[0].abs().sum() > 0
    # the recomputed forward is the same ops, but BLAS may round differently on differently aligned buffers
    assert_rounding_close(grads[1], grads[0], *text_depth(model, backward=True))


def test_bad_state_dicts_raise_clear_errors():
    with torch.device("meta"):
        good = CLIP(*TINY_RN).state_dict()
    missing = {k: v for k, v in good.items() if k != "visual.layer2.0.bn1.bias"}
    with pytest.raises(ValueError, match="missing key 'visual.layer2.0.bn1.bias'.*not an OpenAI-format CLIP"):
        build_model(missing)
    wrong = {**good, "visual.attnpool.c_proj.bias": torch.empty(7, device="meta")}
    with pytest.raises(ValueError, match=r"'visual.attnpool.c_proj.bias' has shape \(7,\), expected \(32,\)"):
        build_model(wrong)
    with pytest.raises(ValueError, match="unexpected key 'extra.weight'"):
        build_model({**good, "extra.weight": torch.empty(1, device="meta")})
    linear = torch.nn.Linear(3, 4).state_dict()
    message = "missing key 'visual.layer1.0.conv1.weight'.*found: weight, bias.*not an OpenAI-format"
    with pytest.raises(ValueError, match=message):
        build_model(linear)
    with pytest.raises(ValueError, match="expected a dict"):
        build_model([torch.zeros(1)])
    with pytest.raises(ValueError, match="should be a 2-d tensor"):
        build_model({**good, "text_projection": torch.empty(64, device="meta")})


def test_bad_configs_and_inputs():
    with pytest.raises(ValueError, match="vision_width 32 gives 0 heads"):
        CLIPConfig(32, 32, 2, 32, 16, 77, 500, 64, 1, 1)
    with pytest.raises(ValueError, match="not divisible by transformer_heads"):
        CLIPConfig(32, 32, 2, 64, 16, 77, 500, 64, 3, 1)
    model = _randomised(TINY_VIT)
    with pytest.raises(ValueError, match=r"\(N, L <= 77, 64\)"):
        model.encode_text_embeddings(torch.zeros(2, 78, 64), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"eot_index must have shape \(2,\)"):
        model.encode_text_embeddings(torch.zeros(2, 5, 64), torch.zeros(3, dtype=torch.long))


# ---------------------------------------------------------------- open_clip's model configs (parity: test_openclip.py)

# TINY_VIT with OPEN_CLIP_LAYOUT as open_clip writes it (model_configs/ViT-H-14.json's keys), and TINY_RN
TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "mlp_ratio": 2.5, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 500, "width": 64, "heads": 2, "layers": 2, "mlp_ratio": 2.5},
}
TINY_OPEN_CLIP_RN = {
    "embed_dim": 32, "quick_gelu": True,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 4, "patch_size": None},
    "text_cfg": {"context_length": 77, "vocab_size": 500, "width": 64, "heads": 2, "layers": 2},
}  # fmt: skip


def test_open_clip_config_gives_the_layout_shapes_cannot():
    assert CLIPConfig.from_open_clip(TINY_OPEN_CLIP) == CLIPConfig(*TINY_VIT, **OPEN_CLIP_LAYOUT)
    assert CLIPConfig.from_open_clip(TINY_OPEN_CLIP_RN) == CLIPConfig(*TINY_RN)  # open_clip's "-quickgelu" RN: OpenAI's
    source = _randomised(TINY_VIT, **OPEN_CLIP_LAYOUT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the config says what the shapes cannot: nothing to warn about
        model = build_model(source.state_dict(), TINY_OPEN_CLIP)
    with pytest.warns(UserWarning, match="not a released OpenAI checkpoint.*config='openai'"):
        assumed = build_model(source.state_dict())  # shapes alone: the MLP widths, but OpenAI's activation and heads
    openai_heads = (*TINY_VIT[:8], 1, TINY_VIT[9])  # 64 wide: one text head where TINY_VIT has 2
    assert assumed.config == CLIPConfig(*openai_heads, vision_mlp_width=160, text_mlp_width=160)
    tokens, images = _tokens(3, 500, [4, 11, 7]), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for encode, x in ((CLIP.encode_image, images), (CLIP.encode_text, tokens)):
            assert torch.equal(encode(model, x), encode(source, x))  # the same modules on the same weights
            wrong, right = encode(assumed, x), encode(source, x)
            assert (wrong - right).abs().max() > 1e-3 * right.abs().max()  # far beyond rounding: why it warns


def test_text_narrower_than_a_head_takes_its_heads_from_the_config():
    """A 32-wide text tower: open_clip's config gives its 2 heads; without one, OpenAI's 64-wide heads round to one
    head (not zero, which no model has)."""
    config = copy.deepcopy(TINY_OPEN_CLIP)
    config["text_cfg"].update(width=32, heads=2)
    torch.manual_seed(0)
    source = randomise_(CLIP(**vars(CLIPConfig.from_open_clip(config))).eval())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = build_model(source.state_dict(), config)
    assert model.config == source.config and model.config.transformer_heads == 2
    tokens = _tokens(3, 500, [4, 11, 7])
    with torch.no_grad():
        assert torch.equal(model.encode_text(tokens), source.encode_text(tokens))  # same modules, same weights
    with pytest.warns(UserWarning, match="not a released OpenAI checkpoint"):
        assumed = build_model(source.state_dict())
    assert assumed.config.transformer_heads == 1 and assumed.encode_text(tokens).shape == (3, 32)


@pytest.mark.parametrize("option, value", [
    ("vision_cfg.no_ln_pre", True), ("vision_cfg.attentional_pool", True), ("vision_cfg.final_ln_after_pool", True),
    ("vision_cfg.ls_init_value", 1e-4), ("vision_cfg.timm_model_name", "eva02_base_patch16_clip_224"),
    ("text_cfg.hf_model_name", "xlm-roberta-base"), ("text_cfg.hf_tokenizer_name", "bert-base-uncased"),
    ("text_cfg.pool_type", "eos"), ("text_cfg.proj_bias", True), ("text_cfg.norm_kwargs", {"eps": 1e-6}),
    ("init_logit_bias", -10), ("multimodal_cfg", {"width": 512}), ("vision_cfg.an_option_from_the_future", 1),
])  # fmt: skip
def test_open_clip_options_not_implemented_are_refused(option, value):
    config = copy.deepcopy(TINY_OPEN_CLIP)
    *section, key = option.split(".")
    (config[section[0]] if section else config)[key] = value
    shown = "{...}" if isinstance(value, dict) else repr(value)
    with pytest.raises(ValueError, match=re.escape(f"open_clip config sets {option}={shown}: not supported")):
        build_model({}, config)  # named before any key of the state dict is looked for


def test_open_clip_config_of_another_model():
    state = _randomised(TINY_VIT).state_dict()  # OpenAI's 4x MLPs
    message = r"does not describe this state dict: vision_mlp_width 160 \(config\) vs 256 \(shapes\)"
    with pytest.raises(ValueError, match=message):
        build_model(state, TINY_OPEN_CLIP)
    with pytest.raises(ValueError, match="expected open_clip's model config.*open_clip.get_model_config"):
        build_model(state, "ViT-B-32")


def test_ddp_prefix_is_stripped():
    state = _randomised(TINY_VIT).state_dict()
    ddp = {f"module.{k}": v for k, v in state.items()}  # a state dict saved from DistributedDataParallel(model)
    assert strip_ddp_prefix(ddp).keys() == state.keys()
    weights = build_model(ddp, "openai").state_dict()
    assert all(torch.equal(weights[k], v) for k, v in state.items())
    partly = {**state, "module.head.weight": torch.zeros(1)}  # only a wrapper's keys all start with it
    assert strip_ddp_prefix(partly) is partly


def test_attention_falls_back_to_the_math_kernel_where_the_cpu_flash_kernel_refuses(monkeypatch):
    """PyTorch's CPU flash kernel runs bf16 over > 128 positions only with AVX-512 (ATEN_CPU_CAPABILITY=default or
    avx2 refuse: "pack_vnni2 is only supported when avx512 is supported"); attention then runs the math kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import tinyprompt.clip as clip_module

    real = F.scaled_dot_product_attention
    refused = []

    def flash_without_avx512(*args, **kwargs):
        if not refused:
            refused.append(True)
            raise RuntimeError("pack_vnni2 is only supported when avx512 is supported")
        return real(*args, **kwargs)

    q, k, v = torch.randn(3, 2, 129, 64, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16).unbind(0)
    monkeypatch.setattr(clip_module.F, "scaled_dot_product_attention", flash_without_avx512)
    got = clip_module._attend(q, k, v, heads=4, causal=True)
    monkeypatch.undo()
    with sdpa_kernel(SDPBackend.MATH):  # the same kernel: bit for bit
        want = clip_module._attend(q, k, v, heads=4, causal=True)
    assert refused and torch.equal(got, want)
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(clip_module.F, "scaled_dot_product_attention", out_of_memory)
    with pytest.raises(RuntimeError, match="out of memory"):  # any other error is the caller's
        clip_module._attend(q, k, v, heads=4, causal=True)
