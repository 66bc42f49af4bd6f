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
