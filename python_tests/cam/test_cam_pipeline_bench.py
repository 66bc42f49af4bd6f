"""Smoke tests: the cam_eval pipeline end to end on a tiny setting, and the bench module's API."""
import importlib

import pytest


def test_cam_eval_pipeline_runs(capsys, tmp_path):
    from medseg_ext.pipelines import cam_eval
    out = tmp_path / "maps.npz"
    rc = cam_eval.main(["--train", "16", "--val", "4", "--size", "32", "--steps", "2", "--batch", "4",
                        "--out", str(out), "--methods", "gradcam,svdgradcam,eigencam",
                        "--overlays", str(tmp_path / "png")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| SVD-Grad-CAM (usv, n=1) |" in text and "GAP-head check" in text
    assert out.exists()
    pytest.importorskip("matplotlib")
    pngs = sorted(p.name for p in (tmp_path / "png").iterdir())
    table_rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| Method")]
    assert len(pngs) == len(table_rows) >= 3 and all(n.endswith(".png") for n in pngs)
    assert all((tmp_path / "png" / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in pngs)
    with pytest.raises(SystemExit):
        cam_eval.main(["--val", "0"])
    with pytest.raises(SystemExit):
        cam_eval.main(["--methods", "nope"])


def test_bench_module_api():
    b = importlib.import_module("medseg_ext.bench.cam")
    assert b.PEERS == ("grad-cam", "torchcam") and callable(b.run)
    with pytest.raises(ValueError, match="size"):
        b.run(size="huge")
    import numpy as np
    G = np.random.default_rng(0).standard_normal((5, 7, 7))
    from medseg_ext.reference import cam as ref
    np.testing.assert_allclose(b.numpy_svd_loop(G), ref.svd_gradcam_weights(G, 1), rtol=1e-10)
