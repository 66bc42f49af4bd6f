"""Targets: what scalar per sample the CAM explains.

* ``ClassTarget(index, activation)``: the class score of a (B, C) output (or (B,) / (B, 1) binary);
  ``index`` an int, a per-sample sequence/tensor, or None (the predicted class, fixed at the first
  forward). ``activation``: ``"none"`` (logit, as Grad-CAM/pytorch-grad-cam/TorchCAM),
  ``"softmax"``, ``"sigmoid"`` or ``"log_softmax"`` (the score after the model's final activation,
  as the SVD-Grad-CAM notebook differentiates).
* ``SegmentationTarget(class_index, mask, activation)``: Σ over the region of channel c of a
  (B, C, *spatial) output; ``mask`` a (B, *spatial) / (*spatial) bool/float tensor or None (the
  region where c is the arg-max class, fixed at the first forward).
* any callable ``f(output) -> (B,)`` tensor (it must act row-wise: Score-CAM and Ablation-CAM call
  it on chunks of masked inputs).
"""
from __future__ import annotations

import numbers
from typing import Optional, Sequence, Union

import torch

_ACTS = ("none", "softmax", "sigmoid", "log_softmax")


def _activate(out: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "none":
        return out
    if activation == "softmax":
        return torch.softmax(out, dim=1)
    if activation == "log_softmax":
        return torch.log_softmax(out, dim=1)
    return torch.sigmoid(out)


class ClassTarget:
    def __init__(self, index: Union[None, int, Sequence[int], torch.Tensor] = None, activation: str = "none"):
        if activation not in _ACTS:
            raise ValueError(f"activation must be one of {_ACTS}, got {activation!r}")
        if isinstance(index, numbers.Integral) and not isinstance(index, bool):
            index = int(index)                       # numpy integers as Python ints
        elif isinstance(index, (list, tuple)) and all(
                isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in index):
            index = [int(i) for i in index]
        if index is not None and not isinstance(index, (int, torch.Tensor)) and not (
                isinstance(index, (list, tuple)) and all(isinstance(i, int) for i in index)):
            raise TypeError(f"index must be None, an int, a sequence of ints or an integer tensor, got {type(index).__name__}")
        if isinstance(index, torch.Tensor) and (index.dtype.is_floating_point or index.dim() > 1):
            raise TypeError("index: expected a 0-d or 1-d integer tensor")
        self.index = index
        self.activation = activation

    def _host_index_ok(self, C: int):
        """Range check of user-given indices without a device sync where possible (ints / lists on the
        host; a device tensor is checked once, on the host copy the user gave)."""
        idx = self.index
        if isinstance(idx, int):
            return 0 <= idx < C
        if isinstance(idx, (list, tuple)):
            return all(0 <= i < C for i in idx)
        if isinstance(idx, torch.Tensor) and idx.numel():
            return bool(((idx >= 0) & (idx < C)).all())
        return True

    def _logits(self, output: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(output):
            raise TypeError(f"ClassTarget needs a tensor model output, got {type(output).__name__}")
        if output.dim() == 1:
            output = output[:, None]
        if output.dim() != 2:
            raise ValueError(f"ClassTarget needs a (B, C) model output, got shape {tuple(output.shape)}; "
                             "use SegmentationTarget for dense outputs")
        return output

    def resolve(self, output: torch.Tensor) -> "ClassTarget":
        """A copy with the per-sample class indices fixed (B,) from this output."""
        out = self._logits(output)
        B, C = out.shape
        if self.index is None:
            idx = out.detach().argmax(dim=1) if C > 1 else torch.zeros(B, dtype=torch.long, device=out.device)
        else:
            idx = torch.as_tensor(self.index, device=out.device).long().reshape(-1)
            if idx.numel() == 1:
                idx = idx.expand(B)
            if idx.numel() != B:
                raise ValueError(f"index: {idx.numel()} class indices for a batch of {B}")
            if self._host_index_ok(C) is False:  # user-given indices only: argmax needs no check
                raise ValueError(f"index: class index out of range for {C} classes")
        return ClassTarget(idx, self.activation)

    def __call__(self, output: torch.Tensor, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = self._logits(output)
        idx = self.index
        if not isinstance(idx, torch.Tensor):
            idx = torch.as_tensor(0 if idx is None else idx, device=out.device).long().reshape(-1)
        idx = idx.to(out.device)
        if rows is not None and idx.numel() > 1:
            idx = idx[rows]
        if idx.numel() == 1:
            idx = idx.expand(out.shape[0])
        return _activate(out, self.activation).gather(1, idx[:, None]).squeeze(1)


class SegmentationTarget:
    def __init__(self, class_index: int, mask: Optional[torch.Tensor] = None, activation: str = "none"):
        if not isinstance(class_index, int):
            raise TypeError(f"class_index must be an int, got {type(class_index).__name__}")
        if activation not in _ACTS:
            raise ValueError(f"activation must be one of {_ACTS}, got {activation!r}")
        if mask is not None and not torch.is_tensor(mask):
            raise TypeError("mask must be a tensor or None")
        self.class_index = class_index
        self.mask = mask
        self.activation = activation

    def _check(self, out: torch.Tensor) -> None:
        if not torch.is_tensor(out) or out.dim() < 3:
            raise ValueError("SegmentationTarget needs a (B, C, *spatial) model output")
        if not 0 <= self.class_index < out.shape[1]:
            raise ValueError(f"class_index {self.class_index} out of range for {out.shape[1]} channels")

    def resolve(self, output: torch.Tensor) -> "SegmentationTarget":
        self._check(output)
        if self.mask is not None:
            m = self.mask.to(output.device)
            if m.shape != output.shape[2:] and m.shape != (output.shape[0],) + output.shape[2:]:
                raise ValueError(f"mask: shape {tuple(m.shape)} matches neither {tuple(output.shape[2:])} "
                                 f"nor {(output.shape[0],) + tuple(output.shape[2:])}")
            return SegmentationTarget(self.class_index, m, self.activation)
        m = output.detach().argmax(dim=1) == self.class_index
        return SegmentationTarget(self.class_index, m, self.activation)

    def __call__(self, output: torch.Tensor, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        self._check(output)
        ch = _activate(output, self.activation)[:, self.class_index]
        if self.mask is None:
            return ch.flatten(1).sum(1)
        m = self.mask
        if m.dim() == ch.dim() and rows is not None and m.shape[0] > 1:
            m = m[rows]
        return (ch * m.to(ch.dtype)).flatten(1).sum(1)


def as_target(target):
    """None / int / sequence / tensor -> ClassTarget; ClassTarget, SegmentationTarget, callables pass."""
    if target is None or isinstance(target, (numbers.Integral, list, tuple)) or torch.is_tensor(target):
        return ClassTarget(target)
    if isinstance(target, (ClassTarget, SegmentationTarget)) or callable(target):
        return target
    raise TypeError(f"target must be None, a class index, a ClassTarget/SegmentationTarget or a callable, "
                    f"got {type(target).__name__}")


def resolve(target, output):
    return target.resolve(output) if hasattr(target, "resolve") else target


def score(target, output, rows=None) -> torch.Tensor:
    if isinstance(target, (ClassTarget, SegmentationTarget)):
        s = target(output, rows)
    else:
        s = target(output)
    if not torch.is_tensor(s) or s.dim() != 1 or s.shape[0] != output.shape[0]:
        raise ValueError(f"target: must return a (B,) tensor of scores, got "
                         f"{tuple(s.shape) if torch.is_tensor(s) else type(s).__name__}")
    return s
