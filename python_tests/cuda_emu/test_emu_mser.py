"""The CUDA tiled component tree (csrc/mser/tiled_tree_cuda.cu) and its Python driver, run by the CUDA
emulator on CPU tensors, against the CPU tiled builder and the flood tree (the oracles)."""
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg_ext import _dispatch
from medseg_ext.mser import component_tree
from medseg_ext.mser import mser as mser_fn
from medseg_ext.mser import tiled as tiled_module
from medseg_ext.mser.tiled import tiled_parents


def _image(rng, shape, sixteen, levels):
    hi = 65536 if sixteen else 256
    img = rng.integers(0, min(levels, hi), shape)
    if sixteen:
        img = img * (65535 // max(levels - 1, 1))  # spread over the 16-bit range, high bit included
        return torch.from_numpy(img.astype(np.int32)).to(torch.uint16)
    return torch.from_numpy(img.astype(np.uint8))


CASES_2D = [((37, 45), None), ((64, 64), None), ((1, 70), None), ((70, 1), None), ((5, 3), None),
            ((50, 41), (16, 8)), ((33, 65), (32, 32)), ((20, 20), (7, 5))]
CASES_3D = [((9, 20, 17), None), ((4, 5, 6), None), ((12, 10, 9), (4, 8, 8)), ((1, 16, 40), (2, 8, 8))]


@settings(max_examples=20)
@given(case=st.sampled_from(CASES_2D + CASES_3D), sixteen=st.booleans(), levels=st.sampled_from([2, 5, 256]),
       polarity=st.sampled_from(["bright", "dark"]), full=st.booleans(), use_mask=st.booleans(),
       seed=st.integers(0, 2**16))
def test_tiled_parents_match_cpu(emu, case, sixteen, levels, polarity, full, use_mask, seed):
    shape, tile = case
    rng = np.random.default_rng(seed)
    img = _image(rng, shape, sixteen, levels)
    conn = (8 if full else 4) if len(shape) == 2 else (26 if full else 6)
    mask = torch.from_numpy(rng.random(shape) < 0.8) if use_mask else None
    cpu = tiled_parents(img, polarity=polarity, connectivity=conn, mask=mask, tile=tile)
    with _dispatch.emulate_cuda(emu):
        assert tiled_module.on_cuda(img)
        emulated = tiled_parents(img, polarity=polarity, connectivity=conn, mask=mask, tile=tile)
    assert torch.equal(emulated[0], cpu[0]), "parents differ"
    assert torch.equal(emulated[1], cpu[1]), "areas differ"


def test_tiled_parents_batch(emu):
    rng = np.random.default_rng(4)
    imgs = torch.from_numpy(rng.integers(0, 9, (3, 40, 52)).astype(np.uint8))
    masks = torch.from_numpy(rng.random((3, 40, 52)) < 0.9)
    cpu = tiled_parents(imgs, batch=True, mask=masks, connectivity=8)
    with _dispatch.emulate_cuda(emu):
        emulated = tiled_parents(imgs, batch=True, mask=masks, connectivity=8)
    assert torch.equal(emulated[0], cpu[0]) and torch.equal(emulated[1], cpu[1])


@pytest.mark.parametrize("shape,conn", [((45, 38), 4), ((45, 38), 8), ((7, 19, 23), 6), ((7, 19, 23), 26)])
@pytest.mark.parametrize("polarity", ["bright", "dark"])
def test_component_tree_cuda_equals_flood(emu, shape, conn, polarity):
    rng = np.random.default_rng(11)
    img = torch.from_numpy(rng.integers(0, 12, shape).astype(np.uint8))
    want = component_tree(img, polarity=polarity, connectivity=conn)
    with _dispatch.emulate_cuda(emu):
        got = component_tree(img, polarity=polarity, connectivity=conn, algorithm="tiled")
    for name in ("pixel_node", "parent", "level", "area"):
        assert torch.equal(getattr(got, name).long(), getattr(want, name).long()), name
    torch.testing.assert_close(got.stability.double(), want.stability.double())


def test_constant_and_extreme_images(emu):
    for img in (torch.zeros(30, 40, dtype=torch.uint8), torch.full((30, 40), 65535, dtype=torch.int32).to(torch.uint16),
                torch.tensor([[0, 65535], [65535, 0]], dtype=torch.int32).to(torch.uint16)):
        cpu = tiled_parents(img)
        with _dispatch.emulate_cuda(emu):
            emulated = tiled_parents(img)
        assert torch.equal(emulated[0], cpu[0]) and torch.equal(emulated[1], cpu[1])


def test_tile_too_large_for_shared_memory(emu):
    with _dispatch.emulate_cuda(emu), pytest.raises(ValueError, match="tile"):
        tiled_parents(torch.zeros(200, 200, dtype=torch.uint8), tile=(100, 100))


def _no_host_selection():
    """The host path of mser() (core.extension().mser_detect_cpu) must not run on the device path."""
    def refuse():
        raise AssertionError("mser() took the host path")
    return mock.patch("medseg_ext.mser.core.extension", refuse)


def _assert_same_regions(got, want):
    for name in ("values", "offsets", "image_index", "level", "area", "polarity"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype, name
        assert torch.equal(a, b), name
    torch.testing.assert_close(got.variation, want.variation, rtol=0, atol=0)
    assert got.shape == want.shape and got.batch_size == want.batch_size
    for name in ("bboxes", "centroids", "covariances"):  # geometry of the device-built result
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=0, atol=0)
    assert torch.equal(got.label_image(), want.label_image())


@settings(max_examples=12)
@given(preset=st.sampled_from(["mmser", None, "vlfeat"]), shape=st.sampled_from([(21, 30), (5, 7, 9), (1, 25)]),
       sixteen=st.booleans(), polarity=st.sampled_from(["both", "bright", "dark"]),
       delta=st.sampled_from([0, 2, 5]), variation=st.sampled_from(["two_sided", "ancestor", "descendant"]),
       exclude_border=st.booleans(), use_mask=st.booleans(), seed=st.integers(0, 2**16))
def test_mser_on_device_equals_cpu(emu, preset, shape, sixteen, polarity, delta, variation, exclude_border,
                                   use_mask, seed):
    rng = np.random.default_rng(seed)
    img = _image(rng, (2,) + shape, sixteen, 12)
    mask = torch.from_numpy(rng.random(shape) < 0.85) if use_mask else None
    kw = dict(batch=True, polarity=polarity, delta=delta, variation=variation, exclude_border=exclude_border,
              mask=mask, min_area=2, max_area=0.5)
    want = mser_fn(img, preset, **kw)
    with _dispatch.emulate_cuda(emu), _no_host_selection():
        got = mser_fn(img, preset, **kw)
    _assert_same_regions(got, want)


@pytest.mark.parametrize("preset,variation", [(None, "two_sided"), ("mmser", "descendant"), (None, "ancestor"),
                                              ("vlfeat", "ancestor")])
def test_mser_on_device_single_image_and_tiles(emu, preset, variation):
    rng = np.random.default_rng(9)
    img = torch.from_numpy(rng.integers(0, 30, (50, 60)).astype(np.uint8))
    want = mser_fn(img, preset, min_area=3, variation=variation)
    with _dispatch.emulate_cuda(emu), _no_host_selection():
        got = mser_fn(img, preset, min_area=3, variation=variation, algorithm="tiled", tile=(16, 16))
    _assert_same_regions(got, want)
    assert len(want) >= 3  # nested regions of both polarities: the layout of children inside parents is exercised


@pytest.mark.parametrize("sixteen,shape,min_diversity", [(True, (40, 50), 0.2), (True, (6, 12, 14), 0.05),
                                                         (False, (60, 70), 0.2), (False, (30, 30), 0.0)])
def test_vlfeat_diversity_kernel_equals_torch_rounds(emu, sixteen, shape, min_diversity):
    # deep candidate forests (16-bit: hundreds of levels) walked by the one-block kernel
    # (csrc/mser/vlfeat_select_cuda.cu) against the per-level torch rounds on the CPU
    rng = np.random.default_rng(5)
    img = _image(rng, shape, sixteen, 4096 if sixteen else 256)
    maxval = 65535 if sixteen else 255
    t = component_tree(img, polarity="dark")
    key = t.level.to(torch.int64)
    num = tiled_module.node_stability(t.parent, key, t.area, 5, "ancestor", normalize=False)
    args = (t.parent, key, t.area, num, True, 1, maxval * 10**6, 1e300, min_diversity)
    want_keep, want_var = tiled_module.select_vlfeat(*args)
    with _dispatch.emulate_cuda(emu):
        got_keep, got_var = tiled_module.select_vlfeat(*args)
    assert int(want_keep.sum()) >= 3
    assert torch.equal(got_keep, want_keep) and torch.equal(got_var, want_var)


def test_uint8_masks_pass_through_as_nonzero(emu):
    # uint8 masks reach the kernel without a copy: any nonzero byte is inside, as for other dtypes
    rng = np.random.default_rng(12)
    img = torch.from_numpy(rng.integers(0, 9, (2, 20, 24)).astype(np.uint8))
    inside = rng.random((2, 20, 24)) < 0.8
    want = tiled_parents(img, batch=True, mask=torch.from_numpy(inside))
    with _dispatch.emulate_cuda(emu):
        for m in (torch.from_numpy(inside.astype(np.uint8) * 7), torch.from_numpy(inside.astype(np.float32) * -2)):
            got = tiled_parents(img, batch=True, mask=m)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("chunk_images", [1, 2])
@pytest.mark.parametrize("preset", [None, "vlfeat"])
def test_mser_on_device_in_chunks_of_images(emu, chunk_images, preset):
    # mser_cuda walks the batch in chunks of images, each chunk one forest: the chunk size changes nothing
    rng = np.random.default_rng(17)
    img = _image(rng, (3, 18, 22), False, 40)
    mask = torch.from_numpy(rng.random((3, 18, 22)) < 0.9)
    kw = dict(batch=True, mask=mask, min_area=2, max_area=0.6, delta=2)
    want = mser_fn(img, preset, **kw)
    with _dispatch.emulate_cuda(emu), _no_host_selection(), \
            mock.patch.object(tiled_module, "CUDA_CHUNK_PIXELS", chunk_images * 18 * 22):
        got = mser_fn(img, preset, **kw)
    _assert_same_regions(got, want)
    assert len(set(want.image_index.tolist())) == 3 and set(want.polarity.tolist()) == {-1, 1}


@pytest.mark.parametrize("shape,conn", [((40, 50), 8), ((40, 50), 4), ((9, 14, 16), 26), ((9, 14, 16), 6),
                                        ((1, 60), 8)])
def test_is_enhanced_on_device_equals_cpu(emu, shape, conn):
    # IS_en (Eq. 7) of a CUDA mask: components from the tiled CUDA tree, areas filtered on the device
    from medseg_ext.mser import is_enhanced

    rng = np.random.default_rng(23)
    mask = rng.random(shape) < 0.45
    for t_h in (0, 1, 5, 40, 0.5, np.inf):
        want = is_enhanced(mask, t_h, conn)
        with _dispatch.emulate_cuda(emu):
            got = is_enhanced(torch.from_numpy(mask), t_h, conn)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.bool
        np.testing.assert_array_equal(got.numpy(), want)
    with _dispatch.emulate_cuda(emu):
        empty = is_enhanced(torch.zeros(shape, dtype=torch.uint8), 5, conn)
    assert empty.dtype == torch.bool and not empty.any()
