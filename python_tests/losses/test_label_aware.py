"""Label-aware mechanism: dual-energy pre-processing, confuse labels, the fused modulation and the
wrapped head, against the NumPy reference, autograd of the paper's objective and §10.4 properties."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from medseg_ext.losses import label_aware as LA
from medseg_ext.reference import detection as R

FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


# ---------------------------------------------------------------- dual energy


@st.composite
def energy_pairs(draw):
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=4)))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    high = rng.integers(0, 65536, shape)
    low = rng.integers(0, 65536, shape)
    zero = rng.random(shape)
    low[zero < 0.15] = 0                          # L = 0 with H > 0 (R = +inf)
    high[(zero < 0.05)] = 0                       # H = L = 0
    high[(zero > 0.9)] = low[(zero > 0.9)]        # H = L (R = 1)
    dtype = draw(st.sampled_from([np.uint16, np.int32, np.int64]))
    strided = draw(st.booleans())
    h, l = torch.from_numpy(high.astype(dtype)), torch.from_numpy(low.astype(dtype))
    if strided and len(shape) >= 2:
        h, l = h.transpose(0, -1), l.transpose(0, -1)
    return h, l


@given(energy_pairs(), st.sampled_from([-1, 0]), st.sampled_from([torch.float32, torch.float64]))
def test_dual_energy_matches_reference(pair, axis, dtype):
    h, l = pair
    got = LA.dual_energy_to_rgb(h, l, channel_axis=axis, dtype=dtype)
    want = np.moveaxis(R.dual_energy_to_rgb(h.numpy(), l.numpy()), -1, axis)
    assert got.dtype == dtype and got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6 if dtype == torch.float32 else 1e-14, atol=1e-4)
    assert not torch.isnan(got).any()


def test_dual_energy_spot_values():
    h = torch.tensor([1000, 5, 0, 65535, 1], dtype=torch.int32)
    l = torch.tensor([1000, 0, 0, 1, 65535], dtype=torch.int32)
    out = LA.dual_energy_to_rgb(h, l, dtype=torch.float64)
    assert float(out[0, 2]) == pytest.approx(510 / (1 + math.exp(-1)) - 255, abs=1e-12)  # H = L: 117.84
    assert float(out[0, 2]) == pytest.approx(117.84, abs=5e-3)
    assert float(out[1, 2]) == 255.0 and float(out[2, 2]) == 0.0   # the L = 0 rule
    assert float(out[3, 0]) == pytest.approx(65535 / 256) and float(out[3, 2]) == pytest.approx(255.0)
    assert float(out[4, 2]) == pytest.approx(510 / (1 + math.exp(-1 / 65535)) - 255, rel=1e-12)  # R → 0⁺: → 0
    r = torch.arange(1, 200, dtype=torch.int32)
    ch = LA.dual_energy_to_rgb(r * 37, torch.full_like(r, 500), dtype=torch.float64)[:, 2]
    assert bool((ch[1:] > ch[:-1]).all())  # monotone in R
    batch = LA.dual_energy_to_rgb(torch.zeros(2, 4, 5, dtype=torch.int32), torch.ones(2, 4, 5, dtype=torch.int32),
                                  channel_axis=1)
    assert batch.shape == (2, 3, 4, 5)


def test_dual_energy_errors():
    with pytest.raises(ValueError, match="high: value -1"):
        LA.dual_energy_to_rgb(torch.tensor([-1, 2]), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="low: value 70000"):
        LA.dual_energy_to_rgb(torch.tensor([1, 2]), torch.tensor([1, 70000]))
    with pytest.raises(TypeError, match="high"):
        LA.dual_energy_to_rgb(torch.tensor([1.0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="low: shape"):
        LA.dual_energy_to_rgb(torch.tensor([1, 2]), torch.tensor([1]))
    with pytest.raises(ValueError, match="channel_axis"):
        LA.dual_energy_to_rgb(torch.tensor([1, 2]), torch.tensor([1, 2]), channel_axis=3)


# ---------------------------------------------------------------- confuse labels


@st.composite
def score_rows(draw):
    n = draw(st.sampled_from([0, 1, 5, 60]))
    c = draw(st.integers(1, 13))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    s = rng.random((n, c))
    if draw(st.booleans()):
        s = np.round(s * 3) / 3  # many ties, exact zeros
    dtype = draw(st.sampled_from(FLOATS))
    s = torch.from_numpy(s).to(dtype)
    labels = None if draw(st.booleans()) else torch.from_numpy(rng.integers(0, c + 1, n))
    if draw(st.booleans()):
        s = torch.from_numpy(np.ascontiguousarray(s.double().numpy().T)).to(dtype).t()  # column-major rows
    return s, labels


@given(score_rows())
def test_confuse_labels_matches_reference(case):
    s, labels = case
    a, c, y1, y2 = LA.confuse_labels(s, labels, return_onehot=True)
    ra, rc = R.confuse_labels(s.double().numpy(), None if labels is None else labels.numpy())
    np.testing.assert_array_equal(a.numpy(), ra)
    np.testing.assert_array_equal(c.numpy(), rc)
    C = s.shape[1]
    assert y1.shape == s.shape and y1.dtype == s.dtype
    np.testing.assert_array_equal(y1.double().numpy(), R.onehot_targets(ra, C))  # background rows all zero
    np.testing.assert_array_equal(y2.double().numpy(), R.onehot_targets(rc, C))
    if labels is None:
        np.testing.assert_array_equal(a.numpy(), s.float().argmax(1).numpy())  # pseudo-labels = argmax


def test_confuse_label_properties():
    g = torch.Generator().manual_seed(3)
    s = torch.rand(200, 6, generator=g) + 0.01  # strictly positive probabilities
    labels = torch.randint(0, 7, (200,), generator=g)
    a, c = LA.confuse_labels(s, labels)
    fg = labels < 6
    assert bool((c[fg] != labels[fg]).all())                # never the assigned class
    assert torch.equal(c[~fg], s[~fg].argmax(1))            # background: the overall argmax
    pa, pc = LA.confuse_labels(s)
    top2 = s.topk(2, dim=1).indices
    assert torch.equal(pa, top2[:, 0]) and torch.equal(pc, top2[:, 1])  # second-ranked class at test time
    dense = torch.rand(2, 6, 3, 4, generator=g)
    dl = torch.randint(0, 7, (2, 3, 4), generator=g)
    da, dc = LA.confuse_labels(dense, dl)
    ra, rc = LA.confuse_labels(dense.permute(0, 2, 3, 1).reshape(-1, 6), dl.reshape(-1))
    assert torch.equal(da.reshape(-1), ra) and torch.equal(dc.reshape(-1), rc)


def test_confuse_label_errors():
    with pytest.raises(ValueError, match="labels: value 5"):
        LA.confuse_labels(torch.rand(3, 4), torch.tensor([0, 5, 1]))
    with pytest.raises(ValueError, match="scores: value"):
        LA.confuse_labels(torch.tensor([[0.2, -0.1]]))
    with pytest.raises(ValueError, match="scores: value nan"):
        LA.confuse_labels(torch.tensor([[0.2, float("nan")]]))
    with pytest.raises(ValueError, match="labels: expected shape"):
        LA.confuse_labels(torch.rand(3, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="scores: expected"):
        LA.confuse_labels(torch.rand(3, 4, 5))


# ---------------------------------------------------------------- modulation


@settings(max_examples=30)
@given(st.integers(0, 2**31 - 1), st.sampled_from(FLOATS), st.sampled_from([(1.0, 1.0, 1.0), (1.5, 0.0, 1.0),
                                                                             (0.5, 1.0, 0.0), (0.0, 2.0, 0.0)]),
       st.booleans(), st.booleans())
def test_la_modulate_matches_reference(seed, dtype, abc, with_g2, channels_last):
    rng = np.random.default_rng(seed)
    shape = (2, 3, 4, 5)
    x = torch.from_numpy(rng.standard_normal(shape)).to(dtype)
    g1 = torch.from_numpy(rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 30.0])).to(dtype)
    g2 = torch.from_numpy(rng.standard_normal(shape)).to(dtype) if with_g2 else None
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    a, b, c = abc
    if not with_g2:
        a, b, c = 1 - 0.5 * abc[1], abc[1], 0.0  # keep Eq. 8 without g2
    xg = x.detach().requires_grad_(True)
    out = LA.la_modulate(xg, g1, g2, a=a, b=b, c=c)
    xd = x.double().numpy()
    want = (R.la_cls_modulate(xd, g1.double().numpy(), g2.double().numpy(), a, b, c) if with_g2
            else a * xd + b * xd / (1 + np.exp(-g1.double().numpy())))
    t = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    assert out.dtype == dtype
    np.testing.assert_allclose(out.double().detach().numpy(), want, rtol=t, atol=t)
    up = torch.from_numpy(rng.standard_normal(shape)).to(dtype)
    (out * up).sum().backward()
    factor = want / np.where(xd == 0, 1, xd)
    np.testing.assert_allclose(xg.grad.double().numpy(), up.double().numpy() * factor, rtol=2 * t, atol=2 * t)


def test_la_modulate_identity_range_and_constraint():
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    z = torch.zeros_like(x)
    torch.testing.assert_close(LA.la_modulate(x, z, z), x)                               # Eq. 5 at g = 0
    torch.testing.assert_close(LA.la_modulate(x, z, z, a=1.5, b=0.0, c=1.0), x)          # any Eq. 8 triple
    torch.testing.assert_close(LA.la_modulate(x, z, None, a=0.5, b=1.0), x)              # LAreg Eq. 6
    g1, g2 = torch.randn_like(x) * 10, torch.randn_like(x) * 10
    np.testing.assert_allclose(LA.la_modulate(x, g1, None, a=0.5, b=1.0).numpy(),
                               R.la_reg_modulate(x.numpy(), g1.numpy()), rtol=1e-12, atol=1e-12)  # Eq. 6
    ratio = LA.la_modulate(x, g1, g2) / x
    assert float(ratio.min()) > 0 and float(ratio.max()) < 2                              # x_new/x ∈ (0, 2)
    with pytest.raises(ValueError, match="Eq. 8"):
        LA.la_modulate(x, g1, g2, a=1.0, b=1.0, c=0.0)
    LA.la_modulate(x, g1, g2, a=1.0, b=1.0, c=0.0, enforce_identity=False)
    with pytest.raises(ValueError, match="g1: shape"):
        LA.la_modulate(x, g1[:1], g2)
    bad = g1.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        LA.la_modulate(x, bad, g2)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: LA.la_modulate(t, g1, g2), (x,))


# ---------------------------------------------------------------- the wrapped head


def small_head(cin=3, cout=5, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(cin, 6, 3, padding=1), torch.nn.GroupNorm(2, 6), torch.nn.ReLU(),
                               torch.nn.Conv2d(6, cout, 3, padding=1)).to(dtype)


def paper_objective_grad(head, x, labels, C, which):
    """∇_x Σ_p y_{p, k_p} written from the paper: k_p the assigned (which=1) or confuse (which=2) class,
    foreground rows only for the assigned term; gathered, no one-hot."""
    xi = x.detach().requires_grad_(True)
    s = torch.sigmoid(head(xi))                        # (B, C, H, W)
    rows = s.permute(0, 2, 3, 1).reshape(-1, C)
    lab = labels.reshape(-1)
    if which == 1:
        fg = lab < C
        obj = rows[fg.nonzero()[:, 0], lab[fg]].sum()
    else:
        s2 = rows.detach().clone()
        fg = lab < C
        s2[fg.nonzero()[:, 0], lab[fg]] = 0
        obj = rows.gather(1, s2.argmax(1, keepdim=True)).sum()
    return torch.autograd.grad(obj, xi)[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_la_weights_equal_autograd_of_the_objective(seed):
    C = 5
    head = small_head(cout=C, seed=seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64, generator=g)
    labels = torch.randint(0, C + 1, (2, 6, 7), generator=g)
    la = LA.LabelAwareModulation(head)
    g1, g2 = la.label_gradients(x, labels)
    torch.testing.assert_close(g1, paper_objective_grad(head, x, labels, C, 1), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g2, paper_objective_grad(head, x, labels, C, 2), rtol=1e-10, atol=1e-12)
    # pseudo-labels (no labels) are the argmax of the first pass
    with torch.no_grad():
        pseudo = torch.sigmoid(head(x)).argmax(1)
    p1, p2 = la.label_gradients(x, None)
    q1, q2 = la.label_gradients(x, pseudo)
    torch.testing.assert_close(p1, q1, rtol=0, atol=0)
    torch.testing.assert_close(p2, q2, rtol=0, atol=0)
    # forward = Eq. 5 with these weights
    xn = la(x, labels)
    torch.testing.assert_close(xn, x * (1 + torch.sigmoid(g1) - torch.sigmoid(g2)), rtol=1e-12, atol=1e-12)


def test_background_rows_contribute_nothing_and_linearity():
    C = 4
    head = small_head(cout=C)
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    la = LA.LabelAwareModulation(head)
    g1, _ = la.label_gradients(x, torch.full((1, 5, 5), C))
    assert float(g1.abs().max()) == 0.0  # all background: zero rows in Y1, g1 = 0
    # g(Y) is linear in Y: one foreground row changed from background adds exactly its own VJP
    labels = torch.full((1, 5, 5), C)
    labels[0, 2, 3] = 1
    ga, _ = la.label_gradients(x, labels)
    labels2 = labels.clone()
    labels2[0, 0, 0] = 2
    gb, _ = la.label_gradients(x, labels2)
    only = torch.full((1, 5, 5), C)
    only[0, 0, 0] = 2
    gc, _ = la.label_gradients(x, only)
    torch.testing.assert_close(gb, ga + gc, rtol=1e-12, atol=1e-14)


def test_label_gradient_matches_finite_differences():
    C = 3
    head = small_head(cin=2, cout=C, seed=5)
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    labels = torch.tensor([[[0, 3, 2], [1, 1, 3], [2, 0, 0]]])
    g1, _ = LA.LabelAwareModulation(head).label_gradients(x, labels)
    y1 = torch.nn.functional.one_hot(labels, C + 1)[..., :C].permute(0, 3, 1, 2).double()

    def objective(t):
        with torch.no_grad():
            return float((torch.sigmoid(head(t)) * y1).sum())

    h = 1e-6
    for idx in [(0, 0, 0, 0), (0, 1, 2, 1), (0, 0, 1, 2), (0, 1, 0, 0)]:
        e = torch.zeros_like(x)
        e[idx] = h
        fd = (objective(x + e) - objective(x - e)) / (2 * h)
        assert float(g1[idx]) == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_la_backward_holds_weights_constant_and_first_pass_does_not_train():
    C = 4
    head = small_head(cout=C)
    la = LA.LabelAwareModulation(head)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, C + 1, (2, 4, 4))
    xn = la(x, labels)
    assert all(p.grad is None for p in head.parameters())  # only the second pass trains the head
    up = torch.randn_like(xn)
    (xn * up).sum().backward()
    g1, g2 = la.label_gradients(x.detach(), labels)
    torch.testing.assert_close(x.grad, up * (1 + torch.sigmoid(g1) - torch.sigmoid(g2)), rtol=1e-12, atol=1e-12)


def test_la_reg_mode():
    K = 5
    torch.manual_seed(0)
    head = torch.nn.Conv2d(3, 4 * K, 3, padding=1).double()
    la = LA.LabelAwareModulation(head, "reg", num_bins=K)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    bins = torch.randint(0, K, (2, 4, 4, 4))
    g, none = la.label_gradients(x, bins)
    assert none is None
    xi = x.clone().requires_grad_(True)
    s = torch.sigmoid(head(xi)).reshape(2, 4, K, 4, 4)
    obj = s.gather(2, bins[:, :, None]).sum()  # Σ over sides and locations of the target bin's confidence
    torch.testing.assert_close(g, torch.autograd.grad(obj, xi)[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(la(x, bins), x * (0.5 + torch.sigmoid(g)), rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        pseudo = torch.sigmoid(head(x)).reshape(2, 4, K, 4, 4).argmax(2)
    torch.testing.assert_close(la.label_gradients(x)[0], la.label_gradients(x, pseudo)[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="target bins"):
        la(x, torch.full((2, 4, 4, 4), K))
    with pytest.raises(ValueError, match="4·num_bins"):
        LA.LabelAwareModulation(head, "reg", num_bins=K + 1)(x)
    d = torch.tensor([0.0, 7.9, 8.0, 200.0, -3.0])
    assert LA.distance_bins(d, stride=8).tolist() == R.distance_bins(d.numpy(), 8).tolist() == [0, 0, 1, 15, 0]
