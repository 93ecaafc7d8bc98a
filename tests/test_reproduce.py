"""`tinyprompt reproduce` on a synthetic data root in CoOp's layouts, and the commands' --dataset/--root flags.

The root is written by `tinyprompt.data.synthetic_tasks.write_benchmark_root` (every registry dataset in its
official layout, synthetic images); the model is the built-in "synthetic" CLIP, so nothing is downloaded.
"""
import json
from dataclasses import asdict

import pytest
import torch
from golden import needs_vocab

from tinyprompt.commands.cli import main
from tinyprompt.data.datasets import load as load_dataset
from tinyprompt.data.folder import open_image
from tinyprompt.data.synthetic_tasks import write_benchmark_root
from tinyprompt.hub import load
from tinyprompt.methods import CoOp, TaIDPT, load_prompt, read_prompt
from tinyprompt.methods.pomp import POMPConfig
from tinyprompt.metrics import mean_average_precision
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
    assert saved["value"] == pytest.approx(100.0 * (logits.argmax(1) == labels).float().mean().item())


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
                 "--protocol", "cross_dataset", "domain_generalization", "--out", str(out)]) == 0  # fmt: skip
    pomp = _cells(json.loads((out / "results" / "pomp-cross_dataset.json").read_text()), "POMP (ours)")
    for dataset in ("imagenet", "dtd"):  # the same prompt on the same images: the numbers of CoOp's seed-1 run
        seed1 = json.loads((grid / "evaluations" / "coop" / f"imagenet-16shots-seed1-on-{dataset}.json").read_text())
        assert pomp["", dataset]["mean"] == pytest.approx(seed1["value"], abs=1e-4)  # tables round to 4 decimals
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
    with pytest.raises(ValueError, match="--split is for --data, the folder its image paths start from; --dataset dtd "
                                         "reads its own split file: drop --split"):
        main(["zeroshot", "--model", "synthetic", "--dataset", "dtd", "--root", str(root), "--split", str(split)])


VOC_OBJECTS = [["dog"], ["cat", "dog"], ["car"], ["person", "car"], ["cat"], ["person"], ["dog", "person"], ["car", "cat"]]
WORDS = {"dog": "a dog", "cat": "a cat", "car": "a red car", "person": "a man"}


def _voc_root(root, rng):
    """VOCdevkit/VOC2007 in its official layout (XML annotations, ImageSets/Main/test.txt, JPEG images)."""
    from PIL import Image

    home = root / "VOCdevkit" / "VOC2007"
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (home / folder).mkdir(parents=True, exist_ok=True)
    ids = [f"{i:06d}" for i in range(len(VOC_OBJECTS))]
    (home / "ImageSets/Main/test.txt").write_text("".join(f"{i}\n" for i in ids))
    for image, objects in zip(ids, VOC_OBJECTS):
        body = "".join(f"<object><name>{name}</name><difficult>0</difficult></object>" for name in objects)
        (home / "Annotations" / f"{image}.xml").write_text(f"<annotation><filename>{image}.jpg</filename>{body}</annotation>")
        pixels = torch.randint(0, 256, (32, 32, 3), generator=rng, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(home / "JPEGImages" / f"{image}.jpg", format="JPEG")


def test_taidpt_learns_from_captions_and_reports_map_on_the_registry_test_set(tmp_path, capsys):
    rng = torch.Generator().manual_seed(0)
    _voc_root(tmp_path / "data", rng)
    names = list(WORDS)
    captions = tmp_path / "captions.jsonl"
    lines = []
    for i in range(64):
        picked = [names[j] for j in torch.randperm(len(names), generator=rng)[: 1 + i % 2].tolist()]
        lines.append(json.dumps({"caption": " and ".join(WORDS[n] for n in picked) + " in a street."}))
    captions.write_text("\n".join(lines) + "\n")
    out = tmp_path / "grid"
    args = ["reproduce", "taidpt", "--root", str(tmp_path / "data"), "--model", "synthetic", "--captions", str(captions),
            "--datasets", "voc2007", "--seeds", "1", "--quick", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    table = json.loads((out / "results" / "taidpt-multilabel.json").read_text())
    cells = {(r["method"], r["column"]): r["mean"] for r in table["tables"]}
    metrics = json.loads((out / "runs" / "taidpt" / "voc2007" / "all" / "seed1" / "metrics.json").read_text())
    assert cells["TaI-DPT (ours)", "voc2007"] == pytest.approx(metrics["test"]["final"]["map_merged"], abs=1e-4)
    assert 0 < cells["zero-shot CLIP (ours)", "voc2007"] <= 100
    assert "| method | voc2007 | average |" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="caption corpus .*missing.json does not exist: pass --captions"):
        main([*args[:6], "--captions", str(tmp_path / "missing.json"), "--datasets", "voc2007", "--out", str(tmp_path / "o")])
    # the recipe reads a registered test set as TaI-DPT does: the flags of a --eval-data file would be ignored there
    with pytest.raises(ValueError, match=r"--eval-split, --difficult ignore apply to --eval-data; --eval-dataset voc2007 "
                                         r"is read as TaI-DPT reads it"):
        main(["train", "taidpt", "--model", "synthetic", "--captions", str(captions), "--classes", "voc2007",
              "--eval-dataset", "voc2007", "--root", str(tmp_path / "data"), "--eval-split", "val", "--difficult",
              "ignore", "--out", str(tmp_path / "o3")])  # fmt: skip
    # without --captions: the corpus the official TaI-DPT reads for each test set, under its README's DATAROOT
    with pytest.raises(FileNotFoundError, match=r"caption corpus .*COCO/annotations/captions_train2017\.json does not"):
        main([*args[:6], "--datasets", "voc2007", "--out", str(tmp_path / "o2")])


def test_taidpt_learns_each_test_set_from_the_official_corpus(tmp_path):
    """TaI-DPT's datasets/*_distill.py: VOC2007 and COCO2014 learn from COCO's 2017 train captions, NUS-WIDE from
    OpenImages' localized narratives (its README's DATAROOT layout); --captions replaces both."""
    from argparse import Namespace

    from tinyprompt.commands.reproduce import _settings

    args = Namespace(method="taidpt", root=tmp_path, captions=None, train_args="", quick=False, prompt=None,
                     model="RN50", model_config=None)  # fmt: skip
    corpus = _settings(args)["captions"]
    assert corpus == {"voc2007": str(tmp_path / "COCO/annotations/captions_train2017.json"),
                      "coco2014": str(tmp_path / "COCO/annotations/captions_train2017.json"),
                      "nuswide": str(tmp_path / "OpenImages/captions/open_images_train_v6_captions.jsonl")}
    mine = tmp_path / "mine.jsonl"
    assert set(_settings(Namespace(**{**vars(args), "captions": mine}))["captions"].values()) == {str(mine)}


def test_ilmvp_reports_each_sources_accuracy_per_target(root, tmp_path):
    out = tmp_path / "grid"
    assert main(["reproduce", "ilmvp", "--root", str(root), "--model", "synthetic", "--datasets", "dtd", "--seeds", "1",
                 "--quick", "--train-args", "--epochs 1 --pad 4", "--out", str(out)]) == 0  # fmt: skip
    table = json.loads((out / "results" / "ilmvp-visual_prompting.json").read_text())
    cells = {(r["method"], r["column"]): r["mean"] for r in table["tables"]}
    metrics = json.loads((out / "runs" / "ilmvp" / "clip_synthetic" / "dtd" / "all" / "seed1" / "metrics.json").read_text())
    assert cells["ILM-VP clip:synthetic (ours)", "dtd"] == pytest.approx(metrics["test"]["top1"], abs=1e-4)
    with pytest.raises(ValueError, match="--sources is for reproduce ilmvp, not coop"):
        main(["reproduce", "coop", "--root", str(root), "--sources", "clip:RN50"])


@pytest.mark.parametrize("source, dataset, size", [("torchvision:resnet18", "svhn", 32), ("torchvision:resnet18",
                         "cifar100", 32), ("torchvision:resnet18", "dtd", 128), ("clip:ViT-B/32", "gtsrb", None)])
def test_ilmvp_runs_take_the_official_image_size(monkeypatch, tmp_path, source, dataset, size):
    """ILM-VP trains a CNN source on CIFAR, SVHN and GTSRB at their 32 pixels and on the others at 128; a CLIP source
    takes CLIP's preprocessing (prepare_expansive_data / prepare_additive_data)."""
    from argparse import Namespace

    from tinyprompt.commands import reproduce
    from tinyprompt.protocols import Run

    seen = []
    monkeypatch.setattr(reproduce.ilmvp, "run", seen.append)
    args = Namespace(method="ilmvp", prompt=None, model_config=None, root=tmp_path, workers=0, device="cpu")
    reproduce._train(args, Run(dataset, 0, 1, source=source), tmp_path / "run", {"train_args": []})
    assert seen[0].image_size == (size or 128) and seen[0].dataset == dataset and seen[0].source == source


def test_ship_base_and_new_match_the_recipes_own_protocol(root, tmp_path):
    """reproduce evaluates SHIP's prompt per class half; the recipe measures base/new over its joint class list."""
    out = tmp_path / "grid"
    assert main(["reproduce", "ship", "--root", str(root), "--model", "synthetic", "--datasets", "eurosat", "--seeds",
                 "1", "--quick", "--out", str(out)]) == 0  # fmt: skip
    table = json.loads((out / "results" / "ship-base_to_new.json").read_text())
    cells = {(r["dataset"], r["column"]): r["mean"] for r in table["tables"] if r["method"] == "CoOp+SHIP (ours)"}
    metrics = json.loads((out / "runs" / "ship" / "eurosat-base" / "16shots" / "seed1" / "metrics.json").read_text())
    for column in ("base", "new", "H"):
        assert cells["eurosat", column] == pytest.approx(metrics["test"]["selected"][column], abs=1e-4)


def _pomp_prompt(path, n_ctx=4):
    """A saved POMP prompt (POMP's prompt_state_dict layout) with a recognisable context."""
    config = asdict(POMPConfig(n_ctx=n_ctx))
    width = load("synthetic")[0].ln_final.weight.shape[0]
    ctx = torch.randn(n_ctx, width, generator=torch.Generator().manual_seed(3)) * 0.02
    torch.save({"method": "pomp", "config": config, "classnames": ["a", "b"], "ctx": ctx}, path)
    return ctx


def test_coop_starts_from_a_pomp_prompt(root, tmp_path, capsys):
    ctx = _pomp_prompt(tmp_path / "pomp.pt")
    out = tmp_path / "run"
    # one warm-up epoch at lr 1e-30: every update is below fp32 resolution, so the context stays the init exactly
    assert main(["train", "coop", "--model", "synthetic", "--dataset", "dtd", "--root", str(root), "--shots", "1",
                 "--epochs", "1", "--warmup-epochs", "1", "--warmup-lr", "1e-30", "--views", "1", "--init-prompt",
                 str(tmp_path / "pomp.pt"), "--out", str(out)]) == 0  # fmt: skip
    state = read_prompt(out / "prompt.pt")
    assert torch.equal(state["ctx"], ctx) and state["config"]["n_ctx"] == 4
    assert "context initialised from" in capsys.readouterr().out
    with pytest.raises(ValueError, match="only a shared context transfers"):
        main(["train", "coop", "--model", "synthetic", "--dataset", "dtd", "--root", str(root), "--csc",
              "--init-prompt", str(tmp_path / "pomp.pt"), "--out", str(tmp_path / "csc")])  # fmt: skip


def test_pomp_base_to_new_fine_tunes_coop_from_the_given_prompt(root, tmp_path):
    _pomp_prompt(tmp_path / "pomp.pt")
    out = tmp_path / "grid"
    assert main(["reproduce", "pomp", "--root", str(root), "--model", "synthetic", "--prompt", str(tmp_path / "pomp.pt"),
                 "--protocol", "base_to_new", "--datasets", "eurosat", "--seeds", "1", "--quick", "--out", str(out)]) == 0  # fmt: skip
    state = read_prompt(out / "runs" / "pomp" / "eurosat-base" / "16shots" / "seed1" / "prompt.pt")
    assert state["method"] == "coop" and state["config"]["n_ctx"] == 4  # CoOp, shaped by the POMP prompt
    table = json.loads((out / "results" / "pomp-base_to_new.json").read_text())
    assert {r["column"] for r in table["tables"] if r["method"] == "POMP (ours)"} == {"base", "new", "H"}


def test_synthetic_data_is_an_offline_dry_run(tmp_path, capsys):
    args = ["reproduce", "coop", "--root", str(tmp_path / "data"), "--synthetic-data", "--model", "synthetic", "--quick",
            "--protocol", "few_shot", "--datasets", "dtd", "--shots", "1", "--seeds", "1", "--out", str(tmp_path / "o")]
    assert main(args) == 0
    assert "wrote the synthetic world's imagenet, caltech101" in capsys.readouterr().out
    assert load_dataset("imagenet_r", tmp_path / "data")[1]  # every CoOp layout is there
    assert main(args) == 0
    assert "wrote the synthetic world" not in capsys.readouterr().out  # present: used as it is


def test_eval_scores_a_taidpt_prompt_with_map(tmp_path):
    """`tinyprompt eval` on a TaI-DPT prompt: mAP of the merged scores, as TaIDPT.forward gives them on the images."""
    _voc_root(tmp_path / "data", torch.Generator().manual_seed(1))
    clip, preprocess = load("synthetic")
    data = load_dataset("voc2007", tmp_path / "data")[0]["test"]
    torch.manual_seed(0)
    model = TaIDPT(clip, data.classnames)
    torch.save(model.prompt_state_dict(), tmp_path / "taidpt.pt")
    assert main(["eval", "--prompt", str(tmp_path / "taidpt.pt"), "--model", "synthetic", "--dataset", "voc2007",
                 "--root", str(tmp_path / "data"), "--output", str(tmp_path / "eval.json")]) == 0  # fmt: skip
    result = json.loads((tmp_path / "eval.json").read_text())
    images = torch.stack([preprocess(open_image(path)) for path in data.paths])
    with torch.no_grad():
        scores = model(images)[2]  # (N, C) merged
    assert result["map_merged"] == pytest.approx(mean_average_precision(scores, data.labels, data.ignore)[0], abs=1e-3)
    voc = tmp_path / "data" / "VOCdevkit" / "VOC2007"  # as a folder, it is scored on its test split, as read
    for flags in (["--subset", "val"], ["--split", "split.json"], ["--classes", "names.txt"]):
        with pytest.raises(ValueError, match=r"VOC2007 is scored as read .*: --split, --classes and --subset are for "
                                             r"single-label data; for another split .* --dataset NAME --root DATA"):
            main(["eval", "--prompt", str(tmp_path / "taidpt.pt"), "--model", "synthetic", "--data", str(voc), *flags])
    coop = CoOp(clip, data.classnames).prompt_state_dict()
    torch.save(coop, tmp_path / "coop.pt")
    with pytest.raises(ValueError, match="is multi-label: a coop prompt gives single-label accuracy"):
        main(["eval", "--prompt", str(tmp_path / "coop.pt"), "--model", "synthetic", "--dataset", "voc2007",
              "--root", str(tmp_path / "data")])  # fmt: skip


def test_eval_runs_an_ilmvp_prompt_through_its_runs_source(root, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "ilmvp", "--source", "clip:synthetic", "--dataset", "dtd", "--root", str(root), "--pad", "4",
                 "--epochs", "1", "--out", str(out)]) == 0  # fmt: skip
    assert main(["eval", "--prompt", str(out / "prompt.pt"), "--model", "synthetic", "--dataset", "dtd", "--root",
                 str(root), "--output", str(tmp_path / "eval.json")]) == 0  # fmt: skip
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert json.loads((tmp_path / "eval.json").read_text())["top1"] == pytest.approx(test["top1"])  # the recipe's own
    with pytest.raises(ValueError, match="was trained through the source clip:synthetic, not --model RN50"):
        main(["eval", "--prompt", str(out / "prompt.pt"), "--model", "RN50", "--dataset", "dtd", "--root", str(root)])
    with pytest.raises(ValueError, match="an ILM-VP label mapping holds for its own target classes"):
        main(["eval", "--prompt", str(out / "prompt.pt"), "--model", "synthetic", "--dataset", "eurosat", "--root",
              str(root)])  # fmt: skip
    source = (out / "source.json").read_text()  # a resume through another source is refused, and leaves it as it was
    with pytest.raises(ValueError, match=r"cannot resume from .*checkpoint.pt: the training data changed \(source: "):
        main(["train", "ilmvp", "--source", "clip:synthetic", "--dataset", "dtd", "--root", str(root), "--pad", "6",
              "--epochs", "1", "--out", str(out), "--resume"])  # fmt: skip
    assert (out / "source.json").read_text() == source
    (out / "source.json").unlink()
    with pytest.raises(FileNotFoundError, match="source.json does not exist: an ILM-VP prompt works only through"):
        main(["eval", "--prompt", str(out / "prompt.pt"), "--model", "synthetic", "--dataset", "dtd", "--root", str(root)])


def test_a_given_prompt_changed_in_place_is_refused(root, tmp_path):
    prompt = tmp_path / "pomp.pt"
    _pomp_prompt(prompt)
    args = ["reproduce", "pomp", "--root", str(root), "--model", "synthetic", "--prompt", str(prompt), "--protocol",
            "domain_generalization", "--out", str(tmp_path / "grid")]  # fmt: skip
    assert main(args) == 0
    _pomp_prompt(prompt, n_ctx=2)  # retrained into the same file
    with pytest.raises(ValueError, match="holds a grid made with other prompt"):
        main(args)
