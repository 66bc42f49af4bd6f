"""Edge cases of the LRP family against independent oracles: all-zero seeds and empty masks (exact
zeros), single-pixel regions, K = 1 vs K seeds, odd / 1×1 / 3-D / Conv1d shapes, non-contiguous
inputs and seeds, float64 / float32 / float16 / bfloat16, NaN/Inf, 1e±20 input scales (positive
homogeneity of LRP-0 rules), ε = 0 with exactly-zero pre-activations, and argument checks of the
engine, the rules, the seeding helpers and the fused kernels (Python wrappers and _C)."""
import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from medseg_ext import lrp
from medseg_ext.lrp import fused
from medseg_ext.reference import lrp as ref

pytestmark = pytest.mark.usefixtures("float64_default")  # nets are built in float64 unless cast

HAVE_CPP = fused._ext() is not None


# ---------------------------------------------------------------------------------------------- nets
def _net(dims, size, bias=True, cin=1, cout=2, seed=0):
    """Conv → ReLU → max pool (ceil mode, skipped below 2 px) → conv with an odd kernel → LeakyReLU →
    upsample back to ``size`` → 1×1 conv head; Conv{dims}d throughout."""
    torch.manual_seed(seed)
    Conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    Pool = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims]
    k2 = {1: 3, 2: (3, 2), 3: (1, 3, 2)}[dims]
    p2 = {1: 1, 2: (1, 1), 3: (0, 1, 1)}[dims]
    pool = Pool(2, ceil_mode=True) if min(size) >= 2 else nn.Identity()
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[dims]
    return nn.Sequential(Conv(cin, 3, 3, padding=1, bias=bias), nn.ReLU(), pool,
                         Conv(3, 3, k2, padding=p2, bias=bias), nn.LeakyReLU(0.1),
                         nn.Upsample(size=tuple(size), mode=mode), Conv(3, cout, 1, bias=bias))


class _ResNormNet(nn.Module):
    """Every parameter-free layer kind next to the weighted ones: batch norm, instance norm, a bare
    residual +, average pooling, nearest upsampling, concatenation."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.inorm = nn.InstanceNorm2d(4, affine=True)
        self.pool = nn.AvgPool2d(2)
        self.up = nn.Upsample(scale_factor=2)
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, x):
        a = torch.relu(self.bn(self.c1(x)))
        b = torch.relu(self.inorm(self.c2(a))) + a
        return self.head(torch.cat([a, self.up(self.pool(b))], dim=1))


def _res_norm_net():
    torch.manual_seed(11)
    m = _ResNormNet()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.2, 0.2)
        m.bn.running_var.uniform_(0.5, 2.0)
    return m


COMPOSITES = {
    "epsilon": lambda: lrp.EpsilonComposite(epsilon=1e-6),
    "epsilon_plus": lambda: lrp.EpsilonPlus(),
    "epsilon_plus_exact": lambda: lrp.EpsilonPlus(exact=True),
    "alpha2beta1": lambda: lrp.EpsilonAlpha2Beta1(),
    "gamma_box": lambda: lrp.EpsilonGammaBox(low=-4.0, high=4.0),
    "flat_wsquare": lambda: lrp.Composite(layer_map=[("conv", lrp.WSquare())], first_map=[("conv", lrp.Flat())]),
}


def _relevance(net, x, seed, comp):
    eng = lrp.LRP(net, comp)
    eng.forward(x)
    return eng.relevance(seed)


def _grad_x_input(model, x, seed):
    """ε = 0 oracle: gradient × input of Σ (seed / z) ⊙ z with z frozen in the ratio; an output with
    z == 0 passes nothing (the LRP-0 convention for a zero denominator)."""
    model.eval()
    xx = x.clone().requires_grad_(True)
    z = model(xx)
    zd = z.detach()
    ratio = torch.where(zd == 0, torch.zeros_like(zd), seed / torch.where(zd == 0, torch.ones_like(zd), zd))
    g, = torch.autograd.grad((ratio * z).sum(), xx)
    return (g * x).detach()


SHAPES = {"conv1d_2x2x7": (1, (2, 2, 7)), "conv2d_1x1x7x5": (2, (1, 1, 7, 5)), "conv2d_1x1x1x1": (2, (1, 1, 1, 1)),
          "conv2d_3x1x4x3": (2, (3, 1, 4, 3)), "conv3d_1x1x5x6x7": (3, (1, 1, 5, 6, 7))}


def _shape_net(name, bias=True):
    dims, shape = SHAPES[name]
    return _net(dims, shape[2:], bias=bias, cin=shape[1]), shape


# ------------------------------------------------------------------------------- zero seeds, empty masks
@pytest.mark.parametrize("cname", list(COMPOSITES) + ["lrp0"])
def test_all_zero_seed_gives_exact_zero_every_rule(cname):
    """Every rule is linear in the seed: a zero seed must give exactly 0 (no NaN from 0/0), also for
    LRP-0 (ε = 0) and through BN, instance norm, residual +, avg pool, cat."""
    net = _res_norm_net()
    x = torch.randn(2, 1, 6, 6).clamp(-4, 4)
    comp = lrp.EpsilonComposite(epsilon=0.0, bn="epsilon") if cname == "lrp0" else COMPOSITES[cname]()
    eng = lrp.LRP(net, comp)
    z = eng.forward(x)
    for seed in (torch.zeros_like(z), torch.zeros((3,) + tuple(z.shape))):
        R = eng.relevance(seed)
        assert R.shape == tuple(seed.shape[:-4]) + tuple(x.shape)
        assert torch.count_nonzero(R) == 0 and not torch.isnan(R).any()
    # one zero and one non-zero seed in one pass: the zero row stays exactly zero
    R2 = eng.relevance(torch.stack([torch.zeros_like(z), torch.sigmoid(z)]))
    assert torch.count_nonzero(R2[0]) == 0 and torch.count_nonzero(R2[1]) > 0


@pytest.mark.parametrize("mode", ["paper", "prob", "logit", "uniform"])
@pytest.mark.parametrize("eps", [0.0, 1e-9])
def test_no_foreground_gives_zero_relevance(mode, eps):
    """A net whose probabilities are all below the threshold: empty masks for every component rule,
    a zero seed (paper mode with ε = 0 included: the sum layer's 0/0 gives 0) and zero relevance."""
    net = _net(2, (5, 6), cin=1, cout=1)
    with torch.no_grad():
        net[-1].bias.fill_(-50.0)
    x = torch.rand(2, 1, 5, 6)
    eng = lrp.LRP(net)
    z = eng.forward(x)
    masks = lrp.region_masks(z, components=["largest", 0, 3, "all", (2, 2)])
    assert masks.shape == (5, 2, 5, 6) and not masks.any()
    seed = lrp.make_seed(z, masks, 0, mode=mode, epsilon=eps)
    assert torch.count_nonzero(seed) == 0 and not torch.isnan(seed).any()
    R = lrp.explain(net, x, mode=mode, epsilon=eps, components=["largest", "all"])
    assert R.shape == (2, 2, 1, 5, 6) and torch.count_nonzero(R) == 0 and not torch.isnan(R).any()


def test_make_seed_lrp0_sum_layer_empty_and_nonempty_regions():
    """ε = 0 in the sum layer: y / y = 1 for a non-empty region (the seed is m ⊙ s exactly) and 0
    for an empty one (it was 0/0 = NaN)."""
    torch.manual_seed(1)
    z = torch.randn(2, 3, 4, 5)
    masks = torch.zeros(3, 2, 4, 5, dtype=torch.bool)
    masks[1, 0, 1, 2] = True                      # a single pixel of sample 0
    masks[2, :, 1:3, 1:4] = True
    seed = lrp.make_seed(z, masks, [0, 2, 1], mode="paper", epsilon=0.0)
    s = torch.sigmoid(z)
    exp = torch.zeros_like(seed)
    for k, c in enumerate([0, 2, 1]):
        exp[k, :, c] = masks[k] * s[:, c]
    torch.testing.assert_close(seed, exp, rtol=1e-15, atol=0)


# ------------------------------------------------------------------------------- single pixel regions
@settings(max_examples=10, deadline=None)
@given(h=st.integers(1, 6), w=st.integers(1, 6), data=st.data())
def test_single_pixel_region_explain_conservation_and_grad_x_input(h, w, data):
    """One foreground pixel (selected by pixel tuple and as the largest component): explain equals the
    hand-built seed s_p · y / (y + ε) at that pixel; bias-free LRP-0 conserves it and equals
    gradient × input of the linearised net."""
    i, j = data.draw(st.integers(0, h - 1)), data.draw(st.integers(0, w - 1))
    net = _net(2, (h, w), bias=False, cin=1, cout=1, seed=h * 7 + w)
    x = torch.rand(1, 1, h, w) + 0.1
    with torch.no_grad():
        z = net(x)
    mask = torch.zeros(1, h, w, dtype=torch.bool)
    mask[0, i, j] = True
    # the component selectors see exactly this pixel
    assert torch.equal(lrp.select_component(mask[0], (i, j)), mask[0])
    assert torch.equal(lrp.select_component(mask[0], "largest"), mask[0])
    comp = lrp.EpsilonComposite(epsilon=0.0)
    R = lrp.explain(net, x, masks=mask, composite=comp, epsilon=1e-9)[0]
    s = torch.sigmoid(z[0, 0, i, j])
    seed = torch.zeros_like(z)
    seed[0, 0, i, j] = s * s / (s + 1e-9)
    exp = _grad_x_input(net, x, seed)
    torch.testing.assert_close(R, exp, rtol=1e-9, atol=1e-12)
    if z[0, 0, i, j] != 0:
        np.testing.assert_allclose(R.sum().item(), seed.sum().item(), rtol=1e-9)


# ------------------------------------------------------------------------ K seeds, odd / 1-D / 3-D shapes
@pytest.mark.parametrize("sname", list(SHAPES))
@pytest.mark.parametrize("cname", ["epsilon", "epsilon_plus", "alpha2beta1", "gamma_box"])
def test_k_seeds_one_pass_equals_single_passes_odd_shapes(sname, cname):
    net, shape = _shape_net(sname)
    x = torch.randn(shape).clamp(-4, 4)
    eng = lrp.LRP(net, COMPOSITES[cname]())
    z = eng.forward(x)
    seeds = torch.randn((3,) + tuple(z.shape))
    R = eng.relevance(seeds)
    assert R.shape == (3,) + tuple(x.shape) and torch.isfinite(R).all()
    singles = torch.stack([eng.relevance(seeds[k]) for k in range(3)])
    torch.testing.assert_close(R, singles, rtol=1e-10, atol=1e-12 * singles.abs().max().item())
    # K = 1 with the leading dimension equals the squeezed call
    torch.testing.assert_close(eng.relevance(seeds[:1])[0], singles[0], rtol=1e-12,
                               atol=1e-14 * singles.abs().max().item())
    # linearity in the seed
    torch.testing.assert_close(eng.relevance(seeds[0] - 2.0 * seeds[1]), singles[0] - 2.0 * singles[1],
                               rtol=1e-9, atol=1e-11 * singles.abs().max().item())


@pytest.mark.parametrize("sname", list(SHAPES))
def test_odd_shapes_lrp0_grad_x_input_and_bias_free_conservation(sname):
    dims, shape = SHAPES[sname]
    torch.manual_seed(5)
    x = torch.randn(shape)
    net = _shape_net(sname, bias=True)[0]
    eng = lrp.LRP(net, lrp.EpsilonComposite(epsilon=0.0))
    z = eng.forward(x)
    seed = torch.sigmoid(z)
    torch.testing.assert_close(eng.relevance(seed), _grad_x_input(net, x, seed), rtol=1e-9, atol=1e-12)
    net0 = _shape_net(sname, bias=False)[0]
    eng = lrp.LRP(net0, lrp.EpsilonComposite(epsilon=0.0))
    z = eng.forward(x)
    seed = torch.rand((2,) + tuple(z.shape)) * (z != 0)
    R = eng.relevance(seed, diagnostics=True)
    np.testing.assert_allclose(R.flatten(1).sum(-1).numpy(), seed.flatten(1).sum(-1).numpy(), rtol=1e-9)
    for row in eng.conservation_report():
        np.testing.assert_allclose(row["relevance_in"], row["relevance_out"], rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------- memory layouts
def _layouts(x):
    """Non-contiguous views with the values of x: transposed, strided, channels-last."""
    d = x.dim()
    out = {"transposed": x.transpose(-1, -2).contiguous().transpose(-1, -2)}
    big = torch.zeros(tuple(x.shape[:2]) + tuple(2 * s for s in x.shape[2:]), dtype=x.dtype)
    sl = (slice(None), slice(None)) + (slice(None, None, 2),) * (d - 2)
    big[sl] = x
    out["strided"] = big[sl]
    out["channel_major"] = x.transpose(0, 1).contiguous().transpose(0, 1)
    if d == 4:
        out["channels_last"] = x.contiguous(memory_format=torch.channels_last)
    if d == 5:
        out["channels_last_3d"] = x.contiguous(memory_format=torch.channels_last_3d)
    for k, v in out.items():
        assert torch.equal(v, x), k
    # size-1 dimensions can make a permuted copy contiguous again; keep only the real layouts
    return {k: v for k, v in out.items() if not v.is_contiguous() or k.startswith("channels")}


@pytest.mark.parametrize("sname", ["conv1d_2x2x7", "conv2d_3x1x4x3", "conv3d_1x1x5x6x7"])
@pytest.mark.parametrize("cname", ["epsilon", "epsilon_plus", "alpha2beta1", "gamma_box"])
def test_noncontiguous_input_and_seed_equal_contiguous(sname, cname):
    net, shape = _shape_net(sname)
    torch.manual_seed(6)
    x = torch.randn(shape).clamp(-4, 4)
    eng = lrp.LRP(net, COMPOSITES[cname]())
    z = eng.forward(x)
    seed = torch.randn((2,) + tuple(z.shape))
    R = eng.relevance(seed)
    for name, xv in _layouts(x).items():
        Rv = _relevance(net, xv, seed, COMPOSITES[cname]())
        torch.testing.assert_close(Rv, R, rtol=1e-10, atol=1e-12 * R.abs().max().item(), msg=name)
    # non-contiguous seeds: a transposed copy, and a stride-0 expansion of one seed to K = 3
    st_ = seed.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not st_.is_contiguous()
    torch.testing.assert_close(eng.relevance(st_), R, rtol=1e-13, atol=1e-15 * R.abs().max().item())
    Re = eng.relevance(seed[0].expand((3,) + tuple(z.shape)))
    for k in range(3):
        torch.testing.assert_close(Re[k], R[0], rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("cname", ["epsilon", "epsilon_plus", "alpha2beta1", "gamma_box"])
def test_dtypes_float32_float16_bfloat16_close_to_float64(cname):
    net = _net(2, (7, 5), cin=1, cout=2, seed=3)
    torch.manual_seed(7)
    x = torch.randn(1, 1, 7, 5).clamp(-3, 3)
    eng = lrp.LRP(net, COMPOSITES[cname]())
    z = eng.forward(x)
    seed = torch.sigmoid(z) * (z > 0)
    R = eng.relevance(seed)
    scale = R.abs().max().item()
    for dt, tol in ((torch.float32, 1e-4), (torch.float16, 3e-2), (torch.bfloat16, 1.5e-1)):
        m = copy.deepcopy(net).to(dt)
        got = _relevance(m, x.to(dt), seed.to(dt), COMPOSITES[cname]())
        assert got.dtype == dt and torch.isfinite(got).all(), dt
        err = (got.double() - R).abs().max().item()
        assert err <= tol * scale, (dt, err / scale)
        # a float64 / integer / bool seed is cast to the output's dtype
        if dt == torch.float32:
            torch.testing.assert_close(_relevance(m, x.to(dt), seed, COMPOSITES[cname]()), got, rtol=0, atol=0)
    mask = (z > 0)
    eng.forward(x)
    torch.testing.assert_close(eng.relevance(mask), eng.relevance(mask.double()), rtol=0, atol=0)
    torch.testing.assert_close(eng.relevance(mask.long()), eng.relevance(mask.double()), rtol=0, atol=0)


# ---------------------------------------------------------------------------- scales, LRP-0 zeros
HOMOGENEOUS = {"epsilon0": lambda: lrp.EpsilonComposite(epsilon=0.0),
               "zplus0": lambda: lrp.Composite(layer_map=[("conv", lrp.ZPlus(0.0))], epsilon=0.0),
               "alphabeta0": lambda: lrp.Composite(layer_map=[("conv", lrp.AlphaBeta(2.0, 1.0, 0.0))], epsilon=0.0),
               "gamma0": lambda: lrp.Composite(layer_map=[("conv", lrp.Gamma(0.25, 0.0))], epsilon=0.0)}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("cname", list(HOMOGENEOUS))
def test_huge_and_tiny_input_scales_positive_homogeneity(cname, dtype):
    """A bias-free ReLU net is positively homogeneous and the LRP-0 forms of ε, z⁺, αβ, γ are ratios of
    terms linear in x: R(c·x) = R(x) for c = 1e±20 (max-pool argmax and ReLU pattern unchanged)."""
    net = _net(2, (7, 5), bias=False, cin=2, cout=2, seed=4).to(dtype)
    torch.manual_seed(8)
    x = torch.randn(2, 2, 7, 5, dtype=dtype)
    eng = lrp.LRP(net, HOMOGENEOUS[cname]())
    z = eng.forward(x)
    seed = torch.rand((2,) + tuple(z.shape), dtype=dtype) * (z > 0)
    R = eng.relevance(seed)
    assert torch.isfinite(R).all() and R.abs().max() > 0
    tol = 1e-10 if dtype == torch.float64 else 1e-3
    for c in (1e-20, 1e20):
        Rc = _relevance(net, x * c, seed, HOMOGENEOUS[cname]())
        assert torch.isfinite(Rc).all()
        torch.testing.assert_close(Rc, R, rtol=tol, atol=tol * R.abs().max().item(), msg=f"scale {c}")


LRP0_RULES = {"epsilon": lambda: lrp.Epsilon(0.0), "epsilon_paper": lambda: lrp.Epsilon(0.0, stabilizer="paper"),
              "zplus": lambda: lrp.ZPlus(0.0), "alphabeta": lambda: lrp.AlphaBeta(2.0, 1.0, 0.0),
              "gamma": lambda: lrp.Gamma(0.25, 0.0)}


@pytest.mark.parametrize("rname", list(LRP0_RULES))
def test_lrp0_exactly_zero_preactivations_give_zero_not_nan(rname):
    """ε = 0 with a zero half of the input and an all-zero input: every pre-activation over the zero
    region is exactly 0 (bias-free), also in the instance norm, the residual + and the avg pool.
    Relevance is finite, exactly 0 where x = 0, and all 0 for x = 0."""
    torch.manual_seed(9)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(1, 3, 3, padding=1, bias=False)
            self.n = nn.InstanceNorm2d(3)
            self.c2 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
            self.pool = nn.AvgPool2d(2)
            self.up = nn.Upsample(scale_factor=2)
            self.head = nn.Conv2d(3, 1, 1, bias=False)

        def forward(self, x):
            a = torch.relu(self.n(self.c1(x)))
            b = torch.relu(self.c2(a)) + a
            return self.head(self.up(self.pool(b)))

    net = Net()
    comp = lrp.Composite(layer_map=[("conv", LRP0_RULES[rname]())], epsilon=0.0, norm="freeze")
    x = torch.rand(2, 1, 8, 8) + 0.1
    x[:, :, :, :4] = 0.0          # wider than the receptive field of the zeros on the pooled grid
    x[1] = 0.0                    # a whole zero sample
    eng = lrp.LRP(net, comp)
    z = eng.forward(x)
    assert (z[1] == 0).all()
    seed = torch.ones((2,) + tuple(z.shape))
    R = eng.relevance(seed)
    assert torch.isfinite(R).all()
    assert torch.count_nonzero(R[:, :, :, :, :4]) == 0 and torch.count_nonzero(R[:, 1]) == 0
    assert torch.count_nonzero(R[:, 0]) > 0
    if rname == "epsilon":   # the oracle differentiates through the norm statistics: Captum-mode norm
        eng = lrp.LRP(net, lrp.Composite(layer_map=[("conv", lrp.Epsilon(0.0))], epsilon=0.0, norm="captum"))
        eng.forward(x)
        torch.testing.assert_close(eng.relevance(seed[0]), _grad_x_input(net, x, seed[0]), rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_input_seed_logits_masks_attr_raise_naming_them(bad):
    net = _net(2, (4, 4), cin=1, cout=1)
    eng = lrp.LRP(net)
    x = torch.rand(1, 1, 4, 4)
    xb = x.clone()
    xb[0, 0, 1, 2] = bad
    with pytest.raises(ValueError, match="^x: contains NaN or Inf"):
        eng.forward(xb)
    with pytest.raises(RuntimeError, match="forward"):   # the failed forward left nothing recorded
        eng.relevance(torch.zeros(1, 1, 4, 4))
    z = eng.forward(x)
    sb = torch.zeros((2,) + tuple(z.shape))
    sb[1, 0, 0, 3, 0] = bad
    with pytest.raises(ValueError, match="^seed: contains NaN or Inf"):
        eng.relevance(sb)
    zb = z.clone()
    zb[0, 0, 0, 0] = bad
    m = torch.ones(1, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="^logits:"):
        lrp.make_seed(zb, m, 0)
    mw = m.double()
    mw[0, 2, 2] = bad
    with pytest.raises(ValueError, match="^masks:"):
        lrp.make_seed(z, mw, 0)
    a = np.ones((3, 3))
    a[1, 1] = bad
    with pytest.raises(ValueError, match="^attr:"):
        lrp.normalize_attr(a)


def test_engine_rule_and_seeding_argument_errors_name_the_argument():
    net = _net(2, (4, 4), cin=1, cout=1)
    eng = lrp.LRP(net)
    with pytest.raises(RuntimeError, match=r"forward\(x\) before relevance"):
        eng.relevance(torch.zeros(1, 1, 4, 4))
    z = eng.forward(torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match="^seed: K must be >= 1"):
        eng.relevance(torch.zeros((0,) + tuple(z.shape)))
    with pytest.raises(TypeError, match="^seed"):
        eng.relevance(z.numpy())
    with pytest.raises(TypeError, match="^x: expected a floating-point"):
        eng.forward(torch.ones(1, 1, 4, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="^module_rules"):
        lrp.LRP(net, module_rules={"0": "eps"})
    nan, inf = float("nan"), float("inf")
    for bad, name in [(lambda: lrp.AlphaBeta(nan, 0.0), "alpha"), (lambda: lrp.AlphaBeta(inf, inf), "alpha"),
                      (lambda: lrp.AlphaBeta(2.0, nan), "beta"), (lambda: lrp.AlphaBeta(1.5, 1.0), "alpha, beta"),
                      (lambda: lrp.AlphaBeta(-1.0, -2.0), "alpha"), (lambda: lrp.Gamma(inf), "gamma"),
                      (lambda: lrp.Gamma(nan), "gamma"), (lambda: lrp.Gamma(-1e-3), "gamma"),
                      (lambda: lrp.ZBox(nan, 1.0), "low"), (lambda: lrp.ZBox(0.0, inf), "high"),
                      (lambda: lrp.ZBox(torch.tensor([0.0, nan]), 1.0), "low"), (lambda: lrp.Epsilon(nan), "epsilon"),
                      (lambda: lrp.Epsilon(inf), "epsilon"), (lambda: lrp.Epsilon(-1e-9), "epsilon"),
                      (lambda: lrp.EpsilonComposite(epsilon=-1.0), "epsilon"),
                      (lambda: lrp.make_seed(z, torch.zeros(0, 4, 4, dtype=torch.bool)), "masks"),
                      (lambda: lrp.make_seed(z, torch.ones(1, 4, 4, dtype=torch.bool), epsilon=-1.0), "epsilon"),
                      (lambda: lrp.make_seed(z.long(), torch.ones(1, 4, 4, dtype=torch.bool)), "logits")]:
        with pytest.raises(ValueError, match=f"^{name}"):
            bad()
    for bad, name in [(lambda: lrp.Gamma("0.25"), "gamma"), (lambda: lrp.AlphaBeta(True, 0.0), "alpha"),
                      (lambda: lrp.Epsilon(None), "epsilon"), (lambda: lrp.ZPlus(exact="yes"), "exact"),
                      (lambda: lrp.ZBox("0", 1.0), "low"),
                      (lambda: lrp.make_seed(z, torch.ones(1, 4, 4, dtype=torch.bool), channels="a"), "channels"),
                      (lambda: lrp.threshold_mask(z.numpy()), "prob"), (lambda: lrp.log_scale(z, None), "thresh")]:
        with pytest.raises(TypeError, match=f"^{name}"):
            bad()


UNSUPPORTED = {
    "LPPool1d": (lambda: nn.Sequential(nn.Conv1d(1, 2, 3), nn.LPPool1d(2, 2)), (1, 1, 8), "'1'.*LPPool1d"),
    "LPPool3d": (lambda: nn.Sequential(nn.Conv3d(1, 2, 1), nn.LPPool3d(2, 2)), (1, 1, 4, 4, 4), "'1'.*LPPool3d"),
    "Unfold": (lambda: nn.Sequential(nn.Conv2d(1, 2, 1), nn.Unfold(2)), (1, 1, 4, 4), "'1'.*Unfold"),
    "Softmax2d": (lambda: nn.Sequential(nn.Conv2d(1, 2, 1), nn.Softmax2d()), (1, 1, 2, 2), "'1'.*Softmax2d"),
}


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_unknown_layers_raise_naming_the_layer(name):
    build, shape, pattern = UNSUPPORTED[name]
    with pytest.raises(lrp.LRPUnsupportedError, match=pattern):
        lrp.LRP(build()).forward(torch.rand(shape))


def test_unknown_operations_raise_naming_op_and_module():
    class Cum(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, dim=-1)

    class Exp(nn.Module):
        def forward(self, x):
            return x.exp()

    for mod, op in ((Cum(), "cumsum"), (Exp(), "exp")):
        net = nn.Sequential(nn.Conv2d(1, 1, 1), mod)
        with pytest.raises(lrp.LRPUnsupportedError, match=f"'{op}'.*'1'"):
            lrp.LRP(net).forward(torch.rand(1, 1, 3, 3))
        # the documented fix: a rule for the module (Pass keeps the shape); finite relevance of its shape
        eng = lrp.LRP(net, module_rules={type(mod): lrp.Pass()})
        z = eng.forward(torch.rand(1, 1, 3, 3))
        R = eng.relevance(z)
        assert R.shape == (1, 1, 3, 3) and torch.isfinite(R).all()


# ---------------------------------------------------------------------- fused stages: argument checks
def _fx(K=2, M=1, C=2, S=3, dt=torch.float64):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(M, C, S, generator=g, dtype=dt)
    return z, z.abs() + 1, torch.randn(C, dtype=dt, generator=g), torch.randn(K, M, C, S, generator=g, dtype=dt)


def test_fused_wrappers_reject_bad_arguments_naming_them():
    z, h, b, R = _fx()
    x = torch.randn(1, 2, 3, dtype=torch.float64)
    G = torch.randn(2, 1, 4, 3, dtype=torch.float64)
    cases = [
        # integer tensors: were silently promoted to float32 by the torch forms
        (TypeError, "^R: expected a floating", lambda: fused.eps_div(R.long(), z.long(), 1e-3)),
        (TypeError, "^mult: expected a floating", lambda: fused.eps_div(R, z, 1e-3, z.long())),
        (TypeError, "^x: expected a floating", lambda: fused.combine(x.long(), G.long(), 1.0, 1.0)),
        (TypeError, "^G: expected a floating", lambda: fused.combine(x, G.int(), 1.0, 1.0)),
        (TypeError, "^x: expected a floating", lambda: fused.norm_freeze_eps(x.long(), x.long(), R.long(),
                                                                             None, 1e-5, 1e-6)),
        (TypeError, "^weight: expected a floating", lambda: fused.norm_freeze_eps(x, x, R, torch.ones(2, dtype=torch.int64),
                                                                                  1e-5, 1e-6)),
        (TypeError, "^b: expected a floating", lambda: fused.signed_coeffs(z, h, b.long(), R, "zplus")),
        # not tensors at all
        (TypeError, "^R: expected a torch.Tensor", lambda: fused.eps_div(R.numpy(), z, 1e-3)),
        (TypeError, "^G: expected a torch.Tensor", lambda: fused.combine(x, G.tolist(), 1.0, 1.0)),
        (TypeError, "^h: expected a torch.Tensor", lambda: fused.signed_coeffs(z, h.numpy(), b, R, "zplus")),
        # mismatched shapes / K / M
        (ValueError, "^R: expected shape", lambda: fused.signed_coeffs(z, h, b, R[:, :, :1], "gamma")),
        (ValueError, "^R: expected shape", lambda: fused.signed_coeffs(z, h, b, R[0], "gamma")),
        (ValueError, "^z, h", lambda: fused.signed_coeffs(z[0], h[0], b, R, "zplus")),
        (ValueError, "^x, G", lambda: fused.combine(x, torch.randn(2, 2, 4, 3, dtype=torch.float64), 1.0, 1.0)),
        (ValueError, "^x, G", lambda: fused.combine(x, G[:, :, :3], 1.0, 1.0)),
        (ValueError, "^R, z, mult", lambda: fused.eps_div(R, z, 1e-3, z[:, :1])),
        (ValueError, "^x, z, R", lambda: fused.norm_freeze_eps(x, x, R[:, :, :1], None, 1e-5, 1e-6)),
        # dtypes and constants
        (TypeError, "^R, z, mult", lambda: fused.eps_div(R, z, 1e-3, z.float())),
        (TypeError, "^G: expected dtype", lambda: fused.combine(x, G.float(), 1.0, 1.0)),
        (TypeError, "^R: expected dtype", lambda: fused.signed_coeffs(z, h, b, R.float(), "alphabeta")),
        (ValueError, "^epsilon", lambda: fused.eps_div(R, z, float("nan"))),
        (ValueError, "^epsilon", lambda: fused.signed_coeffs(z, h, b, R, "gamma", epsilon=-1.0)),
        (ValueError, "^norm_eps", lambda: fused.norm_freeze_eps(x, x, R, None, -1.0, 1e-6)),
    ]
    for exc, pattern, call in cases:
        with pytest.raises(exc, match=pattern):
            call()


@pytest.mark.skipif(not HAVE_CPP, reason="compiled extension not built")
def test_fused_kernels_check_arguments_themselves_no_crash():
    """The _C kernels, called directly, reject wrong dtypes, shapes, K, non-contiguous buffers and a
    stride-0 tensor of 2^31 + 3 elements (int64 sizes) before touching memory."""
    from medseg_ext._tensor import desc
    C = fused._ext()
    f64 = dict(dtype=torch.float64)
    z, h, b, R = _fx()
    uv = torch.empty(2, 1, 4, 3, **f64)
    out = torch.empty(2, 6, **f64)
    big = torch.zeros(1, **f64).expand(2 ** 31 + 3)
    cases = [
        ("z: expected float32 or float64", lambda: C.lrp_signed_coeffs(desc(z.half()), desc(h.half()), None, desc(R.half()),
                                                                       desc(uv.half()), 0, 2.0, 1.0, 0.25, 1e-6)),
        ("h: expected dtype", lambda: C.lrp_signed_coeffs(desc(z), desc(h.float()), None, desc(R), desc(uv), 0, 2.0, 1.0,
                                                          0.25, 1e-6)),
        ("uv: size", lambda: C.lrp_signed_coeffs(desc(z), desc(h), None, desc(R), desc(uv[:1]), 0, 2.0, 1.0, 0.25, 1e-6)),
        ("b: size", lambda: C.lrp_signed_coeffs(desc(z), desc(h), desc(b[:1]), desc(R), desc(uv), 0, 2.0, 1.0, 0.25, 1e-6)),
        ("epsilon", lambda: C.lrp_signed_coeffs(desc(z), desc(h), None, desc(R), desc(uv), 0, 2.0, 1.0, 0.25, 0.0)),
        ("R: expected \\(K, M, C, S\\)", lambda: C.lrp_signed_coeffs(desc(z), desc(h), None, desc(R[0]), desc(uv), 0, 2.0,
                                                                     1.0, 0.25, 1e-6)),
        ("contiguous", lambda: C.lrp_signed_coeffs(desc(z), desc(h), None, desc(R.transpose(0, 3).contiguous()
                                                                               .transpose(0, 3)), desc(uv), 0, 2.0, 1.0,
                                                   0.25, 1e-6)),
        ("out: size", lambda: C.lrp_eps_div(desc(R.reshape(2, 6)), desc(z.reshape(6)), None, desc(out[:1]), 1e-3)),
        ("mult: size", lambda: C.lrp_eps_div(desc(R.reshape(2, 6)), desc(z.reshape(6)), desc(z.reshape(6)[:5]),
                                             desc(out), 1e-3)),
        ("R: expected dtype", lambda: C.lrp_eps_div(desc(R.reshape(2, 6).float()), desc(z.reshape(6)), None, desc(out),
                                                    1e-3)),
        ("R, z: expected", lambda: C.lrp_eps_div(desc(R), desc(z.reshape(6)), None, desc(out), 1e-3)),
        ("contiguous", lambda: C.lrp_eps_div(desc(big.reshape(1, -1)), desc(big), None, desc(big.reshape(1, -1)), 1e-3)),
        ("G: size", lambda: C.lrp_combine(desc(z), desc(R), desc(R), 1.0, 1.0)),
        ("out: size", lambda: C.lrp_combine(desc(z), desc(uv), desc(uv), 1.0, 1.0)),
        ("weight: size", lambda: C.lrp_norm_freeze_eps(desc(z), desc(z), desc(R), desc(b[:1]), desc(torch.empty_like(R)),
                                                       1e-5, 1e-6)),
        ("norm_eps", lambda: C.lrp_norm_freeze_eps(desc(z), desc(z), desc(R), None, desc(torch.empty_like(R)), -1.0,
                                                   1e-6)),
        ("contiguous", lambda: C.lrp_norm_freeze_eps(desc(z.transpose(1, 2).contiguous().transpose(1, 2)), desc(z),
                                                     desc(R), None, desc(torch.empty_like(R)), 1e-5, 1e-6)),
    ]
    for pattern, call in cases:
        with pytest.raises(ValueError, match=pattern):
            call()
    # the same buffers, correctly shaped, work (the checks above are not rejecting everything)
    o = torch.empty(2, 6, **f64)
    C.lrp_eps_div(desc(R.reshape(2, 6)), desc(z.reshape(6)), None, desc(o), 1e-3)
    zz = z.reshape(6)
    torch.testing.assert_close(o, R.reshape(2, 6) / (zz + 1e-3 * torch.where(zz >= 0, 1.0, -1.0)), rtol=1e-15, atol=0)


@pytest.mark.parametrize("impl", ["cpp", "torch"] if HAVE_CPP else ["torch"])
def test_fused_noncontiguous_mult_weight_and_k1_equal_contiguous(impl):
    z, h, b, R = _fx(K=3, M=2, C=3, S=5)
    x = torch.randn(2, 3, 5, dtype=torch.float64) + 2.0
    w = torch.randn(6, dtype=torch.float64)[::2]           # strided weight
    assert not w.is_contiguous()
    mult = x.transpose(0, 2).contiguous().transpose(0, 2)
    old = fused.USE_CPP
    fused.USE_CPP = impl == "cpp"
    try:
        a = fused.eps_div(R, z, 1e-3, mult)
        torch.testing.assert_close(a, fused.eps_div(R, z, 1e-3, x.contiguous()), rtol=0, atol=0)
        n1 = fused.norm_freeze_eps(mult, z, R, w, 1e-5, 1e-6)
        torch.testing.assert_close(n1, fused.norm_freeze_eps(x, z, R, w.contiguous(), 1e-5, 1e-6), rtol=0, atol=0)
        # K seeds in one call == K calls with K = 1
        for fn in (lambda r: fused.eps_div(r, z, 1e-3, x), lambda r: fused.norm_freeze_eps(x, z, r, w, 1e-5, 1e-6),
                   lambda r: fused.signed_coeffs(z, h, b, r, "gamma")[0]):
            full = fn(R)
            parts = torch.cat([fn(R[k:k + 1]) for k in range(3)])
            torch.testing.assert_close(full, parts, rtol=0, atol=0)
    finally:
        fused.USE_CPP = old


# --------------------------------------------------------------- components: 1-D / 3-D, ties, classes
@settings(max_examples=15, deadline=None)
@given(shape=st.sampled_from([(9,), (1, 1), (1, 7), (4, 5), (3, 4, 5), (1, 1, 6)]), p=st.floats(0.0, 0.9),
       seed=st.integers(0, 2 ** 31 - 1), full=st.booleans())
def test_select_component_1d_3d_ties_vs_reference(shape, p, seed, full):
    """Largest and k-th largest component (ties: the first met in raster order, stable) against the
    NumPy reference labelling, on 1-D, degenerate 2-D and 3-D masks (empty masks included)."""
    m = np.random.default_rng(seed).random(shape) < p
    conn = "full" if full else "face"
    got = lrp.select_component(m, "largest", connectivity=conn)
    np.testing.assert_array_equal(got, ref.select_largest(m, full=full))
    lab, n = ref.label_components(m, full=full)
    sizes = np.array([(lab == i).sum() for i in range(1, n + 1)])
    order = np.argsort(-sizes, kind="stable")
    for k in range(n + 1):
        exp = lab == order[k] + 1 if k < n else np.zeros(shape, bool)
        np.testing.assert_array_equal(lrp.select_component(m, k, connectivity=conn), exp)
    if n:  # the component holding a foreground pixel, as a tensor
        idx = tuple(int(i) for i in np.argwhere(m)[0])
        t = lrp.select_component(torch.from_numpy(m), idx, connectivity=conn)
        assert isinstance(t, torch.Tensor) and torch.equal(t, torch.from_numpy(lab == lab[idx]))


def test_equal_size_components_and_tied_classes():
    m = np.zeros((5, 7), bool)
    m[0, 0:2] = True        # two components of 2 px: "largest" is the first in raster order
    m[3, 5:7] = True
    assert lrp.select_component(m, "largest")[0, 0] and not lrp.select_component(m, "largest")[3, 5]
    assert lrp.select_component(m, 1)[3, 5]
    # tied logits: argmax takes the first class; the class masks partition the image
    z = torch.zeros(2, 3, 4, 4)
    z[:, 1, :2] = 1.0
    z[:, 2, :2] = 1.0       # tie between classes 1 and 2 on the top half
    cm = lrp.class_masks(z)
    assert cm.shape == (3, 2, 4, 4) and torch.equal(cm.sum(0), torch.ones(2, 4, 4, dtype=torch.long))
    exp = np.argmax(z.numpy(), axis=1)
    for c in range(3):
        np.testing.assert_array_equal(cm[c].numpy(), exp == c)
    # 3-D volumes: region masks per sample and channel 0 equal the selector on each volume
    torch.manual_seed(12)
    v = torch.randn(2, 1, 3, 4, 5)
    rm = lrp.region_masks(v, components=["largest", "all"])
    assert rm.shape == (2, 2, 3, 4, 5)
    for b in range(2):
        fg = (torch.sigmoid(v[b, 0]) > 0.5).numpy()
        np.testing.assert_array_equal(rm[0, b].numpy(), ref.select_largest(fg))
        np.testing.assert_array_equal(rm[1, b].numpy(), fg)
