"""Pointwise and compound losses: parity with torch / torchvision / MONAI where conventions match,
the NumPy reference for the DIBE formulas, identities between the losses, and gradcheck."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

import medseg_ext
from medseg_ext.reference import losses as ref


def _case(B=2, C=4, spatial=(6, 5), seed=0, scale=2.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn((B, C) + spatial, generator=g, dtype=torch.float64) * scale).to(dtype)
    y = torch.randint(0, C, (B,) + spatial, generator=g)
    return z, y


def _onehot(y, C):
    return F.one_hot(y, C).movedim(-1, 1).double()


# ---------------------------------------------------------------- parity with torch / torchvision


@settings(max_examples=25)
@given(st.integers(0, 10_000), st.integers(2, 6), st.booleans(), st.booleans())
def test_cross_entropy_equals_torch(seed, C, weighted, ignore):
    z, y = _case(C=C, seed=seed)
    kw, tkw = {}, {}
    if weighted:
        w = torch.rand(C, generator=torch.Generator().manual_seed(seed)) + 0.1
        kw["class_weight"], tkw["weight"] = w, w.double()
    if ignore:
        y[0, :2] = 255
        kw["ignore_index"] = tkw["ignore_index"] = 255
    zz = z.clone().requires_grad_(True)
    got = medseg_ext.cross_entropy_loss(zz, y, **kw)
    got.backward()
    z2 = z.clone().requires_grad_(True)
    want = F.cross_entropy(z2, y, **tkw)
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(zz.grad, z2.grad, rtol=1e-10, atol=1e-12)


def test_bce_and_focal_equal_torch_and_torchvision():
    tv_ops = pytest.importorskip("torchvision.ops")
    z, y = _case(C=3, seed=1)
    t = _onehot(y, 3)
    torch.testing.assert_close(medseg_ext.bce_loss(z, y), F.binary_cross_entropy_with_logits(z, t))
    for alpha in (0.25, None):
        want = tv_ops.sigmoid_focal_loss(z, t, alpha=-1 if alpha is None else alpha, gamma=2.0, reduction="mean")
        torch.testing.assert_close(medseg_ext.focal_loss(z, y, alpha=alpha), want)
    # binary: C = 1 with 0/1 labels
    zb, yb = z[:, :1], (y % 2)
    torch.testing.assert_close(medseg_ext.bce_loss(zb, yb), F.binary_cross_entropy_with_logits(zb[:, 0], yb.double()))


# ---------------------------------------------------------------- parity with MONAI


@pytest.mark.peer
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("batch", [False, True])
def test_dice_ce_equals_monai(include_background, batch):
    monai = pytest.importorskip("monai")
    z, y = _case(C=4, seed=2)
    w = torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=torch.float64)
    unit = "batch" if batch else "sample"
    for kw, mkw in (({}, {}), ({"class_weight": w}, {"weight": w})):
        m = monai.losses.DiceCELoss(to_onehot_y=True, softmax=True, include_background=include_background,
                                    batch=batch, **mkw)
        got = medseg_ext.dice_ce_loss(z, y, include_background=include_background, reduction_unit=unit, **kw)
        torch.testing.assert_close(got, m(z, y[:, None]).to(got.dtype), rtol=1e-6, atol=1e-7)
    # sigmoid: MONAI takes BCE only for C = 1 (for C > 1 it applies the softmax CE even with
    # sigmoid=True; this package keeps BCE per channel there, documented in dice_ce_loss)
    zb, yb = z[:, :1], y % 2
    m = monai.losses.DiceCELoss(to_onehot_y=False, sigmoid=True, batch=batch)
    got = medseg_ext.dice_ce_loss(zb, yb, activation="sigmoid", reduction_unit=unit)
    torch.testing.assert_close(got, m(zb, yb[:, None].double()).to(got.dtype), rtol=1e-6, atol=1e-7)


@pytest.mark.peer
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_dice_focal_sigmoid_equals_monai(include_background, alpha):
    monai = pytest.importorskip("monai")
    z, y = _case(C=3, seed=3)
    m = monai.losses.DiceFocalLoss(to_onehot_y=True, sigmoid=True, include_background=include_background,
                                   alpha=alpha, gamma=2.0)
    got = medseg_ext.dice_focal_loss(z, y, include_background=include_background, alpha=alpha)
    torch.testing.assert_close(got, m(z, y[:, None]).to(got.dtype), rtol=1e-6, atol=1e-7)


@pytest.mark.peer
def test_softmax_focal_is_monai_times_channels_and_squared_dice_is_monai():
    monai = pytest.importorskip("monai")
    z, y = _case(C=4, seed=4)
    # MONAI averages its softmax focal loss over the C channels too (zeros off the target class)
    m = monai.losses.FocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0)
    got = medseg_ext.focal_loss(z, y, activation="softmax", alpha=None)
    torch.testing.assert_close(got / 4, m(z, y[:, None]).to(got.dtype), rtol=1e-6, atol=1e-8)
    m = monai.losses.DiceLoss(to_onehot_y=True, softmax=True, squared_pred=True)
    torch.testing.assert_close(medseg_ext.squared_dice_loss(z, y), m(z, y[:, None]).to(torch.float64),
                               rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- DIBE formulas vs the NumPy reference


@settings(max_examples=30)
@given(st.integers(0, 10_000), st.sampled_from([1, 3]), st.floats(0.05, 0.95), st.sampled_from([0.0, 1.0, 2.0]),
       st.floats(0.0, 1.0))
def test_dibe_family_matches_reference(seed, C, lam, gamma, alpha):
    z, y = _case(C=max(C, 2), seed=seed, spatial=(7, 3))
    z = z[:, :C]  # C = 1: binary with 0/1 labels
    n = y.numel() * C
    zn, yn = z.numpy(), y.numpy()
    beta = 1.0 - alpha
    pos, neg = ref.pointwise_loss_map(zn, yn, "dibe", "sigmoid", gamma, alpha, beta)
    want = (lam * pos.sum() + (1 - lam) * neg.sum()) / n
    got = medseg_ext.dibe_dis_loss(z, y, lam=lam, gamma=gamma, alpha=alpha)
    assert float(got) == pytest.approx(want, rel=1e-9, abs=1e-12)
    pos, neg = ref.pointwise_loss_map(zn, yn, "log", "sigmoid")
    assert float(medseg_ext.wbce_loss(z, y, lam=lam)) == pytest.approx((lam * pos.sum() + (1 - lam) * neg.sum()) / n,
                                                                        rel=1e-9)
    # DIBE compound = θ·DIBE_Dis + (1 − θ)·DIBE_Reg with FN weight α, FP weight 1 − α (the same α)
    stats = ref.soft_region_stats(zn, yn, "sigmoid")
    I, P, G = stats[..., 0], stats[..., 1], stats[..., 2]
    T = (I + 1.0) / (I + (1 - alpha) * (P - I) + alpha * (G - I) + 1.0)
    reg = ((-np.log(T)) ** 0.5).mean()
    got = medseg_ext.dibe_loss(z, y, theta=0.4, lam=lam, alpha=alpha, gamma_dis=gamma, gamma_reg=2.0)
    assert float(got) == pytest.approx(0.4 * want + 0.6 * reg, rel=1e-9)


def test_identities_between_losses():
    z, y = _case(C=2, seed=5)
    # α = β = 0: DIBE_Dis is the focal loss with α = λ
    torch.testing.assert_close(medseg_ext.dibe_dis_loss(z, y, lam=0.3, alpha=0.0, beta=0.0, gamma=2.0),
                               medseg_ext.focal_loss(z, y, alpha=0.3, gamma=2.0))
    # γ = 0: focal is WBCE; EL-CE with γ = 1 is WBCE
    torch.testing.assert_close(medseg_ext.focal_loss(z, y, alpha=0.3, gamma=0.0), medseg_ext.wbce_loss(z, y, lam=0.3))
    torch.testing.assert_close(medseg_ext.el_ce_loss(z, y, lam=0.3, gamma=1.0), medseg_ext.wbce_loss(z, y, lam=0.3))
    # λ = 1/2 WBCE is half the BCE
    torch.testing.assert_close(medseg_ext.wbce_loss(z, y, lam=0.5), 0.5 * medseg_ext.bce_loss(z, y))
    # θ = 1 and θ = 0 ends of the compound losses
    torch.testing.assert_close(medseg_ext.combo_loss(z, y, theta=1.0, lam=0.3), medseg_ext.wbce_loss(z, y, lam=0.3))
    torch.testing.assert_close(
        medseg_ext.combo_loss(z, y, theta=0.0),
        medseg_ext.dice_loss(z, y, activation="sigmoid", smooth_nr=1.0, smooth_dr=1.0).double())
    torch.testing.assert_close(
        medseg_ext.exp_log_loss(z, y, theta=0.0),
        medseg_ext.log_dice_loss(z, y, activation="sigmoid").double())
    torch.testing.assert_close(
        medseg_ext.hybrid_focal_loss(z, y, theta=0.0, w_fp=0.3, w_fn=0.7, exponent=4 / 3),
        medseg_ext.focal_tversky_loss(z, y, activation="sigmoid", alpha=0.3, beta=0.7, exponent=4 / 3, smooth_nr=1.0,
                                      smooth_dr=1.0).double())


def test_wce_matches_report_formula():
    z, y = _case(C=2, seed=6)
    z = z[:, :1]  # binary: one channel, labels 0/1
    g = y.reshape(2, -1).double()
    N, G = g.shape[1], g.sum(1, keepdim=True)
    w = (N - G) / G
    log_p, log_q = F.logsigmoid(z[:, 0]).reshape(2, -1), F.logsigmoid(-z[:, 0]).reshape(2, -1)
    want = (-(w * g * log_p + (1 - g) * log_q).sum(1) / N).mean()
    torch.testing.assert_close(medseg_ext.wce_loss(z, y), want)


# ---------------------------------------------------------------- gradients


LOSSES = [
    ("cross_entropy_loss", {}, "softmax"), ("bce_loss", {}, "sigmoid"), ("wbce_loss", {"lam": 0.3}, "sigmoid"),
    ("wce_loss", {}, "sigmoid"), ("focal_loss", {"gamma": 2.0}, "sigmoid"),
    ("focal_loss", {"alpha": None, "activation": "softmax", "gamma": 1.5}, "softmax"),
    ("el_ce_loss", {"gamma": 0.7}, "sigmoid"), ("dibe_dis_loss", {}, "sigmoid"), ("combo_loss", {}, "sigmoid"),
    ("exp_log_loss", {"gamma_ce": 0.5, "gamma_dice": 0.5}, "sigmoid"), ("hybrid_focal_loss", {}, "sigmoid"),
    ("dibe_loss", {}, "sigmoid"), ("dice_ce_loss", {}, "softmax"), ("dice_focal_loss", {}, "sigmoid"),
    ("dice_focal_loss", {"activation": "softmax"}, "softmax"), ("squared_dice_loss", {}, "softmax"),
]


@pytest.mark.parametrize("name,kw,act", LOSSES, ids=[f"{n}-{a}" for n, _, a in LOSSES])
def test_gradcheck_float64(name, kw, act):
    z, y = _case(B=2, C=3, spatial=(3, 2), seed=7)
    z = torch.where(z.abs() < 0.2, z + 0.5, z)  # keep DIBE_Dis away from its discontinuity at p = 0.5
    fn = getattr(medseg_ext, name)
    assert torch.autograd.gradcheck(lambda t: fn(t, y, **kw), (z.requires_grad_(True),), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("name,kw,act", LOSSES, ids=[f"{n}-{a}" for n, _, a in LOSSES])
def test_modules_and_low_precision(name, kw, act):
    module = getattr(medseg_ext.losses.pointwise, {
        "cross_entropy_loss": "CrossEntropyLoss", "bce_loss": "BCELoss", "wbce_loss": "WBCELoss",
        "wce_loss": "WCELoss", "focal_loss": "FocalLoss", "el_ce_loss": "ELCELoss", "dibe_dis_loss": "DibeDisLoss",
        "combo_loss": "ComboLoss", "exp_log_loss": "ExpLogLoss", "hybrid_focal_loss": "HybridFocalLoss",
        "dibe_loss": "DibeLoss", "dice_ce_loss": "DiceCELoss", "dice_focal_loss": "DiceFocalLoss",
        "squared_dice_loss": "SquaredDiceLoss"}[name])(**kw)
    z, y = _case(B=2, C=3, spatial=(4, 5), seed=8, dtype=torch.float32)
    want = getattr(medseg_ext, name)(z.double(), y, **kw)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        zz = z.detach().to(dtype).clone().requires_grad_(True)
        loss = module(zz, y)
        loss.backward()
        assert loss.dtype == torch.float32 and zz.grad.dtype == dtype and torch.isfinite(zz.grad).all()
        tol = 1e-5 if dtype == torch.float32 else 3e-2
        assert float(loss) == pytest.approx(float(want), rel=tol, abs=tol)


def test_bad_arguments_raise_named_errors():
    z, y = _case(C=3, seed=9, dtype=torch.float32)
    with pytest.raises(ValueError, match="lam"):
        medseg_ext.wbce_loss(z, y, lam=1.5)
    with pytest.raises(ValueError, match="theta"):
        medseg_ext.dibe_loss(z, y, theta=-0.1)
    with pytest.raises(ValueError, match="class_weight"):
        medseg_ext.cross_entropy_loss(z, y, class_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="alpha"):
        medseg_ext.focal_loss(z, y, activation="softmax", alpha=0.25)
    with pytest.raises(ValueError, match="labels"):
        medseg_ext.cross_entropy_loss(z, torch.full_like(y, 7))


def test_kappa_readme_variant_matches_its_formula():
    # the authors' code: 1 − (2I − PG/N)/(Σp² + Σg² − 2I/N + s), with N counted from the tensor
    z, y = _case(C=3, seed=10)
    zz = z.clone().requires_grad_(True)
    got = medseg_ext.kappa_loss(zz, y, variant="zhang_readme", smooth_dr=1e-5)
    p = torch.softmax(z, 1).reshape(2, 3, -1)
    g = _onehot(y, 3).reshape(2, 3, -1)
    N = p.shape[-1]
    I, P, G, Q = (p * g).sum(-1), p.sum(-1), g.sum(-1), (p * p).sum(-1)
    want = (1 - (2 * I - P * G / N) / (Q + (g * g).sum(-1) - 2 * I / N + 1e-5)).mean()
    torch.testing.assert_close(got, want)
    got.backward()
    assert torch.autograd.gradcheck(lambda t: medseg_ext.kappa_loss(t, y, variant="zhang_readme"),
                                    (z.clone().requires_grad_(True),))
    with pytest.raises(ValueError, match="zhang_readme"):
        medseg_ext.kappa_loss(z, y, variant="zhang_readme", empty="zero")


# ---------------------------------------------------------------- dist_sync over 2 CPU ranks (gloo)


DIST_CALLS = [
    ("dice_ce_loss", {"reduction_unit": "batch"}),
    ("dice_focal_loss", {"activation": "softmax", "reduction_unit": "batch"}),
    ("cross_entropy_loss", {}),
    ("dibe_loss", {"reduction_unit": "batch"}),
    ("focal_loss", {}),
]


def test_compound_dist_sync_equals_single_process_global_batch():
    import torch.multiprocessing as mp
    from helpers import dist_rank_losses, free_port

    g = torch.Generator().manual_seed(11)
    logits = torch.randn(4, 3, 5, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (4, 5, 6), generator=g)
    ctx = mp.get_context("spawn")
    out = ctx.Manager().dict()
    # the sigmoid DIBE/focal losses take one channel with 0/1 labels; one pair of rank processes per layout
    binary = {"dibe_loss", "focal_loss"}
    layouts = [(logits, labels, [c for c in DIST_CALLS if c[0] not in binary]),
               (logits[:, :1].contiguous(), labels.clamp_max(1), [c for c in DIST_CALLS if c[0] in binary])]
    for z_all, y_all, group in layouts:
        port = free_port()
        ps = [ctx.Process(target=dist_rank_losses, args=(r, 2, port, z_all, y_all, group, out)) for r in range(2)]
        for p in ps:
            p.start()
        for p in ps:
            p.join(timeout=120)
        assert all(p.exitcode == 0 for p in ps), [p.exitcode for p in ps]
        for i, (name, kwargs) in enumerate(group):
            z = z_all.clone().requires_grad_(True)
            full = getattr(medseg_ext, name)(z, y_all, **kwargs)
            full.backward()
            for r in range(2):
                loss_r, grad_r = out[r][i]
                torch.testing.assert_close(loss_r, full.detach(), rtol=1e-12, atol=1e-12, msg=name)
                torch.testing.assert_close(grad_r, z.grad[r * 2:(r + 1) * 2], rtol=1e-10, atol=1e-14, msg=name)


def test_dist_sync_needs_process_group_and_batch_unit():
    logits, labels = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    with pytest.raises(ValueError, match="dist_sync"):
        medseg_ext.dice_ce_loss(logits, labels, reduction_unit="batch", dist_sync=True)
