"""CAM on a CUDA device equals CAM on the CPU, every method and both target kinds (skipped without a
GPU; run by benchmarks/gpu/session.sh). The CPU path is checked against pytorch-grad-cam, TorchCAM
and NumPy references elsewhere; here the oracle is the CPU result of the same float64 model."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from cam_nets import TinySeg, make  # noqa: E402

from medseg_ext import cam  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

def _inputs(shape, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("method", cam.METHODS)
@pytest.mark.parametrize("dims", [2, 3])
def test_classification_gpu_equals_cpu(method, dims):
    if method == "smoothgradcam":
        pytest.skip("noise is drawn on the tensor's device: CPU and CUDA generators differ")
    model = make(dtype=torch.float64, dims=dims)
    x = _inputs((2, 3) + ((16, 16) if dims == 2 else (8, 8, 8)))
    ref = cam.compute_cam(model, x, "act", method, target=[1, 3]).maps
    out = cam.compute_cam(model.cuda(), x.cuda(), "act", method, target=[1, 3]).maps
    assert out.device.type == "cuda" and out.dtype == x.dtype
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("method", ["gradcam", "svdgradcam", "layercam", "eigencam"])
def test_segmentation_target_gpu_equals_cpu(method):
    torch.manual_seed(0)
    model = TinySeg().double().eval()
    x = _inputs((2, 1, 12, 14))
    mask = (torch.rand(2, 12, 14, generator=torch.Generator().manual_seed(2)) > 0.5)
    tgt = cam.SegmentationTarget(1, mask)
    ref = cam.compute_cam(model, x, "mid", method, target=tgt).maps
    tgt_gpu = cam.SegmentationTarget(1, mask.cuda())
    out = cam.compute_cam(model.cuda(), x.cuda(), "mid", method, target=tgt_gpu).maps
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-7, atol=1e-9)


def test_metrics_gpu_equal_cpu():
    model = make(dtype=torch.float64)
    x = _inputs((4, 3, 16, 16))
    ref = cam.per_image_metrics(model, x, "act", "svdgradcam")
    out = cam.per_image_metrics(model.cuda(), x.cuda(), "act", "svdgradcam")
    for k in ref:
        torch.testing.assert_close(torch.as_tensor(out[k]).cpu(), torch.as_tensor(ref[k]), rtol=1e-7, atol=1e-9)
