"""`tinyprompt reproduce` on a synthetic data root in CoOp's layouts, and the commands' --dataset/--root flags.

The root is written by `tinyprompt.data.synthetic_tasks.write_benchmark_root` (every registry dataset in its
official layout, synthetic images); the model is the built-in "synthetic" CLIP, so nothing is downloaded.
"""
import json

import pytest
import torch
from golden import needs_vocab

from tinyprompt.commands.cli import main
from tinyprompt.data.datasets import load as load_dataset
from tinyprompt.data.folder import open_image
from tinyprompt.data.synthetic_tasks import write_benchmark_root
from tinyprompt.hub import load
from tinyprompt.methods import load_prompt, read_prompt
from tinyprompt.protocols import CLASSIFICATION, VARIANTS, subsample_classes

pytestmark = needs_vocab


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_benchmark_root(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _cache(monkeypatch, cache):
    monkeypatch.setenv("TINYPROMPT_CACHE", str(cache))  # feature caches of the module's runs, not the user's


@pytest.fixture(scope="module")
def grid(root, tmp_path_factory, cache):
    """The whole default CoOp grid at --quick settings: every protocol, every dataset, seeds 1 and 2."""
    out = tmp_path_factory.mktemp("grid") / "coop"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINYPROMPT_CACHE", str(cache))
        assert main(["reproduce", "coop", "--root", str(root), "--model", "synthetic", "--quick", "--out", str(out)]) == 0
    return out


def _table(grid, protocol):
    return json.loads((grid / "results" / f"coop-{protocol}.json").read_text())


def _cells(table, method="CoOp (ours)"):
    return {(r["dataset"] if "dataset" in r else r["group"], r["column"]): r for r in table["tables"]
            if r["method"] == method}  # fmt: skip


def test_quick_grid_writes_every_table(grid):
    few = _cells(_table(grid, "few_shot"))
    assert {(d, k) for d in (*CLASSIFICATION, "average") for k in ("1", "2")} <= set(few)
    assert all(cell["seeds"] == 2 for cell in few.values())  # mean ± std over seeds 1 and 2
    b2n = _cells(_table(grid, "base_to_new"))
    assert {(d, c) for d in (*CLASSIFICATION, "average") for c in ("base", "new", "H")} <= set(b2n)
    dg = _cells(_table(grid, "domain_generalization"))
    assert {("", d) for d in ("imagenet", *VARIANTS, "average")} <= set(dg)
    cross = _cells(_table(grid, "cross_dataset"))
    assert {("", d) for d in (*CLASSIFICATION, "average")} <= set(cross)
    same = ("mean", "std", "seeds")  # one ImageNet prompt per seed serves both protocols
    assert [cross["", "imagenet"][k] for k in same] == [dg["", "imagenet"][k] for k in same]
    zero = _cells(_table(grid, "few_shot"), "zero-shot CLIP (ours)")
    assert all(0 <= cell["mean"] <= 100 for cell in (*few.values(), *zero.values()))
    for suffix in (".md", ".csv", ".json"):
        assert (grid / "results" / f"coop-few_shot{suffix}").stat().st_size > 0
    assert "| dataset | method | zero-shot | 1 | 2 |" in (grid / "results" / "coop-few_shot.md").read_text()


def test_each_number_is_the_prompt_of_its_run_on_its_test_split(grid, root):
    """Recompute one base-to-new number from the run's prompt, the new classes' names and test images."""
    state = read_prompt(grid / "runs" / "coop" / "dtd-base" / "16shots" / "seed1" / "prompt.pt")
    assert state["classnames"] == subsample_classes(*load_dataset("dtd", root), "base")[1]  # trained on base only
    splits, names = subsample_classes(*load_dataset("dtd", root), "new")
    clip, preprocess = load("synthetic")
    images = torch.stack([preprocess(open_image(item.path)) for item in splits["test"]])
    with torch.no_grad():
        logits = load_prompt(clip, state, names)(images)  # (N, n_new): the new classes only
    labels = torch.tensor([item.label for item in splits["test"]])
    saved = json.loads((grid / "evaluations" / "coop" / "dtd-base-16shots-seed1-on-dtd-new.json").read_text())
    assert (saved["images"], saved["classes"]) == (len(labels), len(names))
    assert saved["top1"] == pytest.approx(100.0 * (logits.argmax(1) == labels).float().mean().item())


def test_an_interrupted_grid_resumes_without_redoing_finished_runs(grid, root, capsys):
    tables_before = {p.name: p.read_text() for p in (grid / "results").glob("*.json")}
    prompt = grid / "runs" / "coop" / "dtd" / "2shots" / "seed2" / "prompt.pt"
    prompt.unlink()  # as if killed after its last checkpoint, before the final save
    (grid / "evaluations" / "coop" / "dtd-2shots-seed2-on-dtd.json").unlink()
    args = ["reproduce", "coop", "--root", str(root), "--model", "synthetic", "--quick", "--out", str(grid)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "(67 done)" in out and "run 1/1: coop on dtd, 2 shots, seed 2" in out  # only the interrupted run
    assert "resumed from" in out and prompt.is_file()
    after = {p.name: p.read_text() for p in (grid / "results").glob("*.json")}
    assert after == tables_before  # resumed after its last epoch: the same prompt, the same numbers
    assert main(args) == 0
    assert "training runs (68 done)" in capsys.readouterr().out


def test_a_grid_folder_refuses_other_settings(grid, root):
    with pytest.raises(ValueError, match="holds a grid made with other model"):
        main(["reproduce", "coop", "--root", str(root), "--model", "RN50", "--quick", "--out", str(grid)])


def test_missing_datasets_and_wrong_protocols_fail_before_any_work(tmp_path, root):
    with pytest.raises(FileNotFoundError, match="caltech-101 does not exist.*choose the datasets you have"):
        main(["reproduce", "coop", "--root", str(tmp_path), "--model", "synthetic", "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="ship's paper reports base_to_new, not few_shot"):
        main(["reproduce", "ship", "--root", str(root), "--protocol", "few_shot"])
    with pytest.raises(ValueError, match="pass --prompt FILE"):
        main(["reproduce", "pomp", "--root", str(root)])


def test_pomp_evaluates_a_given_prompt_on_the_transfer_tables(grid, root, tmp_path):
    prompt = grid / "runs" / "coop" / "imagenet" / "16shots" / "seed1" / "prompt.pt"  # any shared-context prompt
    out = tmp_path / "pomp"
    assert main(["reproduce", "pomp", "--root", str(root), "--model", "synthetic", "--prompt", str(prompt),
                 "--out", str(out)]) == 0  # fmt: skip
    pomp = _cells(json.loads((out / "results" / "pomp-cross_dataset.json").read_text()), "POMP (ours)")
    for dataset in ("imagenet", "dtd"):  # the same prompt on the same images: the numbers of CoOp's seed-1 run
        seed1 = json.loads((grid / "evaluations" / "coop" / f"imagenet-16shots-seed1-on-{dataset}.json").read_text())
        assert pomp["", dataset]["mean"] == pytest.approx(seed1["top1"], abs=1e-4)  # tables round to 4 decimals
        assert pomp["", dataset]["seeds"] == 1
    assert (out / "results" / "pomp-domain_generalization.md").is_file()


def test_train_and_eval_take_a_registered_dataset(root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "coop", "--model", "synthetic", "--dataset", "oxford_pets", "--root", str(root), "--shots", "2",
                 "--epochs", "1", "--views", "1", "--subsample", "new", "--out", str(out)]) == 0  # fmt: skip
    splits, names = subsample_classes(*load_dataset("oxford_pets", root), "new")
    assert read_prompt(out / "prompt.pt")["classnames"] == names
    assert main(["eval", "--prompt", str(out / "prompt.pt"), "--model", "synthetic", "--dataset", "oxford_pets",
                 "--root", str(root), "--output", str(tmp_path / "eval.json")]) == 0  # fmt: skip
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["images"] == len(load_dataset("oxford_pets", root)[0]["test"]) and result["classes"] == len(load_dataset("oxford_pets", root)[1])
    with pytest.raises(ValueError, match="pass either --data"):
        main(["train", "coop", "--model", "synthetic", "--out", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="--split is for --data"):
        main(["train", "coop", "--model", "synthetic", "--dataset", "dtd", "--root", str(root), "--split", "s.json",
              "--out", str(tmp_path / "y")])  # fmt: skip


def test_zeroshot_on_a_split_file_subset(root, capsys):
    home = root / "dtd"
    split = home / "split_zhou_DescribableTextures.json"
    assert main(["zeroshot", "--model", "synthetic", "--data", str(home / "images"), "--split", str(split),
                 "--subset", "val"]) == 0  # fmt: skip
    n_val = len(json.loads(split.read_text())["val"])
    assert f"{n_val} images" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--split needs --data"):
        main(["zeroshot", "--model", "synthetic", "--dataset", "dtd", "--root", str(root), "--split", str(split)])
