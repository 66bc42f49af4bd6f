"""Compiled kernels vs the brute-force NumPy reference (medseg_ext.reference.mser)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg_ext import mser as M
from medseg_ext.reference import mser as R
from mser_cases import concentric, ref_set, region_set


@st.composite
def small_images(draw, three_d=False, sixteen=False):
    if three_d:
        shape = (draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    else:
        shape = (draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    n = int(np.prod(shape))
    if sixteen:
        vals = draw(st.lists(st.sampled_from([0, 1, 2, 3, 7, 300, 301, 65534, 65535]), min_size=n, max_size=n))
        return np.array(vals, np.uint16).reshape(shape)
    hi = draw(st.sampled_from([1, 3, 8, 255]))
    vals = draw(st.lists(st.integers(0, hi), min_size=n, max_size=n))
    return np.array(vals, np.uint8).reshape(shape)


def _check(img, preset, conn, delta, min_area, max_area, max_var, maxval, mask=None):
    cfg = M.PRESETS[preset]
    res = M.mser(img, preset, delta=delta, min_area=min_area, max_area=max_area, max_variation=max_var,
                 connectivity=conn, mask=mask)
    ref = R.mser(img, delta=delta, min_area=min_area, max_area=max_area, max_variation=max_var,
                 min_diversity=cfg["min_diversity"], polarity=cfg["polarity"], connectivity=conn,
                 side=cfg["variation"], normalize=cfg["normalize"], rule=cfg["rule"], maxval=maxval, mask=mask)
    assert region_set(res) == ref_set(ref)
    # levels, areas and variations of the same regions
    got = sorted(zip(res.polarity.tolist(), res.area.tolist(), res.level.tolist(),
                     np.round(res.variation.numpy(), 9).tolist()))
    want = sorted((r["polarity"], r["area"], r["level"], round(r["variation"], 9)) for r in ref)
    assert got == want


@settings(max_examples=40)
@given(img=small_images(), preset=st.sampled_from(["custom", "vlfeat", "mmser"]), conn=st.sampled_from([4, 8]),
       delta=st.integers(0, 4), min_area=st.integers(1, 4), max_var=st.sampled_from([0.5, 2.0, 1e9]))
def test_mser_2d_vs_reference(img, preset, conn, delta, min_area, max_var):
    _check(img, preset, conn, delta, min_area, 60, max_var, 255)


@settings(max_examples=15)
@given(img=small_images(three_d=True), preset=st.sampled_from(["custom", "vlfeat", "mmser"]),
       conn=st.sampled_from([6, 26]), delta=st.integers(1, 3))
def test_mser_3d_vs_reference(img, preset, conn, delta):
    _check(img, preset, conn, delta, 1, 100, 1e9, 255)


@settings(max_examples=15)
@given(img=small_images(sixteen=True), preset=st.sampled_from(["custom", "mmser"]), delta=st.sampled_from([1, 2, 300]))
def test_mser_16bit_vs_reference(img, preset, delta):
    _check(img, preset, 8, delta, 1, 100, 1e9, 65535)


@settings(max_examples=15)
@given(img=small_images(), data=st.data())
def test_mser_mask_vs_reference(img, data):
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=img.size, max_size=img.size)), bool).reshape(img.shape)
    _check(img, "custom", 4, 2, 1, 100, 1e9, 255, mask=mask)


@settings(max_examples=25)
@given(img=small_images(), pol=st.sampled_from(["bright", "dark"]), conn=st.sampled_from([4, 8]),
       side=st.sampled_from(["two_sided", "ancestor", "descendant"]), norm=st.booleans(), delta=st.integers(0, 5))
def test_component_tree_vs_reference(img, pol, conn, side, norm, delta):
    t = M.component_tree(img, polarity=pol, connectivity=conn, delta=delta, variation=side, normalize=norm)
    r = R.component_tree(img, conn, pol == "bright", 255)
    u = M.component_tree(img, polarity=pol, connectivity=conn, delta=delta, variation=side, normalize=norm,
                         algorithm="union_find")
    for a in ("parent", "area", "level", "pixel_node", "stability"):
        assert torch.equal(getattr(t, a), getattr(u, a))
    np.testing.assert_array_equal(t.parent.numpy(), r["parent"])
    np.testing.assert_array_equal(t.area.numpy(), r["area"])
    np.testing.assert_array_equal(t.level.numpy(), r["level"])
    np.testing.assert_array_equal(t.pixel_node.numpy().ravel(), r["pixel_node"])
    np.testing.assert_allclose(t.stability.numpy(), R.stability(r, delta, side, norm), rtol=0, atol=1e-12)


def test_component_tree_3d_16bit_vs_reference():
    rng = np.random.default_rng(3)
    img = rng.choice(np.array([0, 5, 1000, 65535], np.uint16), size=(3, 4, 5))
    for conn in (6, 26):
        t = M.component_tree(img, polarity="bright", connectivity=conn, delta=1000)
        u = M.component_tree(img, polarity="bright", connectivity=conn, delta=1000, algorithm="union_find")
        assert torch.equal(t.parent, u.parent) and torch.equal(t.pixel_node, u.pixel_node)
        r = R.component_tree(img, conn, True, 65535)
        np.testing.assert_array_equal(t.parent.numpy(), r["parent"])
        np.testing.assert_array_equal(t.area.numpy(), r["area"])
        np.testing.assert_allclose(t.stability.numpy(), R.stability(r, 1000, "two_sided", True))


def test_mmser_matches_pseudocode():
    rng = np.random.default_rng(5)
    for _ in range(5):
        img = rng.integers(0, 256, (10, 11)).astype(np.uint8)
        res = M.mser(img, "mmser", delta=3, max_area=29, connectivity=8)
        want = R.mmser(img, delta=3, a_max=30, connectivity=8)
        np.testing.assert_array_equal(res.union_mask()[0].numpy(), want)


def test_region_geometry_vs_numpy():
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (20, 17)).astype(np.uint8)
    res = M.mser(img, None, min_area=3, max_area=200, max_variation=1e9, delta=2)
    assert len(res) > 0
    bb, cen, cov = res.bboxes.numpy(), res.centroids.numpy(), res.covariances.numpy()
    for i in range(len(res)):
        pts = res.pixels(i).astype(float)
        np.testing.assert_array_equal(bb[i, :2], pts.min(0))
        np.testing.assert_array_equal(bb[i, 2:], pts.max(0) - pts.min(0) + 1)
        np.testing.assert_allclose(cen[i], pts.mean(0))
        np.testing.assert_allclose(cov[i], np.cov(pts.T, bias=True).reshape(2, 2), atol=1e-9)
    lab = res.label_image()[0].numpy()
    area = res.area.numpy()
    for p in range(img.size):
        inside = [i for i in range(len(res)) if p in set(res.values.numpy()[res.offsets[i]:res.offsets[i + 1]])]
        want = 0 if not inside else min(inside, key=lambda i: (area[i], i)) + 1
        assert lab.ravel()[p] == want


def test_batch_equals_single_calls():
    rng = np.random.default_rng(11)
    imgs = rng.integers(0, 256, (5, 12, 14)).astype(np.uint8)
    for preset in ("opencv", "custom", "mmser"):
        kw = dict(min_area=2, max_area=100, max_variation=2.0)
        b = M.mser(imgs, preset, batch=True, **kw)
        singles = []
        for k in range(5):
            s = M.mser(imgs[k], preset, **kw)
            singles += [(k,) + x[1:] for x in region_set(s)]
        assert region_set(b) == sorted(singles)
        assert b.union_mask().shape == (5, 12, 14)


@pytest.mark.parametrize("shape,conn,dtype", [((40, 50), 4, np.uint8), ((40, 50), 8, np.uint16),
                                              ((9, 10, 11), 6, np.uint16), ((9, 10, 11), 26, np.uint8),
                                              # thin and degenerate shapes: every pixel on a face
                                              ((1, 37), 8, np.uint16), ((37, 1), 4, np.uint8),
                                              ((2, 1, 9), 26, np.uint16), ((1, 5, 7), 6, np.uint8),
                                              ((3, 3, 3), 26, np.uint16), ((2, 2, 2), 6, np.uint8)])
def test_flood_equals_union_find_larger(shape, conn, dtype):
    rng = np.random.default_rng(4)
    hi = 255 if dtype == np.uint8 else 65535
    img = rng.integers(0, hi + 1, shape).astype(dtype)
    img[: shape[0] // 2] //= 37  # plateaus and ties
    mask = rng.random(shape) > 0.1
    for pol in ("bright", "dark"):
        for m in (None, mask):
            t = M.component_tree(img, polarity=pol, connectivity=conn, mask=m)
            u = M.component_tree(img, polarity=pol, connectivity=conn, mask=m, algorithm="union_find")
            for a in ("parent", "area", "level", "pixel_node", "stability"):
                assert torch.equal(getattr(t, a), getattr(u, a)), a


def test_vlfeat_rule_hand_built_tree():
    # dark tree: keys 0, 1, 2, 10 with areas 1, 9, 25, 49; ancestor variations (delta 1): 8, 16/9, 0, 0.
    # n0 loses to n1 (8 >= 16/9), n1 loses to n2 (16/9 >= 0); n2 vs the root: no comparison
    # (key 10 != 3); the root is above max_area = 0.75·49; n2 differs from the root by 24/49 >= 0.2.
    img = concentric()
    t = M.component_tree(img, polarity="dark", delta=1, variation="ancestor")
    assert t.area.tolist() == [1, 9, 25, 49] and t.level.tolist() == [0, 1, 2, 10]
    np.testing.assert_allclose(t.stability.numpy(), [8.0, 16 / 9, 0.0, 0.0])
    res = M.mser(img, "vlfeat", polarity="dark", delta=1)
    assert res.area.tolist() == [25] and res.level.tolist() == [2]
    assert len(M.mser(img, "vlfeat", polarity="dark", delta=1, min_diversity=0.6)) == 0
    # the root never comes back, even when max_area allows it: VLFeat compares a root with itself
    # and the tie is lost (checked against libvl in test_mser_vlfeat.py)
    assert sorted(M.mser(img, "vlfeat", polarity="dark", delta=1, max_area=1.0).area.tolist()) == [25]


def test_paper_and_vlfeat_scores_on_unique_branch():
    # §11.2.7: on a unique branch S_paper = |R| - |R_{t+delta}| (bright: t+delta is brighter) and
    # S_vlfeat·|R| = |R_{t-delta}| - |R| (the bigger region delta levels darker)
    img = 255 - concentric() * 20  # bright tree: 255 (1 px), 235 (9), 215 (25), 55 (49)
    for delta in (1, 20, 40):
        tp = M.component_tree(img, polarity="bright", delta=delta, variation="descendant", normalize=False)
        tv = M.component_tree(img, polarity="bright", delta=delta, variation="ancestor", normalize=True)
        lev = tp.level.numpy()
        area = tp.area.numpy()

        def area_at(t):  # |component of {I >= t}| containing the centre, 0 if empty
            return int(R.label(img >= t, 8)[3, 3] and (R.label(img >= t, 8) == R.label(img >= t, 8)[3, 3]).sum())
        for i in range(len(lev)):
            assert tp.stability[i] == area[i] - area_at(lev[i] + delta)
            up = area_at(max(lev[i] - delta, int(img.min())))
            assert abs(float(tv.stability[i]) * area[i] - (up - area[i])) < 1e-9
