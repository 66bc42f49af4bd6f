"""NumPy reference for the distance group (D) of the losses family: the oracle the tests compare against.

Brute force on purpose (O(foreground x background) per volume): readable and exact, for small arrays.

Conventions (the compiled ops follow them; medseg_ext.losses.distance documents them for users):

* ``edt(mask, spacing)``: ``scipy.ndimage.distance_transform_edt`` semantics. Every non-zero voxel gets
  its Euclidean distance (axis ``k`` scaled by ``spacing[k]``) to the nearest zero voxel; zero voxels
  get 0. The distance is taken inside one spatial volume (for (B, C, *spatial) inputs, per (b, c)).
  **All-foreground volume** (no zero voxel): every voxel is ``+inf`` (there is no background to be
  near; scipy returns distances to a phantom voxel outside the array there). **All-background**: 0.
* ``surface_edges(mask)``: foreground voxels with at least one face neighbour (2*ndim neighbours)
  that is background or outside the array: ``mask ^ binary_erosion(mask)`` with scipy's default
  cross element and border 0, as MONAI's ``get_mask_edges``.
* Surface distances, MONAI ``get_surface_distance``: the directed set pred -> gt holds, for every
  pred edge voxel, the distance to the nearest gt edge voxel. If gt has no edge voxel the set is
  ``|pred edges|`` copies of ``inf``; if pred has none (and gt has) it is ``|gt edges|`` copies of
  ``inf``; both empty gives an empty set.
* Hausdorff: max (or ``percentile`` with linear interpolation, as ``torch.quantile``) of each
  directed set, then the max of the two directions (one direction with ``directed=True``). An empty
  set gives NaN. So: both masks empty -> NaN; exactly one empty -> inf for the max, but NaN with a
  ``percentile`` (MONAI interpolates inside an all-inf set with torch.quantile: inf - inf = NaN).
* Average surface distance: mean of the directed set (``symmetric=False``) or of the concatenation
  of both directed sets (``symmetric=True``: ASSD); empty -> NaN, one mask empty -> inf.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ["edt", "edt_batch", "surface_edges", "directed_surface_distances", "hausdorff_distance",
           "average_surface_distance", "signed_distance", "hausdorff_dt_field", "hausdorff_dt_loss",
           "boundary_loss"]


def _spacing(spacing, ndim: int) -> np.ndarray:
    if spacing is None:
        return np.ones(ndim)
    sp = np.atleast_1d(np.asarray(spacing, dtype=np.float64))
    if sp.size == 1:
        sp = np.full(ndim, float(sp[0]))
    if sp.shape != (ndim,):
        raise ValueError(f"spacing: expected {ndim} values, got {sp.size}")
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError("spacing: expected finite positive values")
    return sp


def _coords(mask: np.ndarray, sp: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).astype(np.float64) * sp


def _min_dist(points: np.ndarray, sites: np.ndarray, chunk: int = 2048, metric: str = "euclidean") -> np.ndarray:
    """For each point the distance (euclidean, taxicab or chessboard) to the nearest site (inf if none)."""
    out = np.full(len(points), np.inf)
    if len(sites) == 0 or len(points) == 0:
        return out
    for s in range(0, len(points), chunk):
        diff = np.abs(points[s:s + chunk][:, None, :] - sites[None, :, :])
        if metric == "euclidean":
            out[s:s + chunk] = np.sqrt((diff ** 2).sum(-1).min(axis=1))
        elif metric == "taxicab":
            out[s:s + chunk] = diff.sum(-1).min(axis=1)
        elif metric == "chessboard":
            out[s:s + chunk] = diff.max(-1).min(axis=1)
        else:
            raise ValueError(f"distance_metric: unknown {metric!r}")
    return out


def edt(mask, spacing: Optional[Sequence[float]] = None) -> np.ndarray:
    """Exact EDT of one spatial volume (any rank >= 1), float64."""
    m = np.asarray(mask) != 0
    sp = _spacing(spacing, m.ndim)
    out = np.zeros(m.shape, dtype=np.float64)
    fg = _coords(m, sp)
    bg = _coords(~m, sp)
    out[m] = _min_dist(fg, bg)
    return out


def edt_batch(mask, spacing=None) -> np.ndarray:
    """EDT per (b, c) of a (B, C, *spatial) array."""
    m = np.asarray(mask)
    out = np.zeros(m.shape, dtype=np.float64)
    for b in range(m.shape[0]):
        for c in range(m.shape[1]):
            out[b, c] = edt(m[b, c], spacing)
    return out


def surface_edges(mask) -> np.ndarray:
    m = np.asarray(mask) != 0
    padded = np.pad(m, 1, constant_values=False)
    interior = np.ones(m.shape, dtype=bool)
    centre = tuple(slice(1, 1 + n) for n in m.shape)
    for ax in range(m.ndim):
        for shift in (-1, 1):
            sl = list(centre)
            sl[ax] = slice(1 + shift, 1 + shift + m.shape[ax])
            interior &= padded[tuple(sl)]
    return m & ~interior


def directed_surface_distances(pred, gt, spacing=None, distance_metric="euclidean") -> np.ndarray:
    """MONAI get_surface_distance(edges(pred), edges(gt)) for one volume (taxicab/chessboard: unit grid)."""
    ep, eg = surface_edges(pred), surface_edges(gt)
    sp = _spacing(spacing, ep.ndim)
    if not eg.any():
        return np.full(int(ep.sum()), np.inf)
    if not ep.any():
        return np.full(int(eg.sum()), np.inf)
    return _min_dist(_coords(ep, sp), _coords(eg, sp), metric=distance_metric)


def _stat(d: np.ndarray, percentile: Optional[float]) -> float:
    if d.size == 0:
        return float("nan")
    if percentile is None:
        return float(d.max())
    if np.isinf(d).any():  # one mask empty: MONAI's torch.quantile of an all-inf set is NaN
        return float("nan")
    return float(np.percentile(d, percentile))


def _per_bc(pred, gt, include_background, fn):
    p, g = np.asarray(pred) != 0, np.asarray(gt) != 0
    if p.shape != g.shape or p.ndim < 3:
        raise ValueError("pred/target: expected equal (B, C, *spatial) shapes")
    if not include_background:
        p, g = p[:, 1:], g[:, 1:]
    out = np.zeros(p.shape[:2])
    for b in range(p.shape[0]):
        for c in range(p.shape[1]):
            out[b, c] = fn(p[b, c], g[b, c])
    return out


def hausdorff_distance(pred, gt, percentile=None, spacing=None, include_background=False, directed=False,
                       distance_metric="euclidean"):
    """(B, C') Hausdorff (or percentile Hausdorff) distances, MONAI compute_hausdorff_distance."""
    def one(p, g):
        vals = [_stat(directed_surface_distances(p, g, spacing, distance_metric), percentile)]
        if not directed:
            vals.append(_stat(directed_surface_distances(g, p, spacing, distance_metric), percentile))
        return max(vals) if not any(np.isnan(vals)) else float("nan")
    return _per_bc(pred, gt, include_background, one)


def average_surface_distance(pred, gt, symmetric=False, spacing=None, include_background=False,
                             distance_metric="euclidean"):
    """(B, C') average surface distance, MONAI compute_average_surface_distance (symmetric: ASSD)."""
    def one(p, g):
        d = directed_surface_distances(p, g, spacing, distance_metric)
        if symmetric:
            d = np.concatenate([d, directed_surface_distances(g, p, spacing, distance_metric)])
        return float("nan") if d.size == 0 else float(d.mean())
    return _per_bc(pred, gt, include_background, one)


def signed_distance(mask, spacing=None, inside_offset: float = 1.0) -> np.ndarray:
    """Kervadec one_hot2dist for one volume: outside +dist to the mask, inside -(dist to background - offset).

    Empty or full volume: zeros (no boundary, nothing to pull towards).
    """
    m = np.asarray(mask) != 0
    if not m.any() or m.all():
        return np.zeros(m.shape)
    return edt(~m, spacing) * ~m - (edt(m, spacing) - inside_offset) * m


def hausdorff_dt_field(mask) -> np.ndarray:
    """MONAI HausdorffDTLoss.distance_field of one volume: EDT(fg) + EDT(bg) at threshold 0.5, 0 if uniform."""
    fg = np.asarray(mask) > 0.5
    if not fg.any() or fg.all():
        return np.zeros(fg.shape)
    return edt(fg) + edt(~fg)


def _softmax(x, axis=1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _activate(x, sigmoid, softmax):
    x = np.asarray(x, dtype=np.float64)
    if sigmoid:
        return 1 / (1 + np.exp(-x))
    if softmax and x.shape[1] > 1:
        return _softmax(x)
    return x


def hausdorff_dt_loss(input, target, alpha=2.0, include_background=False, sigmoid=False, softmax=False,
                      batch=False, reduction="mean"):
    """MONAI HausdorffDTLoss forward (target already one-hot, same shape as input)."""
    p = _activate(input, sigmoid, softmax)
    t = np.asarray(target, dtype=np.float64)
    if not include_background and p.shape[1] > 1:
        p, t = p[:, 1:], t[:, 1:]
    B, C = p.shape[:2]
    f = np.zeros((B, C))
    for c in range(C):
        terms = np.zeros(p[:, c].shape)
        for b in range(B):
            dist = hausdorff_dt_field(p[b, c]) ** alpha + hausdorff_dt_field(t[b, c]) ** alpha
            terms[b] = (p[b, c] - t[b, c]) ** 2 * dist
        if batch:
            f[:, c] = terms.mean()
        else:
            f[:, c] = terms.reshape(B, -1).mean(axis=1)
    if batch:
        f = f[:1]
    return _reduce(f, reduction)


def _reduce(f, reduction):
    if reduction == "mean":
        return float(f.mean())
    if reduction == "sum":
        return float(f.sum())
    return f


def boundary_loss(input, target, spacing=None, include_background=False, sigmoid=False, softmax=True,
                  reduction="mean"):
    """Kervadec boundary (surface) loss: mean of probs x signed distance map of the one-hot target."""
    p = _activate(input, sigmoid, softmax)
    t = np.asarray(target)
    if not include_background and p.shape[1] > 1:
        p, t = p[:, 1:], t[:, 1:]
    B, C = p.shape[:2]
    f = np.zeros((B, C))
    for b in range(B):
        for c in range(C):
            f[b, c] = (p[b, c] * signed_distance(t[b, c], spacing)).mean()
    return _reduce(f, reduction)
