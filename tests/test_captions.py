"""Captions -> labels (TaI-DPT's text-only training data), class lists, caption readers, templates."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from golden import GOLDEN, REPO

from tinyprompt.data.captions import (LabelMatcher, label_captions, lemma, read_caption_ids, read_captions,
                                     template_sentences, words)
from tinyprompt.data.classlists import CLASS_LISTS, get_class_list, load_synonym_file

EXAMPLES = GOLDEN / "taidpt" / "label_examples.json"


def _examples(confidence="high"):
    if not EXAMPLES.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{EXAMPLES} not found"), id="no-golden")]
    rows = json.loads(EXAMPLES.read_text())["examples"]
    return [
        pytest.param(r, id=f"{r['dataset']}-{n}")
        for n, r in enumerate(rows)
        if r["confidence"].startswith(confidence)
    ]


@pytest.mark.parametrize("row", _examples("high"))
def test_label_examples_high_confidence(row):
    """The hand-derived table of the golden README, with tinyprompt's own synonym lists."""
    classes = get_class_list(row["dataset"])
    assert LabelMatcher(classes.synonyms)(row["sentence"]) == sorted(row["label_indices"])
    kept, labels, _ = label_captions([row["sentence"]], classes.classnames, classes.synonyms)
    assert bool(kept) == row["kept_for_training"]


@pytest.mark.parametrize("row", _examples("medium"))
def test_label_examples_medium_confidence(row):
    """Rows that depend on NLTK tagging a word as a verb: the -ing/-ed rules give the same lemmas."""
    classes = get_class_list(row["dataset"])
    assert LabelMatcher(classes.synonyms)(row["sentence"]) == sorted(row["label_indices"])


def test_class_lists_match_the_benchmarks():
    sizes = {"voc2007": 20, "coco": 80, "nuswide": 81}
    for name, classes in CLASS_LISTS.items():
        assert len(classes) == sizes[name]
        LabelMatcher(classes.synonyms)  # raises if a synonym marks two classes
        assert all(cls in syns for cls, syns in zip(classes.classnames, classes.synonyms))
    if EXAMPLES.is_file():  # the prompt names the official code uses
        official = json.loads(EXAMPLES.read_text())["synonym_list_sizes"]
        for name, key in (("voc2007", "voc"), ("coco", "coco"), ("nuswide", "nus")):
            assert list(CLASS_LISTS[name].classnames) == official[key]["prompt_classnames"]
    assert get_class_list("VOC") is CLASS_LISTS["voc2007"] and get_class_list("nus-wide") is CLASS_LISTS["nuswide"]
    with pytest.raises(ValueError, match="unknown class list"):
        get_class_list("imagenet")


@pytest.mark.parametrize(
    "word,base",
    [("dogs", "dog"), ("skis", "ski"), ("glasses", "glass"), ("benches", "bench"), ("puppies", "puppy"),
     ("ties", "tie"), ("buses", "bus"), ("bus", "bus"), ("tennis", "tennis"), ("men", "man"), ("leaves", "leaf"),
     ("riding", "ride"), ("sitting", "sit"), ("dancing", "dance"), ("skiing", "ski"), ("training", "train"),
     ("tied", "tie"), ("potted", "pot"), ("parked", "park"), ("dressed", "dress"), ("building", "building"),
     ("thing", "thing"), ("red", "red"), ("dog's", "dog"), ("hot-dog", "hot-dog"), ("2", "2")],
)  # fmt: skip
def test_lemma_rules(word, base):
    assert lemma(word) == base


def test_matching_rules():
    m = LabelMatcher([["dog"], ["hot dog"], ["person", "man"], ["motor bike"], ["bike"], ["way"], ["rail way"]])
    assert m("A hot dog and a dog") == [0, 1]  # the compound consumes its words, the bare word still fires
    assert m("a hot dog") == [1]
    assert m("Two MEN on motorbikes.") == [2, 3]  # case, plural, space-stripped compound
    assert m("a motor bike") == [3]  # the compound eats "bike"
    assert m("a rail way") == [6] and m("the way") == [5]
    assert m("a hot-dog stand") == []  # hyphenated words stay whole
    assert m("nothing here") == []
    # a consumed compound leaves a barrier: its neighbours do not join into a new compound
    assert LabelMatcher([["b c"], ["a d"]])("a b c d") == [0]
    # the first max_words tokens only (the official NUS-WIDE reader looks at 77)
    assert LabelMatcher([["dog"]], max_words=3)("a big red dog") == []
    with pytest.raises(ValueError, match="one class only"):
        LabelMatcher([["dog"], ["dogs"]])


def test_label_captions_report():
    classes = get_class_list("voc")
    caps = ["A dog on a sofa.", "A view of the sky.", "Two dogs and a man.", "A bus."]
    kept, labels, report = label_captions(caps, classes.classnames, classes.synonyms)
    assert kept == [caps[0], caps[2], caps[3]]  # the CLIP input stays the original caption
    assert labels.dtype == torch.uint8 and labels.shape == (3, 20)
    assert labels.nonzero().tolist() == [[0, 11], [0, 17], [1, 11], [1, 14], [2, 5]]
    assert (report.total, report.kept, report.per_class[11], report.per_class[0]) == (4, 3, 2, 0)
    lines = report.format().splitlines()
    assert lines[0] == "captions: 4 read, 3 kept, 1 dropped (no class named)"
    width = len("pottedplant")  # names are padded to the longest
    assert len(lines) == 21 and lines[12] == f"  {'dog':<{width}}  2" and lines[15] == f"  {'person':<{width}}  1"
    assert [int(line.split()[-1]) for line in lines[1:]] == report.per_class == labels.sum(0).tolist()


def test_labels_do_not_depend_on_the_hash_seed():
    """Set iteration order changes with PYTHONHASHSEED (the official code's matching order does); ours must not."""
    script = (
        "import json, sys\n"
        "from tinyprompt.data.captions import LabelMatcher\n"
        "from tinyprompt.data.classlists import CLASS_LISTS\n"
        "caps = json.loads(sys.argv[1])\n"
        "print(json.dumps({n: [LabelMatcher(c.synonyms)(t) for t in caps] for n, c in CLASS_LISTS.items()}))\n"
    )
    captions = [r["sentence"] for r in json.loads(EXAMPLES.read_text())["examples"]] if EXAMPLES.is_file() else []
    captions += ["A teddy bear and a polar bear on a motor bike by the rail way.", "Hot dogs, dogs and a baseball glove.",
                 "A man in a tie rides a train on the way to the air port at night."]  # fmt: skip
    runs = []
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", script, json.dumps(captions)], env=env, cwd=REPO,
                              capture_output=True, text=True, check=True)  # fmt: skip
        runs.append(json.loads(done.stdout))
    assert runs[0] == runs[1] == runs[2]
    # and they are the rule's labels: compounds (teddy bear, polar bear, motor bike, rail way, air port) first
    assert runs[0]["coco"][-3:] == [[3, 6, 21, 77], [16, 35, 52], [0, 6, 27]]
    assert runs[0]["voc2007"][-3:] == [[13, 18], [11], [14, 18]]
    assert runs[0]["nuswide"][-3:] == [[3, 47], [18], [0, 40, 42, 50, 71]]  # "rail way" consumes "way": no road


def test_read_captions_formats(tmp_path):
    coco = tmp_path / "captions_train2017.json"
    coco.write_text(json.dumps({"annotations": [{"id": 1, "image_id": 9, "caption": " A dog. "}, {"caption": "A cat."}]}))
    assert read_captions(coco) == ["A dog.", "A cat."]
    jsonl = tmp_path / "caps.jsonl"
    jsonl.write_text('{"caption": "A bus."}\n\n"A car."\n{"text": "A train."}\n')
    assert read_captions(jsonl) == ["A bus.", "A car.", "A train."]
    txt = tmp_path / "caps.txt"
    txt.write_text("A horse.\n\n  A sheep.  \n")
    assert read_captions(txt) == ["A horse.", "A sheep."]
    assert read_captions(jsonl, format="text")[0] == '{"caption": "A bus."}'


def test_read_captions_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="not a COCO captions file"):
        read_captions(bad)
    bad.write_text(json.dumps({"annotations": [{"caption": "ok"}, {"id": 3}]}))
    with pytest.raises(ValueError, match=r"annotations\[1\] has no 'caption'"):
        read_captions(bad)
    lines = tmp_path / "bad.jsonl"
    lines.write_text('{"caption": "ok"}\n{oops\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        read_captions(lines)
    lines.write_text('{"caption": "ok"}\n{"label": 3}\n')
    with pytest.raises(ValueError, match="line 2 needs a string"):
        read_captions(lines)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="holds no captions"):
        read_captions(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_captions(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="unknown caption format"):
        read_captions(lines, format="xml")


def _coco(tmp_path):
    coco = tmp_path / "captions_train2017.json"
    annotations = [{"id": i, "image_id": i // 5, "caption": f"caption {i}"} for i in (48, 67, 126, 148, 173)]
    coco.write_text(json.dumps({"annotations": annotations}))
    return coco


@pytest.mark.parametrize("form", ["list", "set", "tuple", "numpy int64", "numpy int32", "json", "lines"])
def test_caption_ids_select_the_official_sample_in_its_order(tmp_path, form):
    """TaI-DPT trains on the annotation ids its repository pickles (coco_caption_text_embed_sampled_idx.pkl), taken
    in that order: every form such a file of ids can take reads back the same ids and so the same captions."""
    ids = [173, 48, 126]
    path = tmp_path / ("ids.json" if form == "json" else "ids.txt" if form == "lines" else "ids.pkl")
    if form == "json":
        path.write_text(json.dumps(ids))
    elif form == "lines":
        path.write_text("\n".join(map(str, ids)) + "\n")
    else:
        value = {"list": ids, "set": set(ids), "tuple": tuple(ids), "numpy int64": np.array(ids, dtype=np.int64),
                 "numpy int32": np.array(ids, dtype=np.int32)}[form]  # fmt: skip
        path.write_bytes(pickle.dumps(value, protocol=5 if "numpy" in form else 2))
    read = read_caption_ids(path)
    assert read == (list(set(ids)) if form == "set" else ids) and all(type(i) is int for i in read)
    assert read_captions(_coco(tmp_path), ids=read) == [f"caption {i}" for i in read]


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_caption_id_files_never_run_code_and_say_what_is_wrong(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "ids.pkl"
    evil.write_bytes(pickle.dumps([1, _Boom()]))
    with pytest.raises(ValueError, match=r"ids.pkl is not a pickle of caption ids \(UnpicklingError: it refers to "
                       r"(posix|nt).system, which a list of caption ids never holds\); it is not loaded, for safety"):
        read_caption_ids(evil)
    assert not (tmp_path / "pwned.txt").exists()
    (tmp_path / "words.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(ValueError, match="holds list .*not a list of integer caption ids"):
        read_caption_ids(tmp_path / "words.json")
    with pytest.raises(FileNotFoundError, match="caption id file .*missing.pkl does not exist"):
        read_caption_ids(tmp_path / "missing.pkl")
    coco = _coco(tmp_path)
    with pytest.raises(ValueError, match=r"2 of the 3 caption ids are not annotation ids of .*captions_train2017.json "
                       r"\(e.g. \[5, 6\]\)"):
        read_captions(coco, ids=[5, 48, 6])
    (tmp_path / "caps.txt").write_text("a dog\n")
    with pytest.raises(ValueError, match="caption ids select COCO annotations: .*caps.txt is read as text"):
        read_captions(tmp_path / "caps.txt", ids=[1])


def test_limit_per_class_is_the_official_nuswide_rule():
    """Against the official loop (datasets/nuswide_distill.py) on random label sets: each caption goes to the rarest
    class it names (ties: the lower class index), each class keeps its first `limit` in corpus order."""
    from tinyprompt.data.captions import limit_per_class

    def official(labels, limit):
        order = torch.argsort(labels.sum(0), stable=True)
        by_class = {c: [] for c in range(labels.shape[1])}
        for i, row in enumerate(labels):
            by_class[next(c.item() for c in order if row[c] > 0.5)].append(i)
        return [i for c in by_class for i in by_class[c][:limit]]

    generator = torch.Generator().manual_seed(0)
    for _ in range(100):
        n, c = int(torch.randint(1, 60, (1,), generator=generator)), int(torch.randint(1, 8, (1,), generator=generator))
        labels = (torch.rand(n, c, generator=generator) < 0.3).to(torch.uint8)
        labels[labels.sum(1) == 0, 0] = 1  # labelled captions only, as label_captions keeps them
        limit = int(torch.randint(1, 10, (1,), generator=generator))
        assert limit_per_class(labels, limit).tolist() == official(labels, limit)


def test_template_sentences():
    sentences, labels = template_sentences(["dog", "hot dog"], templates=["a bad photo of the {}.", "art of the {}."])
    assert len(sentences) == 2 * (9 + 2) and labels.shape == (22, 2)
    assert sentences[:10] == ["a photo of a dog."] * 9 + ["a bad photo of the dog."]
    assert labels[:11, 0].all() and not labels[:11, 1].any() and labels[11:, 1].all()
    sentences, _ = template_sentences(["cat"])  # default: the 80 ImageNet templates
    assert len(sentences) == 9 + 80


def test_user_synonym_files(tmp_path):
    text = tmp_path / "mine.txt"
    text.write_text("# my classes\nsailing boat: sailboat, yacht\nperson: man, woman  # people\n\nhot dog:\n")
    classes = load_synonym_file(text)
    assert classes.classnames == ("sailing boat", "person", "hot dog")
    assert classes.synonyms[0] == ("sailing boat", "sailboat", "yacht")
    assert LabelMatcher(classes.synonyms)("A woman on a yacht with a hot dog") == [0, 1, 2]
    assert get_class_list(text).classnames == classes.classnames
    js = tmp_path / "mine.json"
    js.write_text(json.dumps({"dog": ["puppy"], "cat": []}))
    assert load_synonym_file(js).synonyms == (("dog", "puppy"), ("cat",))
    js.write_text(json.dumps(["dog"]))
    with pytest.raises(ValueError, match="one object"):
        load_synonym_file(js)
    text.write_text("dog, puppy\n")
    with pytest.raises(ValueError, match="line 1"):
        load_synonym_file(text)


def test_align_eval_classes_to_a_class_list():
    coco = get_class_list("coco")
    # COCO's instance category names ("motorcycle", "airplane") are synonyms of the prompt names
    assert coco.align(["person", "motorcycle", "airplane", "dining table"]) == [0, 3, 4, 60]
    assert get_class_list("voc").align(["potted_plant", "tvmonitor"]) == [15, 19]
    with pytest.raises(ValueError, match="not in class list"):
        coco.align(["unicorn"])


def test_words_tokenizer():
    assert words("A Hot-Dog, two dogs' bowls!") == ["a", "hot-dog", ",", "two", "dogs", "'", "bowls", "!"]
