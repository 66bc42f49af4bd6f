"""Fused element-wise stages of the fast signed-input z⁺ / αβ / γ rules (CPU C++ kernels, torch elsewhere).

The fast rules (see :mod:`medseg_ext.lrp.rules`) need, per weighted layer, only the cached output
``z = Wx + b``, one extra convolution ``h = |W|·|x|`` and one input-adjoint call on the stacked
weights ``[W; |W|]``, because with W⁺ = (W + |W|)/2, x⁺ = (x + |x|)/2 (and likewise for the
negative parts)

    P = W⁺x⁺ + W⁻x⁻ = (Wx + h)/2,      N = W⁻x⁺ + W⁺x⁻ = (Wx − h)/2,

and every rule's input relevance has the form ``R_in = c1·x ⊙ Wᵀu + c2·|x| ⊙ |W|ᵀv``:

=========  ====================================================  ====================  ===========
rule       denominators (stabilised, sgn₀ sign)                  u, v                  c1, c2
=========  ====================================================  ====================  ===========
z⁺         d = P + b⁺,  s = R/stab(d)                             u = v = s             ½, ½
αβ         dp = P + b⁺, dn = N + b⁻, sp = αR/stab(dp),            u = sp − sn,          ½, ½
           sn = βR/stab(dn)                                       v = sp + sn
γ          dp = z + γ(P + b⁺), dn = z + γ(N + b⁻),                u = sp + sn,          1+γ/2, γ/2
           sp = [z>0] R/stab(dp), sn = [z<0] R/stab(dn)           v = sp − sn
=========  ====================================================  ====================  ===========

Two stages, each one pass over memory:

* :func:`signed_coeffs` (z, h, b, R) → UV (K, M, 2C, S) holding [u; v] per sample (the layout
  of a groups=2 adjoint call), and the rounding-error estimate ``err = Σ h·(|u| + |v|)`` next to
  ``mass = Σ |R|``. The identity trades the exact sums of one sign for a difference, so a layer
  whose positive and negative parts are very unbalanced loses digits; the caller compares
  ``unit_roundoff · err`` with ``mass`` and recomputes such a layer with the exact block form.
* :func:`combine` (x, G) → ``c1·x ⊙ G[:, :, :C] + c2·|x| ⊙ G[:, :, C:]``.

Shapes: z, h (M, C, S); b (C,) or None; R (K, M, C, S); x (M, C', S'); G (K, M, 2C', S').
NaN/Inf: no masking; IEEE arithmetic propagates them (the engine only feeds finite inputs, and
a non-finite error estimate sends the layer to the exact path).

Implementations: CPU tensors run the C++ kernels (``USE_CPP``); CUDA tensors run the Triton kernels
of :mod:`medseg_ext.triton.lrp_fused` when triton is importable (``USE_TRITON``; not with
``MEDSEG_EXT_GPU_BACKEND=cuda``, as there are no CUDA C++ LRP kernels); ``medseg_ext.use_backend("triton")``
sends CPU tensors to the Triton kernels too (under ``TRITON_INTERPRET=1``, as the tests do). Everything
else, and every stage with either switch off, runs the multi-pass torch form below.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch

from .._tensor import desc

Tensor = torch.Tensor

RULE_IDS = {"zplus": 0, "alphabeta": 1, "gamma": 2}


def _ext(name: str = "lrp_signed_coeffs"):
    """The compiled module when it has kernel ``name`` (a build without the LRP kernels uses torch)."""
    try:
        from .._dispatch import _load_extension
        mod, _ = _load_extension()
    except Exception:  # noqa: BLE001
        return None
    if mod is None or not hasattr(mod, name):
        return None
    return mod


USE_CPP = True
"""Set to False to run the torch form on CPU tensors too (tests and benchmarks compare both)."""


USE_TRITON = True
"""Set to False to run the torch form instead of the Triton kernels (on CUDA tensors, and inside
``use_backend("triton")``); tests and benchmarks compare both."""

TRITON_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)  # what the Triton stages take


def _triton_importable() -> bool:
    from .._dispatch import _triton_status
    return _triton_status()[0]


def _use_triton(*ts: Tensor) -> bool:
    """Triton for CUDA tensors (or any device inside ``use_backend("triton")``), when importable."""
    if not USE_TRITON or not all(t.dtype in TRITON_DTYPES for t in ts):
        return False
    from .._dispatch import GPU_BACKEND_ENV, _override
    if getattr(_override, "name", None) == "triton":
        if not _triton_importable():
            raise RuntimeError("use_backend('triton'): triton is not importable here; install triton or leave "
                               "the backend automatic")
        return True
    return all(t.device.type == "cuda" for t in ts) and _triton_importable() \
        and os.environ.get(GPU_BACKEND_ENV, "auto").lower() != "cuda"


def _tr():
    from ..triton import lrp_fused
    return lrp_fused


def _use_cpp(name: str, *ts: Tensor) -> bool:
    return USE_CPP and all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) for t in ts) \
        and _ext(name) is not None


def _check_float(**named) -> None:
    """Each named argument (None skipped) must be a floating-point torch.Tensor: the torch forms would
    otherwise promote integer tensors silently and the kernels reject them with a less direct message."""
    for nm, t in named.items():
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{nm}: expected a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{nm}: expected a floating-point tensor, got {t.dtype}")


def check_signed_args(z: Tensor, h: Tensor, b: Optional[Tensor], R: Tensor, rule: str, epsilon: float) -> None:
    """Shapes, dtypes and constants of :func:`signed_coeffs` (shared with its Triton form)."""
    _check_float(z=z, h=h, b=b, R=R)
    if z.dim() != 3 or h.shape != z.shape:
        raise ValueError(f"z, h: expected equal (M, C, S) shapes, got {tuple(z.shape)} and {tuple(h.shape)}")
    if R.dim() != 4 or tuple(R.shape[1:]) != tuple(z.shape):
        raise ValueError(f"R: expected shape (K, *{tuple(z.shape)}), got {tuple(R.shape)}")
    if b is not None and (b.dim() != 1 or b.shape[0] != z.shape[1]):
        raise ValueError(f"b: expected shape ({z.shape[1]},), got {tuple(b.shape)}")
    for nm, t in (("z", z), ("h", h), ("R", R)) + ((("b", b),) if b is not None else ()):
        if t.dtype != z.dtype:
            raise TypeError(f"{nm}: expected dtype {z.dtype}, got {t.dtype}")
        if not t.is_floating_point():
            raise TypeError(f"{nm}: expected a floating-point tensor, got {t.dtype}")
    if rule not in RULE_IDS:
        raise ValueError(f"rule: expected one of {tuple(RULE_IDS)}, got {rule!r}")
    if not epsilon > 0:
        raise ValueError(f"epsilon: the fused stages need epsilon > 0, got {epsilon}")


def _coefficients(rule: str, gamma: float) -> Tuple[float, float]:
    """(c1, c2) of the combine stage for a checked rule."""
    if rule in ("zplus", "alphabeta"):
        return 0.5, 0.5
    return 1.0 + gamma / 2, gamma / 2


def signed_coeffs(z: Tensor, h: Tensor, b: Optional[Tensor], R: Tensor, rule: str, alpha: float = 2.0,
                  beta: float = 1.0, gamma: float = 0.25, epsilon: float = 1e-6
                  ) -> Tuple[Tensor, float, float, float, float]:
    """Returns (UV, c1, c2, err, mass); see the module docstring. Signed stabiliser, epsilon > 0."""
    check_signed_args(z, h, b, R, rule, epsilon)
    c1, c2 = _coefficients(rule, gamma)
    K, M, C, S = R.shape
    if _use_triton(z, h, R):
        UV, err, mass = _tr().signed_coeffs(z, h, b, R, rule, alpha, beta, gamma, epsilon)
        return UV, c1, c2, err, mass
    if _use_cpp("lrp_signed_coeffs", z, h, R):
        z, h, R = z.contiguous(), h.contiguous(), R.contiguous()
        bb = b.contiguous() if b is not None else None
        out = torch.empty((K, M, 2 * C, S), dtype=z.dtype, device=z.device)
        err, mass = _ext().lrp_signed_coeffs(desc(z), desc(h), desc(bb) if bb is not None else None, desc(R),
                                              desc(out), RULE_IDS[rule], float(alpha), float(beta), float(gamma),
                                              float(epsilon))
        return out, c1, c2, float(err), float(mass)
    return _signed_coeffs_torch(z, h, b, R, rule, alpha, beta, gamma, epsilon)


def _stab_inplace(d: Tensor, eps: float) -> Tensor:
    d.add_(0.0)  # -0 -> +0
    return d.abs().add_(eps).copysign_(d)


def _signed_coeffs_torch(z, h, b, R, rule, alpha, beta, gamma, epsilon):
    c1, c2 = _coefficients(rule, gamma)
    bv = None if b is None else b.reshape(1, -1, 1)
    wx = z if bv is None else z - bv
    P = (wx + h).mul_(0.5)
    if rule == "zplus":
        if bv is not None:
            P.add_(bv.clamp(min=0))
        s = R / _stab_inplace(P, epsilon)
        u = v = s
    else:
        N = (wx - h).mul_(0.5)
        if bv is not None:
            P.add_(bv.clamp(min=0))
            N.add_(bv.clamp(max=0))
        if rule == "alphabeta":
            sp = R * (alpha / _stab_inplace(P, epsilon))
            sn = R * (beta / _stab_inplace(N, epsilon))
            u, v = sp - sn, sp + sn
        else:
            dp = z + gamma * P
            dn = z + gamma * N
            sp = R * ((z > 0).to(z.dtype) / _stab_inplace(dp, epsilon))
            sn = R * ((z < 0).to(z.dtype) / _stab_inplace(dn, epsilon))
            u, v = sp + sn, sp - sn
    UV = torch.cat([u.expand_as(R), v.expand_as(R)], dim=2)
    err = float((h * (u.abs() + v.abs())).sum(dtype=torch.float64))
    mass = float(R.abs().sum(dtype=torch.float64))
    return UV, c1, c2, err, mass


def check_combine_args(x: Tensor, G: Tensor) -> None:
    """Shapes and dtypes of :func:`combine` (shared with its Triton form)."""
    _check_float(x=x, G=G)
    if x.dim() != 3 or G.dim() != 4 or tuple(G.shape[1:]) != (x.shape[0], 2 * x.shape[1], x.shape[2]):
        raise ValueError(f"x, G: expected (M, C, S) and (K, M, 2C, S), got {tuple(x.shape)} and {tuple(G.shape)}")
    if G.dtype != x.dtype:
        raise TypeError(f"G: expected dtype {x.dtype}, got {G.dtype}")


def combine(x: Tensor, G: Tensor, c1: float, c2: float) -> Tensor:
    """``c1·x ⊙ G[:, :, :C] + c2·|x| ⊙ G[:, :, C:]`` for x (M, C, S), G (K, M, 2C, S) -> (K, M, C, S)."""
    check_combine_args(x, G)
    K, M, C2, S = G.shape
    C = C2 // 2
    if _use_triton(x, G):
        return _tr().combine(x, G, c1, c2)
    if _use_cpp("lrp_combine", x, G):
        x, G = x.contiguous(), G.contiguous()
        out = torch.empty((K, M, C, S), dtype=x.dtype, device=x.device)
        _ext().lrp_combine(desc(x), desc(G), desc(out), float(c1), float(c2))
        return out
    return G[:, :, :C] * (c1 * x) + G[:, :, C:] * (c2 * x.abs())


def check_eps_div_args(R: Tensor, z: Tensor, epsilon: float, mult: Optional[Tensor]) -> None:
    """Shapes, dtypes and epsilon of :func:`eps_div` (shared with its Triton form)."""
    _check_float(R=R, z=z, mult=mult)
    if tuple(R.shape[1:]) != tuple(z.shape) or (mult is not None and mult.shape != z.shape):
        raise ValueError(f"R, z, mult: expected (K, *z.shape), z.shape, got {tuple(R.shape)}, {tuple(z.shape)}, "
                         f"{None if mult is None else tuple(mult.shape)}")
    if not epsilon > 0:
        raise ValueError(f"epsilon: expected > 0, got {epsilon}")
    ts = (R, z) + ((mult,) if mult is not None else ())
    if any(t.dtype != z.dtype for t in ts):
        raise TypeError(f"R, z, mult: expected one dtype, got {[t.dtype for t in ts]}")


def eps_div(R: Tensor, z: Tensor, epsilon: float, mult: Optional[Tensor] = None) -> Tensor:
    """``R / stab(z)`` (signed stabiliser, epsilon > 0), times ``mult`` when given, in one pass.

    R: (K, *z.shape); mult: z's shape or None. Returns (K, *z.shape)."""
    check_eps_div_args(R, z, epsilon, mult)
    ts = (R, z) + ((mult,) if mult is not None else ())
    if _use_triton(*ts):
        return _tr().eps_div(R, z, epsilon, mult)
    if _use_cpp("lrp_eps_div", *ts):
        K, n = R.shape[0], z.numel()
        Rc, zc = R.contiguous(), z.contiguous()
        mc = mult.contiguous() if mult is not None else None
        out = torch.empty(R.shape, dtype=z.dtype)
        _ext("lrp_eps_div").lrp_eps_div(desc(Rc.reshape(K, n)), desc(zc.reshape(n)), desc(mc.reshape(n)) if mc is not None
                           else None, desc(out.view(K, n)), float(epsilon))
        return out
    t = z + 0.0
    s = R / t.abs().add_(epsilon).copysign_(t)
    return s if mult is None else s.mul_(mult)


def check_norm_args(x: Tensor, z: Tensor, R: Tensor, weight: Optional[Tensor], norm_eps: float,
                    epsilon: float) -> None:
    """Shapes and constants of :func:`norm_freeze_eps` (shared with its Triton form)."""
    _check_float(x=x, z=z, R=R, weight=weight)
    if x.dim() != 3 or z.shape != x.shape or R.dim() != 4 or tuple(R.shape[1:]) != tuple(x.shape):
        raise ValueError(f"x, z, R: expected (M, C, S), (M, C, S), (K, M, C, S), got {tuple(x.shape)}, "
                         f"{tuple(z.shape)}, {tuple(R.shape)}")
    if weight is not None and tuple(weight.shape) != (x.shape[1],):
        raise ValueError(f"weight: expected shape ({x.shape[1]},), got {tuple(weight.shape)}")
    if not epsilon > 0:
        raise ValueError(f"epsilon: expected > 0, got {epsilon}")
    if not norm_eps >= 0:
        raise ValueError(f"norm_eps: expected >= 0, got {norm_eps}")


def norm_freeze_eps(x: Tensor, z: Tensor, R: Tensor, weight: Optional[Tensor], norm_eps: float,
                    epsilon: float) -> Tensor:
    """Frozen instance norm under the ε-rule: ``R / stab(z) · x · w / sqrt(var + norm_eps)`` with the
    biased variance of each (sample, channel) plane. x, z: (M, C, S); R: (K, M, C, S); weight: (C,) or None."""
    check_norm_args(x, z, R, weight, norm_eps, epsilon)
    ts = (x, z, R) + ((weight,) if weight is not None else ())
    if any(t.dtype != x.dtype for t in ts):
        raise TypeError(f"x, z, R, weight: expected one dtype, got {[t.dtype for t in ts]}")
    if _use_triton(*ts):
        return _tr().norm_freeze_eps(x, z, R, weight, norm_eps, epsilon)
    if _use_cpp("lrp_norm_freeze_eps", *ts):
        xc, zc, Rc = x.contiguous(), z.contiguous(), R.contiguous()
        wc = weight.contiguous() if weight is not None else None
        out = torch.empty(R.shape, dtype=x.dtype)
        _ext("lrp_norm_freeze_eps").lrp_norm_freeze_eps(desc(xc), desc(zc), desc(Rc), desc(wc) if wc is not None
                                                        else None, desc(out), float(norm_eps), float(epsilon))
        return out
    xd = x.double()
    var = ((xd - xd.mean(dim=2, keepdim=True)) ** 2).mean(dim=2, keepdim=True).to(x.dtype)
    a = 1.0 / torch.sqrt(var + norm_eps)
    if weight is not None:
        a = a * weight.reshape(1, -1, 1)
    return eps_div(R, z, epsilon, x * a)
