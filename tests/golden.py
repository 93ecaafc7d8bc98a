"""Finding the golden files (outputs of the official implementations) for data-driven tests.

The root is $TINYPROMPT_GOLDEN, else `../shared/golden` beside the repository. Tests parametrise over
`golden_params("clip/clip_*.pt")`: one test id per file (its stem), or a single skipped param saying
why when the root or the pattern is absent, so a fresh clone elsewhere still passes. `needs_vocab` skips a
test that tokenizes with OpenAI's BPE where that file is absent.
"""
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(os.environ.get("TINYPROMPT_GOLDEN") or REPO.parent / "shared" / "golden")


# tests that tokenize with OpenAI's BPE (conftest points TINYPROMPT_BPE at ../shared/vocab when it is there)
needs_vocab = pytest.mark.skipif(
    not Path(os.environ.get("TINYPROMPT_BPE", "")).is_file(),
    reason="CLIP's BPE file is needed to tokenize class names: set TINYPROMPT_BPE (conftest finds ../shared/vocab)",
)


def golden_params(pattern: str):
    """pytest params (path, id=stem) for every golden file matching `pattern` under the root."""
    if not GOLDEN.is_dir():
        reason = f"golden root {GOLDEN} not found (set TINYPROMPT_GOLDEN to the golden folder)"
        return [pytest.param(None, id="no-golden", marks=pytest.mark.skip(reason=reason))]
    paths = sorted(GOLDEN.glob(pattern))
    if not paths:
        reason = f"no golden files match {pattern} under {GOLDEN}"
        return [pytest.param(None, id="no-golden", marks=pytest.mark.skip(reason=reason))]
    return [pytest.param(p, id=p.stem) for p in paths]


def load(path):
    """Load a golden .pt file the way its README says (weights_only)."""
    return torch.load(path, weights_only=True, map_location="cpu")
