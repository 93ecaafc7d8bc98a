"""The benchmark harness every `python -m bench <suite>` shares.

How a number is made here:
- time: warm up, then run the providers of one case round-robin (interleaved, rotating the start),
  `reps` times each; report the median and the 20th/80th percentiles. CUDA work is timed with events.
- memory: each provider runs once more in a fresh Python process (`python -m bench.harness`), built by
  an importable factory, so no allocator cache from another provider can hide its cost. CPU: the peak
  resident set (VmHWM, reset through /proc/self/clear_refs) minus the resident set just before the
  run, with glibc's mmap threshold pinned so freed blocks go back to the OS; CUDA:
  max_memory_allocated minus memory_allocated before the run.
- ops: the aten ops one call dispatches (`bench.opcount`), the CPU proxy of a launch-bound GPU step.
- precision: fp32 on CPU, bf16 autocast on CUDA (`--dtype` where a suite has it).
- every row carries device, dtype, shapes, versions and the date; rows go to JSON lines plus a markdown table.
- one current result per suite and device: `bench/results/<suite>-<cpu|cuda>.{jsonl,md,png}`, replaced by the
  next full run (git keeps the history); `--quick` runs go to `bench/results/quick/`, which git ignores.

A factory is "module:function"; called with keyword arguments it returns a zero-argument callable
that does one unit of work (a forward, a training step, ...). The inputs it builds are not counted.
"""
import datetime
import importlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def build(factory: str, kwargs: dict):
    module, _, name = factory.partition(":")
    return getattr(importlib.import_module(module), name)(**kwargs)


def synchronize(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _time_once(fn, device) -> float:
    if str(device).startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_interleaved(fns: dict, device: str, warmup: int = 2, reps: int = 10) -> dict:
    """{name: [seconds, ...]} for zero-argument callables, run round-robin after `warmup` calls each."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
        synchronize(device)
    times = {name: [] for name in names}
    for r in range(reps):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            times[name].append(_time_once(fns[name], device))
    return times


def summarize(seconds: list) -> dict:
    q = statistics.quantiles(seconds, n=10, method="inclusive") if len(seconds) > 1 else seconds * 9
    return {"median_s": statistics.median(seconds), "p20_s": q[1], "p80_s": q[7], "reps": len(seconds)}


def add_dtype_arg(parser) -> None:
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"],
                        help="auto = bf16 autocast on cuda (the papers' mixed precision), fp32 on cpu; bf16 on cpu "
                             "runs the cuda path's casts (default: auto)")  # fmt: skip


def bf16(device: str, dtype: str = "auto") -> bool:
    """Whether a suite's steps run under bf16 autocast (`--dtype`)."""
    return dtype == "bf16" or (dtype == "auto" and str(device).startswith("cuda"))


def autocast(device: str, dtype: str = "auto") -> torch.autocast:
    """A fresh autocast context for one step: bf16 where `bf16`, else disabled (fp32)."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16(device, dtype))


def dtype_label(device: str, dtype: str = "auto") -> str:
    return "bf16 autocast" if bf16(device, dtype) else "fp32"


def peak_memory(factory: str, kwargs: dict, device: str, timeout: float = 1800.0) -> int:
    """Peak extra bytes of one call of the factory's callable, measured in a fresh process."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    spec = json.dumps({"factory": factory, "kwargs": kwargs, "device": device, "threads": torch.get_num_threads()})
    out = subprocess.run(
        [sys.executable, "-m", "bench.harness", spec], env=env, cwd=repo, capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory run of {factory}({kwargs}) failed:\n{out.stderr[-4000:]}")
    return int(json.loads(out.stdout.strip().splitlines()[-1])["peak_extra_bytes"])


def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def _memory_child(spec: dict) -> int:
    torch.set_num_threads(spec["threads"])
    device = spec["device"]
    fn = build(spec["factory"], spec["kwargs"])
    fn()  # warm-up: one-time allocations (thread pools, kernels, autotuning) are not the provider's cost
    synchronize(device)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated() - before
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) * 1024


def measure_matmul_tflops(device: str, dtype=torch.float32, n: int = 4096, reps: int = 10) -> float:
    """The device's measured dense matmul rate (TFLOP/s) on random data: the compute roof."""
    if not str(device).startswith("cuda"):
        n = min(n, 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = summarize(time_interleaved({"mm": lambda: a @ b}, device, warmup=3, reps=reps)["mm"])["median_s"]
    return 2 * n**3 / t / 1e12


def measure_copy_gbps(device: str, nbytes: int = 1 << 30, reps: int = 10) -> float:
    """The device's measured copy bandwidth (GB/s, bytes read + written): the memory roof."""
    if not str(device).startswith("cuda"):
        nbytes = min(nbytes, 1 << 28)
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    t = summarize(time_interleaved({"copy": lambda: dst.copy_(src)}, device, warmup=3, reps=reps)["copy"])["median_s"]
    return 2 * nbytes / t / 1e9


def environment(device: str) -> dict:
    """What every result row is labelled with."""
    if str(device).startswith("cuda"):
        name = torch.cuda.get_device_name()
    else:
        name = platform.processor() or platform.machine()
        cpuinfo = Path("/proc/cpuinfo")
        if cpuinfo.exists():
            match = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
            name = match.group(1).strip() if match else name
        name = f"{name} ({torch.get_num_threads()} threads)"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }


class Report:
    """Collects rows of one suite run; writes `<suite>-<cpu|cuda>` JSON lines, markdown table and (optionally) PNG."""

    def __init__(self, suite: str, device: str, out_dir=None):
        self.suite, self.device, self.rows = suite, device, []
        self.env = environment(device)
        self.out_dir = Path(out_dir) if out_dir else RESULTS
        kind = "cuda" if str(device).startswith("cuda") else "cpu"
        self.stem = f"{suite}-{kind}"  # the suite's current result on this kind of device

    def add(self, **row) -> dict:
        row = {"suite": self.suite, **row, **self.env}
        self.rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in self.env}), flush=True)
        return row

    def write(self, columns: list, title: str = "") -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        jsonl = self.out_dir / f"{self.stem}.jsonl"
        jsonl.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        lines = [f"# {title or self.suite}", ""]
        lines.append(
            f"device: {self.env['device_name']} · torch {self.env['torch']} · triton {self.env['triton']} "
            f"· python {self.env['python']} · {self.env['date']}"
        )
        lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for r in self.rows:
            lines.append("| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |")
        md = self.out_dir / f"{self.stem}.md"
        md.write_text("\n".join(lines) + "\n")
        print("\n".join(lines[4:]))
        print(f"\nwrote {jsonl} and {md}")
        return md

    def plot(self, x: str, y: str, group: str, ylabel: str) -> None:
        """One bar per (x, group) value of column y; skipped quietly without matplotlib."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("(matplotlib not installed: no PNG; pip install 'tinyprompt[plot]')")
            return
        xs = list(dict.fromkeys(r[x] for r in self.rows if y in r))
        groups = list(dict.fromkeys(r[group] for r in self.rows if y in r))
        width = 0.8 / max(1, len(groups))
        fig, ax = plt.subplots(figsize=(max(6, len(xs) * 1.2), 4))
        for g_i, g in enumerate(groups):
            vals = {r[x]: r[y] for r in self.rows if r.get(group) == g and y in r}
            ax.bar([i + g_i * width for i in range(len(xs))], [vals.get(v, 0) for v in xs], width, label=str(g))
        ax.set_xticks([i + width * (len(groups) - 1) / 2 for i in range(len(xs))])
        ax.set_xticklabels([str(v) for v in xs], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{self.suite} · {self.env['device_name']}", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        png = self.out_dir / f"{self.stem}.png"
        fig.savefig(png, dpi=120)
        print(f"wrote {png}")


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


if __name__ == "__main__":
    print(json.dumps({"peak_extra_bytes": _memory_child(json.loads(sys.argv[1]))}))
