"""Input validation shared by the topology ops: everything is checked here (vectorised), then
handed to the C++ core as contiguous float64 buffers."""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

METRICS = ("euclidean", "manhattan", "cityblock", "chebyshev")
PRECISIONS = ("float32", "float64")


def numeric_array(x: Any, arg: str) -> np.ndarray:
    """``np.asarray(x)`` for a non-tensor input, with errors naming ``arg`` for what is not numbers."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # noqa: BLE001
        raise TypeError(f"{arg}: expected a tensor or an array, got {type(x).__name__}") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{arg}: expected numbers, got an array of dtype {arr.dtype}")
    return arr


def as_float64_tensor(x: Any, arg: str, device: Any = "cpu") -> torch.Tensor:
    """A contiguous float64 tensor on ``device`` (the CPU by default) with the values of ``x``
    (tensor, array or nested lists)."""
    dev = torch.device(device)
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TypeError(f"{arg}: expected real values, got {x.dtype}")
        t = x.detach()
        if t.device != dev:
            t = t.to(dev)
    else:
        arr = numeric_array(x, arg)
        if np.issubdtype(arr.dtype, np.complexfloating):
            raise TypeError(f"{arg}: expected real values, got {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr)).to(dev)
    return t.to(torch.float64).contiguous()


def check_finite(t: torch.Tensor, arg: str) -> None:
    if t.numel() and not bool(torch.isfinite(t).all()):
        bad = "NaN" if bool(torch.isnan(t).any()) else "Inf"
        raise ValueError(f"{arg}: contains {bad}; expected finite values")


def check_threshold(threshold: Any) -> float:
    """``inf`` or ``"enclosing"`` (both: no truncation; the enclosing radius is used internally and
    changes no diagram), or a number >= 0."""
    if isinstance(threshold, str):
        if threshold != "enclosing":
            raise ValueError(f"threshold: expected a number, inf or 'enclosing', got {threshold!r}")
        return math.inf
    try:
        thr = float(threshold)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"threshold: expected a number, got {type(threshold).__name__}") from exc
    if math.isnan(thr) or thr < 0:
        raise ValueError(f"threshold: expected a number >= 0 or inf, got {threshold}")
    return thr


def check_int(value: Any, arg: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{arg}: expected an int, got {type(value).__name__}")
    if not lo <= int(value) <= hi:
        raise ValueError(f"{arg}: expected {lo}..{hi}, got {value}")
    return int(value)


def check_coeff(coeff: Any) -> int:
    p = check_int(coeff, "coeff", 2, 46337)
    if any(p % a == 0 for a in range(2, int(math.isqrt(p)) + 1)):
        raise ValueError(f"coeff: expected a prime (coefficients in Z/p), got {p}")
    return p


def check_metric(metric: Any) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
    return metric


def check_precision(precision: Any) -> bool:
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected 'float32' (ripser.py parity) or 'float64', got {precision!r}")
    return precision == "float64"


def check_distance_matrix(t: torch.Tensor, arg: str = "points") -> torch.Tensor:
    """Square, finite, >= 0, zero diagonal, symmetric (to 1e-9 relative); returns the matrix made
    exactly symmetric from its lower triangle (ripser.py reads the lower triangle)."""
    if t.dim() != 2 or t.shape[0] != t.shape[1]:
        raise ValueError(f"{arg}: distance_matrix=True expects a square (n, n) matrix, got shape {tuple(t.shape)}")
    check_finite(t, arg)
    if t.numel() == 0:
        return t
    if bool((t < 0).any()):
        raise ValueError(f"{arg}: distance matrix has negative entries")
    if bool((torch.diagonal(t) != 0).any()):
        raise ValueError(f"{arg}: distance matrix must have a zero diagonal (vertex births are not supported)")
    scale = float(t.abs().max())
    if float((t - t.T).abs().max()) > 1e-9 * max(scale, 1e-300):
        raise ValueError(f"{arg}: distance matrix is not symmetric")
    lower = torch.tril(t, diagonal=-1)
    return (lower + lower.T).contiguous()


def check_distance_matrices(t: torch.Tensor, arg: str) -> torch.Tensor:
    """:func:`check_distance_matrix` for a (B, n, n) stack in one vectorised pass."""
    if t.dim() != 3 or t.shape[1] != t.shape[2]:
        raise ValueError(f"{arg}: distance_matrix=True expects (B, n, n) matrices, got shape {tuple(t.shape)}")
    check_finite(t, arg)
    if t.numel() == 0:
        return t
    if bool((t < 0).any()):
        raise ValueError(f"{arg}: distance matrix has negative entries")
    if bool((torch.diagonal(t, dim1=1, dim2=2) != 0).any()):
        raise ValueError(f"{arg}: distance matrix must have a zero diagonal (vertex births are not supported)")
    scale = t.abs().amax(dim=(1, 2)).clamp_min(1e-300)
    if bool(((t - t.transpose(1, 2)).abs().amax(dim=(1, 2)) > 1e-9 * scale).any()):
        raise ValueError(f"{arg}: distance matrix is not symmetric")
    lower = torch.tril(t, diagonal=-1)
    return (lower + lower.transpose(1, 2)).contiguous()


def physical_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def resolve_memory_limit(memory_limit: Any) -> float:
    """``memory_limit`` in bytes (None: the machine's physical memory), validated."""
    if memory_limit is None:
        return float(physical_memory_bytes())
    try:
        limit = float(memory_limit)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"memory_limit: expected a number of bytes or None, got {memory_limit!r}") from exc
    if not limit > 0:
        raise ValueError(f"memory_limit: expected > 0 bytes, got {memory_limit}")
    return limit


def check_memory(estimate: float, memory_limit: Any, what: str) -> None:
    """MemoryError before any work when the estimate passes ``memory_limit`` (bytes; None: the
    machine's physical memory)."""
    if memory_limit is None:
        limit = physical_memory_bytes()
    else:
        try:
            limit = float(memory_limit)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"memory_limit: expected a number of bytes or None, got {memory_limit!r}") from exc
        if not limit > 0:
            raise ValueError(f"memory_limit: expected > 0 bytes, got {memory_limit}")
    if estimate > limit:
        # bytes as well: a small limit read "estimated 0.0 MiB exceeds memory_limit 0.0 MiB"
        raise MemoryError(f"{what}: estimated {estimate:.0f} bytes ({estimate / 2**20:.1f} MiB) exceeds "
                          f"memory_limit {limit:.0f} bytes ({limit / 2**20:.1f} MiB); lower maxdim, use fewer points "
                          f"or a threshold, or raise memory_limit")


# |finite diagram values| <= 2^1022 keeps every difference, persistence and L2 ground distance
# finite (without it -1e308 vs 1e308 overflowed to inf and the assignment failed with an internal error)
_DIAGRAM_MAX = 2.0 ** 1022


def _empty_diagram_shape(shape: tuple) -> bool:
    """An empty diagram is [] (0,) or (0, 2); (0, 3), (4, 0) etc. were taken as empty diagrams
    although no (k, 2) array has that shape."""
    return shape == (0,) or (len(shape) == 2 and shape[0] == 0 and shape[1] in (0, 2))


def diagram_tensor(d: Any, arg: str) -> torch.Tensor:
    """A persistence diagram as a contiguous float64 (k, 2) tensor; births finite, deaths >= births
    (death +inf allowed), no NaN."""
    t = as_float64_tensor(d, arg)
    if t.numel() == 0 and not _empty_diagram_shape(tuple(t.shape)):
        raise ValueError(f"{arg}: expected a (k, 2) array of (birth, death) pairs, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        return t.reshape(0, 2)
    if t.dim() != 2 or t.shape[1] != 2:
        raise ValueError(f"{arg}: expected a (k, 2) array of (birth, death) pairs, got shape {tuple(t.shape)}")
    if bool(torch.isnan(t).any()):
        raise ValueError(f"{arg}: contains NaN")
    if not bool(torch.isfinite(t[:, 0]).all()):
        raise ValueError(f"{arg}: births must be finite")
    if bool((t[:, 1] == -math.inf).any()):
        raise ValueError(f"{arg}: deaths must be finite or +inf")
    if bool((t[:, 1] < t[:, 0]).any()):
        raise ValueError(f"{arg}: a point has death < birth")
    if bool((t.abs() > _DIAGRAM_MAX).logical_and(torch.isfinite(t)).any()):
        raise ValueError(f"{arg}: finite values must lie within ±2^1022 (~4.5e307); beyond, distances "
                         "between points overflow float64")
    return t


def diagram_array(d: Any, arg: str) -> np.ndarray:
    """:func:`diagram_tensor` with NumPy (cheaper per call for the many small diagrams of a pair
    distance): a C-contiguous float64 (k, 2) array with the same checks."""
    if isinstance(d, torch.Tensor):
        if d.is_complex():
            raise TypeError(f"{arg}: expected real values, got {d.dtype}")
        d = d.detach().cpu().to(torch.float64).numpy()
    try:
        a = np.asarray(d)
    except Exception as exc:  # noqa: BLE001
        raise TypeError(f"{arg}: expected a tensor or an array, got {type(d).__name__}") from exc
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or \
            np.issubdtype(a.dtype, np.complexfloating):
        raise TypeError(f"{arg}: expected real numbers, got an array of dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float64)
    if a.size == 0 and not _empty_diagram_shape(a.shape):
        raise ValueError(f"{arg}: expected a (k, 2) array of (birth, death) pairs, got shape {a.shape}")
    if a.size == 0:
        return np.zeros((0, 2))
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{arg}: expected a (k, 2) array of (birth, death) pairs, got shape {a.shape}")
    if np.isnan(a).any():
        raise ValueError(f"{arg}: contains NaN")
    if not np.isfinite(a[:, 0]).all():
        raise ValueError(f"{arg}: births must be finite")
    if (a[:, 1] == -np.inf).any():
        raise ValueError(f"{arg}: deaths must be finite or +inf")
    if (a[:, 1] < a[:, 0]).any():
        raise ValueError(f"{arg}: a point has death < birth")
    if ((np.abs(a) > _DIAGRAM_MAX) & np.isfinite(a)).any():
        raise ValueError(f"{arg}: finite values must lie within ±2^1022 (~4.5e307); beyond, distances "
                         "between points overflow float64")
    return a
