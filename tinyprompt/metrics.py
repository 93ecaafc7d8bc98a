"""Evaluation metrics: top-k accuracy (CoOp, arXiv 2109.01134, as Dassl computes it) and the base/new
harmonic mean of the generalisation protocol (CoCoOp, arXiv 2203.05557; used by SHIP, arXiv 2307.07397).
"""
import torch

__all__ = ["accuracy", "topk_correct", "accuracy_of_features", "harmonic_mean", "mean_average_precision"]


def accuracy(logits: torch.Tensor, labels: torch.Tensor, topk=(1,)) -> list[float]:
    """Percent of rows whose label is among the k highest logits, for each k in `topk`.

    logits (N, C), labels (N,). Ties are broken by `torch.topk` (as Dassl's `compute_accuracy`).
    """
    return [100.0 * correct / logits.shape[0] for correct in topk_correct(logits, labels, topk)]


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, topk=(1,)) -> list[int]:
    """Number of rows whose label is among the k highest logits, for each k (sums over batches exactly)."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"accuracy needs logits (N, C) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("accuracy of an empty batch is undefined: pass at least one row")
    if any(not 1 <= k <= logits.shape[1] for k in topk):
        raise ValueError(f"topk {tuple(topk)} must lie in 1..{logits.shape[1]} (the number of classes)")
    top = logits.topk(max(topk), dim=1).indices  # (N, max k), best first
    hit = top == labels[:, None].to(top.device)  # (N, max k), at most one True per row
    return [int(hit[:, :k].any(dim=1).sum()) for k in topk]



@torch.no_grad()
def accuracy_of_features(model, features: torch.Tensor, labels, topk=(1, 5), batch_size: int = 4096) -> dict:
    """{"top1": %, "top5": %} of a prompt model (`text_features()`, `forward_features(x, text)`, e.g. CoOp or
    POMP) on image features (N, E); the text features are computed once."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    text = model.text_features()  # (C, E)
    device = text.device
    topk = tuple(k for k in topk if k <= text.shape[0])
    hits = [0] * len(topk)
    for start in range(0, len(labels), batch_size):
        logits = model.forward_features(features[start : start + batch_size].to(device), text)  # (B, C)
        batch = topk_correct(logits, labels[start : start + batch_size].to(device), topk)
        hits = [h + b for h, b in zip(hits, batch)]
    return {f"top{k}": 100.0 * h / len(labels) for k, h in zip(topk, hits)}

def harmonic_mean(base: float, new: float) -> float:
    """H = 2 · base · new / (base + new); 0 when both are 0 (the limit, instead of a division by zero)."""
    return 0.0 if base + new == 0 else 2 * base * new / (base + new)


def mean_average_precision(scores, labels, ignore=None):
    """(mAP in percent, per-class AP (C,) float64) of multi-label scores, the official convention.

    Dassl's MLClassification evaluator as TaI-DPT (arXiv 2211.12739) reports it: per class, sort the
    scores in descending order; AP = (1 / (n_pos + 1e-8)) * sum over positives at rank r of
    (#positives in the top r) / r. Only label == 1 is positive (VOC's 0 "difficult" and -1 are
    negatives); a class without positives gets AP 0 and still counts in the mean. `ignore` (bool, like
    labels) leaves entries out of the ranking (VOC difficult ignored). Equal scores keep their input
    order (the official numpy argsort()[::-1] order is implementation-defined).
    """
    scores, labels = torch.as_tensor(scores), torch.as_tensor(labels)
    if scores.dim() != 2 or scores.shape != labels.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} must both be (N, C)")
    order = torch.sort(scores.detach().cpu(), dim=0, descending=True, stable=True).indices  # (N, C)
    pos = (labels.cpu() == 1).gather(0, order).double()  # (N, C) positives in rank order
    if ignore is None:
        rank = torch.arange(1, len(scores) + 1, dtype=torch.float64)[:, None]  # (N, 1)
    else:
        kept = (~torch.as_tensor(ignore, dtype=torch.bool).cpu()).gather(0, order).double()
        pos = pos * kept
        rank = kept.cumsum(0).clamp(min=1)  # rank among the kept entries
    precision = pos.cumsum(0) / rank  # (N, C) precision at every cut-off
    ap = (precision * pos).sum(0) / (pos.sum(0) + 1e-8)  # (C,)
    return 100.0 * ap.mean().item(), ap
