"""ctypes binding to the real VLFeat MSER (the C library ``libvl``), the peer of ``preset="vlfeat"``.

Used by the mser tests and ``medseg-ext bench mser`` only; medseg_ext itself never needs VLFeat
(the leading underscore keeps this helper out of the ``medseg-ext bench`` family list).
Install on Debian/Ubuntu with ``apt-get install libvlfeat1`` (VLFeat 0.9.21 in Debian 12).

C API (vl/mser.h): ``vl_mser_new(ndims, dims)``, ``vl_mser_process(f, im)`` (8-bit pixels),
``vl_mser_ell_fit(f)``, ``vl_mser_delete(f)`` are exported functions. The parameter setters and
result getters (``vl_mser_set_delta`` ... ``vl_mser_get_regions``, ``vl_mser_get_ell``) are
``static inline`` in the header and thus not in the shared library: like them, this module reads
and writes the public ``struct _VlMserFilt`` declared in vl/mser.h. Its layout is mirrored below
and checked on every load against the defaults ``vl_mser_new`` writes (delta 5, max_area 0.75,
min_area 3/nel, max_variation 0.25, min_diversity 0.2, ndims, nel, dof), so a library with a
different layout is reported as unavailable instead of being misread.

Conventions of the results returned here (all converted to NumPy's C order and 0-based):

* VLFeat's ``dims[0]`` is the fastest-varying dimension, so a C-order array of shape
  ``(H, W)`` (or ``(D, H, W)``) is passed as ``dims = (W, H)`` (``(W, H, D)``); VLFeat's linear
  pixel index is then exactly NumPy's C-order flat index.
* A region is reported by its seed (VLFeat's "pivot" pixel); the region is the connected
  component, with full connectivity (3^D - 1 neighbours: 8 in 2-D, 26 in 3-D), of the level set
  {I <= I[seed]} containing the seed.
* Polarity: ``vl_mser_process`` finds only components of {I <= t}, i.e. **dark** regions
  (polarity -1 here, as in medseg_ext). **Bright** regions (polarity +1) come from a second
  filter run on the inverted image ``255 - I`` (exactly what VLFeat's MATLAB driver does with
  ``~I``); a bright region with seed s is the component of {I >= I[s]} containing s. The MATLAB
  wrapper ``vl_mser`` reports the seeds as ``idx + 1`` for the dark pass and ``-(idx + 1)`` for
  the inverted (bright) pass, so a *negative* MATLAB seed is a medseg_ext polarity **+1** region.
* Ellipses: ``vl_mser_ell_fit`` returns, per region, the mean and the independent second
  central moments (population, ``/area``) in VLFeat's coordinate order (x0 = fastest);
  they are returned here re-ordered to array-axis order: ``mean`` (ndim,) and ``cov``
  (ndim, ndim) comparable with ``MSERResult.centroids`` / ``.covariances``. VLFeat accumulates
  them in single precision (float32), so expect float32 rounding.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ["available", "unavailable_reason", "version", "library_path", "VLFeatUnavailable", "vl_mser",
           "region_pixels", "DEBIAN_PATHS"]

DEBIAN_PATHS = ("/usr/lib/x86_64-linux-gnu/libvl.so.1", "/usr/lib/aarch64-linux-gnu/libvl.so.1",
                "/usr/lib/x86_64-linux-gnu/libvl.so", "/usr/lib/libvl.so.1", "/usr/lib/libvl.so")
_INSTALL_HINT = "install it with `apt-get install libvlfeat1` (Debian/Ubuntu) or set MEDSEG_EXT_LIBVL=/path/libvl.so"


class VLFeatUnavailable(RuntimeError):
    """The VLFeat C library (libvl) could not be found or loaded."""


class _Stats(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int) for n in ("num_extremal", "num_unstable", "num_abs_unstable", "num_too_big",
                                            "num_too_small", "num_duplicates")]


class _ExtrReg(ctypes.Structure):
    # struct _VlMserExtrReg of vl/mser.h: one extremal region (read for the area and float32 variation)
    _fields_ = [("parent", ctypes.c_int), ("index", ctypes.c_int), ("value", ctypes.c_ubyte),
                ("shortcut", ctypes.c_uint), ("area", ctypes.c_uint), ("variation", ctypes.c_float),
                ("max_stable", ctypes.c_uint)]


# the same record as a NumPy dtype, to read the whole array at once
_ER_DTYPE = np.dtype([("parent", "<i4"), ("index", "<i4"), ("value", "u1"), ("shortcut", "<u4"), ("area", "<u4"),
                      ("variation", "<f4"), ("max_stable", "<u4")], align=True)
assert _ER_DTYPE.itemsize == ctypes.sizeof(_ExtrReg) == 28


class _Filt(ctypes.Structure):
    # struct _VlMserFilt of vl/mser.h (VLFeat 0.9.x), field for field
    _fields_ = [
        ("ndims", ctypes.c_int), ("dims", ctypes.POINTER(ctypes.c_int)), ("nel", ctypes.c_int),
        ("subs", ctypes.POINTER(ctypes.c_int)), ("dsubs", ctypes.POINTER(ctypes.c_int)),
        ("strides", ctypes.POINTER(ctypes.c_int)),
        ("perm", ctypes.POINTER(ctypes.c_uint)), ("joins", ctypes.POINTER(ctypes.c_uint)), ("njoins", ctypes.c_int),
        ("r", ctypes.c_void_p), ("er", ctypes.POINTER(_ExtrReg)), ("mer", ctypes.POINTER(ctypes.c_uint)),
        ("ner", ctypes.c_int), ("nmer", ctypes.c_int), ("rer", ctypes.c_int), ("rmer", ctypes.c_int),
        ("acc", ctypes.POINTER(ctypes.c_float)), ("ell", ctypes.POINTER(ctypes.c_float)),
        ("rell", ctypes.c_int), ("nell", ctypes.c_int), ("dof", ctypes.c_int),
        ("verbose", ctypes.c_int), ("delta", ctypes.c_int),
        ("max_area", ctypes.c_double), ("min_area", ctypes.c_double), ("max_variation", ctypes.c_double),
        ("min_diversity", ctypes.c_double),
        ("stats", _Stats),
    ]


_state: Dict[str, object] = {}


def _candidates() -> List[str]:
    out = []
    env = os.environ.get("MEDSEG_EXT_LIBVL")
    if env:
        out.append(env)
    found = ctypes.util.find_library("vl")
    if found:
        out.append(found)
    out += [p for p in DEBIAN_PATHS if os.path.exists(p)]
    return out


def _load():
    if "lib" in _state or "error" in _state:
        return _state.get("lib")
    errors = []
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            for name in ("vl_mser_new", "vl_mser_delete", "vl_mser_process", "vl_mser_ell_fit"):
                getattr(lib, name)
        except (OSError, AttributeError) as e:
            errors.append(f"{path}: {e}")
            continue
        lib.vl_mser_new.restype = ctypes.POINTER(_Filt)
        lib.vl_mser_new.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.vl_mser_delete.restype = None
        lib.vl_mser_delete.argtypes = [ctypes.POINTER(_Filt)]
        lib.vl_mser_process.restype = None
        lib.vl_mser_process.argtypes = [ctypes.POINTER(_Filt), ctypes.c_void_p]
        lib.vl_mser_ell_fit.restype = None
        lib.vl_mser_ell_fit.argtypes = [ctypes.POINTER(_Filt)]
        ver = "unknown"
        if hasattr(lib, "vl_get_version_string"):
            lib.vl_get_version_string.restype = ctypes.c_char_p
            lib.vl_get_version_string.argtypes = []
            ver = lib.vl_get_version_string().decode()
        problem = _check_layout(lib)
        if problem:
            errors.append(f"{path} (VLFeat {ver}): {problem}")
            continue
        _state.update(lib=lib, path=path, version=ver)
        return lib
    _state["error"] = ("VLFeat C library (libvl) not available: " +
                       ("; ".join(errors) if errors else "not found by ctypes.util.find_library('vl') nor in "
                        + ", ".join(DEBIAN_PATHS)) + "; " + _INSTALL_HINT)
    return None


def _check_layout(lib) -> Optional[str]:
    dims = (ctypes.c_int * 3)(7, 5, 3)
    f = lib.vl_mser_new(3, dims)
    if not f:
        return "vl_mser_new returned NULL"
    try:
        s = f.contents
        nel = 7 * 5 * 3
        ok = (s.ndims == 3 and s.nel == nel and s.dof == 9 and s.delta == 5 and s.max_area == 0.75
              and s.min_area == 3.0 / nel and s.max_variation == 0.25 and s.min_diversity == 0.2
              and [s.dims[k] for k in range(3)] == [7, 5, 3])
        return None if ok else "struct _VlMserFilt layout differs from vl/mser.h of VLFeat 0.9.x"
    finally:
        lib.vl_mser_delete(f)


def available() -> bool:
    return _load() is not None


def unavailable_reason() -> Optional[str]:
    return None if _load() is not None else str(_state["error"])


def version() -> str:
    if _load() is None:
        raise VLFeatUnavailable(str(_state["error"]))
    return str(_state["version"])


def library_path() -> str:
    if _load() is None:
        raise VLFeatUnavailable(str(_state["error"]))
    return str(_state["path"])


def _run_pass(lib, data: np.ndarray, dims, delta, min_area, max_area, max_variation, min_diversity, ell: bool,
              records: bool):
    f = lib.vl_mser_new(len(dims), (ctypes.c_int * len(dims))(*dims))
    if not f:
        raise MemoryError("vl_mser_new returned NULL")
    try:
        s = f.contents
        # what the inline setters vl_mser_set_* do
        s.delta = int(delta)
        if min_area is not None:
            s.min_area = float(min_area)
        s.max_area = float(max_area)
        s.max_variation = float(max_variation)
        s.min_diversity = float(min_diversity)
        lib.vl_mser_process(f, data.ctypes.data)
        n = s.nmer
        seeds = np.ctypeslib.as_array(s.mer, (n,)).astype(np.int64) if n else np.zeros(0, np.int64)
        area = variation = None
        ner = s.stats.num_extremal
        if records and ner and s.er:
            # the selected extremal regions, in the order of the seeds (er[i].max_stable after process)
            buf = (ctypes.c_char * (ner * _ER_DTYPE.itemsize)).from_address(ctypes.addressof(s.er.contents))
            er = np.frombuffer(buf, _ER_DTYPE, count=ner)
            sel = er[er["max_stable"] != 0]
            if not np.array_equal(sel["index"].astype(np.int64), seeds):
                raise RuntimeError("VLFeat: the extremal-region records do not match the seeds (struct layout?)")
            area = sel["area"].astype(np.int64)
            variation = sel["variation"].astype(np.float32)
        elif records:
            area, variation = np.zeros(0, np.int64), np.zeros(0, np.float32)
        frames = None
        if ell:
            lib.vl_mser_ell_fit(f)
            dof = s.dof
            frames = (np.ctypeslib.as_array(s.ell, (s.nell * dof,)).reshape(s.nell, dof).astype(np.float64)
                      if s.nell else np.zeros((0, dof)))
        stats = {name: getattr(s.stats, name) for name, _ in _Stats._fields_}
        return seeds, area, variation, frames, stats
    finally:
        lib.vl_mser_delete(f)


def vl_mser(image, *, delta: int = 5, min_area: Optional[float] = None, max_area: float = 0.75,
            max_variation: float = 0.25, min_diversity: float = 0.2, polarity: str = "both",
            ell: bool = False, records: bool = True) -> Dict[str, object]:
    """VLFeat MSER of one uint8 image/volume (any number of dimensions, C order).

    Areas are fractions of the pixel count (VLFeat's convention); ``min_area=None`` keeps VLFeat's
    default 3/npixels. Returns a dict: ``seeds`` (R,) C-order flat indices, ``polarity`` (R,) +1
    bright / -1 dark (dark pass first, as VLFeat's MATLAB driver), ``level`` (R,) = image[seed],
    ``area`` (R,) and ``variation`` (R,, float32) read from VLFeat's extremal-region records
    (``records=False`` skips them, for timing), ``stats`` per pass (VlMserStats), and with ``ell=True`` ``mean`` (R, ndim) and ``cov`` (R, ndim, ndim) in
    array-axis order (from ``vl_mser_ell_fit``)."""
    lib = _load()
    if lib is None:
        raise VLFeatUnavailable(str(_state["error"]))
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise TypeError(f"image: VLFeat's MSER takes 8-bit images (vl_mser_pix is vl_uint8), got {a.dtype}")
    if a.ndim < 1 or a.size == 0:
        raise ValueError(f"image: expected a non-empty array, got shape {a.shape}")
    if isinstance(delta, bool) or not isinstance(delta, (int, np.integer)) or not 0 <= delta <= 255:
        raise ValueError(f"delta: VLFeat takes a vl_mser_pix (0..255), got {delta!r}")
    if polarity not in ("bright", "dark", "both"):
        raise ValueError(f"polarity: expected 'bright', 'dark' or 'both', got {polarity!r}")
    a = np.ascontiguousarray(a)
    dims = tuple(int(d) for d in a.shape[::-1])  # VLFeat: first dimension fastest
    nd = a.ndim
    seeds, pols, areas, variations, means, covs, stats = [], [], [], [], [], [], {}
    passes = [p for p in ((-1, a), (1, None)) if (p[0] < 0 and polarity != "bright") or
              (p[0] > 0 and polarity != "dark")]
    for pol, data in passes:
        if data is None:
            data = np.ascontiguousarray(255 - a)  # the inverted image: its dark regions are our bright ones
        s, ar, var, fr, st = _run_pass(lib, data, dims, delta, min_area, max_area, max_variation, min_diversity,
                                       ell, records)
        stats["bright" if pol > 0 else "dark"] = st
        seeds.append(s)
        areas.append(ar)
        variations.append(var)
        pols.append(np.full(len(s), pol, np.int8))
        if ell:
            # VLFeat order: x0..x_{nd-1} (x0 fastest), then (i, j) for j = 0.., i = 0..j
            mean = fr[:, :nd][:, ::-1]
            cov = np.zeros((len(fr), nd, nd))
            d = nd
            for j in range(nd):
                for i in range(j + 1):
                    ai, aj = nd - 1 - i, nd - 1 - j  # VLFeat coordinate k is array axis nd-1-k
                    cov[:, ai, aj] = cov[:, aj, ai] = fr[:, d]
                    d += 1
            means.append(mean)
            covs.append(cov)
    seeds_a = np.concatenate(seeds) if seeds else np.zeros(0, np.int64)
    out = {"seeds": seeds_a, "polarity": np.concatenate(pols) if pols else np.zeros(0, np.int8),
           "level": a.ravel()[seeds_a].astype(np.int32), "stats": stats, "shape": a.shape}
    if records:
        out["area"] = np.concatenate(areas) if areas else np.zeros(0, np.int64)
        out["variation"] = np.concatenate(variations) if variations else np.zeros(0, np.float32)
    if ell:
        out["mean"] = np.concatenate(means) if means else np.zeros((0, nd))
        out["cov"] = np.concatenate(covs) if covs else np.zeros((0, nd, nd))
    return out


def region_pixels(image, seed: int, polarity: int, _cache: Optional[dict] = None) -> np.ndarray:
    """Sorted C-order flat indices of the region of a seed: the fully connected component of
    {I <= I[seed]} (polarity -1) or {I >= I[seed]} (+1) containing the seed (VLFeat's definition)."""
    a = np.asarray(image)
    v = a.ravel()[seed]
    key = (int(polarity), int(v))
    lab = None if _cache is None else _cache.get(key)
    if lab is None:
        inside = (a <= v) if polarity < 0 else (a >= v)
        try:
            from scipy import ndimage
        except ImportError:
            return _flood(inside, seed)
        lab = ndimage.label(inside, structure=np.ones((3,) * a.ndim, bool))[0].ravel()
        if _cache is not None:
            _cache[key] = lab
    return np.nonzero(lab == lab[seed])[0]


def _flood(inside: np.ndarray, seed: int) -> np.ndarray:
    # breadth-first fill with all 3^D - 1 neighbours (used when SciPy is not installed)
    shape = inside.shape
    offs = np.stack(np.meshgrid(*[[-1, 0, 1]] * len(shape), indexing="ij"), -1).reshape(-1, len(shape))
    offs = offs[np.any(offs != 0, axis=1)]
    seen = np.zeros(shape, bool)
    start = np.unravel_index(seed, shape)
    seen[start] = True
    frontier = np.array([start])
    while len(frontier):
        cand = (frontier[:, None, :] + offs[None]).reshape(-1, len(shape))
        ok = np.all((cand >= 0) & (cand < np.array(shape)), axis=1)
        cand = cand[ok]
        cand = cand[inside[tuple(cand.T)] & ~seen[tuple(cand.T)]]
        cand = np.unique(cand, axis=0)
        seen[tuple(cand.T)] = True
        frontier = cand
    return np.nonzero(seen.ravel())[0]


def region_sets(image, result: Dict[str, object]) -> List[tuple]:
    """Sorted list of (polarity, pixel tuple) of a :func:`vl_mser` result."""
    cache: dict = {}  # one labelling per (polarity, level)
    return sorted((int(p), tuple(region_pixels(image, int(s), int(p), cache).tolist()))
                  for s, p in zip(result["seeds"], result["polarity"]))


def seeds_to_matlab(result: Dict[str, object]) -> np.ndarray:
    """The seeds as VLFeat's MATLAB ``vl_mser`` would return them for the same (C-order) data:
    ``idx + 1`` for dark regions, ``-(idx + 1)`` for bright ones (the inverted-image pass)."""
    s = np.asarray(result["seeds"]) + 1
    return np.where(np.asarray(result["polarity"]) > 0, -s, s)


__all__ += ["region_sets", "seeds_to_matlab"]
