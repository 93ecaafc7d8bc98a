"""tinyprompt's benchmarks (repository scripts, not installed): `python -m bench <suite> --help`."""
