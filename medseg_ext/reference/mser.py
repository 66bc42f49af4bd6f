"""Plain NumPy/Python reference of the mser family (the oracle the tests compare against).

Spec: shared/reference/seeds-part2.md §5 (MSER/MMSER, Eqs. 1–8) and §11.2–11.3.

Everything here is brute force and meant for small images: the component tree is built by
labelling every threshold set {key <= t} separately (no union-find), and region pixel sets are
read off those labellings.

Conventions (shared with the compiled kernels, medseg_ext.mser):

* ``key = I`` for dark regions (components of {I <= t}) and ``key = maxval - I`` for bright
  regions (components of {I >= t}); the tree grows towards larger keys.
* A node is a connected component C of {key <= k} that contains a pixel of key exactly k.
  Nodes are numbered by (k, largest pixel index of C at key k); children therefore come before
  parents (this is also the compiled numbering).
* ``up(n)``: the component of {key <= min(k + delta, k_root)} containing n (= R_{+delta}).
  ``down(n)``: follow the largest child (ties: the lower node number) while the key is above
  k - delta; its area if its key is <= k - delta, else 0 (the region vanished).
* stability ``two_sided = A(up) - A(down)``, ``ancestor = A(up) - A``, ``descendant = A - A(down)``;
  ``normalize`` divides by A.
* rule ``local_min`` (paper Eq. 4, strict): min_area <= A <= max_area, S <= max_variation,
  S < S(parent), S < S(child) for every child. Rule ``vlfeat``: see :func:`select`.
"""
from __future__ import annotations

from collections import deque
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ["neighbour_offsets", "label", "component_tree", "stability", "select", "mser", "mmser", "grey",
           "saturation", "is_mask", "is_enhanced", "specular_mask", "extremal_ok"]


def neighbour_offsets(ndim: int, connectivity: int) -> List[tuple]:
    offs = []
    for d in np.ndindex(*([3] * ndim)):
        d = tuple(int(v) - 1 for v in d)
        nz = sum(v != 0 for v in d)
        if nz == 0:
            continue
        if connectivity in (4, 6) and nz != 1:
            continue
        offs.append(d)
    return offs


def label(binary: np.ndarray, connectivity: int) -> np.ndarray:
    """Connected components of a boolean array by breadth-first search; 0 = background."""
    binary = np.asarray(binary, dtype=bool)
    lab = np.zeros(binary.shape, dtype=np.int64)
    offs = neighbour_offsets(binary.ndim, connectivity)
    shape = binary.shape
    cur = 0
    for start in zip(*np.nonzero(binary)):
        if lab[start]:
            continue
        cur += 1
        lab[start] = cur
        q = deque([start])
        while q:
            p = q.popleft()
            for o in offs:
                nb = tuple(a + b for a, b in zip(p, o))
                if all(0 <= c < s for c, s in zip(nb, shape)) and binary[nb] and not lab[nb]:
                    lab[nb] = cur
                    q.append(nb)
    return lab


def component_tree(image: np.ndarray, connectivity: int, bright: bool, maxval: int,
                   mask: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """Brute-force component tree: dict with pixel_node, parent, level, key, area (compiled numbering)."""
    img = np.asarray(image).astype(np.int64)
    key = (maxval - img) if bright else img
    inside = np.ones(img.shape, bool) if mask is None else np.asarray(mask, bool)
    flat_idx = np.arange(img.size).reshape(img.shape)
    levels = np.unique(key[inside])
    labs = {int(k): label(inside & (key <= k), connectivity) for k in levels}
    nodes = []  # (k, canonical index, label at k)
    for k in levels:
        k = int(k)
        lab = labs[k]
        at_k = inside & (key == k)
        for lb in np.unique(lab[at_k]):
            comp_at_k = at_k & (lab == lb)
            nodes.append((k, int(flat_idx[comp_at_k].max()), int(lb)))
    nodes.sort()
    index = {(k, lb): i for i, (k, _, lb) in enumerate(nodes)}
    m = len(nodes)
    parent = np.full(m, -1, np.int64)
    area = np.zeros(m, np.int64)
    level = np.zeros(m, np.int64)
    keys = np.zeros(m, np.int64)
    pixel_node = np.full(img.size, -1, np.int64)
    for i, (k, canon, lb) in enumerate(nodes):
        comp = labs[k] == lb
        area[i] = comp.sum()
        keys[i] = k
        level[i] = (maxval - k) if bright else k
        own = comp & (key == k) & inside
        pixel_node[flat_idx[own]] = i
        p = np.unravel_index(canon, img.shape)
        for k2 in levels[levels > k]:
            k2 = int(k2)
            lb2 = labs[k2][p]
            comp2 = labs[k2] == lb2
            if np.any(comp2 & (key == k2)):
                parent[i] = index[(k2, int(lb2))]
                break
    return {"pixel_node": pixel_node, "parent": parent, "level": level, "key": keys, "area": area,
            "labels": labs, "keymap": key, "inside": inside}


def _largest_child(tree) -> np.ndarray:
    m = len(tree["parent"])
    big = np.full(m, -1, np.int64)
    for i in range(m):
        p = tree["parent"][i]
        if p >= 0 and (big[p] < 0 or tree["area"][i] > tree["area"][big[p]]):
            big[p] = i
    return big


def stability(tree, delta: int, side: str = "two_sided", normalize: bool = True) -> np.ndarray:
    """Per-node stability (module docstring); A(up) read from the brute-force labelling."""
    key = tree["keymap"]
    levels = sorted(tree["labels"])
    big = _largest_child(tree)
    m = len(tree["parent"])
    out = np.zeros(m, np.float64)
    pn = tree["pixel_node"]
    for i in range(m):
        k = int(tree["key"][i])
        a = float(tree["area"][i])
        # R_{+delta}: the component at the highest present level <= k + delta containing the node
        kk = max(l for l in levels if l <= k + delta)
        some_pixel = np.nonzero(pn == i)[0][0]
        p = np.unravel_index(some_pixel, key.shape)
        a_up = float((tree["labels"][kk] == tree["labels"][kk][p]).sum())
        d = i
        while tree["key"][d] > k - delta and big[d] >= 0:
            d = big[d]
        a_down = float(tree["area"][d]) if tree["key"][d] <= k - delta else 0.0
        s = {"two_sided": a_up - a_down, "ancestor": a_up - a, "descendant": a - a_down}[side]
        out[i] = s / a if normalize else s
    return out


def _pixels(tree, i) -> np.ndarray:
    """Pixel set (sorted flat indices) of node i: its component at its key."""
    k = int(tree["key"][i])
    lab = tree["labels"][k]
    some = np.nonzero(tree["pixel_node"] == i)[0][0]
    p = np.unravel_index(some, lab.shape)
    return np.sort(np.nonzero((lab == lab[p]).ravel())[0])


def select(tree, s: np.ndarray, *, min_area: int, max_area: int, max_variation: float, min_diversity: float = 0.0,
           rule: str = "local_min") -> List[int]:
    """Node ids of the selected regions.

    ``vlfeat`` (VLFeat 0.9.21 ``vl_mser_process``): variations in float32 (``s`` is rounded to
    float32 here); compared with the parent only when key(parent) == key + 1, the larger variation
    loses (ties: the child); a root always loses (VLFeat compares it with itself). Then, parents
    first: S >= max_variation, A > max_area, A < min_area drop the node; if min_diversity < 1
    (float32) a node is a duplicate, and dropped, when float32((A(a) - A) / A(a)) < min_diversity
    for a = its nearest ancestor still selected, or its root when none is.
    """
    par, area, key = tree["parent"], tree["area"], tree["key"]
    m = len(par)
    out = []
    if rule == "local_min":
        for i in range(m):
            kids = [c for c in range(m) if par[c] == i]
            if not (min_area <= area[i] <= max_area and s[i] <= max_variation):
                continue
            if par[i] >= 0 and not s[i] < s[par[i]]:
                continue
            if any(not s[i] < s[c] for c in kids):
                continue
            out.append(i)
        return out
    f32 = np.float32
    v = np.asarray(s, np.float32)
    stable = np.ones(m, bool)
    for i in range(m):
        p = par[i]
        if p < 0:
            stable[i] = False
        elif key[p] != key[i] + 1:
            continue
        elif v[i] < v[p]:
            stable[p] = False
        else:
            stable[i] = False
    with np.errstate(over="ignore"):
        max_var, min_div = f32(max_variation), f32(min_diversity)
    keep = np.zeros(m, bool)
    for i in sorted(range(m), key=lambda j: -key[j]):  # parents first
        if not stable[i] or v[i] >= max_var or area[i] > max_area or area[i] < min_area:
            continue
        if min_div < 1 and par[i] >= 0:
            a = par[i]
            while not keep[a] and par[a] >= 0:
                a = par[a]
            if f32(area[a] - area[i]) / f32(area[a]) < min_div:
                continue
        keep[i] = True
    return [i for i in range(m) if keep[i]]


def mser(image: np.ndarray, *, delta: int = 5, min_area: int = 60, max_area: int = 14400,
         max_variation: float = 0.25, min_diversity: float = 0.0, polarity: str = "both", connectivity: int = 4,
         side: str = "two_sided", normalize: bool = True, rule: str = "local_min", maxval: int = 255,
         mask: Optional[np.ndarray] = None) -> List[dict]:
    """Regions as dicts (polarity +1/-1, level, area, variation, pixels = sorted flat indices); dark first."""
    res = []
    pols = {"dark": [-1], "bright": [1], "both": [-1, 1]}[polarity]
    for pol in pols:
        t = component_tree(image, connectivity, pol > 0, maxval, mask)
        s = stability(t, delta, side, normalize)
        if rule == "vlfeat":  # VLFeat's float32 variation: float(numerator) / float(area)
            num = np.rint(s * t["area"]) if normalize else s
            s = (num.astype(np.float32) / (t["area"].astype(np.float32) if normalize else np.float32(1)))
            s = s.astype(np.float64)
        for i in select(t, s, min_area=min_area, max_area=max_area, max_variation=max_variation,
                        min_diversity=min_diversity, rule=rule):
            res.append({"polarity": pol, "level": int(t["level"][i]), "area": int(t["area"][i]),
                        "variation": float(s[i]), "pixels": _pixels(t, i)})
    return res


def mmser(image_u8: np.ndarray, delta: int, a_max: int, a_min: int = 1, connectivity: int = 8,
          side: str = "descendant", normalize: bool = False) -> np.ndarray:
    """§5.4.2 MMSER as a union mask: bright regions, local minima of S (strict), a_min <= A < a_max."""
    regs = mser(image_u8, delta=delta, min_area=a_min, max_area=a_max - 1, max_variation=np.inf,
                polarity="bright", connectivity=connectivity, side=side, normalize=normalize)
    out = np.zeros(np.asarray(image_u8).size, bool)
    for r in regs:
        out[r["pixels"]] = True
    return out.reshape(np.asarray(image_u8).shape)


def extremal_ok(image: np.ndarray, pixels: np.ndarray, bright: bool, connectivity: int) -> bool:
    """§11.2.1: the region is a connected component of {I >= min_R I} (bright) / {I <= max_R I} (dark)."""
    img = np.asarray(image).astype(np.int64)
    vals = img.ravel()[pixels]
    thr = img >= vals.min() if bright else img <= vals.max()
    lab = label(thr, connectivity).ravel()
    lb = lab[pixels[0]]
    return bool(lb > 0 and np.array_equal(np.sort(np.nonzero(lab == lb)[0]), np.sort(pixels)))


# ---- specular pipeline pieces (Eqs. 1, 5-8) ----

def grey(rgb: np.ndarray) -> np.ndarray:
    """Eq. 1: I = (r + g + b)/3 in float64 (no rounding)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return rgb.sum(-1) / 3.0


def saturation(rgb: np.ndarray, kind: str = "l1_sorted") -> np.ndarray:
    """Eq. 5. ``paper_rgb``: literal in r, g, b; ``l1_sorted``: with max/med/min (Hanbury & Serra)."""
    x = np.asarray(rgb, dtype=np.float64)
    if kind == "paper_rgb":
        r, g, b = x[..., 0], x[..., 1], x[..., 2]
        return np.where(b + r >= 2 * g, 0.5 * (2 * r - g - b), 0.5 * (r + g - 2 * b))
    s = np.sort(x, axis=-1)
    mn, md, mx = s[..., 0], s[..., 1], s[..., 2]
    m = x.sum(-1) / 3.0
    return np.where(mx + mn >= 2 * md, 1.5 * (mx - m), 1.5 * (m - mn))


def is_mask(rgb: np.ndarray, kind: str = "l1_sorted", i_max: Optional[float] = None,
            s_max: Optional[float] = None) -> np.ndarray:
    """Eq. 6: I >= I_max/2 and S <= S_max/3 (per-image maxima unless given)."""
    i = grey(rgb)
    s = saturation(rgb, kind)
    i_max = float(i.max()) if i_max is None else float(i_max)
    s_max = float(s.max()) if s_max is None else float(s_max)
    return (i >= i_max / 2.0) & (s <= s_max / 3.0)


def is_enhanced(mask: np.ndarray, t_h: int, connectivity: int = 8) -> np.ndarray:
    """Eq. 7: keep the connected components of the IS mask with area <= t_h."""
    lab = label(mask, connectivity)
    counts = np.bincount(lab.ravel())
    keep = counts <= t_h
    keep[0] = False
    return keep[lab]


def specular_mask(mmser_mask: np.ndarray, is_en: np.ndarray) -> np.ndarray:
    """Eq. 8: S_R = M_RS ∪ IS_en."""
    return np.asarray(mmser_mask, bool) | np.asarray(is_en, bool)
