"""Layer capture: a forward hook on one named sub-module that keeps its output (the activation A)
for one call and is removed afterwards (context manager), so nothing is kept across calls.

With ``prune=True`` the forward runs under ``torch.no_grad()`` up to the target layer; the hook
turns the layer output into a fresh leaf that requires grad and re-enables autograd for the rest of
the network. The graph then holds only the part after the layer, and ``torch.autograd.grad(score,
A)`` back-propagates through that part only, never into parameter gradients.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import nn

LayerSpec = Union[str, nn.Module]


def resolve_layer(model: nn.Module, layer: LayerSpec) -> nn.Module:
    """The sub-module named ``layer`` (dotted path, e.g. ``"layer4.1.conv2"``) or ``layer`` itself."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError("layer: the given module is not a sub-module of model")
        return layer
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module name (str) or an nn.Module, got {type(layer).__name__}")
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n][:12]
        raise ValueError(f"layer: model has no sub-module named {layer!r} (some names: {names})") from None


class LayerCapture:
    """``with LayerCapture(model, "layer4", prune=True) as cap: out = model(x)``; then ``cap.activation``.

    ``edit`` (optional) maps the captured activation to the tensor the rest of the network sees
    (used by Ablation-CAM to zero channels). The hook is removed on exit, also on error, and the
    object holds no reference to the model afterwards.
    """

    def __init__(self, model: nn.Module, layer: LayerSpec, *, prune: bool = False,
                 edit: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        self.module: Optional[nn.Module] = resolve_layer(model, layer)
        self.prune = prune
        self.edit = edit
        self.activation: Optional[torch.Tensor] = None
        self.calls = 0
        self._handle = None
        self._grad_ctx = None

    def _hook(self, module, inputs, output):
        self.calls += 1
        if self.calls > 1:
            raise ValueError("layer: the target layer ran more than once in one forward pass; pick a layer "
                             "that is called once (modules reused in a loop are ambiguous)")
        if not torch.is_tensor(output):
            raise TypeError(f"layer: the target layer must return a tensor, got {type(output).__name__}")
        if self.prune:
            act = output.detach().requires_grad_(True)
            torch.set_grad_enabled(True)          # for the layers after this one; restored by no_grad's exit
            self.activation = act
            out = act if self.edit is None else self.edit(act)
            return out.clone() if out is act else out  # clone: later in-place ops must not hit the leaf
        self.activation = output
        out = output if self.edit is None else self.edit(output)
        return out.clone() if out is output else out

    def __enter__(self) -> "LayerCapture":
        self._handle = self.module.register_forward_hook(self._hook)
        if self.prune:
            self._grad_ctx = torch.no_grad()
            self._grad_ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._grad_ctx is not None:
                self._grad_ctx.__exit__(None, None, None)
                self._grad_ctx = None
        finally:
            if self._handle is not None:
                self._handle.remove()
                self._handle = None
            self.module = None
            self.edit = None
        if exc[0] is None and self.calls == 0:
            raise ValueError("layer: the target layer did not run during the forward pass")
