"""The README stays true: its two top commands are what CI runs, and every `tinyprompt` command it shows parses."""
import re
import shlex

import pytest

from golden import REPO
from tinyprompt.cli import build_parser

README = (REPO / "README.md").read_text(encoding="utf-8")


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
    assert ci.rstrip().splitlines()[-1] == second  # CI runs the README's test command verbatim


@pytest.mark.parametrize("line", [line for line in code_lines() if line.startswith("tinyprompt ")])
def test_every_tinyprompt_command_in_the_readme_parses(line):
    args = shlex.split(line)[1:]
    args = [a for a in args if a not in ("[--quick]", "[--device", "cuda]")]
    parsed = build_parser().parse_args(args)
    assert parsed.command == args[0]
