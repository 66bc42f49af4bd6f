"""Smoke tests: the cam_quality pipeline end to end on a tiny setting, and the bench module's API."""
import importlib

import pytest


def test_cam_quality_pipeline_runs(capsys, tmp_path):
    from medseg_ext.pipelines import cam_quality
    out = tmp_path / "maps.npz"
    rc = cam_quality.main(["--train", "16", "--val", "4", "--size", "32", "--steps", "2", "--batch", "4",
                           "--out", str(out), "--methods", "gradcam,svdgradcam,eigencam"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| SVD-Grad-CAM (usv, n=1) |" in text and "GAP-head check" in text
    assert out.exists()
    with pytest.raises(SystemExit):
        cam_quality.main(["--val", "0"])
    with pytest.raises(SystemExit):
        cam_quality.main(["--methods", "nope"])


def test_bench_module_api():
    b = importlib.import_module("medseg_ext.bench.cam")
    assert b.PEERS == ("grad-cam", "torchcam") and callable(b.run)
    with pytest.raises(ValueError, match="size"):
        b.run(size="huge")
    import numpy as np
    G = np.random.default_rng(0).standard_normal((5, 7, 7))
    from medseg_ext.reference import cam as ref
    np.testing.assert_allclose(b.numpy_svd_loop(G), ref.svd_gradcam_weights(G, 1), rtol=1e-10)
