"""The fast paths of the Rips core against ripser.py, bit for bit: the dimension-2 triangle pass
(bitset clearing, SSE zero-cofacet scan, direct apparent-pair test), the plain-coboundary shortcut
and the lazily stored (compacted on first use) reduced columns, the per-thread workspace reused
across the clouds of a batch. Clouds large enough that many triangles are columns and columns
need additions; ties (integer grids, integer distance matrices), duplicate points, Z/3."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import medseg_ext
from topo_cases import assert_same_diagrams, distance_matrix

ripser = pytest.importorskip("ripser")


def _cloud(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "gauss":
        return rng.standard_normal((n, 3))
    if kind == "grid":  # many equal distances: ties between simplices of equal diameter
        return rng.integers(0, 4, size=(n, 3)).astype(np.float64)
    if kind == "duplicates":  # zero distances, several copies of the same point
        base = rng.standard_normal((max(1, n // 3), 3))
        return base[rng.integers(0, len(base), size=n)]
    if kind == "window":  # the MCI setting: sliding windows of a random series
        v = rng.standard_normal(n + 2)
        return np.stack([v[j:j + n] for j in range(3)], axis=-1)
    if kind == "circle":  # cocircular: long H1 bar, many equal distances
        a = np.arange(n) * 2 * np.pi / n
        return np.stack([np.cos(a), np.sin(a), np.zeros(n)], -1)
    raise ValueError(kind)


def _integer_distance_matrix(n: int, seed: int) -> np.ndarray:
    """Symmetric matrix of small integers (heavy ties; exact in float32 and float64)."""
    rng = np.random.default_rng(seed)
    D = rng.integers(1, 6, size=(n, n)).astype(np.float64)
    D = np.triu(D, 1)
    return D + D.T


KINDS = ["gauss", "grid", "duplicates", "window", "circle"]


@pytest.mark.peer
@given(st.sampled_from(KINDS), st.integers(20, 90), st.integers(0, 2**31 - 1), st.sampled_from([2, 2, 3]))
@settings(max_examples=16, deadline=None)
def test_maxdim2_exact_vs_ripser_medium_clouds(kind, n, seed, coeff):
    D = distance_matrix(_cloud(kind, n, seed))
    want = ripser.ripser(D, maxdim=2, distance_matrix=True, coeff=coeff)["dgms"]
    got = medseg_ext.vietoris_rips(D, maxdim=2, distance_matrix=True, coeff=coeff)
    assert_same_diagrams(got, want, 2)


@pytest.mark.peer
@given(st.sampled_from(["gauss", "grid", "duplicates"]), st.integers(8, 22), st.integers(0, 2**31 - 1),
       st.sampled_from([2, 3]))
@settings(max_examples=8, deadline=None)
def test_maxdim3_exact_vs_ripser(kind, n, seed, coeff):
    # maxdim 3: the triangle pass also lists the triangles and records apparent tetrahedra for clearing
    D = distance_matrix(_cloud(kind, n, seed))
    want = ripser.ripser(D, maxdim=3, distance_matrix=True, coeff=coeff)["dgms"]
    got = medseg_ext.vietoris_rips(D, maxdim=3, distance_matrix=True, coeff=coeff)
    assert_same_diagrams(got, want, 3)


@pytest.mark.peer
@given(st.integers(4, 40), st.integers(0, 2**31 - 1), st.sampled_from(["float32", "float64"]))
@settings(max_examples=10, deadline=None)
def test_integer_distance_matrix_ties_both_precisions(n, seed, precision):
    # integer distances are exact in both value types, so the float64 path (scalar scan) must give
    # ripser.py's diagrams too
    D = _integer_distance_matrix(n, seed)
    want = ripser.ripser(D, maxdim=2, distance_matrix=True)["dgms"]
    got = medseg_ext.vietoris_rips(D, maxdim=2, distance_matrix=True, precision=precision)
    assert_same_diagrams(got, want, 2)


@pytest.mark.peer
@given(st.integers(5, 60), st.integers(0, 2**31 - 1), st.floats(0.3, 3.0))
@settings(max_examples=10, deadline=None)
def test_threshold_cuts_triangles_exact_vs_ripser(n, seed, thresh):
    D = distance_matrix(_cloud("gauss", n, seed))
    want = ripser.ripser(D, maxdim=2, distance_matrix=True, thresh=thresh)["dgms"]
    got = medseg_ext.vietoris_rips(D, maxdim=2, distance_matrix=True, threshold=thresh)
    assert_same_diagrams(got, want, 2)


@pytest.mark.peer
def test_paper_sized_clouds_exact_vs_ripser():
    # 185-point sliding-window clouds (the MCI setting), maxdim 2, from the distance matrix
    for seed in (3, 4):
        D = distance_matrix(_cloud("window", 185, seed))
        want = ripser.ripser(D, maxdim=2, distance_matrix=True)["dgms"]
        assert_same_diagrams(medseg_ext.vietoris_rips(D, maxdim=2, distance_matrix=True), want, 2)


@pytest.mark.peer
def test_batch_workspace_reuse_across_sizes_and_kinds():
    # one thread's workspace runs clouds of very different sizes one after the other (large, tiny,
    # the SSE tail sizes 1..9, ties, duplicates); every cloud must equal ripser.py on its own
    rng = np.random.default_rng(5)
    sizes = [120, 3, 1, 2, 4, 5, 6, 7, 8, 9, 70, 0, 33, 100, 11]
    kinds = [KINDS[i % len(KINDS)] for i in range(len(sizes))]
    D = [distance_matrix(_cloud(k, n, int(rng.integers(1 << 30)))) if n else np.zeros((0, 0))
         for k, n in zip(kinds, sizes)]
    batch = medseg_ext.vietoris_rips_batch(D, maxdim=2, distance_matrix=True)
    again = medseg_ext.vietoris_rips_batch(D, maxdim=2, distance_matrix=True)
    assert len(batch) == len(sizes)
    for b, M in enumerate(D):
        if len(M) == 0:
            assert all(len(d) == 0 for d in batch[b])
            continue
        want = ripser.ripser(M, maxdim=2, distance_matrix=True)["dgms"]
        assert_same_diagrams(batch[b], want, 2)
    for k in range(3):  # dynamic schedule, same layout and values call after call
        assert np.array_equal(batch.values[k].numpy(), again.values[k].numpy())
        assert np.array_equal(batch.offsets[k].numpy(), again.offsets[k].numpy())


def test_batch_of_paper_clouds_equals_single_calls_float64():
    X = np.stack([_cloud("window", 185, s) for s in range(4)])
    batch = medseg_ext.vietoris_rips_batch(X, maxdim=2, precision="float64")
    for b in range(len(X)):
        assert_same_diagrams(batch[b], medseg_ext.vietoris_rips(X[b], maxdim=2, precision="float64"), 2)


@pytest.mark.peer
def test_negative_zero_distances_are_zero():
    # duplicate points with -0.0 in the distance matrix (allowed: -0.0 >= 0): the packed sort keys
    # of the edges must see +0
    D = distance_matrix(_cloud("duplicates", 40, 9))
    want = ripser.ripser(D, maxdim=2, distance_matrix=True)["dgms"]
    Dn = D.copy()
    Dn[(Dn == 0) & ~np.eye(len(D), dtype=bool)] = -0.0
    assert np.signbit(Dn).any()
    assert_same_diagrams(medseg_ext.vietoris_rips(Dn, maxdim=2, distance_matrix=True), want, 2)
