"""GPU backends (Triton and the compiled CUDA kernels) against the CPU C++ kernels on the same
inputs. Skipped without a CUDA device; run on the lent GPU machine."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import medseg_ext
from helpers import HAVE_CUDA, region_cases, tolerance

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not HAVE_CUDA, reason="needs a CUDA device")]


def gpu_backends():
    names = []
    if medseg_ext.backends()["triton"]["usable"]:
        names.append("triton")
    if medseg_ext.backends()["cuda"]["usable"]:
        names.append("cuda")
    return names


def both(case, backend, seed):
    out = []
    for dev, name in (("cpu", None), ("cuda", backend)):
        logits = case.logits.to(dev)
        if dev == "cuda" and case.logits.dim() >= 4 and not case.logits.is_contiguous():
            logits = logits.transpose(-1, -2).contiguous().transpose(-1, -2)  # keep a non-contiguous view on GPU
        logits = logits.detach().requires_grad_(True)
        with medseg_ext.use_backend(name):
            s = torch.stack(list(medseg_ext.soft_region_stats(logits, case.labels.to(dev), **case.kwargs())), -1)
            w = torch.from_numpy(np.random.default_rng(seed).standard_normal(s.shape)).to(dev)
            (s * w).sum().backward()
        out.append((s.detach().cpu(), logits.grad.cpu()))
    return out


def test_cuda_backend_is_built_and_usable():
    info = medseg_ext.backends()
    assert info["cuda"]["compiled"], "this GPU run expects a build with MEDSEG_EXT_CUDA=on"
    assert info["cuda"]["usable"] and info["triton"]["usable"]


@pytest.mark.parametrize("backend", ["triton", "cuda"])
@settings(max_examples=40)
@given(case=region_cases(max_elems=20000), seed=st.integers(0, 2**31 - 1))
def test_gpu_matches_cpu(backend, case, seed):
    if backend not in gpu_backends():
        pytest.skip(f"{backend} not usable")
    (s_cpu, g_cpu), (s_gpu, g_gpu) = both(case, backend, seed)
    n = case.labels.numel()
    np.testing.assert_allclose(s_gpu.numpy(), s_cpu.numpy(), rtol=1e-5, atol=tolerance(case.logits.dtype, n))
    atol = 1e-12 if case.logits.dtype == torch.float64 else (5e-5 if case.logits.dtype == torch.float32 else 5e-2)
    torch.testing.assert_close(g_gpu.double(), g_cpu.double(), rtol=0, atol=atol * 5)


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu_large_volume_dice(backend):
    if backend not in gpu_backends():
        pytest.skip(f"{backend} not usable")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 14, 48, 40, 36, generator=g)
    labels = torch.randint(0, 14, (2, 48, 40, 36), generator=g)
    a = logits.clone().requires_grad_(True)
    b = logits.cuda().requires_grad_(True)
    la = medseg_ext.dice_loss(a, labels)
    with medseg_ext.use_backend(backend):
        lb = medseg_ext.dice_loss(b, labels.cuda())
    la.backward()
    lb.backward()
    torch.testing.assert_close(lb.cpu(), la, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(b.grad.cpu(), a.grad, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("bad, name", [("label", "labels"), ("nan", "logits")])
def test_gpu_reports_bad_values(backend, bad, name):
    if backend not in gpu_backends():
        pytest.skip(f"{backend} not usable")
    logits = torch.randn(2, 3, 64, device="cuda")
    labels = torch.randint(0, 3, (2, 64), device="cuda")
    if bad == "label":
        labels[1, 7] = 5
    else:
        logits[1, 0, 7] = float("nan")
    with medseg_ext.use_backend(backend), pytest.raises(ValueError, match=name):
        medseg_ext.soft_region_stats(logits, labels)


def test_default_gpu_dispatch_and_compile():
    logits = torch.randn(2, 4, 16, 16, device="cuda", requires_grad=True)
    labels = torch.randint(0, 4, (2, 16, 16), device="cuda")
    f = torch.compile(lambda z, y: medseg_ext.dice_loss(z, y), fullgraph=True)
    loss = f(logits, labels)
    loss.backward()
    assert loss.device.type == "cuda" and logits.grad.device.type == "cuda"
    ref = medseg_ext.dice_loss(logits.detach().cpu(), labels.cpu())
    torch.testing.assert_close(loss.cpu(), ref, rtol=1e-6, atol=1e-6)
