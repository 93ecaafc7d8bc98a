"""Nothing lost, nothing silent: what `tinyprompt train` and `engine.train` refuse, and the one line they say.

An --out that already holds a run is refused unless --resume or --overwrite claims it, and --overwrite keeps
the old run until the new one has saved its first checkpoint; a resume on other training data, from a damaged
checkpoint or from a file that is not a checkpoint is refused; non-finite flag values fail at parse time; an
--out that cannot be written fails before any work; ILM-VP's frame flags are checked against the input size.
Every user error reaches the console as exactly one line (`tinyprompt: error: ...`), never a traceback.
Runs use the tiny built-in "synthetic" CLIP, or the toy prompt of engine_worker.py.
"""
import argparse
import hashlib
import json
import random
import shutil
import sys
from pathlib import Path

import pytest
import torch

import tinyprompt.commands.recipes.coop
from engine_worker import Indexed, ToyPrompt, ce_loss
from tinyprompt.commands.cli import entry, main
from tinyprompt.engine import PARAMETERS, CheckpointError, DivergedError, TrainConfig, train
from tinyprompt.commands.args import finite_float, non_negative_float, positive_float
from tinyprompt.commands.recipes import FLAGS
from tinyprompt.commands.recipes.pomp import margin_arg
from tinyprompt.commands.train import RECIPES

QUIET = {"log_every": 0}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An image root with train/ val/ test/ folders (3 classes x 4 / 2 / 2 tiny PNGs) and the same as split.json."""
    image = pytest.importorskip("PIL.Image", reason="the image data path needs Pillow")
    root = tmp_path_factory.mktemp("world")
    rng, split = random.Random(0), {"train": [], "val": [], "test": []}
    for label, name in enumerate(["ant", "bee", "cat"]):
        for part, count in (("train", 4), ("val", 2), ("test", 2)):
            for i in range(count):
                rel = f"{part}/{name}/{i}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                image.frombytes("RGB", (16, 16), bytes(rng.randrange(256) for _ in range(16 * 16 * 3))).save(root / rel)
                split[part].append([rel, label, name])
    (root / "split.json").write_text(json.dumps(split))
    return root


def coop(world, out, *extra):
    return ["train", "coop", "--model", "synthetic", "--data", str(world), "--split", str(world / "split.json"),
            "--shots", "2", "--out", str(out), "--epochs", "2", "--n-ctx", "2", "--views", "1", "--batch-size", "4",
            "--device", "cpu", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def finished(world, tmp_path_factory):
    """A finished 2-epoch CoOp run (checkpoint.pt, best.pt, prompt.pt, metrics.json); tests work on copies."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(coop(world, out)) == 0
    return out


@pytest.fixture
def run_copy(finished, tmp_path):
    return Path(shutil.copytree(finished, tmp_path / "run"))


def files(folder) -> dict:
    """{relative path: bytes} of every file under folder: compared to show that nothing was touched."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def console_error(monkeypatch, capsys, argv) -> tuple[str, str]:
    """(the error, stdout) of `tinyprompt ARGV` through the console entry point: exit 2, one stderr line."""
    monkeypatch.setattr(sys, "argv", ["tinyprompt", *argv])
    monkeypatch.delenv("TINYPROMPT_DEBUG", raising=False)
    monkeypatch.setitem(sys.modules, "tqdm", None)  # a progress bar would write to stderr too
    assert entry() == 2
    out, err = capsys.readouterr()
    assert err.startswith("tinyprompt: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.removeprefix("tinyprompt: error: ").removesuffix("\n"), out


# ---------------------------------------------------------------- 1. an --out holding a run

def test_engine_refuses_a_folder_holding_a_run_and_changes_nothing(tmp_path):
    config = TrainConfig(max_epoch=1, batch_size=4, **QUIET)
    train(ToyPrompt(), ce_loss, Indexed(8), config, out_dir=tmp_path)
    before = files(tmp_path)
    with pytest.raises(ValueError) as error:
        train(ToyPrompt(), ce_loss, Indexed(8), config, out_dir=tmp_path)
    assert str(error.value) == (f"out_dir {tmp_path} already holds a run (checkpoint.pt, prompt.pt, metrics.json): use "
                                f"resume=True to continue it, overwrite=True to replace it, or another out_dir")
    assert files(tmp_path) == before


class Crash(Exception):
    pass


def crash_at(epoch, step):
    def loss_fn(model, batch, info):
        if (info.epoch, info.step) == (epoch, step):
            raise Crash()
        return ce_loss(model, batch, info)

    return loss_fn


def test_overwrite_keeps_the_old_run_until_the_new_first_checkpoint(tmp_path):
    old = TrainConfig(max_epoch=2, batch_size=4, select_metric="acc", **QUIET)
    train(ToyPrompt(), ce_loss, Indexed(8), old, out_dir=tmp_path, eval_fn=lambda m: {"acc": 1.0})
    before = files(tmp_path)
    assert sorted(before) == ["best.pt", "checkpoint.pt", "metrics.json", "prompt.pt"]
    new = TrainConfig(max_epoch=3, batch_size=4, **QUIET)
    with pytest.raises(Crash):  # interrupted before its first checkpoint: the old run is whole
        train(ToyPrompt(), crash_at(0, 1), Indexed(8), new, out_dir=tmp_path, overwrite=True)
    assert files(tmp_path) == before
    with pytest.raises(Crash):  # after it: the new checkpoint, and no old prompt beside it
        train(ToyPrompt(), crash_at(1, 0), Indexed(8), new, out_dir=tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "metrics.json"]
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and state["config"]["max_epoch"] == 3
    train(ToyPrompt(), ce_loss, Indexed(8), new, out_dir=tmp_path, resume=True)  # the new run goes on as usual
    assert len(json.loads((tmp_path / "metrics.json").read_text())["epochs"]) == 3


def test_cli_refuses_an_existing_run_before_any_work(world, run_copy, monkeypatch, capsys):
    before = files(run_copy)
    message, out = console_error(monkeypatch, capsys, coop(world, run_copy))
    assert message == (f"--out {run_copy} already holds a run (checkpoint.pt, best.pt, prompt.pt, metrics.json): use "
                       f"--resume to continue it, --overwrite to replace it, or another --out")
    assert out == "" and files(run_copy) == before  # refused before loading anything


def test_cli_overwrite_replaces_the_run(world, run_copy):
    assert main(coop(world, run_copy, "--overwrite", "--epochs", "1")) == 0
    metrics = json.loads((run_copy / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 1 and metrics["config"]["max_epoch"] == 1 and "test" in metrics
    assert torch.load(run_copy / "checkpoint.pt", weights_only=True)["epoch"] == 1


MINIMAL = {  # each recipe's required flags; the data paths do not exist, as --out is checked before any is read
    "coop": ["--model", "synthetic", "--data", "nowhere"],
    "ilmvp": ["--source", "clip:synthetic", "--data", "nowhere"],
    "taidpt": ["--model", "synthetic", "--captions", "nowhere.txt", "--device", "cpu"],
    "pomp": ["--model", "synthetic", "--data", "nowhere"],
    "ship": ["--model", "synthetic", "--data", "nowhere"],
}


EARLIER = [*((method, "metrics.json") for method in RECIPES), ("ship", "generator/checkpoint.pt")]  # ship's stage 1


@pytest.mark.parametrize("method, earlier", EARLIER)
def test_every_recipe_refuses_an_existing_run(tmp_path, method, earlier):
    (tmp_path / earlier).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / earlier).write_text("{}")
    with pytest.raises(ValueError) as error:
        main(["train", method, *MINIMAL[method], "--out", str(tmp_path)])
    assert str(error.value) == (f"--out {tmp_path} already holds a run ({earlier}): use --resume to continue it, "
                                f"--overwrite to replace it, or another --out")
    with pytest.raises(ValueError) as error:
        main(["train", method, *MINIMAL[method], "--out", str(tmp_path), "--resume", "--overwrite"])
    assert str(error.value) == "--resume continues the run in --out and --overwrite replaces it: use one, not both"
    assert (tmp_path / earlier).read_text() == "{}"


# ---------------------------------------------------------------- 5. an --out that cannot be written

def test_out_that_cannot_be_written_fails_before_training(world, tmp_path, monkeypatch, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    message, out = console_error(monkeypatch, capsys, coop(world, a_file))
    assert message == (f"--out {a_file} cannot hold the run's files (it is a file): pass a folder you can write to "
                       f"as --out")
    assert out == ""  # before loading anything
    message, out = console_error(monkeypatch, capsys, coop(world, a_file / "run"))
    assert message == (f"--out {a_file / 'run'} cannot hold the run's files (Not a directory): pass a folder you can "
                       f"write to as --out")
    assert out == "" and a_file.read_text() == "keep me"
    with pytest.raises(ValueError) as error:  # the library refuses it too, before the first epoch
        train(ToyPrompt(), ce_loss, Indexed(8), TrainConfig(max_epoch=1, **QUIET), out_dir=a_file)
    assert str(error.value) == (f"out_dir {a_file} cannot hold the run's files (it is a file): pass a folder you can "
                                f"write to as out_dir")


# ---------------------------------------------------------------- 2. a resume on other data

def test_engine_resume_refuses_other_data(tmp_path):
    config = TrainConfig(max_epoch=1, batch_size=4, **QUIET)
    eight = {"classnames": [f"class {i}" for i in range(8)], "train_items": [[f"{i}.png", i] for i in range(8)],
             "shots": 1}
    train(ToyPrompt(), ce_loss, Indexed(8), config, out_dir=tmp_path, data_fingerprint=eight)
    stored = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["data"]
    canonical = json.dumps(eight["classnames"], sort_keys=True, separators=(",", ":")).encode()
    assert stored["classnames"] == [hashlib.sha256(canonical).hexdigest(), "8 entries"]
    train(ToyPrompt(), ce_loss, Indexed(8), config, out_dir=tmp_path, resume=True, data_fingerprint=eight)  # same data
    before = files(tmp_path)
    sixty_four = {**eight, "classnames": [f"class {i}" for i in range(64)],
                  "train_items": [[f"{i}.png", i % 4] for i in range(8)]}  # fmt: skip
    with pytest.raises(ValueError) as error:
        train(ToyPrompt(), ce_loss, Indexed(8), config, out_dir=tmp_path, resume=True, data_fingerprint=sixty_four)
    assert str(error.value) == (
        f"cannot resume from {tmp_path / 'checkpoint.pt'}: the training data changed (classnames: 8 entries -> 64 "
        f"entries, train_items: 8 entries -> 8 entries (different ones)), which would change the result. Resume with "
        f"the checkpoint's data, or train into a new out_dir")
    assert files(tmp_path) == before


def test_cli_resume_refuses_other_data(world, run_copy, monkeypatch, capsys):
    before = files(run_copy)
    message, _ = console_error(monkeypatch, capsys, coop(world, run_copy, "--resume", "--shots", "1"))
    assert message == (
        f"cannot resume from {run_copy / 'checkpoint.pt'}: the training data changed (train_items: 6 entries -> 3 "
        f"entries, val_items: 6 entries -> 3 entries, shots: 2 -> 1), which would change the result. Resume with the "
        f"checkpoint's data, or train into a new --out")
    assert files(run_copy) == before


# ---------------------------------------------------------------- 3. damaged and foreign checkpoints

def test_cli_resume_from_a_truncated_checkpoint(world, run_copy, monkeypatch, capsys):
    checkpoint = run_copy / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])  # a copy cut short
    message, _ = console_error(monkeypatch, capsys, coop(world, run_copy, "--resume"))
    assert message == (f"{checkpoint} is damaged or incomplete, so the run cannot resume from it: restore it from a "
                       f"copy, or delete it to start the run over")


class Trap:
    """Unpickling it creates the file `marker`: a checkpoint that holds one must be refused unread."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_cli_resume_from_a_foreign_pickle_is_refused_unloaded(world, run_copy, monkeypatch, capsys):
    checkpoint, marker = run_copy / "checkpoint.pt", run_copy.parent / "unpickled"
    torch.save({"epoch": 1, "payload": Trap(marker)}, checkpoint)
    message, _ = console_error(monkeypatch, capsys, coop(world, run_copy, "--resume"))
    assert message == (f"{checkpoint} is not a tinyprompt checkpoint, so it was not loaded (for safety: unpickling an "
                       f"unknown file can run code): move it away, or use another --out")
    assert "weights_only" not in message and not marker.exists()


@pytest.mark.parametrize("content", ["empty", "prompt"])
def test_engine_resume_from_a_file_that_is_not_a_checkpoint(tmp_path, content):
    config = TrainConfig(max_epoch=1, batch_size=4, **QUIET)
    checkpoint = tmp_path / "checkpoint.pt"
    if content == "empty":
        checkpoint.write_bytes(b"")
        expected = (f"{checkpoint} is damaged or incomplete, so the run cannot resume from it: restore it from a copy, "
                    f"or delete it to start the run over")
    else:  # a prompt.pt copied over it: plain tensors, but no training state
        torch.save(ToyPrompt().prompt_state_dict(), checkpoint)
        expected = (f"{checkpoint} is not a tinyprompt checkpoint, so it was not loaded (for safety: unpickling an "
                    f"unknown file can run code): move it away, or use another out_dir")
    with pytest.raises(CheckpointError) as error:
        train(ToyPrompt(), ce_loss, Indexed(8), config, out_dir=tmp_path, resume=True)
    assert str(error.value) == expected and isinstance(error.value, ValueError)


# ---------------------------------------------------------------- 4. non-finite values and the advice on divergence

def _recipe_actions():
    for method, module in RECIPES.items():
        parser = argparse.ArgumentParser()
        module.add_args(parser)
        yield from ((method, action) for action in parser._actions if action.option_strings)


def test_every_float_flag_rejects_inf_and_nan():
    number_types = (finite_float, positive_float, non_negative_float, margin_arg)
    checked = []
    for method, action in _recipe_actions():
        assert action.type is not float, f"{method} {action.option_strings[0]} takes inf and nan: use finite_float"
        if action.type in number_types:
            for text in ("inf", "-inf", "nan", "NaN"):
                with pytest.raises(argparse.ArgumentTypeError):
                    action.type(text)
            checked.append(f"{method} {action.option_strings[0]}")
    some = {"coop --lr", "ilmvp --mean", "ilmvp --std", "pomp --margin", "ship --vae-lr", "taidpt --val-fraction"}
    assert some <= set(checked)
    assert finite_float("-0.5") == -0.5 and margin_arg("-1.5") == -1.5 and margin_arg("paper") == "paper"


@pytest.mark.parametrize("field", ["lr", "momentum", "weight_decay", "warmup_lr", "eps", "gamma"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_train_config_refuses_non_finite_values(field, value):
    with pytest.raises(ValueError) as error:  # the library's embedders get the same protection as the flags
        TrainConfig(**{field: value})
    assert str(error.value) == f"TrainConfig.{field} = {value} is not allowed: use a finite number"


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_cli_non_finite_lr_fails_at_parse_time(world, tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exit_:
        main(coop(world, tmp_path / "run", "--lr", value))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"tinyprompt train coop: error: argument --lr: must be a finite number > 0, got '{value}'")
    assert not (tmp_path / "run").exists()


def nan_loss(model, batch, info):
    return sum(p.sum() for p in model.parameters() if p.requires_grad) * float("nan")


def test_divergence_advice_names_only_options_the_caller_has():
    config = TrainConfig(max_epoch=1, batch_size=4, **QUIET)
    for flags, advice in ((None, "Lower lr, set grad_clip, or use precision='fp32'."),
                          (PARAMETERS, "Lower lr, set grad_clip, or use precision='fp32'."),
                          (FLAGS, "Lower --lr, or use --precision fp32.")):  # fmt: skip
        with pytest.raises(DivergedError) as error:
            train(ToyPrompt(), nan_loss, Indexed(8), config, flags=flags)
        assert str(error.value).endswith("No checkpoint was written. " + advice)
        assert isinstance(error.value, FloatingPointError) and isinstance(error.value, ValueError)


def test_cli_divergence_is_one_line(world, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tinyprompt.commands.recipes.coop, "_loss_fn", lambda reencode: lambda m, b, i: nan_loss(m, b, i))
    message, _ = console_error(monkeypatch, capsys, coop(world, tmp_path / "run"))
    assert message == ("non-finite loss nan at epoch 0, step 0 (0-based; global step 0; this rank's loss nan). "
                       "Training stopped before this update; No checkpoint was written. Lower --lr, or use --precision "
                       "fp32.")
    assert "grad_clip" not in message


# ---------------------------------------------------------------- 6. ILM-VP's frame flags

def test_ilmvp_pad_that_does_not_fit_the_clip_input(world, tmp_path):
    with pytest.raises(ValueError) as error:  # the synthetic CLIP takes 32x32 inputs; --pad defaults to 30
        main(["train", "ilmvp", "--source", "clip:synthetic", "--data", str(world), "--out", str(tmp_path / "run"),
              "--image-size", "16", "--device", "cpu"])  # fmt: skip
    assert str(error.value) == ("--pad 30 does not fit the 32x32 input of clip:synthetic: a frame of 2 x --pad must be "
                                "<= 32, so use --pad 1 to 16 (--image-size 16 applies to CNN sources only)")


def test_ilmvp_image_size_larger_than_the_cnn_input(world, tmp_path):
    with pytest.raises(ValueError) as error:  # checked before the source is even looked for
        main(["train", "ilmvp", "--source", str(tmp_path / "missing.pt"), "--data", str(world), "--out",
              str(tmp_path / "run"), "--image-size", "64", "--input-size", "32", "--device", "cpu"])  # fmt: skip
    assert str(error.value) == ("--image-size 64 is larger than the source input (--input-size 32): use --image-size 1 "
                                "to 32, or a larger --input-size if the source takes one")
