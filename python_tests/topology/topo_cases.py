"""Shared generators and comparisons for the topology tests."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st


def sorted_pairs(d) -> np.ndarray:
    a = np.asarray(d, dtype=np.float64).reshape(-1, 2)
    return a[np.lexsort((a[:, 1], a[:, 0]))]


def assert_same_diagrams(got, want, maxdim, exact=True, atol=0.0):
    assert len(got) == maxdim + 1, f"expected {maxdim + 1} dimensions, got {len(got)}"
    for k in range(maxdim + 1):
        g, w = sorted_pairs(got[k]), sorted_pairs(want[k])
        assert g.shape == w.shape, f"H{k}: {len(g)} points vs {len(w)}\n got {g}\n want {w}"
        if exact:
            np.testing.assert_array_equal(g, w, err_msg=f"H{k}")
        else:
            np.testing.assert_allclose(g, w, rtol=0, atol=atol, err_msg=f"H{k}")


def distance_matrix(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))


@st.composite
def clouds(draw, min_n=1, max_n=40, min_d=1, max_d=4):
    """Random clouds, sometimes on an integer grid (ties, duplicates), sometimes scaled far."""
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(min_d, max_d))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["gauss", "grid", "scaled", "uniform"]))
    rng = np.random.default_rng(seed)
    if kind == "grid":
        X = rng.integers(0, 3, size=(n, d)).astype(np.float64)
    elif kind == "scaled":
        X = rng.standard_normal((n, d)) * 10.0 ** draw(st.integers(-3, 3))
    elif kind == "uniform":
        X = rng.random((n, d))
    else:
        X = rng.standard_normal((n, d))
    return X


@st.composite
def diagrams(draw, max_points=8, allow_inf=False, zero_births=False):
    k = draw(st.integers(0, max_points))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    b = np.zeros(k) if zero_births else rng.random(k) * 2
    d = b + rng.random(k) * rng.choice([0.0, 1.0, 2.0], size=k, p=[0.15, 0.6, 0.25])  # some on the diagonal
    D = np.stack([b, d], axis=1).reshape(-1, 2)
    if allow_inf and k and draw(st.booleans()):
        D[0, 1] = np.inf
    return D


def numpy_distances(X, metric):
    """rips.cpp's pairwise_distances in NumPy: per coordinate |a − b|, summed in coordinate order."""
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    acc = np.zeros((n, n))
    for k in range(d):
        diff = np.abs(X[:, None, k] - X[None, :, k])
        acc = np.maximum(acc, diff) if metric == "chebyshev" else acc + (diff * diff if metric == "euclidean" else diff)
    return np.sqrt(acc) if metric == "euclidean" else acc


def assert_bitwise(got, want):
    """Same clouds, same rows in the same order, same float64 bits."""
    assert len(got) == len(want) and got.maxdim == want.maxdim
    for k in range(want.maxdim + 1):
        assert torch.equal(got.offsets[k], want.offsets[k]), f"H{k} offsets"
        assert got.values[k].dtype == torch.float64 and got.values[k].device.type == "cpu"
        assert torch.equal(got.values[k], want.values[k]), f"H{k} values\n{got.values[k]}\n{want.values[k]}"
