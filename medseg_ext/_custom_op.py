"""``custom_op``: a ``torch.library.custom_op`` with a fast eager path.

Every fused op is registered as a torch custom op, so that torch.compile / torch.export trace it as
one opaque node with a fake (meta) implementation. In eager mode, however, the custom-op machinery
(schema binding, default filling, redispatch through the autograd and backend keys, alias checks)
costs a few hundred microseconds per call, more than the kernels themselves on small inputs, and
on a GPU it is host time that the kernels cannot hide. So in eager mode the same three functions
(implementation, ``setup_context``, ``backward``) run through a plain ``torch.autograd.Function``,
or directly when no gradient is needed; the registered op takes over whenever something traces
(torch.compile, export, torch.jit.trace, fake or meta tensors, tensor subclasses, functorch
transforms).

Usage is that of ``torch.library.custom_op``: decorate the implementation, then
``.register_fake(fn)`` and ``.register_autograd(backward, setup_context=...)``.
"""
from __future__ import annotations

import inspect
from typing import Callable, Iterable, Optional

import torch

_PLAIN = (torch.Tensor, torch.nn.Parameter)

# False routes every call through the registered op (for measurements and tests of that path)
EAGER_FAST_PATH = True


def _traced(args) -> bool:
    """True when the registered op must run: something traces or transforms the call."""
    if (torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()
            or torch._C._get_tracing_state() is not None):  # torch.jit.trace records the op, not its insides
        return True
    for a in args:
        if isinstance(a, torch.Tensor) and (type(a) not in _PLAIN or a.is_meta):
            return True
    return False


class FastCustomOp:
    """Callable wrapper of one registered op (see the module docstring)."""

    def __init__(self, op, fn: Callable):
        self.op = op
        self.fn = fn
        params = list(inspect.signature(fn).parameters.values())
        if any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
            raise TypeError(f"{fn.__name__}: the fast eager path supports positional parameters only")
        self._names = [p.name for p in params]
        self._defaults = [p.default for p in params]
        self._function: Optional[type] = None
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    def register_fake(self, fake: Callable) -> Callable:
        self.op.register_fake(fake)
        return fake

    def register_autograd(self, backward: Callable, *, setup_context: Optional[Callable] = None) -> None:
        self.op.register_autograd(backward, setup_context=setup_context)
        impl = self.fn

        def forward(ctx, *args):
            out = impl(*args)
            if setup_context is not None:
                setup_context(ctx, args, out)
            return out

        # the same ctx protocol as the custom op: save_for_backward, mark_non_differentiable,
        # set_materialize_grads, attributes; backward returns one gradient per input
        self._function = type(f"{impl.__name__}_eager", (torch.autograd.Function,),
                              {"forward": staticmethod(forward), "backward": staticmethod(backward)})

    def _bind(self, args: tuple, kwargs: dict) -> tuple:
        """args + kwargs + defaults as one positional tuple (pops the keywords it uses from kwargs)."""
        n = len(args)
        full = list(args)
        for name, default in zip(self._names[n:], self._defaults[n:]):
            if name in kwargs:
                full.append(kwargs.pop(name))
            elif default is inspect.Parameter.empty:
                raise TypeError(f"{self.__name__}() missing argument {name!r}")
            else:
                full.append(default)
        if kwargs:
            raise TypeError(f"{self.__name__}() got unexpected arguments {sorted(kwargs)}")
        return tuple(full)

    def __call__(self, *args, **kwargs):
        if kwargs or len(args) != len(self._names):  # the common all-positional call binds nothing
            args = self._bind(args, kwargs)
        if not EAGER_FAST_PATH or _traced(args):
            return self.op(*args)
        if (self._function is not None and torch.is_grad_enabled()
                and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)):
            return self._function.apply(*args)
        with torch.no_grad():  # as the registered op, which runs below the autograd key
            return self.fn(*args)


def custom_op(name: str, *, mutates_args: Iterable[str] = ()) -> Callable[[Callable], FastCustomOp]:
    """``torch.library.custom_op(name, mutates_args=...)`` plus the fast eager path."""
    def wrap(fn: Callable) -> FastCustomOp:
        return FastCustomOp(torch.library.custom_op(name, mutates_args=tuple(mutates_args))(fn), fn)
    return wrap


__all__ = ["custom_op", "FastCustomOp"]
