"""Oracle-free properties (§11.2): extremality, nesting, area bounds, duality, invariances, edge cases."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg_ext import mser as M
from medseg_ext.reference import mser as R
from mser_cases import region_set


@st.composite
def images(draw):
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    hi = draw(st.sampled_from([2, 10, 200]))
    v = draw(st.lists(st.integers(0, hi), min_size=h * w, max_size=h * w))
    return np.array(v, np.uint8).reshape(h, w)


def _regions(res):
    v, o = res.values.numpy(), res.offsets.numpy()
    return [np.sort(v[o[i]:o[i + 1]]) for i in range(len(res))]


@settings(max_examples=30)
@given(img=images(), preset=st.sampled_from(["custom", "vlfeat", "mmser", "opencv"]), conn=st.sampled_from([4, 8]))
def test_extremal_nested_bounded(img, preset, conn):
    if preset == "opencv":
        if min(img.shape) < 3:
            return
        conn = 4
    res = M.mser(img, preset, min_area=2, max_area=50, max_variation=3.0, delta=2, connectivity=conn)
    regs = _regions(res)
    pol = res.polarity.numpy()
    for i, r in enumerate(regs):
        assert 2 <= len(r) <= 50
        if preset == "opencv":  # the border ring is excluded: extremal within the interior
            inner = img[1:-1, 1:-1]
            ys, xs = np.unravel_index(r, img.shape)
            rr = np.ravel_multi_index((ys - 1, xs - 1), inner.shape)
            assert R.extremal_ok(inner, rr, pol[i] > 0, 4)
        else:
            assert R.extremal_ok(img, r, pol[i] > 0, conn)
    for i in range(len(regs)):
        for j in range(len(regs)):
            if pol[i] != pol[j]:
                continue
            a, b = set(regs[i].tolist()), set(regs[j].tolist())
            assert a <= b or b <= a or not (a & b)


@settings(max_examples=25)
@given(img=images(), preset=st.sampled_from(["custom", "vlfeat", "mmser"]), c=st.integers(0, 55))
def test_duality_and_shift_invariance(img, preset, c):
    kw = dict(min_area=1, max_area=100, max_variation=5.0, delta=2)
    bright = M.mser(img, preset, polarity="bright", **kw)
    dark_inv = M.mser(255 - img, preset, polarity="dark", **kw)
    assert region_set(bright, polarity=False) == region_set(dark_inv, polarity=False)
    shifted = M.mser(img + np.uint8(c), preset, polarity="both", **kw)
    assert region_set(shifted) == region_set(M.mser(img, preset, polarity="both", **kw))
    # 16-bit input with the same values gives the same regions (the tree does not depend on maxval)
    assert region_set(M.mser(img.astype(np.uint16) + 1000, preset, polarity="both",
                             **kw)) == region_set(M.mser(img, preset, polarity="both", **kw))


@settings(max_examples=20)
@given(img=images(), k=st.integers(0, 3), flip=st.booleans())
def test_rotation_flip_equivariance(img, k, flip):
    kw = dict(min_area=1, max_area=100, max_variation=5.0, delta=1, connectivity=8)
    t = np.rot90(img, k)
    t = np.fliplr(t) if flip else t
    idx = np.arange(img.size).reshape(img.shape)
    ti = np.rot90(idx, k)
    ti = np.fliplr(ti) if flip else ti
    got = M.mser(np.ascontiguousarray(t), None, **kw)
    mapped = sorted((0, p, tuple(sorted(ti.ravel()[list(r)].tolist()))) for _, p, r in region_set(got))
    assert mapped == region_set(M.mser(img, None, **kw))


def test_constant_image_and_single_blob():
    img = np.full((7, 9), 42, np.uint8)
    # standard definition: R_{-delta} has vanished, so S = (63 - 0)/63 = 1; OpenCV reports 0
    res = M.mser(img, None, min_area=1, max_area=1000, max_variation=1.0)
    assert res.variation.tolist() == [1.0, 1.0]
    assert len(M.mser(img, None, min_area=1, max_area=1000, max_variation=0.99)) == 0
    assert len(res) == 2 and all(a == 63 for a in res.area.tolist())  # the whole domain, each polarity
    assert len(M.mser(img, None, min_area=1, max_area=62, max_variation=1.0)) == 0
    img[2:5, 3:6] = 200
    # evaluated at its own level the flat blob's R_{+delta} is empty (S = 1 two-sided); the
    # ancestor side (VLFeat) and the OpenCV preset see it as perfectly stable (S = 0)
    # (the strict rule of Eq. 4 also needs S < S(parent): the root's clamped S is 0 as well)
    t = M.component_tree(img, polarity="bright", variation="ancestor")
    assert t.area.tolist() == [9, 63] and t.stability.tolist() == [0.0, 0.0]
    res = M.mser(img, "vlfeat", polarity="bright", min_area=1)
    assert res.area.tolist() == [9]
    res = M.mser(img, "opencv", polarity="bright", min_area=1, max_area=62)
    # OpenCV also captures the whole (border-less) domain at its final flush
    assert sorted(res.area.tolist()) == [9, 35] and res.variation.tolist() == [0.0, 0.0]


def test_tiny_and_line_images():
    for shape in [(1, 1), (1, 7), (7, 1), (2, 2)]:
        img = (np.arange(int(np.prod(shape))) * 37 % 256).astype(np.uint8).reshape(shape)
        res = M.mser(img, None, min_area=1, max_area=100, max_variation=1e9, delta=1)
        ref = R.mser(img, delta=1, min_area=1, max_area=100, max_variation=1e9, polarity="both")
        assert len(res) == len(ref)
        t = M.component_tree(img)
        assert int(t.area.max()) == img.size


def test_16bit_extremes_and_3d_volume():
    img = np.zeros((6, 6, 6), np.uint16)
    img[1:4, 1:4, 1:4] = 65535
    img[2, 2, 2] = 65535
    res = M.mser(img, "mmser", max_area=100, connectivity=26, delta=1)
    assert res.area.tolist() == [27] and res.level.tolist() == [65535]
    vol = np.random.default_rng(0).integers(0, 65536, (5, 6, 7)).astype(np.uint16)
    r = M.mser(vol, None, min_area=1, max_area=50, max_variation=1e9, delta=20000)
    assert len(r) > 0 and r.bboxes.shape == (len(r), 6)
    c, ax, vec = r.ellipsoids
    assert ax.shape == (len(r), 3)


def test_mask_restricts_work():
    img = np.zeros((10, 10), np.uint8)
    img[2:4, 2:4] = 200
    img[6:8, 6:8] = 200
    mask = np.zeros((10, 10), bool)
    mask[:5, :5] = True
    res = M.mser(img, "vlfeat", polarity="bright", min_area=1, max_area=20, mask=mask)
    assert res.area.tolist() == [4]
    t = M.component_tree(img, mask=mask)
    assert (t.pixel_node.numpy()[~mask] == -1).all() and int(t.area.max()) == 25


def test_threads_deterministic():
    import torch
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (4, 30, 30)).astype(np.uint8)
    a = M.mser(imgs, "opencv", batch=True)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        b = M.mser(imgs, "opencv", batch=True)
    finally:
        torch.set_num_threads(old)
    assert np.array_equal(a.values.numpy(), b.values.numpy())
    assert np.array_equal(a.offsets.numpy(), b.offsets.numpy())
