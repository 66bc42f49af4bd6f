"""Triton kernels for fused_stats and its backward (spec: csrc/losses/region_stats.h and the
docstrings of medseg_ext/losses/fused.py; the eager twin ``torch_fused_stats`` is the oracle).

Layout as in region_stats.py: a program covers BLOCK_S spatial elements of one sample and all
classes (a C_PAD x BLOCK_S tile in registers), so a softmax needs one read of the logits. The
forward writes per-program partials of the 8 per-class sums I, P, G, Q, Spos, Sneg, Ph, TPh and
three int32 counts (valid elements, bad logits, bad labels); the host adds them in float64 in a
fixed order (deterministic, no float atomics). The backward re-reads logits + labels and writes
dL/dlogits from the (U, C) coefficients dL/dI, dL/dP, dL/dQ, dL/dSpos, dL/dSneg.

Pointwise kinds (constexpr KIND): 0 none, 1 log, 2 focal, 3 el, 4 dibe (sigmoid only). Each term
is evaluated in the "positive orientation" (lp = log p of the element's own class for softmax /
g = 1 sigmoid; log(1 - p) and the roles of p, q swapped for the sigmoid g = 0 term) and gives
f and kappa = p * df/dp; the logit gradient is kappa * ([c == y] - p_c) for softmax, kappa * q
(g = 1) or -kappa * p (g = 0) for sigmoid. Arithmetic is float32 (float64 for float64 logits)
whatever the input dtype; the gradient is stored in the logits' dtype.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .region_stats import geometry, load_labels_logits

N_SUMS = 8  # I, P, G, Q, Spos, Sneg, Ph, TPh


@triton.jit
def _log1p01(x):
    """log(1 + x) for x in [0, 1] without cancellation (Goldberg: log(u) * x / (u - 1), u = 1 + x)."""
    u = 1.0 + x
    d = u - 1.0
    return tl.where(d == 0.0, x, tl.log(u) * x / tl.where(d == 0.0, 1.0, d))


@triton.jit
def _pow_pos(x, e, zero_value):
    """x ** e for x >= 0 (e is a runtime scalar); x == 0 gives zero_value (0, or 1 when e == 0)."""
    pos = x > 0.0
    return tl.where(pos, tl.exp(e * tl.log(tl.where(pos, x, 1.0))), zero_value)


@triton.jit
def _pointwise(lp, p, q, same, gamma, a, KIND: tl.constexpr):
    """f and kappa = p * df/dp of one term in the positive orientation (region_stats_cpu.cpp)."""
    zero = lp * 0.0
    if KIND == 1:  # -log p
        f = -lp
        kappa = zero - 1.0
    elif KIND == 3:  # (-log p) ** gamma
        u = -lp
        f = _pow_pos(u, gamma, tl.where(gamma > 0.0, 0.0, 1.0))
        kappa = tl.where(u > 0.0, -gamma * _pow_pos(u, gamma - 1.0, 0.0), 0.0)
        kappa = tl.where(gamma == 1.0, zero - 1.0, kappa)
    elif KIND == 2 or KIND == 4:  # focal -(1 - p) ** gamma * log p (DIBE_Dis: where yhat == y)
        qg = _pow_pos(q, gamma, tl.where(gamma > 0.0, 0.0, 1.0))
        f = -qg * lp
        lead = tl.where(q > 0.0, gamma * p * _pow_pos(q, gamma - 1.0, 0.0) * lp, 0.0)
        lead = tl.where(gamma == 0.0, 0.0, lead)  # 0 * (1/q) * log p is 0, not NaN, as q -> 0
        kappa = lead - qg
        if KIND == 4:  # yhat != y: -(1 - p ** a) ** gamma * a * log p
            pa = _pow_pos(p, a, 0.0)
            w = 1.0 - pa
            wg = _pow_pos(w, gamma, tl.where(gamma > 0.0, 0.0, 1.0))
            f_mod = -wg * a * lp
            k_mod = tl.where(w > 0.0, a * _pow_pos(w, gamma - 1.0, 0.0) * (gamma * a * pa * lp - w), 0.0)
            f = tl.where(same, f, f_mod)
            kappa = tl.where(same, kappa, k_mod)
    else:
        f = zero
        kappa = zero
    return f, kappa


@triton.jit
def _tile(logits_ptr, labels_ptr, b, blk, C, S, S2, S3, lb, lc, l1, l2, l3, yb, y1, y2, y3, ignore_index, prm_ptr,
          HAS_IGNORE: tl.constexpr, SIGMOID: tl.constexpr, BINARY: tl.constexpr, KIND: tl.constexpr,
          C_PAD: tl.constexpr, BLOCK_S: tl.constexpr, F64: tl.constexpr):
    """Loads one tile and evaluates everything both passes need.

    Returns s, in_range, valid, bad_label, bad_logit, c, cmask, m2 (class x element mask of valid
    elements), p, q (sigmoid: 1 - p, accurate), g, yhat, and the pointwise f, kappa: for softmax per element (1-D, the target
    class's term), for sigmoid per (class, element) (the g = 1 or g = 0 term)."""
    # pointwise parameters in the compute dtype (a float kernel argument would be float32)
    gamma = tl.load(prm_ptr + 0)
    a_pos = tl.load(prm_ptr + 1)
    a_neg = tl.load(prm_ptr + 2)
    zt = tl.load(prm_ptr + 3)
    s, in_range, valid, bad_label, c, cmask, m2, cls, z, has_nan = load_labels_logits(
        logits_ptr, labels_ptr, b, blk, C, S, S2, S3, lb, lc, l1, l2, l3, yb, y1, y2, y3, ignore_index,
        HAS_IGNORE, BINARY, C_PAD, BLOCK_S, F64)
    g = (c[:, None] == cls[None, :]) & m2
    if SIGMOID:
        bad_logit = valid & has_nan
        e = tl.exp(-tl.abs(z))
        r = 1.0 / (1.0 + e)
        er = e * r
        pos_z = z >= 0.0
        p = tl.where(pos_z, r, er)
        q = tl.where(pos_z, er, r)
        yhat = (z > zt) & m2
        if KIND != 0:
            l1p = _log1p01(e)
            lp = -(tl.maximum(-z, 0.0) + l1p)
            lq = -(tl.maximum(z, 0.0) + l1p)
            # one evaluation per element in its own orientation: g = 1 -> f(p), g = 0 -> f(1 - p)
            f, kappa = _pointwise(tl.where(g, lp, lq), tl.where(g, p, q), tl.where(g, q, p), yhat == g, gamma,
                                  tl.where(g, a_pos, a_neg), KIND)
            f = tl.where(m2, f, 0.0)
            kappa = tl.where(m2, kappa, 0.0)
        else:
            f = p * 0.0
            kappa = f
        p = tl.where(m2, p, 0.0)
        q = tl.where(m2, q, 0.0)
    else:
        zm = tl.where(m2, z, float("-inf"))
        m = tl.max(zm, axis=0)
        bad_logit = valid & (has_nan | (m == float("inf")) | (m == float("-inf")))
        m = tl.where(valid & (bad_logit == 0), m, 0.0)
        sh = zm - m[None, :]
        ex = tl.where(m2, tl.exp(sh), 0.0)
        denom = tl.sum(ex, axis=0)
        denom = tl.where(valid, denom, 1.0)
        p = ex / denom[None, :]
        p = tl.where(m2, p, 0.0)
        # argmax, first index on ties
        first = tl.min(tl.where((zm == m[None, :]) & m2, c[:, None], C_PAD), axis=0)
        yhat = (c[:, None] == first[None, :]) & m2
        if KIND != 0:
            lp = tl.sum(tl.where(g, sh, 0.0), axis=0) - tl.log(denom)
            py = tl.sum(tl.where(g, p, 0.0), axis=0)
            qy = tl.sum(tl.where(m2 & (g == 0), p, 0.0), axis=0)  # 1 - p_y without cancellation
            f, kappa = _pointwise(lp, py, qy, valid, gamma, a_pos, KIND)
            f = tl.where(valid, f, 0.0)
            kappa = tl.where(valid, kappa, 0.0)
        else:
            f = tl.sum(p, axis=0) * 0.0
            kappa = f
        q = p  # unused for softmax (the target's complement is taken inside the pointwise term)
    return s, in_range, valid, bad_label, bad_logit, c, cmask, m2, p, q, g, yhat, f, kappa


@triton.jit
def _fused_fwd_kernel(logits_ptr, labels_ptr, partial_ptr, counts_ptr, C, S, S2, S3, n_progs, iters,
                      lb, lc, l1, l2, l3, yb, y1, y2, y3, ignore_index, prm_ptr,
                      HAS_IGNORE: tl.constexpr, SIGMOID: tl.constexpr, BINARY: tl.constexpr, KIND: tl.constexpr,
                      C_PAD: tl.constexpr, BLOCK_S: tl.constexpr, F64: tl.constexpr):
    """Program (pid, b) sums the tiles pid * iters ... pid * iters + iters - 1 of sample b in registers
    and writes one partial, so the partials stay small when C is large (tiles are then narrow)."""
    pid = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1).to(tl.int64)
    if F64:
        acc_dt = tl.float64
    else:
        acc_dt = tl.float32
    a_i = tl.zeros([C_PAD], dtype=acc_dt)
    a_p = tl.zeros([C_PAD], dtype=acc_dt)
    a_g = tl.zeros([C_PAD], dtype=acc_dt)
    a_q = tl.zeros([C_PAD], dtype=acc_dt)
    a_sp = tl.zeros([C_PAD], dtype=acc_dt)
    a_sn = tl.zeros([C_PAD], dtype=acc_dt)
    a_ph = tl.zeros([C_PAD], dtype=acc_dt)
    a_tp = tl.zeros([C_PAD], dtype=acc_dt)
    n_valid = tl.zeros([BLOCK_S], dtype=tl.int32)
    n_bad_logit = tl.zeros([BLOCK_S], dtype=tl.int32)
    n_bad_label = tl.zeros([BLOCK_S], dtype=tl.int32)
    for it in range(0, iters):
        blk = pid * iters + it
        s, in_range, valid, bad_label, bad_logit, c, cmask, m2, p, q, g, yhat, f, kappa = _tile(
            logits_ptr, labels_ptr, b, blk, C, S, S2, S3, lb, lc, l1, l2, l3, yb, y1, y2, y3, ignore_index,
            prm_ptr, HAS_IGNORE, SIGMOID, BINARY, KIND, C_PAD, BLOCK_S, F64)
        gf = tl.where(g, 1.0, 0.0).to(p.dtype)
        hf = tl.where(yhat, 1.0, 0.0).to(p.dtype)
        a_i += tl.sum(p * gf, axis=1)
        a_p += tl.sum(p, axis=1)
        a_g += tl.sum(gf, axis=1)
        a_q += tl.sum(p * p, axis=1)
        if KIND != 0:
            if SIGMOID:
                a_sp += tl.sum(tl.where(g, f, 0.0), axis=1)
                a_sn += tl.sum(tl.where(m2 & (g == 0), f, 0.0), axis=1)
            else:
                a_sp += tl.sum(tl.where(g, f[None, :], 0.0), axis=1)
        a_ph += tl.sum(hf, axis=1)
        a_tp += tl.sum(hf * gf, axis=1)
        n_valid += valid.to(tl.int32)
        n_bad_logit += bad_logit.to(tl.int32)
        n_bad_label += bad_label.to(tl.int32)
    c = tl.arange(0, C_PAD).to(tl.int64)
    cmask = c < C
    base = (b * n_progs + pid) * 8
    tl.store(partial_ptr + (base + 0) * C + c, a_i, mask=cmask)
    tl.store(partial_ptr + (base + 1) * C + c, a_p, mask=cmask)
    tl.store(partial_ptr + (base + 2) * C + c, a_g, mask=cmask)
    tl.store(partial_ptr + (base + 3) * C + c, a_q, mask=cmask)
    tl.store(partial_ptr + (base + 4) * C + c, a_sp, mask=cmask)
    tl.store(partial_ptr + (base + 5) * C + c, a_sn, mask=cmask)
    tl.store(partial_ptr + (base + 6) * C + c, a_ph, mask=cmask)
    tl.store(partial_ptr + (base + 7) * C + c, a_tp, mask=cmask)
    cbase = (b * n_progs + pid) * 3
    tl.store(counts_ptr + cbase + 0, tl.sum(n_valid, axis=0))
    tl.store(counts_ptr + cbase + 1, tl.sum(n_bad_logit, axis=0))
    tl.store(counts_ptr + cbase + 2, tl.sum(n_bad_label, axis=0))


@triton.jit
def _fused_bwd_kernel(logits_ptr, labels_ptr, coeff_ptr, grad_ptr, C, S, S2, S3,
                      lb, lc, l1, l2, l3, yb, y1, y2, y3, ignore_index, prm_ptr,
                      HAS_IGNORE: tl.constexpr, SIGMOID: tl.constexpr, BINARY: tl.constexpr, KIND: tl.constexpr,
                      PER_SAMPLE: tl.constexpr, C_PAD: tl.constexpr, BLOCK_S: tl.constexpr, F64: tl.constexpr):
    blk = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1).to(tl.int64)
    s, in_range, valid, bad_label, bad_logit, c, cmask, m2, p, q, g, yhat, f, kappa = _tile(
        logits_ptr, labels_ptr, b, blk, C, S, S2, S3, lb, lc, l1, l2, l3, yb, y1, y2, y3, ignore_index,
        prm_ptr, HAS_IGNORE, SIGMOID, BINARY, KIND, C_PAD, BLOCK_S, F64)
    if PER_SAMPLE:
        u = b
    else:
        u = b * 0
    # coeff: (U, C, 5) = dL/dI, dL/dP, dL/dQ, dL/dSpos, dL/dSneg
    cb = (u * C + c) * 5
    d_i = tl.load(coeff_ptr + cb + 0, mask=cmask, other=0.0).to(p.dtype)
    d_p = tl.load(coeff_ptr + cb + 1, mask=cmask, other=0.0).to(p.dtype)
    d_q = tl.load(coeff_ptr + cb + 2, mask=cmask, other=0.0).to(p.dtype)
    h = d_p[:, None] + tl.where(g, d_i[:, None], 0.0) + 2.0 * d_q[:, None] * p
    if SIGMOID:
        dz = p * q * h
        if KIND != 0:
            d_pos = tl.load(coeff_ptr + cb + 3, mask=cmask, other=0.0).to(p.dtype)
            d_neg = tl.load(coeff_ptr + cb + 4, mask=cmask, other=0.0).to(p.dtype)
            dz += tl.where(g, d_pos[:, None] * kappa * q, -d_neg[:, None] * kappa * p)
    else:
        dot = tl.sum(p * h, axis=0)
        dz = p * (h - dot[None, :])
        if KIND != 0:
            d_pos = tl.load(coeff_ptr + cb + 3, mask=cmask, other=0.0).to(p.dtype)
            ky = tl.sum(tl.where(g, d_pos[:, None], 0.0), axis=0) * kappa  # cpos_y * kappa
            dz += tl.where(g, ky[None, :], 0.0) - p * ky[None, :]
    dz = tl.where(m2, dz, 0.0)
    out = grad_ptr + (b * C + c[:, None]) * S + s[None, :]
    tl.store(out, dz.to(grad_ptr.dtype.element_ty), mask=cmask[:, None] & in_range[None, :])


# Launch shape (never timed on a GPU; chosen from ptxas -v register counts for sm_90a of every
# kind: a 1024-element tile with 8 warps needs <= ~125 registers per thread in the forward, with its
# loop-carried per-class sums, and <= ~60 in the backward, spilling nothing; the region kernel's
# 4096-element tile with 4 warps would use 255 registers and spill for the focal/DIBE kinds).
TILE_ELEMS = 1024
NUM_WARPS = 8
TARGET_PROGRAMS = 4096  # forward: programs to aim for over the whole batch (then tiles per program)


def _tile_shape(C: int):
    c_pad = max(2, triton.next_power_of_2(C))
    block_s = max(16, min(1024, TILE_ELEMS // c_pad))
    return c_pad, block_s


def _forward_grid(B: int, S: int, block_s: int):
    """(programs per sample, tiles per program) for the forward kernel."""
    n_tiles = triton.cdiv(S, block_s)
    per_sample = max(1, min(n_tiles, triton.cdiv(TARGET_PROGRAMS, max(B, 1))))
    iters = triton.cdiv(n_tiles, per_sample)
    return triton.cdiv(n_tiles, iters), iters


def _scalars(logits, ignore_index, spec):
    """ignore_index and the (4,) tensor gamma, a_pos, a_neg, logit_threshold in the compute dtype."""
    cdt = torch.float64 if logits.dtype == torch.float64 else torch.float32
    prm = torch.tensor([float(v) for v in spec[1:5]], dtype=cdt).to(logits.device, non_blocking=True)
    return 0 if ignore_index is None else int(ignore_index), prm


def fused_partials(logits: torch.Tensor, labels: torch.Tensor, sigmoid: bool, ignore_index: Optional[int], spec):
    """Per-program partials: (B, n_programs, 8, C) sums of I, P, G, Q, Spos, Sneg, Ph, TPh (float32;
    float64 for float64 logits) and (B, n_programs, 3) int32 counts of valid elements, bad logits, bad
    labels (n_programs * B is about TARGET_PROGRAMS). ``spec``: a PointwiseSpec (kind, gamma, a_pos, a_neg, logit_threshold, ...)."""
    B, C, S, S2, S3, ls, ys = geometry(logits, labels)
    c_pad, block_s = _tile_shape(C)
    n_progs, iters = _forward_grid(B, S, block_s) if S else (0, 0)
    f64 = logits.dtype == torch.float64
    alloc = torch.empty if B and n_progs and C else torch.zeros  # the kernel writes every launched slot
    partial = alloc((B, n_progs, N_SUMS, C), dtype=torch.float64 if f64 else torch.float32, device=logits.device)
    counts = alloc((B, n_progs, 3), dtype=torch.int32, device=logits.device)
    if B == 0 or n_progs == 0 or C == 0:
        return partial, counts
    _fused_fwd_kernel[(n_progs, B)](
        logits, labels, partial, counts, C, S, S2, S3, n_progs, iters, *ls, *ys,
        *_scalars(logits, ignore_index, spec),
        HAS_IGNORE=ignore_index is not None, SIGMOID=sigmoid, BINARY=sigmoid and C == 1, KIND=int(spec[0]),
        C_PAD=c_pad, BLOCK_S=block_s, F64=f64, num_warps=NUM_WARPS)
    return partial, counts


def fused_backward(coeff: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, sigmoid: bool, per_sample: bool,
                   ignore_index: Optional[int], spec) -> torch.Tensor:
    """coeff: contiguous (U, C, 5) = dL/dI, dL/dP, dL/dQ, dL/dSpos, dL/dSneg (float32, or float64
    for float64 logits). Returns contiguous dL/dlogits in the logits' dtype."""
    B, C, S, S2, S3, ls, ys = geometry(logits, labels)
    grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
    if grad.numel() == 0:
        return grad
    c_pad, block_s = _tile_shape(C)
    n_blocks = triton.cdiv(S, block_s)
    _fused_bwd_kernel[(n_blocks, B)](
        logits, labels, coeff, grad, C, S, S2, S3, *ls, *ys, *_scalars(logits, ignore_index, spec),
        HAS_IGNORE=ignore_index is not None, SIGMOID=sigmoid, BINARY=sigmoid and C == 1, KIND=int(spec[0]),
        PER_SAMPLE=per_sample, C_PAD=c_pad, BLOCK_S=block_s, F64=logits.dtype == torch.float64,
        num_warps=NUM_WARPS)
    return grad
