"""Reference versions of the detection losses and the label-aware (LA) mechanism (seeds-part1.md §1).

Two kinds of oracle live here:

* plain NumPy, float64, written from the formulas (the spec the fast kernels must equal);
* plain PyTorch with autograd (``torch_*``): mmdetection 2.x formulas written out op by op, used
  for gradients and as the "eager" peer in the benchmark.

Conventions (mmdetection semantics):
* classification labels are integers in [0, C]; C means background (an all-zero target row);
* weights multiply the element-wise loss; reduction "mean" with ``avg_factor`` is
  sum / (avg_factor + float32 eps), without it the plain mean; "sum"; "none" (element-wise);
* boxes are (x1, y1, x2, y2); GIoU clamps union and enclosing area below by ``eps``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def weight_reduce(loss, weight=None, reduction="mean", avg_factor=None):
    """mmdet ``weight_reduce_loss``: per-row weights broadcast over the last axis."""
    loss = np.asarray(loss, dtype=np.float64)
    if weight is not None:
        w = np.asarray(weight, dtype=np.float64)
        if w.ndim < loss.ndim:
            w = w.reshape(w.shape + (1,) * (loss.ndim - w.ndim))
        loss = loss * w
    if avg_factor is None:
        return {"mean": loss.mean() if loss.size else np.float64(np.nan), "sum": loss.sum(), "none": loss}[reduction]
    if reduction == "mean":
        return loss.sum() / (avg_factor + FLOAT32_EPS)
    if reduction == "none":
        return loss
    raise ValueError('avg_factor can not be used with reduction="sum"')


# ---------------------------------------------------------------- sigmoid focal loss


def onehot_targets(labels, num_classes):
    """(N,) labels in [0, C] -> (N, C) float targets; label C (background) is an all-zero row."""
    y = np.asarray(labels, dtype=np.int64)
    return (y[:, None] == np.arange(num_classes)[None, :]).astype(np.float64)


def sigmoid_focal_elementwise(z, t, alpha=0.25, gamma=2.0):
    """BCE(z, t)·(αt + (1−α)(1−t))·|t − σ(z)|^γ, element-wise."""
    z = np.asarray(z, dtype=np.float64)
    p = _sigmoid(z)
    bce = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
    return bce * (alpha * t + (1 - alpha) * (1 - t)) * np.abs(t - p) ** gamma


def sigmoid_focal_elementwise_grad(z, t, alpha=0.25, gamma=2.0):
    """d/dz of :func:`sigmoid_focal_elementwise` (product rule; d|t − σ|/dz = (1 − 2t)σ(1 − σ))."""
    z = np.asarray(z, dtype=np.float64)
    p = _sigmoid(z)
    bce = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
    pt = np.abs(t - p)
    with np.errstate(divide="ignore", invalid="ignore"):
        dmod = np.where(pt > 0, gamma * pt ** (gamma - 1), 1.0 if gamma == 1 else 0.0) if gamma != 0 else 0 * pt
    aw = alpha * t + (1 - alpha) * (1 - t)
    return aw * ((p - t) * pt ** gamma + bce * dmod * (1 - 2 * t) * p * (1 - p))


def sigmoid_focal_loss(logits, labels, weight=None, alpha=0.25, gamma=2.0, reduction="mean", avg_factor=None,
                       loss_weight=1.0):
    z = np.asarray(logits, dtype=np.float64)
    t = onehot_targets(labels, z.shape[1])
    return loss_weight * weight_reduce(sigmoid_focal_elementwise(z, t, alpha, gamma), weight, reduction, avg_factor)


# ---------------------------------------------------------------- GIoU


def giou(pred, target, eps=1e-6):
    """mmdet ``bbox_overlaps(mode='giou', is_aligned=True)``: union, enclosing area clamped at eps."""
    a = np.asarray(pred, dtype=np.float64)
    b = np.asarray(target, dtype=np.float64)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    overlap = iw * ih
    union = np.maximum(area_a + area_b - overlap, eps)
    ew = np.clip(np.maximum(a[..., 2], b[..., 2]) - np.minimum(a[..., 0], b[..., 0]), 0, None)
    eh = np.clip(np.maximum(a[..., 3], b[..., 3]) - np.minimum(a[..., 1], b[..., 1]), 0, None)
    enclose = np.maximum(ew * eh, eps)
    return overlap / union - (enclose - union) / enclose


def giou_loss(pred, target, weight=None, eps=1e-6, reduction="mean", avg_factor=None, loss_weight=1.0):
    if weight is not None and np.ndim(weight) > 1:
        weight = np.asarray(weight, dtype=np.float64).mean(-1)
    return loss_weight * weight_reduce(1.0 - giou(pred, target, eps), weight, reduction, avg_factor)


# ---------------------------------------------------------------- centerness


def centerness_target(points, gt_boxes):
    """ATSS: sqrt(min(l,r)/max(l,r) · min(t,b)/max(t,b)); points (N, 2) or anchors (N, 4) (their centres)."""
    p = np.asarray(points, dtype=np.float64)
    g = np.asarray(gt_boxes, dtype=np.float64)
    if p.shape[-1] == 4:
        p = np.stack([(p[:, 0] + p[:, 2]) / 2, (p[:, 1] + p[:, 3]) / 2], axis=1)
    l, t = p[:, 0] - g[:, 0], p[:, 1] - g[:, 1]
    r, b = g[:, 2] - p[:, 0], g[:, 3] - p[:, 1]
    if np.any(np.stack([l, t, r, b]) < 0):
        raise ValueError("points: a point lies outside its gt box")
    lr = np.stack([l, r], 1)
    tb = np.stack([t, b], 1)
    return np.sqrt(lr.min(1) / lr.max(1) * (tb.min(1) / tb.max(1)))


def bce_with_logits(z, t):
    z = np.asarray(z, dtype=np.float64)
    return np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))


def centerness_loss(logits, points, gt_boxes, weight=None, reduction="mean", avg_factor=None, loss_weight=1.0):
    """(loss, targets): BCE-with-logits against the centerness targets."""
    t = centerness_target(points, gt_boxes)
    return loss_weight * weight_reduce(bce_with_logits(logits, t), weight, reduction, avg_factor), t


# ---------------------------------------------------------------- distribution focal loss


def distribution_focal_elementwise(logits, target):
    """GFL: (⌊y⌋+1−y)·CE(z, ⌊y⌋) + (y−⌊y⌋)·CE(z, ⌊y⌋+1); at y = K−1 the right term has weight 0."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    K = z.shape[1]
    m = z.max(1, keepdims=True)
    logp = z - m - np.log(np.exp(z - m).sum(1, keepdims=True))
    left = np.minimum(np.floor(y).astype(np.int64), K - 1)
    right = np.minimum(left + 1, K - 1)
    wl, wr = left + 1 - y, y - left
    rows = np.arange(len(y))
    return -wl * logp[rows, left] - np.where(wr > 0, wr * logp[rows, right], 0.0)


def distribution_focal_elementwise_grad(logits, target):
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    K = z.shape[1]
    e = np.exp(z - z.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    left = np.minimum(np.floor(y).astype(np.int64), K - 1)
    right = np.minimum(left + 1, K - 1)
    wl, wr = left + 1 - y, y - left
    g = p.copy()
    rows = np.arange(len(y))
    np.subtract.at(g, (rows, left), wl)
    np.subtract.at(g, (rows, right), wr)
    return g


def distribution_focal_loss(logits, target, weight=None, reduction="mean", avg_factor=None, loss_weight=1.0):
    return loss_weight * weight_reduce(distribution_focal_elementwise(logits, target), weight, reduction, avg_factor)


def distance_bins(distances, stride, reg_max=16, eps=0.1):
    """LAreg training target bin: floor(clamp(d / stride, 0, reg_max − eps)) ∈ {0..reg_max−1}."""
    d = np.asarray(distances, dtype=np.float64) / stride
    return np.floor(np.clip(d, 0, reg_max - eps)).astype(np.int64)


# ---------------------------------------------------------------- label-aware mechanism


def dual_energy_to_rgb(high, low):
    """Eq. 1: (H/256, L/256, 510·σ(H/L) − 255) on the last axis; L = 0: 255 if H > 0, 0 if H = 0."""
    H = np.asarray(high).astype(np.float64)
    L = np.asarray(low).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        R = np.where(L > 0, H / L, np.where(H > 0, np.inf, 0.0))
    return np.stack([H / 256.0, L / 256.0, 510.0 / (1.0 + np.exp(-R)) - 255.0], axis=-1)


def confuse_labels(scores, labels=None):
    """Rows of scores (L, C) (sigmoid probabilities). Returns (assigned, confuse):
    assigned = labels (C = background) or, without labels, argmax (pseudo-labels);
    confuse = argmax of the row with the assigned entry set to 0."""
    s = np.array(scores, dtype=np.float64)
    C = s.shape[1]
    assigned = s.argmax(1) if labels is None else np.asarray(labels, dtype=np.int64).copy()
    fg = assigned < C
    s[np.flatnonzero(fg), assigned[fg]] = 0.0
    return assigned, s.argmax(1)


def la_cls_modulate(x, g1, g2, a=1.0, b=1.0, c=1.0):
    """Eq. 7 (a = b = c = 1 is Eq. 5): a·x + b·σ(g1)·x − c·σ(g2)·x."""
    x = np.asarray(x, dtype=np.float64)
    return a * x + b * _sigmoid(g1) * x - c * _sigmoid(g2) * x


def la_reg_modulate(x, g):
    """Eq. 6: 0.5·x + σ(g)·x."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x + _sigmoid(g) * x


# ---------------------------------------------------------------- plain PyTorch (autograd), mmdet formulas


def torch_weight_reduce(loss, weight=None, reduction="mean", avg_factor: Optional[float] = None):
    if weight is not None:
        if weight.dim() < loss.dim():
            weight = weight.reshape(weight.shape + (1,) * (loss.dim() - weight.dim()))
        loss = loss * weight
    if avg_factor is None:
        return {"mean": loss.mean, "sum": loss.sum, "none": lambda: loss}[reduction]()
    if reduction == "mean":
        return loss.sum() / (avg_factor + FLOAT32_EPS)
    if reduction == "none":
        return loss
    raise ValueError('avg_factor can not be used with reduction="sum"')


def torch_sigmoid_focal_loss(logits, labels, weight=None, alpha=0.25, gamma=2.0, reduction="mean",
                             avg_factor=None, loss_weight=1.0):
    """mmdet ``py_sigmoid_focal_loss`` with one-hot targets from labels in [0, C]."""
    import torch
    import torch.nn.functional as F

    C = logits.shape[1]
    target = F.one_hot(labels.long(), C + 1)[:, :C].type_as(logits)
    p = logits.sigmoid()
    pt = (1 - p) * target + p * (1 - target)
    focal_weight = (alpha * target + (1 - alpha) * (1 - target)) * pt.pow(gamma)
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * focal_weight
    return loss_weight * torch_weight_reduce(loss, weight, reduction, avg_factor)


def torch_giou_loss(pred, target, weight=None, eps=1e-6, reduction="mean", avg_factor=None, loss_weight=1.0):
    """mmdet ``giou_loss``: 1 − bbox_overlaps(pred, target, 'giou', is_aligned=True, eps)."""
    import torch

    area1 = (pred[..., 2] - pred[..., 0]) * (pred[..., 3] - pred[..., 1])
    area2 = (target[..., 2] - target[..., 0]) * (target[..., 3] - target[..., 1])
    lt = torch.max(pred[..., :2], target[..., :2])
    rb = torch.min(pred[..., 2:], target[..., 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = area1 + area2 - overlap
    eps_t = union.new_tensor([eps])
    union = torch.max(union, eps_t)
    ious = overlap / union
    enclosed_lt = torch.min(pred[..., :2], target[..., :2])
    enclosed_rb = torch.max(pred[..., 2:], target[..., 2:])
    enclose_wh = (enclosed_rb - enclosed_lt).clamp(min=0)
    enclose_area = torch.max(enclose_wh[..., 0] * enclose_wh[..., 1], eps_t)
    gious = ious - (enclose_area - union) / enclose_area
    if weight is not None and weight.dim() > 1:
        weight = weight.mean(-1)
    return loss_weight * torch_weight_reduce(1 - gious, weight, reduction, avg_factor)


def torch_centerness_target(points, gt_boxes):
    import torch

    if points.shape[-1] == 4:
        points = torch.stack([(points[:, 0] + points[:, 2]) / 2, (points[:, 1] + points[:, 3]) / 2], 1)
    l_ = points[:, 0] - gt_boxes[:, 0]
    t_ = points[:, 1] - gt_boxes[:, 1]
    r_ = gt_boxes[:, 2] - points[:, 0]
    b_ = gt_boxes[:, 3] - points[:, 1]
    lr = torch.stack([l_, r_], dim=1)
    tb = torch.stack([t_, b_], dim=1)
    return torch.sqrt((lr.min(dim=-1)[0] / lr.max(dim=-1)[0]) * (tb.min(dim=-1)[0] / tb.max(dim=-1)[0]))


def torch_centerness_loss(logits, points, gt_boxes, weight=None, reduction="mean", avg_factor=None,
                          loss_weight=1.0):
    import torch.nn.functional as F

    t = torch_centerness_target(points, gt_boxes)
    loss = F.binary_cross_entropy_with_logits(logits, t.type_as(logits), reduction="none")
    return loss_weight * torch_weight_reduce(loss, weight, reduction, avg_factor), t


def torch_distribution_focal_loss(logits, target, weight=None, reduction="mean", avg_factor=None, loss_weight=1.0):
    """mmdet ``distribution_focal_loss`` (targets must lie in [0, K − 1) as in mmdet)."""
    import torch.nn.functional as F

    dis_left = target.long()
    dis_right = dis_left + 1
    weight_left = dis_right.float() - target
    weight_right = target - dis_left.float()
    loss = (F.cross_entropy(logits, dis_left, reduction="none") * weight_left
            + F.cross_entropy(logits, dis_right, reduction="none") * weight_right)
    return loss_weight * torch_weight_reduce(loss, weight, reduction, avg_factor)
