"""Hard confusion counts and the metrics built on them (seeds-losses.md §5 group H, §2.3–2.4).

``confusion_counts`` gets TP, FP, FN, TN per (unit, class) as int64 from the same fused pass that
computes the losses (ŷ = argmax for softmax, p > threshold for sigmoid), or from integer
prediction maps (``confusion_from_labels``). The metric functions take those counts, so counts can
be accumulated over a data set first (pooled, the DIBE convention) or evaluated per image.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple

import torch

from ._inputs import check_region_inputs
from .fused import OUT_HARD, fused_stats_raw, pointwise_spec

EMPTY = ("nan", "one", "zero")


def _check_threshold(threshold):
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ValueError(f"threshold: expected a probability in (0, 1), got {threshold!r}")


def confusion_counts(logits, labels, *, activation: str = "softmax", threshold: float = 0.5,
                     ignore_index: Optional[int] = None, reduction_unit: str = "sample") -> torch.Tensor:
    """(U, C, 4) int64 TP, FP, FN, TN of the hard predictions of ``logits`` against ``labels``.

    Softmax: ŷ = argmax over C (first index on ties). Sigmoid: ŷ_c = [p_c > threshold]; with C = 1
    the binary foreground. Ignored elements count nowhere.
    """
    _check_threshold(threshold)
    inp = check_region_inputs(logits, labels, activation, ignore_index, reduction_unit)
    spec = pointwise_spec("none", threshold=threshold, sigmoid=inp.sigmoid, outputs=OUT_HARD)
    with torch.no_grad():
        stats, ext = fused_stats_raw(inp.logits.detach(), inp.labels, inp.sigmoid, inp.per_sample,
                                     inp.ignore_index, spec)
    return _counts(ext[..., 4], ext[..., 3], stats[..., 2], stats[..., 3])


def _counts(tp, pred, target, n) -> torch.Tensor:
    tp, pred, target, n = (t.round().to(torch.int64) for t in (tp, pred, target, n))
    return torch.stack([tp, pred - tp, target - tp, n - pred - target + tp], dim=-1)


def confusion_from_labels(pred, target, num_classes: int, *, ignore_index: Optional[int] = None,
                          reduction_unit: str = "sample") -> torch.Tensor:
    """(U, C, 4) int64 TP, FP, FN, TN from integer prediction and target maps of one shape (B, *spatial)."""
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError("pred, target: expected torch.Tensors")
    if pred.shape != target.shape or pred.dim() < 1:
        raise ValueError(f"pred: shape {tuple(pred.shape)} must equal target shape {tuple(target.shape)} (B, *spatial)")
    if pred.is_floating_point() or target.is_floating_point():
        raise ValueError("pred, target: expected integer class maps")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: expected an int >= 1, got {num_classes!r}")
    if reduction_unit not in ("sample", "batch"):
        raise ValueError(f"reduction_unit: expected 'sample' or 'batch', got {reduction_unit!r}")
    B = pred.shape[0]
    p = pred.reshape(B, -1).long()
    t = target.reshape(B, -1).long()
    valid = torch.ones_like(t, dtype=torch.bool) if ignore_index is None else t != ignore_index
    for name, x in (("pred", p), ("target", t)):
        bad = ((x < 0) | (x >= num_classes)) & valid
        if bool(bad.any()):
            raise ValueError(f"{name}: values outside [0, {num_classes}) (and not ignore_index)")
    # one bincount over (sample, pred, target) triples: the confusion matrices of every sample
    idx = (torch.arange(B, device=p.device)[:, None] * num_classes + p) * num_classes + t
    cm = torch.bincount(idx[valid], minlength=B * num_classes * num_classes).reshape(B, num_classes, num_classes)
    tp = cm.diagonal(dim1=1, dim2=2)
    pred_n, target_n = cm.sum(2), cm.sum(1)
    n = valid.sum(1, keepdim=True).expand(B, num_classes)
    out = torch.stack([tp, pred_n - tp, target_n - tp, n - pred_n - target_n + tp], dim=-1)
    return out if reduction_unit == "sample" else out.sum(0, keepdim=True)


def _ratio(num, den, empty: str):
    if empty not in EMPTY:
        raise ValueError(f"empty: expected one of {EMPTY}, got {empty!r}")
    num, den = num.to(torch.float64), den.to(torch.float64)
    fill = {"nan": float("nan"), "one": 1.0, "zero": 0.0}[empty]
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, fill))


def _split(counts):
    if not isinstance(counts, torch.Tensor) or counts.shape[-1:] != (4,):
        raise ValueError("counts: expected a tensor (..., 4) of TP, FP, FN, TN (see confusion_counts)")
    return counts.unbind(-1)


def iou(counts, empty: str = "nan"):
    """TP/(TP+FP+FN) per entry; ``empty`` is the value when the class is absent from both (nan|one|zero)."""
    tp, fp, fn, _ = _split(counts)
    return _ratio(tp, tp + fp + fn, empty)


def dice_score(counts, empty: str = "nan"):
    """2TP/(2TP+FP+FN) = 2·IoU/(1+IoU)."""
    tp, fp, fn, _ = _split(counts)
    return _ratio(2 * tp, 2 * tp + fp + fn, empty)


def precision(counts, empty: str = "nan"):
    """TP/(TP+FP); DIBE's "PA" (seeds-losses.md §2.8)."""
    tp, fp, _, _ = _split(counts)
    return _ratio(tp, tp + fp, empty)


def recall(counts, empty: str = "nan"):
    """TP/(TP+FN) (sensitivity, TPR)."""
    tp, _, fn, _ = _split(counts)
    return _ratio(tp, tp + fn, empty)


def specificity(counts, empty: str = "nan"):
    """TN/(TN+FP) (TNR)."""
    _, fp, _, tn = _split(counts)
    return _ratio(tn, tn + fp, empty)


def accuracy(counts, empty: str = "nan"):
    """(TP+TN)/N per class (one-vs-rest)."""
    tp, fp, fn, tn = _split(counts)
    return _ratio(tp + tn, tp + fp + fn + tn, empty)


def cohen_kappa(counts, empty: str = "nan"):
    """Cohen's κ of each class's 2×2 table: (p_o − p_e)/(1 − p_e) (report Eqs. 18–21)."""
    tp, fp, fn, tn = (t.to(torch.float64) for t in _split(counts))
    n = tp + fp + fn + tn
    po_n2 = (tp + tn) * n  # p_o·N²
    pe_n2 = (tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)  # p_e·N²
    return _ratio(po_n2 - pe_n2, n * n - pe_n2, empty)


def oii(counts):
    """DIBE output-imbalance index (Eqs. 13–15) in the division-free form of seeds-losses.md §2.3.

    Positive when FN > FP (under-segmentation), negative when FP > FN, in [−1, 1]; FP = FN gives
    1 − k (the paper's Table 1 branch); TP = 0 with errors gives +1 (paper §4.6); an empty class
    (TP = FP = FN = 0) gives NaN.
    """
    tp, fp, fn, _ = (t.to(torch.float64) for t in _split(counts))
    k = 1.0 - (2.0 / math.pi) * torch.atan((fp + fn) / (5.0 * tp).clamp_min(1e-300))
    den = fp * fp - fp * fn + fn * fn
    r = torch.where(den > 0, fp * fn / den.clamp_min(1e-300), torch.ones_like(den))
    mag = 1.0 - k * r
    out = torch.where(fp <= fn, mag, -mag)
    out = torch.where((tp == 0) & (fp + fn > 0), torch.ones_like(out), out)
    return torch.where((tp == 0) & (fp == 0) & (fn == 0), torch.full_like(out, float("nan")), out)


def segmentation_metrics(counts, *, empty: str = "nan") -> dict:
    """Every metric of this module for the given counts, as a dict of tensors of counts' leading shape."""
    return {"iou": iou(counts, empty), "dice": dice_score(counts, empty), "precision": precision(counts, empty),
            "recall": recall(counts, empty), "specificity": specificity(counts, empty),
            "accuracy": accuracy(counts, empty), "kappa": cohen_kappa(counts, empty), "oii": oii(counts)}


def oii_guided_alpha(train_and_validate: Callable[[float], Tuple[int, int, int]], *, low: float = 0.1,
                     high: float = 0.9, target: Tuple[float, float] = (0.3, 0.4), max_models: int = 10,
                     log: Optional[Callable[[str], None]] = print) -> Tuple[float, List[dict]]:
    """DIBE's OII-guided bisection for the FN weight α (paper Fig. 4, App. B; seeds-losses.md §2.4).

    ``train_and_validate(alpha)`` trains a model with FN weight α (FP weight 1 − α) and returns the
    pooled hard validation counts (TP, FP, FN). Stops when OII lies inside ``target`` or after
    ``max_models`` trainings; OII above the interval raises α, below lowers it. Returns the last α
    and the history (alpha, oii, iou, precision per step).
    """
    if not 0 <= low < high <= 1:
        raise ValueError(f"low, high: expected 0 <= low < high <= 1, got {low!r}, {high!r}")
    m0, m1 = target
    if not m0 < m1:
        raise ValueError(f"target: expected an interval (m0, m1) with m0 < m1, got {target!r}")
    if isinstance(max_models, bool) or not isinstance(max_models, int) or max_models < 1:
        raise ValueError(f"max_models: expected an int >= 1, got {max_models!r}")
    lo, hi = float(low), float(high)
    alpha = (lo + hi) / 2
    history = []
    for step in range(max_models):
        tp, fp, fn = (int(v) for v in train_and_validate(alpha))
        c = torch.tensor([[tp, fp, fn, 0]], dtype=torch.int64)
        o = float(oii(c)[0])
        history.append({"alpha": alpha, "oii": o, "iou": float(iou(c)[0]), "precision": float(precision(c)[0])})
        if log is not None:
            log(f"oii_guided_alpha: step {step + 1}/{max_models} alpha {alpha:.4f} OII {o:+.4f}")
        if m0 < o < m1:
            break
        if o >= m1:
            lo = alpha
        else:
            hi = alpha
        if step + 1 < max_models:
            alpha = (lo + hi) / 2
    return alpha, history


__all__ = ["confusion_counts", "confusion_from_labels", "iou", "dice_score", "precision", "recall", "specificity",
           "accuracy", "cohen_kappa", "oii", "segmentation_metrics", "oii_guided_alpha"]
