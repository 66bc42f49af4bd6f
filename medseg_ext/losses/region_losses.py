"""Region losses on the fused statistics (seeds-losses.md §5 Group S): Dice, Jaccard, Tversky,
focal-Tversky and Cohen's-kappa loss, all from logits + integer labels.

Each call is one custom op: the forward reads logits + labels once (soft_region_stats) and
evaluates the epilogue together with its coefficients dL/dI and dL/dP (closed forms of §5, O(U·C)
numbers); the backward scales them by the incoming gradient and makes the second pass over the
logits. No autograd graph is built over the epilogue, which keeps per-call host overhead small.
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Tuple

import torch

from .._custom_op import custom_op
from .. import _dispatch
from ._inputs import check_region_inputs
from .fused import probs_to_grad_, softmax_stats_storing_probs, stores_probs
from .region import logits_backward, stats_forward

REDUCTIONS = ("mean", "sum", "none")
KINDS = ("dice", "jaccard", "tversky", "focal_tversky", "kappa", "kappa_zhang2019", "log_dice", "dibe_reg",
         "generalized_dice")
_TINY = 1e-30  # keeps (1 − T)^(e − 1) finite at T = 1 for exponents below 1
_U_MIN = 1e-6  # DIBE_Reg: smallest −log T at which its gradient is evaluated (seeds-losses.md E11)


def region_loss_terms(kind: str, stats: torch.Tensor, params: List[float]):
    """Per (unit, class) loss and its partials dL/dI, dL/dP from (U, C, 4) statistics.

    params = [smooth_nr, smooth_dr, alpha (weight of FP), beta (weight of FN), exponent].
    """
    s_nr, s_dr, alpha, beta, exponent = params
    I, P, G, N = stats.unbind(-1)
    if kind == "dice":  # 1 − (2I + s_nr)/(P + G + s_dr)
        den = P + G + s_dr
        num = 2.0 * I + s_nr
        return 1.0 - num / den, -2.0 / den, num / (den * den)
    if kind == "jaccard":  # 1 − (I + s_nr)/(P + G − I + s_dr)
        den = P + G - I + s_dr
        num = I + s_nr
        return 1.0 - num / den, -(den + num) / (den * den), num / (den * den)
    if kind in ("tversky", "focal_tversky"):  # T = (I + s_nr)/(I + α(P − I) + β(G − I) + s_dr)
        den = I + alpha * (P - I) + beta * (G - I) + s_dr
        num = I + s_nr
        t = num / den
        dt_di = (den - num * (1.0 - alpha - beta)) / (den * den)
        dt_dp = -num * alpha / (den * den)
        if kind == "tversky":
            return 1.0 - t, -dt_di, -dt_dp
        one_minus = (1.0 - t).clamp_min(0.0)
        loss = one_minus.pow(exponent)
        dl_dt = -exponent * one_minus.clamp_min(_TINY).pow(exponent - 1.0)
        return loss, dl_dt * dt_di, dl_dt * dt_dp
    if kind == "log_dice":  # (−log Dc)^exponent, Dc = (2I + s_nr)/(P + G + s_dr)   (DIBE Eq. 10, EL region term)
        den = P + G + s_dr
        num = 2.0 * I + s_nr
        dc = num / den
        u = -torch.log(dc)
        loss = u.clamp_min(0.0).pow(exponent)
        dl_ddc = -(exponent / dc) * u.clamp_min(_TINY).pow(exponent - 1.0)
        return loss, dl_ddc * 2.0 / den, -dl_ddc * num / (den * den)
    if kind == "dibe_reg":  # (−log T)^exponent with the Tversky index T   (DIBE Eq. 18; exponent = 1/γ)
        den = I + alpha * (P - I) + beta * (G - I) + s_dr
        num = I + s_nr
        t = num / den
        u = -torch.log(t)
        loss = u.clamp_min(0.0).pow(exponent)
        # E11: the gradient is unbounded at T = 1 when exponent < 1; evaluate it at u >= _U_MIN
        dl_dt = -(exponent / t) * u.clamp_min(_U_MIN).pow(exponent - 1.0)
        dt_di = (den - num * (1.0 - alpha - beta)) / (den * den)
        dt_dp = -num * alpha / (den * den)
        return loss, dl_dt * dt_di, dl_dt * dt_dp
    if kind == "kappa_zhang2019":  # 1 − (2I − PG/N)/(P + G − 2I/N): TR Eq. 26 / Listing 2 as printed (E12)
        n = N.clamp_min(1.0)
        num = 2.0 * I - P * G / n
        den = P + G - 2.0 * I / n + s_dr
        return 1.0 - num / den, -(2.0 * den + 2.0 * num / n) / (den * den), (G / n * den + num) / (den * den)
    if kind == "kappa":  # 1 − soft Cohen's κ = (P + G − 2I)/(P + G − 2PG/N + s_dr)
        n = N.clamp_min(1.0)
        u = P + G - 2.0 * I
        v = P + G - 2.0 * P * G / n + s_dr
        return u / v, -2.0 / v, (v - u * (1.0 - 2.0 * G / n)) / (v * v)
    raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")


EMPTY_POLICIES = ("smooth", "zero", "skip")
GDL_WEIGHTS = ("square", "simple", "uniform")
GDL_ABSENT = ("max_finite", "zero")


def _gdl_terms(stats: torch.Tensor, params: List[float], weight_type: str, absent: str):
    """Generalized Dice (Sudre 2017) per unit: 1 − (2Σ_c w_c I_c + s_nr)/(Σ_c w_c (P_c + G_c) + s_dr),
    w_c = 1/G_c² ("square"), 1/G_c ("simple") or 1. An absent class (G_c = 0, infinite weight) gets
    the largest finite weight of its unit ("max_finite", MONAI) or 0 ("zero"). Returns the (U,)
    losses and dL/dI, dL/dP as (U, C); the weights depend on labels only (no gradient)."""
    s_nr, s_dr = params[0], params[1]
    I, P, G = stats[..., 0], stats[..., 1], stats[..., 2]
    if weight_type == "square":
        w = 1.0 / (G * G)
    elif weight_type == "simple":
        w = 1.0 / G
    else:
        w = torch.ones_like(G)
    inf = torch.isinf(w)
    w = w.masked_fill(inf, 0.0)
    if absent == "max_finite":
        w = w + inf * w.amax(dim=1, keepdim=True)
    numer = 2.0 * (w * I).sum(dim=1) + s_nr
    denom = (w * (P + G)).sum(dim=1) + s_dr
    loss = 1.0 - numer / denom
    return loss, -2.0 * w / denom[:, None], w * (numer / (denom * denom))[:, None]


def _epilogue(kind, stats, params, include_background, reduction, empty, weight_type, absent, class_weight):
    """Reduced loss and coefficients (U, C, 2) = d(loss)/dI, d(loss)/dP with the reduction folded in
    (for reduction "none" the coefficients belong to each element of the unreduced output)."""
    drop = not include_background and stats.shape[1] > 1
    kept = stats[:, 1:] if drop else stats
    present = None  # mask of the entries the empty policy keeps (None: all of them)
    if kind == "generalized_dice":  # one loss per unit; absent classes are handled by its weights
        loss, d_i, d_p = _gdl_terms(kept, params, weight_type, absent)
    else:
        loss, d_i, d_p = region_loss_terms(kind, kept, params)
        if class_weight is not None:  # MONAI DiceLoss(weight=...): per-class factor before the reduction
            w = torch.tensor(class_weight, dtype=loss.dtype, device=loss.device)
            loss, d_i, d_p = loss * w, d_i * w, d_p * w
        if empty != "smooth":
            present = kept[..., 2] > 0
            d_i, d_p = d_i * present, d_p * present  # absent classes take no gradient
            if empty == "zero":  # SMP: an absent class contributes 0 but still counts in the mean
                loss = loss * present
    coeff = torch.stack([d_i, d_p], dim=-1)
    skip = empty == "skip" and present is not None  # absent classes leave the average
    if reduction == "none":
        if skip:
            loss = loss.masked_fill(~present, float("nan"))
    else:
        if skip:
            loss = loss * present
        total = loss.sum()
        if reduction == "mean":
            count = present.sum().clamp_min(1) if skip else loss.numel()
            total, coeff = total / count, coeff / count
        loss = total
    if drop:
        coeff = torch.nn.functional.pad(coeff, (0, 0, 1, 0))  # the background class takes no gradient
    return loss, coeff


@custom_op("medseg_ext::region_loss", mutates_args=())
def _region_loss_op(logits: torch.Tensor, labels: torch.Tensor, sigmoid: bool, per_sample: bool,
                    ignore_index: Optional[int], validate: bool, kind: str, params: List[float],
                    include_background: bool, reduction: str, empty: str, weight_type: str, absent: str,
                    dist_sync: bool, class_weight: Optional[List[float]],
                    store_probs: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if store_probs:  # CPU float32 softmax that needs a gradient: keep p for an in-place backward
        stats, probs = softmax_stats_storing_probs(logits, labels, per_sample, ignore_index)
    else:
        stats = stats_forward(logits, labels, sigmoid, per_sample, ignore_index, validate)
        probs = logits.new_empty((0,), dtype=torch.float32)
    if dist_sync:
        # batch statistics pooled over all ranks: every rank evaluates the loss of the global batch
        torch.distributed.all_reduce(stats)
    loss, coeff = _epilogue(kind, stats, params, include_background, reduction, empty, weight_type, absent,
                            class_weight)
    out_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return loss.to(out_dtype), coeff, probs


@_region_loss_op.register_fake
def _(logits, labels, sigmoid, per_sample, ignore_index, validate, kind, params, include_background, reduction,
      empty, weight_type, absent, dist_sync, class_weight, store_probs):
    U = logits.shape[0] if per_sample else 1
    C = logits.shape[1]
    out_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    if reduction != "none":
        loss = logits.new_empty((), dtype=out_dtype)
    elif kind == "generalized_dice":
        loss = logits.new_empty((U,), dtype=out_dtype)
    else:
        loss = logits.new_empty((U, C - 1 if (not include_background and C > 1) else C), dtype=out_dtype)
    probs = logits.new_empty(logits.shape if store_probs else (0,), dtype=torch.float32)
    return loss, logits.new_empty((U, C, 2), dtype=torch.float64), probs


def _setup_context(ctx, inputs, output):
    logits, labels, sigmoid, per_sample, ignore_index = inputs[:5]
    ctx.save_for_backward(logits, labels, output[1])
    ctx.params = (sigmoid, per_sample, ignore_index)
    ctx.drop_background = not inputs[8] and logits.shape[1] > 1
    ctx.reduction = inputs[9]
    ctx.per_unit = inputs[6] == "generalized_dice"
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.set_materialize_grads(False)  # else autograd builds a zero gradient the size of probs
    # used once, in place (they become the gradient); a retained graph's second backward recomputes
    ctx.probs = output[2] if inputs[-1] else None


def _backward(ctx, grad_loss, _grad_coeff, _grad_probs):
    if grad_loss is None:
        return (None,) * 16
    logits, labels, coeff = ctx.saved_tensors
    g = grad_loss.to(torch.float64)
    if ctx.reduction != "none":
        coeff = coeff * g
    elif ctx.per_unit:
        coeff = coeff * g[:, None, None]
    else:
        if ctx.drop_background:
            g = torch.nn.functional.pad(g, (1, 0))  # the background column got no loss
        # entries skipped as NaN have coefficient 0 and must stay 0 whatever gradient they receive
        coeff = torch.where(coeff != 0, coeff * g[..., None], 0.0)
    probs, ctx.probs = ctx.probs, None
    if probs is not None:
        return (probs_to_grad_(probs, labels, coeff, ctx.params[1], ctx.params[2]),) + (None,) * 15
    grad = logits_backward(coeff, logits, labels, *ctx.params)
    return (grad,) + (None,) * 15


_region_loss_op.register_autograd(_backward, setup_context=_setup_context)


def _check_number(name, value, low=0.0, high=float("inf"), low_open=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    ok = ok and (value > low if low_open else value >= low) and value <= high and value != float("inf")
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high != float("inf") else "")
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")
    return float(value)


def check_dist_sync(inp) -> None:
    """dist_sync=True needs an initialised process group and batch statistics (one unit)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise ValueError("dist_sync: torch.distributed is not initialised (call init_process_group first)")
    if inp.per_sample:
        raise ValueError("dist_sync: needs reduction_unit='batch' (per-sample statistics are already local)")


def region_loss(logits, labels, *, kind: str = "dice", activation: str = "softmax",
                ignore_index: Optional[int] = None, reduction_unit: str = "sample", include_background: bool = True,
                smooth_nr: float = 1e-5, smooth_dr: float = 1e-5, alpha: float = 0.5, beta: float = 0.5,
                exponent: float = 1.0, reduction: str = "mean", empty: str = "smooth", weight_type: str = "square",
                absent: str = "max_finite", dist_sync: bool = False, class_weight=None,
                validate: bool = True) -> torch.Tensor:
    """Any region loss of :data:`KINDS` by name; the named functions below are the documented entry points.

    ``empty`` decides what a class absent from the target (G = 0) contributes: "smooth" (default,
    MONAI: the smoothing terms decide; an absent, unpredicted class scores 0), "zero" (SMP: its
    loss and gradient are 0, but it still counts in the mean) or "skip" (it leaves the mean; NaN in
    an unreduced output). ``dist_sync=True`` sums the statistics over ``torch.distributed`` ranks
    before the epilogue, so with ``reduction_unit="batch"`` every rank computes the loss of the
    global batch (DDP then averages gradients: scale the loss by the world size to get the
    single-process gradient). ``class_weight`` (one non-negative number per class in the loss, i.e.
    without class 0 when ``include_background=False``) multiplies each class's loss before the
    reduction, as MONAI ``DiceLoss(weight=...)``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    params = [_check_number("smooth_nr", smooth_nr), _check_number("smooth_dr", smooth_dr),
              _check_number("alpha", alpha), _check_number("beta", beta),
              _check_number("exponent", exponent, low_open=True)]
    for name, value, allowed in (("empty", empty, EMPTY_POLICIES), ("weight_type", weight_type, GDL_WEIGHTS),
                                 ("absent", absent, GDL_ABSENT)):
        if value not in allowed:
            raise ValueError(f"{name}: expected one of {allowed}, got {value!r}")
    inp = check_region_inputs(logits, labels, activation, ignore_index, reduction_unit)
    if class_weight is not None:
        if kind == "generalized_dice":
            raise ValueError("class_weight: generalized_dice_loss weights classes itself (weight_type)")
        if isinstance(class_weight, torch.Tensor):
            class_weight = class_weight.detach().cpu().tolist()
        class_weight = [_check_number("class_weight", float(v)) for v in class_weight]
        n_loss = inp.logits.shape[1] - (1 if (not include_background and inp.logits.shape[1] > 1) else 0)
        if len(class_weight) != n_loss:
            raise ValueError(f"class_weight: expected {n_loss} weights (one per class in the loss), got {len(class_weight)}")
    if dist_sync:
        check_dist_sync(inp)
    if not include_background and inp.logits.shape[1] == 1:
        warnings.warn("include_background=False ignored: a single-channel output has no background channel",
                      stacklevel=3)
    store = (stores_probs(inp.logits, inp.labels, inp.sigmoid)
             and _dispatch.select_backend(logits=inp.logits, labels=inp.labels) == "cpu")
    loss, _, _ = _region_loss_op(inp.logits, inp.labels, inp.sigmoid, inp.per_sample, inp.ignore_index, validate,
                                 kind, params, include_background, reduction, empty, weight_type, absent, dist_sync,
                                 class_weight, store)
    return loss


_COMMON_DOC = """
    Common arguments (see :func:`medseg_ext.soft_region_stats` for logits/labels/activation/
    ignore_index/reduction_unit): ``include_background`` drops class 0 from the loss when C > 1;
    ``reduction`` "mean" | "sum" | "none" (then the (U, C') per-class losses); ``empty`` and
    ``dist_sync`` as in :func:`region_loss` (absent-class policy; pooling over DDP ranks); ``validate`` checks
    labels and NaN logits on GPU at the cost of one host sync. The loss is float32 (float64 for
    float64 logits); the gradient has the logits' dtype. One pass for the value, one in backward.
"""


def dice_loss(logits, labels, *, activation="softmax", ignore_index=None, reduction_unit="sample",
              include_background=True, smooth_nr=1e-5, smooth_dr=1e-5, reduction="mean", empty="smooth",
              dist_sync=False, validate=True):
    """Soft Dice loss 1 − (2I + smooth_nr)/(P + G + smooth_dr) per (unit, class).

    Conventions of MONAI ``DiceLoss(to_onehot_y=True, softmax=True)`` (or ``sigmoid=True``): the same
    smoothing defaults, ``reduction_unit="batch"`` is MONAI's ``batch=True``, and an absent class
    that is not predicted gives loss 0.
    """
    return region_loss(logits, labels, kind="dice", activation=activation, ignore_index=ignore_index,
                       reduction_unit=reduction_unit, include_background=include_background, smooth_nr=smooth_nr,
                       smooth_dr=smooth_dr, reduction=reduction, empty=empty,
                       dist_sync=dist_sync, validate=validate)


def jaccard_loss(logits, labels, *, activation="softmax", ignore_index=None, reduction_unit="sample",
                 include_background=True, smooth_nr=1e-5, smooth_dr=1e-5, reduction="mean", empty="smooth",
              dist_sync=False, validate=True):
    """Soft Jaccard (IoU) loss 1 − (I + smooth_nr)/(P + G − I + smooth_dr) per (unit, class) (TR Eq. 14, 32).

    MONAI's ``DiceLoss(jaccard=True)`` computes 1 − (2I + s_nr)/(2(P + G − I) + s_dr): the same loss
    with both smoothing terms doubled.
    """
    return region_loss(logits, labels, kind="jaccard", activation=activation, ignore_index=ignore_index,
                       reduction_unit=reduction_unit, include_background=include_background, smooth_nr=smooth_nr,
                       smooth_dr=smooth_dr, reduction=reduction, empty=empty,
                       dist_sync=dist_sync, validate=validate)


def tversky_loss(logits, labels, *, alpha=0.5, beta=0.5, activation="softmax", ignore_index=None,
                 reduction_unit="sample", include_background=True, smooth_nr=1e-5, smooth_dr=1e-5, reduction="mean",
                 empty="smooth", dist_sync=False, validate=True):
    """Tversky loss 1 − T, T = (I + smooth_nr)/(I + alpha·FP + beta·FN + smooth_dr), FP = P − I, FN = G − I.

    ``alpha`` weights false positives and ``beta`` false negatives (Salehi; MONAI ``TverskyLoss``,
    whose defaults 0.5/0.5 these are; Salehi recommends 0.3/0.7). alpha = beta = 0.5 is Dice with
    doubled smoothing; alpha = beta = 1 is Jaccard.
    """
    return region_loss(logits, labels, kind="tversky", activation=activation, ignore_index=ignore_index,
                       reduction_unit=reduction_unit, include_background=include_background, smooth_nr=smooth_nr,
                       smooth_dr=smooth_dr, alpha=alpha, beta=beta, reduction=reduction, empty=empty,
                       dist_sync=dist_sync, validate=validate)


def focal_tversky_loss(logits, labels, *, alpha=0.3, beta=0.7, exponent=0.75, activation="softmax",
                       ignore_index=None, reduction_unit="sample", include_background=True, smooth_nr=1e-5,
                       smooth_dr=1e-5, reduction="mean", empty="smooth", dist_sync=False, validate=True):
    """Focal-Tversky loss (1 − T)^exponent per (unit, class) (DIBE Eq. 8, Abraham & Khan).

    The literature writes the exponent as 1/γ; ``exponent=0.75`` is Abraham's (γ = 4/3), the DIBE
    runs use 4/3 (seeds-losses.md E7). exponent = 1 is the Tversky loss. For exponents below 1 the
    gradient at T = 1 is bounded by evaluating (1 − T)^(exponent − 1) at no less than 1e-30.
    """
    return region_loss(logits, labels, kind="focal_tversky", activation=activation, ignore_index=ignore_index,
                       reduction_unit=reduction_unit, include_background=include_background, smooth_nr=smooth_nr,
                       smooth_dr=smooth_dr, alpha=alpha, beta=beta, exponent=exponent, reduction=reduction,
                       empty=empty, dist_sync=dist_sync, validate=validate)


def kappa_loss(logits, labels, *, variant="cohen", activation="softmax", ignore_index=None, reduction_unit="sample",
               include_background=True, smooth_dr=1e-5, reduction="mean", empty="smooth", dist_sync=False,
               validate=True):
    """1 − soft Cohen's κ = (P + G − 2I)/(P + G − 2PG/N + smooth_dr) per (unit, class) (seeds-losses.md §3.3).

    The correct soft kappa (variant "cohen"); N is counted from the tensor and mask, never fixed.
    With binary predictions it equals 1 − Cohen's κ of the confusion counts. The denominator is 0
    exactly when the class is empty in both prediction and target (or fills both): ``smooth_dr``
    makes that case 0, the perfect-agreement value. Bounded in [0, 2].

    ``variant="zhang2019"`` is the report's printed Eq. 26 / Listing 2, 1 − (2I − PG/N)/(P + G − 2I/N),
    for reproducing its numbers only: it is not Cohen's κ and has the floor (G − 2)/(2N − 2) at a
    perfect prediction (seeds-losses.md E12). ``variant="zhang_readme"`` is the authors' code, with
    squared denominator terms: 1 − (2I − PG/N)/(Σp² + Σg² − 2I/N + smooth_dr) (Σg² = G); it needs
    Q = Σp² from the fused pass (CPU kernel; eager PyTorch elsewhere) and supports empty="smooth" only.
    """
    if variant not in ("cohen", "zhang2019", "zhang_readme"):
        raise ValueError(f"variant: expected 'cohen', 'zhang2019' or 'zhang_readme', got {variant!r}")
    if variant == "zhang_readme":
        return _kappa_readme(logits, labels, activation, ignore_index, reduction_unit, include_background, smooth_dr,
                             reduction, empty, dist_sync, validate)
    return region_loss(logits, labels, kind="kappa" if variant == "cohen" else "kappa_zhang2019", activation=activation, ignore_index=ignore_index,
                       reduction_unit=reduction_unit, include_background=include_background, smooth_nr=0.0,
                       smooth_dr=smooth_dr, reduction=reduction, empty=empty,
                       dist_sync=dist_sync, validate=validate)


def _kappa_readme(logits, labels, activation, ignore_index, reduction_unit, include_background, smooth_dr,
                  reduction, empty, dist_sync, validate):
    from .fused import OUT_Q, fused_stats_raw, pointwise_spec

    if empty != "smooth" or dist_sync:
        raise ValueError("variant: 'zhang_readme' supports empty='smooth' and dist_sync=False only")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    s_dr = _check_number("smooth_dr", smooth_dr)
    inp = check_region_inputs(logits, labels, activation, ignore_index, reduction_unit)
    stats, ext = fused_stats_raw(inp.logits, inp.labels, inp.sigmoid, inp.per_sample, inp.ignore_index,
                                 pointwise_spec("none", sigmoid=inp.sigmoid, outputs=OUT_Q))
    if not include_background and stats.shape[1] > 1:
        stats, ext = stats[:, 1:], ext[:, 1:]
    I, P, G, N = stats.unbind(-1)
    n = N.clamp_min(1.0)
    loss = 1.0 - (2.0 * I - P * G / n) / (ext[..., 0] + G - 2.0 * I / n + s_dr)
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss.to(torch.float64 if inp.logits.dtype == torch.float64 else torch.float32)


def generalized_dice_loss(logits, labels, *, weight_type="square", absent="max_finite", activation="softmax",
                          ignore_index=None, reduction_unit="sample", include_background=True, smooth_nr=1e-5,
                          smooth_dr=1e-5, reduction="mean", dist_sync=False, validate=True):
    """Generalized Dice loss (Sudre 2017; TR Eq. 13 corrected) per unit, MONAI ``GeneralizedDiceLoss`` conventions:
    1 − (2Σ_c w_c I_c + smooth_nr)/(Σ_c w_c (P_c + G_c) + smooth_dr), w_c = 1/G_c² ("square"),
    1/G_c ("simple") or 1 ("uniform"). A class absent from the unit's target has an infinite weight:
    ``absent="max_finite"`` (MONAI) gives it the largest finite weight of the unit, ``"zero"`` drops it.
    ``reduction="none"`` returns the (U,) per-unit losses.
    """
    return region_loss(logits, labels, kind="generalized_dice", activation=activation, ignore_index=ignore_index,
                       reduction_unit=reduction_unit, include_background=include_background, smooth_nr=smooth_nr,
                       smooth_dr=smooth_dr, reduction=reduction, weight_type=weight_type, absent=absent,
                       dist_sync=dist_sync, validate=validate)


def log_dice_loss(logits, labels, *, exponent=1.0, activation="softmax", ignore_index=None, reduction_unit="sample",
                  include_background=True, smooth_nr=1.0, smooth_dr=1.0, reduction="mean", empty="smooth",
                  dist_sync=False, validate=True):
    """Exponential-logarithmic Dice term (−log Dc)^exponent, Dc = (2I + smooth_nr)/(P + G + smooth_dr)
    (DIBE Eq. 10, Wong et al.; exponent γ_Dc, default 1; smoothing 1 as in the DIBE runs)."""
    return region_loss(logits, labels, kind="log_dice", activation=activation, ignore_index=ignore_index,
                       reduction_unit=reduction_unit, include_background=include_background, smooth_nr=smooth_nr,
                       smooth_dr=smooth_dr, exponent=exponent, reduction=reduction, empty=empty,
                       dist_sync=dist_sync, validate=validate)


def dibe_reg_loss(logits, labels, *, alpha=0.7, beta=0.3, gamma=1.5, activation="softmax", ignore_index=None,
                  reduction_unit="sample", include_background=True, smooth_nr=1.0, smooth_dr=1.0, reduction="mean",
                  empty="smooth", dist_sync=False, validate=True):
    """DIBE region loss (−log T)^(1/gamma) with the Tversky index T (DIBE Eq. 18).

    ``alpha`` weights FP and ``beta`` FN as everywhere in this package. The paper's single α is the
    FN weight with FP weight 1 − α (seeds-losses.md E4): its α = 0.3 is alpha=0.7, beta=0.3 here,
    the defaults, with γ = 1.5 and smoothing 1. The gradient at T = 1 is bounded (E11).
    """
    gamma = _check_number("gamma", gamma, low_open=True)
    return region_loss(logits, labels, kind="dibe_reg", activation=activation, ignore_index=ignore_index,
                       reduction_unit=reduction_unit, include_background=include_background, smooth_nr=smooth_nr,
                       smooth_dr=smooth_dr, alpha=alpha, beta=beta, exponent=1.0 / gamma, reduction=reduction,
                       empty=empty, dist_sync=dist_sync, validate=validate)


for _fn in (dice_loss, jaccard_loss, tversky_loss, focal_tversky_loss, kappa_loss, generalized_dice_loss,
            log_dice_loss, dibe_reg_loss):
    _fn.__doc__ += _COMMON_DOC


class _RegionLossModule(torch.nn.Module):
    _fn = None

    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return type(self)._fn(logits, labels, **self.kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())


class DiceLoss(_RegionLossModule):
    """nn.Module form of :func:`dice_loss`; keyword arguments as there."""
    _fn = staticmethod(dice_loss)


class JaccardLoss(_RegionLossModule):
    """nn.Module form of :func:`jaccard_loss`."""
    _fn = staticmethod(jaccard_loss)


class TverskyLoss(_RegionLossModule):
    """nn.Module form of :func:`tversky_loss`."""
    _fn = staticmethod(tversky_loss)


class FocalTverskyLoss(_RegionLossModule):
    """nn.Module form of :func:`focal_tversky_loss`."""
    _fn = staticmethod(focal_tversky_loss)


class KappaLoss(_RegionLossModule):
    """nn.Module form of :func:`kappa_loss`."""
    _fn = staticmethod(kappa_loss)


class GeneralizedDiceLoss(_RegionLossModule):
    """nn.Module form of :func:`generalized_dice_loss`."""
    _fn = staticmethod(generalized_dice_loss)


class LogDiceLoss(_RegionLossModule):
    """nn.Module form of :func:`log_dice_loss`."""
    _fn = staticmethod(log_dice_loss)


class DibeRegLoss(_RegionLossModule):
    """nn.Module form of :func:`dibe_reg_loss`."""
    _fn = staticmethod(dibe_reg_loss)
