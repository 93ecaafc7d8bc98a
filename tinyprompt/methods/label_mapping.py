"""Label mapping for visual prompting: which source class stands for each target class.

From "Understanding and Improving Visual Prompting: A Label-Mapping Perspective" (Chen et al., CVPR 2023,
arXiv 2211.11635). A frozen classifier with S source classes is reused for a task with T <= S target
classes by reading its logits at T chosen source columns, `logits[:, mapping]`. Three ways to choose:
- RLM: a random one-to-one mapping (seeded);
- FLM: once, from the frequency matrix of top-1 source predictions with the initial prompt;
- ILM: the same as FLM, recomputed before every epoch with the current prompt.

The frequency-based mapping is the official greedy one (not Hungarian): repeatedly take the largest entry
of the S x T count matrix (ties: first in row-major order), map its target to its source, and strike out
that row and column. `greedy_label_mapping` gives exactly that result without T passes over the matrix.
"""
import warnings

import torch

__all__ = ["frequency_matrix", "greedy_label_mapping", "official_greedy_mapping", "random_label_mapping"]

_BLOCK = 8192  # candidates per block of the greedy's rounds (fact 4); any size gives the same result


def frequency_matrix(predictions, labels, n_source: int, n_target: int, target_names=None):
    """Counts `freq[s, t] = #{n : predictions[n] = s and labels[n] = t}` as a LongTensor [S, T].

    `predictions` are top-1 source indices [N], or source logits [N, S] (then the first maximal index
    wins, as torch's argmax). T is explicit: the official code takes T = len(unique(labels)), which
    shifts the columns when a class is absent; here an absent class keeps its own (zero) column and a
    warning names it.
    """
    if predictions.dim() == 2:
        if predictions.shape[1] != n_source:
            raise ValueError(f"logits have {predictions.shape[1]} source classes, expected n_source={n_source}")
        predictions = predictions.argmax(dim=1)
    predictions, labels = predictions.reshape(-1).long(), labels.reshape(-1).long()
    if predictions.shape != labels.shape:
        raise ValueError(f"{predictions.numel()} predictions but {labels.numel()} labels")
    if predictions.numel() and not (0 <= int(predictions.min()) and int(predictions.max()) < n_source):
        raise ValueError(f"source predictions must lie in [0, {n_source}); got {predictions.min()}..{predictions.max()}")
    if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < n_target):
        raise ValueError(f"target labels must lie in [0, {n_target}); got {labels.min()}..{labels.max()}")
    freq = torch.bincount(predictions * n_target + labels, minlength=n_source * n_target)
    freq = freq.view(n_source, n_target)  # (S, T)
    missing = (freq.sum(0) == 0).nonzero().flatten().tolist()
    if missing:
        names = [target_names[t] for t in missing] if target_names is not None else missing
        warnings.warn(
            f"target class(es) {names} have no samples in the label-mapping data, so their source class is "
            f"chosen without evidence (left-over zeros); add samples of these classes to the training data",
            stacklevel=2,
        )
    return freq


def greedy_label_mapping(freq: torch.Tensor) -> torch.Tensor:
    """The official greedy one-to-one mapping of a frequency matrix [S, T] (T <= S) -> LongTensor [T].

    Semantics (official, one source per target): T times, take the largest entry of the matrix among
    rows and columns not yet used, ties to the first in row-major order (smallest s, then t); set
    mapping[t] = s. `freq` is never modified (the official code overwrites it in place).

    Exact fast formulation. Processing the cells in that global order and accepting a cell when its
    row and column are both free gives the same picks. Four facts make it cheap:
    1. A cell that comes first (in the global order) among the free cells of both its row and its column
       is accepted: nothing before it can block it. So each round accepts all such cells at once, then
       drops the cells in their rows and columns; the rest is the same problem on a smaller matrix.
    2. Once no positive cell is free, every free cell is 0, and the greedy fills the free columns in
       increasing t with the free rows in increasing s. So only the positive cells go through step 1.
    3. Column t is filled while fewer than T rows are used, so only the first T cells of each column
       (by value, then row) can ever be taken there; on dense matrices the others are dropped first.
    4. The decisions on a prefix of the global order depend only on that prefix, so the candidates go
       through fact 1 in blocks, each round costing O(block), and the work stops once all T are taken.
    """
    if freq.dim() != 2:
        raise ValueError(f"freq must be a matrix [S, T], got shape {tuple(freq.shape)}")
    n_source, n_target = freq.shape
    if n_target > n_source:
        raise ValueError(f"a one-to-one mapping needs T <= S; got S={n_source} source, T={n_target} target classes")
    if freq.is_floating_point() or freq.is_complex():
        raise ValueError(f"freq must hold integer counts, got dtype {freq.dtype}")
    freq = freq.detach()
    if freq.numel() and int(freq.min()) < 0:
        raise ValueError(f"freq must hold counts >= 0, got a minimum of {int(freq.min())}")
    if int(torch.count_nonzero(freq)) > n_target * n_target:  # dense: only the first T cells per column (fact 3)
        rows, cols = _first_cells_per_column(freq, n_target)
    else:
        rows, cols = freq.nonzero(as_tuple=True)  # (P,), (P,) in row-major order: the tie order
    order = torch.sort(freq[rows, cols], descending=True, stable=True).indices  # by value; ties stay row-major
    rows, cols = rows[order], cols[order]  # the positive candidates in the greedy's global order

    mapping = torch.full((n_target,), -1, dtype=torch.long, device=freq.device)
    row_used = torch.zeros(n_source, dtype=torch.bool, device=freq.device)
    # index_select / masked_select rather than t[index] / t[mask]: same values, no thread-pool round trip
    for start in range(0, rows.numel(), _BLOCK):  # fact 4: blocks in order, until every column is taken
        r, c = rows[start:start + _BLOCK], cols[start:start + _BLOCK]
        rank = torch.arange(start, start + r.numel(), device=freq.device)  # position in the global order
        r, c, rank = _where(_free(r, c, row_used, mapping), r, c, rank)
        while r.numel():  # fact 1: every round accepts at least the first free cell
            sentinel = int(rank[-1]) + 1  # larger than every rank
            first_in_row = torch.full((n_source,), sentinel, device=freq.device).scatter_reduce_(0, r, rank, "amin")
            first_in_col = torch.full((n_target,), sentinel, device=freq.device).scatter_reduce_(0, c, rank, "amin")
            take = first_in_row.index_select(0, r).eq(rank) & first_in_col.index_select(0, c).eq(rank)
            taken_rows, taken_cols = _where(take, r, c)
            mapping.index_copy_(0, taken_cols, taken_rows)
            row_used.index_fill_(0, taken_rows, True)
            r, c, rank = _where(_free(r, c, row_used, mapping), r, c, rank)
        if bool((mapping >= 0).all()):
            break
    free_cols = (mapping < 0).nonzero().flatten()  # fact 2: left-over zeros, in increasing t and s
    mapping[free_cols] = (~row_used).nonzero().flatten()[: free_cols.numel()]
    return mapping


def _free(rows, cols, row_used, mapping):
    """Which candidate cells still have a free row and a free column."""
    return ~row_used.index_select(0, rows) & mapping.index_select(0, cols).lt(0)


def _where(mask, *tensors):
    return tuple(t.masked_select(mask) for t in tensors)


def _first_cells_per_column(freq: torch.Tensor, k: int):
    """(rows, cols) of the positive cells among the first k of every column, in row-major order.

    Order within a column: larger value first, then smaller row; key = value * S + (S - 1 - s) is
    unique per column, so top-k on it is exact.
    """
    n_source = freq.shape[0]
    reverse_row = torch.arange(n_source - 1, -1, -1, device=freq.device).unsqueeze(1)  # (S, 1)
    key = freq.long() * n_source + reverse_row  # (S, T)
    kth = torch.topk(key, k, dim=0, sorted=False).values.min(dim=0).values  # (T,) k-th largest key per column
    return ((key >= kth) & (freq > 0)).nonzero(as_tuple=True)


def official_greedy_mapping(freq: torch.Tensor) -> torch.Tensor:
    """The official greedy, plainly (the reference twin of `greedy_label_mapping`): T times take the first
    maximal cell of a working copy of freq [S, T], map its target to its source, strike its row and column."""
    work = freq.clone()  # the official code overwrites its input; the twin pays one copy instead
    n_target = freq.shape[1]
    mapping = torch.empty(n_target, dtype=torch.long)
    flat = work.view(-1)
    for _ in range(n_target):
        s, t = divmod(int(flat.argmax()), n_target)
        mapping[t] = s
        work[s, :] = -1
        work[:, t] = -1
    return mapping


def random_label_mapping(n_source: int, n_target: int, seed: int = 0) -> torch.Tensor:
    """RLM: `randperm(S)[:T]` from a generator seeded with `seed` (the official RLM uses the global RNG)."""
    if n_target > n_source:
        raise ValueError(f"a one-to-one mapping needs T <= S; got S={n_source}, T={n_target}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n_source, generator=generator)[:n_target]
