"""dice_loss: autograd (gradcheck), analytic coefficients, MONAI parity, properties, bad input."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import medseg_ext
from medseg_ext.reference import losses as ref
from helpers import region_cases


def rand_case(B=2, C=4, spatial=(5, 6), dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn((B, C) + spatial, generator=g, dtype=dtype)
    labels = torch.randint(0, C, (B,) + spatial, generator=g)
    return logits, labels


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("reduction_unit", ["sample", "batch"])
@pytest.mark.parametrize("ignore_index", [None, 1])
def test_gradcheck_float64(activation, reduction_unit, ignore_index):
    logits, labels = rand_case(C=3, spatial=(4, 3, 2))
    logits.requires_grad_(True)
    fn = lambda z: medseg_ext.dice_loss(z, labels, activation=activation, reduction_unit=reduction_unit,
                                        ignore_index=ignore_index, smooth_nr=0.5, smooth_dr=0.5)
    assert torch.autograd.gradcheck(fn, (logits,), eps=1e-6, atol=1e-8)


def test_binary_sigmoid_gradcheck():
    logits = torch.randn(3, 1, 7, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 2, (3, 7))
    assert torch.autograd.gradcheck(lambda z: medseg_ext.dice_loss(z, labels, activation="sigmoid"), (logits,))


@given(region_cases(max_elems=3000, dtypes=[torch.float64]))
def test_value_matches_reference(case):
    z, y = case.numpy()
    got = medseg_ext.dice_loss(case.logits, case.labels, **case.kwargs(), include_background=False)
    want = ref.dice_loss(z, y, **case.kwargs(), include_background=False)
    np.testing.assert_allclose(got.item(), want, rtol=1e-10, atol=1e-12)


def test_analytic_coefficients_equal_autograd():
    # dL/dP and dL/dI of the Dice epilogue (seeds-losses.md §5 S1) against torch autograd
    logits, labels = rand_case(seed=3)
    stats = medseg_ext.soft_region_stats(logits, labels)
    I = stats.intersection.clone().requires_grad_(True)
    P = stats.prediction.clone().requires_grad_(True)
    loss = (1 - (2 * I + 1e-5) / (P + stats.target + 1e-5)).sum()
    loss.backward()
    A, B = ref.dice_coefficients(torch.stack(list(stats), -1).numpy())
    np.testing.assert_allclose(P.grad.numpy(), A, rtol=1e-12)
    np.testing.assert_allclose(I.grad.numpy(), B, rtol=1e-12)


def test_logit_gradient_is_affine_in_labels_sigmoid():
    # probability-space gradient A + B·g: equal (p, g) elements get equal logit gradients
    logits = torch.zeros(1, 2, 10, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[0, 1, 0, 1, 1, 0, 0, 1, 0, 1]])
    medseg_ext.dice_loss(logits, labels, activation="sigmoid").backward()
    g = logits.grad[0]
    for c in range(2):
        on = g[c][labels[0] == c]
        off = g[c][labels[0] != c]
        assert torch.allclose(on, on[0]) and torch.allclose(off, off[0])
        assert on[0] < 0 < off[0]  # raise p where g = 1, lower it where g = 0


def test_perfect_prediction_is_zero():
    labels = torch.randint(0, 3, (2, 6, 6))
    logits = (torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).double() * 200 - 100)
    loss = medseg_ext.dice_loss(logits, labels, smooth_nr=0.0, smooth_dr=1e-12, include_background=True)
    assert abs(loss.item()) < 1e-10


def test_empty_class_and_empty_prediction_gives_zero_like_monai():
    # class 1 absent and (almost) never predicted: smoothing makes its loss ~0
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    logits = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    logits[:, 0] = 50
    per_class = medseg_ext.dice_loss(logits, labels, reduction="none", smooth_nr=1.0, smooth_dr=1.0)
    assert per_class.shape == (1, 2)
    assert per_class[0, 1].item() < 1e-12


def test_ignore_index_invariance():
    # changing logits of ignored elements changes neither the value nor other elements' gradients
    logits, labels = rand_case(C=3, spatial=(6, 5), seed=7)
    labels[:, 0, :] = 9
    a = logits.clone().requires_grad_(True)
    b = logits.clone()
    b[:, :, 0, :] = torch.randn_like(b[:, :, 0, :]) * 10
    b.requires_grad_(True)
    la = medseg_ext.dice_loss(a, labels, ignore_index=9)
    lb = medseg_ext.dice_loss(b, labels, ignore_index=9)
    la.backward()
    lb.backward()
    assert la.item() == lb.item()
    assert torch.equal(a.grad, b.grad)
    assert float(a.grad[:, :, 0, :].abs().sum()) == 0.0


def test_batch_unit_equals_concatenation():
    logits, labels = rand_case(B=3, seed=11)
    pooled = medseg_ext.dice_loss(logits, labels, reduction_unit="batch", reduction="none")
    cat = medseg_ext.dice_loss(logits.permute(1, 0, 2, 3).reshape(1, 4, 15, 6),
                               labels.reshape(1, 15, 6), reduction="none")
    torch.testing.assert_close(pooled, cat, rtol=1e-12, atol=1e-12)


def test_permuting_pixels_changes_nothing():
    logits, labels = rand_case(B=1, spatial=(30,), seed=5)
    perm = torch.randperm(30)
    a = medseg_ext.dice_loss(logits, labels)
    b = medseg_ext.dice_loss(logits[..., perm], labels[..., perm])
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_reduced_precision_dtypes(dtype):
    logits, labels = rand_case(dtype=torch.float64, spatial=(9, 9), seed=2)
    low = logits.to(dtype).requires_grad_(True)
    loss = medseg_ext.dice_loss(low, labels)
    loss.backward()
    assert loss.dtype == torch.float32 and low.grad.dtype == dtype
    exact = logits.to(dtype).double().requires_grad_(True)
    ref_loss = medseg_ext.dice_loss(exact, labels)
    ref_loss.backward()
    assert abs(loss.item() - ref_loss.item()) < 1e-5
    tol = 1e-6 if dtype == torch.float32 else 2e-2 * float(exact.grad.abs().max())
    torch.testing.assert_close(low.grad.double(), exact.grad, rtol=0, atol=tol)


def test_module_form():
    logits, labels = rand_case(seed=1)
    mod = medseg_ext.DiceLoss(include_background=False, reduction_unit="batch")
    assert "reduction_unit='batch'" in repr(mod)
    torch.testing.assert_close(mod(logits, labels),
                               medseg_ext.dice_loss(logits, labels, include_background=False, reduction_unit="batch"))


def test_torch_compile_fullgraph_matches_eager():
    logits, labels = rand_case(dtype=torch.float32, spatial=(8, 8), seed=4)

    def step(z, y):
        return medseg_ext.dice_loss(z, y, include_background=False) * 2.0

    compiled = torch.compile(step, fullgraph=True)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    la, lb = step(a, labels), compiled(b, labels)
    la.backward()
    lb.backward()
    torch.testing.assert_close(la, lb)
    torch.testing.assert_close(a.grad, b.grad)


def test_force_reference_env(monkeypatch):
    logits, labels = rand_case(seed=8)
    logits.requires_grad_(True)
    fast = medseg_ext.dice_loss(logits, labels)
    (g_fast,) = torch.autograd.grad(fast, logits)
    monkeypatch.setenv("MEDSEG_EXT_FORCE_REFERENCE", "1")
    slow = medseg_ext.dice_loss(logits, labels)
    (g_slow,) = torch.autograd.grad(slow, logits)
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_fast, g_slow, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ MONAI parity

monai_losses = pytest.importorskip("monai.losses")


@pytest.mark.peer
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("spatial", [(7, 6), (4, 5, 3)])
def test_matches_monai_softmax(batch, include_background, spatial):
    logits, labels = rand_case(B=3, C=4, spatial=spatial, seed=21)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    ours = medseg_ext.dice_loss(a, labels, reduction_unit="batch" if batch else "sample",
                                include_background=include_background)
    peer = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, batch=batch,
                                 include_background=include_background)(b, labels[:, None])
    ours.backward()
    peer.backward()
    torch.testing.assert_close(ours, peer, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-12)


@pytest.mark.peer
@pytest.mark.parametrize("C", [1, 3])
def test_matches_monai_sigmoid(C):
    g = torch.Generator().manual_seed(C)
    logits = torch.randn(2, C, 6, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, max(C, 2), (2, 6, 5), generator=g)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    ours = medseg_ext.dice_loss(a, labels, activation="sigmoid")
    if C == 1:
        peer = monai_losses.DiceLoss(sigmoid=True)(b, labels[:, None].double())
    else:
        peer = monai_losses.DiceLoss(sigmoid=True, to_onehot_y=True)(b, labels[:, None])
    ours.backward()
    peer.backward()
    torch.testing.assert_close(ours, peer, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-12)


# ------------------------------------------------------------------ bad input


def _call(**over):
    logits, labels = rand_case(dtype=torch.float32)
    kw = dict(logits=logits, labels=labels)
    kw.update(over)
    return medseg_ext.dice_loss(kw.pop("logits"), kw.pop("labels"), **kw)


@pytest.mark.parametrize("over, name", [
    (dict(logits=torch.randn(4, 5)), "logits"),                                  # rank 2
    (dict(logits=torch.randn(1, 2, 2, 2, 2, 2)), "logits"),                      # rank 6
    (dict(labels=torch.zeros(2, 5, 7, dtype=torch.long)), "labels"),             # shape mismatch
    (dict(labels=torch.zeros(3, 5, 6, dtype=torch.long)), "labels"),             # batch mismatch
    (dict(labels=torch.zeros(2, 5, 6)), "labels"),                               # float labels
    (dict(labels=torch.full((2, 5, 6), 4)), "labels"),                           # out of range
    (dict(labels=torch.full((2, 5, 6), -1)), "labels"),                          # negative
    (dict(logits=torch.randint(0, 3, (2, 4, 5, 6))), "logits"),                  # integer logits
    (dict(logits=torch.full((2, 4, 5, 6), float("nan"))), "logits"),            # NaN
    (dict(logits=torch.full((2, 4, 5, 6), float("inf"))), "logits"),            # +inf under softmax
    (dict(logits=torch.full((2, 4, 5, 6), float("-inf"))), "logits"),           # all -inf rows
    (dict(logits=torch.randn(2, 1, 5, 6)), "activation"),                        # softmax over C = 1
    (dict(activation="relu"), "activation"),
    (dict(reduction_unit="image"), "reduction_unit"),
    (dict(reduction="avg"), "reduction"),
    (dict(ignore_index=1.5), "ignore_index"),
    (dict(smooth_nr=-1.0), "smooth_nr"),
    (dict(smooth_dr=float("nan")), "smooth_dr"),
    (dict(labels=[[0]]), "labels"),                                              # not a tensor
    (dict(labels=torch.zeros(2, 5, 6, dtype=torch.long, device="meta")), "labels"),  # device mismatch
])
def test_bad_input_raises_value_error_naming_argument(over, name):
    with pytest.raises(ValueError, match=name):
        _call(**over)


def test_binary_sigmoid_rejects_label_two():
    with pytest.raises(ValueError, match="labels"):
        medseg_ext.dice_loss(torch.randn(1, 1, 4), torch.tensor([[0, 1, 2, 1]]), activation="sigmoid")


def test_single_nan_pixel_is_reported():
    logits, labels = rand_case(dtype=torch.float32, seed=9)
    logits[1, 2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="logits: NaN at sample 1"):
        medseg_ext.dice_loss(logits, labels)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("include_background", [True, False])
def test_gradcheck_reductions(reduction, include_background):
    logits, labels = rand_case(B=2, C=3, spatial=(3, 4), seed=13)
    logits.requires_grad_(True)
    fn = lambda z: medseg_ext.dice_loss(z, labels, reduction=reduction, include_background=include_background,
                                        smooth_nr=0.3, smooth_dr=0.7)
    assert torch.autograd.gradcheck(fn, (logits,), eps=1e-6, atol=1e-8)
    out = fn(logits)
    assert out.shape == (() if reduction != "none" else (2, 3 if include_background else 2))
