"""Launching the 2-process gloo runs of the DDP tests under `torchrun`.

A rank once aborted in C++ teardown at process exit in CI ("terminate called without an active
exception", SIGABRT), after every output had been written; it did not happen in ~120 runs on the
development machine. `engine.train` ends with a barrier before destroying its process group, and a
launch that fails that way is run once more in a fresh folder: a run that really fails, fails twice.
"""
import os
import shutil
import subprocess
import sys

ABORT_AT_EXIT = "terminate called without an active exception"


def _launch(args, timeout):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip


def torchrun(args_for, out, timeout=300) -> subprocess.CompletedProcess:
    """Launch `torchrun --nproc-per-node 2 *args_for(out)`, the outputs going to the folder `out`."""
    done = _launch(args_for(out), timeout)
    if done.returncode != 0 and ABORT_AT_EXIT in done.stderr:
        rerun = out.with_name(out.name + "-rerun")
        done = _launch(args_for(rerun), timeout)
        shutil.rmtree(out, ignore_errors=True)
        rerun.rename(out)
    return done
