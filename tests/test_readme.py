"""The README stays true: its two top commands are what CI runs, every `tinyprompt` command it shows parses, and
every Python snippet runs (offline, on the built-in synthetic model) and does what its comments say."""
import re
import shlex

import pytest
import torch
import torch.nn.functional as F

from golden import REPO
from tinyprompt.commands.cli import build_parser
from tinyprompt.hub import builtin_file

README = (REPO / "README.md").read_text(encoding="utf-8")
# The only edits that make the snippets run offline: the built-in model for a downloaded one ...
OFFLINE = {'"ViT-B/16"': '"synthetic"', '"ViT-B-32/laion2b_s34b_b79k"': '"synthetic"'}
# ... and the names they leave to the reader, as tiny values for that model (32 x 32 images)
PLACEHOLDERS = {
    "images": torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
    "labels": torch.tensor([0, 1]),
    "imagenet_a_classes": ["cat", "dog", "bird"],
    "checkpoint": str(builtin_file("synthetic")),  # a state dict on disk ...
    "architecture": "openai",  # ... and its layout, as open_clip's architecture names say it for their files
}


def code_lines():
    """Commands in the README's bash blocks, continuation lines joined, comments dropped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def test_the_two_top_commands_install_then_run_the_demo_and_the_tests():
    first, second = code_lines()[:2]
    assert first.startswith("pip install") and first.endswith("tinyprompt demo")
    assert second.startswith("pip install") and "python -m pytest" in second
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    runs = [line for line in ci.splitlines() if "python -m pytest" in line]
    assert runs[0] == second  # CI runs the README's test command verbatim, then the numerics again on the plain CPU path
    assert "ATEN_CPU_CAPABILITY=default" in runs[1]


@pytest.mark.parametrize("line", [line for line in code_lines() if line.startswith("tinyprompt ")])
def test_every_tinyprompt_command_in_the_readme_parses(line):
    args = shlex.split(line)[1:]
    args = [a for a in args if a not in ("[--quick]", "[--device", "cuda]")]
    parsed = build_parser().parse_args(args)
    assert parsed.command == args[0]


def python_blocks():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "the README has no ```python blocks: drop this test or the marker changed"
    return blocks


@pytest.mark.parametrize("block", python_blocks())
def test_every_python_snippet_in_the_readme_runs(block, tmp_path, monkeypatch):
    for old, new in OFFLINE.items():
        block = block.replace(old, new)
    monkeypatch.setenv("TINYPROMPT_BPE", str(tmp_path / "missing.txt.gz"))  # the synthetic model never reads OpenAI's
    monkeypatch.chdir(tmp_path)  # snippets save files (prompt.pt)
    names = dict(PLACEHOLDERS)
    exec(compile(block, "README.md", "exec"), names)
    model = names["model"]
    size = model.visual.input_resolution
    # what the comments claim, checked wherever the snippet defines the name
    checks = {
        "tokens": lambda t: t.shape == (2, model.context_length),
        "text": lambda t: t.shape == (2, model.embed_dim),
        "weights": lambda w: w.shape == (2, model.embed_dim) and torch.allclose(w.norm(dim=-1), torch.ones(2)),
        "logits": lambda logits: torch.allclose(logits, model.logit_scale.exp() * F.normalize(
            model.encode_image(names["images"]), dim=-1) @ F.normalize(names["coop"].text_features(), dim=-1).t()),
        "loss": lambda loss: torch.allclose(loss, F.cross_entropy(names["logits"], names["labels"])),
        "coop_a": lambda coop_a: torch.equal(coop_a.ctx, names["coop"].ctx) and coop_a.prompts.n_cls == 3,
        "coop_b": lambda coop_b: type(coop_b).__name__ == "CoOp" and torch.equal(coop_b.ctx, names["coop"].ctx),
        "preprocess": lambda p: tuple(p(torch.zeros(3, 9, 7, dtype=torch.uint8)).shape) == (3, size, size),
        "model_b": lambda m: all(torch.equal(m.state_dict()[k], v) for k, v in model.state_dict().items()),
    }
    checked = [name for name in checks if name in names]
    assert checked, "the snippet defines none of the names this test checks: extend `checks`"
    for name in checked:
        assert checks[name](names[name]), name
