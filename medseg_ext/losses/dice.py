"""Dice loss on the fused statistics (seeds-losses.md §5 S1; MONAI DiceLoss conventions).

``dice_loss`` is one custom op: the forward reads logits + labels once and evaluates the
epilogue and its coefficients dL/dI, dL/dP (O(U·C) numbers) right away; the backward scales
those by the incoming gradient and makes the second pass. No autograd graph is built over the
epilogue, which keeps the per-call host overhead small (it dominates on a GPU at these sizes).
"""
from __future__ import annotations

import warnings
from typing import Optional, Tuple

import torch

from ._inputs import check_region_inputs
from .region import logits_backward, stats_forward

REDUCTIONS = ("mean", "sum", "none")


def _epilogue(stats: torch.Tensor, smooth_nr: float, smooth_dr: float, include_background: bool,
              reduction: str):
    """Loss and coefficients (U, C, 2) = d(loss)/dI, d(loss)/dP, with the reduction folded in
    (for reduction "none" the coefficients are per element of the (U, C') output)."""
    I, P, G = stats[..., 0], stats[..., 1], stats[..., 2]
    denom = P + G + smooth_dr
    num = 2.0 * I + smooth_nr
    per_class = 1.0 - num / denom
    coeff = torch.stack([-2.0 / denom, num / (denom * denom)], dim=-1)  # (U, C, 2)
    start = 1 if (not include_background and per_class.shape[1] > 1) else 0
    if start:
        per_class = per_class[:, 1:]
        coeff[:, 0] = 0.0
    if reduction == "mean":
        return per_class.mean(), coeff / per_class.numel()
    if reduction == "sum":
        return per_class.sum(), coeff
    return per_class, coeff


@torch.library.custom_op("medseg_ext::dice_loss", mutates_args=())
def _dice_loss_op(logits: torch.Tensor, labels: torch.Tensor, sigmoid: bool, per_sample: bool,
                  ignore_index: Optional[int], validate: bool, smooth_nr: float, smooth_dr: float,
                  include_background: bool, reduction: str) -> Tuple[torch.Tensor, torch.Tensor]:
    stats = stats_forward(logits, labels, sigmoid, per_sample, ignore_index, validate)
    loss, coeff = _epilogue(stats, smooth_nr, smooth_dr, include_background, reduction)
    out_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return loss.to(out_dtype), coeff


@_dice_loss_op.register_fake
def _(logits, labels, sigmoid, per_sample, ignore_index, validate, smooth_nr, smooth_dr, include_background,
      reduction):
    U = logits.shape[0] if per_sample else 1
    C = logits.shape[1]
    out_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    if reduction == "none":
        loss = logits.new_empty((U, C - 1 if (not include_background and C > 1) else C), dtype=out_dtype)
    else:
        loss = logits.new_empty((), dtype=out_dtype)
    return loss, logits.new_empty((U, C, 2), dtype=torch.float64)


def _setup_context(ctx, inputs, output):
    logits, labels, sigmoid, per_sample, ignore_index = inputs[:5]
    include_background, reduction = inputs[8], inputs[9]
    ctx.save_for_backward(logits, labels, output[1])
    ctx.params = (sigmoid, per_sample, ignore_index)
    ctx.drop_background = not include_background and logits.shape[1] > 1
    ctx.reduction = reduction
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, grad_loss, _grad_coeff):
    logits, labels, coeff = ctx.saved_tensors
    g = grad_loss.to(torch.float64)
    if ctx.reduction == "none":
        if ctx.drop_background:
            g = torch.nn.functional.pad(g, (1, 0))  # the background column got no loss
        coeff = coeff * g[..., None]
    else:
        coeff = coeff * g
    grad = logits_backward(coeff, logits, labels, *ctx.params)
    return (grad,) + (None,) * 9


_dice_loss_op.register_autograd(_backward, setup_context=_setup_context)


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
    without background). The dtype is float64 for float64 logits and float32 otherwise; the
    gradient has the logits' dtype.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    for name, value in (("smooth_nr", smooth_nr), ("smooth_dr", smooth_dr)):
        if not isinstance(value, (int, float)) or value < 0 or value != value or value == float("inf"):
            raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    inp = check_region_inputs(logits, labels, activation, ignore_index, reduction_unit)
    if not include_background and inp.logits.shape[1] == 1:
        warnings.warn("include_background=False ignored: a single-channel output has no background channel",
                      stacklevel=2)
    loss, _ = _dice_loss_op(inp.logits, inp.labels, inp.sigmoid, inp.per_sample, inp.ignore_index, validate,
                            float(smooth_nr), float(smooth_dr), include_background, reduction)
    return loss


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
