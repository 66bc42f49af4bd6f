"""Triton kernels of the fused element-wise LRP stages (spec: csrc/lrp/lrp_fused.h/.cpp, the docstring
of medseg_ext/lrp/fused.py; oracle: medseg_ext/reference/lrp.py).

The same four stages as the C++ kernels, with the same per-element arithmetic in the same order:

* signed_coeffs: z, h (M, C, S), b (C,) or None, R (K, M, C, S) -> UV (K, M, 2C, S) and the float64
  sums err = sum h * (|u| + |v|), mass = sum |R|;
* combine: x (M, C, S), G (K, M, 2C, S) -> c1 * x * G[:, :, :C] + c2 * |x| * G[:, :, C:];
* eps_div: R (K, n), z (n,), mult (n,) or None -> R / stab(z) (* mult);
* norm_freeze_eps: per (m, c) plane a = w[c] / sqrt(var + norm_eps) (biased, two-pass variance in
  float64), out = R / stab(z) * (x * a).

stab(d) = d + eps * sgn0(d) with sgn0(0) = sgn0(-0) = +1; NaN stays NaN (NaN >= 0 is false).

Arithmetic: float64 for float64 tensors, float32 otherwise (float16 / bfloat16 are loaded, computed
in float32 and stored in their own dtype). Scalars (alpha, beta, gamma, eps, c1, c2, norm_eps) travel
as a float64 tensor and are rounded to the compute dtype in the kernel, like T(double) in the C++
(a Python float kernel argument would arrive as float32 and change the float64 results). float32
division and square root use the IEEE-rounded forms (tl.div_rn, tl.sqrt_rn): Triton's plain float32
``/`` is not correctly rounded on NVIDIA GPUs. The compiler may still contract a * b + c into an FMA
on a GPU, so GPU results can differ from the C++ in the last bits; under TRITON_INTERPRET=1 (NumPy)
every operation rounds separately, as in the C++ build (no FMA in the baseline objects).

Reductions are deterministic: each program sums its blocks in float64 registers and writes one
partial; the host adds the partials in a fixed order (no float atomics). Inputs are made contiguous
here. Nothing here has been run on a GPU: it is validated under the interpreter only (and compiled,
not run, for sm_90 by python_tests/lrp/test_lrp_triton.py).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

# one definition of the rule codes and argument checks, shared with the CPU/torch forms
from ..lrp.fused import RULE_IDS, check_combine_args, check_eps_div_args, check_norm_args, check_signed_args
from ..lrp.fused import TRITON_DTYPES as DTYPES

Tensor = torch.Tensor

# Launch shape (never timed on a GPU): 1024-element blocks, 4 warps; reductions loop so that at
# most TARGET_PROGRAMS partials come back to the host.
BLOCK = 1024
NUM_WARPS = 4
TARGET_PROGRAMS = 4096


@triton.jit
def _div(a, b, F64: tl.constexpr):
    if F64:
        return a / b
    else:
        return tl.div_rn(a, b)


@triton.jit
def _stab(d, eps):
    """d + eps * sgn0(d): -0 >= 0 is true (so -0 -> +eps), NaN >= 0 is false (NaN - eps = NaN)."""
    return tl.where(d >= 0.0, d + eps, d - eps)


@triton.jit
def _signed_coeffs_kernel(z_ptr, h_ptr, b_ptr, r_ptr, uv_ptr, part_ptr, prm_ptr, total, n, CS, C, S, iters,
                          RULE: tl.constexpr, HAS_BIAS: tl.constexpr, F64: tl.constexpr, BLOCK: tl.constexpr):
    """Program pid handles blocks pid * iters ... pid * iters + iters - 1 of the flat (K, M, C, S) index
    and writes its float64 partials (err, mass) to part[0, pid], part[1, pid]."""
    pid = tl.program_id(0).to(tl.int64)
    nprog = tl.num_programs(0).to(tl.int64)
    if F64:
        cdt = tl.float64
    else:
        cdt = tl.float32
    alpha = tl.load(prm_ptr + 0).to(cdt)
    beta = tl.load(prm_ptr + 1).to(cdt)
    gamma = tl.load(prm_ptr + 2).to(cdt)
    eps = tl.load(prm_ptr + 3).to(cdt)
    e_acc = tl.zeros([BLOCK], dtype=tl.float64)
    m_acc = tl.zeros([BLOCK], dtype=tl.float64)
    for it in range(0, iters):
        idx = (pid * iters + it) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
        mask = idx < total
        zi = idx % n                 # (m, c, i) of the (M, C, S) operands
        km = idx // CS
        c = (idx // S) % C
        zv = tl.load(z_ptr + zi, mask=mask, other=0.0).to(cdt)
        hv = tl.load(h_ptr + zi, mask=mask, other=0.0).to(cdt)
        rv = tl.load(r_ptr + idx, mask=mask, other=0.0).to(cdt)
        if HAS_BIAS:
            bias = tl.load(b_ptr + c, mask=mask, other=0.0).to(cdt)
        else:
            bias = tl.zeros([BLOCK], dtype=cdt)
        bpos = tl.where(bias > 0.0, bias, 0.0)
        bneg = tl.where(bias < 0.0, bias, 0.0)
        wx = zv - bias
        P = (wx + hv) * 0.5 + bpos
        if RULE == 0:  # z+
            u = _div(rv, _stab(P, eps), F64)
            v = u
        elif RULE == 1:  # alpha-beta
            N = (wx - hv) * 0.5 + bneg
            sp = rv * _div(alpha, _stab(P, eps), F64)
            sn = rv * _div(beta, _stab(N, eps), F64)
            u = sp - sn
            v = sp + sn
        else:  # gamma: only the sign class of z gets a share ([z > 0] / [z < 0]; z = 0 gets none)
            N = (wx - hv) * 0.5 + bneg
            sp = tl.where(zv > 0.0, _div(rv, _stab(zv + gamma * P, eps), F64), 0.0)
            sn = tl.where(zv < 0.0, _div(rv, _stab(zv + gamma * N, eps), F64), 0.0)
            u = sp + sn
            v = sp - sn
        uoff = idx + km * CS         # (k, m, c, i) -> (k, m, c, i) of the (K, M, 2C, S) output
        tl.store(uv_ptr + uoff, u.to(uv_ptr.dtype.element_ty), mask=mask)
        tl.store(uv_ptr + uoff + CS, v.to(uv_ptr.dtype.element_ty), mask=mask)
        e = hv.to(tl.float64) * (tl.abs(u.to(tl.float64)) + tl.abs(v.to(tl.float64)))
        e_acc += tl.where(mask, e, 0.0)
        m_acc += tl.where(mask, tl.abs(rv.to(tl.float64)), 0.0)
    tl.store(part_ptr + pid, tl.sum(e_acc, axis=0))
    tl.store(part_ptr + nprog + pid, tl.sum(m_acc, axis=0))


@triton.jit
def _combine_kernel(x_ptr, g_ptr, out_ptr, prm_ptr, total, n, CS, F64: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    if F64:
        cdt = tl.float64
    else:
        cdt = tl.float32
    a1 = tl.load(prm_ptr + 0).to(cdt)
    a2 = tl.load(prm_ptr + 1).to(cdt)
    idx = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = idx < total
    xv = tl.load(x_ptr + idx % n, mask=mask, other=0.0).to(cdt)
    goff = idx + (idx // CS) * CS
    g1 = tl.load(g_ptr + goff, mask=mask, other=0.0).to(cdt)
    g2 = tl.load(g_ptr + goff + CS, mask=mask, other=0.0).to(cdt)
    o = g1 * (a1 * xv) + g2 * (a2 * tl.abs(xv))
    tl.store(out_ptr + idx, o.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _eps_div_kernel(r_ptr, z_ptr, m_ptr, out_ptr, prm_ptr, total, n, HAS_MULT: tl.constexpr, F64: tl.constexpr,
                    BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    if F64:
        cdt = tl.float64
    else:
        cdt = tl.float32
    eps = tl.load(prm_ptr + 0).to(cdt)
    idx = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = idx < total
    zi = idx % n
    rv = tl.load(r_ptr + idx, mask=mask, other=0.0).to(cdt)
    zv = tl.load(z_ptr + zi, mask=mask, other=1.0).to(cdt)
    o = _div(rv, _stab(zv, eps), F64)
    if HAS_MULT:
        o = o * tl.load(m_ptr + zi, mask=mask, other=0.0).to(cdt)
    tl.store(out_ptr + idx, o.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _plane_sum_kernel(x_ptr, mean_ptr, part_ptr, S, iters, CENTRED: tl.constexpr, BLOCK: tl.constexpr):
    """Program (p, j) sums x (CENTRED: (x - mean[p])^2) over chunk j of plane p in float64 and writes
    part[p, j]; the chunks of a plane are then added in a fixed order. Planes on grid axis 0 (no
    65535 limit); chunks on axis 1 (at most TARGET_PROGRAMS)."""
    p = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1).to(tl.int64)
    nchunk = tl.num_programs(1).to(tl.int64)
    if CENTRED:
        mean = tl.load(mean_ptr + p)
    acc = tl.zeros([BLOCK], dtype=tl.float64)
    for it in range(0, iters):
        s = (j * iters + it) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
        mask = s < S
        xv = tl.load(x_ptr + p * S + s, mask=mask, other=0.0).to(tl.float64)
        if CENTRED:
            d = xv - mean
            acc += tl.where(mask, d * d, 0.0)
        else:
            acc += xv
    tl.store(part_ptr + p * nchunk + j, tl.sum(acc, axis=0))


@triton.jit
def _norm_apply_kernel(x_ptr, z_ptr, r_ptr, w_ptr, var_ptr, out_ptr, prm_ptr, total, n, C, S,
                       HAS_W: tl.constexpr, F64: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    if F64:
        cdt = tl.float64
    else:
        cdt = tl.float32
    norm_eps = tl.load(prm_ptr + 0).to(cdt)
    eps = tl.load(prm_ptr + 1).to(cdt)
    idx = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = idx < total
    xi = idx % n
    plane = xi // S
    var = tl.load(var_ptr + plane, mask=mask, other=1.0).to(cdt)
    if F64:
        a = 1.0 / tl.sqrt(var + norm_eps)
    else:
        a = tl.div_rn(tl.full([BLOCK], 1.0, tl.float32), tl.sqrt_rn(var + norm_eps))
    if HAS_W:
        a = a * tl.load(w_ptr + plane % C, mask=mask, other=0.0).to(cdt)
    xv = tl.load(x_ptr + xi, mask=mask, other=0.0).to(cdt)
    zv = tl.load(z_ptr + xi, mask=mask, other=1.0).to(cdt)
    rv = tl.load(r_ptr + idx, mask=mask, other=0.0).to(cdt)
    o = _div(rv, _stab(zv, eps), F64) * (xv * a)
    tl.store(out_ptr + idx, o.to(out_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------- host side


def _check(ref_name: str, **ts: Optional[Tensor]) -> torch.dtype:
    """One floating dtype in DTYPES and one device for all given tensors (None: absent)."""
    ref = ts[ref_name]
    if ref.dtype not in DTYPES:
        raise TypeError(f"{ref_name}: expected one of {[str(d) for d in DTYPES]}, got {ref.dtype}")
    for nm, t in ts.items():
        if t is None:
            continue
        if t.dtype != ref.dtype:
            raise TypeError(f"{nm}: expected dtype {ref.dtype}, got {t.dtype}")
        if t.device != ref.device:
            raise ValueError(f"{nm}: on device {t.device}, but {ref_name} is on {ref.device}")
    return ref.dtype


def _params(device, *vals: float) -> Tensor:
    return torch.tensor([float(v) for v in vals], dtype=torch.float64).to(device, non_blocking=True)


def _reduction_grid(total: int) -> Tuple[int, int]:
    """(programs, blocks per program) for a flat reduction over ``total`` elements."""
    n_blocks = triton.cdiv(total, BLOCK)
    progs = max(1, min(n_blocks, TARGET_PROGRAMS))
    iters = triton.cdiv(n_blocks, progs)
    return triton.cdiv(n_blocks, iters), iters


def signed_coeffs(z: Tensor, h: Tensor, b: Optional[Tensor], R: Tensor, rule: str, alpha: float = 2.0,
                  beta: float = 1.0, gamma: float = 0.25, epsilon: float = 1e-6) -> Tuple[Tensor, float, float]:
    """(UV (K, M, 2C, S), err, mass) of the fast signed rules; z, h (M, C, S), b (C,) or None, R (K, M, C, S)."""
    dt = _check("z", z=z, h=h, b=b, R=R)
    check_signed_args(z, h, b, R, rule, epsilon)
    K, M, C, S = R.shape
    uv = torch.empty((K, M, 2 * C, S), dtype=dt, device=z.device)
    total = R.numel()
    if total == 0:
        return uv, 0.0, 0.0
    z, h, R = z.contiguous(), h.contiguous(), R.contiguous()
    bb = b.contiguous() if b is not None else z   # any valid pointer when there is no bias
    progs, iters = _reduction_grid(total)
    part = torch.empty((2, progs), dtype=torch.float64, device=z.device)
    _signed_coeffs_kernel[(progs,)](z, h, bb, R, uv, part, _params(z.device, alpha, beta, gamma, epsilon),
                                    total, z.numel(), C * S, C, S, iters, RULE=RULE_IDS[rule],
                                    HAS_BIAS=b is not None, F64=dt == torch.float64, BLOCK=BLOCK,
                                    num_warps=NUM_WARPS)
    # fixed-order host sum of at most TARGET_PROGRAMS partials (NumPy's pairwise sum, no threads)
    err, mass = part.cpu().numpy().sum(axis=1)
    return uv, float(err), float(mass)


def combine(x: Tensor, G: Tensor, c1: float, c2: float) -> Tensor:
    """``c1 * x * G[:, :, :C] + c2 * |x| * G[:, :, C:]`` for x (M, C, S), G (K, M, 2C, S) -> (K, M, C, S)."""
    dt = _check("x", x=x, G=G)
    check_combine_args(x, G)
    K, M, C2, S = G.shape
    C = C2 // 2
    out = torch.empty((K, M, C, S), dtype=dt, device=x.device)
    total = out.numel()
    if total == 0:
        return out
    x, G = x.contiguous(), G.contiguous()
    _combine_kernel[(triton.cdiv(total, BLOCK),)](x, G, out, _params(x.device, c1, c2), total, x.numel(), C * S,
                                                  F64=dt == torch.float64, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return out


def eps_div(R: Tensor, z: Tensor, epsilon: float, mult: Optional[Tensor] = None) -> Tensor:
    """``R / stab(z)`` (times ``mult`` when given); R (K, *z.shape), mult z's shape or None."""
    dt = _check("z", R=R, z=z, mult=mult)
    check_eps_div_args(R, z, epsilon, mult)
    out = torch.empty(R.shape, dtype=dt, device=z.device)
    total = out.numel()
    if total == 0:
        return out
    Rc, zc = R.contiguous(), z.contiguous()
    mc = mult.contiguous() if mult is not None else zc
    _eps_div_kernel[(triton.cdiv(total, BLOCK),)](Rc, zc, mc, out, _params(z.device, epsilon), total, z.numel(),
                                                  HAS_MULT=mult is not None, F64=dt == torch.float64, BLOCK=BLOCK,
                                                  num_warps=NUM_WARPS)
    return out


def plane_variance(x: Tensor) -> Tensor:
    """Biased variance of each (m, c) plane of x (M, C, S), float64 (M * C,): mean, then the mean
    of squared deviations, both summed in float64 per chunk and the chunks added in a fixed order."""
    if x.dim() != 3 or not x.is_floating_point():
        raise ValueError(f"x: expected a floating (M, C, S) tensor, got {x.dtype} {tuple(x.shape)}")
    x = x.contiguous()
    M, C, S = x.shape
    planes = M * C
    if planes == 0 or S == 0:
        return torch.zeros(planes, dtype=torch.float64, device=x.device)   # the C++ gives var = 0 for S = 0
    n_blocks = triton.cdiv(S, BLOCK)
    per_plane = max(1, min(n_blocks, triton.cdiv(TARGET_PROGRAMS, planes)))
    iters = triton.cdiv(n_blocks, per_plane)
    nchunk = triton.cdiv(n_blocks, iters)
    part = torch.empty((planes, nchunk), dtype=torch.float64, device=x.device)
    _plane_sum_kernel[(planes, nchunk)](x, part, part, S, iters, CENTRED=False, BLOCK=BLOCK, num_warps=NUM_WARPS)
    mean = part.sum(dim=1) / S
    _plane_sum_kernel[(planes, nchunk)](x, mean, part, S, iters, CENTRED=True, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return part.sum(dim=1) / S


def norm_freeze_eps(x: Tensor, z: Tensor, R: Tensor, weight: Optional[Tensor], norm_eps: float,
                    epsilon: float) -> Tensor:
    """Frozen instance norm under the eps-rule: ``R / stab(z) * (x * w / sqrt(var + norm_eps))`` with the
    biased variance of each (sample, channel) plane. x, z (M, C, S); R (K, M, C, S); weight (C,) or None."""
    dt = _check("x", x=x, z=z, R=R, weight=weight)
    check_norm_args(x, z, R, weight, norm_eps, epsilon)
    out = torch.empty(R.shape, dtype=dt, device=x.device)
    total = out.numel()
    if total == 0:
        return out
    M, C, S = x.shape
    xc, zc, Rc = x.contiguous(), z.contiguous(), R.contiguous()
    var = plane_variance(xc)
    wc = weight.contiguous() if weight is not None else xc
    _norm_apply_kernel[(triton.cdiv(total, BLOCK),)](xc, zc, Rc, wc, var, out, _params(x.device, norm_eps, epsilon),
                                                     total, xc.numel(), C, S, HAS_W=weight is not None,
                                                     F64=dt == torch.float64, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return out


__all__ = ["signed_coeffs", "combine", "eps_div", "norm_freeze_eps", "plane_variance", "RULE_IDS", "DTYPES"]
