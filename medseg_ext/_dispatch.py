"""The one place that picks an implementation (NumPy reference, CPU C++, CUDA, Triton) per call.

Rules:
* CPU tensors run the C++ kernels of ``medseg_ext._C``.
* CUDA tensors run Triton when it is importable, else the CUDA kernels compiled into ``_C``;
  ``MEDSEG_EXT_GPU_BACKEND=triton|cuda`` picks one explicitly. A CUDA tensor with neither
  available is an error: there is no silent fallback to slow code.
* ``MEDSEG_EXT_FORCE_REFERENCE=1`` sends every op to the NumPy reference (slow; for debugging).
* ``use_backend(name)`` forces a backend inside a ``with`` block (tests and benchmarks use it,
  e.g. to run the Triton kernels on CPU tensors under ``TRITON_INTERPRET=1``).
* ``emulate_cuda(module)`` (tests only) runs the CUDA code paths on CPU tensors through a build of
  ``_C`` whose CUDA sources were compiled against the CPU emulator (csrc/testing/cuda_emu).
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
import threading
from typing import Iterator, Optional

import torch

from . import _malloc

FORCE_REFERENCE_ENV = "MEDSEG_EXT_FORCE_REFERENCE"
GPU_BACKEND_ENV = "MEDSEG_EXT_GPU_BACKEND"
BACKENDS = ("reference", "cpu", "cuda", "triton")

_override = threading.local()
_emulated = threading.local()  # .module: the CUDA-emulating _C inside emulate_cuda(), else unset


@functools.lru_cache(maxsize=None)
def _load_extension():
    """Returns (module, None) or (None, error text)."""
    try:
        return importlib.import_module("medseg_ext._C"), None
    except ImportError as exc:  # the package was installed without its compiled part
        return None, f"{type(exc).__name__}: {exc}"


def extension():
    """The compiled module; a clear error when it was not built."""
    emulated = emulated_cuda_module()
    if emulated is not None:
        return emulated
    mod, err = _load_extension()
    if mod is None:
        raise RuntimeError(
            "medseg_ext._C (the compiled kernels) could not be imported: "
            f"{err}. Reinstall with `pip install .` from a source tree that has a C++17 compiler and CMake."
        )
    return mod


@functools.lru_cache(maxsize=None)
def _triton_status():
    try:
        triton = importlib.import_module("triton")
        return True, getattr(triton, "__version__", "?"), None
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable"
        return False, None, f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def _thread_setting(store: threading.local, attr: str, value) -> Iterator[None]:
    """Sets a thread-local attribute for the block and restores the previous value (None if unset)."""
    previous = getattr(store, attr, None)
    setattr(store, attr, value)
    try:
        yield
    finally:
        setattr(store, attr, previous)


def emulated_cuda_module():
    """The CUDA-emulating build of _C while emulate_cuda() is active in this thread, else None."""
    return getattr(_emulated, "module", None)


@contextlib.contextmanager
def emulate_cuda(module) -> Iterator[None]:
    """Tests only: inside the block, CPU tensors take the CUDA code paths (host drivers and kernels
    of the *_cuda.cu files) through ``module``, a build of _C made with ``-DMEDSEG_EXT_CUDA_EMU=ON``
    whose CUDA functions take host pointers (python_tests/cuda_emu builds and loads it)."""
    if not module.build_info().get("cuda_emulated"):
        raise ValueError("module: not a CUDA-emulating build of medseg_ext._C (build it with -DMEDSEG_EXT_CUDA_EMU=ON)")
    with _thread_setting(_emulated, "module", module):
        yield


def on_cuda(t: torch.Tensor) -> bool:
    """Whether ``t`` takes the CUDA code path: a CUDA tensor, or any tensor under emulate_cuda()."""
    return t.device.type == "cuda" or (emulated_cuda_module() is not None and t.device.type == "cpu")


@contextlib.contextmanager
def cuda_stream(device: torch.device) -> Iterator[int]:
    """The current CUDA stream of ``device`` as the integer the *_cuda functions take, with ``device``
    current for the block; stream 0 under emulate_cuda()."""
    if emulated_cuda_module() is not None and device.type == "cpu":
        yield 0
        return
    with torch.cuda.device(device):
        yield torch.cuda.current_stream(device).cuda_stream


def cuda_kernels_usable() -> bool:
    if emulated_cuda_module() is not None:
        return True
    mod, _ = _load_extension()
    return bool(mod is not None and mod.build_info()["cuda_compiled"] and mod.cuda_device_count() > 0)


def backends() -> dict:
    """Which backends are compiled and usable here, with versions and the CUDA architectures built."""
    mod, err = _load_extension()
    info = mod.build_info() if mod is not None else {}
    triton_ok, triton_version, triton_err = _triton_status()
    gpu = torch.cuda.is_available()
    return {
        "cpu": {
            "usable": mod is not None,
            "openmp": info.get("openmp"),
            "threads": info.get("max_threads"),
            "isa": info.get("cpu_isa"),  # the kernel variant picked for this CPU: avx512, avx2+fma or baseline
            "malloc_tuned": _malloc.cpu_malloc_tuned(),  # threshold of tune_cpu_malloc(), None when not tuned
            "error": err,
        },
        "cuda": {
            "compiled": bool(info.get("cuda_compiled")),
            "usable": cuda_kernels_usable(),
            "architectures": [a for a in str(info.get("cuda_architectures", "")).split(",") if a],
            "runtime_version": info.get("cuda_runtime_version"),
            "devices": mod.cuda_device_count() if mod is not None else 0,
        },
        "triton": {
            "installed": triton_ok,
            "usable": triton_ok and gpu,
            "interpret": os.environ.get("TRITON_INTERPRET") == "1",
            "version": triton_version,
            "error": triton_err,
        },
        "torch": {"version": torch.__version__, "cuda": torch.version.cuda, "gpu_available": gpu},
        "force_reference": os.environ.get(FORCE_REFERENCE_ENV) == "1",
    }


@contextlib.contextmanager
def use_backend(name: Optional[str]) -> Iterator[None]:
    """Force a backend for calls made in this thread inside the block (None: automatic)."""
    if name is not None and name not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")
    with _thread_setting(_override, "name", name):
        yield


def select_backend(**tensors: torch.Tensor) -> str:
    """Backend for an op whose tensor arguments are given by name; checks they share one device."""
    items = list(tensors.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device:
            raise ValueError(f"{name}: on device {t.device}, but {first_name} is on {first.device}; move both to one device")
    forced = getattr(_override, "name", None)
    if forced is not None:
        return forced
    if os.environ.get(FORCE_REFERENCE_ENV) == "1":
        return "reference"
    dev = first.device
    if on_cuda(first) and dev.type == "cpu":  # emulate_cuda()
        return "cuda"
    if dev.type == "cpu":
        extension()
        return "cpu"
    if dev.type == "cuda":
        wanted = os.environ.get(GPU_BACKEND_ENV, "auto").lower()
        if wanted not in ("auto", "triton", "cuda"):
            raise ValueError(f"{GPU_BACKEND_ENV}: expected auto, triton or cuda, got {wanted!r}")
        if wanted in ("auto", "triton") and _triton_status()[0]:
            return "triton"
        if wanted in ("auto", "cuda") and cuda_kernels_usable():
            return "cuda"
        raise RuntimeError(
            f"{first_name}: is a CUDA tensor but no GPU backend is usable (wanted {wanted}; triton installed: "
            f"{_triton_status()[0]}; CUDA kernels compiled: {backends()['cuda']['compiled']}). Install triton or "
            "rebuild medseg_ext with MEDSEG_EXT_CUDA=on."
        )
    raise ValueError(f"{first_name}: device type {dev.type!r} is not supported (cpu or cuda)")
