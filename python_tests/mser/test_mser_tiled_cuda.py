"""CUDA driver of the tiled component tree against the CPU path (same canonical parent form, same
node arrays). Skipped without a GPU and CUDA kernels: written for a future GPU session; the CUDA
driver has so far only been compiled and run on the CPU emulator (python_tests/cuda_emu)."""
import zlib

import numpy as np
import pytest
import torch

from medseg_ext import _dispatch
from medseg_ext import mser as M
from medseg_ext.mser import tiled as T
from mser_cases import blobs

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and _dispatch.cuda_kernels_usable()
         and hasattr(_dispatch.extension(), "mser_tiled_parents_cuda")),
    reason="needs a GPU and medseg_ext built with MEDSEG_EXT_CUDA=on")

FIELDS = ("pixel_node", "parent", "level", "area", "stability")


def _images(rng, shape, kind, dtype):
    if kind == "blobs" and len(shape) == 2:
        img = blobs(rng, *shape, n=6).astype(np.int64)
        return (img * 257 if dtype == np.uint16 else img).astype(dtype)
    hi = {"few": 3, "full": np.iinfo(dtype).max}.get(kind, 3)
    return rng.integers(0, hi + 1, shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape,conn,tile", [((37, 53), 4, (8, 8)), ((37, 53), 8, (5, 13)), ((1, 97), 4, 32),
                                             ((64, 64), 8, None), ((7, 9, 11), 6, (3, 4, 5)),
                                             ((7, 9, 11), 26, None)])
@pytest.mark.parametrize("kind", ["blobs", "few", "full"])
def test_cuda_parents_equal_cpu(dtype, shape, conn, tile, kind):
    rng = np.random.default_rng(zlib.crc32(repr((np.dtype(dtype).name, shape, conn, kind)).encode()))
    imgs = np.stack([_images(rng, shape, kind, dtype) for _ in range(3)])
    mask = rng.random(imgs.shape) > 0.1
    for pol in ("bright", "dark"):
        for mk in (None, mask):
            cpu = T.tiled_parents(imgs, polarity=pol, connectivity=conn, mask=mk, tile=tile, batch=True)
            g = torch.from_numpy(imgs).cuda()  # uint8 / torch.uint16 on the device
            gm = None if mk is None else torch.from_numpy(mk).cuda()
            gpu = T.tiled_parents(g, polarity=pol, connectivity=conn, mask=gm, tile=tile, batch=True)
            assert gpu[0].is_cuda
            assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])


@pytest.mark.parametrize("pol", ["bright", "dark"])
def test_cuda_component_tree_equals_cpu(pol):
    rng = np.random.default_rng(1)
    img = blobs(rng, 120, 90, n=10)
    ref = M.component_tree(img, polarity=pol, connectivity=8, algorithm="union_find")
    got = M.component_tree(torch.from_numpy(img).cuda(), polarity=pol, connectivity=8, algorithm="tiled")
    for f in FIELDS:
        x = getattr(got, f)
        assert x.is_cuda, f
        assert np.array_equal(x.cpu().numpy(), getattr(ref, f).numpy()), f


def test_cuda_full_hd_batch_equals_cpu():
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (2, 1080, 1920)).astype(np.uint8)
    imgs[1] = np.kron(rng.integers(0, 8, (108, 192)), np.ones((10, 10), np.int64)).astype(np.uint8)
    cpu = T.tiled_parents(imgs, tile=64, batch=True, connectivity=4)
    gpu = T.tiled_parents(torch.from_numpy(imgs).cuda(), batch=True, connectivity=4)
    assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])


def test_cuda_int32_input_and_masked_batch():
    """int32 values above 2^15 travel as uint16 bit patterns; a (B, H, W) mask per image."""
    rng = np.random.default_rng(4)
    imgs = rng.integers(0, 65536, (2, 40, 50)).astype(np.int64)
    mask = rng.random(imgs.shape) > 0.3
    cpu = T.tiled_parents(imgs.astype(np.uint16), polarity="dark", connectivity=8, mask=mask, tile=16, batch=True)
    gpu = T.tiled_parents(torch.from_numpy(imgs.astype(np.int32)).cuda(), polarity="dark", connectivity=8,
                          mask=torch.from_numpy(mask).cuda(), tile=16, batch=True)
    assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])


def test_cuda_tile_limit():
    img = torch.zeros((100, 100), dtype=torch.uint8, device="cuda")
    with pytest.raises(ValueError, match="tile"):
        M.component_tree(img, algorithm="tiled", tile=(64, 64))


@pytest.mark.parametrize("preset", ["mmser", None, "vlfeat"])
@pytest.mark.parametrize("shape", [(3, 120, 160), (2, 12, 20, 24)])
def test_mser_on_gpu_equals_cpu(preset, shape):
    # every preset but opencv stays on the GPU (tiled.mser_cuda); regions come back identical to the CPU's
    rng = np.random.default_rng(21)
    img = torch.from_numpy(rng.integers(0, 40, shape).astype(np.uint8))
    want = M.mser(img, preset, batch=True, min_area=3)
    got = M.mser(img.cuda(), preset, batch=True, min_area=3)
    assert got.device.type == "cuda"
    for name in ("values", "offsets", "image_index", "level", "area", "polarity", "variation"):
        assert torch.equal(getattr(got, name).cpu(), getattr(want, name)), name
    # geometry by segmented reductions on the GPU == on the CPU (same sums, up to the summation order)
    two_d = len(shape) == 3
    for name in ("bboxes", "centroids", "covariances") + (("ellipses",) if two_d else ()):
        torch.testing.assert_close(getattr(got, name).cpu(), getattr(want, name), rtol=1e-12, atol=1e-9)
    assert torch.equal(got.label_image().cpu(), want.label_image())
    if two_d:  # the host-selecting presets move their regions back to the GPU
        assert M.mser(img[0].cuda(), "opencv").device.type == "cuda"


def test_component_tree_of_a_cuda_image_comes_back_on_the_gpu():
    img = torch.from_numpy(np.random.default_rng(2).integers(0, 20, (30, 40)).astype(np.uint8))
    want = M.component_tree(img)
    for algorithm in ("flood", "union_find", "tiled"):
        got = M.component_tree(img.cuda(), algorithm=algorithm)
        assert got.parent.device.type == "cuda" and got.pixel_node.device.type == "cuda", algorithm
        assert torch.equal(got.parent.cpu().long(), want.parent.long()), algorithm


def test_is_enhanced_on_gpu_equals_cpu():
    rng = np.random.default_rng(4)
    for shape, conn in (((240, 320), 8), ((20, 40, 48), 26)):
        mask = rng.random(shape) < 0.45
        got = M.is_enhanced(torch.from_numpy(mask).cuda(), 20, conn)
        assert got.device.type == "cuda"
        np.testing.assert_array_equal(got.cpu().numpy(), M.is_enhanced(mask, 20, conn))
