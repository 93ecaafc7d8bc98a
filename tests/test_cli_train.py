"""End to end: `tinyprompt train coop` then `tinyprompt eval`, on a tiny image set written here.

The backbone is the tiny golden ViT CLIP saved as a plain state dict in tmp_path (hub.load reads it);
images are random PNGs; the split file is CoOp's format. Also: resume after an interruption ends with
the same prompt bit for bit, two torchrun processes (gloo) give the prompt of one process, `--help`
documents every flag with its default, and bad flag values fail with clear errors.
"""
import json
import random
import re
from pathlib import Path

import pytest
import torch

import tinyprompt.engine
from ddp import torchrun
from golden import GOLDEN, load, needs_vocab
from tolerance import assert_rounding_close, steps_depth, text_depth
from tinyprompt.commands.cli import main
from tinyprompt.clip_checkpoint import build_model

PIL = pytest.importorskip("PIL.Image", reason="the image data path needs Pillow")
CLASSES = ["golden_retriever", "tabby_cat", "boeing 747"]
pytestmark = [
    pytest.mark.skipif(not (GOLDEN / "clip" / "clip_tiny_vit.pt").is_file(), reason=f"no tiny CLIP under {GOLDEN}/clip"),
    needs_vocab,
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(model file, image root, split file): 3 classes x (5 train, 2 val, 3 test) images, plus train/ val/ test/ folders."""
    root = tmp_path_factory.mktemp("data")
    model = root / "tiny_vit.pt"
    torch.save(load(GOLDEN / "clip" / "clip_tiny_vit.pt")["state_dict"], model)
    rng = random.Random(0)
    split = {"train": [], "val": [], "test": []}
    for label, name in enumerate(CLASSES):
        for part, count in (("train", 5), ("val", 2), ("test", 3)):
            for i in range(count):
                rel = f"{part}/{name}/{i}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                pixels = bytes(rng.randrange(256) for _ in range(40 * 36 * 3))
                PIL.frombytes("RGB", (40, 36), pixels).save(root / rel)
                split[part].append([rel, label, name])
    (root / "split.json").write_text(json.dumps(split))
    return model, root, root / "split.json"


def train_args(world, out, *extra):
    model, root, split = world
    return ["train", "coop", "--model", str(model), "--data", str(root), "--split", str(split), "--shots", "4",
            "--seed", "1", "--out", str(out), "--epochs", "2", "--n-ctx", "4", "--views", "2", "--batch-size", "4",
            "--device", "cpu", *extra]  # fmt: skip


def test_train_then_eval(world, tmp_path):
    model, root, split = world
    out = tmp_path / "run"
    assert main(train_args(world, out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
    assert [e["steps"] for e in metrics["epochs"]] == [3, 3]  # 12 few-shot images, batch 4
    assert [e["lr"] for e in metrics["epochs"]] == [1e-5, 0.002]  # warm-up, then the cosine's first epoch
    assert all(0 <= e["eval"]["val_acc"] <= 100 for e in metrics["epochs"])
    prompt = torch.load(out / "prompt.pt", weights_only=True)
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert prompt["method"] == "coop" and prompt["ctx"].shape == (4, 64) and prompt["classnames"] == CLASSES
    assert torch.equal(prompt["ctx"], checkpoint["prompt"]["ctx"])
    assert (out / "best.pt").is_file() and metrics["best"]["metrics"]["val_acc"] == max(e["eval"]["val_acc"] for e in metrics["epochs"])
    # eval of the saved prompt reproduces the recipe's own test accuracy
    result = tmp_path / "eval.json"
    assert main(["eval", "--prompt", str(out / "prompt.pt"), "--model", str(model), "--data", str(root),
                 "--split", str(split), "--output", str(result), "--device", "cpu"]) == 0  # fmt: skip
    evaluated = json.loads(result.read_text())
    assert evaluated["images"] == 9 and evaluated["classes"] == 3
    assert evaluated["top1"] == pytest.approx(metrics["test"]["final"]["top1"])
    assert evaluated["top1"] * 9 / 100 == pytest.approx(round(evaluated["top1"] * 9 / 100))  # whole images
    # transfer to another class list: a folder per class with display names, two of the classes
    other = tmp_path / "other"
    for name in CLASSES[:2]:
        (other / name).mkdir(parents=True)
        for image in sorted((root / "test" / name).iterdir()):
            (other / name / image.name).write_bytes(image.read_bytes())
    assert main(["eval", "--prompt", str(out / "checkpoint.pt"), "--model", str(model), "--data", str(other),
                 "--classes", "dog,cat", "--output", str(result), "--device", "cpu"]) == 0  # fmt: skip
    transferred = json.loads(result.read_text())
    assert transferred["classes"] == 2 and transferred["images"] == 6 and "top5" not in transferred


def test_resume_after_interruption_is_bit_exact(world, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    assert main(train_args(world, straight)) == 0

    interrupted = tmp_path / "interrupted"
    real_save = tinyprompt.engine.atomic_save

    def save_then_stop(obj, path, *args, **kwargs):  # stop right after the first epoch's checkpoint
        real_save(obj, path, *args, **kwargs)
        if Path(path).name == "checkpoint.pt":
            raise KeyboardInterrupt

    monkeypatch.setattr(tinyprompt.engine, "atomic_save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        main(train_args(world, interrupted))
    assert torch.load(interrupted / "checkpoint.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(tinyprompt.engine, "atomic_save", real_save)
    assert main(train_args(world, interrupted, "--resume")) == 0
    a = torch.load(straight / "prompt.pt", weights_only=True)["ctx"]
    b = torch.load(interrupted / "prompt.pt", weights_only=True)["ctx"]
    assert torch.equal(a, b)
    logs = [json.loads((out / "metrics.json").read_text())["epochs"] for out in (straight, interrupted)]
    assert [e["loss"] for e in logs[0]] == [e["loss"] for e in logs[1]]


def test_images_are_normalised_as_the_checkpoint_was_trained(world, tmp_path, monkeypatch):
    """A checkpoint trained on other image statistics (an open_clip tag's "preprocess"; here given to hub.load for the
    file): the cached train views and the val/test features are made with them, never with OpenAI's."""
    from tinyprompt import hub
    from tinyprompt.commands.recipes import coop
    from tinyprompt.transforms import Preprocessing

    own = Preprocessing((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "squash")
    monkeypatch.setattr(coop, "load", lambda *args, **kwargs: hub.load(*args, **kwargs, preprocessing=own))
    transforms = []

    def recording(encoder, items, transform, *args, **kwargs):
        transforms.append(transform)
        return cached_features(encoder, items, transform, *args, **kwargs)

    cached_features = coop.cached_features
    monkeypatch.setattr(coop, "cached_features", recording)
    assert main(train_args(world, tmp_path / "run", "--epochs", "1")) == 0
    assert len(transforms) == 3 and all(t.preprocessing == own for t in transforms)  # train views, val, test
    assert type(transforms[0]).__name__ == "TrainTransform"


def test_base_subsample_is_drawn_as_cocoop_draws_it(world, tmp_path, monkeypatch):
    """CoCoOp's order: the few-shot draw over all classes, then its base half, so the base run trains on the base
    classes' images of the all-class run (the same seed), relabelled from 0."""
    from tinyprompt.commands.recipes import coop

    drawn = {}

    class Drawn(Exception):
        pass

    def encode(encoder, items, transform, *args, **kwargs):  # the train views, then val: record the items, stop
        drawn.setdefault(subset, []).append([(item.path, item.label) for item in items])
        if len(drawn[subset]) == 2:
            raise Drawn
        return torch.zeros(kwargs.get("views", 1), len(items), 16)

    monkeypatch.setattr(coop, "cached_features", encode)
    for subset in ("all", "base"):
        with pytest.raises(Drawn):
            main(train_args(world, tmp_path / subset, "--subsample", subset, "--shots", "1"))
    for part in ("train", "val"):  # one image per class each (val: min(4, shots) of its 2)
        base, every = (drawn[subset][part == "val"] for subset in ("base", "all"))
        assert base == [(path, label) for path, label in every if label < 2], part  # 3 classes: base 0, 1
        assert len(base) == 2, part


def test_reencode_and_folder_layout(world, tmp_path):
    """The official per-step augmentation path, on train/ val/ test/ folders instead of a split file."""
    model, root, _ = world
    out = tmp_path / "reencode"
    args = ["train", "coop", "--model", str(model), "--data", str(root), "--shots", "2", "--out", str(out),
            "--epochs", "1", "--warmup-epochs", "0", "--n-ctx", "2", "--reencode", "--batch-size", "3", "--device", "cpu"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"][0]["steps"] == 2 and metrics["epochs"][0]["lr"] == 0.002
    assert torch.isfinite(torch.tensor(metrics["epochs"][0]["loss"]))
    assert set(metrics["test"]["final"]) == {"top1"}  # 3 classes: no top-5
    start = torch.load(out / "prompt.pt", weights_only=True)["ctx"]
    assert start.shape == (2, 64) and start.abs().max() > 0


def test_torchrun_two_processes_equal_one(world, tmp_path):
    """The recipe under `torchrun` (2 gloo processes, per-rank batch 2) ends where one process with batch 4 does."""
    assert main(train_args(world, tmp_path / "single")) == 0
    done = torchrun(lambda out: ["-m", "tinyprompt", *train_args(world, out, "--batch-size", "2")], tmp_path / "ddp")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("[tinyprompt] test final") == 1  # rank 0 alone evaluates, prints and writes
    single, ddp = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("single", "ddp"))
    assert [e["steps"] for e in ddp["epochs"]] == [3, 3]  # 12 images, global batch 2 x 2 processes
    # the ranks sum the batch in another order: the same 6 SGD steps through the text tower, up to rounding
    k, depth = text_depth(build_model(torch.load(world[0], weights_only=True), "openai"), backward=True)
    losses = (torch.tensor([e["loss"] for e in run["epochs"]]) for run in (ddp, single))
    assert_rounding_close(*losses, k, steps_depth(depth, 6))
    assert ddp["world_size"] == 2 and torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)["world_size"] == 2
    a, b = (torch.load(tmp_path / run / "prompt.pt", weights_only=True)["ctx"] for run in ("single", "ddp"))
    assert_rounding_close(b, a, k, steps_depth(depth, 6))


def _help_blocks(capsys, *command) -> dict:
    """{flag: its help text, whitespace collapsed} from `tinyprompt COMMAND --help`."""
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    blocks, flag = {}, None
    for line in capsys.readouterr().out.splitlines():
        start = re.match(r"  (--[\w-]+)", line)
        if start:
            flag = start[1]
            blocks[flag] = line
        elif flag is not None and line.startswith("   "):
            blocks[flag] += line
        else:
            flag = None
    return {flag: " ".join(text.split()) for flag, text in blocks.items()}


REQUIRED = None  # no default: --help must not show one
HELP_DEFAULTS = {
    ("train", "coop"): {
        "--model": REQUIRED, "--model-config": "None", "--data": "None", "--split": "None", "--dataset": "None",
        "--root": "None", "--shots": "16", "--seed": "1", "--subsample": "all", "--out": REQUIRED, "--n-ctx": "16", "--ctx-init": "''", "--csc": "False", "--init-prompt": "None", "--class-token-position": "end",
        "--loss": "cross_entropy", "--text-chunk": "0", "--checkpoint-text": "False", "--epochs": "None",
        "--batch-size": "32", "--lr": "0.002", "--momentum": "0.9", "--weight-decay": "0.0005",
        "--warmup-epochs": "1", "--warmup-lr": "1e-05", "--precision": "auto", "--views": "10",
        "--reencode": "False", "--eval-every": "1", "--resume": "False", "--overwrite": "False", "--workers": "0",
        "--encode-batch-size": "64", "--device": "auto", "--compile": "False",
    },  # CoOp's official defaults: SGD lr 0.002, momentum 0.9, wd 5e-4, batch 32, 16 ctx, 1 warm-up epoch at 1e-5
    ("eval",): {
        "--prompt": REQUIRED, "--model": REQUIRED, "--model-config": "None", "--data": "None", "--split": "None", "--dataset": "None",
        "--root": "None", "--subset": "test",
        "--classes": "None", "--batch-size": "64", "--workers": "0", "--text-chunk": "0", "--device": "auto",
        "--output": "None",
    },
}  # fmt: skip


@pytest.mark.parametrize("command", HELP_DEFAULTS, ids=" ".join)
def test_help_documents_every_flag_with_its_default(capsys, command):
    blocks = _help_blocks(capsys, *command)
    expected = HELP_DEFAULTS[command]
    assert sorted(blocks) == sorted(expected)  # every flag is documented (a new flag joins the table)
    for flag, default in expected.items():
        text = blocks[flag]
        if default is REQUIRED:
            assert "(default:" not in text, text
        else:
            assert text.endswith(f"(default: {default})"), text
            text = text.removesuffix(f"(default: {default})")
        assert len(text.split()) >= 4, text  # flag, metavar and a description of a few words


@pytest.mark.parametrize("flag, value, message", [
    ("--shots", "-1", "argument --shots: must be >= 0, got -1"),
    ("--n-ctx", "two", "argument --n-ctx: expected an integer >= 1, got 'two'"),
    ("--lr", "0", "argument --lr: must be > 0, got 0.0"),
    ("--class-token-position", "back", "argument --class-token-position: invalid choice: 'back'"),
    ("--precision", "fp64", "argument --precision: invalid choice: 'fp64'"),
])  # fmt: skip
def test_bad_flag_values(world, tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit_:
        main(train_args(world, tmp_path / "bad", flag, value))
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_bad_runs_fail_clearly(world, tmp_path):
    model, root, _ = world
    with pytest.raises(ValueError, match="--csc cannot be combined with --ctx-init"):
        main(train_args(world, tmp_path / "x", "--csc", "--ctx-init", "a photo of a"))
    with pytest.raises(FileNotFoundError, match="has no train/ or test/ folder: pass --split FILE"):
        main(["train", "coop", "--model", str(model), "--data", str(tmp_path), "--out", str(tmp_path / "y")])
    with pytest.raises(FileNotFoundError, match="prompt file .* does not exist"):
        main(["eval", "--prompt", str(tmp_path / "none.pt"), "--model", str(model), "--data", str(root / "test")])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            main(train_args(world, tmp_path / "z", "--device", "cuda"))
