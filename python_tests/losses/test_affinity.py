"""Class-balanced weights, histograms and the balanced affinity loss against the NumPy reference,
the paper digest's computed tables, and the analytic gradient of the centre regulariser."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from medseg_ext.losses import affinity as A
from medseg_ext.reference import losses as ref


def test_cb_weights_reproduce_the_digest_table():
    # seeds-losses.md §1.8, β = 0.999, normalised to sum C
    opix = A.class_balanced_weights([1993, 1044, 1863, 1978, 2042], 0.999)
    np.testing.assert_allclose(opix.numpy(), [0.9346, 1.2456, 0.9555, 0.9368, 0.9276], atol=1e-4)
    compass = A.class_balanced_weights([1548, 10020], 0.999)
    np.testing.assert_allclose(compass.numpy(), [1.1189, 0.8811], atol=1e-4)
    # β = 0.99 saturates on these counts: all weights 1, and the user is told
    with pytest.warns(RuntimeWarning, match="saturated"):
        w = A.class_balanced_weights([1993, 1044, 1863, 1978, 2042], 0.99)
    np.testing.assert_allclose(w.numpy(), np.ones(5), atol=5e-4)  # "exactly 1.000" to the digest's 3 decimals


@settings(max_examples=50)
@given(st.lists(st.integers(0, 10**7), min_size=1, max_size=8), st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.999, 0.9999]))
def test_cb_weights_match_reference(counts, beta):
    got = A.class_balanced_weights(counts, beta, warn=False).numpy()
    np.testing.assert_allclose(got, ref.class_balanced_weights(counts, beta), rtol=1e-9, atol=1e-12)
    if any(counts):
        assert got.sum() == pytest.approx(len(counts))
    assert np.all(got[np.asarray(counts) == 0] == 0)


def test_cb_weights_bad_input():
    with pytest.raises(ValueError, match="beta"):
        A.class_balanced_weights([3, 4], 1.0)
    with pytest.raises(ValueError, match="counts"):
        A.class_balanced_weights([3, -1], 0.9)


@settings(max_examples=30)
@given(st.integers(0, 10_000), st.integers(1, 6), st.booleans())
def test_label_histogram_and_counter(seed, C, ignore):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, size=(4, 5, 3))
    ii = None
    if ignore:
        ii = 255
        y[0, 0, 0] = 255
    t = torch.from_numpy(y)
    valid = y != 255
    px = A.label_histogram(t, C, ignore_index=ii)
    np.testing.assert_array_equal(px.numpy(), [((y == c) & valid).sum() for c in range(C)])
    im = A.label_histogram(t, C, unit="images", ignore_index=ii)
    np.testing.assert_array_equal(im.numpy(), [sum(((y[b] == c) & valid[b]).any() for b in range(4)) for c in range(C)])
    counter = A.ClassCounter(C, unit="pixels", ignore_index=ii)
    counter.update(t)
    counter.update(t)
    np.testing.assert_array_equal(counter.counts.numpy(), 2 * px.numpy())
    assert "counts" in counter.state_dict()
    with pytest.raises(ValueError, match="labels"):
        A.label_histogram(torch.full((2, 3), C), C)


@settings(max_examples=30)
@given(st.integers(0, 10_000), st.integers(2, 5), st.integers(1, 3), st.integers(1, 6), st.sampled_from([1.0, 4.0, 130.0]))
def test_affinity_and_loss_match_reference(seed, C, m, h, sigma):
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((11, h)) * 2
    W = rng.standard_normal((C, m, h))
    y = rng.integers(0, C, size=11)
    cw = rng.random(C) + 0.1
    d = A.gaussian_affinity(torch.from_numpy(f), torch.from_numpy(W), sigma)
    np.testing.assert_allclose(d.numpy(), ref.gaussian_affinity(f, W, sigma), rtol=1e-9, atol=1e-12)
    for weight in (None, cw):
        got = A.balanced_affinity_loss(d, torch.from_numpy(y), torch.from_numpy(W), margin=0.1,
                                       class_weight=None if weight is None else torch.from_numpy(weight))
        want = ref.balanced_affinity_loss(d.numpy(), y, W, 0.1, weight)
        assert float(got) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_feature_maps_and_module():
    torch.manual_seed(0)
    layer = A.ClusteringAffinity(num_classes=3, centres_per_class=2, features=4, sigma=10.0)
    fmap = torch.randn(2, 4, 5, 6)
    d = layer(fmap)
    assert d.shape == (2, 3, 5, 6) and bool(((d > 0) & (d <= 1)).all())
    flat = layer(fmap.movedim(1, -1).reshape(-1, 4))
    torch.testing.assert_close(d.movedim(1, -1).reshape(-1, 3), flat)
    labels = torch.randint(0, 3, (2, 5, 6))
    loss = A.BalancedAffinityLoss(layer, margin=0.1)(d, labels)
    loss.backward()
    assert layer.centres.grad is not None and torch.isfinite(layer.centres.grad).all()


def test_regulariser_gradient_is_the_analytic_one():
    # seeds-losses.md §1.4: dR/dD_jk = (2/N_pair)(D_jk − μ), dD_jk/dw_j = 2(w_j − w_k)
    torch.manual_seed(1)
    W = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    A.centre_spread_regulariser(W).backward()
    w = W.detach().reshape(-1, 4)
    M = w.shape[0]
    D = {(j, k): float(((w[j] - w[k]) ** 2).sum()) for j in range(M) for k in range(j + 1, M)}
    mu, npair = sum(D.values()) / len(D), len(D)
    want = torch.zeros_like(w)
    for (j, k), djk in D.items():
        g = (2.0 / npair) * (djk - mu) * 2.0 * (w[j] - w[k])
        want[j] += g
        want[k] -= g
    torch.testing.assert_close(W.grad.reshape(-1, 4), want)


def test_hinge_properties():
    # a sample whose own class affinity beats every other by more than the margin has no hinge loss
    d = torch.tensor([[0.9, 0.1, 0.2], [0.3, 0.35, 0.1]], dtype=torch.float64)
    W = torch.zeros(3, 1, 2, dtype=torch.float64)  # R(W) = 0 for coincident centres
    per = A.balanced_affinity_loss(d, torch.tensor([0, 1]), W, margin=0.1, reduction="none")
    torch.testing.assert_close(per, torch.tensor([0.0, (0.1 + 0.3 - 0.35)], dtype=torch.float64))
    with pytest.raises(ValueError, match="labels"):
        A.balanced_affinity_loss(d, torch.tensor([0, 3]), W)
    with pytest.raises(ValueError, match="sigma"):
        A.gaussian_affinity(torch.randn(2, 2), W, 0.0)
