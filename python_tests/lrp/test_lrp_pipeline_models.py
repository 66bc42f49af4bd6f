"""The lrp_unet pipeline end to end (tiny) and the small U-Net models under LRP."""
import os

import numpy as np
import pytest
import torch

from medseg_ext import lrp
from medseg_ext.models.small_unet import SmallUNet
from medseg_ext.pipelines import lrp_unet


def test_pipeline_runs_and_saves(tmp_path, capsys):
    out = tmp_path / "o"
    assert lrp_unet.main(["--steps", "2", "--size", "32", "--arch", "resunet", "--norm", "instance",
                          "--rule", "epsilon_plus", "--out", str(out)]) == 0
    for f in ("relevance.npy", "relevance_log.npy", "object_mask.npy"):
        assert (out / f).exists()
    rel = np.load(out / "relevance.npy")
    np.testing.assert_allclose(np.load(out / "relevance_log.npy"), lrp.log_scale(rel, 0.1))
    assert "saved" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        lrp_unet.main(["--size", "30"])


@pytest.mark.parametrize("residual", [False, True])
def test_small_unet_bias_free_conservation(residual):
    torch.manual_seed(0)
    net = SmallUNet(1, 1, (4, 8), norm=None, residual=residual).double()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    eng = lrp.LRP(net, lrp.EpsilonComposite(epsilon=1e-12))
    z = eng.forward(x)
    seed = torch.sigmoid(z) * (z > 0)
    R = eng.relevance(seed)
    np.testing.assert_allclose(R.sum().item(), seed.sum().item(), rtol=1e-4)
    assert any(n.kind == "add" for n in eng.nodes) == residual
