"""Specular pieces (§11.3): Eq. 1, Eq. 5 identities, IS (Eq. 6), IS_en (Eq. 7), union (Eq. 8)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg_ext import mser as M
from medseg_ext.reference import mser as R

rgbs = st.integers(1, 8).flatmap(lambda h: st.integers(1, 8).flatmap(
    lambda w: st.lists(st.integers(0, 255), min_size=h * w * 3, max_size=h * w * 3).map(
        lambda v: np.array(v, np.uint8).reshape(h, w, 3))))


@settings(max_examples=30)
@given(rgb=rgbs)
def test_grey_and_saturation(rgb):
    x = rgb.astype(np.float64)
    I = M.grey(rgb)
    np.testing.assert_array_equal(I, R.grey(rgb))
    np.testing.assert_allclose(I * 3, x.sum(-1))
    assert np.array_equal(M.grey_u8(rgb), np.floor(x.sum(-1) / 3 + 0.5).astype(np.uint8))
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    sp = M.saturation(rgb, "paper_rgb")
    np.testing.assert_allclose(sp, np.where(b + r >= 2 * g, 1.5 * (r - I), 1.5 * (I - b)), atol=1e-9)
    sl = M.saturation(rgb, "l1_sorted")
    assert (sl >= -1e-12).all()
    ordered = (r >= g) & (g >= b)
    np.testing.assert_allclose(sp[ordered], sl[ordered], atol=1e-9)
    np.testing.assert_allclose(sl, R.saturation(rgb, "l1_sorted"))
    isk = M.is_mask(rgb)
    np.testing.assert_array_equal(isk, (I >= I.max() / 2) & (sl <= sl.max() / 3))


def test_paper_saturation_negative_fixture():
    assert M.saturation(np.array([[[0, 0, 10]]], np.uint8), "paper_rgb")[0, 0] == -5.0


@settings(max_examples=30)
@given(data=st.data(), h=st.integers(1, 10), w=st.integers(1, 10), t_h=st.integers(0, 12))
def test_is_enhanced(data, h, w, t_h):
    m = np.array(data.draw(st.lists(st.booleans(), min_size=h * w, max_size=h * w)), bool).reshape(h, w)
    en = M.is_enhanced(m, t_h)
    np.testing.assert_array_equal(en, R.is_enhanced(m, t_h))
    assert not (en & ~m).any()
    np.testing.assert_array_equal(M.is_enhanced(en, t_h), en)  # idempotent
    lab = R.label(m, 8)
    for lb in range(1, lab.max() + 1):
        comp = lab == lb
        assert en[comp].all() == (comp.sum() <= t_h) and en[comp].any() == (comp.sum() <= t_h)
    assert not M.is_enhanced(m, 0).any()
    np.testing.assert_array_equal(M.is_enhanced(m, h * w), m)


def test_specular_mask_union():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:50]
    base = 60 + 40 * np.sin(yy / 9.0) * np.cos(xx / 11.0)
    rgb = np.stack([base + 30, base, base - 20], -1).round().astype(np.uint8)
    rgb[10:13, 10:13] = 250
    rgb[30:32, 40:43] = 245
    sr, mrs, isen = M.specular_mask(rgb, a_max=50, t_h=20, return_parts=True)
    np.testing.assert_array_equal(sr, mrs | isen)
    assert sr[10:13, 10:13].all() and sr[30:32, 40:43].all()
    assert sr.sum() < 60
