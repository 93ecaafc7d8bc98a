"""`python -m bench <suite> [--quick] [--device cpu|cuda] [--out DIR]`.

Each suite is a module in this folder with `add_args(parser)` and `run(args)`; results go to
`bench/results/<suite>-<cpu|cuda>.*` (JSON lines + a markdown table, a PNG when matplotlib is installed), the
suite's current numbers; `--quick` results go to `bench/results/quick/` so they never replace them.
"""
import argparse
import importlib
import sys
from pathlib import Path

SUITES = {
    # name: (module, one-line description)
    "tokenizer": ("bench.tokenizer", "Tokenizer throughput on 100k caption-like strings vs a naive uncached twin"),
    "text": ("bench.clip_text", "CLIP text encoding of 1,000 class prompts: EOT-truncated vs full 77 positions"),
    "ship": ("bench.ship", "SHIP: one generator epoch and one fine-tune epoch, official formulation vs tinyprompt"),
    "ilmvp": ("bench.ilmvp", "ILM-VP: greedy label mapping at 21,843 x 1,000; mapping-pass share of a CLIP epoch"),
    "pomp": ("bench.pomp", "POMP training step: official formulation (77 tokens, B+K-1 prompts) vs tinyprompt"),
    "taidpt": ("bench.taidpt", "TaI-DPT: a training epoch on 20k captions, C=80, RN50 text tower: official vs tinyprompt"),
    "kernels": ("bench.kernels", "Fused losses (sampled softmax CE, ranking) vs eager, torch.compile, reference twins"),
    "coop": ("bench.coop", "CoOp training step, official formulation vs tinyprompt (EOT truncation, shared prefix, cached features)"),
    "demo_threads": ("bench.demo_threads", "`tinyprompt demo --quick` wall time at 1 and 2 threads, alone and beside a CPU-busy process"),
    "ops": ("bench.ops", "Dispatched aten ops per training step of every method vs its official formulation, at the CPU and CUDA knobs"),
}


def parse(argv) -> argparse.Namespace:
    """The arguments of one suite's run, checked without running it (bench/gpu_check.sh --parse-only uses it)."""
    argv = list(argv)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="suite", required=True, metavar="SUITE")
    # only the chosen suite's module is imported: a suite's imports (ftfy, Pillow, ...) never break another
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_) in SUITES.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--quick", action="store_true", help="a small grid, fewer repetitions (default: off)")
        p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run (default: cpu)")
        p.add_argument("--out", default=None, help="results folder (default: bench/results, or bench/results/quick "
                       "with --quick)")
        p.set_defaults(module=module)
        if name == chosen:
            importlib.import_module(module).add_args(p)
    args = parser.parse_args(argv)
    if args.quick and args.out is None:  # a small grid must not replace a suite's current numbers
        args.out = str(Path(__file__).resolve().parent / "results" / "quick")
    return args


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    return importlib.import_module(args.module).run(args)


if __name__ == "__main__":
    raise SystemExit(main())
