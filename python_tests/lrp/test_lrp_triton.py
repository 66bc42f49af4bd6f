"""Triton kernels of the fused LRP stages (medseg_ext/triton/lrp_fused.py) vs the C++ kernels and the
NumPy oracle. Without a GPU they run on CPU tensors through TRITON_INTERPRET=1 (set by conftest.py)
inside ``use_backend("triton")``; the interpreter rounds every operation separately, as the C++ build
does, so there the element-wise outputs must equal the C++ ones bit for bit. On a GPU (FMA contraction)
they are compared with tolerances; ``test_gpu_*`` run only with CUDA."""
import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import medseg_ext
from medseg_ext import lrp
from medseg_ext.lrp import fused
from medseg_ext.reference import lrp as ref
from helpers import HAVE_CUDA, HAVE_TRITON

HAVE_CPP = fused._ext() is not None
pytestmark = [pytest.mark.triton, pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed"),
              pytest.mark.skipif(not HAVE_CPP, reason="compiled extension not built (the C++ kernels are the oracle)")]
DEVICE = "cuda" if HAVE_CUDA else "cpu"
EXACT = DEVICE == "cpu"          # interpreter: bit-equal to the C++ kernels
KW = dict(alpha=3.0, beta=2.0, gamma=0.4, epsilon=1e-6)


@contextlib.contextmanager
def _backend(name):
    """'triton': the Triton kernels forced (any device); 'cpp': the C++ kernels (CPU tensors), Triton off;
    'auto': the default dispatch."""
    old = fused.USE_CPP, fused.USE_TRITON
    fused.USE_CPP, fused.USE_TRITON = name in ("cpp", "auto"), name in ("triton", "auto")
    try:
        with medseg_ext.use_backend("triton") if name == "triton" else contextlib.nullcontext():
            yield
    finally:
        fused.USE_CPP, fused.USE_TRITON = old


@pytest.fixture
def triton_calls(monkeypatch):
    """Counts the calls that reached each Triton stage (proves the Triton path was taken)."""
    from medseg_ext.triton import lrp_fused as tf
    calls = {n: 0 for n in ("signed_coeffs", "combine", "eps_div", "norm_freeze_eps")}
    for n in calls:
        orig = getattr(tf, n)

        def spy(*a, _n=n, _orig=orig, **k):
            calls[_n] += 1
            return _orig(*a, **k)
        monkeypatch.setattr(tf, n, spy)
    return calls


@pytest.fixture
def no_tf32():
    """float32 convolutions on a GPU in full float32 (TF32 would dominate the comparison)."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _tr(*ts):
    return [None if t is None else t.to(DEVICE) for t in ts]


def _same(got, want, dtype, rtol32=2e-6, rtol64=1e-14):
    """Triton (any device) vs C++ (CPU): bit-equal (NaN where NaN) under the interpreter, else to
    a few ulps relative to the largest finite magnitude."""
    got = got.cpu()
    assert got.dtype == want.dtype and got.shape == want.shape
    if EXACT:
        assert torch.equal(torch.isnan(got), torch.isnan(want))
        m = ~torch.isnan(want)
        assert torch.equal(got[m], want[m]), (got - want).abs().max()
    else:
        fin = torch.isfinite(want)
        scale = want[fin].abs().max().item() if fin.any() else 1.0
        tol = rtol32 if dtype != torch.float64 else rtol64
        torch.testing.assert_close(got, want, rtol=tol, atol=tol * scale, equal_nan=True)


def _inputs(K, M, C, S, dtype, seed, scale=1.0, zeros=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(M, C, S, generator=g, dtype=torch.float64) * scale
    if zeros:   # ties at +0 and -0: sgn0(±0) = +1, and no γ share
        flat = z.view(-1)
        flat[: zeros] = 0.0
        flat[zeros: 2 * zeros] = -0.0
    h = z.abs() + torch.rand(M, C, S, generator=g, dtype=torch.float64) * scale   # h >= |Wx|, as |W|·|x|
    b = torch.randn(C, generator=g, dtype=torch.float64) * scale
    R = torch.randn(K, M, C, S, generator=g, dtype=torch.float64)
    return [t.to(dtype) for t in (z, h, b, R)]


# ------------------------------------------------------------------ per-stage, random shapes


@settings(max_examples=10, deadline=None)
@given(K=st.integers(1, 3), M=st.integers(1, 2), C=st.integers(1, 4), S=st.integers(1, 9),
       rule=st.sampled_from(["zplus", "alphabeta", "gamma"]), dtype=st.sampled_from([torch.float32, torch.float64]),
       bias=st.booleans(), scale=st.sampled_from([1.0, 1e-20, 1e20]), zeros=st.integers(0, 1),
       seed=st.integers(0, 10_000))
def test_signed_coeffs_matches_cpp_and_reference(K, M, C, S, rule, dtype, bias, scale, zeros, seed):
    if dtype == torch.float32 and scale != 1.0:
        scale = 1e-3 if scale < 1 else 1e3      # float32: tiny/huge without under/overflow of z·ε terms
    z, h, b, R = _inputs(K, M, C, S, dtype, seed, scale, zeros)
    b = b if bias else None
    with _backend("cpp"):
        want = fused.signed_coeffs(z, h, b, R, rule, **KW)
    with _backend("triton"):
        got = fused.signed_coeffs(*_tr(z, h, b, R), rule, **KW)
    _same(got[0], want[0], dtype)
    assert got[1:3] == want[1:3]
    # err, mass: float64 sums in another order than the C++ rows -> equal to float64 rounding
    np.testing.assert_allclose(got[3:], want[3:], rtol=1e-13)
    eUV, _, _, eerr, emass = ref.fast_signed_coeffs(z.double().numpy(), h.double().numpy(),
                                                    None if b is None else b.double().numpy(),
                                                    R.double().numpy(), rule, **KW)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(got[0].cpu().double().numpy(), eUV, rtol=tol, atol=tol * np.abs(eUV).max())
    np.testing.assert_allclose(got[3:], [eerr, emass], rtol=tol)


@settings(max_examples=8, deadline=None)
@given(K=st.integers(1, 3), M=st.integers(1, 2), C=st.integers(1, 4), S=st.integers(1, 9),
       dtype=st.sampled_from([torch.float32, torch.float64]), c=st.sampled_from([(0.5, 0.5), (1.2, 0.2), (1.0, 0.0)]),
       seed=st.integers(0, 10_000))
def test_combine_matches_cpp_and_reference(K, M, C, S, dtype, c, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, C, S, generator=g, dtype=torch.float64).to(dtype)
    x.view(-1)[0] = -0.0
    G = torch.randn(K, M, 2 * C, S, generator=g, dtype=torch.float64).to(dtype)
    with _backend("cpp"):
        want = fused.combine(x, G, *c)
    with _backend("triton"):
        got = fused.combine(*_tr(x, G), *c)
    _same(got, want, dtype)
    exp = ref.fast_combine(x.double().numpy(), G.double().numpy(), *c)
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    np.testing.assert_allclose(got.cpu().double().numpy(), exp, rtol=tol, atol=tol * max(np.abs(exp).max(), 1e-30))


@settings(max_examples=10, deadline=None)
@given(K=st.integers(1, 3), shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
       dtype=st.sampled_from([torch.float32, torch.float64]), mult=st.booleans(),
       scale=st.sampled_from([1.0, 1e-30, 1e30]), eps=st.sampled_from([1e-9, 1e-6, 0.5]), seed=st.integers(0, 10_000))
def test_eps_div_matches_cpp_and_reference(K, shape, dtype, mult, scale, eps, seed):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.float32:
        scale = min(max(scale, 1e-15), 1e15)
    z = (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)
    z.view(-1)[0] = 0.0
    if z.numel() > 1:
        z.view(-1)[1] = -0.0
    R = torch.randn((K,) + tuple(shape), generator=g, dtype=torch.float64).to(dtype)
    m = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype) if mult else None
    with _backend("cpp"):
        want = fused.eps_div(R, z, eps, m)
    with _backend("triton"):
        got = fused.eps_div(*_tr(R, z), eps, *_tr(m))
    _same(got, want, dtype)
    exp = R.double().numpy() / ref.stab(z.double().numpy(), eps) * (1.0 if m is None else m.double().numpy())
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    np.testing.assert_allclose(got.cpu().double().numpy(), exp, rtol=tol, atol=0)


@settings(max_examples=8, deadline=None)
@given(K=st.integers(1, 3), M=st.integers(1, 2), C=st.integers(1, 3), S=st.integers(1, 11),
       dtype=st.sampled_from([torch.float32, torch.float64]), affine=st.booleans(), const=st.booleans(),
       scale=st.sampled_from([1.0, 1e-6, 1e6]), seed=st.integers(0, 10_000))
def test_norm_freeze_eps_matches_cpp_and_reference(K, M, C, S, dtype, affine, const, scale, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, C, S, generator=g, dtype=torch.float64) * scale + 3.0 * scale
    if const:
        x[:, 0] = 2.0 * scale                  # variance 0: a = w / sqrt(norm_eps)
    w = torch.randn(C, generator=g, dtype=torch.float64).to(dtype) if affine else None
    z = torch.randn(M, C, S, generator=g, dtype=torch.float64).to(dtype)
    z.view(-1)[0] = -0.0
    R = torch.randn(K, M, C, S, generator=g, dtype=torch.float64).to(dtype)
    x = x.to(dtype)
    with _backend("cpp"):
        want = fused.norm_freeze_eps(x, z, R, w, 1e-5, 1e-6)
    with _backend("triton"):
        got = fused.norm_freeze_eps(*_tr(x, z, R, w), 1e-5, 1e-6)
    # the plane sums run in another order than the C++ loop: float64 var agrees to rounding, and the
    # float32 cast of it almost always exactly
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(got.cpu(), want, rtol=tol, atol=tol * want.abs().max().item())
    xn = x.double().numpy()
    var = ((xn - xn.mean(axis=2, keepdims=True)) ** 2).mean(axis=2, keepdims=True)
    a = 1.0 / np.sqrt(var + 1e-5) * (1.0 if w is None else w.double().numpy().reshape(1, -1, 1))
    exp = R.double().numpy() / ref.stab(z.double().numpy(), 1e-6) * xn * a
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    np.testing.assert_allclose(got.cpu().double().numpy(), exp, rtol=tol, atol=tol * np.abs(exp).max())


# ------------------------------------------------------------------ edge cases


def test_stabiliser_at_zero_and_negative_zero():
    z = torch.tensor([[[0.0, -0.0, 1e-300, -1e-300]]], dtype=torch.float64)
    h = torch.zeros_like(z)
    R = torch.ones(1, 1, 1, 4, dtype=torch.float64)
    with _backend("triton"):
        UV, *_ = fused.signed_coeffs(*_tr(z, h, None, R), "zplus", epsilon=1e-3)
        np.testing.assert_allclose(UV.cpu()[0, 0, 0].numpy(), [1e3, 1e3, 1 / (5e-301 + 1e-3), 1 / (-5e-301 - 1e-3)])
        UV, *_ = fused.signed_coeffs(*_tr(z, h, None, R), "gamma", epsilon=1e-3)
        assert (UV.cpu()[0, 0, :, :2] == 0).all()             # z = ±0: no γ share
        q = fused.eps_div(*_tr(R[:, 0], z[0]), 1e-3).cpu()
        assert q[0, 0, 0] == 1e3 and q[0, 0, 1] == 1e3         # -0 counts as +0
        UV, *_ = fused.signed_coeffs(*_tr(-z, h, None, R), "alphabeta", epsilon=1e-3)
    np.testing.assert_allclose(UV.cpu().numpy(), ref.fast_signed_coeffs(-z.numpy(), h.numpy(), None, R.numpy(),
                                                                         "alphabeta", epsilon=1e-3)[0])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # NumPy (the interpreter) warns on inf - inf etc.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nonfinite_propagate_as_in_cpp(dtype):
    nan, inf = float("nan"), float("inf")
    z, h, b, R = _inputs(2, 2, 3, 5, dtype, 11)
    z[0, 0, 1], z[1, 2, 3], h[0, 1, 2], h[1, 1, 0], b[1] = nan, -inf, inf, nan, inf
    R[0, 1, 0, 4], R[1, 0, 2, 2] = nan, -inf
    big = torch.full_like(z, 3e38 if dtype == torch.float32 else 1.7e308)   # overflow to ±inf inside
    for rule in ("zplus", "alphabeta", "gamma"):
        for args in ((z, h, b, R), (z, h, None, R), (big, big, None, R)):
            with _backend("cpp"):
                want = fused.signed_coeffs(*args, rule, **KW)
            with _backend("triton"):
                got = fused.signed_coeffs(*_tr(*args), rule, **KW)
            _same(got[0], want[0], dtype)
            for a, e in zip(got[3:], want[3:]):
                assert (a != a and e != e) or a == e or abs(a - e) <= 1e-13 * abs(e), (rule, got[3:], want[3:])
    x = z.clone()
    G = torch.cat([R, R.flip(0)], 2)
    with _backend("cpp"):
        wc = fused.combine(x, G, 1.2, 0.2)
        we = fused.eps_div(R, z, 1e-6, h)
        wn = fused.norm_freeze_eps(x, z, R, b, 1e-5, 1e-6)
    with _backend("triton"):
        gc = fused.combine(*_tr(x, G), 1.2, 0.2)
        ge = fused.eps_div(*_tr(R, z), 1e-6, *_tr(h))
        gn = fused.norm_freeze_eps(*_tr(x, z, R, b), 1e-5, 1e-6)
    _same(gc, wc, dtype)
    _same(ge, we, dtype)
    assert torch.equal(torch.isnan(gn.cpu()), torch.isnan(wn)) and torch.equal(torch.isinf(gn.cpu()), torch.isinf(wn))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(dtype):
    z, h, b, R = _inputs(2, 1, 3, 7, dtype, 5)
    x, G = z.clone(), torch.cat([R, R.flip(0) * 0.5], 2)
    w = b.abs() + 0.5
    f = [t.float() for t in (z, h, b, R, x, G, w)]
    with _backend("triton"):
        uv, _, _, err, mass = fused.signed_coeffs(*_tr(z, h, b, R), "alphabeta", **KW)
        outs = [uv, fused.combine(*_tr(x, G), 0.5, 0.5), fused.eps_div(*_tr(R, z), 1e-3, *_tr(x)),
                fused.norm_freeze_eps(*_tr(x, z, R, w), 1e-5, 1e-3)]
    with _backend("cpp"):   # the C++ kernels in float32 on the same values, then one rounding
        uv32, _, _, err32, mass32 = fused.signed_coeffs(*f[:4], "alphabeta", **KW)
        wants = [uv32, fused.combine(f[4], f[5], 0.5, 0.5), fused.eps_div(f[3], f[0], 1e-3, f[4]),
                 fused.norm_freeze_eps(f[4], f[0], f[3], f[6], 1e-5, 1e-3)]
    for got, want in zip(outs, wants):
        assert got.dtype == dtype
        if EXACT and dtype == torch.float16:
            assert torch.equal(got.cpu(), want.to(dtype))
        else:
            # the interpreter rounds float32 -> bfloat16 toward zero (a GPU rounds to nearest): one ulp
            ulp = 2.0 ** -7 if dtype == torch.bfloat16 else 2.0 ** -10
            w = want.to(dtype).float()
            torch.testing.assert_close(got.cpu().float(), w, rtol=ulp, atol=ulp * w.abs().max().item())
    np.testing.assert_allclose([err, mass], [err32, mass32], rtol=1e-6)


def test_noncontiguous_and_empty_inputs():
    z, h, b, R = _inputs(2, 2, 3, 5, torch.float64, 7)
    zt = z.transpose(0, 2).contiguous().transpose(0, 2)
    Rt = R.permute(3, 1, 2, 0).contiguous().permute(3, 1, 2, 0)
    bt = torch.stack([b, b], 1)[:, 0]
    assert not zt.is_contiguous() and not Rt.is_contiguous() and not bt.is_contiguous()
    x = torch.randn(3, 4, 2, dtype=torch.float64).transpose(0, 2)          # (2, 4, 3), strided
    G = torch.randn(2, 2, 8, 3, dtype=torch.float64)
    with _backend("triton"):
        a = fused.signed_coeffs(*_tr(zt, h, bt, Rt), "gamma")
        c = fused.signed_coeffs(*_tr(z, h, b, R), "gamma")
        assert torch.equal(a[0], c[0]) and a[3:] == c[3:]
        assert torch.equal(fused.combine(*_tr(x, G), 1.0, 0.5), fused.combine(*_tr(x.contiguous(), G), 1.0, 0.5))
        assert torch.equal(fused.eps_div(*_tr(Rt[:, 0], zt[0]), 1e-6), fused.eps_div(*_tr(R[:, 0], z[0]), 1e-6))
        assert torch.equal(fused.norm_freeze_eps(*_tr(zt, zt, Rt, None), 1e-5, 1e-6),
                           fused.norm_freeze_eps(*_tr(z, z, R, None), 1e-5, 1e-6))
        # empty: K = 0 or S = 0 (nothing launched, sums 0)
        e = fused.signed_coeffs(*_tr(z, h, b, R[:0]), "zplus")
        assert e[0].shape == (0, 2, 6, 5) and e[3:] == (0.0, 0.0)
        e = fused.signed_coeffs(*_tr(z[:, :, :0], h[:, :, :0], b, R[:, :, :, :0]), "zplus")
        assert e[0].shape == (2, 2, 6, 0)
        assert fused.combine(*_tr(x[:, :, :0], G[:, :, :, :0]), 1.0, 1.0).shape == (2, 2, 4, 0)
        assert fused.norm_freeze_eps(*_tr(z[:, :, :0], z[:, :, :0], R[:, :, :, :0], None), 1e-5, 1e-6).shape \
            == (2, 2, 3, 0)


def test_multi_block_programs_and_tails(monkeypatch):
    """Tiny blocks and few programs so every loop (blocks per program, chunks per plane) and every
    masked tail runs under the interpreter; still equal to the C++ kernels."""
    from medseg_ext.triton import lrp_fused as tf
    monkeypatch.setattr(tf, "BLOCK", 16)
    monkeypatch.setattr(tf, "TARGET_PROGRAMS", 3)
    z, h, b, R = _inputs(3, 2, 3, 37, torch.float64, 3)
    x = z * 3.0 + 1.0
    with _backend("cpp"):
        want = [fused.signed_coeffs(z, h, b, R, r, **KW) for r in ("zplus", "alphabeta", "gamma")]
        wn = fused.norm_freeze_eps(x, z, R, b, 1e-5, 1e-6)
        wc = fused.combine(z, torch.cat([R, R * 2], 2), 1.2, 0.2)
    with _backend("triton"):
        got = [fused.signed_coeffs(*_tr(z, h, b, R), r, **KW) for r in ("zplus", "alphabeta", "gamma")]
        gn = fused.norm_freeze_eps(*_tr(x, z, R, b), 1e-5, 1e-6)
        gc = fused.combine(*_tr(z, torch.cat([R, R * 2], 2)), 1.2, 0.2)
        var = tf.plane_variance(x.to(DEVICE)).cpu()
    for a, e in zip(got, want):
        _same(a[0], e[0], torch.float64)
        np.testing.assert_allclose(a[3:], e[3:], rtol=1e-13)
    torch.testing.assert_close(gn.cpu(), wn, rtol=1e-12, atol=0)
    _same(gc, wc, torch.float64)
    np.testing.assert_allclose(var.numpy(), x.reshape(6, -1).var(dim=1, unbiased=False).numpy(), rtol=1e-13)


def test_bad_arguments_name_the_argument():
    from medseg_ext.triton import lrp_fused as tf
    z, h, b, R = _tr(*_inputs(1, 1, 2, 3, torch.float64, 0))
    with pytest.raises(TypeError, match="h"):
        tf.signed_coeffs(z, h.float(), b, R, "zplus")
    with pytest.raises(TypeError, match="z"):
        tf.signed_coeffs(z.long(), h.long(), None, R.long(), "zplus")
    with pytest.raises(ValueError, match="rule"):
        tf.signed_coeffs(z, h, b, R, "epsilon")
    with pytest.raises(ValueError, match="epsilon"):
        tf.signed_coeffs(z, h, b, R, "zplus", epsilon=0.0)
    with pytest.raises(ValueError, match="b"):
        tf.signed_coeffs(z, h, b[:1], R, "zplus")
    with pytest.raises(ValueError, match="x, G"):
        tf.combine(z, R, 1.0, 1.0)
    with pytest.raises(ValueError, match="R, z"):
        tf.eps_div(R[:, :, :1], z, 1e-3)
    with pytest.raises(TypeError, match="mult"):
        tf.eps_div(R[0], z[0], 1e-3, z[0].float())
    with pytest.raises(ValueError, match="norm_eps"):
        tf.norm_freeze_eps(z, z, R, None, -1.0, 1e-6)
    with pytest.raises(ValueError, match="weight"):
        tf.norm_freeze_eps(z, z, R, b[:1], 1e-5, 1e-6)
    with pytest.raises(ValueError, match="R"):
        tf.signed_coeffs(z, h, b, R.cpu() if DEVICE == "cuda" else R[:, :, :1], "zplus")


def test_dispatch_switches(triton_calls):
    z, h, b, R = _inputs(1, 1, 2, 3, torch.float64, 0)
    fused.signed_coeffs(z, h, b, R, "zplus")                   # CPU tensors, automatic: C++ (or torch)
    assert sum(triton_calls.values()) == 0
    with medseg_ext.use_backend("triton"):
        old = fused.USE_TRITON
        fused.USE_TRITON = False                               # the switch turns Triton off
        try:
            fused.eps_div(*_tr(R, z), 1e-6)
        finally:
            fused.USE_TRITON = old
        assert sum(triton_calls.values()) == 0
        fused.eps_div(*_tr(R, z), 1e-6)
    assert triton_calls["eps_div"] == 1


# ------------------------------------------------------------------ end to end


class _Net(nn.Module):
    """Conv, instance norm (frozen: the fused norm stage), a bare residual '+', max pool, a transposed
    conv and a skip concatenation."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.InstanceNorm2d(3, affine=True), nn.LeakyReLU(0.1))
        self.down = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(4, 3, 2, stride=2)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        e = self.enc(x)
        u = self.up(self.down(e))
        return self.head(torch.cat([e, u + e], 1))


PRESETS = {"EpsilonPlus": lambda: lrp.EpsilonPlus(), "EpsilonAlpha2Beta1": lambda: lrp.EpsilonAlpha2Beta1(),
           "EpsilonGammaBox": lambda: lrp.EpsilonGammaBox(0.0, 1.0), "EpsilonComposite": lambda: lrp.EpsilonComposite()}


def _relevance(preset, dtype, device, backend):
    torch.manual_seed(5)
    net = _Net().eval()
    with torch.no_grad():
        net.enc[1].weight.uniform_(0.5, 1.5)
    net = net.to(device=device, dtype=dtype)
    x = torch.rand(2, 1, 6, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = x.to(device=device, dtype=dtype)
    eng = lrp.LRP(net, PRESETS[preset]())
    with _backend(backend):
        z = eng.forward(x)
        seed = torch.stack([z * (z > 0), z.abs() * (torch.arange(z.shape[-1], device=device) % 2)])   # K = 2
        return eng.relevance(seed).cpu()


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lrp_pass_with_triton_stages_equals_cpp_stages(preset, dtype, triton_calls, no_tf32):
    want = _relevance(preset, dtype, "cpu", "cpp")
    assert sum(triton_calls.values()) == 0
    got = _relevance(preset, dtype, DEVICE, "triton")
    if preset == "EpsilonComposite":
        assert triton_calls["eps_div"] > 0 and triton_calls["norm_freeze_eps"] == 1
    else:
        assert triton_calls["signed_coeffs"] >= 3 and triton_calls["combine"] >= 3
    assert torch.isfinite(want).all() and want.abs().max() > 0
    # interpreter: only the float64 plane sums of the norm and err run in another order than the C++;
    # GPU: cuDNN convolutions (TF32 off, see the fixture) and FMA contraction as well
    if EXACT:
        tol = 1e-12 if dtype == torch.float64 else 1e-5
    else:
        tol = 1e-9 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * want.abs().max().item())


# ------------------------------------------------------------------ compile only (no GPU needed)

_COMPILE = r"""
import itertools, os, sys
os.environ.pop("TRITON_INTERPRET", None)          # real JIT functions, not the interpreter's
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from medseg_ext.triton import lrp_fused as tf

target = GPUTarget("cuda", 90, 32)
def comp(fn, ptrs, ints, const, dt):
    sig = {k: ("*fp64" if k in ("part_ptr", "prm_ptr", "var_ptr", "mean_ptr") else "*" + dt) for k in ptrs}
    sig.update({k: "i64" for k in ints})
    sig.update({k: "constexpr" for k in const})
    sig["BLOCK"] = "constexpr"
    k = triton.compile(ASTSource(fn, sig, constexprs=dict(const, BLOCK=tf.BLOCK)), target=target,
                       options={"num_warps": tf.NUM_WARPS})
    assert k.asm.get("cubin"), fn.__name__
    return k.asm["ptx"]
for dt in ("fp32", "fp64", "bf16"):
    f64 = dt == "fp64"
    for rule, hb in itertools.product((0, 1, 2), (True, False)) if dt == "fp32" else ((1, True), (2, False)):
        ptx = comp(tf._signed_coeffs_kernel, ["z_ptr", "h_ptr", "b_ptr", "r_ptr", "uv_ptr", "part_ptr", "prm_ptr"],
                   ["total", "n", "CS", "C", "S", "iters"], {"RULE": rule, "HAS_BIAS": hb, "F64": f64}, dt)
        if dt != "fp64":
            assert "div.full.f32" not in ptx and "div.approx" not in ptx, "float32 division not IEEE-rounded"
    comp(tf._combine_kernel, ["x_ptr", "g_ptr", "out_ptr", "prm_ptr"], ["total", "n", "CS"], {"F64": f64}, dt)
    comp(tf._eps_div_kernel, ["r_ptr", "z_ptr", "m_ptr", "out_ptr", "prm_ptr"], ["total", "n"],
         {"HAS_MULT": dt != "fp64", "F64": f64}, dt)
    for c in (True, False):
        comp(tf._plane_sum_kernel, ["x_ptr", "mean_ptr", "part_ptr"], ["S", "iters"], {"CENTRED": c}, dt)
    ptx = comp(tf._norm_apply_kernel, ["x_ptr", "z_ptr", "r_ptr", "w_ptr", "var_ptr", "out_ptr", "prm_ptr"],
               ["total", "n", "C", "S"], {"HAS_W": dt != "fp64", "F64": f64}, dt)
    if dt != "fp64":
        assert "sqrt.approx" not in ptx, "float32 square root not IEEE-rounded"
print("ok")
"""


def test_kernels_compile_for_an_nvidia_gpu_without_one(tmp_path):
    """Triton's NVIDIA backend compiles the kernels (every float32 variant, float64 / bfloat16 samples)
    to sm_90 cubins on this machine (no device needed; what the interpreter cannot check: typing,
    constexpr branches, codegen, ptxas), and the float32 division / square root are the IEEE-rounded
    instructions. Compiles, does not run."""
    pytest.importorskip("triton.backends.nvidia.compiler")
    root = os.path.dirname(os.path.dirname(os.path.abspath(medseg_ext.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.pop("TRITON_INTERPRET", None)
    env["TRITON_CACHE_DIR"] = str(tmp_path)          # a cold compile, and nothing left in the user's cache
    r = subprocess.run([sys.executable, "-c", _COMPILE], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-4000:]


# ------------------------------------------------------------------ GPU only


gpu = pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA device")


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gpu_stages_equal_cpu_cpp_at_sizes_with_many_programs(dtype, triton_calls):
    # 2 * 2 * 8 * 70000 = 2.24M elements: several blocks per program in the reductions
    z, h, b, R = _inputs(2, 2, 8, 70_000, dtype, 9, zeros=3)
    x = z * 2.0 + 0.5
    G = torch.cat([R, R.flip(0)], 2)
    zc, hc, bc, Rc, xc, Gc = (t.cuda() for t in (z, h, b, R, x, G))
    for rule in ("zplus", "alphabeta", "gamma"):
        with _backend("cpp"):
            want = fused.signed_coeffs(z, h, b, R, rule, **KW)
        got = fused.signed_coeffs(zc, hc, bc, Rc, rule, **KW)   # automatic dispatch: Triton on CUDA
        again = fused.signed_coeffs(zc, hc, bc, Rc, rule, **KW)
        assert torch.equal(got[0], again[0]) and got[3:] == again[3:]     # deterministic sums
        _same(got[0], want[0], dtype, rtol32=1e-5, rtol64=1e-13)
        np.testing.assert_allclose(got[3:], want[3:], rtol=1e-6 if dtype == torch.float32 else 1e-12)
    with _backend("cpp"):
        wc = fused.combine(x, G, 1.2, 0.2)
        we = fused.eps_div(R, z, 1e-6, x)
        wn = fused.norm_freeze_eps(x, z, R, b, 1e-5, 1e-6)
    _same(fused.combine(xc, Gc, 1.2, 0.2), wc, dtype, rtol32=1e-6, rtol64=1e-14)
    _same(fused.eps_div(Rc, zc, 1e-6, xc), we, dtype, rtol32=1e-5, rtol64=1e-13)
    _same(fused.norm_freeze_eps(xc, zc, Rc, bc, 1e-5, 1e-6), wn, dtype, rtol32=1e-5, rtol64=1e-12)
    assert all(v > 0 for v in triton_calls.values())


@gpu
@pytest.mark.parametrize("preset", list(PRESETS))
def test_gpu_lrp_pass_equals_cpu(preset, triton_calls, no_tf32):
    want = _relevance(preset, torch.float64, "cpu", "cpp")
    got = _relevance(preset, torch.float64, "cuda", "auto")
    assert sum(triton_calls.values()) > 0
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12 * want.abs().max().item())
