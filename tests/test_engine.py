"""Tests of tinyprompt.engine: CoOp's schedule and SGD rule against the golden files, the other schedules
against PyTorch's schedulers, exact resume, the non-finite guard, atomic checkpoints, logs and DDP (gloo)."""
import json
import math
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddp import torchrun
from engine_worker import DIM, N_CLS, Indexed, Toy, ToyPrompt, ce_loss, ddp_config
from golden import golden_params, load
from tolerance import assert_rounding_close, steps_depth
from tinyprompt.engine import StepInfo, TrainConfig, build_optimizer, lr_at, train

WORKER = Path(__file__).with_name("engine_worker.py")
QUIET = {"log_every": 1000}


# ---------------------------------------------------------------- schedules and the optimiser rule

@pytest.mark.parametrize("path", golden_params("coop/lr_schedule*.json"))
def test_coop_lr_schedule_matches_golden(path):
    table = json.loads(path.read_text())
    for max_epoch, expected in table.items():  # every MAX_EPOCH in the file, every epoch
        config = TrainConfig(max_epoch=int(max_epoch))  # CoOp's defaults: lr 0.002, 1 warm-up epoch at 1e-5
        assert len(expected) == config.max_epoch
        for epoch, want in enumerate(expected):
            assert abs(lr_at(config, epoch) - want) <= 1e-12, (max_epoch, epoch)


@pytest.mark.parametrize("path", golden_params("coop/sgd_steps*.pt"))
def test_sgd_rule_matches_golden(path):
    case = load(path)
    opt = case["optimizer"]
    assert (opt["name"], opt["dampening"], opt["nesterov"]) == ("sgd", 0, False)
    config = TrainConfig(optimizer="sgd", momentum=opt["momentum"], weight_decay=opt["weight_decay"])
    param = torch.nn.Parameter(case["param_init"].clone())
    optimizer = build_optimizer([param], config)
    for t, lr in enumerate(case["lr"]):
        optimizer.param_groups[0]["lr"] = lr
        param.grad = case["grads"][t].clone()
        optimizer.step()
        torch.testing.assert_close(param.detach(), case["params"][t], atol=1e-7, rtol=0, msg=f"step {t}")
        torch.testing.assert_close(optimizer.state[param]["momentum_buffer"], case["momentum_buffer"][t],
                                   atol=1e-7, rtol=0, msg=f"step {t}")


def _torch_schedule(scheduler_factory, epochs, iters, per_iteration):
    """The lr in effect at every (epoch, iteration) when PyTorch's scheduler is stepped as the official code does."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = scheduler_factory(optimizer)
    lrs = {}
    for e in range(epochs):
        for i in range(iters):
            lrs[e, i] = optimizer.param_groups[0]["lr"]
            optimizer.step()
            if per_iteration:
                scheduler.step()
        if not per_iteration:
            scheduler.step()
    return lrs


def test_cosine_iter_equals_torch_cosine_annealing_per_iteration():
    E, iters = 4, 5  # ILM-VP's CLIP recipe: CosineAnnealingLR(T_max = E * iters), stepped every iteration
    config = TrainConfig(max_epoch=E, lr=0.1, scheduler="cosine_iter", warmup_epochs=0)
    expected = _torch_schedule(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=E * iters), E, iters, True)
    for (e, i), want in expected.items():
        assert abs(lr_at(config, e, i, iters) - want) <= 1e-12, (e, i)
        assert lr_at(config, e, i, iters) == pytest.approx(0.05 * (1 + math.cos(math.pi * (e * iters + i) / (E * iters))), abs=1e-15)


@pytest.mark.parametrize("E", [3, 10, 200])
def test_multistep_default_milestones_equal_ilmvp(E):
    config = TrainConfig(max_epoch=E, lr=0.1, scheduler="multistep", warmup_epochs=0)
    milestones = [int(0.5 * E), int(0.72 * E)]  # ILM-VP's CNN recipe
    expected = _torch_schedule(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones, gamma=0.1), E, 1, False)
    for (e, _), want in expected.items():
        assert abs(lr_at(config, e) - want) <= 1e-12, e
        assert lr_at(config, e) == pytest.approx(0.1 * 0.1 ** sum(e >= m for m in milestones), rel=1e-12)


def test_warmup_shifts_multistep_and_constant():
    multistep = TrainConfig(max_epoch=6, lr=1.0, scheduler="multistep", milestones=(2, 4), gamma=0.5, warmup_epochs=1, warmup_lr=0.01)
    assert [lr_at(multistep, e) for e in range(6)] == [0.01, 1.0, 1.0, 0.5, 0.5, 0.25]
    constant = TrainConfig(max_epoch=3, lr=0.3, scheduler="constant", warmup_epochs=2, warmup_lr=0.1)
    assert [lr_at(constant, e, 4, 9) for e in range(3)] == [0.1, 0.1, 0.3]


@pytest.mark.parametrize("field, value", [("optimizer", "rmsprop"), ("scheduler", "linear"), ("precision", "fp8"),
                                          ("max_epoch", 0), ("lr", 0.0), ("betas", (0.9,)), ("milestones", (5, 2)),
                                          ("grad_clip", 0.0), ("warmup_epochs", -1), ("seed", -1)])
def test_config_rejects_bad_values_by_name(field, value):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field} = "):
        TrainConfig(**{field: value})


# ---------------------------------------------------------------- the loop applies the schedule and clipping

class Linear(torch.nn.Module):
    """loss = <ctx, c>: the gradient is the constant c, so every update is -lr * c (momentum and decay off)."""

    def __init__(self):
        super().__init__()
        self.ctx = torch.nn.Parameter(torch.ones(4))

    def forward(self, c):
        return (self.ctx * c).sum()


def linear_loss(model, batch, info):
    return model(batch)


@pytest.mark.parametrize("scheduler", ["cosine", "cosine_iter", "multistep"])
def test_every_step_uses_lr_at(scheduler):
    config = TrainConfig(max_epoch=5, scheduler=scheduler, lr=0.1, momentum=0, weight_decay=0, **QUIET)
    c = torch.tensor([1.0, -2.0, 0.5, 3.0])
    model = Linear()
    result = train(model, linear_loss, lambda epoch: [c, c, c], config)
    total_lr = sum(lr_at(config, e, i, 3) for e in range(5) for i in range(3))
    # 15 updates summed in a different order than total_lr: a 15-term sum, each term rounded once
    assert_rounding_close(model.ctx, 1 - total_lr * c, k=15)
    assert [log["lr"] for log in result["epochs"]] == [lr_at(config, e, 0, 3) for e in range(5)]
    assert [log["steps"] for log in result["epochs"]] == [3] * 5


@pytest.mark.parametrize("clip", [None, 1.0])
def test_grad_clip_bounds_the_update(clip):
    config = TrainConfig(max_epoch=1, lr=0.1, momentum=0, weight_decay=0, warmup_epochs=0, scheduler="constant",
                         grad_clip=clip, **QUIET)
    c = torch.tensor([0.0, 6.0, 8.0, 0.0])  # |c| = 10
    model = Linear()
    train(model, linear_loss, lambda epoch: [c], config)
    step = c / 10 if clip else c
    assert_rounding_close(model.ctx, 1 - 0.1 * step, k=4)  # the clip's norm is a 4-term sum


def test_iterable_without_length_cannot_use_cosine_iter():
    config = TrainConfig(max_epoch=1, scheduler="cosine_iter", **QUIET)
    with pytest.raises(ValueError, match="cosine_iter"):
        train(Linear(), linear_loss, lambda epoch: iter([torch.ones(4)]), config)


def test_bad_inputs_get_clear_errors():
    frozen = Linear().requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad=True"):
        train(frozen, linear_loss, lambda e: [torch.ones(4)], TrainConfig(max_epoch=1))
    with pytest.raises(TypeError, match="map-style Dataset or a callable"):
        train(Linear(), linear_loss, 42, TrainConfig(max_epoch=1))
    with pytest.raises(ValueError, match="needs a CUDA device"):
        train(Linear(), linear_loss, lambda e: [torch.ones(4)], TrainConfig(max_epoch=1, precision="fp16"))
    with pytest.raises(ValueError, match="resume=True needs out_dir"):
        train(Linear(), linear_loss, lambda e: [torch.ones(4)], TrainConfig(max_epoch=1), resume=True)


# ---------------------------------------------------------------- exact resume

def noisy_loss(model, batch, info):
    """Cross-entropy with dropout on the input and a random python-RNG weight: resume must replay both RNGs."""
    x, y, _ = batch
    weight = 1 + 0.1 * random.random() + 0.1 * float(np.random.rand())
    return weight * F.cross_entropy(model(F.dropout(x, 0.3)), y)


class NoisyIndexed(Indexed):
    """Items with a random perturbation drawn in __getitem__ (in the DataLoader workers when there are some)."""

    def __getitem__(self, i):
        x, y, i = super().__getitem__(i)
        return x + 0.05 * torch.randn(x.shape), y, i


class Crash(Exception):
    pass


@pytest.mark.parametrize("model_cls, workers", [(ToyPrompt, 0), (Toy, 2)], ids=["prompt_state_dict", "named_params+workers"])
def test_interrupted_and_resumed_run_is_bit_exact(tmp_path, model_cls, workers):
    config = TrainConfig(max_epoch=4, batch_size=4, num_workers=workers, **QUIET)
    data = NoisyIndexed(14)  # 4 batches per epoch, the last one ragged
    full = model_cls(seed=1)
    expected = train(full, noisy_loss, data, config, out_dir=tmp_path / "full")

    def crash_mid_epoch_2(model, batch, info):
        if (info.epoch, info.step) == (2, 1):
            raise Crash()
        return noisy_loss(model, batch, info)

    with pytest.raises(Crash):
        train(model_cls(seed=1), crash_mid_epoch_2, data, config, out_dir=tmp_path / "cut")
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["epoch"] == 2
    resumed = model_cls(seed=99)  # a different start: everything must come from the checkpoint
    got = train(resumed, noisy_loss, data, config, out_dir=tmp_path / "cut", resume=True)
    assert torch.equal(resumed.ctx, full.ctx)
    assert [e["loss"] for e in got["epochs"]] == [e["loss"] for e in expected["epochs"]]
    final = torch.load(tmp_path / "cut" / "prompt.pt", weights_only=True)
    assert torch.equal(final["ctx"], full.ctx.detach())


def test_resume_refuses_a_changed_config(tmp_path):
    config = TrainConfig(max_epoch=2, batch_size=4, **QUIET)
    train(Toy(), ce_loss, Indexed(8), config, out_dir=tmp_path)
    changed = TrainConfig(max_epoch=3, batch_size=4, **QUIET)
    with pytest.raises(ValueError, match=r"config changed \(max_epoch: 2 -> 3\)"):
        train(Toy(), ce_loss, Indexed(8), changed, out_dir=tmp_path, resume=True)


def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    config = TrainConfig(max_epoch=2, batch_size=4, **QUIET)
    model = Toy(seed=3)
    first = train(model, ce_loss, Indexed(8), config, out_dir=tmp_path)
    again = Toy(seed=4)
    second = train(again, ce_loss, Indexed(8), config, out_dir=tmp_path, resume=True)
    assert torch.equal(again.ctx, model.ctx) and second["epochs"] == first["epochs"]


# ---------------------------------------------------------------- the non-finite guard and atomic checkpoints

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, bad):
    snapshots = {}

    def remember(model, epoch):
        snapshots[epoch] = model.ctx.detach().clone()

    def loss_fn(model, batch, info):
        loss = ce_loss(model, batch, info)
        return loss * bad if (info.epoch, info.step) == (2, 1) else loss

    config = TrainConfig(max_epoch=4, batch_size=4, **QUIET)
    with pytest.raises(FloatingPointError) as error:
        train(ToyPrompt(), loss_fn, Indexed(12), config, out_dir=tmp_path, epoch_start_fn=remember)
    message = str(error.value)
    assert f"non-finite loss {bad}" in message and "epoch 2, step 1" in message and "global step 7" in message
    assert str(tmp_path / "checkpoint.pt") in message
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and torch.equal(state["prompt"]["ctx"], snapshots[2])
    assert len(json.loads((tmp_path / "metrics.json").read_text())["epochs"]) == 2


def test_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    config = TrainConfig(max_epoch=3, batch_size=4, **QUIET)
    real_save, calls = torch.save, []

    def half_then_fail(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"PK\x03\x04 half a checkpoint")
            raise OSError("disk full")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        train(ToyPrompt(), ce_loss, Indexed(8), config, out_dir=tmp_path)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "metrics.json"]  # no temporary left


def test_kill_during_save_leaves_the_previous_checkpoint(tmp_path):
    done = subprocess.run([sys.executable, str(WORKER), "kill", str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == -9, done.stderr
    run = tmp_path / "run"
    partial = list(run.glob(".checkpoint.pt.tmp-*"))
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < (tmp_path / "whole.bin").stat().st_size
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1  # the previous one, intact
    config = TrainConfig(max_epoch=3, batch_size=4, log_every=100)
    resumed, uninterrupted = ToyPrompt(seed=5), ToyPrompt(seed=1)
    train(resumed, ce_loss, Indexed(10), config, out_dir=run, resume=True)
    train(uninterrupted, ce_loss, Indexed(10), config, out_dir=tmp_path / "full")
    assert torch.equal(resumed.ctx, uninterrupted.ctx)


# ---------------------------------------------------------------- logs, evaluation and model selection

def test_progress_line_and_metrics_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # the plain progress line, even where tqdm is installed

    def loss_fn(model, batch, info):
        return ce_loss(model, batch, info), {"half": 0.5}

    config = TrainConfig(max_epoch=2, batch_size=4, log_every=2)
    result = train(Toy(), loss_fn, Indexed(12), config, out_dir=tmp_path)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    pattern = r"epoch (\d)/2 step (\d)/3 loss \d+\.\d{4} lr \d\.\d{3}e-\d\d [\d.]+ it/s eta \d+:\d\d:\d\d"
    assert [re.fullmatch(pattern, line).groups() for line in lines] == [("1", "2"), ("1", "3"), ("2", "2"), ("2", "3")]
    assert lines[-1].endswith("eta 0:00:00")
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["epochs"] == result["epochs"] and record["config"]["log_every"] == 2
    assert [e["half"] for e in record["epochs"]] == [0.5, 0.5]
    assert all(math.isfinite(e["loss"]) and e["steps"] == 3 for e in record["epochs"])


def test_eval_and_best_prompt_selection(tmp_path):
    scores, snapshots = iter([0.2, 0.9, 0.5]), {}

    def eval_fn(model):
        snapshots[len(snapshots)] = model.ctx.detach().clone()
        return {"acc": next(scores), "loss": 1.0}

    config = TrainConfig(max_epoch=5, batch_size=4, eval_every=2, select_metric="acc", **QUIET)
    result = train(ToyPrompt(), ce_loss, Indexed(8), config, out_dir=tmp_path, eval_fn=eval_fn)
    assert [("eval" in e) for e in result["epochs"]] == [False, True, False, True, True]  # every 2nd and the last
    assert result["best"] == {"epoch": 3, "metrics": {"acc": 0.9, "loss": 1.0}}
    assert torch.equal(torch.load(tmp_path / "best.pt", weights_only=True)["ctx"], snapshots[1])
    with pytest.raises(KeyError, match="select_metric 'top1' is not among"):
        train(Toy(), ce_loss, Indexed(8), TrainConfig(max_epoch=1, select_metric="top1"), eval_fn=lambda m: {"acc": 1.0})


def test_step_info_counts_steps_across_epochs():
    seen = []

    def loss_fn(model, batch, info):
        seen.append(info)
        return model(batch)

    train(Linear(), loss_fn, lambda epoch: [torch.ones(4)] * 2, TrainConfig(max_epoch=2, **QUIET))
    assert seen == [StepInfo(e, s, 2 * e + s, 0, 1) for e in range(2) for s in range(2)]


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("device, precision", [("cpu", "bf16"), pytest.param("cuda", "bf16", marks=needs_cuda),
                                               pytest.param("cuda", "fp16", marks=needs_cuda)])  # fmt: skip
def test_autocast_trains_close_to_fp32(tmp_path, device, precision):
    losses, prompts = {}, {}
    for p in ("fp32", precision):
        config = TrainConfig(max_epoch=2, batch_size=4, precision=p, **QUIET)
        model = ToyPrompt()
        result = train(model, ce_loss, Indexed(8), config, out_dir=tmp_path / p, device=device)
        losses[p], prompts[p] = [e["loss"] for e in result["epochs"]], model.ctx.detach().cpu()
        assert model.ctx.dtype == torch.float32  # fp32 master weights under autocast
    assert losses[precision] == pytest.approx(losses["fp32"], rel=2e-2)
    torch.testing.assert_close(prompts[precision], prompts["fp32"], atol=2e-2 * prompts["fp32"].abs().max().item(), rtol=0)
    scaler = torch.load(tmp_path / precision / "checkpoint.pt", weights_only=True)["scaler"]
    if precision == "fp16":  # a GradScaler only with fp16, and its state is checkpointed for --resume
        assert scaler is not None and scaler["scale"] > 0
    else:
        assert scaler is None


# ---------------------------------------------------------------- DDP: 2 gloo processes == 1 process

def test_ddp_two_processes_equal_one_process(tmp_path):
    out = tmp_path / "ddp"
    done = torchrun(lambda folder: [str(WORKER), "ddp", str(folder)], out, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["writes"] > 0 and ranks[1]["writes"] == 0  # rank 0 alone writes
    assert torch.equal(ranks[0]["ctx"], ranks[1]["ctx"])  # both ranks hold the same learned tensor

    seen = []
    single = Toy(seed=1)

    def loss_fn(model, batch, info):
        seen.append(batch[2].tolist())
        return ce_loss(model, batch, info)

    expected = train(single, loss_fn, Indexed(16), ddp_config(1))
    for step, batch in enumerate(seen):  # each step, the two shards together are the one-process batch
        halves = ranks[0]["seen"][step] + ranks[1]["seen"][step]
        assert not set(ranks[0]["seen"][step]) & set(ranks[1]["seen"][step]) and sorted(halves) == sorted(batch)
    # the gradient averaged over ranks sums the batch in another order: 6 steps of a linear head (forward over DIM,
    # softmax over N_CLS, the batch mean), equal up to rounding
    assert_rounding_close(ranks[0]["ctx"], single.ctx.detach(), k=max(DIM, N_CLS, 8), depth=steps_depth(4, 6))
    losses = torch.tensor([e["loss"] for e in expected["epochs"]])
    assert_rounding_close(torch.tensor(ranks[0]["losses"]), losses, k=max(DIM, N_CLS, 8), depth=steps_depth(4, 6))
    state = torch.load(out / "run" / "checkpoint.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
