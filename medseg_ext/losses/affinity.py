"""Class-balance weights and the balanced affinity loss (seeds-losses.md §1, groups W and F).

* ``label_histogram`` / ``ClassCounter``: class counts on the labels' device (per pixel or per image),
  accumulated over a data set without host syncs.
* ``class_balanced_weights``: Cui et al.'s 1/E_n = (1 − β)/(1 − β^n), normalised to sum C; it
  warns when β saturates (every weight equal although the counts differ: E_n ≤ 1/(1 − β), so with
  pixel counts or β = 0.99 and thousands of samples the weighting is a no-op, §1.8).
* ``ClusteringAffinity``: the Gaussian-affinity layer d_ic = max_k exp(−‖f_i − w_ck‖²/σ), computed
  as one GEMM (‖f‖² − 2f·w + ‖w‖²), for (N, h) features or (B, h, *spatial) feature maps.
* ``balanced_affinity_loss``: mean_i w_{y_i}·(Σ_{c≠y_i} max(0, λ + d_ic − d_{i,y_i}) + R(W)), R the
  variance of the pairwise squared distances between all centres (Hayat et al.; the authors' code
  is broken here, §1.3, so this follows the reconstruction of §1.2).

These are dense GEMM-shaped ops: PyTorch's matmul is the fast kernel on CPU and GPU, so they are
written in torch and differentiated by autograd; the NumPy reference checks the values.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional

import torch

UNITS = ("pixels", "images")


def label_histogram(labels: torch.Tensor, num_classes: int, *, unit: str = "pixels",
                    ignore_index: Optional[int] = None) -> torch.Tensor:
    """(C,) int64 counts of each class in integer ``labels`` (B, *spatial): pixels, or images that
    contain the class (``unit="images"``). Stays on the labels' device."""
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dim() < 1:
        raise ValueError("labels: expected an integer tensor (B, *spatial)")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: expected an int >= 1, got {num_classes!r}")
    if unit not in UNITS:
        raise ValueError(f"unit: expected one of {UNITS}, got {unit!r}")
    y = labels.reshape(labels.shape[0], -1).long()
    valid = torch.ones_like(y, dtype=torch.bool) if ignore_index is None else y != ignore_index
    bad = ((y < 0) | (y >= num_classes)) & valid
    if bool(bad.any()):  # one host sync: a histogram is not on the training hot path
        raise ValueError(f"labels: values outside [0, {num_classes}) (and not ignore_index)")
    y = torch.where(valid, y, num_classes)  # ignored elements land in a dropped overflow bin
    if unit == "pixels":
        return torch.bincount(y.reshape(-1), minlength=num_classes + 1)[:num_classes]
    B = y.shape[0]
    per_image = torch.zeros(B, num_classes + 1, dtype=torch.int64, device=y.device)
    per_image.scatter_(1, y, 1)  # 1 where the class occurs in the image
    return per_image[:, :num_classes].sum(0)


def class_balanced_weights(counts, beta: float = 0.999, *, normalize: bool = True, warn: bool = True) -> torch.Tensor:
    """w_c = (1 − β)/(1 − β^{n_c}) (Cui et al. 2019), normalised to sum to C when ``normalize``.

    A class with n_c = 0 gets weight 0 (it has no samples to weight). β = 0 gives equal weights.
    Warns when the weighting has saturated: n_c ≫ 1/(1 − β) for every class makes all weights 1
    (within 0.1 %) although the counts differ (seeds-losses.md §1.8: at β = 0.99 the paper's counts do this).
    """
    n = torch.as_tensor(counts).to(torch.float64)
    if n.dim() != 1 or n.numel() == 0 or bool((n < 0).any()) or not bool(torch.isfinite(n).all()):
        raise ValueError("counts: expected a non-empty 1-D tensor of non-negative counts")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < 1:
        raise ValueError(f"beta: expected a number in [0, 1), got {beta!r}")
    # E_n = (1 − β^n)/(1 − β) computed as −expm1(n·log β)/(1 − β): exact for β near 1 and huge n
    if beta == 0:
        eff = torch.where(n > 0, torch.ones_like(n), torch.zeros_like(n))
    else:
        eff = -torch.expm1(n * math.log(beta)) / (1.0 - beta)
    w = torch.where(n > 0, 1.0 / eff.clamp_min(1e-300), torch.zeros_like(n))
    if normalize and bool((w > 0).any()):
        w = w * (n.numel() / w.sum())
    if warn:
        present = n > 0
        wp = w[present]
        # saturated: the weights differ by < 0.1 % although the counts differ by > 10 %
        np_ = n[present]
        if wp.numel() > 1 and bool(wp.max() <= 1.001 * wp.min()) and bool(np_.max() > 1.1 * np_.min()):
            warnings.warn(f"class_balanced_weights: beta={beta} has saturated (every class has far more than "
                          f"1/(1-beta) = {1 / (1 - beta):.0f} samples), so all weights are equal; count images or "
                          "instances rather than pixels, or raise beta", RuntimeWarning, stacklevel=2)
    return w


class ClassCounter(torch.nn.Module):
    """Running class counts kept as a buffer on the model's device (saved in the state dict);
    ``weights(beta)`` gives the class-balanced weights of everything seen so far."""

    def __init__(self, num_classes: int, unit: str = "images", ignore_index: Optional[int] = None):
        super().__init__()
        if unit not in UNITS:
            raise ValueError(f"unit: expected one of {UNITS}, got {unit!r}")
        self.num_classes, self.unit, self.ignore_index = num_classes, unit, ignore_index
        self.register_buffer("counts", torch.zeros(num_classes, dtype=torch.int64))

    @torch.no_grad()
    def update(self, labels: torch.Tensor) -> torch.Tensor:
        self.counts += label_histogram(labels.to(self.counts.device), self.num_classes, unit=self.unit,
                                       ignore_index=self.ignore_index)
        return self.counts

    def weights(self, beta: float = 0.999, normalize: bool = True) -> torch.Tensor:
        return class_balanced_weights(self.counts, beta, normalize=normalize).to(self.counts.device)


def gaussian_affinity(features: torch.Tensor, centres: torch.Tensor, sigma: float) -> torch.Tensor:
    """d_ic = max_k exp(−‖f_i − w_ck‖²/σ) for features (N, h) -> (N, C), or (B, h, *spatial) -> (B, C, *spatial);
    centres (C, m, h). One GEMM; squared distances clamped at 0 against rounding."""
    if not isinstance(centres, torch.Tensor) or centres.dim() != 3:
        raise ValueError("centres: expected a tensor (C, m, h)")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma: expected a finite number > 0, got {sigma!r}")
    C, m, h = centres.shape
    if not isinstance(features, torch.Tensor) or features.dim() < 2 or features.shape[1] != h:
        raise ValueError(f"features: expected (N, {h}) or (B, {h}, *spatial) to match centres (C, m, h) = "
                         f"{tuple(centres.shape)}, got {tuple(getattr(features, 'shape', ()))}")
    spatial = features.dim() > 2
    f = features.movedim(1, -1).reshape(-1, h) if spatial else features
    w = centres.reshape(C * m, h).to(f.dtype)
    sq = (f * f).sum(1, keepdim=True) - 2.0 * (f @ w.t()) + (w * w).sum(1)[None, :]
    d = torch.exp(-sq.clamp_min(0.0) / sigma).reshape(-1, C, m).amax(dim=2)
    if spatial:
        B = features.shape[0]
        return d.reshape((B,) + tuple(features.shape[2:]) + (C,)).movedim(-1, 1)
    return d


def centre_spread_regulariser(centres: torch.Tensor) -> torch.Tensor:
    """R(W): the variance of ‖w_j − w_k‖² over all pairs j < k of the C·m centres (0 for one centre)."""
    w = centres.reshape(-1, centres.shape[-1])
    M = w.shape[0]
    if M < 2:
        return w.sum() * 0.0
    dist = (w[:, None, :] - w[None, :, :]).pow(2).sum(-1)
    j, k = torch.triu_indices(M, M, offset=1, device=w.device)
    pairs = dist[j, k]
    return ((pairs - pairs.mean()) ** 2).mean()


def balanced_affinity_loss(affinity: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor, *,
                           margin: float = 0.1, class_weight=None, ignore_index: Optional[int] = None,
                           reduction: str = "mean") -> torch.Tensor:
    """mean_i w_{y_i}·(Σ_{c≠y_i} max(0, margin + d_ic − d_{i,y_i}) + R(W)) (L_cba, seeds-losses.md §1.2).

    ``affinity``: d from :func:`gaussian_affinity`, (N, C) or (B, C, *spatial); ``labels`` (N,) or
    (B, *spatial); ``class_weight`` (C,) e.g. from :func:`class_balanced_weights` (None: 1, the plain
    affinity loss). Ignored elements leave the mean. ``reduction`` "mean" | "sum" | "none".
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction: expected mean, sum or none, got {reduction!r}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
        raise ValueError(f"margin: expected a finite number, got {margin!r}")
    C = affinity.shape[1]
    d = affinity.movedim(1, -1).reshape(-1, C) if affinity.dim() > 2 else affinity
    if labels.is_floating_point() or labels.numel() != d.shape[0]:
        raise ValueError(f"labels: expected {d.shape[0]} integer labels to match affinity {tuple(affinity.shape)}")
    y = labels.reshape(-1).long()
    valid = torch.ones_like(y, dtype=torch.bool) if ignore_index is None else y != ignore_index
    if bool((((y < 0) | (y >= C)) & valid).any()):
        raise ValueError(f"labels: values outside [0, {C}) (and not ignore_index)")
    yc = torch.where(valid, y, 0)
    d_true = d.gather(1, yc[:, None])
    hinge = (margin + d - d_true).clamp_min(0.0)
    hinge = hinge.scatter(1, yc[:, None], 0.0).sum(1)  # c ≠ y_i only
    per = hinge + centre_spread_regulariser(centres).to(d.dtype)
    if class_weight is not None:
        cw = torch.as_tensor(class_weight, dtype=d.dtype, device=d.device)
        if cw.shape != (C,):
            raise ValueError(f"class_weight: expected {C} weights, got shape {tuple(cw.shape)}")
        per = per * cw[yc]
    per = torch.where(valid, per, torch.zeros_like(per))
    if reduction == "none":
        return per.reshape(labels.shape)
    if reduction == "sum":
        return per.sum()
    return per.sum() / valid.sum().clamp_min(1)


class ClusteringAffinity(torch.nn.Module):
    """Gaussian-affinity layer with m learnable centres per class (He-normal init, as the authors' layer)."""

    def __init__(self, num_classes: int, centres_per_class: int, features: int, sigma: float = 130.0):
        super().__init__()
        self.sigma = float(sigma)
        w = torch.empty(num_classes, centres_per_class, features)
        torch.nn.init.kaiming_normal_(w.view(-1, features))
        self.centres = torch.nn.Parameter(w)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return gaussian_affinity(features, self.centres, self.sigma)


class BalancedAffinityLoss(torch.nn.Module):
    """L_cba on the output of a :class:`ClusteringAffinity` layer; pass ``class_weight`` (e.g. from a
    :class:`ClassCounter`) or leave it None for the plain affinity loss."""

    def __init__(self, layer: ClusteringAffinity, margin: float = 0.1, class_weight=None,
                 ignore_index: Optional[int] = None):
        super().__init__()
        self.layer, self.margin, self.ignore_index = layer, margin, ignore_index
        self.class_weight = class_weight

    def forward(self, affinity: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return balanced_affinity_loss(affinity, labels, self.layer.centres, margin=self.margin,
                                      class_weight=self.class_weight, ignore_index=self.ignore_index)


__all__ = ["label_histogram", "class_balanced_weights", "ClassCounter", "gaussian_affinity",
           "centre_spread_regulariser", "balanced_affinity_loss", "ClusteringAffinity", "BalancedAffinityLoss"]
