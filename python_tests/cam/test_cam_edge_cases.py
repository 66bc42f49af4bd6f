"""Edge cases of every CAM entry point against independent oracles: the NumPy reference
(medseg_ext/reference/cam.py), analytic values (zero / constant / rank-deficient inputs) and
properties (positive scaling of the gradients, channel permutation, contiguous == non-contiguous).

Covered here: all-zero and constant inputs, 1×1 / 1×N / N×1 and 1-D / 3-D feature maps, B = 0 and
K = 1, tied and rank-deficient SVDs, NaN / inf (documented propagation), 1e±30 (and 1e±200 in
float64) magnitudes, float16 / bfloat16 / float32 / float64, transposed / strided / channels-last
layouts, bad arguments (named in the error), the kernel's descriptor checks, metric edge cases
(empty / full / per-sample masks, NaN maps, shape mismatch)."""
import math
import os
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
from cam_nets import TinySeg, make  # noqa: E402

from medseg_ext import cam  # noqa: E402
from medseg_ext.cam import metrics as M  # noqa: E402
from medseg_ext.reference import cam as ref  # noqa: E402



def _layout(base: np.ndarray, layout: str, dtype) -> torch.Tensor:
    """The array `base` (B, K, *S) as a tensor of `dtype` with the given memory layout (same values)."""
    t = torch.from_numpy(base).to(dtype)
    if layout == "contiguous":
        return t.contiguous()
    if layout == "transposed":      # stored with the spatial axes reversed, viewed back
        nd = t.dim()
        perm = (0, 1) + tuple(range(nd - 1, 1, -1))
        return t.permute(perm).contiguous().permute(perm)
    if layout == "strided":         # every other element of a twice larger buffer (last axis)
        big = torch.zeros(t.shape[:-1] + (2 * t.shape[-1],), dtype=dtype)
        big[..., ::2] = t
        return big[..., ::2]
    # channels last: K is the fastest axis
    perm = (0,) + tuple(range(2, t.dim())) + (1,)
    inv = (0, t.dim() - 1) + tuple(range(1, t.dim() - 1))
    return t.permute(perm).contiguous().permute(inv)


def _gradcampp_cond(a, g, denominator):
    """Largest relative condition number (Σ|terms| / |sum|) of the Grad-CAM++ denominators at pixels
    with g > 0 (the only ones ReLU(g) keeps): near a pole the float32 rounding of α grows with it."""
    a = a.reshape(a.shape[0], a.shape[1], -1)
    g = g.reshape(a.shape)
    g2, g3 = g * g, g ** 3
    t = (a.sum(-1, keepdims=True) * g3) if denominator == "paper" else (a * g3).sum(-1, keepdims=True)
    ta = (a.sum(-1, keepdims=True) * np.abs(g3)) if denominator == "paper" else np.abs(a * g3).sum(-1, keepdims=True)
    den = 2 * g2 + t + 1e-6
    cond = (2 * g2 + ta + 1e-6) / np.maximum(np.abs(den), 1e-300)
    return float(np.max(np.where(g > 0, cond, 1.0), initial=1.0))


def _simple_top(M_, rel=1e-3):
    """True when every slice's top singular value is separated from the next one (unique rank-1 factor)."""
    if min(M_.shape[-2:]) < 2:
        return True
    s = np.linalg.svd(M_, compute_uv=False)
    return bool(np.all(s[..., 0] - s[..., 1] > rel * np.maximum(s[..., 0], 1e-300)))


# ---------------------------------------------------------------- weight functions: shapes, dtypes, layouts

@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.data(), st.integers(1, 3), st.integers(1, 2),
       st.sampled_from([torch.float64, torch.float32, torch.float16, torch.bfloat16]),
       st.sampled_from(["contiguous", "transposed", "strided", "channels_last"]), st.integers(0, 2 ** 16))
def test_weight_functions_small_shapes_dtypes_layouts(dims, data, K, B, dtype, layout, seed):
    """1×1, 1×N, N×1, 1-D and 3-D maps, K = 1, B = 1, every float dtype and memory layout vs the NumPy
    reference on the same (rounded) values; non-contiguous == contiguous; channel permutation."""
    S = tuple(data.draw(st.integers(1, 4)) for _ in range(dims))
    rng = np.random.default_rng(seed)
    A0 = np.abs(rng.standard_normal((B, K) + S)) + 0.05          # post-ReLU-like (ΣA > 0: XGrad-CAM defined)
    G0 = rng.standard_normal((B, K) + S)
    A, G = _layout(A0, layout, dtype), _layout(G0, layout, dtype)
    a, g = A.double().numpy(), G.double().numpy()                # the values the functions see
    ga = np.abs(g)
    # rounding-error scale of each output: the same sum over |terms| (float32 accumulation error ≲ eps·that)
    bound = {"gradcam": ref.gradcam_weights(ga), "gradcam++": ref.gradcampp_weights(a, g),
             "gradcam++tc": ref.gradcampp_weights(a, g, "torchcam"), "xgradcam": ref.xgradcam_weights(a, ga),
             "hirescam": ref.hirescam_map(a, ga), "layercam": ref.hirescam_map(a, ga),
             "svd_usv": np.full((B, K), ga.max()), "svd_uv": np.ones((B, K))}
    got = {"gradcam": cam.gradcam_weights(G), "gradcam++": cam.gradcampp_weights(A, G),
           "gradcam++tc": cam.gradcampp_weights(A, G, denominator="torchcam"), "xgradcam": cam.xgradcam_weights(A, G),
           "hirescam": cam.hirescam_map(A, G), "layercam": cam.layercam_map(A, G)}
    want = {"gradcam": ref.gradcam_weights(g), "gradcam++": ref.gradcampp_weights(a, g),
            "gradcam++tc": ref.gradcampp_weights(a, g, "torchcam"), "xgradcam": ref.xgradcam_weights(a, g),
            "hirescam": ref.hirescam_map(a, g), "layercam": ref.layercam_map(a, g)}
    # the slices SVD-Grad-CAM factorises: (L, 1), (H, W), (D·H, W)
    slices = g[..., None] if dims == 1 else (g if dims == 2 else g.reshape(B, K, S[0] * S[1], S[2]))
    if _simple_top(slices):
        for proc in ("usv", "uv"):
            got["svd_" + proc] = cam.svd_gradcam_channel_weights(G, 1, proc)
            want["svd_" + proc] = ref.svd_gradcam_channel_weights(g, 1, proc)
    for k, v in got.items():
        assert v.dtype == (torch.float64 if dtype == torch.float64 else torch.float32), k
        assert v.shape == want[k].shape, k
        atol = (1e-12 if dtype == torch.float64 else 4e-6) * float(np.abs(bound[k]).max())
        rtol = 1e-9 if dtype == torch.float64 else 1e-4
        if k.startswith("gradcam++"):
            rtol *= max(1.0, _gradcampp_cond(a, g, "paper" if k == "gradcam++" else "torchcam") / 10)
        np.testing.assert_allclose(v.double().numpy(), want[k], err_msg=k, rtol=rtol, atol=atol)
        # the same values stored contiguously give the same result
        fn = {"gradcam": lambda A_, G_: cam.gradcam_weights(G_), "gradcam++": cam.gradcampp_weights,
              "gradcam++tc": lambda A_, G_: cam.gradcampp_weights(A_, G_, denominator="torchcam"),
              "xgradcam": cam.xgradcam_weights, "hirescam": cam.hirescam_map, "layercam": cam.layercam_map,
              "svd_usv": lambda A_, G_: cam.svd_gradcam_channel_weights(G_, 1, "usv"),
              "svd_uv": lambda A_, G_: cam.svd_gradcam_channel_weights(G_, 1, "uv")}[k]
        torch.testing.assert_close(fn(A.contiguous(), G.contiguous()), v, rtol=max(rtol, 1e-5), atol=atol, msg=k)
    # channel permutation: weights permute, maps (hirescam / layercam / epilogue) do not change
    perm = torch.from_numpy(rng.permutation(K))
    torch.testing.assert_close(cam.gradcampp_weights(A[:, perm], G[:, perm]), got["gradcam++"][:, perm])
    torch.testing.assert_close(cam.layercam_map(A[:, perm], G[:, perm]), got["layercam"],
                               rtol=1e-5, atol=4e-6 * float(bound["layercam"].max()))
    w = got["gradcam"]
    m = cam.cam_epilogue(A, w)
    torch.testing.assert_close(cam.cam_epilogue(A[:, perm], w[:, perm]), m, rtol=1e-5, atol=1e-5)
    # the map is returned in A's dtype: bfloat16 / float16 rounding of values in [0, 1]
    np.testing.assert_allclose(m.double().numpy(), ref.cam_from_weights(a, w.double().numpy()),
                               atol={torch.bfloat16: 4e-3, torch.float16: 1e-3}.get(dtype, 1e-5))
    # Eigen-CAM projection (unique when the top singular value of the centred matrix is simple)
    X = (G * A) if dtype != torch.float16 else (G.float() * A.float())
    Mx = X.double().flatten(2).transpose(1, 2).numpy()
    Mx = Mx - Mx.mean(1, keepdims=True)
    if _simple_top(Mx):
        e = cam.eigen_projection(X)
        er = ref.eigen_projection(X.double().numpy())
        assert e.shape == (B,) + S
        v = np.linalg.svd(Mx, full_matrices=False)[2][:, 0]
        for b in range(B):
            if abs(v[b].sum()) < 1e-3:                           # sign rule ill-conditioned: up to sign
                assert min(np.abs(e[b].double().numpy() - er[b]).max(),
                           np.abs(e[b].double().numpy() + er[b]).max()) <= 1e-4 * max(1, np.abs(er[b]).max())
            else:
                np.testing.assert_allclose(e[b].double().numpy(), er[b], rtol=1e-4, atol=1e-5 * max(1, np.abs(
                    er[b]).max()))


def test_zero_and_constant_inputs_every_weight_function():
    """All-zero gradients or activations: every CAM is 0 after normalisation (not NaN); constant
    activations give a constant map, normalised to 0; constant gradient slices give Grad-CAM's weight."""
    g = torch.Generator().manual_seed(0)
    A = torch.rand(2, 3, 5, 4, generator=g, dtype=torch.float64)
    G = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    Z = torch.zeros_like(G)
    for name, w in (("gradcam", cam.gradcam_weights(Z)), ("gradcam++", cam.gradcampp_weights(A, Z)),
                    ("xgradcam", cam.xgradcam_weights(A, Z)), ("svd", cam.svd_gradcam_channel_weights(Z)),
                    ("svd_uv2", cam.svd_gradcam_channel_weights(Z, 2, "uv")),
                    ("svd_torch", cam.svd_gradcam_weights(Z, 1, backend="torch"))):
        assert torch.equal(w, torch.zeros_like(w)), name
        assert torch.equal(cam.cam_epilogue(A, w), torch.zeros(2, 5, 4, dtype=A.dtype)), name
    for mp in (cam.hirescam_map(A, Z), cam.layercam_map(A, Z), cam.hirescam_map(Z, G), cam.eigen_projection(Z)):
        assert torch.equal(cam.cam_epilogue(maps=mp, size=(9, 7)), torch.zeros(2, 9, 7, dtype=A.dtype))
    # zero activations: weights finite (XGrad-CAM: 0 / eps), maps 0
    assert torch.equal(cam.xgradcam_weights(Z, G), torch.zeros(2, 3, dtype=A.dtype))
    assert torch.isfinite(cam.gradcampp_weights(Z, G)).all()
    assert torch.equal(cam.cam_epilogue(Z, cam.gradcam_weights(G)), torch.zeros(2, 5, 4, dtype=A.dtype))
    # constant activations: a constant map (any weights) -> 0 after min-max
    C = torch.full_like(A, 0.7)
    assert torch.equal(cam.cam_epilogue(C, torch.randn(2, 3, generator=g, dtype=A.dtype), size=(6, 6)),
                       torch.zeros(2, 6, 6, dtype=A.dtype))
    # constant gradient slices c·1·1ᵀ: SVD-Grad-CAM weight = c = Grad-CAM weight, also 1-D and 3-D maps
    c = torch.randn(2, 3, generator=g, dtype=torch.float64)
    for S in ((7,), (3, 4), (2, 3, 4)):
        Gc = c.view(2, 3, *([1] * len(S))).expand((2, 3) + S)
        # usv: c; uv: u·vᵀ = sign(c)·1·1ᵀ/√(PQ), whose mean is sign(c)/√(PQ)
        for proc, want in (("usv", c), ("uv", torch.sign(c) / math.sqrt(math.prod(S)))):
            w = cam.svd_gradcam_channel_weights(Gc, 1, proc)
            torch.testing.assert_close(w, want, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(cam.gradcam_weights(Gc), c)


def test_batch_zero_and_channel_zero():
    """B = 0 gives empty results of the right shape in every weight function and the epilogue
    (compute_cam rejects an empty x with a ValueError, tested in test_bad_input)."""
    A = torch.rand(0, 3, 4, 5)
    G = torch.randn(0, 3, 4, 5)
    for w in (cam.gradcam_weights(G), cam.gradcampp_weights(A, G), cam.xgradcam_weights(A, G),
              cam.svd_gradcam_channel_weights(G), cam.svd_gradcam_channel_weights(G, 2, "uv")):
        assert w.shape == (0, 3)
    for mp in (cam.hirescam_map(A, G), cam.layercam_map(A, G), cam.eigen_projection(A)):
        assert mp.shape == (0, 4, 5)
    assert cam.cam_epilogue(A, torch.zeros(0, 3), size=(8, 9)).shape == (0, 8, 9)
    assert cam.normalize_maps(torch.zeros(0, 3, 3)).shape == (0, 3, 3)
    # K = 0 channels: the map is 0
    assert torch.equal(cam.cam_epilogue(torch.rand(2, 0, 4, 4), torch.zeros(2, 0)), torch.zeros(2, 4, 4))


# ---------------------------------------------------------------- SVD: ties, rank deficiency

def _orth(rng, n):
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return q


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 7), st.integers(2, 7), st.data(), st.integers(0, 2 ** 16),
       st.sampled_from(["all", "paper_literal"]))
def test_svd_rank_deficient_gradients(P, Q, data, seed, reduction):
    """G of rank k < min(P, Q): for n ≥ k the rank-n reconstruction is G itself (usv: analytic value
    from G), and the σ = 0 components add nothing to uv (uv(n) = uv(k)); both backends, both Gram sides."""
    r = min(P, Q)
    k = data.draw(st.integers(0, r - 1))
    rng = np.random.default_rng(seed)
    s = np.sort(rng.uniform(0.5, 3.0, k))[::-1] if k else np.zeros(0)
    if k > 1 and np.min(-np.diff(s)) < 1e-2:
        s = np.linspace(3.0, 0.5, k)
    G = (_orth(rng, P)[:, :k] * s) @ _orth(rng, Q)[:k, :]
    Gt = torch.from_numpy(np.stack([G, 2.0 * G]))               # a batch of two slices
    for n in range(max(k, 1), r + 1):
        lit = Gt[..., :, :n].sum((-2, -1)) / (n * P)            # the literal reduction of G itself
        want = Gt.mean((-2, -1)) if reduction == "all" else lit
        for backend in ("auto", "torch"):
            torch.testing.assert_close(cam.svd_gradcam_weights(Gt, n, "usv", reduction, backend=backend), want,
                                       rtol=1e-8, atol=1e-12)
        if k >= 1:   # uv: U_k V_kᵀ from NumPy's SVD (distinct σ), reduced over n columns for paper_literal
            U, _, Vt = np.linalg.svd(Gt.numpy())
            UV = U[..., :, :k] @ Vt[..., :k, :]
            want_uv = UV.mean((-2, -1)) if reduction == "all" else UV[..., :, :n].sum((-2, -1)) / (n * P)
            # σ_r ≈ 0 components contribute 0 (they were noise / noise = O(1) random terms before)
            for method in ("closed", "explicit"):
                np.testing.assert_allclose(cam.svd_gradcam_weights(Gt, n, "uv", reduction, method=method).numpy(),
                                           want_uv, rtol=1e-8, atol=1e-12, err_msg=f"n={n} {method}")
        else:
            assert torch.equal(cam.svd_gradcam_weights(Gt, n, "uv", reduction), torch.zeros(2, dtype=Gt.dtype))


def test_svd_tied_singular_values():
    """σ1 = σ2: n = 1 is not unique (any choice is allowed) but must be finite and within the bounds that
    hold for every choice; n = 2 covers the tied pair and is unique (equals the reference); the C++
    kernel flags the tie and its dense fallback agrees with the torch backend."""
    rng = np.random.default_rng(3)
    P, Q = 7, 6
    Gs = []
    for i in range(9):                                          # blocked (4) + remainder paths of the kernel
        s = np.array([3.0, 3.0, 1.0, 0.5, 0.25, 0.1]) * (i + 1)
        Gs.append((_orth(rng, P)[:, :Q] * s) @ _orth(rng, Q))
    G = torch.from_numpy(np.stack(Gs))
    s1 = torch.linalg.svdvals(G)[:, 0]
    for backend in ("auto", "torch"):
        w = cam.svd_gradcam_weights(G, 1, "usv", backend=backend)
        assert torch.isfinite(w).all() and (w.abs() <= s1 / math.sqrt(P * Q) + 1e-12).all()
        wu = cam.svd_gradcam_weights(G, 1, "uv", backend=backend)
        assert torch.isfinite(wu).all() and (wu.abs() <= 1 / math.sqrt(P * Q) + 1e-12).all()
    torch.testing.assert_close(cam.svd_gradcam_weights(G, 1), cam.svd_gradcam_weights(G, 1, backend="torch"))
    for proc in ("usv", "uv"):
        for red in ("all", "paper_literal"):
            np.testing.assert_allclose(cam.svd_gradcam_weights(G, 2, proc, red).numpy(),
                                       ref.svd_gradcam_weights(G.numpy(), 2, proc, red), rtol=1e-8, atol=1e-12)


# ---------------------------------------------------------------- NaN / inf

def test_nan_inf_propagate_to_the_channel_and_sample_only():
    """A NaN or inf gradient entry makes that channel's weight NaN in every backend / procedure (the dense
    path raised LinAlgError before); the other channels equal the reference; the normalised map of that
    sample is NaN, the other sample's map is untouched. Eigen-CAM reads NaN as 0 (pytorch-grad-cam's
    rule, so the reference does too) and turns inf into a NaN map."""
    rng = np.random.default_rng(5)
    G0 = rng.standard_normal((2, 3, 6, 5))
    A0 = np.abs(rng.standard_normal((2, 3, 6, 5)))
    for bad in (float("nan"), float("inf"), -float("inf")):
        G = torch.from_numpy(G0.copy())
        G[0, 1, 2, 3] = bad
        A = torch.from_numpy(A0)
        cases = [("kernel", lambda: cam.svd_gradcam_channel_weights(G), lambda g: ref.svd_gradcam_channel_weights(g)),
                 ("torch", lambda: cam.svd_gradcam_weights(G, 1, backend="torch"),
                  lambda g: ref.svd_gradcam_weights(g, 1)),
                 ("n2uv", lambda: cam.svd_gradcam_weights(G, 2, "uv"), lambda g: ref.svd_gradcam_weights(g, 2, "uv")),
                 ("wide", lambda: cam.svd_gradcam_weights(G.transpose(-2, -1), 2, "uv", "paper_literal"),
                  lambda g: ref.svd_gradcam_weights(np.swapaxes(g, -2, -1), 2, "uv", "paper_literal")),
                 ("explicit", lambda: cam.svd_gradcam_weights(G, 2, method="explicit"),
                  lambda g: ref.svd_gradcam_weights(g, 2)),
                 ("gradcam", lambda: cam.gradcam_weights(G), ref.gradcam_weights),
                 ("xgradcam", lambda: cam.xgradcam_weights(A, G), lambda g: ref.xgradcam_weights(A0, g)),
                 ("gradcam++", lambda: cam.gradcampp_weights(A, G), lambda g: ref.gradcampp_weights(A0, g))]
        for name, fn, oracle in cases:
            w = fn()
            # SVD paths: NaN (documented); the means of Grad-CAM / XGrad-CAM / Grad-CAM++ carry ±inf or NaN
            assert (torch.isnan(w[0, 1]) if name in ("kernel", "torch", "n2uv", "wide", "explicit")
                    else not torch.isfinite(w[0, 1])), (name, bad)
            mask = np.ones((2, 3), bool)
            mask[0, 1] = False
            np.testing.assert_allclose(w.numpy()[mask], oracle(G0)[mask], rtol=1e-8, atol=1e-12, err_msg=name)
        for proc in ("u", "vt"):    # sign-dependent procedures: the bad channel is NaN, the others finite
            w = cam.svd_gradcam_weights(G, 1, proc)
            assert torch.isnan(w[0, 1]) and torch.isfinite(w[1]).all() and torch.isfinite(w[0, [0, 2]]).all()
        maps = cam.cam_epilogue(A, cam.svd_gradcam_channel_weights(G), size=(9, 8))
        assert torch.isnan(maps[0]).all()
        np.testing.assert_allclose(maps[1].numpy(),
                                   ref.cam_from_weights(A0, ref.svd_gradcam_channel_weights(G0), (9, 8))[1],
                                   rtol=1e-7, atol=1e-9)
    X = torch.from_numpy(G0 * A0)
    X[1, 0, 0, 0] = float("nan")
    np.testing.assert_allclose(cam.eigen_projection(X).numpy(), ref.eigen_projection(X.numpy()), rtol=1e-7,
                               atol=1e-10)
    X[1, 0, 0, 0] = float("inf")
    e = cam.eigen_projection(X)
    assert torch.isnan(cam.normalize_maps(e)[1]).all() and torch.isfinite(e[0]).all()
    # a map holding ±inf normalises to NaN (before: 0 with NaN at the inf pixels); NaN stays NaN
    m = torch.rand(3, 4, 4, dtype=torch.float64)
    m[0, 1, 1] = float("inf")
    m[1, 2, 2] = -float("inf")
    out = cam.normalize_maps(m)
    assert torch.isnan(out[:2]).all()
    np.testing.assert_allclose(out[2].numpy(), ref.normalize(m[2:].numpy())[0], rtol=1e-12)


# ---------------------------------------------------------------- huge and tiny magnitudes

@pytest.mark.parametrize("dtype,scales", [(torch.float32, (1e30, 1e-30)), (torch.bfloat16, (1e30, 1e-30)),
                                          (torch.float64, (1e30, 1e-30, 1e200, 1e-200))])
def test_svd_weights_huge_and_tiny(dtype, scales):
    """Homogeneity at extreme magnitudes: usv(cG) = c·usv(G), uv(cG) = uv(G) in every backend; float64
    |G| ~ 1e±200 overflowed / underflowed G^T G (NaN, 0 or LinAlgError before)."""
    rng = np.random.default_rng(7)
    G0 = rng.standard_normal((6, 7, 5))
    assert _simple_top(G0, 1e-2)
    base = torch.from_numpy(G0).to(dtype)                     # the rounded values, scaled exactly below
    for c in scales:
        G = (base.double() * c).to(dtype)
        assert torch.isfinite(G).all() and (G != 0).all()
        g = G.double().numpy()
        for proc in ("usv", "uv"):
            want = ref.svd_gradcam_weights(g / c, 1, proc) * (c if proc == "usv" else 1.0)
            for kw in (dict(), dict(backend="torch"), dict(method="explicit")):
                w = cam.svd_gradcam_weights(G, 1, proc, **kw)
                assert torch.isfinite(w).all(), (c, proc, kw)
                np.testing.assert_allclose(w.double().numpy(), want, rtol=1e-6 if dtype == torch.float64 else 1e-4,
                                           err_msg=f"{c} {proc} {kw}")
            w2 = cam.svd_gradcam_weights(G, 2, proc)
            np.testing.assert_allclose(w2.double().numpy(), ref.svd_gradcam_weights(g / c, 2, proc) * (
                c if proc == "usv" else 1.0), rtol=1e-6 if dtype == torch.float64 else 1e-4)


def test_epilogue_huge_and_tiny():
    """float32 activations and weights of 1e±30: Σ w·A overflowed to inf (NaN map) or underflowed to a
    zero map; the normalised map is now the same as for O(1) values (positive-scale invariance)."""
    g = torch.Generator().manual_seed(1)
    A = torch.rand(2, 4, 5, 6, generator=g)
    w = torch.randn(2, 4, generator=g)
    base = ref.cam_from_weights(A.double().numpy(), w.double().numpy(), (10, 12))
    for ca in (1e-30, 1.0, 1e30):
        for cw in (1e-30, 1.0, 1e30):
            out = cam.cam_epilogue(A * ca, w * cw, size=(10, 12))
            assert out.dtype == torch.float32 and torch.isfinite(out).all(), (ca, cw)
            np.testing.assert_allclose(out.numpy(), base, atol=2e-6, err_msg=f"{ca} {cw}")
    # without normalisation the raw values are returned (no rescaling)
    raw = cam.cam_epilogue(A, w * 1e-3, normalize=False, relu=False)
    torch.testing.assert_close(raw, torch.einsum("bk,bkhw->bhw", w * 1e-3, A))


SCALE_INVARIANT = [("gradcam", {}), ("hirescam", {}), ("xgradcam", {}), ("layercam", {}), ("eigengradcam", {}),
                   ("svdgradcam", {}), ("svdgradcam", dict(n=2, procedure="uv")),
                   ("svdgradcam", dict(n=2, reduction="paper_literal")), ("smoothgradcam", dict(smooth_samples=2)),
                   ("ablationcam", {})]


@pytest.mark.parametrize("method,kw", SCALE_INVARIANT)
def test_normalised_cam_invariant_to_target_scale(method, kw):
    """Scaling the target score by c > 0 scales the gradients by c: every normalised CAM above is
    unchanged, down to c = 1e±30 in float32 (no overflow / underflow to NaN or to a zero map)."""
    model = make()
    x = torch.randn(2, 3, 9, 7, generator=torch.Generator().manual_seed(3))
    # conv1: spatially varying gradients without tied singular values (conv2's are ReLU masks)
    base = cam.compute_cam(model, x, "conv1", method, target=lambda o: o[:, 1], **kw).maps
    assert (base.flatten(1).amax(1) == 1.0).all()
    for c in (1e-30, 1e-3, 1e30):
        m = cam.compute_cam(model, x, "conv1", method, target=lambda o, c=c: c * o[:, 1], **kw).maps
        assert torch.isfinite(m).all(), c
        torch.testing.assert_close(m, base, rtol=0, atol=2e-5, msg=f"{method} {kw} c={c}")


def test_gradcampp_huge_and_tiny_gradients():
    """Grad-CAM++ is not scale invariant (α = g²/(2g² + Σa·g³ + eps)); its float32 weights for
    |g| ~ 1e30 were NaN (g² overflows: inf/inf). They now equal the float64 reference; for
    |g| ~ 1e-30 the true weights (~1e-84) are below float32's range: 0, finite, map 0."""
    rng = np.random.default_rng(2)
    A0 = np.abs(rng.standard_normal((2, 3, 5, 4))).astype(np.float32)
    G0 = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    for c in (1e30, 1e13, 1e-30):
        G = torch.from_numpy(G0) * c
        for den in ("paper", "torchcam"):
            w = cam.gradcampp_weights(torch.from_numpy(A0), G, denominator=den)
            assert torch.isfinite(w).all(), (c, den)
            want = ref.gradcampp_weights(A0.astype(np.float64), G.double().numpy(), den)
            np.testing.assert_allclose(w.double().numpy(), want, rtol=1e-4, atol=1e-37, err_msg=f"{c} {den}")
            maps = cam.cam_epilogue(torch.from_numpy(A0), w)
            assert torch.isfinite(maps).all()


# ---------------------------------------------------------------- compute_cam: layouts, dtypes, empty masks

@pytest.mark.parametrize("method", ["gradcam", "svdgradcam", "gradcam++", "eigencam", "scorecam"])
def test_compute_cam_non_contiguous_inputs(method):
    """Transposed, strided and channels-last inputs give the CAM of their contiguous copies (2-D and 3-D)."""
    g = torch.Generator().manual_seed(4)
    for dims in (2, 3):
        model = make(dims=dims)
        shape = (2, 3, 10, 8) if dims == 2 else (2, 3, 4, 6, 6)
        big = torch.randn(shape[:2] + tuple(2 * s for s in shape[2:]), generator=g)
        views = [big[..., ::2, ::2] if dims == 2 else big[..., ::2, ::2, ::2],
                 torch.randn(shape, generator=g).transpose(-2, -1),
                 torch.randn(shape, generator=g).contiguous(
                     memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)]
        for xv in views:
            xc = xv.contiguous()
            assert not xv.is_contiguous()
            a = cam.compute_cam(model, xv, "conv2", method, batch_size=8).maps
            b = cam.compute_cam(model, xc, "conv2", method, batch_size=8).maps
            assert a.shape == xc.shape[:1] + xc.shape[2:]
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_compute_cam_low_and_high_precision(dtype):
    """float16 / bfloat16 / float64 models and inputs: maps in x's dtype, finite, in [0, 1], and equal
    to the NumPy reference computed from the captured activations and gradients (float32 accumulation)."""
    model = make(dtype=dtype)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6)).to(dtype)
    for method in ("gradcam", "svdgradcam", "layercam", "gradcam++"):
        r = cam.compute_cam(model, x, "conv1", method, keep=True, size=None)
        assert r.maps.dtype == dtype and torch.isfinite(r.maps).all()
        assert float(r.maps.min()) >= 0 and float(r.maps.max()) <= 1
        A, G = r.activations.double().numpy(), r.gradients.double().numpy()
        if method == "svdgradcam" and not _simple_top(G):
            continue
        want = {"gradcam": lambda: ref.cam_from_weights(A, ref.gradcam_weights(G)),
                "svdgradcam": lambda: ref.cam_from_weights(A, ref.svd_gradcam_channel_weights(G)),
                "layercam": lambda: ref.finish(ref.layercam_map(A, G)),
                "gradcam++": lambda: ref.cam_from_weights(A, ref.gradcampp_weights(A, G))}[method]()
        atol = 1e-9 if dtype == torch.float64 else (1e-2 if dtype == torch.bfloat16 else 2e-3)
        np.testing.assert_allclose(r.maps.double().numpy(), want, atol=atol, err_msg=method)


def test_empty_and_full_segmentation_masks_every_method():
    """An empty mask makes the target identically 0: every gradient method and Ablation-CAM (0/0 = NaN
    before) give an all-zero CAM; Score-CAM / Eigen-CAM (target-free weights) stay finite. A full mask
    equals the callable target Σ over all pixels of the channel."""
    torch.manual_seed(0)
    seg = TinySeg().eval()
    xs = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    empty = cam.SegmentationTarget(1, torch.zeros(8, 8, dtype=torch.bool))
    full = cam.SegmentationTarget(1, torch.ones(8, 8, dtype=torch.bool))
    for method in cam.METHODS:
        if method == "cam":
            continue
        m = cam.compute_cam(seg, xs, "mid", method, target=empty, batch_size=4).maps
        assert torch.isfinite(m).all(), method
        if method not in ("scorecam", "eigencam"):
            assert torch.equal(m, torch.zeros_like(m)), method
        f = cam.compute_cam(seg, xs, "mid", method, target=full, batch_size=4).maps
        c = cam.compute_cam(seg, xs, "mid", method, target=lambda o: o[:, 1].flatten(1).sum(1), batch_size=4).maps
        torch.testing.assert_close(f, c, msg=method)


def test_metrics_empty_full_and_mixed_masks():
    """Per-sample masks, sample 0 empty (score 0: drop and per-image ADCC NaN, documented; CAM 0:
    complexity 0, coherency 1), sample 1 full: its metrics equal those of sample 1 run alone, and the
    data-set means leave the NaN row out (ADCC_per_image was 100 for an empty target before)."""
    torch.manual_seed(0)
    seg = TinySeg().double().eval()
    xs = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[1] = True
    tgt = cam.SegmentationTarget(1, mask, "sigmoid")
    per = M.per_image_metrics(seg, xs, "mid", "gradcam", tgt)
    assert torch.isnan(per["drop"][0]) and torch.isnan(per["adcc"][0])
    assert float(per["complexity"][0]) == 0.0 and float(per["coherency"][0]) == 1.0
    one = M.per_image_metrics(seg, xs[1:], "mid", "gradcam", cam.SegmentationTarget(1, mask[1:], "sigmoid"))
    for k in one:
        torch.testing.assert_close(per[k][1:], one[k], msg=k)
    row, row1 = M.summarize(per), M.summarize(one)
    for k in ("AverageDrop", "ADCC_per_image"):
        assert row[k] == pytest.approx(row1[k]), k
    assert 0.0 <= row1["AverageDrop"] <= 100.0 and 0.0 <= row1["ADCC"] <= 100.0
    # only empty targets: the drop is undefined everywhere -> NaN for both denominators and the ADCCs
    only = M.per_image_metrics(seg, xs, "mid", "gradcam", cam.SegmentationTarget(1, torch.zeros(8, 8), "sigmoid"))
    for den in ("all", "no_increase"):
        s = M.summarize(only, den)
        assert math.isnan(s["AverageDrop"]) and math.isnan(s["ADCC"]) and math.isnan(s["ADCC_per_image"]), den
    # mask of the wrong shape (batch of 3 for 2 inputs; spatial mismatch): ValueError naming the mask
    for bad in (torch.ones(3, 8, 8), torch.ones(8, 7)):
        with pytest.raises(ValueError, match="mask"):
            M.per_image_metrics(seg, xs, "mid", "gradcam", cam.SegmentationTarget(1, bad))


def test_metric_functions_edge_cases():
    """pearson / coherency: NaN or inf maps give NaN (they read as 0 / 0.5 before), np.corrcoef on
    1×N maps, shape mismatch is a ValueError; adcc propagates NaN and keeps 0 for a zero term."""
    g = torch.Generator().manual_seed(8)
    a = torch.rand(3, 1, 6, generator=g, dtype=torch.float64)
    b = torch.rand(3, 1, 6, generator=g, dtype=torch.float64)
    np.testing.assert_allclose(M.pearson(a, b).numpy(), [np.corrcoef(a[i].ravel(), b[i].ravel())[0, 1]
                                                         for i in range(3)], rtol=1e-12)
    for bad in (float("nan"), float("inf")):
        a2 = a.clone()
        a2[1, 0, 2] = bad
        p = M.pearson(a2, b)
        assert torch.isnan(p[1]) and torch.isfinite(p[[0, 2]]).all()
        torch.testing.assert_close(p[[0, 2]], M.pearson(a, b)[[0, 2]])
        assert torch.isnan(M.coherency(a2, b)[1])
    one_px = torch.rand(2, 1, 1, generator=g)
    torch.testing.assert_close(M.coherency(one_px, one_px), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        M.pearson(a, b[:, :, :5])
    with pytest.raises(ValueError, match="cam_e"):
        M.coherency(a, b[:2])
    assert math.isnan(float(M.adcc(float("nan"), 0.9, 0.2)))
    assert float(M.adcc(0.1, 0.0, 0.2)) == 0.0 and float(M.adcc(1.0, 0.9, 0.2)) == 0.0
    assert float(M.adcc(0.1, 0.9, 0.2)) == pytest.approx(ref.adcc(0.1, 0.9, 0.2))
    torch.testing.assert_close(M.complexity(torch.ones(2, 4, 4)), torch.ones(2, dtype=torch.float64))


# ---------------------------------------------------------------- bad input

def test_bad_arguments_are_named():
    model = make()
    x = torch.randn(2, 3, 8, 8)
    A = torch.rand(2, 3, 4, 4)
    cases = [
        (ValueError, "svd_method", lambda: cam.compute_cam(model, x, "conv2", "svdgradcam", svd_method="qr")),
        (ValueError, "gradcampp_denominator",
         lambda: cam.compute_cam(model, x, "conv2", "gradcam++", gradcampp_denominator="x")),
        (ValueError, "eigen_sign", lambda: cam.compute_cam(model, x, "conv2", "eigencam", eigen_sign="x")),
        (ValueError, "size", lambda: cam.compute_cam(model, x, "conv2", size="big")),
        (ValueError, "size", lambda: cam.compute_cam(model, x, "conv2", size=(0, 4))),
        (ValueError, "size", lambda: cam.compute_cam(model, x, "conv2", size=(-3, 4))),
        (ValueError, "size", lambda: cam.compute_cam(model, x, "conv2", size=(3,))),
        (ValueError, "size", lambda: cam.resize_maps(torch.zeros(2, 3, 3), (0, 3))),
        (ValueError, "n must", lambda: cam.compute_cam(model, x, "conv2", "svdgradcam", n=0)),
        (ValueError, "n must", lambda: cam.svd_gradcam_weights(A, -1)),
        (TypeError, "n must", lambda: cam.svd_gradcam_weights(A, 2.0)),
        (TypeError, "n must", lambda: cam.svd_gradcam_weights(A, True)),
        (ValueError, "n must", lambda: cam.svd_gradcam_weights(torch.zeros(2, 0, 3), 1)),
        (ValueError, "batch_size", lambda: cam.compute_cam(model, x, "conv2", "scorecam", batch_size=-2)),
        (ValueError, "smooth_samples", lambda: cam.compute_cam(model, x, "conv2", "smoothgradcam", smooth_samples=0)),
        (ValueError, "smooth_sigma", lambda: cam.compute_cam(model, x, "conv2", "smoothgradcam", smooth_sigma=-1.0)),
        (ValueError, "gradients", lambda: cam.gradcam_weights(torch.randn(3, 4))),
        (TypeError, "gradients", lambda: cam.gradcam_weights(torch.ones(2, 3, 4, 4, dtype=torch.long))),
        (TypeError, "gradients", lambda: cam.gradcam_weights([1.0, 2.0])),
        (ValueError, "gradients", lambda: cam.svd_gradcam_channel_weights(torch.randn(2, 3))),
        (ValueError, "gradients", lambda: cam.hirescam_map(A, A[:, :2])),
        (ValueError, "gradients", lambda: cam.layercam_map(A, A.to("meta"))),
        (TypeError, "activations", lambda: cam.xgradcam_weights(A.long(), A)),
        (ValueError, "X", lambda: cam.eigen_projection(torch.randn(3, 4))),
        (TypeError, "X", lambda: cam.eigen_projection(torch.ones(2, 3, 4, 4, dtype=torch.long))),
        (TypeError, "G must", lambda: cam.svd_gradcam_weights(torch.ones(3, 3, dtype=torch.long))),
        (ValueError, "G must", lambda: cam.svd_gradcam_weights(torch.ones(3))),
        (ValueError, "backend", lambda: cam.svd_gradcam_weights(A, 1, backend="cuda")),
        (ValueError, "weights", lambda: cam.cam_epilogue(A, torch.rand(2, 3).to("meta"))),
        (TypeError, "weights", lambda: cam.cam_epilogue(A, [[1.0, 2.0, 3.0]])),
        (TypeError, "activations", lambda: cam.cam_epilogue(A.long(), torch.rand(2, 3))),
        (TypeError, "maps", lambda: cam.cam_epilogue(maps=torch.ones(2, 3, 3, dtype=torch.long))),
        (ValueError, "maps", lambda: cam.cam_epilogue(maps=torch.randn(4))),
        (ValueError, "maps", lambda: cam.normalize_maps(torch.zeros(3))),
        (ValueError, "activations and weights", lambda: cam.cam_epilogue(A)),
        (ValueError, "denominator", lambda: cam.gradcampp_weights(A, A, denominator="x")),
        (ValueError, "index", lambda: cam.compute_cam(model, x, "conv2", target=7)),
        (TypeError, "index", lambda: cam.ClassTarget([1.5, 2])),
    ]
    for exc, match, fn in cases:
        with pytest.raises(exc, match=match):
            fn()


def test_numpy_integers_accepted():
    """numpy / torch integer scalars work where a Python int does (they raised TypeError before)."""
    model = make(dtype=torch.float64)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    G = torch.randn(3, 6, 5, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    torch.testing.assert_close(cam.svd_gradcam_weights(G, np.int64(2)), cam.svd_gradcam_weights(G, 2))
    base = cam.compute_cam(model, x, "conv2", "gradcam", target=[1, 2]).maps
    for t in ([np.int64(1), np.int32(2)], (np.int64(1), 2)):
        torch.testing.assert_close(cam.compute_cam(model, x, "conv2", "gradcam", target=t).maps, base)
    torch.testing.assert_close(cam.compute_cam(model, x, "conv2", "gradcam", target=np.int64(1)).maps,
                               cam.compute_cam(model, x, "conv2", "gradcam", target=1).maps)
    a = cam.compute_cam(model, x, "conv2", "scorecam", batch_size=np.int64(5), size=(np.int64(4), 6)).maps
    b = cam.compute_cam(model, x, "conv2", "scorecam", batch_size=5, size=(4, 6)).maps
    torch.testing.assert_close(a, b)


def test_kernel_descriptor_checks_raise_not_crash():
    """The compiled entry point validates its (internal) descriptors: ValueError, never a crash."""
    from medseg_ext.cam.weights import _kernel
    fn = _kernel()
    if fn is None:
        pytest.skip("medseg_ext._C has no cam kernel (not built)")
    from medseg_ext._tensor import desc

    def call(G, w=None, s=None, p=0, r=0):
        M_ = G.shape[0]
        w = torch.empty(M_, dtype=torch.float64) if w is None else w
        s = torch.zeros(M_, dtype=torch.uint8) if s is None else s
        fn(desc(G), desc(w), desc(s), p, r)
        return w

    bad = [(torch.randn(3, 4, 4).half(), {}, "G"), (torch.randn(3, 4, 65), {}, "G"), (torch.randn(3, 4, 0), {}, "G"),
           (torch.randn(3, 0, 4), {}, "G"), (torch.randn(3, 4, 4).transpose(1, 2), {}, "G"),
           (torch.ones(3, 4, 4, dtype=torch.long), {}, "G"),
           (torch.randn(3, 4, 4), dict(w=torch.empty(3)), "weights"),
           (torch.randn(3, 4, 4), dict(w=torch.empty(2, dtype=torch.float64)), "weights"),
           (torch.randn(3, 4, 4), dict(s=torch.zeros(3, dtype=torch.int32)), "status"),
           (torch.randn(3, 4, 4), dict(p=2), "procedure"), (torch.randn(3, 4, 4), dict(r=-1), "reduction")]
    for G, kw, name in bad:
        with pytest.raises(ValueError, match=name):
            call(G, **kw)
    with pytest.raises(ValueError, match="G"):
        fn(desc(torch.randn(4, 4)), desc(torch.empty(4, dtype=torch.float64)), desc(torch.zeros(4, dtype=torch.uint8)),
           0, 0)
    assert call(torch.randn(0, 4, 4)).shape == (0,)
    # out-of-range slices: zero -> 0, NaN -> NaN, inf and float64 |G| ~ 1e±200 -> status 1 (dense path);
    # six slices: one block of four plus two single ones
    G6 = torch.from_numpy(np.random.default_rng(2).standard_normal((6, 5, 4)))
    G6[0] = 0
    G6[1, 2, 1] = float("nan")
    G6[2, 0, 0] = float("inf")
    G6[3] *= 1e200
    G6[4] *= 1e-200
    for order in (list(range(6)), [5, 4, 3, 2, 1, 0]):
        st6 = torch.zeros(6, dtype=torch.uint8)
        w6 = call(G6[order].contiguous(), s=st6)
        want_st = torch.tensor([0, 0, 1, 1, 1, 0], dtype=torch.uint8)[order]
        assert torch.equal(st6, want_st), order
        assert w6[order.index(0)] == 0 and torch.isnan(w6[order.index(1)])
        np.testing.assert_allclose(float(w6[order.index(5)]), ref.svd_gradcam_weights(G6[5].numpy(), 1), rtol=1e-9)
    Gq = torch.from_numpy(np.random.default_rng(4).standard_normal((5, 9, 64)))   # Q = 64: the kernel's limit
    np.testing.assert_allclose(call(Gq).numpy(), ref.svd_gradcam_weights(Gq.numpy(), 1), rtol=1e-8, atol=1e-12)
