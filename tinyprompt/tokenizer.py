"""CLIP's byte-level BPE tokenizer, with exact parity to OpenAI's `SimpleTokenizer`, and `tokenize`.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision" (arXiv
2103.00020), tokenizes text with byte-pair encoding (Sennrich et al., arXiv 1508.07909) over UTF-8
bytes, as in GPT-2. The steps reproduced here, in OpenAI's order: ftfy repair, HTML unescape twice,
whitespace collapse, lower-case, a regex pre-tokeniser, bytes -> printable symbols, BPE with `</w>`
fused onto the last symbol of each piece (the golden tests compare the ids with OpenAI's own).

The vocabulary is built from whatever merges file it is given (512 byte symbols, the merges in
order, then `<|startoftext|>` and `<|endoftext|>`), so a small BPE vocabulary trained elsewhere works
with the same class. OpenAI's file is found on disk or downloaded (see `default_bpe_path`) and is
verified by sha256: a wrong file would silently give wrong ids.

Speed (same ids, checked by tests): the ids of each space-separated chunk of the cleaned text are
cached (captions repeat words, so most chunks skip the regex and BPE), and printable-ASCII text
without `&` skips ftfy and HTML unescaping, which leave such text unchanged.
"""
import array
import functools
import gzip
import html
import importlib.util
import os
from pathlib import Path

import ftfy
import regex
import torch

from . import io

__all__ = ["SimpleTokenizer", "TextTooLongError", "default_bpe_path", "get_tokenizer", "model_tokenizer", "tokenize",
           "tokenize_for"]

BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
BPE_URL = "https://github.com/openai/CLIP/raw/main/clip/" + BPE_NAME
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
# OpenAI's file holds 262,144 merges but CLIP reads only lines 2 .. 48,895 (a 49,152-entry vocab minus
# the 256 byte symbols and 2 special tokens; the 256 `</w>` byte symbols make up the rest: 49,408 ids).
OPENAI_MERGES = 49152 - 256 - 2
OPENAI_VOCAB_SIZE = 2 * 256 + OPENAI_MERGES + 2  # 49,408
SOT, EOT = "<|startoftext|>", "<|endoftext|>"

# OpenAI's pre-tokeniser (needs the third-party `regex` for \p{L} / \p{N}): special tokens, ASCII
# contractions, a run of letters, ONE digit, a run of other non-space characters.
_PRETOKENIZE = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")  # regex's Unicode-aware \s, as OpenAI's whitespace_clean


@functools.lru_cache(maxsize=None)
def bytes_to_unicode() -> tuple:
    """The 256 printable symbols standing for bytes 0..255 (GPT-2's map): index = byte value.

    The 188 printable bytes map to themselves; the other 68, in increasing order, to chr(256), ...
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    symbol = {b: chr(b) for b in printable} | {b: chr(256 + k) for k, b in enumerate(others)}
    return tuple(symbol[b] for b in range(256))


def _vocab_order() -> list:
    """The 256 byte symbols in vocabulary order: printable bytes first, then the 68 remapped ones."""
    return sorted(bytes_to_unicode(), key=ord)


def _plain(text: str) -> bool:
    """Printable ASCII without '&': ftfy and html.unescape return it unchanged (tests check this against
    ftfy), and its only whitespace is ' ', so str.split equals the \\s+ collapse."""
    return text.isascii() and text.isprintable() and "&" not in text


def clean(text: str) -> str:
    """OpenAI's basic_clean + whitespace_clean + lower(): the text the pre-tokeniser sees."""
    if _plain(text):
        return " ".join(text.split()).lower()
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


def _chunks(text: str) -> list:
    """clean(text) cut at its spaces. No pre-tokeniser match contains whitespace, so pre-tokenising
    each chunk alone gives the same pieces as the whole text: chunks can be cached as units."""
    return text.lower().split() if _plain(text) else clean(text).split(" ")


class SimpleTokenizer:
    """Byte-level BPE over a merges file (`.txt` or `.txt.gz`, first line a header, one merge per line).

    OpenAI's file (recognised by its sha256) contributes its first 48,894 merges, any other file all
    of its lines. Ids: 256 byte symbols, the same with `</w>`, one per merge, then SOT and EOT.
    The chunk cache is unbounded: it holds one entry per distinct space-separated chunk seen (a few
    tens of thousands for a caption corpus). The tokenizer pickles, cache included.
    """

    def __init__(self, bpe_path=None):
        path = _verified(Path(bpe_path), "the bpe_path argument") if bpe_path is not None else default_bpe_path()
        self.bpe_path = path
        merges = _read_merges(path, limit=OPENAI_MERGES if _sha256(path) == BPE_SHA256 else None)
        byte_symbols = _vocab_order()
        vocab = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder = {symbol: i for i, symbol in enumerate(vocab)}
        self.decoder = {i: symbol for symbol, i in self.encoder.items()}
        self.vocab_size = len(vocab)
        self.sot_token, self.eot_token = self.encoder[SOT], self.encoder[EOT]
        self.bpe_ranks = {pair: rank for rank, pair in enumerate(merges)}
        self._byte_symbol = bytes_to_unicode()
        self._symbol_byte = {s: b for b, s in enumerate(self._byte_symbol)}
        self._special = {SOT: (self.sot_token,), EOT: (self.eot_token,)}  # never split by BPE
        self._cache = {}  # chunk of cleaned text (a caption word with its punctuation) -> ids

    def __repr__(self):
        return f"SimpleTokenizer(bpe_path={str(self.bpe_path)!r}, vocab_size={self.vocab_size})"

    def bpe_ids(self, piece: str) -> tuple:
        """Ids of one pre-tokenised piece: merge the lowest-ranked adjacent pair until none is ranked."""
        symbols = [self._byte_symbol[b] for b in piece.encode("utf-8")]
        symbols[-1] += "</w>"  # the end-of-word marker is fused onto the last symbol
        ranks = self.bpe_ranks
        while len(symbols) > 1:
            pair = min(zip(symbols, symbols[1:]), key=lambda p: ranks.get(p, float("inf")))
            if pair not in ranks:
                break
            first, second = pair
            merged, i = [], 0
            while i < len(symbols):  # every occurrence, left to right, without overlap
                if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return tuple(self.encoder[s] for s in symbols)

    def encode(self, text: str) -> list:
        """Token ids of `text`, without SOT/EOT and without padding."""
        ids, cache = [], self._cache
        for chunk in _chunks(text):
            chunk_ids = cache.get(chunk)
            if chunk_ids is None:
                chunk_ids = []
                for piece in _PRETOKENIZE.findall(chunk):
                    chunk_ids.extend(self._special.get(piece) or self.bpe_ids(piece))
                cache[chunk] = chunk_ids = tuple(chunk_ids)
            ids.extend(chunk_ids)
        return ids

    def decode(self, ids) -> str:
        """Text of `ids` (a list or a tensor); every `</w>` becomes a space, as in OpenAI's decode."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        try:
            text = "".join(self.decoder[int(i)] for i in ids)
        except KeyError as e:
            raise ValueError(f"token id {e.args[0]} is not in this vocabulary (ids 0..{self.vocab_size - 1})") from None
        data = bytearray(self._symbol_byte[c] for c in text)
        return data.decode("utf-8", errors="replace").replace("</w>", " ")


class TextTooLongError(ValueError, RuntimeError):
    """A text needs more tokens than the context length (a RuntimeError too, as OpenAI raises)."""


def tokenize(texts, context_length: int = 77, truncate: bool = False, tokenizer=None) -> torch.LongTensor:
    """`[SOT] + encode(text) + [EOT]` per text, zero-padded into a LongTensor (N, context_length).

    A text that needs more than `context_length` ids raises `TextTooLongError` unless `truncate`,
    which keeps the first `context_length` ids and makes the last one EOT (as OpenAI's `clip.tokenize`).
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    if context_length < 1:
        raise ValueError(f"context_length must be >= 1, got {context_length}")
    tokenizer = tokenizer if tokenizer is not None else get_tokenizer()
    sot, eot = tokenizer.sot_token, tokenizer.eot_token
    result = torch.zeros(len(texts), context_length, dtype=torch.long)  # padding id 0, as OpenAI
    if not texts:
        return result
    flat, lengths = [], []
    for text in texts:
        ids = [sot, *tokenizer.encode(text), eot]
        if len(ids) > context_length:
            if not truncate:
                shown = text if len(text) <= 80 else text[:77] + "..."
                raise TextTooLongError(
                    f"text {shown!r} needs {len(ids)} tokens (with start and end tokens), more than "
                    f"context_length={context_length}; pass truncate=True to cut it (the last kept token "
                    f"becomes the end token), or shorten the text"
                )
            ids = ids[:context_length]
            ids[-1] = eot
        flat += ids
        lengths.append(len(ids))
    filled = torch.arange(context_length) < torch.tensor(lengths, dtype=torch.long)[:, None]  # (N, L)
    result[filled] = torch.frombuffer(array.array("q", flat), dtype=torch.long)  # row-major = text order
    return result


_TOKENIZERS = {}


def get_tokenizer(bpe_path=None) -> SimpleTokenizer:
    """A shared `SimpleTokenizer` per merges file (keyed by path, mtime and size), built on first use."""
    path = _verified(Path(bpe_path), "the bpe_path argument") if bpe_path is not None else default_bpe_path()
    key = _file_key(path)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = SimpleTokenizer(path)
    return _TOKENIZERS[key]


def model_tokenizer(clip) -> SimpleTokenizer:
    """The tokenizer a CLIP model reads: its own `tokenizer` attribute when it has one (built-in models such
    as `tinyprompt.load("synthetic")` carry theirs), else OpenAI's (`get_tokenizer()`).

    A tokenizer with more ids than the model's vocabulary is an error here, not an index error deep inside
    the token embedding (e.g. the built-in model's state dict re-saved and built without its tokenizer).
    """
    own = getattr(clip, "tokenizer", None)
    ids = own.vocab_size if own is not None else OPENAI_VOCAB_SIZE  # OpenAI's known without reading its file
    vocab_size = getattr(clip, "vocab_size", ids)
    if ids > vocab_size:
        whose = "its tokenizer" if own is not None else "OpenAI's tokenizer (the model carries none of its own)"
        raise ValueError(
            f"this model has a {vocab_size}-token vocabulary but {whose} has {ids} ids: load the model with "
            f"tinyprompt.load (built-in models carry their tokenizer), or set "
            f"model.tokenizer = tinyprompt.tokenizer.get_tokenizer('its_merges.txt')"
        )
    return own if own is not None else get_tokenizer()


def tokenize_for(clip, texts, truncate: bool = False) -> torch.LongTensor:
    """`tokenize` with the model's own tokenizer and context length: (N, clip.context_length).

    Use it instead of `tokenize` (OpenAI's vocabulary, 77 positions) for any model that may not be OpenAI's,
    e.g. `tinyprompt.tokenize_for(model, ["a photo of a cat."])`.
    """
    return tokenize(texts, clip.context_length, truncate, model_tokenizer(clip))


# ---- finding the merges file -------------------------------------------------------------------


def default_bpe_path() -> Path:
    """OpenAI's merges file: $TINYPROMPT_BPE, the tinyprompt cache dir, an installed `clip` or
    `open_clip` package, else a download into the cache dir (sha256-verified)."""
    env = os.environ.get("TINYPROMPT_BPE")
    if env:
        return _verified(Path(env), "the TINYPROMPT_BPE environment variable")
    cached = io.cache_dir() / BPE_NAME
    if cached.is_file():
        return _verified(cached, "the tinyprompt cache dir")
    for package in ("clip", "open_clip"):
        for folder in _package_dirs(package):
            if (folder / BPE_NAME).is_file():
                return _verified(folder / BPE_NAME, f"the installed {package} package")
    if io.offline():
        raise FileNotFoundError(_how_to_provide(cached, "TINYPROMPT_OFFLINE is set, so it was not downloaded"))
    try:
        return io.download(BPE_URL, cached, BPE_SHA256)
    except RuntimeError as e:
        raise FileNotFoundError(_how_to_provide(cached, f"downloading it failed: {e}")) from e


def _how_to_provide(cached: Path, why: str) -> str:
    return (
        f"CLIP's BPE merges file {BPE_NAME} was not found ({why}). Provide it in one of these ways: "
        f"pass SimpleTokenizer(bpe_path=...) / get_tokenizer(bpe_path=...); set TINYPROMPT_BPE=/path/to/{BPE_NAME}; "
        f"or put the file at {cached}. Get it from {BPE_URL} (sha256 {BPE_SHA256})."
    )


def _package_dirs(package: str) -> list:
    """Folders of an installed top-level package, found without importing it (no torch-heavy import)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return []
    return [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []


def _file_key(path: Path) -> tuple:
    stat = path.stat()
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=64)
def _sha256_of(key: tuple) -> str:
    return io.sha256_file(key[0])


def _sha256(path: Path) -> str:
    """sha256 of a file, computed once per (path, mtime, size)."""
    return _sha256_of(_file_key(path))


def _verified(path: Path, source: str) -> Path:
    """`path` if it is a file and, when named like OpenAI's file, has OpenAI's sha256."""
    if not path.is_file():
        raise FileNotFoundError(f"the BPE merges file {path} given by {source} does not exist or is not a file")
    if path.name == BPE_NAME and _sha256(path) != BPE_SHA256:
        raise ValueError(
            f"{path} (from {source}) has sha256 {_sha256(path)}, but OpenAI's {BPE_NAME} has {BPE_SHA256}: "
            f"it is another or a corrupt file and would give wrong token ids. Replace it with the file from "
            f"{BPE_URL}, or give a different merges file under another name."
        )
    return path


def _read_merges(path: Path, limit=None) -> list:
    """(first, second) symbol pairs from a merges file; line 1 is a header, blank lines are skipped."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip magic
        data = gzip.decompress(data)
    lines = data.decode("utf-8").split("\n")[1:]
    known = set(_vocab_order())
    known |= {s + "</w>" for s in known}
    merges = []
    for number, line in enumerate(lines[:limit], start=2):
        if not line.strip():
            continue
        pair = tuple(line.split())
        if len(pair) != 2:
            raise ValueError(f"{path} line {number}: expected two symbols separated by a space, got {line!r}")
        if pair[0] not in known or pair[1] not in known:
            raise ValueError(
                f"{path} line {number}: merge {line!r} uses a symbol that is neither a byte symbol nor the "
                f"result of an earlier merge; is this a BPE merges file?"
            )
        known.add(pair[0] + pair[1])
        merges.append(pair)
    if not merges:
        raise ValueError(f"{path} holds no merges (expected a header line, then one 'first second' pair per line)")
    return merges
