"""Dispatched aten ops per step: the CPU proxy every method's bench reports for launch-bound GPU time.

A GPU step made of many small kernels is bound by launching them, not by their arithmetic: its time follows
the number of kernels. Every aten op that reaches the dispatcher is at most one kernel launch on CUDA (views
and metadata ops launch none), so the count of dispatched ops, measured on CPU where no GPU is at hand,
ranks such steps the way a GPU would time them. `OpCounter` is a `TorchDispatchMode`: it sits below
autograd, so it sees the ops a forward runs, the ones autograd's engine runs in backward (activation
checkpointing's recomputation included) and the optimiser's, each as the kernel that executes it
(composite ops arrive already decomposed).

Where the count differs from a GPU's: autocast's casts only appear where autocast runs (CUDA bf16 adds
`_to_copy` ops), and a kernel with a Triton path (`tinyprompt.kernels`) runs its reference twin on CPU,
plain PyTorch ops where CUDA launches a few Triton kernels. `python -m bench ops` (bench/ops.py) counts every
method's step at the encoding "auto" picks on CPU and on CUDA beside the official formulation its bench compares
it with; tests/test_opcount.py holds the CUDA choice to no more ops than the official one.
"""
from collections import Counter

from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["OpCounter", "count_ops"]


class OpCounter(TorchDispatchMode):
    """Counts every aten op dispatched while the mode is active: `counts` by op ("aten.mm"), `total` in all."""

    def __init__(self):
        super().__init__()
        self.counts = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def count_ops(fn) -> OpCounter:
    """The ops of one call of the zero-argument `fn` (a training step: forward, backward and update)."""
    with OpCounter() as counter:
        fn()
    return counter
