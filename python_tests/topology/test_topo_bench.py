"""The topology benchmark module: sizes (the issue's 2,000-cloud case as --size large), inputs, errors."""
import numpy as np
import pytest

from medseg_ext.bench import topology as bench


def test_sizes_include_the_issue_batch_case_not_as_default():
    assert bench.SIZES["large"]["batch"] == 2000
    assert bench.SIZES["small"]["batch"] < bench.SIZES["large"]["batch"]
    with pytest.raises(SystemExit):  # argparse: unknown size
        bench.main(["--size", "huge"])


def test_bad_size_is_a_value_error():
    with pytest.raises(ValueError, match="size"):
        bench.run(size="huge", out=lambda *_: None)


def test_make_clouds_are_sliding_windows():
    X = bench.make_clouds(3, seed=0)
    assert X.shape == (3, 185, 3) and X.dtype == np.float64
    np.testing.assert_array_equal(X[:, 1:, 0], X[:, :-1, 1])  # τ = 1 windows of one series


def test_gpu_benchmark_fails_cleanly_without_a_gpu(capsys):
    import torch

    assert bench.GPU_SIZES["paper"]["clouds"] == 10000 and bench.GPU_SIZES["large"]["peer_clouds"] == 500
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        bench.run(device="cuda", out=lambda *_: None)
    assert bench.main(["--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_gpu_rows_run_the_tested_path_under_the_interpreter():
    # the vr-gpu rows at toy size, on CPU tensors with the Triton kernels forced (TRITON_INTERPRET=1)
    pytest.importorskip("triton")
    import torch

    import medseg_ext

    device = "cuda" if torch.cuda.is_available() else "cpu"
    lines = []
    with medseg_ext.use_backend("triton"):
        rows = bench.gpu_rows(3, 2, 1, lines.append, device=device, n_points=5)
    assert [r["case"] for r in rows][0] == "vr-gpu 3×(5×3), maxdim 2" and len(rows) >= 4
    assert all(r["check"].endswith("True") for r in rows), rows
    assert rows[0]["impl"].startswith("medseg_ext GPU path") and rows[0]["time_ratio"] == 1.0
