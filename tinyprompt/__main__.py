"""`python -m tinyprompt ...` (also the entry point for `torchrun -m tinyprompt ...`)."""
from tinyprompt.commands.cli import entry

if __name__ == "__main__":
    raise SystemExit(entry())
