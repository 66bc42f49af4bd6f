"""The GPU path of vietoris_rips_batch on a real CUDA device against the CPU path (bit for bit) and
NumPy. Skipped without a CUDA device; run on the lent GPU machine:
``CI=true python -m pytest -q python_tests/topology/test_topo_gpu.py``.

What only a device can tell (the interpreter runs NumPy): that the compiled float64 distance kernel
does no multiply-add contraction and a correctly rounded sqrt (so the matrices equal rips.cpp's
bit for bit), and that Prim's kernel gives the CPU's H0 at the paper's size (185 points) and on
large clouds (BLOCK up to 4096 points, more warps)."""
import math

import numpy as np
import pytest
import torch

import medseg_ext
from helpers import HAVE_CUDA, HAVE_TRITON
from topo_cases import assert_bitwise, numpy_distances

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not (HAVE_CUDA and HAVE_TRITON), reason="needs a CUDA device "
                                                                                          "and triton")]


def sliding_clouds(count, seed, n=185):
    series = np.random.default_rng(seed).standard_normal((count, n + 2))
    return np.stack([series[:, j: j + n] for j in range(3)], axis=-1)


@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "chebyshev"])
def test_device_distances_equal_numpy_bitwise(metric):
    from medseg_ext.triton import topology_batch as tb

    rng = np.random.default_rng(1)
    clouds = [rng.standard_normal((n, d)) * s for n, d, s in ((185, 3, 1.0), (1, 3, 1.0), (300, 3, 1e3), (97, 3, 1e-4))]
    flat = torch.from_numpy(np.concatenate([c.reshape(-1) for c in clouds])).cuda()
    sizes = torch.tensor([len(c) for c in clouds], dtype=torch.int64, device="cuda")
    D = tb.pairwise_distances(flat, sizes, 3, 300, metric).cpu().numpy()
    start = 0
    for c in clouds:
        n = len(c)
        np.testing.assert_array_equal(D[start:start + n * n].reshape(n, n), numpy_distances(c, metric))
        start += n * n


@pytest.mark.parametrize("maxdim", [0, 1, 2])
def test_paper_clouds_equal_cpu_path(maxdim):
    X = sliding_clouds(64, seed=maxdim)
    got = medseg_ext.vietoris_rips_batch(torch.from_numpy(X).cuda(), maxdim=maxdim)
    assert_bitwise(got, medseg_ext.vietoris_rips_batch(X, maxdim=maxdim))
    got = medseg_ext.vietoris_rips_batch(X, maxdim=maxdim, device="cuda")  # host input, device asked for
    assert_bitwise(got, medseg_ext.vietoris_rips_batch(X, maxdim=maxdim))


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "chebyshev"])
@pytest.mark.parametrize("threshold", [math.inf, 0.9])
def test_ragged_ties_threshold_metric_precision(precision, metric, threshold):
    rng = np.random.default_rng(3)
    clouds = [rng.integers(0, 3, size=(n, 3)).astype(np.float64) for n in (0, 1, 2, 40, 77)]  # ties, duplicates
    clouds += [rng.standard_normal((n, 3)) for n in (50, 130)]
    kw = dict(maxdim=2, metric=metric, threshold=threshold, precision=precision)
    got = medseg_ext.vietoris_rips_batch([torch.from_numpy(c).cuda() for c in clouds], **kw)
    assert_bitwise(got, medseg_ext.vietoris_rips_batch(clouds, **kw))


def test_distance_matrices_and_chunks():
    X = sliding_clouds(20, seed=9, n=60)
    D = np.stack([numpy_distances(x, "euclidean") for x in X])
    want = medseg_ext.vietoris_rips_batch(D, maxdim=2, distance_matrix=True)
    assert_bitwise(medseg_ext.vietoris_rips_batch(torch.from_numpy(D).cuda(), maxdim=2, distance_matrix=True), want)
    assert_bitwise(medseg_ext.vietoris_rips_batch(torch.from_numpy(X).cuda(), maxdim=2, chunk_size=3),
                   medseg_ext.vietoris_rips_batch(X, maxdim=2))


@pytest.mark.parametrize("n", [700, 3000])
def test_large_cloud_h0(n):
    # Prim's kernel with BLOCK 1024 / 4096 (more warps) against the CPU's Kruskal pass
    X = np.random.default_rng(n).standard_normal((2, n, 3))
    for threshold in (math.inf, 0.05):
        got = medseg_ext.vietoris_rips_batch(torch.from_numpy(X).cuda(), maxdim=0, threshold=threshold)
        assert_bitwise(got, medseg_ext.vietoris_rips_batch(X, maxdim=0, threshold=threshold))


def test_many_clouds_equal_cpu_path():
    X = sliding_clouds(2000, seed=11)
    got = medseg_ext.vietoris_rips_batch(torch.from_numpy(X).cuda(), maxdim=1)
    assert_bitwise(got, medseg_ext.vietoris_rips_batch(X, maxdim=1))


@pytest.mark.parametrize("n", [300, 512, 600])
def test_triangle_pass_block_sizes_and_fallback(n):
    # the device's triangle pass at BLOCK 512 (the largest it takes) and the host's above 512 points
    X = np.random.default_rng(n).standard_normal((2, n, 3))
    for threshold in (math.inf, 0.6):
        got = medseg_ext.vietoris_rips_batch(torch.from_numpy(X).cuda(), maxdim=2, threshold=threshold)
        assert_bitwise(got, medseg_ext.vietoris_rips_batch(X, maxdim=2, threshold=threshold))


def test_triangle_columns_overflow_relaunch(monkeypatch):
    # a regular grid (nearly every triangle ties), first-launch slots cut to C(n, 3) / 32: relaunch
    from medseg_ext.triton import topology_batch as tb

    g = np.stack(np.meshgrid(*[np.arange(4.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    X = np.stack([g, g * 2.0, np.random.default_rng(0).standard_normal((64, 3))])
    want = medseg_ext.vietoris_rips_batch(X, maxdim=2)
    monkeypatch.setattr(tb, "TRIANGLE_SLOTS_BASE", 0)
    assert_bitwise(medseg_ext.vietoris_rips_batch(torch.from_numpy(X).cuda(), maxdim=2), want)
