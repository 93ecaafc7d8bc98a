"""tinyprompt.bpe: merges counted by hand, tie-breaking, a naive reference twin, hash-seed independence,
and merges files that SimpleTokenizer loads (round trips, every trained word one token)."""
import os
import subprocess
import sys
from collections import Counter

import pytest

from tinyprompt.bpe import count_pieces, train_bpe, write_merges
from tinyprompt.tokenizer import SimpleTokenizer, bytes_to_unicode, clean

CORPUS = [
    "a small red circle on a striped blue background.",
    "A photo of a LARGE green star, and a ring!",
    "aaaa abab abab bbbb caf\u00e9 na\u00efve 1234 it's the 3rd time",
    "the lower lowest low slower newest widest",
]


def naive_bpe(texts, num_merges, min_count=2):
    """Reference twin: recount every pair of every piece before each merge."""
    byte_symbol = bytes_to_unicode()
    words = Counter()
    for piece, count in count_pieces(texts).items():
        symbols = [byte_symbol[b] for b in piece.encode("utf-8")]
        symbols[-1] += "</w>"
        words[tuple(symbols)] += count
    merges = []
    while len(merges) < num_merges:
        pairs = Counter()
        for symbols, count in words.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += count
        if not pairs:
            break
        pair, count = min(pairs.items(), key=lambda item: (-item[1], item[0]))
        if count < min_count:
            break
        merges.append(pair)
        merged = Counter()
        for symbols, n in words.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    return merges


def test_pieces_are_the_tokenizers_pretokenisation():
    counts = count_pieces(["A  Red,   circle!! it's <|endoftext|>", "a red"])
    assert counts == Counter({"a": 2, "red": 2, ",": 1, "circle": 1, "!!": 1, "it": 1, "'s": 1})


def test_merges_counted_by_hand():
    # pieces: "ab" x3, "cd" x2 -> (a, b</w>) occurs 3 times, (c, d</w>) twice, then nothing repeats
    assert train_bpe(["ab ab ab cd cd"], num_merges=10) == [("a", "b</w>"), ("c", "d</w>")]
    assert train_bpe(["ab ab ab cd cd"], num_merges=1) == [("a", "b</w>")]
    assert train_bpe(["ab ab ab cd"], num_merges=10) == [("a", "b</w>")]  # (c, d</w>) occurs once < min_count 2
    assert train_bpe(["abc abc"], num_merges=10) == [("a", "b"), ("ab", "c</w>")]  # tie (a,b)/(b,c</w>): smallest


def test_ties_go_to_the_smallest_pair_whatever_the_text_order():
    expected = [("a", "b</w>"), ("c", "d</w>"), ("e", "f</w>")]
    for texts in (["ab cd ef"], ["ef cd ab"], ["cd", "ef", "ab"]):
        assert train_bpe(texts, num_merges=10, min_count=1) == expected


@pytest.mark.parametrize("min_count", [1, 2, 3])
def test_incremental_counts_match_the_naive_twin(min_count):
    assert train_bpe(CORPUS * 3, 500, min_count) == naive_bpe(CORPUS * 3, 500, min_count)


def test_independent_of_the_hash_seed(tmp_path):
    code = ("import sys; from tinyprompt.bpe import train_bpe; "
            "print(train_bpe(sys.argv[1:], 300, min_count=1))")
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run([sys.executable, "-c", code, *CORPUS], env=env, capture_output=True, text=True, check=True)
        outputs.add(result.stdout)
    assert len(outputs) == 1 and outputs.pop().startswith("[(")


def test_merges_file_loads_and_round_trips(tmp_path):
    merges = train_bpe(CORPUS, num_merges=10_000, min_count=1)  # until every piece is one symbol
    path = write_merges(merges, tmp_path / "merges.txt")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#version") and lines[1:] == [f"{a} {b}" for a, b in merges]
    tok = SimpleTokenizer(path)
    assert tok.vocab_size == 512 + len(merges) + 2
    for text in CORPUS:
        ids = tok.encode(text)
        pieces = list(count_pieces([text]).elements())
        assert len(ids) == sum(count_pieces([text]).values())  # one id per piece: every piece is a merge result
        assert sorted(tok.decode(ids).split()) == sorted(pieces)
        assert tok.decode(ids).replace(" ", "") == clean(text).replace(" ", "")


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_merges must be >= 0"):
        train_bpe(CORPUS, -1)
    with pytest.raises(ValueError, match="single line"):
        write_merges([("a", "b")], "unused.txt", header="two\nlines")
    assert train_bpe(CORPUS, 0) == [] and train_bpe([], 5) == []
