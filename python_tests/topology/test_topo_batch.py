"""vietoris_rips_batch: equals the single-cloud op cloud by cloud, ragged layout, memory guard."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import medseg_ext
from topo_cases import assert_same_diagrams, distance_matrix


@given(st.lists(st.integers(0, 25), min_size=0, max_size=6), st.integers(1, 3), st.integers(0, 2),
       st.integers(0, 2**31 - 1))
@settings(max_examples=25)
def test_batch_equals_single_calls(sizes, d, maxdim, seed):
    rng = np.random.default_rng(seed)
    clouds = [rng.standard_normal((n, d)) for n in sizes]
    batch = medseg_ext.vietoris_rips_batch(clouds, maxdim=maxdim)
    assert len(batch) == len(sizes) and batch.maxdim == maxdim
    for k in range(maxdim + 1):
        off = batch.offsets[k].numpy()
        assert off[0] == 0 and off[-1] == batch.values[k].shape[0] and np.all(np.diff(off) >= 0)
    for b, X in enumerate(clouds):
        assert_same_diagrams(batch[b], medseg_ext.vietoris_rips(X, maxdim=maxdim), maxdim)
    as_list = batch.to_list()
    assert len(as_list) == len(sizes)
    for b in range(len(sizes)):
        assert_same_diagrams(as_list[b], batch[b], maxdim)


def test_batch_tensor_input_distance_matrices_and_determinism():
    X = torch.randn(6, 30, 3, dtype=torch.float64)
    a = medseg_ext.vietoris_rips_batch(X, maxdim=2)
    b = medseg_ext.vietoris_rips_batch(X, maxdim=2)
    for k in range(3):  # same order and values, call after call
        assert torch.equal(a.values[k], b.values[k]) and torch.equal(a.offsets[k], b.offsets[k])
    D = np.stack([distance_matrix(x) for x in X.numpy()])
    c = medseg_ext.vietoris_rips_batch(D, maxdim=2, distance_matrix=True)
    c_list = medseg_ext.vietoris_rips_batch(list(D), maxdim=2, distance_matrix=True)
    for i in range(6):
        assert_same_diagrams(c[i], a[i], 2, exact=False, atol=1e-6)
        assert_same_diagrams(c_list[i], c[i], 2)
        assert_same_diagrams(c[i], medseg_ext.vietoris_rips(D[i], maxdim=2, distance_matrix=True), 2)
    assert len(a.dimension(1)) == 6


def test_batch_memory_limit_and_errors():
    X = np.random.default_rng(0).standard_normal((4, 200, 3))
    with pytest.raises(MemoryError, match="memory_limit"):
        medseg_ext.vietoris_rips_batch(X, maxdim=2, memory_limit=1e6)
    with pytest.raises(ValueError, match="same number of coordinates"):
        medseg_ext.vietoris_rips_batch([np.zeros((3, 2)), np.zeros((3, 3))])
    bad = [np.zeros((3, 2)), np.array([[0.0, np.nan]])]
    with pytest.raises(ValueError, match=r"clouds\[1\]"):
        medseg_ext.vietoris_rips_batch(bad)
    with pytest.raises(ValueError, match="coeff"):
        medseg_ext.vietoris_rips_batch([np.zeros((3, 2))], coeff=9)
    with pytest.raises(TypeError):
        medseg_ext.vietoris_rips_batch(42)
    T = np.random.default_rng(1).standard_normal((3, 5, 2))
    T[2, 4, 1] = np.inf
    with pytest.raises(ValueError, match="clouds: contains Inf"):
        medseg_ext.vietoris_rips_batch(torch.from_numpy(T))
    D = np.stack([distance_matrix(x) for x in np.random.default_rng(2).standard_normal((3, 5, 2))])
    D[1, 0, 2] += 0.5
    with pytest.raises(ValueError, match="not symmetric"):
        medseg_ext.vietoris_rips_batch(D, distance_matrix=True)
    D[1, 0, 2] -= 0.5
    D[2, 3, 3] = 1.0
    with pytest.raises(ValueError, match="zero diagonal"):
        medseg_ext.vietoris_rips_batch(D, distance_matrix=True)
    with pytest.raises(ValueError, match=r"\(B, n, d\)"):
        medseg_ext.vietoris_rips_batch(np.zeros((2, 3)))
    empty = medseg_ext.vietoris_rips_batch([], maxdim=1)
    assert len(empty) == 0 and empty.values[0].shape == (0, 2)
    with pytest.raises(IndexError):
        empty[0]
