"""The CAM epilogue: weights → weighted channel sum → ReLU → resize → min-max normalise, batched,
on the activations' device, dtype-preserving, differentiable (plain torch ops)."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def resize_maps(maps: torch.Tensor, size: Sequence[int], align_corners: bool = False) -> torch.Tensor:
    """(B, *S) -> (B, *size) with (bi/tri)linear interpolation (half-pixel centres by default, as
    cv2.resize / scipy zoom with grid_mode; ``align_corners=True`` as nn.UpsamplingBilinear2d)."""
    d = maps.dim() - 1
    size = tuple(int(s) for s in size)
    if len(size) != d:
        raise ValueError(f"size: {len(size)} dims for maps with {d} spatial dims")
    if d not in _MODES:
        raise ValueError(f"maps must have 1-3 spatial dims, got {d}")
    if tuple(maps.shape[1:]) == size:
        return maps
    return F.interpolate(maps[:, None], size=size, mode=_MODES[d], align_corners=align_corners)[:, 0]


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Per-sample min-max to [0, 1]; a constant map becomes 0; a map holding NaN stays NaN."""
    flat = maps.flatten(1)
    lo = flat.amin(1)
    hi = flat.amax(1)
    rng = hi - lo
    ok = rng > 0
    view = (-1,) + (1,) * (maps.dim() - 1)
    # divide (not multiply by 1/rng): a subnormal range would make 1/rng overflow to inf and 0·inf = NaN
    out = (maps - lo.view(view)) / torch.where(ok, rng, torch.ones_like(rng)).view(view)
    keep = (ok | torch.isnan(rng)).view(view)   # a map with NaN stays NaN (visible), a constant map -> 0
    return torch.where(keep, out, torch.zeros_like(out))


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
        if weights.shape != activations.shape[:2]:
            raise ValueError(f"weights shape {tuple(weights.shape)} != (B, K) = {tuple(activations.shape[:2])}")
        out_dtype = out_dtype or activations.dtype
        A = activations
        acc = weights.dtype if weights.dtype in (torch.float32, torch.float64) else torch.float32
        maps = torch.einsum("bk,bkn->bn", weights.to(acc), A.flatten(2).to(acc)).reshape(A.shape[:1] + A.shape[2:])
    else:
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
