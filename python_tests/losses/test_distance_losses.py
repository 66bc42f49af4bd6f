"""Distance losses: HausdorffDTLoss parity with MONAI (values, gradients, options), the Kervadec
boundary loss vs the NumPy reference, gradcheck in float64, modules and bad input."""
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg_ext.losses import distance as D
from medseg_ext.reference import distance as R


def _onehot(lab, C):
    return torch.nn.functional.one_hot(lab, C).movedim(-1, 1).float()


def _inputs(seed, shape=(2, 3, 9, 10), empty=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    lab = torch.randint(0, shape[1], (shape[0],) + shape[2:], generator=g)
    y = _onehot(lab, shape[1])
    if empty:
        y[0, 1] = 0   # absent class: MONAI skips uniform volumes (zero field)
        y[1, -1] = 1  # full volume
    return x, y, lab


@pytest.mark.parametrize("kw", [dict(softmax=True), dict(sigmoid=True), dict(sigmoid=True, include_background=True),
                                dict(softmax=True, batch=True), dict(sigmoid=True, alpha=1.0, reduction="sum"),
                                dict(softmax=True, reduction="none"), dict(sigmoid=True, batch=True, reduction="none"),
                                dict(include_background=True)])
@pytest.mark.parametrize("shape", [(2, 3, 9, 10), (2, 3, 5, 6, 4)])
def test_hausdorff_dt_loss_matches_monai(kw, shape):
    losses = pytest.importorskip("monai.losses")
    x, y, _ = _inputs(sum(shape), shape)
    if not kw.get("sigmoid") and not kw.get("softmax"):
        x = torch.sigmoid(x)
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = losses.HausdorffDTLoss(**kw)(x1, y)
    got = D.HausdorffDTLoss(**kw)(x2, y)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    w = torch.rand(got.shape)
    (g1,) = torch.autograd.grad((want * w).sum(), x1)
    (g2,) = torch.autograd.grad((got * w).sum(), x2)
    torch.testing.assert_close(g2, g1, rtol=1e-5, atol=1e-7)


@settings(max_examples=20)
@given(st.integers(0, 10_000), st.sampled_from([1.0, 2.0]), st.booleans(), st.booleans())
def test_hausdorff_dt_loss_matches_reference(seed, alpha, batch, include_background):
    x, y, _ = _inputs(seed, (2, 2, 6, 7))
    got = D.hausdorff_dt_loss(x.double(), y.double(), alpha=alpha, sigmoid=True, batch=batch,
                              include_background=include_background)
    want = R.hausdorff_dt_loss(x.numpy(), y.numpy(), alpha=alpha, sigmoid=True, batch=batch,
                               include_background=include_background)
    assert float(got) == pytest.approx(want, rel=1e-9, abs=1e-12)


@settings(max_examples=20)
@given(st.integers(0, 10_000), st.booleans(), st.sampled_from([None, (1.0, 2.0), (0.5, 0.5)]))
def test_boundary_loss_matches_reference(seed, include_background, spacing):
    x, y, lab = _inputs(seed, (2, 3, 7, 8), empty=False)
    got = D.boundary_loss(x.double(), lab, spacing=spacing, include_background=include_background)
    want = R.boundary_loss(x.numpy(), y.numpy(), spacing=spacing, include_background=include_background)
    assert float(got) == pytest.approx(want, rel=1e-9, abs=1e-12)
    # one-hot and (B, 1, *spatial) index targets give the same loss
    same = D.boundary_loss(x.double(), _onehot(lab, 3), spacing=spacing, include_background=include_background)
    same2 = D.boundary_loss(x.double(), lab[:, None], spacing=spacing, include_background=include_background)
    assert float(same) == pytest.approx(float(got)) and float(same2) == pytest.approx(float(got))


def test_boundary_loss_3d_sigmoid_and_dist_map():
    x, y, _ = _inputs(3, (1, 2, 5, 6, 7), empty=False)
    got = D.boundary_loss(x, y, sigmoid=True, softmax=False, include_background=True, reduction="none")
    assert got.shape == (1, 2, 1, 1, 1)
    want = R.boundary_loss(x.numpy(), y.numpy(), sigmoid=True, softmax=False, include_background=True,
                           reduction="none")
    np.testing.assert_allclose(got.reshape(1, 2).numpy(), want, rtol=1e-5, atol=1e-6)
    dm = D.signed_distance(y)
    again = D.BoundaryLoss(sigmoid=True, softmax=False, include_background=True)(x, y, dist_map=dm)
    assert float(again) == pytest.approx(float(got.mean()), rel=1e-6)


def test_gradcheck_float64():
    x, y, lab = _inputs(5, (1, 3, 4, 5), empty=False)
    x = x.double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: D.boundary_loss(t, lab), (x,))
    assert torch.autograd.gradcheck(lambda t: D.hausdorff_dt_loss(t, y.double(), softmax=True), (x,))


def test_perfect_prediction_and_analytic_value():
    y = torch.zeros(1, 2, 6, 6)
    y[0, 1, 2:4, 2:4] = 1
    y[0, 0] = 1 - y[0, 1]
    assert float(D.hausdorff_dt_loss(y, y)) == 0.0
    # single wrong pixel at distance 2 from the object: (1-0)^2 * (d_p^2 + d_t^2) / 36
    p = y.clone()
    p[0, 1, 0, 2] = 1
    dp = D.distance_transform_edt(p[0, 1] > 0.5) + D.distance_transform_edt(p[0, 1] <= 0.5)
    dt = D.distance_transform_edt(y[0, 1] > 0.5) + D.distance_transform_edt(y[0, 1] <= 0.5)
    want = float((dp[0, 2] ** 2 + dt[0, 2] ** 2) / 36)
    assert float(D.hausdorff_dt_loss(p, y)) == pytest.approx(want)
    assert float(dt[0, 2]) == 2.0


def test_bad_input():
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="reduction"):
        D.hausdorff_dt_loss(x, x, reduction="avg")
    with pytest.raises(ValueError, match="sigmoid/softmax"):
        D.HausdorffDTLoss(sigmoid=True, softmax=True)
    with pytest.raises(ValueError, match="input"):
        D.boundary_loss(torch.randn(2, 4), torch.zeros(2, 4))
    with pytest.raises(TypeError, match="input"):
        D.boundary_loss(torch.zeros(1, 2, 4, 4, dtype=torch.int64), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="target"):
        D.boundary_loss(x, torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="class indices"):
        D.boundary_loss(x, torch.full((1, 4, 4), 5))
    with pytest.raises(ValueError, match="dist_map"):
        D.boundary_loss(x, torch.zeros(1, 4, 4, dtype=torch.int64), dist_map=torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="alpha"):
        D.hausdorff_dt_loss(x, x, alpha=float("inf"))
    with pytest.raises(ValueError, match="NaN"):
        D.hausdorff_dt_loss(x, torch.full((1, 2, 4, 4), float("nan")))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_promote_to_float32(dtype):
    x, y, lab = _inputs(9, (1, 2, 40, 40), empty=False)
    y = torch.zeros_like(y)
    y[:, 1, 0, 0] = 1      # far object: distance^2 > fp16 max would overflow in half precision
    y[:, 0] = 1 - y[:, 1]
    xh = x.to(dtype).requires_grad_(True)
    v = D.hausdorff_dt_loss(xh, y, alpha=3.0, softmax=True)
    assert v.dtype == torch.float32 and torch.isfinite(v)
    v.backward()
    assert xh.grad.dtype == dtype and torch.isfinite(xh.grad.float()).all()
    ref = D.hausdorff_dt_loss(x.to(dtype).float(), y, alpha=3.0, softmax=True)
    assert float(v.detach()) == pytest.approx(float(ref), rel=1e-2)
    b = D.boundary_loss(x.to(dtype), y)
    assert b.dtype == torch.float32 and torch.isfinite(b)


@pytest.mark.parametrize("kw", [dict(softmax=True), dict(sigmoid=True, reduction="none")])
def test_log_hausdorff_dt_loss_matches_monai(kw):
    losses = pytest.importorskip("monai.losses")
    x, y, _ = _inputs(21, (2, 3, 9, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = losses.LogHausdorffDTLoss(**kw)(x, y)
    torch.testing.assert_close(D.LogHausdorffDTLoss(**kw)(x, y), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(D.log_hausdorff_dt_loss(x, y, **kw), want, rtol=1e-5, atol=1e-6)
