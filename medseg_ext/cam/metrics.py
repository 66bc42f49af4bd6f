"""CAM quality metrics (seeds §8.6, Eqs. 12–17): Average Drop, Average Increase, (Maximum)
Coherency, Complexity and ADCC, per image and over a data set, with the extra forwards batched.

Conventions (documented decisions):
* the explanation map is E = x ⊙ CAM_c(x), CAM resized to the input and min-max normalised to [0, 1];
* y_c and y_c^CAM are the target's scores (use a target with ``activation="softmax"``/``"sigmoid"``:
  Average Drop needs positive scores; rows with y_c ≤ 0, e.g. an empty segmentation mask, give NaN
  drops and NaN per-image ADCC and are left out of the means);
* Average Drop = 100 · mean_i max(0, y_i − y^E_i) / y_i over all images (``drop_denominator="all"``)
  or over the images without an increase (``"no_increase"``, the authors' notebook);
* Coherency = (1 + Pearson(CAM_c(E), CAM_c(x))) / 2 with the class fixed to that of x; if either
  map is constant, Pearson is 1 when the maps are equal and 0 otherwise;
* Complexity = mean of the normalised CAM over the pixels (Σ|CAM| / (H·W)), in [0, 1];
* ADCC = 3 / (1/coherency + 1/(1 − complexity) + 1/(1 − drop)) on fractions, 0 when any term is 0,
  NaN when any term is NaN;
  the data-set value (the paper's Table 2) is computed from the averaged columns, and the mean of
  per-image ADCC is reported as well.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Sequence

import torch

from .methods import compute_cam


def adcc(drop: torch.Tensor, coherency: torch.Tensor, complexity: torch.Tensor) -> torch.Tensor:
    """Harmonic mean of coherency, 1 − complexity and 1 − drop (all fractions in [0, 1]); 0 if any is 0."""
    drop, coherency, complexity = (torch.as_tensor(v, dtype=torch.float64) for v in (drop, coherency, complexity))
    a, b, c = coherency, 1.0 - complexity, 1.0 - drop
    ok = (a > 0) & (b > 0) & (c > 0)
    one = torch.ones_like(a)
    val = 3.0 / (1.0 / torch.where(ok, a, one) + 1.0 / torch.where(ok, b, one) + 1.0 / torch.where(ok, c, one))
    # an undefined term (NaN, e.g. the drop of a zero score) is not "0": it gave ADCC 0; now NaN
    undefined = torch.isnan(a) | torch.isnan(b) | torch.isnan(c)
    return torch.where(ok, val, torch.where(undefined, torch.full_like(val, float("nan")), torch.zeros_like(val)))


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation of (B, ...) maps (computed in float64); constant rows: 1 if equal else 0;
    a row holding NaN or ±inf gives NaN."""
    for name, t in (("a", a), ("b", b)):
        if not torch.is_tensor(t) or t.dim() < 2:
            raise ValueError(f"{name} must be a (B, ...) tensor of maps")
    if a.shape != b.shape:
        raise ValueError(f"maps of different shapes: {tuple(a.shape)} and {tuple(b.shape)}")
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    ac = a - a.mean(1, keepdim=True)
    bc = b - b.mean(1, keepdim=True)
    den = ac.norm(dim=1) * bc.norm(dim=1)
    r = (ac * bc).sum(1) / torch.where(den > 0, den, torch.ones_like(den))
    same = (a == b).all(1).double()
    # den NaN (a NaN or inf in a row) fell into the "constant rows" branch and gave 0: keep it NaN
    return torch.where((den > 0) | torch.isnan(den), r.clamp(-1, 1), same)


def coherency(cam_x: torch.Tensor, cam_e: torch.Tensor) -> torch.Tensor:
    if torch.is_tensor(cam_x) and torch.is_tensor(cam_e) and cam_x.shape != cam_e.shape:
        raise ValueError(f"cam_e shape {tuple(cam_e.shape)} != cam_x shape {tuple(cam_x.shape)}")
    return 0.5 * (1.0 + pearson(cam_e, cam_x))


def complexity(cam_x: torch.Tensor) -> torch.Tensor:
    return cam_x.flatten(1).double().abs().mean(1)


def per_image_metrics(model, x: torch.Tensor, layer, method: str = "gradcam", target: Any = None, *,
                      batch_size: int = 32, **cam_kwargs) -> Dict[str, torch.Tensor]:
    """Per-image drop (fraction), increase (0/1), coherency, complexity, adcc for one batch.

    Extra forwards: model(E) for the scores, and the CAM of E (same method, same resolved target).
    """
    res = compute_cam(model, x, layer, method, target, size="input", normalize=True, relu=True,
                      batch_size=batch_size, **cam_kwargs)
    cam_x = res.maps
    E = x * cam_x[:, None].to(x.dtype)
    res_e = compute_cam(model, E, layer, method, res.target, size="input", normalize=True, relu=True,
                        batch_size=batch_size, **cam_kwargs)
    y = res.scores.double()
    ye = res_e.scores.double()
    drop = torch.where(y > 0, torch.relu(y - ye) / torch.where(y > 0, y, torch.ones_like(y)),
                       torch.full_like(y, float("nan")))
    inc = (y < ye).double()
    coh = coherency(cam_x, res_e.maps)
    cpx = complexity(cam_x)
    # adcc is NaN where the drop is (y ≤ 0): such rows are left out of the means, as for the drop
    return {"drop": drop, "increase": inc, "coherency": coh, "complexity": cpx,
            "adcc": adcc(drop, coh, cpx), "score": y, "score_cam": ye}


def summarize(per_image: Dict[str, torch.Tensor], drop_denominator: str = "all") -> Dict[str, float]:
    """Data-set table row in percent: AverageDrop, AverageIncrease, Coherency, Complexity, ADCC
    (from the averages, as the paper's Table 2), ADCC_per_image (mean of per-image ADCC), N."""
    if drop_denominator not in ("all", "no_increase"):
        raise ValueError(f"drop_denominator must be 'all' or 'no_increase', got {drop_denominator!r}")
    d = per_image["drop"]
    valid = ~torch.isnan(d)
    if drop_denominator == "all":
        avg_drop = d[valid].mean() if valid.any() else torch.tensor(float("nan"))
    else:
        sel = valid & (per_image["increase"] == 0)
        # no valid drop at all: NaN as for "all" (was 0 / 1 = 0)
        avg_drop = d[valid].sum() / sel.sum().clamp_min(1) if valid.any() else torch.tensor(float("nan"))
    inc = per_image["increase"].mean()
    coh = per_image["coherency"].mean()
    cpx = per_image["complexity"].mean()
    return {"AverageDrop": 100 * float(avg_drop), "AverageIncrease": 100 * float(inc), "Coherency": 100 * float(coh),
            "Complexity": 100 * float(cpx), "ADCC": 100 * float(adcc(avg_drop, coh, cpx)),
            "ADCC_per_image": 100 * float(per_image["adcc"].nanmean()), "N": int(d.numel())}


def evaluate(model, batches: Iterable, layer, method: str = "gradcam", target: Any = None, *,
             batch_size: int = 32, drop_denominator: str = "all", progress=None, **cam_kwargs) -> Dict[str, float]:
    """Metrics over a data set: ``batches`` yields x tensors or (x, ...) tuples. ``progress``: an
    optional callable(i_batch) for progress output. Returns :func:`summarize`'s dict."""
    parts: Dict[str, list] = {}
    for i, b in enumerate(batches):
        x = b[0] if isinstance(b, (tuple, list)) else b
        m = per_image_metrics(model, x, layer, method, target, batch_size=batch_size, **cam_kwargs)
        for k, v in m.items():
            parts.setdefault(k, []).append(v.detach())
        if progress is not None:
            progress(i)
    if not parts:
        raise ValueError("batches: empty data set")
    return summarize({k: torch.cat(v) for k, v in parts.items()}, drop_denominator)
