"""tinyprompt.tokenizer: exact ids on the golden cases, tokenize(), custom merges files, the BPE lookup chain."""
import gzip
import json
import os
import pickle
import random
import shutil
import sys
from pathlib import Path

import pytest
import torch

from golden import golden_params
from httpserver import FileServer
from tinyprompt import tokenizer as tk

_ENV_BPE = os.environ.get("TINYPROMPT_BPE")  # read before any test monkeypatches it (conftest sets it)
VOCAB = Path(_ENV_BPE) if _ENV_BPE and Path(_ENV_BPE).is_file() else None
needs_vocab = pytest.mark.skipif(
    VOCAB is None, reason="CLIP's BPE file is not available: set TINYPROMPT_BPE or place ../shared/vocab/" + tk.BPE_NAME
)


def _golden_cases():
    """One param per case of every tokenizer/*.json: cases.json encodes, decode_cases.json decodes."""
    params = []
    for file_param in golden_params("tokenizer/*.json"):
        path = file_param.values[0]
        if path is None:
            params.append(pytest.param(None, None, None, id=file_param.id, marks=file_param.marks))
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):  # {text: ids}
            cases = [("encode", text, ids) for text, ids in data.items()]
        else:  # [[ids, text], ...]
            cases = [("decode", ids, text) for ids, text in data]
        params += [pytest.param(*case, id=f"{path.stem}-{i:03d}", marks=needs_vocab) for i, case in enumerate(cases)]
    return params


@pytest.fixture(scope="module")
def tok():
    return tk.get_tokenizer(VOCAB)


@pytest.mark.parametrize("kind,given,expected", _golden_cases())
def test_golden(tok, kind, given, expected):
    if kind == "encode":
        assert tok.encode(given) == expected
    else:
        assert tok.decode(given) == expected


def test_ascii_fast_path_equals_ftfy_pipeline():
    # printable ASCII without '&' skips ftfy and html.unescape: they must leave it unchanged
    rng = random.Random(0)
    alphabet = [chr(c) for c in range(32, 127) if chr(c) != "&"] + [" "] * 10
    for _ in range(3000):
        text = "".join(rng.choices(alphabet, k=rng.randint(0, 30)))
        full = tk.clean(text + "\n")  # a newline forces the full ftfy path; it collapses like a space
        assert tk.clean(text) == full, text


@needs_vocab
def test_chunk_cache_equals_whole_text_pretokenisation(tok):
    # encode() caches ids per space-separated chunk; pre-tokenising the whole cleaned text must agree
    rng = random.Random(1)
    alphabet = list("ab z09.,'&;<>|") + ["<|endoftext|>", "\u00a0", "\x1c", "\t", "\u3000", "é", "東", "🙂"] * 2
    texts = ["x<|endoftext|>y", "a\u00a0b", "a\x1cb", "1,000 it's", "&amp;amp; x"]
    texts += ["".join(rng.choices(alphabet, k=rng.randint(0, 25))) for _ in range(400)]
    for text in texts:
        pieces = tk._PRETOKENIZE.findall(tk.clean(text))
        whole = [i for p in pieces for i in ((tok.encoder[p],) if p in (tk.SOT, tk.EOT) else tok.bpe_ids(p))]
        assert tok.encode(text) == whole, repr(text)
        assert tok.encode(text) == whole, repr(text)  # now from the cache


@needs_vocab
def test_openai_vocab_layout(tok):
    assert (tok.vocab_size, tok.sot_token, tok.eot_token) == (49408, 49406, 49407)
    assert (tok.encoder["!"], tok.encoder["a</w>"], tok.encoder["in"], tok.decoder[49407]) == (0, 320, 512, tk.EOT)
    assert len(tok.bpe_ranks) == tk.OPENAI_MERGES


@needs_vocab
def test_openai_file_recognised_by_content(tmp_path, tok):
    renamed = tmp_path / "merges.txt.gz"  # OpenAI's content under another name: still its 48,894 merges
    shutil.copy(VOCAB, renamed)
    other = tk.SimpleTokenizer(renamed)
    assert other.vocab_size == 49408
    assert other.encode("a photo of a cat.") == [320, 1125, 539, 320, 2368, 269]


@needs_vocab
def test_tokenize(tok):
    out = tk.tokenize(["a photo of a cat.", ""], tokenizer=tok)
    assert out.dtype == torch.long and out.shape == (2, 77)
    assert out[0, :8].tolist() == [49406, 320, 1125, 539, 320, 2368, 269, 49407]
    assert out[1, :2].tolist() == [49406, 49407]
    assert out[0, 8:].eq(0).all() and out[1, 2:].eq(0).all()
    assert torch.equal(tk.tokenize("a photo of a cat.", tokenizer=tok), out[:1])  # a single string
    assert torch.equal(tk.tokenize(["a photo of a cat."]), out[:1])  # default: the shared tokenizer
    assert tk.tokenize(["a b c"], context_length=8, tokenizer=tok).shape == (1, 8)
    assert tk.tokenize([], tokenizer=tok).shape == (0, 77)
    assert torch.equal(tk.tokenize((t for t in ["a photo of a cat.", ""]), tokenizer=tok), out)  # any iterable


@needs_vocab
def test_context_length_limit(tok):
    fits = " ".join(["a"] * 75)  # 75 content tokens + SOT + EOT = 77
    assert tk.tokenize(fits, tokenizer=tok)[0, 76].item() == 49407
    too_long = fits + " a"
    with pytest.raises(tk.TextTooLongError) as err:
        tk.tokenize(too_long, tokenizer=tok)
    message = str(err.value)
    assert "78 tokens" in message and "context_length=77" in message and "truncate=True" in message
    assert "'a a a" in message and "..." in message  # the (shortened) text
    assert isinstance(err.value, ValueError) and isinstance(err.value, RuntimeError)
    cut = tk.tokenize(too_long, truncate=True, tokenizer=tok)[0]
    assert cut.tolist() == [49406] + [320] * 75 + [49407]
    short = tk.tokenize("a photo of a cat.", context_length=4, truncate=True, tokenizer=tok)[0]
    assert short.tolist() == [49406, 320, 1125, 49407]


@needs_vocab
def test_decode_inputs(tok):
    ids = tok.encode("a photo of a cat.")
    assert tok.decode(torch.tensor(ids)) == tok.decode(ids) == "a photo of a cat . "
    with pytest.raises(ValueError, match="token id 49408 is not in this vocabulary"):
        tok.decode([320, 49408])


@needs_vocab
def test_pickles_and_is_shared(tok):
    assert tk.get_tokenizer(VOCAB) is tok
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.encode("fish &amp; chips 12") == tok.encode("fish &amp; chips 12") == [2759, 261, 8855, 272, 273]


# ---- a small merges file of one's own -----------------------------------------------------------

SMALL_MERGES = ["#version: test", "c a", "ca t</w>", "t h", "th e</w>", ""]  # trailing newline


def _write_small(path: Path, lines=SMALL_MERGES) -> Path:
    text = "\n".join(lines).encode()
    path.write_bytes(gzip.compress(text) if path.suffix == ".gz" else text)
    return path


@pytest.mark.parametrize("name", ["small.txt", "small.txt.gz"])
def test_custom_merges_file(tmp_path, name):
    tok = tk.SimpleTokenizer(_write_small(tmp_path / name))
    assert tok.vocab_size == 512 + 4 + 2 and (tok.sot_token, tok.eot_token) == (516, 517)
    # byte symbols 0..255, with </w> 256..511, then ca=512, cat</w>=513, th=514, the</w>=515
    c, a, e = tok.encoder["c"], tok.encoder["a"], tok.encoder["e</w>"]
    comma, b, dot = tok.encoder[",</w>"], tok.encoder["b</w>"], tok.encoder[".</w>"]
    assert tok.encode("The cat, the cab.") == [515, 513, comma, 515, 512, b, dot]
    assert tok.encode("ace") == [a, c, e]
    assert tok.decode(tok.encode("the cat <|endoftext|>")) == "the cat <|endoftext|>"
    assert tk.tokenize("the cat", tokenizer=tok)[0, :4].tolist() == [516, 515, 513, 517]


def test_bad_merges_files(tmp_path):
    with pytest.raises(ValueError, match="line 3: expected two symbols"):
        tk.SimpleTokenizer(_write_small(tmp_path / "a.txt", ["#h", "c a", "x y z"]))
    with pytest.raises(ValueError, match="line 2: merge 'ca t' uses a symbol"):
        tk.SimpleTokenizer(_write_small(tmp_path / "b.txt", ["#h", "ca t"]))
    with pytest.raises(ValueError, match="holds no merges"):
        tk.SimpleTokenizer(_write_small(tmp_path / "c.txt", ["#h", ""]))


# ---- the lookup chain ---------------------------------------------------------------------------


@pytest.fixture
def bare_env(tmp_path, monkeypatch):
    """No TINYPROMPT_BPE, an empty cache dir, offline; returns the cache dir."""
    monkeypatch.delenv("TINYPROMPT_BPE", raising=False)
    monkeypatch.setenv("TINYPROMPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TINYPROMPT_OFFLINE", "1")
    return tmp_path / "cache"


def _no_installed_copy():
    return not any((d / tk.BPE_NAME).is_file() for p in ("clip", "open_clip") for d in tk._package_dirs(p))


@needs_vocab
def test_explicit_path_then_env_var(tmp_path, monkeypatch):
    small = _write_small(tmp_path / "small.txt")
    monkeypatch.setenv("TINYPROMPT_BPE", str(VOCAB))
    assert tk.get_tokenizer(small).vocab_size == 518  # the argument wins over the env var
    assert tk.default_bpe_path() == VOCAB
    monkeypatch.setenv("TINYPROMPT_BPE", str(tmp_path / "missing.txt.gz"))
    with pytest.raises(FileNotFoundError, match="TINYPROMPT_BPE environment variable"):
        tk.default_bpe_path()


@needs_vocab
def test_cache_dir(bare_env):
    bare_env.mkdir()
    shutil.copy(VOCAB, bare_env / tk.BPE_NAME)
    assert tk.default_bpe_path() == bare_env / tk.BPE_NAME
    assert tk.get_tokenizer().encode("a diagram") == [320, 22697]


def test_wrong_file_rejected(bare_env):
    bare_env.mkdir()
    wrong = _write_small(bare_env / tk.BPE_NAME)  # a valid merges file, but not OpenAI's
    with pytest.raises(ValueError, match="has sha256 .* would give wrong token ids") as err:
        tk.default_bpe_path()
    assert str(wrong) in str(err.value) and tk.BPE_URL in str(err.value)
    with pytest.raises(ValueError, match="bpe_path argument"):
        tk.SimpleTokenizer(wrong)


def test_offline_without_file_explains(bare_env):
    if not _no_installed_copy():
        pytest.skip("an installed clip/open_clip package ships the BPE file, so the chain finds it")
    with pytest.raises(FileNotFoundError) as err:
        tk.default_bpe_path()
    message = str(err.value)
    for hint in ("TINYPROMPT_OFFLINE", "bpe_path=", "TINYPROMPT_BPE=", str(bare_env / tk.BPE_NAME), tk.BPE_SHA256):
        assert hint in message


def _fake_package(site: Path, name: str, bpe: Path | None) -> Path:
    """An importable-looking package `name` under `site`, shipping a copy of `bpe` (if given).
    Importing it fails: the lookup must find the file without importing the package."""
    package = site / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('the BPE lookup must not import the package')\n")
    if bpe is not None:
        shutil.copy(bpe, package / tk.BPE_NAME)
    return package / tk.BPE_NAME


@needs_vocab
def test_lookup_order(bare_env, tmp_path, monkeypatch):
    """env var > cache dir > installed clip > installed open_clip > verified download > an error; each
    source is removed in turn, and the network is used only when every file on disk is gone."""
    bare_env.mkdir()
    env_copy = tmp_path / "env" / tk.BPE_NAME
    env_copy.parent.mkdir()
    shutil.copy(VOCAB, env_copy)
    shutil.copy(VOCAB, bare_env / tk.BPE_NAME)
    site = tmp_path / "site"
    clip_copy, open_clip_copy = (_fake_package(site, name, VOCAB) for name in ("clip", "open_clip"))
    monkeypatch.syspath_prepend(str(site))  # ahead of any real clip / open_clip in the environment
    for name in ("clip", "open_clip"):  # and not the real one an earlier test imported (find_spec reads sys.modules)
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setenv("TINYPROMPT_BPE", str(env_copy))
    monkeypatch.setenv("TINYPROMPT_OFFLINE", "0")
    with FileServer({"/good/" + tk.BPE_NAME: VOCAB.read_bytes(), "/bad/" + tk.BPE_NAME: b"x" * 1000}) as server:
        monkeypatch.setattr(tk, "BPE_URL", server.url("/good/" + tk.BPE_NAME))
        assert tk.default_bpe_path() == env_copy
        monkeypatch.delenv("TINYPROMPT_BPE")
        assert tk.default_bpe_path() == bare_env / tk.BPE_NAME
        (bare_env / tk.BPE_NAME).unlink()
        assert tk.default_bpe_path() == clip_copy
        clip_copy.unlink()
        assert tk.default_bpe_path() == open_clip_copy
        open_clip_copy.unlink()
        assert server.requests == []  # every file on disk was found without the network
        assert tk.default_bpe_path() == bare_env / tk.BPE_NAME  # downloaded into the cache dir, verified
        assert (bare_env / tk.BPE_NAME).read_bytes() == VOCAB.read_bytes() and len(server.requests) == 1
        assert tk.get_tokenizer().encode("a diagram") == [320, 22697]

        (bare_env / tk.BPE_NAME).unlink()
        monkeypatch.setattr(tk, "BPE_URL", server.url("/bad/" + tk.BPE_NAME))
        with pytest.raises(FileNotFoundError, match=r"downloading it failed: .*has sha256 .*deleted and not used"):
            tk.default_bpe_path()
        monkeypatch.setattr(tk, "BPE_URL", server.url("/missing/" + tk.BPE_NAME))
        with pytest.raises(FileNotFoundError, match="downloading it failed: .*HTTP 404") as err:
            tk.default_bpe_path()
        assert "TINYPROMPT_BPE=" in str(err.value) and tk.BPE_SHA256 in str(err.value)
    assert list(bare_env.iterdir()) == []  # neither a rejected download nor a partial file is kept
