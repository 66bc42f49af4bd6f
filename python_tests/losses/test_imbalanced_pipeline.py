"""The imbalanced-segmentation pipeline: its data obey the stated imbalance, its metrics equal a
NumPy count of the hard predictions, and a short run of every loss trains without error."""
import math

import pytest
import torch

from medseg_ext.pipelines import imbalanced_seg as P


@pytest.mark.parametrize("dim,size", [(2, 96), (3, 32)])
def test_dataset_is_extremely_imbalanced_and_reproducible(dim, size):
    x, y = P.make_dataset(6, size, dim, seed=3)
    assert x.shape == (6, 1) + (size,) * dim and y.shape == (6,) + (size,) * dim
    frac = y.float().mean().item()
    assert 0 < frac < 1e-3
    assert all(int(y[i].sum()) > 0 for i in range(6))  # every image has its target
    x2, y2 = P.make_dataset(6, size, dim, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="dim"):
        P.make_dataset(2, 32, 4)
    with pytest.raises(ValueError, match="size"):
        P.make_dataset(2, 30, 2)
    with pytest.raises(ValueError, match="losses"):
        P.run(losses=["nope"], steps=1)


def test_evaluate_matches_numpy_counts():
    g = torch.Generator().manual_seed(0)
    pred = (torch.rand(4, 20, 20, generator=g) < 0.1).long()
    target = (torch.rand(4, 20, 20, generator=g) < 0.1).long()
    m = P.evaluate(pred, target)
    p, t = pred.numpy().astype(bool), target.numpy().astype(bool)
    tp, fp, fn = (p & t).sum(), (p & ~t).sum(), (~p & t).sum()
    tn = p.size - tp - fp - fn
    assert m["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert m["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["precision"] == pytest.approx(tp / (tp + fp))
    assert m["recall"] == pytest.approx(tp / (tp + fn))
    n = p.size
    po, pe = (tp + tn) / n, ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / n ** 2
    assert m["kappa"] == pytest.approx((po - pe) / (1 - pe))


def test_short_run_of_every_loss():
    lines = []
    hist = P.run(dim=2, steps=2, losses=P.LOSSES, size=32, batch=2, n_train=4, n_val=2, eval_every=1,
                 features=4, show_progress=False, out=lines.append)
    assert set(hist) == set(P.LOSSES)
    for name, rows in hist.items():
        assert [r["step"] for r in rows] == [1, 2]
        assert math.isfinite(rows[-1]["loss"])
        assert 0.0 <= rows[-1]["recall"] <= 1.0
    assert any(line.startswith("| affinity |") for line in lines)


def test_cli_entry_runs(capsys):
    from medseg_ext import cli
    assert cli.main(["pipeline", "imbalanced_seg", "--steps", "1", "--size", "32", "--train", "2", "--val", "2",
                     "--batch", "2", "--features", "4", "--losses", "dice", "--no-progress"]) == 0
    assert "| dice |" in capsys.readouterr().out
