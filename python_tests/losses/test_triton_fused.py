"""Triton kernels of fused_stats (forward + backward) vs the eager twin torch_fused_stats (the
oracle: plain PyTorch ops differentiated by autograd), and the compound losses through the public
API vs the CPU kernel. Without a GPU the kernels run on CPU tensors through TRITON_INTERPRET=1
(set by conftest.py), so shapes stay small."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import medseg_ext
from medseg_ext.losses import fused as F
from helpers import HAVE_CUDA, HAVE_TRITON, bad_region_inputs

pytestmark = [pytest.mark.triton, pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")]
DEVICE = "cuda" if HAVE_CUDA else "cpu"

SOFTMAX_KINDS = ["none", "log", "focal", "el"]
SIGMOID_KINDS = ["none", "log", "focal", "el", "dibe"]


def make_case(rng, C, spatial, dtype, sigmoid, ignore_index=None, scale=3.0, layout="contiguous", B=2,
              label_dtype=torch.int64):
    z = torch.from_numpy(rng.standard_normal((B, C) + tuple(spatial)) * scale)
    hi = 2 if (sigmoid and C == 1) else C
    y = torch.from_numpy(rng.integers(0, hi, (B,) + tuple(spatial)))
    if ignore_index is not None and y.numel():
        y[torch.from_numpy(rng.random(y.shape) < 0.25)] = ignore_index
    z = z.to(dtype)
    if layout == "channels_last" and len(spatial) >= 1:  # a dense permutation: strides not in order
        perm = (0,) + tuple(range(2, 2 + len(spatial))) + (1,)
        inv = tuple(int(i) for i in np.argsort(perm))
        z = z.permute(perm).contiguous().permute(inv)
    elif layout == "sliced":  # a strided view of a larger tensor
        big = torch.zeros((B, 2 * C) + tuple(s + 1 for s in spatial), dtype=dtype)
        idx = (slice(None), slice(0, 2 * C, 2)) + tuple(slice(1, None) for _ in spatial)
        big[idx] = z
        z = big[idx]
    return z.to(DEVICE), y.to(label_dtype).to(DEVICE)


def run_both(z, y, sigmoid, per_sample, ignore_index, spec, seed=0):
    """Statistics and gradients (for random weights on every differentiable statistic) by the Triton
    path and by the eager twin, as float64 CPU tensors."""
    a = z.detach().clone().requires_grad_(True)
    b = z.detach().clone().requires_grad_(True)
    with medseg_ext.use_backend("triton"):
        s1, e1 = F.fused_stats_raw(a, y, sigmoid, per_sample, ignore_index, spec)
    s2, e2 = F.torch_fused_stats(b, y, sigmoid, per_sample, ignore_index, spec)
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(s1.shape, generator=g, dtype=torch.float64).to(s1.device)
    we = torch.randn(e1.shape, generator=g, dtype=torch.float64).to(e1.device)
    we[..., 3:] = 0  # the hard counts take no gradient
    if z.numel():
        ((s1 * w).sum() + (e1 * we).sum()).backward()
        ((s2 * w).sum() + (e2 * we).sum()).backward()
    ga = a.grad if a.grad is not None else torch.zeros_like(a)
    gb = b.grad if b.grad is not None else torch.zeros_like(b)
    return (s1.detach().cpu(), e1.detach().cpu(), ga.cpu()), (s2.detach().cpu(), e2.detach().cpu(), gb.cpu())


def assert_close_stats(got, want, dtype, n_elems):
    (s1, e1, g1), (s2, e2, g2) = got, want
    assert s1.dtype == e1.dtype == torch.float64
    assert s1.shape == s2.shape and e1.shape == e2.shape
    if dtype == torch.float64:
        rtol, atol, gtol = 1e-10, 1e-9, 1e-10
    else:  # float32 arithmetic on both sides, summed in different orders
        rtol, atol, gtol = 2e-5, 1e-5 * max(1, n_elems), 3e-5
    torch.testing.assert_close(s1, s2, rtol=rtol, atol=atol)
    torch.testing.assert_close(e1, e2, rtol=rtol, atol=atol)
    assert g1.dtype == dtype and g1.shape == g2.shape
    if dtype in (torch.float16, torch.bfloat16):  # both rounded to the input dtype
        torch.testing.assert_close(g1.double(), g2.double(), rtol=2e-2, atol=2e-3)
    else:
        scale = max(1.0, float(g2.double().abs().max())) if g2.numel() else 1.0
        torch.testing.assert_close(g1.double(), g2.double(), rtol=0, atol=gtol * scale)


@st.composite
def cases(draw):
    sigmoid = draw(st.booleans())
    kind = draw(st.sampled_from(SIGMOID_KINDS if sigmoid else SOFTMAX_KINDS))
    C = draw(st.sampled_from([1, 2, 3, 5] if sigmoid else [2, 3, 5]))
    ndim = draw(st.integers(1, 3))
    spatial = tuple(draw(st.lists(st.integers(1, 7), min_size=ndim, max_size=ndim)))
    return dict(
        sigmoid=sigmoid, kind=kind, C=C, spatial=spatial,
        dtype=draw(st.sampled_from([torch.float32, torch.float64, torch.float16])),
        ignore_index=draw(st.sampled_from([None, None, 255, -100])),
        per_sample=draw(st.booleans()),
        layout=draw(st.sampled_from(["contiguous", "channels_last", "sliced"])),
        gamma=draw(st.sampled_from([0.5, 1.5, 2.0, 3.0])),
        alpha=draw(st.sampled_from([0.0, 0.3])),
        beta=draw(st.sampled_from([0.0, 0.7])),
        threshold=draw(st.sampled_from([0.5, 0.3])),
        scale=draw(st.sampled_from([0.5, 3.0, 20.0])),
        B=draw(st.integers(1, 2)),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


@settings(max_examples=20)
@given(cases())
def test_triton_fused_matches_eager(case):
    rng = np.random.default_rng(case["seed"])
    ignore = case["ignore_index"]
    z, y = make_case(rng, case["C"], case["spatial"], case["dtype"], case["sigmoid"], ignore, case["scale"],
                     case["layout"], case["B"], label_dtype=torch.int32 if ignore == 255 else torch.int64)
    spec = F.pointwise_spec(case["kind"], gamma=case["gamma"], alpha=case["alpha"], beta=case["beta"],
                            threshold=case["threshold"], sigmoid=case["sigmoid"])
    got, want = run_both(z, y, case["sigmoid"], case["per_sample"], ignore, spec, case["seed"])
    assert_close_stats(got, want, case["dtype"], y.numel())


@pytest.mark.parametrize("sigmoid, kind", [(False, k) for k in SOFTMAX_KINDS] + [(True, k) for k in SIGMOID_KINDS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triton_fused_every_kind(sigmoid, kind, dtype):
    rng = np.random.default_rng(7)
    z, y = make_case(rng, 4, (5, 3, 4), dtype, sigmoid, ignore_index=3 if not sigmoid else None)
    spec = F.pointwise_spec(kind, gamma=1.5, alpha=0.4, beta=0.2, sigmoid=sigmoid)
    got, want = run_both(z, y, sigmoid, True, 3 if not sigmoid else None, spec)
    assert_close_stats(got, want, dtype, y.numel())


@pytest.mark.parametrize("sigmoid, kind", [(False, "log"), (False, "focal"), (False, "el"), (True, "log"),
                                           (True, "focal"), (True, "dibe")])
def test_triton_fused_extreme_logits(sigmoid, kind):
    """±200 logits: exp underflows to 0 in float32; f, kappa and the gradient stay finite and exact."""
    rng = np.random.default_rng(3)
    z, y = make_case(rng, 3, (6, 5), torch.float32, sigmoid)
    z = torch.where(z > 0, 200.0, -200.0).to(z.dtype)
    spec = F.pointwise_spec(kind, gamma=2.0, alpha=0.3, sigmoid=sigmoid)
    got, want = run_both(z, y, sigmoid, False, None, spec)
    for t in got:
        assert torch.isfinite(t).all()
    (s1, e1, g1), (s2, e2, g2) = got, want
    torch.testing.assert_close(s1, s2, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(e1, e2, rtol=1e-6, atol=1e-3)  # sums of ~200-sized terms
    torch.testing.assert_close(g1, g2, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["log", "focal", "dibe"])
def test_triton_fused_binary_sigmoid(kind):
    """C = 1 sigmoid: labels are 0/1, g = [label == 1]; Sneg collects the g = 0 terms."""
    rng = np.random.default_rng(11)
    z, y = make_case(rng, 1, (9, 7), torch.float32, True, ignore_index=255, label_dtype=torch.uint8)
    spec = F.pointwise_spec(kind, gamma=0.5, alpha=0.5, beta=0.25, threshold=0.4, sigmoid=True)
    got, want = run_both(z, y, True, True, 255, spec)
    assert_close_stats(got, want, torch.float32, y.numel())
    assert got[1][..., 2].abs().sum() > 0  # Sneg


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 3, 0, 4), (2, 3, 0)])
@pytest.mark.parametrize("sigmoid", [False, True])
def test_triton_fused_empty(shape, sigmoid):
    z = torch.zeros(shape, device=DEVICE, requires_grad=True)
    y = torch.zeros((shape[0],) + shape[2:], dtype=torch.int64, device=DEVICE)
    with medseg_ext.use_backend("triton"):
        s, e = F.fused_stats_raw(z, y, sigmoid, True, None, F.pointwise_spec("focal", sigmoid=sigmoid))
    assert s.shape == (shape[0], 3, 4) and e.shape == (shape[0], 3, 5)
    assert not s.any() and not e.any()
    (s.sum() + e.sum()).backward()
    assert z.grad.shape == z.shape


def test_triton_fused_half_precision_dtypes():
    """float16 and bfloat16 logits: float32 arithmetic, gradient in the input dtype."""
    rng = np.random.default_rng(5)
    for dtype in (torch.float16, torch.bfloat16):
        for sigmoid, kind in ((False, "focal"), (True, "log")):
            z, y = make_case(rng, 3, (6, 5), dtype, sigmoid)
            try:
                got, want = run_both(z, y, sigmoid, True, None, F.pointwise_spec(kind, sigmoid=sigmoid))
            except Exception as exc:  # noqa: BLE001 - the interpreter may lack bfloat16 (NumPy has none)
                if dtype == torch.bfloat16 and DEVICE == "cpu":
                    pytest.skip(f"bfloat16 under TRITON_INTERPRET: {exc}")
                raise
            assert_close_stats(got, want, dtype, y.numel())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's NumPy on inf before the check
@pytest.mark.parametrize("bad, name", [("label", "labels"), ("nan", "logits"), ("inf", "logits")])
@pytest.mark.parametrize("sigmoid", [False, True])
def test_triton_fused_reports_bad_values(bad, name, sigmoid):
    logits, labels = bad_region_inputs(bad, DEVICE)
    spec = F.pointwise_spec("log", sigmoid=sigmoid)
    with medseg_ext.use_backend("triton"):
        if bad == "inf" and sigmoid:  # +inf is a valid sigmoid logit (p = 1)
            F.fused_stats_raw(logits, labels, sigmoid, True, None, spec)
            return
        with pytest.raises(ValueError, match=name):
            F.fused_stats_raw(logits, labels, sigmoid, True, None, spec)


def test_triton_fused_ignored_bad_values_pass():
    """Ignored elements are not read: a NaN logit or an out-of-range label there is no error."""
    logits = torch.randn(1, 3, 6, device=DEVICE)
    labels = torch.randint(0, 3, (1, 6), device=DEVICE)
    labels[0, 2] = 255
    logits[0, :, 2] = float("nan")
    with medseg_ext.use_backend("triton"):
        s, e = F.fused_stats_raw(logits, labels, False, True, 255, F.pointwise_spec("focal", sigmoid=False))
    assert torch.isfinite(s).all() and torch.isfinite(e).all() and s[0, 0, 3] == 5


def _loss_pair(fn, z, y, **kw):
    a = z.detach().clone().requires_grad_(True)
    b = z.detach().clone().to(DEVICE).requires_grad_(True)
    la = fn(a, y, **kw)
    with medseg_ext.use_backend("triton"):
        lb = fn(b, y.to(DEVICE), **kw)
    la.backward()
    lb.backward()
    return la, lb.cpu(), a.grad, b.grad.cpu()


@pytest.mark.parametrize("fn, kw", [
    (medseg_ext.losses.dice_ce_loss, dict(activation="softmax", ignore_index=2)),
    (medseg_ext.losses.dice_ce_loss, dict(activation="sigmoid", reduction_unit="batch")),
    (medseg_ext.losses.dice_focal_loss, dict(activation="sigmoid", alpha=0.25, ignore_index=2)),
    (medseg_ext.losses.dice_focal_loss, dict(activation="softmax", gamma=1.5)),
    (medseg_ext.losses.focal_loss, dict(activation="softmax", alpha=None)),
    (medseg_ext.losses.dibe_loss, dict()),
])
def test_triton_compound_losses_match_cpu_kernel(fn, kw):
    g = torch.Generator().manual_seed(0)
    C = 1 if fn is medseg_ext.losses.dibe_loss else 3
    z = torch.randn(2, C, 5, 4, 3, generator=g) * 2
    y = torch.randint(0, 2 if C == 1 else 3, (2, 5, 4, 3), generator=g)
    la, lb, ga, gb = _loss_pair(fn, z, y, **kw)
    assert lb.dtype == la.dtype and gb.dtype == ga.dtype
    torch.testing.assert_close(la, lb, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-7)


def test_triton_fused_opcheck():
    """The custom op pair passes torch.library's schema / fake-tensor / autograd-registration checks."""
    z = torch.randn(1, 3, 4, 5, device=DEVICE, requires_grad=True)
    y = torch.randint(0, 3, (1, 4, 5), device=DEVICE)
    spec = F.pointwise_spec("focal", sigmoid=False)
    torch.library.opcheck(F._fused_stats_triton_op.op, (z, y, False, True, None, *spec),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


@pytest.mark.parametrize("sigmoid, kind", [(False, "focal"), (True, "dibe")])
def test_triton_fused_many_tiles_per_program(monkeypatch, sigmoid, kind):
    """Narrow tiles and few programs: each forward program loops over several tiles (and the last
    one runs past the end of the sample)."""
    from medseg_ext.triton import fused_stats as tf

    monkeypatch.setattr(tf, "TILE_ELEMS", 64)
    monkeypatch.setattr(tf, "TARGET_PROGRAMS", 3)
    c_pad, block_s = tf._tile_shape(3)
    assert tf._forward_grid(2, 7 * 9 * 5, block_s)[1] > 2
    rng = np.random.default_rng(13)
    z, y = make_case(rng, 3, (7, 9, 5), torch.float32, sigmoid, ignore_index=255, layout="channels_last")
    spec = F.pointwise_spec(kind, gamma=2.0, alpha=0.3, sigmoid=sigmoid)
    got, want = run_both(z, y, sigmoid, True, 255, spec)
    assert_close_stats(got, want, torch.float32, y.numel())


@pytest.mark.parametrize("sigmoid, kind", [(False, "focal"), (True, "dibe")])
def test_triton_fused_gradcheck_float64(sigmoid, kind):
    """Finite differences in float64 through the Triton custom op pair (an oracle independent of
    the eager twin)."""
    g = torch.Generator().manual_seed(1)
    z = (torch.randn(1, 3, 2, 3, generator=g, dtype=torch.float64) * 2).to(DEVICE).requires_grad_(True)
    y = torch.randint(0, 3, (1, 2, 3), generator=g).to(DEVICE)
    spec = F.pointwise_spec(kind, gamma=1.5, alpha=0.3, beta=0.2, sigmoid=sigmoid)
    w = torch.randn(1, 3, 9, generator=g, dtype=torch.float64).to(DEVICE)

    def fn(x):
        with medseg_ext.use_backend("triton"):
            s, e = F.fused_stats_raw(x, y, sigmoid, True, None, spec)
        return (torch.cat([s, e], -1) * w)[..., :7].sum()  # N and the hard counts are piecewise constant

    assert torch.autograd.gradcheck(fn, (z,), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_triton_fused_labels_strided_and_compile():
    """Strided labels (a slice), and the custom op under torch.compile(fullgraph=True) (aot_eager:
    fake tensors + autograd tracing, no code generation)."""
    rng = np.random.default_rng(2)
    z, y_full = make_case(rng, 3, (6, 10), torch.float32, False, ignore_index=255)
    z, y = z[:, :, :, ::2], y_full[:, :, ::2]
    assert not y.is_contiguous()
    spec = F.pointwise_spec("focal", sigmoid=False)
    got, want = run_both(z, y, False, True, 255, spec)
    assert_close_stats(got, want, torch.float32, y.numel())

    def loss(x):
        s, e = F._fused_stats_triton_op(x, y, False, True, 255, *spec)
        return s[..., 0].sum() / s[..., 1].sum() + e[..., 1].sum()

    a = z.detach().clone().requires_grad_(True)
    b = z.detach().clone().requires_grad_(True)
    torch.compile(loss, backend="aot_eager", fullgraph=True)(a).backward()
    loss(b).backward()
    torch.testing.assert_close(a.grad, b.grad)


AOT_SCRIPT = r"""
import os, sys
os.environ.pop("TRITON_INTERPRET", None)
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from medseg_ext.triton import fused_stats as tf

common = dict(C="i32", S="i64", S2="i32", S3="i32", lb="i64", lc="i64", l1="i64", l2="i64", l3="i64",
              yb="i64", y1="i64", y2="i64", y3="i64", ignore_index="i64")
for kind, sigmoid, logit, f64 in ((2, False, "*bf16", False), (4, True, "*fp32", False), (3, True, "*fp64", True)):
    pt = "*fp64" if f64 else "*fp32"
    cx = dict(HAS_IGNORE=True, SIGMOID=sigmoid, BINARY=False, KIND=kind, C_PAD=16, BLOCK_S=64, F64=f64)
    fwd = dict(logits_ptr=logit, labels_ptr="*i64", partial_ptr=pt, counts_ptr="*i32", n_progs="i32", iters="i32",
               **common, prm_ptr=pt)
    bwd = dict(logits_ptr=logit, labels_ptr="*i64", coeff_ptr=pt, grad_ptr=logit, **common, prm_ptr=pt)
    for fn, sig, c in ((tf._fused_fwd_kernel, fwd, cx), (tf._fused_bwd_kernel, bwd, dict(cx, PER_SAMPLE=False))):
        src = ASTSource(fn=fn, signature={**sig, **{k: "constexpr" for k in c}}, constexprs=c)
        k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": tf.NUM_WARPS})
        assert "cubin" in k.asm and len(k.asm["cubin"]) > 0
print("ok")
"""


@pytest.mark.skipif(HAVE_CUDA, reason="a GPU runs the compiled kernels in the other tests")
def test_triton_fused_kernels_compile_for_sm90():
    """Without a GPU the other tests only interpret the kernels; this compiles a few variants to
    sm_90 machine code (Triton's bundled ptxas), which catches what the interpreter lets through."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", AOT_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    if r.returncode and ("ptxas" in r.stderr and "not found" in r.stderr.lower()):
        pytest.skip("Triton's ptxas is not available")
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
