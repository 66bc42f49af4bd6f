"""The specular pipeline end to end on tiny generated frames."""
import numpy as np
import pytest

pytest.importorskip("cv2")
from medseg_ext.pipelines import specular  # noqa: E402


def test_specular_pipeline_tiny(tmp_path, capsys):
    assert specular.main(["--frames", "2", "--height", "64", "--width", "80", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "S_R" in out and "pooled F1" in out
    data = np.load(tmp_path / "specular_masks.npz")
    np.testing.assert_array_equal(data["sr"], data["mmser"] | data["is_en"])
    assert (tmp_path / "frame001.png").exists()


def test_specular_detects_planted_highlights():
    frames, truth = specular.generate(3, 96, 128, seed=1)
    sr, m_rs, isen, inp, _ = specular.run(frames, delta=5, a_max=400, t_h=20, min_area=3, min_level=0.75,
                                          verbose=False)
    m = specular.metrics(sr, truth)
    assert m["precision"] > 0.8 and m["recall"] > 0.4
    assert inp[truth].mean() < frames[truth].mean()


def test_metrics_values():
    p = np.array([1, 1, 0, 0], bool)
    t = np.array([1, 0, 1, 0], bool)
    m = specular.metrics(p, t)
    assert m == {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "jaccard": 1 / 3}
