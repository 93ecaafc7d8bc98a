"""tinyprompt's own byte-level BPE trainer: learns a merges file that `SimpleTokenizer` loads.

Byte-pair encoding (Sennrich, Haddow, Birch, "Neural Machine Translation of Rare Words with Subword
Units", arXiv 1508.07909) over UTF-8 bytes, as CLIP's tokenizer applies it ("Learning Transferable
Visual Models From Natural Language Supervision", Radford et al., arXiv 2103.00020). Training sees the
text exactly as `tinyprompt.tokenizer` does, through the same imported functions: `clean` (ftfy, HTML
unescape, whitespace, lower case), the pre-tokeniser regex, and the bytes -> printable symbols map, with
`</w>` fused onto the last symbol of each piece. Then, starting from single byte symbols, the most frequent
adjacent pair (counted over the corpus, each distinct piece weighted by how often it occurs) is merged
everywhere, and again, until `num_merges` merges are made or no pair occurs `min_count` times.

Deterministic: a tie in count goes to the smallest pair in string order (first symbol, then second),
so the merges never depend on dict or set order, PYTHONHASHSEED or the order of the texts.
The file written is OpenAI's format: a header line, then one "first second" line per merge, in order;
the vocabulary it gives is 512 byte symbols, one id per merge, then <|startoftext|> and <|endoftext|>.
"""
from collections import Counter, defaultdict
from pathlib import Path

from tinyprompt.io import atomic_write
from tinyprompt.tokenizer import _PRETOKENIZE, EOT, SOT, bytes_to_unicode, clean

__all__ = ["count_pieces", "train_bpe", "write_merges"]

HEADER = "#version: 0.2 - trained by tinyprompt.bpe"


def count_pieces(texts) -> Counter:
    """How often each pre-tokenised piece occurs in `texts` (cleaned as the tokenizer cleans them)."""
    counts = Counter()
    for text in texts:
        counts.update(p for p in _PRETOKENIZE.findall(clean(text)) if p not in (SOT, EOT))  # specials never split
    return counts


def _merge(symbols: tuple, pair: tuple) -> tuple:
    """Every occurrence of `pair` in `symbols` fused, left to right, without overlap (as the tokenizer)."""
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def train_bpe(texts, num_merges: int, min_count: int = 2) -> list:
    """The first `num_merges` merges, as (first, second) symbol pairs, learned from an iterable of strings.

    Stops early when the most frequent pair occurs fewer than `min_count` times (1: until every piece
    is a single symbol). Pair counts are updated incrementally: a merge only revisits the pieces that
    hold its pair.
    """
    if num_merges < 0 or min_count < 1:
        raise ValueError(f"num_merges must be >= 0 and min_count >= 1, got {num_merges} and {min_count}")
    byte_symbol = bytes_to_unicode()
    pieces = sorted(count_pieces(texts).items())  # sorted: the order never matters, but stays reproducible
    words, weights = [], []
    for piece, count in pieces:
        symbols = [byte_symbol[b] for b in piece.encode("utf-8")]
        symbols[-1] += "</w>"
        words.append(tuple(symbols))
        weights.append(count)
    pair_count = Counter()  # (first, second) -> weighted occurrences over the corpus
    holders = defaultdict(set)  # pair -> indices of the pieces that hold it (may keep stale entries)
    for index, symbols in enumerate(words):
        for pair in zip(symbols, symbols[1:]):
            pair_count[pair] += weights[index]
            holders[pair].add(index)
    merges = []
    while len(merges) < num_merges and pair_count:
        pair, count = min(pair_count.items(), key=lambda item: (-item[1], item[0]))  # most frequent, then smallest
        if count < min_count:
            break
        merges.append(pair)
        for index in holders.pop(pair):
            old, weight = words[index], weights[index]
            new = _merge(old, pair)
            if new == old:  # a stale entry: an earlier merge already consumed the pair here
                continue
            for p in zip(old, old[1:]):
                pair_count[p] -= weight
                if pair_count[p] == 0:
                    del pair_count[p]
            for p in zip(new, new[1:]):
                pair_count[p] += weight
                holders[p].add(index)
            words[index] = new
    return merges


def write_merges(merges, path, header: str = HEADER) -> Path:
    """Write `merges` as a merges file (header line, then "first second" lines), atomically."""
    if "\n" in header:
        raise ValueError("the header must be a single line: the tokenizer skips exactly one line")
    text = header + "\n" + "".join(f"{first} {second}\n" for first, second in merges)
    with atomic_write(path) as f:
        f.write(text.encode("utf-8"))
    return Path(path)
