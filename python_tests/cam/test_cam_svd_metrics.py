"""SVD-Grad-CAM properties (seeds §10.3), Eigen-CAM, metrics (§8.6, Table 2 arithmetic), hooks that do
not leak, bad input."""
import gc
import os
import sys
import weakref

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
from cam_nets import TinyCNN, make  # noqa: E402

from medseg_ext import cam  # noqa: E402
from medseg_ext.cam import metrics as M  # noqa: E402
from medseg_ext.reference import cam as ref  # noqa: E402


def _gen(P, Q, seed, batch=4):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, P, Q))


shapes = st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(0, 10_000))


@settings(max_examples=40)
@given(shapes, st.sampled_from(["usv", "uv"]), st.sampled_from(["all", "paper_literal"]), st.data())
def test_closed_forms_equal_explicit_and_reference(shape, procedure, reduction, data):
    P, Q, seed = shape
    n = data.draw(st.integers(1, min(P, Q)))
    G = _gen(P, Q, seed)
    s = np.linalg.svd(G, compute_uv=False)
    # distinct singular values (generic random matrices), non-zero for "uv" (else u_r v_r is arbitrary)
    if n < min(P, Q) and np.min(s[:, n - 1] - s[:, n]) < 1e-6:
        return
    if procedure == "uv" and np.min(s[:, n - 1]) < 1e-6:
        return
    Gt = torch.from_numpy(G)
    closed = cam.svd_gradcam_weights(Gt, n, procedure, reduction).numpy()
    explicit = cam.svd_gradcam_weights(Gt, n, procedure, reduction, method="explicit").numpy()
    oracle = ref.svd_gradcam_weights(G, n, procedure, reduction)
    np.testing.assert_allclose(closed, oracle, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(explicit, oracle, rtol=1e-9, atol=1e-12)


@settings(max_examples=30)
@given(shapes)
def test_full_rank_and_rank_one(shape):
    P, Q, seed = shape
    G = torch.from_numpy(_gen(P, Q, seed))
    r = min(P, Q)
    w = cam.svd_gradcam_weights(G, r, "usv", "all")
    torch.testing.assert_close(w, G.mean((-2, -1)))                       # §10.3.1
    w_lit = cam.svd_gradcam_weights(G, r, "usv", "paper_literal", method="explicit")
    if Q <= P:
        torch.testing.assert_close(w_lit, G.mean((-2, -1)))
    # rank-1 constant slices c·1·1ᵀ: every n, both reductions → c (§10.3.2)
    c = torch.from_numpy(np.random.default_rng(seed).standard_normal(4))
    C = c[:, None, None] * torch.ones(4, P, Q, dtype=torch.float64)
    for red in ("all", "paper_literal"):
        torch.testing.assert_close(cam.svd_gradcam_weights(C, 1, "usv", red), c)
        torch.testing.assert_close(cam.svd_gradcam_weights(C, r, "usv", red), c)


def test_literal_differs_for_wide_slices():
    G = torch.from_numpy(_gen(5, 9, 3))
    a = cam.svd_gradcam_weights(G, 5, "usv", "all")
    b = cam.svd_gradcam_weights(G, 5, "usv", "paper_literal")
    assert (a - b).abs().max() > 1e-3


def test_sign_invariance_homogeneity_bound_transpose():
    G = _gen(7, 6, 11, batch=16)
    Gt = torch.from_numpy(G)
    n = 2
    U, s, Vt = np.linalg.svd(G, full_matrices=False)
    flip = np.array([1.0, -1.0])
    U2, Vt2 = U[..., :, :n] * flip, Vt[..., :n, :] * flip[:, None]
    for proc in ("usv", "uv"):
        Mx = U2 @ ((s[..., :n, None] if proc == "usv" else 1.0) * Vt2)     # flipped pair, same product
        np.testing.assert_allclose(cam.svd_gradcam_weights(Gt, n, proc).numpy(), Mx.mean((-2, -1)), rtol=1e-9)
    # Eqs. 7/8 change sign with the pair
    w7 = U[..., :, :n].sum((-2, -1)) / (n * 7)
    w7f = U2.sum((-2, -1)) / (n * 7)
    assert not np.allclose(w7, w7f)
    np.testing.assert_allclose(np.abs(cam.svd_gradcam_weights(Gt, n, "u").numpy()),
                               np.abs(ref.svd_gradcam_weights(G, n, "u")), rtol=1e-9)
    np.testing.assert_allclose(np.abs(cam.svd_gradcam_weights(Gt, n, "vt").numpy()),
                               np.abs(ref.svd_gradcam_weights(G, n, "vt")), rtol=1e-9)
    for a in (2.5, -0.7):                                                  # §10.3.4
        torch.testing.assert_close(cam.svd_gradcam_weights(a * Gt, 1, "usv"), a * cam.svd_gradcam_weights(Gt, 1))
        torch.testing.assert_close(cam.svd_gradcam_weights(a * Gt, 1, "uv"),
                                   np.sign(a) * cam.svd_gradcam_weights(Gt, 1, "uv"))
    torch.testing.assert_close(cam.svd_gradcam_weights(Gt.transpose(-2, -1), 2, "usv"), cam.svd_gradcam_weights(Gt, 2))
    assert cam.svd_gradcam_weights(Gt, 3, "uv").abs().max() <= 1 / np.sqrt(42) + 1e-12   # §10.3.5


@settings(max_examples=12)
@given(st.integers(0, 1000), st.integers(1, 4), st.sampled_from(["all", "paper_literal"]))
def test_gap_head_equivalence(seed, n, reduction):
    """§8.8 / §10.3.2: at a layer followed by GAP + linear, SVD-Grad-CAM == Grad-CAM == CAM."""
    torch.manual_seed(seed)
    model = TinyCNN(width=4, classes=3).double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    kw = dict(target=[0, 2], size=None)
    g = cam.compute_cam(model, x, "act", "gradcam", **kw).maps
    s = cam.compute_cam(model, x, "act", "svdgradcam", n=n, reduction=reduction, **kw).maps
    c = cam.compute_cam(model, x, "act", "cam", **kw).maps
    torch.testing.assert_close(s, g, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(c, g, rtol=1e-9, atol=1e-10)
    # and it differs where the gradient varies spatially (before the ReLU)
    g1 = cam.compute_cam(model, x, "conv1", "gradcam", **kw).maps
    s1 = cam.compute_cam(model, x, "conv1", "svdgradcam", n=1, **kw).maps
    assert (g1 - s1).abs().max() > 1e-4


def test_eigen_projection_properties():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(3, 6, 5, 4, generator=g, dtype=torch.float64)
    p = cam.eigen_projection(X, center=False)
    M = X.flatten(2).transpose(1, 2).numpy()
    for b in range(3):
        U, s, _ = np.linalg.svd(M[b], full_matrices=False)
        np.testing.assert_allclose(np.abs(p[b].numpy().ravel()), np.abs(s[0] * U[:, 0]), rtol=1e-8)  # ±σ1u1
    perm = torch.randperm(6, generator=g)
    torch.testing.assert_close(cam.eigen_projection(X[:, perm]), cam.eigen_projection(X))
    torch.testing.assert_close(cam.eigen_projection(3.0 * X), 3.0 * cam.eigen_projection(X))
    # both Gram sides (pixels ≤ channels and pixels > channels) agree with the reference
    for shape in ((2, 30, 3, 3), (2, 4, 5, 5)):
        Y = torch.randn(shape, generator=g, dtype=torch.float64)
        np.testing.assert_allclose(cam.eigen_projection(Y).numpy(), ref.eigen_projection(Y.numpy()), rtol=1e-7,
                                   atol=1e-10)


def test_adcc_paper_table2_arithmetic():
    table = {  # drop, coherency, complexity → ADCC (seeds §8.6, §10.3.11)
        "SVD-Grad-CAM": (0.073, 0.8777, 0.2062, 0.8626), "Grad-CAM": (0.1043, 0.7319, 0.4381, 0.7038),
        "Score-CAM": (0.076, 0.8605, 0.3046, 0.8147), "Ablation-CAM": (0.082, 0.8405, 0.3683, 0.7768),
        "Smooth-Grad": (0.115, 0.7456, 0.2513, 0.7881)}
    for name, (d, co, cx, want) in table.items():
        assert abs(float(M.adcc(d, co, cx)) - want) < 6e-5, name
        assert abs(ref.adcc(d, co, cx) - want) < 6e-5, name
    assert float(M.adcc(0.0, 1.0, 1.0)) == 0.0 and ref.adcc(0.0, 1.0, 1.0) == 0.0   # all-ones CAM
    assert float(M.adcc(0.0, 1.0, 0.0)) == pytest.approx(1.0)


def test_metrics_vs_reference():
    model = make(dtype=torch.float64)
    x = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    tgt = cam.ClassTarget(None, "softmax")
    per = M.per_image_metrics(model, x, "conv2", "gradcam", tgt)
    r = cam.compute_cam(model, x, "conv2", "gradcam", tgt)
    E = x * r.maps[:, None]
    with torch.no_grad():
        y = torch.softmax(model(x), 1).gather(1, r.target.index[:, None])[:, 0].numpy()
        ye = torch.softmax(model(E), 1).gather(1, r.target.index[:, None])[:, 0].numpy()
    re_ = cam.compute_cam(model, E, "conv2", "gradcam", r.target)
    np.testing.assert_allclose(per["score_cam"].numpy(), ye, rtol=1e-10)
    np.testing.assert_allclose(per["drop"].numpy(), np.maximum(0, (y - ye) / y), rtol=1e-9, atol=1e-12)
    coh = [ref.coherency(r.maps[b].numpy(), re_.maps[b].numpy()) for b in range(4)]
    np.testing.assert_allclose(per["coherency"].numpy(), coh, rtol=1e-9)
    np.testing.assert_allclose(per["complexity"].numpy(), [ref.complexity(m) for m in r.maps.numpy()], rtol=1e-12)
    row = M.summarize(per)
    assert row["AverageDrop"] == pytest.approx(ref.average_drop(y, ye))
    assert row["AverageIncrease"] == pytest.approx(ref.average_increase(y, ye))
    assert row["ADCC"] == pytest.approx(100 * ref.adcc(row["AverageDrop"] / 100, row["Coherency"] / 100,
                                                        row["Complexity"] / 100))
    nb = M.summarize(per, drop_denominator="no_increase")
    assert nb["AverageDrop"] == pytest.approx(ref.average_drop(y, ye, "no_increase"))
    ev = M.evaluate(model, [(x[:2], None), (x[2:], None)], "conv2", "gradcam", tgt)
    assert ev["N"] == 4 and ev["Coherency"] == pytest.approx(row["Coherency"])
    for k in ("AverageDrop", "AverageIncrease", "Coherency", "Complexity", "ADCC"):
        assert 0 <= row[k] <= 100
    # coherency: 1 for identical maps, Pearson-invariant to positive affine rescaling, np.corrcoef oracle
    a = torch.rand(3, 5, 5, dtype=torch.float64)
    b = torch.rand(3, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(M.coherency(a, a), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(M.coherency(a, 3 * b + 1), M.coherency(a, b))
    np.testing.assert_allclose(M.pearson(a, b).numpy(), [np.corrcoef(a[i].ravel(), b[i].ravel())[0, 1]
                                                         for i in range(3)], rtol=1e-12)
    const = torch.zeros(1, 5, 5, dtype=torch.float64)
    assert float(M.coherency(const, const)) == 1.0 and float(M.coherency(const, a[:1])) == 0.5


def test_hooks_do_not_leak():
    model = make()
    x = torch.randn(1, 3, 8, 8)
    layer = model.conv2
    refs = []
    for i in range(300):
        r = cam.compute_cam(model, x, "conv2", ("gradcam", "eigencam", "svdgradcam")[i % 3], keep=True, size=None)
        refs.append(weakref.ref(r.activations))
        del r
    gc.collect()
    assert not layer._forward_hooks and not layer._backward_hooks and not model._forward_hooks
    assert sum(w() is not None for w in refs) == 0
    base = sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))
    for _ in range(1500):
        cam.compute_cam(model, x, "conv2", "gradcam", size=None)
    gc.collect()
    assert sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor)) <= base + 2
    # an error inside the forward still removes the hook
    with pytest.raises(ValueError):
        cam.compute_cam(model, x, "conv2", "gradcam", target=99)
    assert not layer._forward_hooks
    assert torch.is_grad_enabled()


class _Twice(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c = torch.nn.Conv2d(2, 2, 1)
        self.fc = torch.nn.Linear(2, 2)
        self.unused = torch.nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return self.fc(self.c(self.c(x)).mean((2, 3)))


def test_bad_input():
    model = make()
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="layer"):
        cam.compute_cam(model, x, "nope", "gradcam")
    with pytest.raises(TypeError, match="layer"):
        cam.compute_cam(model, x, 3, "gradcam")
    with pytest.raises(ValueError, match="method"):
        cam.compute_cam(model, x, "conv2", "gradcam+++")
    with pytest.raises(TypeError, match="x"):
        cam.compute_cam(model, x.long(), "conv2")
    with pytest.raises(ValueError, match="x"):
        cam.compute_cam(model, x[0, 0], "conv2")
    with pytest.raises(ValueError, match="x"):
        cam.compute_cam(model, x[:0], "conv2")
    with pytest.raises(ValueError, match="n must"):
        cam.compute_cam(model, x, "conv2", "svdgradcam", n=5)
    with pytest.raises(ValueError, match="procedure"):
        cam.compute_cam(model, x, "conv2", "svdgradcam", procedure="sv")
    with pytest.raises(ValueError, match="reduction"):
        cam.svd_gradcam_weights(torch.randn(3, 3), 1, reduction="mean")
    with pytest.raises(ValueError, match="index"):
        cam.compute_cam(model, x, "conv2", target=[1, 2, 3])
    with pytest.raises(ValueError, match="batch_size"):
        cam.compute_cam(model, x, "conv2", "scorecam", batch_size=0)
    from cam_nets import TinySeg
    with pytest.raises(ValueError, match="mask"):
        cam.compute_cam(TinySeg().eval(), x[:, :1], "mid", target=cam.SegmentationTarget(0, torch.ones(3, 3)))
    with pytest.raises(ValueError, match="class_index"):
        cam.compute_cam(TinySeg().eval(), x[:, :1], "mid", target=cam.SegmentationTarget(7))
    with pytest.raises(ValueError, match="ClassTarget|SegmentationTarget|dense"):
        cam.compute_cam(model, x, "conv2", target=cam.SegmentationTarget(0))
    with pytest.raises(ValueError, match="more than once"):
        cam.compute_cam(_Twice(), torch.randn(1, 2, 4, 4), "c")
    with pytest.raises(ValueError, match="did not run"):
        cam.compute_cam(_Twice(), torch.randn(1, 2, 4, 4), "unused")
    with pytest.raises(ValueError, match="weights shape"):
        cam.cam_epilogue(torch.randn(2, 3, 4, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="drop_denominator"):
        M.summarize({"drop": torch.zeros(1)}, "some")
    with pytest.raises(TypeError, match="target"):
        cam.compute_cam(model, x, "conv2", target=1.5)


def _kernel_or_skip():
    from medseg_ext.cam.weights import _kernel
    if _kernel() is None:
        pytest.skip("medseg_ext._C has no cam kernel (not built)")


@settings(max_examples=30)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 10_000), st.sampled_from(["usv", "uv"]),
       st.sampled_from(["all", "paper_literal"]), st.sampled_from([torch.float32, torch.float64]))
def test_cpp_rank1_kernel_vs_torch_and_reference(P, Q, seed, procedure, reduction, dtype):
    _kernel_or_skip()
    G = torch.from_numpy(_gen(P, Q, seed, batch=16)).to(dtype)
    s = np.linalg.svd(G.double().numpy(), compute_uv=False)
    if min(P, Q) > 1 and np.min(s[:, 0] - s[:, 1]) < 1e-3 * np.max(s[:, 0]):
        return  # near-tied top singular value: rank-1 factor ill-conditioned (fallback tested below)
    k = cam.svd_gradcam_weights(G, 1, procedure, reduction)
    t = cam.svd_gradcam_weights(G, 1, procedure, reduction, backend="torch")
    o = ref.svd_gradcam_weights(G.double().numpy(), 1, procedure, reduction)
    assert k.dtype == (torch.float32 if dtype == torch.float32 else torch.float64)
    tol = dict(rtol=1e-8, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(k.double().numpy(), o, **tol)
    np.testing.assert_allclose(k.double().numpy(), t.double().numpy(), **tol)


def test_cpp_rank1_kernel_edge_cases():
    _kernel_or_skip()
    G = torch.from_numpy(_gen(7, 7, 5, batch=6))
    G[0] = 0                                   # zero slice → 0
    G[1] = torch.eye(7, dtype=torch.float64)   # all singular values tied → flagged, dense fallback
    G[2, 3, 4] = float("nan")                  # NaN propagates
    G[3] = 2.5                                 # constant → the constant (rank 1)
    G[4] = 1e-150 * G[5]                       # tiny values
    w = cam.svd_gradcam_weights(G, 1)
    assert w[0] == 0 and torch.isnan(w[2]) and abs(float(w[3]) - 2.5) < 1e-12
    torch.testing.assert_close(w[4], 1e-150 * w[5], rtol=1e-9, atol=0)
    torch.testing.assert_close(w[1], cam.svd_gradcam_weights(G[1:2], 1, backend="torch")[0])
    # non-contiguous input and 3-D activations' matricisation
    Gt = torch.from_numpy(_gen(6, 5, 7, batch=8)).transpose(-2, -1)
    torch.testing.assert_close(cam.svd_gradcam_weights(Gt, 1), cam.svd_gradcam_weights(Gt.contiguous(), 1,
                                                                                          backend="torch"))
    G5 = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 3, 4, 5, 6)))
    np.testing.assert_allclose(cam.svd_gradcam_channel_weights(G5).numpy(),
                               ref.svd_gradcam_channel_weights(G5.numpy()), rtol=1e-8)
    # autograd: the kernel is bypassed and the weights stay differentiable
    Gr = torch.from_numpy(_gen(7, 7, 9, batch=3)).requires_grad_(True)
    cam.svd_gradcam_weights(Gr, 1).sum().backward()
    assert Gr.grad is not None and torch.isfinite(Gr.grad).all()


@settings(max_examples=15)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 3), st.sampled_from(
    ["gradcam", "svdgradcam", "eigencam", "eigengradcam", "scorecam", "gradcam++", "layercam"]))
def test_odd_shapes_single_pixel_and_channels_last(H, W, B, method):
    model = make()
    x = torch.randn(B, 3, H, W, generator=torch.Generator().manual_seed(H * 10 + W))
    r = cam.compute_cam(model, x, "conv2", method, batch_size=4)
    assert r.maps.shape == (B, H, W) and not torch.isnan(r.maps).any()
    assert float(r.maps.min()) >= 0 and float(r.maps.max()) <= 1
    xc = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cam.compute_cam(model, xc, "conv2", method, batch_size=4).maps, r.maps,
                               rtol=1e-5, atol=1e-5)


def test_channel_permutation_and_all_procedures_through_compute_cam():
    model = make(dtype=torch.float64)
    x = torch.randn(2, 3, 14, 14, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    r = cam.compute_cam(model, x, "conv1", "svdgradcam", keep=True, size=None)
    G, A = r.gradients, r.activations
    perm = torch.randperm(A.shape[1], generator=torch.Generator().manual_seed(0))
    w = cam.svd_gradcam_channel_weights(G)
    torch.testing.assert_close(cam.svd_gradcam_channel_weights(G[:, perm]), w[:, perm])
    torch.testing.assert_close(cam.cam_epilogue(A[:, perm], w[:, perm]), r.maps)
    for proc in ("u", "vt", "uv", "usv"):
        for red in ("all", "paper_literal"):
            m = cam.compute_cam(model, x, "conv1", "svdgradcam", procedure=proc, reduction=red, n=2, size=None).maps
            wr = ref.svd_gradcam_channel_weights(G.numpy(), 2, proc, red)
            if proc in ("u", "vt"):  # LAPACK sign convention: compare against the same LAPACK call's result
                wt = cam.svd_gradcam_channel_weights(G, 2, proc, red)
                np.testing.assert_allclose(np.abs(wt.numpy()), np.abs(wr), rtol=1e-8, atol=1e-12)
                wr = wt.numpy()
            np.testing.assert_allclose(m.numpy(), ref.cam_from_weights(A.numpy(), wr), rtol=1e-6, atol=1e-8)


def test_cpp_kernel_blocked_and_single_paths_agree():
    """The kernel runs four slices per iteration and the remainder one by one: same weights."""
    _kernel_or_skip()
    G = torch.from_numpy(_gen(7, 7, 21, batch=13))
    G[5] = 0
    G[6] = torch.eye(7, dtype=torch.float64)
    for proc in ("usv", "uv"):
        for red in ("all", "paper_literal"):
            allw = cam.svd_gradcam_weights(G, 1, proc, red)
            one = torch.stack([cam.svd_gradcam_weights(G[i:i + 1], 1, proc, red)[0] for i in range(13)])
            torch.testing.assert_close(allw, one, rtol=1e-12, atol=1e-15)
    G9 = torch.from_numpy(_gen(5, 9, 22, batch=9))      # generic-shape path, blocked + remainder
    np.testing.assert_allclose(cam.svd_gradcam_weights(G9, 1).numpy(), ref.svd_gradcam_weights(G9.numpy(), 1),
                               rtol=1e-8, atol=1e-12)
