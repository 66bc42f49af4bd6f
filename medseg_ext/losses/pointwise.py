"""Pointwise (group P) and compound (group C) segmentation losses on one fused pass.

Every loss here is an O(U·C) epilogue over :func:`medseg_ext.losses.fused.fused_stats_raw`: the
forward reads logits + labels once for the region statistics and the pointwise sums together, the
backward reads them once more (seeds-losses.md §5). Formulas follow DIBE (Eqs. 1–3, 9–12, 16–19)
and the 2019 technical report (Eq. 9, WCE); ``dice_ce_loss`` follows MONAI ``DiceCELoss``.

Reduction of the pointwise part: the mean over valid elements (and over channels for sigmoid), as
``torch.nn.functional.binary_cross_entropy_with_logits`` / ``cross_entropy`` and MONAI do; the
region part follows ``reduction_unit`` as in :func:`medseg_ext.dice_loss`.

``dist_sync=True`` (with batch statistics) sums the statistics and pointwise sums over the
``torch.distributed`` ranks: every rank gets the loss of the global batch and its own slice of the
global gradient, as :func:`medseg_ext.region_loss` does.
"""
from __future__ import annotations

from typing import Optional

import torch

from ._inputs import check_region_inputs
from .fused import OUT_Q, fused_stats_raw, pointwise_spec
from .region_losses import _RegionLossModule, _check_number, _epilogue, check_dist_sync

_DEFAULTS = dict(activation="softmax", ignore_index=None, reduction_unit="sample")


def _weights(class_weight, C: int, name: str = "class_weight"):
    if class_weight is None:
        return None
    if isinstance(class_weight, torch.Tensor):
        class_weight = class_weight.detach().cpu().tolist()
    w = [_check_number(name, float(v)) for v in class_weight]
    if len(w) != C:
        raise ValueError(f"{name}: expected {C} weights (one per channel), got {len(w)}")
    return torch.tensor(w, dtype=torch.float64)


def _prepare(dist_sync, logits, labels, activation, ignore_index, reduction_unit, kind, outputs=0, **kw):
    """Validated inputs and one fused pass; ``outputs`` names the optional statistics the loss reads
    (Q, hard counts): the kernel skips the others."""
    inp = check_region_inputs(logits, labels, activation, ignore_index, reduction_unit)
    if dist_sync:
        check_dist_sync(inp)
    spec = pointwise_spec(kind, sigmoid=inp.sigmoid, outputs=outputs, **kw)
    stats, ext = fused_stats_raw(inp.logits, inp.labels, inp.sigmoid, inp.per_sample, inp.ignore_index, spec)
    if dist_sync:
        # every rank evaluates the loss of the global batch; the gradient reaching the local sums is
        # d(global loss)/d(global sums) because the global sum is linear in each rank's part
        stats, ext = (t + (_all_reduced(t.detach()) - t.detach()) for t in (stats, ext))
    return inp, stats, ext


def _all_reduced(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    torch.distributed.all_reduce(t)
    return t


def _out(loss, logits):
    return loss.to(torch.float64 if logits.dtype == torch.float64 else torch.float32)


def _pointwise_mean(inp, stats, ext, w_pos, w_neg, class_weight=None, normalise_by_weight=False):
    """Σ_u Σ_c (w_pos·Spos + w_neg·Sneg)·cw_c over the element count (× C for sigmoid).

    ``normalise_by_weight`` divides by Σ_c cw_c·G_c instead (torch ``cross_entropy(weight=)``)."""
    s_pos, s_neg = ext[..., 1], ext[..., 2]
    per_class = w_pos * s_pos + w_neg * s_neg  # (U, C)
    n = stats[..., 3]
    if class_weight is not None:
        cw = class_weight.to(per_class.device)
        per_class = per_class * cw
        if normalise_by_weight:
            return per_class.sum() / (stats[..., 2] * cw).sum().clamp_min(1e-300)
    count = n.sum() if inp.sigmoid else n[:, 0].sum()
    return per_class.sum() / count.clamp_min(1.0)


# ---------------------------------------------------------------- group P


def cross_entropy_loss(logits, labels, *, dist_sync=False, class_weight=None, ignore_index=None):
    """Softmax cross-entropy from logits (B, C, *spatial) and labels; ``torch.nn.functional.cross_entropy``
    semantics, including ``weight=`` normalisation (Σ w_y ℓ / Σ w_y) and ``ignore_index``."""
    inp, stats, ext = _prepare(dist_sync, logits, labels, "softmax", ignore_index, "batch", "log")
    cw = _weights(class_weight, inp.logits.shape[1])
    return _out(_pointwise_mean(inp, stats, ext, 1.0, 0.0, cw, normalise_by_weight=cw is not None), inp.logits)


def bce_loss(logits, labels, *, dist_sync=False, ignore_index=None):
    """Binary cross-entropy with logits (DIBE Eq. 1) per channel: C = 1 with 0/1 labels, or C > 1
    with g_c = [label == c]; the mean over valid elements and channels (torch BCEWithLogits)."""
    inp, stats, ext = _prepare(dist_sync, logits, labels, "sigmoid", ignore_index, "batch", "log")
    return _out(_pointwise_mean(inp, stats, ext, 1.0, 1.0), inp.logits)


def wbce_loss(logits, labels, *, dist_sync=False, lam=0.25, ignore_index=None):
    """Weighted BCE (DIBE Eq. 2, Pihur): −λ log p on targets, −(1−λ) log(1−p) elsewhere; mean."""
    lam = _check_number("lam", lam, high=1.0)
    inp, stats, ext = _prepare(dist_sync, logits, labels, "sigmoid", ignore_index, "batch", "log")
    return _out(_pointwise_mean(inp, stats, ext, lam, 1.0 - lam), inp.logits)


def wce_loss(logits, labels, *, dist_sync=False, ignore_index=None, reduction_unit="sample"):
    """Weighted cross-entropy of the 2019 report (Eq. 9): −(1/N) Σ [w g log p + (1−g) log(1−p)] per
    (unit, channel) with w = (N − G)/G from the unit's labels (a constant; 0 when G = 0, where the
    term is empty anyway), averaged over units and channels. Sigmoid outputs."""
    inp, stats, ext = _prepare(dist_sync, logits, labels, "sigmoid", ignore_index, reduction_unit, "log")
    G, N = stats[..., 2], stats[..., 3]
    w = torch.where(G > 0, (N - G) / G.clamp_min(1.0), torch.zeros_like(G))
    per = (w * ext[..., 1] + ext[..., 2]) / N.clamp_min(1.0)
    return _out(per.mean(), inp.logits)


def focal_loss(logits, labels, *, dist_sync=False, gamma=2.0, alpha: Optional[float] = 0.25, activation="sigmoid",
               class_weight=None, ignore_index=None):
    """Focal loss (Lin et al.; DIBE Eq. 3), the mean over elements.

    Sigmoid: −α(1−p)^γ log p on targets and −(1−α)p^γ log(1−p) elsewhere (``alpha=None``: no
    balancing), as ``torchvision.ops.sigmoid_focal_loss``. Softmax: −w_y (1−p_y)^γ log p_y with
    optional per-class weights ``class_weight`` (``alpha`` must be None there).
    """
    gamma = _check_number("gamma", gamma)
    inp, stats, ext = _prepare(dist_sync, logits, labels, activation, ignore_index, "batch", "focal", gamma=gamma)
    if inp.sigmoid:
        a = 1.0 if alpha is None else _check_number("alpha", alpha, high=1.0)
        b = 1.0 if alpha is None else 1.0 - a
        return _out(_pointwise_mean(inp, stats, ext, a, b, _weights(class_weight, inp.logits.shape[1])), inp.logits)
    if alpha is not None:
        raise ValueError("alpha: the softmax focal loss weights classes with class_weight; pass alpha=None")
    return _out(_pointwise_mean(inp, stats, ext, 1.0, 0.0, _weights(class_weight, inp.logits.shape[1])), inp.logits)


def el_ce_loss(logits, labels, *, dist_sync=False, lam=0.25, gamma=1.0, ignore_index=None):
    """Exponential-logarithmic cross-entropy term (DIBE Eq. 11, Wong et al.): λ(−log p)^γ on
    targets, (1−λ)(−log(1−p))^γ elsewhere; mean. Sigmoid outputs."""
    lam = _check_number("lam", lam, high=1.0)
    gamma = _check_number("gamma", gamma, low_open=True)
    inp, stats, ext = _prepare(dist_sync, logits, labels, "sigmoid", ignore_index, "batch", "el", gamma=gamma)
    return _out(_pointwise_mean(inp, stats, ext, lam, 1.0 - lam), inp.logits)


def dibe_dis_loss(logits, labels, *, dist_sync=False, lam=0.25, gamma=2.0, alpha=0.3, beta=None, threshold=0.5, ignore_index=None):
    """DIBE distribution loss (Eq. 16), the mean over elements, sigmoid outputs.

    ``alpha`` acts on the (y = 1, ŷ = 0) branch (standard false negatives) and ``beta`` (default
    1 − alpha) on (y = 0, ŷ = 1) (false positives), the reading under which the paper's
    experiments hold (seeds-losses.md §2.1). ŷ = [p > threshold] is a constant mask. alpha = beta
    = 0 is the focal loss with α = λ. The loss is discontinuous at p = threshold (by design).
    """
    lam = _check_number("lam", lam, high=1.0)
    alpha = _check_number("alpha", alpha)
    beta = 1.0 - alpha if beta is None else _check_number("beta", beta)
    inp, stats, ext = _prepare(dist_sync, logits, labels, "sigmoid", ignore_index, "batch", "dibe", gamma=gamma, alpha=alpha,
                               beta=beta, threshold=threshold)
    return _out(_pointwise_mean(inp, stats, ext, lam, 1.0 - lam), inp.logits)


# ---------------------------------------------------------------- group C


def _region_mean(kind, stats, params, include_background=True, empty="smooth", class_weight=None):
    return _epilogue(kind, stats, params, include_background, "mean", empty, "square", "max_finite",
                     class_weight)[0]


def combo_loss(logits, labels, *, dist_sync=False, theta=0.5, lam=0.25, smooth=1.0, ignore_index=None, reduction_unit="sample"):
    """Combo loss as DIBE writes it (Eq. 9): θ·mean WBCE(λ) + (1−θ)·(1 − Dice), Dice smoothing 1."""
    theta = _check_number("theta", theta, high=1.0)
    lam = _check_number("lam", lam, high=1.0)
    smooth = _check_number("smooth", smooth)
    inp, stats, ext = _prepare(dist_sync, logits, labels, "sigmoid", ignore_index, reduction_unit, "log")
    pw = _pointwise_mean(inp, stats, ext, lam, 1.0 - lam)
    return _out(theta * pw + (1.0 - theta) * _region_mean("dice", stats, [smooth, smooth, 0.5, 0.5, 1.0]), inp.logits)


def exp_log_loss(logits, labels, *, dist_sync=False, theta=0.5, lam=0.25, gamma_ce=1.0, gamma_dice=1.0, smooth=1.0,
                 ignore_index=None, reduction_unit="sample"):
    """Exponential-logarithmic loss (DIBE Eqs. 10–11, Wong et al.): θ·mean EL-CE + (1−θ)(−log Dc)^γ_Dc."""
    theta = _check_number("theta", theta, high=1.0)
    lam = _check_number("lam", lam, high=1.0)
    gamma_ce = _check_number("gamma_ce", gamma_ce, low_open=True)
    gamma_dice = _check_number("gamma_dice", gamma_dice, low_open=True)
    inp, stats, ext = _prepare(dist_sync, logits, labels, "sigmoid", ignore_index, reduction_unit, "el", gamma=gamma_ce)
    pw = _pointwise_mean(inp, stats, ext, lam, 1.0 - lam)
    region = _region_mean("log_dice", stats, [smooth, smooth, 0.5, 0.5, gamma_dice])
    return _out(theta * pw + (1.0 - theta) * region, inp.logits)


def hybrid_focal_loss(logits, labels, *, dist_sync=False, theta=0.5, lam=0.25, gamma_focal=2.0, w_fp=0.3, w_fn=0.7,
                      exponent=4.0 / 3.0, smooth=1.0, ignore_index=None, reduction_unit="sample"):
    """Hybrid focal loss as DIBE writes it (Eq. 12): θ·mean Focal(λ, γ) + (1−θ)·focal-Tversky
    (1 − T)^exponent with FP weight ``w_fp`` and FN weight ``w_fn`` (exponent 4/3 = the paper's γ_FT 0.75)."""
    theta = _check_number("theta", theta, high=1.0)
    lam = _check_number("lam", lam, high=1.0)
    gamma_focal = _check_number("gamma_focal", gamma_focal)
    inp, stats, ext = _prepare(dist_sync, logits, labels, "sigmoid", ignore_index, reduction_unit, "focal", gamma=gamma_focal)
    pw = _pointwise_mean(inp, stats, ext, lam, 1.0 - lam)
    region = _region_mean("focal_tversky", stats, [smooth, smooth, _check_number("w_fp", w_fp),
                                                   _check_number("w_fn", w_fn),
                                                   _check_number("exponent", exponent, low_open=True)])
    return _out(theta * pw + (1.0 - theta) * region, inp.logits)


def dibe_loss(logits, labels, *, dist_sync=False, theta=0.5, lam=0.25, alpha=0.3, gamma_dis=2.0, gamma_reg=2.0, smooth=1.0,
              threshold=0.5, ignore_index=None, reduction_unit="sample"):
    """DIBE compound loss (Eq. 19): θ·mean DIBE_Dis + (1−θ)·DIBE_Reg, the shared α the FN weight and
    β = 1 − α the FP weight in both terms (seeds-losses.md §2.1, §2.7). ``gamma_dis``/``gamma_reg``:
    the paper's shared γ = 2 (preset) or DIBE_Reg's own 1.5. DIBE_Reg = (−log T)^(1/gamma_reg)."""
    theta = _check_number("theta", theta, high=1.0)
    lam = _check_number("lam", lam, high=1.0)
    alpha = _check_number("alpha", alpha, high=1.0)
    gamma_reg = _check_number("gamma_reg", gamma_reg, low_open=True)
    inp, stats, ext = _prepare(dist_sync, logits, labels, "sigmoid", ignore_index, reduction_unit, "dibe", gamma=gamma_dis,
                               alpha=alpha, beta=1.0 - alpha, threshold=threshold)
    pw = _pointwise_mean(inp, stats, ext, lam, 1.0 - lam)
    region = _region_mean("dibe_reg", stats, [smooth, smooth, 1.0 - alpha, alpha, 1.0 / gamma_reg])
    return _out(theta * pw + (1.0 - theta) * region, inp.logits)


def dice_ce_loss(logits, labels, *, dist_sync=False, activation="softmax", lambda_dice=1.0, lambda_ce=1.0, include_background=True,
                 smooth_nr=1e-5, smooth_dr=1e-5, class_weight=None, ignore_index=None, reduction_unit="sample"):
    """MONAI ``DiceCELoss(to_onehot_y=True, softmax=True)``: λ_dice·Dice + λ_ce·CE with
    CE = ``cross_entropy(weight=class_weight)``; ``class_weight`` also weights the Dice classes
    (without class 0 when include_background=False). With ``activation="sigmoid"`` the CE term is
    BCE-with-logits per channel; MONAI agrees for C = 1 but applies the softmax CE to C > 1
    channels even with ``sigmoid=True``."""
    lambda_dice = _check_number("lambda_dice", lambda_dice)
    lambda_ce = _check_number("lambda_ce", lambda_ce)
    inp, stats, ext = _prepare(dist_sync, logits, labels, activation, ignore_index, reduction_unit, "log")
    C = inp.logits.shape[1]
    cw = _weights(class_weight, C)
    if inp.sigmoid:
        if cw is not None:
            raise ValueError("class_weight: MONAI applies it as BCE pos_weight for sigmoid; not supported here")
        ce = _pointwise_mean(inp, stats, ext, 1.0, 1.0)
    else:
        ce = _pointwise_mean(inp, stats, ext, 1.0, 0.0, cw, normalise_by_weight=cw is not None)
    dice_w = None
    if cw is not None:
        dice_w = (cw[1:] if (not include_background and C > 1) else cw).tolist()
    dice = _region_mean("dice", stats, [smooth_nr, smooth_dr, 0.5, 0.5, 1.0], include_background, "smooth", dice_w)
    return _out(lambda_dice * dice + lambda_ce * ce, inp.logits)


def dice_focal_loss(logits, labels, *, dist_sync=False, activation="sigmoid", gamma=2.0, alpha: Optional[float] = None,
                    lambda_dice=1.0, lambda_focal=1.0, include_background=True, smooth_nr=1e-5, smooth_dr=1e-5,
                    ignore_index=None, reduction_unit="sample"):
    """λ_dice·Dice + λ_focal·focal loss, one pass. With ``activation="sigmoid"`` this is MONAI
    ``DiceFocalLoss(to_onehot_y=True, sigmoid=True)``. With softmax the focal term is the softmax
    (multi-class) focal loss −(1−p_y)^γ log p_y, not MONAI's, which applies a sigmoid focal loss to
    the channels even when its Dice uses a softmax."""
    lambda_dice = _check_number("lambda_dice", lambda_dice)
    lambda_focal = _check_number("lambda_focal", lambda_focal)
    gamma = _check_number("gamma", gamma)
    inp, stats, ext = _prepare(dist_sync, logits, labels, activation, ignore_index, reduction_unit, "focal", gamma=gamma)
    if inp.sigmoid:
        a = 1.0 if alpha is None else _check_number("alpha", alpha, high=1.0)
        b = 1.0 if alpha is None else 1.0 - a
        drop = not include_background and inp.logits.shape[1] > 1
        if drop:  # MONAI drops the background channel from the focal term too
            stats_f, ext_f = stats[:, 1:], ext[:, 1:]
        else:
            stats_f, ext_f = stats, ext
        focal = _pointwise_mean(inp, stats_f, ext_f, a, b)
    else:
        if alpha is not None:
            raise ValueError("alpha: not defined for the softmax focal term; pass alpha=None")
        focal = _pointwise_mean(inp, stats, ext, 1.0, 0.0)
    dice = _region_mean("dice", stats, [smooth_nr, smooth_dr, 0.5, 0.5, 1.0], include_background)
    return _out(lambda_dice * dice + lambda_focal * focal, inp.logits)


def squared_dice_loss(logits, labels, *, dist_sync=False, activation="softmax", ignore_index=None, reduction_unit="sample",
                      include_background=True, smooth_nr=1e-5, smooth_dr=1e-5):
    """Dice with squared denominators (Milletari; MONAI ``DiceLoss(squared_pred=True)``):
    1 − (2I + s_nr)/(Σp² + Σg² + s_dr), Σg² = G for one-hot labels; mean over units and classes."""
    inp, stats, ext = _prepare(dist_sync, logits, labels, activation, ignore_index, reduction_unit, "none", OUT_Q)
    sq = torch.stack([stats[..., 0], ext[..., 0], stats[..., 2], stats[..., 3]], dim=-1)  # P -> Q
    return _out(_region_mean("dice", sq, [smooth_nr, smooth_dr, 0.5, 0.5, 1.0], include_background), inp.logits)


def _module(name: str, fn) -> type:
    """nn.Module twin of a loss function (keyword arguments fixed at construction), as the region losses'."""
    return type(name, (_RegionLossModule,), {"_fn": staticmethod(fn), "__doc__": f"nn.Module form of :func:`{fn.__name__}`."})


CrossEntropyLoss = _module("CrossEntropyLoss", cross_entropy_loss)
BCELoss = _module("BCELoss", bce_loss)
WBCELoss = _module("WBCELoss", wbce_loss)
WCELoss = _module("WCELoss", wce_loss)
FocalLoss = _module("FocalLoss", focal_loss)
ELCELoss = _module("ELCELoss", el_ce_loss)
DibeDisLoss = _module("DibeDisLoss", dibe_dis_loss)
ComboLoss = _module("ComboLoss", combo_loss)
ExpLogLoss = _module("ExpLogLoss", exp_log_loss)
HybridFocalLoss = _module("HybridFocalLoss", hybrid_focal_loss)
DibeLoss = _module("DibeLoss", dibe_loss)
DiceCELoss = _module("DiceCELoss", dice_ce_loss)
DiceFocalLoss = _module("DiceFocalLoss", dice_focal_loss)
SquaredDiceLoss = _module("SquaredDiceLoss", squared_dice_loss)

__all__ = ["cross_entropy_loss", "bce_loss", "wbce_loss", "wce_loss", "focal_loss", "el_ce_loss", "dibe_dis_loss",
           "combo_loss", "exp_log_loss", "hybrid_focal_loss", "dibe_loss", "dice_ce_loss", "dice_focal_loss",
           "squared_dice_loss", "CrossEntropyLoss", "BCELoss", "WBCELoss", "WCELoss", "FocalLoss", "ELCELoss",
           "DibeDisLoss", "ComboLoss", "ExpLogLoss", "HybridFocalLoss", "DibeLoss", "DiceCELoss", "DiceFocalLoss",
           "SquaredDiceLoss"]
