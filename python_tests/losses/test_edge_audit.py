"""Edge cases of every compiled loss entry point, audited together (the gaps the per-loss files left):
all-ignored labels, layouts (channels_last_3d, transposed, strided, expanded labels), label dtypes,
bad inputs naming the argument, logits of +-1e4 and 1e-30 against the float64 NumPy reference,
single-voxel / odd shapes / C = 1 and 2, a class absent from prediction and target under every
``empty`` policy, fp16/bf16 heads, degenerate GIoU boxes and anisotropic EDT of one voxel.

Gradient oracle for the region losses: the NumPy reference backward (explicit softmax/sigmoid
Jacobian) fed with dL/dstats from central differences of the NumPy per-class formulas, i.e.
nothing from the op's own epilogue.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

import medseg_ext.losses as L
from medseg_ext.reference import detection as RD
from medseg_ext.reference import losses as R

# every loss that reaches _C through the fused statistics; head = the activation it uses with C = 3
LOSSES = {
    "dice": (L.dice_loss, {}),
    "jaccard": (L.jaccard_loss, {}),
    "tversky": (L.tversky_loss, {}),
    "focal_tversky": (L.focal_tversky_loss, {}),
    "generalized_dice": (L.generalized_dice_loss, {}),
    "kappa": (L.kappa_loss, {}),
    "log_dice": (L.log_dice_loss, {}),
    "dibe_reg": (L.dibe_reg_loss, {}),
    "cross_entropy": (L.cross_entropy_loss, {}),
    "bce": (L.bce_loss, {}),
    "wbce": (L.wbce_loss, {}),
    "wce": (L.wce_loss, {}),
    "focal_sigmoid": (L.focal_loss, {}),
    "focal_softmax": (L.focal_loss, dict(activation="softmax", alpha=None)),
    "el_ce": (L.el_ce_loss, {}),
    "dibe_dis": (L.dibe_dis_loss, {}),
    "dice_ce": (L.dice_ce_loss, {}),
    "dice_focal": (L.dice_focal_loss, {}),
    "combo": (L.combo_loss, {}),
    "exp_log": (L.exp_log_loss, {}),
    "hybrid_focal": (L.hybrid_focal_loss, {}),
    "dibe": (L.dibe_loss, {}),
    "squared_dice": (L.squared_dice_loss, {}),
}
NAMES = sorted(LOSSES)


def call(name, z, y, **kw):
    fn, base = LOSSES[name]
    return fn(z, y, **{**base, **kw})


def value_and_grad(name, z, y, **kw):
    z = z.detach().clone().requires_grad_(True)
    loss = call(name, z, y, **kw)
    loss.backward()
    return loss.detach(), z.grad


def case(B=2, C=3, spatial=(4, 5, 3), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((B, C) + spatial, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randint(0, C, (B,) + spatial, generator=g)
    return z, y


# ---------------------------------------------------------------- all labels = ignore_index


@pytest.mark.parametrize("name", NAMES)
def test_all_ignored_labels_give_zero_loss_and_no_gradient(name):
    # nothing is counted: every statistic is 0, the smoothed region terms are 1 - s/s = 0 and the
    # pointwise means divide 0 by max(N, 1); ignored elements never take a gradient
    z, _ = case(seed=1)
    y = torch.full((2, 4, 5, 3), 255)
    loss, grad = value_and_grad(name, z, y, ignore_index=255)
    assert torch.isfinite(loss) and float(loss) == 0.0
    assert torch.equal(grad, torch.zeros_like(grad))
    # the same elements ignored inside a batch with one counted sample change nothing of that sample
    z2, y2 = case(B=1, seed=2)
    both_z, both_y = torch.cat([z2, z[:1]]), torch.cat([y2, y[:1]])
    # (pooled statistics: with per-sample units the empty sample would count as a zero in the mean)
    kw = {"reduction_unit": "batch"} if "reduction_unit" in inspect.signature(LOSSES[name][0]).parameters else {}
    ref_loss, ref_grad = value_and_grad(name, z2, y2, ignore_index=255, **kw)
    loss, grad = value_and_grad(name, both_z, both_y, ignore_index=255, **kw)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad[:1], ref_grad, rtol=1e-12, atol=1e-12)
    assert torch.equal(grad[1:], torch.zeros_like(grad[1:]))


def test_all_ignored_statistics_and_counts_are_zero():
    z, _ = case(seed=3)
    y = torch.full((2, 4, 5, 3), -1, dtype=torch.int32)
    st_ = L.soft_region_stats(z, y, ignore_index=-1)
    for t in st_:
        assert torch.equal(t, torch.zeros_like(t))
    counts = L.confusion_counts(z, y, ignore_index=-1)
    assert torch.equal(counts, torch.zeros_like(counts))


# ---------------------------------------------------------------- layouts and label dtypes


def _layout(kind, seed):
    z, y = case(B=2, C=3, spatial=(6, 5, 4), seed=seed)
    if kind == "channels_last_3d":
        return z.to(memory_format=torch.channels_last_3d), y.contiguous()
    if kind == "transposed":
        return z.transpose(2, 4), y.transpose(1, 3)
    if kind == "strided":
        return z[:, :, ::2, :, 1:], y[:, ::2, :, 1:]
    if kind == "expanded_labels":  # one label map broadcast over the batch (stride 0)
        return z, y[:1].expand(2, -1, -1, -1)
    if kind == "monai_layout_slice":  # (B, 1, *spatial) labels cut out of a wider tensor
        return z, torch.stack([y, y], dim=1)[:, 1:2]
    raise AssertionError(kind)


LAYOUTS = ["channels_last_3d", "transposed", "strided", "expanded_labels", "monai_layout_slice"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", NAMES)
def test_non_contiguous_inputs_equal_contiguous_copies(name, layout):
    z, y = _layout(layout, seed=4)
    assert not (z.is_contiguous() and y.is_contiguous())
    loss, grad = value_and_grad(name, z, y)
    want_loss, want_grad = value_and_grad(name, z.contiguous(), y.contiguous())
    torch.testing.assert_close(loss, want_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_label_dtypes_give_identical_results(name):
    z, y = case(seed=5)
    want_loss, want_grad = value_and_grad(name, z, y)
    for dt in (torch.uint8, torch.int8, torch.int16, torch.int32):
        loss, grad = value_and_grad(name, z, y.to(dt))
        torch.testing.assert_close(loss, want_loss, rtol=0, atol=0)
        torch.testing.assert_close(grad, want_grad, rtol=0, atol=0)


# ---------------------------------------------------------------- bad input names the argument


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_naming_the_argument(name):
    z, y = case(B=1, seed=6, dtype=torch.float32)
    with pytest.raises(ValueError, match="labels"):
        call(name, z, y.float())
    for bad in (-1, 3, 200):
        yb = y.clone()
        yb[0, 1, 2, 0] = bad
        with pytest.raises(ValueError, match="labels"):
            call(name, z, yb)
    with pytest.raises(ValueError, match="labels"):
        call(name, z, y[:, :3])
    zb = z.clone()
    zb[0, 2, 3, 4, 1] = float("nan")
    with pytest.raises(ValueError, match="logits"):
        call(name, zb, y)
    with pytest.raises(ValueError, match="logits"):
        call(name, z.to(torch.int32), y)
    with pytest.raises(ValueError, match="logits"):
        call(name, z[:, :, 0, 0, 0], y[:, 0, 0, 0])  # no spatial dim


# ---------------------------------------------------------------- float64 oracles


def _ref_reduce(kind, stats, params, empty="smooth", include_background=True):
    """Scalar region loss (reduction "mean") from (U, C, 4) statistics, the NumPy reference's way."""
    if not include_background and stats.shape[1] > 1:
        stats = stats[:, 1:]
    if kind == "generalized_dice":
        return R.generalized_dice_per_unit(stats).mean()
    f = R.region_loss_per_class(kind, stats, **params)
    present = stats[..., 2] > 0
    if empty == "zero":
        f = np.where(present, f, 0.0)
    elif empty == "skip":
        return f[present].mean() if present.any() else 0.0
    return f.mean()


def _ref_value_and_grad(kind, z, y, activation, params, empty="smooth"):
    """(loss, dL/dz) in float64 from the NumPy reference: dL/dstats by central differences of the
    per-class formulas (they are smooth in I and P), then the reference backward."""
    z = z.detach().double().numpy()
    y = y.numpy()
    stats = R.soft_region_stats(z, y, activation)
    loss = _ref_reduce(kind, stats, params, empty)
    def central(idx, h):
        up, dn = stats.copy(), stats.copy()
        up[idx] += h
        dn[idx] -= h
        return (_ref_reduce(kind, up, params, empty) - _ref_reduce(kind, dn, params, empty)) / (2 * h)

    gs = np.zeros_like(stats)
    for idx in np.ndindex(stats.shape[:2]):
        for k in (0, 1):  # I and P carry the gradient
            # step relative to the entry and the smoothing scale; Richardson: error O(h^4)
            h = 1e-6 * (abs(stats[idx + (k,)]) + 1e-4)
            gs[idx + (k,)] = (4 * central(idx + (k,), h / 2) - central(idx + (k,), h)) / 3
    return loss, R.soft_region_stats_backward(gs, z, y, activation)


REGION_KINDS = {
    "dice": {},
    "jaccard": {},
    "tversky": dict(alpha=0.3, beta=0.7),
    "focal_tversky": dict(alpha=0.3, beta=0.7, exponent=0.75),
    "log_dice": dict(smooth_nr=1.0, smooth_dr=1.0),
    "kappa": {},
    "generalized_dice": {},
}


def _ref_params(kind, params):
    if kind == "generalized_dice":
        return {}
    return {**dict(smooth_nr=1e-5, smooth_dr=1e-5), **params}


def _extreme_logits(scale, shape, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    if scale == 1e-30:
        return (z * 1e-30).float()
    sat = torch.rand(shape, generator=g) < 0.5  # half saturated at +-scale, half moderate
    return torch.where(sat, z.sign() * scale, z).float()


@pytest.mark.parametrize("scale", [1e4, 1e-30])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("kind", sorted(REGION_KINDS))
def test_region_losses_at_extreme_logits_match_float64_reference(kind, activation, scale):
    params = REGION_KINDS[kind]
    z = _extreme_logits(scale, (2, 3, 3, 5, 7), seed=7)
    _, y = case(B=2, C=3, spatial=(3, 5, 7), seed=8)
    z.requires_grad_(True)
    loss = L.region_loss(z, y, kind=kind, activation=activation, **params)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all() and z.grad.dtype == torch.float32
    want, want_grad = _ref_value_and_grad(kind, z, y, activation, _ref_params(kind, params))
    assert float(loss) == pytest.approx(want, rel=2e-5, abs=1e-6)
    scale_g = max(np.abs(want_grad).max(), 1e-12)
    np.testing.assert_allclose(z.grad.numpy(), want_grad, rtol=0, atol=1e-4 * scale_g)


def _torch_focal(z, t, gamma=2.0, alpha=0.25):
    # torchvision.ops.sigmoid_focal_loss written in log space, (1 - p)^g = exp(g log sigmoid(-z)), so
    # that float64 autograd stays finite where q underflows (the gradient of x^g at x = 0 is inf for g < 1)
    ls, lq = F.logsigmoid(z), F.logsigmoid(-z)
    return -(alpha * t * torch.exp(gamma * lq) * ls + (1 - alpha) * (1 - t) * torch.exp(gamma * ls) * lq).mean()


POINTWISE_ORACLES = {
    "bce": lambda z, y: F.binary_cross_entropy_with_logits(z, F.one_hot(y, 3).movedim(-1, 1).double()),
    "cross_entropy": lambda z, y: F.cross_entropy(z, y),
    "focal_sigmoid": lambda z, y: _torch_focal(z, F.one_hot(y, 3).movedim(-1, 1).double()),
}
for _g in (0.5, 1.0, 3.0):  # gamma < 1 with saturated logits gave NaN gradients (fixed, region_stats_cpu.cpp)
    POINTWISE_ORACLES[f"focal_gamma{_g}"] = (
        lambda z, y, g=_g: _torch_focal(z, F.one_hot(y, 3).movedim(-1, 1).double(), gamma=g))
    LOSSES[f"focal_gamma{_g}"] = (L.focal_loss, dict(gamma=_g))


@pytest.mark.parametrize("scale", [1e4, -1e4, 1e-30])
@pytest.mark.parametrize("name", sorted(POINTWISE_ORACLES))
def test_pointwise_losses_at_extreme_logits_match_torch_float64(name, scale):
    z = _extreme_logits(abs(scale), (2, 3, 3, 5, 7), seed=9)
    if scale < 0:
        z = -z
    _, y = case(B=2, C=3, spatial=(3, 5, 7), seed=10)
    loss, grad = value_and_grad(name, z, y)
    assert torch.isfinite(loss) and torch.isfinite(grad).all() and grad.dtype == torch.float32
    z64 = z.double().requires_grad_(True)
    want = POINTWISE_ORACLES[name](z64, y)
    want.backward()
    assert float(loss) == pytest.approx(float(want), rel=1e-5, abs=1e-7)
    np.testing.assert_allclose(grad.numpy(), z64.grad.numpy(), rtol=0,
                               atol=1e-5 * float(z64.grad.abs().max()) + 1e-12)


# ---------------------------------------------------------------- single voxel, odd shapes, C = 1 / 2


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(sorted(REGION_KINDS)),
       head=st.sampled_from([(1, "sigmoid"), (2, "softmax"), (2, "sigmoid")]),
       spatial=st.sampled_from([(1,), (1, 1), (1, 1, 1), (3, 5, 7), (1, 7), (5, 1, 3)]),
       B=st.integers(1, 2), unit=st.sampled_from(["sample", "batch"]), seed=st.integers(0, 2**16))
def test_tiny_and_odd_shapes_match_reference(kind, head, spatial, B, unit, seed):
    C, activation = head
    params = REGION_KINDS[kind]
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((B, C) + spatial, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 2, (B,) + spatial, generator=g)
    got = L.region_loss(z, y, kind=kind, activation=activation, reduction_unit=unit, **params)
    want = R.region_loss(z.numpy(), y.numpy(), kind, activation, reduction_unit=unit, **_ref_params(kind, params))
    assert float(got) == pytest.approx(float(want), rel=1e-10, abs=1e-12)
    if unit == "sample":
        z.requires_grad_(True)
        L.region_loss(z, y, kind=kind, activation=activation, **params).backward()
        _, want_grad = _ref_value_and_grad(kind, z, y, activation, _ref_params(kind, params))
        np.testing.assert_allclose(z.grad.numpy(), want_grad, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("kind", ["dice", "jaccard", "tversky", "focal_tversky"])
def test_single_voxel_gradcheck(kind):
    for C, activation in ((1, "sigmoid"), (2, "softmax")):
        z = torch.randn(1, C, 1, 1, 1, dtype=torch.float64, requires_grad=True)
        y = torch.ones(1, 1, 1, 1, dtype=torch.int64)
        assert torch.autograd.gradcheck(lambda t: L.region_loss(t, y, kind=kind, activation=activation,
                                                                **REGION_KINDS[kind]), (z,))


@pytest.mark.parametrize("empty", ["smooth", "zero", "skip"])
@pytest.mark.parametrize("kind", ["dice", "jaccard", "tversky", "focal_tversky", "log_dice"])
def test_class_absent_from_prediction_and_target(kind, empty):
    # class 2 appears in no label and its logits sit at -1e4: p = 0 exactly, so I = P = G = 0
    params = REGION_KINDS[kind]
    z, y = case(B=2, C=3, spatial=(3, 5, 7), seed=11)
    y = y % 2
    z[:, 2] = -1e4
    z.requires_grad_(True)
    loss = L.region_loss(z, y, kind=kind, empty=empty, **params)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    want, want_grad = _ref_value_and_grad(kind, z, y, "softmax", _ref_params(kind, params), empty)
    assert float(loss) == pytest.approx(want, rel=1e-10, abs=1e-12)
    np.testing.assert_allclose(z.grad.numpy(), want_grad, rtol=1e-5, atol=1e-9)
    per = L.region_loss(z.detach(), y, kind=kind, empty=empty, reduction="none", **params)
    want_per = R.region_loss(z.detach().numpy(), y.numpy(), kind, empty=empty, reduction="none",
                             **_ref_params(kind, params))
    np.testing.assert_allclose(per.numpy(), want_per, rtol=1e-10, atol=1e-12)  # NaN where skipped
    assert np.isnan(per[:, 2].numpy()).all() == (empty == "skip")


# ---------------------------------------------------------------- half-precision heads


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_half_precision_matches_float32_of_the_same_values(name, dtype):
    z, y = case(seed=12, dtype=dtype)
    loss, grad = value_and_grad(name, z, y)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    want_loss, want_grad = value_and_grad(name, z.float(), y)  # the same (rounded) values in float32
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-6)  # fp32 accumulation either way
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3  # the gradient itself is rounded to the input dtype
    torch.testing.assert_close(grad.float(), want_grad, rtol=tol, atol=tol * float(want_grad.abs().max()))


# ---------------------------------------------------------------- detection and distance


def test_giou_degenerate_boxes_match_reference_value_and_autograd():
    pred = torch.tensor([[0.0, 0, 0, 2],      # zero width
                         [1, 1, 1, 1],        # a point
                         [3, 3, 1, 1],        # x2 < x1, y2 < y1
                         [0, 0, 2, 2],
                         [5, 5, 5, 5]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[0.0, 0, 2, 2], [1, 1, 1, 1], [0, 0, 2, 2], [0, 0, 2, 0], [1, 1, 3, 3]],
                          dtype=torch.float64)
    loss = L.giou_loss(pred, target, reduction="none")
    np.testing.assert_allclose(loss.detach().numpy(), RD.giou_loss(pred.detach().numpy(), target.numpy(),
                                                                   reduction="none"), rtol=1e-12, atol=1e-12)
    loss.sum().backward()
    p2 = pred.detach().clone().requires_grad_(True)
    RD.torch_giou_loss(p2, target, reduction="sum").backward()
    assert torch.isfinite(pred.grad).all()
    torch.testing.assert_close(pred.grad, p2.grad, rtol=1e-10, atol=1e-12)
    for f32 in (pred.detach().float(),):
        assert torch.isfinite(L.giou_loss(f32, target.float(), reduction="none")).all()


@pytest.mark.parametrize("spacing", [(1.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, float("inf")), (1.0, -2.0, 1.0)])
def test_edt_rejects_bad_spacing(spacing):
    with pytest.raises(ValueError, match="spacing"):
        L.distance_transform_edt(torch.zeros(3, 4, 5, dtype=torch.bool), spacing)
    with pytest.raises(ValueError, match="spacing"):
        L.hausdorff_distance(torch.ones(1, 1, 3, 4, 5), torch.ones(1, 1, 3, 4, 5), spacing=spacing,
                             include_background=True)


def test_edt_single_voxel_anisotropic_3d_and_unit_volumes():
    m = torch.ones(1, 1, 3, 5, 7, dtype=torch.bool)
    m[0, 0, 1, 4, 2] = False  # the one background voxel: the distance is the scaled offset to it
    sp = (2.0, 0.5, 3.0)
    for view in (m, m.to(memory_format=torch.channels_last_3d), m.transpose(2, 4).contiguous().transpose(2, 4)):
        got = L.distance_transform_edt(view, sp, dtype=torch.float64)
        k, i, j = np.indices((3, 5, 7))
        want = np.sqrt(((k - 1) * 2.0) ** 2 + ((i - 4) * 0.5) ** 2 + ((j - 2) * 3.0) ** 2)
        np.testing.assert_allclose(got[0, 0].numpy(), want, rtol=1e-12)
    one = torch.ones(1, 1, 1, dtype=torch.bool)
    assert torch.isinf(L.distance_transform_edt(one)).all()           # no background at all
    assert (L.distance_transform_edt(~one) == 0).all()
    # Hausdorff of two single voxels = their scaled distance, in both directions
    a = torch.zeros(1, 1, 3, 5, 7)
    b = torch.zeros(1, 1, 3, 5, 7)
    a[0, 0, 0, 0, 0] = 1
    b[0, 0, 2, 3, 6] = 1
    want = np.sqrt((2 * 2.0) ** 2 + (3 * 0.5) ** 2 + (6 * 3.0) ** 2)
    for fn in (L.hausdorff_distance, L.hd95, L.average_surface_distance):
        assert float(fn(a, b, spacing=sp, include_background=True)) == pytest.approx(want, rel=1e-6)


# ---------------------------------------------------------------- infinite logits


SIGMOID_HEADS = [n for n in NAMES if n in ("bce", "wbce", "wce", "focal_sigmoid", "el_ce", "dibe_dis", "dice_focal",
                                           "combo", "exp_log", "hybrid_focal", "dibe")]
SOFTMAX_HEADS = [n for n in NAMES if n not in SIGMOID_HEADS]


def _gamma_key(name):
    params = inspect.signature(LOSSES[name][0]).parameters
    return next((k for k in ("gamma", "gamma_focal", "gamma_dis") if k in params), None)


@pytest.mark.parametrize("name, gamma", [(n, g) for n in SIGMOID_HEADS
                                         for g in ((0.5, 1.0, 2.0) if _gamma_key(n) else (None,))])
def test_sigmoid_infinite_logits_on_the_right_side_equal_saturated_ones(name, gamma):
    # sigmoid heads accept +-inf (only NaN is rejected): +inf where g = 1 and -inf where g = 0 are
    # the limits of +-1e4, so loss and gradient must equal those at +-1e4 (p is exactly 0/1 there)
    z, y = case(seed=13, dtype=torch.float32)
    g = F.one_hot(y, 3).movedim(-1, 1).bool()
    pick = torch.rand(z.shape, generator=torch.Generator().manual_seed(14)) < 0.4
    sat = torch.where(g, 1e4, -1e4)
    kw = {} if gamma is None else {_gamma_key(name): gamma}
    want_loss, want_grad = value_and_grad(name, torch.where(pick, sat, z), y, **kw)
    loss, grad = value_and_grad(name, torch.where(pick, sat * float("inf"), z), y, **kw)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    torch.testing.assert_close(loss, want_loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad, want_grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", SIGMOID_HEADS)
def test_sigmoid_infinite_logit_on_the_wrong_side_gives_inf(name):
    # as torch.nn.functional.binary_cross_entropy_with_logits: -log(0) = inf, no error
    z, y = case(seed=15, dtype=torch.float32)
    z[0, 0, 0, 0, 0] = float("inf") if int(y[0, 0, 0, 0]) != 0 else -float("inf")
    loss = call(name, z, y)
    assert torch.isposinf(loss)
    want = F.binary_cross_entropy_with_logits(z, F.one_hot(y, 3).movedim(-1, 1).float())
    assert torch.isposinf(want)


@pytest.mark.parametrize("name", SOFTMAX_HEADS)
def test_softmax_infinite_logits(name):
    z, y = case(seed=16, dtype=torch.float64)
    bad = z.clone()
    bad[1, 2, 0, 1, 2] = float("inf")
    with pytest.raises(ValueError, match=r"logits: \+inf"):
        call(name, bad, y)
    bad = z.clone()
    bad[0, :, 3, 4, 2] = -float("inf")
    with pytest.raises(ValueError, match="logits: a row of all -inf"):
        call(name, bad, y)
    # one -inf in a row is a probability of exactly 0, the same as -1e4 in float64
    other = (y[1, 0, 1, 2] + 1) % 3
    lo = z.clone()
    lo[1, other, 0, 1, 2] = -1e4
    ninf = z.clone()
    ninf[1, other, 0, 1, 2] = -float("inf")
    want_loss, want_grad = value_and_grad(name, lo, y)
    loss, grad = value_and_grad(name, ninf, y)
    torch.testing.assert_close(loss, want_loss, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("gamma", [0.25, 0.5])
@pytest.mark.parametrize("name", ["focal_sigmoid", "dice_focal", "hybrid_focal"])
def test_focal_heads_with_gamma_below_one_stay_finite_when_saturated(name, gamma):
    # regression: q^(gamma-1) overflowed to inf while log p was 0 -> NaN gradient at |z| >~ 104 (float)
    key = _gamma_key(name)
    z, y = case(seed=17, dtype=torch.float64)
    right_side = torch.where(F.one_hot(y, 3).movedim(-1, 1).bool(), 1.0, -1.0)  # p -> g
    z = torch.where(torch.rand(z.shape, generator=torch.Generator().manual_seed(18)) < 0.5,
                    right_side * (1e4 + z.abs() * 1e3), z)
    for dt in (torch.float32, torch.float64):
        loss, grad = value_and_grad(name, z.to(dt), y, **{key: gamma})
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        # saturated lanes contribute q^gamma ~ exp(-gamma |z|) ~ 0: clamping them to +-200 (where
        # nothing underflows in float64) changes the gradient by less than exp(-50)
        want_loss, want_grad = value_and_grad(name, z.clamp(-200, 200), y, **{key: gamma})
        tol = 1e-5 if dt == torch.float32 else 1e-12
        torch.testing.assert_close(loss.double(), want_loss, rtol=tol, atol=tol)
        torch.testing.assert_close(grad.double(), want_grad, rtol=tol, atol=tol)


@pytest.mark.parametrize("name, key", [("dibe_dis", "gamma"), ("dibe", "gamma_dis")])
def test_dibe_with_gamma_zero_and_infinite_logits_on_the_right_side(name, key):
    # regression: q^gamma was computed as exp(gamma * log q) = exp(0 * -inf) = NaN at gamma = 0,
    # so an infinite logit on the right side made the loss NaN instead of its limit
    z, y = case(seed=19, dtype=torch.float32)
    right_side = torch.where(F.one_hot(y, 3).movedim(-1, 1).bool(), 1.0, -1.0)
    pick = torch.rand(z.shape, generator=torch.Generator().manual_seed(20)) < 0.4
    want_loss, want_grad = value_and_grad(name, torch.where(pick, right_side * 1e4, z), y, **{key: 0.0})
    loss, grad = value_and_grad(name, torch.where(pick, right_side * float("inf"), z), y, **{key: 0.0})
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    torch.testing.assert_close(loss, want_loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad, want_grad, rtol=1e-5, atol=1e-8)


def test_class_balanced_weights_edge_counts():
    # absent classes get weight 0 (no sample to balance); the rest sum to C
    assert L.class_balanced_weights(torch.zeros(3, dtype=torch.float64), 0.999, warn=False).tolist() == [0, 0, 0]
    huge = torch.tensor([1e12, 1.0, 0.0], dtype=torch.float64)
    for beta in (0.0, 0.9, 0.999, 1 - 1e-7):
        got = L.class_balanced_weights(huge, beta, warn=False).numpy()
        np.testing.assert_allclose(got, R.class_balanced_weights(huge.numpy(), beta), rtol=1e-6)
        assert np.isfinite(got).all() and got.sum() == pytest.approx(3.0)
    # beta -> 1: the effective number (1 - beta^n)/(1 - beta) -> n, i.e. inverse-frequency weights
    got = L.class_balanced_weights(torch.tensor([0.0, 5.0, 10.0]), 1 - 1e-9, warn=False)
    np.testing.assert_allclose(got.numpy(), [0.0, 2.0, 1.0], rtol=1e-5)
    with pytest.raises(ValueError, match="beta"):
        L.class_balanced_weights(huge, 1.0)
    y = torch.full((2, 3, 4), 7)
    assert L.label_histogram(y, 3, ignore_index=7).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="labels"):
        L.label_histogram(y.float(), 3)
    with pytest.raises(ValueError, match="labels"):
        L.label_histogram(y, 3)
