"""wasserstein / bottleneck / diagram_distance_matrix against persim, GUDHI, POT, the NumPy
reference, brute force, and the metric properties (§10.2)."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import medseg_ext
from medseg_ext import _dispatch
from medseg_ext.reference import topology as ref
from topo_cases import diagrams

Q = st.sampled_from([1.0, 2.0, 3.5])
GROUND = st.sampled_from(["linf", "l2"])


@given(diagrams(), diagrams(), Q, GROUND)
@settings(max_examples=40)
def test_wasserstein_matches_reference(a, b, q, ground):
    got = medseg_ext.wasserstein(a, b, q=q, ground=ground)
    assert got == pytest.approx(ref.wasserstein(a, b, q, ground), rel=1e-9, abs=1e-12)


@given(diagrams(max_points=3), diagrams(max_points=3), Q, GROUND)
@settings(max_examples=30)
def test_wasserstein_matches_bruteforce(a, b, q, ground):
    assert medseg_ext.wasserstein(a, b, q=q, ground=ground) == pytest.approx(
        ref.wasserstein_bruteforce(a, b, q, ground), rel=1e-9, abs=1e-12)


@given(diagrams(max_points=40, zero_births=True), diagrams(max_points=40, zero_births=True), Q, GROUND)
@settings(max_examples=30)
def test_h0_dp_equals_assignment(a, b, q, ground):
    C_ = _dispatch.extension()
    from medseg_ext._tensor import desc
    import torch
    ta, tb = torch.from_numpy(a).contiguous(), torch.from_numpy(b).contiguous()
    dp = medseg_ext.wasserstein(a, b, q=q, ground=ground)  # all births 0: the DP path
    hung = C_.wasserstein_assignment_cpu(desc(ta), desc(tb), q, ground)
    assert dp == pytest.approx(hung, rel=1e-9, abs=1e-12)
    c = 0.5 if ground == "linf" else 1 / math.sqrt(2)
    assert dp == pytest.approx(ref.h0_distance_dp(a[:, 1], b[:, 1], q, c), rel=1e-9, abs=1e-12)


@given(diagrams(), diagrams(), GROUND)
@settings(max_examples=40)
def test_bottleneck_matches_reference(a, b, ground):
    assert medseg_ext.bottleneck(a, b, ground=ground) == pytest.approx(ref.bottleneck(a, b, ground), rel=1e-12,
                                                                       abs=1e-15)


@given(diagrams(), diagrams(), diagrams(), Q, GROUND)
@settings(max_examples=30)
def test_metric_properties(a, b, c, q, ground):
    w = lambda x, y: medseg_ext.wasserstein(x, y, q=q, ground=ground)  # noqa: E731
    assert w(a, a) == pytest.approx(0.0, abs=1e-12)
    assert w(a, b) == pytest.approx(w(b, a), rel=1e-12, abs=1e-12)
    assert w(a, c) <= w(a, b) + w(b, c) + 1e-9
    bn = medseg_ext.bottleneck(a, b, ground=ground)
    assert bn <= w(a, b) + 1e-12                       # bottleneck <= W_q
    assert medseg_ext.wasserstein(a, b, q=2, ground=ground) <= medseg_ext.wasserstein(a, b, q=1, ground=ground) + 1e-12
    assert medseg_ext.bottleneck(a, c, ground=ground) <= bn + medseg_ext.bottleneck(b, c, ground=ground) + 1e-12


def test_empty_diagrams_and_diagonal_points():
    a = np.array([[0.0, 1.0], [0.5, 2.5]])
    for ground, c in (("linf", 0.5), ("l2", 1 / math.sqrt(2))):
        for q in (1.0, 2.0):
            want = (((1.0 * c) ** q) + ((2.0 * c) ** q)) ** (1 / q)
            assert medseg_ext.wasserstein(a, np.zeros((0, 2)), q=q, ground=ground) == pytest.approx(want, rel=1e-12)
            on_diag = np.array([[0.3, 0.3], [1.0, 1.0]])
            assert medseg_ext.wasserstein(np.vstack([a, on_diag]), a, q=q, ground=ground) == pytest.approx(0, abs=1e-12)
    assert medseg_ext.wasserstein([], []) == 0.0
    assert medseg_ext.bottleneck(np.zeros((0, 2)), a) == pytest.approx(1.0)
    # single points: min(‖p − p'‖, (δ(p)^q + δ(p')^q)^(1/q))
    p, r = np.array([[0.0, 4.0]]), np.array([[1.0, 4.5]])
    assert medseg_ext.wasserstein(p, r, q=2) == pytest.approx(min(1.0, math.hypot(2.0, 1.75)))


def test_essential_modes():
    a = np.array([[0.0, 1.0], [0.0, np.inf]])
    b = np.array([[0.0, 2.0], [0.5, np.inf]])
    # finite part: (0,1)↔(0,2) costs 1 under L∞ (both to the diagonal: 0.5 + 1)
    assert medseg_ext.wasserstein(a, b) == pytest.approx(1.0)  # drop: finite part only
    assert medseg_ext.wasserstein(a, b, essential="match") == pytest.approx(1.5)  # + |0 − 0.5|
    assert medseg_ext.wasserstein(a, b[:1], essential="match") == math.inf
    assert medseg_ext.bottleneck(a, b, essential="match") == pytest.approx(1.0)
    far = np.array([[0.0, 2.0], [3.0, np.inf]])
    assert medseg_ext.bottleneck(a, far, essential="match") == pytest.approx(3.0)
    assert medseg_ext.bottleneck(a, far) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="essential"):
        medseg_ext.wasserstein(a, b, essential="error")


def test_bad_diagrams_raise():
    with pytest.raises(ValueError, match="d1"):
        medseg_ext.wasserstein([[0.0, np.nan]], [])
    with pytest.raises(ValueError, match="death < birth"):
        medseg_ext.wasserstein([[1.0, 0.0]], [])
    with pytest.raises(ValueError, match="births must be finite"):
        medseg_ext.wasserstein([[-np.inf, 0.0]], [])
    with pytest.raises(ValueError, match=r"\(k, 2\)"):
        medseg_ext.wasserstein(np.zeros((3, 3)), [])
    with pytest.raises(ValueError, match="q"):
        medseg_ext.wasserstein([[0, 1]], [], q=0.5)
    with pytest.raises(ValueError, match="ground"):
        medseg_ext.wasserstein([[0, 1]], [], ground="l1")


# ---------------------------------------------------------------- peers

def persim_tolerance(*dgms):
    """persim's ground distances come from sklearn's |x|²+|y|²−2x·y formula, whose absolute error is
    about sqrt(machine eps)·|x| ≈ 1.5e-8·|x| per matched pair (identical diagrams give 3e-8, not 0);
    within that, the values agree to 1e-9."""
    pts = [np.abs(d[np.isfinite(d)]) for d in dgms if np.size(d)]
    scale = max([1.0] + [float(p.max()) for p in pts if p.size])
    count = sum(len(d) for d in dgms)
    return 1e-9 + 3e-8 * scale * count


@pytest.mark.peer
@given(diagrams(max_points=12, allow_inf=True), diagrams(max_points=12, allow_inf=True))
@settings(max_examples=40)
def test_persim_parity(a, b):
    persim = pytest.importorskip("persim")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = persim.wasserstein(a, b)
        want_b = persim.bottleneck(a, b)
    assert medseg_ext.wasserstein(a, b, q=1, ground="l2", essential="drop") == pytest.approx(
        want, rel=1e-9, abs=persim_tolerance(a, b))
    assert medseg_ext.bottleneck(a, b, ground="linf") == pytest.approx(want_b, rel=1e-9, abs=1e-9)


@pytest.mark.peer
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")  # GUDHI/POT notes on empty parts
@given(diagrams(max_points=12, allow_inf=True), diagrams(max_points=12, allow_inf=True), Q)
@settings(max_examples=40)
def test_gudhi_parity(a, b, q):
    pytest.importorskip("ot")
    gw = pytest.importorskip("gudhi.wasserstein")
    gudhi = pytest.importorskip("gudhi")
    want = gw.wasserstein_distance(a, b, order=q, internal_p=np.inf, keep_essential_parts=True)
    got = medseg_ext.wasserstein(a, b, q=q, ground="linf", essential="match")
    assert got == pytest.approx(want, rel=1e-9, abs=1e-9)
    fa, fb = a[np.isfinite(a[:, 1])], b[np.isfinite(b[:, 1])]  # GUDHI expects finite input without essential parts
    want = gw.wasserstein_distance(fa, fb, order=q, internal_p=2, keep_essential_parts=False)
    assert medseg_ext.wasserstein(a, b, q=q, ground="l2") == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert medseg_ext.bottleneck(fa, fb) == pytest.approx(gudhi.bottleneck_distance(fa, fb, 0.0), rel=1e-9, abs=1e-12)


@pytest.mark.peer
def test_persim_parity_on_real_h0_diagrams():
    persim = pytest.importorskip("persim")
    rng = np.random.default_rng(0)
    dg = [medseg_ext.vietoris_rips(medseg_ext.sliding_window(rng.standard_normal(60), 3, 1), maxdim=1) for _ in range(3)]
    for k in (0, 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = persim.wasserstein(dg[0][k].numpy(), dg[1][k].numpy())
        a, b = dg[0][k].numpy(), dg[1][k].numpy()
        assert medseg_ext.wasserstein(a, b, ground="l2") == pytest.approx(want, rel=1e-9, abs=persim_tolerance(a, b))


# ---------------------------------------------------------------- matrix

@given(st.lists(diagrams(max_points=6, allow_inf=True), min_size=0, max_size=6), st.sampled_from([1.0, 2.0, math.inf]),
       GROUND, st.sampled_from(["drop", "match"]))
@settings(max_examples=25)
def test_distance_matrix_equals_pairwise(dgms, q, ground, essential):
    got = medseg_ext.diagram_distance_matrix(dgms, q=q, ground=ground, essential=essential).numpy()
    want = ref.diagram_distance_matrix(dgms, q, ground, essential)
    assert got.shape == (len(dgms), len(dgms))
    np.testing.assert_array_equal(got, got.T)
    np.testing.assert_array_equal(np.diag(got), 0)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_distance_matrix_from_ragged_batch():
    rng = np.random.default_rng(1)
    clouds = [rng.standard_normal((n, 3)) for n in (10, 14, 9, 12)]
    batch = medseg_ext.vietoris_rips_batch(clouds, maxdim=1)
    for k in (0, 1):
        got = medseg_ext.diagram_distance_matrix(batch, dim=k, ground="l2")
        want = medseg_ext.diagram_distance_matrix(batch.dimension(k), ground="l2")
        assert np.array_equal(got.numpy(), want.numpy())
    with pytest.raises(ValueError, match="dim"):
        medseg_ext.diagram_distance_matrix(batch)
