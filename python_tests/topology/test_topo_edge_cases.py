"""Edge cases of every public topology entry point (vietoris_rips, vietoris_rips_batch,
rips_memory_estimate/memory_limit, wasserstein/bottleneck, diagram_distance_matrix/_pairs,
sliding_window): empty and tiny inputs, ties, NaN/Inf, huge/tiny magnitudes, dtypes, layouts
(numpy and torch: transposed, strided, negative strides, Fortran order, expanded), bad arguments
(a clear exception naming the argument). Oracles: ripser.py (exact, same float32 rounding),
analytic diagrams (polygons, duplicates, thresholds), homogeneity and invariance properties, and
contiguous float64 copies of the same data."""
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import medseg_ext
from medseg_ext.reference import topology as ref
from topo_cases import assert_same_diagrams, clouds, diagrams, distance_matrix, sorted_pairs

ripser = pytest.importorskip("ripser")
VR = medseg_ext.vietoris_rips
ARG = "points_or_distance_matrix"


def polygon_matrix(n, radius=1.0):
    """Distance matrix of a regular n-gon from the chord lengths, so equal chords are exact ties."""
    steps = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])
    steps = np.minimum(steps, n - steps)
    return 2.0 * radius * np.sin(np.pi * steps / n)


# ---------------------------------------------------------------- vietoris_rips: sizes and ties

@pytest.mark.parametrize("maxdim", [0, 1, 3])
def test_zero_one_two_points_every_input_form(maxdim):
    for empty in (np.zeros((0, 3)), np.zeros(0), [], torch.zeros(0, 2)):
        got = VR(empty, maxdim=maxdim)
        assert [tuple(g.shape) for g in got] == [(0, 2)] * (maxdim + 1)
    got = VR(np.zeros((0, 0)), maxdim=maxdim, distance_matrix=True)
    assert [tuple(g.shape) for g in got] == [(0, 2)] * (maxdim + 1)
    ones = ((np.array([[7.0, -2.0]]), False), (torch.tensor([[1e300]], dtype=torch.float64), False),
            (np.zeros((1, 1)), True))
    for one, dm in ones:
        got = VR(one, maxdim=maxdim, distance_matrix=dm)
        assert got[0].tolist() == [[0.0, math.inf]] and all(len(g) == 0 for g in got[1:])
    # two points: one H0 bar dying at their distance, in every metric (3-4-5 triangle: exact values)
    for metric, d in (("euclidean", 5.0), ("manhattan", 7.0), ("cityblock", 7.0), ("chebyshev", 4.0)):
        got = VR([[0.0, 0.0], [3.0, 4.0]], maxdim=maxdim, metric=metric)
        np.testing.assert_array_equal(sorted_pairs(got[0]), [[0.0, d], [0.0, math.inf]])
        assert all(len(g) == 0 for g in got[1:])


@given(st.integers(1, 12), st.integers(1, 4), st.floats(-1e6, 1e6), st.integers(0, 3))
@settings(max_examples=15)
def test_all_duplicate_points_are_one_component(n, d, value, maxdim):
    X = np.full((n, d), value)
    got = VR(X, maxdim=maxdim)
    assert got[0].tolist() == [[0.0, math.inf]] and all(len(g) == 0 for g in got[1:])
    want = ripser.ripser(distance_matrix(X), distance_matrix=True, maxdim=min(maxdim, 2))["dgms"]
    assert_same_diagrams(got[:len(want)], want, len(want) - 1)


@given(st.integers(2, 12), st.integers(1, 3), st.integers(0, 2**31 - 1))
@settings(max_examples=15)
def test_duplicated_points_change_no_diagram(n, d, seed):
    # a copy of a point enters at 0 with its original: only zero-length bars, which are not reported
    rng = np.random.default_rng(seed)
    X = rng.integers(-3, 4, size=(n, d)).astype(np.float64)  # integer grid: ties as well
    Y = np.vstack([X, X[rng.integers(0, n, size=rng.integers(1, 4))]])
    Y = Y[rng.permutation(len(Y))]
    assert_same_diagrams(VR(Y, maxdim=2), VR(X, maxdim=2), 2)


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7, 8, 9, 12, 13])
@pytest.mark.parametrize("coeff", [2, 3])
def test_regular_polygon_diagrams_are_analytic(n, coeff):
    # n equidistant points on a circle: H0 has n-1 bars dying at the side (all tied) plus the
    # essential one; H1 one bar born at the side, dying when the chord of ceil(n/3) steps enters
    # (the Rips complex of the n-gon is a circle while k/n < 1/3, Adamaszek 2013)
    D = polygon_matrix(n)
    side, death = 2 * math.sin(math.pi / n), 2 * math.sin(math.pi * math.ceil(n / 3) / n)
    got = VR(D, maxdim=1, distance_matrix=True, coeff=coeff, precision="float64")
    np.testing.assert_allclose(sorted_pairs(got[0]), [[0.0, side]] * (n - 1) + [[0.0, math.inf]], rtol=1e-15)
    want_h1 = [] if n == 3 else [[side, death]]
    np.testing.assert_allclose(sorted_pairs(got[1]).reshape(-1, 2), np.reshape(want_h1, (-1, 2)), rtol=1e-15)
    # the float32 default equals ripser.py exactly, ties included; relabelling the vertices changes nothing
    want = ripser.ripser(D, distance_matrix=True, maxdim=1, coeff=coeff)["dgms"]
    assert_same_diagrams(VR(D, maxdim=1, distance_matrix=True, coeff=coeff), want, 1)
    perm = np.random.default_rng(n).permutation(n)
    assert_same_diagrams(VR(D[perm][:, perm], maxdim=1, distance_matrix=True, coeff=coeff), want, 1)


def test_collinear_points_have_no_cycles_and_mst_deaths():
    x = np.array([0.0, 1.0, 3.0, 6.0, 10.0, 10.5])
    got = VR(np.stack([x, 2 * x], 1), maxdim=2, precision="float64")  # on the line y = 2x
    np.testing.assert_allclose(sorted_pairs(got[0])[:, 1], np.sort(np.append(np.diff(x) * math.sqrt(5), math.inf)),
                               rtol=1e-14)
    assert len(got[1]) == 0 and len(got[2]) == 0


# ---------------------------------------------------------------- vietoris_rips: magnitudes

@pytest.mark.parametrize("scale", [1e150, 1e-150, 1e160, 1e-165, 1e300, 1e-300])
@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "chebyshev"])
def test_huge_and_tiny_coordinates_float64_are_homogeneous(scale, metric):
    # float64 filtration: diagrams of s*X are s * diagrams of X (up to rounding), also where the
    # Euclidean sum of squares over- or underflows (|diff| > 1e154 or < 1e-154)
    X = np.random.default_rng(1).standard_normal((9, 3))
    base = VR(X, maxdim=2, metric=metric, precision="float64")
    got = VR(X * scale, maxdim=2, metric=metric, precision="float64")
    for k in range(3):
        g, w = sorted_pairs(got[k]), sorted_pairs(base[k]) * scale
        assert g.shape == w.shape, f"H{k} at scale {scale}"
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=0)
    # batch and single calls agree there too
    batch = medseg_ext.vietoris_rips_batch([X * scale, X], maxdim=2, metric=metric, precision="float64")
    assert_same_diagrams(batch[0], got, 2)


@pytest.mark.parametrize("scale", [1e150, 1e-150, 1e39, 1e-46, 1e20, 1e-20])
def test_huge_and_tiny_distances_float32_equal_ripser(scale):
    # float32 filtration values (ripser.py's convention): beyond FLT_MAX a distance is +inf (the edge
    # never enters), below the smallest float32 it is 0 (the points merge at once), as in ripser.py
    D = distance_matrix(np.random.default_rng(2).standard_normal((8, 2))) * scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # ripser.py's float32 cast overflows on purpose
        want = ripser.ripser(D, distance_matrix=True, maxdim=1)["dgms"]
    assert_same_diagrams(VR(D, maxdim=1, distance_matrix=True), want, 1)


def test_distance_beyond_float64_is_an_edge_that_never_enters():
    # |x - y| = 2e308 > DBL_MAX: +inf in float64, the same rule as float32 above: two components
    got = VR(np.array([[-1e308], [1e308]]), maxdim=1, precision="float64")
    assert got[0].tolist() == [[0.0, math.inf], [0.0, math.inf]]
    got = VR(np.array([[-1e308], [1e308], [1e308]]), maxdim=1, precision="float64")  # the copy merges at 0
    assert got[0].tolist() == [[0.0, math.inf], [0.0, math.inf]] and len(got[1]) == 0


# ---------------------------------------------------------------- vietoris_rips: dtypes and layouts

@pytest.mark.parametrize("dtype", ["int8", "int32", "int64", "uint8", "float16", "float32", "bool"])
def test_integer_bool_and_low_precision_inputs_equal_float64(dtype):
    X = np.random.default_rng(3).integers(0, 4, size=(12, 3))
    a = X.astype(dtype)
    want = VR(a.astype(np.float64), maxdim=2)  # every value of these dtypes is exact in float64
    assert_same_diagrams(VR(a, maxdim=2), want, 2)
    assert_same_diagrams(VR(torch.from_numpy(a), maxdim=2), want, 2)
    assert all(g.dtype == torch.float64 for g in VR(a, maxdim=2))
    if dtype == "float32":
        assert_same_diagrams(VR(torch.from_numpy(a).to(torch.bfloat16), maxdim=2), want, 2)  # small ints: exact


def _layouts(X):
    """(name, non-contiguous view holding the same rows as X in the same order) for numpy and torch."""
    wide = np.zeros((X.shape[0] * 2, X.shape[1] * 3))
    wide[::2, ::3] = X
    t_wide = torch.from_numpy(wide)
    flipped = np.flip(X[::-1].copy(), 0)  # negative row stride
    return [("numpy transposed", np.ascontiguousarray(X.T).T), ("numpy strided", wide[::2, ::3]),
            ("numpy flip", flipped), ("numpy fortran", np.asfortranarray(X)),
            ("numpy flip both axes", np.flip(np.flip(X, (0, 1)).copy(), (0, 1))),
            ("torch transposed", torch.from_numpy(np.ascontiguousarray(X.T)).T), ("torch strided", t_wide[::2, ::3]),
            ("torch flipped", torch.from_numpy(X[::-1].copy()).flip(0))]


@given(st.integers(0, 10), st.integers(1, 3), st.integers(0, 2**31 - 1))
@settings(max_examples=10)
def test_non_contiguous_layouts_equal_contiguous(n, d, seed):
    X = np.random.default_rng(seed).standard_normal((n, d))
    want = VR(np.ascontiguousarray(X), maxdim=2)
    for name, view in _layouts(X):
        np.testing.assert_array_equal(np.asarray(view), X, err_msg=name)
        assert_same_diagrams(VR(view, maxdim=2), want, 2)
    D = distance_matrix(X)
    want = VR(D, maxdim=2, distance_matrix=True)
    for name, view in _layouts(D) if n else []:
        assert_same_diagrams(VR(view, maxdim=2, distance_matrix=True), want, 2)
    # a stride-0 (expanded) cloud: n copies of one point
    assert VR(torch.tensor([[1.0, 2.0]]).expand(max(n, 1), 2))[0].tolist() == [[0.0, math.inf]]


# ---------------------------------------------------------------- vietoris_rips: arguments

def test_threshold_edge_values():
    X = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])  # a duplicate: merges at 0 <= threshold 0
    got = VR(X, maxdim=2, threshold=0)
    assert got[0].tolist() == [[0.0, math.inf]] * 3 and all(len(g) == 0 for g in got[1:])
    assert_same_diagrams(got, ripser.ripser(X, maxdim=2, thresh=0.0)["dgms"], 2)
    full = VR(X, maxdim=2)
    for thr in (math.inf, "enclosing", np.float32(np.inf), torch.tensor(1e9), 1e300):
        assert_same_diagrams(VR(X, maxdim=2, threshold=thr), full, 2)
    # between two edge lengths: the longer edges are absent
    got = VR(X, maxdim=1, threshold=1.5)
    np.testing.assert_array_equal(sorted_pairs(got[0]), [[0.0, 1.0], [0.0, math.inf], [0.0, math.inf]])
    for bad in (-1.0, -1e-300, -math.inf, math.nan):
        with pytest.raises(ValueError, match="threshold"):
            VR(X, threshold=bad)
    with pytest.raises(ValueError, match="threshold"):
        VR(X, threshold="full")
    with pytest.raises(TypeError, match="threshold"):
        VR(X, threshold=None)


def test_maxdim_and_coeff_edge_values():
    X = np.random.default_rng(4).standard_normal((9, 3))
    h = {md: VR(X, maxdim=md) for md in (0, 1, 3, 5)}
    for md, got in h.items():
        assert len(got) == md + 1
        low = 1 if md else 0  # the lower dimensions do not depend on maxdim
        assert_same_diagrams(got[:low + 1], h[5][:low + 1], low)
    assert_same_diagrams(h[3], ripser.ripser(X, maxdim=3)["dgms"], 3, exact=False, atol=1e-6)
    D = distance_matrix(X)
    for p in (2, 3, 7):
        assert_same_diagrams(VR(D, maxdim=2, distance_matrix=True, coeff=p),
                             ripser.ripser(D, distance_matrix=True, maxdim=2, coeff=p)["dgms"], 2)
    # 46337, the largest prime the C++ field arithmetic takes (ripser.py aborts the process there):
    # against the NumPy boundary-matrix reference
    assert_same_diagrams(VR(D[:7, :7], maxdim=2, distance_matrix=True, coeff=46337, precision="float64"),
                         ref.vietoris_rips(D=D[:7, :7], maxdim=2, coeff=46337), 2)
    for bad in (-1, 6, 100):
        with pytest.raises(ValueError, match="maxdim"):
            VR(X, maxdim=bad)
    for bad in (1.0, True, "2", None):
        with pytest.raises(TypeError, match="maxdim"):
            VR(X, maxdim=bad)
    for bad in (1, 0, -3, 4, 9, 46339, 46349, 2**31 - 1):
        with pytest.raises(ValueError, match="coeff"):
            VR(X, coeff=bad)
    for bad in (2.0, True, "3"):
        with pytest.raises(TypeError, match="coeff"):
            VR(X, coeff=bad)
    assert VR(X, maxdim=1, coeff=np.int64(3))[0].shape == (9, 2)


@given(clouds(min_n=4, max_n=9, min_d=2, max_d=3), st.sampled_from([11, 101, 40009, 46337]), st.integers(1, 2))
@settings(max_examples=12)
def test_large_prime_coefficients_match_the_reference(X, coeff, maxdim):
    # the field's inverse table for large p (formerly an O(p^2) search: ~4 s per cloud at 46337)
    want = ref.vietoris_rips(X, maxdim=maxdim, coeff=coeff)
    assert_same_diagrams(VR(X, maxdim=maxdim, coeff=coeff, precision="float64"), want, maxdim)
    batch = medseg_ext.vietoris_rips_batch([X, X[:3], X], maxdim=maxdim, coeff=coeff, precision="float64")
    assert_same_diagrams(batch[2], want, maxdim)


def test_metric_precision_and_input_errors_name_the_argument():
    X = np.random.default_rng(5).standard_normal((6, 2))
    assert_same_diagrams(VR(X, metric="cityblock"), VR(X, metric="manhattan"), 1)
    for bad in ("cosine", "Euclidean", None, ["euclidean"]):
        with pytest.raises(ValueError, match="metric"):
            VR(X, metric=bad)
    with pytest.raises(ValueError, match="precision"):
        VR(X, precision="float16")
    cases = [(np.zeros((3, 0)), ValueError, "0 coordinates"), (np.zeros((2, 3, 4)), ValueError, r"\(n, d\)"),
             (np.array([1.0, 2.0]), ValueError, r"\(n, d\)"), (3.0, ValueError, r"\(n, d\)"),
             ("abc", TypeError, "dtype"), (np.zeros((2, 2), complex), TypeError, "real"),
             (torch.zeros(2, 2, dtype=torch.complex64), TypeError, "real"), ([[1, 2], [3]], TypeError, "array"),
             (None, TypeError, "dtype"), (np.array([[1.0, None]]), TypeError, "dtype")]
    for x, exc, msg in cases:
        with pytest.raises(exc, match=msg) as info:
            VR(x)
        assert ARG in str(info.value)
    for bad in (np.nan, np.inf, -np.inf):
        t = torch.zeros(4, 2)
        t[3, 1] = bad
        with pytest.raises(ValueError, match=ARG):
            VR(t.T.contiguous().T)


@pytest.mark.parametrize("kind", ["nonsym", "diag", "nan_diag", "negative", "inf", "nan", "nonsquare", "1d", "3d"])
def test_bad_distance_matrices_raise_for_single_and_batch(kind):
    D = distance_matrix(np.random.default_rng(6).standard_normal((5, 2)))
    msg = {"nonsym": "not symmetric", "diag": "zero diagonal", "nan_diag": "NaN", "negative": "negative",
           "inf": "Inf", "nan": "NaN", "nonsquare": "square", "1d": "square", "3d": "square"}[kind]
    if kind == "nonsym":
        D[0, 1] *= 1 + 1e-6
    elif kind == "diag":
        D[2, 2] = 1e-300
    elif kind == "nan_diag":
        D[0, 0] = np.nan
    elif kind == "negative":
        D[1, 3] = D[3, 1] = -0.5
    elif kind in ("inf", "nan"):
        D[1, 4] = D[4, 1] = np.inf if kind == "inf" else np.nan
    elif kind == "nonsquare":
        D = D[:, :4]
    elif kind == "1d":
        D = D[0]
    else:
        D = D[None]
    with pytest.raises(ValueError, match=msg) as info:
        VR(D, distance_matrix=True)
    assert ARG in str(info.value)
    with pytest.raises(ValueError, match=r"clouds\[1\]"):
        medseg_ext.vietoris_rips_batch([np.zeros((2, 2)), D], distance_matrix=True)
    if D.ndim == 2 and D.shape[0] == D.shape[1]:
        with pytest.raises(ValueError, match="clouds"):
            medseg_ext.vietoris_rips_batch(np.stack([np.zeros_like(D), D]), distance_matrix=True)
        with pytest.raises(ValueError, match="clouds"):
            medseg_ext.vietoris_rips_batch(torch.from_numpy(np.stack([D, D])).transpose(1, 2), distance_matrix=True)


def test_distance_matrix_symmetry_tolerance_and_lower_triangle():
    # asymmetry within 1e-9 relative is rounding: accepted, and the lower triangle is what counts
    D = distance_matrix(np.random.default_rng(7).standard_normal((7, 3)))
    E = D.copy()
    E[np.triu_indices(7, 1)] *= 1 + 1e-12
    assert_same_diagrams(VR(E, maxdim=2, distance_matrix=True, precision="float64"),
                         VR(D, maxdim=2, distance_matrix=True, precision="float64"), 2)


# ---------------------------------------------------------------- memory

class _NoWork:
    """Stands in for the extension: the estimates pass through, any computing entry point fails."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        if name in ("rips_cpu", "rips_batch_cpu", "rips_batch_cpu_triangles"):
            raise AssertionError(f"{name} ran although memory_limit should have refused the call")
        return getattr(self._real, name)


def test_tiny_memory_limit_refuses_before_any_work(monkeypatch):
    from medseg_ext import _dispatch
    from medseg_ext.topology import rips

    real = _dispatch.extension()
    monkeypatch.setattr(rips._dispatch, "extension", lambda: _NoWork(real))
    X = np.random.default_rng(8).standard_normal((30, 3))
    for limit in (1, 1e3, 2**10):
        with pytest.raises(MemoryError, match="memory_limit") as info:
            VR(X, maxdim=2, memory_limit=limit)
        assert f"{float(limit):.0f} bytes" in str(info.value)  # the limit is readable, not "0.0 MiB"
        with pytest.raises(MemoryError, match="memory_limit"):
            medseg_ext.vietoris_rips_batch([X, X[:3]], maxdim=2, memory_limit=limit)
        with pytest.raises(MemoryError, match="memory_limit"):
            medseg_ext.vietoris_rips_batch(X[None], maxdim=1, memory_limit=limit)
    for bad in (0, -1, math.nan, -math.inf):
        with pytest.raises(ValueError, match="memory_limit"):
            VR(X, memory_limit=bad)
        with pytest.raises(ValueError, match="memory_limit"):
            medseg_ext.vietoris_rips_batch([X], memory_limit=bad)
    for bad in ("1GB", [1]):
        with pytest.raises(TypeError, match="memory_limit"):
            VR(X, memory_limit=bad)
    monkeypatch.undo()
    assert_same_diagrams(VR(X, maxdim=1, memory_limit=math.inf), VR(X, maxdim=1), 1)


def test_rips_memory_estimate_edge_values():
    est = medseg_ext.rips_memory_estimate
    assert est(0) == 0 and est(0, 5) == 0
    assert 0 < est(1) <= est(2) < est(100) < est(100, 2) < est(100, 3)
    assert est(100, 1, "float32") < est(100, 1, "float64")
    assert est(np.int64(50), np.int32(2)) == est(50, 2)
    assert est(2**40, 5) > 2**200 and math.isfinite(float(est(2**40, 5)))  # no wrap-around at huge sizes
    assert est(10**6, 0) >= 10**12 * 12  # the n×n float64 + float32 matrices are counted
    with pytest.raises(ValueError, match="n_points"):
        est(-1)
    with pytest.raises(TypeError, match="n_points"):
        est(100.0)
    with pytest.raises(ValueError, match="maxdim"):
        est(10, 6)
    with pytest.raises(ValueError, match="precision"):
        est(10, 1, "half")


# ---------------------------------------------------------------- vietoris_rips_batch

def test_batch_empty_batches_and_empty_clouds():
    for md in (0, 3):
        for empty in ([], (), np.zeros((0, 5, 2)), torch.zeros(0, 4, 3)):
            r = medseg_ext.vietoris_rips_batch(empty, maxdim=md)
            assert len(r) == 0 and r.maxdim == md and r.to_list() == []
            assert all(v.shape == (0, 2) and o.tolist() == [0] for v, o in zip(r.values, r.offsets))
        r = medseg_ext.vietoris_rips_batch(np.zeros((0, 3, 3)), maxdim=md, distance_matrix=True)
        assert len(r) == 0
        r = medseg_ext.vietoris_rips_batch(np.zeros((3, 0, 2)), maxdim=md)
        assert len(r) == 3 and all(o.tolist() == [0, 0, 0, 0] for o in r.offsets)
        r = medseg_ext.vietoris_rips_batch(np.zeros((2, 1, 4)), maxdim=md)
        assert [c[0].tolist() for c in r.to_list()] == [[[0.0, math.inf]]] * 2
    X = np.random.default_rng(9).standard_normal((6, 2))
    clouds = [np.zeros((0, 2)), X, [], np.zeros((0, 7)), X[:1], X[:2]]  # empty clouds may have any width
    r = medseg_ext.vietoris_rips_batch(clouds, maxdim=2)
    assert len(r) == 6
    for b, c in enumerate(clouds):
        assert_same_diagrams(r[b], VR(np.asarray(c, dtype=np.float64).reshape(-1, 2), maxdim=2), 2)
    assert_same_diagrams(r[-1], r[5], 2)
    with pytest.raises(IndexError):
        r[6]
    with pytest.raises(IndexError):
        r[-7]


def test_batch_layouts_dtypes_and_mixed_inputs_equal_float64():
    rng = np.random.default_rng(10)
    X = rng.integers(-3, 4, size=(4, 7, 3))
    want = medseg_ext.vietoris_rips_batch(X.astype(np.float64), maxdim=2)
    variants = [X.astype(np.int32), X.astype(np.float16), torch.from_numpy(X), np.asfortranarray(X.astype(float)),
                np.flip(X[::-1].astype(float), 0), torch.from_numpy(np.ascontiguousarray(X.transpose(1, 0, 2))
                                                                     ).transpose(0, 1),
                [X[b].T.copy().T for b in range(4)], [torch.from_numpy(X[b]) for b in range(4)],
                [X[0], torch.from_numpy(X[1].astype(np.float32)), X[2].tolist(), np.flip(X[3][::-1].copy(), 0)]]
    for v in variants:
        got = medseg_ext.vietoris_rips_batch(v, maxdim=2)
        for b in range(4):
            assert_same_diagrams(got[b], want[b], 2)


@given(st.lists(st.integers(0, 9), min_size=1, max_size=4), st.integers(0, 2**31 - 1), st.sampled_from([0, 1, 3]))
@settings(max_examples=10)
def test_batch_offsets_are_consistent_ragged_layout(sizes, seed, maxdim):
    rng = np.random.default_rng(seed)
    clouds = [rng.standard_normal((n, 2)) for n in sizes]
    r = medseg_ext.vietoris_rips_batch(clouds, maxdim=maxdim)
    for k in range(maxdim + 1):
        off = r.offsets[k]
        assert off.dtype == torch.int64 and off.shape == (len(sizes) + 1,) and int(off[0]) == 0
        assert int(off[-1]) == r.values[k].shape[0] and bool((off[1:] >= off[:-1]).all())
    # H0 of cloud b has exactly n_b points (n_b - 1 finite + 1 essential; no threshold)
    assert (torch.diff(r.offsets[0]).tolist()) == sizes
    for b in range(len(sizes)):
        assert_same_diagrams(r[b], VR(clouds[b], maxdim=maxdim), maxdim)


def test_batch_bad_inputs_name_the_argument():
    X = np.zeros((3, 2))
    with pytest.raises(ValueError, match="same number of coordinates"):
        medseg_ext.vietoris_rips_batch([X, np.zeros((2, 3))])
    for bad, exc, msg in (("abc", TypeError, "clouds"), ((x for x in [X]), TypeError, "clouds"),
                          (42, TypeError, "clouds"), (np.zeros((1, 2, 3, 4)), ValueError, r"\(B, n, d\)"),
                          (np.zeros(4), ValueError, r"\(B, n, d\)"), (["abc"], TypeError, r"clouds\[0\]"),
                          ([X, np.zeros((2, 0))], ValueError, r"clouds\[1\]"),
                          ([X, np.zeros((2, 2, 2))], ValueError, r"clouds\[1\]"),
                          (np.zeros((2, 3, 0)), ValueError, "0 coordinates")):
        with pytest.raises(exc, match=msg):
            medseg_ext.vietoris_rips_batch(bad)
    for bad in (np.nan, np.inf):
        T = torch.zeros(2, 4, 2)
        T[1, 2, 0] = bad
        with pytest.raises(ValueError, match="clouds: contains"):
            medseg_ext.vietoris_rips_batch(T.transpose(1, 2).contiguous().transpose(1, 2))
        with pytest.raises(ValueError, match=r"clouds\[1\]"):
            medseg_ext.vietoris_rips_batch(list(T))
    for kw, msg in (({"maxdim": 6}, "maxdim"), ({"coeff": 4}, "coeff"), ({"threshold": -1}, "threshold"),
                    ({"metric": "l2"}, "metric"), ({"precision": "x"}, "precision"), ({"chunk_size": 0}, "chunk_size"),
                    ({"device": "tpu"}, "device")):
        with pytest.raises(ValueError, match=msg):
            medseg_ext.vietoris_rips_batch([X], **kw)
    with pytest.raises(TypeError, match="chunk_size"):
        medseg_ext.vietoris_rips_batch([X], chunk_size=1.5)


# ---------------------------------------------------------------- wasserstein / bottleneck

QS = st.sampled_from([1.0, 2.0, 3.5, math.inf])
GROUNDS = st.sampled_from(["linf", "l2"])


def dist(a, b, q, ground, essential="drop"):
    return medseg_ext.wasserstein(a, b, q=q, ground=ground, essential=essential)


def test_empty_and_diagonal_only_diagrams():
    shapes = [[], np.zeros((0, 2)), np.zeros(0), torch.zeros(0, 2), np.zeros((0, 0))]
    diag = np.array([[0.5, 0.5], [3.0, 3.0], [-2.0, -2.0]])
    for q in (1.0, 2.0, math.inf):
        for ground in ("linf", "l2"):
            for essential in ("drop", "match", "error"):
                for a in shapes:
                    for b in shapes + [diag]:
                        assert dist(a, b, q, ground, essential) == 0.0
                        assert dist(b, a, q, ground, essential) == 0.0
    # one point against nothing: its distance to the diagonal, (d - b)/2 (linf) or (d - b)/sqrt(2) (l2)
    p = np.array([[1.0, 4.0]])
    assert dist(p, [], 1.0, "linf") == 1.5 and dist(p, diag, math.inf, "linf") == 1.5
    assert dist(p, [], 2.0, "l2") == pytest.approx(3 / math.sqrt(2), rel=1e-15)


@given(diagrams(max_points=6, allow_inf=True), diagrams(max_points=6, allow_inf=True), QS, GROUNDS,
       st.integers(0, 2**31 - 1))
@settings(max_examples=25)
def test_diagonal_points_permutations_and_layouts_change_nothing(a, b, q, ground, seed):
    rng = np.random.default_rng(seed)
    base = dist(a, b, q, ground, "match")
    diag_pts = np.repeat(rng.random((rng.integers(1, 4), 1)) * 3, 2, axis=1)
    a2 = np.vstack([a, diag_pts])[rng.permutation(len(a) + len(diag_pts))]
    assert dist(a2, b, q, ground, "match") == pytest.approx(base, rel=1e-12, abs=1e-15)
    assert dist(b, a, q, ground, "match") == pytest.approx(base, rel=1e-12, abs=1e-15)
    # non-contiguous numpy/torch views of the same rows give the same bits
    for view in (np.asfortranarray(a), np.flip(a[::-1].copy(), 0), torch.from_numpy(a.T.copy()).T,
                 torch.from_numpy(np.repeat(a, 2, axis=0))[::2]):
        assert dist(view, b, q, ground, "match") == base


@given(diagrams(max_points=6, allow_inf=True), diagrams(max_points=6, allow_inf=True), QS, GROUNDS,
       st.sampled_from([-1000, -600, -100, 0, 100, 600, 1000]), st.sampled_from(["drop", "match"]))
@settings(max_examples=40)
def test_homogeneous_under_power_of_two_scaling(a, b, q, ground, e, essential):
    # W_q(s·a, s·b) = s·W_q(a, b); s a power of two keeps the inputs exact. At 2^±1000 the sum of
    # cost^q over- or underflows unless the costs are rescaled first.
    s = 2.0 ** e
    want = dist(a, b, q, ground, essential)
    got = dist(a * s, b * s, q, ground, essential)
    if math.isinf(want):
        assert math.isinf(got)
    else:
        assert got == pytest.approx(want * s, rel=1e-9, abs=1e-12 * s)


def test_extreme_magnitudes_against_analytic_values():
    for v in (1e300, 1e-300, 1e150, 1e-150, 2.0 ** 1022):
        p = np.array([[0.0, v]])
        for q in (1.0, 2.0, 3.0, 50.0, math.inf):
            assert dist(p, [], q, "linf") == pytest.approx(v / 2, rel=1e-14)
            assert dist(np.vstack([p, p]), [], q, "linf") == pytest.approx(v / 2 * (2 ** (1 / q) if
                                                                                math.isfinite(q) else 1), rel=1e-14)
        assert dist([[0.0, v], [0.0, math.inf]], [[0.0, math.inf]], 2.0, "l2", "match") == pytest.approx(
            v / math.sqrt(2), rel=1e-14)
    # large q: W_q tends to the bottleneck distance from above
    a, b = np.array([[0.0, 1.0], [0.2, 3.0]]), np.array([[0.1, 1.3]])
    bn = medseg_ext.bottleneck(a, b)
    for q in (1.0, 2.0, 10.0, 100.0, 1000.0):
        assert bn <= dist(a, b, q, "linf") <= bn * 3 ** (1 / q) + 1e-12


def test_infinite_deaths_per_essential_mode():
    a = np.array([[0.0, 1.0], [0.0, np.inf], [2.0, np.inf]])
    b = np.array([[0.0, 2.0], [0.5, np.inf], [1.0, np.inf]])
    fa, fb = a[:1], b[:1]
    for q in (1.0, 2.0, math.inf):
        assert dist(a, b, q, "linf") == dist(fa, fb, q, "linf")  # drop: the finite parts only
        # match: sorted births paired, |0 - 0.5| and |2 - 1|, combined with the finite part
        fin, ess = dist(fa, fb, q, "linf"), [0.5, 1.0]
        want = max([fin] + ess) if math.isinf(q) else (fin ** q + sum(e ** q for e in ess)) ** (1 / q)
        assert dist(a, b, q, "linf", "match") == pytest.approx(want, rel=1e-14)
        assert dist(a, b[:2], q, "linf", "match") == math.inf  # 2 vs 1 essential points
        for x, y, arg in ((a, fb, "d1"), (fa, b, "d2")):
            with pytest.raises(ValueError, match=f"{arg}: has points with death = inf"):
                dist(x, y, q, "linf", "error")


@pytest.mark.parametrize("fn", ["wasserstein", "bottleneck", "matrix", "pairs"])
def test_bad_diagrams_name_the_argument(fn):
    good = np.array([[0.0, 1.0]])
    bad = [(np.zeros((2, 3)), ValueError, r"\(k, 2\)"), (np.array([0.0, 1.0]), ValueError, r"\(k, 2\)"),
           (np.zeros((1, 1, 2)), ValueError, r"\(k, 2\)"), (np.zeros((0, 3)), ValueError, r"\(k, 2\)"),
           (np.zeros((2, 0)), ValueError, r"\(k, 2\)"), (np.float64(1.0), ValueError, r"\(k, 2\)"),
           ([[0.0, np.nan]], ValueError, "NaN"), ([[np.nan, 1.0]], ValueError, "NaN"),
           ([[1.0, 0.5]], ValueError, "death < birth"), ([[0.0, -np.inf]], ValueError, "finite or \\+inf"),
           ([[np.inf, np.inf]], ValueError, "births must be finite"), ([[-np.inf, 0.0]], ValueError, "births"),
           ([[-1e308, 1e308]], ValueError, "2\\^1022"), ([[0.0, 2.0 ** 1023]], ValueError, "2\\^1022"),
           ([["a", "b"]], TypeError, "real numbers|numbers"), (np.zeros((1, 2), complex), TypeError, "real"),
           ([[0, 1], [2]], TypeError, "array")]
    for d, exc, msg in bad:
        if fn == "wasserstein":
            with pytest.raises(exc, match=msg) as i1:
                medseg_ext.wasserstein(good, d)
            assert "d2" in str(i1.value)
            with pytest.raises(exc, match=msg) as i2:
                medseg_ext.wasserstein(d, good, q=2)
            assert "d1" in str(i2.value)
        elif fn == "bottleneck":
            with pytest.raises(exc, match=msg) as i1:
                medseg_ext.bottleneck(good, d)
            assert "d2" in str(i1.value)
        elif fn == "matrix":
            with pytest.raises(exc, match=msg) as i1:
                medseg_ext.diagram_distance_matrix([good, good, d])
            assert "diagrams[2]" in str(i1.value)
        else:
            with pytest.raises(exc, match=msg) as i1:
                medseg_ext.diagram_distance_pairs([d, good], [[0, 1]])
            assert "diagrams[0]" in str(i1.value)


def test_bad_q_ground_essential_raise():
    a, b = np.array([[0.0, 1.0]]), np.array([[0.5, 2.0]])
    calls = [lambda **kw: medseg_ext.wasserstein(a, b, **kw),
             lambda **kw: medseg_ext.diagram_distance_matrix([a, b], **kw),
             lambda **kw: medseg_ext.diagram_distance_pairs([a, b], [[0, 1]], **kw)]
    for call in calls:
        for q in (0, 0.5, -1, -math.inf, math.nan, 1 - 1e-12):
            with pytest.raises(ValueError, match="q"):
                call(q=q)
        for q in ("2", None, True, [1.0], b"1"):
            with pytest.raises(TypeError, match="q"):
                call(q=q)
        for ground in ("L2", "l1", None, "inf"):
            with pytest.raises(ValueError, match="ground"):
                call(ground=ground)
        for essential in ("keep", None, "Drop"):
            with pytest.raises(ValueError, match="essential"):
                call(essential=essential)
    for ground in ("L2", None):
        with pytest.raises(ValueError, match="ground"):
            medseg_ext.bottleneck(a, b, ground=ground)
    with pytest.raises(ValueError, match="essential"):
        medseg_ext.bottleneck(a, b, essential="x")
    # numeric q of other types: numpy scalars, ints, a 0-d tensor
    for q in (np.float32(2.0), 2, np.int64(2), torch.tensor(2.0)):
        assert medseg_ext.wasserstein(a, b, q=q) == medseg_ext.wasserstein(a, b, q=2.0)
    assert medseg_ext.wasserstein(a, b, q=math.inf) == medseg_ext.bottleneck(a, b)


def test_diagram_dtypes_equal_float64():
    a = np.array([[0, 2], [1, 5], [3, 3]])
    b = np.array([[0, 1], [2, 6]])
    want = medseg_ext.wasserstein(a.astype(float), b.astype(float), q=2)
    for dt in (np.int8, np.int32, np.int64, np.uint8, np.float16, np.float32):
        assert medseg_ext.wasserstein(a.astype(dt), b.astype(dt), q=2) == want
        assert medseg_ext.wasserstein(torch.from_numpy(a.astype(dt)), b, q=2) == want
    assert medseg_ext.diagram_distance_matrix([a.astype(np.float16), torch.from_numpy(b)], q=2)[0, 1].item() == want


# ---------------------------------------------------------------- distance matrices and pairs

@given(st.lists(diagrams(max_points=5, allow_inf=True), min_size=0, max_size=5), QS, GROUNDS)
@settings(max_examples=15)
def test_distance_matrix_is_a_pseudometric(dgms, q, ground):
    M = medseg_ext.diagram_distance_matrix(dgms, q=q, ground=ground, essential="match").numpy()
    K = len(dgms)
    assert M.shape == (K, K) and M.dtype == np.float64
    np.testing.assert_array_equal(M, M.T)
    np.testing.assert_array_equal(np.diag(M), 0.0)
    assert (M >= 0).all()
    fin = np.isfinite(M)
    for i in range(K):
        for j in range(K):
            if i < j:  # the upper triangle is computed as (i, j) and mirrored
                assert M[i, j] == dist(dgms[i], dgms[j], q, ground, "match")
                assert M[i, j] == pytest.approx(dist(dgms[j], dgms[i], q, ground, "match"), rel=1e-12, abs=1e-15)
            for k in range(K):
                if fin[i, k] and fin[k, j]:
                    assert M[i, j] <= M[i, k] + M[k, j] + 1e-9 * (1 + M[i, k] + M[k, j])


def test_distance_matrix_and_pairs_edge_inputs():
    a, b = np.array([[0.0, 1.0]]), np.array([[0.0, 3.0], [1.0, np.inf]])
    assert medseg_ext.diagram_distance_matrix([]).shape == (0, 0)
    assert medseg_ext.diagram_distance_matrix(()).shape == (0, 0)
    assert medseg_ext.diagram_distance_matrix([a]).tolist() == [[0.0]]
    M = medseg_ext.diagram_distance_matrix([[], a, np.zeros((0, 2)), b])
    np.testing.assert_array_equal(M.numpy(), [[0, 0.5, 0, 1.5], [0.5, 0, 0.5, 2.0],
                                              [0, 0.5, 0, 1.5], [1.5, 2.0, 1.5, 0]])
    for bad in (torch.zeros(2, 3, 2), np.zeros((2, 3, 2)), (d for d in [a]), "ab", 3):
        with pytest.raises(TypeError, match="diagrams"):
            medseg_ext.diagram_distance_matrix(bad)
    P = medseg_ext.diagram_distance_pairs
    assert P([], np.zeros((0, 2), dtype=np.int64)).shape == (0,)
    assert P([a, b], []).shape == (0,)
    with pytest.raises(ValueError, match="pairs: indices"):
        P([], [[0, 0]])
    pairs = np.array([[0, 1], [1, 0], [1, 1], [3, 2]])
    want = M.numpy()[pairs[:, 0], pairs[:, 1]]
    dg = [[], a, np.zeros((0, 2)), b]
    for view in (pairs, np.flip(pairs[::-1], 0), np.asfortranarray(pairs), pairs.astype(np.uint8),
                 pairs.astype(np.int32), torch.from_numpy(pairs), torch.from_numpy(pairs.T.copy()).T):
        np.testing.assert_array_equal(P(dg, view).numpy(), want)
    for bad, exc, msg in (([0, 1], ValueError, r"\(P, 2\)"), (np.zeros((2, 3), int), ValueError, r"\(P, 2\)"),
                          ([[0.0, 1.0]], TypeError, "integer"), (np.array([[True, False]]), TypeError, "integer"),
                          ([[0, "1"]], TypeError, "integer"), ([[0, 4]], ValueError, "0..3"),
                          ([[-1, 0]], ValueError, "0..3"), (np.array([[0, 2**62]]), ValueError, "0..3")):
        with pytest.raises(exc, match=msg):
            P(dg, bad)


def test_ragged_diagrams_inputs():
    r = medseg_ext.vietoris_rips_batch([np.zeros((0, 2)), np.random.default_rng(11).standard_normal((6, 2)),
                                        np.zeros((1, 2))], maxdim=1)
    for k in (0, 1):
        want = medseg_ext.diagram_distance_matrix(r.dimension(k), q=2)
        assert torch.equal(medseg_ext.diagram_distance_matrix(r, dim=k, q=2), want)
        assert torch.equal(medseg_ext.diagram_distance_matrix(r, dim=np.int64(k), q=2), want)
    for dim, exc in ((2, ValueError), (-1, ValueError), ("0", TypeError), (0.0, TypeError), (None, ValueError)):
        with pytest.raises(exc, match="dim"):
            medseg_ext.diagram_distance_matrix(r, dim=dim)
    with pytest.raises(ValueError, match="essential='error'"):
        medseg_ext.diagram_distance_matrix(r, dim=0, essential="error")
    empty = medseg_ext.RaggedDiagrams.concat([], maxdim=1)
    assert medseg_ext.diagram_distance_matrix(empty, dim=1).shape == (0, 0)


# ---------------------------------------------------------------- sliding_window

def test_sliding_window_layouts_and_dtypes():
    v = np.arange(12.0)
    want = ref.sliding_window(v, 3, 2)
    for x in (v, v.tolist(), torch.from_numpy(v), np.flip(v[::-1], 0), v.reshape(12, 1)[:, 0],
              np.repeat(v, 2)[::2], torch.from_numpy(np.repeat(v, 2))[::2], v.astype(np.int64), v.astype(np.float16)):
        got = medseg_ext.sliding_window(x, np.int64(3), np.int32(2))
        np.testing.assert_array_equal(np.asarray(got, dtype=np.float64), want)
    M = np.arange(24.0).reshape(2, 12)
    for x in (np.asfortranarray(M), np.flip(M[:, ::-1].copy(), 1), torch.from_numpy(M.T.copy()).T):
        got = medseg_ext.sliding_window(x, 3, 2, drop_last=True)
        np.testing.assert_array_equal(np.asarray(got), np.stack([ref.sliding_window(m, 3, 2, True) for m in M]))
    assert medseg_ext.sliding_window(np.zeros(0), 3, 1).shape == (0, 3)
    assert medseg_ext.sliding_window(v, 1 << 30, 1).shape == (0, 1 << 30)
    assert medseg_ext.sliding_window(np.zeros((2, 0, 5)), 2, 1).shape == (2, 0, 4, 2)
    for bad in ("abcd", None, np.array([1, None]), [[1, 2], [3]]):
        with pytest.raises(TypeError, match="x"):
            medseg_ext.sliding_window(bad, 2, 1)
    with pytest.raises(ValueError, match="dim"):
        medseg_ext.sliding_window(v, (1 << 30) + 1, 1)
    with pytest.raises(TypeError, match="dim"):
        medseg_ext.sliding_window(v, True, 1)


# ---------------------------------------------------------------- GPU path (Triton; interpreter here)

@pytest.mark.triton
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the interpreter's plain sum of squares
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_gpu_path_keeps_the_cpu_doubles_at_extreme_scales(precision):
    from helpers import HAVE_CUDA, HAVE_TRITON
    from topo_cases import assert_bitwise

    if not HAVE_TRITON:
        pytest.skip("triton is not installed")
    rng = np.random.default_rng(12)
    X = rng.standard_normal((6, 3))
    clouds = [X * 1e160, X * 1e-165, X, np.vstack([X[:3], X[:2]]) * 1e-170, np.zeros((0, 3)), X[:1] * 1e200]
    dev = "cuda" if HAVE_CUDA else "cpu"
    with medseg_ext.use_backend("triton"):
        got = medseg_ext.vietoris_rips_batch([torch.from_numpy(c).to(dev) for c in clouds], maxdim=1,
                                             precision=precision)
    want = medseg_ext.vietoris_rips_batch(clouds, maxdim=1, precision=precision, device="cpu")
    assert_bitwise(got, want)
    if precision == "float64":  # and the CPU doubles are the scaled diagrams of X
        for b, s in ((0, 1e160), (1, 1e-165)):
            np.testing.assert_allclose(sorted_pairs(want[b][0]), sorted_pairs(want[2][0]) * s, rtol=1e-12)
