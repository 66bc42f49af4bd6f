"""``compute_cam``: every CAM method on any named layer of a 2-D or 3-D model, batched on device.

Gradient methods run the part of the network before the target layer without a graph and
back-propagate only the part after it, to the activation (``torch.autograd.grad``; no parameter
gradients). Score-CAM / Ablation-CAM stream their masked inputs / ablated copies through the model
in chunks of ``batch_size`` rows, scores written into a device tensor (no host syncs).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import nn

from . import targets as _t
from ._hooks import LayerCapture, LayerSpec, resolve_layer
from .epilogue import _check_size, cam_epilogue, normalize_maps, resize_maps
from .weights import (eigen_projection, gradcam_weights, gradcampp_weights, hirescam_map, layercam_map,
                      svd_gradcam_channel_weights, xgradcam_weights)

GRADIENT_METHODS = ("gradcam", "hirescam", "gradcam++", "xgradcam", "layercam", "eigengradcam", "svdgradcam",
                    "smoothgradcam")
FORWARD_METHODS = ("cam", "eigencam", "scorecam", "ablationcam")
METHODS = GRADIENT_METHODS + FORWARD_METHODS
_ALIASES = {"grad-cam": "gradcam", "gradcampp": "gradcam++", "grad-cam++": "gradcam++", "svd-grad-cam": "svdgradcam",
            "score-cam": "scorecam", "ablation-cam": "ablationcam", "eigen-cam": "eigencam",
            "eigengrad-cam": "eigengradcam", "smooth-grad-cam": "smoothgradcam", "layer-cam": "layercam",
            "xgrad-cam": "xgradcam", "hires-cam": "hirescam"}


@dataclasses.dataclass
class CAMResult:
    """maps (B, *size); scores: the target score of each input (B,); target: the resolved target
    (fixed class indices / masks, reusable on x ⊙ CAM); weights (B, K) where the method has them;
    activations / gradients at the layer when ``keep=True``."""
    maps: torch.Tensor
    scores: torch.Tensor
    target: Any
    weights: Optional[torch.Tensor] = None
    activations: Optional[torch.Tensor] = None
    gradients: Optional[torch.Tensor] = None


def _check_input(x: torch.Tensor) -> None:
    if not torch.is_tensor(x):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"x must be floating point, got {x.dtype}")
    if x.dim() < 3 or x.dim() > 5:
        raise ValueError(f"x must be (B, C, *spatial) with 1-3 spatial dims, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("x: empty batch")


def _forward_grad(model, x, layer, target, differentiable):
    """One forward + backward of the part after the layer. Returns (A, G, scores, resolved target)."""
    with LayerCapture(model, layer, prune=not differentiable) as cap:
        out = model(x)
        A = cap.activation
        tgt = _t.resolve(target, out)
        s = _t.score(tgt, out)
    if not A.requires_grad:
        raise ValueError("layer: the activation does not require grad (model run under no_grad?)")
    (G,) = torch.autograd.grad(s.sum(), A, create_graph=differentiable, allow_unused=True)
    if G is None:
        raise ValueError("target: the target score does not depend on the layer's activation")
    if not differentiable:
        A, s = A.detach(), s.detach()
    return A, G, s, tgt


def _forward_only(model, x, layer, target):
    with torch.no_grad(), LayerCapture(model, layer) as cap:
        out = model(x)
        tgt = _t.resolve(target, out)
        s = _t.score(tgt, out)
    return cap.activation, s, tgt


def _chunked_scores(model, make_rows: Callable[[int, int], torch.Tensor], total: int, rows_sample: torch.Tensor,
                    target, batch_size: int, device, dtype, layer=None, edit_factory=None) -> torch.Tensor:
    """scores[i] = target(model(row_i)) for i < total, rows built by make_rows(start, stop)."""
    scores = torch.empty(total, device=device, dtype=torch.float32 if dtype not in (torch.float64,) else dtype)
    with torch.no_grad():
        for s0 in range(0, total, batch_size):
            s1 = min(total, s0 + batch_size)
            rows = make_rows(s0, s1)
            if edit_factory is not None:
                with LayerCapture(model, layer, edit=edit_factory(s0, s1)):
                    out = model(rows)
            else:
                out = model(rows)
            scores[s0:s1] = _t.score(target, out, rows_sample[s0:s1]).to(scores.dtype)
    return scores


def _fc_weights(model: nn.Module, fc: Union[None, str, nn.Module, torch.Tensor]) -> torch.Tensor:
    if torch.is_tensor(fc):
        W = fc
    else:
        if fc is None:
            lin = [m for m in model.modules() if isinstance(m, nn.Linear)]
            if not lin:
                raise ValueError("fc: CAM needs the linear head after global pooling; the model has no nn.Linear")
            mod = lin[-1]
        else:
            mod = resolve_layer(model, fc)
        W = getattr(mod, "weight", None)
        if W is None:
            raise ValueError("fc: the given layer has no weight")
        W = W.reshape(W.shape[0], -1)
    if W.dim() != 2:
        raise ValueError(f"fc: expected a (classes, channels) weight, got shape {tuple(W.shape)}")
    return W.detach()


def compute_cam(model: nn.Module, x: torch.Tensor, layer: LayerSpec, method: str = "gradcam", target: Any = None, *,
                size: Union[str, None, Sequence[int]] = "input", relu: bool = True, normalize: bool = True,
                align_corners: bool = False, differentiable: bool = False, batch_size: int = 32,
                keep: bool = False,
                # method options
                n: int = 1, procedure: str = "usv", reduction: str = "all", svd_method: str = "closed",
                gradcampp_denominator: str = "paper", eigen_center: bool = True, eigen_sign: str = "channel_sum",
                scorecam_softmax: bool = True, scorecam_align_corners: bool = False,
                scorecam_normalize_first: bool = False,
                fc: Union[None, str, nn.Module, torch.Tensor] = None,
                smooth_samples: int = 8, smooth_sigma: float = 0.15, seed: Optional[int] = 0) -> CAMResult:
    """Class activation maps of ``model`` at ``layer`` for ``x`` (B, C, *spatial), 1-3 spatial dims.

    method: one of ``METHODS`` (``gradcam, hirescam, gradcam++, xgradcam, layercam, eigengradcam,
    svdgradcam, smoothgradcam, cam, eigencam, scorecam, ablationcam``).
    target: None (predicted class), an int / per-sample ints, ``ClassTarget``, ``SegmentationTarget``
    or a callable output -> (B,). size: ``"input"`` (x's spatial size), None (layer resolution) or
    a tuple. differentiable: keep the graph (create_graph) so the maps can be back-propagated.
    batch_size: rows per chunk for Score-CAM, Ablation-CAM and Smooth-Grad-CAM (bounds memory).
    Score-CAM: masks = min-max(upsample(A_k)) (pytorch-grad-cam: ``scorecam_align_corners=True``) or
    upsample(min-max(A_k)) (``scorecam_normalize_first=True``: TorchCAM); softmax over channels.
    Grad-CAM++: ``gradcampp_denominator`` "paper" (pytorch-grad-cam) or "torchcam".
    SVD-Grad-CAM: ``n``, ``procedure`` (usv|uv|u|vt), ``reduction`` (all|paper_literal), see
    :func:`svd_gradcam_weights`. Returns a :class:`CAMResult`.
    """
    _check_input(x)
    method = _ALIASES.get(str(method).lower(), str(method).lower())
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    batch_size = int(batch_size)
    # option names checked here, before any forward, with the names compute_cam gives them
    # (the weight functions call them method / denominator / sign)
    for name, val, ok in (("svd_method", svd_method, ("closed", "explicit")),
                          ("gradcampp_denominator", gradcampp_denominator, ("paper", "torchcam")),
                          ("eigen_sign", eigen_sign, ("channel_sum", "none"))):
        if val not in ok:
            raise ValueError(f"{name} must be one of {ok}, got {val!r}")
    target = _t.as_target(target)
    if isinstance(size, str) and size == "input":
        size = tuple(x.shape[2:])
    elif size is not None:
        size = _check_size(size)
        if len(size) != x.dim() - 2:
            raise ValueError(f"size: {len(size)} dims for an input with {x.dim() - 2} spatial dims")
    epi = dict(size=size, relu=relu, normalize=normalize, align_corners=align_corners, out_dtype=x.dtype)
    B = x.shape[0]
    W = None
    G = None
    if method == "smoothgradcam":
        if smooth_samples < 1 or smooth_sigma < 0:
            raise ValueError("smooth_samples must be >= 1 and smooth_sigma >= 0")
        with torch.no_grad():
            out = model(x)
        tgt = _t.resolve(target, out)
        s = _t.score(tgt, out).detach()
        gen = torch.Generator(device=x.device)
        if seed is not None:
            gen.manual_seed(seed)
        span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view((-1,) + (1,) * (x.dim() - 1))
        acc = None
        rows_all = torch.arange(B, device=x.device).repeat(smooth_samples)
        xs = x.detach().repeat((smooth_samples,) + (1,) * (x.dim() - 1))
        noise = torch.randn(xs.shape, generator=gen, device=x.device, dtype=x.dtype) * (smooth_sigma * span.repeat(
            (smooth_samples,) + (1,) * (x.dim() - 1)))
        xs = xs + noise
        for s0 in range(0, xs.shape[0], batch_size):
            s1 = min(xs.shape[0], s0 + batch_size)
            rows = rows_all[s0:s1]
            sub = _RowTarget(tgt, rows)
            A_, G_, _, _ = _forward_grad(model, xs[s0:s1], layer, sub, differentiable)
            m = torch.einsum("bk,bkn->bn", gradcam_weights(G_), A_.flatten(2).to(gradcam_weights(G_).dtype))
            part = torch.zeros((B, m.shape[1]), device=x.device, dtype=m.dtype).index_add(0, rows, m)
            acc = part if acc is None else acc + part
        maps = (acc / smooth_samples).reshape((B,) + tuple(A_.shape[2:]))
        return CAMResult(cam_epilogue(maps=maps, **epi), s, tgt)

    if method in GRADIENT_METHODS:
        A, G, s, tgt = _forward_grad(model, x, layer, target, differentiable)
        if method == "gradcam":
            W = gradcam_weights(G)
        elif method == "gradcam++":
            W = gradcampp_weights(A, G, denominator=gradcampp_denominator)
        elif method == "xgradcam":
            W = xgradcam_weights(A, G)
        elif method == "svdgradcam":
            W = svd_gradcam_channel_weights(G, n, procedure, reduction, method=svd_method)
        if W is not None:
            maps = cam_epilogue(A, W, **epi)
        elif method == "hirescam":
            maps = cam_epilogue(maps=hirescam_map(A, G), **epi)
        elif method == "layercam":
            maps = cam_epilogue(maps=layercam_map(A, G), **epi)
        else:  # eigengradcam
            maps = cam_epilogue(maps=eigen_projection(G * A, center=eigen_center, sign=eigen_sign), **epi)
    else:
        A, s, tgt = _forward_only(model, x, layer, target)
        if differentiable and method != "cam":
            raise ValueError(f"differentiable=True is supported for gradient methods and 'cam', not {method!r}")
        if method == "cam":
            if not isinstance(tgt, _t.ClassTarget):
                raise ValueError("target: CAM needs a class target (ClassTarget / int / None)")
            Wfc = _fc_weights(model, fc)
            if Wfc.shape[1] != A.shape[1]:
                raise ValueError(f"fc: head has {Wfc.shape[1]} inputs but the layer has {A.shape[1]} channels")
            W = Wfc[tgt.index.to(Wfc.device)].to(A.device)
            if differentiable:
                with LayerCapture(model, layer) as cap:
                    model(x)
                A = cap.activation
            maps = cam_epilogue(A, W, **epi)
        elif method == "eigencam":
            maps = cam_epilogue(maps=eigen_projection(A, center=eigen_center, sign=eigen_sign), **epi)
        elif method == "scorecam":
            W = _scorecam_weights(model, x, A, tgt, batch_size, scorecam_softmax, scorecam_align_corners,
                                  scorecam_normalize_first)
            maps = cam_epilogue(A, W, **epi)
        else:
            W = _ablation_weights(model, x, layer, A, s, tgt, batch_size)
            maps = cam_epilogue(A, W, **epi)
    return CAMResult(maps, s, tgt, W, A if keep else None, G if keep else None)


class _RowTarget:
    """A resolved target restricted to given sample rows (for repeated/noisy copies)."""

    def __init__(self, tgt, rows):
        self.tgt, self.rows = tgt, rows

    def __call__(self, output):
        return _t.score(self.tgt, output, self.rows)


def _minmax_rows(m, eps=1e-8):
    flat = m.flatten(1)
    lo, hi = flat.amin(1), flat.amax(1)
    view = (-1,) + (1,) * (m.dim() - 1)
    return (m - lo.view(view)) / (hi - lo + eps).view(view)


def _scorecam_weights(model, x, A, tgt, batch_size, softmax, align_corners, normalize_first=False):
    B, K = A.shape[:2]
    Af = A.flatten(0, 1)                                        # (B·K, *S)
    if normalize_first:                                         # TorchCAM: normalise, then upsample
        Af = _minmax_rows(Af)
    sample = torch.arange(B, device=x.device).repeat_interleave(K)
    size = tuple(x.shape[2:])

    def rows(s0, s1):
        m = resize_maps(Af[s0:s1].to(x.dtype), size, align_corners)
        if not normalize_first:                                 # pytorch-grad-cam: upsample, then normalise
            m = _minmax_rows(m)
        return x[sample[s0:s1]] * m[:, None]

    sc = _chunked_scores(model, rows, B * K, sample, tgt, batch_size, x.device, x.dtype).view(B, K)
    return torch.softmax(sc, dim=1) if softmax else sc


def _ablation_weights(model, x, layer, A, s, tgt, batch_size):
    B, K = A.shape[:2]
    sample = torch.arange(B, device=x.device).repeat_interleave(K)
    chan = torch.arange(K, device=x.device).repeat(B)

    def rows(s0, s1):
        return x[sample[s0:s1]]

    def edit_factory(s0, s1):
        keep = torch.ones((s1 - s0, K), device=x.device, dtype=A.dtype)
        keep[torch.arange(s1 - s0, device=x.device), chan[s0:s1]] = 0
        view = keep.shape + (1,) * (A.dim() - 2)
        return lambda act: act * keep.view(view).to(act.dtype)

    ya = _chunked_scores(model, rows, B * K, sample, tgt, batch_size, x.device, x.dtype, layer=layer,
                         edit_factory=edit_factory).view(B, K)
    y = s.to(ya.dtype)[:, None]
    # y = 0 (e.g. an empty segmentation mask) made every weight 0/0 = NaN: there the weights are
    # y − y_k, the definition without its per-sample factor 1/y (a positive factor leaves the
    # normalised map unchanged; an empty mask gives y_k = 0, so an all-zero CAM as other methods)
    return (y - ya) / torch.where(y != 0, y, torch.ones_like(y))
