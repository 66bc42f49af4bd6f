"""The CUDA region-statistics kernels (csrc/losses/region_stats_cuda.cu) and their Python driver, run
by the CUDA emulator on CPU tensors, against the CPU kernels (the oracle: NumPy-tested elsewhere)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg_ext import _dispatch
from medseg_ext.losses import DiceLoss, soft_region_stats

TOL = {torch.float64: (1e-10, 1e-12), torch.float32: (2e-5, 1e-6), torch.float16: (2e-3, 1e-5),
       torch.bfloat16: (1.6e-2, 1e-4)}


def _stats_and_grad(logits, labels, weights, **kw):
    x = logits.detach().clone().requires_grad_(True)
    s = soft_region_stats(x, labels, **kw)
    stacked = torch.stack([s.intersection, s.prediction, s.target, s.count])
    (stacked[:3] * weights).sum().backward()
    return stacked.detach(), x.grad


def _compare(emu, logits, labels, **kw):
    U = logits.shape[0] if kw.get("reduction_unit", "sample") == "sample" else 1
    w = torch.randn(3, U, logits.shape[1], dtype=torch.float64)
    s_cpu, g_cpu = _stats_and_grad(logits, labels, w, **kw)
    with _dispatch.emulate_cuda(emu):
        assert _dispatch.select_backend(logits=logits, labels=labels) == "cuda"
        s_emu, g_emu = _stats_and_grad(logits, labels, w, **kw)
    rtol, atol = TOL[logits.dtype]
    assert s_emu.dtype == torch.float64 and g_emu.dtype == logits.dtype
    scale = s_cpu.abs().amax().clamp_min(1).item()
    torch.testing.assert_close(s_emu, s_cpu, rtol=rtol, atol=atol * scale)
    torch.testing.assert_close(g_emu.double(), g_cpu.double(), rtol=rtol, atol=atol * 10)


@settings(max_examples=14)
@given(dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
       activation=st.sampled_from(["softmax", "sigmoid"]),
       B=st.integers(1, 2), C=st.integers(1, 4),
       spatial=st.sampled_from([(37,), (5, 41), (3, 7, 19), (1, 1), (33, 33)]),
       ignore=st.sampled_from([None, 0, 255]), unit=st.sampled_from(["sample", "batch"]),
       label_dtype=st.sampled_from([torch.int64, torch.int32, torch.uint8]),
       transposed=st.booleans(), seed=st.integers(0, 2**16))
def test_region_stats_match_cpu(emu, dtype, activation, B, C, spatial, ignore, unit, label_dtype, transposed, seed):
    g = torch.Generator().manual_seed(seed)
    if activation == "softmax" and C == 1:
        C = 2
    logits = (3 * torch.randn((B, C) + spatial, generator=g)).to(dtype)
    if transposed and len(spatial) >= 2:  # non-contiguous: the kernel reads through the strides
        logits = logits.transpose(-1, -2).contiguous().transpose(-1, -2)
    hi = 2 if activation == "sigmoid" and C == 1 else C
    labels = torch.randint(0, hi, (B,) + spatial, generator=g)
    if ignore is not None:
        labels[torch.rand(labels.shape, generator=g) < 0.2] = ignore
    _compare(emu, logits, labels.to(label_dtype), activation=activation, ignore_index=ignore, reduction_unit=unit)


def test_region_stats_many_blocks_and_extremes(emu):
    # 3 x 1,500 elements: partials of several 1,024-element blocks, a ragged last block, huge and tiny logits
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 5, 30, 50, generator=g, dtype=torch.float64) * 30
    logits[0, :, 0, :5] = torch.tensor([1e30, -1e30, 0.0, 1e-30, -80.0], dtype=torch.float64)[:, None]
    labels = torch.randint(0, 5, (3, 30, 50), generator=g)
    _compare(emu, logits, labels)
    _compare(emu, logits.float(), labels, activation="sigmoid")


def test_region_stats_invalid_inputs_raise_like_cpu(emu):
    logits = torch.randn(1, 3, 8, 8)
    logits[0, 1, 2, 2] = float("nan")
    labels = torch.zeros(1, 8, 8, dtype=torch.int64)
    with _dispatch.emulate_cuda(emu), pytest.raises(ValueError, match="logits: 1 element"):
        soft_region_stats(logits, labels)
    labels[0, 0, 0] = 7
    with _dispatch.emulate_cuda(emu), pytest.raises(ValueError, match="labels: 1 element"):
        soft_region_stats(torch.randn(1, 3, 8, 8), labels)


def test_region_stats_empty_spatial(emu):
    logits, labels = torch.randn(2, 3, 0, 4), torch.zeros(2, 0, 4, dtype=torch.int64)
    _compare(emu, logits, labels)


def test_dice_loss_forward_backward_matches_cpu(emu):
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 4, 6, 9, 11, generator=g)
    labels = torch.randint(0, 4, (2, 6, 9, 11), generator=g)
    res = []
    for emulate in (False, True):
        x = logits.clone().requires_grad_(True)
        if emulate:
            with _dispatch.emulate_cuda(emu):
                loss = DiceLoss()(x, labels)
                loss.backward()
        else:
            loss = DiceLoss()(x, labels)
            loss.backward()
        res.append((loss.detach(), x.grad))
    torch.testing.assert_close(res[1][0], res[0][0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(res[1][1], res[0][1], rtol=1e-5, atol=1e-8)
