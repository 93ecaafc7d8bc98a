"""The `tinyprompt` command (also `python -m tinyprompt`).

Each subcommand lives in the module that owns it, which provides `add_args(parser)` and `run(args)`;
this file only wires them together, so `tinyprompt --help` lists every subcommand with its defaults.
"""
import argparse
import importlib
import os
import sys

# subcommand: (module, one-line help)
COMMANDS = {
    "demo": ("tinyprompt.demo", "zero-shot and all five methods on the built-in synthetic world (offline, minutes)"),
    "zeroshot": ("tinyprompt.zeroshot", "zero-shot accuracy of a CLIP model on a folder-per-class image set"),
    "train": ("tinyprompt.train", "learn a prompt with one of the methods (tinyprompt train METHOD --help)"),
    "eval": ("tinyprompt.evaluate", "accuracy of a saved prompt on a labelled image set, with any class list"),
    "export-classifier": ("tinyprompt.export", "L2-normalised class embeddings (C, E) of a saved prompt, as .npy"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyprompt", description="Prompt learning on CLIP in plain PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.set_defaults(module=module)
        importlib.import_module(module).add_args(p)
    return parser


def main(argv=None) -> int:
    """Parse and run; errors propagate as exceptions (for callers and tests)."""
    args = build_parser().parse_args(argv)
    return importlib.import_module(args.module).run(args) or 0


def entry() -> int:
    """The console entry point: a user error prints one line naming the problem and the fix, exit code 2.

    Set TINYPROMPT_DEBUG=1 to see the full traceback instead.
    """
    try:
        return main()
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as error:
        if os.environ.get("TINYPROMPT_DEBUG"):
            raise
        print(f"tinyprompt: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinyprompt: interrupted (an interrupted training run continues with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(entry())
