"""Captions as training data: corpus readers, labels derived from the text, template sentences.

TaI-DPT ("Texts as Images in Prompt Tuning for Multi-Label Image Recognition", Guo et al.,
arXiv 2211.12739) trains multi-label prompts on captions alone. A caption's labels are the classes
whose synonyms (`tinyprompt.data.classlists`) occur in it; captions that name no class are dropped.

The official code lemmatises with NLTK (tokenizer, POS tagger, WordNet), which needs data downloads.
Here a small deterministic rule set stands in (`lemma`): plurals, -ing / -ed verb forms, possessives
and a table of irregular forms, applied in the same way to the caption and to the synonyms, so a match
never depends on which surface form either side uses. Matching follows the official rule: multi-word
synonyms (compounds) first, each occurrence consumed so its words cannot fire again ("teddy bear"
does not also label bear), then single words; a compound's space-stripped form ("motorcycle") counts
as a single word. Two deliberate differences: a consumed compound leaves a barrier, so its neighbours
never join into a new match (the official string replacement can join them), and compounds are tried
longest first, then alphabetically (the official order is Python set order, which changes with
PYTHONHASHSEED). The CLIP input stays the original caption; only the labels come from the lemmas.

Which captions: the official code does not train on the whole COCO corpus but on a fixed sample of it, the
annotation ids in `coco_caption_text_embed_sampled_idx.pkl` (a file of its repository), taken in that order from
`COCO/annotations/captions_train2017.json`. `read_captions(path, ids=read_caption_ids(file))` reads the same
sample; `read_caption_ids` reads such a pickle without running code from it (only lists, tuples, sets and numpy
arrays of integers are rebuilt), or the ids as a JSON list or one per line. For NUS-WIDE it reads OpenImages'
localized narratives and keeps at most 1000 labelled ones per class (`limit_per_class`).
"""
import io
import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "words",
    "lemma",
    "LabelMatcher",
    "CaptionReport",
    "label_captions",
    "read_captions",
    "read_caption_ids",
    "limit_per_class",
    "template_sentences",
]

# word tokens (hyphenated words stay whole, as NLTK's Treebank tokenizer keeps "hot-dog") and punctuation
_TOKEN = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*|[^\w\s]")
_VOWELS = set("aeiou")

_IRREGULAR = {
    "men": "man", "women": "woman", "children": "child", "teeth": "tooth", "feet": "foot", "geese": "goose",
    "mice": "mouse", "oxen": "ox", "knives": "knife", "wives": "wife", "lives": "life", "leaves": "leaf",
    "wolves": "wolf", "shelves": "shelf", "halves": "half", "calves": "calf", "loaves": "loaf",
    "scarves": "scarf", "thieves": "thief", "hooves": "hoof", "buses": "bus", "busses": "bus",
    "gases": "gas", "tomatoes": "tomato", "potatoes": "potato", "heroes": "hero", "volcanoes": "volcano",
    "mangoes": "mango", "mosquitoes": "mosquito", "cacti": "cactus", "fungi": "fungus", "skis": "ski",
    "taxis": "taxi", "kiwis": "kiwi", "bikinis": "bikini",
    "lying": "lie", "tying": "tie", "dying": "die", "ran": "run", "rode": "ride", "ridden": "ride",
    "sat": "sit", "flew": "fly", "flown": "fly", "swam": "swim", "swum": "swim", "held": "hold",
    "stood": "stand", "is": "be", "are": "be", "was": "be", "were": "be", "am": "be", "been": "be",
}
# nouns that only look like -ing / -ed forms (their "stem" would be another word)
_KEEP = {
    "building", "wedding", "clothing", "ceiling", "evening", "morning", "during", "pudding", "icing",
    "frosting", "stuffing", "topping", "railing", "awning", "sibling", "duckling", "dumpling", "herring",
    "bedding", "something", "nothing", "anything", "everything", "hundred", "sacred", "naked", "wicked",
}


def words(text: str) -> list:
    """Lower-cased word and punctuation tokens of `text`."""
    return _TOKEN.findall(text.lower())


def _verb_stem(stem: str, word: str) -> str:
    """The base form of a verb whose -ing / -ed ending was cut off, leaving `stem`."""
    if not _VOWELS & set(stem.replace("y", "a")):
        return word  # "thing", "bring", "red", "shed": no vowel left, not an inflection
    last = stem[-1]
    if len(stem) > 2 and last == stem[-2] and last not in _VOWELS | set("lsfz"):
        return stem[:-1]  # sitting -> sit, potted -> pot (but falling, dressed, stuffed keep theirs)
    if last in "cvzu" or (last == "g" and stem[-2] in "dr") or (last == "s" and stem[-2] in _VOWELS):
        return stem + "e"  # dancing, leaving, blazing, continued, judging, charging, using, closed
    vowel_groups = len(re.findall(r"[aeiouy]+", stem))
    if (
        len(stem) >= 3
        and last not in _VOWELS | set("wxy")
        and stem[-2] in _VOWELS
        and stem[-3] not in _VOWELS
        and vowel_groups == 1
    ):
        return stem + "e"  # one syllable consonant-vowel-consonant: riding, taking, baked, skating
    return stem


def lemma(word: str) -> str:
    """The base form of one lower-cased word token: plural, -ing/-ed and possessive rules, irregulars."""
    if word.endswith(("'s", "’s")):
        word = word[:-2]  # possessive (a trailing apostrophe is already a token of its own)
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word in _KEEP or not word.isalpha():
        return word  # hyphenated words and numbers stay as they are
    if len(word) > 4 and word.endswith("ing"):
        return _verb_stem(word[:-3], word)
    if len(word) > 3 and word.endswith("ed") and not word.endswith("eed"):
        if word.endswith("ied"):
            return word[:-3] + "y" if len(word) > 4 else word[:-1]  # carried -> carry, tied -> tie
        return _verb_stem(word[:-2], word)
    if len(word) <= 3 or not word.endswith("s") or word.endswith(("ss", "us", "is")):
        return word  # bus, glass, tennis, cactus
    if word.endswith("ies"):
        return word[:-3] + "y" if len(word) > 4 else word[:-1]  # puppies -> puppy, ties -> tie
    if word.endswith(("sses", "xes", "ches", "shes", "zzes")):
        return word[:-2]  # glasses, boxes, benches, dishes
    return word[:-1]


class LabelMatcher:
    """Caption -> sorted class indices, from per-class synonym lists (see the module docstring)."""

    def __init__(self, synonyms, max_words=None):
        self.n_cls = len(synonyms)
        self.max_words = max_words  # the official NUS-WIDE reader looks at the first 77 tokens only
        self.singles, compounds = {}, {}
        for c, syns in enumerate(synonyms):
            for s in syns:
                toks = words(s)
                if len(toks) > 1:
                    self._add(compounds, tuple(lemma(t) for t in toks), c, s)
                    self._add(self.singles, lemma("".join(toks)), c, s)  # "motor cycle" -> "motorcycle"
                elif toks:
                    self._add(self.singles, lemma(toks[0]), c, s)
        # first lemma -> [(compound, class)], longest first then alphabetical: one deterministic order
        self.compounds = {}
        for comp, c in sorted(compounds.items(), key=lambda kv: (-len(kv[0]), kv[0])):
            self.compounds.setdefault(comp[0], []).append((comp, c))

    def _add(self, table, key, cls, synonym):
        if table.setdefault(key, cls) != cls:
            raise ValueError(
                f"synonym {synonym!r} (class {cls}) and a synonym of class {table[key]} both read as "
                f"{' '.join(key) if isinstance(key, tuple) else key!r}; a synonym may mark one class only"
            )

    def __call__(self, text: str) -> list:
        toks = [lemma(t) for t in words(text)][: self.max_words]
        found, i = set(), 0
        while i < len(toks):
            for comp, c in self.compounds.get(toks[i], ()):
                if tuple(toks[i : i + len(comp)]) == comp:
                    found.add(c)
                    i += len(comp)  # consumed: these words fire nothing else
                    break
            else:
                if toks[i] in self.singles:
                    found.add(self.singles[toks[i]])
                i += 1
        return sorted(found)


@dataclass
class CaptionReport:
    """How many captions were read, kept (they name a class, within the per-class limit) and kept per class."""

    classnames: list
    total: int
    kept: int
    per_class: list  # (C,) number of kept captions that carry each class
    over_limit: int = 0  # captions that named a class but were beyond their class's limit (`limit_per_class`)

    def format(self) -> str:
        unnamed = self.total - self.kept - self.over_limit
        lines = [f"captions: {self.total} read, {self.kept} kept, {unnamed} dropped (no class named)"
                 + (f", {self.over_limit} over the per-class limit" if self.over_limit else "")]
        width = max(len(n) for n in self.classnames)
        lines += [f"  {n:<{width}}  {k}" for n, k in zip(self.classnames, self.per_class)]
        return "\n".join(lines)


def label_captions(captions, classnames, synonyms, max_words=None):
    """(kept captions, labels uint8 [N, C], CaptionReport); captions that name no class are dropped."""
    matcher = LabelMatcher(synonyms, max_words=max_words)
    kept, rows = [], []
    for cap in captions:
        idx = matcher(cap)
        if idx:
            kept.append(cap)
            rows.append(idx)
    labels = torch.zeros(len(kept), len(classnames), dtype=torch.uint8)
    for n, idx in enumerate(rows):
        labels[n, idx] = 1
    report = CaptionReport(list(classnames), len(captions), len(kept), labels.sum(0).tolist())
    return kept, labels, report


def _read_coco(path: Path, text: str, ids=None) -> list:
    """The captions in file order, or those of annotation `ids` in the order of `ids`."""
    try:
        annotations = json.loads(text)["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path} is not a COCO captions file ({type(e).__name__}: {e}); expected "
            '{"annotations": [{"caption": ...}, ...]} as in captions_train2017.json'
        ) from None
    out, by_id = [], {}
    for n, ann in enumerate(annotations):
        if not isinstance(ann, dict) or not isinstance(ann.get("caption"), str):
            raise ValueError(f"{path}: annotations[{n}] has no 'caption' string: {str(ann)[:200]}")
        out.append(ann["caption"].strip())
        if ids is not None:
            by_id[ann.get("id")] = out[-1]
    if ids is None:
        return out
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} of the {len(ids)} caption ids are not annotation ids of {path} (e.g. "
                         f"{missing[:3]}): the ids must come from this file (TaI-DPT's sample: from "
                         f"captions_train2017.json)")  # fmt: skip
    return [by_id[i] for i in ids]


def _read_jsonl(path: Path, text: str) -> list:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} line {n} is not valid JSON ({e}): {line[:200]!r}") from None
        cap = row if isinstance(row, str) else row.get("caption", row.get("text")) if isinstance(row, dict) else None
        if not isinstance(cap, str):
            raise ValueError(f"{path} line {n} needs a string or an object with a 'caption' (or 'text') string")
        out.append(cap.strip())
    return out


def read_captions(path, format: str = "auto", ids=None) -> list:
    """Captions from a COCO captions JSON, a JSONL file or a text file with one caption per line.

    `format` is "coco", "jsonl", "text" or "auto" (by suffix: .json -> coco, .jsonl -> jsonl, else text).
    `ids`: only the COCO annotations with these ids, in this order (TaI-DPT's sample, `read_caption_ids`).
    """
    path = Path(path)
    if format == "auto":
        format = {".json": "coco", ".jsonl": "jsonl"}.get(path.suffix.lower(), "text")
    readers = {"coco": _read_coco, "jsonl": _read_jsonl, "text": lambda p, t: [s.strip() for s in t.splitlines()]}
    if format not in readers:
        raise ValueError(f"unknown caption format {format!r}: use one of {['auto', *readers]}")
    if ids is not None and format != "coco":
        raise ValueError(f"caption ids select COCO annotations: {path} is read as {format}, which has no ids (pass "
                         f"the COCO captions .json they come from)")  # fmt: skip
    if not path.is_file():
        raise FileNotFoundError(f"caption file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    captions = [c for c in (_read_coco(path, text, ids) if ids is not None else readers[format](path, text)) if c]
    if not captions:
        raise ValueError(f"caption file {path} holds no captions")
    return captions


def limit_per_class(labels: torch.Tensor, limit: int) -> torch.Tensor:
    """Indices of the captions kept when each class keeps at most `limit`: TaI-DPT's NUS-WIDE corpus rule
    (datasets/nuswide_distill.py, max_sample_per_cls = 1000). Each caption counts for the rarest class it names
    (fewest captions in `labels` (N, C); ties by class index: the official unstable argsort leaves them open), and
    each class keeps its first `limit` captions in corpus order. Returns the indices class by class, as the
    official list is built; a caption keeps all its labels."""
    counts = labels.sum(0, dtype=torch.long)
    order = torch.argsort(counts, stable=True)  # rarest class first
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    # the rarest class each caption names: its labelled class of lowest rank (-1: a caption that names none)
    owner = torch.where(labels.bool(), rank, len(order)).argmin(1)  # (N,) class indices
    owner[~labels.bool().any(1)] = -1
    kept = [torch.nonzero(owner == c).flatten()[:limit] for c in range(labels.shape[1])]
    return torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long)


class _IdsUnpickler(pickle.Unpickler):
    """Rebuilds lists, tuples, sets and numpy arrays of integers, and refuses every other global: a pickle of
    caption ids needs nothing else, and nothing in it can run code."""

    ALLOWED = {("builtins", "set"), ("builtins", "frozenset"), ("builtins", "list"), ("builtins", "tuple"),
               ("builtins", "int"), ("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype"),
               ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}  # fmt: skip

    def find_class(self, module, name):
        if (module.replace("__builtin__", "builtins"), name) not in self.ALLOWED:  # protocol <= 2 names Python 2's
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a list of caption ids never holds")
        return super().find_class(module, name)


def read_caption_ids(path) -> list:
    """Caption (COCO annotation) ids: TaI-DPT's `coco_caption_text_embed_sampled_idx.pkl` (a pickle, read without
    running code from it), a JSON list, or one id per line. The order is kept; so are repeats."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption id file {path} does not exist")
    data = path.read_bytes()
    if path.suffix.lower() in (".pkl", ".pickle"):
        try:
            ids = _IdsUnpickler(io.BytesIO(data)).load()
        except Exception as e:  # any failure to rebuild: not a pickle of ids, and nothing of it ran
            raise ValueError(f"{path} is not a pickle of caption ids ({type(e).__name__}: {e}); it is not loaded, "
                             f"for safety: pass the ids as a JSON list or one per line") from None  # fmt: skip
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
    elif path.suffix.lower() == ".json":
        ids = json.loads(data.decode("utf-8"))
    else:
        ids = data.decode("utf-8").split()
    try:
        ids = [int(i) for i in ids]
    except (TypeError, ValueError):
        raise ValueError(f"{path} holds {type(ids).__name__} {str(ids)[:100]}, not a list of integer caption "
                         f"ids") from None
    if not ids:
        raise ValueError(f"{path} holds no caption ids")
    return ids


def template_sentences(classnames, templates=None, photo_repeats: int = 9):
    """(sentences, labels uint8 [S, C]): per class, "a photo of a {}." x photo_repeats + each template.

    The official datasets append these one-class sentences to the caption corpus (9 copies of
    "a photo of a {}." and the 80 ImageNet templates per class), so every class has training text.
    """
    if templates is None:
        from tinyprompt.templates import IMAGENET_TEMPLATES

        templates = IMAGENET_TEMPLATES
    sentences, labels = [], []
    for c, name in enumerate(classnames):
        for t in ["a photo of a {}."] * photo_repeats + list(templates):
            sentences.append(t.format(name))
            labels.append(c)
    onehot = torch.zeros(len(sentences), len(classnames), dtype=torch.uint8)
    onehot[torch.arange(len(sentences)), torch.tensor(labels, dtype=torch.long)] = 1
    return sentences, onehot
