"""Triton kernels for soft_region_stats and its backward (spec: csrc/losses/region_stats.h).

A program covers BLOCK_S spatial elements of one sample and all classes at once (a C_PAD x
BLOCK_S tile in registers), so the softmax needs one read of the logits. Each program writes
its own per-class partial sums; the host sums them in float64 in a fixed order, so results are
deterministic (no float atomics).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl


@triton.jit
def load_labels_logits(logits_ptr, labels_ptr, b, blk, C, S, S2, S3, lb, lc, l1, l2, l3, yb, y1, y2, y3,
                       ignore_index, HAS_IGNORE: tl.constexpr, BINARY: tl.constexpr, C_PAD: tl.constexpr,
                       BLOCK_S: tl.constexpr, F64: tl.constexpr):
    """The labels and the C_PAD x BLOCK_S logits of one tile (any strides), shared with the fused
    kernels: s, in_range, valid, bad_label, c, cmask, m2 (class x element mask of valid elements),
    cls (the class whose g is 1; -1 for a binary background), z (compute dtype, 0 where masked) and
    has_nan per element."""
    s = blk * BLOCK_S + tl.arange(0, BLOCK_S).to(tl.int64)
    in_range = s < S
    i3 = s % S3
    rest = s // S3
    i2 = rest % S2
    i1 = rest // S2
    y = tl.load(labels_ptr + b * yb + i1 * y1 + i2 * y2 + i3 * y3, mask=in_range, other=0).to(tl.int64)
    valid = in_range
    if HAS_IGNORE:
        valid = valid & (y != ignore_index)
    if BINARY:
        ok = (y == 0) | (y == 1)
        cls = tl.where(y == 1, 0, -1)
    else:
        ok = (y >= 0) & (y < C)
        cls = y
    bad_label = valid & (ok == 0)
    valid = valid & ok
    c = tl.arange(0, C_PAD).to(tl.int64)
    cmask = c < C
    m2 = cmask[:, None] & valid[None, :]
    loff = b * lb + i1 * l1 + i2 * l2 + i3 * l3
    z = tl.load(logits_ptr + c[:, None] * lc + loff[None, :], mask=m2, other=0.0)
    if F64:
        z = z.to(tl.float64)
    else:
        z = z.to(tl.float32)
    has_nan = tl.max(tl.where(m2 & (z != z), 1, 0), axis=0) > 0
    return s, in_range, valid, bad_label, c, cmask, m2, cls, z, has_nan


@triton.jit
def _load_tile(logits_ptr, labels_ptr, b, blk, C, S, S2, S3, lb, lc, l1, l2, l3, yb, y1, y2, y3, ignore_index,
               HAS_IGNORE: tl.constexpr, SIGMOID: tl.constexpr, BINARY: tl.constexpr, C_PAD: tl.constexpr,
               BLOCK_S: tl.constexpr, F64: tl.constexpr):
    s, in_range, valid, bad_label, c, cmask, m2, cls, z, has_nan = load_labels_logits(
        logits_ptr, labels_ptr, b, blk, C, S, S2, S3, lb, lc, l1, l2, l3, yb, y1, y2, y3, ignore_index,
        HAS_IGNORE, BINARY, C_PAD, BLOCK_S, F64)
    if SIGMOID:
        e = tl.exp(-tl.abs(z))
        r = 1.0 / (1.0 + e)
        p = tl.where(z >= 0, r, e * r)
        bad_logit = valid & has_nan
    else:
        zm = tl.where(m2, z, float("-inf"))
        m = tl.max(zm, axis=0)
        bad_logit = valid & (has_nan | (m == float("inf")) | (m == float("-inf")))
        m = tl.where(valid, m, 0.0)
        e = tl.where(m2, tl.exp(zm - m[None, :]), 0.0)
        denom = tl.sum(e, axis=0)
        denom = tl.where(valid, denom, 1.0)
        p = e / denom[None, :]
    p = tl.where(m2, p, 0.0)
    g = (c[:, None] == cls[None, :]) & m2
    return s, in_range, valid, bad_label, bad_logit, c, cmask, m2, p, g


@triton.jit
def _region_stats_fwd_kernel(logits_ptr, labels_ptr, partial_ptr, counts_ptr, C, S, S2, S3, n_blocks,
                             lb, lc, l1, l2, l3, yb, y1, y2, y3, ignore_index,
                             HAS_IGNORE: tl.constexpr, SIGMOID: tl.constexpr, BINARY: tl.constexpr,
                             C_PAD: tl.constexpr, BLOCK_S: tl.constexpr, F64: tl.constexpr):
    blk = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1).to(tl.int64)
    s, in_range, valid, bad_label, bad_logit, c, cmask, m2, p, g = _load_tile(
        logits_ptr, labels_ptr, b, blk, C, S, S2, S3, lb, lc, l1, l2, l3, yb, y1, y2, y3, ignore_index,
        HAS_IGNORE, SIGMOID, BINARY, C_PAD, BLOCK_S, F64)
    gf = tl.where(g, 1.0, 0.0).to(p.dtype)
    base = (b * n_blocks + blk) * 3
    tl.store(partial_ptr + (base + 0) * C + c, tl.sum(p * gf, axis=1), mask=cmask)
    tl.store(partial_ptr + (base + 1) * C + c, tl.sum(p, axis=1), mask=cmask)
    tl.store(partial_ptr + (base + 2) * C + c, tl.sum(gf, axis=1), mask=cmask)
    tl.store(counts_ptr + base + 0, tl.sum(valid.to(tl.int32), axis=0))
    tl.store(counts_ptr + base + 1, tl.sum(bad_logit.to(tl.int32), axis=0))
    tl.store(counts_ptr + base + 2, tl.sum(bad_label.to(tl.int32), axis=0))


@triton.jit
def _region_stats_bwd_kernel(logits_ptr, labels_ptr, coeff_ptr, grad_ptr, C, S, S2, S3,
                             lb, lc, l1, l2, l3, yb, y1, y2, y3, ignore_index,
                             HAS_IGNORE: tl.constexpr, SIGMOID: tl.constexpr, BINARY: tl.constexpr,
                             PER_SAMPLE: tl.constexpr, C_PAD: tl.constexpr, BLOCK_S: tl.constexpr,
                             F64: tl.constexpr):
    blk = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1).to(tl.int64)
    s, in_range, valid, bad_label, bad_logit, c, cmask, m2, p, g = _load_tile(
        logits_ptr, labels_ptr, b, blk, C, S, S2, S3, lb, lc, l1, l2, l3, yb, y1, y2, y3, ignore_index,
        HAS_IGNORE, SIGMOID, BINARY, C_PAD, BLOCK_S, F64)
    if PER_SAMPLE:
        u = b
    else:
        u = b * 0
    d_i = tl.load(coeff_ptr + (u * C + c) * 2 + 0, mask=cmask, other=0.0).to(p.dtype)
    d_p = tl.load(coeff_ptr + (u * C + c) * 2 + 1, mask=cmask, other=0.0).to(p.dtype)
    h = d_p[:, None] + tl.where(g, d_i[:, None], 0.0)
    if SIGMOID:
        dz = p * (1.0 - p) * h
    else:
        dot = tl.sum(p * h, axis=0)
        dz = p * (h - dot[None, :])
    dz = tl.where(m2, dz, 0.0)
    out = grad_ptr + (b * C + c[:, None]) * S + s[None, :]
    tl.store(out, dz.to(grad_ptr.dtype.element_ty), mask=cmask[:, None] & in_range[None, :])


def geometry(logits: torch.Tensor, labels: torch.Tensor):
    B, C = logits.shape[:2]
    spatial = tuple(logits.shape[2:])
    pad = (1,) * (3 - len(spatial))
    S1, S2, S3 = pad + spatial
    lstr = (0,) * (3 - len(spatial)) + tuple(logits.stride()[2:])
    ystr = (0,) * (3 - len(spatial)) + tuple(labels.stride()[1:])
    return B, C, S1 * S2 * S3, S2, S3, (logits.stride(0), logits.stride(1)) + lstr, (labels.stride(0),) + ystr


def _tile(C: int):
    c_pad = max(2, triton.next_power_of_2(C))
    block_s = max(16, min(1024, 4096 // c_pad))
    return c_pad, block_s


def region_stats_partials(logits: torch.Tensor, labels: torch.Tensor, sigmoid: bool, ignore_index: Optional[int]):
    """Per-program partials: (B, n_blocks, 3, C) sums of I, P, G and (B, n_blocks, 3) int32 counts
    of valid elements, bad logits, bad labels."""
    B, C, S, S2, S3, ls, ys = geometry(logits, labels)
    c_pad, block_s = _tile(C)
    n_blocks = triton.cdiv(S, block_s)
    f64 = logits.dtype == torch.float64
    alloc = torch.empty if B and n_blocks and C else torch.zeros  # the kernel writes every launched slot
    partial = alloc((B, n_blocks, 3, C), dtype=torch.float64 if f64 else torch.float32, device=logits.device)
    counts = alloc((B, n_blocks, 3), dtype=torch.int32, device=logits.device)
    if B == 0 or n_blocks == 0 or C == 0:
        return partial, counts
    _region_stats_fwd_kernel[(n_blocks, B)](
        logits, labels, partial, counts, C, S, S2, S3, n_blocks, *ls, *ys,
        0 if ignore_index is None else ignore_index,
        HAS_IGNORE=ignore_index is not None, SIGMOID=sigmoid, BINARY=sigmoid and C == 1,
        C_PAD=c_pad, BLOCK_S=block_s, F64=f64)
    return partial, counts


def region_stats_backward(coeff: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, sigmoid: bool,
                          per_sample: bool, ignore_index: Optional[int]) -> torch.Tensor:
    """coeff: contiguous (U, C, 2) = dL/dI, dL/dP. Returns contiguous dL/dlogits in the logits dtype."""
    B, C, S, S2, S3, ls, ys = geometry(logits, labels)
    grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
    if grad.numel() == 0:
        return grad
    c_pad, block_s = _tile(C)
    n_blocks = triton.cdiv(S, block_s)
    _region_stats_bwd_kernel[(n_blocks, B)](
        logits, labels, coeff, grad, C, S, S2, S3, *ls, *ys,
        0 if ignore_index is None else ignore_index,
        HAS_IGNORE=ignore_index is not None, SIGMOID=sigmoid, BINARY=sigmoid and C == 1,
        PER_SAMPLE=per_sample, C_PAD=c_pad, BLOCK_S=block_s, F64=logits.dtype == torch.float64)
    return grad
