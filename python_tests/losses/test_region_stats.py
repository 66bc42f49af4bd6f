"""soft_region_stats (CPU C++) against the NumPy reference, forward and backward, plus edge cases."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import medseg_ext
from medseg_ext.reference import losses as ref
from helpers import region_cases, tolerance


def stats_array(s):
    return torch.stack(list(s), dim=-1).detach().cpu().numpy()


@given(region_cases())
def test_forward_matches_reference(case):
    z, y = case.numpy()
    got = stats_array(medseg_ext.soft_region_stats(case.logits, case.labels, **case.kwargs()))
    want = ref.soft_region_stats(z, y, **case.kwargs())
    n = y.size
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=tolerance(case.logits.dtype, n))
    # N and G are exact counts
    np.testing.assert_array_equal(got[..., 2:], want[..., 2:])


@given(region_cases(), st.integers(0, 2**31 - 1))
def test_backward_matches_reference(case, seed):
    z, y = case.numpy()
    logits = case.logits.detach().requires_grad_(True)
    s = medseg_ext.soft_region_stats(logits, case.labels, **case.kwargs())
    rng = np.random.default_rng(seed)
    w = torch.from_numpy(rng.standard_normal((s.intersection.shape + (4,))))
    (torch.stack(list(s), -1) * w).sum().backward()
    want = ref.soft_region_stats_backward(w.numpy(), z, y, **case.kwargs())
    got = logits.grad
    assert got.dtype == case.logits.dtype and got.shape == case.logits.shape
    atol = 1e-12 if case.logits.dtype == torch.float64 else (1e-5 if case.logits.dtype == torch.float32 else 3e-2)
    scale = max(1.0, float(np.abs(w.numpy()).max()))
    np.testing.assert_allclose(got.to(torch.float64).numpy(), want, rtol=0, atol=atol * scale)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_empty_and_full_classes(activation):
    # all elements of one class: G is N for it and 0 for the rest, P sums to N over classes (softmax)
    logits = torch.randn(2, 3, 5, 6)
    labels = torch.full((2, 5, 6), 2)
    s = medseg_ext.soft_region_stats(logits, labels, activation=activation)
    assert torch.equal(s.target, torch.tensor([[0.0, 0.0, 30.0]] * 2, dtype=torch.float64))
    assert torch.equal(s.count, torch.full((2, 3), 30.0, dtype=torch.float64))
    if activation == "softmax":
        torch.testing.assert_close(s.prediction.sum(1), torch.full((2,), 30.0, dtype=torch.float64))


def test_single_pixel_and_binary_sigmoid():
    z = torch.tensor([[[0.3]]], dtype=torch.float64)  # (B=1, C=1, W=1)
    for label, g in ((1, 1.0), (0, 0.0)):
        s = medseg_ext.soft_region_stats(z, torch.tensor([[label]]), activation="sigmoid")
        p = 1 / (1 + np.exp(-0.3))
        np.testing.assert_allclose(stats_array(s)[0, 0], [p * g, p, g, 1.0], rtol=1e-15)


def test_everything_ignored_gives_zeros_and_zero_grad():
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    labels = torch.full((2, 3, 3), 7)
    s = medseg_ext.soft_region_stats(logits, labels, ignore_index=7)
    assert float(torch.stack(list(s)).abs().sum()) == 0.0
    (s.intersection.sum() + s.prediction.sum()).backward()
    assert float(logits.grad.abs().sum()) == 0.0


def test_ignored_elements_may_hold_nan():
    logits = torch.randn(1, 3, 8)
    labels = torch.randint(0, 3, (1, 8))
    labels[0, 2] = -1
    clean = medseg_ext.soft_region_stats(logits, labels, ignore_index=-1)
    logits[0, :, 2] = float("nan")
    dirty = medseg_ext.soft_region_stats(logits, labels, ignore_index=-1)
    torch.testing.assert_close(torch.stack(list(clean)), torch.stack(list(dirty)), rtol=0, atol=0)


def test_sigmoid_infinite_logits_are_valid():
    z = torch.tensor([[[float("inf"), float("-inf"), 0.0]]])
    s = medseg_ext.soft_region_stats(z, torch.tensor([[1, 0, 1]]), activation="sigmoid")
    np.testing.assert_allclose(stats_array(s)[0, 0], [1.5, 1.5, 2.0, 3.0])


def test_deterministic_and_thread_independent():
    logits = torch.randn(2, 5, 40, 41, 7)
    labels = torch.randint(0, 5, (2, 40, 41, 7))
    a = torch.stack(list(medseg_ext.soft_region_stats(logits, labels)))
    n = torch.get_num_threads()
    b = torch.stack(list(medseg_ext.soft_region_stats(logits, labels)))
    assert torch.equal(a, b)
    assert n >= 1


def test_numpy_inputs_accepted():
    z = np.random.default_rng(0).standard_normal((1, 3, 4, 4)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, (1, 4, 4))
    got = stats_array(medseg_ext.soft_region_stats(z, y))
    np.testing.assert_allclose(got, ref.soft_region_stats(z, y), rtol=1e-6, atol=1e-5)


def test_int64_sizes_beyond_int32():
    # 2^31 + 3 elements through stride-0 views (no memory): every index computation must be 64-bit.
    n = 2**31 + 3
    z = torch.tensor([0.25]).expand(1, 1, n)
    y = torch.ones(1, dtype=torch.uint8).expand(1, n)
    s = medseg_ext.soft_region_stats(z, y, activation="sigmoid")
    p = 1 / (1 + np.exp(-0.25))
    got = stats_array(s)[0, 0]
    np.testing.assert_allclose(got, [p * n, p * n, n, n], rtol=1e-6)
    assert got[2] == n and got[3] == n


def test_baseline_avx2_and_avx512_builds_agree():
    # the same kernels compiled for the x86-64 baseline, AVX2+FMA (both forced by env) and the best
    # variant for this CPU ("auto": AVX-512 where the build and the CPU have it)
    import subprocess
    import sys

    code = (
        "import torch, medseg_ext\n"
        "g = torch.Generator().manual_seed(0)\n"
        "z = torch.randn(2, 5, 9, 11, 13, generator=g, requires_grad=True)\n"
        "y = torch.randint(0, 5, (2, 9, 11, 13), generator=g)\n"
        "s = medseg_ext.soft_region_stats(z, y, ignore_index=3)\n"
        "(s.intersection.sum() * 0.3 + s.prediction.sum() * 0.7).backward()\n"
        "print(medseg_ext._dispatch.extension().build_info()['cpu_isa'])\n"
        "print(repr(torch.stack(list(s)).detach().flatten().tolist()))\n"
        "print(repr(z.grad.flatten()[:500].tolist()))\n"
    )
    outs = {}
    for isa in ("base", "avx2", "auto"):
        env = dict(__import__("os").environ, MEDSEG_EXT_CPU_ISA=isa)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        name, stats, grad = out.stdout.strip().splitlines()
        outs[isa] = (name, np.array(eval(stats)), np.array(eval(grad)))
    assert outs["base"][0] == "baseline"
    assert outs["avx2"][0] in ("avx2+fma", "baseline") and outs["auto"][0] in ("avx512", "avx2+fma", "baseline")
    for isa in ("avx2", "auto"):
        np.testing.assert_allclose(outs["base"][1], outs[isa][1], rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(outs["base"][2], outs[isa][2], rtol=1e-4, atol=1e-7)  # FMA rounding
