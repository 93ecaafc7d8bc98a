"""A toy prompt model and the two engine runs that need their own process (used by test_engine.py).

`python engine_worker.py ddp OUT`  (under torchrun, 2 ranks): trains the toy on halves of each batch and
    writes each rank's learned tensor, the indices it saw per step and how often it wrote files.
`python engine_worker.py kill OUT`: trains the toy and SIGKILLs itself half-way through writing the second
    checkpoint, as a crash or an out-of-memory kill would.
"""
import os
import signal
import sys

import torch
import torch.nn.functional as F
from torch import nn

from tinyprompt import engine

DIM, N_CLS = 6, 3


class Toy(nn.Module):
    """A frozen linear 'encoder' (the same in every instance) and a learned prompt `ctx` added to its input."""

    def __init__(self, seed=0):
        super().__init__()
        self.head = nn.Linear(DIM, N_CLS)
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            self.head.weight.copy_(torch.randn(N_CLS, DIM, generator=g))
            self.head.bias.copy_(torch.randn(N_CLS, generator=g))
        self.head.requires_grad_(False)
        self.ctx = nn.Parameter(0.1 * torch.randn(DIM, generator=torch.Generator().manual_seed(seed)))

    def forward(self, x):  # (B, DIM) -> (B, N_CLS)
        return self.head(x + self.ctx)


class ToyPrompt(Toy):
    """The same toy with the method protocol: checkpoints hold prompt_state_dict()."""

    def prompt_state_dict(self):
        return {"ctx": self.ctx.detach().clone(), "config": {"dim": DIM}}

    def load_prompt_state_dict(self, state):
        with torch.no_grad():
            self.ctx.copy_(state["ctx"])


class Indexed(torch.utils.data.Dataset):
    """(x, y, index) for n fixed random points."""

    def __init__(self, n):
        g = torch.Generator().manual_seed(123)
        self.x, self.y = torch.randn(n, DIM, generator=g), torch.randint(N_CLS, (n,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i], i


def ce_loss(model, batch, info):
    x, y, _ = batch
    return F.cross_entropy(model(x), y)


def run_ddp(out):
    rank, world = engine.distributed_info()
    writes = {"count": 0}
    original = engine.atomic_save

    def counting_save(obj, path):
        writes["count"] += 1
        original(obj, path)

    engine.atomic_save = counting_save
    seen = []

    def loss_fn(model, batch, info):
        seen.append(batch[2].tolist())
        return ce_loss(model, batch, info)

    model = Toy(seed=1 + rank)  # different starting tensors: the engine must broadcast rank 0's
    result = engine.train(model, loss_fn, Indexed(16), ddp_config(world), out_dir=os.path.join(out, "run"))
    torch.save({"ctx": model.ctx.detach(), "seen": seen, "writes": writes["count"],
                "losses": [e["loss"] for e in result["epochs"]]}, os.path.join(out, f"rank{rank}.pt"))


def ddp_config(world):
    """The same global batch of 8 for any world size (per-rank batch 8 / world)."""
    return engine.TrainConfig(max_epoch=3, batch_size=8 // world, lr=0.5, warmup_epochs=0, log_every=100)


def run_kill(out):
    calls = {"n": 0}
    real_save = torch.save

    def save_then_die(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] < 2:
            return real_save(obj, f, *args, **kwargs)
        path = os.path.join(out, "whole.bin")
        real_save(obj, path)
        with open(path, "rb") as whole:
            data = whole.read()
        f.write(data[: len(data) // 2])  # half the checkpoint is on disk when the process dies
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save_then_die
    config = engine.TrainConfig(max_epoch=3, batch_size=4, log_every=100)
    engine.train(ToyPrompt(seed=1), ce_loss, Indexed(10), config, out_dir=os.path.join(out, "run"))


if __name__ == "__main__":
    mode, out_dir = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    {"ddp": run_ddp, "kill": run_kill}[mode](out_dir)
