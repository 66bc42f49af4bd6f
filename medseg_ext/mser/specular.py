"""Specular-highlight mask of the MMSER paper (seeds-part2.md §5.3, §5.5, §5.6): grey image (Eq. 1),
saturation (Eq. 5, ``paper_rgb`` literal or ``l1_sorted``), the intensity–saturation mask IS
(Eq. 6), the component-area filter IS_en (Eq. 7) and the union with MMSER (Eq. 8)."""
from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch

from . import tiled as _tiled
from .core import _to_numpy, component_tree, mser

__all__ = ["grey", "grey_u8", "saturation", "is_mask", "is_enhanced", "specular_mask"]


def _rgb(rgb) -> np.ndarray:
    a = _to_numpy(rgb, "rgb")
    if a.ndim < 3 or a.shape[-1] != 3:
        raise ValueError(f"rgb: expected (..., H, W, 3), got shape {tuple(a.shape)}")
    if a.dtype.kind not in "iuf":
        raise TypeError(f"rgb: expected a numeric array, got {a.dtype}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError("rgb: contains NaN or Inf")
    return a


def _finite(fn, x: np.ndarray) -> np.ndarray:
    """fn(x) for a formula whose intermediates (channel sums, 2r, 2g) may overflow float64 where the
    result does not: pixels with a channel above 2^1020 are computed on x / 16 and scaled back
    (powers of two: exact), so ordinary pixels keep their bit-exact values."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = fn(x)
        big = np.abs(x).max(-1) > 2.0 ** 1020
        if big.any():
            out[big] = fn(x[big] * 0.0625) * 16.0
    if not np.isfinite(out).all():
        raise ValueError("rgb: values too large, the result overflows float64")
    return out


def grey(rgb) -> np.ndarray:
    """Eq. 1: I = (r + g + b) / 3, float64, no rounding."""
    a = _rgb(rgb).astype(np.float64)
    return _finite(lambda x: x.sum(-1) / 3.0, a)


def grey_u8(rgb) -> np.ndarray:
    """Eq. 1 rounded to the nearest integer, for 8-bit input (sum/3 never ends in .5): (r+g+b+1)//3."""
    a = _rgb(rgb)
    if a.dtype != np.uint8:
        raise TypeError(f"rgb: grey_u8 expects uint8 input, got {a.dtype}")
    s = a.astype(np.int32).sum(-1)
    return ((s + 1) // 3).astype(np.uint8)


def saturation(rgb, kind: str = "l1_sorted") -> np.ndarray:
    """Eq. 5. ``paper_rgb``: (2r-g-b)/2 if b+r >= 2g else (r+g-2b)/2 (can be negative);
    ``l1_sorted``: (3/2)(max - m) if max+min >= 2·med else (3/2)(m - min), m the mean (>= 0)."""
    if kind not in ("paper_rgb", "l1_sorted"):
        raise ValueError(f"kind: expected 'paper_rgb' or 'l1_sorted', got {kind!r}")
    x = _rgb(rgb).astype(np.float64)

    def paper(x):
        r, g, b = x[..., 0], x[..., 1], x[..., 2]
        return np.where(b + r >= 2 * g, 0.5 * (2 * r - g - b), 0.5 * (r + g - 2 * b))

    def l1(x):
        s = np.sort(x, axis=-1)
        mn, md, mx = s[..., 0], s[..., 1], s[..., 2]
        m = x.sum(-1) / 3.0
        return np.where(mx + mn >= 2 * md, 1.5 * (mx - m), 1.5 * (m - mn))

    return _finite(paper if kind == "paper_rgb" else l1, x)


def _bound(value, name: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number or None, got {value!r}")
    if not math.isfinite(value):  # a NaN bound would silently select nothing
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


def is_mask(rgb, kind: str = "l1_sorted", i_max: Optional[float] = None, s_max: Optional[float] = None) -> np.ndarray:
    """Eq. 6: (I >= I_max / 2) and (S <= S_max / 3); I_max, S_max default to the image maxima."""
    i_max, s_max = _bound(i_max, "i_max"), _bound(s_max, "s_max")
    i = grey(rgb)
    s = saturation(rgb, kind)
    i_max = float(i.max()) if i_max is None else i_max
    s_max = float(s.max()) if s_max is None else s_max
    return (i >= i_max / 2.0) & (s <= s_max / 3.0)


def is_enhanced(mask, t_h: Union[int, float] = 20, connectivity: int = 8):
    """Eq. 7: keep the connected components of ``mask`` whose area is <= t_h pixels (a float t_h is
    a fraction of the pixel count). Components come from the compiled component tree.
    ``connectivity``: 4 or 8 in 2-D; in 3-D 6 or 26, or the 2-D names 4 (= 6) and 8 (= 26).
    A CUDA tensor stays on the GPU: its components are the roots of the tiled CUDA tree of the mask
    (returns a bool CUDA tensor); anything else returns a NumPy bool array."""
    if _tiled.on_cuda(mask):
        if mask.is_complex():
            raise TypeError(f"mask: expected a bool or numeric array, got dtype {mask.dtype}")
        m = mask.detach() != 0
    else:
        m = _to_numpy(mask, "mask")
        if m.dtype.kind not in "biuf":
            raise TypeError(f"mask: expected a bool or numeric array, got dtype {m.dtype}")
        m = m.astype(bool)
    if m.ndim not in (2, 3):
        raise ValueError(f"mask: expected a 2-D or 3-D mask, got shape {m.shape}")
    if isinstance(t_h, bool) or not isinstance(t_h, (int, float, np.integer, np.floating)):
        raise TypeError(f"t_h: expected an int (pixels) or a float (fraction of the pixel count), got {t_h!r}")
    if not t_h >= 0:  # also NaN
        raise ValueError(f"t_h: expected a non-negative area, got {t_h!r}")
    size = int(np.prod(m.shape))
    if isinstance(t_h, (float, np.floating)):
        t_h = int(math.floor(min(float(t_h) * size, size)))  # beyond the pixel count (or inf): keep all
    # 3-D used to map every value but 8 to 6 (26 itself became 6): map the 2-D names, check the rest
    allowed = (4, 8) if m.ndim == 2 else (4, 6, 8, 26)
    if isinstance(connectivity, bool) or connectivity not in allowed:
        raise ValueError(f"connectivity: expected one of {allowed} for a {m.ndim}-D mask, got {connectivity!r}")
    conn = int(connectivity) if m.ndim == 2 else {4: 6, 8: 26, 6: 6, 26: 26}[int(connectivity)]
    if isinstance(m, torch.Tensor):
        if not bool(m.any()):
            return m.clone()
        # one node per component (a constant image): a pixel's canonical pixel holds its component's area
        par, area = _tiled.tiled_parents(torch.zeros(m.shape, dtype=torch.uint8, device=m.device), polarity="dark",
                                         connectivity=conn, mask=m)
        p = par.reshape(-1).to(torch.int64)
        return ((p >= 0) & (area.reshape(-1)[p.clamp(min=0)] <= t_h)).reshape(m.shape)
    if not m.any():
        return m.copy()
    tree = component_tree(m.astype(np.uint8), polarity="dark", connectivity=conn, mask=m)
    node = tree.pixel_node.numpy().ravel()
    area = tree.area.numpy()
    keep_node = area <= t_h
    out = np.zeros(m.size, bool)
    inside = node >= 0
    out[inside] = keep_node[node[inside]]
    return out.reshape(m.shape)


def specular_mask(rgb, *, delta: int = 5, a_max: Union[int, float] = 0.01, t_h: Union[int, float] = 20,
                  kind: str = "l1_sorted", connectivity: int = 8, return_parts: bool = False):
    """Eq. 8: S_R = M_RS ∪ IS_en for one uint8 RGB frame (H, W, 3). MMSER on the Eq. 1 grey image
    (rounded), A < a_max (int: pixels; float: fraction of H·W)."""
    a = _rgb(rgb)
    if a.ndim != 3:
        raise ValueError(f"rgb: expected one (H, W, 3) frame, got shape {a.shape}")
    g = grey_u8(a)
    n = g.size
    if isinstance(a_max, bool) or not isinstance(a_max, (int, float, np.integer, np.floating)):
        raise TypeError(f"a_max: expected an int (pixels) or a float (fraction of H·W), got {a_max!r}")
    if not a_max >= 0:  # also NaN
        raise ValueError(f"a_max: expected >= 0, got {a_max!r}")
    if isinstance(a_max, (float, np.floating)):
        amax = int(math.floor(min(float(a_max) * n, n + 1)))  # beyond n + 1 (or inf): no cap
    else:
        amax = int(min(a_max, n + 1))
    res = mser(g, "mmser", delta=delta, max_area=max(amax - 1, 0), connectivity=connectivity)
    m_rs = res.union_mask()[0].numpy()
    isen = is_enhanced(is_mask(a, kind), t_h, connectivity)
    sr = m_rs | isen
    if return_parts:
        return sr, m_rs, isen
    return sr
