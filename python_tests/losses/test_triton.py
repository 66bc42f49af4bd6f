"""Triton kernels of soft_region_stats vs the NumPy reference. Without a GPU they run on CPU
tensors through TRITON_INTERPRET=1 (set by conftest.py), so shapes stay small."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import medseg_ext
from medseg_ext.reference import losses as ref
from helpers import HAVE_CUDA, HAVE_TRITON, bad_region_inputs, region_cases, tolerance

pytestmark = [pytest.mark.triton, pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")]
DEVICE = "cuda" if HAVE_CUDA else "cpu"


def run(case, seed):
    logits = case.logits.to(DEVICE).detach().requires_grad_(True)
    labels = case.labels.to(DEVICE)
    with medseg_ext.use_backend("triton"):
        s = medseg_ext.soft_region_stats(logits, labels, **case.kwargs())
        stats = torch.stack(list(s), -1)
        w = torch.from_numpy(np.random.default_rng(seed).standard_normal(stats.shape)).to(DEVICE)
        (stats * w).sum().backward()
    return stats.detach().cpu().numpy(), logits.grad.cpu(), w.cpu().numpy()


@settings(max_examples=12)
@given(region_cases(max_elems=800, max_classes=12, dtypes=[torch.float32, torch.float64, torch.float16]),
       st.integers(0, 2**31 - 1))
def test_triton_matches_reference(case, seed):
    if DEVICE == "cuda" and case.logits.dim() and not case.logits.is_contiguous():
        pass  # .to("cuda") keeps the strides of a dense permutation; sliced views become contiguous
    z, y = case.numpy()
    got, grad, w = run(case, seed)
    want = ref.soft_region_stats(z, y, **case.kwargs())
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=tolerance(case.logits.dtype, y.size))
    want_grad = ref.soft_region_stats_backward(w, z, y, **case.kwargs())
    atol = 1e-12 if case.logits.dtype == torch.float64 else (2e-5 if case.logits.dtype == torch.float32 else 3e-2)
    assert grad.dtype == case.logits.dtype
    np.testing.assert_allclose(grad.double().numpy(), want_grad, rtol=0, atol=atol * max(1.0, np.abs(w).max()))


def test_triton_dice_matches_cpu():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 4, 3, generator=g)
    labels = torch.randint(0, 3, (2, 5, 4, 3), generator=g)
    a = logits.clone().requires_grad_(True)
    b = logits.to(DEVICE).requires_grad_(True)
    la = medseg_ext.dice_loss(a, labels, ignore_index=2)
    with medseg_ext.use_backend("triton"):
        lb = medseg_ext.dice_loss(b, labels.to(DEVICE), ignore_index=2)
    la.backward()
    lb.backward()
    torch.testing.assert_close(la, lb.cpu(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a.grad, b.grad.cpu(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("bad, name", [("label", "labels"), ("nan", "logits"), ("inf", "logits")])
def test_triton_reports_bad_values(bad, name):
    logits, labels = bad_region_inputs(bad, DEVICE)
    with medseg_ext.use_backend("triton"), pytest.raises(ValueError, match=name):
        medseg_ext.soft_region_stats(logits, labels)
