"""tinyprompt.kernels.ranking_loss: reference twin vs float64 pairs (ranking_loss_naive), Triton vs reference,
TaI-DPT golden cases.

The Triton path runs compiled on CUDA when a GPU is present, else under the Triton interpreter on CPU.
"""
import re

import pytest
import torch

from golden import golden_params, load
from tinyprompt.kernels import _backend, ranking, ranking_loss, ranking_loss_naive
from tinyprompt.kernels.ranking import ranking_loss_reference

TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# the interpreter evaluates log(0) = -inf and inf * 0 in branches that tl.where then discards
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
needs_triton = pytest.mark.skipif(not _backend.triton_available(), reason="triton is not installed")
needs_cuda = pytest.mark.skipif(not (torch.cuda.is_available() and _backend.triton_available()),
                                reason="the compiled kernels need a CUDA device")
BACKENDS = ["reference", pytest.param("triton", marks=needs_triton)]


def make_case(n_rows, n_cols, seed, dtype=torch.float32):
    """Scores ~ 1.5 N(0, 1) as in the golden cases; labels in {1, 0, -1}; rows 0/1/2 all pos/all neg/all ignored."""
    g = torch.Generator().manual_seed(seed)
    scores = (1.5 * torch.randn(n_rows, n_cols, generator=g)).to(dtype)
    labels = torch.randint(-1, 2, (n_rows, n_cols), generator=g)
    for row, value in enumerate((1, 0, -1)[:n_rows]):
        labels[row] = value
    return scores, labels


def run(fn, scores, labels, margin=1.0, kind="hinge", reduction="mean", **kw):
    scores = scores.clone().requires_grad_()
    loss = fn(scores, labels, margin, kind, reduction, **kw)
    (loss if loss.dim() == 0 else (loss * torch.linspace(0.5, 1.5, loss.shape[0], device=loss.device)).sum()).backward()
    return loss.detach(), scores.grad


def assert_close(got, want, rtol, what=""):
    """max |got - want| <= rtol * max |want| (the golden README's ranking tolerance)."""
    got, want = got.double().cpu(), want.double().cpu()
    err, ref = (got - want).abs().max().item(), max(want.abs().max().item(), 1e-12)
    assert err <= rtol * ref, f"{what}: max abs error {err:.3g} > {rtol:g} x max|ref| {ref:.3g}"


@pytest.mark.parametrize("kind", ["hinge", "lsep"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reference_matches_float64_pairs(kind, reduction):
    scores, labels = make_case(9, 41, seed=1)
    loss, grad = run(ranking_loss_reference, scores, labels, 0.7, kind, reduction)
    want, want_grad = run(ranking_loss_naive, scores.double(), labels, 0.7, kind, reduction)
    assert_close(loss, want, 1e-6, "loss")
    assert_close(grad, want_grad, 1e-6, "grad")


def _force_tiles(monkeypatch):
    """Long rows on short ones: rows read in 16-wide tiles, positives sorted 16 at a time (several passes
    per row when a row has more); the interpreter always runs this way."""
    for name in ("POSITIVES_PER_CHUNK", "ROW_TILE"):
        monkeypatch.setattr(ranking, name, {"cuda": 16, "interpret": 16})


@needs_triton
@pytest.mark.parametrize("kind", ["hinge", "lsep"])
@pytest.mark.parametrize("n_rows,n_cols,tiles", [(1, 1, False), (5, 3, False), (7, 16, False), (17, 20, False),
                                                 (4, 80, False), (3, 257, False), (3, 61, True)])
def test_triton_matches_reference(n_rows, n_cols, tiles, kind, monkeypatch):
    """Whole rows in one tile with every positive in one sorted chunk (GPU), and in 16-wide tiles and chunks."""
    if tiles:
        _force_tiles(monkeypatch)
    scores, labels = make_case(n_rows, n_cols, seed=n_cols)
    want, want_grad = run(ranking_loss, scores, labels, 1.0, kind, "none", backend="reference")
    got, got_grad = run(ranking_loss, scores.to(TRITON_DEVICE), labels.to(TRITON_DEVICE), 1.0, kind, "none",
                        backend="triton")
    assert_close(got, want, 1e-5, "loss")
    assert_close(got_grad, want_grad, 1e-5, "grad")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_and_strided_inputs(backend, dtype):
    """16-bit scores are read as is (fp32 math); scores and labels may be non-contiguous views."""
    scores, labels = make_case(6, 30, seed=4, dtype=dtype)
    want, want_grad = run(ranking_loss_naive, scores.double(), labels, 1.0, "hinge", "mean")
    dev = TRITON_DEVICE if backend == "triton" else "cpu"
    wide = torch.zeros(6, 60, dtype=dtype, device=dev)
    wide[:, ::2] = scores.to(dev)
    labels_t = labels.to(dev).T.contiguous().T  # column-major
    strided = wide[:, ::2].detach().requires_grad_()
    loss = ranking_loss(strided, labels_t, backend=backend)
    loss.backward()
    assert loss.dtype == torch.float32 and strided.grad.dtype == dtype
    assert_close(loss, want, 1e-6, "loss")
    assert_close(strided.grad, want_grad, 1e-2, "grad")  # dloss/ds = count / B, rounded to 16 bits


def _golden_cases(d):
    return [(f"cases[{i}]", c) for i, c in enumerate(d["cases"])] + [("hand_case", d["hand_case"])]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("path", golden_params("taidpt/ranking_loss.pt"))
def test_golden_taidpt_ranking_loss(path, backend):
    """Official ranking_loss: the training call (scale 1, margin 1) and the function defaults (scale 2)."""
    d = load(path)
    dev = TRITON_DEVICE if backend == "triton" else "cpu"
    for name, case in _golden_cases(d):
        scores, labels = case["scores"].to(dev), case["labels"].to(dev)
        before = scores.clone()
        loss, grad = run(ranking_loss, scores, labels, 1.0, backend=backend)
        assert torch.equal(scores, before), "the input must not be mutated (the official function does)"
        assert abs(loss.item() - case["loss"].item()) <= 1e-5 * max(abs(case["loss"].item()), 1e-6), name
        assert_close(grad, case["grad_scores"], 1e-5, f"{name} grad")
        if backend == "triton":
            continue  # the defaults call is the same kernel on doubled scores; the interpreter is slow
        leaf = scores.clone().requires_grad_()  # the official defaults scale the scores by 2 first
        loss2 = ranking_loss(2.0 * leaf, labels, 1.0, backend=backend)
        loss2.backward()
        want2 = case["loss_function_defaults"].item()
        assert abs(loss2.item() - want2) <= 1e-5 * max(abs(want2), 1e-6), f"{name} defaults"
        assert_close(leaf.grad, case["grad_scores_function_defaults"], 1e-5, f"{name} defaults grad")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("path", golden_params("taidpt/ranking_loss.pt"))
def test_golden_tie_case(path, backend):
    """A pair exactly on the kink gets gradient 1/2 on each side, as the official torch.maximum."""
    tie = load(path)["tie_case"]
    dev = TRITON_DEVICE if backend == "triton" else "cpu"
    loss, grad = run(ranking_loss, tie["scores"].to(dev), tie["labels"].to(dev), 1.0, backend=backend)
    assert loss.item() == tie["loss"].item()
    assert torch.equal(grad.cpu(), tie["grad_scores"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_across_tiles(backend, monkeypatch):
    """Integer scores: many exact kinks, and runs of equal keys that cross the 16-wide scan tiles."""
    _force_tiles(monkeypatch)
    g = torch.Generator().manual_seed(7)
    scores = torch.randint(-3, 4, (4, 70), generator=g).float()
    labels = torch.randint(-1, 2, (4, 70), generator=g)
    want, want_grad = run(ranking_loss_naive, scores.double(), labels, 1.0, "hinge", "none")
    dev = TRITON_DEVICE if backend == "triton" else "cpu"
    got, got_grad = run(ranking_loss, scores.to(dev), labels.to(dev), 1.0, "hinge", "none", backend=backend)
    assert_close(got, want, 1e-6, "loss")
    assert_close(got_grad, want_grad, 1e-6, "grad")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["hinge", "lsep"])
def test_rows_without_pairs_give_zero(backend, kind):
    """All-positive, all-negative and all-ignored rows (and B=1, C=1): loss 0 and gradient 0, never NaN."""
    dev = TRITON_DEVICE if backend == "triton" else "cpu"
    scores = torch.randn(3, 7, device=dev)
    labels = torch.tensor([[1] * 7, [0] * 7, [-1] * 7], device=dev)
    loss, grad = run(ranking_loss, scores, labels, 1.0, kind, "none", backend=backend)
    assert torch.equal(loss.cpu(), torch.zeros(3)) and torch.equal(grad.cpu(), torch.zeros(3, 7))
    one, one_grad = run(ranking_loss, torch.randn(1, 1, device=dev), torch.ones(1, 1, device=dev), 1.0, kind,
                        backend=backend)
    assert one.item() == 0.0 and one_grad.item() == 0.0


@needs_cuda
@pytest.mark.parametrize("kind", ["hinge", "lsep"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n_rows,n_cols", [(6, 21000), (600, 1000)])
def test_cuda_compiled_matches_reference(n_rows, n_cols, dtype, kind):
    """The compiled kernels on the GPU against the reference on the same device: long rows (one sorted chunk
    of ~1000 positives), a row with more positives than a chunk holds, all-positive and all-negative rows,
    16-bit scores with many exact kinks, and more rows than persistent programs."""
    g = torch.Generator().manual_seed(n_cols)
    scores = (1.5 * torch.randn(n_rows, n_cols, generator=g)).to(dtype)
    u = torch.rand(n_rows, n_cols, generator=g)
    labels = torch.where(u < 0.05, 1, torch.where(u < 0.10, -1, 0))
    labels[1, : n_cols // 2] = torch.where(labels[1, : n_cols // 2] == -1, -1, 1)  # ~10000 positives on C=21000
    labels[2], labels[3] = 1, 0
    scores[4] = torch.round(scores[4].float() * 4) / 4  # coarse values: kappa_i == s_j often
    scores, labels = scores.cuda(), labels.cuda()
    want, want_grad = run(ranking_loss, scores, labels, 1.0, kind, "none", backend="reference")
    got, got_grad = run(ranking_loss, scores, labels, 1.0, kind, "none", backend="triton")
    assert got_grad.dtype == dtype
    assert_close(got, want, 1e-5, "loss")
    assert_close(got_grad, want_grad, 1e-5 if dtype == torch.float32 or kind == "hinge" else 1e-2, "grad")


def test_validation_errors():
    scores, labels = torch.randn(2, 3), torch.ones(2, 3)
    cases = [
        (dict(scores=torch.randn(3)), ValueError, "2-D"),
        (dict(scores=scores.double()), TypeError, "float32, float16 or bfloat16"),
        (dict(labels=torch.ones(2, 4)), ValueError, "(2, 3)"),
        (dict(kind="softmax"), ValueError, "kind"),
        (dict(reduction="avg"), ValueError, "reduction"),
        (dict(margin=float("nan")), ValueError, "margin"),
        (dict(backend="gpu"), ValueError, "backend"),
        (dict(labels=torch.ones(2, 3, device="meta")), ValueError, "one device"),
    ]
    for override, error, message in cases:
        kwargs = {**dict(scores=scores, labels=labels), **override}
        with pytest.raises(error, match=re.escape(message)):
            ranking_loss(**kwargs)
