"""The papers' published numbers (tinyprompt/data/published.json): schema and internal consistency.

The data are stored as the papers print them, never "fixed". Where a printed number does not satisfy a check
(H != 2bn/(b+n) to rounding, an average that is not the mean of its datasets), it goes in the KNOWN_* sets below
with a comment, so a new deviation (a typo made while storing the data) still fails.
"""
import json
import math
from pathlib import Path

import pytest

import tinyprompt

PUBLISHED = Path(tinyprompt.__file__).parent / "data" / "published.json"

TABLE_KEYS = {"paper", "table", "protocol", "model", "shots", "metric", "columns", "rows", "source"}
OPTIONAL_KEYS = {"note"}
PROTOCOL_COLUMNS = {
    "few_shot": ["1", "2", "4", "8", "16"],
    "base_to_new": ["base", "new", "H"],
    "cross_dataset": ["acc"],
    "domain_generalization": ["acc"],
    "multilabel": ["mAP"],
    "visual_prompting": ["acc"],
}
DATASETS = {
    "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft",
    "sun397", "dtd", "eurosat", "ucf101", "imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r",
    "voc2007", "coco2014", "nuswide", "cifar10", "cifar100", "gtsrb", "svhn",
}  # fmt: skip
AVERAGE = "average"
METHOD_PREFIXES = ("coop_", "ship_", "pomp_", "taidpt_", "ilmvp_")  # tinyprompt.protocols.published() selects by these
# transfer protocols: the paper's average is over the targets; the ImageNet source column is not part of it
SOURCE_EXCLUDED = {"cross_dataset": "imagenet", "domain_generalization": "imagenet"}

H_TOLERANCE = 0.01  # published base/new/H are rounded to two decimals
AVERAGE_TOLERANCE = 0.05  # a mean of rounded per-dataset numbers vs the paper's own rounded average

# (table id, row, dataset) whose published H differs from 2bn/(b+n) by more than H_TOLERANCE
KNOWN_H_DEVIATIONS: set = set()
# (table id, row, column) whose published average differs from the mean of the datasets by more than AVERAGE_TOLERANCE
KNOWN_AVERAGE_DEVIATIONS: set = set()


def _load() -> dict:
    return json.loads(PUBLISHED.read_text(encoding="utf-8"))


DATA = _load() if PUBLISHED.is_file() else {}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_file_exists_and_is_a_non_empty_object():
    assert PUBLISHED.is_file(), PUBLISHED
    data = _load()
    assert isinstance(data, dict) and data


@pytest.mark.parametrize("table_id", sorted(DATA))
def test_table_schema(table_id):
    table = DATA[table_id]
    assert table_id.startswith(METHOD_PREFIXES), table_id
    keys = set(table)
    assert TABLE_KEYS <= keys, f"{table_id}: missing {sorted(TABLE_KEYS - keys)}"
    assert keys <= TABLE_KEYS | OPTIONAL_KEYS, f"{table_id}: unexpected {sorted(keys - TABLE_KEYS - OPTIONAL_KEYS)}"
    for key in ("paper", "table", "model", "metric", "source"):
        assert isinstance(table[key], str) and table[key].strip(), (table_id, key)
    if "note" in table:
        assert isinstance(table["note"], str) and table["note"].strip(), table_id
    assert table["protocol"] in PROTOCOL_COLUMNS, (table_id, table["protocol"])
    assert table["shots"] is None or (isinstance(table["shots"], int) and not isinstance(table["shots"], bool)
                                      and table["shots"] > 0), (table_id, table["shots"])  # fmt: skip
    assert table["columns"] == PROTOCOL_COLUMNS[table["protocol"]], (table_id, table["columns"])
    assert isinstance(table["rows"], dict) and table["rows"], table_id


@pytest.mark.parametrize("table_id", sorted(DATA))
def test_rows_datasets_and_values(table_id):
    table = DATA[table_id]
    columns = set(table["columns"])
    for row, datasets in table["rows"].items():
        assert isinstance(row, str) and row.strip(), (table_id, row)
        assert isinstance(datasets, dict) and datasets, (table_id, row)
        for dataset, values in datasets.items():
            assert dataset in DATASETS or dataset == AVERAGE, (table_id, row, dataset)
            assert isinstance(values, dict) and set(values) == columns, (table_id, row, dataset, values)
            for column, value in values.items():
                assert _is_number(value), (table_id, row, dataset, column, value)
                assert 0 <= value <= 100, (table_id, row, dataset, column, value)


def _h_deviations() -> set:
    found = set()
    for table_id, table in DATA.items():
        if table["protocol"] != "base_to_new":
            continue
        for row, datasets in table["rows"].items():
            for dataset, v in datasets.items():
                b, n, h = v["base"], v["new"], v["H"]
                if abs(2 * b * n / (b + n) - h) > H_TOLERANCE:
                    found.add((table_id, row, dataset))
    return found


def test_base_to_new_h_is_the_harmonic_mean():
    """H = 2bn/(b+n) of the stored base/new, to the rounding of the published two decimals."""
    assert _h_deviations() == KNOWN_H_DEVIATIONS


def _average_deviations() -> set:
    found = set()
    for table_id, table in DATA.items():
        # base-to-new: the paper's average H is H of the average base and new, checked by the harmonic-mean test;
        # single-value tables and few-shot (one average per shot) check every column
        checked = ["base", "new"] if table["protocol"] == "base_to_new" else table["columns"]
        excluded = SOURCE_EXCLUDED.get(table["protocol"])
        for row, datasets in table["rows"].items():
            if AVERAGE not in datasets:
                continue
            members = [d for d in datasets if d not in (AVERAGE, excluded)]
            if not members:  # the source states the average alone (test_an_average_alone_is_said_so)
                continue
            for column in checked:
                mean = sum(datasets[d][column] for d in members) / len(members)
                if abs(mean - datasets[AVERAGE][column]) > AVERAGE_TOLERANCE:
                    found.add((table_id, row, column))
    return found


def test_average_is_the_mean_of_the_datasets():
    """Where a paper's average is stored, it is the mean of the stored datasets (the transfer protocols exclude the
    ImageNet source column, as the papers' averages do)."""
    assert _average_deviations() == KNOWN_AVERAGE_DEVIATIONS


def test_transfer_averages_cover_all_targets():
    """A stored transfer average is only checkable against the datasets it averages: all of them must be stored."""
    targets = {
        "cross_dataset": {"caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft",
                          "sun397", "dtd", "eurosat", "ucf101"},
        "domain_generalization": {"imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"},
    }  # fmt: skip
    for table_id, table in DATA.items():
        wanted = targets.get(table["protocol"])
        if wanted is None:
            continue
        for row, datasets in table["rows"].items():
            if AVERAGE in datasets and set(datasets) - {AVERAGE, SOURCE_EXCLUDED[table["protocol"]]}:
                assert wanted <= set(datasets), (table_id, row, sorted(wanted - set(datasets)))


def test_an_average_alone_is_said_so():
    """A row holding only an average (POMP's released prompts: the official repository states one average per
    protocol) cannot be checked against its datasets: the table's note must say that only averages are stated."""
    for table_id, table in DATA.items():
        alone = [row for row, datasets in table["rows"].items() if set(datasets) == {AVERAGE}]
        if alone:
            assert "Only the averages are stated" in table.get("note", ""), (table_id, alone)
