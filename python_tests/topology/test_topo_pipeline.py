"""The MCI pipeline end to end on a tiny generated data set: it runs, and its PR matrices are the
pairwise distances of the diagrams it computed (checked against single calls)."""
import numpy as np
import torch

import medseg_ext
from medseg_ext.pipelines import mci


def test_mci_pipeline_tiny(tmp_path):
    out = tmp_path / "pr.npz"
    assert mci.main(["--subjects", "2", "--length", "16", "--maxdim", "1", "--epochs", "1", "--no-progress",
                     "--out", str(out)]) == 0
    data = np.load(out)
    assert data["labels"].tolist() == [0, 0, 1, 1]
    for net, n in mci.NETWORKS.items():
        for k in (0, 1):
            M = data[f"PR_{net}_H{k}"]
            assert M.shape == (4, n, n)
            np.testing.assert_array_equal(M, np.transpose(M, (0, 2, 1)))
            assert np.all(np.diagonal(M, axis1=1, axis2=2) == 0)
            assert data[f"p_{net}_H{k}"].shape == (n * (n - 1) // 2,)
    # one entry recomputed from scratch: subject 3, CB ROIs 0 and 1, H1
    series, _ = mci.generate(2, 16, 0, 1.0)
    clouds = medseg_ext.sliding_window(torch.from_numpy(series[3, :2]), 3, 1)
    d = [medseg_ext.vietoris_rips(c, maxdim=1)[1] for c in clouds]
    assert data["PR_CB_H1"][3, 0, 1] == medseg_ext.wasserstein(d[0], d[1], q=1, ground="l2")
