"""ph_mci pipeline: a short run (PR/PS matrices, P-plots vs scipy.stats.ranksums directly, figures,
CNN accuracies), the Dask paths equal to the local run, and the dual-path CNN model."""
import json
import os

import numpy as np
import pytest
import torch

import medseg_ext
from medseg_ext.models.ph_cnn import PRNet, standardize, stratified_split, train_classifier
from medseg_ext.pipelines import ph_mci

TINY = ["--subjects", "3", "--length", "14", "--maxdim", "1", "--epochs", "2", "--cnn-width", "0.125",
        "--no-progress"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ph_mci")
    assert ph_mci.main(TINY + ["--out", str(out)]) == 0
    return out


def test_ph_mci_outputs(tiny_run):
    from scipy.stats import ranksums
    data = np.load(tiny_run / "results.npz")
    labels = data["labels"]
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    series, _ = ph_mci.generate(3, 14, 0, 1.0)
    for net, n in ph_mci.NETWORKS.items():
        for k in (0, 1):
            M = data[f"PR_{net}_H{k}"]
            assert M.shape == (6, n, n)
            P = data[f"pplot_{net}_H{k}"]
            assert P.shape == (n, n)
            np.testing.assert_array_equal(P, P.T)
            assert np.all(np.diag(P) == 1)
            # P-plot entries against scipy directly, pair by pair
            for i, j in ((0, 1), (2, n - 1), (n - 2, n - 1)):
                want = ranksums(M[labels == 0, i, j], M[labels == 1, i, j]).pvalue
                assert P[i, j] == pytest.approx(want, rel=1e-12, abs=0)
            np.testing.assert_array_equal(data[f"p_{net}_H{k}"], P[np.triu_indices(n, 1)])
    # PS: (ROIs, S, S) per dimension, symmetric, zero diagonal; one entry from scratch
    R = sum(ph_mci.NETWORKS.values())
    for k in (0, 1):
        PS = data[f"PS_H{k}"]
        assert PS.shape == (R, 6, 6)
        np.testing.assert_array_equal(PS, np.transpose(PS, (0, 2, 1)))
        assert np.all(np.diagonal(PS, axis1=1, axis2=2) == 0)
    clouds = medseg_ext.sliding_window(torch.from_numpy(series[[1, 4], 40]), 3, 1)
    d = [medseg_ext.vietoris_rips(c, maxdim=1)[1] for c in clouds]
    assert data["PS_H1"][40, 1, 4] == medseg_ext.wasserstein(d[0], d[1], q=1, ground="l2")
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert len(summary["screen"]) == 12 and len(summary["accuracy"]) == 12
    for res in summary["accuracy"].values():
        assert 0 <= res["test_acc"] <= 1 and res["n_test"] == 2 and res["n_train"] == 4
    if pytest.importorskip("matplotlib"):
        for f in ("diagrams.png", "pplots.png"):
            assert os.path.getsize(tiny_run / f) > 1000


def test_pplot_and_ps_separation_values():
    from scipy.stats import ranksums
    rng = np.random.default_rng(0)
    M = rng.random((7, 4, 4))
    M = M + np.transpose(M, (0, 2, 1))
    labels = np.array([0, 1, 0, 1, 1, 0, 1])
    P = ph_mci.pplot(M, labels)
    for i in range(4):
        for j in range(4):
            want = 1.0 if i == j else ranksums(M[labels == 0, i, j], M[labels == 1, i, j]).pvalue
            assert P[i, j] == pytest.approx(want, rel=1e-12)
    PS = np.array([[0, 1, 4, 4], [1, 0, 4, 4], [4, 4, 0, 2], [4, 4, 2, 0]], dtype=float)
    assert ph_mci.ps_separation(PS, np.array([0, 0, 1, 1])) == pytest.approx(4 / 1.5)


def test_mci_alias_still_works(tmp_path):
    out = tmp_path / "r.npz"
    assert ph_mci.main.__module__ == "medseg_ext.pipelines.ph_mci"
    from medseg_ext.pipelines import mci
    args = [a for a in TINY if a != "--no-progress"]  # progress bars on (tqdm when installed)
    assert mci.main(args + ["--no-ps", "--epochs", "0", "--out", str(out)]) == 0
    from medseg_ext.cli import implemented_pipelines
    assert {"mci", "ph_mci"} <= set(implemented_pipelines())
    data = np.load(out)
    assert "PR_CO_H1" in data and "PS_H0" not in data


def test_ph_mci_dask_equals_local(tiny_run, tmp_path):
    pytest.importorskip("distributed")
    out = tmp_path / "dask.npz"
    assert ph_mci.main(TINY + ["--dask", "--dask-threads", "--chunk-size", "50", "--epochs", "0",
                               "--out", str(out)]) == 0
    got, want = np.load(out), np.load(tiny_run / "results.npz")
    for key in want.files:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_ph_mci_scheduler_address(tiny_run, tmp_path):
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "sched.npz"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cl:
        assert ph_mci.main(TINY + ["--scheduler", cl.scheduler_address, "--no-ps", "--epochs", "0",
                                   "--out", str(out)]) == 0
    got, want = np.load(out), np.load(tiny_run / "results.npz")
    for key in got.files:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_cli_errors():
    with pytest.raises(SystemExit):
        ph_mci.main(["--subjects", "1"])
    with pytest.raises(SystemExit):
        ph_mci.main(["--chunk-size", "0"])


# ---------------------------------------------------------------- the CNN
@pytest.mark.parametrize("n,width,head", [(18, 1.0, "paper"), (34, 0.25, "notebook"), (5, 0.125, "paper")])
def test_prnet_forward_shape(n, width, head):
    torch.manual_seed(0)
    model = PRNet(n, num_classes=3, width=width, head=head)
    x = torch.randn(4, n, n)
    out = model(x)
    assert out.shape == (4, 3) and torch.isfinite(out).all()
    assert model(x.unsqueeze(1)).shape == (4, 3)
    conv_out = [m for m in model.conv_path if isinstance(m, torch.nn.Conv2d)][-1].out_channels
    assert conv_out == max(1, round(256 * width))
    with pytest.raises(ValueError, match="x: expected"):
        model(torch.randn(2, n + 1, n + 1))
    with pytest.raises(ValueError, match="head"):
        PRNet(n, head="other")
    with pytest.raises(ValueError, match="n:"):
        PRNet(1)


def test_standardize_split_and_training():
    x = torch.randn(3, 6, 6) * 5 + 2
    z = standardize(x)
    assert torch.allclose(z.mean((-2, -1)), torch.zeros(3), atol=1e-6)
    assert torch.allclose(z.std((-2, -1), unbiased=False), torch.ones(3), atol=1e-5)
    assert torch.equal(standardize(torch.ones(1, 3, 3)), torch.zeros(1, 3, 3))
    labels = np.repeat([0, 1], [10, 15])
    tr, te = stratified_split(labels, 0.2, seed=1)
    assert len(te) == 5 and sorted(np.concatenate([tr, te]).tolist()) == list(range(25))
    assert (labels[te] == 0).sum() == 2 and (labels[te] == 1).sum() == 3
    # separable toy task: class 1 has a bright block -> the small CNN learns it
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    M = rng.random((40, 8, 8))
    M[y == 1, :3, :3] += 3.0
    res = train_classifier(M, y, epochs=15, width=0.25, seed=0, normalize="matrix")
    assert res["n_test"] == 8 and res["test_acc"] >= 0.75
    again = train_classifier(M, y, epochs=15, width=0.25, seed=0, normalize="matrix")
    assert again == res  # deterministic for a seed
    # a difference of scale only: invisible after per-matrix standardisation, kept by "dataset"
    S = rng.random((40, 6, 6))
    S = S + np.transpose(S, (0, 2, 1))
    S[y == 1] *= 3.0
    assert train_classifier(S, y, epochs=10, width=0.25, normalize="dataset")["test_acc"] >= 0.75
    with pytest.raises(ValueError, match="normalize"):
        train_classifier(S, y, epochs=1, normalize="global")
    with pytest.raises(ValueError, match="matrices"):
        train_classifier(S[:5], y, epochs=1)
