"""Validation and normalisation shared by the region losses: shapes, dtypes, devices, options.

Everything here looks only at metadata (no host sync); label ranges and NaN logits are checked
inside the kernels, which see every element anyway.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import torch

from .._tensor import FLOAT_DTYPES, LABEL_DTYPES

ACTIVATIONS = ("softmax", "sigmoid")
REDUCTION_UNITS = ("sample", "batch")


class RegionInputs(NamedTuple):
    logits: torch.Tensor
    labels: torch.Tensor
    sigmoid: bool
    per_sample: bool
    ignore_index: Optional[int]


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise ValueError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def check_region_inputs(logits, labels, activation: str, ignore_index, reduction_unit: str) -> RegionInputs:
    logits = _as_tensor(logits, "logits")
    labels = _as_tensor(labels, "labels")
    if logits.dtype not in FLOAT_DTYPES:
        raise ValueError(f"logits: expected float32, float64, float16 or bfloat16, got {logits.dtype}")
    if not 3 <= logits.dim() <= 5:
        raise ValueError(
            f"logits: expected shape (B, C, *spatial) with 1 to 3 spatial dims, got shape {tuple(logits.shape)}"
        )
    if labels.dtype not in LABEL_DTYPES:
        raise ValueError(
            f"labels: expected an integer dtype (class indices; uint8, uint16, int8, int16, int32, int64), "
            f"got {labels.dtype}"
        )
    if labels.device != logits.device:
        raise ValueError(f"labels: on device {labels.device}, but logits is on {logits.device}")
    B, C = logits.shape[:2]
    spatial = tuple(logits.shape[2:])
    if labels.dim() == logits.dim() and labels.shape[1] == 1:
        labels = labels.squeeze(1)  # (B, 1, *spatial), the MONAI layout: a view, no copy
    if tuple(labels.shape) != (B,) + spatial:
        raise ValueError(
            f"labels: expected shape {(B,) + spatial} or {(B, 1) + spatial} to match logits {tuple(logits.shape)}, "
            f"got {tuple(labels.shape)}"
        )
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    if activation == "softmax" and C == 1:
        raise ValueError(
            "activation: softmax over C = 1 channel is identically 1 and cannot learn; use activation='sigmoid' "
            "for a single-channel (binary) output"
        )
    if C == 0:
        raise ValueError("logits: the class dim C is 0")
    if reduction_unit not in REDUCTION_UNITS:
        raise ValueError(f"reduction_unit: expected one of {REDUCTION_UNITS}, got {reduction_unit!r}")
    if ignore_index is not None:
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
            raise ValueError(f"ignore_index: expected an int or None, got {ignore_index!r}")
        ignore_index = int(ignore_index)
    return RegionInputs(logits, labels, activation == "sigmoid", reduction_unit == "sample", ignore_index)
