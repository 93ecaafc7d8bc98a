"""The benchmark harness's entry point: every suite `python -m bench` lists parses its arguments and documents them
(`--help`), without running; `bench/gpu_check.sh --parse-only` checks the arguments that script passes."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # bench/ is a folder of scripts, not installed
from bench.__main__ import SUITES, parse  # noqa: E402


@pytest.mark.parametrize("suite", list(SUITES))
def test_every_suite_parses_and_documents_its_arguments(suite, capsys):
    with pytest.raises(SystemExit) as done:
        parse([suite, "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert text.startswith(f"usage: python -m bench {suite}") and SUITES[suite][1][:30] in text
    args = parse([suite, "--quick"])
    assert args.module == SUITES[suite][0] and args.out.endswith("quick")  # a quick run never replaces the results


def test_gpu_check_passes_arguments_every_suite_accepts():
    run = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--parse-only"], capture_output=True,
                         text=True, cwd=REPO, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable,
                                                   "TINYPROMPT_BPE": __file__})  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines and all(line.startswith("parses: python -m bench ") for line in lines), run.stdout
