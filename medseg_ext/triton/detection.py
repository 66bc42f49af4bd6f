"""Triton kernels of the fused detection losses (spec: csrc/losses/detection.h, the CPU kernels).

Each program covers BLOCK rows (anchors, boxes) and writes the rows' gradient, optionally their
per-element losses, one partial sum of the weighted loss, and two counters of bad values (labels
or targets out of range, NaN inputs). The host sums the partials in float64 in a fixed order
(deterministic, no float atomics) and checks the counters with one host sync.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_TINY = 1.1754943508222875e-38  # smallest normal float32: log stays finite


@triton.jit
def _log1p_unit(e):
    # log(1 + e) for e in [0, 1], exact for tiny e (the rounding of 1 + e cancels)
    u = 1.0 + e
    d = u - 1.0
    return tl.where(d == 0.0, e, tl.log(u) * (e / tl.where(d == 0.0, 1.0, d)))


@triton.jit
def _focal_kernel(z_ptr, y_ptr, w_ptr, grad_ptr, elem_ptr, partial_ptr, bad_ptr, N, C, zs0, zs1, ys0, ws0, ws1,
                  alpha, gamma, scale, tiny, HAS_W: tl.constexpr, ELEM: tl.constexpr, GAMMA_TWO: tl.constexpr,
                  C_PAD: tl.constexpr, BLOCK: tl.constexpr, F64: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    r = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    rm = r < N
    c = tl.arange(0, C_PAD).to(tl.int64)
    m2 = rm[:, None] & (c < C)[None, :]
    z = tl.load(z_ptr + r[:, None] * zs0 + c[None, :] * zs1, mask=m2, other=0.0)
    z = z.to(tl.float64) if F64 else z.to(tl.float32)
    y = tl.load(y_ptr + r * ys0, mask=rm, other=0).to(tl.int64)
    bad_label = tl.sum(tl.where(rm & ((y < 0) | (y > C)), 1, 0), axis=0)
    bad_nan = tl.sum(tl.sum(tl.where(m2 & (z != z), 1, 0), axis=1), axis=0)
    t = tl.where(c[None, :] == y[:, None], 1.0, 0.0).to(z.dtype)
    if HAS_W:
        w = tl.load(w_ptr + r[:, None] * ws0 + c[None, :] * ws1, mask=m2, other=0.0).to(z.dtype)
        bad_nan += tl.sum(tl.sum(tl.where(m2 & (w != w), 1, 0), axis=1), axis=0)
    else:
        w = tl.where(m2, 1.0, 0.0).to(z.dtype)
    e = tl.exp(-tl.abs(z))
    inv = 1.0 / (1.0 + e)
    p = tl.where(z >= 0, inv, e * inv)
    q = tl.where(z >= 0, e * inv, inv)
    bce = tl.maximum(z, 0.0) - z * t + _log1p_unit(e)
    pos = t > 0.5
    pt = tl.where(pos, q, p)
    aw = tl.where(pos, alpha, 1.0 - alpha)
    if GAMMA_TWO:
        mod = pt * pt
        dmod = 2.0 * pt
    else:
        lg = tl.log(tl.maximum(pt, tiny))
        zero = pt <= 0.0
        mod = tl.where(zero & (gamma > 0.0), 0.0, tl.exp(gamma * lg))
        dmod = gamma * tl.where(zero & (gamma != 1.0), 0.0, tl.exp((gamma - 1.0) * lg))
    dpt = tl.where(pos, -p, p) * q
    loss = tl.where(m2, aw * w * bce * mod, 0.0)
    grad = aw * w * ((p - t) * mod + bce * dmod * dpt) * scale
    off = r[:, None] * C + c[None, :]
    tl.store(grad_ptr + off, grad.to(grad_ptr.dtype.element_ty), mask=m2)
    if ELEM:
        tl.store(elem_ptr + off, (loss * scale).to(elem_ptr.dtype.element_ty), mask=m2)
    tl.store(partial_ptr + pid, tl.sum(tl.sum(loss, axis=1), axis=0))
    tl.store(bad_ptr + pid * 2, bad_label)
    tl.store(bad_ptr + pid * 2 + 1, bad_nan)


@triton.jit
def _dfl_kernel(z_ptr, y_ptr, w_ptr, grad_ptr, elem_ptr, partial_ptr, bad_ptr, N, K, zs0, zs1, ys0, ws0, scale,
                HAS_W: tl.constexpr, ELEM: tl.constexpr, K_PAD: tl.constexpr, BLOCK: tl.constexpr,
                F64: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    r = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    rm = r < N
    k = tl.arange(0, K_PAD).to(tl.int64)
    m2 = rm[:, None] & (k < K)[None, :]
    z = tl.load(z_ptr + r[:, None] * zs0 + k[None, :] * zs1, mask=m2, other=0.0)
    z = z.to(tl.float64) if F64 else z.to(tl.float32)
    y = tl.load(y_ptr + r * ys0, mask=rm, other=0.0)
    y = y.to(tl.float64) if F64 else y.to(tl.float32)
    if HAS_W:
        w = tl.load(w_ptr + r * ws0, mask=rm, other=0.0).to(z.dtype)
    else:
        w = tl.where(rm, 1.0, 0.0).to(z.dtype)
    bad_target = tl.sum(tl.where(rm & ((y >= 0.0) & (y <= (K - 1)) == 0), 1, 0), axis=0)
    zm = tl.where(m2, z, float("-inf"))
    m = tl.max(zm, axis=1)
    row_bad = (tl.sum(tl.where(m2 & (z != z), 1, 0), axis=1) > 0) | (m == float("inf")) | (m == float("-inf"))
    row_bad = row_bad | (w != w)
    bad_nan = tl.sum(tl.where(rm & row_bad, 1, 0), axis=0)
    m = tl.where(rm & (row_bad == 0), m, 0.0)
    e = tl.where(m2, tl.exp(zm - m[:, None]), 0.0)
    s = tl.sum(e, axis=1)
    s = tl.where(s > 0, s, 1.0)
    yc = tl.minimum(tl.maximum(y, 0.0), (K - 1) * 1.0)
    left = tl.minimum(yc.to(tl.int64), K - 1)
    right = tl.minimum(left + 1, K - 1)
    wl = (left + 1).to(z.dtype) - yc
    wr = yc - left.to(z.dtype)
    zz = tl.where(m2, z, 0.0)
    zl = tl.sum(tl.where(k[None, :] == left[:, None], zz, 0.0), axis=1) - m
    zr = tl.sum(tl.where(k[None, :] == right[:, None], zz, 0.0), axis=1) - m
    lse = tl.log(s)
    loss = wl * (lse - zl) + tl.where(wr > 0, wr * (lse - zr), 0.0)
    loss = tl.where(rm, loss * w, 0.0)
    f = w * scale
    hit = tl.where(k[None, :] == left[:, None], wl[:, None], 0.0) + tl.where(k[None, :] == right[:, None],
                                                                              wr[:, None], 0.0)
    grad = (e / s[:, None] * (wl + wr)[:, None] - hit) * f[:, None]
    tl.store(grad_ptr + r[:, None] * K + k[None, :], grad.to(grad_ptr.dtype.element_ty), mask=m2)
    if ELEM:
        tl.store(elem_ptr + r, (loss * scale).to(elem_ptr.dtype.element_ty), mask=rm)
    tl.store(partial_ptr + pid, tl.sum(loss, axis=0))
    tl.store(bad_ptr + pid * 2, bad_target)
    tl.store(bad_ptr + pid * 2 + 1, bad_nan)


@triton.jit
def _dmax(u, v):
    # d max(u, v)/du as torch.maximum: 1, 1/2 at a tie, 0
    return tl.where(u > v, 1.0, tl.where(u == v, 0.5, 0.0))


@triton.jit
def _giou_kernel(a_ptr, b_ptr, w_ptr, grad_ptr, elem_ptr, partial_ptr, bad_ptr, N, as0, as1, bs0, bs1, ws0, eps,
                 scale, HAS_W: tl.constexpr, ELEM: tl.constexpr, BLOCK: tl.constexpr, F64: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    r = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    rm = r < N
    a0 = tl.load(a_ptr + r * as0, mask=rm, other=0.0)
    a1 = tl.load(a_ptr + r * as0 + as1, mask=rm, other=0.0)
    a2 = tl.load(a_ptr + r * as0 + 2 * as1, mask=rm, other=1.0)
    a3 = tl.load(a_ptr + r * as0 + 3 * as1, mask=rm, other=1.0)
    b0 = tl.load(b_ptr + r * bs0, mask=rm, other=0.0)
    b1 = tl.load(b_ptr + r * bs0 + bs1, mask=rm, other=0.0)
    b2 = tl.load(b_ptr + r * bs0 + 2 * bs1, mask=rm, other=1.0)
    b3 = tl.load(b_ptr + r * bs0 + 3 * bs1, mask=rm, other=1.0)
    if F64:
        a0, a1, a2, a3 = a0.to(tl.float64), a1.to(tl.float64), a2.to(tl.float64), a3.to(tl.float64)
        b0, b1, b2, b3 = b0.to(tl.float64), b1.to(tl.float64), b2.to(tl.float64), b3.to(tl.float64)
    else:
        a0, a1, a2, a3 = a0.to(tl.float32), a1.to(tl.float32), a2.to(tl.float32), a3.to(tl.float32)
        b0, b1, b2, b3 = b0.to(tl.float32), b1.to(tl.float32), b2.to(tl.float32), b3.to(tl.float32)
    if HAS_W:
        w = tl.load(w_ptr + r * ws0, mask=rm, other=0.0).to(a0.dtype)
    else:
        w = tl.where(rm, 1.0, 0.0).to(a0.dtype)
    nan = (a0 != a0) | (a1 != a1) | (a2 != a2) | (a3 != a3) | (b0 != b0) | (b1 != b1) | (b2 != b2) | (b3 != b3)
    bad_nan = tl.sum(tl.where(rm & (nan | (w != w)), 1, 0), axis=0)
    wa = a2 - a0
    ha = a3 - a1
    union_raw = (wa * ha + (b2 - b0) * (b3 - b1))
    iwx = tl.minimum(a2, b2) - tl.maximum(a0, b0)
    iwy = tl.minimum(a3, b3) - tl.maximum(a1, b1)
    cwx = tl.maximum(iwx, 0.0)
    cwy = tl.maximum(iwy, 0.0)
    overlap = cwx * cwy
    union_raw = union_raw - overlap
    uni = tl.maximum(union_raw, eps)
    ewx_raw = tl.maximum(a2, b2) - tl.minimum(a0, b0)
    ewy_raw = tl.maximum(a3, b3) - tl.minimum(a1, b1)
    ewx = tl.maximum(ewx_raw, 0.0)
    ewy = tl.maximum(ewy_raw, 0.0)
    enc_raw = ewx * ewy
    enc = tl.maximum(enc_raw, eps)
    giou = overlap / uni - (enc - uni) / enc
    loss = tl.where(rm, (1.0 - giou) * w, 0.0)
    up = -w * scale
    g_uni = up * (-overlap / (uni * uni) + 1.0 / enc)
    g_enc = up * (-uni / (enc * enc))
    g_union_raw = g_uni * _dmax(union_raw, eps)
    g_overlap = up / uni - g_union_raw
    g_enc_raw = g_enc * _dmax(enc_raw, eps)
    g_ewx = g_enc_raw * ewy * tl.where(ewx_raw > 0, 1.0, 0.0)
    g_ewy = g_enc_raw * ewx * tl.where(ewy_raw > 0, 1.0, 0.0)
    g_iwx = g_overlap * cwy * tl.where(iwx > 0, 1.0, 0.0)
    g_iwy = g_overlap * cwx * tl.where(iwy > 0, 1.0, 0.0)
    g0 = -g_union_raw * ha - g_iwx * _dmax(a0, b0) - g_ewx * _dmax(b0, a0)
    g2 = g_union_raw * ha + g_iwx * _dmax(b2, a2) + g_ewx * _dmax(a2, b2)
    g1 = -g_union_raw * wa - g_iwy * _dmax(a1, b1) - g_ewy * _dmax(b1, a1)
    g3 = g_union_raw * wa + g_iwy * _dmax(b3, a3) + g_ewy * _dmax(a3, b3)
    et = grad_ptr.dtype.element_ty
    tl.store(grad_ptr + r * 4, g0.to(et), mask=rm)
    tl.store(grad_ptr + r * 4 + 1, g1.to(et), mask=rm)
    tl.store(grad_ptr + r * 4 + 2, g2.to(et), mask=rm)
    tl.store(grad_ptr + r * 4 + 3, g3.to(et), mask=rm)
    if ELEM:
        tl.store(elem_ptr + r, (loss * scale).to(elem_ptr.dtype.element_ty), mask=rm)
    tl.store(partial_ptr + pid, tl.sum(loss, axis=0))
    tl.store(bad_ptr + pid * 2, 0)
    tl.store(bad_ptr + pid * 2 + 1, bad_nan)


# ---------------------------------------------------------------- host side


def _buffers(x: torch.Tensor, n_prog: int, grad_shape, elem_shape, elementwise: bool):
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    grad = torch.empty(grad_shape, dtype=x.dtype, device=x.device)
    elem = torch.empty(elem_shape, dtype=x.dtype, device=x.device) if elementwise else grad
    partial = torch.zeros(max(n_prog, 1), dtype=acc, device=x.device)
    bad = torch.zeros((max(n_prog, 1), 2), dtype=torch.int32, device=x.device)
    return grad, elem, partial, bad


def _finish(partial, bad, scale: float, elementwise: bool, elem, dtype, first: str, second: str):
    counts = bad.sum(dim=0).tolist()  # the one host sync of the call
    if counts[0]:
        raise ValueError(first.format(counts[0]))
    if counts[1]:
        raise ValueError(second.format(counts[1]))
    if elementwise:
        return elem
    total = partial.sum(dtype=torch.float64) * scale
    return total.to(torch.float64 if dtype == torch.float64 else torch.float32)


def sigmoid_focal(logits, labels, weight, alpha: float, gamma: float, scale: float, elementwise: bool):
    N, C = logits.shape
    BLOCK = 64
    C_PAD = max(triton.next_power_of_2(C), 2)
    n_prog = triton.cdiv(N, BLOCK)
    grad, elem, partial, bad = _buffers(logits, n_prog, (N, C), (N, C), elementwise)
    if N and C:
        w = weight if weight is not None else logits
        ws = (w.stride(0), w.stride(1) if w.dim() == 2 else 0) if weight is not None else (0, 0)
        _focal_kernel[(n_prog,)](logits, labels, w, grad, elem, partial, bad, N, C, logits.stride(0),
                                 logits.stride(1), labels.stride(0), ws[0], ws[1], alpha, gamma, scale, _TINY,
                                 HAS_W=weight is not None, ELEM=elementwise, GAMMA_TWO=gamma == 2.0, C_PAD=C_PAD,
                                 BLOCK=BLOCK, F64=logits.dtype == torch.float64)
    loss = _finish(partial, bad, scale, elementwise, elem, logits.dtype,
                   "labels: {} value(s) outside [0, C] (C means background)", "logits or weight: {} NaN value(s)")
    return loss, grad


def distribution_focal(logits, target, weight, scale: float, elementwise: bool):
    N, K = logits.shape
    BLOCK = 32
    K_PAD = max(triton.next_power_of_2(K), 2)
    n_prog = triton.cdiv(N, BLOCK)
    grad, elem, partial, bad = _buffers(logits, n_prog, (N, K), (N,), elementwise)
    if N:
        w = weight if weight is not None else target
        _dfl_kernel[(n_prog,)](logits, target, w, grad, elem, partial, bad, N, K, logits.stride(0), logits.stride(1),
                               target.stride(0), w.stride(0) if weight is not None else 0, scale,
                               HAS_W=weight is not None, ELEM=elementwise, K_PAD=K_PAD, BLOCK=BLOCK,
                               F64=logits.dtype == torch.float64)
    loss = _finish(partial, bad, scale, elementwise, elem, logits.dtype,
                   "target: {} value(s) outside [0, K - 1]",
                   "logits or weight: {} row(s) with NaN, +inf or all -inf")
    return loss, grad


def giou(pred, target, weight, eps: float, scale: float, elementwise: bool):
    N = pred.shape[0]
    BLOCK = 128
    n_prog = triton.cdiv(N, BLOCK)
    grad, elem, partial, bad = _buffers(pred, n_prog, (N, 4), (N,), elementwise)
    if N:
        w = weight if weight is not None else pred
        _giou_kernel[(n_prog,)](pred, target, w, grad, elem, partial, bad, N, pred.stride(0), pred.stride(1),
                                target.stride(0), target.stride(1), w.stride(0) if weight is not None else 0, eps,
                                scale, HAS_W=weight is not None, ELEM=elementwise, BLOCK=BLOCK,
                                F64=pred.dtype == torch.float64)
    loss = _finish(partial, bad, scale, elementwise, elem, pred.dtype, "internal: {}",
                   "pred, target or weight: {} box(es) with NaN")
    return loss, grad


# ---------------------------------------------------------------- label-aware mechanism


@triton.jit
def _la_modulate_kernel(x_ptr, g1_ptr, g2_ptr, out_ptr, factor_ptr, n, a, b, c, HAS_G2: tl.constexpr,
                        BLOCK: tl.constexpr, F64: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    m = i < n
    x = tl.load(x_ptr + i, mask=m, other=0.0)
    g1 = tl.load(g1_ptr + i, mask=m, other=0.0)
    x = x.to(tl.float64) if F64 else x.to(tl.float32)
    g1 = g1.to(tl.float64) if F64 else g1.to(tl.float32)
    f = a + b / (1.0 + tl.exp(-g1))
    if HAS_G2:
        g2 = tl.load(g2_ptr + i, mask=m, other=0.0)
        g2 = g2.to(tl.float64) if F64 else g2.to(tl.float32)
        f = f - c / (1.0 + tl.exp(-g2))
    tl.store(out_ptr + i, (x * f).to(out_ptr.dtype.element_ty), mask=m)
    tl.store(factor_ptr + i, f.to(factor_ptr.dtype.element_ty), mask=m)


def la_modulate(x, g1, g2, a: float, b: float, c: float):
    """(x·factor, factor) with factor = a + b·σ(g1) − c·σ(g2); contiguous outputs of x's dtype."""
    xc, g1c = x.contiguous(), g1.contiguous()
    g2c = g2.contiguous() if g2 is not None else g1c
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    factor = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    n = x.numel()
    if n:
        bad = torch.isnan(g1c).any() | (torch.isnan(g2c).any() if g2 is not None else False)
        if bool(bad):  # the one host sync of the call
            raise ValueError("gradients: NaN in the label gradient g1/g2")
        BLOCK = 1024
        _la_modulate_kernel[(triton.cdiv(n, BLOCK),)](xc, g1c, g2c, out, factor, n, a, b, c,
                                                      HAS_G2=g2 is not None, BLOCK=BLOCK,
                                                      F64=x.dtype == torch.float64)
    return out, factor


@triton.jit
def _confuse_kernel(s_ptr, y_ptr, assigned_ptr, confuse_ptr, y1_ptr, y2_ptr, bad_ptr, R, C, HW, W,
                    sb, sc, sh, sw, yb, yh, yw, HAS_LABELS: tl.constexpr, ONEHOT: tl.constexpr,
                    C_PAD: tl.constexpr, BLOCK: tl.constexpr, F64: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    r = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    rm = r < R
    bi = r // HW
    hw = r % HW
    hi = hw // W
    wi = hw % W
    c = tl.arange(0, C_PAD).to(tl.int64)
    m2 = rm[:, None] & (c < C)[None, :]
    v = tl.load(s_ptr + (bi * sb + hi * sh + wi * sw)[:, None] + c[None, :] * sc, mask=m2, other=0.0)
    v = v.to(tl.float64) if F64 else v.to(tl.float32)
    bad_score = tl.sum(tl.sum(tl.where(m2 & ((v >= 0.0) == 0), 1, 0), axis=1), axis=0)
    vm = tl.where(m2, v, float("-inf"))
    best = tl.max(vm, axis=1)
    top = tl.min(tl.where(vm == best[:, None], c[None, :], C_PAD), axis=1)  # ties: lowest index
    if HAS_LABELS:
        assigned = tl.load(y_ptr + bi * yb + hi * yh + wi * yw, mask=rm, other=0).to(tl.int64)
        bad_label = tl.sum(tl.where(rm & ((assigned < 0) | (assigned > C)), 1, 0), axis=0)
    else:
        assigned = top
        bad_label = tl.sum(tl.where(rm & (rm == 0), 1, 0), axis=0)
    v2 = tl.where(c[None, :] == assigned[:, None], tl.where(m2, 0.0, float("-inf")), vm)
    best2 = tl.max(v2, axis=1)
    confuse = tl.min(tl.where(v2 == best2[:, None], c[None, :], C_PAD), axis=1)
    tl.store(assigned_ptr + r, assigned, mask=rm)
    tl.store(confuse_ptr + r, confuse, mask=rm)
    if ONEHOT:
        off = (bi * C * HW + hw)[:, None] + c[None, :] * HW
        et = y1_ptr.dtype.element_ty
        tl.store(y1_ptr + off, tl.where(c[None, :] == assigned[:, None], 1.0, 0.0).to(et), mask=m2)
        tl.store(y2_ptr + off, tl.where(c[None, :] == confuse[:, None], 1.0, 0.0).to(et), mask=m2)
    tl.store(bad_ptr + pid * 2, bad_label)
    tl.store(bad_ptr + pid * 2 + 1, bad_score)


def confuse_labels(scores, labels, onehot: bool):
    """scores (B, C, H, W); labels (B, H, W) int64 or None -> (assigned, confuse[, y1, y2]) like the CPU kernel."""
    B, C, H, W = scores.shape
    R = B * H * W
    dev = scores.device
    assigned = torch.empty((B, H, W), dtype=torch.int64, device=dev)
    confuse = torch.empty((B, H, W), dtype=torch.int64, device=dev)
    y1 = torch.empty(scores.shape, dtype=scores.dtype, device=dev) if onehot else scores
    y2 = torch.empty(scores.shape, dtype=scores.dtype, device=dev) if onehot else scores
    BLOCK = 64
    n_prog = triton.cdiv(R, BLOCK)
    bad = torch.zeros((max(n_prog, 1), 2), dtype=torch.int32, device=dev)
    if R:
        lab = labels if labels is not None else assigned
        _confuse_kernel[(n_prog,)](scores, lab, assigned, confuse, y1, y2, bad, R, C, H * W, W,
                                   scores.stride(0), scores.stride(1), scores.stride(2), scores.stride(3),
                                   lab.stride(0), lab.stride(1), lab.stride(2), HAS_LABELS=labels is not None,
                                   ONEHOT=onehot, C_PAD=max(triton.next_power_of_2(C), 2), BLOCK=BLOCK,
                                   F64=scores.dtype == torch.float64)
    counts = bad.sum(dim=0).tolist()
    if counts[0]:
        raise ValueError(f"labels: {counts[0]} value(s) outside [0, C] (C means background)")
    if counts[1]:
        raise ValueError(f"scores: {counts[1]} value(s) below 0 or NaN (expected probabilities, e.g. sigmoid outputs)")
    return (assigned, confuse, y1, y2) if onehot else (assigned, confuse)
