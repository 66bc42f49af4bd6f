"""soft_region_stats: the one-pass statistics under every region loss, as a differentiable op.

Forward: one read of logits + labels gives, per (unit, class), I = Σp·g, P = Σp, G = Σg and N.
Backward: a second read writes dL/dlogits from the O(U·C) coefficients dL/dI and dL/dP
(seeds-losses.md §5, Group S). Region losses (Dice, Jaccard, Tversky, ...) are then a few
O(U·C) torch ops on the statistics, and autograd supplies their coefficients exactly.

Registered with torch.library.custom_op, so it works under torch.compile(fullgraph=True),
with AMP inputs (fp16/bf16 logits, fp32/fp64 accumulation) and in DDP.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import torch

from .._custom_op import custom_op
from .. import _dispatch
from .._tensor import desc
from ._inputs import check_region_inputs


class RegionStats(NamedTuple):
    """Per (unit, class) soft statistics, each (U, C) float64; U = B (per sample) or 1 (batch)."""

    intersection: torch.Tensor  # I = Σ p·g
    prediction: torch.Tensor    # P = Σ p
    target: torch.Tensor        # G = Σ g
    count: torch.Tensor         # N = number of valid (non-ignored) elements


# ---------------------------------------------------------------- backend implementations


def _cpu_forward(logits, labels, sigmoid, per_sample, ignore_index, validate):
    C_ = _dispatch.extension()
    U = logits.shape[0] if per_sample else 1
    out = torch.empty((U, logits.shape[1], 4), dtype=torch.float64)
    C_.region_stats_cpu(desc(logits), desc(labels), out.data_ptr(), sigmoid, per_sample,
                        ignore_index is not None, 0 if ignore_index is None else ignore_index)
    return out


def _cpu_backward(coeff, logits, labels, sigmoid, per_sample, ignore_index):
    C_ = _dispatch.extension()
    grad = torch.empty(logits.shape, dtype=logits.dtype)
    C_.region_stats_backward_cpu(desc(logits), desc(labels), coeff.data_ptr(), desc(grad), sigmoid,
                                 per_sample, ignore_index is not None, 0 if ignore_index is None else ignore_index)
    return grad


def _finish_partials(partial, counts, per_sample, validate):
    """(B, nblk, 3, C) partials + (B, nblk, 3) counts -> (U, C, 4) float64, summed in a fixed order
    (few kernel launches: this runs once per call and its launches are the host overhead on GPU)."""
    sums = partial.sum(dim=1, dtype=torch.float64)  # (B, 3, C)
    cnt = counts.sum(dim=1, dtype=torch.int64)      # (B, 3)
    if validate:
        bad_logits, bad_labels = cnt[:, 1:].sum(dim=0).tolist()  # the one host sync of the call
        if bad_labels:
            raise ValueError(f"labels: {bad_labels} element(s) outside the allowed class range (and not ignore_index)")
        if bad_logits:
            raise ValueError(
                f"logits: {bad_logits} element(s) with NaN (softmax also rejects +inf and rows of all -inf)"
            )
    B, _, C = sums.shape
    n = cnt[:, :1].to(torch.float64)[:, None, :].expand(B, C, 1)
    stats = torch.cat([sums.transpose(1, 2), n], dim=-1)  # (B, C, 4)
    return stats if per_sample else stats.sum(dim=0, keepdim=True)


def _triton_forward(logits, labels, sigmoid, per_sample, ignore_index, validate):
    from ..triton import region_stats as tr

    partial, counts = tr.region_stats_partials(logits, labels, sigmoid, ignore_index)
    return _finish_partials(partial, counts, per_sample, validate)


def _triton_backward(coeff, logits, labels, sigmoid, per_sample, ignore_index):
    from ..triton import region_stats as tr

    if logits.dtype != torch.float64:
        coeff = coeff.to(torch.float32)
    return tr.region_stats_backward(coeff, logits, labels, sigmoid, per_sample, ignore_index)


def _cuda_forward(logits, labels, sigmoid, per_sample, ignore_index, validate):
    C_ = _dispatch.extension()
    B, C = logits.shape[:2]
    S = int(np.prod(logits.shape[2:]))
    n_blocks = C_.region_stats_cuda_blocks(S)
    alloc = torch.empty if B and n_blocks else torch.zeros  # the kernel writes every slot it launches for
    # partial sums in the kernel's compute type: float64 logits keep float64 statistics
    pdtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    partial = alloc((B, n_blocks, 3, C), dtype=pdtype, device=logits.device)
    counts = alloc((B, n_blocks, 3), dtype=torch.int32, device=logits.device)
    with _dispatch.cuda_stream(logits.device) as stream:
        C_.region_stats_cuda(desc(logits), desc(labels), partial.data_ptr(), counts.data_ptr(), sigmoid,
                             per_sample, ignore_index is not None, 0 if ignore_index is None else ignore_index, stream)
    return _finish_partials(partial, counts, per_sample, validate)


def _cuda_backward(coeff, logits, labels, sigmoid, per_sample, ignore_index):
    C_ = _dispatch.extension()
    coeff = coeff.to(torch.float64 if logits.dtype == torch.float64 else torch.float32).contiguous()
    grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
    with _dispatch.cuda_stream(logits.device) as stream:
        C_.region_stats_backward_cuda(desc(logits), desc(labels), coeff.data_ptr(), desc(grad), sigmoid,
                                      per_sample, ignore_index is not None,
                                      0 if ignore_index is None else ignore_index, stream)
    return grad


def _logits_numpy(logits):
    """Host NumPy copy of the logits; bfloat16, which NumPy lacks, goes through float32 exactly."""
    z = logits.detach().cpu()
    return (z.float() if z.dtype == torch.bfloat16 else z).numpy()


def _reference_forward(logits, labels, sigmoid, per_sample, ignore_index, validate):
    from ..reference import losses as ref

    out = ref.soft_region_stats(_logits_numpy(logits), labels.cpu().numpy(),
                                "sigmoid" if sigmoid else "softmax", ignore_index,
                                "sample" if per_sample else "batch")
    return torch.from_numpy(np.ascontiguousarray(out)).to(logits.device)


def _reference_backward(coeff, logits, labels, sigmoid, per_sample, ignore_index):
    from ..reference import losses as ref

    grad_stats = torch.cat([coeff.cpu(), torch.zeros_like(coeff.cpu())], dim=-1)  # G and N take no gradient
    out = ref.soft_region_stats_backward(grad_stats.numpy(), _logits_numpy(logits), labels.cpu().numpy(),
                                         "sigmoid" if sigmoid else "softmax", ignore_index,
                                         "sample" if per_sample else "batch")
    return torch.from_numpy(np.ascontiguousarray(out)).to(device=logits.device, dtype=logits.dtype)


_FORWARD = {"cpu": _cpu_forward, "triton": _triton_forward, "cuda": _cuda_forward, "reference": _reference_forward}
_BACKWARD = {"cpu": _cpu_backward, "triton": _triton_backward, "cuda": _cuda_backward,
             "reference": _reference_backward}


# ---------------------------------------------------------------- custom ops


def stats_forward(logits, labels, sigmoid, per_sample, ignore_index, validate) -> torch.Tensor:
    """(U, C, 4) float64 statistics by the backend for these tensors (no autograd; for fused ops)."""
    backend = _dispatch.select_backend(logits=logits, labels=labels)
    return _FORWARD[backend](logits, labels, sigmoid, per_sample, ignore_index, validate)


@custom_op("medseg_ext::soft_region_stats", mutates_args=())
def _soft_region_stats_op(logits: torch.Tensor, labels: torch.Tensor, sigmoid: bool, per_sample: bool,
                          ignore_index: Optional[int], validate: bool) -> torch.Tensor:
    return stats_forward(logits, labels, sigmoid, per_sample, ignore_index, validate)


@_soft_region_stats_op.register_fake
def _(logits, labels, sigmoid, per_sample, ignore_index, validate):
    U = logits.shape[0] if per_sample else 1
    return logits.new_empty((U, logits.shape[1], 4), dtype=torch.float64)


@custom_op("medseg_ext::soft_region_stats_backward", mutates_args=())
def logits_backward(coeff: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                    sigmoid: bool, per_sample: bool, ignore_index: Optional[int]) -> torch.Tensor:
    """dL/dlogits from coeff (U, C, 2) = dL/dI, dL/dP: the second pass over logits + labels."""
    backend = _dispatch.select_backend(logits=logits, labels=labels, coeff=coeff)
    return _BACKWARD[backend](coeff.to(torch.float64).contiguous(), logits, labels, sigmoid, per_sample,
                              ignore_index)


@logits_backward.register_fake
def _(coeff, logits, labels, sigmoid, per_sample, ignore_index):
    return logits.new_empty(logits.shape)


def _setup_context(ctx, inputs, output):
    logits, labels, sigmoid, per_sample, ignore_index, _validate = inputs
    ctx.save_for_backward(logits, labels)
    ctx.params = (sigmoid, per_sample, ignore_index)


def _backward(ctx, grad_stats):
    logits, labels = ctx.saved_tensors
    grad = logits_backward(grad_stats[..., :2], logits, labels, *ctx.params)
    return grad, None, None, None, None, None


_soft_region_stats_op.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------- public API


def soft_region_stats(logits, labels, *, activation: str = "softmax", ignore_index: Optional[int] = None,
                      reduction_unit: str = "sample", validate: bool = True) -> RegionStats:
    """Soft region statistics of a segmentation output, differentiable with respect to ``logits``.

    Args:
        logits: (B, C, *spatial) raw scores, 1 to 3 spatial dims, float32/float64/float16/bfloat16,
            any strides (no copy is made).
        labels: (B, *spatial) or (B, 1, *spatial) integer class indices. With ``activation="sigmoid"``
            and C = 1 they must be 0/1 (binary); otherwise in [0, C).
        activation: "softmax" over the C channels, or "sigmoid" per channel (C > 1: g_c = [label == c]).
        ignore_index: label value whose elements count nowhere (not in I, P, G nor N) and get no gradient.
        reduction_unit: "sample" (statistics per image, U = B) or "batch" (the batch pooled, U = 1).
        validate: on GPU, check label ranges and NaN logits at the cost of one host sync (CPU always checks).

    Returns:
        RegionStats of four (U, C) float64 tensors: intersection I = Σp·g, prediction P = Σp,
        target G = Σg, count N. Gradients flow to ``logits`` through I and P.
    """
    inp = check_region_inputs(logits, labels, activation, ignore_index, reduction_unit)
    stats = _soft_region_stats_op(inp.logits, inp.labels, inp.sigmoid, inp.per_sample, inp.ignore_index, validate)
    return RegionStats(stats[..., 0], stats[..., 1], stats[..., 2], stats[..., 3])
