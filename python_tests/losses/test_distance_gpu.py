"""CUDA kernels of the distance group vs the CPU kernels (run only where a GPU and the CUDA build exist)."""
import numpy as np
import pytest
import torch

from medseg_ext import _dispatch
from medseg_ext.losses import distance as D

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and _dispatch.cuda_kernels_usable()),
                                reason="needs a GPU and medseg_ext built with its CUDA kernels")


@pytest.mark.parametrize("shape, spacing", [((2, 3, 17, 19, 23), (1.0, 0.5, 2.0)), ((3, 2, 31, 1), (1.5, 1.0)),
                                            ((4, 1, 1, 1, 40), (1.0, 1.0, 0.7)), ((1, 1, 64, 64, 64), None)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(shape, spacing, dtype):
    rng = np.random.default_rng(0)
    m = torch.from_numpy(rng.random(shape) < 0.8)
    m[0, 0] = True  # a full volume: +inf
    nsp = len(shape) - 2
    for mode in ("plain", "inverted", "field", "signed"):
        cpu = D._edt_volumes(m, nsp, spacing or (1.0,) * nsp, dtype, mode=mode)
        gpu = D._edt_volumes(m.cuda(), nsp, spacing or (1.0,) * nsp, dtype, mode=mode).cpu()
        torch.testing.assert_close(gpu, cpu, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(D.surface_edges(m.cuda()).cpu(), D.surface_edges(m))


def test_cuda_metrics_and_losses_match_cpu():
    rng = np.random.default_rng(1)
    p = torch.from_numpy(rng.random((2, 3, 20, 21, 22)) < 0.5).float()
    g = torch.from_numpy(rng.random((2, 3, 20, 21, 22)) < 0.5).float()
    torch.testing.assert_close(D.hd95(p.cuda(), g.cuda()).cpu(), D.hd95(p, g), equal_nan=True)
    torch.testing.assert_close(D.average_surface_distance(p.cuda(), g.cuda(), symmetric=True).cpu(),
                               D.average_surface_distance(p, g, symmetric=True), equal_nan=True)
    x = torch.randn(2, 3, 20, 21, 22)
    torch.testing.assert_close(D.hausdorff_dt_loss(x.cuda(), g.cuda(), softmax=True).cpu(),
                               D.hausdorff_dt_loss(x, g, softmax=True), rtol=1e-5, atol=1e-6)
