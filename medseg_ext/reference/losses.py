"""NumPy reference for the losses family (spec: shared/reference/seeds-losses.md §0, §5 Group S).

Arrays: logits (B, C, *spatial), integer labels (B, *spatial). Everything is computed in float64
with one-hot labels and an explicit softmax, i.e. the plain way the fast kernels avoid.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def _prepare(logits, labels, activation: str, ignore_index: Optional[int]):
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    B, C = z.shape[:2]
    z = z.reshape(B, C, -1)
    y = y.reshape(B, -1)
    valid = np.ones_like(y, dtype=bool) if ignore_index is None else y != ignore_index
    binary = activation == "sigmoid" and C == 1
    allowed = (y == 0) | (y == 1) if binary else (y >= 0) & (y < C)
    if np.any(valid & ~allowed):
        bad = y[valid & ~allowed][0]
        raise ValueError(f"labels: value {bad} is outside the allowed range for C = {C} ({activation})")
    zv = np.where(valid[:, None, :], z, 0.0)
    if np.isnan(zv).any():
        raise ValueError("logits: NaN in a counted element")
    if activation == "softmax":
        m = zv.max(axis=1, keepdims=True)
        if np.isinf(m).any():
            raise ValueError("logits: +inf or a row of all -inf in a counted element (softmax)")
        e = np.exp(zv - m)
        p = e / e.sum(axis=1, keepdims=True)
        onehot = (np.arange(C)[None, :, None] == y[:, None, :]).astype(np.float64)
    elif activation == "sigmoid":
        p = 0.5 * (1.0 + np.tanh(0.5 * zv))  # = 1/(1+exp(-z)) without overflow warnings
        if binary:
            onehot = (y == 1)[:, None, :].astype(np.float64)
        else:
            onehot = (np.arange(C)[None, :, None] == y[:, None, :]).astype(np.float64)
    else:
        raise ValueError(f"activation: expected 'softmax' or 'sigmoid', got {activation!r}")
    mask = valid[:, None, :].astype(np.float64)
    return p * mask, onehot * mask, mask, valid


def soft_region_stats(logits, labels, activation="softmax", ignore_index=None, reduction_unit="sample"):
    """(U, C, 4) float64 array of I = Σp·g, P = Σp, G = Σg, N per (unit, class)."""
    p, g, mask, _ = _prepare(logits, labels, activation, ignore_index)
    C = p.shape[1]
    stats = np.stack(
        [(p * g).sum(-1), p.sum(-1), g.sum(-1), np.broadcast_to(mask.sum(-1), (p.shape[0], C))], axis=-1
    )
    if reduction_unit == "batch":
        stats = stats.sum(axis=0, keepdims=True)
    return stats


def soft_region_stats_backward(grad_stats, logits, labels, activation="softmax", ignore_index=None,
                               reduction_unit="sample"):
    """dL/dlogits given dL/dstats (U, C, 4), through the explicit softmax/sigmoid Jacobian."""
    shape = np.shape(logits)
    p, g, mask, _ = _prepare(logits, labels, activation, ignore_index)
    gs = np.asarray(grad_stats, dtype=np.float64)
    if reduction_unit == "batch":
        gs = np.broadcast_to(gs, (p.shape[0],) + gs.shape[1:])
    dI, dP = gs[..., 0][:, :, None], gs[..., 1][:, :, None]
    dL_dp = (dP + dI * g) * mask  # (B, C, S)
    if activation == "sigmoid":
        dz = dL_dp * p * (1.0 - p)
    else:
        # full Jacobian J_kc = p_k (δ_kc − p_c) applied per element
        dz = p * (dL_dp - (p * dL_dp).sum(axis=1, keepdims=True))
    return (dz * mask).reshape(shape)


def dice_per_class(stats, smooth_nr=1e-5, smooth_dr=1e-5):
    """1 − (2I + smooth_nr)/(P + G + smooth_dr) per (unit, class): MONAI's DiceLoss formula."""
    s = np.asarray(stats, dtype=np.float64)
    I, P, G = s[..., 0], s[..., 1], s[..., 2]
    return 1.0 - (2.0 * I + smooth_nr) / (P + G + smooth_dr)


def dice_coefficients(stats, smooth_nr=1e-5, smooth_dr=1e-5):
    """Analytic dL/dP and dL/dI of the per-class Dice loss (seeds-losses.md §5, S1):
    dL/dp_i = A + B·g_i with A = (2I + s_nr)/(P + G + s_dr)², B = −2/(P + G + s_dr)."""
    s = np.asarray(stats, dtype=np.float64)
    I, P, G = s[..., 0], s[..., 1], s[..., 2]
    S = P + G + smooth_dr
    return (2.0 * I + smooth_nr) / S**2, -2.0 / S


def dice_loss(logits, labels, activation="softmax", ignore_index=None, reduction_unit="sample",
              include_background=True, smooth_nr=1e-5, smooth_dr=1e-5, reduction="mean"):
    stats = soft_region_stats(logits, labels, activation, ignore_index, reduction_unit)
    f = dice_per_class(stats, smooth_nr, smooth_dr)
    if not include_background and f.shape[1] > 1:
        f = f[:, 1:]
    if reduction == "mean":
        return f.mean()
    if reduction == "sum":
        return f.sum()
    return f


def region_loss_per_class(kind, stats, smooth_nr=1e-5, smooth_dr=1e-5, alpha=0.5, beta=0.5, exponent=1.0):
    """Per (unit, class) region losses written directly from the formulas (seeds-losses.md §0, §3, Appendix)."""
    s = np.asarray(stats, dtype=np.float64)
    I, P, G, N = s[..., 0], s[..., 1], s[..., 2], s[..., 3]
    TP, FP, FN = I, P - I, G - I
    if kind == "dice":
        return 1.0 - (2.0 * TP + smooth_nr) / (2.0 * TP + FP + FN + smooth_dr)
    if kind == "jaccard":
        return 1.0 - (TP + smooth_nr) / (TP + FP + FN + smooth_dr)
    if kind in ("tversky", "focal_tversky"):
        t = (TP + smooth_nr) / (TP + alpha * FP + beta * FN + smooth_dr)
        return 1.0 - t if kind == "tversky" else np.maximum(1.0 - t, 0.0) ** exponent
    if kind == "log_dice":
        dc = (2.0 * TP + smooth_nr) / (2.0 * TP + FP + FN + smooth_dr)
        return np.maximum(-np.log(dc), 0.0) ** exponent
    if kind == "dibe_reg":
        t = (TP + smooth_nr) / (TP + alpha * FP + beta * FN + smooth_dr)
        return np.maximum(-np.log(t), 0.0) ** exponent
    if kind == "kappa_zhang2019":  # TR Eq. 26 as printed (not Cohen's kappa)
        n = np.maximum(N, 1.0)
        return 1.0 - (2.0 * I - P * G / n) / (P + G - 2.0 * I / n + smooth_dr)
    if kind == "kappa":
        # 1 − κ of the soft 2×2 table a = TP, b = FP, c = FN, d = TN: (b + c)·n / ((a+b)(b+d) + (a+c)(c+d)) · ...
        n = np.maximum(N, 1.0)  # a unit with no counted element is an empty table: loss 0
        TN = n - P - G + I
        agree = (TP + TN) / n
        chance = ((TP + FP) * (TP + FN) + (FN + TN) * (FP + TN)) / n**2
        # L = (1 − p_o)/(1 − p_c), written over the common factor n/2 so that smooth_dr enters as in the op
        return ((1.0 - agree) * n) / ((1.0 - chance) * n + smooth_dr)
    raise ValueError(kind)


def generalized_dice_per_unit(stats, weight_type="square", absent="max_finite", smooth_nr=1e-5, smooth_dr=1e-5):
    """Sudre's generalized Dice per unit, looping over units and classes (MONAI absent-class rule)."""
    s = np.asarray(stats, dtype=np.float64)
    out = np.empty(s.shape[0])
    for u in range(s.shape[0]):
        num, den, weights = 0.0, 0.0, []
        for c in range(s.shape[1]):
            g = s[u, c, 2]
            if weight_type == "uniform":
                weights.append(1.0)
            elif g == 0:
                weights.append(None)  # infinite
            else:
                weights.append(1.0 / (g * g) if weight_type == "square" else 1.0 / g)
        finite = [w for w in weights if w is not None]
        fill = (max(finite) if finite else 0.0) if absent == "max_finite" else 0.0
        for c, w in enumerate(weights):
            w = fill if w is None else w
            num += w * s[u, c, 0]
            den += w * (s[u, c, 1] + s[u, c, 2])
        out[u] = 1.0 - (2.0 * num + smooth_nr) / (den + smooth_dr)
    return out


def region_loss(logits, labels, kind="dice", activation="softmax", ignore_index=None, reduction_unit="sample",
                include_background=True, reduction="mean", empty="smooth", weight_type="square", absent="max_finite",
                **params):
    """Reduced region loss; ``empty``: smooth (formula as is), zero (absent target classes score 0
    but count in the mean, SMP), skip (absent target classes leave the mean; NaN unreduced)."""
    stats = soft_region_stats(logits, labels, activation, ignore_index, reduction_unit)
    if not include_background and stats.shape[1] > 1:
        stats = stats[:, 1:]
    if kind == "generalized_dice":
        f = generalized_dice_per_unit(stats, weight_type, absent, params.get("smooth_nr", 1e-5),
                                      params.get("smooth_dr", 1e-5))
        return f.mean() if reduction == "mean" else f.sum() if reduction == "sum" else f
    f = region_loss_per_class(kind, stats, **params)
    present = stats[..., 2] > 0
    if empty == "zero":
        f = np.where(present, f, 0.0)
    elif empty == "skip":
        if reduction == "none":
            return np.where(present, f, np.nan)
        kept = f[present]
        if reduction == "sum":
            return kept.sum()
        return kept.mean() if kept.size else 0.0
    return f.mean() if reduction == "mean" else f.sum() if reduction == "sum" else f


def cohen_kappa_counts(a, b, c, d):
    """Cohen's κ of a 2×2 table (rows prediction, columns truth): a = TP, b = FP, c = FN, d = TN."""
    n = a + b + c + d
    po = (a + d) / n
    pc = ((a + b) * (a + c) + (b + d) * (c + d)) / n**2
    return (po - pc) / (1 - pc)


# ---------------------------------------------------------------- groups P, C, H (fused extras)


def _log_sigmoid(z):
    return -np.logaddexp(0.0, -z)


def pointwise_loss_map(logits, labels, kind, activation="sigmoid", gamma=2.0, alpha=0.0, beta=0.0,
                       threshold=0.5, ignore_index=None):
    """(B, C, S) map of the unweighted pointwise loss of every element and channel, written branch
    by branch as DIBE Eqs. 1–3, 11, 16 print them (λ and class weights left out); 0 where a term
    does not apply (ignored elements; softmax non-target channels)."""
    z = np.asarray(logits, dtype=np.float64)
    B, C = z.shape[:2]
    z = z.reshape(B, C, -1)
    p, g, mask, _ = _prepare(logits, labels, activation, ignore_index)
    if activation == "softmax":
        zm = np.where(mask > 0, z, 0.0)
        logp = zm - zm.max(1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
        pk = np.exp(logp)
        if kind == "log":
            f = -logp
        elif kind == "focal":
            f = -((1.0 - pk) ** gamma) * logp
        elif kind == "el":
            f = (-logp) ** gamma
        else:
            raise ValueError(kind)
        return np.where(g > 0, f, 0.0)
    log_p, log_q = _log_sigmoid(z), _log_sigmoid(-z)
    pp, qq = np.exp(log_p), np.exp(log_q)
    yhat = pp > threshold
    pos, neg = (g > 0), (g == 0) & (mask > 0)
    if kind == "log":
        fp_, fn_ = -log_p, -log_q
    elif kind == "focal":
        fp_, fn_ = -(qq ** gamma) * log_p, -(pp ** gamma) * log_q
    elif kind == "el":
        fp_, fn_ = (-log_p) ** gamma, (-log_q) ** gamma
    elif kind == "dibe":
        a, b = 1.0 + alpha, 1.0 + beta
        fp_ = np.where(yhat, -(qq ** gamma) * log_p,                      # y=1, ŷ=1 (TP)
                       -((1.0 - pp ** a) ** gamma) * a * log_p)            # y=1, ŷ=0 (FN)
        fn_ = np.where(~yhat, -(pp ** gamma) * log_q,                     # y=0, ŷ=0 (TN)
                       -((1.0 - qq ** b) ** gamma) * b * log_q)            # y=0, ŷ=1 (FP)
    else:
        raise ValueError(kind)
    return np.where(pos, fp_, 0.0), np.where(neg, fn_, 0.0)


def fused_extra_stats(logits, labels, activation="softmax", ignore_index=None, reduction_unit="sample",
                      pointwise="none", gamma=2.0, alpha=0.0, beta=0.0, threshold=0.5):
    """(U, C, 5) float64: Q = Σp², Spos, Sneg (sums of the pointwise map), Ph, TPh (hard counts)."""
    z = np.asarray(logits, dtype=np.float64)
    B, C = z.shape[:2]
    z = z.reshape(B, C, -1)
    p, g, mask, valid = _prepare(logits, labels, activation, ignore_index)
    if activation == "softmax":
        yhat = (np.arange(C)[None, :, None] == z.argmax(1)[:, None, :]).astype(np.float64)
    else:
        yhat = (p > threshold).astype(np.float64)  # p > t, the kernel's z > logit(t)
    yhat = yhat * mask
    s_pos = s_neg = np.zeros((B, C))
    if pointwise != "none":
        m = pointwise_loss_map(logits, labels, pointwise, activation, gamma, alpha, beta, threshold, ignore_index)
        if activation == "softmax":
            s_pos = m.sum(-1)
        else:
            s_pos, s_neg = m[0].sum(-1), m[1].sum(-1)
    out = np.stack([(p * p).sum(-1), s_pos, s_neg, yhat.sum(-1), (yhat * g).sum(-1)], axis=-1)
    return out.sum(0, keepdims=True) if reduction_unit == "batch" else out


def confusion_counts(pred, target, num_classes, ignore_index=None):
    """(B, C, 4) int64 TP, FP, FN, TN from integer maps, by explicit per-class comparisons."""
    pred = np.asarray(pred).reshape(len(pred), -1)
    target = np.asarray(target).reshape(len(target), -1)
    valid = np.ones_like(target, dtype=bool) if ignore_index is None else target != ignore_index
    out = np.zeros((pred.shape[0], num_classes, 4), dtype=np.int64)
    for c in range(num_classes):
        pc, tc = (pred == c) & valid, (target == c) & valid
        out[:, c] = np.stack([(pc & tc).sum(1), (pc & ~tc).sum(1), (~pc & tc).sum(1),
                              (~pc & ~tc & valid).sum(1)], axis=-1)
    return out


# ---------------------------------------------------------------- groups W, F (class balance, affinity)


def class_balanced_weights(counts, beta, normalize=True):
    """(1 − β)/(1 − β^n) per class (0 for n = 0), normalised to sum C."""
    n = np.asarray(counts, dtype=np.float64)
    w = np.array([(1.0 - beta) / (1.0 - beta ** k) if k > 0 else 0.0 for k in n])
    return w * (len(n) / w.sum()) if normalize and w.sum() > 0 else w


def gaussian_affinity(features, centres, sigma):
    """(N, C): max over each class's centres of exp(−‖f − w‖²/σ), by explicit differences."""
    f = np.asarray(features, dtype=np.float64)
    W = np.asarray(centres, dtype=np.float64)
    C, m, _ = W.shape
    out = np.empty((f.shape[0], C))
    for c in range(C):
        out[:, c] = np.max([np.exp(-((f - W[c, k]) ** 2).sum(1) / sigma) for k in range(m)], axis=0)
    return out


def balanced_affinity_loss(d, labels, centres, margin=0.1, class_weight=None):
    """mean_i w_{y_i}(Σ_{c≠y_i} max(0, λ + d_ic − d_{i,y_i}) + R(W)), R by a loop over centre pairs."""
    d = np.asarray(d, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    W = np.asarray(centres, dtype=np.float64).reshape(-1, np.shape(centres)[-1])
    pairs = [((W[j] - W[k]) ** 2).sum() for j in range(len(W)) for k in range(j + 1, len(W))]
    R = float(np.var(pairs)) if pairs else 0.0
    total = 0.0
    for i in range(d.shape[0]):
        hinge = sum(max(0.0, margin + d[i, c] - d[i, y[i]]) for c in range(d.shape[1]) if c != y[i])
        total += (1.0 if class_weight is None else class_weight[y[i]]) * (hinge + R)
    return total / d.shape[0]
