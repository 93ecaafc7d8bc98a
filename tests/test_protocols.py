"""tinyprompt.protocols: the grids each paper's protocol runs, CoCoOp's class split, and the tables' statistics."""
import math

import pytest

from tinyprompt.data.splits import Item
from tinyprompt.protocols import (CLASSIFICATION, PROTOCOLS, SEEDS, SHOTS, TRANSFER_TARGETS, VARIANTS, Run, Stat, plan,
                                  subsample_classes, tables, tables_csv)


def test_few_shot_grid_is_every_dataset_shot_and_seed_plus_zero_shot():
    evals = plan("few_shot")
    zero = [e for e in evals if e.run is None]
    trained = [e for e in evals if e.run is not None]
    assert [e.dataset for e in zero] == list(CLASSIFICATION)
    assert len(trained) == len(CLASSIFICATION) * len(SHOTS) * len(SEEDS) == 165
    assert {(e.run.dataset, e.run.shots, e.run.seed) for e in trained} == \
        {(d, k, s) for d in CLASSIFICATION for k in SHOTS for s in SEEDS}  # fmt: skip
    assert all(e.dataset == e.run.dataset and e.subset == "all" for e in trained)


def test_base_to_new_trains_on_base_and_evaluates_each_half():
    evals = plan("base_to_new", datasets=["dtd"], seeds=[1, 2])
    assert {(e.run, e.subset) for e in evals} == {
        (None, "base"), (None, "new"),
        *((Run("dtd", 16, s, "base"), part) for s in (1, 2) for part in ("base", "new"))}  # fmt: skip
    with pytest.raises(ValueError, match="trains on 16 shots in every paper"):
        plan("base_to_new", shots=[4])


@pytest.mark.parametrize("protocol, targets", [("cross_dataset", TRANSFER_TARGETS), ("domain_generalization", VARIANTS)])
def test_transfer_protocols_share_the_imagenet_runs(protocol, targets):
    evals = plan(protocol)
    runs = {e.run for e in evals if e.run is not None}
    assert runs == {Run("imagenet", 16, s) for s in SEEDS}  # the same folders for both protocols: trained once
    assert [e.dataset for e in evals if e.run is None] == ["imagenet", *targets]


def test_multilabel_and_visual_prompting_train_once_per_dataset_seed_and_source():
    evals = plan("multilabel", seeds=[1])
    assert [(e.run and e.run.folder, e.dataset) for e in evals] == [
        *((None, d) for d in ("voc2007", "coco2014", "nuswide")), *((f"{d}/all/seed1", d) for d in ("voc2007", "coco2014", "nuswide"))]
    evals = plan("visual_prompting", datasets=["cifar10"], seeds=[1, 2], sources=["clip:ViT-B/32", "torchvision:resnet18"])
    assert [e.run.folder for e in evals if e.run] == ["clip_ViT-B_32/cifar10/all/seed1", "clip_ViT-B_32/cifar10/all/seed2",
                                                      "torchvision_resnet18/cifar10/all/seed1",
                                                      "torchvision_resnet18/cifar10/all/seed2"]  # fmt: skip
    with pytest.raises(ValueError, match="needs at least one source classifier"):
        plan("visual_prompting")
    with pytest.raises(ValueError, match="trains on all the training data in its paper: drop --shots"):
        plan("multilabel", shots=[16])


def test_plan_rejects_unknown_protocols_and_empty_seeds():
    with pytest.raises(ValueError, match="unknown protocol 'zero_shot'"):
        plan("zero_shot")
    with pytest.raises(ValueError, match="no seeds given"):
        plan("few_shot", seeds=[])


def _items(labels):
    return [Item(f"/x/{i}.png", label, f"c{label}") for i, label in enumerate(labels)]


@pytest.mark.parametrize("n, base, new", [(1, [0], []), (2, [0], [1]), (3, [0, 1], [2]), (5, [0, 1, 2], [3, 4])])
def test_subsample_classes_is_cocoops_ceil_half_rule(n, base, new):
    splits = {"train": _items(range(n)), "val": _items(range(n)), "test": _items([*range(n), *range(n)])}
    names = [f"c{i}" for i in range(n)]
    assert subsample_classes(splits, names, "all") == (splits, names)
    got, got_names = subsample_classes(splits, names, "base")
    assert got_names == [f"c{i}" for i in base]
    assert [i.label for i in got["test"]] == [*range(len(base)), *range(len(base))]  # relabelled from 0
    if not new:
        with pytest.raises(ValueError, match="needs at least 2 classes"):
            subsample_classes(splits, names, "new")
        return
    got, got_names = subsample_classes(splits, names, "new")
    assert got_names == [f"c{i}" for i in new]
    assert [i.classname for i in got["train"]] == got_names and [i.label for i in got["train"]] == list(range(len(new)))


def test_stat_is_the_mean_and_population_std_over_seeds():
    stat = Stat.of([70.0, 72.0, 74.0])
    assert stat.mean == 72.0 and stat.std == pytest.approx(math.sqrt(8 / 3)) and stat.n == 3  # numpy's np.std
    assert str(stat) == "72.00 ± 1.63" and str(Stat(71.5)) == "71.50" and Stat.of([]) is None


def _result(dataset, top1, run=None, subset="all"):
    return {"run": None if run is None else {"dataset": run[0], "shots": run[1], "seed": run[2], "subset": run[3]},
            "dataset": dataset, "subset": subset, "value": top1}


def _row(table, group, label):
    return next(values for g, name, values in table.rows if g == group and name.startswith(label))


def test_base_to_new_average_is_h_of_mean_base_and_mean_new():
    results = []
    for d, (b, n) in {"dtd": ((80.0, 84.0), (50.0, 54.0)), "eurosat": ((90.0, 92.0), (40.0, 44.0))}.items():
        for seed in (1, 2):
            run = (d, 16, seed, "base")
            results += [_result(d, b[seed - 1], run, "base"), _result(d, n[seed - 1], run, "new")]
        results += [_result(d, 60.0, None, "base"), _result(d, 70.0, None, "new")]
    (table,) = tables("base_to_new", results, "coop", datasets=["dtd", "eurosat"])
    dtd = _row(table, "dtd", "CoOp (ours)")
    assert (dtd["base"].mean, dtd["new"].mean) == (82.0, 52.0)
    assert dtd["H"].mean == pytest.approx((2 * 80 * 50 / 130 + 2 * 84 * 54 / 138) / 2)  # H per seed, then the mean
    average = _row(table, "average", "CoOp (ours)")
    assert average["base"].mean == pytest.approx(86.5) and average["new"].mean == pytest.approx(47.0)
    assert average["H"].mean == pytest.approx(2 * 86.5 * 47.0 / (86.5 + 47.0))  # CoCoOp: H of the averages
    assert _row(table, "average", "zero-shot CLIP")["H"].mean == pytest.approx(2 * 60 * 70 / 130)


def test_transfer_table_averages_the_targets_per_seed():
    results = [_result("imagenet", 70.0 + s, ("imagenet", 16, s, "all")) for s in (1, 2)]
    results += [_result("dtd", 40.0 + s, ("imagenet", 16, s, "all")) for s in (1, 2)]
    results += [_result("eurosat", 30.0, ("imagenet", 16, 1, "all"))]  # seed 2 missing: not in the average
    (table,) = tables("cross_dataset", results, "coop", datasets=["dtd", "eurosat"])
    assert table.columns == ["imagenet", "dtd", "eurosat", "average"]
    ours = _row(table, "", "CoOp (ours)")
    assert ours["imagenet"].mean == 71.5 and ours["average"].mean == pytest.approx((41 + 30) / 2) and ours["average"].n == 1
    assert "| CoOp (ours) | 71.50 ± 0.50 |" in table.markdown()
    assert "CoOp (ours),imagenet,71.5,0.5,2" in tables_csv([table])


def test_few_shot_table_has_zero_shot_then_each_shot():
    results = [_result("dtd", 40.0)] + [_result("dtd", 50.0 + k + s, ("dtd", k, s, "all")) for k in (1, 2) for s in (1, 2)]
    (table,) = tables("few_shot", results, "coop", shots=[1, 2], datasets=["dtd"])
    assert table.columns == ["zero-shot", "1", "2"]
    assert _row(table, "dtd", "zero-shot CLIP")["zero-shot"].mean == 40.0
    assert _row(table, "dtd", "CoOp (ours)")["2"].mean == 53.5


def test_every_protocol_names_default_datasets_of_the_registry():
    from tinyprompt.data.datasets import DATASETS

    for title, datasets in PROTOCOLS.values():
        assert title and set(datasets) <= set(DATASETS)
