"""The `tinyprompt` command (also `python -m tinyprompt`).

Each subcommand lives in the module that owns it, which provides `add_args(parser)` and `run(args)`;
this file only wires them together, so `tinyprompt --help` lists every subcommand with its defaults.
"""
import argparse
import os
import sys

import torch

from tinyprompt.commands import demo, evaluate, export, models, prompt_files, reproduce, train, zeroshot

# subcommand: (module, one-line help)
COMMANDS = {
    "demo": (demo, "zero-shot and all five methods on the built-in synthetic world (offline, minutes)"),
    "zeroshot": (zeroshot, "zero-shot accuracy of a CLIP model on a folder-per-class image set"),
    "train": (train, "learn a prompt with one of the methods (tinyprompt train METHOD --help)"),
    "reproduce": (reproduce, "a paper's table on your data: the protocol's grid over datasets and seeds, resumable"),
    "eval": (evaluate, "accuracy of a saved prompt on a labelled image set, with any class list"),
    "export-classifier": (export, "L2-normalised class embeddings (C, E) of a saved prompt, as .npy"),
    "models": (models, "the names --model takes, their download sizes and which are cached"),
    "import-prompt": (prompt_files.IMPORT, "an official repository's prompt file (CoOp, POMP, TaI-DPT, ILM-VP) as prompt.pt"),
    "export-prompt": (prompt_files.EXPORT, "a saved prompt as the official repository's file, which its code loads, or as .safetensors"),
}


THREADS_HELP = ("CPU threads for torch (torch.set_num_threads), set before COMMAND starts: `tinyprompt --threads N "
                "COMMAND ...`. Default: $OMP_NUM_THREADS when set; else 1 on a machine with <= 2 cores; else torch's "
                "default, capped at the cores the 1-minute load average leaves idle. Why: a thread waiting for a "
                "core another process holds spins, so beside one busy process on 2 cores, 2 threads run many times "
                "slower than 1, with the same numbers (measured by python -m bench demo_threads)")


def default_threads() -> int:
    """The thread count when --threads is not given (THREADS_HELP says why)."""
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()  # torch read it at start-up: the user's choice
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0  # Windows has no load average
    return 1 if cores <= 2 else max(1, min(torch.get_num_threads(), int(cores - load)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyprompt", description="Prompt learning on CLIP in plain PyTorch.")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help=THREADS_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.set_defaults(command_module=module)
        module.add_args(p)
    return parser


def main(argv=None) -> int:
    """Parse and run; errors propagate as exceptions (for callers and tests). The caller's torch thread count
    is restored afterwards."""
    args = build_parser().parse_args(argv)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads {args.threads}: use an int >= 1")
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads or default_threads())
    try:
        return args.command_module.run(args) or 0
    finally:
        torch.set_num_threads(previous)


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
