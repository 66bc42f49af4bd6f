"""Label-aware mechanism (LA) of Zhao et al., TIFS 2022, for overlapping objects (seeds-part1.md §1).

* :func:`dual_energy_to_rgb` — Eq. 1: two 16-bit grey images (high, low energy) to 3 channels
  (H/256, L/256, 510·σ(H/L) − 255). The paper leaves L = 0 undefined; here L = 0 with H > 0 is
  R = +inf (channel 255), and H = L = 0 is R = 0 (channel 0) — the digest's suggested rule.
* :func:`confuse_labels` — per row (sampling point) of sigmoid scores: the assigned label (or the
  argmax pseudo-label when no labels are given) and the most confusing wrong class (argmax with
  the assigned entry set to 0), optionally with the one-hot matrices Y1, Y2 (background rows of
  Y1 are zero), in one row-wise pass (CPU C++; Triton on CUDA tensors).
* :func:`la_modulate` — x·(a + b·σ(g1) − c·σ(g2)) (Eq. 7; Eq. 6 is a = 0.5, b = 1, c = 0), one
  fused pass (CPU C++; Triton on CUDA tensors); differentiable w.r.t. x with the factor held constant,
  as the authors' code does (the weights are computed without ``create_graph``).
* :class:`LabelAwareModulation` — wraps a dense head (cls: tower + classifier conv giving
  (B, C, H, W) logits; reg: tower + regressor giving (B, 4·K, H, W) side-distance bin logits),
  runs its first pass on a detached copy of x, takes g = ∇_x Σ σ(head(x))·Y by two VJPs (one when
  c = 0 or in mode 'reg'), and returns the modulated features for the second pass. Heads made of
  Conv2d/GroupNorm/ReLU in nn.Sequential (ATSS/FCOS/RetinaNet towers) take a hand-written first pass
  without an autograd graph (:mod:`.label_aware_tower`); any other head, torch.autograd.grad.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch

from .._custom_op import custom_op
from .. import _dispatch
from .._tensor import FLOAT_DTYPES, desc

_INT_DTYPES = tuple(d for d in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
                                getattr(torch, "uint16", None)) if d is not None)


_VJP_ENGINES = ("auto", "tower", "autograd")


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x) if x.dtype == np.uint16 else x)
    raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _cpu_only(**tensors) -> str:
    backend = _dispatch.select_backend(**tensors)
    if backend not in ("cpu", "reference"):
        name = next(iter(tensors))
        raise RuntimeError(f"{name}: dual_energy_to_rgb has a CPU implementation only so far (backend "
                           f"{backend!r}); move the tensors to the CPU")
    return backend


def _cpu_or_triton(**tensors) -> str:
    backend = _dispatch.select_backend(**tensors)
    if backend not in ("cpu", "reference", "triton"):
        name = next(iter(tensors))
        raise RuntimeError(f"{name}: the label-aware kernels have CPU and Triton implementations (backend "
                           f"{backend!r} asked for); install triton or move the tensors to the CPU")
    return backend


# ---------------------------------------------------------------- dual-energy pre-processing


def dual_energy_to_rgb(high, low, *, channel_axis: int = -1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Eq. 1 of the LA paper on a dual-energy pair, in one pass.

    Args:
        high, low: integer arrays of one shape (rank ≤ 4; e.g. (H, W) or (B, H, W)) with values
            in [0, 65535] (uint16, or any integer dtype; torch or NumPy), any strides.
        channel_axis: where the new 3-channel axis goes in the output (-1: channels last,
            1 for (B, 3, H, W) from a (B, H, W) batch).
        dtype: float32 (default) or float64 output.
    Returns channels (H/256, L/256, 510·σ(H/L) − 255); L = 0 gives 255 when H > 0 and 0 when H = 0.
    """
    high = _as_tensor(high, "high")
    low = _as_tensor(low, "low")
    for name, t in (("high", high), ("low", low)):
        if t.dtype not in _INT_DTYPES:
            raise TypeError(f"{name}: expected an integer dtype (uint16 raw detector counts), got {t.dtype}")
    if high.shape != low.shape:
        raise ValueError(f"low: shape {tuple(low.shape)} must equal high's {tuple(high.shape)}")
    if high.dim() > 4:
        raise ValueError(f"high: rank {high.dim()} exceeds 4")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
    nd = high.dim() + 1
    if not -nd <= channel_axis < nd:
        raise ValueError(f"channel_axis: {channel_axis} is out of range for a rank-{nd} output")
    axis = channel_axis % nd
    backend = _cpu_only(high=high, low=low)
    if backend == "reference":
        from ..reference import detection as ref

        out = torch.from_numpy(ref.dual_energy_to_rgb(high.cpu().numpy(), low.cpu().numpy())).to(dtype)
        return out.movedim(-1, axis).contiguous()
    shape = list(high.shape)
    out = torch.empty(shape[:axis] + [3] + shape[axis:], dtype=dtype)
    if high.numel():
        _dispatch.extension().dual_energy_to_rgb_cpu(desc(high), desc(low), desc(out.select(axis, 0)),
                                                     out.stride(axis))
    return out


# ---------------------------------------------------------------- labels


def _rows_view(scores: torch.Tensor):
    """(L, C) -> a (1, C, 1, L) descriptor over the same memory; (B, C, H, W) as it is."""
    if scores.dim() == 4:
        return desc(scores)
    L, C = scores.shape
    d = desc(scores)
    return (d[0], d[1], (1, C, 1, L), (0, scores.stride(1), 0, scores.stride(0)))


def confuse_labels(scores, labels=None, *, return_onehot: bool = False):
    """Assigned (or pseudo) labels and the most confusing wrong class, row by row (LAcls §1.6).

    Args:
        scores: (L, C) rows of sigmoid probabilities, or (B, C, H, W) dense maps (one row per
            location), any float dtype and strides. Values must be ≥ 0 (probabilities).
        labels: None (pseudo-labels: argmax per row, as at test time) or integer labels of shape
            (L,) / (B, H, W) in [0, C]; C is background (a zero row in Y1; its confuse label is the
            overall argmax — LA then suppresses the top wrong class there).
        return_onehot: also return Y1, Y2 of the scores' shape and dtype.
    Returns:
        (assigned, confuse) int64 of shape (L,) / (B, H, W) [, Y1, Y2]. Ties go to the lowest
        class index (torch.argmax); with pseudo-labels, confuse is the second-ranked class.
    """
    scores = _as_tensor(scores, "scores")
    if scores.dtype not in FLOAT_DTYPES:
        raise TypeError(f"scores: expected a float dtype, got {scores.dtype}")
    if scores.dim() not in (2, 4):
        raise ValueError(f"scores: expected (L, C) or (B, C, H, W), got shape {tuple(scores.shape)}")
    if scores.shape[1] == 0:
        raise ValueError("scores: the class dim C is 0")
    rows_shape = (scores.shape[0],) if scores.dim() == 2 else (scores.shape[0],) + tuple(scores.shape[2:])
    if labels is not None:
        labels = _as_tensor(labels, "labels")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise TypeError(f"labels: expected an integer dtype, got {labels.dtype}")
        if tuple(labels.shape) != rows_shape:
            raise ValueError(f"labels: expected shape {rows_shape}, got {tuple(labels.shape)}")
        if labels.device != scores.device:
            raise ValueError(f"labels: on device {labels.device}, but scores is on {scores.device}")
    backend = _cpu_or_triton(scores=scores)
    scores = scores.detach()
    if backend == "reference":
        from ..reference import detection as ref

        s2 = scores.movedim(1, -1).reshape(-1, scores.shape[1]).to(torch.float64).numpy()
        a, c = ref.confuse_labels(s2, None if labels is None else labels.reshape(-1).numpy())
        assigned = torch.from_numpy(a).reshape(rows_shape)
        confuse = torch.from_numpy(c).reshape(rows_shape)
        if not return_onehot:
            return assigned, confuse
        C = scores.shape[1]
        y1 = torch.nn.functional.one_hot(assigned, C + 1)[..., :C].movedim(-1, 1).to(scores.dtype)
        y2 = torch.nn.functional.one_hot(confuse, C).movedim(-1, 1).to(scores.dtype)
        return assigned, confuse, y1.contiguous(), y2.contiguous()
    if backend == "triton":
        from ..triton import detection as tr

        s4 = scores if scores.dim() == 4 else scores.as_strided((1, scores.shape[1], 1, scores.shape[0]),
                                                               (0, scores.stride(1), 0, scores.stride(0)))
        lab4 = None
        if labels is not None:
            lab4 = labels.to(torch.int64)
            if lab4.dim() == 1:
                lab4 = lab4.as_strided((1, 1, lab4.shape[0]), (0, 0, lab4.stride(0)))
        res = tr.confuse_labels(s4, lab4, return_onehot)
        assigned, confuse = res[0].reshape(rows_shape), res[1].reshape(rows_shape)
        if not return_onehot:
            return assigned, confuse
        y1, y2 = res[2], res[3]
        if scores.dim() == 2:
            y1, y2 = y1.reshape(scores.shape[1], -1).t(), y2.reshape(scores.shape[1], -1).t()
        return assigned, confuse, y1, y2
    assigned = torch.empty(rows_shape, dtype=torch.int64)
    confuse = torch.empty(rows_shape, dtype=torch.int64)
    y1 = y2 = None
    if return_onehot:
        # the kernel writes (B, C, H, W) contiguous; for (L, C) rows that is a (C, L) buffer
        buf_shape = tuple(scores.shape) if scores.dim() == 4 else (scores.shape[1], scores.shape[0])
        y1 = torch.empty(buf_shape, dtype=scores.dtype)
        y2 = torch.empty(buf_shape, dtype=scores.dtype)
    lab = None
    if labels is not None:
        lab_t = labels.to(torch.int64)
        if lab_t.dim() == 1:
            d = desc(lab_t)
            lab = (d[0], d[1], (1, 1, lab_t.shape[0]), (0, 0, lab_t.stride(0)))
        else:
            lab = desc(lab_t)
    _dispatch.extension().confuse_labels_cpu(_rows_view(scores), lab, assigned.data_ptr(), confuse.data_ptr(),
                                             None if y1 is None else desc(y1), None if y2 is None else desc(y2))
    if not return_onehot:
        return assigned, confuse
    if scores.dim() == 2:
        y1, y2 = y1.t(), y2.t()
    return assigned, confuse, y1, y2


# ---------------------------------------------------------------- modulation


@custom_op("medseg_ext::la_modulate", mutates_args=())
def _la_modulate_op(x: torch.Tensor, g1: torch.Tensor, g2: Optional[torch.Tensor], a: float, b: float,
                    c: float) -> Tuple[torch.Tensor, torch.Tensor]:
    backend = _cpu_or_triton(x=x)
    if backend == "triton":
        from ..triton import detection as tr

        return tr.la_modulate(x, g1, g2, a, b, c)
    if backend == "reference":  # the formula in float64 (any device)
        f = a + b * torch.sigmoid(g1.double()) - (c * torch.sigmoid(g2.double()) if g2 is not None else 0.0)
        if torch.isnan(f).any():
            raise ValueError("gradients: NaN in the label gradient g1/g2")
        return (x.double() * f).to(x.dtype), f.to(x.dtype)
    out = torch.empty(x.shape, dtype=x.dtype)
    factor = torch.empty(x.shape, dtype=x.dtype)
    if x.numel() == 0:  # empty views carry no data pointer for the kernel
        return out, factor
    _dispatch.extension().la_modulate_cpu(desc(x), desc(g1), None if g2 is None else desc(g2), a, b, c, desc(out),
                                          desc(factor))
    return out, factor


@_la_modulate_op.register_fake
def _(x, g1, g2, a, b, c):
    return x.new_empty(x.shape), x.new_empty(x.shape)


def _la_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # else autograd builds a zero gradient the size of the factor


def _la_backward(ctx, grad_out, _grad_factor):
    if grad_out is None:
        return (None,) * 6
    (factor,) = ctx.saved_tensors
    return (grad_out * factor).to(factor.dtype), None, None, None, None, None


_la_modulate_op.register_autograd(_la_backward, setup_context=_la_setup)


def check_identity_constraint(a: float, b: float, c: float, tol: float = 1e-6) -> None:
    """Eq. 8: a + 0.5·b − 0.5·c = 1, so that zero label gradients (σ = ½) leave x unchanged."""
    if not all(math.isfinite(v) for v in (a, b, c)):
        raise ValueError(f"a, b, c: expected finite values, got {a}, {b}, {c}")
    if abs(a + 0.5 * b - 0.5 * c - 1.0) > tol:
        raise ValueError(f"a, b, c: Eq. 8 requires a + 0.5·b − 0.5·c = 1 (x unchanged at zero gradient), got "
                         f"a={a}, b={b}, c={c} (sum {a + 0.5 * b - 0.5 * c}); pass enforce_identity=False to allow it")


def la_modulate(x, g1, g2=None, *, a: float = 1.0, b: float = 1.0, c: float = 1.0,
                enforce_identity: bool = True) -> torch.Tensor:
    """x·(a + b·σ(g1) − c·σ(g2)) in one pass (Eq. 7; with g2 = None: x·(a + b·σ(g1)), Eq. 6 for a = 0.5, b = 1).

    g1, g2 are constants (detached); the gradient w.r.t. x is grad·(a + b·σ(g1) − c·σ(g2)).
    ``enforce_identity`` checks Eq. 8 (a + 0.5b − 0.5c = 1; c counts as 0 when g2 is None).
    """
    x = _as_tensor(x, "x")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x: expected a float dtype, got {x.dtype}")
    if x.dim() > 5:
        raise ValueError(f"x: rank {x.dim()} exceeds 5")
    grads = []
    for name, g in (("g1", g1), ("g2", g2)):
        if g is None:
            grads.append(None)
            continue
        g = _as_tensor(g, name)
        if g.shape != x.shape:
            raise ValueError(f"{name}: shape {tuple(g.shape)} must equal x's {tuple(x.shape)}")
        if g.device != x.device:
            raise ValueError(f"{name}: on device {g.device}, but x is on {x.device}")
        grads.append(g.detach().to(x.dtype))
    if grads[0] is None:
        raise ValueError("g1: required")
    if enforce_identity:
        check_identity_constraint(a, b, c if g2 is not None else 0.0)
    out, _ = _la_modulate_op(x, grads[0], grads[1], float(a), float(b), float(c))
    return out


# ---------------------------------------------------------------- the wrapped head


class LabelAwareModulation(torch.nn.Module):
    """LA around a dense detection head (LAcls, Eq. 5/7, or LAreg, Eq. 6).

    Args:
        head: module mapping features x (B, F, H, W) to logits. mode "cls": (B, C, H, W) class
            logits (tower + classifier conv). mode "reg": (B, 4·K, H, W) discretised side-distance
            logits, K = ``num_bins`` bins per side (GFL/DFL style, K = reg_max + 1 = 17).
        mode: "cls" or "reg".
        a, b, c: Eq. 7 coefficients (defaults: cls a = b = c = 1, the paper's final setting;
            reg a = 0.5, b = 1, c unused). Eq. 8 is enforced unless ``enforce_identity=False``.
        num_bins: K for mode "reg".
        vjp: how the label gradients are taken. "auto" (default): the hand-written tower pass when the
            head is Conv2d (stride 1, dilation 1, groups 1, zero padding) / GroupNorm / ReLU / Identity
            layers in nn.Sequential and x is a non-empty (B, F, H, W) tensor, else autograd;
            "tower": that pass or ValueError; "autograd": always ``torch.autograd.grad`` (two calls).
        conv: convolution layout of the tower pass: "auto" (channels_last for float32/bfloat16 CPU
            tensors, NCHW otherwise), "nchw", "channels_last", or "nnpack" (NNPACK Winograd for the 3×3
            convolutions of float32 CPU tensors; for measurements).

    ``forward(x, labels=None)`` returns the modulated features x_new for the head's second pass.
    labels: cls — (B, H, W) assigned labels in [0, C] (C = background); reg — (B, 4, H, W)
    target bins in [0, K) (e.g. :func:`distance_bins`). None gives pseudo-labels (argmax of the
    first pass), as at test time. The first pass runs on a detached copy of x, so only the second
    pass trains the head; x_new is differentiable w.r.t. x with the LA weights held constant.
    ``label_gradients(x, labels)`` returns (g1, g2) (g2 None in reg mode) for inspection. With
    c = 0 (Eq. 4 / Eq. 7 without the confuse term) ``forward`` takes one VJP instead of two.
    """

    def __init__(self, head: torch.nn.Module, mode: str = "cls", *, a: Optional[float] = None,
                 b: Optional[float] = None, c: Optional[float] = None, num_bins: int = 17,
                 enforce_identity: bool = True, vjp: str = "auto", conv: str = "auto"):
        super().__init__()
        if mode not in ("cls", "reg"):
            raise ValueError(f"mode: expected 'cls' or 'reg', got {mode!r}")
        if vjp not in _VJP_ENGINES:
            raise ValueError(f"vjp: expected one of {_VJP_ENGINES}, got {vjp!r}")
        from .label_aware_tower import CONV_ENGINES

        if conv not in CONV_ENGINES:
            raise ValueError(f"conv: expected one of {CONV_ENGINES}, got {conv!r}")
        self.vjp, self.conv = vjp, conv
        if mode == "reg" and (not isinstance(num_bins, int) or num_bins < 2):
            raise ValueError(f"num_bins: expected an int >= 2, got {num_bins!r}")
        self.head = head
        self.mode = mode
        self.num_bins = num_bins
        default = (1.0, 1.0, 1.0) if mode == "cls" else (0.5, 1.0, 0.0)
        self.a = float(default[0] if a is None else a)
        self.b = float(default[1] if b is None else b)
        self.c = float(default[2] if c is None else c) if mode == "cls" else 0.0
        if enforce_identity:
            check_identity_constraint(self.a, self.b, self.c)

    def _onehots(self, logits: torch.Tensor, labels, batch: int, device):
        """Sigmoid scores of the first pass and the one-hot cotangents Y1, Y2 (Y2 unused in mode 'reg')."""
        if logits.dim() != 4 or logits.shape[0] != batch:
            raise ValueError(f"head: expected (B, channels, H, W) logits, got {tuple(logits.shape)}")
        s = torch.sigmoid(logits)
        B, CH, H, W = s.shape
        if self.mode == "cls":
            rows = s
        else:
            K = self.num_bins
            if CH != 4 * K:
                raise ValueError(f"head: mode 'reg' expects 4·num_bins = {4 * K} channels, got {CH}")
            rows = s.detach().reshape(B * 4, K, H, W)
            if labels is not None:
                labels = self._reg_bins(labels, B, H, W, device).reshape(B * 4, H, W)
        if labels is not None:
            labels = _as_tensor(labels, "labels").to(device)
        _, _, y1, y2 = confuse_labels(rows.detach(), labels, return_onehot=True)
        return s, y1.reshape(s.shape), y2.reshape(s.shape)

    def _reg_bins(self, labels, B: int, H: int, W: int, device) -> torch.Tensor:
        """Mode 'reg' target bins, checked: integer (B, 4, H, W) in [0, num_bins), as int64 on ``device``."""
        labels = _as_tensor(labels, "labels")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise TypeError(f"labels: expected an integer dtype, got {labels.dtype}")
        if tuple(labels.shape) != (B, 4, H, W):
            raise ValueError(f"labels: expected target bins of shape {(B, 4, H, W)}, got {tuple(labels.shape)}")
        bins = labels.to(device=device, dtype=torch.int64)
        if bins.numel() and (int(bins.min()) < 0 or int(bins.max()) >= self.num_bins):
            raise ValueError(f"labels: target bins must lie in [0, {self.num_bins})")
        return bins

    def _cotangents(self, logits: torch.Tensor, labels, batch: int, device, need_y2: bool):
        """u1 = σ'(logits)·Y1 and u2 = σ'(logits)·Y2 (None unless ``need_y2``), in the logits' memory
        layout, for the tower pass. Y1/Y2 are one-hot, so each row gets one value at one index: the
        rows' indices are gathered and σ' is written at them, instead of building dense one-hot maps and
        multiplying (which also left them in another layout than the tower's, a copy per map). The value
        is (1 − s)·s rounded as aten's sigmoid_backward rounds 1·(1 − s)·s, so both paths agree bitwise."""
        if logits.dim() != 4 or logits.shape[0] != batch:
            raise ValueError(f"head: expected (B, channels, H, W) logits, got {tuple(logits.shape)}")
        s = torch.sigmoid(logits)
        B, CH, H, W = s.shape
        s_rows = s.permute(0, 2, 3, 1)  # (B, H, W, CH): a view, contiguous when the tower is channels_last
        if self.mode == "cls":
            assigned, confuse = confuse_labels(s, None if labels is None else _as_tensor(labels, "labels").to(device))
            idx = [(assigned.unsqueeze(-1), assigned.unsqueeze(-1) < CH)]
            if need_y2:
                idx.append((confuse.unsqueeze(-1), None))
            rows = s_rows
        else:
            K = self.num_bins
            if CH != 4 * K:
                raise ValueError(f"head: mode 'reg' expects 4·num_bins = {4 * K} channels, got {CH}")
            rows = s_rows.view(B, H, W, 4, K)
            if labels is None:
                bins = rows.argmax(-1)  # pseudo-labels: ties to the lowest bin, as confuse_labels
            else:
                bins = self._reg_bins(labels, B, H, W, device).permute(0, 2, 3, 1)
            idx = [(bins.unsqueeze(-1), None)]
        out = []
        for index, valid in idx:
            safe = index.clamp(max=rows.shape[-1] - 1) if valid is not None else index
            sg = rows.gather(-1, safe)
            if sg.dtype in (torch.float16, torch.bfloat16):  # aten computes these in float32, rounds once
                sg32 = sg.float()
                val = ((1 - sg32) * sg32).to(sg.dtype)
            else:
                val = (1 - sg) * sg
            if valid is not None:  # background rows (label C): Y1 is a zero row
                val = val * valid
            u = torch.zeros_like(s)
            u_rows = u.permute(0, 2, 3, 1)  # splitting the channel dim into (4, K) is a view in any layout
            (u_rows if self.mode == "cls" else u_rows.view(B, H, W, 4, -1)).scatter_(-1, safe, val)
            out.append(u)
        return out[0], (out[1] if need_y2 else None)

    def tower_layers(self, x: torch.Tensor):
        """The head as a flat list of layers when the hand-written first pass applies to it and x, else None."""
        from .label_aware_tower import compile_tower

        if self.vjp == "autograd" or not isinstance(x, torch.Tensor) or x.dim() != 4 or x.numel() == 0:
            layers = None
        else:
            layers = compile_tower(self.head)
        if layers is None and self.vjp == "tower":
            raise ValueError("head: vjp='tower' needs a head made of Conv2d (stride 1, dilation 1, groups 1, "
                             "zero padding), GroupNorm, ReLU and Identity layers in nn.Sequential and non-empty "
                             "(B, F, H, W) features; use vjp='auto' or 'autograd' for other heads")
        return layers

    def label_gradients(self, x: torch.Tensor, labels=None):
        """(g1, g2): ∇_x Σ σ(head(x))·Y1 and ∇_x Σ σ(head(x))·Y2 (g2 None in mode 'reg').

        A tower head (see :mod:`.label_aware_tower`) takes the hand-written pass: one forward that keeps
        what the backward needs and the VJPs layer by layer, no autograd graph (``vjp='auto'``/``'tower'``;
        also under ``torch.inference_mode()``); any other head, or ``vjp='autograd'``, the paper's
        ``torch.autograd.grad`` calls.
        """
        return self._gradients(x, labels, self.mode == "cls")

    def _gradients(self, x: torch.Tensor, labels, need_g2: bool):
        layers = self.tower_layers(x)
        if layers is not None:
            from .label_aware_tower import TowerPass

            with torch.no_grad():
                tp = TowerPass(layers, x, self.conv)
                u1, u2 = self._cotangents(tp.logits, labels, x.shape[0], x.device, need_g2)
                g1 = tp.vjp(u1)
                g2 = tp.vjp(u2) if need_g2 else None
                # back to x's layout: the modulation kernel streams x, g1, g2 in one order
                cl = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
                fmt = torch.channels_last if cl else torch.contiguous_format
                g1 = g1.contiguous(memory_format=fmt)
                g2 = None if g2 is None else g2.contiguous(memory_format=fmt)
            return g1, g2
        if torch.is_inference_mode_enabled():
            raise RuntimeError("LabelAwareModulation: this head needs autograd for the label gradients, which "
                               "torch.inference_mode() switches off; run it under torch.no_grad() instead (or use "
                               "a tower head: Conv2d/GroupNorm/ReLU in nn.Sequential, see vjp='tower')")
        xi = x.detach().requires_grad_(True)
        with torch.enable_grad():
            s, y1, y2 = self._onehots(self.head(xi), labels, xi.shape[0], xi.device)
            if need_g2:
                g1 = torch.autograd.grad(s, xi, grad_outputs=(y1,), retain_graph=True)[0]
                g2 = torch.autograd.grad(s, xi, grad_outputs=(y2,))[0]
            else:
                g1 = torch.autograd.grad(s, xi, grad_outputs=(y1,))[0]
                g2 = None
        return g1, g2

    def forward(self, x: torch.Tensor, labels=None) -> torch.Tensor:
        # c = 0 (Eq. 4 / Eq. 7 without the confuse term) needs one VJP only: σ(g2) would be multiplied by 0
        g1, g2 = self._gradients(x, labels, self.mode == "cls" and self.c != 0.0)
        return la_modulate(x, g1, g2, a=self.a, b=self.b, c=self.c if g2 is not None else 0.0, enforce_identity=False)


def distance_bins(distances, stride: float, reg_max: int = 16, eps: float = 0.1) -> torch.Tensor:
    """LAreg training target bins: floor(clamp(d / stride, 0, reg_max − eps)) ∈ {0..reg_max − 1}
    (mmdet ``bbox2distance`` with max_dis = reg_max, eps = 0.1)."""
    d = _as_tensor(distances, "distances")
    if not d.dtype.is_floating_point:
        d = d.to(torch.float32)
    if not (math.isfinite(stride) and stride > 0):
        raise ValueError(f"stride: expected a finite value > 0, got {stride}")
    if torch.isnan(d).any():
        raise ValueError("distances: NaN")
    return torch.floor((d / stride).clamp(0, reg_max - eps)).to(torch.int64)


__all__ = ["dual_energy_to_rgb", "confuse_labels", "la_modulate", "LabelAwareModulation", "distance_bins",
           "check_identity_constraint"]
