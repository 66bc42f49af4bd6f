"""Seeding (threshold, components, K regions, all classes), Eq. 2 and the display normaliser."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from medseg_ext import lrp
from medseg_ext.reference import lrp as ref


def _blobs():
    m = np.zeros((12, 12), bool)
    m[1:3, 1:3] = True          # 4 px
    m[5:10, 5:10] = True        # 25 px
    m[0, 10:12] = True          # 2 px
    m[11, 0] = True             # 1 px, touches nothing
    return m


def test_select_component_rules_vs_reference():
    m = _blobs()
    np.testing.assert_array_equal(lrp.select_component(m, "largest"), ref.select_largest(m))
    assert lrp.select_component(m, "largest").sum() == 25
    assert lrp.select_component(m, 1).sum() == 4
    assert lrp.select_component(m, 3).sum() == 1
    assert lrp.select_component(m, 9).sum() == 0
    assert lrp.select_component(m, (6, 6)).sum() == 25
    assert lrp.select_component(m, (0, 0)).sum() == 0          # background pixel -> empty
    assert lrp.select_component(m, "all").sum() == m.sum()
    # the object larger than the background: still the object (the paper's argsort()[-2] fails here)
    big = np.ones((6, 6), bool)
    big[0, 0] = False
    assert lrp.select_component(big, "largest").sum() == 35
    # empty mask: an empty selection, not an error
    assert lrp.select_component(np.zeros((4, 4), bool)).sum() == 0
    # diagonal neighbours: 8-connectivity joins them, 4-connectivity not
    d = np.eye(4, dtype=bool)
    assert lrp.select_component(d).sum() == 4
    assert lrp.select_component(d, connectivity="face").sum() == 1
    lab, n = ref.label_components(d, full=False)
    assert n == 4
    t = torch.from_numpy(m)
    assert torch.equal(lrp.select_component(t), torch.from_numpy(ref.select_largest(m)))
    with pytest.raises(TypeError, match="mask"):
        lrp.select_component(m.astype(np.float32))
    with pytest.raises(ValueError, match="component"):
        lrp.select_component(m, "biggest")
    with pytest.raises(ValueError, match="component"):
        lrp.select_component(m, (20, 0))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2 ** 31 - 1), st.floats(0.2, 0.8))
def test_largest_component_hypothesis(seed, p):
    m = np.random.default_rng(seed).random((7, 9)) < p
    got = lrp.select_component(m, "largest")
    exp = ref.select_largest(m)
    assert got.sum() == exp.sum()
    np.testing.assert_array_equal(got, exp)


def test_threshold_strictness():
    p = torch.tensor([0.4, 0.5, 0.6])
    assert lrp.threshold_mask(p).tolist() == [False, False, True]
    assert lrp.threshold_mask(p, strict=False).tolist() == [False, True, True]


def test_make_seed_paper_sum_layer_and_modes():
    torch.manual_seed(0)
    z = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    masks = torch.rand(2, 2, 5, 5) > 0.5
    seed = lrp.make_seed(z, masks, [0, 2], activation="sigmoid", mode="paper", epsilon=1e-9)
    s = torch.sigmoid(z)
    for k, c in enumerate([0, 2]):
        for b in range(2):
            r = masks[k, b] * s[b, c]
            y = r.sum()
            np.testing.assert_allclose(seed[k, b, c].numpy(), (r * y / (y + 1e-9)).numpy(), rtol=1e-12)
            others = [cc for cc in range(3) if cc != c]
            assert torch.count_nonzero(seed[k, b, others]) == 0
    sm = lrp.make_seed(z, masks[:, 0], 1, activation="softmax", mode="prob")
    np.testing.assert_allclose(sm[0, :, 1].numpy(), (masks[0, 0] * torch.softmax(z, 1)[:, 1]).numpy())
    assert torch.equal(lrp.make_seed(z, masks, 0, mode="uniform")[:, :, 0], masks.double())
    assert torch.equal(lrp.make_seed(z, masks, 0, mode="logit")[:, :, 0], masks * z[:, 0])
    with pytest.raises(ValueError, match="channels"):
        lrp.make_seed(z, masks, 5)
    with pytest.raises(ValueError, match="masks"):
        lrp.make_seed(z, masks[:, :, :3], 0)
    with pytest.raises(ValueError, match="mode"):
        lrp.make_seed(z, masks, 0, mode="x")
    with pytest.raises(ValueError, match="activation"):
        lrp.make_seed(z, masks, 0, activation="relu")


def _seg_net():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1)).double()


def test_explain_one_pass_equals_sum_of_pixel_passes():
    """The paper's distributivity claim: one pass over the summed seed = Σ of per-pixel passes."""
    net = _seg_net()
    x = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    R, eng = lrp.explain(net, x, channels=0, components="all", mode="prob", return_engine=True)
    z = eng.output
    mask = lrp.region_masks(z, components="all")[0, 0]
    pix = torch.nonzero(mask)
    singles = torch.zeros_like(x)
    for (i, j) in pix.tolist():
        m = torch.zeros(1, 6, 6, dtype=torch.bool)
        m[0, i, j] = True
        singles += eng.relevance(lrp.make_seed(z, m, 0, mode="prob")[0])
    np.testing.assert_allclose(R[0].numpy(), singles.numpy(), rtol=1e-9, atol=1e-12)


def test_explain_k_components_and_all_classes():
    net = _seg_net()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    R = lrp.explain(net, x, components=["largest", 1, "all"])
    assert R.shape == (3, 2, 1, 8, 8)
    Rc = lrp.explain(net, x, all_classes=True, composite=lrp.EpsilonPlus())
    assert Rc.shape == (2, 2, 1, 8, 8) and torch.isfinite(Rc).all()
    # explicit masks; an empty mask gives an all-zero map
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[1, 2:5, 2:5] = True
    Rm = lrp.explain(net, x, masks=masks)
    assert torch.count_nonzero(Rm[0]) == 0 and torch.count_nonzero(Rm[1]) > 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=20), st.floats(1e-3, 10.0))
def test_log_scale_properties(vals, t):
    x = np.array(vals)
    f = lrp.log_scale(x, t)
    np.testing.assert_allclose(f, ref.log_scale(x, t), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lrp.log_scale(-x, t), -f, atol=1e-12)           # odd
    assert np.all(f[np.abs(x) <= t] == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        closed = np.where(np.abs(x) > t, np.sign(x) * np.log(np.abs(x) / t), 0.0)
    np.testing.assert_allclose(f, closed, atol=1e-9)
    order = np.argsort(x)
    assert np.all(np.diff(f[order]) >= -1e-12)                                  # monotone
    np.testing.assert_allclose(lrp.log_scale(3.0 * x, 3.0 * t), f, atol=1e-9)   # scale equivariance
    ft = lrp.log_scale(torch.tensor(x), t).numpy()
    np.testing.assert_allclose(ft, f, atol=1e-12)


def test_log_scale_values_and_errors():
    assert lrp.log_scale(np.array([0.1 * math.e ** 2]), 0.1)[0] == pytest.approx(2.0)
    assert lrp.log_scale(np.array([-0.1 * math.e]), 0.1)[0] == pytest.approx(-1.0)
    assert lrp.log_scale(np.array([0.1, -0.1, 0.0]), 0.1).tolist() == [0.0, 0.0, 0.0]
    assert np.isnan(lrp.log_scale(np.array([np.nan]), 0.1)[0])
    with pytest.raises(ValueError, match="thresh"):
        lrp.log_scale(np.ones(2), 0.0)
    with pytest.raises(TypeError, match="thresh"):
        lrp.log_scale(np.ones(2), "0.1")


@pytest.mark.parametrize("sign", ["positive", "negative", "absolute_value", "all"])
def test_normalize_attr_vs_reference_and_captum(sign):
    a = np.random.default_rng(0).standard_normal((9, 11)) ** 3
    got = lrp.normalize_attr(a, sign=sign, outlier_perc=5)
    np.testing.assert_allclose(got, ref.normalize_attr(a, sign, 5), rtol=1e-12)
    assert got.min() >= -1 and got.max() <= 1
    if sign == "positive":
        assert np.all(got[a <= 0] == 0)
    viz = pytest.importorskip("captum.attr._utils.visualization")
    exp = viz._normalize_attr(a, sign, 5)
    np.testing.assert_allclose(got, exp, rtol=1e-12)


def test_overlay_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    img = np.random.default_rng(0).random((16, 16))
    rel = np.random.default_rng(1).standard_normal((16, 16))
    lrp.overlay(img, rel, str(tmp_path / "o.png"))
    assert (tmp_path / "o.png").stat().st_size > 0
    with pytest.raises(ValueError, match="image"):
        lrp.overlay(img, rel[:3])
