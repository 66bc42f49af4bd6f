"""Whole-network properties: conservation, ε-LRP == grad×input of the linearised target,
distributivity (K seeds in one pass), U-Nets with skips/residuals, errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
import torch
from torch import nn

from medseg_ext import lrp


pytestmark = pytest.mark.usefixtures("float64_default")  # these tests build float64 nets


class TinyResUNet(nn.Module):
    """Conv / ConvTranspose / MaxPool / Upsample / cat skip / bare-+ residuals / in-place ReLU."""

    def __init__(self, bias=False, norm=None, up="deconv", cin=2, cout=2):
        super().__init__()
        self.c1 = nn.Conv2d(cin, 4, 3, padding=1, bias=bias)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1, bias=bias)
        self.c3 = nn.Conv2d(4, 4, 3, padding=1, bias=bias)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2, bias=bias) if up == "deconv" else \
            nn.Upsample(scale_factor=2, mode=up)
        self.n1 = norm(4) if norm else nn.Identity()
        self.act = nn.LeakyReLU(0.1, inplace=True)
        self.head = nn.Conv2d(8, cout, 1, bias=bias)

    def forward(self, x):
        a = self.act(self.n1(self.c1(x)))
        b = self.pool(a)
        c = torch.relu(self.c2(b)) + b            # bare residual +
        c = self.act(self.c3(c)) + c
        u = self.up(c)
        return self.head(torch.cat([a, u], dim=1))


def test_global_conservation_bias_free():
    torch.manual_seed(0)
    for up in ("deconv", "nearest", "bilinear"):
        m = TinyResUNet(bias=False, up=up)
        x = torch.rand(2, 2, 8, 8)
        eng = lrp.LRP(m, lrp.EpsilonComposite(epsilon=1e-12))
        z = eng.forward(x)
        seed = torch.rand(3, *z.shape) * (z > 0)   # K = 3 seeds
        R = eng.relevance(seed, diagnostics=True)
        np.testing.assert_allclose(R.flatten(2).sum(-1).numpy(), seed.flatten(2).sum(-1).numpy(), rtol=1e-4)
        for row in eng.conservation_report():
            np.testing.assert_allclose(row["relevance_in"], row["relevance_out"], rtol=1e-4, atol=1e-9)


def test_negative_control_bare_add_without_rule_inflates():
    """With autograd's derivative of a bare + (Captum style) relevance is duplicated (Eq. 4)."""
    torch.manual_seed(1)
    m = TinyResUNet(bias=False)
    x = torch.rand(1, 2, 8, 8)
    eng = lrp.LRP(m, lrp.EpsilonComposite(epsilon=1e-12))
    z = eng.forward(x)
    seed = z.clamp(min=0)
    R_rule = eng.relevance(seed)
    for n in eng.nodes:  # turn the addition rule into plain gradient routing
        if n.kind == "add":
            n.kind = "reindex"
    R_grad = eng.relevance(seed)
    assert abs(R_rule.sum() - seed.sum()) < 1e-6 * seed.sum()
    assert abs(R_grad.sum() - seed.sum()) > 1e-3 * seed.sum()


def _linearised_grad_x_input(model, x, seed):
    model.eval()
    xx = x.clone().requires_grad_(True)
    z = model(xx)
    T = (seed / z).detach() * z
    g, = torch.autograd.grad(T.sum(), xx)
    return (g * x).detach()


@pytest.mark.parametrize("variant", ["deconv", "bilinear", "bn", "in_captum", "gn_captum"])
def test_epsilon_equals_grad_times_input(variant):
    torch.manual_seed(2)
    kw = {"bias": True}
    comp = lrp.EpsilonComposite(epsilon=0.0, bn="epsilon", norm="freeze")
    if variant == "bilinear":
        kw["up"] = "bilinear"
    if variant == "bn":
        kw["norm"] = nn.BatchNorm2d
    if variant == "in_captum":
        kw["norm"] = lambda c: nn.InstanceNorm2d(c, affine=True)
        comp = lrp.EpsilonComposite(epsilon=0.0, norm="captum")
    if variant == "gn_captum":
        kw["norm"] = lambda c: nn.GroupNorm(2, c)
        comp = lrp.EpsilonComposite(epsilon=0.0, norm="captum")
    m = TinyResUNet(**kw)
    if variant == "bn":
        m.n1.running_mean.uniform_(-0.2, 0.2)
        m.n1.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 2, 8, 8)
    eng = lrp.LRP(m, comp)
    z = eng.forward(x)
    seed = torch.sigmoid(z) * (torch.rand_like(z) > 0.5)
    R = eng.relevance(seed)
    exp = _linearised_grad_x_input(m, x, seed)
    np.testing.assert_allclose(R.numpy(), exp.numpy(), rtol=1e-5, atol=1e-9 * exp.abs().max().item())


def test_distributivity_k_batch_equals_single_passes():
    torch.manual_seed(3)
    m = TinyResUNet(bias=True, norm=lambda c: nn.InstanceNorm2d(c)).float()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float32)
    for comp in (lrp.EpsilonComposite(), lrp.EpsilonPlus(), lrp.EpsilonAlpha2Beta1(),
                 lrp.EpsilonGammaBox(low=-3.0, high=3.0)):
        eng = lrp.LRP(m, comp)
        z = eng.forward(x)
        seeds = torch.randn(3, *z.shape, dtype=torch.float32)
        R = eng.relevance(seeds)
        singles = torch.stack([eng.relevance(seeds[k]) for k in range(3)])
        tol = dict(rtol=1e-4, atol=1e-5 * singles.abs().max().item())
        np.testing.assert_allclose(R.numpy(), singles.numpy(), **tol)
        # one pass over the summed seed = sum of the per-seed passes (linearity)
        np.testing.assert_allclose(eng.relevance(seeds.sum(0)).numpy(), singles.sum(0).numpy(), **tol)
        np.testing.assert_allclose(eng.relevance(-2.5 * seeds[0]).numpy(), -2.5 * singles[0].numpy(), **tol)


def test_batch_equals_per_sample_and_float32_close_to_float64():
    torch.manual_seed(4)
    m = TinyResUNet(bias=True, norm=nn.BatchNorm2d)
    x = torch.randn(3, 2, 8, 8)
    eng = lrp.LRP(m, lrp.EpsilonPlus())
    z = eng.forward(x)
    seed = torch.sigmoid(z)
    R = eng.relevance(seed)
    for b in range(3):
        e1 = lrp.LRP(m, lrp.EpsilonPlus())
        e1.forward(x[b:b + 1])
        np.testing.assert_allclose(e1.relevance(seed[b:b + 1]).numpy(), R[b:b + 1].numpy(), rtol=1e-9, atol=1e-12)
    m32 = TinyResUNet(bias=True, norm=nn.BatchNorm2d).float()
    m32.load_state_dict({k: v.float() for k, v in m.state_dict().items()})
    e32 = lrp.LRP(m32, lrp.EpsilonPlus())
    e32.forward(x.float())
    R32 = e32.relevance(seed.float())
    np.testing.assert_allclose(R32.double().numpy(), R.numpy(), rtol=1e-3, atol=1e-4 * R.abs().max().item())


def test_masked_pixels_contribute_nothing_and_empty_seed_gives_zero():
    torch.manual_seed(5)
    m = TinyResUNet(bias=True)
    x = torch.randn(1, 2, 8, 8)
    eng = lrp.LRP(m, lrp.EpsilonComposite())
    z = eng.forward(x)
    R0 = eng.relevance(torch.zeros_like(z))
    assert torch.count_nonzero(R0) == 0


def test_unknown_layer_raises_naming_it_and_module_rules_fix():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.pool = nn.LPPool2d(2, 2)

        def forward(self, x):
            return self.pool(self.conv(x))

    x = torch.rand(1, 1, 6, 6)
    with pytest.raises(lrp.LRPUnsupportedError, match="pool.*LPPool2d"):
        lrp.LRP(Net()).forward(x)
    eng = lrp.LRP(Net(), module_rules={"pool": lrp.Epsilon(1e-9)})
    z = eng.forward(x)
    R = eng.relevance(z)
    assert R.shape == x.shape and torch.isfinite(R).all()

    class Gate(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(x)

    with pytest.raises(lrp.LRPUnsupportedError, match="mul"):
        lrp.LRP(nn.Sequential(nn.Conv2d(1, 1, 1), Gate())).forward(x)
    eng = lrp.LRP(nn.Sequential(nn.Conv2d(1, 1, 1), Gate()), module_rules={Gate: lrp.Pass()})
    assert eng.relevance(eng.forward(x)).shape == x.shape


def test_bad_inputs():
    m = nn.Conv2d(1, 1, 1)
    with pytest.raises(TypeError, match="model"):
        lrp.LRP("x")
    with pytest.raises(TypeError, match="composite"):
        lrp.LRP(m, composite="eps")
    eng = lrp.LRP(m)
    with pytest.raises(RuntimeError):
        eng.relevance(torch.ones(1, 1, 2, 2))
    with pytest.raises(ValueError, match="NaN"):
        eng.forward(torch.tensor([[[[float("nan")]]]]))
    with pytest.raises(TypeError, match="x"):
        eng.forward(np.ones((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="x"):
        eng.forward(torch.ones(0, 1, 2, 2))
    z = eng.forward(torch.ones(1, 1, 2, 2))
    with pytest.raises(ValueError, match="seed"):
        eng.relevance(torch.ones(1, 1, 3, 2))
    with pytest.raises(ValueError, match="seed"):
        eng.relevance(torch.full_like(z, float("inf")))
    with pytest.raises(ValueError, match="alpha"):
        lrp.AlphaBeta(1.0, 1.0)
    with pytest.raises(ValueError, match="beta"):
        lrp.AlphaBeta(0.0, -1.0)
    with pytest.raises(ValueError, match="epsilon"):
        lrp.Epsilon(-1.0)
    with pytest.raises(ValueError, match="stabilizer"):
        lrp.Epsilon(1e-6, stabilizer="abs")
    with pytest.raises(ValueError, match="gamma"):
        lrp.Gamma(-0.5)
    with pytest.raises(ValueError, match="layer kind"):
        lrp.Composite(layer_map=[("convolution", lrp.Epsilon())])
    with pytest.raises(ValueError, match="bn"):
        lrp.Composite(bn="merge")
    with pytest.raises(ValueError, match="low"):
        lrp.ZBox(1.0, 0.0)


def test_model_training_state_restored_and_noncontiguous_input():
    m = TinyResUNet(norm=nn.BatchNorm2d)
    m.train()
    x = torch.randn(1, 8, 8, 2).permute(0, 3, 1, 2)  # non-contiguous
    eng = lrp.LRP(m, lrp.EpsilonPlus())
    z = eng.forward(x)
    assert m.training and m.n1.training
    R = eng.relevance(z)
    eng2 = lrp.LRP(m, lrp.EpsilonPlus())
    eng2.forward(x.contiguous())
    R2 = eng2.relevance(z)
    # float32: a channels-last input makes mkldnn pick other conv kernels (the forward itself differs by ulps)
    np.testing.assert_allclose(R.numpy(), R2.numpy(), rtol=1e-5, atol=1e-6 * R2.abs().max().item())


def test_conv3d_trilinear_net_conservation():
    torch.manual_seed(6)
    m = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1, bias=False), nn.ReLU(), nn.AvgPool3d(2),
                      nn.Upsample(scale_factor=2, mode="trilinear"), nn.ConvTranspose3d(2, 1, 1, bias=False))
    x = torch.rand(1, 1, 4, 4, 4)
    eng = lrp.LRP(m, lrp.EpsilonComposite(epsilon=1e-12))
    z = eng.forward(x)
    seed = z.clamp(min=0)
    R = eng.relevance(seed)
    np.testing.assert_allclose(R.sum().item(), seed.sum().item(), rtol=1e-4)


def test_monai_basic_unet_and_residual_unet():
    monai = pytest.importorskip("monai")
    from monai.networks.nets import BasicUNet, UNet
    torch.manual_seed(7)
    # bias-free BasicUNet without norm: conservation through cat skips, ConvTranspose, max pool
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=(4, 4, 4, 4, 4, 4), norm=None,
                    bias=False).double()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):  # final_conv and the deconvs keep a bias in MONAI: zero it
                p.zero_()
    x = torch.rand(1, 1, 32, 32)
    eng = lrp.LRP(net, lrp.EpsilonComposite(epsilon=1e-12))
    z = eng.forward(x)
    seed = torch.sigmoid(z) * (z > 0)
    R = eng.relevance(seed)
    np.testing.assert_allclose(R.sum().item(), seed.sum().item(), rtol=1e-4)
    # MONAI UNet with residual units (bare cx + res) and instance norm: ε-LRP == grad×input (Captum-mode norm)
    net = UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(4, 8, 8), strides=(2, 2), num_res_units=2,
               norm="instance").double()
    x = torch.randn(1, 1, 16, 16)
    eng = lrp.LRP(net, lrp.EpsilonComposite(epsilon=0.0, norm="captum"))
    z = eng.forward(x)
    seed = torch.sigmoid(z) * (z > 0)
    R = eng.relevance(seed)
    np.testing.assert_allclose(R.numpy(), _linearised_grad_x_input(net, x, seed).numpy(), rtol=1e-5,
                               atol=1e-9)
    assert sum(1 for n in eng.nodes if n.kind == "add") >= 4


@settings(max_examples=12, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), b=st.integers(1, 2), k=st.integers(1, 3),
       huge=st.sampled_from([1e-6, 1.0, 1e6]))
def test_odd_shapes_single_pixel_and_scales_hypothesis(h, w, b, k, huge):
    """Odd and single-pixel shapes, ceil-mode pooling, tiny/huge inputs: conservation of a bias-free
    net and ε-LRP == grad×input."""
    torch.manual_seed(h * 31 + w)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, bias=False), nn.ReLU(),
                        nn.MaxPool2d(2, ceil_mode=True) if min(h, w) >= 2 else nn.Identity(),
                        nn.Conv2d(3, 2, 1, bias=False), nn.LeakyReLU(0.2),
                        nn.Upsample(size=(h, w), mode="nearest"), nn.Conv2d(2, 1, 1, bias=False))
    x = torch.rand(b, 1, h, w) * huge + huge * 0.01
    eng = lrp.LRP(net, lrp.EpsilonComposite(epsilon=0.0))
    z = eng.forward(x)
    seed = torch.rand(k, *z.shape) * (z != 0)
    R = eng.relevance(seed)
    np.testing.assert_allclose(R.flatten(1).sum(-1).numpy(), seed.flatten(1).sum(-1).numpy(), rtol=1e-6)
    for j in range(k):
        exp = _linearised_grad_x_input(net, x, seed[j])
        np.testing.assert_allclose(R[j].numpy(), exp.numpy(), rtol=1e-6, atol=1e-12 * huge)


def test_monai_unet_plus_plus_dense_skips_grad_times_input():
    pytest.importorskip("monai")
    from medseg_ext.pipelines.lrp_unet import build
    torch.manual_seed(8)
    net = build("monai-unetpp", "batch").double()
    x = torch.rand(1, 1, 16, 16)
    eng = lrp.LRP(net, lrp.EpsilonComposite(epsilon=0.0, bn="epsilon"))
    z = eng.forward(x)
    seed = torch.sigmoid(z)
    R = eng.relevance(seed)
    exp = _linearised_grad_x_input(net, x, seed)
    np.testing.assert_allclose(R.numpy(), exp.numpy(), rtol=1e-5, atol=1e-9 * exp.abs().max().item())
