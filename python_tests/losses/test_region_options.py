"""Generalized Dice, absent-class policies (empty=smooth|zero|skip) and dist_sync over 2 gloo ranks."""
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from hypothesis import given, strategies as st

import medseg_ext
from medseg_ext.reference import losses as ref
from helpers import dist_rank_region_loss, free_port, region_cases


def rand_case(B=2, C=4, spatial=(5, 6), seed=0, absent=()):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn((B, C) + spatial, generator=g, dtype=torch.float64)
    labels = torch.randint(0, C, (B,) + spatial, generator=g)
    for c in absent:  # make class c absent from every target
        labels[labels == c] = 0
    return logits, labels


@pytest.mark.parametrize("weight_type", ["square", "simple", "uniform"])
@pytest.mark.parametrize("absent", ["max_finite", "zero"])
@given(case=region_cases(max_elems=2000, dtypes=[torch.float64]), include_background=st.booleans())
def test_generalized_dice_matches_reference(weight_type, absent, case, include_background):
    z, y = case.numpy()
    got = medseg_ext.generalized_dice_loss(case.logits, case.labels, **case.kwargs(), weight_type=weight_type,
                                           absent=absent, include_background=include_background, reduction="none")
    want = ref.region_loss(z, y, "generalized_dice", **case.kwargs(), include_background=include_background,
                           reduction="none", weight_type=weight_type, absent=absent)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("weight_type", ["square", "uniform"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_generalized_dice_gradcheck(weight_type, reduction):
    logits, labels = rand_case(C=3, spatial=(4, 3), seed=1, absent=(2,))
    logits.requires_grad_(True)
    fn = lambda z: medseg_ext.generalized_dice_loss(z, labels, weight_type=weight_type, reduction=reduction,
                                                    include_background=False)
    assert torch.autograd.gradcheck(fn, (logits,), eps=1e-6, atol=1e-8)


def test_gdl_one_class_uniform_is_dice_without_smoothing():
    logits, labels = rand_case(C=2, seed=2)
    gdl = medseg_ext.generalized_dice_loss(logits, labels, weight_type="uniform", include_background=False,
                                           smooth_nr=0.0, smooth_dr=0.0)
    dice = medseg_ext.dice_loss(logits, labels, include_background=False, smooth_nr=0.0, smooth_dr=0.0)
    torch.testing.assert_close(gdl, dice, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["dice", "jaccard", "tversky", "kappa"])
@pytest.mark.parametrize("empty", ["zero", "skip"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_policies_match_reference_and_gradcheck(kind, empty, reduction):
    logits, labels = rand_case(seed=3, absent=(1, 3))
    extra = {"smooth_nr": 0.0} if kind == "kappa" else {}
    got = medseg_ext.region_loss(logits, labels, kind=kind, empty=empty, reduction=reduction, **extra)
    want = ref.region_loss(logits.numpy(), labels.numpy(), kind, empty=empty, reduction=reduction, **extra)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12, equal_nan=True)
    z = logits.clone().requires_grad_(True)
    fn = lambda t: medseg_ext.region_loss(t, labels, kind=kind, empty=empty, reduction=reduction, **extra)
    if reduction == "none":
        out = fn(z)
        out.nansum().backward()
        assert torch.isfinite(z.grad).all()
        fn = lambda t: torch.nan_to_num(medseg_ext.region_loss(t, labels, kind=kind, empty=empty,
                                                               reduction=reduction, **extra))
    assert torch.autograd.gradcheck(fn, (logits.clone().requires_grad_(True),), eps=1e-6, atol=1e-8)


def test_empty_zero_gives_false_positives_on_empty_class_no_gradient():
    # SMP's documented weakness, reproduced by the "zero" policy and absent from "smooth"
    logits, labels = rand_case(seed=4, absent=(2,))
    for empty, expect_zero in (("zero", True), ("smooth", False)):
        z = logits.clone().requires_grad_(True)
        per_class = medseg_ext.dice_loss(z, labels, empty=empty, reduction="none")
        per_class[:, 2].sum().backward()
        assert (float(z.grad.abs().sum()) == 0.0) == expect_zero


def test_bad_options():
    logits, labels = rand_case()
    with pytest.raises(ValueError, match="empty"):
        medseg_ext.dice_loss(logits, labels, empty="ignore")
    with pytest.raises(ValueError, match="weight_type"):
        medseg_ext.generalized_dice_loss(logits, labels, weight_type="log")
    with pytest.raises(ValueError, match="absent"):
        medseg_ext.generalized_dice_loss(logits, labels, absent="inf")
    with pytest.raises(ValueError, match="dist_sync"):
        medseg_ext.dice_loss(logits, labels, reduction_unit="batch", dist_sync=True)


monai_losses = pytest.importorskip("monai.losses")


@pytest.mark.peer
@pytest.mark.parametrize("w_type", ["square", "simple", "uniform"])
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("include_background", [True, False])
def test_generalized_dice_matches_monai(w_type, batch, include_background):
    logits, labels = rand_case(B=3, C=4, spatial=(5, 4, 3), seed=5, absent=(3,))
    labels[0][labels[0] == 2] = 1  # class 2 absent in sample 0 only
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    ours = medseg_ext.generalized_dice_loss(a, labels, weight_type=w_type, include_background=include_background,
                                            reduction_unit="batch" if batch else "sample")
    peer = monai_losses.GeneralizedDiceLoss(softmax=True, to_onehot_y=True, w_type=w_type, batch=batch,
                                            include_background=include_background)(b, labels[:, None])
    ours.backward()
    peer.backward()
    # MONAI computes the class weights from ground_o.float(), i.e. in float32
    torch.testing.assert_close(ours, peer, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-9)


# ---------------------------------------------------------------- dist_sync over 2 CPU ranks (gloo)


@pytest.mark.parametrize("kind", ["dice", "generalized_dice"])
def test_dist_sync_equals_single_process_global_batch(kind):
    logits, labels = rand_case(B=4, C=3, spatial=(6, 5), seed=6)
    ctx = mp.get_context("spawn")
    manager = ctx.Manager()
    out = manager.dict()
    port = free_port()
    procs = [ctx.Process(target=dist_rank_region_loss, args=(r, 2, port, logits, labels, kind, out)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    z = logits.clone().requires_grad_(True)
    full = medseg_ext.region_loss(z, labels, kind=kind, reduction_unit="batch")
    full.backward()
    for r in range(2):
        loss_r, grad_r = out[r]
        torch.testing.assert_close(loss_r, full.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad_r, z.grad[r * 2:(r + 1) * 2], rtol=1e-10, atol=1e-14)


@pytest.mark.peer
@pytest.mark.parametrize("include_background", [True, False])
def test_class_weight_matches_monai(include_background):
    logits, labels = rand_case(B=2, C=4, spatial=(6, 5), seed=7)
    weight = [0.5, 2.0, 1.0, 3.0][(0 if include_background else 1):]
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    ours = medseg_ext.region_loss(a, labels, kind="dice", class_weight=weight, include_background=include_background)
    peer = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, weight=weight,
                                 include_background=include_background)(b, labels[:, None])
    ours.backward()
    peer.backward()
    torch.testing.assert_close(ours, peer, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-12)


def test_class_weight_scales_per_class_losses_and_validates():
    logits, labels = rand_case(seed=8)
    plain = medseg_ext.region_loss(logits, labels, kind="tversky", reduction="none")
    weighted = medseg_ext.region_loss(logits, labels, kind="tversky", reduction="none",
                                      class_weight=torch.tensor([1.0, 0.0, 2.0, 0.5]))
    torch.testing.assert_close(weighted, plain * torch.tensor([1.0, 0.0, 2.0, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="class_weight"):
        medseg_ext.region_loss(logits, labels, class_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="class_weight"):
        medseg_ext.region_loss(logits, labels, class_weight=[1.0, -2.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="class_weight"):
        medseg_ext.region_loss(logits, labels, kind="generalized_dice", class_weight=[1.0] * 4)
