"""The label-aware first pass without autograd, for heads that are a plain tower.

:class:`~medseg_ext.losses.label_aware.LabelAwareModulation` needs, per step, the head's first
pass on the features x and the vector–Jacobian products g = J(x)ᵀ·u of the sigmoid scores w.r.t. x
for one (LAreg) or two (LAcls) one-hot cotangents. For a head that is a chain of

    Conv2d (stride 1, dilation 1, groups 1, zero padding p ≤ k − 1), GroupNorm, ReLU, Identity
    (nested nn.Sequential allowed: ATSS / FCOS / RetinaNet / GFL towers + classifier or regressor)

this module runs that pass by hand: a forward in ``torch.no_grad()`` that keeps exactly what the
backward needs (convolution inputs, GroupNorm input, mean, rstd; ReLU outputs), then each VJP layer by
layer with ATen's own backward kernels (``convolution_backward`` with the input gradient only,
``native_group_norm_backward``, ``threshold_backward``; with ``conv='nnpack'`` a convolution's input
gradient is the forward convolution of the cotangent with the transposed, flipped kernel, padding
k − 1 − p). No autograd graph is built or retained and no weight gradients are touched. float32/bfloat16 CPU tensors run the whole pass in channels_last (oneDNN's NHWC
convolutions; about 15 % faster than NCHW at 64 channels here, on a par at 256); float64, other dtypes and
CUDA stay NCHW. The VJPs equal autograd's to rounding. Speed: one VJP costs one forward (each convolution's
input gradient is a convolution of the same size), so the pass costs about three forwards of the head, as
with autograd; what this path adds is no graph, and ``torch.inference_mode()`` support. (NNPACK's Winograd
path, ``conv='nnpack'``, is kept for measurements: on a par with channels_last at 64 channels, 2× slower
than oneDNN at 256.)

Forward hooks, subclasses of the listed modules and any other layer make :func:`compile_tower`
return None, and LabelAwareModulation falls back to autograd.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

_NNPACK: Optional[bool] = None


def nnpack_ready() -> bool:
    """NNPACK compiled in and initialised (``torch.backends.nnpack.is_available`` runs nnp_initialize)."""
    global _NNPACK
    if _NNPACK is None:
        try:
            _NNPACK = bool(torch.backends.nnpack.is_available())
        except Exception:  # noqa: BLE001 - a build without NNPACK
            _NNPACK = False
    return _NNPACK


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or getattr(m, "_forward_hooks_with_kwargs", None))


def _conv_padding(m: nn.Conv2d) -> Optional[Tuple[int, int]]:
    k = m.kernel_size
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return (0, 0)
        if m.padding == "same" and k[0] % 2 == 1 and k[1] % 2 == 1:
            return (k[0] // 2, k[1] // 2)
        return None  # 'same' with an even kernel pads asymmetrically
    p = tuple(int(v) for v in m.padding)
    if any(v < 0 or v > kk - 1 for v, kk in zip(p, k)):
        return None
    return p


def compile_tower(head: nn.Module) -> Optional[List[nn.Module]]:
    """The head as a flat list of supported layers, or None when it is anything else."""
    layers: List[nn.Module] = []

    def walk(m: nn.Module) -> bool:
        if _has_hooks(m):
            return False
        if type(m) is nn.Sequential:
            return all(walk(child) for child in m)
        if type(m) is nn.Conv2d:
            if (tuple(m.stride) != (1, 1) or tuple(m.dilation) != (1, 1) or m.groups != 1
                    or m.padding_mode != "zeros" or _conv_padding(m) is None):
                return False
            layers.append(m)
            return True
        if type(m) in (nn.GroupNorm, nn.ReLU):
            layers.append(m)
            return True
        return type(m) is nn.Identity

    if not walk(head) or not any(type(m) is nn.Conv2d for m in layers):
        return None
    return layers


CONV_ENGINES = ("auto", "nchw", "channels_last", "nnpack")


def _layout(x: torch.Tensor, conv: str) -> str:
    if conv != "auto":
        if conv == "nnpack" and not (x.dtype == torch.float32 and x.device.type == "cpu" and nnpack_ready()):
            return "nchw"
        return conv
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) and torch.backends.mkldnn.is_available():
        return "channels_last"
    return "nchw"


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], padding, layout: str):
    if layout == "nnpack" and tuple(weight.shape[2:]) == (3, 3):
        if bias is None:
            bias = weight.new_zeros(weight.shape[0])  # NNPACK's entry point wants a bias
        return torch._nnpack_spatial_convolution(x.contiguous(), weight.contiguous(), bias.contiguous(),
                                                 list(padding), [1, 1])
    return torch.nn.functional.conv2d(x, weight, bias, 1, tuple(padding))


class TowerPass:
    """One first pass: ``logits`` (the head's output for x) and :meth:`vjp`, g = Jᵀ·u w.r.t. x."""

    def __init__(self, layers: List[nn.Module], x: torch.Tensor, conv: str = "auto"):
        if x.dim() != 4:
            raise ValueError(f"x: expected (B, F, H, W) features, got shape {tuple(x.shape)}")
        if conv not in CONV_ENGINES:
            raise ValueError(f"conv: expected one of {CONV_ENGINES}, got {conv!r}")
        self.layout = _layout(x, conv)
        self.memory_format = torch.channels_last if self.layout == "channels_last" else torch.contiguous_format
        self.tape = []
        with torch.no_grad():
            h = x.detach()
            owned = False
            if self.layout == "channels_last" and not h.is_contiguous(memory_format=torch.channels_last):
                h, owned = h.contiguous(memory_format=torch.channels_last), True
            for m in layers:
                if type(m) is nn.Conv2d:
                    if h.shape[1] != m.in_channels:
                        raise ValueError(f"x: the head's Conv2d expects {m.in_channels} channels, got {h.shape[1]}")
                    pad = _conv_padding(m)
                    w = m.weight.detach().contiguous(memory_format=self.memory_format)
                    self.tape.append(("conv", w, pad, h))
                    h = _conv(h, w, None if m.bias is None else m.bias.detach(), pad, self.layout)
                    owned = True
                elif type(m) is nn.GroupNorm:
                    N, C = h.shape[0], h.shape[1]
                    if C != m.num_channels:
                        raise ValueError(f"x: the head's GroupNorm expects {m.num_channels} channels, got {C}")
                    hxw = h[0, 0].numel() if N * C else 0
                    h = h.contiguous(memory_format=self.memory_format)
                    wgt = None if m.weight is None else m.weight.detach()
                    y, mean, rstd = torch.native_group_norm(h, wgt, None if m.bias is None else m.bias.detach(),
                                                            N, C, hxw, m.num_groups, m.eps)
                    self.tape.append(("gn", h, mean, rstd, wgt, m.num_groups))
                    h, owned = y, True
                else:  # ReLU
                    h = torch.relu_(h) if owned else torch.relu(h)
                    owned = True
                    self.tape.append(("relu", h))
        self.logits = h
        self._flipped = {}

    def _flip(self, i: int, w: torch.Tensor) -> torch.Tensor:
        wt = self._flipped.get(i)
        if wt is None:
            wt = w.transpose(0, 1).flip(2, 3).contiguous(memory_format=self.memory_format)
            self._flipped[i] = wt
        return wt

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        """Jᵀ·u: the gradient w.r.t. x of Σ logits·u (u of the logits' shape)."""
        if u.shape != self.logits.shape:
            raise ValueError(f"u: expected the logits' shape {tuple(self.logits.shape)}, got {tuple(u.shape)}")
        with torch.no_grad():
            d = u.contiguous(memory_format=self.memory_format)
            for i in range(len(self.tape) - 1, -1, -1):
                entry = self.tape[i]
                kind = entry[0]
                if kind == "conv":
                    _, w, pad, h = entry
                    if self.layout == "nnpack":
                        k = w.shape[2:]
                        d = _conv(d, self._flip(i, w), None, (k[0] - 1 - pad[0], k[1] - 1 - pad[1]), self.layout)
                    else:  # the input-gradient kernel autograd itself calls (weight/bias gradients masked off)
                        d = torch.ops.aten.convolution_backward(
                            d.contiguous(memory_format=self.memory_format), h, w, None, [1, 1], list(pad), [1, 1],
                            False, [0, 0], 1, [True, False, False])[0]
                elif kind == "gn":
                    _, h, mean, rstd, wgt, groups = entry
                    N, C = h.shape[0], h.shape[1]
                    hxw = h[0, 0].numel() if N * C else 0
                    d = torch.ops.aten.native_group_norm_backward(d.contiguous(memory_format=self.memory_format), h,
                                                                  mean, rstd, wgt, N, C, hxw, groups,
                                                                  [True, False, False])[0]
                else:
                    d = torch.ops.aten.threshold_backward(d, entry[1], 0)
        return d


__all__ = ["compile_tower", "TowerPass", "nnpack_ready", "CONV_ENGINES"]
