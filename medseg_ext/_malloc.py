"""Opt-in tuning of glibc's malloc for CPU work on large tensors (process-wide).

PyTorch allocates CPU tensors with ``posix_memalign``. With glibc's default settings a buffer
above the dynamic mmap threshold (at most 32 MiB) is mapped and unmapped on every allocation,
and freed heap space above the trim threshold goes back to the kernel. The next call then
touches fresh pages: one minor page fault (and a page zeroing) per 4 KiB. Work that keeps many
large buffers alive across a call (LRP keeps every activation, a relevance pass allocates as it
goes) pays for this on every call: about 136 MiB of fresh pages per ε-LRP relevance pass of the
bench's 2-D BasicUNet, 40 ms of its 130 ms on the 2-core CI machine.

``tune_cpu_malloc()`` raises both thresholds (``mallopt(M_MMAP_THRESHOLD)`` and
``mallopt(M_TRIM_THRESHOLD)``, the same as setting ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` before start), so freed buffers stay in the process and are reused
without page faults. The cost: the process keeps its peak heap size instead of returning memory
to the system. It changes the whole process, cannot be undone to glibc's dynamic default, and is
never applied implicitly: call it, or set ``MEDSEG_EXT_TUNE_MALLOC=1`` before importing
medseg_ext. jemalloc or tcmalloc (``LD_PRELOAD``) are alternatives with the same effect.
"""
from __future__ import annotations

import ctypes
import os
import platform
import threading

TUNE_ENV = "MEDSEG_EXT_TUNE_MALLOC"
DEFAULT_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD = -1   # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
_INT_MAX = 2 ** 31 - 1   # mallopt takes a C int

_lock = threading.Lock()
_state = {"threshold": None}  # set once glibc accepted both settings


def _glibc_mallopt():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        fn = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def tune_cpu_malloc(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Keep freed CPU buffers of up to ``threshold`` bytes in the process for reuse (see the module doc).

    Returns True when glibc accepted both settings, False where there is no glibc (macOS, musl,
    Windows: nothing is changed). Process-wide and permanent for the process; calling it again
    with another threshold re-tunes.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise TypeError(f"threshold: expected an int number of bytes, got {type(threshold).__name__}")
    if not (1 << 20) <= threshold <= _INT_MAX:
        raise ValueError(f"threshold: expected 1 MiB .. {_INT_MAX} bytes, got {threshold}")
    fn = _glibc_mallopt()
    if fn is None:
        return False
    with _lock:
        ok = bool(fn(_M_MMAP_THRESHOLD, threshold)) and bool(fn(_M_TRIM_THRESHOLD, threshold))
        if ok:
            _state["threshold"] = threshold
    return ok


def cpu_malloc_tuned():
    """The threshold set by :func:`tune_cpu_malloc` in this process, or None."""
    return _state["threshold"]


def _tune_from_env() -> None:
    value = os.environ.get(TUNE_ENV, "").strip()
    if value in ("", "0"):
        return
    if value == "1":
        tune_cpu_malloc()
        return
    try:
        threshold = int(value)
    except ValueError:
        raise ValueError(f"{TUNE_ENV}: expected 0, 1 or a threshold in bytes, got {value!r}") from None
    tune_cpu_malloc(threshold)
