"""`tinyprompt.metrics.mean_average_precision` against the official evaluator (golden `taidpt/map.pt`)."""
import pytest
import torch
from golden import golden_params, load

from tinyprompt.metrics import mean_average_precision

KINDS = ("global", "local", "merged")


def _cases():
    params = []
    for p in golden_params("taidpt/map.pt"):
        path = p.values[0]
        if path is None:
            params.append(pytest.param(None, None, marks=p.marks, id=p.id))
            continue
        data = load(path)
        params += [pytest.param(path, ("cases", i), id=f"map-case{i}-{c['kind']}") for i, c in enumerate(data["cases"])]
        params.append(pytest.param(path, ("official_artifact",), id="map-official_artifact"))
    return params


@pytest.mark.parametrize("path,where", _cases())
def test_golden_map(path, where):
    data = load(path)
    case = data[where[0]] if len(where) == 1 else data[where[0]][where[1]]
    # random cases have no ties: 1e-6 percent; the real VOC dump has a few tied groups with mixed labels,
    # whose AP depends on the (implementation-defined) numpy argsort order: 1e-3 percent, 1e-4 per class
    artifact = where[0] == "official_artifact"
    tol_map, tol_ap = (1e-3, 1e-4) if artifact else (1e-6, 1e-8)
    merged = case.get("scores_merged", case["merge_rate"] * case["scores_global"] + (1 - case["merge_rate"]) * case["scores_local"])
    for kind, scores in zip(KINDS, (case["scores_global"], case["scores_local"], merged)):
        value, ap = mean_average_precision(scores, case["labels"])
        assert ap.dtype == torch.float64 and ap.shape == (case["labels"].shape[1],)
        assert abs(value - case[f"map_{kind}"]) <= tol_map, (kind, value, case[f"map_{kind}"])
        assert (ap - case[f"ap_{kind}"]).abs().max().item() <= tol_ap
    assert abs(mean_average_precision(merged, case["labels"])[0] - case["evaluator_result_map"]) <= tol_map


@pytest.mark.parametrize("path", golden_params("taidpt/map.pt"))
def test_golden_hand_case(path):
    hand = load(path)["hand_case"]
    value, ap = mean_average_precision(hand["scores"], hand["labels"])
    assert abs(value - hand["map"]) <= 1e-6 and torch.allclose(ap, hand["ap"], atol=1e-8, rtol=0)


def test_conventions():
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.8, 0.7, 0.4], [0.3, 0.8, 0.3], [0.2, 0.2, 0.2]])
    labels = torch.tensor([[1, -1, 0], [-1, 1, 0], [1, 0, 0], [0, 1, 0]])
    value, ap = mean_average_precision(scores, labels)
    # class 0: positives at ranks 1 and 3 -> (1/1 + 2/3) / 2; class 1: ranks 2, 3 -> (1/2 + 2/3) / 2;
    # class 2 has no positive (0 and -1 are negatives): AP 0, and it counts in the mean
    want = torch.tensor([(1 + 2 / 3) / 2, (1 / 2 + 2 / 3) / 2, 0.0], dtype=torch.float64) * (2 / (2 + 1e-8))
    assert torch.allclose(ap, want, atol=1e-12) and abs(value - 100 * want.mean().item()) < 1e-9
    perfect, _ = mean_average_precision(torch.tensor([[2.0], [1.0], [0.0]]), torch.tensor([[1], [1], [0]]))
    assert abs(perfect - 100.0) < 1e-5


def test_ignore_leaves_entries_out():
    scores = torch.tensor([[0.9], [0.8], [0.7], [0.1]])
    labels = torch.tensor([[0], [1], [0], [1]])
    ignore = torch.tensor([[True], [False], [False], [False]])
    # without the ignored top entry the positives sit at ranks 1 and 3
    assert abs(mean_average_precision(scores, labels, ignore)[0] - 100 * (1 + 2 / 3) / 2 * 2 / (2 + 1e-8)) < 1e-9
    full = torch.zeros_like(ignore)
    assert mean_average_precision(scores, labels, full)[0] == mean_average_precision(scores, labels)[0]
    # an ignored positive is not counted either
    assert mean_average_precision(scores, labels, torch.tensor([[False], [False], [False], [True]]))[0] > 49.99


def test_invariant_to_row_order_without_ties():
    torch.manual_seed(0)
    scores, labels = torch.randn(50, 7), (torch.rand(50, 7) < 0.3).long()
    perm = torch.randperm(50)
    a, ap_a = mean_average_precision(scores, labels)
    b, ap_b = mean_average_precision(scores[perm], labels[perm])
    assert abs(a - b) < 1e-12 and torch.allclose(ap_a, ap_b)


def test_shape_errors():
    with pytest.raises(ValueError, match=r"must both be \(N, C\)"):
        mean_average_precision(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"must both be \(N, C\)"):
        mean_average_precision(torch.zeros(3), torch.zeros(3))
