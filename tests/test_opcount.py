"""Tests of bench/opcount.py, the dispatched-aten-op counter every method's bench reports: exact counts on tiny
computations whose ops are known, forward and backward; the property the POMP bench relies on to count a
full-size step cheaply (the count of a step does not depend on the text tower's width); and the goal the counts
serve (`python -m bench ops` reports it): at the encoding a CUDA device picks ("auto" resolved as on an
accelerator), every method's training step, as its bench builds it, dispatches no more ops than the official
formulation beside it; and `knobs_of` leaves the CPU's knobs as they were."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is a folder of scripts, not installed
from bench.opcount import OpCounter, count_ops  # noqa: E402
from bench.ops import METHOD_STEPS, knobs_of, narrow_clip, steps_ops  # noqa: E402
from golden import needs_vocab  # noqa: E402
from tinyprompt import prompts  # noqa: E402
from tinyprompt.clip import CLIP  # noqa: E402
from tinyprompt.methods.coop import CoOp, CoOpConfig  # noqa: E402


def test_counts_each_dispatched_op_by_name():
    a, b, c = torch.ones(2, 3), torch.ones(3, 4), torch.ones(4)
    counter = count_ops(lambda: torch.mm(a, b) + c)
    assert counter.counts == {"aten.mm": 1, "aten.add": 1} and counter.total == 2


def test_views_and_in_place_ops_count_too():
    x = torch.zeros(2, 3)
    counter = count_ops(lambda: x.t().reshape(6).add_(1))  # reshape of a transposed tensor copies, then views
    assert counter.counts == {"aten.t": 1, "aten.clone": 1, "aten._unsafe_view": 1, "aten.add_": 1}


def test_counts_the_backward_autograd_runs():
    x = torch.ones(3, requires_grad=True)
    # forward: mul, sum; backward: ones_like (the implicit grad of the scalar), expand (SumBackward), mul
    # (MulBackward: grad * 2), detach (AccumulateGrad keeps a detached first gradient)
    counter = count_ops(lambda: (x * 2).sum().backward())
    assert counter.counts == {"aten.mul": 2, "aten.sum": 1, "aten.ones_like": 1, "aten.expand": 1, "aten.detach": 1}
    assert torch.equal(x.grad, torch.full((3,), 2.0))
    # a second backward accumulates into the existing gradient: add_ instead of detach
    counter = count_ops(lambda: (x * 2).sum().backward())
    assert counter.counts == {"aten.mul": 2, "aten.sum": 1, "aten.ones_like": 1, "aten.expand": 1, "aten.add_": 1}


def test_counts_only_while_active_and_changes_no_result():
    a = torch.arange(6.0).reshape(2, 3)
    with OpCounter() as counter:
        inside = a.softmax(-1)
    outside = a.softmax(-1)  # not counted
    assert counter.counts == {"aten._softmax": 1} and torch.equal(inside, outside)


def _coop_step_ops(width: int) -> int:
    torch.manual_seed(0)
    clip = CLIP(16, 32, 1, 64, 16, 77, 49408, width, width // 16, 2).eval()  # heads of 16 at every width
    model = CoOp(clip, ["cat", "golden retriever", "sea lion"], CoOpConfig(n_ctx=4)).train()
    features, labels = torch.randn(4, 16), torch.tensor([0, 1, 2, 0])
    return count_ops(lambda: model.loss(features, labels).backward()).total


def test_a_steps_count_does_not_depend_on_the_text_width():
    """Why `python -m bench pomp --text-width 64` counts a ViT-B/16 step's ops: the same code path at any width."""
    assert _coop_step_ops(32) == _coop_step_ops(64)


# ----------------------------------------------------------------------------- ours vs official at the CUDA knobs
@needs_vocab
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])  # bf16: the autocast casts of a CUDA step
@pytest.mark.parametrize("method", list(METHOD_STEPS))
def test_ours_dispatches_no_more_ops_than_the_official_step_at_the_cuda_encoding(method, dtype):
    """A GPU step of ~1,000 short prompts is bound by kernel launches: at the knobs "auto" picks on CUDA, tinyprompt's
    step (its bench's `tinyprompt` variant) must not launch more than the official formulation. Counted on CPU, which
    over-counts ours: its fused losses run their plain-PyTorch reference twin here, a few Triton kernels on CUDA.
    ILM-VP's step is the official one: equal counts. Counts are structural
    (test_a_steps_count_does_not_depend_on_the_text_width): a narrow CLIP, at the text depth of every OpenAI CLIP
    (12 blocks), since the official steps that re-encode frozen inputs (TaI-DPT's captions, CoOp's and SHIP's images)
    pay per block; one vision block (only the official steps re-encode images, but ILM-VP's, which are the same)."""
    with knobs_of("accelerator"):  # "auto" resolves as on CUDA
        ops = steps_ops(METHOD_STEPS[method](narrow_clip(), dtype))
    if method == "ilmvp":  # the same step
        assert ops["tinyprompt"] == ops["official"], ops
    else:
        assert ops["tinyprompt"] <= ops["official"], ops


def test_knobs_of_restores_the_cpu_choice():
    cpu = dict(prompts.AUTO_ENCODING["cpu"])
    with knobs_of("accelerator"):
        assert prompts.AUTO_ENCODING["cpu"] == prompts.AUTO_ENCODING["accelerator"] != cpu
    assert prompts.AUTO_ENCODING["cpu"] == cpu
