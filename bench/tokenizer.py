"""Tokenizer throughput: `SimpleTokenizer.encode` and `tokenize` vs a naive per-string twin, on captions.

`python -m bench tokenizer [--quick] [--strings N] [--bpe PATH]`

The corpus is N caption-like strings (8-15 words, COCO-like templates) drawn deterministically from
word lists with Zipf-distributed choices, so common words repeat as in real captions, plus a long
tail of rare words, a few exact duplicate captions and ~2% non-ASCII text (which takes ftfy's path).
The naive twin is OpenAI's `SimpleTokenizer` algorithm with its caches removed: ftfy on every string
and BPE on every word. Its ids are checked equal to tinyprompt's on a sample before timing.

Providers (rows): naive encode; `SimpleTokenizer.encode` with a cold cache (a fresh tokenizer per
pass, as the first epoch over a caption file sees it) and a warm one; `tokenize(...)` to a
(N, 77) LongTensor. Tokenizing runs on the CPU whatever --device says.
"""
import html
import random

import ftfy
import regex

from bench.harness import Report, summarize, time_interleaved
from tinyprompt import tokenizer as tk

_PRETOKENIZE = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


class NaiveTokenizer:
    """OpenAI's SimpleTokenizer.encode without any cache: the baseline (same vocabulary, same ids)."""

    def __init__(self, tokenizer: tk.SimpleTokenizer):
        self.encoder, self.bpe_ranks = tokenizer.encoder, tokenizer.bpe_ranks
        self.byte_encoder = dict(enumerate(tk.bytes_to_unicode()))

    def bpe(self, token: str) -> list:
        if token in (tk.SOT, tk.EOT):
            return [token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
        return list(word)

    def encode(self, text: str) -> list:
        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        text = regex.sub(r"\s+", " ", text).strip().lower()
        ids = []
        for token in _PRETOKENIZE.findall(text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self.bpe(token))
        return ids


# ---- the caption corpus -------------------------------------------------------------------------

SUBJECTS = (
    "man woman person boy girl child dog cat horse bird player skier surfer giraffe elephant zebra "
    "cow sheep bear train bus truck car motorcycle bicycle plane boat kite pizza sandwich cake "
    "laptop phone clock vase table bench umbrella couple group family chef baby teddy toilet sink"
).split()
ADJECTIVES = (
    "large small young old white black red blue green yellow brown wooden tall little big busy empty "
    "crowded smiling happy snowy sunny cloudy dark bright colorful striped open"
).split()
VERBS = (
    "riding holding standing sitting walking eating playing looking flying laying carrying watching "
    "crossing parked driving jumping throwing catching cutting waiting posing leaning"
).split()
PLACES = (
    "street field beach kitchen room table grass water snow road park sidewalk city airport window "
    "counter bed desk fence building ocean slope court track station"
).split()
PREPOSITIONS = "on in near next to with under behind at of by".split()
DETERMINERS = "a the a a an two some three several this".split()
# non-ASCII words, an HTML entity and contractions: the strings that take ftfy's path
EXTRAS = "café naïve brûlée jalapeño 🙂 東京 piñata &amp; “quoted” it's don't".split()
SYLLABLES = "ka lo mi re su to na bi ze fo ru del mar ten vos qui pra sel dor".split()


def _zipf(rng: random.Random, words: list):
    weights = [1 / (k + 1) for k in range(len(words))]
    return lambda: rng.choices(words, weights)[0]


def captions(n: int, seed: int = 0) -> list:
    """n deterministic caption-like strings of 8-15 words."""
    rng = random.Random(seed)
    tail = sorted({"".join(rng.choices(SYLLABLES, k=rng.randint(2, 4))) for _ in range(6000)})  # rare words
    subject, adjective, verb = _zipf(rng, SUBJECTS), _zipf(rng, ADJECTIVES), _zipf(rng, VERBS)
    place, rare = _zipf(rng, PLACES), _zipf(rng, tail)
    out = []
    while len(out) < n:
        if out and rng.random() < 0.05:  # datasets hold exact duplicates
            out.append(rng.choice(out))
            continue
        words = [rng.choice(DETERMINERS), adjective(), subject(), verb(), rng.choice(PREPOSITIONS)]
        words += [rng.choice(DETERMINERS), place()]
        target = rng.randint(8, 15)
        while len(words) < target:
            number = str(rng.randint(1, 99))
            words += rng.choice([[adjective()], [rare()], [rng.choice(PREPOSITIONS), place()], [number]])
        words = words[:target]
        if rng.random() < 0.02:
            words[rng.randrange(1, target)] = rng.choice(EXTRAS)
        text = " ".join(words)
        out.append(text[0].upper() + text[1:] + rng.choice([".", ".", "", " .", "!"]))
    return out


# ---- the suite ----------------------------------------------------------------------------------


def add_args(parser):
    parser.add_argument("--strings", type=int, default=None, help="corpus size (default: 100000, 10000 with --quick)")
    parser.add_argument("--reps", type=int, default=None, help="timed passes per provider (default: 3, 2 with --quick)")
    parser.add_argument("--bpe", default=None, help="BPE merges file (default: tinyprompt's lookup chain)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default: 0)")


def run(args):
    n = args.strings or (10_000 if args.quick else 100_000)
    reps = args.reps or (2 if args.quick else 3)
    if args.device != "cpu":
        print("(tokenizing runs on the CPU; --device is ignored for this suite)")
    texts = captions(n, args.seed)
    warm = tk.SimpleTokenizer(args.bpe)
    naive = NaiveTokenizer(warm)
    sample = texts[:: max(1, n // 2000)]
    mismatched = [t for t in sample if naive.encode(t) != warm.encode(t)]
    if mismatched:
        raise AssertionError(
            f"the naive twin and SimpleTokenizer disagree on {len(mismatched)} strings, e.g. {mismatched[0]!r}"
        )
    ids = [warm.encode(t) for t in texts]  # also warms `warm`'s cache, so no untimed warm-up pass is needed
    fresh = [tk.SimpleTokenizer(warm.bpe_path) for _ in range(reps)]  # one cold cache per timed pass

    def encode_all(tokenizer):
        return lambda: [tokenizer.encode(t) for t in texts]

    def encode_cold():
        tokenizer = fresh.pop()
        for t in texts:
            tokenizer.encode(t)

    providers = {
        "naive encode (no caches)": encode_all(naive),
        "SimpleTokenizer.encode, cold cache": encode_cold,
        "SimpleTokenizer.encode, warm cache": encode_all(warm),
        "tokenize() -> LongTensor (N, 77), warm cache": lambda: tk.tokenize(texts, truncate=True, tokenizer=warm),
    }
    times = time_interleaved(providers, "cpu", warmup=0, reps=reps)
    stats = {
        "strings": n,
        "unique_strings": len(set(texts)),
        "mean_words": round(sum(len(t.split()) for t in texts) / n, 2),
        "mean_tokens": round(sum(map(len, ids)) / n, 2),
        "non_ascii_strings": sum(not t.isascii() for t in texts),
        "unique_pieces": len({p for t in texts for p in _PRETOKENIZE.findall(tk.clean(t))}),
    }
    print({**stats, "ids_checked_equal": len(sample)})
    report = Report("tokenizer", "cpu", args.out)
    naive_s = summarize(times["naive encode (no caches)"])["median_s"]
    for name, seconds in times.items():
        s = summarize(seconds)
        per_s = n / s["median_s"]
        extra = {k: v for k, v in stats.items() if k != "strings"}
        report.add(provider=name, strings=n, strings_per_s=per_s, speedup=naive_s / s["median_s"], **s, **extra)
    columns = ["provider", "strings", "strings_per_s", "speedup", "median_s", "p20_s", "p80_s", "reps"]
    report.write(columns, title=f"Tokenizer throughput on {n:,} caption-like strings (CPU, one process)")
    report.plot("provider", "strings_per_s", "strings", "strings / s")
