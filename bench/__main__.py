"""`python -m bench <suite> [--quick] [--device cpu|cuda] [--out DIR]`.

Each suite is a module in this folder with `add_args(parser)` and `run(args)`; results go to
`bench/results/` (JSON lines + a markdown table, a PNG when matplotlib is installed).
"""
import argparse
import importlib

SUITES = {
    # name: (module, one-line description)
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="suite", required=True, metavar="SUITE")
    for name, (module, help_) in SUITES.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--quick", action="store_true", help="a small grid, fewer repetitions (default: off)")
        p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run (default: cpu)")
        p.add_argument("--out", default=None, help="results folder (default: bench/results)")
        p.set_defaults(module=module)
        importlib.import_module(module).add_args(p)
    args = parser.parse_args(argv)
    return importlib.import_module(args.module).run(args)


if __name__ == "__main__":
    raise SystemExit(main())
