"""Composites: which rule each layer gets (per layer kind, module type or module name).

Layer kinds the engine knows (``KINDS``): ``conv`` (Conv1/2/3d), ``convtranspose``
(ConvTranspose1/2/3d), ``linear``, ``batchnorm``, ``norm`` (InstanceNorm/GroupNorm/LayerNorm),
``avgpool`` (avg/adaptive-avg pooling, sum, mean), ``upsample`` (interpolate: nearest,
(bi/tri)linear), ``add`` (residual ``+``/``-``, also bare operators in forward code), and the
rule-free kinds ``maxpool`` (winner-take-all), ``activation`` (pass-through) and ``reindex``
(concat, split, views, padding: exact re-indexing).

Precedence: ``name_map`` (module name) > ``first_map`` (the first weighted layer, i.e. the one that
reads the network input) > ``layer_map`` (module type or kind, first match) > the default rule.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .rules import AlphaBeta, Epsilon, Gamma, Pass, Rule, ZBox, ZPlus

KINDS = ("conv", "convtranspose", "linear", "batchnorm", "norm", "avgpool", "upsample", "add",
         "maxpool", "activation", "reindex", "module")
WEIGHTED = ("conv", "convtranspose", "linear")

Key = Union[str, type, Tuple[type, ...]]


def _check_map(name, m):
    if m is None:
        return []
    if isinstance(m, dict):
        m = list(m.items())
    out = []
    for item in m:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise TypeError(f"{name}: expected (key, rule) pairs, got {item!r}")
        key, rule = item
        if not isinstance(rule, Rule):
            raise TypeError(f"{name}: rule for {key!r} must be a medseg_ext.lrp Rule, got {type(rule).__name__}")
        if isinstance(key, str):
            if key not in KINDS:
                raise ValueError(f"{name}: unknown layer kind {key!r}; expected one of {KINDS} or a module type")
        elif isinstance(key, type):
            pass
        elif isinstance(key, tuple) and all(isinstance(k, type) for k in key):
            pass
        else:
            raise TypeError(f"{name}: key must be a layer kind, a module type or a tuple of types, got {key!r}")
        out.append((key, rule))
    return out


class Composite:
    """Maps layers to rules.

    Parameters
    ----------
    layer_map: list of (kind | module type | tuple of types, Rule), first match wins.
    first_map: the same, for the first weighted layer (reads the network input), e.g. z^B.
    name_map: {module name (as in ``model.named_modules()``): Rule}.
    epsilon, stabilizer: the default ε-rule (used for weighted layers without a mapping, and as the
        stabiliser of parameter-free linear layers: pooling, upsampling, norms, additions).
    bn: "fold" (merge eval BatchNorm into the preceding conv/linear when it is that layer's only
        consumer, as Zennit's MergeBatchNorm canonizer; otherwise ε), "epsilon" (ε-rule on the
        affine BN map, Captum) or "pass" (Zennit composites without a canonizer).
    norm: "freeze" (InstanceNorm/GroupNorm/LayerNorm statistics treated as constants: the affine
        ε-rule x ⊙ (γ/σ) ⊙ R/stab(z)) or "captum" (ε-rule with the full Jacobian of the norm,
        which is what autograd-based Captum computes).
    """

    def __init__(self, layer_map=None, first_map=None, name_map=None, epsilon: float = 1e-6,
                 stabilizer: str = "signed", bn: str = "fold", norm: str = "freeze", parameter_free: Optional[Rule] = None):
        self.layer_map = _check_map("layer_map", layer_map)
        self.first_map = _check_map("first_map", first_map)
        if name_map is None:
            name_map = {}
        if not isinstance(name_map, dict):
            raise TypeError(f"name_map: expected a dict {{module name: Rule}}, got {type(name_map).__name__}")
        for k, v in name_map.items():
            if not isinstance(k, str) or not isinstance(v, Rule):
                raise TypeError(f"name_map: expected str -> Rule entries, got {k!r}: {type(v).__name__}")
        self.name_map = dict(name_map)
        if bn not in ("fold", "epsilon", "pass"):
            raise ValueError(f"bn: expected 'fold', 'epsilon' or 'pass', got {bn!r}")
        if norm not in ("freeze", "captum"):
            raise ValueError(f"norm: expected 'freeze' or 'captum', got {norm!r}")
        self.bn, self.norm = bn, norm
        self.default = Epsilon(epsilon, stabilizer)
        self.parameter_free = parameter_free if parameter_free is not None else Epsilon(epsilon, stabilizer)

    @staticmethod
    def _match(key, kind, module) -> bool:
        if isinstance(key, str):
            return key == kind
        return module is not None and isinstance(module, key)

    def rule_for(self, kind: str, module_name: Optional[str], module: Optional[nn.Module], first: bool) -> Rule:
        if module_name is not None and module_name in self.name_map:
            return self.name_map[module_name]
        if first:
            for key, rule in self.first_map:
                if self._match(key, kind, module):
                    return rule
        for key, rule in self.layer_map:
            if self._match(key, kind, module):
                return rule
        if kind in ("maxpool", "activation", "reindex"):
            return Pass()
        if kind == "batchnorm" and self.bn == "pass":
            return Pass()
        if kind in WEIGHTED:
            return self.default
        return self.parameter_free

    def __repr__(self):
        return (f"{type(self).__name__}(layer_map={self.layer_map!r}, first_map={self.first_map!r}, "
                f"name_map={self.name_map!r}, default={self.default!r}, bn={self.bn!r}, norm={self.norm!r})")


class EpsilonComposite(Composite):
    """The paper's setting: the ε-rule on every layer (Captum's default ε = 1e-9)."""

    def __init__(self, epsilon: float = 1e-9, stabilizer: str = "signed", bn: str = "epsilon", norm: str = "freeze",
                 **kw):
        super().__init__(epsilon=epsilon, stabilizer=stabilizer, bn=bn, norm=norm, **kw)


class EpsilonPlus(Composite):
    """Zennit ``EpsilonPlus``: z⁺ on conv and transposed conv, ε on linear, ε-stabilised Norm on
    pooling/additions, activations pass.

    ``exact`` (here and in the other presets): False (default) uses the fast signed rules (one
    extra convolution and one grouped adjoint per layer, fused element-wise stages; a layer whose
    rounding-error estimate is too large is recomputed exactly), True always the exact block form."""

    def __init__(self, epsilon: float = 1e-6, stabilizer: float = 1e-6, bn: str = "fold", norm: str = "freeze",
                 layer_map=None, exact: bool = False, **kw):
        zp = ZPlus(stabilizer, exact=exact)
        lm = list(layer_map or []) + [("conv", zp), ("convtranspose", zp), ("linear", Epsilon(epsilon))]
        super().__init__(layer_map=lm, epsilon=epsilon, bn=bn, norm=norm, parameter_free=Epsilon(stabilizer), **kw)


class EpsilonAlpha2Beta1(Composite):
    """Zennit ``EpsilonAlpha2Beta1``: α2β1 on conv/transposed conv, ε on linear."""

    def __init__(self, epsilon: float = 1e-6, stabilizer: float = 1e-6, bn: str = "fold", norm: str = "freeze",
                 layer_map=None, exact: bool = False, **kw):
        r = AlphaBeta(2.0, 1.0, epsilon=stabilizer, exact=exact)
        lm = list(layer_map or []) + [("conv", r), ("convtranspose", r), ("linear", Epsilon(epsilon))]
        super().__init__(layer_map=lm, epsilon=epsilon, bn=bn, norm=norm, parameter_free=Epsilon(stabilizer), **kw)


class EpsilonGammaBox(Composite):
    """Zennit ``EpsilonGammaBox``: z^B(low, high) on the first conv, γ on the other convs, ε on linear."""

    def __init__(self, low=0.0, high=1.0, epsilon: float = 1e-6, gamma: float = 0.25, stabilizer: float = 1e-6,
                 bn: str = "fold", norm: str = "freeze", layer_map=None, first_map=None, exact: bool = False, **kw):
        g = Gamma(gamma, epsilon=stabilizer, exact=exact)
        lm = list(layer_map or []) + [("conv", g), ("convtranspose", g), ("linear", Epsilon(epsilon))]
        box = ZBox(low, high, epsilon=stabilizer)
        fm = list(first_map or []) + [("conv", box), ("convtranspose", box)]
        super().__init__(layer_map=lm, first_map=fm, epsilon=epsilon, bn=bn, norm=norm,
                         parameter_free=Epsilon(stabilizer), **kw)


PRESETS = {"epsilon": EpsilonComposite, "epsilon_plus": EpsilonPlus, "epsilon_alpha2_beta1": EpsilonAlpha2Beta1,
           "epsilon_gamma_box": EpsilonGammaBox}
