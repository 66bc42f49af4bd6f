"""sliding_window against the NumPy reference; the sinusoid → one dominant H1 bar oracle (§10.1.7)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import medseg_ext
from medseg_ext.reference import topology as ref


@given(st.integers(0, 40), st.integers(1, 5), st.integers(1, 4), st.booleans(), st.integers(0, 2**31 - 1))
@settings(max_examples=40)
def test_matches_reference(T, dim, tau, drop_last, seed):
    v = np.random.default_rng(seed).standard_normal(T)
    got = medseg_ext.sliding_window(torch.from_numpy(v), dim, tau, drop_last=drop_last)
    want = ref.sliding_window(v, dim, tau, drop_last)
    assert tuple(got.shape) == want.shape
    np.testing.assert_array_equal(got.numpy(), want)


def test_paper_and_author_counts_batched_view():
    x = torch.randn(2, 5, 187)
    w = medseg_ext.sliding_window(x, 3, 1)
    assert w.shape == (2, 5, 185, 3)
    assert medseg_ext.sliding_window(x, 3, 1, drop_last=True).shape == (2, 5, 184, 3)
    assert w.data_ptr() == x.data_ptr()  # a view, no copy
    np.testing.assert_array_equal(w[1, 3].numpy(), ref.sliding_window(x[1, 3].numpy(), 3, 1))
    x[1, 3, 5] = 42.0
    assert w[1, 3, 5, 0] == 42.0 and w[1, 3, 4, 1] == 42.0 and w[1, 3, 3, 2] == 42.0


def test_sinusoid_gives_one_dominant_h1_bar():
    for period, ratio in ((7.3, 10), (12.7, 10), (25.1, 10)):
        v = np.sin(2 * np.pi * np.arange(32) / period)
        h1 = medseg_ext.vietoris_rips(medseg_ext.sliding_window(v, 3, 1), maxdim=1)[1].numpy()
        pers = np.sort(h1[:, 1] - h1[:, 0])[::-1]
        assert len(pers) >= 1 and (len(pers) == 1 or pers[0] > ratio * pers[1])
    const = medseg_ext.vietoris_rips(medseg_ext.sliding_window(np.ones(20), 3, 1), maxdim=1)
    assert const[0].tolist() == [[0.0, float("inf")]] and len(const[1]) == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="dim"):
        medseg_ext.sliding_window(torch.zeros(10), 0, 1)
    with pytest.raises(ValueError, match="tau"):
        medseg_ext.sliding_window(torch.zeros(10), 3, 0)
    with pytest.raises(TypeError, match="tau"):
        medseg_ext.sliding_window(torch.zeros(10), 3, 1.5)
    with pytest.raises(ValueError, match="time axis"):
        medseg_ext.sliding_window(torch.tensor(1.0), 3, 1)
