"""Sliding-window (delay) embedding of time series (seeds-part1.md §3.3)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._inputs import check_int, numeric_array


def sliding_window(x: Any, dim: int, tau: int, drop_last: bool = False) -> torch.Tensor:
    """Delay embedding of the last axis: (..., T) -> (..., n, dim), row t = [x_t, x_{t+τ}, ..., x_{t+(dim−1)τ}].

    ``n = T − (dim − 1)·τ`` (the paper's count: 185 points for T = 187, dim = 3, τ = 1);
    ``drop_last=True`` drops the last window as the MCI authors' code does (n − τ rows, 184).
    A view of ``x`` (no copy) when ``x`` is a tensor; an empty (..., 0, dim) result when the
    series is too short.
    """
    d = check_int(dim, "dim", 1, 1 << 30)
    t_ = check_int(tau, "tau", 1, 1 << 30)
    if isinstance(x, torch.Tensor):
        t = x
    else:
        # through NumPy: a negative-stride array (np.flip) made torch.as_tensor fail, and strings /
        # objects gave torch's errors without naming the argument
        arr = numeric_array(x, "x")
        if any(s < 0 for s in arr.strides):
            arr = np.ascontiguousarray(arr)
        t = torch.from_numpy(arr) if arr.ndim else torch.as_tensor(arr)
    if t.dim() < 1:
        raise ValueError("x: expected a tensor with a time axis (..., T)")
    T = t.shape[-1]
    span = (d - 1) * t_ + 1
    n = T - (d - 1) * t_ - (t_ if drop_last else 0)
    if n <= 0:
        return t.new_empty(t.shape[:-1] + (0, d))
    windows = t.unfold(-1, span, 1)  # (..., T - span + 1, span), a view
    return windows[..., :n, ::t_]
