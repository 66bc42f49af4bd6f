"""Fused detection losses (CPU C++) against the NumPy reference and mmdet's formulas in plain PyTorch:
values, gradients (also gradcheck in float64), edge cases and errors."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import medseg_ext
from medseg_ext.losses import detection as D
from medseg_ext.reference import detection as R

FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def layout(base: np.ndarray, dtype, kind: str) -> torch.Tensor:
    """The same values as a contiguous, transposed-storage or strided tensor."""
    if kind == "transposed" and base.ndim == 2:
        return torch.from_numpy(np.ascontiguousarray(base.T)).to(dtype).t()
    if kind == "strided":
        wide = np.repeat(base, 2, axis=-1)
        wide[..., 1::2] = np.nan  # skipped elements would poison a kernel that read them
        return torch.from_numpy(wide).to(dtype)[..., ::2]
    return torch.from_numpy(np.ascontiguousarray(base)).to(dtype)


def f64(t):
    return t.detach().to(torch.float64).numpy()


def tol(dtype):
    return {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 2e-3}[dtype]


def assert_stored_close(got: torch.Tensor, want: np.ndarray, t: float) -> None:
    """got: a tensor stored in its own dtype (gradient, per-element loss). For fp16/bf16 the oracle is
    rounded to that dtype first (so an overflow to inf is expected where the true value overflows)
    and two roundings (kernel store, then times the incoming gradient) are allowed."""
    want = np.asarray(want, dtype=np.float64)
    if got.dtype in (torch.float16, torch.bfloat16):
        want = torch.from_numpy(want).to(got.dtype).double().numpy()
        t = 1.6e-2 if got.dtype == torch.bfloat16 else 2e-3
    finite = np.abs(want[np.isfinite(want)])
    np.testing.assert_allclose(f64(got), want, rtol=t, atol=t * max(1.0, float(finite.max(initial=0))),
                               equal_nan=True)


def reduction_args(draw):
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    avg = draw(st.sampled_from([None, None, 0.0, 3.0, 250.5])) if reduction != "sum" else None
    return reduction, avg, draw(st.sampled_from([1.0, 2.0, 0.25]))


# ---------------------------------------------------------------- sigmoid focal


@st.composite
def focal_cases(draw):
    n = draw(st.sampled_from([0, 1, 2, 7, 33, 300]))
    c = draw(st.integers(1, 14))
    dtype = draw(st.sampled_from(FLOATS))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    special = draw(st.sampled_from(["none", "none", "huge", "tiny", "all_background", "all_positive"]))
    z = rng.standard_normal((n, c)) * rng.choice([0.3, 2.0, 6.0])
    if special == "huge":
        z = np.where(rng.random(z.shape) < 0.3, np.sign(z) * (60.0 if dtype == torch.float16 else 200.0), z)
    elif special == "tiny":
        z = z * 1e-7
    labels = rng.integers(0, c + 1, n)
    if special == "all_background":
        labels[:] = c
    elif special == "all_positive":
        labels = rng.integers(0, c, n)
    wkind = draw(st.sampled_from([None, "row", "elem", "broadcast"]))
    w = None
    if wkind == "row":
        w = torch.from_numpy(rng.random(n) * 2)
    elif wkind == "elem":
        w = torch.from_numpy(rng.random((n, c)))
    elif wkind == "broadcast":
        w = torch.from_numpy(rng.random(n))[:, None].expand(n, c)  # zero column stride
    kind = draw(st.sampled_from(["contiguous", "transposed", "strided"]))
    alpha = draw(st.sampled_from([0.25, 0.5, 0.9]))
    gamma = draw(st.sampled_from([2.0, 2.0, 0.0, 1.0, 1.5, 3.0]))
    return layout(z, dtype, kind), torch.from_numpy(labels), w, alpha, gamma, reduction_args(draw)


@given(focal_cases())
def test_focal_matches_reference(case):
    logits, labels, w, alpha, gamma, (reduction, avg, lw) = case
    z = logits.detach().requires_grad_(True)
    loss = D.sigmoid_focal_loss(z, labels, w, alpha=alpha, gamma=gamma, reduction=reduction, avg_factor=avg,
                                loss_weight=lw)
    zn = f64(logits)
    want = R.sigmoid_focal_loss(zn, labels.numpy(), None if w is None else w.numpy(), alpha, gamma, reduction, avg,
                                lw)
    t = tol(logits.dtype)
    scale = max(1.0, float(np.abs(want).max()) if np.size(want) else 1.0)
    if reduction == "none":
        assert loss.dtype == logits.dtype and loss.shape == logits.shape
    else:
        assert loss.dtype == (torch.float64 if logits.dtype == torch.float64 else torch.float32)
    if reduction == "none":
        assert_stored_close(loss, want, t)
    else:
        np.testing.assert_allclose(f64(loss), want, rtol=t, atol=t * scale, equal_nan=True)
    if z.numel() == 0:
        return
    # gradient: analytic NumPy derivative, weighted and scaled like the loss
    upstream = torch.rand(loss.shape, dtype=torch.float64) if reduction == "none" else torch.tensor(1.7)
    (loss * upstream.to(loss.dtype)).sum().backward()
    t_onehot = R.onehot_targets(labels.numpy(), zn.shape[1])
    g = R.sigmoid_focal_elementwise_grad(zn, t_onehot, alpha, gamma)
    if w is not None:
        g = g * (w.numpy() if w.dim() == 2 else w.numpy()[:, None])
    denom = 1.0 if reduction != "mean" else ((avg + R.FLOAT32_EPS) if avg is not None else zn.size)
    g = g * lw / denom * upstream.numpy()
    assert z.grad.dtype == logits.dtype and z.grad.shape == logits.shape
    assert_stored_close(z.grad, g, t)


@settings(max_examples=25)
@given(focal_cases())
def test_focal_matches_mmdet_formula_autograd(case):
    logits, labels, w, alpha, gamma, (reduction, avg, lw) = case
    if logits.numel() == 0 or gamma < 1:  # mmdet's pt.pow(γ<1) has an infinite derivative at saturation
        return
    z = f64(logits)
    a = torch.from_numpy(z).requires_grad_(True)
    b = torch.from_numpy(z).requires_grad_(True)
    wd = None if w is None else w.to(torch.float64)
    la = D.sigmoid_focal_loss(a, labels, wd, alpha=alpha, gamma=gamma, reduction=reduction, avg_factor=avg,
                              loss_weight=lw)
    lb = R.torch_sigmoid_focal_loss(b, labels, wd, alpha=alpha, gamma=gamma, reduction=reduction, avg_factor=avg,
                                    loss_weight=lw)
    torch.testing.assert_close(la, lb, rtol=1e-9, atol=1e-12)
    la.sum().backward()
    lb.sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12)


def test_focal_spot_values():
    z0 = torch.zeros(1, 1, dtype=torch.float64)
    one = torch.tensor([0])
    # z = 0, t = 1: α·ln2·0.5^γ = 0.25·ln2·0.25
    assert float(D.sigmoid_focal_loss(z0, one, reduction="sum")) == pytest.approx(0.25 * math.log(2) * 0.25, 1e-14)
    # γ = 0, α = 0.5: half the BCE
    z = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randint(0, 4, (20,))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        z, torch.nn.functional.one_hot(y, 4)[:, :3].double(), reduction="sum")
    got = D.sigmoid_focal_loss(z, y, alpha=0.5, gamma=0.0, reduction="sum")
    assert float(got) == pytest.approx(0.5 * float(bce), rel=1e-12)
    # z → +∞ with t = 1 and z → −∞ with t = 0 give 0 (and a zero gradient)
    zz = torch.tensor([[80.0, -80.0]], requires_grad=True)
    loss = D.sigmoid_focal_loss(zz, torch.tensor([0]), reduction="sum")
    loss.backward()
    assert float(loss.detach()) < 1e-30 and float(zz.grad.abs().max()) < 1e-30


def test_focal_avg_factor_and_empty():
    z = torch.randn(0, 5, requires_grad=True)
    y = torch.zeros(0, dtype=torch.int64)
    assert float(D.sigmoid_focal_loss(z, y, reduction="sum").detach()) == 0.0
    assert math.isnan(float(D.sigmoid_focal_loss(z, y).detach()))  # mean of nothing, as torch.mean
    loss = D.sigmoid_focal_loss(z, y, avg_factor=0.0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and z.grad.shape == (0, 5)
    assert D.sigmoid_focal_loss(z, y, reduction="none").shape == (0, 5)


def test_focal_gradcheck():
    z = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 4, 3, 1, 4, 2])
    w = torch.rand(6, dtype=torch.float64)
    for reduction, avg in (("mean", None), ("mean", 2.5), ("sum", None), ("none", None)):
        assert torch.autograd.gradcheck(lambda t: D.sigmoid_focal_loss(t, y, w, gamma=1.5, reduction=reduction,
                                                                       avg_factor=avg), (z,))


def test_focal_module_and_compile():
    z = torch.randn(10, 3, requires_grad=True)
    y = torch.randint(0, 4, (10,))
    mod = D.SigmoidFocalLoss(loss_weight=2.0)
    eager = mod(z, y, avg_factor=4.0)
    compiled = torch.compile(lambda a, b: D.sigmoid_focal_loss(a, b, avg_factor=4.0, loss_weight=2.0),
                             backend="aot_eager", fullgraph=True)
    out = compiled(z, y)
    torch.testing.assert_close(out, eager)
    out.backward()
    g = z.grad.clone()
    z.grad = None
    eager.backward()
    torch.testing.assert_close(g, z.grad)


def test_focal_errors():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="labels: value 4"):
        D.sigmoid_focal_loss(z, torch.tensor([0, 1, 4, 2]))
    with pytest.raises(ValueError, match="labels: value -1"):
        D.sigmoid_focal_loss(z, torch.tensor([0, 1, -1, 2]))
    bad = z.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="logits: NaN at row 2, column 1"):
        D.sigmoid_focal_loss(bad, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="logits: expected shape"):
        D.sigmoid_focal_loss(z[None], torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="labels: expected shape"):
        D.sigmoid_focal_loss(z, torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="labels"):
        D.sigmoid_focal_loss(z, torch.zeros(4))
    with pytest.raises(TypeError, match="logits"):
        D.sigmoid_focal_loss(z.to(torch.int32), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="avg_factor"):
        D.sigmoid_focal_loss(z, torch.tensor([0, 1, 2, 3]), reduction="sum", avg_factor=2.0)
    with pytest.raises(ValueError, match="reduction"):
        D.sigmoid_focal_loss(z, torch.tensor([0, 1, 2, 3]), reduction="avg")
    with pytest.raises(ValueError, match="gamma"):
        D.sigmoid_focal_loss(z, torch.tensor([0, 1, 2, 3]), gamma=-1.0)
    with pytest.raises(ValueError, match="weight: expected shape"):
        D.sigmoid_focal_loss(z, torch.tensor([0, 1, 2, 3]), torch.ones(3))
    with pytest.raises(ValueError, match="weight: requires grad"):
        D.sigmoid_focal_loss(z, torch.tensor([0, 1, 2, 3]), torch.ones(4, requires_grad=True))
    w = torch.ones(4)
    w[1] = float("nan")
    with pytest.raises(ValueError, match="weight: NaN"):
        D.sigmoid_focal_loss(z, torch.tensor([0, 1, 2, 3]), w)


def test_reference_backend_agrees():
    z = torch.randn(30, 5, requires_grad=True)
    y = torch.randint(0, 6, (30,))
    fast = D.sigmoid_focal_loss(z, y, avg_factor=7.0)
    with medseg_ext.use_backend("reference"):
        slow = D.sigmoid_focal_loss(z, y, avg_factor=7.0)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- GIoU


@st.composite
def box_cases(draw):
    n = draw(st.sampled_from([0, 1, 3, 20, 150]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    grid = draw(st.booleans())  # integer coordinates: ties, touching and zero-size boxes are common

    def boxes():
        if grid:
            xy = rng.integers(0, 6, (n, 2)).astype(np.float64)
            wh = rng.integers(0, 4, (n, 2)).astype(np.float64)
        else:
            xy = rng.random((n, 2)) * 50
            wh = rng.random((n, 2)) * rng.choice([0.01, 5.0, 40.0])
        return np.concatenate([xy, xy + wh], 1)

    a, b = boxes(), boxes()
    same = rng.random(n) < 0.1
    b[same] = a[same]  # identical pairs: GIoU = 1
    dtype = draw(st.sampled_from(FLOATS))
    kind = draw(st.sampled_from(["contiguous", "transposed", "strided"]))
    w = draw(st.sampled_from([None, "row", "four"]))
    w = None if w is None else torch.from_numpy(rng.random(n) if w == "row" else rng.random((n, 4)))
    eps = draw(st.sampled_from([1e-6, 1e-6, 0.5]))
    return layout(a, dtype, kind), torch.from_numpy(b), w, eps, reduction_args(draw)


@given(box_cases())
def test_giou_matches_reference_and_autograd(case):
    pred, target, w, eps, (reduction, avg, lw) = case
    target = target.to(pred.dtype)  # the kernel reads the target in pred's dtype
    p = pred.detach().requires_grad_(True)
    loss = D.giou_loss(p, target, w, eps=eps, reduction=reduction, avg_factor=avg, loss_weight=lw)
    want = R.giou_loss(f64(pred), f64(target), None if w is None else w.numpy(), eps, reduction, avg, lw)
    t = tol(pred.dtype)
    if reduction == "none":
        assert_stored_close(loss, want, t)
    else:
        np.testing.assert_allclose(f64(loss), want, rtol=t, atol=t * max(1.0, float(np.abs(want).max(initial=0))),
                                   equal_nan=True)
    if pred.numel() == 0:
        return
    loss.sum().backward()
    # oracle: autograd of mmdet's formula in float64 on the same values (its tie rules included)
    q = torch.from_numpy(f64(pred)).requires_grad_(True)
    R.torch_giou_loss(q, torch.from_numpy(f64(target)), None if w is None else w.double(), eps, reduction, avg,
                      lw).sum().backward()
    assert_stored_close(p.grad, q.grad.numpy(), t)


def test_giou_properties():
    a = torch.tensor([[0.0, 0, 2, 2]], dtype=torch.float64)
    b = torch.tensor([[10.0, 10, 12, 12]], dtype=torch.float64)
    assert float(D.giou_loss(a, a)) == pytest.approx(0.0, abs=1e-12)
    assert 1 - float(D.giou_loss(a, b)) == pytest.approx(-(144 - 8) / 144, rel=1e-6)
    rng = np.random.default_rng(1)
    xy = rng.random((200, 2)) * 10
    boxes1 = torch.from_numpy(np.concatenate([xy, xy + rng.random((200, 2)) * 5 + 0.1], 1))
    xy = rng.random((200, 2)) * 10
    boxes2 = torch.from_numpy(np.concatenate([xy, xy + rng.random((200, 2)) * 5 + 0.1], 1))
    g = 1 - D.giou_loss(boxes1, boxes2, reduction="none")
    assert float(g.max()) <= 1 + 1e-12 and float(g.min()) > -1
    torch.testing.assert_close(g, 1 - D.giou_loss(boxes2, boxes1, reduction="none"))  # symmetric
    shift = torch.tensor([3.0, -7.0, 3.0, -7.0], dtype=torch.float64)
    torch.testing.assert_close(g, 1 - D.giou_loss(boxes1 + shift, boxes2 + shift, reduction="none"))
    torch.testing.assert_close(g, 1 - D.giou_loss(boxes1 * 4, boxes2 * 4, reduction="none"), rtol=1e-6, atol=1e-6)
    iou = torch.from_numpy(R.giou(boxes1.numpy(), boxes2.numpy()))  # GIoU <= IoU
    inter_w = (torch.minimum(boxes1[:, 2], boxes2[:, 2]) - torch.maximum(boxes1[:, 0], boxes2[:, 0])).clamp(min=0)
    inter_h = (torch.minimum(boxes1[:, 3], boxes2[:, 3]) - torch.maximum(boxes1[:, 1], boxes2[:, 1])).clamp(min=0)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    plain_iou = inter_w * inter_h / (area(boxes1) + area(boxes2) - inter_w * inter_h)
    assert bool((iou <= plain_iou + 1e-9).all())


def test_giou_gradcheck_and_errors():
    a = torch.tensor([[0.0, 0, 2, 3], [1, 1, 4, 2], [0, 0, 1, 1]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([[1.0, 0.5, 3, 2], [5, 5, 6, 7], [0.2, 0.1, 0.9, 0.7]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: D.giou_loss(t, b, torch.tensor([1.0, 2, 0.5], dtype=torch.float64)),
                                    (a,))
    assert torch.autograd.gradcheck(lambda t: D.giou_loss(t, b, reduction="none"), (a,))
    with pytest.raises(ValueError, match="pred: expected shape"):
        D.giou_loss(torch.zeros(3, 5), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="target: expected shape"):
        D.giou_loss(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="target: requires grad"):
        D.giou_loss(torch.zeros(3, 4), torch.zeros(3, 4, requires_grad=True))
    with pytest.raises(ValueError, match="eps"):
        D.giou_loss(torch.zeros(3, 4), torch.zeros(3, 4), eps=0.0)
    bad = torch.zeros(3, 4)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="pred: NaN at box 1, coordinate 2"):
        D.giou_loss(bad, torch.zeros(3, 4))


# ---------------------------------------------------------------- centerness


@st.composite
def centerness_cases(draw):
    n = draw(st.sampled_from([0, 1, 5, 64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    xy = rng.random((n, 2)) * 100
    wh = rng.random((n, 2)) * 30 + 0.5
    gt = np.concatenate([xy, xy + wh], 1)
    u = rng.random((n, 2))
    u[rng.random(n) < 0.2] = 0.5  # exactly at the centre
    pts = xy + u * wh
    as_anchors = draw(st.booleans())
    if as_anchors:
        half = rng.random((n, 2)) * 4
        pts = np.concatenate([pts - half, pts + half], 1)
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    w = torch.from_numpy(rng.random(n)) if draw(st.booleans()) else None
    z = rng.standard_normal(n) * 3
    return (torch.from_numpy(z).to(dtype), torch.from_numpy(pts), torch.from_numpy(gt), w, reduction_args(draw))


@given(centerness_cases())
def test_centerness_matches_reference(case):
    logits, pts, gt, w, (reduction, avg, lw) = case
    want_t = R.centerness_target(pts.numpy(), gt.numpy())
    got_t = D.centerness_target(pts.to(logits.dtype), gt.to(logits.dtype))
    t = tol(logits.dtype) * 10
    np.testing.assert_allclose(f64(got_t), want_t, rtol=t, atol=t)
    z = logits.detach().requires_grad_(True)
    loss, targets = D.centerness_loss(z, pts, gt, w, reduction=reduction, avg_factor=avg, loss_weight=lw)
    np.testing.assert_allclose(f64(targets), want_t, rtol=t, atol=t)
    want, _ = R.centerness_loss(f64(logits), pts.numpy(), gt.numpy(), None if w is None else w.numpy(), reduction,
                                avg, lw)
    np.testing.assert_allclose(f64(loss), want, rtol=t, atol=t * max(1.0, float(np.abs(want).max(initial=0))),
                               equal_nan=True)
    if z.numel() == 0:
        return
    loss.sum().backward()
    q = torch.from_numpy(f64(logits)).requires_grad_(True)
    R.torch_centerness_loss(q, pts, gt, None if w is None else w.double(), reduction, avg, lw)[0].sum().backward()
    np.testing.assert_allclose(f64(z.grad), q.grad.numpy(), rtol=t, atol=t * max(1.0, float(q.grad.abs().max())))


def test_centerness_properties_and_errors():
    gt = torch.tensor([[0.0, 0, 4, 2], [0, 0, 4, 2]], dtype=torch.float64)
    c = D.centerness_target(torch.tensor([[2.0, 1], [1, 1.5]], dtype=torch.float64), gt)
    assert float(c[0]) == 1.0
    assert float(c[1]) == pytest.approx(math.sqrt(1 / 3 * 0.5 / 1.5), rel=1e-14)
    mirrored = D.centerness_target(torch.tensor([[3.0, 0.5]], dtype=torch.float64), gt[:1])  # l↔r, t↔b swapped
    assert float(mirrored[0]) == pytest.approx(float(c[1]), rel=1e-14)
    with pytest.raises(ValueError, match="points: point 1 is not inside"):
        D.centerness_target(torch.tensor([[2.0, 1], [5, 1]]), gt.float())
    with pytest.raises(ValueError, match="zero width or height"):
        D.centerness_target(torch.tensor([[1.0, 1]]), torch.tensor([[1.0, 0, 1, 2]]))
    with pytest.raises(ValueError, match="points: expected shape"):
        D.centerness_target(torch.zeros(2, 3), gt)
    z = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda t: D.centerness_loss(t, torch.tensor([[2.0, 1], [1, 1.5]], dtype=torch.float64), gt)[0], (z,))


# ---------------------------------------------------------------- distribution focal loss


@st.composite
def dfl_cases(draw):
    n = draw(st.sampled_from([0, 1, 4, 40, 400]))
    k = draw(st.sampled_from([2, 5, 17, 17]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    z = rng.standard_normal((n, k)) * rng.choice([0.5, 3.0, 30.0])
    y = rng.random(n) * (k - 1)
    pick = rng.random(n)
    y[pick < 0.15] = np.floor(y[pick < 0.15])      # integer targets: all weight on one bin
    y[(pick >= 0.15) & (pick < 0.2)] = k - 1       # the last bin (mmdet would index past it)
    y[(pick >= 0.2) & (pick < 0.25)] = 0.0
    dtype = draw(st.sampled_from(FLOATS))
    kind = draw(st.sampled_from(["contiguous", "transposed", "strided"]))
    w = torch.from_numpy(rng.random(n)) if draw(st.booleans()) else None
    return layout(z, dtype, kind), torch.from_numpy(y), w, reduction_args(draw)


@given(dfl_cases())
def test_dfl_matches_reference(case):
    logits, y, w, (reduction, avg, lw) = case
    z = logits.detach().requires_grad_(True)
    loss = D.distribution_focal_loss(z, y, w, reduction=reduction, avg_factor=avg, loss_weight=lw)
    zn = f64(logits)
    yn = y.to(torch.float32 if logits.dtype != torch.float64 else torch.float64).double().numpy()
    want = R.distribution_focal_loss(zn, yn, None if w is None else w.numpy(), reduction, avg, lw)
    t = tol(logits.dtype)
    if reduction == "none":
        assert_stored_close(loss, want, t)
    else:
        np.testing.assert_allclose(f64(loss), want, rtol=t, atol=t * max(1.0, float(np.abs(want).max(initial=0))),
                                   equal_nan=True)
    if z.numel() == 0:
        return
    up = torch.rand(loss.shape, dtype=torch.float64) if reduction == "none" else torch.tensor(0.6)
    (loss * up.to(loss.dtype)).sum().backward()
    g = R.distribution_focal_elementwise_grad(zn, yn)
    if w is not None:
        g = g * w.numpy()[:, None]
    denom = 1.0 if reduction != "mean" else ((avg + R.FLOAT32_EPS) if avg is not None else len(yn))
    g = g * lw / denom * (up.numpy()[:, None] if reduction == "none" else float(up))
    assert_stored_close(z.grad, g, t)


def test_dfl_matches_mmdet_formula():
    z = torch.randn(64, 17, dtype=torch.float64)
    y = torch.rand(64, dtype=torch.float64) * 15.99  # mmdet's range: y < reg_max
    w = torch.rand(64, dtype=torch.float64)
    a, b = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    la = D.distribution_focal_loss(a, y, w, avg_factor=4.0, loss_weight=0.25)
    lb = R.torch_distribution_focal_loss(b, y, w, avg_factor=4.0, loss_weight=0.25)
    torch.testing.assert_close(la, lb, rtol=1e-12, atol=1e-12)
    la.backward()
    lb.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: D.distribution_focal_loss(t[:5], y[:5], reduction="none"), (a,))


def test_dfl_errors():
    with pytest.raises(ValueError, match="target: value 16.5"):
        D.distribution_focal_loss(torch.randn(2, 17), torch.tensor([1.0, 16.5]))
    with pytest.raises(ValueError, match="target: value -0.5"):
        D.distribution_focal_loss(torch.randn(2, 17), torch.tensor([-0.5, 1.0]))
    with pytest.raises(ValueError, match="K >= 2"):
        D.distribution_focal_loss(torch.randn(2, 1), torch.tensor([0.0, 0.0]))
    with pytest.raises(ValueError, match="target: expected shape"):
        D.distribution_focal_loss(torch.randn(2, 17), torch.tensor([0.0]))
    with pytest.raises(TypeError, match="target"):
        D.distribution_focal_loss(torch.randn(2, 17), torch.tensor([0, 1]))
    bad = torch.randn(2, 17)
    bad[1, 3] = float("nan")
    with pytest.raises(ValueError, match="logits: NaN at row 1, column 3"):
        D.distribution_focal_loss(bad, torch.tensor([0.0, 1.0]))


def test_saved_gradient_is_not_aliased_by_repeated_backward():
    # the backward hands its saved gradient over when the incoming one is 1; retained graphs and
    # accumulation must still give exact multiples
    z = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, (9,))
    once = torch.autograd.grad(R.torch_sigmoid_focal_loss(z, y), z)[0]
    loss = D.sigmoid_focal_loss(z, y)
    loss.backward(retain_graph=True)
    loss.backward(retain_graph=True)
    loss.backward()
    torch.testing.assert_close(z.grad, 3 * once, rtol=1e-12, atol=1e-15)
    b = torch.randn(7, 17, dtype=torch.float64, requires_grad=True)
    t = torch.rand(7, dtype=torch.float64) * 16
    total = D.distribution_focal_loss(b, t) + 2 * D.distribution_focal_loss(b, t)
    total.backward()
    want = torch.autograd.grad(3 * R.torch_distribution_focal_loss(b, t.clamp(max=15.999)), b)[0]
    torch.testing.assert_close(b.grad, want, rtol=1e-10, atol=1e-12)


def test_baseline_avx2_and_avx512_kernels_agree():
    """The in-process tests run the AVX2 build where the CPU has it; the baseline build (scalar
    transposes, other vector widths) must give the same numbers."""
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from medseg_ext.losses import detection as D, label_aware as LA\n"
        "from medseg_ext import _dispatch\n"
        "g = torch.Generator().manual_seed(0)\n"
        "z = torch.randn(301, 13, generator=g, requires_grad=True)\n"
        "y = torch.randint(0, 14, (301,), generator=g)\n"
        "b = torch.randn(203, 17, generator=g, requires_grad=True)\n"
        "t = torch.rand(203, generator=g) * 16\n"
        "xy = torch.rand(150, 2, generator=g) * 20\n"
        "p = torch.cat([xy, xy + torch.rand(150, 2, generator=g) * 9 + 0.5], 1).requires_grad_(True)\n"
        "q = p.detach() + torch.randn(150, 4, generator=g)\n"
        "loss = D.sigmoid_focal_loss(z, y, gamma=1.5) + D.distribution_focal_loss(b, t) + D.giou_loss(p, q)\n"
        "loss = loss + D.sigmoid_focal_loss(z, y)\n"
        "loss.backward()\n"
        "x = torch.randn(2, 3, 5, 7, generator=g)\n"
        "m = LA.la_modulate(x, torch.randn(2, 3, 5, 7, generator=g), torch.randn(2, 3, 5, 7, generator=g))\n"
        "print(_dispatch.extension().build_info()['cpu_isa'])\n"
        "print(repr([float(loss.detach())] + z.grad.flatten().tolist() + b.grad.flatten().tolist()"
        " + p.grad.flatten().tolist() + m.flatten().tolist()))\n"
    )
    outs = {}
    for isa in ("base", "avx2", "auto"):
        env = dict(__import__("os").environ, MEDSEG_EXT_CPU_ISA=isa)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        name, values = out.stdout.strip().splitlines()[-2:]
        outs[isa] = (name, np.array(eval(values)))
    assert outs["base"][0] == "baseline"
    for isa in ("avx2", "auto"):
        np.testing.assert_allclose(outs["base"][1], outs[isa][1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("isa", ["base", "avx2", "auto"])
def test_every_float16_value_round_trips_through_the_kernels(isa):
    """All 65536 float16 bit patterns read by the kernels' half -> float conversion (branch-free,
    vectorised) and written back: x·1 must return x bit for bit (NaNs stay NaN), in every ISA variant."""
    import os
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from medseg_ext.losses import label_aware as LA\n"
        "x = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.float16).reshape(16, 4096)\n"
        "g = torch.zeros(16, 4096, dtype=torch.float16)\n"
        "y = LA.la_modulate(x, g, a=1.0, b=0.0, c=0.0, enforce_identity=False)\n"
        "nan = torch.isnan(x)\n"
        "assert torch.equal(torch.isnan(y), nan)\n"
        "assert torch.equal(y[~nan].view(torch.int16), x[~nan].view(torch.int16))\n"
        "print('ok')\n"
    )
    env = dict(os.environ, MEDSEG_EXT_CPU_ISA=isa)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
