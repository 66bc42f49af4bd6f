"""preset='vlfeat' against the real VLFeat C library (libvl, via medseg_ext.bench._vlfeat_mser).

Compared per image: the set of regions as (polarity, pixel set), and for each region its level,
area, float32 variation (read from VLFeat's extremal-region records) and, where asked, the
moments of vl_mser_ell_fit. Skipped when libvl is not installed (apt-get install libvlfeat1).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg_ext import mser as M
from medseg_ext.bench import _vlfeat_mser as V
from mser_cases import blobs, concentric

needs_vl = pytest.mark.skipif(not V.available(), reason=f"real VLFeat peer unavailable: {V.unavailable_reason()}")


def _ours(img, **kw):
    res = M.mser(img, "vlfeat", **kw)
    v, o, p = res.values.numpy(), res.offsets.numpy(), res.polarity.numpy()
    regs = {}
    for i in range(len(res)):
        regs[(int(p[i]), tuple(np.sort(v[o[i]:o[i + 1]]).tolist()))] = i
    assert len(regs) == len(res)
    return res, regs


def _theirs(img, ell=False, **kw):
    out = V.vl_mser(img, ell=ell, **kw)
    cache = {}
    regs = {}
    for j, (s, p) in enumerate(zip(out["seeds"], out["polarity"])):
        regs[(int(p), tuple(V.region_pixels(img, int(s), int(p), cache).tolist()))] = j
    assert len(regs) == len(out["seeds"])
    return out, regs


def check(img, ell=False, **kw):
    """Same regions, levels, areas and float32 variations (and moments with ell=True); returns the count."""
    res, ours = _ours(img, **kw)
    vl, theirs = _theirs(img, ell=ell, **kw)
    assert sorted(ours) == sorted(theirs), (img.shape, kw, len(ours), len(theirs))
    if not ours:
        return 0
    i = np.array([ours[k] for k in theirs])
    j = np.array(list(theirs.values()))
    np.testing.assert_array_equal(res.level.numpy()[i], vl["level"][j])
    np.testing.assert_array_equal(res.area.numpy()[i], vl["area"][j])
    np.testing.assert_array_equal(res.variation.numpy()[i].astype(np.float32), vl["variation"][j])
    if ell:
        # VLFeat accumulates the moments in float32: its rounding bounds the tolerance
        scale = float(max(img.shape)) ** 2
        np.testing.assert_allclose(res.centroids.numpy()[i], vl["mean"][j], rtol=0, atol=1e-5 * max(img.shape))
        np.testing.assert_allclose(res.covariances.numpy()[i], vl["cov"][j], rtol=0, atol=2e-6 * scale)
    return len(ours)


@st.composite
def images(draw, three_d=False):
    if three_d:
        shape = tuple(draw(st.integers(1, 6)) for _ in range(3))
    else:
        shape = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    n = int(np.prod(shape))
    hi = draw(st.sampled_from([1, 3, 12, 255]))
    vals = draw(st.lists(st.integers(0, hi), min_size=n, max_size=n))
    return np.array(vals, np.uint8).reshape(shape)


PARAMS = dict(delta=st.integers(0, 6), min_area=st.sampled_from([None, 0.0, 0.02, 0.1]),
              max_area=st.sampled_from([0.2, 0.5, 0.7, 0.75, 1.0]), max_variation=st.sampled_from([0.1, 0.25, 1.0, 5.0]),
              min_diversity=st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]), polarity=st.sampled_from(["both", "bright", "dark"]))


@needs_vl
@settings(max_examples=60, deadline=None)
@given(img=images(), **PARAMS)
def test_vlfeat_parity_2d(img, delta, min_area, max_area, max_variation, min_diversity, polarity):
    check(img, ell=True, delta=delta, min_area=min_area, max_area=max_area, max_variation=max_variation,
          min_diversity=min_diversity, polarity=polarity)


@needs_vl
@settings(max_examples=30, deadline=None)
@given(img=images(three_d=True), **PARAMS)
def test_vlfeat_parity_3d(img, delta, min_area, max_area, max_variation, min_diversity, polarity):
    check(img, ell=True, delta=delta, min_area=min_area, max_area=max_area, max_variation=max_variation,
          min_diversity=min_diversity, polarity=polarity)


def _smooth(rng, shape, passes):
    """Box-smoothed uniform noise stretched to 0..255 (many nested regions, few plateaus)."""
    x = rng.random(shape)
    for _ in range(passes):
        for ax in range(len(shape)):
            x = (np.roll(x, 1, ax) + x + np.roll(x, -1, ax)) / 3
    return ((x - x.min()) / (np.ptp(x) + 1e-12) * 255).astype(np.uint8)


SETTINGS = [dict(), dict(delta=2, max_variation=1.0, min_diversity=0.1), dict(delta=8, max_area=0.3, min_area=0.005),
            dict(delta=3, max_variation=0.5, min_diversity=0.5, max_area=0.9), dict(delta=1, min_diversity=0.0)]


@needs_vl
@pytest.mark.parametrize("kind", ["random", "smooth", "blobs", "levels"])
def test_vlfeat_parity_larger_2d(kind):
    rng = np.random.default_rng({"random": 0, "smooth": 1, "blobs": 2, "levels": 3}[kind])
    total = 0
    for trial in range(3):
        h, w = (int(x) for x in rng.integers(24, 72, 2))
        if kind == "random":
            img = rng.integers(0, 256, (h, w)).astype(np.uint8)
        elif kind == "smooth":
            img = _smooth(rng, (h, w), 4)
        elif kind == "blobs":
            img = blobs(rng, h, w, n=6, levels=tuple(range(0, 256, 15)))
        else:
            img = (rng.integers(0, 6, (h, w)) * 40).astype(np.uint8)
        for kw in SETTINGS:
            total += check(img, ell=trial == 0, **kw)
    assert total > 0


@needs_vl
def test_vlfeat_parity_volumes():
    rng = np.random.default_rng(5)
    total = 0
    for shape in [(12, 14, 16), (20, 9, 11), (7, 24, 24)]:
        vol = _smooth(rng, shape, 2)
        for kw in SETTINGS[:3]:
            total += check(vol, ell=True, **kw)
    assert total > 0


@needs_vl
def test_vlfeat_constant_and_tiny_images():
    cases = [np.full((5, 7), 9, np.uint8), np.zeros((1, 1), np.uint8), np.full((3, 3, 3), 255, np.uint8),
             np.arange(10, dtype=np.uint8).reshape(1, 10), np.array([[0, 255], [255, 0]], np.uint8),
             np.arange(6, dtype=np.uint8).reshape(6, 1) * 50, np.zeros((1, 1, 1), np.uint8)]
    for img in cases:
        for kw in (dict(), dict(delta=0, min_area=0.0, max_area=1.0, max_variation=10.0, min_diversity=0.0)):
            check(img, **kw)
    # a constant image has one extremal region, the root, which VLFeat never selects
    assert len(M.mser(np.full((5, 7), 9, np.uint8), "vlfeat", max_area=1.0, min_area=0.0, max_variation=1e9)) == 0


@needs_vl
def test_vlfeat_root_and_duplicates():
    # dark tree: keys 0, 1, 2, 10 with areas 1, 9, 25, 49. n2 (25 px) is selected; the root never
    # is, even when max_area allows it (VLFeat compares a root with itself and the tie is lost).
    img = concentric()
    for pol in ("dark", "bright"):
        src = img if pol == "dark" else 255 - img
        assert M.mser(src, "vlfeat", polarity=pol, delta=1, max_area=1.0).area.tolist() == [25]
        check(src, delta=1, max_area=1.0, polarity=pol)
    # duplicates: n2 against the root (not selected): (49 - 25) / 49 = 0.49 < 0.6 drops n2
    assert len(M.mser(img, "vlfeat", polarity="dark", delta=1, min_diversity=0.6)) == 0
    check(img, delta=1, min_diversity=0.6, polarity="dark")
    # min_diversity >= 1 turns the duplicate test off in VLFeat (it runs only for min_diversity < 1)
    assert M.mser(img, "vlfeat", polarity="dark", delta=1, min_diversity=1.0).area.tolist() == [25]
    check(img, delta=1, min_diversity=1.0, polarity="dark")


@needs_vl
def test_vlfeat_duplicate_test_skips_filtered_ancestors():
    # a dark square of 9 px (level 0) inside a 25 px square (level 40) inside a 49 px frame
    # (level 80) in a 121 px image at 200, delta 1: every node has variation 0 and no parent one
    # level up, so all but the root are maximally stable. With max_area = 0.3 (36 px) the 49 px
    # node is dropped as too big; the 25 px node then counts as a duplicate of ... the root:
    # VLFeat walks past ancestors dropped by the filters. With min_diversity 0.5, 9 px vs 25 px
    # (0.64) survives; 25 px vs root 121 (0.79) survives.
    img = np.full((11, 11), 200, np.uint8)
    img[2:9, 2:9] = 80
    img[3:8, 3:8] = 40
    img[4:7, 4:7] = 0
    for md in (0.5, 0.7, 0.8):
        check(img, delta=1, max_area=0.3, min_diversity=md, polarity="dark")
    # 0.7: 9 vs 25 is 0.64 < 0.7, a duplicate; 25 vs the root (121 px; 49 px was filtered) 0.79 stays.
    # Comparing with the filtered 49 px node instead would give 0.49 and drop the 25 px node.
    assert M.mser(img, "vlfeat", polarity="dark", delta=1, max_area=0.3, min_diversity=0.7).area.tolist() == [25]


@needs_vl
def test_vlfeat_float32_area_bounds():
    # VLFeat's default min_area is 3/npixels, compared in float32: for 21 px float32(3/21)·21 > 3, so
    # a 3-pixel region is too small; for 37 px it is kept. Integer min_area counts pixels exactly.
    for shape, kept in (((3, 7), False), ((1, 37), True)):
        img = np.full(shape, 200, np.uint8)
        img.ravel()[:3] = 0
        assert (len(M.mser(img, "vlfeat", polarity="dark")) == 1) == kept
        check(img, polarity="dark")
        assert len(M.mser(img, "vlfeat", polarity="dark", min_area=3)) == 1
    # max_area 7/23 of 23 px is 6.9999995 in float32: a 7-pixel region is too big;
    # min_area 0.6 of 25 px is 15.000001: a 15-pixel region is too small
    for shape, npx, kw in (((1, 23), 7, dict(max_area=7 / 23)), ((5, 5), 15, dict(min_area=0.6, max_area=1.0))):
        img = np.full(shape, 200, np.uint8)
        img.ravel()[:npx] = 0
        assert len(M.mser(img, "vlfeat", polarity="dark", **kw)) == 0
        exact = {k: npx if isinstance(v, float) and v < 1 else v for k, v in kw.items()}
        assert M.mser(img, "vlfeat", polarity="dark", **exact).area.tolist() == [npx]
        check(img, polarity="dark", **kw)


@needs_vl
def test_vlfeat_polarity_mapping():
    # bright regions = the dark pass on 255 - I (VLFeat's MATLAB driver reports them with negative seeds)
    rng = np.random.default_rng(8)
    img = _smooth(rng, (30, 34), 3)
    vl = V.vl_mser(img, delta=3, max_variation=1.0)
    inv = V.vl_mser(255 - img, delta=3, max_variation=1.0, polarity="dark")
    bright = vl["polarity"] > 0
    assert bright.any() and (~bright).any()
    np.testing.assert_array_equal(np.sort(vl["seeds"][bright]), np.sort(inv["seeds"]))
    ml = V.seeds_to_matlab(vl)
    assert (ml[bright] < 0).all() and (ml[~bright] > 0).all()
    ours = M.mser(img, "vlfeat", delta=3, max_variation=1.0, polarity="bright")
    dual = M.mser(255 - img, "vlfeat", delta=3, max_variation=1.0, polarity="dark")
    assert sorted(map(tuple, np.split(ours.values.numpy(), ours.offsets.numpy()[1:-1]))) == \
        sorted(map(tuple, np.split(dual.values.numpy(), dual.offsets.numpy()[1:-1])))
    check(img, delta=3, max_variation=1.0)


def test_peer_unavailable_message(monkeypatch):
    # runs without libvl too: a missing library is reported, not raised at import
    monkeypatch.setattr(V, "_state", {})
    monkeypatch.setattr(V, "_candidates", lambda: [])
    assert not V.available()
    assert "libvlfeat1" in V.unavailable_reason()
    with pytest.raises(V.VLFeatUnavailable, match="not available"):
        V.vl_mser(np.zeros((3, 3), np.uint8))


@needs_vl
def test_peer_input_checks():
    with pytest.raises(TypeError, match="image"):
        V.vl_mser(np.zeros((3, 3), np.uint16))
    with pytest.raises(ValueError, match="delta"):
        V.vl_mser(np.zeros((3, 3), np.uint8), delta=300)
    with pytest.raises(ValueError, match="polarity"):
        V.vl_mser(np.zeros((3, 3), np.uint8), polarity="up")


@needs_vl
def test_benchmark_region_check():
    # the benchmark's cheap identity check agrees with the full pixel-set comparison
    from medseg_ext.bench.mser import same_regions, volume_u8
    rng = np.random.default_rng(12)
    for img in (_smooth(rng, (40, 50), 3), volume_u8(12)):
        res = M.mser(img, "vlfeat", max_variation=1.0)
        vl = V.vl_mser(img, max_variation=1.0)
        assert len(res) > 0 and check(img, max_variation=1.0) == len(res)
        assert same_regions(res, vl)
        assert not same_regions(res.subset(np.arange(1, len(res))), vl)
        vl["level"] = vl["level"] + 1  # a wrong level is caught
        assert not same_regions(res, vl)
