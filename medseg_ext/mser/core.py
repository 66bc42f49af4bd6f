"""MSER / MMSER / component trees on 2-D images and 3-D volumes, 8- and 16-bit, batched.

Spec: shared/reference/seeds-part2.md §5.4 (paper text, OpenCV 4.x and VLFeat definitions,
the implementable MMSER of §5.4.2). The NumPy oracle is medseg_ext/reference/mser.py; its
docstring states the conventions (keys, nodes, up/down, stability sides, selection rules).

The compiled kernels run one image (and one polarity) per thread. ``algorithm="tiled"`` builds the
component tree by tiles merged along their borders (tiled.py; multi-core for one image); on CUDA
tensors :func:`component_tree` then runs the CUDA driver of the same code (tested on the CPU emulator,
not yet run on a GPU) and keeps everything on the device; so does :func:`mser` with every preset but
``"opencv"``. Otherwise CUDA tensors are copied to the host (and :func:`mser` moves its regions back).
Regions and their geometry (segmented reductions in torch ops): result.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from .._dispatch import extension
from . import tiled as _tiled
from .result import MSERResult

__all__ = ["component_tree", "mser", "ComponentTree", "MSERResult", "PRESETS"]

PRESETS: Dict[str, Dict[str, Any]] = {
    # cv2.MSER_create defaults; regions identical to detectRegions (8-bit 2-D). minDiversity is not
    # used by OpenCV 4.x's grey path and is ignored here too.
    "opencv": dict(delta=5, min_area=60, max_area=14400, max_variation=0.25, min_diversity=0.2, polarity="both",
                   connectivity=4, variation="two_sided", normalize=True, exclude_border=True, rule="opencv"),
    # vl_mser defaults; areas given as floats are fractions of the pixel count rounded as VLFeat does
    # (float32, see _vlfeat_area); min_area None = VLFeat's default 3.0 / npixels
    "vlfeat": dict(delta=5, min_area=None, max_area=0.75, max_variation=0.25, min_diversity=0.2, polarity="both",
                   connectivity=None, variation="ancestor", normalize=True, exclude_border=False, rule="vlfeat"),
    # the paper's modified MSER (§5.4.2): bright, unnormalised descendant-side area difference,
    # strict local minimum, area cap A_max (inclusive here: max_area = A_max - 1 for A < A_max)
    "mmser": dict(delta=5, min_area=1, max_area=0.01, max_variation=math.inf, min_diversity=0.0, polarity="bright",
                  connectivity=None, variation="descendant", normalize=False, exclude_border=False, rule="local_min"),
    # no preset: the standard (Matas) two-sided normalised variation with the strict local-minimum rule
    "custom": dict(delta=5, min_area=60, max_area=14400, max_variation=0.25, min_diversity=0.0, polarity="both",
                   connectivity=None, variation="two_sided", normalize=True, exclude_border=False, rule="local_min"),
}

_SIDES = ("two_sided", "ancestor", "descendant")


def _to_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.device.type != "cpu":
            x = x.cpu()
        if x.dtype == getattr(torch, "uint16", None):
            return x.view(torch.int16).numpy().view(np.uint16)
        return x.numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")


# the trees number nodes and pixels in int32 (csrc/mser/*: at most 2^31 - 2 pixels per image)
MAX_PIXELS = 2**31 - 2


def _prepare_image(image, batch: bool) -> Tuple[np.ndarray, Tuple[int, ...], int]:
    a = _to_numpy(image, "image")
    # before any copy or min/max pass: a broadcast view can be huge without owning memory
    if a.ndim >= 2 and math.prod(a.shape[1 if batch else 0:]) > MAX_PIXELS:
        raise ValueError(f"image: at most 2^31 - 2 pixels per image, got shape {tuple(a.shape)}")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    if a.dtype.kind == "f" or a.dtype.kind == "c":
        raise TypeError("image: expected an integer image (uint8/uint16 or integers in [0, 65535]); quantise "
                        f"floating-point data first, got {a.dtype}")
    if a.dtype.kind not in "iu":
        raise TypeError(f"image: unsupported dtype {a.dtype}")
    if not batch:
        a = a[None]
    if a.ndim not in (3, 4):
        raise ValueError(f"image: expected {'(B, H, W) or (B, D, H, W)' if batch else '(H, W) or (D, H, W)'}, "
                         f"got shape {tuple(a.shape) if batch else tuple(a.shape[1:])}")
    if a.size == 0 or a.shape[0] == 0:
        raise ValueError(f"image: empty array of shape {a.shape}")
    if a.dtype == np.uint8:
        maxval = 255
    elif a.dtype == np.uint16:
        maxval = 65535
    else:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise ValueError(f"image: integer values must lie in [0, 65535] (got [{lo}, {hi}]); rescale first")
        a = a.astype(np.uint8 if hi <= 255 else np.uint16)  # the smallest type that holds the values
        maxval = 255 if a.dtype == np.uint8 else 65535
    spatial = tuple(int(s) for s in a.shape[1:])
    return np.ascontiguousarray(a.reshape(a.shape[0], -1)), spatial, maxval


def _prepare_mask(mask, B: int, spatial: Tuple[int, ...], batch: bool) -> Optional[np.ndarray]:
    if mask is None:
        return None
    m = _to_numpy(mask, "mask")
    # nonzero = inside; strings, objects and complex values have no such reading, NaN is ambiguous
    if m.dtype.kind not in "biuf":
        raise TypeError(f"mask: expected a bool or numeric array, got dtype {m.dtype}")
    if m.dtype.kind == "f" and np.isnan(m).any():
        raise ValueError("mask: contains NaN")
    if not batch or m.shape == spatial:
        if m.shape != spatial:
            raise ValueError(f"mask: expected shape {spatial}, got {tuple(m.shape)}")
        m = np.broadcast_to(m, (B,) + spatial)
    elif m.shape != (B,) + spatial:
        raise ValueError(f"mask: expected shape {spatial} or {(B,) + spatial}, got {tuple(m.shape)}")
    return np.ascontiguousarray(m.reshape(B, -1) != 0).view(np.uint8)


def _border_mask(spatial: Tuple[int, ...]) -> np.ndarray:
    m = np.zeros(spatial, np.uint8)
    inner = tuple(slice(1, s - 1) for s in spatial)
    m[inner] = 1
    return m


def _area(value, n: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected an int (pixels) or a float (fraction of the pixel count)")
    if isinstance(value, (float, np.floating)):
        if math.isinf(value) and value > 0:  # min_area = inf keeps nothing (it used to mean n pixels)
            return n if name == "max_area" else n + 1
        if not (value >= 0):
            raise ValueError(f"{name}: expected >= 0, got {value}")
        return int(math.floor(value * n + 1e-9)) if name == "max_area" else int(math.ceil(value * n - 1e-9))
    if value < 0:
        raise ValueError(f"{name}: expected >= 0, got {value}")
    return int(value)


def _vlfeat_area(value, n: int, name: str) -> int:
    """Pixel bound equivalent to VLFeat's test of a fractional area (vl_mser_process computes
    ``(float) fraction * nel`` in float32 and compares ``(float) area`` with it): max_area keeps
    the areas with float32(area) <= bound, min_area those with float32(area) >= bound. Ints are
    pixel counts (exact)."""
    if isinstance(value, bool) or not isinstance(value, (float, np.floating)):
        return _area(value, n, name)
    if not (value >= 0):
        raise ValueError(f"{name}: expected >= 0, got {value}")
    f32 = np.float32
    with np.errstate(over="ignore"):
        bound = f32(f32(value) * f32(n))
    if math.isinf(bound):
        return n if name == "max_area" else n + 1
    if name == "max_area":  # the largest a with f32(a) <= bound (rounding is monotone: a prefix)
        a = int(math.floor(bound))
        while f32(a + 1) <= bound:
            a += 1
        while a > 0 and f32(a) > bound:
            a -= 1
        return a
    a = int(math.ceil(bound))  # min_area: the smallest a with f32(a) >= bound
    while a > 0 and f32(a - 1) >= bound:
        a -= 1
    return a


@dataclass
class ComponentTree:
    """Component tree of one image: per pixel its node (-1 outside the mask); per node its parent
    (-1 for roots), grey level, area and MSER stability (for the delta/variation asked)."""
    pixel_node: torch.Tensor
    parent: torch.Tensor
    level: torch.Tensor
    area: torch.Tensor
    stability: torch.Tensor
    shape: Tuple[int, ...]
    polarity: str

    def __len__(self) -> int:
        return int(self.parent.numel())


def component_tree(image, *, polarity: str = "bright", connectivity: Optional[int] = None, mask=None,
                   delta: int = 5, variation: str = "two_sided", normalize: bool = True,
                   algorithm: str = "flood", tile=None, num_threads: Optional[int] = None) -> ComponentTree:
    """Max-tree (``polarity="bright"``: components of {I >= t}) or min-tree (``"dark"``: {I <= t}) of
    one 2-D image or 3-D volume (uint8/uint16 or integers in [0, 65535]). ``algorithm="flood"``
    (hierarchical-queue flood, the default, also used by :func:`mser`) or ``"union_find"`` (union-find
    over counting-sorted pixels): identical arrays. Nodes are numbered children-first (see
    medseg_ext.reference.mser).

    ``algorithm="tiled"``: the same arrays by tiles of ``tile`` pixels per axis (an int or one per
    axis; default 256 x 256 in 2-D, 32³ in 3-D on the CPU) built in parallel on ``num_threads``
    threads and merged along their borders. A CUDA tensor with ``"tiled"`` runs the CUDA driver (a
    tile plus a 1-pixel border of at most 3400 pixels; default 32 x 32 / 8 x 16 x 16); node form and
    stability are computed by torch ops on the device (``tiled.node_stability``), and the tensors are
    returned there. The CUDA kernels are tested on the CPU emulator (python_tests/cuda_emu) but have
    not yet run on a GPU. Other algorithms copy a CUDA image to the host and return the tree on its device."""
    if polarity not in ("bright", "dark"):
        raise ValueError(f"polarity: expected 'bright' or 'dark', got {polarity!r}")
    if algorithm not in ("flood", "union_find", "tiled"):
        raise ValueError(f"algorithm: expected 'flood', 'union_find' or 'tiled', got {algorithm!r}")
    if algorithm != "tiled" and tile is not None:
        raise ValueError("tile: only used with algorithm='tiled'")
    threads = _tiled.check_threads(num_threads)
    if algorithm == "tiled" and _tiled.on_cuda(image):
        return _tiled.component_tree_cuda(image, polarity=polarity, connectivity=connectivity, mask=mask, delta=delta,
                                          variation=variation, normalize=normalize, tile=tile)
    flat, spatial, maxval = _prepare_image(image, batch=False)
    conn = _connectivity(connectivity, len(spatial), default_full=False)
    _check_delta(delta)
    if variation not in _SIDES:
        raise ValueError(f"variation: expected one of {_SIDES}, got {variation!r}")
    m = _prepare_mask(mask, 1, spatial, False)
    C = extension()
    kd = _kernel_delta(delta, maxval)
    if algorithm == "tiled":
        pn, par, lev, area, stab = C.mser_tree_tiled_cpu(
            flat[0], None if m is None else m[0], list(spatial), conn, polarity == "bright", maxval, kd,
            variation, bool(normalize), list(_tiled.tile_sizes(tile, len(spatial), cuda=False)), threads)
    else:
        pn, par, lev, area, stab = C.mser_tree_cpu(flat[0], None if m is None else m[0], list(spatial), conn,
                                                   polarity == "bright", maxval, kd, variation,
                                                   bool(normalize), algorithm)
    t = torch.from_numpy
    arrays = [_to_image_device(x, image) for x in (t(pn).reshape(spatial), t(par), t(lev), t(area), t(stab))]
    return ComponentTree(*arrays, spatial, polarity)


def _to_image_device(x, image):
    """A host result (tensor or MSERResult) moved to the device of ``image`` when that is not the CPU
    (a CUDA image whose work ran on the host gets its result back on its device)."""
    return x.to(image.device) if isinstance(image, torch.Tensor) and image.device.type != "cpu" else x


def _connectivity(connectivity, ndim: int, default_full: bool) -> int:
    if connectivity is None:
        return (8 if default_full else 4) if ndim == 2 else (26 if default_full else 6)
    allowed = (4, 8) if ndim == 2 else (6, 26)
    if isinstance(connectivity, bool) or connectivity not in allowed:
        raise ValueError(f"connectivity: expected one of {allowed} for {ndim}-D images, got {connectivity!r}")
    return int(connectivity)


def _check_delta(delta) -> None:
    if isinstance(delta, bool) or not isinstance(delta, (int, np.integer)) or delta < 0:
        raise ValueError(f"delta: expected an int >= 0, got {delta!r}")


def _kernel_delta(delta, maxval: int) -> int:
    # grey levels lie in [0, maxval], so any delta > maxval selects exactly what maxval + 1 does; the
    # kernels take a C int and the OpenCV flood forms level + delta, which would overflow
    return int(min(int(delta), maxval + 1))


def mser(image, preset: Optional[str] = "opencv", *, delta: Optional[int] = None, min_area=None, max_area=None,
         max_variation: Optional[float] = None, min_diversity: Optional[float] = None,
         polarity: Optional[str] = None, connectivity: Optional[int] = None, variation: Optional[str] = None,
         normalize: Optional[bool] = None, exclude_border: Optional[bool] = None, mask=None,
         batch: bool = False, num_threads: Optional[int] = None, algorithm: str = "flood",
         tile=None) -> MSERResult:
    """Maximally stable extremal regions of one image/volume, or of B of them (``batch=True``).

    ``preset``: ``"opencv"`` (identical regions to ``cv2.MSER_create(delta, min_area, max_area,
    max_variation).detectRegions`` on 8-bit 2-D images; ``polarity="bright"`` = ``setPass2Only(True)``),
    ``"vlfeat"`` (identical regions to VLFeat 0.9.21's ``vl_mser_process`` on 8-bit images of any
    size, 2-D and 3-D, full connectivity: dark = the pass on the image, bright = the pass on
    ``255 - image``; float areas are fractions rounded in float32 as VLFeat does, the default
    min_area is VLFeat's 3/npixels; variations are VLFeat's float32 values), ``"mmser"`` (the
    specular paper), or ``None``/``"custom"`` (standard definition).
    Any keyword overrides the preset value. Areas: ints are pixel counts, floats fractions of the
    pixel count. ``mask`` (bool, image shape) restricts the flooding itself: pixels outside it are
    not part of any component. ``exclude_border`` drops the outer 1-pixel ring the same way.
    Work is split over images and polarities (``num_threads``: None = the OpenMP default).
    ``algorithm="tiled"`` builds the trees with the tiled builder (``tile`` as in
    :func:`component_tree`; identical regions), which also uses the threads inside one tree when
    there is a single image and polarity. The ``"opencv"`` preset runs OpenCV's own flood instead.
    The result's tensors live on the image's device. A CUDA image is processed on the GPU end to end
    (tiled CUDA trees, then torch ops: ``tiled.select_local_min`` / ``tiled.select_vlfeat``) with every
    preset but ``"opencv"``, which runs OpenCV's sequential flood on the host and moves the regions
    back. The region geometry (``bboxes``, ``ellipses``, ...) is computed where the result lives.
    """
    if algorithm not in ("flood", "tiled"):
        raise ValueError(f"algorithm: expected 'flood' or 'tiled', got {algorithm!r}")
    if algorithm != "tiled" and tile is not None:
        raise ValueError("tile: only used with algorithm='tiled'")
    name = "custom" if preset is None else preset
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"preset: expected one of {tuple(PRESETS)} or None, got {preset!r}")
    cfg = dict(PRESETS[name])
    given = dict(delta=delta, min_area=min_area, max_area=max_area, max_variation=max_variation,
                 min_diversity=min_diversity, polarity=polarity, connectivity=connectivity, variation=variation,
                 normalize=normalize, exclude_border=exclude_border)
    for k, v in given.items():
        if v is not None:
            cfg[k] = v
    # both bounds given in the same unit (pixels or fractions) and crossed: nothing could ever be
    # selected, so it is a mistake (OpenCV/VLFeat return nothing); a preset bound or mixed units
    # (e.g. the mmser cap on a tiny image) may still give an empty range quietly
    num = (int, float, np.integer, np.floating)
    unit = [None if isinstance(v, bool) or not isinstance(v, num) else isinstance(v, (float, np.floating))
            for v in (min_area, max_area)]
    if unit[0] is not None and unit[0] == unit[1] and min_area > max_area:
        raise ValueError(f"min_area: {min_area!r} is larger than max_area {max_area!r}")
    # CUDA tensors stay on the GPU (tiled.mser_cuda) except with the opencv rule (OpenCV's own flood)
    on_device = cfg["rule"] in ("local_min", "vlfeat") and _tiled.on_cuda(image)
    if on_device:
        flat, spatial, maxval, is16 = _tiled._prepare_cuda(image, batch)
    else:
        flat, spatial, maxval = _prepare_image(image, batch)
    B, N = flat.shape
    nd = len(spatial)
    _check_delta(cfg["delta"])
    if cfg["polarity"] not in ("bright", "dark", "both"):
        raise ValueError(f"polarity: expected 'bright', 'dark' or 'both', got {cfg['polarity']!r}")
    if cfg["variation"] not in _SIDES:
        raise ValueError(f"variation: expected one of {_SIDES}, got {cfg['variation']!r}")
    mv = cfg["max_variation"]
    if isinstance(mv, bool) or not isinstance(mv, (int, float, np.integer, np.floating)) or math.isnan(mv):
        raise ValueError(f"max_variation: expected a number, got {mv!r}")
    if mv < 0:  # variations are >= 0, so nothing could pass (and -inf must not map to +inf below)
        raise ValueError(f"max_variation: expected >= 0, got {mv!r}")
    md = cfg["min_diversity"]
    if isinstance(md, bool) or not isinstance(md, (int, float, np.integer, np.floating)) or not (0 <= md <= 1):
        raise ValueError(f"min_diversity: expected a number in [0, 1], got {md!r}")
    rule = cfg["rule"]
    if rule == "vlfeat":
        amin = _vlfeat_area(3.0 / N if cfg["min_area"] is None else cfg["min_area"], N, "min_area")
        amax = _vlfeat_area(cfg["max_area"], N, "max_area")
    else:
        amin = _area(cfg["min_area"], N, "min_area")
        amax = _area(cfg["max_area"], N, "max_area")
    # areas lie in [1, N]: clamping keeps the selection and the values within the kernels' int64
    amin, amax = min(amin, N + 1), min(amax, N)
    mvf = float(mv) if math.isfinite(float(mv)) else 1e300  # +inf as a finite bound the kernels take
    if rule == "opencv":
        conn = _connectivity(cfg["connectivity"], nd, default_full=False)
        problems = []
        if nd != 2:
            problems.append("2-D images")
        if maxval != 255:
            problems.append("8-bit images")
        if conn != 4:
            problems.append("connectivity 4")
        if mask is not None:
            problems.append("no mask (OpenCV has none)")
        if not cfg["exclude_border"]:
            problems.append("exclude_border=True")
        if cfg["variation"] != "two_sided" or not cfg["normalize"]:
            problems.append("variation='two_sided', normalize=True")
        if problems:
            raise ValueError("preset 'opencv' reproduces cv2.MSER exactly and needs " + ", ".join(problems) +
                             "; use preset=None (the standard definition) for other settings")
        if algorithm != "flood":
            raise ValueError("algorithm: preset 'opencv' runs OpenCV's own flood (no component tree); use "
                             "preset=None or another preset with algorithm='tiled'")
        if spatial[0] < 3 or spatial[1] < 3:
            raise ValueError(f"image: preset 'opencv' needs at least 3 x 3 pixels (as OpenCV), got {spatial}")
        m = None
        mode = "opencv"
    elif on_device:
        conn = _connectivity(cfg["connectivity"], nd, default_full=(name in ("vlfeat", "mmser")))
        dm = _tiled._cuda_mask(mask, B, spatial, batch, flat.device)
        if cfg["exclude_border"]:
            ring = torch.from_numpy(_border_mask(spatial)).to(flat.device).reshape(1, -1).to(torch.uint8)
            dm = ring.expand(B, N).contiguous() if dm is None else dm & ring
        pols = ("dark", "bright") if cfg["polarity"] == "both" else (cfg["polarity"],)
        arrays = _tiled.mser_cuda(flat, spatial, maxval, is16, None if dm is None else dm.reshape((B,) + spatial),
                                  conn, pols, _kernel_delta(cfg["delta"], maxval), int(amin), int(amax), mvf,
                                  cfg["variation"], bool(cfg["normalize"]), tile, rule, float(md))
        return MSERResult(*arrays, spatial, B)
    else:
        conn = _connectivity(cfg["connectivity"], nd, default_full=(name in ("vlfeat", "mmser")))
        m = _prepare_mask(mask, B, spatial, batch)
        if cfg["exclude_border"]:
            ring = np.broadcast_to(_border_mask(spatial).reshape(1, -1), (B, N))
            m = ring.copy() if m is None else (m & ring)
            m = np.ascontiguousarray(m).astype(np.uint8)
        mode = "tree"
    threads = _tiled.check_threads(num_threads)  # 0: the OpenMP default
    C = extension()
    v, o, im, lev, area, var, pol = C.mser_detect_cpu(
        flat, m, list(spatial), conn, cfg["polarity"], maxval, mode, _kernel_delta(cfg["delta"], maxval), int(amin),
        int(amax), mvf, float(md), cfg["variation"], bool(cfg["normalize"]),
        "vlfeat" if rule == "vlfeat" else "local_min", threads,
        list(_tiled.tile_sizes(tile, nd, cuda=False)) if algorithm == "tiled" else [])
    t = torch.from_numpy
    # the opencv preset, and every preset of a CPU image, runs here
    return _to_image_device(MSERResult(t(v), t(o), t(im), t(lev), t(area), t(var), t(pol), spatial, B), image)
