"""tinyprompt.tokenize against open_clip's tokenizer (github.com/mlfoundations/open_clip) on a fuzzed corpus.

OpenAI's tokenizer (openai/CLIP clip/simple_tokenizer.py) is the reference; open_clip's SimpleTokenizer is a copy of
it with a `clean` option. 'lower' (its default: what `open_clip.tokenize` and `open_clip.get_tokenizer('ViT-B-32')`
use) is OpenAI's cleaning: ftfy, html.unescape twice, whitespace collapse, lower-case; 'whitespace' keeps the case
(for Hugging Face tokenizers) and 'canonicalize' drops punctuation (SigLIP). Its whitespace collapse is str.split
where OpenAI's is regex's \\s+; the two differ only on U+001C..U+001F, which ftfy deletes first, so ids agree.

One real difference, pinned by `test_special_token_strings_are_openais`: open_clip names its special tokens
`<start_of_text>` / `<end_of_text>`, OpenAI `<|startoftext|>` / `<|endoftext|>`. Typed inside a text, OpenAI's
strings are ids 49406 / 49407 for OpenAI (golden cases.json) and tinyprompt but BPE pieces for open_clip, and
open_clip's strings the other way round; decode(49406) is "<|startoftext|>" here, "<start_of_text>" there. The fuzzed
corpus holds none of the four strings (checked), so everything else is compared id for id.

Skipped unless open_clip imports (CI does not install it): pip install --no-deps open_clip_torch, plus what
tests/test_openclip.py's docstring lists. Run as a script to print the corpus counts and timings.
"""
import random
import time

import pytest
import torch

import tinyprompt
from tinyprompt.tokenizer import get_tokenizer

try:
    open_clip = pytest.importorskip("open_clip", reason="open_clip is not installed (how: this file's docstring)")
except RuntimeError as err:  # a torchvision built for another torch: "operator torchvision::nms does not exist"
    pytest.skip(f"open_clip is installed but does not import: {err}", allow_module_level=True)

N_TEXTS, SEED = 20_000, 0
SOT, EOT = 49406, 49407

WORDS = ("a", "photo", "of", "the", "cat", "dog", "golden", "retriever", "boeing", "airplane", "bird", "car", "ship",
         "truck", "x", "i", "o", "quick", "brown", "fox", "jumps", "over", "lazy", "tabby", "diagram", "sketch",
         "painting", "satellite", "image", "texture", "flower", "pizza", "tench", "goldfish", "hello", "world", "rock",
         "n", "roll", "don", "won", "can", "shouldn", "ain", "isn", "it", "we", "you", "they", "he", "she", "art")
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
APOSTROPHES = ("'", "'", "'", "\u2019", "\u2018", "`", "\u02bc")  # ASCII thrice as often; ftfy makes ’ and ‘ ASCII
SPACES = (" ", "  ", "\t", "\n", "\r\n", "\r", "\x0b", "\x0c", "\xa0", "\u2003", "\u3000", "\u2028", "\u2029", "\x85",
          "\u1680", "\u202f", "\u205f", "\x1c", "\x1f", " \t \n ")
ENTITIES = ("&amp;", "&amp;amp;", "&amp;amp;amp;", "&#39;", "&#x27;", "&lt;", "&gt;", "&quot;", "&nbsp;", "&eacute;",
            "&#233;", "&#xe9;", "&#128512;", "&Tab;", "&NewLine;", "&#133;", "&#x85;", "&#28;", "&#0;", "&#xD800;",
            "&#x110000;", "&amp;lt;b&amp;gt;", "&copy", "&", "&;", "&#;", "&#x;", "&hellip;", "&mdash;", "&unknown;",
            "&AMP;", "&#8217;", "&#x2028;", "&#160;")
ACCENTED = ("café", "naïve", "Ångström", "straße", "İstanbul", "ǅemal", "e\u0301", "A\u030a", "façade", "Ærøskøbing",
            "ŁÓDŹ", "Ελληνικά", "Кириллица", "ÿ", "ĳ", "Ǆ", "ﬁsh", "ﬂow", "ǈ", "Σίσυφος", "ΣΑΣ", "ẞ")
CJK = ("北京", "東京", "서울", "日本語", "中文字符", "ｆｕｌｌｗｉｄｔｈ", "ＡＢＣ１２３", "カタカナ", "ひらがな", "한국어", "〜", "、。",
       "ﾊﾝｶｸ", "①②", "㍿")
EMOJI = ("😀", "👍🏽", "🇺🇸", "🇯🇵", "👨\u200d👩\u200d👧", "❤️", "🐶🐱", "✨", "🏳️\u200d🌈", "🤖", "1️⃣", "©", "™")
ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\ufeff", "\u00ad", "\u2060", "\u180e", "\u034f", "\u061c", "\u2066")
ODD = ("cafÃ©", "â€™", "Ã¼ber", "\x00", "\x1b[31mred\x1b[0m", "\x7f", "\x81", "\x9d", "\ufffd", "\U0001d400",
       "\U000e0041", "½", "²", "Ⅻ", "٣٤", "١٢٣", "۳", "\u0660")


def _case(rng, word):
    """The word as is, upper, title, or in random case per letter."""
    pick = rng.randrange(4)
    if pick == 3:
        return "".join(c.upper() if rng.random() < 0.5 else c for c in word)
    return (word, word.upper(), word.title())[pick]


def _codepoint(rng):
    """Any code point but a surrogate (which no UTF-8 string holds)."""
    while True:
        c = rng.randrange(0x110000) if rng.random() < 0.5 else rng.randrange(0x80, 0x3000)
        if not 0xD800 <= c <= 0xDFFF:
            return chr(c)


PIECES = (  # (weight, maker)
    (30, lambda rng: _case(rng, rng.choice(WORDS))),
    (8, lambda rng: _case(rng, rng.choice(WORDS)) + rng.choice(APOSTROPHES) + _case(rng, rng.choice(CONTRACTIONS)[1:])),
    (3, lambda rng: _case(rng, rng.choice(CONTRACTIONS))),  # a contraction on its own
    (8, lambda rng: "".join(rng.choice("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") for _ in range(rng.randint(1, 4)))),
    (6, lambda rng: "".join(rng.choice("0123456789.,") for _ in range(rng.randint(1, 8)))),
    (6, lambda rng: rng.choice(ENTITIES)),
    (5, lambda rng: _case(rng, rng.choice(ACCENTED))),
    (4, lambda rng: rng.choice(CJK)),
    (4, lambda rng: rng.choice(EMOJI)),
    (3, lambda rng: rng.choice(ZERO_WIDTH)),
    (3, lambda rng: rng.choice(ODD)),
    (4, lambda rng: "".join(_codepoint(rng) for _ in range(rng.randint(1, 3)))),
)
WEIGHTS = [w for w, _ in PIECES]


def _separator(rng):
    r = rng.random()
    return " " if r < 0.6 else "" if r < 0.8 else "".join(rng.choice(SPACES) for _ in range(rng.randint(1, 3)))


def _long_word(rng):
    """One piece of text that needs more than 77 tokens."""
    unit = rng.choice(("a", "ab", "xyz", "supercalifragilistic", "0123456789", "北", "😀", "é", "!?", "&amp;", "zq"))
    if unit == "zq":  # random letters: BPE merges little
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(200, 600)))
    return _case(rng, unit) * rng.randint(80, 400)


def fuzz_text(rng) -> str:
    kind = rng.random()
    if kind < 0.02:
        return ""
    if kind < 0.04:  # only whitespace
        return "".join(rng.choice(SPACES) for _ in range(rng.randint(1, 6)))
    if kind < 0.07:
        return _long_word(rng) if rng.random() < 0.7 else rng.choice(WORDS) + " " + _long_word(rng)
    n = rng.randint(1, 12) if kind < 0.95 else rng.randint(40, 120)  # 5% long texts: truncated
    parts = []
    for maker in rng.choices([m for _, m in PIECES], WEIGHTS, k=n):
        parts += [maker(rng), _separator(rng)]
    return "".join(parts)


def corpus(n: int = N_TEXTS, seed: int = SEED) -> list:
    rng = random.Random(seed)
    return [fuzz_text(rng) for _ in range(n)]


@pytest.fixture(scope="module")
def texts():
    return corpus()


@pytest.fixture(scope="module")
def reference():
    tokenizer = open_clip.get_tokenizer("ViT-B-32")  # OpenAI's tokenizer config: SimpleTokenizer(clean='lower')
    assert isinstance(tokenizer, open_clip.tokenizer.SimpleTokenizer) and tokenizer.context_length == 77
    assert tokenizer.clean_fn is open_clip.tokenizer.get_clean_fn("lower")  # OpenAI's basic + whitespace + lower
    return tokenizer


@pytest.fixture(scope="module")
def both(texts, reference):
    return tinyprompt.tokenize(texts, truncate=True), reference(texts)


def _ids(row) -> list:
    """A tokenized row through its last non-zero id (the EOT), without the padding."""
    return row[: int(row.ne(0).nonzero().max()) + 1].tolist()


def test_fuzzed_corpus_ids_equal_open_clips(texts, both):
    ours, theirs = both
    assert ours.shape == theirs.shape == (N_TEXTS, 77) and ours.dtype == theirs.dtype == torch.long
    differ = (ours != theirs).any(dim=1).nonzero().flatten().tolist()
    report = [f"{texts[i]!r}: tinyprompt {_ids(ours[i])}, open_clip {_ids(theirs[i])}" for i in differ[:5]]
    assert not differ, f"{len(differ)} of {N_TEXTS} texts differ, e.g.\n" + "\n".join(report)
    # what the corpus exercised, on the ids (so a change to the generator cannot quietly drop a case)
    assert (((ours == SOT) | (ours == EOT)).sum(dim=1) == 2).all()  # only SOT and EOT: no special string typed
    eot_at = (ours == EOT).long().argmax(dim=1)
    assert int((eot_at == 76).sum()) > 1000  # truncated (the last id forced to EOT)
    assert int((eot_at == 1).sum()) > 500  # empty, only whitespace, or all removed by ftfy: [SOT, EOT]
    assert sum(not t.isascii() for t in texts) > 10_000 and sum("&" in t for t in texts) > 3000


def test_module_level_tokenize_is_the_same(texts, both):
    sample = texts[:500]
    assert torch.equal(open_clip.tokenize(sample), both[1][:500])  # open_clip.tokenize: SimpleTokenizer() defaults


def test_decode_equals_open_clips(texts, both, reference):
    ours, theirs = get_tokenizer(), reference
    rows = both[0]
    for i in range(N_TEXTS):  # the encoded corpus, without SOT / EOT / padding
        eot = int((rows[i] == EOT).nonzero()[0])
        ids = rows[i, 1:eot].tolist()
        assert ours.decode(ids) == theirs.decode(ids), texts[i]
    rng = random.Random(1)
    for _ in range(3000):  # any ids but the two specials: broken UTF-8 (byte-level ids alone) decodes with U+FFFD
        top = 512 if rng.random() < 0.5 else SOT
        ids = [rng.randrange(top) for _ in range(rng.randint(0, 20))]
        assert ours.decode(ids) == theirs.decode(ids), ids



def test_special_token_strings_are_openais(reference):
    """The one difference found: the special tokens' strings (see the module docstring). OpenAI's ids are the
    golden file's (openai/CLIP: "<|startoftext|>" -> [49406], "hello <|endoftext|> world" -> [3306, 49407, 1002])."""
    ours = get_tokenizer()
    assert ours.encode("<|startoftext|>") == [SOT] and ours.encode("hello <|endoftext|> world") == [3306, EOT, 1002]
    assert reference.encode("<|startoftext|>") == [27, 347, 993, 6659, 4160, 91, 285]  # "<|", "start", "of", ...
    assert reference.encode("hello <|endoftext|> world") == [3306, 27, 347, 40786, 4160, 91, 285, 1002]
    assert ours.encode("<start_of_text>") == [283, 1572, 318, 539, 318, 4160, 285] and \
        reference.encode("<start_of_text>") == [SOT]
    assert reference.encode("<end_of_text>") == [EOT] and EOT not in ours.encode("<end_of_text>")
    assert (ours.decode([SOT, EOT]), reference.decode([SOT, EOT])) == ("<|startoftext|><|endoftext|>",
                                                                      "<start_of_text><end_of_text>")


if __name__ == "__main__":
    start = time.perf_counter()
    texts = corpus()
    made = time.perf_counter()
    ours = tinyprompt.tokenize(texts, truncate=True)
    mine = time.perf_counter()
    theirs = open_clip.get_tokenizer("ViT-B-32")(texts)
    done = time.perf_counter()
    print(f"{len(texts)} texts ({sum(map(len, texts))} characters): corpus {made - start:.2f} s, tinyprompt "
          f"{mine - made:.2f} s, open_clip {done - mine:.2f} s; {int((ours != theirs).any(dim=1).sum())} differ")
