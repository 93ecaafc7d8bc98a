"""`python -m tinyprompt ...` (also the entry point for `torchrun -m tinyprompt ...`)."""
from tinyprompt.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
