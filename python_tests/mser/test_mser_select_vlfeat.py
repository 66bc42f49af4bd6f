"""tiled.select_vlfeat (VLFeat's selection by torch ops, the GPU path of the vlfeat preset) on CPU trees,
against the C++ selection of mser(preset="vlfeat") (itself checked against libvl in test_mser_vlfeat.py)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg_ext import mser as M
from medseg_ext.mser import tiled as T


def _device_path(img, polarity, conn, delta, variation, normalize, min_area, max_area, max_variation, min_diversity,
                 maxval, mask=None):
    """The regions the GPU path computes, from the CPU flood tree and torch ops on the CPU."""
    t = M.component_tree(img, polarity=polarity, connectivity=conn, mask=mask)
    level = t.level.to(torch.int64)
    key = maxval - level if polarity == "bright" else level
    num = T.node_stability(t.parent, key, t.area, delta, variation, normalize=False)
    keep, var = T.select_vlfeat(t.parent, key, t.area, num, normalize, min_area, max_area, max_variation,
                                min_diversity)
    values, counts = T.region_pixels(t.pixel_node, t.parent, key, t.area, keep)
    return values, counts, t.level[keep], var[keep]


def _check(img, polarity, conn, maxval, mask=None, **kw):
    res = M.mser(img, "vlfeat", polarity=polarity, connectivity=conn, mask=mask, **kw)
    cfg = dict(M.PRESETS["vlfeat"], **{k: v for k, v in kw.items() if v is not None})
    n = img.size
    amin = M.core._vlfeat_area(3.0 / n if cfg["min_area"] is None else cfg["min_area"], n, "min_area")
    amax = M.core._vlfeat_area(cfg["max_area"], n, "max_area")
    mv = float(cfg["max_variation"])
    values, counts, level, var = _device_path(
        img, polarity, conn, M.core._kernel_delta(cfg["delta"], maxval), cfg["variation"], cfg["normalize"],
        min(amin, n + 1), min(amax, n), mv if np.isfinite(mv) else 1e300, cfg["min_diversity"], maxval, mask)
    assert torch.equal(counts, res.area), "region areas differ"
    assert torch.equal(values, res.values), "pixel lists differ"
    assert torch.equal(level.to(torch.int32), res.level.to(torch.int32))
    assert torch.equal(var, res.variation)  # VLFeat's float32 value, bit for bit
    return len(res)


@settings(max_examples=40, deadline=None)
@given(shape=st.sampled_from([(23, 31), (1, 50), (6, 9, 11), (40, 40)]), sixteen=st.booleans(),
       levels=st.sampled_from([3, 12, 256]), polarity=st.sampled_from(["bright", "dark"]), full=st.booleans(),
       delta=st.sampled_from([0, 1, 2, 5]),
       min_diversity=st.sampled_from([0.0, 0.05, 0.1, 0.2, 0.3, 0.6, 0.999, 1.0]),
       max_variation=st.sampled_from([0.25, 0.1, 0.3, 1.0, 7.0, np.inf]), normalize=st.booleans(),
       variation=st.sampled_from(["ancestor", "two_sided", "descendant"]), use_mask=st.booleans(),
       seed=st.integers(0, 2**16))
def test_select_vlfeat_equals_cpu(shape, sixteen, levels, polarity, full, delta, min_diversity, max_variation,
                                  normalize, variation, use_mask, seed):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, levels, shape)
    maxval = 65535 if sixteen else 255
    img = (img * (maxval // max(levels - 1, 1))).astype(np.uint16 if sixteen else np.uint8)
    conn = (8 if full else 4) if len(shape) == 2 else (26 if full else 6)
    mask = rng.random(shape) < 0.85 if use_mask else None
    _check(img, polarity, conn, maxval, mask, delta=delta, min_diversity=min_diversity,
           max_variation=max_variation, normalize=normalize, variation=variation, min_area=1)


def test_select_vlfeat_blobs_with_many_nested_regions():
    # smooth nested blobs give long chains of candidates: several levels of the diversity rounds
    yy, xx = np.mgrid[:64, :64]
    img = np.zeros((64, 64))
    for cy, cx, r in ((20, 20, 14), (44, 40, 18), (30, 50, 8)):
        img += np.clip(r - np.hypot(yy - cy, xx - cx), 0, None)
    img = (img / img.max() * 255).astype(np.uint8)
    counts = {(pol, md): _check(img, pol, 8, 255, min_diversity=md, delta=2, max_variation=np.inf)
              for pol in ("bright", "dark") for md in (0.0, 0.2, 0.5)}
    # nested bright regions: the diversity rule has something to drop
    assert counts[("bright", 0.0)] > counts[("bright", 0.5)] >= 1, counts


def test_select_vlfeat_empty_and_constant():
    img = np.full((5, 6), 7, np.uint8)
    for pol in ("bright", "dark"):
        assert _check(img, pol, 8, 255) == 0  # a lone root always loses
    t = M.component_tree(img)
    keep, var = T.select_vlfeat(t.parent[:0], t.level[:0], t.area[:0], torch.zeros(0, dtype=torch.float64), True,
                                1, 10, 1.0, 0.2)
    assert keep.shape == (0,) and var.shape == (0,)


@pytest.mark.parametrize("parent,mark,want", [
    ([-1, 0, 1, 2, 3], [0, 0, 0, 0, 0], [-1, -1, -1, -1, -1]),
    ([-1, 0, 1, 2, 3], [1, 0, 1, 0, 0], [-1, 0, 0, 2, 2]),
    ([2, 2, -1, 2, 3, 4], [0, 0, 0, 1, 0, 1], [-1, -1, -1, -1, 3, 3]),
])
def test_nearest_marked_ancestor(parent, mark, want):
    got = T._nearest_marked_ancestor(torch.tensor(parent), torch.tensor(mark, dtype=torch.bool), steps=3)
    assert got.tolist() == want
