"""torch.compile of the methods' training steps (`TrainConfig.compile`, `--compile`): a compiled step gives the eager
step's loss and gradients, and the steps compile as one graph where tinyprompt's own code is all they run.

Backend: "aot_eager", dynamo's graph capture plus AOTAutograd's joint forward and backward graph, run by eager
kernels: everything compilation changes about the step except code generation. Inductor's code generation is
tested where CUDA is available only: on CPU it compiles C++ per graph, measured at 32 s for the 2-layer CoOp step
below on this 2-core machine, too slow for the unit suite.

A compiled step pads each text pass to the longest prompt of all classes (and TaI-DPT's captions to the corpus's
longest) instead of reading the batch's longest back from the device: the same function by causality and
masking, another order of the arithmetic, so losses and gradients are compared up to the fp32 rounding bound.
"""

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.testing import CompileCounter

from tolerance import assert_rounding_close, steps_depth, text_depth, tower_depth
from golden import needs_vocab
from tinyprompt.clip import CLIP
from tinyprompt.engine import TrainConfig, train
from tinyprompt.methods.coop import CoOp, CoOpConfig
from tinyprompt.methods.ilmvp import ILMVP, AdditivePrompt, CLIPClassifier
from tinyprompt.methods.pomp import POMP, POMPConfig
from tinyprompt.methods.ship import SHIPConfig, SHIPGenerator, finetune_loss
from tinyprompt.methods.taidpt import TaIDPT, TaIDPTConfig, encode_captions
from tinyprompt.tokenizer import tokenize

pytestmark = [
    pytest.mark.skipif(not torch._dynamo.is_dynamo_supported(), reason="torch.compile is not supported here"),
    needs_vocab,
]
NAMES = ["cat", "dog", "golden retriever", "sea lion", "red fox", "tabby cat"]
CAPTIONS = ["a cat on a mat", "a dog and a red fox", "a sea lion", "a tabby cat asleep in the sun"]


def tiny_clip():
    torch.manual_seed(0)
    return CLIP(16, 32, 1, 64, 16, 77, 49408, 32, 2, 2).eval()  # text width 32, 2 heads, 2 layers; ViT 32px


def steps():
    """{method: (model, zero-argument training-step loss, (k, depth) of its rounding bound)} on fixed tiny inputs."""
    clip = tiny_clip()
    g = torch.Generator().manual_seed(1)
    features, labels = torch.randn(8, 16, generator=g), torch.arange(8) % len(NAMES)
    unit = F.normalize(features, dim=-1)
    text = text_depth(clip, backward=True)
    coop = CoOp(clip, NAMES, CoOpConfig(n_ctx=4)).train()
    pomp = POMP(clip, NAMES, POMPConfig(n_ctx=4, k=4)).train()
    taidpt = TaIDPT(clip, NAMES, TaIDPTConfig(n_ctx=4)).train()
    captions = encode_captions(clip, tokenize(CAPTIONS))
    multi_hot = torch.zeros(len(CAPTIONS), len(NAMES), dtype=torch.long)
    multi_hot[[0, 1, 1, 2, 3], [0, 1, 4, 3, 5]] = 1
    generator = SHIPGenerator(clip, NAMES, SHIPConfig(enc_hidden=32, gen_hidden=32)).train()
    eps = torch.randn(8, 16, generator=g)
    frozen = SHIPGenerator(clip, NAMES, SHIPConfig(enc_hidden=32, gen_hidden=32)).eval()
    ship_coop = CoOp(clip, NAMES, CoOpConfig(n_ctx=4, ctx_init="a photo of a")).train()
    z, new = torch.randn(8, 16, generator=g), torch.full((8,), 4)
    source = CLIPClassifier(clip, F.normalize(torch.randn(12, 16, generator=g), dim=-1))
    ilmvp = ILMVP(source, AdditivePrompt(32, 4), len(NAMES)).train()
    images = torch.randn(4, 3, 32, 32, generator=g)
    vision = tower_depth(clip.visual.transformer, 3 * 16 * 16, backward=True)  # the patch convolution's reduction
    rows = torch.arange(len(CAPTIONS))

    def caption_logits():  # TaI-DPT's step up to its ranking loss (a kernel: its CPU reference twin branches on data)
        glob, local, mask = captions.batch(rows)
        return sum(taidpt.logits(glob, local, taidpt.config.temperature_text, mask))

    return {
        "coop": (coop, lambda: coop.loss(features, labels), text),
        "pomp": (pomp, lambda: pomp.step_loss(features.view(4, 2, 16), labels[:4], step=0), text),
        "taidpt": (taidpt, lambda: taidpt.caption_loss(captions, rows, multi_hot), text),
        "taidpt_logits": (taidpt, caption_logits, text),
        "ship_vae": (generator, lambda: generator(unit, labels % 3, eps=eps)["loss"], text),
        "ship_finetune": (ship_coop, lambda: finetune_loss(ship_coop, frozen, unit, labels % 3, 3, new, z), text),
        "ilmvp": (ilmvp, lambda: ilmvp.loss(ilmvp(images), labels[:4]), vision),
    }


METHODS = ["coop", "pomp", "taidpt", "ship_vae", "ship_finetune", "ilmvp"]


def loss_and_grads(model, step):
    params = [p for p in model.parameters() if p.requires_grad]
    loss = step()
    return loss.detach(), torch.autograd.grad(loss, params)


@pytest.mark.parametrize("method", METHODS)
def test_compiled_step_gives_the_eager_loss_and_gradients(method):
    torch._dynamo.reset()
    model, step, (k, depth) = steps()[method]
    loss, grads = loss_and_grads(model, step)
    compiled_loss, compiled_grads = loss_and_grads(model, torch.compile(step, backend="aot_eager"))
    assert_rounding_close(compiled_loss, loss, k, depth, msg=f"{method} loss")
    for compiled, eager in zip(compiled_grads, grads, strict=True):
        assert_rounding_close(compiled, eager, k, depth, msg=f"{method} gradient")


@pytest.mark.parametrize("method", ["coop", "taidpt_logits", "ship_vae", "ship_finetune", "ilmvp"])
def test_steps_compile_as_one_graph(method):
    """Dynamo compiles one graph per stretch between graph breaks (fullgraph=True would instead trace a `.item()`
    as an unbacked integer, so it misses that break). TaI-DPT's step is one graph up to its ranking loss, whose CPU
    reference twin branches on data. POMP's step is not one graph: it breaks where it draws its negatives on the
    host (on purpose), where it deduplicates classes (`torch.unique`: the shapes depend on the data), and in its
    fused loss's input check and reference twin."""
    torch._dynamo.reset()
    _, step, _ = steps()[method]
    graphs = CompileCounter()
    torch.compile(step, backend=graphs)()
    assert graphs.frame_count == 1, f"{graphs.frame_count} graphs: a graph break (TORCH_LOGS=graph_breaks says where)"


def test_train_with_compile_matches_eager():
    """TrainConfig.compile wraps loss_fn in torch.compile: two SGD steps give the eager run's context."""
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 16, generator=g), torch.arange(8) % len(NAMES)) for _ in range(2)]
    ctx = {}
    for compile_ in (False, "aot_eager"):
        torch._dynamo.reset()
        clip = tiny_clip()
        model = CoOp(clip, NAMES, CoOpConfig(n_ctx=4))
        config = TrainConfig(max_epoch=1, warmup_epochs=0, lr=0.5, log_every=0, compile=compile_)
        train(model, lambda m, batch, info: m.loss(*batch), lambda epoch: batches, config)
        ctx[compile_] = model.ctx.detach()
    k, depth = text_depth(clip, backward=True)
    assert_rounding_close(ctx["aot_eager"], ctx[False], k, steps_depth(depth, 2))


def test_compile_config_names_the_allowed_values():
    assert TrainConfig(compile=True).compile is True
    with pytest.raises(ValueError, match=r"TrainConfig.compile = 'fastest'.*aot_eager"):
        TrainConfig(compile="fastest")
    with pytest.raises(ValueError, match=r"TrainConfig.compile = 1 "):
        TrainConfig(compile=1)


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="inductor on CPU compiles C++ per graph (32 s for this step on a 2-core CPU): CUDA only")
def test_inductor_step_gives_the_eager_loss_and_gradients_on_cuda():
    torch._dynamo.reset()
    clip = tiny_clip().cuda()
    model = CoOp(clip, NAMES, CoOpConfig(n_ctx=4)).train()
    features, labels = torch.randn(8, 16, device="cuda"), torch.arange(8, device="cuda") % len(NAMES)
    loss, (grad,) = loss_and_grads(model, lambda: model.loss(features, labels))
    compiled = torch.compile(lambda: model.loss(features, labels))
    compiled_loss, (compiled_grad,) = loss_and_grads(model, compiled)
    k, depth = text_depth(clip, backward=True)
    assert_rounding_close(compiled_loss, loss, k, depth)
    assert_rounding_close(compiled_grad, grad, k, depth)
