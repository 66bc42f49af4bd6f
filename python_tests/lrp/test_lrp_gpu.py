"""LRP on a CUDA device equals LRP on the CPU (skipped without a GPU; run by benchmarks/gpu/session.sh).

The CPU path is checked against Captum, Zennit and grad×input elsewhere; here the oracle is the CPU
result in float64, so every rule's GPU code path (cuDNN convolutions, the torch fallbacks of the fused
CPU stages, the fast signed rules and their exact recomputation) is held to it."""
import pytest
import torch
from torch import nn

from medseg_ext import lrp

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

PRESETS = ["epsilon", "epsilon_plus", "epsilon_alpha2_beta1", "epsilon_gamma_box"]


def _unet_like(dims=2):
    Conv = nn.Conv2d if dims == 2 else nn.Conv3d
    Up = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
    Norm = nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d
    Pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(Conv(1, 6, 3, padding=1), Norm(6, affine=True), nn.LeakyReLU(0.1))
            self.down = nn.Sequential(Pool(2), Conv(6, 8, 3, padding=1), nn.ReLU())
            self.up = Up(8, 6, 2, stride=2)
            self.head = Conv(12, 2, 1)

        def forward(self, x):
            e = self.enc(x)
            u = self.up(self.down(e))
            return self.head(torch.cat([e, u + e], 1))  # a bare residual '+' and a skip concatenation

    torch.manual_seed(3)
    return Net().eval()


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("dims", [2, 3])
def test_gpu_equals_cpu(preset, dims):
    net = _unet_like(dims)
    shape = (2, 1) + ((16, 20) if dims == 2 else (8, 10, 12))
    x = torch.rand(shape)
    results = {}
    for device, dtype in (("cpu", torch.float64), ("cuda", torch.float32), ("cuda", torch.float64)):
        m = _unet_like(dims).to(device=device, dtype=dtype)
        m.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in net.state_dict().items()})
        eng = lrp.LRP(m, lrp.PRESETS[preset]())
        z = eng.forward(x.to(device=device, dtype=dtype))
        seed = torch.sigmoid(z) * (z > 0)
        seed = torch.stack([seed, seed * (torch.arange(z.shape[-1], device=device) % 2)])  # K = 2 regions
        results[(device, dtype)] = eng.relevance(seed).double().cpu()
    ref = results[("cpu", torch.float64)]
    torch.testing.assert_close(results[("cuda", torch.float64)], ref, rtol=1e-9, atol=1e-12)
    scale = ref.abs().max().item()
    torch.testing.assert_close(results[("cuda", torch.float32)], ref, rtol=1e-3, atol=1e-4 * scale)


def test_gpu_explain_components_and_all_classes():
    net = _unet_like(2)
    x = torch.rand(1, 1, 16, 20)
    cpu = lrp.explain(net.double(), x.double(), composite=lrp.EpsilonComposite(), all_classes=True)
    gpu = lrp.explain(net.double().cuda(), x.double().cuda(), composite=lrp.EpsilonComposite(), all_classes=True)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-9, atol=1e-12)
