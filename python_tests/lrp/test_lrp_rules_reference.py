"""Per-layer rules of the engine vs the NumPy reference (dense matrices built by loops)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from medseg_ext import lrp
from medseg_ext.reference import lrp as ref


pytestmark = pytest.mark.usefixtures("float64_default")  # these tests build float64 nets


RULES = {
    "epsilon": (lambda: lrp.Epsilon(1e-6), {"rule": "epsilon", "epsilon": 1e-6}),
    "epsilon_paper": (lambda: lrp.Epsilon(0.5, stabilizer="paper"),
                      {"rule": "epsilon", "epsilon": 0.5, "stabilizer": "paper"}),
    "zplus": (lambda: lrp.ZPlus(1e-6), {"rule": "zplus", "epsilon": 1e-6}),
    "gamma": (lambda: lrp.Gamma(0.25, 1e-6), {"rule": "gamma", "gamma": 0.25, "epsilon": 1e-6}),
    "alphabeta": (lambda: lrp.AlphaBeta(2, 1, 1e-6), {"rule": "alphabeta", "alpha": 2.0, "beta": 1.0, "epsilon": 1e-6}),
    "alphabeta31": (lambda: lrp.AlphaBeta(3, 2, 1e-6), {"rule": "alphabeta", "alpha": 3.0, "beta": 2.0, "epsilon": 1e-6}),
    "zplus_exact": (lambda: lrp.ZPlus(1e-6, exact=True), {"rule": "zplus", "epsilon": 1e-6}),
    "gamma_exact": (lambda: lrp.Gamma(0.25, 1e-6, exact=True), {"rule": "gamma", "gamma": 0.25, "epsilon": 1e-6}),
    "alphabeta_exact": (lambda: lrp.AlphaBeta(2, 1, 1e-6, exact=True),
                        {"rule": "alphabeta", "alpha": 2.0, "beta": 1.0, "epsilon": 1e-6}),
    "zbox": (lambda: lrp.ZBox(-1.0, 1.5, 1e-6), {"rule": "zbox", "low": -1.0, "high": 1.5, "epsilon": 1e-6}),
    "flat": (lambda: lrp.Flat(1e-6), {"rule": "flat", "epsilon": 1e-6}),
    "wsquare": (lambda: lrp.WSquare(1e-6), {"rule": "wsquare", "epsilon": 1e-6}),
}


def _run_layer(layer, x, R, rule):
    comp = lrp.Composite(layer_map=[(type(layer), rule)])
    eng = lrp.LRP(layer, comp)
    z = eng.forward(x)
    assert z.shape == R.shape
    return eng.relevance(R)


LAYERS = {
    "linear": lambda: nn.Linear(5, 4),
    "conv1d": lambda: nn.Conv1d(2, 3, 3, stride=2, padding=1),
    "conv2d": lambda: nn.Conv2d(2, 3, 3, padding=1, dilation=1),
    "conv2d_groups": lambda: nn.Conv2d(4, 2, (2, 3), stride=(1, 2), padding=(1, 0), dilation=(2, 1), groups=2),
    "conv3d": lambda: nn.Conv3d(1, 2, 2, stride=1),
    "convT1d": lambda: nn.ConvTranspose1d(2, 2, 3, stride=2, padding=1, output_padding=1),
    "convT2d": lambda: nn.ConvTranspose2d(2, 3, 2, stride=2),
    "convT2d_groups": lambda: nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, groups=2),
    "convT3d": lambda: nn.ConvTranspose3d(1, 1, 2, stride=2),
}
SHAPES = {"linear": (2, 5), "conv1d": (2, 2, 7), "conv2d": (2, 2, 4, 5), "conv2d_groups": (1, 4, 5, 6),
          "conv3d": (1, 1, 3, 3, 3), "convT1d": (2, 2, 4), "convT2d": (1, 2, 3, 3), "convT2d_groups": (1, 4, 3, 3),
          "convT3d": (1, 1, 2, 2, 2)}


@pytest.mark.parametrize("lname", list(LAYERS))
@pytest.mark.parametrize("rname", list(RULES))
def test_rule_matches_reference(lname, rname):
    torch.manual_seed(hash((lname, rname)) % 1000)
    layer = LAYERS[lname]()
    x = torch.randn(SHAPES[lname])
    if rname == "zbox":
        x = x.clamp(-1.0, 1.5)
    with torch.no_grad():
        z = layer(x)
    R = torch.randn_like(z)
    mk, kw = RULES[rname]
    got = _run_layer(layer, x, R, mk())
    w = layer.weight.detach().numpy()
    b = None if layer.bias is None else layer.bias.detach().numpy()
    for n in range(x.shape[0]):
        if lname == "linear":
            exp = ref.lrp_dense(x[n].numpy(), w, b, R[n].numpy(), **kw)
        else:
            exp = ref.lrp_conv(x[n].numpy(), w, b, R[n].numpy(), stride=layer.stride, padding=layer.padding,
                               dilation=layer.dilation, groups=layer.groups,
                               transposed=isinstance(layer, (nn.ConvTranspose1d, nn.ConvTranspose2d,
                                                             nn.ConvTranspose3d)),
                               output_padding=getattr(layer, "output_padding", 0), **kw)
        np.testing.assert_allclose(got[n].numpy(), exp, rtol=1e-7, atol=1e-9)


@settings(max_examples=15, deadline=None)
@given(cin=st.integers(1, 3), cout=st.integers(1, 3), k=st.integers(1, 3), s=st.integers(1, 2), p=st.integers(0, 1),
       h=st.integers(3, 5), w=st.integers(1, 4), rule=st.sampled_from(["epsilon", "zplus", "gamma", "alphabeta"]),
       nonneg=st.booleans(), bias=st.booleans())
def test_conv2d_rules_hypothesis(cin, cout, k, s, p, h, w, rule, nonneg, bias):
    w_ = max(w, k)
    layer = nn.Conv2d(cin, cout, k, stride=s, padding=p, bias=bias)
    x = torch.randn(1, cin, max(h, k), w_)
    if nonneg:
        x = x.abs()
    with torch.no_grad():
        z = layer(x)
    R = torch.randn_like(z)
    mk, kw = RULES[rule]
    got = _run_layer(layer, x, R, mk())
    exp = ref.lrp_conv(x[0].numpy(), layer.weight.detach().numpy(),
                       None if layer.bias is None else layer.bias.detach().numpy(), R[0].numpy(),
                       stride=s, padding=p, **kw)
    np.testing.assert_allclose(got[0].numpy(), exp, rtol=1e-6, atol=1e-8)


def test_conv_matrix_matches_torch():
    torch.manual_seed(0)
    for layer, shape in ((nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False), (2, 5, 4)),
                         (nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1, bias=False), (2, 3, 2))):
        x = torch.randn((1,) + shape)
        M, out_shape = ref.conv_matrix(layer.weight.detach().numpy(), shape, layer.stride, layer.padding,
                                       layer.dilation, layer.groups, isinstance(layer, nn.ConvTranspose2d),
                                       getattr(layer, "output_padding", 0))
        with torch.no_grad():
            y = layer(x)[0]
        np.testing.assert_allclose((M @ x[0].numpy().ravel()).reshape(out_shape), y.numpy(), atol=1e-12)


def test_addition_rule_reference_and_captum_fixture():
    # Captum's test_lrp_skip_connection: Linear(2,2, no bias, weights 5) + addition, input [2,3], target 1
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2, bias=False)
            nn.init.constant_(self.lin.weight, 5.0)

        def forward(self, x):
            return self.lin(x) + x  # a bare +

    m = Skip()
    eng = lrp.LRP(m, lrp.EpsilonComposite(epsilon=1e-9))
    out = eng.forward(torch.tensor([[2.0, 3.0]]))
    seed = torch.zeros_like(out)
    seed[0, 1] = out[0, 1]
    R = eng.relevance(seed)
    np.testing.assert_allclose(R.numpy(), [[10.0, 18.0]], rtol=1e-8)
    # addition rule vs reference: proportional split
    a, b = np.random.default_rng(0).standard_normal((2, 6))
    Rz = np.random.default_rng(1).standard_normal(6)
    ra, rb = ref.lrp_add([a, b], Rz, epsilon=1e-6)
    np.testing.assert_allclose(ra + rb, Rz * (a + b) / ref.stab(a + b, 1e-6), rtol=1e-12)


def test_stabilizer_modes_agree_where_defined():
    z = torch.tensor([-1.0, -1e-9, 0.0, 1e-9, 2.0])
    s1, s2 = lrp.stabilize(z, 1e-6), lrp.stabilize(z, 1e-6, "paper")
    # equal for z >= 0; for z < -eps they differ by 2 eps but keep the sign (seeds-part2 §11.1 item 10
    # says "agree": only the sign agrees); in (-eps, 0) the paper's z + eps flips the sign
    assert torch.equal(s1[z >= 0], s2[z >= 0])
    assert torch.equal(torch.sign(s1[z < -1e-6]), torch.sign(s2[z < -1e-6]))
    assert s1[2] == 1e-6 and s1[1] < 0 and s2[1] > 0
