"""`tinyprompt demo --quick` wall time at 1 and 2 torch threads, alone and beside a CPU-busy process.

`python -m bench demo_threads [--quick] [--reps N] [--threads 1,2]`

Why: an OpenMP thread that waits for a core another process holds spins instead of sleeping, so every
parallel region waits for the slowest thread; on a small machine beside a busy process more threads can be
many times slower. These numbers choose `tinyprompt --threads`'s default (see `commands/cli.py`).

Each run is a fresh `python -m tinyprompt --threads T demo --quick` process, timed end to end (start-up,
model load, all six rows), with OMP_NUM_THREADS unset so --threads alone decides. The busy neighbour is a
second process spinning a pure-Python loop (one core kept busy, as another user's job would), started just
before the run and killed after it. One untimed run first warms the file caches, then the cases run
round-robin (`harness.time_interleaved`). Every run's rows (minus their seconds) are compared with the
first run's: the thread count must not change any number the demo computes. The demo runs on the CPU
whatever --device says. Other processes on the machine add to the neighbour: each row records the
1-minute load average before the first timed run.
"""
import json
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path

from bench.harness import Report, summarize, time_interleaved

REPO = Path(__file__).resolve().parents[1]


def add_args(parser) -> None:
    parser.add_argument("--reps", type=int, default=3, help="timed runs per case; --quick makes it 1 (default: 3)")
    parser.add_argument("--threads", default="1,2", help="comma-separated --threads values (default: 1,2)")


@contextmanager
def busy_neighbour():
    """A process spinning on one core for the duration of the block."""
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spin.kill()
        spin.wait()


def demo_run(threads: int, busy: bool, out: Path, rows: list):
    """A zero-argument callable: one demo process (its rows are appended to `rows`)."""
    command = [sys.executable, "-m", "tinyprompt", "--threads", str(threads), "demo", "--quick", "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}

    def run():
        with busy_neighbour() if busy else nullcontext():
            done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        rows.append([{k: v for k, v in row.items() if k != "seconds"}
                     for row in json.loads((out / "results.json").read_text())["rows"]])

    return run


def run(args) -> int:
    reps = 1 if args.quick else args.reps
    cases = [(int(t), busy) for t in args.threads.split(",") for busy in (False, True)]
    report = Report("demo_threads", "cpu", args.out)
    with tempfile.TemporaryDirectory() as tmp:
        rows = {case: [] for case in cases}
        fns = {case: demo_run(*case, Path(tmp) / f"{case[0]}-{case[1]}", rows[case]) for case in cases}
        fns[cases[0]]()  # warm-up: file caches and imports, untimed
        load = os.getloadavg()[0]
        times = time_interleaved(fns, "cpu", warmup=0, reps=reps)
    reference, stats = rows[cases[0]][0], {case: summarize(times[case]) for case in cases}
    for threads, busy in cases:
        one_thread = stats.get((1, busy))
        report.add(threads=threads, neighbour="1 busy process" if busy else "none", **stats[(threads, busy)],
                   vs_1_thread=stats[(threads, busy)]["median_s"] / one_thread["median_s"] if one_thread else None,
                   same_numbers=all(r == reference for r in rows[(threads, busy)]), cores=os.cpu_count(),
                   load_1m=round(load, 2), command=f"tinyprompt --threads {threads} demo --quick")  # fmt: skip
    report.write(["threads", "neighbour", "median_s", "p20_s", "p80_s", "reps", "vs_1_thread", "same_numbers", "cores",
                  "load_1m", "command"],
                 title="`tinyprompt demo --quick` wall time by --threads, alone and beside a CPU-busy process "
                       "(threads: the demo's; the device label's count is the bench process's own)")  # fmt: skip
    report.plot("neighbour", "median_s", "threads", "seconds per `tinyprompt demo --quick`")
    return 0
