"""Shared test setup: small deterministic CPU runs, and the BPE vocab from ../shared when present."""
import os
import tempfile

import torch

from golden import REPO

torch.set_num_threads(min(2, torch.get_num_threads()))

# The CLIP BPE file is never committed; point the tokenizer at the shared copy when it exists.
_VOCAB = REPO.parent / "shared" / "vocab" / "bpe_simple_vocab_16e6.txt.gz"
if "TINYPROMPT_BPE" not in os.environ and _VOCAB.is_file():
    os.environ["TINYPROMPT_BPE"] = str(_VOCAB)
# Tests never touch the network unless a test opts in explicitly.
os.environ.setdefault("TINYPROMPT_OFFLINE", "1")
# Downloads and caches made by tests go to a throwaway folder, never the user's ~/.cache.
os.environ.setdefault("TINYPROMPT_CACHE", tempfile.mkdtemp(prefix="tinyprompt-test-cache-"))
