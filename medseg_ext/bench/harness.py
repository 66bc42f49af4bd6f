"""Reusable benchmark harness: timing, peak memory, copy bandwidth, tables and results files.

DESIGN.md principle 8. A benchmark case is described by a picklable :class:`CaseSpec` (module,
factory function, kwargs) so that CPU peak memory can be measured in a fresh subprocess that
builds its own inputs before the baseline is taken. The factory returns a :class:`Case`.
"""
from __future__ import annotations

import dataclasses
import datetime
import importlib
import json
import os
import pickle
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import torch

from .. import _malloc

MiB = 1024 ** 2
_RESULT_MARK = "MEDSEG_EXT_BENCH_RESULT "


@dataclasses.dataclass
class Case:
    """A ready-to-run call: ``run()`` is what is measured, ``reset()`` runs before each call, unmeasured."""

    run: Callable[[], Any]
    reset: Optional[Callable[[], None]] = None


@dataclasses.dataclass(frozen=True)
class CaseSpec:
    """How to build a Case anywhere: ``importlib.import_module(module).<function>(**kwargs)``."""

    module: str
    function: str
    kwargs: dict = dataclasses.field(default_factory=dict)

    def build(self) -> Case:
        factory = getattr(importlib.import_module(self.module), self.function)
        case = factory(**self.kwargs)
        return case if isinstance(case, Case) else Case(run=case)


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


# ---------------------------------------------------------------- time


def time_call(fn: Callable[[], Any], *, warmup: int = 2, repeat: int = 10, device: str = "cpu",
              reset: Optional[Callable[[], None]] = None) -> dict:
    """Median/min/max wall seconds of ``fn()`` over ``repeat`` calls after ``warmup`` calls, and the
    median/min process CPU seconds of the same calls (all threads; the steadier figure on a shared
    machine)."""
    if repeat < 1:
        raise ValueError(f"repeat: expected >= 1, got {repeat}")
    for _ in range(warmup):
        if reset is not None:
            reset()
        fn()
    _sync(device)
    times, cpus = [], []
    for _ in range(repeat):
        if reset is not None:
            reset()
        _sync(device)  # the reset and earlier queued work are not part of this call
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "repeat": repeat,
            "times": times, "cpu_median": statistics.median(cpus), "cpu_min": min(cpus)}


# ---------------------------------------------------------------- peak memory


def alloc_case(nbytes: int) -> Case:
    """A calibration case for the peak-memory measurement: one call allocates and touches ``nbytes``."""
    return Case(run=lambda: torch.empty(int(nbytes), dtype=torch.uint8).fill_(1))


def _warm_up(case: Case, warmup: int) -> None:
    """Runs the case `warmup` times (lazy one-time costs such as library pages and thread pools stay out
    of the measured call), then resets it so the measured call starts from the same state."""
    for _ in range(warmup):
        if case.reset is not None:
            case.reset()
        case.run()
    if case.reset is not None:
        case.reset()


def peak_memory_cuda(case: Case, *, warmup: int = 1) -> int:
    """Bytes allocated by one call above what was allocated before it (the inputs), on the current GPU."""
    _warm_up(case, warmup)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    case.run()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - before)


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _child_peak_rss(spec: CaseSpec, warmup: int) -> dict:
    """Runs inside the fresh subprocess: build inputs, warm up, reset the peak, measure one call."""
    import ctypes
    import gc

    case = spec.build()
    _warm_up(case, warmup)
    gc.collect()
    try:  # give freed heap pages back, else reused pages would not show in the peak
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current VmRSS
    rss_before = _proc_status_kib("VmRSS")
    case.run()
    hwm = _proc_status_kib("VmHWM")
    return {"peak_bytes": (hwm - rss_before) * 1024, "rss_before_bytes": rss_before * 1024}


def _child_main() -> None:
    spec, warmup = pickle.load(sys.stdin.buffer)
    try:
        out = _child_peak_rss(spec, warmup)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which decides
        out = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write("\n" + _RESULT_MARK + json.dumps(out) + "\n")
    sys.stdout.flush()


def cpu_peak_supported() -> bool:
    return sys.platform.startswith("linux") and os.path.exists("/proc/self/clear_refs")


def peak_memory_cpu(spec: CaseSpec, *, warmup: int = 1, timeout: float = 900.0) -> dict:
    """Peak RSS growth of one call (VmHWM − VmRSS before), measured in a fresh Python process.

    Returns ``{"peak_bytes": int}`` or ``{"error": str}``; never raises for a failing case.
    """
    if not cpu_peak_supported():
        return {"error": "needs Linux /proc/self/clear_refs"}
    code = "from medseg_ext.bench.harness import _child_main; _child_main()"
    env = dict(os.environ)
    # A fixed glibc mmap threshold: large buffers are mapped and unmapped one by one, so the peak is
    # the live bytes; the default dynamic threshold reuses heap space in an order-dependent way,
    # which moved MONAI's peak by one whole buffer between identical runs.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(MiB))
    # The child must import the medseg_ext this process runs. `python -c` puts its working directory
    # first on sys.path, so started from a source checkout (the README's main job runs in the repo
    # root) it would import the uncompiled source tree instead of the installed wheel: run it from
    # the directory that holds this package.
    import medseg_ext
    pkg_parent = str(Path(medseg_ext.__file__).resolve().parent.parent)
    try:
        proc = subprocess.run([sys.executable, "-c", code], input=pickle.dumps((spec, warmup)),
                              capture_output=True, timeout=timeout, env=env, cwd=pkg_parent)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.decode(errors="replace").splitlines()):
        if line.startswith(_RESULT_MARK):
            return json.loads(line[len(_RESULT_MARK):])
    tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
    return {"error": f"subprocess exited {proc.returncode}: " + " | ".join(tail)}


def peak_memory(spec: CaseSpec, device: str, *, case: Optional[Case] = None) -> dict:
    """Peak memory of one call on ``device``: CUDA in this process, CPU in a fresh subprocess."""
    if str(device).startswith("cuda"):
        try:
            return {"peak_bytes": peak_memory_cuda(case if case is not None else spec.build())}
        except Exception as exc:  # noqa: BLE001
            return {"error": f"{type(exc).__name__}: {exc}"}
    return peak_memory_cpu(spec)


# ---------------------------------------------------------------- bandwidth


def copy_bandwidth(device: str = "cpu", *, nbytes: Optional[int] = None, repeat: int = 10) -> dict:
    """Bytes/s of a large ``Tensor.copy_`` (read + write counted), the memory-bound speed limit."""
    if nbytes is None:
        nbytes = (1024 if str(device).startswith("cuda") else 256) * MiB
    n = nbytes // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    t = time_call(lambda: dst.copy_(src), warmup=2, repeat=repeat, device=device)
    moved = 2 * n * 4
    return {"bytes_per_s": moved / t["median"], "best_bytes_per_s": moved / t["min"], "buffer_bytes": n * 4}


def floor_seconds(bytes_moved: int, bandwidth: dict) -> float:
    return bytes_moved / bandwidth["bytes_per_s"]


# ---------------------------------------------------------------- reporting


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if v != v:
            return "nan"
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 100:
            return f"{v:.0f}"
        if a >= 0.01:
            return f"{v:.2f}" if a >= 1 else f"{v:.3f}"
        return f"{v:.3g}"
    return str(v).replace("|", "\\|")


def markdown_table(rows: Sequence[dict], columns: Optional[Sequence[str]] = None) -> str:
    """A GitHub markdown table of dict rows; columns default to the keys in first-seen order."""
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info(device: str = "cpu") -> dict:
    info = {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "cpu_model": _cpu_model(), "torch_threads": torch.get_num_threads(),
            "malloc_tuned": _malloc.cpu_malloc_tuned()}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
    return info


def _dist_version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions(peers: Iterable[str] = ()) -> dict:
    """Python, torch, numpy, medseg_ext, triton and each named peer distribution (None when absent)."""
    import numpy

    import medseg_ext

    out = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "numpy": numpy.__version__, "medseg_ext": medseg_ext.__version__, "triton": _dist_version("triton")}
    for p in peers:
        out[p] = _dist_version(p)
    return out


def source_root() -> Optional[Path]:
    """The repository root when medseg_ext is imported from a source tree, else None."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "benchmarks").is_dir():
        return root
    return None


def git_commit(root: Optional[Path]) -> Optional[dict]:
    if root is None:
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def write_json(results: dict, family: str, device: str, *, peers: Iterable[str] = (),
               out_dir: Optional[os.PathLike] = None) -> Path:
    """Writes ``benchmarks/results/<family>-<device>-<YYYY-MM-DD>.json`` under the repo root (else the cwd)."""
    root = source_root()
    if out_dir is None:
        out_dir = (root if root is not None else Path.cwd()) / "benchmarks" / "results"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    path = out_dir / f"{family}-{device.split(':')[0]}-{now:%Y-%m-%d}.json"
    doc = {"family": family, "device": device, "date_utc": now.isoformat(timespec="seconds"),
           "machine": machine_info(device), "versions": versions(peers), "git": git_commit(root),
           "command": sys.argv, **results}
    path.write_text(json.dumps(doc, indent=2, default=str, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
