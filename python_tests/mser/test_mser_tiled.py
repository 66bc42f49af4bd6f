"""Tiled component tree (csrc/mser/tiled_tree.h, CPU driver) against the serial union-find tree
(exact equality of every array: same nodes, same numbering), the brute-force NumPy tree, and MSER
regions built on it against the default flood."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg_ext import mser as M
from medseg_ext.mser import tiled as T
from medseg_ext.reference import mser as R
from mser_cases import blobs, region_set

FIELDS = ("pixel_node", "parent", "level", "area", "stability")


def assert_same_tree(a, b):
    for f in FIELDS:
        x, y = getattr(a, f).numpy(), getattr(b, f).numpy()
        assert x.dtype == y.dtype and x.shape == y.shape, f
        assert np.array_equal(x, y), f


def both(img, tile, **kw):
    ref = M.component_tree(img, algorithm="union_find", **kw)
    got = M.component_tree(img, algorithm="tiled", tile=tile, **kw)
    assert_same_tree(got, ref)
    return got


@st.composite
def cases_2d(draw):
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    sixteen = draw(st.booleans())
    hi = draw(st.sampled_from([1, 3, 12, 65535 if sixteen else 255]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    img = rng.integers(0, hi + 1, (h, w)).astype(np.uint16 if sixteen else np.uint8)
    tile = draw(st.one_of(st.integers(1, 9), st.tuples(st.integers(1, 9), st.integers(1, 13))))
    mask = (rng.random((h, w)) > 0.2) if draw(st.booleans()) else None
    return img, tile, mask


@settings(max_examples=150)
@given(cases_2d(), st.sampled_from(["bright", "dark"]), st.sampled_from([4, 8]))
def test_tiled_equals_union_find_2d(case, polarity, conn):
    img, tile, mask = case
    both(img, tile, polarity=polarity, connectivity=conn, mask=mask, delta=2)


@st.composite
def cases_3d(draw):
    d, h, w = draw(st.integers(1, 7)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    hi = draw(st.sampled_from([2, 9, 65535]))
    img = rng.integers(0, hi + 1, (d, h, w)).astype(np.uint16 if hi > 255 else np.uint8)
    tile = draw(st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5)))
    mask = (rng.random((d, h, w)) > 0.25) if draw(st.booleans()) else None
    return img, tile, mask


@settings(max_examples=80)
@given(cases_3d(), st.sampled_from(["bright", "dark"]), st.sampled_from([6, 26]))
def test_tiled_equals_union_find_3d(case, polarity, conn):
    img, tile, mask = case
    both(img, tile, polarity=polarity, connectivity=conn, mask=mask, delta=1)


def test_blobs_constant_lines_and_tile_extremes():
    rng = np.random.default_rng(3)
    img = blobs(rng, 57, 83, n=6)
    for tile in [1, 2, 5, (7, 11), 16, 64, 1000]:
        for pol in ("bright", "dark"):
            both(img, tile, polarity=pol, connectivity=8)
    for shape in [(1, 1), (1, 97), (97, 1), (3, 3)]:
        line = rng.integers(0, 4, shape).astype(np.uint8)
        for tile in [1, 3, 8]:
            both(line, tile, polarity="dark", connectivity=4)
    const = np.full((33, 47), 77, np.uint8)
    t = both(const, 8, polarity="bright")
    assert len(t) == 1 and int(t.area[0]) == const.size and int(t.parent[0]) == -1


def test_16bit_wide_range_and_brute_force_oracle():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 65536, (31, 29)).astype(np.uint16)
    for pol in ("bright", "dark"):
        both(img, (6, 10), polarity=pol, connectivity=4)
    small = rng.integers(0, 4, (9, 11)).astype(np.uint8)
    mask = rng.random((9, 11)) > 0.2
    for conn in (4, 8):
        ref = R.component_tree(small, conn, True, 255, mask=mask)
        got = M.component_tree(small, algorithm="tiled", tile=(2, 3), connectivity=conn, mask=mask)
        for f in ("pixel_node", "parent", "level", "area"):
            assert np.array_equal(getattr(got, f).numpy().reshape(-1), np.asarray(ref[f]).reshape(-1)), f


def test_parent_form_and_torch_node_form():
    """tiled_parents is the level-compressed union-find parent array; nodes_from_parents (the torch
    conversion the CUDA path uses) gives the compiled node form."""
    rng = np.random.default_rng(11)
    imgs = np.stack([blobs(rng, 23, 31, n=5) for _ in range(3)])
    imgs[1] = rng.integers(0, 5, (23, 31))
    mask = rng.random(imgs.shape) > 0.1
    for pol in ("bright", "dark"):
        par, area = T.tiled_parents(imgs, polarity=pol, connectivity=8, mask=mask, tile=(5, 7), batch=True)
        assert par.shape == imgs.shape and par.dtype == torch.int32
        for b in range(3):
            ref = M.component_tree(imgs[b], polarity=pol, connectivity=8, mask=mask[b], algorithm="union_find")
            pn, rpar, ar = ref.pixel_node.numpy().reshape(-1), ref.parent.numpy(), ref.area.numpy()
            n = pn.size
            # canonical pixel of a node: its largest own pixel index
            canon = np.full(len(rpar), -1)
            np.maximum.at(canon, pn[pn >= 0], np.arange(n)[pn >= 0])
            expect = np.where(pn >= 0, canon[np.maximum(pn, 0)], -1)
            is_c = (expect == np.arange(n)) & (pn >= 0)
            pc = rpar[pn[is_c]]
            expect[is_c] = np.where(pc < 0, np.arange(n)[is_c], canon[np.maximum(pc, 0)])
            assert np.array_equal(par[b].numpy().reshape(-1), expect)
            exp_area = np.zeros(n, np.int64)
            exp_area[canon] = ar
            assert np.array_equal(area[b].numpy().reshape(-1), exp_area)
            got = T.nodes_from_parents(par[b].reshape(-1), area[b].reshape(-1),
                                       torch.from_numpy(imgs[b].reshape(-1).astype(np.int64)), 255, pol == "bright")
            for name, x in zip(("pixel_node", "parent", "level", "area"), got[:4]):
                assert np.array_equal(x.numpy(), getattr(ref, name).numpy().reshape(-1)), name


def test_forest_of_a_batch_equals_the_trees_one_by_one():
    # forest_from_parents (the batched node form mser_cuda uses): image b's nodes are a contiguous id
    # range holding exactly nodes_from_parents of image b, ids and parents shifted by the range start
    rng = np.random.default_rng(13)
    for sixteen, maxval in ((False, 255), (True, 65535)):
        imgs = rng.integers(0, 7, (4, 19, 23)) * (maxval // 6)
        imgs = imgs.astype(np.uint16 if sixteen else np.uint8)
        mask = rng.random(imgs.shape) > 0.15
        mask[2] = False  # an image with no pixel inside: no nodes at all
        for pol in ("bright", "dark"):
            par, area = T.tiled_parents(imgs, polarity=pol, connectivity=4, mask=mask, tile=(6, 8), batch=True)
            vals = torch.from_numpy(imgs.astype(np.int64)).reshape(4, -1)
            pn, parent, level, ar, key, nimg = T.forest_from_parents(par.reshape(4, -1), area.reshape(4, -1), vals,
                                                                     maxval, pol == "bright")
            n = imgs[0].size
            start = 0
            for b in range(4):
                one = T.nodes_from_parents(par[b].reshape(-1), area[b].reshape(-1), vals[b], maxval, pol == "bright")
                m = one[1].numel()
                assert nimg[start:start + m].tolist() == [b] * m
                p1 = one[0].long()
                assert torch.equal(pn[b * n:(b + 1) * n].long(), torch.where(p1 >= 0, p1 + start, p1))
                assert torch.equal(parent[start:start + m].long(), torch.where(one[1] >= 0, one[1].long() + start, -1))
                for got, want in zip((level, ar, key), one[2:]):
                    assert torch.equal(got[start:start + m], want)
                start += m
            assert start == parent.numel()


def test_threads_and_tiles_do_not_change_the_tree():
    rng = np.random.default_rng(2)
    # above the 2^15-pixel threshold of the threaded path
    img = (blobs(rng, 190, 210, n=12).astype(np.uint16) * 200 + rng.integers(0, 200, (190, 210))).astype(np.uint16)
    ref = M.component_tree(img, algorithm="flood", polarity="dark")
    for tile, th in [((16, 16), 1), ((16, 16), 2), ((37, 9), 2), ((37, 9), 3), (64, None)]:
        assert_same_tree(M.component_tree(img, algorithm="tiled", tile=tile, num_threads=th, polarity="dark"), ref)


@pytest.mark.parametrize("preset,kw", [
    (None, dict(min_area=1, max_area=400, delta=3)),
    ("vlfeat", dict(delta=2)),
    ("mmser", dict(delta=3, max_area=0.2)),
    (None, dict(min_area=3, max_area=300, delta=2, exclude_border=True, variation="ancestor")),
])
def test_mser_regions_identical_on_the_tiled_tree(preset, kw):
    rng = np.random.default_rng(7)
    imgs = np.stack([blobs(rng, 41, 53, n=7) for _ in range(3)])
    mask = rng.random((41, 53)) > 0.05
    for mk in (None, mask):
        ref = M.mser(imgs, preset, batch=True, mask=mk, **kw)
        for tile, th in [((8, 8), None), ((5, 13), 1)]:
            got = M.mser(imgs, preset, batch=True, mask=mk, algorithm="tiled", tile=tile, num_threads=th, **kw)
            assert region_set(got) == region_set(ref)
            assert np.array_equal(got.variation.numpy(), ref.variation.numpy())
            assert np.array_equal(got.level.numpy(), ref.level.numpy())
    # one image, one polarity: the tree itself runs on the threads
    one = (blobs(rng, 90, 70, n=9).astype(np.int64) * 250 + rng.integers(0, 1000, (90, 70))).astype(np.uint16)
    kw1 = dict(polarity="bright", min_area=1, max_area=2000, delta=300, max_variation=1.0)
    ref = M.mser(one, None, **kw1)
    got = M.mser(one, None, algorithm="tiled", tile=16, **kw1)
    assert region_set(got) == region_set(ref) and len(ref) > 0


def test_mser_3d_volume_on_the_tiled_tree():
    rng = np.random.default_rng(8)
    vol = rng.integers(0, 4, (12, 14, 16)).astype(np.uint16) * 9000
    vol[3:8, 4:10, 5:12] += 20000
    for conn in (6, 26):
        kw = dict(connectivity=conn, delta=9000, min_area=2, max_area=800, max_variation=2.0, polarity="both")
        ref = M.mser(vol, None, **kw)
        got = M.mser(vol, None, algorithm="tiled", tile=(4, 5, 6), **kw)
        assert region_set(got) == region_set(ref) and len(ref) > 0


def test_bad_arguments_name_the_argument():
    img = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError, match="tile"):
        M.component_tree(img, algorithm="tiled", tile=0)
    with pytest.raises(ValueError, match="tile"):
        M.component_tree(img, algorithm="tiled", tile=(4, 4, 4))
    with pytest.raises(TypeError, match="tile"):
        M.component_tree(img, algorithm="tiled", tile="big")
    with pytest.raises(TypeError, match="tile"):
        M.component_tree(img, algorithm="tiled", tile=True)
    with pytest.raises(ValueError, match="tile"):
        M.component_tree(img, tile=4)
    with pytest.raises(ValueError, match="algorithm"):
        M.component_tree(img, algorithm="tiles")
    with pytest.raises(ValueError, match="num_threads"):
        M.component_tree(img, algorithm="tiled", num_threads=0)
    with pytest.raises(ValueError, match="algorithm"):
        M.mser(img, "opencv", algorithm="tiled")
    with pytest.raises(ValueError, match="algorithm"):
        M.mser(img, None, algorithm="union")
    with pytest.raises(ValueError, match="tile"):
        M.mser(img, None, tile=4)
    with pytest.raises(ValueError, match="image"):
        M.component_tree(np.full((4, 4), 300, np.int32).astype(np.int64) + 70000, algorithm="tiled")
    with pytest.raises(ValueError, match="polarity"):
        T.tiled_parents(img, polarity="both")


def test_cuda_glue_conversions_on_cpu_tensors():
    """The input preparation of the CUDA path is device-agnostic: run it on CPU tensors."""
    rng = np.random.default_rng(9)
    v16 = rng.integers(0, 65536, (2, 5, 6))
    for t, maxval, is16 in [(torch.from_numpy(v16.astype(np.uint16)), 65535, True),
                            (torch.from_numpy(v16.astype(np.int32)), 65535, True),
                            (torch.from_numpy((v16 % 256).astype(np.uint8)), 255, False),
                            (torch.from_numpy((v16 % 200).astype(np.int64)), 255, False)]:
        flat, spatial, mv, s16 = T._prepare_cuda(t, batch=True)
        assert (spatial, mv, s16) == ((5, 6), maxval, is16) and flat.shape == (2, 30)
        assert np.array_equal(T._values(flat, s16).numpy(), t.numpy().reshape(2, -1).astype(np.int64))
    with pytest.raises(ValueError, match="image"):
        T._prepare_cuda(torch.full((3, 3), 70000), batch=False)
    with pytest.raises(TypeError, match="image"):
        T._prepare_cuda(torch.zeros((3, 3)), batch=False)
    m = T._cuda_mask(np.ones((5, 6), bool), 2, (5, 6), True, torch.device("cpu"))
    assert m.shape == (2, 30) and m.dtype == torch.uint8 and bool((m == 1).all())
    with pytest.raises(ValueError, match="mask"):
        T._cuda_mask(np.ones((4, 6), bool), 2, (5, 6), True, torch.device("cpu"))
    assert T.tile_sizes(None, 2, cuda=True) == T.DEFAULT_TILE_CUDA[2]
    assert T.tile_sizes(7, 3, cuda=False) == (7, 7, 7)
