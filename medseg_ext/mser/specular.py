"""Specular-highlight mask of the MMSER paper (seeds-part2.md §5.3, §5.5, §5.6): grey image (Eq. 1),
saturation (Eq. 5, ``paper_rgb`` literal or ``l1_sorted``), the intensity–saturation mask IS
(Eq. 6), the component-area filter IS_en (Eq. 7) and the union with MMSER (Eq. 8)."""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

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


def grey(rgb) -> np.ndarray:
    """Eq. 1: I = (r + g + b) / 3, float64, no rounding."""
    a = _rgb(rgb).astype(np.float64)
    return a.sum(-1) / 3.0


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
    x = _rgb(rgb).astype(np.float64)
    if kind == "paper_rgb":
        r, g, b = x[..., 0], x[..., 1], x[..., 2]
        return np.where(b + r >= 2 * g, 0.5 * (2 * r - g - b), 0.5 * (r + g - 2 * b))
    if kind != "l1_sorted":
        raise ValueError(f"kind: expected 'paper_rgb' or 'l1_sorted', got {kind!r}")
    s = np.sort(x, axis=-1)
    mn, md, mx = s[..., 0], s[..., 1], s[..., 2]
    m = x.sum(-1) / 3.0
    return np.where(mx + mn >= 2 * md, 1.5 * (mx - m), 1.5 * (m - mn))


def is_mask(rgb, kind: str = "l1_sorted", i_max: Optional[float] = None, s_max: Optional[float] = None) -> np.ndarray:
    """Eq. 6: (I >= I_max / 2) and (S <= S_max / 3); I_max, S_max default to the image maxima."""
    i = grey(rgb)
    s = saturation(rgb, kind)
    i_max = float(i.max()) if i_max is None else float(i_max)
    s_max = float(s.max()) if s_max is None else float(s_max)
    return (i >= i_max / 2.0) & (s <= s_max / 3.0)


def is_enhanced(mask, t_h: Union[int, float] = 20, connectivity: int = 8) -> np.ndarray:
    """Eq. 7: keep the connected components of ``mask`` whose area is <= t_h pixels (a float t_h is
    a fraction of the pixel count). Components come from the compiled component tree."""
    m = np.asarray(_to_numpy(mask, "mask")).astype(bool)
    if m.ndim not in (2, 3):
        raise ValueError(f"mask: expected a 2-D or 3-D mask, got shape {m.shape}")
    if isinstance(t_h, float):
        t_h = int(np.floor(t_h * m.size))
    if isinstance(t_h, bool) or t_h < 0:
        raise ValueError(f"t_h: expected a non-negative area, got {t_h!r}")
    if not m.any():
        return m.copy()
    conn = connectivity if m.ndim == 2 else (26 if connectivity == 8 else 6)
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
    amax = int(np.floor(a_max * n)) if isinstance(a_max, float) else int(a_max)
    res = mser(g, "mmser", delta=delta, max_area=max(amax - 1, 0), connectivity=connectivity)
    m_rs = res.union_mask()[0].numpy()
    isen = is_enhanced(is_mask(a, kind), t_h, connectivity)
    sr = m_rs | isen
    if return_parts:
        return sr, m_rs, isen
    return sr
