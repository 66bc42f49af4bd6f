"""Jaccard, Tversky, focal-Tversky and kappa losses: reference values, gradcheck, MONAI parity,
the degenerations and orderings of seeds-losses.md §6.1."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import medseg_ext
from medseg_ext.reference import losses as ref
from helpers import region_cases

KIND_FN = {
    "dice": medseg_ext.dice_loss,
    "jaccard": medseg_ext.jaccard_loss,
    "tversky": medseg_ext.tversky_loss,
    "focal_tversky": medseg_ext.focal_tversky_loss,
    "kappa": medseg_ext.kappa_loss,
    "log_dice": medseg_ext.log_dice_loss,
    "dibe_reg": medseg_ext.dibe_reg_loss,
}
PARAMS = {
    "dice": dict(smooth_nr=0.2, smooth_dr=0.3),
    "jaccard": dict(smooth_nr=0.2, smooth_dr=0.3),
    "tversky": dict(alpha=0.3, beta=0.7, smooth_nr=0.2, smooth_dr=0.3),
    "focal_tversky": dict(alpha=0.3, beta=0.7, exponent=0.75, smooth_nr=0.2, smooth_dr=0.3),
    "kappa": dict(smooth_dr=0.3),
    "log_dice": dict(exponent=0.8, smooth_nr=0.2, smooth_dr=0.3),
    "dibe_reg": dict(alpha=0.7, beta=0.3, gamma=1.5, smooth_nr=0.2, smooth_dr=0.3),
}
# reference-side parameters where the public API names them differently
REF_PARAMS = {**PARAMS, "kappa": dict(smooth_nr=0.0, smooth_dr=0.3),
              "dibe_reg": dict(alpha=0.7, beta=0.3, exponent=1 / 1.5, smooth_nr=0.2, smooth_dr=0.3)}


def rand_case(B=2, C=3, spatial=(4, 5), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((B, C) + spatial, generator=g, dtype=dtype), torch.randint(0, C, (B,) + spatial, generator=g)


@pytest.mark.parametrize("kind", list(KIND_FN))
@given(case=region_cases(max_elems=2000, dtypes=[torch.float64]), include_background=st.booleans())
def test_value_matches_reference(kind, case, include_background):
    z, y = case.numpy()
    got = KIND_FN[kind](case.logits, case.labels, **case.kwargs(), include_background=include_background,
                        reduction="none", **PARAMS[kind])
    want = ref.region_loss(z, y, kind, **case.kwargs(), include_background=include_background, reduction="none",
                           **REF_PARAMS[kind])
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", list(KIND_FN))
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("reduction_unit", ["sample", "batch"])
def test_gradcheck(kind, activation, reduction_unit):
    logits, labels = rand_case(seed=3)
    logits.requires_grad_(True)
    fn = lambda z: KIND_FN[kind](z, labels, activation=activation, reduction_unit=reduction_unit, ignore_index=1,
                                 **PARAMS[kind])
    assert torch.autograd.gradcheck(fn, (logits,), eps=1e-6, atol=1e-8)


def test_region_loss_by_name_and_modules():
    logits, labels = rand_case(seed=4)
    for kind, fn in KIND_FN.items():
        by_name = medseg_ext.region_loss(logits, labels, kind=kind, **REF_PARAMS[kind])
        torch.testing.assert_close(by_name, fn(logits, labels, **PARAMS[kind]), rtol=1e-12, atol=1e-12)
    mod = medseg_ext.TverskyLoss(alpha=0.2, beta=0.8)
    torch.testing.assert_close(mod(logits, labels), medseg_ext.tversky_loss(logits, labels, alpha=0.2, beta=0.8))
    assert "alpha=0.2" in repr(mod)
    with pytest.raises(ValueError, match="kind"):
        medseg_ext.region_loss(logits, labels, kind="lovasz")
    with pytest.raises(ValueError, match="alpha"):
        medseg_ext.tversky_loss(logits, labels, alpha=-0.1)
    with pytest.raises(ValueError, match="exponent"):
        medseg_ext.focal_tversky_loss(logits, labels, exponent=0.0)


# ---------------------------------------------------------------- degenerations (§6.1.2, E15)

def test_tversky_half_half_is_dice_with_doubled_smoothing():
    logits, labels = rand_case(seed=5)
    tv = medseg_ext.tversky_loss(logits, labels, alpha=0.5, beta=0.5, smooth_nr=0.25, smooth_dr=0.25)
    dice = medseg_ext.dice_loss(logits, labels, smooth_nr=0.5, smooth_dr=0.5)
    torch.testing.assert_close(tv, dice, rtol=1e-12, atol=1e-12)


def test_tversky_one_one_is_jaccard():
    logits, labels = rand_case(seed=6)
    torch.testing.assert_close(medseg_ext.tversky_loss(logits, labels, alpha=1.0, beta=1.0, smooth_nr=0.4, smooth_dr=0.4),
                               medseg_ext.jaccard_loss(logits, labels, smooth_nr=0.4, smooth_dr=0.4),
                               rtol=1e-12, atol=1e-12)


def test_focal_tversky_exponent_one_is_tversky_and_perfect_gradient_is_finite():
    logits, labels = rand_case(seed=7)
    torch.testing.assert_close(medseg_ext.focal_tversky_loss(logits, labels, exponent=1.0),
                               medseg_ext.tversky_loss(logits, labels, alpha=0.3, beta=0.7), rtol=1e-12, atol=1e-12)
    perfect = (torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).double() * 80 - 40).requires_grad_(True)
    loss = medseg_ext.focal_tversky_loss(perfect, labels, exponent=0.75, smooth_nr=0.0, smooth_dr=0.0)
    loss.backward()
    assert loss.item() < 1e-10 and torch.isfinite(perfect.grad).all()


# ---------------------------------------------------------------- kappa (§3.3, §6.1.3-5)

def test_kappa_of_binary_prediction_is_one_minus_cohens_kappa():
    g = torch.Generator().manual_seed(8)
    labels = (torch.rand(1, 400, generator=g) < 0.1).long()
    pred = (torch.rand(1, 400, generator=g) < 0.12).long()
    logits = (pred.double() * 2 - 1)[:, None] * 60.0  # sigmoid saturates to exactly 0/1 in float64
    loss = medseg_ext.kappa_loss(logits, labels, activation="sigmoid", smooth_dr=0.0)
    a = int(((pred == 1) & (labels == 1)).sum())
    b = int(((pred == 1) & (labels == 0)).sum())
    c = int(((pred == 0) & (labels == 1)).sum())
    d = int(((pred == 0) & (labels == 0)).sum())
    assert abs(loss.item() - (1 - ref.cohen_kappa_counts(a, b, c, d))) < 1e-12


@given(case=region_cases(max_elems=2000, dtypes=[torch.float64]))
def test_kappa_bounds_and_dice_ordering(case):
    kappa = medseg_ext.kappa_loss(case.logits, case.labels, **case.kwargs(), smooth_dr=0.0, reduction="none")
    dice = medseg_ext.dice_loss(case.logits, case.labels, **case.kwargs(), smooth_nr=0.0, smooth_dr=0.0,
                                reduction="none")
    ok = torch.isfinite(kappa) & torch.isfinite(dice)
    assert (kappa[ok] >= -1e-12).all() and (kappa[ok] <= 2 + 1e-12).all()
    assert (kappa[ok] >= dice[ok] - 1e-9).all()  # L_kappa >= L_Dice(eps = 0)


def test_kappa_perfect_and_empty_are_zero():
    labels = torch.zeros(1, 6, 6, dtype=torch.long)
    labels[0, 2:4, 2:4] = 1
    logits = (torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).double() * 80 - 40)
    per_class = medseg_ext.kappa_loss(logits, labels, reduction="none")  # class 2 is empty in both
    assert per_class.abs().max().item() < 1e-9


# ---------------------------------------------------------------- MONAI parity

monai_losses = pytest.importorskip("monai.losses")


@pytest.mark.peer
@pytest.mark.parametrize("batch", [False, True])
def test_jaccard_matches_monai_with_halved_smoothing(batch):
    logits, labels = rand_case(B=3, C=4, spatial=(5, 4, 3), seed=9)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    ours = medseg_ext.jaccard_loss(a, labels, smooth_nr=0.5e-5, smooth_dr=0.5e-5,
                                   reduction_unit="batch" if batch else "sample")
    peer = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, jaccard=True, batch=batch)(b, labels[:, None])
    ours.backward()
    peer.backward()
    torch.testing.assert_close(ours, peer, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-12)


@pytest.mark.peer
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("include_background", [True, False])
def test_tversky_matches_monai(activation, include_background):
    logits, labels = rand_case(B=2, C=3, spatial=(6, 7), seed=10)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    ours = medseg_ext.tversky_loss(a, labels, alpha=0.3, beta=0.7, activation=activation,
                                   include_background=include_background)
    peer = monai_losses.TverskyLoss(alpha=0.3, beta=0.7, to_onehot_y=True, include_background=include_background,
                                    softmax=activation == "softmax", sigmoid=activation == "sigmoid")(b, labels[:, None])
    ours.backward()
    peer.backward()
    torch.testing.assert_close(ours, peer, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-12)



# ---------------------------------------------------------------- kappa zhang2019, log-Dice, DIBE_Reg (§6.1)

def test_kappa_zhang2019_floor_at_perfect_prediction():
    # the printed Eq. 26 is not 0 at p = g: its floor is (G − 2)/(2N − 2), 0.040404… for N = 100, G = 10
    labels = torch.zeros(1, 100, dtype=torch.long)
    labels[0, :10] = 1
    logits = (labels.double() * 2 - 1)[:, None] * 60.0
    loss = medseg_ext.kappa_loss(logits, labels, activation="sigmoid", variant="zhang2019", smooth_dr=0.0)
    assert abs(loss.item() - 8 / 198) < 1e-12
    assert medseg_ext.kappa_loss(logits, labels, activation="sigmoid", smooth_dr=0.0).abs().item() < 1e-12
    with pytest.raises(ValueError, match="variant"):
        medseg_ext.kappa_loss(logits, labels, variant="readme")


def test_kappa_zhang2019_gradcheck():
    logits, labels = rand_case(seed=12)
    logits.requires_grad_(True)
    fn = lambda z: medseg_ext.kappa_loss(z, labels, variant="zhang2019", smooth_dr=0.1)
    assert torch.autograd.gradcheck(fn, (logits,), eps=1e-6, atol=1e-8)


def test_log_dice_is_minus_log_of_dice_coefficient():
    logits, labels = rand_case(seed=13)
    ld = medseg_ext.log_dice_loss(logits, labels, smooth_nr=0.5, smooth_dr=0.5, reduction="none")
    dice = medseg_ext.dice_loss(logits, labels, smooth_nr=0.5, smooth_dr=0.5, reduction="none")
    torch.testing.assert_close(ld, -torch.log(1 - dice), rtol=1e-12, atol=1e-12)


@given(case=region_cases(max_elems=1500, dtypes=[torch.float64]))
def test_dibe_reg_dominates_focal_tversky(case):
    # −log T ≥ 1 − T, so (−log T)^e ≥ (1 − T)^e at equal Tversky index (§6.1.3)
    kw = dict(alpha=0.7, beta=0.3, smooth_nr=1.0, smooth_dr=1.0, reduction="none")
    dibe = medseg_ext.dibe_reg_loss(case.logits, case.labels, **case.kwargs(), gamma=1.5, **kw)
    ft = medseg_ext.focal_tversky_loss(case.logits, case.labels, **case.kwargs(), exponent=1 / 1.5, **kw)
    assert (dibe >= ft - 1e-12).all()


def test_dibe_reg_gradient_finite_at_perfect_prediction():
    labels = torch.randint(0, 3, (2, 5, 5))
    logits = (torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).double() * 80 - 40).requires_grad_(True)
    loss = medseg_ext.dibe_reg_loss(logits, labels, smooth_nr=0.0, smooth_dr=0.0)
    loss.backward()
    assert loss.item() < 1e-6 and torch.isfinite(logits.grad).all()
