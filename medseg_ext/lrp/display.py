"""Display helpers: the paper's Eq. 2 log scaling, Captum-style normalisation, overlays (§1.6)."""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import torch


def log_scale(R, thresh: float = 0.1):
    """Eq. 2: f_pos(x) = log(max(t, x)/t), f_neg(x) = −log(|min(−t, x)|/t), R_scaled = f_pos + f_neg.

    Equals sign(x)·ln(|x|/t) for |x| > t and 0 on [−t, t] (natural log, as the authors' code).
    Works on torch tensors and NumPy arrays; NaN stays NaN.
    """
    if not isinstance(thresh, (int, float)) or isinstance(thresh, bool):
        raise TypeError(f"thresh: expected a float, got {type(thresh).__name__}")
    if not thresh > 0 or thresh == float("inf"):
        raise ValueError(f"thresh: expected a finite value > 0, got {thresh}")
    if isinstance(R, torch.Tensor):
        if not R.is_floating_point():
            R = R.double()
        fpos = torch.log(torch.clamp(R, min=thresh) / thresh)
        fneg = -torch.log(torch.abs(torch.clamp(R, max=-thresh)) / thresh)
        return fpos + fneg
    a = np.asarray(R, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        fpos = np.log(np.maximum(a, thresh) / thresh)
        fneg = -np.log(np.abs(np.minimum(a, -thresh)) / thresh)
    return fpos + fneg


def _cum_threshold(values: np.ndarray, percentile: float) -> float:
    v = np.sort(values.ravel())
    cs = np.cumsum(v)
    idx = np.nonzero(cs >= cs[-1] * 0.01 * percentile)[0]
    return float(v[idx[0]] if idx.size else v[-1])


def normalize_attr(attr, sign: str = "positive", outlier_perc: float = 5.0, reduction_axis: Optional[int] = None):
    """Captum's ``visualize_image_attr`` normalisation: threshold = the sorted value at which the
    cumulative sum first reaches (100 − outlier_perc)% of the total (not a percentile), result
    clip(v / threshold, −1, 1). ``reduction_axis`` sums channels first (Captum: the channel axis)."""
    a = attr.detach().cpu().double().numpy() if isinstance(attr, torch.Tensor) else np.asarray(attr, np.float64)
    if a.size == 0:
        raise ValueError("attr: expected a non-empty array")
    if not np.isfinite(a).all():   # a NaN threshold would silently turn every value into NaN
        raise ValueError("attr: contains NaN or Inf")
    if not 0 <= outlier_perc < 100:
        raise ValueError(f"outlier_perc: expected a value in [0, 100), got {outlier_perc}")
    if reduction_axis is not None:
        a = a.sum(axis=reduction_axis)
    if sign == "all":
        thr = _cum_threshold(np.abs(a), 100 - outlier_perc)
    elif sign == "positive":
        a = (a > 0) * a
        thr = _cum_threshold(a, 100 - outlier_perc)
    elif sign == "negative":
        a = (a < 0) * a
        thr = -_cum_threshold(np.abs(a), 100 - outlier_perc)
    elif sign == "absolute_value":
        a = np.abs(a)
        thr = _cum_threshold(a, 100 - outlier_perc)
    else:
        raise ValueError(f"sign: expected 'positive', 'negative', 'absolute_value' or 'all', got {sign!r}")
    if abs(thr) < 1e-5:
        warnings.warn("normalize_attr: attributions are (nearly) all zero; the threshold is < 1e-5")
        if thr == 0:
            return np.zeros_like(a)
    return np.clip(a / thr, -1.0, 1.0)


def overlay(image, relevance, path: Optional[str] = None, *, alpha: float = 0.55, cmap: str = "viridis",
            sign: str = "positive", outlier_perc: float = 5.0, log_thresh: Optional[float] = 0.1):
    """Blended heat map (the paper's display): optional Eq. 2 scaling, then Captum normalisation,
    drawn over the grey image with matplotlib (imported lazily). Saves to ``path`` if given and
    returns the figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    img = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    rel = relevance.detach().cpu().double().numpy() if isinstance(relevance, torch.Tensor) else np.asarray(relevance)
    img, rel = np.squeeze(img), np.squeeze(rel)
    if img.ndim != 2 or rel.shape != img.shape:
        raise ValueError(f"image, relevance: expected two 2-D arrays of one shape, got {img.shape}, {rel.shape}")
    if log_thresh is not None:
        rel = log_scale(rel, log_thresh)
    norm = normalize_attr(rel, sign=sign, outlier_perc=outlier_perc)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(img, cmap="gray")
    ax.imshow(norm, cmap=cmap, alpha=alpha, vmin=-1 if sign == "all" else 0, vmax=1)
    ax.axis("off")
    if path is not None:
        fig.savefig(path, bbox_inches="tight", dpi=100)
    plt.close(fig)
    return fig
