"""Backend selection and lazy Triton loading shared by the kernel files (each has a Triton path and a reference twin).

Every kernel file has a Triton path and a plain-PyTorch reference twin. `backend` picks one:
- "auto": Triton for CUDA tensors when `triton` imports, else the reference;
- "triton": always Triton; on CPU tensors it runs under the Triton interpreter (that is how the CPU
  tests exercise the kernels);
- "reference": always the reference.

Why the interpreter is chosen at import time. Triton decides interpreter-or-compiler once per process,
when `triton` is first imported: its own library functions (`tl.sum`, `tl.sort`, `tl.cumsum`, ...) are
created as interpreted or compiled objects then, so a kernel cannot switch later. This module is
imported with `tinyprompt.kernels` (which itself never imports triton) and, on a machine without a
CUDA device, sets `TRITON_INTERPRET=1` unless the variable is already set, so whichever code imports
triton first (ours, or torch.compile's) gets the interpreter. On a CUDA machine nothing is set: Triton
compiles, and `backend="triton"` on CPU tensors raises an error saying to start the process with
TRITON_INTERPRET=1.

Each kernel file defines its kernels, each under a visible `@triton.jit`, in a cached function
`_triton_kernels()` that its launchers call first, so importing it never imports triton (heavy, optional,
and to be imported only after the choice above). That function declares the kernels and `tl` global,
because the interpreter re-runs each kernel's source in the module's globals: a helper or `tl` held in a
closure would not be found there.
"""
import functools
import importlib
import os
import sys

import torch

BACKENDS = ("auto", "triton", "reference")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

if "TRITON_INTERPRET" not in os.environ and "triton" not in sys.modules and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # see the module docstring: must happen before triton's first import


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    try:
        importlib.import_module("triton")
    except ImportError:
        return False
    return True


def interpreting() -> bool:
    """True when this process's triton runs kernels in the interpreter (decided at its first import)."""
    import triton.language as tl

    return type(tl.sum).__name__ == "InterpretedFunction"


def use_triton(backend: str, *tensors: torch.Tensor) -> bool:
    """Validate `backend` and say whether the Triton path runs for these (same-device) tensors."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
    device = tensors[0].device
    if backend == "reference":
        return False
    if backend == "auto":
        return device.type == "cuda" and triton_available()
    if not triton_available():
        raise ImportError("backend='triton' needs the triton package: pip install triton (or use backend='reference')")
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"backend='triton' runs on CUDA tensors (or CPU tensors in the interpreter), got {device}")
    if device.type == "cpu" and not interpreting():
        raise RuntimeError(
            "backend='triton' on CPU tensors runs in the Triton interpreter, but this process imported triton "
            "in compiled mode; start it with TRITON_INTERPRET=1, or use backend='reference' for CPU tensors"
        )
    return True


def num_programs_target(device: torch.device) -> int:
    """How many programs a launch should have: ~8 waves of the multiprocessors, so the last, partial
    wave costs little (one program per multiprocessor at a time for the big tiles)."""
    if device.type == "cuda":
        return 8 * torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # interpreter: a few programs, enough to exercise the split/combine logic


def check_same_device(**tensors) -> None:
    devices = {name: t.device for name, t in tensors.items() if isinstance(t, torch.Tensor)}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{name} on {d}" for name, d in devices.items())
        raise ValueError(f"all tensors must be on one device, got {listing}; move them with .to(device)")
