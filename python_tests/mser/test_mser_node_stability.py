"""mser.tiled.node_stability (torch ops, binary lifting; the stability of component_tree on CUDA
tensors) against the compiled sequential sweep (csrc/mser/mser.cpp), which the NumPy oracle tests."""
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg_ext._dispatch import extension
from medseg_ext.mser import component_tree
from medseg_ext.mser.tiled import node_stability


def _tree(img, polarity, conn, maxval):
    t = component_tree(img, polarity=polarity, connectivity=conn)
    level = t.level.long()
    key = (maxval - level if polarity == "bright" else level).to(torch.int32)
    return t.parent.to(torch.int32), key, t.area.to(torch.int32)


def _check(parent, key, area, delta, variation, normalize):
    want = extension().mser_node_stability_cpu(parent.numpy(), key.numpy(), area.numpy(), delta, variation,
                                               normalize)
    got = node_stability(parent, key, area, delta, variation, normalize)
    assert got.dtype == torch.float64 and got.shape == (parent.numel(),)
    np.testing.assert_array_equal(got.numpy(), want)


@settings(max_examples=40)
@given(shape=st.sampled_from([(1, 1), (1, 9), (7, 5), (23, 31), (4, 6, 5)]), levels=st.sampled_from([1, 2, 4, 30, 256]),
       sixteen=st.booleans(), polarity=st.sampled_from(["bright", "dark"]), full=st.booleans(),
       delta=st.sampled_from([0, 1, 2, 5, 40, 300, 70000]), variation=st.sampled_from(["two_sided", "ancestor", "descendant"]),
       normalize=st.booleans(), seed=st.integers(0, 2**16))
def test_matches_sequential_sweep(shape, levels, sixteen, polarity, full, delta, variation, normalize, seed):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, levels, shape)
    maxval = 65535 if sixteen else 255
    if sixteen:
        img = img * (65535 // max(levels - 1, 1))
    img = torch.from_numpy(img.astype(np.int32)).to(torch.uint16 if sixteen else torch.uint8)
    conn = (8 if full else 4) if len(shape) == 2 else (26 if full else 6)
    _check(*_tree(img, polarity, conn, maxval), delta, variation, normalize)


def test_ties_between_largest_children_take_the_lower_id():
    # a root (key 9) with two children of equal area: down() follows the lower id
    parent = torch.tensor([2, 3, 4, 4, -1], dtype=torch.int32)
    key = torch.tensor([0, 1, 5, 6, 9], dtype=torch.int32)
    area = torch.tensor([3, 3, 4, 4, 9], dtype=torch.int32)
    for delta in range(0, 11):
        for variation in ("two_sided", "ancestor", "descendant"):
            _check(parent, key, area, delta, variation, True)
            _check(parent, key, area, delta, variation, False)


def test_empty_tree():
    e = torch.zeros(0, dtype=torch.int32)
    assert node_stability(e, e, e, 5, "two_sided", True).shape == (0,)
