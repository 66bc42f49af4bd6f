"""Dice loss on the fused statistics (seeds-losses.md §5 S1; MONAI DiceLoss conventions)."""
from __future__ import annotations

import warnings
from typing import Optional

import torch

from .region import soft_region_stats

REDUCTIONS = ("mean", "sum", "none")


def dice_loss(logits, labels, *, activation: str = "softmax", ignore_index: Optional[int] = None,
              reduction_unit: str = "sample", include_background: bool = True, smooth_nr: float = 1e-5,
              smooth_dr: float = 1e-5, reduction: str = "mean", validate: bool = True) -> torch.Tensor:
    """Soft Dice loss 1 − (2I + smooth_nr)/(P + G + smooth_dr) per (unit, class), from logits and integer labels.

    One pass over logits + labels for the value, one more in backward for dL/dlogits; neither the
    softmax nor the one-hot labels are materialised. Conventions follow MONAI ``DiceLoss`` with
    ``to_onehot_y=True`` and ``softmax=True`` (or ``sigmoid=True``): the same smoothing defaults,
    ``reduction_unit="batch"`` is MONAI's ``batch=True``, and an empty class with an empty
    prediction gives loss 0 (smooth_nr/smooth_dr = 1).

    Returns a scalar for reduction "mean"/"sum", else the (U, C') per-class losses (C' = C − 1
    without background). The dtype is float64 for float64 logits and float32 otherwise.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    for name, value in (("smooth_nr", smooth_nr), ("smooth_dr", smooth_dr)):
        if not isinstance(value, (int, float)) or value < 0 or value != value or value == float("inf"):
            raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    stats = soft_region_stats(logits, labels, activation=activation, ignore_index=ignore_index,
                              reduction_unit=reduction_unit, validate=validate)
    per_class = 1.0 - (2.0 * stats.intersection + smooth_nr) / (stats.prediction + stats.target + smooth_dr)
    if not include_background:
        if per_class.shape[1] == 1:
            warnings.warn("include_background=False ignored: a single-channel output has no background channel",
                          stacklevel=2)
        else:
            per_class = per_class[:, 1:]
    if reduction == "mean":
        loss = per_class.mean()
    elif reduction == "sum":
        loss = per_class.sum()
    else:
        loss = per_class
    out_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return loss.to(out_dtype)


class DiceLoss(torch.nn.Module):
    """nn.Module form of :func:`dice_loss`; ``forward(logits, labels)``."""

    def __init__(self, *, activation: str = "softmax", ignore_index: Optional[int] = None,
                 reduction_unit: str = "sample", include_background: bool = True, smooth_nr: float = 1e-5,
                 smooth_dr: float = 1e-5, reduction: str = "mean", validate: bool = True):
        super().__init__()
        self.kwargs = dict(activation=activation, ignore_index=ignore_index, reduction_unit=reduction_unit,
                           include_background=include_background, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
                           reduction=reduction, validate=validate)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return dice_loss(logits, labels, **self.kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
