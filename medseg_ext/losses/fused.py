"""fused_stats: one pass over logits + labels for every statistic a segmentation loss or metric needs.

Beside the region statistics I, P, G, N of :func:`soft_region_stats` the same read produces, per
(unit, class) (seeds-losses.md §5, groups S, P, C, H):

* Q = Σ p² (the squared-denominator Dice),
* Spos = Σ_{g=1} f_pos and Sneg = Σ_{g=0} f_neg, the sums of one pointwise loss (BCE/CE, focal,
  exponential-logarithmic CE, DIBE_Dis) split by the target, without their class or branch
  weights, so the epilogue can weight them (λ, α_c, the WCE weight) for free,
* Ph = Σ ŷ and TPh = Σ ŷ·g, hard prediction counts (ŷ = argmax for softmax, z > logit(t) for
  sigmoid), from which TP/FP/FN/TN of the confusion matrix follow with G and N.

Backward: a second pass from the coefficients dL/dI, dL/dP, dL/dQ, dL/dSpos, dL/dSneg, so a
compound loss (Dice + CE, DIBE, ...) costs two reads of the logits whatever it combines.

On CPU both passes are the C++ kernel; on the Triton backend (CUDA tensors with triton installed)
both passes are the Triton kernels of medseg_ext/triton/fused_stats.py; on other backends an eager
PyTorch implementation of the same definitions (:func:`torch_fused_stats`, differentiable by
autograd) runs instead: correct, but not fused.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

import torch

from .._custom_op import custom_op
from .. import _dispatch
from .._tensor import desc
from ._inputs import check_region_inputs

POINTWISE_KINDS = {"none": 0, "log": 1, "focal": 2, "el": 3, "dibe": 4}
SOFTMAX_POINTWISE = ("none", "log", "focal", "el")


class FusedStats(NamedTuple):
    """Statistics of one pass; each field is (U, C) float64 (U = B per sample, or 1 for the batch)."""

    intersection: torch.Tensor  # I = Σ p·g
    prediction: torch.Tensor    # P = Σ p
    target: torch.Tensor        # G = Σ g
    count: torch.Tensor         # N valid elements
    squared: torch.Tensor       # Q = Σ p²
    pos_sum: torch.Tensor       # Σ_{g=1} f_pos (unweighted pointwise loss on target elements)
    neg_sum: torch.Tensor       # Σ_{g=0} f_neg (sigmoid only)
    pred_count: torch.Tensor    # Ph = Σ ŷ (hard predictions of the class)
    true_pos: torch.Tensor      # TPh = Σ ŷ·g


# Which optional statistics a caller reads (bits of PointwiseSpec.outputs): the CPU kernel skips
# the passes for the others (they come back as 0), e.g. DiceCE needs neither Q nor hard counts.
OUT_Q = 1     # Q = Σ p²
OUT_HARD = 2  # Ph, TPh
OUT_ALL = OUT_Q | OUT_HARD


class PointwiseSpec(NamedTuple):
    kind: int
    gamma: float
    a_pos: float  # DIBE_Dis 1 + α on the (y = 1, ŷ = 0) branch
    a_neg: float  # DIBE_Dis 1 + β on the (y = 0, ŷ = 1) branch
    logit_threshold: float
    outputs: int = OUT_ALL


def pointwise_spec(kind: str = "none", *, gamma: float = 2.0, alpha: float = 0.0, beta: float = 0.0,
                   threshold: float = 0.5, sigmoid: bool = True, outputs: int = OUT_ALL) -> PointwiseSpec:
    """Validated kernel parameters; ``threshold`` is the probability above which ŷ = 1 (sigmoid)."""
    if kind not in POINTWISE_KINDS:
        raise ValueError(f"pointwise: expected one of {tuple(POINTWISE_KINDS)}, got {kind!r}")
    if not sigmoid and kind not in SOFTMAX_POINTWISE:
        raise ValueError(f"pointwise: {kind!r} is defined for sigmoid outputs only (softmax: {SOFTMAX_POINTWISE})")
    for name, v in (("gamma", gamma), ("alpha", alpha), ("beta", beta)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ValueError(f"threshold: expected a probability in (0, 1), got {threshold!r}")
    if (kind == "el" and gamma == 1) or (kind == "focal" and gamma == 0):
        kind = "log"  # the same function; the kernel's log path is vectorised
    if isinstance(outputs, bool) or not isinstance(outputs, int) or not 0 <= outputs <= OUT_ALL:
        raise ValueError(f"outputs: expected a combination of OUT_Q and OUT_HARD, got {outputs!r}")
    return PointwiseSpec(POINTWISE_KINDS[kind], float(gamma), 1.0 + float(alpha), 1.0 + float(beta),
                         math.log(threshold / (1.0 - threshold)), outputs)


# ---------------------------------------------------------------- CPU kernel as a custom op


@custom_op("medseg_ext::fused_stats", mutates_args=())
def _fused_stats_op(logits: torch.Tensor, labels: torch.Tensor, sigmoid: bool, per_sample: bool,
                    ignore_index: Optional[int], kind: int, gamma: float, a_pos: float, a_neg: float,
                    logit_threshold: float, outputs: int,
                    store_probs: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    C_ = _dispatch.extension()
    U = logits.shape[0] if per_sample else 1
    C = logits.shape[1]
    out = torch.empty((U, C, 4), dtype=torch.float64)
    ext = torch.empty((U, C, 5), dtype=torch.float64)
    probs = torch.empty(logits.shape if store_probs else (0,), dtype=torch.float32)
    C_.fused_stats_cpu(desc(logits), desc(labels), out.data_ptr(), ext.data_ptr(), sigmoid, per_sample,
                       ignore_index is not None, 0 if ignore_index is None else ignore_index, kind, gamma, a_pos,
                       a_neg, logit_threshold, outputs, probs.data_ptr() if store_probs else 0)
    return out, ext, probs


@_fused_stats_op.register_fake
def _(logits, labels, sigmoid, per_sample, ignore_index, kind, gamma, a_pos, a_neg, logit_threshold, outputs,
      store_probs):
    U = logits.shape[0] if per_sample else 1
    C = logits.shape[1]
    return (logits.new_empty((U, C, 4), dtype=torch.float64), logits.new_empty((U, C, 5), dtype=torch.float64),
            logits.new_empty(logits.shape if store_probs else (0,), dtype=torch.float32))


@custom_op("medseg_ext::fused_stats_backward", mutates_args=())
def _fused_backward_op(coeff: torch.Tensor, ext_coeff: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                       sigmoid: bool, per_sample: bool, ignore_index: Optional[int], kind: int, gamma: float,
                       a_pos: float, a_neg: float, logit_threshold: float, outputs: int) -> torch.Tensor:
    C_ = _dispatch.extension()
    coeff = coeff.to(torch.float64).contiguous()
    ext_coeff = ext_coeff.to(torch.float64).contiguous()
    grad = torch.empty(logits.shape, dtype=logits.dtype)
    C_.fused_stats_backward_cpu(desc(logits), desc(labels), coeff.data_ptr(), ext_coeff.data_ptr(), desc(grad),
                                sigmoid, per_sample, ignore_index is not None,
                                0 if ignore_index is None else ignore_index, kind, gamma, a_pos, a_neg,
                                logit_threshold, outputs)
    return grad


@_fused_backward_op.register_fake
def _(coeff, ext_coeff, logits, labels, sigmoid, per_sample, ignore_index, kind, gamma, a_pos, a_neg,
      logit_threshold, outputs):
    return logits.new_empty(logits.shape)


@custom_op("medseg_ext::softmax_probs_backward_", mutates_args=("probs",))
def _probs_backward_op(coeff: torch.Tensor, ext_coeff: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor,
                       per_sample: bool, ignore_index: Optional[int], kind: int, outputs: int) -> None:
    """Overwrites the stored softmax probabilities with dL/dlogits (no second softmax, no new buffer)."""
    C_ = _dispatch.extension()
    coeff = coeff.to(torch.float64).contiguous()
    ext_coeff = ext_coeff.to(torch.float64).contiguous()
    C_.softmax_probs_backward_cpu(desc(probs), desc(labels), coeff.data_ptr(), ext_coeff.data_ptr(), desc(probs),
                                  per_sample, ignore_index is not None, 0 if ignore_index is None else ignore_index,
                                  kind, outputs)


@_probs_backward_op.register_fake
def _(coeff, ext_coeff, probs, labels, per_sample, ignore_index, kind, outputs):
    return None


def _setup_context(ctx, inputs, output):
    logits, labels = inputs[:2]
    probs = output[2]
    ctx.mark_non_differentiable(probs)
    ctx.set_materialize_grads(False)  # else autograd builds a zero gradient the size of probs
    ctx.save_for_backward(logits, labels)
    # the probabilities are used once, in place (they become the gradient); a second backward
    # through a retained graph recomputes them from the logits
    ctx.probs = probs if inputs[-1] else None
    ctx.params = inputs[2:-1]


def _backward(ctx, grad_stats, grad_ext, _grad_probs):
    logits, labels = ctx.saved_tensors
    U, C = (logits.shape[0] if ctx.params[1] else 1), logits.shape[1]
    zeros = lambda k: torch.zeros((U, C, k), dtype=torch.float64)  # noqa: E731
    coeff = zeros(2) if grad_stats is None else grad_stats[..., :2]
    ext_coeff = zeros(3) if grad_ext is None else grad_ext[..., :3]  # Ph and TPh take no gradient
    probs, ctx.probs = ctx.probs, None
    if probs is not None:
        _, per_sample, ignore_index, kind = ctx.params[:4]
        _probs_backward_op(coeff, ext_coeff, probs, labels, per_sample, ignore_index, kind, ctx.params[-1])
        return (probs,) + (None,) * 11
    grad = _fused_backward_op(coeff, ext_coeff, logits, labels, *ctx.params)
    return (grad,) + (None,) * 11


_fused_stats_op.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------- eager PyTorch version


def _safe_pow(x, gamma: float):
    """x^gamma for x >= 0 whose autograd gradient at x = 0 is 0, not inf·0 = NaN (gamma < 1)."""
    zero_value = 0.0 if gamma > 0 else 1.0
    return torch.where(x > 0, x.clamp_min(1e-300).pow(gamma), torch.full_like(x, zero_value))


def _pointwise_torch(kind: int, lp, p, q, same, gamma: float, a: float):
    """Unweighted pointwise loss f(p) in the positive orientation (see csrc/losses/region_stats.h)."""
    if kind == POINTWISE_KINDS["log"]:
        return -lp
    if kind == POINTWISE_KINDS["el"]:
        return _safe_pow(-lp, gamma)
    focal = -_safe_pow(q, gamma) * lp
    if kind == POINTWISE_KINDS["focal"]:
        return focal
    if kind == POINTWISE_KINDS["dibe"]:
        modified = -_safe_pow(1.0 - p.pow(a), gamma) * a * lp
        return torch.where(same, focal, modified)
    return torch.zeros_like(lp)


def torch_fused_stats(logits: torch.Tensor, labels: torch.Tensor, sigmoid: bool, per_sample: bool,
                      ignore_index: Optional[int], spec: PointwiseSpec) -> Tuple[torch.Tensor, torch.Tensor]:
    """The (U, C, 4) and (U, C, 5) statistics with plain PyTorch ops (differentiable by autograd).

    Runs on any device; materialises the probabilities and one-hot labels, so it is the slow path
    and the independent oracle the tests hold the kernel's values and gradients against."""
    B, C = logits.shape[:2]
    cdt = torch.float64 if logits.dtype == torch.float64 else torch.float32
    z = logits.reshape(B, C, -1).to(cdt)
    y = labels.reshape(B, -1).long()
    valid = torch.ones_like(y, dtype=torch.bool) if ignore_index is None else y != ignore_index
    binary = sigmoid and C == 1
    hi = 2 if binary else C
    if bool(((y < 0) | (y >= hi))[valid].any()):
        raise ValueError(f"labels: values outside [0, {hi}) (and not ignore_index)")
    if bool(torch.isnan(z).any()):
        raise ValueError("logits: NaN")
    yc = torch.where(valid, y, 0)
    if binary:
        g = ((yc == 1) & valid)[:, None].to(cdt)
    else:
        g = torch.nn.functional.one_hot(yc, C).permute(0, 2, 1).to(cdt) * valid[:, None]
    v = valid[:, None].to(cdt)
    if sigmoid:
        p, lp, lq = torch.sigmoid(z), torch.nn.functional.logsigmoid(z), torch.nn.functional.logsigmoid(-z)
        q = torch.sigmoid(-z)
        yhat = (z > spec.logit_threshold).to(cdt)
    else:
        lp = torch.log_softmax(z, dim=1)
        p = lp.exp()
        q = 1.0 - p
        yhat = torch.nn.functional.one_hot(z.argmax(dim=1), C).permute(0, 2, 1).to(cdt)
    zero = torch.zeros((), dtype=cdt, device=z.device)
    if spec.kind:
        f_pos = _pointwise_torch(spec.kind, lp, p, q, yhat == 1, spec.gamma, spec.a_pos)
        s_pos = torch.where(g > 0, f_pos, zero).sum(-1)
        if sigmoid:
            f_neg = _pointwise_torch(spec.kind, lq, q, p, yhat == 0, spec.gamma, spec.a_neg)
            s_neg = torch.where((g == 0) & (v > 0), f_neg, zero).sum(-1)
        else:
            s_neg = torch.zeros_like(s_pos)
    else:
        s_pos = s_neg = torch.zeros((B, C), dtype=cdt, device=z.device)
    pv = torch.where(v > 0, p, zero)
    stats = torch.stack([(pv * g).sum(-1), pv.sum(-1), g.sum(-1), v.sum(-1).expand(B, C)], dim=-1)
    ext = torch.stack([(pv * pv).sum(-1), s_pos, s_neg, (yhat * v).sum(-1), (yhat * g).sum(-1)], dim=-1)
    stats, ext = stats.to(torch.float64), ext.to(torch.float64)
    if not per_sample:
        stats, ext = stats.sum(0, keepdim=True), ext.sum(0, keepdim=True)
    return stats, ext


# ---------------------------------------------------------------- Triton kernels as a custom op

# Pointwise kinds with Triton kernels (medseg_ext/triton/fused_stats.py); others run eagerly.
TRITON_KINDS = frozenset(POINTWISE_KINDS.values())


def _finish_triton_partials(partial: torch.Tensor, counts: torch.Tensor, per_sample: bool):
    """(B, nblk, 8, C) partials + (B, nblk, 3) counts -> (U, C, 4), (U, C, 5) float64, summed in a
    fixed order; raises ValueError on bad labels / logits (one host sync, as the region path)."""
    sums = partial.sum(dim=1, dtype=torch.float64).transpose(1, 2)  # (B, C, 8)
    cnt = counts.sum(dim=1, dtype=torch.int64)                      # (B, 3)
    bad_logits, bad_labels = cnt[:, 1:].sum(dim=0).tolist()
    if bad_labels:
        raise ValueError(f"labels: {bad_labels} element(s) outside the allowed class range (and not ignore_index)")
    if bad_logits:
        raise ValueError(f"logits: {bad_logits} element(s) with NaN (softmax also rejects +inf and rows of all -inf)")
    B, C = sums.shape[:2]
    n = cnt[:, :1].to(torch.float64)[:, None, :].expand(B, C, 1)
    stats = torch.cat([sums[..., :3], n], dim=-1)
    ext = sums[..., 3:].contiguous()
    if not per_sample:
        stats, ext = stats.sum(dim=0, keepdim=True), ext.sum(dim=0, keepdim=True)
    return stats.contiguous(), ext


@custom_op("medseg_ext::fused_stats_triton", mutates_args=())
def _fused_stats_triton_op(logits: torch.Tensor, labels: torch.Tensor, sigmoid: bool, per_sample: bool,
                           ignore_index: Optional[int], kind: int, gamma: float, a_pos: float, a_neg: float,
                           logit_threshold: float, outputs: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Every statistic by the Triton kernel (Q and the hard counts are always computed: they
    cost no extra read, so ``outputs`` is not consulted)."""
    from ..triton import fused_stats as tf

    spec = PointwiseSpec(kind, gamma, a_pos, a_neg, logit_threshold, outputs)
    partial, counts = tf.fused_partials(logits, labels, sigmoid, ignore_index, spec)
    return _finish_triton_partials(partial, counts, per_sample)


@_fused_stats_triton_op.register_fake
def _(logits, labels, sigmoid, per_sample, ignore_index, kind, gamma, a_pos, a_neg, logit_threshold, outputs):
    U = logits.shape[0] if per_sample else 1
    C = logits.shape[1]
    return logits.new_empty((U, C, 4), dtype=torch.float64), logits.new_empty((U, C, 5), dtype=torch.float64)


@custom_op("medseg_ext::fused_stats_triton_backward", mutates_args=())
def _fused_triton_backward_op(coeff: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, sigmoid: bool,
                              per_sample: bool, ignore_index: Optional[int], kind: int, gamma: float, a_pos: float,
                              a_neg: float, logit_threshold: float, outputs: int) -> torch.Tensor:
    """dL/dlogits from coeff (U, C, 5) = dL/dI, dL/dP, dL/dQ, dL/dSpos, dL/dSneg (second pass)."""
    from ..triton import fused_stats as tf

    cdt = torch.float64 if logits.dtype == torch.float64 else torch.float32
    coeff = coeff.to(device=logits.device, dtype=cdt).contiguous()
    spec = PointwiseSpec(kind, gamma, a_pos, a_neg, logit_threshold, outputs)
    return tf.fused_backward(coeff, logits, labels, sigmoid, per_sample, ignore_index, spec)


@_fused_triton_backward_op.register_fake
def _(coeff, logits, labels, sigmoid, per_sample, ignore_index, kind, gamma, a_pos, a_neg, logit_threshold, outputs):
    return logits.new_empty(logits.shape)


def _triton_setup_context(ctx, inputs, output):
    logits, labels = inputs[:2]
    ctx.save_for_backward(logits, labels)
    ctx.params = inputs[2:]


def _triton_backward(ctx, grad_stats, grad_ext):
    logits, labels = ctx.saved_tensors
    U, C = (logits.shape[0] if ctx.params[1] else 1), logits.shape[1]
    zeros = lambda k: torch.zeros((U, C, k), dtype=torch.float64, device=logits.device)  # noqa: E731
    coeff = zeros(2) if grad_stats is None else grad_stats[..., :2]
    ext_coeff = zeros(3) if grad_ext is None else grad_ext[..., :3]  # Ph and TPh take no gradient
    grad = _fused_triton_backward_op(torch.cat([coeff, ext_coeff], dim=-1), logits, labels, *ctx.params)
    return (grad,) + (None,) * 10


_fused_stats_triton_op.register_autograd(_triton_backward, setup_context=_triton_setup_context)


# ---------------------------------------------------------------- public API


def fused_stats_raw(logits, labels, sigmoid: bool, per_sample: bool, ignore_index: Optional[int],
                    spec: PointwiseSpec) -> Tuple[torch.Tensor, torch.Tensor]:
    """(U, C, 4), (U, C, 5) float64 statistics of validated inputs, differentiable w.r.t. logits."""
    backend = _dispatch.select_backend(logits=logits, labels=labels)
    if backend == "cpu":
        store = stores_probs(logits, labels, sigmoid, spec.kind)
        stats, ext, _ = _fused_stats_op(logits, labels, sigmoid, per_sample, ignore_index, *spec, store)
        return stats, ext
    if backend == "triton" and spec.kind in TRITON_KINDS:
        return _fused_stats_triton_op(logits, labels, sigmoid, per_sample, ignore_index, *spec)
    return torch_fused_stats(logits, labels, sigmoid, per_sample, ignore_index, spec)


def stores_probs(logits: torch.Tensor, labels: torch.Tensor, sigmoid: bool, kind: int = 0) -> bool:
    """Whether the CPU forward keeps the softmax probabilities for an in-place backward: float32
    softmax logits that need a gradient, in the kernel's fast-path layout (the caller has picked the
    CPU backend). The buffer is the size of the gradient it becomes, so peak memory does not grow.
    Off under torch.compile, whose graphs keep the plain two-pass form."""
    return (not torch.compiler.is_compiling() and not sigmoid and kind in (0, 1) and logits.dtype == torch.float32 and logits.requires_grad
            and torch.is_grad_enabled() and _dense_spatial(logits, 2) and _dense_spatial(labels, 1))


def softmax_stats_storing_probs(logits, labels, per_sample: bool, ignore_index: Optional[int]):
    """(U, C, 4) statistics and the stored probabilities (for :func:`probs_to_grad_`), no autograd."""
    stats, _, probs = _fused_stats_op(logits, labels, False, per_sample, ignore_index,
                                      *pointwise_spec("none", sigmoid=False, outputs=0), True)
    return stats, probs


def probs_to_grad_(probs, labels, coeff, per_sample: bool, ignore_index: Optional[int]) -> torch.Tensor:
    """Turns stored probabilities into dL/dlogits in place from region coefficients (U, C, 2)."""
    ext_coeff = torch.zeros(coeff.shape[:-1] + (3,), dtype=torch.float64)
    _probs_backward_op(coeff, ext_coeff, probs, labels, per_sample, ignore_index, 0, 0)
    return probs


def _dense_spatial(t: torch.Tensor, first: int) -> bool:
    """Axes ``first``... are dense and in order (sizes of 1 ignored): the kernel's fast-path layout."""
    expect = 1
    for d in range(t.dim() - 1, first - 1, -1):
        if t.shape[d] != 1 and t.stride(d) != expect:
            return False
        expect *= t.shape[d]
    return True


def fused_stats(logits, labels, *, activation: str = "softmax", ignore_index: Optional[int] = None,
                reduction_unit: str = "sample", pointwise: str = "none", gamma: float = 2.0, alpha: float = 0.0,
                beta: float = 0.0, threshold: float = 0.5) -> FusedStats:
    """Every per-(unit, class) statistic of one pass (see the module docstring), differentiable
    w.r.t. ``logits`` through I, P, Q, Spos and Sneg.

    ``pointwise`` picks f: "log" (−log p; BCE/CE), "focal" (−(1−p)^gamma log p), "el"
    ((−log p)^gamma, exponential-logarithmic CE), "dibe" (DIBE_Dis, sigmoid only: the focal
    branch where ŷ = y, else −(1−p^(1+alpha))^gamma (1+alpha) log p for g = 1 and the mirrored
    form with beta for g = 0). Sigmoid applies f to p for g = 1 (Spos) and to 1 − p for g = 0
    (Sneg); softmax applies it to the target class's probability only (Sneg = 0). ``threshold``:
    sigmoid ŷ = [p > threshold] (computed as z > logit(threshold)); softmax ŷ = argmax (first index
    on ties).
    """
    inp = check_region_inputs(logits, labels, activation, ignore_index, reduction_unit)
    spec = pointwise_spec(pointwise, gamma=gamma, alpha=alpha, beta=beta, threshold=threshold, sigmoid=inp.sigmoid)
    stats, ext = fused_stats_raw(inp.logits, inp.labels, inp.sigmoid, inp.per_sample, inp.ignore_index, spec)
    return FusedStats(*stats.unbind(-1), *ext.unbind(-1))
