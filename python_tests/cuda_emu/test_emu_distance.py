"""The CUDA exact distance transform and surface kernels (csrc/losses/edt_cuda.cu) and their Python
driver, run by the CUDA emulator on CPU tensors, against the CPU kernels and scipy."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from medseg_ext import _dispatch
from medseg_ext.losses import distance as distance_module
from medseg_ext.losses import (distance_transform_edt, hausdorff_distance, hd95, signed_distance,
                               surface_edges)


def _both(emu, fn, *args, **kw):
    cpu = fn(*args, **kw)
    with _dispatch.emulate_cuda(emu):
        emulated = fn(*args, **kw)
    return cpu, emulated


shapes = st.sampled_from([(1,), (17,), (6, 1), (1, 9), (7, 11), (13, 4), (3, 5, 6), (1, 4, 9), (5, 1, 3),
                          (2, 3, 7, 5), (2, 2, 4, 6, 3)])


@settings(max_examples=25)
@given(shape=shapes, density=st.sampled_from([0.0, 0.05, 0.5, 0.95, 1.0]), squared=st.booleans(),
       double=st.booleans(), anisotropic=st.booleans(), seed=st.integers(0, 2**16))
def test_edt_matches_cpu(emu, shape, density, squared, double, anisotropic, seed):
    rng = np.random.default_rng(seed)
    mask = torch.from_numpy(rng.random(shape) < density)
    nsp = min(len(shape), 3)
    spacing = tuple(rng.uniform(0.3, 2.5, nsp)) if anisotropic else None
    dtype = torch.float64 if double else torch.float32
    cpu, emulated = _both(emu, distance_transform_edt, mask, spacing, squared=squared, spatial_dims=nsp,
                          dtype=dtype)
    assert emulated.dtype == dtype and emulated.shape == mask.shape
    torch.testing.assert_close(emulated, cpu, rtol=1e-12 if double else 1e-6, atol=0.0)


@settings(max_examples=15)
@given(shape=shapes, density=st.sampled_from([0.0, 0.3, 1.0]), offset=st.sampled_from([0.0, 1.0, 0.5]),
       seed=st.integers(0, 2**16))
def test_signed_distance_matches_cpu(emu, shape, density, offset, seed):
    rng = np.random.default_rng(seed)
    mask = torch.from_numpy(rng.random(shape) < density)
    nsp = min(len(shape), 3)
    cpu, emulated = _both(emu, signed_distance, mask, None, inside_offset=offset, spatial_dims=nsp,
                          dtype=torch.float64)
    torch.testing.assert_close(emulated, cpu, rtol=1e-12, atol=0.0)


def test_edt_single_site_and_scipy(emu):
    # one background voxel in a 3-D volume: the distance is the anisotropic norm to it; and random masks vs scipy
    mask = torch.ones(2, 9, 8, 7, dtype=torch.bool)
    mask[0, 4, 3, 2] = False
    mask[1] = torch.from_numpy(np.random.default_rng(1).random((9, 8, 7)) < 0.8)
    sp = (1.5, 0.5, 2.0)
    with _dispatch.emulate_cuda(emu):
        assert distance_module._backend(mask) == "cuda" and _dispatch.extension() is emu
        d = distance_transform_edt(mask, sp, spatial_dims=3, dtype=torch.float64)
    zz, yy, xx = np.meshgrid(np.arange(9), np.arange(8), np.arange(7), indexing="ij")
    want0 = np.sqrt(((zz - 4) * sp[0]) ** 2 + ((yy - 3) * sp[1]) ** 2 + ((xx - 2) * sp[2]) ** 2)
    np.testing.assert_allclose(d[0].numpy(), want0, rtol=1e-12)
    np.testing.assert_allclose(d[1].numpy(), ndimage.distance_transform_edt(mask[1].numpy(), sampling=sp),
                               rtol=1e-12)


@settings(max_examples=15)
@given(shape=shapes, density=st.sampled_from([0.0, 0.3, 0.8, 1.0]), seed=st.integers(0, 2**16))
def test_surface_edges_match_cpu(emu, shape, density, seed):
    mask = torch.from_numpy(np.random.default_rng(seed).random(shape) < density)
    cpu, emulated = _both(emu, surface_edges, mask, spatial_dims=min(len(shape), 3))
    assert emulated.dtype == torch.bool
    assert torch.equal(emulated, cpu)


def test_hausdorff_metrics_match_cpu(emu):
    rng = np.random.default_rng(7)
    pred = torch.from_numpy(rng.random((2, 3, 12, 10, 9)) < 0.3)
    target = torch.from_numpy(rng.random((2, 3, 12, 10, 9)) < 0.3)
    target[1, 2] = False  # an empty target: inf / NaN conventions must survive the CUDA path
    for fn, kw in ((hausdorff_distance, {}), (hd95, {}), (hausdorff_distance, {"directed": True})):
        cpu, emulated = _both(emu, fn, pred, target, spacing=(1.0, 0.7, 1.3), include_background=True, **kw)
        torch.testing.assert_close(emulated, cpu, rtol=1e-6, atol=0.0, equal_nan=True)


def test_noncontiguous_mask(emu):
    mask = torch.from_numpy(np.random.default_rng(2).random((10, 14)) < 0.6).t()  # a transposed view
    cpu, emulated = _both(emu, distance_transform_edt, mask, spatial_dims=2, dtype=torch.float64)
    torch.testing.assert_close(emulated, cpu, rtol=1e-12, atol=0.0)
    with pytest.raises(ValueError):
        with _dispatch.emulate_cuda(emu):
            distance_transform_edt(mask, (1.0, -2.0), spatial_dims=2)
