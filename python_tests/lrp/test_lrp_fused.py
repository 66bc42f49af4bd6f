"""Fused stages of the fast z⁺/αβ/γ rules (C++ and torch forms) vs the NumPy oracle, and the
fast rules vs the exact block form and the dense-matrix reference."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from medseg_ext import lrp
from medseg_ext.lrp import fused, rules
from medseg_ext.reference import lrp as ref

HAVE_CPP = fused._ext() is not None
IMPLS = ["cpp", "torch"] if HAVE_CPP else ["torch"]


def _impl(name):
    class _Ctx:
        def __enter__(self):
            self.old = fused.USE_CPP
            fused.USE_CPP = name == "cpp"

        def __exit__(self, *a):
            fused.USE_CPP = self.old
    return _Ctx()


def _inputs(K, M, C, S, dtype, seed, scale=1.0, bias=True):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(M, C, S, generator=g, dtype=torch.float64) * scale
    h = z.abs() + torch.rand(M, C, S, generator=g, dtype=torch.float64) * scale  # h >= |Wx|, as for |W|·|x|
    b = torch.randn(C, generator=g, dtype=torch.float64) * scale if bias else None
    R = torch.randn(K, M, C, S, generator=g, dtype=torch.float64)
    return [t.to(dtype) if t is not None else None for t in (z, h, b, R)]


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=12, deadline=None)
@given(K=st.integers(1, 3), M=st.integers(1, 2), C=st.integers(1, 4), S=st.integers(1, 9),
       rule=st.sampled_from(["zplus", "alphabeta", "gamma"]), dtype=st.sampled_from([torch.float32, torch.float64]),
       bias=st.booleans(), scale=st.sampled_from([1.0, 1e-20, 1e20]), seed=st.integers(0, 10_000))
def test_signed_coeffs_matches_reference(impl, K, M, C, S, rule, dtype, bias, scale, seed):
    z, h, b, R = _inputs(K, M, C, S, dtype, seed, scale, bias)
    if dtype == torch.float32 and scale != 1.0:
        scale = 1e-3 if scale < 1 else 1e3
        z, h, b, R = _inputs(K, M, C, S, dtype, seed, scale, bias)
    kw = dict(alpha=3.0, beta=2.0, gamma=0.4, epsilon=1e-6)
    with _impl(impl):
        UV, c1, c2, err, mass = fused.signed_coeffs(z, h, b, R, rule, **kw)
    eUV, ec1, ec2, eerr, emass = ref.fast_signed_coeffs(z.numpy(), h.numpy(), None if b is None else b.numpy(),
                                                        R.numpy(), rule, **kw)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert UV.dtype == dtype and UV.shape == (K, M, 2 * C, S)
    np.testing.assert_allclose(UV.double().numpy(), eUV, rtol=tol, atol=tol * np.abs(eUV).max())
    assert (c1, c2) == (ec1, ec2)
    np.testing.assert_allclose([err, mass], [eerr, emass], rtol=tol)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=10, deadline=None)
@given(K=st.integers(1, 3), M=st.integers(1, 2), C=st.integers(1, 4), S=st.integers(1, 9),
       dtype=st.sampled_from([torch.float32, torch.float64]), c1=st.floats(0, 2), c2=st.floats(0, 2),
       seed=st.integers(0, 10_000))
def test_combine_matches_reference(impl, K, M, C, S, dtype, c1, c2, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, C, S, generator=g, dtype=torch.float64).to(dtype)
    G = torch.randn(K, M, 2 * C, S, generator=g, dtype=torch.float64).to(dtype)
    with _impl(impl):
        out = fused.combine(x, G, c1, c2)
    exp = ref.fast_combine(x.numpy(), G.numpy(), c1, c2)
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    np.testing.assert_allclose(out.double().numpy(), exp, rtol=tol, atol=tol * max(np.abs(exp).max(), 1e-30))


@pytest.mark.parametrize("impl", IMPLS)
def test_edge_cases_zeros_ties_nonfinite_noncontiguous(impl):
    # zeros: z = h = 0 (a dead region) -> denominators are exactly ±ε by sgn0(0) = +1; ties z = 0 get no γ share
    z = torch.zeros(1, 2, 3, dtype=torch.float64)
    h = torch.zeros_like(z)
    R = torch.ones(1, 1, 2, 3, dtype=torch.float64)
    with _impl(impl):
        UV, *_ = fused.signed_coeffs(z, h, None, R, "zplus", epsilon=1e-3)
        np.testing.assert_allclose(UV.numpy(), 1e3)
        UV, *_ = fused.signed_coeffs(z, h, None, R, "gamma", epsilon=1e-3)
        assert (UV == 0).all()
        UV, *_ = fused.signed_coeffs(-z, h, None, R, "alphabeta", epsilon=1e-3)  # -0.0 counts as +0
        np.testing.assert_allclose(UV.numpy(), ref.fast_signed_coeffs(-z.numpy(), h.numpy(), None, R.numpy(),
                                                                       "alphabeta", epsilon=1e-3)[0])
        # NaN / Inf are not masked: they propagate (IEEE), and the error estimate says so
        zn = z.clone()
        zn[0, 0, 1] = float("nan")
        UV, c1, c2, err, mass = fused.signed_coeffs(zn, h, None, R, "alphabeta", epsilon=1e-3)
        assert torch.isnan(UV[0, 0, 0, 1]) and torch.isnan(UV[0, 0, 2, 1]) and torch.isfinite(UV[0, 0, [1, 3]]).all()
        assert err != err
        hi = h.clone()
        hi[0, 1, 2] = float("inf")
        UV, *_, err, mass = fused.signed_coeffs(z, hi, None, R, "zplus", epsilon=1e-3)
        assert UV[0, 0, 1, 2] == 0 and not np.isfinite(err)   # R / (inf) = 0, h·|u| = inf·0 = NaN
        # non-contiguous inputs are accepted (copied to contiguous buffers)
        zc, hc, bc, Rc = _inputs(2, 2, 3, 5, torch.float64, 7)
        zt = zc.transpose(0, 2).contiguous().transpose(0, 2)
        Rt = Rc.permute(3, 1, 2, 0).contiguous().permute(3, 1, 2, 0)
        assert not zt.is_contiguous() and not Rt.is_contiguous()
        a = fused.signed_coeffs(zt, hc, bc, Rt, "gamma")
        b_ = fused.signed_coeffs(zc, hc, bc, Rc, "gamma")
        assert torch.equal(a[0], b_[0])
        x = torch.randn(3, 4, 2, dtype=torch.float64)
        G = torch.randn(2, 2, 8, 3, dtype=torch.float64)
        np.testing.assert_allclose(fused.combine(x.transpose(0, 2), G, 1.0, 0.5).numpy(),
                                   ref.fast_combine(x.transpose(0, 2).numpy(), G.numpy(), 1.0, 0.5), rtol=1e-14)


def test_bad_arguments():
    z, h, b, R = _inputs(1, 1, 2, 3, torch.float64, 0)
    with pytest.raises(ValueError, match="rule"):
        fused.signed_coeffs(z, h, b, R, "epsilon")
    with pytest.raises(ValueError, match="epsilon"):
        fused.signed_coeffs(z, h, b, R, "zplus", epsilon=0.0)
    with pytest.raises(ValueError, match="R"):
        fused.signed_coeffs(z, h, b, R[:, :, :1], "zplus")
    with pytest.raises(ValueError, match="b"):
        fused.signed_coeffs(z, h, b[:1], R, "zplus")
    with pytest.raises(TypeError, match="h"):
        fused.signed_coeffs(z, h.float(), b, R, "zplus")
    with pytest.raises(ValueError, match="x, G"):
        fused.combine(z, R, 1.0, 1.0)
    with pytest.raises(TypeError, match="exact"):
        lrp.ZPlus(exact=1)


@pytest.mark.skipif(not HAVE_CPP, reason="compiled extension not built")
def test_kernel_checks_shapes_itself():
    from medseg_ext._tensor import desc
    C = fused._ext()
    z, h, b, R = _inputs(1, 1, 2, 3, torch.float64, 0)
    out = torch.empty(1, 1, 3, 3, dtype=torch.float64)  # wrong: needs 2C = 4 channels
    with pytest.raises(ValueError, match="uv"):
        C.lrp_signed_coeffs(desc(z), desc(h), desc(b), desc(R), desc(out), 0, 2.0, 1.0, 0.25, 1e-6)
    with pytest.raises(ValueError, match="contiguous"):
        C.lrp_combine(desc(z.transpose(1, 2)), desc(torch.empty(1, 1, 6, 2, dtype=torch.float64)),
                      desc(torch.empty(1, 1, 3, 2, dtype=torch.float64)), 1.0, 1.0)
    with pytest.raises(ValueError, match="rule"):
        C.lrp_signed_coeffs(desc(z), desc(h), desc(b), desc(R), desc(torch.empty(1, 1, 4, 3, dtype=torch.float64)),
                            5, 2.0, 1.0, 0.25, 1e-6)


FAST_RULES = {"zplus": lambda ex: lrp.ZPlus(1e-6, exact=ex), "alphabeta": lambda ex: lrp.AlphaBeta(2, 1, 1e-6, exact=ex),
              "gamma": lambda ex: lrp.Gamma(0.25, 1e-6, exact=ex)}


def _layer_relevance(layer, x, R, rule):
    eng = lrp.LRP(layer, lrp.Composite(layer_map=[(type(layer), rule)]))
    eng.forward(x)
    return eng.relevance(R)


@pytest.fixture
def fast_signed_calls(monkeypatch):
    """One entry per layer the signed rules saw: True where the fast identity form was taken."""
    calls = []
    orig = rules._fast_signed

    def spy(*a, **k):
        r = orig(*a, **k)
        calls.append(r is not None)
        return r
    monkeypatch.setattr(rules, "_fast_signed", spy)
    return calls


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("rname", list(FAST_RULES))
@pytest.mark.parametrize("lname", ["conv2d", "convT2d_groups", "conv3d_odd"])
def test_fast_rules_match_exact_and_reference(impl, rname, lname, fast_signed_calls):
    torch.manual_seed(3)
    layer = {"conv2d": lambda: nn.Conv2d(3, 4, 3, padding=1),
             "convT2d_groups": lambda: nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, groups=2),
             "conv3d_odd": lambda: nn.Conv3d(2, 3, (1, 3, 2), stride=(1, 2, 1))}[lname]().double()
    x = torch.randn({"conv2d": (2, 3, 5, 7), "convT2d_groups": (1, 4, 3, 5), "conv3d_odd": (1, 2, 3, 5, 4)}[lname],
                    dtype=torch.float64)
    with torch.no_grad():
        z = layer(x)
    R = torch.randn((2,) + tuple(z.shape), dtype=torch.float64)   # K = 2 seeds
    with _impl(impl):
        fast = _layer_relevance(layer, x, R, FAST_RULES[rname](False))
    exact = _layer_relevance(layer, x, R, FAST_RULES[rname](True))
    calls = fast_signed_calls
    assert calls[0] is True and calls[1] is False        # fast path taken, exact path when asked
    np.testing.assert_allclose(fast.numpy(), exact.numpy(), rtol=1e-9, atol=1e-10 * exact.abs().max().item())
    if lname == "conv2d":
        w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
        kw = {"zplus": {}, "alphabeta": {"alpha": 2.0, "beta": 1.0}, "gamma": {"gamma": 0.25}}[rname]
        for k in range(2):
            exp = ref.lrp_conv(x[0].numpy(), w, b, R[k, 0].numpy(), padding=1, rule=rname, epsilon=1e-6, **kw)
            np.testing.assert_allclose(fast[k, 0].numpy(), exp, rtol=1e-8, atol=1e-12)


def test_unbalanced_layer_falls_back_to_exact_in_float32(fast_signed_calls):
    # non-negative inputs and all-positive weights except one tiny negative one: the negative parts
    # z⁻ are ~1e-9 of |W|·|x|, far below float32 resolution of the identity (Wx − h)/2
    torch.manual_seed(0)
    layer = nn.Conv2d(2, 2, 3, padding=1)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.0)
        layer.weight[0, 0, 1, 1] = -1e-9
        layer.bias.zero_()
    x = torch.rand(1, 2, 6, 6) + 0.5
    with torch.no_grad():
        R = layer(x)
    got = _layer_relevance(layer, x, R, lrp.AlphaBeta(2, 1, 1e-6))
    assert fast_signed_calls == [False]
    exp = ref.lrp_conv(x[0].numpy(), layer.weight.detach().numpy(), layer.bias.detach().numpy(), R[0].numpy(),
                       padding=1, rule="alphabeta", alpha=2.0, beta=1.0, epsilon=1e-6)
    np.testing.assert_allclose(got[0].numpy(), exp, rtol=1e-4, atol=1e-5 * np.abs(exp).max())


def test_fast_composites_on_unet_float32_as_accurate_as_exact():
    """float32 fast rules vs a float64 exact run: no worse than the float32 exact block form (×2)."""
    monai = pytest.importorskip("monai.networks.nets")
    torch.manual_seed(0)
    net = monai.BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=(4, 4, 8, 8, 16, 4)).eval()
    x = torch.rand(1, 1, 32, 32)
    makers = {"zplus": lambda ex: lrp.EpsilonPlus(layer_map=[(k, lrp.ZPlus(1e-6, exact=ex)) for k in ("conv", "convtranspose")]),
              "ab": lambda ex: lrp.EpsilonAlpha2Beta1(
                  layer_map=[(k, lrp.AlphaBeta(2.0, 1.0, 1e-6, exact=ex)) for k in ("conv", "convtranspose")]),
              "gamma": lambda ex: lrp.EpsilonGammaBox(
                  0.0, 1.0, layer_map=[(k, lrp.Gamma(0.25, 1e-6, exact=ex)) for k in ("conv", "convtranspose")])}
    for name, mk in makers.items():
        e64 = lrp.LRP(net.double(), mk(True))
        z = e64.forward(x.double())
        R64 = e64.relevance(z)
        errs = {}
        for ex in (True, False):
            e32 = lrp.LRP(net.float(), mk(ex))
            e32.forward(x)
            R32 = e32.relevance(z.float()).double()
            errs[ex] = ((R32 - R64).abs().max() / R64.abs().max()).item(), \
                abs((R32.sum() - R64.sum()) / R64.sum()).item()
        assert errs[False][0] <= 2 * errs[True][0] + 1e-6, (name, errs)
        assert errs[False][1] <= 2 * errs[True][1] + 1e-6, (name, errs)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=10, deadline=None)
@given(K=st.integers(1, 3), shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
       dtype=st.sampled_from([torch.float32, torch.float64]), mult=st.booleans(),
       scale=st.sampled_from([1.0, 1e-30, 1e30]), eps=st.sampled_from([1e-9, 1e-6, 0.5]), seed=st.integers(0, 10_000))
def test_eps_div_matches_reference(impl, K, shape, dtype, mult, scale, eps, seed):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.float32:
        scale = min(max(scale, 1e-15), 1e15)
    z = (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)
    z.view(-1)[0] = 0.0                                    # a tie at zero: sgn0(0) = +1
    R = torch.randn((K,) + tuple(shape), generator=g, dtype=torch.float64).to(dtype)
    m = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype) if mult else None
    with _impl(impl):
        got = fused.eps_div(R, z, eps, m)
    zz = z.double().numpy()
    exp = R.double().numpy() / ref.stab(zz, eps) * (1.0 if m is None else m.double().numpy())
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    np.testing.assert_allclose(got.double().numpy(), exp, rtol=tol, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_eps_div_edge_cases(impl):
    z = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-300], dtype=torch.float64)
    R = torch.ones(2, 6, dtype=torch.float64)
    with _impl(impl):
        got = fused.eps_div(R, z, 1e-3)
        got_nc = fused.eps_div(R.t().contiguous().t(), z, 1e-3)      # non-contiguous R
    assert got[0, 0] == 1e3 and got[0, 1] == 1e3                       # -0 counts as +0
    assert torch.isnan(got[:, 2]).all() and (got[:, 3:5] == 0).all()   # NaN propagates, 1/±inf = 0
    np.testing.assert_allclose(got[0, 5].item(), 1.0 / (1e-300 + 1e-3))
    np.testing.assert_array_equal(got.numpy(), got_nc.numpy())
    with pytest.raises(ValueError, match="epsilon"):
        fused.eps_div(R, z, 0.0)
    with pytest.raises(ValueError, match="R, z"):
        fused.eps_div(R[:, :3], z, 1e-3)
    with pytest.raises(TypeError, match="dtype"):
        fused.eps_div(R.float(), z, 1e-3)


class _PoolCat(nn.Module):
    def __init__(self, dims, k, s, ceil):
        super().__init__()
        self.pool = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims](k, s, ceil_mode=ceil)
        self.up = {1: nn.Upsample(scale_factor=2), 2: nn.Upsample(scale_factor=2), 3: nn.Upsample(scale_factor=2)}[dims]

    def forward(self, x):
        p = self.pool(x)
        p = torch.nn.functional.pad(p, [0, 0] * (x.dim() - 2))             # zero-width pad: a copy
        y = torch.cat([p, p * 2.0, torch.ones_like(p)], dim=1)            # duplicate + constant inputs
        return y.sum(dim=1, keepdim=True)


@pytest.mark.parametrize("dims,k,s,ceil", [(1, 3, 2, True), (2, 2, 2, False), (2, 3, 1, False), (3, 2, 2, True)])
def test_maxpool_indices_cat_split_match_autograd_route(dims, k, s, ceil):
    """The index-scatter max pool, the direct cat split and the zero pad give what the generic
    vjp route gives (ties included: an integer-valued input has many equal maxima)."""
    torch.manual_seed(dims + k)
    net = _PoolCat(dims, k, s, ceil).double()
    x = torch.randint(-2, 3, (2, 2) + (5,) * dims).double()
    eng = lrp.LRP(net, lrp.EpsilonComposite(epsilon=1e-6))
    z = eng.forward(x)
    kinds = [(n.kind, sorted(n.params)) for n in eng.nodes]
    assert ("maxpool", ["indices", "nsp"]) in kinds and ("reindex", ["cat"]) in kinds
    assert any(n.kind == "activation" and n.op == "pad" for n in eng.nodes)
    R = eng.relevance(torch.stack([z, -z * 0.5]))
    for n in eng.nodes:   # the same tape through the generic vjp route
        if n.kind == "maxpool":
            n.params = {}
        if n.kind == "reindex":
            n.params = {}
    R2 = eng.relevance(torch.stack([z, -z * 0.5]))
    np.testing.assert_allclose(R.numpy(), R2.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=12, deadline=None)
@given(K=st.integers(1, 3), M=st.integers(1, 2), C=st.integers(1, 3), S=st.integers(1, 11),
       dtype=st.sampled_from([torch.float32, torch.float64]), affine=st.booleans(), const=st.booleans(),
       scale=st.sampled_from([1.0, 1e-6, 1e6]), seed=st.integers(0, 10_000))
def test_norm_freeze_eps_matches_reference(impl, K, M, C, S, dtype, affine, const, scale, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, C, S, generator=g, dtype=torch.float64) * scale + 3.0 * scale
    if const:
        x[:, 0] = 2.0 * scale                         # a constant plane: variance 0, a = w / sqrt(norm_eps)
    w = torch.randn(C, generator=g, dtype=torch.float64) if affine else None
    z = torch.randn(M, C, S, generator=g, dtype=torch.float64)
    R = torch.randn(K, M, C, S, generator=g, dtype=torch.float64)
    x, z, R = x.to(dtype), z.to(dtype), R.to(dtype)
    w = w.to(dtype) if w is not None else None
    with _impl(impl):
        got = fused.norm_freeze_eps(x, z, R, w, 1e-5, 1e-6)
    xn = x.double().numpy()
    var = ((xn - xn.mean(axis=2, keepdims=True)) ** 2).mean(axis=2, keepdims=True)
    a = 1.0 / np.sqrt(var + 1e-5) * (1.0 if w is None else w.double().numpy().reshape(1, -1, 1))
    exp = R.double().numpy() / ref.stab(z.double().numpy(), 1e-6) * xn * a
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    np.testing.assert_allclose(got.double().numpy(), exp, rtol=tol, atol=tol * np.abs(exp).max())


def test_norm_freeze_eps_bad_arguments():
    x = torch.randn(1, 2, 3, dtype=torch.float64)
    R = torch.randn(1, 1, 2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="x, z, R"):
        fused.norm_freeze_eps(x, x[:, :1], R, None, 1e-5, 1e-6)
    with pytest.raises(ValueError, match="weight"):
        fused.norm_freeze_eps(x, x, R, torch.ones(3, dtype=torch.float64), 1e-5, 1e-6)
    with pytest.raises(TypeError, match="dtype"):
        fused.norm_freeze_eps(x, x, R.float(), None, 1e-5, 1e-6)
    with pytest.raises(ValueError, match="epsilon"):
        fused.norm_freeze_eps(x, x, R, None, 1e-5, 0.0)


@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm_freeze_fused_equals_torch_route(affine):
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.InstanceNorm2d(3, affine=affine), nn.LeakyReLU(0.1),
                        nn.Conv2d(3, 1, 1)).double().eval()
    if affine:
        with torch.no_grad():
            net[1].weight.uniform_(0.5, 1.5)
            net[1].bias.uniform_(-0.2, 0.2)
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64)
    out = {}
    for impl in IMPLS:
        with _impl(impl):
            eng = lrp.LRP(net, lrp.EpsilonComposite(epsilon=1e-6))
            z = eng.forward(x)
            out[impl] = eng.relevance(torch.stack([z, z.abs()]))
    # the generic route (statistics by _biased_var, separate ε division), forced by a non-fusable rule check
    orig = lrp.Rule._fusable
    lrp.Rule._fusable = lambda self, R, z: False
    try:
        eng = lrp.LRP(net, lrp.EpsilonComposite(epsilon=1e-6))
        z = eng.forward(x)
        generic = eng.relevance(torch.stack([z, z.abs()]))
    finally:
        lrp.Rule._fusable = orig
    for impl in IMPLS:
        np.testing.assert_allclose(out[impl].numpy(), generic.numpy(), rtol=1e-10, atol=1e-13)


def test_bench_module_runs_on_a_tiny_net(monkeypatch):
    pytest.importorskip("monai.networks.nets")
    from medseg_ext.bench import lrp as bench
    monkeypatch.setitem(bench.SIZES, "tiny", [("2d-32", 2, (1, 1, 32, 32), (2, 2, 4, 4, 8, 2))])
    res = bench.run(size="tiny", repeat=1, measure_memory=False, out=lambda *a: None)
    rows = {r["impl"]: r for r in res["rows"]}
    assert rows["fwd+bwd"]["x_fwd_bwd"] == 1.0 and rows["fwd+bwd"]["cpu_x_fwd_bwd"] == 1.0
    for impl in ("medseg eps", "medseg EpsilonPlus", "medseg Alpha2Beta1", "medseg GammaBox", "medseg eps K8"):
        assert rows[impl]["median_s"] > 0 and "error" not in rows[impl]
    assert set(bench.SIZES) >= {"small", "paper", "large"}
    with pytest.raises(ValueError, match="size"):
        bench.run(size="huge")
