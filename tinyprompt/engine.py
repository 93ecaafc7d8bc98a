"""The plain training loop every method shares: optimiser, LR schedule, AMP, checkpoint/resume, DDP, logs.

One readable function, `train`, stands in for the Dassl trainer of the official CoOp code
("Learning to Prompt for Vision-Language Models", arXiv 2109.01134) and for the hand-written loops of
ILM-VP (arXiv 2211.11635), SHIP (arXiv 2307.07397) and POMP (arXiv 2304.04704). A method supplies an
`nn.Module` whose only trainable tensors are its prompts, and a `loss_fn(model, batch, info)`.

The learning rate is a closed-form function of (epoch, iteration), `lr_at`, written into the optimiser
before every step, so a resumed run needs no scheduler object and continues exactly:
- "cosine" (Dassl, CoOp): `warmup_epochs` at the constant `warmup_lr`, then
  lr(e) = lr/2 · (1 + cos(π (e - W) / max_epoch)), stepped per epoch. The cosine restarts after the
  warm-up and runs over max_epoch (not max_epoch - W) epochs, so it never reaches 0 (Dassl's quirk).
- "cosine_iter" (ILM-VP's CLIP recipe): `CosineAnnealingLR(T_max = max_epoch · iters)` stepped per iteration.
- "multistep" (ILM-VP's CNN recipe): lr · gamma^(number of milestones <= e), stepped per epoch.
- "constant".
Any warm-up comes first and shifts the schedule after it, like Dassl's warm-up wrapper.

An out_dir holds one run. train() refuses a folder that already holds one (any of RUN_FILES) unless
`resume` continues it or `overwrite` replaces it, and it refuses, before any training, a folder it cannot
write. A resume also refuses a changed config or changed training data (`data_fingerprint`), naming what
changed, and a checkpoint that is damaged or is not a tinyprompt checkpoint (never unpickled unsafely).

`config.compile` wraps loss_fn in torch.compile (its backward is compiled with it); dynamo runs the parts it
cannot trace (host-side sampling, data-dependent shapes) eagerly, between graphs.

Multi-process training is `torchrun` + `torch.distributed`: each rank draws its shard of every epoch's
shuffle (DistributedSampler, seeded by (seed, epoch)), and the gradients of the learned tensors are
averaged across ranks after every backward (with mean-reduced losses over equal shards this equals one
process over the whole batch). Only rank 0 writes files and prints.
"""
import hashlib
import json
import math
import os
import pickle
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from tinyprompt.io import atomic_save, atomic_write, writable_dir

__all__ = ["TrainConfig", "StepInfo", "lr_at", "build_optimizer", "train", "check_out_dir", "distributed_info",
           "is_main_process", "CheckpointError", "DivergedError", "RUN_FILES", "PARAMETERS"]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("cosine", "cosine_iter", "multistep", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# config fields that cannot change the learned tensors, so a resumed run may change them (num_workers can:
# a random transform draws from the workers' RNGs instead of the main one)
_RESUME_FREE = ("log_every",)
RUN_FILES = ("checkpoint.pt", "best.pt", "prompt.pt", "metrics.json")  # what train() writes into out_dir
# what a checkpoint.pt written by train() holds: anything else is not one
_CHECKPOINT_KEYS = {"epoch", "global_step", "world_size", "config", "prompt", "optimizer", "scaler", "rng", "history",
                    "best"}
# how messages name the options a user can change, as the advice spells them: train()'s own parameters and
# TrainConfig fields. A command passes its flags instead (`flags=`); an option it lacks is left out of the advice.
PARAMETERS = {"out_dir": "out_dir", "resume": "resume=True", "overwrite": "overwrite=True", "lr": "lr",
              "grad_clip": "grad_clip", "precision": "precision='fp32'"}


class CheckpointError(ValueError):
    """out_dir/checkpoint.pt cannot be resumed from: it is damaged, or it is not a tinyprompt checkpoint."""


class DivergedError(FloatingPointError, ValueError):
    """The loss or a learned tensor became non-finite (a ValueError too: a command reports it in one line)."""


@dataclass
class TrainConfig:
    max_epoch: int = 50  # epochs of the whole run; the cosine schedules depend on it
    batch_size: int = 32  # per process (DDP: the global batch is batch_size · world_size)
    optimizer: str = "sgd"  # "sgd" | "adam" | "adamw"
    lr: float = 0.002  # base learning rate (CoOp)
    momentum: float = 0.9  # sgd (dampening 0, no Nesterov, as Dassl builds it)
    weight_decay: float = 5e-4  # L2 on the learned tensors (decoupled for adamw)
    betas: tuple = (0.9, 0.999)  # adam/adamw
    eps: float = 1e-8  # adam/adamw (SHIP's ImageNet fine-tune uses 1e-4)
    scheduler: str = "cosine"  # one of SCHEDULERS, see the module docstring
    warmup_epochs: int = 1  # constant warm-up epochs at warmup_lr (CoOp: 1 at 1e-5); 0 = none
    warmup_lr: float = 1e-5  # CoOp's WARMUP_CONS_LR
    milestones: tuple = ()  # multistep epochs (after warm-up); () = ILM-VP's (int(0.5·E), int(0.72·E))
    gamma: float = 0.1  # multistep factor
    grad_clip: float | None = None  # max global grad norm of the learned tensors; None = no clipping
    precision: str = "auto"  # "auto" = fp32 on CPU, bf16 autocast on CUDA; "fp32" | "bf16" | "fp16" (GradScaler)
    seed: int = 1  # seeds the RNGs (plus the rank) and every epoch's shuffle
    num_workers: int = 0  # DataLoader worker processes
    log_every: int = 20  # steps between progress lines; 0 = no progress lines (eval lines still print)
    eval_every: int = 1  # epochs between eval_fn calls (the last epoch is always evaluated)
    select_metric: str | None = None  # key of eval_fn's dict used to keep the best prompt (higher is better)
    # torch.compile the step's loss computation (its backward follows): True = the default backend (inductor), or a
    # backend's name ("aot_eager"); opt-in, as the first steps pay the compilation (tens of seconds)
    compile: bool | str = False

    def __post_init__(self):
        self.betas, self.milestones = tuple(self.betas), tuple(self.milestones)
        counts = {"max_epoch": 1, "batch_size": 1, "log_every": 0, "eval_every": 1, "warmup_epochs": 0, "num_workers": 0}
        for name, low in counts.items():
            value = getattr(self, name)
            _check(name, value, isinstance(value, int) and value >= low, f"an int >= {low}")
        for name, allowed in (("optimizer", OPTIMIZERS), ("scheduler", SCHEDULERS), ("precision", PRECISIONS)):
            _check(name, getattr(self, name), getattr(self, name) in allowed, f"one of {allowed}")
        for name in ("lr", "momentum", "weight_decay", "warmup_lr", "eps", "gamma"):  # the bounds below pass inf
            _check(name, getattr(self, name), math.isfinite(getattr(self, name)), "a finite number")
        _check("lr", self.lr, self.lr > 0, "> 0")
        for name in ("momentum", "weight_decay", "warmup_lr"):
            _check(name, getattr(self, name), getattr(self, name) >= 0, ">= 0")
        _check("betas", self.betas, len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
               "two values in [0, 1)")
        _check("eps", self.eps, self.eps > 0, "> 0")
        _check("milestones", self.milestones, all(isinstance(m, int) and m > 0 for m in self.milestones)
               and list(self.milestones) == sorted(self.milestones), "increasing ints > 0")
        _check("gamma", self.gamma, self.gamma > 0, "> 0")
        _check("grad_clip", self.grad_clip, self.grad_clip is None or self.grad_clip > 0, "None or > 0")
        _check("seed", self.seed, isinstance(self.seed, int) and self.seed >= 0, "an int >= 0")
        if isinstance(self.compile, str):
            backends = torch._dynamo.list_backends(exclude_tags=())  # imports dynamo: only when a backend is named
            _check("compile", self.compile, self.compile in backends, f"True, False or one of {backends}")
        else:
            _check("compile", self.compile, isinstance(self.compile, bool), "True, False or a backend's name")


def _check(name, value, ok, allowed):
    if not ok:
        raise ValueError(f"TrainConfig.{name} = {value!r} is not allowed: use {allowed}")


@dataclass(frozen=True)
class StepInfo:
    """Where a step is (all 0-based), passed to loss_fn: enough for per-step, per-rank seeding."""
    epoch: int
    step: int  # within the epoch
    global_step: int  # since the start of training (continues across a resume)
    rank: int
    world_size: int


def lr_at(config: TrainConfig, epoch: int, iteration: int = 0, iters_per_epoch: int = 1) -> float:
    """The learning rate during `iteration` of `epoch` (both 0-based): the schedule in closed form."""
    if epoch < config.warmup_epochs:
        return config.warmup_lr
    e, E = epoch - config.warmup_epochs, config.max_epoch  # the schedule after warm-up starts at its own 0
    if config.scheduler == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * e / E))
    if config.scheduler == "cosine_iter":
        t = e * iters_per_epoch + iteration
        return config.lr * 0.5 * (1 + math.cos(math.pi * t / (E * iters_per_epoch)))
    if config.scheduler == "multistep":
        milestones = config.milestones or (int(0.5 * E), int(0.72 * E))
        return config.lr * config.gamma ** sum(e >= m for m in milestones)
    return config.lr


def build_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (Dassl's: momentum, dampening 0, no Nesterov, L2 weight decay), Adam or AdamW over `params`."""
    params = list(params)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    optimizer = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return optimizer(params, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay)


def distributed_info() -> tuple[int, int]:
    """(rank, world_size) of this process: from the process group, else torchrun's environment, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main_process() -> bool:
    return distributed_info()[0] == 0


def train(model, loss_fn, train_data, config: TrainConfig, out_dir=None, resume=False, eval_fn=None,
          epoch_start_fn=None, device="cpu", overwrite=False, data_fingerprint: dict | None = None,
          flags: dict | None = None) -> dict:
    """Train the parameters of `model` that have requires_grad=True; see the module docstring.

    loss_fn(model, batch, info: StepInfo) -> loss, or (loss, {name: float}) for extra logged values.
    train_data: a map-style Dataset (the engine shuffles it per epoch, shards it across ranks and batches
      it; `train_data.set_epoch(epoch)` is called when it exists), or a callable epoch -> iterable of
      batches (it must shard itself across ranks, e.g. with `distributed_info()`).
    eval_fn(model) -> {metric: float}: every eval_every epochs on rank 0 under no_grad; with
      config.select_metric the best prompt is kept atomically in out_dir/best.pt.
    epoch_start_fn(model, epoch): runs before each epoch.
    out_dir: checkpoint.pt (every epoch, atomic), metrics.json, best.pt, prompt.pt (at the end).
    resume: continue from out_dir/checkpoint.pt when it exists (a fresh start otherwise).
    overwrite: replace the run already in out_dir. Each file is replaced atomically when this run writes it;
      the old prompt.pt and best.pt go once this run's first checkpoint is saved, so an interruption before
      then leaves the old run whole. Without resume or overwrite, an out_dir holding a run is refused.
    data_fingerprint: {name: JSON-able value} of what defines the training data (class names, items, shots,
      seed...); the checkpoint keeps a sha256 of each, and a resume on other data is refused, naming the parts.
    flags: how error messages name the options (see PARAMETERS); a command passes its flags.
    The train/eval mode of the model is left to the method (CoOp keeps CLIP's BatchNorm in eval mode).
    Returns {"epochs": [per-epoch logs], "final": last epoch's log, "best": {"epoch", "metrics"} or None}.
    """
    device = torch.device(device)
    own_group = False
    if distributed_info()[1] > 1:  # launched by torchrun: one device per local rank
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            own_group = True
    try:
        result = _train(model, loss_fn, train_data, config, out_dir, resume, eval_fn, epoch_start_fn, device, overwrite,
                        _fingerprint(data_fingerprint), flags or PARAMETERS)
        if own_group:  # no rank tears its gloo/NCCL connections down while a peer still finishes a collective
            dist.barrier()  # (an early teardown once aborted a gloo rank at exit in CI: SIGABRT, "terminate called")
        return result
    finally:
        if own_group:
            dist.destroy_process_group()


def check_out_dir(out_dir, resume=False, overwrite=False, flags=None, stages=("",)) -> None:
    """Refuse, before any training, an out_dir that cannot be written or whose earlier run nobody claimed.

    Creates the folder. An earlier run is any of RUN_FILES in out_dir/<stage> for each of `stages` (a command
    that runs the engine once per stage lists their sub-folders); `resume` continues it, `overwrite` replaces it.
    flags: how the messages name the options, as for train().
    """
    names, out = flags or PARAMETERS, Path(out_dir)
    if resume and overwrite:
        raise ValueError(f"{names['resume']} continues the run in {names['out_dir']} and {names['overwrite']} "
                         f"replaces it: use one, not both")
    try:
        writable_dir(out)
    except OSError as e:
        why = "it is a file" if out.is_file() else e.strerror or str(e)
        raise ValueError(f"{names['out_dir']} {out} cannot hold the run's files ({why}): pass a folder you can "
                         f"write to as {names['out_dir']}") from None
    found = [str(Path(stage, name)) for stage in stages for name in RUN_FILES if (out / stage / name).is_file()]
    if found and not (resume or overwrite):
        raise ValueError(f"{names['out_dir']} {out} already holds a run ({', '.join(found)}): use {names['resume']} "
                         f"to continue it, {names['overwrite']} to replace it, or another {names['out_dir']}")


def _train(model, loss_fn, train_data, config, out_dir, resume, eval_fn, epoch_start_fn, device, overwrite,
           fingerprint, names):
    rank, world = distributed_info()
    main = rank == 0
    model.to(device)
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no parameter with requires_grad=True: "
                         "the method must leave its prompt trainable")
    params = [p for _, p in named]
    optimizer = build_optimizer(params, config)
    amp_dtype = _autocast_dtype(config.precision, device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype is torch.float16 else None
    out = Path(out_dir) if out_dir is not None else None
    checkpoint = out / "checkpoint.pt" if out is not None else None
    if resume and out is None:
        raise ValueError("resume=True needs out_dir: the folder whose checkpoint.pt the run continues from")
    stale = []  # the replaced run's files this run may not rewrite soon: removed once its first checkpoint is saved
    if out is not None:
        check_out_dir(out, resume, overwrite, names)
        if overwrite:
            stale = [out / name for name in ("best.pt", "prompt.pt") if (out / name).is_file()]

    _seed_all(config.seed + rank)  # distinct per rank, so ranks draw different augmentations
    history, best, start, global_step = [], None, 0, 0
    if resume and checkpoint.is_file():
        state = _load_checkpoint(checkpoint, names)
        _check_resumable(state, config, world, fingerprint, checkpoint, names)
        _load_learned(model, named, state["prompt"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None:
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"][rank])
        history, best, start, global_step = state["history"], state["best"], state["epoch"], state["global_step"]
        _say(main, f"resumed from {checkpoint} after epoch {start} of {config.max_epoch}")
    elif resume:
        _say(main, f"resume: no checkpoint at {checkpoint} yet, starting from scratch")
    if world > 1:  # every rank starts from rank 0's tensors, as DDP does at construction
        for p in params:
            dist.broadcast(p.data, src=0)

    if config.compile:  # dynamo traces through loss_fn into the model; where it cannot, it runs that part eagerly
        backend = "inductor" if config.compile is True else config.compile
        loss_fn = torch.compile(loss_fn, backend=backend)
    batches = _epoch_batches(train_data, config, rank, world, device)
    progress = _Progress(config.log_every) if main and config.log_every else None
    for epoch in range(start, config.max_epoch):
        if epoch_start_fn is not None:
            epoch_start_fn(model, epoch)
        data = batches(epoch)
        n_iter = len(data) if hasattr(data, "__len__") else None
        if n_iter is None and config.scheduler == "cosine_iter":
            raise ValueError("scheduler 'cosine_iter' needs the number of batches per epoch: return a list "
                             "(or anything with len()) from the train_data callable")
        if progress is not None and n_iter is not None:
            progress.total = progress.done + n_iter * (config.max_epoch - epoch)
        started, loss_sum, extra_sums, steps = time.perf_counter(), 0.0, {}, 0
        for step, batch in enumerate(data):
            lr = lr_at(config, epoch, step, n_iter or 1)
            for group in optimizer.param_groups:
                group["lr"] = lr
            info = StepInfo(epoch, step, global_step, rank, world)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                result = loss_fn(model, _to_device(batch, device), info)
            loss, extras = result if isinstance(result, tuple) else (result, {})
            optimizer.zero_grad(set_to_none=True)  # after the forward, as CoOp's forward_backward: loss_fn can
            # still read the previous step's gradients
            (scaler.scale(loss) if scaler is not None else loss).backward()
            loss_value = _average_grads_and_loss(params, loss.detach(), world)
            if not math.isfinite(loss_value):
                raise DivergedError(
                    f"non-finite loss {loss_value} at epoch {epoch}, step {step} (0-based; global step {global_step}; "
                    f"this rank's loss {loss.item()}). Training stopped before this update; "
                    + (f"{checkpoint} holds the last good state (after {epoch} completed epochs). "
                       if checkpoint is not None and epoch > 0 else "No checkpoint was written. ")
                    + _divergence_fixes(names)
                )
            if config.grad_clip is not None:
                if scaler is not None:
                    scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            loss_sum += loss_value
            for name, value in extras.items():
                extra_sums[name] = extra_sums.get(name, 0.0) + float(value)
            steps, global_step = steps + 1, global_step + 1
            if progress is not None:
                progress.update(epoch, config.max_epoch, step, n_iter, loss_value, lr)

        log = {"epoch": epoch, "loss": loss_sum / max(steps, 1), "lr": lr_at(config, epoch, 0, n_iter or 1),
               "steps": steps, "time_s": time.perf_counter() - started}
        log.update({name: total / max(steps, 1) for name, total in extra_sums.items()})
        _check_finite(named, epoch, checkpoint, names)
        if eval_fn is not None and main and ((epoch + 1) % config.eval_every == 0 or epoch + 1 == config.max_epoch):
            with torch.no_grad():
                metrics = {name: float(value) for name, value in eval_fn(model).items()}
            log["eval"] = metrics
            scores = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            _say(main, f"epoch {epoch + 1}/{config.max_epoch} eval {scores}")
            if config.select_metric is not None:
                if config.select_metric not in metrics:
                    raise KeyError(f"TrainConfig.select_metric {config.select_metric!r} is not among eval_fn's "
                                   f"metrics {sorted(metrics)}: return it from eval_fn or change select_metric")
                if best is None or metrics[config.select_metric] > best["metrics"][config.select_metric]:
                    best = {"epoch": epoch, "metrics": metrics}
                    if out is not None:
                        atomic_save(_learned_state(model, named), out / "best.pt")
        history.append(log)
        rng = _rng_state()
        if world > 1 and out is not None:  # rank 0 saves every rank's RNG state, so a resume is exact on all
            rng_all = [None] * world
            dist.all_gather_object(rng_all, rng)
        else:
            rng_all = [rng]
        if main and out is not None:
            atomic_save({"epoch": epoch + 1, "global_step": global_step, "world_size": world, "config": asdict(config),
                         "prompt": _learned_state(model, named), "optimizer": optimizer.state_dict(),
                         "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_all,
                         "history": history, "best": best, "data": fingerprint}, checkpoint)
            _write_metrics(out / "metrics.json", config, world, history, best)
            for path in stale:  # a best.pt saved while best is set is this run's own
                if not (path.name == "best.pt" and best is not None):
                    path.unlink(missing_ok=True)
            stale = []
    if progress is not None:
        progress.close()
    if main and out is not None:
        atomic_save(_learned_state(model, named), out / "prompt.pt")
        _write_metrics(out / "metrics.json", config, world, history, best)
    return {"epochs": history, "final": history[-1] if history else {}, "best": best}


def _autocast_dtype(precision, device):
    """The autocast dtype, or None for plain fp32."""
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision 'fp16' (with GradScaler) needs a CUDA device, got {device}: use 'bf16' or 'fp32'")
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _epoch_batches(train_data, config, rank, world, device):
    """epoch -> iterable of batches: a seeded, rank-sharded DataLoader over a Dataset, or the user's callable."""
    if not (hasattr(train_data, "__getitem__") and hasattr(train_data, "__len__")):
        if callable(train_data):
            return train_data
        raise TypeError(f"train_data must be a map-style Dataset or a callable epoch -> batches, "
                        f"got {type(train_data).__name__}")
    # DistributedSampler shuffles with a generator seeded by seed + epoch (the same order on every rank,
    # each taking every world-th index, padded to equal shards); world 1 makes it a seeded shuffle
    sampler = DistributedSampler(train_data, num_replicas=world, rank=rank, shuffle=True, seed=config.seed,
                                 drop_last=False)
    loader = DataLoader(train_data, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers,
                        pin_memory=device.type == "cuda", drop_last=False)

    def batches(epoch):
        sampler.set_epoch(epoch)
        if hasattr(train_data, "set_epoch"):
            train_data.set_epoch(epoch)
        return loader

    return batches


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [_to_device(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)  # namedtuples too
    return batch


def _average_grads_and_loss(params, loss, world) -> float:
    """All-reduce (mean) the learned tensors' gradients together with the loss; returns the mean loss.

    One collective per step. The loss rides along so that every rank sees the same value and the
    non-finite guard stops all ranks at the same step. A learned tensor without a gradient on a rank
    counts as a zero gradient there.
    """
    if world == 1:
        return loss.item()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [loss.float().reshape(1)])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset:offset + g.numel()].view_as(p).to(p.dtype)
        offset += g.numel()
    return flat[-1].item()


def _check_finite(named, epoch, checkpoint, names):
    """Refuse to checkpoint non-finite learned tensors (the previous checkpoint stays the last good one)."""
    for name, p in named:
        if not torch.isfinite(p).all():
            kept = f"{checkpoint} keeps the state after epoch {epoch - 1}" if checkpoint else "nothing was saved"
            raise DivergedError(f"learned tensor {name!r} has non-finite values after epoch {epoch} (0-based); "
                                f"{kept}. " + _divergence_fixes(names))


def _divergence_fixes(names) -> str:
    """The advice for a diverged run, naming only the options the caller has."""
    fixes = [f"{verb} {names[key]}" for verb, key in (("lower", "lr"), ("set", "grad_clip"), ("use", "precision"))
             if key in names]
    text = fixes[-1] if len(fixes) == 1 else ", ".join(fixes[:-1]) + ", or " + fixes[-1]
    return text[0].upper() + text[1:] + "."


def _learned_state(model, named) -> dict:
    """What checkpoints hold: model.prompt_state_dict() when the method has one, else the learned tensors by name."""
    if hasattr(model, "prompt_state_dict"):
        return model.prompt_state_dict()
    return {name: p.detach() for name, p in named}


def _load_learned(model, named, state):
    if hasattr(model, "load_prompt_state_dict"):
        model.load_prompt_state_dict(state)
        return
    with torch.no_grad():
        for name, p in named:
            if name not in state or state[name].shape != p.shape:
                got = tuple(state[name].shape) if name in state else "missing"
                raise ValueError(f"the checkpoint's learned tensor {name!r} is {got}, the model's is {tuple(p.shape)}: "
                                 f"resume with the same model, or start a new out_dir")
            p.copy_(state[name])


def _load_checkpoint(path, names) -> dict:
    """The state in out_dir/checkpoint.pt, or a one-line CheckpointError naming the file and the fix."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # objects beyond tensors and plain data; torch's message advises unsafe loading
        state = None
    except Exception:  # a cut file fails in many ways (RuntimeError, OSError, EOFError), none naming the file
        raise CheckpointError(f"{path} is damaged or incomplete, so the run cannot resume from it: restore it from a "
                              f"copy, or delete it to start the run over") from None
    if not (isinstance(state, dict) and _CHECKPOINT_KEYS <= state.keys()):
        raise CheckpointError(f"{path} is not a tinyprompt checkpoint, so it was not loaded (for safety: unpickling "
                              f"an unknown file can run code): move it away, or use another {names['out_dir']}")
    return state


def _fingerprint(parts) -> dict | None:
    """{name: [sha256 of its canonical JSON, a short description]} of a data_fingerprint, as checkpoints keep it."""
    if parts is None:
        return None
    return {name: [hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest(),
                   f"{len(value)} entries" if isinstance(value, (list, tuple, dict)) else repr(value)]
            for name, value in parts.items()}


def _check_resumable(state, config, world, fingerprint, path, names):
    now, new_out = asdict(config), f"train into a new {names['out_dir']}"
    changed = [k for k in now if k not in _RESUME_FREE and state["config"].get(k) != now[k]]
    if changed:
        diffs = ", ".join(f"{k}: {state['config'].get(k)!r} -> {now[k]!r}" for k in changed)
        raise ValueError(f"cannot resume from {path}: the config changed ({diffs}), which would change the result. "
                         f"Resume with the checkpoint's config, or {new_out}")
    if state["world_size"] != world:
        raise ValueError(f"cannot resume from {path}: it was written by {state['world_size']} processes, this run "
                         f"has {world}. Resume with the same number of processes, or {new_out}")
    stored = state.get("data")  # None: written without a fingerprint (or before fingerprints existed)
    if stored is not None and fingerprint is not None and stored != fingerprint:
        diffs = []
        for k in dict.fromkeys([*fingerprint, *stored]):  # this run's parts first, then any it no longer has
            old, new = stored.get(k, [None, "absent"]), fingerprint.get(k, [None, "absent"])
            if old != new:
                diffs.append(f"{k}: {old[1]} -> {new[1]}" + (" (different ones)" if old[1] == new[1] else ""))
        raise ValueError(f"cannot resume from {path}: the training data changed ({', '.join(diffs)}), which would "
                         f"change the result. Resume with the checkpoint's data, or {new_out}")


def _seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _rng_state() -> dict:
    """Every RNG a step may draw from, in types torch.load(weights_only=True) accepts."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": (name, keys.tolist(), pos, has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state):
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_metrics(path, config, world, history, best):
    record = {"config": asdict(config), "world_size": world, "epochs": history,
              "final": history[-1] if history else {}, "best": best}
    with atomic_write(path, "w") as f:
        json.dump(record, f, indent=1)


def _say(main, message):
    if main:
        print(f"[tinyprompt] {message}", flush=True)


class _Progress:
    """The progress line on rank 0: epoch, step, loss, lr, it/s and ETA (a tqdm bar when tqdm is installed)."""

    def __init__(self, every):
        self.every, self.done, self.total, self.started = every, 0, None, time.perf_counter()
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar = None
        else:
            self.bar = tqdm(unit="it", dynamic_ncols=True)

    def update(self, epoch, max_epoch, step, n_iter, loss, lr):
        self.done += 1
        where = f"epoch {epoch + 1}/{max_epoch} step {step + 1}/{n_iter or '?'} loss {loss:.4f} lr {lr:.3e}"
        if self.bar is not None:  # tqdm shows it/s and the ETA itself
            self.bar.total = self.total
            self.bar.set_postfix_str(where, refresh=False)
            self.bar.update(1)
            return
        if (step + 1) % self.every and step + 1 != n_iter:
            return
        rate = self.done / (time.perf_counter() - self.started)
        eta = "?" if self.total is None else _hms((self.total - self.done) / rate)
        print(f"{where} {rate:.2f} it/s eta {eta}", flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _hms(seconds) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"
