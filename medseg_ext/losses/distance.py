"""Distance group (D) of the losses family: exact Euclidean distance transform, surface-distance
metrics (Hausdorff, HD95, average surface distance, ASSD) and the losses built on distance maps
(MONAI-compatible ``HausdorffDTLoss``, Kervadec ``boundary_loss``).

The EDT is exact (separable Felzenszwalb-Huttenlocher parabola envelopes, C++ on the CPU,
multithreaded over lines; CUDA kernels with one launch per axis pass for the whole batch) and
batched over every (b, c) volume in one call. Distance maps carry no gradient; the losses
differentiate through the probabilities with ordinary torch ops on top of the precomputed maps.

Conventions (pinned by python_tests/losses/test_distance*.py):

* ``distance_transform_edt``: ``scipy.ndimage.distance_transform_edt`` semantics with ``sampling``:
  every non-zero voxel gets the distance to the nearest zero voxel of its own volume, zero voxels
  get 0. A volume without any zero voxel is ``+inf`` everywhere (scipy returns distances to a
  phantom voxel outside the array in that case); an all-zero volume is 0.
* Surface voxels ("edges") are MONAI's ``get_mask_edges``: foreground voxels with a face neighbour
  that is background or outside the array.
* ``hausdorff_distance`` / ``hd95`` / ``average_surface_distance`` follow MONAI
  ``compute_hausdorff_distance`` / ``compute_average_surface_distance`` value for value, including
  empty masks: both pred and target empty -> NaN; exactly one of them empty -> ``inf`` (but NaN for
  a percentile Hausdorff such as HD95: MONAI's torch.quantile over an all-inf set gives NaN).
  ``include_background=False`` (MONAI's default) drops channel 0. ``distance_metric`` "taxicab" /
  "chessboard" (unit grid, as MONAI's ``distance_transform_cdt`` path; CPU only) is also offered. Masks are binarised with
  ``!= 0`` (pass one-hot / thresholded masks, as for MONAI).
* ``hausdorff_dt_loss`` equals MONAI ``HausdorffDTLoss`` (the distance fields of both prediction
  and target are thresholded at 0.5 and are 0 for uniform volumes, as in MONAI).
* ``boundary_loss`` is Kervadec et al.'s surface loss: mean of softmax probabilities times the
  signed distance map of the one-hot target (LIVIAETS ``one_hot2dist``: outside +distance to the
  object, inside -(distance to the background - 1); empty and full volumes give 0).
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .._custom_op import custom_op
from .. import _dispatch
from .._tensor import desc

# medseg_ext.losses re-exports __all__ (and medseg_ext does `from .losses import *`): every name listed
# here must also be imported there.
__all__ = ["distance_transform_edt", "signed_distance", "surface_edges", "hausdorff_distance", "hd95",
           "average_surface_distance", "hausdorff_dt_loss", "boundary_loss", "HausdorffDTLoss", "BoundaryLoss",
           "log_hausdorff_dt_loss", "LogHausdorffDTLoss"]

_REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------------------------------------- inputs


def _to_tensor(x, name: str) -> Tuple[torch.Tensor, bool]:
    if isinstance(x, torch.Tensor):
        return x, False
    if isinstance(x, np.ndarray):
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise TypeError(f"{name}: expected a numeric or bool array, got dtype {x.dtype}")
        if x.dtype.byteorder == ">" or any(st < 0 for st in x.strides):  # torch.from_numpy refuses these
            x = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("=") if x.dtype.byteorder == ">" else x.dtype)
        return torch.from_numpy(x), True
    raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _binarise(t: torch.Tensor, name: str) -> torch.Tensor:
    """Non-zero -> True; NaN is refused (it is neither foreground nor background)."""
    if t.is_complex():
        raise TypeError(f"{name}: complex masks are not supported")
    if t.dtype == torch.bool:
        return t
    if t.is_floating_point() and bool(torch.isnan(t).any()):
        raise ValueError(f"{name}: contains NaN; pass a mask (bool, integer, or float 0/1)")
    return t != 0


def _spacing(spacing, ndim: int) -> Tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    if isinstance(spacing, torch.Tensor):
        spacing = spacing.detach().cpu().tolist()
    if np.isscalar(spacing):
        sp = (float(spacing),) * ndim
    else:
        try:
            sp = tuple(float(s) for s in spacing)
        except TypeError as exc:
            raise TypeError(f"spacing: expected a number or a sequence of {ndim} numbers, got {spacing!r}") from exc
        if len(sp) != ndim:
            raise ValueError(f"spacing: expected {ndim} values (one per spatial axis), got {len(sp)}")
    if not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing: expected finite positive values, got {sp}")
    return sp


def _spatial_dims(t: torch.Tensor, spatial_dims: Optional[int]) -> int:
    if spatial_dims is None:
        if t.dim() in (1, 2, 3):
            return t.dim()
        if t.dim() in (4, 5):
            return t.dim() - 2
        raise ValueError(f"mask: expected a 1-3-D spatial array or (B, C, *spatial) with 2 or 3 spatial dims, "
                         f"got shape {tuple(t.shape)}")
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims: expected 1, 2 or 3, got {spatial_dims!r}")
    if t.dim() < spatial_dims:
        raise ValueError(f"mask: has {t.dim()} dims, fewer than spatial_dims={spatial_dims}")
    return spatial_dims


# ---------------------------------------------------------------------------------------------- EDT


def _backend(t: torch.Tensor) -> str:
    """"reference", "cpu" or "cuda" (the compiled CUDA kernels; the EDT has no Triton version)."""
    forced = getattr(_dispatch._override, "name", None)
    if forced == "reference" or (forced is None and os.environ.get(_dispatch.FORCE_REFERENCE_ENV) == "1"):
        return "reference"
    if t.device.type == "cpu" and not _dispatch.on_cuda(t):
        if not torch.compiler.is_compiling():  # the op itself loads the module; fail early and clearly here
            _dispatch.extension()
        return "cpu"
    if _dispatch.on_cuda(t):
        if torch.compiler.is_compiling():
            return "cuda"
        C_ = _dispatch.extension()
        if not hasattr(C_, "edt_cuda") or not _dispatch.cuda_kernels_usable():
            raise RuntimeError("mask: is a CUDA tensor but medseg_ext was built without its CUDA kernels "
                               "(rebuild with MEDSEG_EXT_CUDA=on); the distance transform has no Triton version")
        return "cuda"
    raise ValueError(f"mask: device type {t.device.type!r} is not supported (cpu or cuda)")


_MODES = {"plain": 0, "inverted": 1, "field": 2, "signed": 3}


def _reference_volume(v: np.ndarray, spacing, mode: str, offset: float) -> np.ndarray:
    from ..reference import distance as ref
    if mode == "plain":
        return ref.edt(v, spacing) if (~v).any() else np.full(v.shape, np.inf)
    if mode == "inverted":
        return ref.edt(~v, spacing) if v.any() else np.full(v.shape, np.inf)
    if not v.any() or v.all():
        return np.zeros(v.shape)
    inside, outside = ref.edt(v, spacing), ref.edt(~v, spacing)
    return inside + outside if mode == "field" else np.where(v, offset - inside, outside)


def _edt_volumes(fg: torch.Tensor, nsp: int, spacing: Tuple[float, ...], dtype: torch.dtype,
                 squared: bool = False, mode: str = "plain", offset: float = 1.0) -> torch.Tensor:
    """Transform of a bool tensor whose last ``nsp`` axes are spatial (all leading axes are volumes).

    mode: "plain" EDT(fg) (scipy), "inverted" EDT(~fg), "field" EDT(fg) + EDT(~fg) (MONAI), "signed"
    fg ? offset - EDT(fg) : EDT(~fg) (Kervadec); field and signed are 0 in uniform volumes.
    """
    shape = tuple(fg.shape)
    if fg.numel() == 0:
        return torch.empty(shape, dtype=dtype, device=fg.device)
    sp_shape = shape[len(shape) - nsp:]
    vols = int(np.prod(shape[:len(shape) - nsp], dtype=np.int64)) if len(shape) > nsp else 1
    backend = _backend(fg)
    if backend == "reference":
        m = fg.reshape((vols,) + tuple(sp_shape)).cpu().numpy()
        res = np.stack([_reference_volume(v, spacing, mode, offset) for v in m])
        if squared:
            res = res ** 2
        return torch.from_numpy(res).to(device=fg.device, dtype=dtype).reshape(shape)
    return _edt_op(fg, nsp, list(spacing), dtype == torch.float64, bool(squared), _MODES[mode], float(offset))


@custom_op("medseg_ext::distance_transform", mutates_args=())
def _edt_op(fg: torch.Tensor, nsp: int, spacing: List[float], double: bool, squared: bool, mode: int,
            offset: float) -> torch.Tensor:
    """The compiled transform as a torch custom op (opaque to torch.compile, no graph break)."""
    shape = tuple(fg.shape)
    vols = int(np.prod(shape[:len(shape) - nsp], dtype=np.int64)) if len(shape) > nsp else 1
    dims = (1,) * (3 - nsp) + shape[len(shape) - nsp:]
    sp3 = [1.0] * (3 - nsp) + list(spacing)
    out = torch.empty(shape, dtype=torch.float64 if double else torch.float32, device=fg.device)
    if out.numel() == 0:
        return out
    m8 = fg.contiguous().view(torch.uint8).reshape((vols,) + dims)
    o4 = out.view((vols,) + dims)
    C_ = _dispatch.extension()
    if not _dispatch.on_cuda(fg):
        C_.edt_cpu(desc(m8), desc(o4), sp3, squared, mode, offset)
    else:
        with _dispatch.cuda_stream(fg.device) as stream:
            C_.edt_cuda(desc(m8), desc(o4), sp3, squared, mode, offset, stream)
    return out


@_edt_op.register_fake
def _(fg, nsp, spacing, double, squared, mode, offset):
    return torch.empty(fg.shape, dtype=torch.float64 if double else torch.float32, device=fg.device)


_CDT_METRICS = {"taxicab": 0, "chessboard": 1}


def _cdt_volumes(fg: torch.Tensor, nsp: int, metric: str, invert: bool) -> torch.Tensor:
    """Exact taxicab / chessboard transform (unit grid) of bool volumes, float32; CPU kernel only."""
    shape = tuple(fg.shape)
    if fg.numel() == 0:
        return torch.empty(shape, dtype=torch.float32, device=fg.device)
    if _backend(fg) == "reference":
        from ..reference import distance as ref
        sp_shape = shape[len(shape) - nsp:]
        vols = fg.reshape((-1,) + sp_shape).cpu().numpy()
        res = []
        for v in vols:
            sites, pts = (v if invert else ~v), np.ones(v.shape, bool)
            d = ref._min_dist(np.argwhere(pts).astype(float), np.argwhere(sites).astype(float), metric=metric)
            res.append(d.reshape(v.shape))
        return torch.from_numpy(np.stack(res)).float().reshape(shape).to(fg.device)
    if fg.device.type != "cpu":
        raise ValueError(f"distance_metric: {metric!r} runs on CPU tensors only (the CUDA kernels are Euclidean)")
    vols = int(np.prod(shape[:len(shape) - nsp], dtype=np.int64)) if len(shape) > nsp else 1
    dims = (1,) * (3 - nsp) + shape[len(shape) - nsp:]
    m8 = fg.contiguous().view(torch.uint8).reshape((vols,) + dims)
    out = torch.empty(shape, dtype=torch.float32)
    _dispatch.extension().cdt_cpu(desc(m8), desc(out.view((vols,) + dims)), _CDT_METRICS[metric], bool(invert))
    return out


def _out_dtype(t: torch.Tensor, dtype) -> torch.dtype:
    if dtype is None:
        return torch.float64 if t.dtype == torch.float64 else torch.float32
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
    return dtype


def distance_transform_edt(mask, spacing: Union[None, float, Sequence[float]] = None, *, squared: bool = False,
                           spatial_dims: Optional[int] = None, dtype: Optional[torch.dtype] = None):
    """Exact Euclidean distance transform of every volume of ``mask``.

    mask: torch tensor or NumPy array, bool / integer / float (non-zero = foreground), either a plain
      1-3-D spatial array or (B, C, *spatial) with 2 or 3 spatial dims (``spatial_dims`` overrides the
      guess; all leading axes are independent volumes). Any strides; CPU or CUDA.
    spacing: voxel size per spatial axis (scipy's ``sampling``), or one number for all.
    squared: return squared distances. dtype: float32 (default) or float64 (default for float64 masks).
    Returns the same kind of array (tensor or ndarray) and shape, on the same device; no gradient.
    """
    return _map_volumes(mask, spacing, spatial_dims, dtype,
                        lambda fg, nsp, sp, out_dtype: _edt_volumes(fg, nsp, sp, out_dtype, squared))


def signed_distance(mask, spacing=None, *, inside_offset: float = 1.0, spatial_dims: Optional[int] = None,
                    dtype: Optional[torch.dtype] = None):
    """Signed distance map per volume (Kervadec ``one_hot2dist``): outside the object +distance to it,
    inside -(distance to the background - inside_offset); volumes that are empty or full give 0."""
    return _map_volumes(mask, spacing, spatial_dims, dtype,
                        lambda fg, nsp, sp, out_dtype: _signed(fg, nsp, sp, out_dtype, float(inside_offset)))


def _map_volumes(mask, spacing, spatial_dims, dtype, fn):
    """The public maps' common path: validate and binarise ``mask``, resolve spatial dims, spacing
    and output dtype, run ``fn(fg, nsp, spacing, dtype)`` without grad, return mask's kind (tensor/array)."""
    t, was_numpy = _to_tensor(mask, "mask")
    if t.dim() == 0:
        raise ValueError("mask: expected at least one spatial dimension, got a scalar")
    nsp = _spatial_dims(t, spatial_dims)
    sp = _spacing(spacing, nsp)
    out_dtype = _out_dtype(t, dtype)
    with torch.no_grad():
        out = fn(_binarise(t.detach(), "mask"), nsp, sp, out_dtype)
    return out.numpy() if was_numpy else out


def _signed(fg: torch.Tensor, nsp: int, sp, dtype, offset: float) -> torch.Tensor:
    return _edt_volumes(fg, nsp, sp, dtype, mode="signed", offset=offset)


# ---------------------------------------------------------------------------------------------- metrics


def surface_edges(mask, spatial_dims: Optional[int] = None) -> torch.Tensor:
    """Bool surface voxels of every volume (MONAI ``get_mask_edges``: mask XOR erosion, border = background)."""
    t, _ = _to_tensor(mask, "mask")
    nsp = _spatial_dims(t, spatial_dims)
    return _edges(_binarise(t, "mask"), nsp)


def _edges(fg: torch.Tensor, nsp: int) -> torch.Tensor:
    if fg.numel() == 0:
        return fg.clone()
    backend = _backend(fg)
    if backend == "reference":
        return _edges_torch(fg, nsp)
    shape = tuple(fg.shape)
    vols = int(np.prod(shape[:len(shape) - nsp], dtype=np.int64)) if len(shape) > nsp else 1
    dims = (1,) * (3 - nsp) + shape[len(shape) - nsp:]
    m8 = fg.contiguous().view(torch.uint8).reshape((vols,) + dims)
    out = torch.empty_like(m8)
    C_ = _dispatch.extension()
    if backend == "cpu":
        C_.surface_edges_cpu(desc(m8), desc(out), nsp)
    else:
        with _dispatch.cuda_stream(fg.device) as stream:
            C_.surface_edges_cuda(desc(m8), desc(out), nsp, stream)
    return out.view(torch.bool).reshape(shape)


def _edges_torch(fg: torch.Tensor, nsp: int) -> torch.Tensor:
    """Plain-torch surface voxels (the reference backend; the kernels compute the same)."""
    pad = [1, 1] * nsp
    p = F.pad(fg.to(torch.uint8), pad).bool()
    nd = fg.dim()
    interior = fg.clone()
    for ax in range(nd - nsp, nd):
        n = fg.shape[ax]
        for shift in (0, 2):
            idx = [slice(None)] * (nd - nsp) + [slice(1, 1 + fg.shape[a]) for a in range(nd - nsp, nd)]
            idx[ax] = slice(shift, shift + n)
            interior &= p[tuple(idx)]
    return fg & ~interior


def _pair_inputs(pred, target, include_background: bool, names=("pred", "target")):
    p, _ = _to_tensor(pred, names[0])
    g, _ = _to_tensor(target, names[1])
    if p.shape != g.shape:
        raise ValueError(f"{names[1]}: shape {tuple(g.shape)} differs from {names[0]} {tuple(p.shape)}")
    if p.dim() not in (3, 4, 5):
        raise ValueError(f"{names[0]}: expected (B, C, *spatial) with 1-3 spatial dims, got shape {tuple(p.shape)}")
    if g.device != p.device:
        raise ValueError(f"{names[1]}: on device {g.device}, but {names[0]} is on {p.device}")
    p, g = _binarise(p.detach(), names[0]), _binarise(g.detach(), names[1])
    if not include_background:
        p, g = p[:, 1:], g[:, 1:]
    return p, g, p.dim() - 2


def _directed(dist_to_b: torch.Tensor, ea: torch.Tensor, na: torch.Tensor, nb: torch.Tensor, percentile):
    """Per (b, c) statistic of the directed surface-distance set A -> B (MONAI conventions)."""
    U = ea.shape[0] * ea.shape[1]
    S = int(np.prod(ea.shape[2:], dtype=np.int64))
    d = dist_to_b.reshape(U, S)
    e = ea.reshape(U, S)
    na, nb = na.reshape(U), nb.reshape(U)
    if percentile is None:
        stat = torch.where(e, d, torch.full_like(d, -np.inf)).amax(dim=1) if d.shape[1] else torch.zeros_like(na, dtype=d.dtype)
    else:
        rows, cols = e.nonzero(as_tuple=True)
        vals = d[rows, cols]
        order = torch.argsort(vals, stable=True)
        order = order[torch.argsort(rows[order], stable=True)]
        vals = vals[order]
        counts = na.to(torch.int64)
        start = torch.cumsum(counts, 0) - counts
        pos = (percentile / 100.0) * (counts - 1).clamp_min(0).to(torch.float64)
        lo = pos.floor().to(torch.int64)
        hi = pos.ceil().to(torch.int64)
        frac = (pos - lo.to(torch.float64)).to(d.dtype)
        last = max(vals.numel() - 1, 0)
        safe = counts > 0
        if vals.numel():
            v_lo = vals[torch.where(safe, start + lo, torch.zeros_like(lo)).clamp(max=last)]
            v_hi = vals[torch.where(safe, start + hi, torch.zeros_like(hi)).clamp(max=last)]
        else:
            v_lo = v_hi = torch.zeros(U, dtype=d.dtype, device=d.device)
        stat = torch.where(v_lo == v_hi, v_lo, v_lo + (v_hi - v_lo) * frac)
    nan = torch.full_like(stat, np.nan)
    inf = torch.full_like(stat, np.inf)
    # one set empty: inf for the max; NaN with a percentile, as MONAI (torch.quantile of all-inf values)
    one_empty = nan if percentile is not None else inf
    stat = torch.where((na == 0) & (nb == 0), nan, torch.where((na == 0) | (nb == 0), one_empty, stat))
    return stat.reshape(ea.shape[:2])


def _surface_setup(pred, target, include_background, spacing, distance_metric="euclidean"):
    if distance_metric not in ("euclidean", "taxicab", "chessboard"):
        raise ValueError(f"distance_metric: expected 'euclidean', 'taxicab' or 'chessboard', got {distance_metric!r}")
    if distance_metric != "euclidean" and spacing is not None:
        raise ValueError(f"spacing: only with distance_metric='euclidean' (MONAI ignores it for {distance_metric!r}); "
                         "pass spacing=None")
    p, g, nsp = _pair_inputs(pred, target, include_background)
    sp = _spacing(spacing, nsp)
    ep, eg = _edges(p, nsp), _edges(g, nsp)
    red = tuple(range(2, 2 + nsp))
    npred, ngt = ep.sum(dim=red), eg.sum(dim=red)
    return ep, eg, npred, ngt, nsp, sp


def _to_surface(edges: torch.Tensor, nsp: int, sp, distance_metric: str) -> torch.Tensor:
    """Distance of every voxel to the nearest voxel of ``edges`` (inf when there is none)."""
    if distance_metric == "euclidean":
        return _edt_volumes(edges, nsp, sp, torch.float32, mode="inverted")
    return _cdt_volumes(edges, nsp, distance_metric, invert=True)


def hausdorff_distance(pred, target, percentile: Optional[float] = None, spacing=None,
                       include_background: bool = False, directed: bool = False,
                       distance_metric: str = "euclidean") -> torch.Tensor:
    """(B, C) Hausdorff distance between the surfaces of binarised ``pred`` and ``target`` (B, C, *spatial).

    MONAI ``compute_hausdorff_distance`` conventions: ``percentile`` (0-100, linear interpolation)
    instead of the max gives e.g. HD95; ``directed=True`` only pred -> target; both masks empty -> NaN,
    one empty -> inf (NaN with a percentile, as MONAI); ``include_background=False`` drops channel 0. float32 result on the input's device.
    """
    if percentile is not None:
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 <= percentile <= 100:
            raise ValueError(f"percentile: expected a number in [0, 100] or None, got {percentile!r}")
    ep, eg, npred, ngt, nsp, sp = _surface_setup(pred, target, include_background, spacing, distance_metric)
    with torch.no_grad():
        if directed:
            to_g = _to_surface(eg, nsp, sp, distance_metric)
            return _directed(to_g, ep, npred, ngt, percentile).float()
        both = _to_surface(torch.stack([eg, ep]), nsp, sp, distance_metric)
        h_pg = _directed(both[0], ep, npred, ngt, percentile)
        h_gp = _directed(both[1], eg, ngt, npred, percentile)
        return torch.maximum(h_pg, h_gp).float()


def hd95(pred, target, spacing=None, include_background: bool = False, directed: bool = False,
         distance_metric: str = "euclidean") -> torch.Tensor:
    """95th-percentile Hausdorff distance, ``hausdorff_distance(..., percentile=95)``."""
    return hausdorff_distance(pred, target, percentile=95, spacing=spacing, include_background=include_background,
                              directed=directed, distance_metric=distance_metric)


def average_surface_distance(pred, target, symmetric: bool = False, spacing=None,
                             include_background: bool = False, distance_metric: str = "euclidean") -> torch.Tensor:
    """(B, C) average surface distance (MONAI ``compute_average_surface_distance``); ``symmetric=True``
    averages over the surface voxels of both masks (ASSD). Both empty -> NaN, one empty -> inf."""
    ep, eg, npred, ngt, nsp, sp = _surface_setup(pred, target, include_background, spacing, distance_metric)
    red = tuple(range(2, 2 + nsp))
    with torch.no_grad():
        if symmetric:
            both = _to_surface(torch.stack([eg, ep]), nsp, sp, distance_metric)
            total = (torch.where(ep, both[0], 0.0).sum(dim=red, dtype=torch.float64)
                     + torch.where(eg, both[1], 0.0).sum(dim=red, dtype=torch.float64))
            count = npred + ngt
        else:
            to_g = _to_surface(eg, nsp, sp, distance_metric)
            total = torch.where(ep, to_g, 0.0).sum(dim=red, dtype=torch.float64)
            count = npred
        mean = total / count.clamp_min(1).to(total.dtype)
        mean = torch.where((npred == 0) | (ngt == 0), torch.full_like(mean, np.inf), mean)
        mean = torch.where((npred == 0) & (ngt == 0), torch.full_like(mean, np.nan), mean)
        return mean.float()


# ---------------------------------------------------------------------------------------------- losses


def _activate(x: torch.Tensor, sigmoid: bool, softmax: bool) -> torch.Tensor:
    if sigmoid and softmax:
        raise ValueError("sigmoid/softmax: choose at most one")
    if sigmoid:
        return torch.sigmoid(x)
    if softmax and x.shape[1] > 1:
        return torch.softmax(x, dim=1)
    return x


def _loss_inputs(input, target, name="input"):
    x, _ = _to_tensor(input, name)
    y, _ = _to_tensor(target, "target")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating tensor of logits or probabilities, got {x.dtype}")
    if x.dim() not in (4, 5):
        raise ValueError(f"{name}: expected (B, C, H, W) or (B, C, D, H, W), got shape {tuple(x.shape)}")
    if y.device != x.device:
        raise ValueError(f"target: on device {y.device}, but {name} is on {x.device}")
    if y.shape != x.shape:
        B, C = x.shape[:2]
        spatial = tuple(x.shape[2:])
        if y.is_floating_point() or y.dtype == torch.bool or tuple(y.shape) not in ((B,) + spatial, (B, 1) + spatial):
            raise ValueError(f"target: expected shape {tuple(x.shape)} (one-hot) or integer class indices of shape "
                             f"{(B, 1) + spatial}, got {tuple(y.shape)} {y.dtype}")
        idx = y.reshape((B,) + spatial).long()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= C):
            raise ValueError(f"target: class indices must lie in [0, {C}), got [{int(idx.min())}, {int(idx.max())}]")
        y = F.one_hot(idx, C).movedim(-1, 1)
    if y.is_floating_point() and bool(torch.isnan(y).any()):
        raise ValueError("target: contains NaN")
    return x, y.to(x.dtype)


def _reduce(f: torch.Tensor, reduction: str, nsp: int) -> torch.Tensor:
    if reduction == "mean":
        return f.mean()
    if reduction == "sum":
        return f.sum()
    return f.reshape(tuple(f.shape[:2]) + (1,) * nsp)


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")


def hausdorff_dt_loss(input, target, alpha: float = 2.0, include_background: bool = False, sigmoid: bool = False,
                      softmax: bool = False, batch: bool = False, reduction: str = "mean") -> torch.Tensor:
    """Distance-transform Hausdorff loss (Karimi & Salcudean), value-for-value MONAI ``HausdorffDTLoss``.

    input: (B, C, *spatial) logits (with sigmoid/softmax) or probabilities; target: one-hot of the same
    shape, or integer class indices (B, 1, *spatial) / (B, *spatial). loss per (b, c) =
    mean((p - t)^2 * (d_p^alpha + d_t^alpha)) where d_x is the distance field of x > 0.5 (EDT of the
    foreground + EDT of the background, 0 for uniform volumes). All B x C' fields come from one EDT call.
    """
    _check_reduction(reduction)
    if not np.isfinite(alpha):
        raise ValueError(f"alpha: expected a finite number, got {alpha!r}")
    x, y = _loss_inputs(input, target)
    p = _activate(x, sigmoid, softmax)
    if not include_background and p.shape[1] > 1:
        p, y = p[:, 1:], y[:, 1:]
    nsp = p.dim() - 2
    with torch.no_grad():
        fields = _dt_fields(torch.stack([p.detach() > 0.5, y > 0.5]), nsp,
                            torch.float64 if p.dtype == torch.float64 else torch.float32)
        dist = fields[0] ** alpha + fields[1] ** alpha
    f = (p - y) ** 2 * dist  # fp16/bf16 inputs promote to float32 here (distance^alpha overflows fp16)
    red = tuple(range(2, p.dim()))
    f = f.mean(dim=(0,) + red, keepdim=False).unsqueeze(0) if batch else f.mean(dim=red)
    return _reduce(f, reduction, nsp)


def log_hausdorff_dt_loss(input, target, alpha: float = 2.0, include_background: bool = False,
                          sigmoid: bool = False, softmax: bool = False, batch: bool = False,
                          reduction: str = "mean") -> torch.Tensor:
    """log(1 + hausdorff_dt_loss(...)), MONAI ``LogHausdorffDTLoss``."""
    return torch.log1p(hausdorff_dt_loss(input, target, alpha, include_background, sigmoid, softmax, batch,
                                         reduction))


def _dt_fields(fg: torch.Tensor, nsp: int, dtype) -> torch.Tensor:
    return _edt_volumes(fg, nsp, (1.0,) * nsp, dtype, mode="field")


def boundary_loss(input, target, spacing=None, include_background: bool = False, sigmoid: bool = False,
                  softmax: bool = True, reduction: str = "mean", inside_offset: float = 1.0,
                  dist_map: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Boundary (surface) loss of Kervadec et al.: mean of probabilities x signed distance of the target.

    input: (B, C, *spatial) logits (softmax by default, or sigmoid) or probabilities (both False);
    target: one-hot of the same shape or integer class indices. ``dist_map`` (same shape as the
    selected channels) skips the distance computation, e.g. when precomputed in the data loader.
    """
    _check_reduction(reduction)
    x, y = _loss_inputs(input, target)
    p = _activate(x, sigmoid, softmax)
    if not include_background and p.shape[1] > 1:
        p, y = p[:, 1:], y[:, 1:]
    nsp = p.dim() - 2
    if dist_map is None:
        sp = _spacing(spacing, nsp)
        with torch.no_grad():
            dist_map = _signed(y > 0.5, nsp, sp, torch.float64 if p.dtype == torch.float64 else torch.float32,
                               float(inside_offset))
    elif tuple(dist_map.shape) != tuple(p.shape):
        raise ValueError(f"dist_map: expected shape {tuple(p.shape)}, got {tuple(dist_map.shape)}")
    dist_map = dist_map.to(p.device)
    if not dist_map.is_floating_point() or dist_map.dtype in (torch.float16, torch.bfloat16):
        dist_map = dist_map.float()
    f = (p * dist_map).mean(dim=tuple(range(2, p.dim())))  # half inputs promote to float32
    return _reduce(f, reduction, nsp)


class HausdorffDTLoss(torch.nn.Module):
    """nn.Module form of :func:`hausdorff_dt_loss` (same arguments as MONAI's HausdorffDTLoss)."""

    def __init__(self, alpha: float = 2.0, include_background: bool = False, sigmoid: bool = False,
                 softmax: bool = False, batch: bool = False, reduction: str = "mean"):
        super().__init__()
        _check_reduction(reduction)
        if sigmoid and softmax:
            raise ValueError("sigmoid/softmax: choose at most one")
        self.alpha, self.include_background = float(alpha), include_background
        self.sigmoid, self.softmax, self.batch, self.reduction = sigmoid, softmax, batch, reduction

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return hausdorff_dt_loss(input, target, self.alpha, self.include_background, self.sigmoid, self.softmax,
                                 self.batch, self.reduction)


class LogHausdorffDTLoss(HausdorffDTLoss):
    """nn.Module form of :func:`log_hausdorff_dt_loss` (MONAI's LogHausdorffDTLoss)."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.log1p(super().forward(input, target))


class BoundaryLoss(torch.nn.Module):
    """nn.Module form of :func:`boundary_loss`."""

    def __init__(self, spacing=None, include_background: bool = False, sigmoid: bool = False, softmax: bool = True,
                 reduction: str = "mean", inside_offset: float = 1.0):
        super().__init__()
        _check_reduction(reduction)
        if sigmoid and softmax:
            raise ValueError("sigmoid/softmax: choose at most one")
        self.spacing, self.include_background = spacing, include_background
        self.sigmoid, self.softmax, self.reduction, self.inside_offset = sigmoid, softmax, reduction, inside_offset

    def forward(self, input: torch.Tensor, target: torch.Tensor, dist_map: Optional[torch.Tensor] = None):
        return boundary_loss(input, target, self.spacing, self.include_background, self.sigmoid, self.softmax,
                             self.reduction, self.inside_offset, dist_map)
