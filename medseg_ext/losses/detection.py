"""Fused dense-detection losses (mmdetection 2.x semantics; seeds-part1.md §1.10).

* :func:`sigmoid_focal_loss` — sigmoid focal loss on (N, C) logits and integer labels in [0, C]
  (C = background), α, γ, per-anchor or per-element weights, ``avg_factor``;
* :func:`giou_loss` — 1 − GIoU of (x1, y1, x2, y2) boxes, mmdet's eps rule (union and enclosing
  area clamped below by ``eps``);
* :func:`centerness_target` and :func:`centerness_loss` — ATSS centerness targets and
  BCE-with-logits against them, fused (the targets are returned, e.g. as GIoU weights);
* :func:`distribution_focal_loss` — GFL's DFL over K bins (17 for reg_max 16): a continuous
  target y is split between bins ⌊y⌋ and ⌊y⌋ + 1.

Each loss is one ``torch.library.custom_op`` whose CPU kernel reads the inputs once and writes
the loss and d(loss)/d(input) together; the backward is a multiplication of that saved gradient
by the incoming one (the Liger/Apex pattern), so no intermediate (sigmoid, one-hot, focal weight,
log-softmax) is ever stored. Targets, weights and labels are constants (passing a ``target`` or
``weight`` that requires grad is an error). fp16/bf16 inputs are read into float32 and the scalar
loss is float32 (float64 for float64 inputs); per-element losses and gradients keep the input's
dtype. Reductions: "mean" = sum / (avg_factor + float32 eps) when ``avg_factor`` is given (mmdet),
else the plain mean; "sum" (no avg_factor allowed, as in mmdet); "none".

Backends: the C++ CPU kernels; Triton kernels for CUDA tensors (focal, GIoU, DFL; centerness and the
label-aware kernels are CPU only so far); ``use_backend("reference")`` runs the plain-PyTorch formulas
of :mod:`medseg_ext.reference.detection` in float64.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch

from .._custom_op import custom_op
from .. import _dispatch
from .._tensor import FLOAT_DTYPES, desc

REDUCTIONS = ("mean", "sum", "none")
_F32_EPS = float(np.finfo(np.float32).eps)


# ---------------------------------------------------------------- validation helpers


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _check_float(t: torch.Tensor, name: str) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected float32, float64, float16 or bfloat16, got {t.dtype}")


def _check_const(t: Optional[torch.Tensor], name: str) -> None:
    if t is not None and t.requires_grad:
        raise ValueError(f"{name}: requires grad, but {name} is treated as a constant (no gradient flows to it); "
                         f"pass {name}.detach()")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _scalar_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _weight(weight, name_rows: str, n: int, device, dtype, per_element_cols: Optional[int] = None):
    """Weight as the kernels want it: compute dtype, (N,) or (N, C) (the latter where allowed)."""
    if weight is None:
        return None
    w = _as_tensor(weight, "weight")
    _check_float(w, "weight")
    _check_const(w, "weight")
    if w.device != device:
        raise ValueError(f"weight: on device {w.device}, but {name_rows} is on {device}")
    ok = (w.dim() == 1 and w.shape[0] == n) or (
        per_element_cols is not None and w.dim() == 2 and tuple(w.shape) == (n, per_element_cols))
    if not ok:
        want = f"({n},)" + (f" or ({n}, {per_element_cols})" if per_element_cols is not None else "")
        raise ValueError(f"weight: expected shape {want}, got {tuple(w.shape)}")
    return w.to(_compute_dtype(dtype))


def _loss_scale(reduction: str, avg_factor, count: int, loss_weight: float) -> float:
    """The factor the kernels apply to the summed (or per-element) weighted loss."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    if not (isinstance(loss_weight, (int, float)) and math.isfinite(loss_weight)):
        raise ValueError(f"loss_weight: expected a finite number, got {loss_weight!r}")
    if avg_factor is not None:
        if isinstance(avg_factor, torch.Tensor):
            if avg_factor.numel() != 1:
                raise ValueError(f"avg_factor: expected a number or a one-element tensor, got shape "
                                 f"{tuple(avg_factor.shape)}")
            avg_factor = float(avg_factor)
        if not (isinstance(avg_factor, (int, float)) and math.isfinite(avg_factor) and avg_factor >= 0):
            raise ValueError(f"avg_factor: expected a finite number >= 0, got {avg_factor!r}")
        if reduction == "sum":
            raise ValueError('avg_factor: cannot be used with reduction="sum" (mmdet semantics); use "mean"')
        if reduction == "mean":
            return loss_weight / (avg_factor + _F32_EPS)
        return float(loss_weight)
    if reduction == "mean":
        return loss_weight / count if count else float("nan")  # the mean of nothing is NaN, as in torch
    return float(loss_weight)


def _backend(**tensors) -> str:
    backend = _dispatch.select_backend(**tensors)
    if backend in ("cpu", "reference", "triton"):
        return backend
    name = next(iter(tensors))
    raise RuntimeError(f"{name}: the detection losses have no CUDA C++ kernels (backend {backend!r} asked for); "
                       "install triton (GPU), move the tensors to the CPU or use medseg_ext.use_backend('reference')")


def _cpu_backend(**tensors) -> str:
    """For the ops that have CPU kernels only (centerness): cpu or reference, else a clear error."""
    backend = _backend(**tensors)
    if backend == "triton":
        name = next(iter(tensors))
        raise RuntimeError(f"{name}: the centerness kernels have no GPU implementation yet; compute them on the CPU "
                           "or use medseg_ext.use_backend('reference')")
    return backend


def _use_reference(**tensors) -> bool:
    """True when the 'reference' backend is forced; never while torch.compile traces (the kernels'
    custom ops are what a compiled graph holds; they check the backend themselves)."""
    if torch.compiler.is_compiling():
        return False
    return _backend(**tensors) == "reference"


def _opt(t: Optional[torch.Tensor]):
    return None if t is None else desc(t)


def _reference(fn, inp: torch.Tensor, *args, reduction: str, scale: float, **kwargs):
    """The 'reference' backend: the plain-PyTorch formula in float64 with ordinary autograd (no
    custom op), evaluated per element with loss_weight 1, then scaled and reduced like the kernels."""
    out = fn(inp.to(torch.float64), *args, reduction="none", **kwargs)
    elem = out[0] if isinstance(out, tuple) else out
    loss = (elem * scale).to(inp.dtype) if reduction == "none" else (elem.sum() * scale).to(_scalar_dtype(inp.dtype))
    return (loss,) + tuple(out[1:]) if isinstance(out, tuple) else loss


def _f64(t: Optional[torch.Tensor]):
    return None if t is None else t.detach().to(torch.float64)


# ---------------------------------------------------------------- sigmoid focal loss


@custom_op("medseg_ext::sigmoid_focal_loss", mutates_args=())
def _focal_op(logits: torch.Tensor, labels: torch.Tensor, weight: Optional[torch.Tensor], alpha: float, gamma: float,
              scale: float, elementwise: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    if _backend(logits=logits, labels=labels) == "triton":
        from ..triton import detection as tr

        return tr.sigmoid_focal(logits, labels, weight, alpha, gamma, scale, elementwise)
    loss_sum = torch.zeros((), dtype=torch.float64)
    grad = torch.empty(logits.shape, dtype=logits.dtype)
    elem = torch.empty(logits.shape, dtype=logits.dtype) if elementwise else None
    _dispatch.extension().sigmoid_focal_cpu(desc(logits), desc(labels), _opt(weight), alpha, gamma, scale,
                                            loss_sum.data_ptr(), _opt(elem), desc(grad))
    return (elem if elementwise else loss_sum.to(_scalar_dtype(logits.dtype))), grad


@_focal_op.register_fake
def _(logits, labels, weight, alpha, gamma, scale, elementwise):
    loss = logits.new_empty(logits.shape) if elementwise else logits.new_empty((), dtype=_scalar_dtype(logits.dtype))
    return loss, logits.new_empty(logits.shape)


def _save_grad(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # else autograd builds a zero gradient the size of the saved one


def _scale_saved_grad(grad: torch.Tensor, grad_loss: torch.Tensor) -> torch.Tensor:
    """The saved d(loss)/d(input) times the incoming gradient. When that is the scalar 1 (the loss
    fed straight into .backward() or a plain sum of losses), the saved tensor is handed over as it is:
    autograd then adopts it as .grad without a copy once the graph is freed, and clones it when the
    graph is retained, so nothing aliases (the Liger trick, checked only on the CPU, never traced)."""
    if (grad_loss.dim() == 0 and grad_loss.device.type == "cpu" and not torch.compiler.is_compiling()
            and float(grad_loss) == 1.0):
        return grad
    if grad_loss.dim() == 1 and grad.dim() == 2:
        grad_loss = grad_loss[:, None]
    return (grad * grad_loss).to(grad.dtype)


def _grad_times_incoming(ctx, grad_loss, *_unused):
    if grad_loss is None:
        return None
    (grad,) = ctx.saved_tensors
    return _scale_saved_grad(grad, grad_loss)


def _focal_backward(ctx, grad_loss, _grad_grad):
    return _grad_times_incoming(ctx, grad_loss), None, None, None, None, None, None


_focal_op.register_autograd(_focal_backward, setup_context=_save_grad)


def sigmoid_focal_loss(logits, labels, weight=None, *, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "mean", avg_factor=None, loss_weight: float = 1.0) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al.; mmdet ``sigmoid_focal_loss`` semantics), fused.

    loss_nc = w · BCE(z_nc, t_nc) · (α t_nc + (1 − α)(1 − t_nc)) · |t_nc − σ(z_nc)|^γ with
    t_nc = [labels_n == c].

    Args:
        logits: (N, C) raw scores (anchors × classes), any float dtype, any strides.
        labels: (N,) integers in [0, C]; C is background (all targets 0 in that row).
        weight: None, (N,) per-anchor or (N, C) per-element weights (constants).
        alpha, gamma: focal parameters (γ ≥ 0).
        reduction: "mean", "sum" or "none" ((N, C) losses); avg_factor: divisor for "mean"
            (sum / (avg_factor + float32 eps)), e.g. the number of positive anchors.
        loss_weight: overall multiplier.
    """
    logits = _as_tensor(logits, "logits")
    labels = _as_tensor(labels, "labels")
    _check_float(logits, "logits")
    if logits.dim() != 2:
        raise ValueError(f"logits: expected shape (N, C), got {tuple(logits.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise TypeError(f"labels: expected an integer dtype (class indices in [0, C]), got {labels.dtype}")
    if tuple(labels.shape) != (logits.shape[0],):
        raise ValueError(f"labels: expected shape ({logits.shape[0]},), got {tuple(labels.shape)}")
    if not (math.isfinite(alpha) and math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"alpha, gamma: expected finite values with gamma >= 0, got alpha={alpha}, gamma={gamma}")
    if labels.device != logits.device:
        raise ValueError(f"labels: on device {labels.device}, but logits is on {logits.device}")
    w = _weight(weight, "logits", logits.shape[0], logits.device, logits.dtype, per_element_cols=logits.shape[1])
    scale = _loss_scale(reduction, avg_factor, logits.numel(), loss_weight)
    if _use_reference(logits=logits, labels=labels):
        from ..reference import detection as ref

        return _reference(ref.torch_sigmoid_focal_loss, logits, labels, _f64(w), alpha=alpha, gamma=gamma,
                          reduction=reduction, scale=scale)
    loss, _ = _focal_op(logits, labels.to(torch.int64), w, float(alpha), float(gamma), scale, reduction == "none")
    return loss


# ---------------------------------------------------------------- GIoU loss


@custom_op("medseg_ext::giou_loss", mutates_args=())
def _giou_op(pred: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor], eps: float, scale: float,
             elementwise: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    if _backend(pred=pred, target=target) == "triton":
        from ..triton import detection as tr

        return tr.giou(pred, target, weight, eps, scale, elementwise)
    loss_sum = torch.zeros((), dtype=torch.float64)
    grad = torch.empty(pred.shape, dtype=pred.dtype)
    elem = torch.empty(pred.shape[:1], dtype=pred.dtype) if elementwise else None
    _dispatch.extension().giou_cpu(desc(pred), desc(target), _opt(weight), eps, scale, loss_sum.data_ptr(),
                                   _opt(elem), desc(grad))
    return (elem if elementwise else loss_sum.to(_scalar_dtype(pred.dtype))), grad


@_giou_op.register_fake
def _(pred, target, weight, eps, scale, elementwise):
    loss = pred.new_empty(pred.shape[:1]) if elementwise else pred.new_empty((), dtype=_scalar_dtype(pred.dtype))
    return loss, pred.new_empty(pred.shape)


def _giou_backward(ctx, grad_loss, _grad_grad):
    return _grad_times_incoming(ctx, grad_loss), None, None, None, None, None


_giou_op.register_autograd(_giou_backward, setup_context=_save_grad)


def _check_boxes(t: torch.Tensor, name: str, n: Optional[int] = None, cols=(4,)) -> None:
    _check_float(t, name)
    if t.dim() != 2 or t.shape[1] not in cols or (n is not None and t.shape[0] != n):
        want = " or ".join(f"({'N' if n is None else n}, {c})" for c in cols)
        raise ValueError(f"{name}: expected shape {want}, got {tuple(t.shape)}")


def giou_loss(pred, target, weight=None, *, eps: float = 1e-6, reduction: str = "mean", avg_factor=None,
              loss_weight: float = 1.0) -> torch.Tensor:
    """GIoU loss 1 − GIoU(pred, target) per box pair (mmdet ``GIoULoss``), fused.

    Args:
        pred: (N, 4) predicted boxes x1, y1, x2, y2 (differentiable), any float dtype.
        target: (N, 4) target boxes (a constant; cast to pred's dtype).
        weight: None, (N,) or (N, 4) (averaged over the last axis, as mmdet does).
        eps: lower clamp of the union and of the enclosing area (mmdet's rule, > 0).
        reduction, avg_factor, loss_weight: as in :func:`sigmoid_focal_loss`.

    The gradient equals torch autograd of mmdet's formula, including its tie rules (a max/min
    tie splits the gradient in half, a clamp(min=0) at exactly 0 passes nothing).
    """
    pred = _as_tensor(pred, "pred")
    target = _as_tensor(target, "target")
    _check_boxes(pred, "pred")
    _check_boxes(target, "target", pred.shape[0])
    _check_const(target, "target")
    if target.device != pred.device:
        raise ValueError(f"target: on device {target.device}, but pred is on {pred.device}")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps: expected a finite value > 0, got {eps}")
    if weight is not None:
        weight = _as_tensor(weight, "weight")
        if weight.dim() == 2:
            _check_const(weight, "weight")
            weight = weight.mean(-1)
    w = _weight(weight, "pred", pred.shape[0], pred.device, pred.dtype)
    scale = _loss_scale(reduction, avg_factor, pred.shape[0], loss_weight)
    if _use_reference(pred=pred, target=target):
        from ..reference import detection as ref

        return _reference(ref.torch_giou_loss, pred, _f64(target), _f64(w), eps=eps, reduction=reduction, scale=scale)
    loss, _ = _giou_op(pred, target.to(pred.dtype), w, float(eps), scale, reduction == "none")
    return loss


# ---------------------------------------------------------------- centerness


def _check_points(points, gt_boxes, n: Optional[int] = None):
    points = _as_tensor(points, "points")
    gt_boxes = _as_tensor(gt_boxes, "gt_boxes")
    _check_boxes(points, "points", n, cols=(2, 4))
    _check_boxes(gt_boxes, "gt_boxes", points.shape[0])
    _check_const(points, "points")
    _check_const(gt_boxes, "gt_boxes")
    if gt_boxes.device != points.device:
        raise ValueError(f"gt_boxes: on device {gt_boxes.device}, but points is on {points.device}")
    return points, gt_boxes


def centerness_target(points, gt_boxes) -> torch.Tensor:
    """ATSS centerness sqrt(min(l,r)/max(l,r) · min(t,b)/max(t,b)) of each point in its gt box.

    Args:
        points: (N, 2) points (x, y), or (N, 4) anchors whose centres are used.
        gt_boxes: (N, 4) boxes x1, y1, x2, y2, cast to the points' dtype.
    Returns (N,) targets in [0, 1] (float32, float64 for float64 points). A point outside its
    box, or a zero-width/height box (0/0), raises ValueError (mmdet would return NaN or garbage).
    """
    points, gt_boxes = _check_points(points, gt_boxes)
    backend = _cpu_backend(points=points, gt_boxes=gt_boxes)
    out_dtype = _compute_dtype(points.dtype)
    if backend == "reference":
        from ..reference import detection as ref

        return torch.from_numpy(ref.centerness_target(_f64(points).numpy(), _f64(gt_boxes).numpy())).to(out_dtype)
    out = torch.empty(points.shape[0], dtype=out_dtype)
    _dispatch.extension().centerness_target_cpu(desc(points), desc(gt_boxes.to(points.dtype)), desc(out))
    return out


@custom_op("medseg_ext::centerness_loss", mutates_args=())
def _centerness_op(logits: torch.Tensor, points: torch.Tensor, gt_boxes: torch.Tensor,
                   weight: Optional[torch.Tensor], scale: float,
                   elementwise: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _cpu_backend(logits=logits, points=points, gt_boxes=gt_boxes)
    loss_sum = torch.zeros((), dtype=torch.float64)
    grad = torch.empty(logits.shape, dtype=logits.dtype)
    targets = torch.empty(logits.shape, dtype=_compute_dtype(logits.dtype))
    elem = torch.empty(logits.shape, dtype=logits.dtype) if elementwise else None
    _dispatch.extension().centerness_bce_cpu(desc(logits), desc(points), desc(gt_boxes), _opt(weight), scale,
                                             desc(targets), loss_sum.data_ptr(), _opt(elem), desc(grad))
    return (elem if elementwise else loss_sum.to(_scalar_dtype(logits.dtype))), grad, targets


@_centerness_op.register_fake
def _(logits, points, gt_boxes, weight, scale, elementwise):
    loss = logits.new_empty(logits.shape) if elementwise else logits.new_empty((), dtype=_scalar_dtype(logits.dtype))
    return loss, logits.new_empty(logits.shape), logits.new_empty(logits.shape, dtype=_compute_dtype(logits.dtype))


def _centerness_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.set_materialize_grads(False)


def _centerness_backward(ctx, grad_loss, _g1, _g2):
    return _grad_times_incoming(ctx, grad_loss), None, None, None, None, None


_centerness_op.register_autograd(_centerness_backward, setup_context=_centerness_setup)


def centerness_loss(logits, points, gt_boxes, weight=None, *, reduction: str = "mean", avg_factor=None,
                    loss_weight: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """BCE-with-logits between centerness logits and the ATSS centerness targets, in one pass.

    Args:
        logits: (N,) centerness (quality) logits of the positive anchors.
        points: (N, 2) anchor points or (N, 4) anchors; gt_boxes: (N, 4) their assigned gt boxes
            (both cast to the logits' dtype; constants).
        weight, reduction, avg_factor, loss_weight: as in :func:`sigmoid_focal_loss`.
    Returns:
        (loss, targets): the loss (differentiable w.r.t. logits) and the (N,) centerness targets
        (float32, float64 for float64 logits), which ATSS uses as GIoU weights.
    """
    logits = _as_tensor(logits, "logits")
    _check_float(logits, "logits")
    if logits.dim() != 1:
        raise ValueError(f"logits: expected shape (N,), got {tuple(logits.shape)}")
    points, gt_boxes = _check_points(points, gt_boxes, logits.shape[0])
    if points.device != logits.device:
        raise ValueError(f"points: on device {points.device}, but logits is on {logits.device}")
    w = _weight(weight, "logits", logits.shape[0], logits.device, logits.dtype)
    scale = _loss_scale(reduction, avg_factor, logits.shape[0], loss_weight)
    if _use_reference(logits=logits, points=points, gt_boxes=gt_boxes):
        from ..reference import detection as ref

        loss, targets = _reference(ref.torch_centerness_loss, logits, _f64(points), _f64(gt_boxes), _f64(w),
                                   reduction=reduction, scale=scale)
        return loss, targets.detach().to(_compute_dtype(logits.dtype))
    loss, _, targets = _centerness_op(logits, points.to(logits.dtype), gt_boxes.to(logits.dtype), w, scale,
                                      reduction == "none")
    return loss, targets


# ---------------------------------------------------------------- distribution focal loss


@custom_op("medseg_ext::distribution_focal_loss", mutates_args=())
def _dfl_op(logits: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor], scale: float,
            elementwise: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    if _backend(logits=logits, target=target) == "triton":
        from ..triton import detection as tr

        return tr.distribution_focal(logits, target, weight, scale, elementwise)
    loss_sum = torch.zeros((), dtype=torch.float64)
    grad = torch.empty(logits.shape, dtype=logits.dtype)
    elem = torch.empty(logits.shape[:1], dtype=logits.dtype) if elementwise else None
    _dispatch.extension().distribution_focal_cpu(desc(logits), desc(target), _opt(weight), scale,
                                                 loss_sum.data_ptr(), _opt(elem), desc(grad))
    return (elem if elementwise else loss_sum.to(_scalar_dtype(logits.dtype))), grad


def _torch_dfl_any_target(logits, target, weight=None, reduction="none"):
    """Plain-PyTorch DFL that also accepts y = K − 1 (the right bin clipped, its weight is 0)."""
    from ..reference import detection as ref

    K = logits.shape[1]
    left = target.long().clamp(max=K - 1)
    right = (left + 1).clamp(max=K - 1)
    logp = torch.log_softmax(logits, dim=1)
    loss = (-(left + 1 - target) * logp.gather(1, left[:, None])[:, 0]
            - (target - left) * logp.gather(1, right[:, None])[:, 0])
    return ref.torch_weight_reduce(loss, weight, reduction)


@_dfl_op.register_fake
def _(logits, target, weight, scale, elementwise):
    loss = logits.new_empty(logits.shape[:1]) if elementwise else logits.new_empty(
        (), dtype=_scalar_dtype(logits.dtype))
    return loss, logits.new_empty(logits.shape)


def _dfl_backward(ctx, grad_loss, _grad_grad):
    return _grad_times_incoming(ctx, grad_loss), None, None, None, None


_dfl_op.register_autograd(_dfl_backward, setup_context=_save_grad)


def distribution_focal_loss(logits, target, weight=None, *, reduction: str = "mean", avg_factor=None,
                            loss_weight: float = 1.0) -> torch.Tensor:
    """Distribution focal loss (GFL; mmdet ``DistributionFocalLoss``), fused.

    loss_n = (⌊y⌋ + 1 − y)·CE(z_n, ⌊y⌋) + (y − ⌊y⌋)·CE(z_n, ⌊y⌋ + 1).

    Args:
        logits: (N, K) bin logits (K = reg_max + 1, e.g. 17; in GFL one row per box side).
        target: (N,) continuous distances in bin units, in [0, K − 1]. mmdet needs y < K − 1;
            here y = K − 1 is allowed (all weight on the last bin).
        weight, reduction, avg_factor, loss_weight: as in :func:`sigmoid_focal_loss`.
    """
    logits = _as_tensor(logits, "logits")
    target = _as_tensor(target, "target")
    _check_float(logits, "logits")
    _check_float(target, "target")
    _check_const(target, "target")
    if logits.dim() != 2 or (logits.shape[1] < 2 and logits.shape[0] > 0):
        raise ValueError(f"logits: expected shape (N, K) with K >= 2 bins, got {tuple(logits.shape)}")
    if tuple(target.shape) != (logits.shape[0],):
        raise ValueError(f"target: expected shape ({logits.shape[0]},), got {tuple(target.shape)}")
    if target.device != logits.device:
        raise ValueError(f"target: on device {target.device}, but logits is on {logits.device}")
    w = _weight(weight, "logits", logits.shape[0], logits.device, logits.dtype)
    scale = _loss_scale(reduction, avg_factor, logits.shape[0], loss_weight)
    if _use_reference(logits=logits, target=target):
        return _reference(_torch_dfl_any_target, logits, _f64(target), _f64(w), reduction=reduction, scale=scale)
    loss, _ = _dfl_op(logits, target.to(_compute_dtype(logits.dtype)), w, scale, reduction == "none")
    return loss


# ---------------------------------------------------------------- modules


class SigmoidFocalLoss(torch.nn.Module):
    """Module form of :func:`sigmoid_focal_loss` (mmdet ``FocalLoss(use_sigmoid=True)`` defaults)."""

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "mean", loss_weight: float = 1.0):
        super().__init__()
        self.alpha, self.gamma, self.reduction, self.loss_weight = alpha, gamma, reduction, loss_weight

    def forward(self, logits, labels, weight=None, avg_factor=None, reduction_override: Optional[str] = None):
        return sigmoid_focal_loss(logits, labels, weight, alpha=self.alpha, gamma=self.gamma,
                                  reduction=reduction_override or self.reduction, avg_factor=avg_factor,
                                  loss_weight=self.loss_weight)


class GIoULoss(torch.nn.Module):
    """Module form of :func:`giou_loss` (mmdet ``GIoULoss`` defaults: eps 1e-6)."""

    def __init__(self, eps: float = 1e-6, reduction: str = "mean", loss_weight: float = 1.0):
        super().__init__()
        self.eps, self.reduction, self.loss_weight = eps, reduction, loss_weight

    def forward(self, pred, target, weight=None, avg_factor=None, reduction_override: Optional[str] = None):
        return giou_loss(pred, target, weight, eps=self.eps, reduction=reduction_override or self.reduction,
                         avg_factor=avg_factor, loss_weight=self.loss_weight)


class DistributionFocalLoss(torch.nn.Module):
    """Module form of :func:`distribution_focal_loss` (mmdet default loss_weight 0.25 in GFL configs)."""

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0):
        super().__init__()
        self.reduction, self.loss_weight = reduction, loss_weight

    def forward(self, logits, target, weight=None, avg_factor=None, reduction_override: Optional[str] = None):
        return distribution_focal_loss(logits, target, weight, reduction=reduction_override or self.reduction,
                                       avg_factor=avg_factor, loss_weight=self.loss_weight)


__all__ = ["sigmoid_focal_loss", "giou_loss", "centerness_target", "centerness_loss", "distribution_focal_loss",
           "SigmoidFocalLoss", "GIoULoss", "DistributionFocalLoss", "REDUCTIONS"]
