"""Edge cases of every public mser entry point, each against an independent oracle: the brute-force
NumPy reference (medseg_ext.reference.mser), cv2.MSER for the opencv preset, exact rational
arithmetic, analytic trees, or an invariance (memory layout, polarity duality, unit axes).

Covered here: non-contiguous numpy (transposed, strided, negative strides, Fortran order) and torch
(transposed, strided, permuted) images and masks; 1×N, N×1, 1×1, 2×2 and volumes with a unit or
size-2 axis; constant images at 0 / 255 / 65535 and a single bright pixel; empty, full, single-pixel
and non-bool masks; batches of 1 and of 0; 16-bit duality; parameters far outside the usual range
(delta, areas, num_threads); per-image sizes beyond int32; huge and tiny float RGB values; and the
clear errors for bad input (ValueError/TypeError naming the argument).
"""
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg_ext import mser as M
from medseg_ext.mser import tiled as T
from medseg_ext.reference import mser as R
from mser_cases import opencv_regions, ref_set, region_set

TREE_FIELDS = ("pixel_node", "parent", "level", "area")


def _cv2():
    return pytest.importorskip("cv2")


def _values(draw, shape, maxval):
    """Grey values with the edge patterns: constant 0 / maxval, one bright pixel on 0, 0/maxval only,
    few levels (plateaus and ties), or the full range."""
    n = int(np.prod(shape))
    kind = draw(st.sampled_from(["zero", "full", "single", "binary", "ties", "range"]))
    if kind == "zero":
        v = np.zeros(n, np.int64)
    elif kind == "full":
        v = np.full(n, maxval, np.int64)
    elif kind == "single":
        v = np.zeros(n, np.int64)
        v[draw(st.integers(0, n - 1))] = maxval
    elif kind == "binary":
        v = np.array(draw(st.lists(st.sampled_from([0, maxval]), min_size=n, max_size=n)), np.int64)
    elif kind == "ties":
        v = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), np.int64) * (maxval // 3)
    else:
        v = np.array(draw(st.lists(st.integers(0, maxval), min_size=n, max_size=n)), np.int64)
    return v.reshape(shape)


@st.composite
def cases(draw):
    nd = draw(st.sampled_from([2, 2, 3]))
    shape = tuple(draw(st.integers(1, 7 if nd == 2 else 4)) for _ in range(nd))
    dtype = draw(st.sampled_from([np.uint8, np.uint16]))
    maxval = 255 if dtype == np.uint8 else 65535
    img = _values(draw, shape, maxval).astype(dtype)
    mask = None
    if draw(st.booleans()):
        mask = np.array(draw(st.lists(st.booleans(), min_size=img.size, max_size=img.size)), bool).reshape(shape)
    return img, mask, maxval


def _numpy_views(a):
    """The same logical array in other memory layouts (each must give the same result)."""
    big = np.zeros(tuple(2 * s for s in a.shape), a.dtype)
    big[tuple(slice(None, None, 2) for _ in a.shape)] = a
    rev = np.ascontiguousarray(np.flip(a))
    return {"fortran": np.asfortranarray(a),
            "transposed": np.ascontiguousarray(a.T).T,  # a C array seen through .T
            "strided": big[tuple(slice(None, None, 2) for _ in a.shape)],
            "negative": np.flip(rev)}


def _torch_views(a):
    t = torch.from_numpy(np.ascontiguousarray(a.T)).permute(*reversed(range(a.ndim)))
    big = torch.zeros(tuple(2 * s for s in a.shape), dtype=t.dtype)
    big[tuple(slice(None, None, 2) for _ in a.shape)] = torch.from_numpy(np.ascontiguousarray(a))
    return {"torch_permuted": t, "torch_strided": big[tuple(slice(None, None, 2) for _ in a.shape)]}


def _layouts(a):
    views = _numpy_views(a)
    views.update(_torch_views(a))
    for name, v in views.items():  # the same logical array
        assert np.array_equal(v.numpy() if isinstance(v, torch.Tensor) else v, a), name
    return views


@settings(max_examples=60)
@given(case=cases(), preset=st.sampled_from(["custom", "vlfeat", "mmser"]), delta=st.integers(0, 3),
       alg=st.sampled_from(["flood", "union_find", "tiled"]))
def test_layouts_and_degenerate_shapes_vs_reference(case, preset, delta, alg):
    """Every layout of image and mask gives the brute-force regions and tree of the contiguous array."""
    img, mask, maxval = case
    nd = img.ndim
    conn = 8 if nd == 2 else 26
    cfg = M.PRESETS[preset]
    kw = dict(delta=delta, min_area=1, max_area=img.size, max_variation=math.inf, connectivity=conn)
    ref = R.mser(img, delta=delta, min_area=1, max_area=img.size, max_variation=math.inf,
                 min_diversity=cfg["min_diversity"], polarity=cfg["polarity"], connectivity=conn,
                 side=cfg["variation"], normalize=cfg["normalize"], rule=cfg["rule"], maxval=maxval, mask=mask)
    want = ref_set(ref)
    tree = R.component_tree(img, conn, True, maxval, mask)
    ivs = _layouts(img)
    mvs = _layouts(mask) if mask is not None else {k: None for k in ivs}
    for name in ivs:
        tiled = dict(algorithm="tiled", tile=2) if alg == "tiled" else {}
        got = M.mser(ivs[name], preset, mask=mvs[name], **tiled, **kw)
        assert region_set(got) == want, name
        t = M.component_tree(ivs[name], connectivity=conn, mask=mvs[name], delta=delta, algorithm=alg,
                             **({"tile": 2} if alg == "tiled" else {}))
        for f in TREE_FIELDS:
            assert np.array_equal(getattr(t, f).numpy().reshape(-1), tree[f]), (name, f)


@settings(max_examples=40)
@given(data=st.data(), h=st.integers(3, 9), w=st.integers(3, 9), delta=st.sampled_from([0, 1, 5, 255]),
       pass2=st.booleans())
def test_opencv_preset_edge_images_vs_cv2(data, h, w, delta, pass2):
    """8-bit extremes, one bright pixel (also on the excluded border ring), plateaus, in any layout."""
    img = _values(data.draw, (h, w), 255).astype(np.uint8)
    _, _, want = opencv_regions(_cv2(), img, delta, 1, h * w, 1e9, pass2)
    for name, v in _layouts(img).items():
        res = M.mser(v, "opencv", delta=delta, min_area=1, max_area=h * w, max_variation=1e9,
                     polarity="bright" if pass2 else "both")
        assert sorted(tuple(x) for _, _, x in region_set(res, polarity=False)) == want, name


@settings(max_examples=20)
@given(data=st.data(), preset=st.sampled_from(["custom", "vlfeat", "mmser"]), delta=st.sampled_from([1, 300, 65535]))
def test_polarity_duality_16bit(data, preset, delta):
    """Bright regions / max-tree of I are the dark regions / min-tree of 65535 - I (and int32 input
    holding the same values is the uint16 image)."""
    shape = (data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6)))
    img = _values(data.draw, shape, 65535).astype(np.uint16)
    img[0, 0] = 65535  # keeps the int32 copy in the 16-bit range (maxval 65535)
    inv = (65535 - img.astype(np.int64)).astype(np.uint16)
    kw = dict(delta=delta, min_area=1, max_area=img.size, max_variation=math.inf)
    b = M.mser(img, preset, polarity="bright", **kw)
    d = M.mser(inv, preset, polarity="dark", **kw)
    assert region_set(b, polarity=False) == region_set(d, polarity=False)
    assert np.array_equal(b.variation.numpy(), d.variation.numpy())
    assert np.array_equal(b.level.numpy(), 65535 - d.level.numpy())
    tb = M.component_tree(img, polarity="bright", delta=delta)
    td = M.component_tree(inv, polarity="dark", delta=delta)
    for f in ("pixel_node", "parent", "area", "stability"):
        assert torch.equal(getattr(tb, f), getattr(td, f)), f
    assert torch.equal(tb.level, 65535 - td.level)
    assert region_set(M.mser(img.astype(np.int32), preset, **kw)) == region_set(M.mser(img, preset, **kw))


@settings(max_examples=20)
@given(data=st.data(), axis=st.integers(0, 2), full=st.booleans(), preset=st.sampled_from(["custom", "mmser"]))
def test_volume_with_a_unit_axis_is_the_image(data, axis, full, preset):
    """A (1, H, W) / (H, 1, W) / (H, W, 1) volume has the regions of the (H, W) image: 6 ~ 4, 26 ~ 8."""
    h, w = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    img = _values(data.draw, (h, w), 255).astype(np.uint8)
    vol = np.expand_dims(img, axis)
    kw = dict(delta=1, min_area=1, max_area=img.size, max_variation=math.inf)
    got = M.mser(vol, preset, connectivity=26 if full else 6, **kw)
    assert region_set(got) == region_set(M.mser(img, preset, connectivity=8 if full else 4, **kw))
    t3 = M.component_tree(vol, connectivity=26 if full else 6, algorithm="tiled", tile=2)
    t2 = M.component_tree(img, connectivity=8 if full else 4)
    for f in TREE_FIELDS:
        assert np.array_equal(getattr(t3, f).numpy().reshape(-1), getattr(t2, f).numpy().reshape(-1)), f


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (2, 1), (1, 9), (9, 1), (2, 2), (3, 3), (2, 3, 1), (1, 1, 1),
                                   (2, 2, 2), (1, 3, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_constant_and_single_bright_pixel_analytic(shape, dtype):
    maxval = np.iinfo(dtype).max
    n = int(np.prod(shape))
    for c in (0, maxval):
        const = np.full(shape, c, dtype)
        for pol in ("bright", "dark"):
            for alg in ("flood", "union_find", "tiled"):
                t = M.component_tree(const, polarity=pol, algorithm=alg)
                assert t.parent.tolist() == [-1] and t.area.tolist() == [n] and t.level.tolist() == [c]
                assert (t.pixel_node.numpy() == 0).all()
        # the whole domain has no region below it: S = (n - 0)/n two-sided, n unnormalised descendant
        r = M.mser(const, None, min_area=1, max_area=n, max_variation=math.inf)
        assert r.area.tolist() == [n, n] and r.variation.tolist() == [1.0, 1.0]
        assert M.mser(const, "mmser", max_area=n).variation.tolist() == [float(n)]
    img = np.zeros(shape, dtype)
    p = n // 2
    img.reshape(-1)[p] = maxval
    t = M.component_tree(img, polarity="bright")
    if n == 1:
        assert t.area.tolist() == [1] and t.level.tolist() == [maxval]
        return
    assert t.area.tolist() == [1, n] and t.level.tolist() == [maxval, 0] and t.parent.tolist() == [1, -1]
    # MMSER (descendant, unnormalised): S(pixel) = 1 - 0 < S(root) = n - 1 when n >= 3
    r = M.mser(img, "mmser", max_area=n - 1)
    if n < 3:
        assert len(r) == 0
        return
    assert r.values.tolist() == [p] and r.level.tolist() == [maxval] and r.variation.tolist() == [1.0]
    coords = np.unravel_index(p, shape)
    assert r.bboxes.tolist() == [list(coords) + [1] * len(shape)]
    assert r.centroids.tolist() == [list(map(float, coords))] and not r.covariances.numpy().any()
    if len(shape) == 2:
        e = r.ellipses.numpy()[0]
        assert e[:4].tolist() == [coords[1], coords[0], 0.0, 0.0] and 0 <= e[4] < 180
        regs, boxes = r.to_opencv()
        assert regs[0].tolist() == [[coords[1], coords[0]]] and boxes.tolist() == [[coords[1], coords[0], 1, 1]]


def test_masks_empty_full_single_and_dtypes():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 4, (6, 7)).astype(np.uint8) * 60
    kw = dict(min_area=1, max_area=42, max_variation=math.inf, delta=1)
    empty = np.zeros(img.shape, bool)
    for preset in ("custom", "vlfeat", "mmser"):
        assert len(M.mser(img, preset, mask=empty, **kw)) == 0
        base = region_set(M.mser(img, preset, **kw))
        assert base == ref_set(R.mser(img, min_area=1, max_area=42, max_variation=math.inf, delta=1,
                                      min_diversity=M.PRESETS[preset]["min_diversity"],
                                      polarity=M.PRESETS[preset]["polarity"], connectivity=4 if preset == "custom"
                                      else 8, side=M.PRESETS[preset]["variation"],
                                      normalize=M.PRESETS[preset]["normalize"], rule=M.PRESETS[preset]["rule"]))
        # a full mask in any numeric dtype and layout is no mask
        for full in (np.ones(img.shape, bool), np.full(img.shape, 7, np.int64), np.full(img.shape, 0.5, np.float32),
                     np.asfortranarray(np.ones(img.shape, np.uint8)), torch.ones(img.shape[::-1], dtype=torch.bool).T):
            assert region_set(M.mser(img, preset, mask=full, **kw)) == base
    for alg in ("flood", "union_find", "tiled"):
        t = M.component_tree(img, mask=empty, algorithm=alg)
        assert len(t) == 0 and (t.pixel_node.numpy() == -1).all() and t.area.numel() == 0
        one = empty.copy()
        one[2, 3] = True
        t = M.component_tree(img, mask=one, algorithm=alg, polarity="dark")
        assert t.area.tolist() == [1] and t.level.tolist() == [int(img[2, 3])] and t.stability.tolist() == [1.0]
        assert int(t.pixel_node[2, 3]) == 0 and (t.pixel_node.numpy()[~one] == -1).all()
    # is_enhanced of an empty mask is empty
    assert not M.is_enhanced(empty, 5).any() and M.is_enhanced(empty, 5).shape == img.shape


def test_batches_of_one_and_zero_and_broadcast_masks():
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (3, 5, 6)).astype(np.uint8)
    kw = dict(min_area=1, max_area=30, max_variation=2.0, delta=2)
    for preset in ("opencv", "custom", "vlfeat", "mmser"):
        one = M.mser(imgs[:1], preset, batch=True, **kw)
        single = M.mser(imgs[0], preset, **kw)
        for f in ("values", "offsets", "level", "area", "variation", "polarity"):
            assert torch.equal(getattr(one, f), getattr(single, f)), (preset, f)
        assert one.batch_size == 1 and (one.image_index.numpy() == 0).all()
        with pytest.raises(ValueError, match="image"):
            M.mser(imgs[:0], preset, batch=True, **kw)
        # a (B, H, W) torch tensor seen through a permutation
        tp = torch.from_numpy(np.ascontiguousarray(imgs.transpose(2, 1, 0))).permute(2, 1, 0)
        assert region_set(M.mser(tp, preset, batch=True, **kw)) == region_set(M.mser(imgs, preset, batch=True, **kw))
    mask = rng.random((5, 6)) > 0.3
    a = M.mser(imgs, None, batch=True, mask=mask, **kw)
    b = M.mser(imgs, None, batch=True, mask=np.broadcast_to(mask, imgs.shape), **kw)
    assert region_set(a) == region_set(b)
    vols = rng.integers(0, 3, (2, 1, 4, 5)).astype(np.uint16) * 30000
    v = M.mser(vols, None, batch=True, connectivity=6, **kw)
    im = M.mser(vols[:, 0], None, batch=True, connectivity=4, **kw)
    assert region_set(v) == region_set(im)


def test_parameters_far_out_of_range():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 4, (5, 6)).astype(np.uint8) * 80
    n = img.size
    # delta beyond the grey range (also beyond a C int): the reference works in Python ints
    for preset in ("custom", "vlfeat", "mmser"):
        cfg = M.PRESETS[preset]
        for delta in (255, 256, 10**12):
            got = M.mser(img, preset, delta=delta, min_area=1, max_area=n, max_variation=math.inf, connectivity=4)
            want = R.mser(img, delta=delta, min_area=1, max_area=n, max_variation=math.inf, connectivity=4,
                          min_diversity=cfg["min_diversity"], polarity=cfg["polarity"], side=cfg["variation"],
                          normalize=cfg["normalize"], rule=cfg["rule"])
            assert region_set(got) == ref_set(want), (preset, delta)
    r = R.component_tree(img, 4, False, 255)
    t = M.component_tree(img, polarity="dark", delta=10**12)
    np.testing.assert_array_equal(t.stability.numpy(), R.stability(r, 10**12))
    big = rng.integers(0, 256, (9, 11)).astype(np.uint8)
    _, _, want = opencv_regions(_cv2(), big, 256, 1, 99, 5.0, False)
    assert want == opencv_regions(_cv2(), big, 1000, 1, 99, 5.0, False)[2]  # cv2 itself: no change past 256
    got = M.mser(big, "opencv", delta=10**12, min_area=1, max_area=99, max_variation=5.0)
    assert sorted(tuple(x) for _, _, x in region_set(got, polarity=False)) == want
    # areas beyond the pixel count, as ints beyond int64 and as floats
    ref = region_set(M.mser(img, None, min_area=1, max_area=n, max_variation=math.inf))
    for big_area in (2**70, 1e300, math.inf):
        assert region_set(M.mser(img, None, min_area=1, max_area=big_area, max_variation=math.inf)) == ref
        assert len(M.mser(img, None, min_area=big_area, max_variation=math.inf)) == 0
        assert len(M.mser(img, "vlfeat", min_area=big_area, max_variation=math.inf)) == 0
    assert region_set(M.mser(img, "vlfeat", max_area=2**70, delta=1)) == region_set(
        M.mser(img, "vlfeat", max_area=n, delta=1))
    # thread counts beyond anything useful give the single-thread result (libgomp used to crash)
    imgs = rng.integers(0, 256, (3, 8, 8)).astype(np.uint8)
    one = region_set(M.mser(imgs, None, batch=True, num_threads=1, min_area=1))
    for th in (10**5, 2**40, np.int64(10**6)):
        assert region_set(M.mser(imgs, None, batch=True, num_threads=th, min_area=1)) == one
        assert region_set(M.mser(imgs, None, batch=True, num_threads=th, min_area=1, algorithm="tiled",
                                 tile=3)) == one
    wide = rng.integers(0, 256, (40, 1000)).astype(np.uint8)  # above the tiled builder's threading threshold
    a = M.component_tree(wide, algorithm="tiled", tile=64, num_threads=2**40)
    b = M.component_tree(wide, algorithm="union_find")
    for f in TREE_FIELDS:
        assert torch.equal(getattr(a, f), getattr(b, f)), f


def test_more_pixels_than_int32_fails_fast():
    """A per-image size beyond the int32 node ids is refused before anything is copied (a broadcast
    view of 2^31+ pixels owns 1 byte)."""
    huge = np.broadcast_to(np.zeros(1, np.uint8), (46341, 46341))
    for call in (lambda: M.mser(huge, None), lambda: M.mser(huge[None], None, batch=True),
                 lambda: M.mser(huge, "opencv"), lambda: M.component_tree(huge),
                 lambda: M.component_tree(huge, algorithm="tiled"), lambda: T.tiled_parents(huge),
                 lambda: M.mser(np.broadcast_to(np.zeros(1, np.int32), (3, 1300, 1300, 1300)), None, batch=True),
                 lambda: T._prepare_cuda(torch.zeros(1, dtype=torch.uint8).expand(46341, 46341), batch=False)):
        with pytest.raises(ValueError, match="image: at most 2"):
            call()
    ok = np.broadcast_to(np.zeros(1, np.uint8), (3, 4))  # small zero-stride views are fine
    assert M.component_tree(ok).area.tolist() == [12]


def _exact_grey(px):
    return float(sum(Fraction(v) for v in px) / 3)


def _exact_sat(px, kind):
    r, g, b = (Fraction(v) for v in px)
    m = (r + g + b) / 3
    if kind == "paper_rgb":
        return float((2 * r - g - b) / 2 if b + r >= 2 * g else (r + g - 2 * b) / 2)
    mn, md, mx = sorted((r, g, b))
    return float(Fraction(3, 2) * (mx - m) if mx + mn >= 2 * md else Fraction(3, 2) * (m - mn))


finite = st.one_of(st.floats(-8e307, 8e307, allow_nan=False, allow_infinity=False),
                   st.sampled_from([0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 8e307, -8e307, 1.0]))


@settings(max_examples=60)
@given(px=st.lists(st.tuples(finite, finite, finite), min_size=1, max_size=4))
def test_grey_and_saturation_huge_and_tiny_values_exact(px):
    """Eq. 1 and Eq. 5 against exact rational arithmetic (intermediates such as r + g + b overflow
    float64 here, the results do not)."""
    rgb = np.array(px, np.float64).reshape(1, len(px), 3)
    scale = max(max(abs(v) for v in p) for p in px) or 1.0
    # error bounds of the float formulas: a few roundings of terms up to `scale` (cancellation
    # makes them absolute, not relative), plus one subnormal ulp per operation
    np.testing.assert_allclose(M.grey(rgb)[0], [_exact_grey(p) for p in px], rtol=0, atol=4e-16 * scale + 2e-323)
    for kind in ("paper_rgb", "l1_sorted"):
        got = M.saturation(rgb, kind)[0]
        want = np.array([_exact_sat(p, kind) for p in px])
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-15 * scale + 1e-322)
    # the same pixels in a flipped, transposed layout
    flipped = np.flip(rgb.transpose(1, 0, 2).copy(), axis=0)
    np.testing.assert_array_equal(M.grey(flipped)[::-1, 0], M.grey(rgb)[0])


def test_rgb_results_that_overflow_raise():
    with pytest.raises(ValueError, match="rgb"):
        M.saturation(np.array([[[1.7e308, -1.7e308, 0.0]]]), "l1_sorted")  # exact value 2.55e308
    with pytest.raises(ValueError, match="rgb"):
        M.grey(np.array([[[np.nan, 0.0, 0.0]]]))
    with pytest.raises(ValueError, match="rgb"):
        M.is_mask(np.array([[[np.inf, 0.0, 0.0]]]))
    np.testing.assert_allclose(M.grey(np.full((1, 1, 3), 1.7e308)), 1.7e308, rtol=1e-15)  # the sum overflows


@settings(max_examples=40)
@given(data=st.data(), conn=st.sampled_from([4, 6, 8, 26]), t_h=st.integers(0, 10))
def test_is_enhanced_volumes_and_layouts_vs_reference(data, conn, t_h):
    """3-D masks with every connectivity name (26 used to run as 6), and non-contiguous 2-D masks."""
    shape = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)))
    m = np.array(data.draw(st.lists(st.booleans(), min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))),
                 bool).reshape(shape)
    full = {4: 6, 6: 6, 8: 26, 26: 26}[conn]
    np.testing.assert_array_equal(M.is_enhanced(m, t_h, connectivity=conn), R.is_enhanced(m, t_h, full))
    m2 = m.reshape(shape[0] * shape[1], shape[2])
    c2 = 8 if conn in (8, 26) else 4
    want = R.is_enhanced(m2, t_h, c2)
    for name, v in _layouts(m2).items():
        np.testing.assert_array_equal(M.is_enhanced(v, t_h, connectivity=c2), want, err_msg=name)
    np.testing.assert_array_equal(M.is_enhanced(m2, math.inf), m2)


def test_specular_mask_single_highlight_and_constant_frame():
    # one white pixel on black: IS = {p} (S = 0 everywhere, I_max = 255), IS_en keeps it, and MMSER
    # selects it (S = 1 < S(root) = n - 1); a black frame: one component of n > t_h and A_max <= n
    rgb = np.zeros((6, 7, 3), np.uint8)
    rgb[2, 5] = 255
    for view in _layouts(rgb).values():
        sr, mrs, isen = M.specular_mask(view, a_max=10, t_h=20, return_parts=True)
        want = np.zeros((6, 7), bool)
        want[2, 5] = True
        for part in (sr, mrs, isen):
            np.testing.assert_array_equal(part, want)
    assert not M.specular_mask(np.zeros((6, 7, 3), np.uint8), a_max=0.5, t_h=20).any()
    # a_max beyond the pixel count (or inf): MMSER may take the whole (black) frame
    assert M.specular_mask(np.zeros((2, 2, 3), np.uint8), a_max=math.inf, t_h=0).all()
    assert M.specular_mask(np.zeros((2, 2, 3), np.uint8), a_max=10**30, t_h=0).all()


img8 = np.zeros((8, 8), np.uint8)
rgb8 = np.zeros((4, 4, 3), np.uint8)


@pytest.mark.parametrize("call,exc,match", [
    # parameters of mser()
    (lambda: M.mser(img8, None, delta=True), ValueError, "delta"),
    (lambda: M.mser(img8, None, delta=-5), ValueError, "delta"),
    (lambda: M.mser(img8, None, min_area=10, max_area=5), ValueError, "min_area"),
    (lambda: M.mser(img8, "vlfeat", min_area=0.5, max_area=0.25), ValueError, "min_area"),
    (lambda: M.mser(img8, None, max_variation=-0.5), ValueError, "max_variation"),
    (lambda: M.mser(img8, None, max_variation=-math.inf), ValueError, "max_variation"),
    (lambda: M.mser(img8, None, max_variation="x"), ValueError, "max_variation"),
    (lambda: M.mser(img8, None, min_area=math.nan), ValueError, "min_area"),
    (lambda: M.mser(img8, "vlfeat", max_area=math.nan), ValueError, "max_area"),
    (lambda: M.mser(img8, None, min_diversity=math.nan), ValueError, "min_diversity"),
    (lambda: M.mser(img8, ["opencv"]), ValueError, "preset"),
    (lambda: M.mser(img8, 3), ValueError, "preset"),
    (lambda: M.mser(img8, None, polarity="up"), ValueError, "polarity"),
    (lambda: M.mser(img8[None], None, connectivity=8), ValueError, "connectivity"),
    (lambda: M.mser(img8[None], None, connectivity=True), ValueError, "connectivity"),
    (lambda: M.mser(img8, None, num_threads=0), ValueError, "num_threads"),
    (lambda: M.mser(img8, None, num_threads=-2), ValueError, "num_threads"),
    (lambda: M.mser(img8, None, num_threads=True), ValueError, "num_threads"),
    (lambda: M.mser(img8, None, num_threads=1.5), ValueError, "num_threads"),
    (lambda: M.mser(img8, "opencv", delta=2, min_area=1, exclude_border=False), ValueError, "opencv"),
    (lambda: M.mser(np.zeros((2, 9), np.uint8), "opencv"), ValueError, "3 x 3"),
    (lambda: M.mser(np.zeros((9, 1), np.uint8), "opencv"), ValueError, "3 x 3"),
    # masks
    (lambda: M.mser(img8, None, mask=np.full((8, 8), "x")), TypeError, "mask"),
    (lambda: M.mser(img8, None, mask=np.ones((8, 8), complex)), TypeError, "mask"),
    (lambda: M.mser(img8, None, mask=np.full((8, 8), None)), TypeError, "mask"),
    (lambda: M.mser(img8, None, mask=np.full((8, 8), np.nan)), ValueError, "mask"),
    (lambda: M.mser(img8, None, mask=[[True] * 8] * 8), TypeError, "mask"),
    (lambda: M.mser(img8, None, mask=np.ones((8, 8, 1), bool)), ValueError, "mask"),
    (lambda: M.mser(img8, None, mask=np.ones((8, 8), bool).T[:7]), ValueError, "mask"),
    (lambda: M.mser(np.stack([img8] * 2), None, batch=True, mask=np.ones((3, 8, 8), bool)), ValueError, "mask"),
    (lambda: M.component_tree(img8, mask=np.ones((8, 7), bool)), ValueError, "mask"),
    (lambda: M.component_tree(img8, mask=np.full((8, 8), "1")), TypeError, "mask"),
    (lambda: T._cuda_mask(np.full((8, 8), "1"), 1, (8, 8), False, torch.device("cpu")), TypeError, "mask"),
    (lambda: T._cuda_mask(torch.ones(8, 8, dtype=torch.complex64), 1, (8, 8), False, torch.device("cpu")),
     TypeError, "mask"),
    (lambda: T._cuda_mask(torch.full((8, 8), float("nan")), 1, (8, 8), False, torch.device("cpu")), ValueError,
     "mask"),
    # images
    (lambda: M.mser(np.full((4, 4), np.nan), None), TypeError, "image"),
    (lambda: M.mser(np.full((4, 4), np.inf, np.float32), None), TypeError, "image"),
    (lambda: M.mser(np.ones((4, 4), np.float16), None), TypeError, "image"),
    (lambda: M.mser(torch.full((4, 4), float("nan")), None), TypeError, "image"),
    (lambda: M.mser(np.ones((4, 4), complex), None), TypeError, "image"),
    (lambda: M.mser(np.full((4, 4), "a"), None), TypeError, "image"),
    (lambda: M.mser(np.uint8(3), None), TypeError, "image"),
    (lambda: M.mser(np.full((4, 4), -1, np.int32), None), ValueError, "image"),
    (lambda: M.mser(np.full((4, 4), 65536, np.int64), None), ValueError, "image"),
    (lambda: M.mser(torch.full((4, 4), 70000, dtype=torch.int32), None), ValueError, "image"),
    (lambda: M.mser(np.zeros((0, 8, 8), np.uint8), None, batch=True), ValueError, "image"),
    (lambda: M.mser(np.zeros((3, 0), np.uint8), None), ValueError, "image"),
    (lambda: M.mser(img8, None, batch=True), ValueError, "image"),
    (lambda: M.mser(np.zeros((2, 2, 2, 2), np.uint8), None), ValueError, "image"),
    (lambda: M.component_tree(np.zeros(5, np.uint8)), ValueError, "image"),
    (lambda: M.component_tree(np.zeros((3, 3), np.float64)), TypeError, "image"),
    # component_tree parameters
    (lambda: M.component_tree(img8, polarity=None), ValueError, "polarity"),
    (lambda: M.component_tree(img8, connectivity=26), ValueError, "connectivity"),
    (lambda: M.component_tree(img8[None], connectivity=4), ValueError, "connectivity"),
    (lambda: M.component_tree(img8, delta=-1), ValueError, "delta"),
    (lambda: M.component_tree(img8, delta=2.0), ValueError, "delta"),
    (lambda: M.component_tree(img8, variation="one_sided"), ValueError, "variation"),
    (lambda: M.component_tree(img8, algorithm="union_find", num_threads=0), ValueError, "num_threads"),
    (lambda: T.tiled_parents(img8, num_threads=-1), ValueError, "num_threads"),
    # results
    (lambda: M.mser(img8, None).to_opencv(1), ValueError, "image"),
    (lambda: M.mser(img8[None], None).to_opencv(), ValueError, "to_opencv"),
    (lambda: M.mser(img8, None).union_mask("both"), ValueError, "polarity"),
    (lambda: M.mser(img8, None).subset([True]), ValueError, "keep"),
    # specular pieces
    (lambda: M.is_mask(rgb8, i_max=math.nan), ValueError, "i_max"),
    (lambda: M.is_mask(rgb8, s_max=math.inf), ValueError, "s_max"),
    (lambda: M.is_mask(rgb8, i_max="255"), TypeError, "i_max"),
    (lambda: M.is_mask(rgb8, kind="hsv"), ValueError, "kind"),
    (lambda: M.is_enhanced(np.ones((3, 3), bool), math.nan), ValueError, "t_h"),
    (lambda: M.is_enhanced(np.ones((3, 3), bool), -1), ValueError, "t_h"),
    (lambda: M.is_enhanced(np.ones((3, 3), bool), -0.5), ValueError, "t_h"),
    (lambda: M.is_enhanced(np.ones((3, 3), bool), "20"), TypeError, "t_h"),
    (lambda: M.is_enhanced(np.ones((3, 3), bool), None), TypeError, "t_h"),
    (lambda: M.is_enhanced(np.ones((3, 3), bool), 2, connectivity=6), ValueError, "connectivity"),
    (lambda: M.is_enhanced(np.ones((2, 3, 3), bool), 2, connectivity=5), ValueError, "connectivity"),
    (lambda: M.is_enhanced(np.ones(3, bool), 2), ValueError, "mask"),
    (lambda: M.is_enhanced(np.full((3, 3), "a"), 2), TypeError, "mask"),
    (lambda: M.specular_mask(rgb8, a_max=math.nan), ValueError, "a_max"),
    (lambda: M.specular_mask(rgb8, a_max=-1), ValueError, "a_max"),
    (lambda: M.specular_mask(rgb8, a_max="1%"), TypeError, "a_max"),
    (lambda: M.specular_mask(rgb8.astype(np.float32)), TypeError, "rgb"),
    (lambda: M.specular_mask(rgb8[None]), ValueError, "rgb"),
    (lambda: M.specular_mask(rgb8, delta=-1), ValueError, "delta"),
    (lambda: M.specular_mask(rgb8, connectivity=6), ValueError, "connectivity"),
    (lambda: M.grey(np.ones((4, 4, 3), bool)), TypeError, "rgb"),
    (lambda: M.grey(np.ones((4, 4, 4), np.uint8)), ValueError, "rgb"),
    (lambda: M.grey_u8(np.ones((4, 4, 3), np.uint16)), TypeError, "rgb"),
])
def test_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_accepted_input_kinds_are_the_integer_image():
    """Documented acceptances: bool images are 0/1 images; any integer dtype holding [0, 65535] is the
    smallest of uint8/uint16 holding it; zero-stride views; delta 0 (as OpenCV)."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 2, (6, 6)).astype(bool)
    kw = dict(min_area=1, max_area=36, max_variation=math.inf, delta=1)
    ref = region_set(M.mser(img.astype(np.uint8), None, **kw))
    assert region_set(M.mser(img, None, **kw)) == ref and region_set(M.mser(torch.from_numpy(img), None, **kw)) == ref
    for dt in (np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64):
        assert region_set(M.mser(img.astype(dt), None, **kw)) == ref, dt
    assert region_set(M.mser(np.broadcast_to(img[:1], (6, 6)), None, **kw)) == ref_set(
        R.mser(np.broadcast_to(img[:1], (6, 6)).astype(np.uint8), min_area=1, max_area=36, max_variation=math.inf,
               delta=1))
    assert len(M.mser(img.astype(np.uint8), None, delta=0, min_area=1, max_variation=math.inf)) == 0  # S = 0 ties
    # numpy integer scalars (e.g. sizes read from int64 arrays) are the Python ints
    i64 = np.int64
    kw64 = dict(min_area=i64(1), max_area=i64(36), max_variation=np.float64(math.inf), delta=i64(1))
    for alg in ({}, dict(algorithm="tiled", tile=i64(4))):
        assert region_set(M.mser(img, None, num_threads=i64(2), **kw64, **alg)) == ref
    t = M.component_tree(img, delta=i64(2), algorithm="tiled", tile=(i64(2), np.int32(3)), num_threads=np.uint8(2))
    u = M.component_tree(img, delta=2)
    assert all(torch.equal(getattr(t, f), getattr(u, f)) for f in TREE_FIELDS + ("stability",))
    m = img.astype(bool)
    np.testing.assert_array_equal(M.is_enhanced(m, i64(3)), R.is_enhanced(m, 3, 8))
    rgb = np.zeros((5, 5, 3), np.uint8)
    rgb[1, 1] = 250
    np.testing.assert_array_equal(M.specular_mask(rgb, a_max=i64(10), delta=i64(5), t_h=i64(2)),
                                  M.specular_mask(rgb, a_max=10, delta=5, t_h=2))
