"""Bad input gets a ValueError/TypeError naming the argument."""
import numpy as np
import pytest
import torch

from medseg_ext import mser as M

img = np.zeros((8, 8), np.uint8)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(preset="nope"), ValueError, "preset"),
    (dict(preset=None, polarity="up"), ValueError, "polarity"),
    (dict(preset=None, connectivity=6), ValueError, "connectivity"),
    (dict(preset=None, variation="both"), ValueError, "variation"),
    (dict(preset=None, delta=-1), ValueError, "delta"),
    (dict(preset=None, delta=1.5), ValueError, "delta"),
    (dict(preset=None, min_area=-3), ValueError, "min_area"),
    (dict(preset=None, max_area="big"), TypeError, "max_area"),
    (dict(preset=None, max_variation=float("nan")), ValueError, "max_variation"),
    (dict(preset=None, min_diversity=2.0), ValueError, "min_diversity"),
    (dict(preset="opencv", connectivity=8), ValueError, "opencv"),
    (dict(preset="opencv", mask=np.ones((8, 8), bool)), ValueError, "opencv"),
    (dict(preset=None, mask=np.ones((7, 8), bool)), ValueError, "mask"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        M.mser(img, **kwargs)


def test_bad_images():
    with pytest.raises(TypeError, match="image"):
        M.mser(np.zeros((4, 4), np.float32), None)
    with pytest.raises(TypeError, match="image"):
        M.mser([[1, 2], [3, 4]], None)
    with pytest.raises(ValueError, match="image"):
        M.mser(np.zeros((4,), np.uint8), None)
    with pytest.raises(ValueError, match="image"):
        M.mser(np.zeros((0, 4), np.uint8), None)
    with pytest.raises(ValueError, match="image"):
        M.mser(np.array([[-1, 3]], np.int32), None)
    with pytest.raises(ValueError, match="image"):
        M.mser(np.zeros((2, 3, 4), np.uint16), "opencv")
    with pytest.raises(ValueError, match="polarity"):
        M.component_tree(img, polarity="both")
    with pytest.raises(ValueError, match="rgb"):
        M.grey(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="kind"):
        M.saturation(np.zeros((2, 2, 3), np.uint8), "hsv")


def test_accepts_torch_noncontiguous_and_int_dtypes():
    a = np.random.default_rng(0).integers(0, 256, (20, 30)).astype(np.uint8)
    ref = M.mser(np.ascontiguousarray(a[:, ::2]), None, min_area=2)
    t = torch.from_numpy(a)[:, ::2]
    got = M.mser(t, None, min_area=2)
    assert torch.equal(got.values, ref.values)
    got32 = M.mser(a[:, ::2].astype(np.int32), None, min_area=2)
    assert torch.equal(got32.values, ref.values)
    b = M.mser(np.zeros((4, 4), bool), None, min_area=1, max_variation=1.0)
    assert len(b) == 2  # the constant image's whole domain (the region below has vanished: S = 1)
