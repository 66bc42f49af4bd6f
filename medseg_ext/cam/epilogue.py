"""The CAM epilogue: weights → weighted channel sum → ReLU → resize → min-max normalise, batched,
on the activations' device, dtype-preserving, differentiable (plain torch ops)."""
from __future__ import annotations

import operator
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .weights import check_float_tensor

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _check_size(size) -> tuple:
    """size as a tuple of positive ints (numpy / torch integers accepted), else a ValueError naming it."""
    try:
        out = tuple(operator.index(s) for s in size)
    except TypeError:
        raise ValueError(f"size must be a sequence of positive ints, got {size!r}") from None
    if any(s < 1 for s in out):
        raise ValueError(f"size must be positive, got {out}")
    return out


def _check_maps(maps) -> None:
    check_float_tensor("maps", maps, 2, "(B, *spatial)")


def resize_maps(maps: torch.Tensor, size: Sequence[int], align_corners: bool = False) -> torch.Tensor:
    """(B, *S) -> (B, *size) with (bi/tri)linear interpolation (half-pixel centres by default, as
    cv2.resize / scipy zoom with grid_mode; ``align_corners=True`` as nn.UpsamplingBilinear2d)."""
    _check_maps(maps)
    d = maps.dim() - 1
    size = _check_size(size)
    if len(size) != d:
        raise ValueError(f"size: {len(size)} dims for maps with {d} spatial dims")
    if d not in _MODES:
        raise ValueError(f"maps must have 1-3 spatial dims, got {d}")
    if tuple(maps.shape[1:]) == size:
        return maps
    return F.interpolate(maps[:, None], size=size, mode=_MODES[d], align_corners=align_corners)[:, 0]


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Per-sample min-max to [0, 1]; a constant map becomes 0; a map holding NaN or ±inf becomes NaN."""
    _check_maps(maps)
    if maps.shape[1:].numel() == 0:   # no pixels: nothing to normalise (amin would raise)
        return maps
    flat = maps.flatten(1)
    lo = flat.amin(1)
    hi = flat.amax(1)
    rng = hi - lo
    # a range of a few ulps of the values is rounding noise, not contrast (a constant map after bilinear
    # resizing varies in its last bits, and min-max blew that up to [0, 1]): such a map counts as constant
    noise = 4 * torch.finfo(maps.dtype).eps * torch.maximum(hi.abs(), lo.abs())
    ok = rng > noise
    view = (-1,) + (1,) * (maps.dim() - 1)
    # a map holding NaN or ±inf (an overflowed value) becomes all NaN, visible (with ±inf it was 0 with
    # NaN at the inf pixels): its divisor is NaN, set on the (B,) ranges, not on the maps
    bad = ~torch.isfinite(rng)
    den = torch.where(ok, rng, torch.ones_like(rng))
    den = torch.where(bad, torch.full_like(rng, float("nan")), den)
    # divide (not multiply by 1/rng): a subnormal range would make 1/rng overflow to inf and 0·inf = NaN
    out = (maps - lo.view(view)) / den.view(view)
    return torch.where((ok | bad).view(view), out, torch.zeros_like(out))   # a constant map -> 0


def cam_epilogue(activations: Optional[torch.Tensor] = None, weights: Optional[torch.Tensor] = None, *,
                 maps: Optional[torch.Tensor] = None, size: Union[None, Sequence[int]] = None,
                 relu: bool = True, normalize: bool = True, align_corners: bool = False,
                 out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Either (activations (B, K, *S), weights (B, K)) or precomputed ``maps`` (B, *S).

    Returns (B, *size) (or (B, *S) when size is None) in ``out_dtype`` (default: the activations'
    dtype). Normalisation is done after resizing (min-max commutes with linear resizing up to the
    range the resize attains, so this equals normalise → resize → normalise as pytorch-grad-cam does).
    """
    if maps is None:
        if activations is None or weights is None:
            raise ValueError("cam_epilogue needs activations and weights, or maps")
        if not torch.is_tensor(activations) or activations.dim() < 3:
            raise ValueError("activations must be a (B, K, *spatial) tensor")
        if not activations.dtype.is_floating_point:
            raise TypeError(f"activations must be floating point, got {activations.dtype}")
        if not torch.is_tensor(weights):
            raise TypeError(f"weights must be a tensor, got {type(weights).__name__}")
        if weights.shape != activations.shape[:2]:
            raise ValueError(f"weights shape {tuple(weights.shape)} != (B, K) = {tuple(activations.shape[:2])}")
        if weights.device != activations.device:
            raise ValueError(f"weights are on {weights.device} but activations on {activations.device}")
        out_dtype = out_dtype or activations.dtype
        A = activations
        acc = weights.dtype if weights.dtype in (torch.float32, torch.float64) else torch.float32
        weights = weights.to(acc)
        if normalize:
            # the normalised map is invariant to a positive factor per sample (ReLU, linear resize and
            # min-max all commute with it): weights scaled to max |w| = 1 keep Σ w·A from overflowing
            # (|w|, |A| ~ 1e30 in float32 gave inf, then NaN) or underflowing (~1e-30 gave a 0 map).
            # Detached: the map is the same function of the weights, so is its gradient.
            m = weights.detach().abs().amax(1, keepdim=True) if weights.shape[1] else None
            if m is not None:
                weights = weights / torch.where((m > 0) & torch.isfinite(m), m, torch.ones_like(m))
        maps = torch.einsum("bk,bkn->bn", weights, A.flatten(2).to(acc)).reshape(A.shape[:1] + A.shape[2:])
    else:
        _check_maps(maps)
        out_dtype = out_dtype or maps.dtype
        if maps.dtype not in (torch.float32, torch.float64):
            maps = maps.float()
    if relu:
        maps = torch.relu(maps)
    if size is not None:
        maps = resize_maps(maps, size, align_corners)
    if normalize:
        maps = normalize_maps(maps)
    return maps.to(out_dtype)
