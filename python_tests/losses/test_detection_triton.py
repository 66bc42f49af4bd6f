"""Triton kernels of the detection losses against the CPU kernels and the NumPy reference. Without a GPU
they run on CPU tensors through TRITON_INTERPRET=1 (set by conftest.py), so sizes stay tiny."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import medseg_ext
from medseg_ext.losses import detection as D
from medseg_ext.reference import detection as R
from helpers import HAVE_CUDA, HAVE_TRITON

pytestmark = [pytest.mark.triton, pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")]
DEVICE = "cuda" if HAVE_CUDA else "cpu"


def both(fn, *tensors):
    """(value, grads) on the CPU kernels and on Triton, for fn(*tensors) with the first tensor differentiable."""
    out = []
    for backend, dev in ((None, "cpu"), ("triton", DEVICE)):
        args = [t.to(dev) if isinstance(t, torch.Tensor) else t for t in tensors]
        args[0] = args[0].detach().requires_grad_(True)
        with medseg_ext.use_backend(backend):
            loss = fn(*args)
            (loss * torch.linspace(0.5, 1.5, loss.numel(), device=dev).reshape(loss.shape).to(loss.dtype)).sum().backward()
        out.append((loss.detach().cpu().double(), args[0].grad.cpu().double()))
    return out


@settings(max_examples=10)
@given(st.integers(0, 2**31 - 1), st.sampled_from([torch.float32, torch.float64, torch.float16]),
       st.sampled_from(["mean", "sum", "none"]), st.sampled_from([2.0, 1.5]), st.booleans())
def test_triton_focal_matches_cpu(seed, dtype, reduction, gamma, with_weight):
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(0, 70)), int(rng.integers(1, 13))
    z = torch.from_numpy(rng.standard_normal((n, c)) * 3).to(dtype)
    y = torch.from_numpy(rng.integers(0, c + 1, n))
    w = torch.from_numpy(rng.random(n)).to(torch.float64 if dtype == torch.float64 else torch.float32) \
        if with_weight else None
    (va, ga), (vb, gb) = both(lambda t, yy, ww: D.sigmoid_focal_loss(t, yy, ww, gamma=gamma, reduction=reduction,
                                                                       avg_factor=None if reduction == "sum" else 3.0),
                              z, y, w)
    tol = 1e-10 if dtype == torch.float64 else (1e-5 if dtype == torch.float32 else 2e-3)
    torch.testing.assert_close(vb, va, rtol=tol, atol=tol)
    torch.testing.assert_close(gb, ga, rtol=tol, atol=tol)


@settings(max_examples=8)
@given(st.integers(0, 2**31 - 1), st.sampled_from([torch.float32, torch.float64]), st.sampled_from(["mean", "none"]))
def test_triton_dfl_and_giou_match_cpu(seed, dtype, reduction):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 50))
    z = torch.from_numpy(rng.standard_normal((n, 17)) * 2).to(dtype)
    t = torch.from_numpy(rng.random(n) * 16).to(dtype)
    t[0] = 16.0  # the last bin
    (va, ga), (vb, gb) = both(lambda a, b: D.distribution_focal_loss(a, b, reduction=reduction), z, t)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(vb, va, rtol=tol, atol=tol)
    torch.testing.assert_close(gb, ga, rtol=tol, atol=tol)
    xy = rng.integers(0, 5, (n, 2)).astype(np.float64)  # grid boxes: ties and touching edges
    a = torch.from_numpy(np.concatenate([xy, xy + rng.integers(0, 4, (n, 2))], 1)).to(dtype)
    xy = rng.integers(0, 5, (n, 2)).astype(np.float64)
    b = torch.from_numpy(np.concatenate([xy, xy + rng.integers(0, 4, (n, 2))], 1)).to(dtype)
    (va, ga), (vb, gb) = both(lambda p, q: D.giou_loss(p, q, reduction=reduction), a, b)
    torch.testing.assert_close(vb, va, rtol=tol, atol=tol)
    torch.testing.assert_close(gb, ga, rtol=tol, atol=tol)
    want = R.giou_loss(a.double().numpy(), b.double().numpy(), reduction=reduction)
    np.testing.assert_allclose(vb.numpy(), want, rtol=tol, atol=tol)


def test_triton_reports_bad_values():
    with medseg_ext.use_backend("triton"):
        with pytest.raises(ValueError, match="labels: 1 value"):
            D.sigmoid_focal_loss(torch.randn(4, 3, device=DEVICE), torch.tensor([0, 1, 5, 3], device=DEVICE))
        z = torch.randn(4, 3, device=DEVICE)
        z[1, 1] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            D.sigmoid_focal_loss(z, torch.tensor([0, 1, 2, 3], device=DEVICE))
        with pytest.raises(ValueError, match="target: 1 value"):
            D.distribution_focal_loss(torch.randn(2, 17, device=DEVICE), torch.tensor([1.0, 16.5], device=DEVICE))
        with pytest.raises(RuntimeError, match="centerness"):
            D.centerness_target(torch.zeros(1, 2, device=DEVICE), torch.ones(1, 4, device=DEVICE))
        from medseg_ext.losses import label_aware as LA

        with pytest.raises(ValueError, match="scores: 1 value"):
            LA.confuse_labels(torch.tensor([[0.2, -0.1]], device=DEVICE))
        with pytest.raises(ValueError, match="labels: 1 value"):
            LA.confuse_labels(torch.rand(3, 4, device=DEVICE), torch.tensor([0, 5, 1], device=DEVICE))


@settings(max_examples=8)
@given(st.integers(0, 2**31 - 1), st.sampled_from([torch.float32, torch.float64]), st.booleans(), st.booleans())
def test_triton_label_aware_kernels_match_cpu(seed, dtype, with_labels, dense):
    from medseg_ext.losses import label_aware as LA

    rng = np.random.default_rng(seed)
    C = int(rng.integers(1, 9))
    s = np.round(rng.random((2, C, 3, 4)) * 4) / 4  # ties and zeros
    scores = torch.from_numpy(s).to(dtype)
    labels = torch.from_numpy(rng.integers(0, C + 1, (2, 3, 4))) if with_labels else None
    if not dense:
        scores = scores.permute(0, 2, 3, 1).reshape(-1, C)
        labels = None if labels is None else labels.reshape(-1)
    want = LA.confuse_labels(scores, labels, return_onehot=True)
    with medseg_ext.use_backend("triton"):
        got = LA.confuse_labels(scores.to(DEVICE), None if labels is None else labels.to(DEVICE), return_onehot=True)
    for a, b in zip(want, got):
        assert a.shape == b.shape
        torch.testing.assert_close(b.cpu(), a, rtol=0, atol=0)
    x = torch.from_numpy(rng.standard_normal((2, 3, 4, 5))).to(dtype)
    g1, g2 = (torch.from_numpy(rng.standard_normal((2, 3, 4, 5)) * 5).to(dtype) for _ in range(2))
    xa = x.clone().requires_grad_(True)
    xb = x.to(DEVICE).requires_grad_(True)
    ya = LA.la_modulate(xa, g1, g2)
    with medseg_ext.use_backend("triton"):
        yb = LA.la_modulate(xb, g1.to(DEVICE), g2.to(DEVICE))
    ya.sum().backward()
    yb.sum().backward()
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(yb.detach().cpu(), ya.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(xb.grad.cpu(), xa.grad, rtol=tol, atol=tol)
    with medseg_ext.use_backend("reference"):
        yr = LA.la_modulate(x, g1, g2)
    torch.testing.assert_close(yr, ya.detach(), rtol=tol, atol=tol)
