"""fused_stats (CPU C++): the extra statistics Q, Spos, Sneg, Ph, TPh against the NumPy reference,
and the gradient of every statistic against autograd of the eager PyTorch twin."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import medseg_ext
from medseg_ext.losses.fused import pointwise_spec, torch_fused_stats
from medseg_ext.reference import losses as ref
from helpers import region_cases, tolerance

SIGMOID_KINDS = ["none", "log", "focal", "el", "dibe"]
SOFTMAX_KINDS = ["none", "log", "focal", "el"]


@st.composite
def fused_cases(draw, dtypes=(torch.float32, torch.float64, torch.float16, torch.bfloat16), grad=False):
    case = draw(region_cases(max_elems=2500, dtypes=list(dtypes), max_classes=12))
    if grad and not torch.isfinite(case.logits).all():
        case.logits = torch.nan_to_num(case.logits, neginf=-30.0)
    kinds = SIGMOID_KINDS if case.activation == "sigmoid" else SOFTMAX_KINDS
    kind = draw(st.sampled_from(kinds))
    gamma = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 2.5] if kind != "el" else [0.5, 1.0, 2.0]))
    alpha = draw(st.sampled_from([0.0, 0.3, 1.0]))
    beta = draw(st.sampled_from([0.0, 0.7]))
    threshold = draw(st.sampled_from([0.5, 0.5, 0.3, 0.8]))
    return case, dict(pointwise=kind, gamma=gamma, alpha=alpha, beta=beta, threshold=threshold)


def ext_array(s):
    return torch.stack([s.squared, s.pos_sum, s.neg_sum, s.pred_count, s.true_pos], -1).detach().numpy()


@settings(max_examples=40)
@given(fused_cases())
def test_extras_match_reference(args):
    case, kw = args
    z, y = case.numpy()
    s = medseg_ext.fused_stats(case.logits, case.labels, **case.kwargs(), **kw)
    got = ext_array(s)
    want = ref.fused_extra_stats(z, y, **case.kwargs(), **kw)
    n = y.size
    atol = tolerance(case.logits.dtype, n)
    np.testing.assert_allclose(got[..., 0], want[..., 0], rtol=1e-5, atol=atol)
    # pointwise sums: relative to the size of the terms (log-losses reach 1e4 for the huge logits)
    scale = np.maximum(1.0, np.abs(want[..., 1:3]))
    rtol = 1e-9 if case.logits.dtype == torch.float64 else 2e-4
    both_inf = np.isinf(got[..., 1:3]) & np.isinf(want[..., 1:3])
    with np.errstate(invalid="ignore"):
        err = np.where(both_inf, 0.0, np.abs(got[..., 1:3] - want[..., 1:3]) / scale)
    assert np.all(err <= rtol + atol), (err.max(), kw)
    np.testing.assert_array_equal(got[..., 3:], want[..., 3:])  # hard counts are exact
    # the region statistics of the same pass equal soft_region_stats
    region = torch.stack([s.intersection, s.prediction, s.target, s.count], -1)
    base = torch.stack(list(medseg_ext.soft_region_stats(case.logits, case.labels, **case.kwargs())), -1)
    torch.testing.assert_close(region, base, rtol=0, atol=0)


@settings(max_examples=40)
@given(fused_cases(dtypes=(torch.float64, torch.float32), grad=True), st.integers(0, 2**31 - 1))
def test_gradient_matches_autograd_of_eager_twin(args, seed):
    case, kw = args
    inp_sig = case.activation == "sigmoid"
    spec = pointwise_spec(kw["pointwise"], gamma=kw["gamma"], alpha=kw["alpha"], beta=kw["beta"],
                          threshold=kw["threshold"], sigmoid=inp_sig)
    logits = case.logits.detach().to(torch.float64).contiguous()
    labels = case.labels
    if labels.dim() == logits.dim():
        labels = labels.squeeze(1)
    rng = np.random.default_rng(seed)
    per_sample = case.reduction_unit == "sample"
    U, C = (logits.shape[0] if per_sample else 1), logits.shape[1]
    w4 = torch.from_numpy(rng.standard_normal((U, C, 4)))
    w5 = torch.from_numpy(rng.standard_normal((U, C, 5)))
    w5[..., 3:] = 0  # hard counts carry no gradient

    def grad_of(fn, z):
        z = z.clone().requires_grad_(True)
        stats, ext = fn(z)
        (g,) = torch.autograd.grad((stats * w4).sum() + (ext * w5).sum(), z)
        return g

    got = grad_of(lambda z: _kernel(z.to(case.logits.dtype), labels, inp_sig, per_sample, case.ignore_index, spec),
                  logits)
    want = grad_of(lambda z: torch_fused_stats(z, labels, inp_sig, per_sample, case.ignore_index, spec), logits)
    finite = torch.isfinite(want)
    assert torch.equal(finite, torch.isfinite(got))
    tol = 1e-9 if case.logits.dtype == torch.float64 else 2e-4
    torch.testing.assert_close(got[finite], want[finite], rtol=tol, atol=tol * 10)


def _kernel(z, labels, sigmoid, per_sample, ignore_index, spec):
    from medseg_ext.losses.fused import fused_stats_raw

    return fused_stats_raw(z, labels, sigmoid, per_sample, ignore_index, spec)


def test_gradient_dtype_follows_logits():
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        z = torch.randn(2, 3, 4, 5).to(dtype).requires_grad_(True)
        y = torch.randint(0, 3, (2, 4, 5))
        s = medseg_ext.fused_stats(z, y, pointwise="focal")
        (s.pos_sum.sum() + s.squared.sum()).backward()
        assert z.grad.dtype == dtype and torch.isfinite(z.grad).all()


def test_extreme_logits_keep_exact_log_losses():
    # log p from softplus, not log(sigmoid): a wrong prediction with |z| = 200 costs 200, not inf
    z = torch.tensor([[[200.0, -200.0, 30.0, -30.0]]], dtype=torch.float32)
    y = torch.tensor([[0, 1, 1, 0]])
    s = medseg_ext.fused_stats(z, y, activation="sigmoid", pointwise="log")
    # y = 0 at z = 200 and -30, y = 1 at z = -200 and 30: each sum is softplus(200) + softplus(-30)
    want = 200.0 + math.log1p(math.exp(-200.0)) + math.log1p(math.exp(-30.0))
    assert math.isclose(float(s.neg_sum[0, 0]), want, rel_tol=1e-6)
    assert math.isclose(float(s.pos_sum[0, 0]), want, rel_tol=1e-6)
    z = torch.tensor([[[0.0], [150.0]]]).requires_grad_(True)  # softmax: p_y underflows in float32
    s = medseg_ext.fused_stats(z, torch.tensor([[0]]), activation="softmax", pointwise="log")
    assert math.isclose(float(s.pos_sum[0, 0]), 150.0, rel_tol=1e-6)
    s.pos_sum.sum().backward()
    torch.testing.assert_close(z.grad, torch.tensor([[[-1.0], [1.0]]]))


def test_dibe_branch_values_at_threshold():
    # seeds-losses.md §2.5: λ = 0.25, γ = 2, α = 0.3, β = 0.7 at p̂ = 0.5 from either side
    eps = 1e-7
    z = torch.tensor([[[eps, -eps]]], dtype=torch.float64)  # p just above / below 0.5
    for label, want in ((1, (0.0433, 0.0795)), (0, (0.4235, 0.1300))):
        y = torch.full((1, 2), label)
        per = []
        for k in range(2):
            s = medseg_ext.fused_stats(z[..., k:k + 1], y[:, k:k + 1], activation="sigmoid", pointwise="dibe",
                                       gamma=2.0, alpha=0.3, beta=0.7)
            lam = 0.25 if label == 1 else 0.75
            per.append(lam * float(s.pos_sum.sum() + s.neg_sum.sum()))
        assert per == pytest.approx(list(want), abs=5e-5)


@pytest.mark.parametrize("kind", ["log", "focal", "el", "dibe"])
def test_bad_arguments_name_themselves(kind):
    z, y = torch.randn(1, 1, 4), torch.randint(0, 2, (1, 4))
    with pytest.raises(ValueError, match="gamma"):
        medseg_ext.fused_stats(z, y, activation="sigmoid", pointwise=kind, gamma=float("nan"))
    with pytest.raises(ValueError, match="threshold"):
        medseg_ext.fused_stats(z, y, activation="sigmoid", pointwise=kind, threshold=1.0)
    with pytest.raises(ValueError, match="pointwise"):
        medseg_ext.fused_stats(z, y, activation="sigmoid", pointwise="hinge")
    with pytest.raises(ValueError, match="sigmoid outputs only"):
        medseg_ext.fused_stats(torch.randn(1, 2, 4), y, activation="softmax", pointwise="dibe")
    with pytest.raises(ValueError, match="labels"):
        medseg_ext.fused_stats(z, torch.tensor([[0, 1, 2, 0]]), activation="sigmoid", pointwise=kind)
    with pytest.raises(ValueError, match="NaN"):
        medseg_ext.fused_stats(torch.tensor([[[0.0, float("nan"), 1.0, 2.0]]]), y, activation="sigmoid",
                               pointwise=kind)


def test_empty_input_gives_zero_statistics():
    z = torch.randn(2, 3, 0, 4)
    y = torch.zeros(2, 0, 4, dtype=torch.int64)
    s = medseg_ext.fused_stats(z, y, pointwise="log")
    assert torch.equal(ext_array_t(s), torch.zeros(2, 3, 5, dtype=torch.float64))


def ext_array_t(s):
    return torch.stack([s.squared, s.pos_sum, s.neg_sum, s.pred_count, s.true_pos], -1)


# ---------------------------------------------------------------- softmax fast path (float32, dense spatial dims)
# The kernel takes a separate vectorised path for float32 softmax logits whose spatial dims are dense
# and labels likewise (pointwise "none" or "log"); every other layout takes the general path. The two
# must agree: the general path is run on the same values through a layout it cannot take fast.


def _general_layout(z):
    """The same values with a transposed spatial stride order (not 'dense in order': general path)."""
    return z.transpose(-1, -2).contiguous().transpose(-1, -2)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(2, 17), st.integers(1, 9), st.integers(2, 37), st.sampled_from(["none", "log"]),
       st.sampled_from([None, 255]), st.sampled_from(["sample", "batch"]), st.integers(0, 2**31 - 1))
def test_softmax_fast_path_matches_general_path(B, C, H, W, kind, ignore, unit, seed):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(B, C, H, W, generator=g) * torch.tensor(8.0).pow(torch.rand(1, generator=g))).float()
    z[:, :, 0, 0] = z[:, :1, 0, 0]  # ties across classes (argmax takes the first)
    y = torch.randint(0, C, (B, H, W), generator=g)
    if ignore is not None:
        y[torch.rand(B, H, W, generator=g) < 0.3] = ignore
        z[:, 0][y == ignore] = float("nan")  # ignored elements may hold anything
    kw = dict(activation="softmax", ignore_index=ignore, reduction_unit=unit, pointwise=kind)

    def run(logits):
        logits = logits.detach().requires_grad_(True)
        s = medseg_ext.fused_stats(logits, y, **kw)
        stats = torch.stack(list(s), -1)
        w = torch.linspace(-1, 1, stats[..., :6].numel(), dtype=torch.float64).reshape(stats[..., :6].shape)
        (grad,) = torch.autograd.grad((stats[..., :6] * w).sum(), logits)
        return stats.detach(), grad

    fast_stats, fast_grad = run(z.contiguous())
    gen_stats, gen_grad = run(_general_layout(z).detach())
    assert not torch.isnan(fast_grad).any()
    np.testing.assert_array_equal(fast_stats[..., 2:4].numpy(), gen_stats[..., 2:4].numpy())  # G, N exact
    np.testing.assert_array_equal(fast_stats[..., 7:].numpy(), gen_stats[..., 7:].numpy())  # hard counts exact
    torch.testing.assert_close(fast_stats, gen_stats, rtol=2e-5, atol=2e-5 * H * W * B)
    torch.testing.assert_close(fast_grad, gen_grad, rtol=1e-4, atol=1e-5)
    if ignore is not None:
        assert torch.all(fast_grad.permute(1, 0, 2, 3)[:, y == ignore] == 0)


def test_softmax_fast_path_rejects_bad_logits_with_location():
    y = torch.zeros(1, 300, dtype=torch.int64)
    for bad, what in ((float("nan"), "NaN"), (float("inf"), r"\+inf")):
        z = torch.zeros(1, 3, 300)
        z[0, 1, 280] = bad
        with pytest.raises(ValueError, match=f"{what} at sample 0, spatial index 280"):
            medseg_ext.fused_stats(z, y, pointwise="log")
    z = torch.zeros(1, 3, 300)
    z[0, :, 7] = float("-inf")
    with pytest.raises(ValueError, match="all -inf at sample 0, spatial index 7"):
        medseg_ext.fused_stats(z, y, pointwise="log")
    z[0, 0, 7] = 0.0  # -inf in other channels is a probability of exactly 0
    s = medseg_ext.fused_stats(z, y, pointwise="log")
    assert math.isfinite(float(s.pos_sum.sum()))


def test_retained_graph_gives_the_same_gradient_twice():
    # float32 softmax stores the probabilities in the forward and turns them into the gradient in
    # place; a second backward through a retained graph must recompute them from the logits
    z = torch.randn(2, 5, 6, 7).requires_grad_(True)
    y = torch.randint(0, 5, (2, 6, 7))
    loss = medseg_ext.losses.dice_ce_loss(z, y)
    (g1,) = torch.autograd.grad(loss, z, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, z)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-7)
    z64 = z.detach().double().requires_grad_(True)
    (want,) = torch.autograd.grad(medseg_ext.losses.dice_ce_loss(z64, y), z64)
    torch.testing.assert_close(g1.double(), want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_focal_gamma_two_product_path_matches_eager_twin(activation):
    # gamma == 2 (the focal default) takes a path with products instead of exp(gamma log q)
    g = torch.Generator().manual_seed(3)
    z = (torch.randn(2, 4, 9, 11, generator=g, dtype=torch.float64) * 6).requires_grad_(True)
    y = torch.randint(0, 4, (2, 9, 11), generator=g)
    spec = pointwise_spec("focal", gamma=2.0, sigmoid=activation == "sigmoid")
    w4 = torch.randn(2, 4, 4, generator=g, dtype=torch.float64)
    w5 = torch.randn(2, 4, 5, generator=g, dtype=torch.float64)
    w5[..., 3:] = 0
    outs = []
    for fn in (_kernel, torch_fused_stats):
        zz = z.detach().clone().requires_grad_(True)
        stats, ext = fn(zz, y, activation == "sigmoid", True, None, spec)
        (grad,) = torch.autograd.grad((stats * w4).sum() + (ext * w5).sum(), zz)
        outs.append((ext.detach(), grad))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-9, atol=1e-9)
    z32 = z.detach().float().requires_grad_(True)  # float32 kernels (the vectorised rows) against float64
    stats, ext = _kernel(z32, y, activation == "sigmoid", True, None, spec)
    (grad32,) = torch.autograd.grad((stats * w4.float()).sum() + (ext * w5.float()).sum(), z32)
    torch.testing.assert_close(ext.detach(), outs[1][0], rtol=2e-4, atol=2e-4)
    torch.testing.assert_close(grad32.double(), outs[1][1], rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("gamma", [2.0, 1.5, 0.5, 0.0])
@pytest.mark.parametrize("threshold", [0.5, 0.95, 0.05])
def test_dibe_vector_rows_match_eager_twin(gamma, threshold):
    # DIBE_Dis runs row-wise (both branches computed, one selected; a series for 1 - p^a near p = 1)
    g = torch.Generator().manual_seed(int(gamma * 10) + int(threshold * 100))
    z = torch.randn(2, 3, 7, 13, generator=g, dtype=torch.float64) * 5
    z[0, 0, 0, :6] = torch.tensor([1e-7, -1e-7, 30.0, -30.0, 0.0, 4.0])  # at/around the threshold, saturated
    y = torch.randint(0, 3, (2, 7, 13), generator=g)
    spec = pointwise_spec("dibe", gamma=gamma, alpha=0.3, beta=0.7, threshold=threshold, sigmoid=True)
    w4 = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    w5 = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    w5[..., 3:] = 0

    def run(fn, zz):
        zz = zz.detach().clone().requires_grad_(True)
        stats, ext = fn(zz, y, True, True, None, spec)
        (grad,) = torch.autograd.grad((stats * w4.to(zz.dtype)).sum() + (ext * w5.to(zz.dtype)).sum(), zz)
        return ext.detach().double(), grad.double()

    want_ext, want_grad = run(torch_fused_stats, z)
    got_ext, got_grad = run(_kernel, z)
    torch.testing.assert_close(got_ext, want_ext, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-8, atol=1e-9)
    got_ext, got_grad = run(_kernel, z.float())
    torch.testing.assert_close(got_ext, want_ext, rtol=2e-4, atol=2e-4)
    torch.testing.assert_close(got_grad, want_grad, rtol=2e-3, atol=2e-4)


def _big_allocations_in_backward(loss_fn, z, *args):
    """Sizes of the allocations >= half of z made while back-propagating loss_fn(z, *args)."""
    from torch.profiler import ProfilerActivity, profile

    loss = loss_fn(z, *args)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss.backward()
    return [e.cpu_memory_usage for e in prof.events()
            if e.cpu_memory_usage >= z.numel() * z.element_size() // 2]


@pytest.mark.parametrize("loss_name", ["dice_ce_loss", "dice_loss", "cross_entropy_loss"])
def test_softmax_backward_allocates_no_logit_sized_buffer(loss_name):
    # the stored probabilities become the gradient in place: no new buffer the size of the logits in
    # the backward (and no zero gradient materialised for the probabilities output)
    z = torch.randn(1, 6, 24, 24, 24).requires_grad_(True)
    y = torch.randint(0, 6, (1, 24, 24, 24))
    assert _big_allocations_in_backward(getattr(medseg_ext.losses, loss_name), z, y) == []


def test_detection_backward_allocates_no_logit_sized_buffer():
    z = torch.randn(4000, 12).requires_grad_(True)
    t = torch.randint(0, 13, (4000,))
    big = _big_allocations_in_backward(lambda a, b: medseg_ext.losses.sigmoid_focal_loss(a, b), z, t)
    assert big == []
