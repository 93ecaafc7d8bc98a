"""CoOp against the official code's outputs (golden files) and its own contracts (saving, loading, loss).

Golden: every `coop/coop_*.pt` (PromptLearner prompts exact, text features 1e-5, logits 1e-4) and every
`coop/train_steps_*.pt` (3 SGD steps: loss rtol 1e-5, grad 1e-4·max|grad|, ctx 1e-5, logits 2e-4).
The stored ctx is injected (the RNG is not replayed); each file names its CLIP in `model_file`.
"""
import warnings

import pytest
import torch
import torch.nn.functional as F

from golden import GOLDEN, golden_params, load, needs_vocab
from tolerance import assert_rounding_close, text_depth
from tinyprompt.clip import CLIP
from tinyprompt.clip_checkpoint import build_model
from tinyprompt.engine import TrainConfig, build_optimizer
from tinyprompt.hub import load as hub_load
from tinyprompt.methods import CoOp, CoOpConfig
from tinyprompt.metrics import accuracy, harmonic_mean

NAMES = ["golden_retriever", "cat", "Annual Crop Land", "st. bernard", "a (b)"]
_MODELS = {}


def golden_clip(model_file: str):
    """The backbone a golden file names (relative to the golden root); archives go through hub.load."""
    if model_file not in _MODELS:
        path = GOLDEN / model_file
        if path.stem.endswith("_jit"):
            _MODELS[model_file] = hub_load(path)[0]
        else:
            _MODELS[model_file] = build_model(load(path)["state_dict"], "openai")  # made by OpenAI's CLIP code
    return _MODELS[model_file]


def coop_from_case(case, ctx, csc=None, **options) -> CoOp:
    csc = case["csc"] if csc is None else csc
    with warnings.catch_warnings():  # csc with ctx_init warns that csc is ignored: the official behaviour, tested below
        warnings.simplefilter("ignore" if csc and case["ctx_init"] else "error")
        config = CoOpConfig(n_ctx=case["n_ctx"], ctx_init=case["ctx_init"], csc=csc,
                            class_token_position=case["class_token_position"], **options)  # fmt: skip
    model = CoOp(golden_clip(case["model_file"]), case["classnames"], config)
    with torch.no_grad():
        model.ctx.copy_(ctx)  # the stored official init, instead of replaying its RNG
    return model


@needs_vocab
@pytest.mark.parametrize("path", golden_params("coop/coop_*.pt"))
def test_golden_prompt_learner(path):
    case = load(path)
    model = coop_from_case(case, case["ctx"])
    if case["ctx_init"]:  # the word init itself is part of the case: ctx = embeddings of the init tokens
        torch.testing.assert_close(CoOp(model.clip, case["classnames"], model.config).ctx, case["ctx"], atol=0, rtol=0)
    assert torch.equal(model.prompts.tokens, case["tokenized_prompts"])
    assert model.prompts.name_lens == case["name_lens"]
    full = coop_from_case(case, case["ctx"], full_length=True)  # all 77 positions, as the official PromptLearner returns
    assert torch.equal(full.prompts.assemble(full.ctx), case["prompts"])
    with torch.no_grad():
        for m in (model, full, coop_from_case(case, case["ctx"], text_chunk=2, share_prefix=False)):
            torch.testing.assert_close(m.text_features(), case["text_features"], atol=1e-5, rtol=0)
            torch.testing.assert_close(m(case["image"]), case["logits"], atol=1e-4, rtol=0)
        if case["ctx_init"]:  # the official code ignores csc with a word init: csc=True builds the same model
            ignored = coop_from_case(case, case["ctx"], csc=not case["csc"])
            assert ignored.ctx.shape == case["ctx"].shape and not ignored.config.csc
            assert torch.equal(ignored.text_features(), model.text_features())  # the same module: same ops, same bits


@needs_vocab
@pytest.mark.parametrize("path", golden_params("coop/train_steps_*.pt"))
@pytest.mark.parametrize("loss", ["cross_entropy", "sampled_softmax"])
def test_golden_training_steps(path, loss):
    if loss == "sampled_softmax":
        pytest.importorskip("tinyprompt.kernels", reason="tinyprompt.kernels is not available yet")
        from tinyprompt import kernels

        if not hasattr(kernels, "sampled_softmax_loss"):
            pytest.skip("tinyprompt.kernels.sampled_softmax_loss is not available yet")
    case = load(path)
    model = coop_from_case(case, case["ctx_start"], loss=loss).train()
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["ctx"]
    opt = case["optimizer"]
    assert opt["name"] == "sgd" and opt["dampening"] == 0 and not opt["nesterov"]
    config = TrainConfig(lr=opt["lr"], momentum=opt["momentum"], weight_decay=opt["weight_decay"])
    optimizer = build_optimizer([model.ctx], config)
    with torch.no_grad():
        image_features = model.clip.encode_image(case["images"])  # frozen: the same every step
    for t in range(case["steps"]):
        logits = model(case["images"])
        torch.testing.assert_close(logits.detach(), case["logits"][t], atol=2e-4, rtol=0)
        assert accuracy(logits.detach(), case["labels"])[0] == pytest.approx(case["acc"][t])
        loss_value = model.loss(image_features, case["labels"])
        torch.testing.assert_close(loss_value.detach(), case["loss"][t], rtol=1e-5, atol=0)
        optimizer.zero_grad()
        loss_value.backward()
        grad = case["grad"][t]
        torch.testing.assert_close(model.ctx.grad, grad, atol=1e-4 * grad.abs().max().item(), rtol=0)
        for group in optimizer.param_groups:
            group["lr"] = case["lr"][t]
        optimizer.step()
        torch.testing.assert_close(model.ctx.detach(), case["ctx"][t], atol=1e-5, rtol=0)
        # b_t = 0.9 b_(t-1) + grad_t + 5e-4 ctx_t: it sums the grads, so it gets their tolerance at its own scale
        buffer = case["momentum_buffer"][t]
        torch.testing.assert_close(optimizer.state[model.ctx]["momentum_buffer"], buffer,
                                   atol=1e-4 * buffer.abs().max().item(), rtol=0)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return CLIP(16, 32, 1, 64, 16, 77, 49408, 32, 2, 2).eval()


@needs_vocab
def test_cross_entropy_and_kernel_loss_agree(tiny_clip):
    kernels = pytest.importorskip("tinyprompt.kernels")
    if not hasattr(kernels, "sampled_softmax_loss"):
        pytest.skip("tinyprompt.kernels.sampled_softmax_loss is not available yet")
    torch.manual_seed(3)
    model = CoOp(tiny_clip, NAMES, CoOpConfig(n_ctx=4))
    feats, labels = torch.randn(6, 16), torch.tensor([0, 1, 2, 3, 4, 0])
    grads = []
    for loss in ("cross_entropy", "sampled_softmax"):
        model.config.loss = loss
        value = model.loss(feats, labels)
        (grad,) = torch.autograd.grad(value, model.ctx)
        grads.append((value.detach(), grad))
    # the kernel sums the softmax over classes in its own order: equal up to rounding, through the text tower
    k, depth = text_depth(tiny_clip)
    assert_rounding_close(grads[1][0], grads[0][0], k, depth + 3)  # + cosine, log-sum-exp, batch mean
    assert_rounding_close(grads[1][1], grads[0][1], *text_depth(tiny_clip, backward=True))


@needs_vocab
def test_prompt_state_dict_roundtrip_and_transfer(tiny_clip):
    torch.manual_seed(4)
    model = CoOp(tiny_clip, NAMES, CoOpConfig(n_ctx=4, class_token_position="middle"))
    state = model.prompt_state_dict()
    assert set(state) == {"method", "config", "classnames", "ctx"}
    assert all(isinstance(v, (int, float, str, bool)) for v in state["config"].values())
    assert state["ctx"].shape == (4, 32)
    # only the learned tensor: the frozen CLIP and the token buffers are not in it
    assert not any(isinstance(v, torch.Tensor) for k, v in state.items() if k != "ctx")
    other = ["tabby cat", "dog", "boeing 747"]
    loaded = CoOp.from_prompt_state_dict(tiny_clip, other, state, text_chunk=2)
    assert torch.equal(loaded.ctx, model.ctx) and loaded.classnames == other and loaded.config.text_chunk == 2
    # the transferred prompt equals the same context built directly for the new classes
    direct = CoOp(tiny_clip, other, CoOpConfig(n_ctx=4, class_token_position="middle"))
    direct.load_prompt_state_dict(state)
    with torch.no_grad():
        assert_rounding_close(loaded.text_features(), direct.text_features(), *text_depth(tiny_clip))  # chunks of 2


@needs_vocab
def test_loading_errors(tiny_clip):
    csc = CoOp(tiny_clip, NAMES, CoOpConfig(n_ctx=4, csc=True))
    assert csc.ctx.shape == (5, 4, 32)
    with pytest.raises(ValueError, match="same class list"):
        CoOp.from_prompt_state_dict(tiny_clip, NAMES[:3], csc.prompt_state_dict())
    shared = CoOp(tiny_clip, NAMES, CoOpConfig(n_ctx=4)).prompt_state_dict()
    with pytest.raises(ValueError, match="n_ctx differs"):
        CoOp(tiny_clip, NAMES, CoOpConfig(n_ctx=8)).load_prompt_state_dict(shared)
    with pytest.raises(ValueError, match="class_token_position"):
        CoOp(tiny_clip, NAMES, CoOpConfig(n_ctx=4, class_token_position="front")).load_prompt_state_dict(shared)
    with pytest.raises(ValueError, match="only .* can be changed"):
        CoOp.from_prompt_state_dict(tiny_clip, NAMES, shared, n_ctx=2)
    with pytest.raises(ValueError, match="not CoOp"):
        CoOp(tiny_clip, NAMES, CoOpConfig(n_ctx=4)).load_prompt_state_dict({**shared, "method": "pomp"})


def test_config_validation():
    with pytest.raises(ValueError, match="class_token_position"):
        CoOpConfig(class_token_position="back")
    with pytest.warns(UserWarning, match="csc=True is ignored when ctx_init is given") as caught:
        config = CoOpConfig(csc=True, ctx_init="a photo of a")
    assert len(caught) == 1 and "\n" not in str(caught[0].message) and not config.csc  # one line; shared context
    with pytest.raises(ValueError, match="n_ctx"):
        CoOpConfig(n_ctx=0)
    with pytest.raises(ValueError, match="loss"):
        CoOpConfig(loss="mse")
    with pytest.raises(ValueError, match="text_chunk"):
        CoOpConfig(text_chunk=-1)


@needs_vocab
def test_only_ctx_trains_and_clip_stays_in_eval_mode():
    torch.manual_seed(5)
    clip = CLIP(16, 64, (1, 1, 1, 1), 8, None, 77, 49408, 32, 2, 2)  # ResNet: BatchNorm must stay in eval
    model = CoOp(clip, NAMES, CoOpConfig(n_ctx=2)).train()
    assert model.training and not model.clip.training and not model.clip.visual.bn1.training
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["ctx"]
    images = torch.randn(2, 3, 64, 64)
    F.cross_entropy(model(images), torch.tensor([0, 1])).backward()
    assert model.ctx.grad is not None and model.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in model.named_parameters() if n != "ctx")


def test_metrics():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.3, 0.4, 0.3]])
    labels = torch.tensor([1, 2, 2, 0])
    assert accuracy(logits, labels, topk=(1, 2)) == [50.0, 75.0]
    assert accuracy(logits, labels, topk=(3,)) == [100.0]
    with pytest.raises(ValueError, match="topk"):
        accuracy(logits, labels, topk=(4,))
    with pytest.raises(ValueError, match="labels"):
        accuracy(logits, labels[:2])
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(0.0, 0.0) == 0.0 and harmonic_mean(50.0, 0.0) == 0.0
