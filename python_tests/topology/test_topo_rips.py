"""vietoris_rips against ripser.py (exact), the NumPy boundary-matrix reference, and analytic cases."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import medseg_ext
from medseg_ext.reference import topology as ref
from topo_cases import assert_same_diagrams, clouds, distance_matrix, sorted_pairs

ripser = pytest.importorskip("ripser")


# ---------------------------------------------------------------- ripser.py parity (exact)

@pytest.mark.peer
@given(clouds(), st.integers(0, 2), st.sampled_from([2, 2, 3, 5]))
@settings(max_examples=40)
def test_exact_equality_with_ripser_distance_matrix(X, maxdim, coeff):
    # the same float64 matrix goes to both; both round it to float32, so diagrams must be identical
    D = distance_matrix(X)
    want = ripser.ripser(D, maxdim=maxdim, distance_matrix=True, coeff=coeff)["dgms"]
    got = medseg_ext.vietoris_rips(D, maxdim=maxdim, distance_matrix=True, coeff=coeff)
    assert_same_diagrams(got, want, maxdim)


@pytest.mark.peer
@pytest.mark.filterwarnings("ignore:The input:UserWarning")  # ripser.py's shape hints on tiny clouds
@given(st.integers(1, 30), st.integers(1, 4), st.integers(0, 2**31 - 1), st.integers(0, 2))
@settings(max_examples=20)
def test_exact_equality_with_ripser_integer_points(n, d, seed, maxdim):
    # integer coordinates: squared distances are exact integers, so both distance computations agree
    X = np.random.default_rng(seed).integers(-3, 4, size=(n, d)).astype(np.float64)
    want = ripser.ripser(X, maxdim=maxdim)["dgms"]
    assert_same_diagrams(medseg_ext.vietoris_rips(X, maxdim=maxdim), want, maxdim)


@pytest.mark.peer
def test_point_cloud_matches_ripser_185_points_maxdim2():
    X = np.random.default_rng(1).standard_normal((185, 3))
    want = ripser.ripser(X, maxdim=2)["dgms"]
    got = medseg_ext.vietoris_rips(torch.from_numpy(X), maxdim=2)
    # ripser.py uses sklearn's |x|²+|y|²−2x·y distances; ours are direct differences: equal to
    # float32 rounding, so compare within a few float32 ulps
    assert_same_diagrams(got, want, 2, exact=False, atol=1e-5)


@pytest.mark.peer
def test_sliding_window_cloud_exact_with_ripser_distance_matrix():
    # the paper's setting: 185 points from a series of length 187, maxdim 2, bit-for-bit
    v = np.random.default_rng(11).standard_normal(187)
    D = distance_matrix(medseg_ext.sliding_window(v, 3, 1).numpy())
    want = ripser.ripser(D, maxdim=2, distance_matrix=True)["dgms"]
    assert_same_diagrams(medseg_ext.vietoris_rips(D, maxdim=2, distance_matrix=True), want, 2)


@pytest.mark.peer
def test_flat_torus_matches_ripser_and_has_two_h1_one_h2():
    a = np.arange(8) * 2 * np.pi / 8
    A, B = np.meshgrid(a, a)
    X = np.stack([np.cos(A), np.sin(A), np.cos(B), np.sin(B)], -1).reshape(-1, 4)
    D = distance_matrix(X)
    want = ripser.ripser(D, maxdim=2, distance_matrix=True)["dgms"]
    got = medseg_ext.vietoris_rips(D, maxdim=2, distance_matrix=True)
    assert_same_diagrams(got, want, 2)
    pers1 = np.sort(np.diff(got[1].numpy(), axis=1).ravel())[::-1]
    pers2 = np.sort(np.diff(got[2].numpy(), axis=1).ravel())[::-1]
    assert pers1[1] > 2 * pers1[2] and pers2[0] > 2 * (pers2[1] if len(pers2) > 1 else 0)


@given(clouds(min_n=5, max_n=8, max_d=4), st.sampled_from([2, 3]))
@settings(max_examples=10)
def test_maxdim3_matches_reference(X, coeff):
    want = ref.vietoris_rips(X, maxdim=3, coeff=coeff)
    assert_same_diagrams(medseg_ext.vietoris_rips(X, maxdim=3, coeff=coeff, precision="float64"), want, 3)


@pytest.mark.peer
@given(st.integers(3, 25), st.integers(0, 2**31 - 1), st.floats(0.2, 2.0))
@settings(max_examples=20)
def test_threshold_matches_ripser(n, seed, thresh):
    D = distance_matrix(np.random.default_rng(seed).standard_normal((n, 2)))
    want = ripser.ripser(D, maxdim=2, distance_matrix=True, thresh=thresh)["dgms"]
    got = medseg_ext.vietoris_rips(D, maxdim=2, distance_matrix=True, threshold=thresh)
    assert_same_diagrams(got, want, 2)


@pytest.mark.peer
@pytest.mark.parametrize("kind", ["collinear", "cocircular", "duplicates"])
def test_degenerate_configurations_match_ripser(kind):
    rng = np.random.default_rng(7)
    if kind == "collinear":
        X = np.stack([rng.random(30), np.zeros(30)], 1)
    elif kind == "cocircular":
        a = rng.random(24) * 2 * np.pi
        X = np.stack([np.cos(a), np.sin(a)], 1)
    else:
        X = np.repeat(rng.standard_normal((10, 3)), 3, axis=0)
    D = distance_matrix(X)
    want = ripser.ripser(D, maxdim=2, distance_matrix=True)["dgms"]
    got = medseg_ext.vietoris_rips(D, maxdim=2, distance_matrix=True)
    assert_same_diagrams(got, want, 2)
    if kind == "collinear":
        assert len(got[1]) == 0 and len(got[2]) == 0
    if kind == "duplicates":
        assert len(got[0]) == 10  # 9 finite merges + the essential bar; zero-length bars dropped


# ---------------------------------------------------------------- NumPy reference (independent algorithm)

@given(clouds(max_n=9, max_d=3), st.integers(0, 2), st.sampled_from([2, 3, 7]))
@settings(max_examples=40)
def test_matches_boundary_matrix_reference(X, maxdim, coeff):
    want = ref.vietoris_rips(X, maxdim=maxdim, coeff=coeff)
    got = medseg_ext.vietoris_rips(X, maxdim=maxdim, coeff=coeff, precision="float64")
    assert_same_diagrams(got, want, maxdim)


@given(clouds(min_n=2, max_n=9, max_d=3), st.floats(0.1, 3.0))
@settings(max_examples=25)
def test_threshold_matches_reference(X, thresh):
    want = ref.vietoris_rips(X, maxdim=1, threshold=thresh)
    got = medseg_ext.vietoris_rips(X, maxdim=1, threshold=thresh, precision="float64")
    assert_same_diagrams(got, want, 1)


@given(clouds(min_n=1, max_n=40))
@settings(max_examples=30)
def test_h0_is_the_minimum_spanning_tree(X):
    got = medseg_ext.vietoris_rips(X, maxdim=0, precision="float64")[0].numpy()
    finite = np.sort(got[np.isfinite(got[:, 1]), 1])
    np.testing.assert_allclose(finite, ref.h0_deaths(X), rtol=1e-12, atol=0)
    assert np.all(got[:, 0] == 0)
    assert int(np.isinf(got[:, 1]).sum()) == 1


def test_euler_characteristic_from_reference_diagrams():
    X = np.random.default_rng(3).standard_normal((6, 2))
    D = distance_matrix(X)
    got = medseg_ext.vietoris_rips(D, maxdim=4, distance_matrix=True, precision="float64")
    for eps in np.unique(D)[1:-1]:
        betti = [int(((g[:, 0] <= eps) & (g[:, 1] > eps)).sum()) for g in got]
        chi_betti, chi_cells = ref.euler_characteristic_check(D, eps, 4)
        assert sum((-1) ** k * b for k, b in enumerate(betti)) == chi_betti == chi_cells


# ---------------------------------------------------------------- analytic cases (§10.1)

def test_unit_square_and_hexagon():
    sq = medseg_ext.vietoris_rips([[0, 0], [1, 0], [1, 1], [0, 1]], maxdim=2, precision="float64")
    np.testing.assert_array_equal(sorted_pairs(sq[0]), [[0, 1], [0, 1], [0, 1], [0, math.inf]])
    np.testing.assert_allclose(sq[1], [[1, math.sqrt(2)]])
    assert len(sq[2]) == 0
    a = np.arange(6) * np.pi / 3
    hexa = medseg_ext.vietoris_rips(np.stack([np.cos(a), np.sin(a)], 1), maxdim=2, precision="float64")
    np.testing.assert_allclose(hexa[1], [[1, math.sqrt(3)]], rtol=1e-12)
    np.testing.assert_allclose(hexa[2], [[math.sqrt(3), 2]], rtol=1e-12)  # the octahedral sphere


def test_two_points():
    got = medseg_ext.vietoris_rips([[0.0], [2.5]], maxdim=2)
    np.testing.assert_array_equal(sorted_pairs(got[0]), [[0, 2.5], [0, math.inf]])
    assert len(got[1]) == 0 and len(got[2]) == 0


def test_circle_has_one_h1_class():
    a = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    rng = np.random.default_rng(0)
    X = np.stack([np.cos(a), np.sin(a)], 1) + 0.01 * rng.standard_normal((60, 2))
    h1 = medseg_ext.vietoris_rips(X, maxdim=1)[1].numpy()
    pers = np.sort(h1[:, 1] - h1[:, 0])[::-1]
    assert pers[0] > 1.0 and (len(pers) == 1 or pers[1] < 0.1)


def test_sphere_has_one_h2_class():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((80, 3))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    h2 = medseg_ext.vietoris_rips(X, maxdim=2)[2].numpy()
    pers = np.sort(h2[:, 1] - h2[:, 0])[::-1]
    assert pers[0] > 0.5 and (len(pers) == 1 or pers[1] < 0.2 * pers[0])


@given(clouds(min_n=2, max_n=20, min_d=2, max_d=3), st.integers(0, 2**31 - 1), st.floats(0.1, 10.0))
@settings(max_examples=20)
def test_invariances(X, seed, scale):
    rng = np.random.default_rng(seed)
    base = medseg_ext.vietoris_rips(X, maxdim=2, precision="float64")
    Q, _ = np.linalg.qr(rng.standard_normal((X.shape[1], X.shape[1])))
    perm = rng.permutation(len(X))
    moved = medseg_ext.vietoris_rips(X[perm] @ Q + rng.standard_normal(X.shape[1]), maxdim=2, precision="float64")
    tol = 1e-9 * max(1.0, float(np.abs(X).max()))
    assert_same_diagrams(moved, base, 2, exact=False, atol=tol)
    scaled = medseg_ext.vietoris_rips(X * scale, maxdim=2, precision="float64")
    assert_same_diagrams(scaled, [b * scale for b in base], 2, exact=False, atol=tol * scale)


@given(clouds(min_n=2, max_n=15, max_d=3), st.integers(0, 2**31 - 1))
@settings(max_examples=15)
def test_stability_bound(X, seed):
    Y = X + 0.05 * np.random.default_rng(seed).standard_normal(X.shape)
    a = medseg_ext.vietoris_rips(X, maxdim=1, precision="float64")
    b = medseg_ext.vietoris_rips(Y, maxdim=1, precision="float64")
    bound = np.abs(distance_matrix(X) - distance_matrix(Y)).max()
    for k in range(2):
        assert medseg_ext.bottleneck(a[k], b[k], essential="match") <= bound + 1e-9


# ---------------------------------------------------------------- inputs and errors

def test_metrics_match_reference():
    X = np.random.default_rng(5).standard_normal((8, 3))
    for metric in ("manhattan", "chebyshev"):
        want = ref.vietoris_rips(D=ref.pairwise_dist(X, metric), maxdim=1)
        assert_same_diagrams(medseg_ext.vietoris_rips(X, maxdim=1, metric=metric, precision="float64"), want, 1)


def test_non_contiguous_and_float32_input():
    X = torch.randn(3, 30, dtype=torch.float64)
    want = medseg_ext.vietoris_rips(X.T.contiguous(), maxdim=1)
    assert_same_diagrams(medseg_ext.vietoris_rips(X.T, maxdim=1), want, 1)
    X32 = X.T.to(torch.float32)
    assert_same_diagrams(medseg_ext.vietoris_rips(X32, maxdim=1),
                         medseg_ext.vietoris_rips(X32.to(torch.float64), maxdim=1), 1)


def test_empty_and_single_point():
    got = medseg_ext.vietoris_rips(np.zeros((0, 3)), maxdim=2)
    assert [tuple(g.shape) for g in got] == [(0, 2)] * 3
    got = medseg_ext.vietoris_rips([[1.0, 2.0, 3.0]], maxdim=2)
    np.testing.assert_array_equal(got[0], [[0, math.inf]])
    assert len(got[1]) == 0 and len(got[2]) == 0


def test_enclosing_threshold_is_the_full_filtration():
    X = np.random.default_rng(4).standard_normal((20, 3))
    assert_same_diagrams(medseg_ext.vietoris_rips(X, maxdim=2, threshold="enclosing"),
                         medseg_ext.vietoris_rips(X, maxdim=2), 2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_raises(bad):
    X = np.random.default_rng(0).standard_normal((5, 2))
    X[2, 1] = bad
    with pytest.raises(ValueError, match="points_or_distance_matrix"):
        medseg_ext.vietoris_rips(X)
    D = distance_matrix(np.random.default_rng(0).standard_normal((5, 2)))
    D[1, 3] = D[3, 1] = bad
    with pytest.raises(ValueError):
        medseg_ext.vietoris_rips(D, distance_matrix=True)


def test_bad_arguments_raise():
    X = np.random.default_rng(0).standard_normal((5, 2))
    with pytest.raises(ValueError, match="coeff"):
        medseg_ext.vietoris_rips(X, coeff=4)
    with pytest.raises(ValueError, match="maxdim"):
        medseg_ext.vietoris_rips(X, maxdim=-1)
    with pytest.raises(ValueError, match="threshold"):
        medseg_ext.vietoris_rips(X, threshold=-1.0)
    with pytest.raises(ValueError, match="metric"):
        medseg_ext.vietoris_rips(X, metric="cosine")
    with pytest.raises(ValueError, match="square"):
        medseg_ext.vietoris_rips(X, distance_matrix=True)
    D = distance_matrix(X)
    D[0, 1] += 1.0
    with pytest.raises(ValueError, match="symmetric"):
        medseg_ext.vietoris_rips(D, distance_matrix=True)
    D = distance_matrix(X) + np.eye(5)
    with pytest.raises(ValueError, match="diagonal"):
        medseg_ext.vietoris_rips(D, distance_matrix=True)
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        medseg_ext.vietoris_rips(np.zeros((2, 3, 4)))


def test_index_overflow_is_a_clear_error():
    X = np.zeros((100_000, 1))  # C(100000, 5) > 2^63
    with pytest.raises(ValueError, match="64-bit"):
        medseg_ext.vietoris_rips(X, maxdim=3)


def test_memory_limit_raises_before_work():
    X = np.random.default_rng(0).standard_normal((300, 3))
    est = medseg_ext.rips_memory_estimate(300, 2)
    assert est > 300 * 300 * 4
    with pytest.raises(MemoryError, match="memory_limit"):
        medseg_ext.vietoris_rips(X, maxdim=2, memory_limit=2**20)
    # under a threshold the bound from the data (edges within it, largest degree) fits the limit
    small = medseg_ext.vietoris_rips(X, maxdim=2, threshold=0.3, memory_limit=4 * 2**20)
    assert len(small) == 3
    with pytest.raises(ValueError, match="memory_limit"):
        medseg_ext.vietoris_rips(X, memory_limit=-5)
    # 200,000 points at maxdim 0: the 480 GB of distance matrices are refused before anything is allocated
    big = np.zeros((200_000, 1))
    with pytest.raises(MemoryError, match="memory_limit"):
        medseg_ext.vietoris_rips(big, maxdim=0)
    with pytest.raises(MemoryError, match="memory_limit"):
        medseg_ext.vietoris_rips_batch([big], maxdim=0)
