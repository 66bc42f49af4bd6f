"""The hand-written LA first pass (medseg_ext.losses.label_aware_tower): its label gradients against
torch.autograd.grad of a plain-PyTorch version of the paper's objective, in float64 (to rounding) and
float32 (NNPACK Winograd path, to float32 rounding); background rows, pseudo-labels, the modulated
output and its gradient; which heads take it and which fall back to autograd."""
import copy

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from medseg_ext.losses import label_aware as LA
from medseg_ext.losses import label_aware_tower as T


def tower_head(cin, feat, cout, depth=2, seed=0, dtype=torch.float64, groups=2, affine=True, bias=True,
               nested=False, inplace=False, kernel=3, padding=1):
    torch.manual_seed(seed)
    layers = []
    c = cin
    for _ in range(depth):
        layers += [nn.Conv2d(c, feat, kernel, padding=padding, bias=bias), nn.GroupNorm(groups, feat, affine=affine),
                   nn.ReLU(inplace=inplace)]
        c = feat
    cls = nn.Conv2d(c, cout, 3, padding=1)
    head = nn.Sequential(nn.Sequential(*layers), nn.Identity(), cls) if nested else nn.Sequential(*layers, cls)
    for p in head.parameters():  # non-trivial GroupNorm affine parameters
        if p.dim() == 1:
            with torch.no_grad():
                p.add_(0.3 * torch.randn_like(p))
    return head.to(dtype)


def plain_torch_gradients(head, x, labels, C):
    """The paper's pseudo-code §1.9 in plain PyTorch: two autograd.grad calls with the one-hot cotangents."""
    xi = x.detach().clone().requires_grad_(True)
    s = torch.sigmoid(head(xi))
    rows = s.detach().permute(0, 2, 3, 1).reshape(-1, C)
    lab = rows.argmax(1) if labels is None else labels.reshape(-1)
    y1 = nn.functional.one_hot(lab, C + 1)[:, :C].to(s.dtype)
    s2 = rows.clone()
    s2[y1.bool()] = 0
    y2 = nn.functional.one_hot(s2.argmax(1), C).to(s.dtype)
    B, _, H, W = s.shape
    y1 = y1.reshape(B, H, W, C).permute(0, 3, 1, 2)
    y2 = y2.reshape(B, H, W, C).permute(0, 3, 1, 2)
    g1 = torch.autograd.grad(s, xi, y1, retain_graph=True)[0]
    g2 = torch.autograd.grad(s, xi, y2)[0]
    return g1, g2


@st.composite
def tower_cases(draw):
    B = draw(st.integers(1, 2))
    H, W = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    cin = draw(st.integers(1, 4))
    C = draw(st.integers(2, 5))
    depth = draw(st.integers(1, 3))
    kw = dict(affine=draw(st.booleans()), bias=draw(st.booleans()), nested=draw(st.booleans()),
              inplace=draw(st.booleans()))
    kernel, padding = draw(st.sampled_from([(3, 1), (3, 0), (3, 2), (1, 0), (5, 2)]))
    seed = draw(st.integers(0, 2 ** 16))
    pseudo = draw(st.booleans())
    return B, H, W, cin, C, depth, kw, kernel, padding, seed, pseudo


@settings(max_examples=15)
@given(tower_cases())
def test_tower_gradients_equal_autograd_float64(case):
    B, H, W, cin, C, depth, kw, kernel, padding, seed, pseudo = case
    head = tower_head(cin, 4, C, depth, seed, kernel=kernel, padding=padding, **kw)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, cin, H, W, dtype=torch.float64, generator=g)
    if H + 2 * padding - kernel + 1 <= 0 or W + 2 * padding - kernel + 1 <= 0:
        return  # the head itself rejects such inputs
    Ho, Wo = H + 2 * padding - kernel + 1, W + 2 * padding - kernel + 1
    for _ in range(depth - 1):
        Ho, Wo = Ho + 2 * padding - kernel + 1, Wo + 2 * padding - kernel + 1
        if Ho <= 0 or Wo <= 0:
            return
    labels = None if pseudo else torch.randint(0, C + 1, (B, Ho, Wo), generator=g)
    la = LA.LabelAwareModulation(head, vjp="tower")
    assert la.tower_layers(x) is not None
    g1, g2 = la.label_gradients(x, labels)
    r1, r2 = plain_torch_gradients(head, x, labels, C)
    torch.testing.assert_close(g1, r1, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g2, r2, rtol=1e-10, atol=1e-12)
    a1, a2 = LA.LabelAwareModulation(head, vjp="autograd").label_gradients(x, labels)
    torch.testing.assert_close(g1, a1, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g2, a2, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("conv", T.CONV_ENGINES)
def test_tower_float32_matches_autograd(conv):
    C = 6
    head = tower_head(8, 16, C, depth=3, seed=3, dtype=torch.float32, groups=4)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 11, 13, generator=g)
    labels = torch.randint(0, C + 1, (2, 11, 13), generator=g)
    la = LA.LabelAwareModulation(head, vjp="tower", conv=conv)
    assert la.tower_layers(x) is not None
    g1, g2 = la.label_gradients(x, labels)
    r1, r2 = plain_torch_gradients(head.double(), x.double(), labels, C)
    for got, want in ((g1, r1), (g2, r2)):
        assert got.dtype == torch.float32
        err = float((got.double() - want).abs().max() / want.abs().max())
        assert err < 2e-5, err


def test_background_rows_contribute_nothing_and_pseudo_labels_are_argmax():
    C = 4
    head = tower_head(3, 6, C, seed=1)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    la = LA.LabelAwareModulation(head, vjp="tower")
    g1, g2 = la.label_gradients(x, torch.full((2, 5, 6), C))
    assert float(g1.abs().max()) == 0.0 and float(g2.abs().max()) > 0  # confuse = overall argmax there
    # a background row changed to foreground adds exactly its own VJP; other background rows add nothing
    labels = torch.full((2, 5, 6), C)
    labels[1, 2, 3] = 0
    ga, _ = la.label_gradients(x, labels)
    _, _, y1, _ = LA.confuse_labels(torch.sigmoid(head(x)).detach(), labels, return_onehot=True)
    xi = x.clone().requires_grad_(True)
    want = torch.autograd.grad(torch.sigmoid(head(xi))[1, 0, 2, 3], xi)[0]
    torch.testing.assert_close(ga, want, rtol=1e-10, atol=1e-13)
    assert float(y1.sum()) == 1.0
    # pseudo-labels: the argmax of the first pass
    with torch.no_grad():
        pseudo = torch.sigmoid(head(x)).argmax(1)
    p1, p2 = la.label_gradients(x)
    q1, q2 = la.label_gradients(x, pseudo)
    assert torch.equal(p1, q1) and torch.equal(p2, q2)


def test_modulated_output_and_its_gradient():
    C = 5
    head = tower_head(3, 6, C, seed=2)
    la = LA.LabelAwareModulation(head)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, C + 1, (2, 4, 5))
    xn = la(x, labels)
    assert all(p.grad is None for p in head.parameters())
    r1, r2 = plain_torch_gradients(head, x, labels, C)
    factor = 1 + torch.sigmoid(r1) - torch.sigmoid(r2)
    torch.testing.assert_close(xn, x.detach() * factor, rtol=1e-12, atol=1e-12)
    up = torch.randn_like(xn)
    (xn * up).sum().backward()
    torch.testing.assert_close(x.grad, up * factor, rtol=1e-12, atol=1e-12)


def test_reg_mode_tower():
    K = 4
    torch.manual_seed(0)
    head = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
                         nn.Conv2d(8, 4 * K, 3, padding=1)).double()
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    bins = torch.randint(0, K, (2, 4, 5, 4))
    la = LA.LabelAwareModulation(head, "reg", num_bins=K, vjp="tower")
    g, none = la.label_gradients(x, bins)
    assert none is None
    xi = x.clone().requires_grad_(True)
    obj = torch.sigmoid(head(xi)).reshape(2, 4, K, 5, 4).gather(2, bins[:, :, None]).sum()
    torch.testing.assert_close(g, torch.autograd.grad(obj, xi)[0], rtol=1e-10, atol=1e-12)
    ga, _ = LA.LabelAwareModulation(head, "reg", num_bins=K, vjp="autograd").label_gradients(x)
    torch.testing.assert_close(la.label_gradients(x)[0], ga, rtol=1e-10, atol=1e-12)


class _Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return 2 * self.conv(x)


def test_which_heads_take_the_tower_pass():
    assert T.compile_tower(tower_head(3, 4, 2, nested=True)) is not None
    assert T.compile_tower(nn.Conv2d(3, 4, 3, padding="same")) is not None
    assert T.compile_tower(nn.Conv2d(3, 4, 2, padding="same")) is None      # asymmetric padding
    assert T.compile_tower(nn.Conv2d(3, 4, 3, stride=2, padding=1)) is None
    assert T.compile_tower(nn.Conv2d(3, 4, 3, padding=1, groups=1, dilation=2)) is None
    assert T.compile_tower(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")) is None
    assert T.compile_tower(nn.Conv2d(3, 4, 3, padding=3)) is None            # padding > k − 1
    assert T.compile_tower(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))) is None
    assert T.compile_tower(nn.Sequential(nn.ReLU(), nn.GroupNorm(1, 3))) is None  # no convolution
    assert T.compile_tower(_Scaled()) is None
    hooked = tower_head(3, 4, 2)
    hooked[0].register_forward_hook(lambda m, i, o: o * 2)
    assert T.compile_tower(hooked) is None
    # such heads fall back to autograd (vjp='auto') and still give the paper's gradients
    C = 4
    torch.manual_seed(0)
    head = nn.Sequential(_Scaled(), nn.ReLU(), nn.Conv2d(4, C, 3, padding=1)).double()
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    labels = torch.randint(0, C + 1, (1, 4, 4))
    la = LA.LabelAwareModulation(head)
    assert la.tower_layers(x) is None
    g1, g2 = la.label_gradients(x, labels)
    r1, r2 = plain_torch_gradients(head, x, labels, C)
    torch.testing.assert_close(g1, r1, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g2, r2, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="vjp='tower' needs"):
        LA.LabelAwareModulation(head, vjp="tower")(x, labels)
    with pytest.raises(ValueError, match="vjp"):
        LA.LabelAwareModulation(head, vjp="fast")


def test_tower_pass_errors_and_empty_input():
    head = tower_head(3, 4, 2)
    with pytest.raises(ValueError, match="3 channels"):
        LA.LabelAwareModulation(head, vjp="tower")(torch.randn(1, 5, 4, 4, dtype=torch.float64))
    tp = T.TowerPass(T.compile_tower(head), torch.randn(1, 3, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="u: expected"):
        tp.vjp(torch.zeros(1, 3, 4, 4, dtype=torch.float64))
    # an empty batch takes the autograd path in 'auto' mode and gives empty gradients
    la = LA.LabelAwareModulation(head)
    x0 = torch.zeros(0, 3, 4, 4, dtype=torch.float64)
    assert la.tower_layers(x0) is None
    assert la(x0).shape == (0, 3, 4, 4)


def test_non_contiguous_and_channels_last_features():
    C = 3
    head = tower_head(4, 8, C, seed=4, dtype=torch.float32, groups=2)
    x = torch.randn(2, 4, 6, 7)
    labels = torch.randint(0, C + 1, (2, 6, 7))
    want = LA.LabelAwareModulation(head, vjp="autograd").label_gradients(x, labels)
    for xv in (x.contiguous(memory_format=torch.channels_last), x.transpose(2, 3).contiguous().transpose(2, 3)):
        got = LA.LabelAwareModulation(head).label_gradients(xv, labels)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_head_weights_are_read_at_call_time():
    C = 3
    head = tower_head(3, 4, C, seed=6)
    la = LA.LabelAwareModulation(head)
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    labels = torch.randint(0, C + 1, (1, 4, 4))
    before = la.label_gradients(x, labels)
    with torch.no_grad():
        for p in head.parameters():
            p.mul_(1.5)
    after = la.label_gradients(x, labels)
    ref = plain_torch_gradients(copy.deepcopy(head), x, labels, C)
    torch.testing.assert_close(after[0], ref[0], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(before[0], after[0])


@pytest.mark.parametrize("vjp", ["auto", "autograd"])
def test_c_zero_takes_one_vjp_and_equals_eq4(vjp, monkeypatch):
    C = 4
    head = tower_head(3, 6, C, seed=7)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    labels = torch.randint(0, C + 1, (2, 4, 5))
    la = LA.LabelAwareModulation(head, a=0.5, b=1.0, c=0.0, vjp=vjp)
    r1, _ = plain_torch_gradients(head, x, labels, C)
    calls = []
    if vjp == "auto":
        orig = T.TowerPass.vjp
        monkeypatch.setattr(T.TowerPass, "vjp", lambda self, u: calls.append(1) or orig(self, u))
    else:
        orig = torch.autograd.grad
        monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or orig(*a, **k))
    out = la(x, labels)
    assert len(calls) == 1
    torch.testing.assert_close(out, x * (0.5 + torch.sigmoid(r1)), rtol=1e-12, atol=1e-12)
    assert la.label_gradients(x, labels)[1] is not None  # inspection still gives both


def test_inference_mode():
    C = 3
    head = tower_head(3, 4, C, seed=8, dtype=torch.float32)
    x = torch.randn(1, 3, 5, 5)
    la = LA.LabelAwareModulation(head)
    with torch.no_grad():
        want = la(x)
    with torch.inference_mode():
        got = la(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    other = LA.LabelAwareModulation(nn.Sequential(_Scaled(), nn.Conv2d(4, C, 1)))
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        other(x)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_types_follow_autograd(dtype):
    C = 5
    head = tower_head(8, 16, C, seed=9, dtype=dtype, groups=4)
    x = torch.randn(2, 8, 6, 7).to(dtype)
    labels = torch.randint(0, C + 1, (2, 6, 7))
    got = LA.LabelAwareModulation(head).label_gradients(x, labels)
    want = LA.LabelAwareModulation(head, vjp="autograd").label_gradients(x, labels)
    for a, b in zip(got, want):
        assert a.dtype == dtype
        assert float((a.float() - b.float()).abs().max()) <= 2e-2 * float(b.float().abs().max())


@pytest.mark.parametrize("mode", ["cls", "reg"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("given_labels", [True, False])
def test_cotangents_equal_dense_one_hot_formula(mode, layout, dtype, given_labels):
    """The tower pass's cotangents (gathered σ' written at the one-hot indices) equal the dense
    formula sigmoid_backward(Y, σ(z)) with Y from confuse_labels' one-hot maps, bit for bit, in both
    layouts; background rows (label C) are zero rows; ties in the scores go to the lowest index."""
    g = torch.Generator().manual_seed(11)
    B, H, W, K = 2, 5, 6, 4
    CH = 5 if mode == "cls" else 4 * K
    z = torch.randn(B, CH, H, W, generator=g, dtype=torch.float64).to(dtype)
    z[0, :, 0, 0] = 0.25  # a row of ties
    if layout == "channels_last":
        z = z.contiguous(memory_format=torch.channels_last)
    if mode == "cls":
        labels = torch.randint(0, CH + 1, (B, H, W), generator=g)  # CH = background
        labels[1, 2, :] = CH
    else:
        labels = torch.randint(0, K, (B, 4, H, W), generator=g)
    labels = labels if given_labels else None
    la = LA.LabelAwareModulation(nn.Identity(), mode=mode, num_bins=K)
    u1, u2 = la._cotangents(z, labels, B, z.device, need_y2=(mode == "cls"))
    s = torch.sigmoid(z)
    if mode == "cls":
        _, _, y1, y2 = LA.confuse_labels(s, labels, return_onehot=True)
    else:
        _, _, y1, _ = LA.confuse_labels(s.reshape(B * 4, K, H, W),
                                        None if labels is None else labels.reshape(B * 4, H, W), return_onehot=True)
        y1 = y1.reshape(s.shape)
    assert u1.stride() == s.stride()
    assert torch.equal(u1, torch.ops.aten.sigmoid_backward(y1.to(dtype), s))
    if mode == "cls":
        assert torch.equal(u2, torch.ops.aten.sigmoid_backward(y2.to(dtype), s))
        if labels is not None:
            assert not u1[1, :, 2, :].any()
    else:
        assert u2 is None
    if given_labels and mode == "reg":
        with pytest.raises(ValueError, match="labels"):
            la._cotangents(z, labels + K, B, z.device, need_y2=False)
        with pytest.raises(ValueError, match="labels"):
            la._cotangents(z, labels[:, :3], B, z.device, need_y2=False)
