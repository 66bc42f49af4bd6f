"""Parity with the peers: Captum's ε-LRP (incl. its skip-connection fixture) and Zennit's composites."""
import numpy as np
import pytest
import torch
from torch import nn

from medseg_ext import lrp


class _View(nn.Module):
    def __init__(self, inner, head):
        super().__init__()
        self.inner, self.head = inner, head

    def forward(self, x):
        return self.head(self.inner(x).reshape(x.shape[0], -1))  # a bare reshape, not a module


def _captum_net():
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2))
    net = _View(inner, nn.Linear(16, 3)).double().eval()
    with torch.no_grad():
        net.inner[1].running_mean.uniform_(-0.1, 0.1)
        net.inner[1].running_var.uniform_(0.5, 1.5)
    return net


def test_captum_epsilon_parity():
    captum_lrp = pytest.importorskip("captum.attr")
    net = _captum_net()
    x = torch.rand(2, 2, 8, 8, dtype=torch.float64)
    target = 1
    ref = captum_lrp.LRP(net).attribute(x.clone(), target=target).detach()
    eng = lrp.LRP(net, lrp.EpsilonComposite(epsilon=1e-9, bn="epsilon"))
    z = eng.forward(x)
    seed = torch.zeros_like(z)
    seed[:, target] = z[:, target]
    R = eng.relevance(seed)
    np.testing.assert_allclose(R.numpy(), ref.numpy(), rtol=1e-6, atol=1e-9 * ref.abs().max().item())


def test_captum_skip_connection_fixture_with_addition_module():
    pytest.importorskip("captum.attr")
    from captum.attr import LRP as CaptumLRP
    from captum.attr._utils.custom_modules import Addition_Module

    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2, bias=False)
            nn.init.constant_(self.lin.weight, 5.0)
            self.add = Addition_Module()

        def forward(self, x):
            return self.add(self.lin(x), x)

    class Bare(Skip):
        def forward(self, x):
            return self.lin(x) + x

    x = torch.tensor([[2.0, 3.0]])
    ref = CaptumLRP(Skip()).attribute(x.clone(), target=1).detach()
    np.testing.assert_allclose(ref.numpy(), [[10.0, 18.0]], rtol=1e-6)
    eng = lrp.LRP(Bare(), lrp.EpsilonComposite(epsilon=1e-9))
    z = eng.forward(x)
    R = eng.relevance(torch.stack([torch.zeros(()), z[0, 1]]).reshape(1, 2))
    np.testing.assert_allclose(R.numpy(), ref.numpy(), rtol=1e-6)


def _zennit_net():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.ConvTranspose2d(4, 3, 2, stride=2), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                        nn.Linear(48, 3)).double().eval()
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
                # Zennit's MergeBatchNorm leaves the BN as x / sqrt(1 + eps) (running_var := 1, eps kept),
                # which shifts its result by O(eps); eps = 0 makes that left-over BN an exact identity
                m.eps = 0.0
    return net


@pytest.mark.parametrize("name", ["EpsilonPlus", "EpsilonAlpha2Beta1", "EpsilonGammaBox"])
@pytest.mark.parametrize("bn,exact", [("fold", False), ("pass", False), ("fold", True)])
def test_zennit_composite_parity(name, bn, exact):
    zc = pytest.importorskip("zennit.composites")
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    net = _zennit_net()
    x = (torch.rand(2, 2, 8, 8, dtype=torch.float64) * 4 - 2)
    with torch.no_grad():
        z0 = net(x)
    seed = torch.zeros_like(z0)
    seed[:, 2] = z0[:, 2]
    canon = [SequentialMergeBatchNorm()] if bn == "fold" else []
    kw = {"low": -2.0, "high": 2.0} if name == "EpsilonGammaBox" else {}
    comp = getattr(zc, name)(canonizers=canon, **kw)
    with Gradient(model=net, composite=comp) as attributor:
        _, ref = attributor(x.clone(), seed)
    ours = getattr(lrp, name)(bn=bn, exact=exact, **kw)
    eng = lrp.LRP(net, ours)
    z = eng.forward(x)
    np.testing.assert_allclose(z.numpy(), z0.numpy(), rtol=1e-12)
    R = eng.relevance(seed)
    np.testing.assert_allclose(R.numpy(), ref.detach().numpy(), rtol=1e-6, atol=1e-9 * ref.abs().max().item())
