"""LRP rules (seeds-part2 §1.3, §1.9; Zennit conventions for γ, αβ, z⁺, z^B, flat, w²).

A rule is a small immutable object. The engine (:mod:`medseg_ext.lrp.engine`) asks it how to
redistribute the relevance of a weighted layer (conv, transposed conv, linear) through
:meth:`Rule.weighted`, given the layer's forward ``fwd(x, w, b)`` and its input-adjoint
``adj(s, w)`` (which accepts a leading K dimension on ``s``). Parameter-free linear layers
(pooling, upsampling, norms, the addition) use the rule's stabiliser only (the ε-rule on the layer,
Zennit's ``Norm``).

Stabiliser: ``stab(z) = z + ε·sgn₀(z)`` with sgn₀(0) = +1 (Captum and Zennit; the default,
``stabilizer="signed"``), or the paper's literal Eq. 3 ``z + ε`` (``stabilizer="paper"``).
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch

Tensor = torch.Tensor


def stabilize(z: Tensor, epsilon: float, mode: str = "signed") -> Tensor:
    """``z + ε·sgn₀(z)`` (``mode="signed"``, sgn₀(0) = +1) or ``z + ε`` (``mode="paper"``)."""
    if mode == "signed":
        sign = torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
        return z + epsilon * sign
    if mode == "paper":
        return z + epsilon
    raise ValueError(f"stabilizer: expected 'signed' or 'paper', got {mode!r}")


def _check_eps(epsilon) -> float:
    if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool):
        raise TypeError(f"epsilon: expected a float, got {type(epsilon).__name__}")
    epsilon = float(epsilon)
    if not (epsilon >= 0.0) or epsilon != epsilon or epsilon == float("inf"):
        raise ValueError(f"epsilon: expected a finite value >= 0, got {epsilon}")
    return epsilon


def _pos(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.clamp(min=0)


def _neg(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.clamp(max=0)


def _add(a: Optional[Tensor], b: Optional[Tensor]) -> Optional[Tensor]:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


class Rule:
    """Base class. ``epsilon`` and ``stabilizer`` are used by every rule for its denominator."""

    name = "rule"

    def __init__(self, epsilon: float = 1e-6, stabilizer: str = "signed"):
        self.epsilon = _check_eps(epsilon)
        if stabilizer not in ("signed", "paper"):
            raise ValueError(f"stabilizer: expected 'signed' or 'paper', got {stabilizer!r}")
        self.stabilizer = stabilizer

    def stab(self, z: Tensor) -> Tensor:
        return stabilize(z, self.epsilon, self.stabilizer)

    def weighted(self, x: Tensor, w: Tensor, b: Optional[Tensor], z: Tensor, R: Tensor,
                 fwd: Callable, adj: Callable) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Epsilon(Rule):
    """ε-rule (Eq. 3): R_in = x ⊙ Wᵀ(R / stab(z)), z the layer's actual output (bias included).

    ``epsilon=0`` gives LRP-0 (Eq. 1), where a zero denominator is kept as 0 (the sgn₀ shift is 0).
    """

    name = "epsilon"

    def weighted(self, x, w, b, z, R, fwd, adj):
        return x * adj(R / self.stab(z), w)


class Pass(Rule):
    """Relevance passes through unchanged (only for shape-preserving elementwise layers)."""

    name = "pass"

    def __init__(self):
        super().__init__(0.0)

    def weighted(self, x, w, b, z, R, fwd, adj):
        raise TypeError("Pass: cannot be used on a weighted layer (conv/linear); use Epsilon or another rule")


def _wx(z: Tensor, b: Optional[Tensor]) -> Tensor:
    """W·x from the cached layer output z = W·x + b (bias along the channel dim 1, or last for linear)."""
    if b is None:
        return z
    if z.dim() > 2:
        return z - b.reshape((1, -1) + (1,) * (z.dim() - 2))
    return z - b


def _split_pos_neg(x, w, b, z, fwd):
    """Positive and negative contribution sums without bias, from one extra forward:
    Σ(x w)⁺ = W⁺x⁺ + W⁻x⁻ = ½(Wx + |W||x|),  Σ(x w)⁻ = W⁻x⁺ + W⁺x⁻ = ½(Wx − |W||x|)."""
    wx = _wx(z, b)
    a = fwd(x.abs(), w.abs(), None)
    return 0.5 * (wx + a), 0.5 * (wx - a)


class ZPlus(Rule):
    """z⁺ rule (α1β0 for signed inputs, as Zennit): z⁺ = W⁺x⁺ + W⁻x⁻ + b⁺;
    R_in = x⁺ ⊙ W⁺ᵀ(R/stab z⁺) + x⁻ ⊙ W⁻ᵀ(R/stab z⁺).

    Computed from the cached output with one forward (|W||x|) and two adjoints:
    R_in = ½ x ⊙ Wᵀs + ½ |x| ⊙ |W|ᵀs (one adjoint with W⁺ for non-negative x).
    """

    name = "zplus"

    def weighted(self, x, w, b, z, R, fwd, adj):
        if bool((x >= 0).all()):
            wp = w.clamp(min=0)
            s = R / self.stab(fwd(x, wp, _pos(b)))
            return x * adj(s, wp)
        zp, _ = _split_pos_neg(x, w, b, z, fwd)
        if b is not None:
            zp = _add_bias(zp, b.clamp(min=0))
        s = R / self.stab(zp)
        return 0.5 * (x * adj(s, w) + x.abs() * adj(s, w.abs()))


def _add_bias(t: Tensor, b: Tensor) -> Tensor:
    if t.dim() > 2:
        return t + b.reshape((1, -1) + (1,) * (t.dim() - 2))
    return t + b


class AlphaBeta(Rule):
    """αβ rule, α − β = 1, α, β ≥ 0 (Zennit's signed-input form):
    R_in = α Σ_k (x w)⁺_jk/z⁺_k R_k − β Σ_k (x w)⁻_jk/z⁻_k R_k, z⁺ incl. b⁺, z⁻ incl. b⁻.

    From the cached output with one forward and two adjoints (s⁺ = R/stab z⁺, s⁻ = R/stab z⁻):
    R_in = ½ x ⊙ Wᵀ(α s⁺ − β s⁻) + ½ |x| ⊙ |W|ᵀ(α s⁺ + β s⁻).
    """

    name = "alphabeta"

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, epsilon: float = 1e-6, stabilizer: str = "signed"):
        super().__init__(epsilon, stabilizer)
        for nm, v in (("alpha", alpha), ("beta", beta)):
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise TypeError(f"{nm}: expected a float, got {type(v).__name__}")
            if v < 0:
                raise ValueError(f"{nm}: expected >= 0, got {v}")
        if abs((alpha - beta) - 1.0) > 1e-12:
            raise ValueError(f"alpha, beta: expected alpha - beta == 1, got alpha={alpha}, beta={beta}")
        self.alpha, self.beta = float(alpha), float(beta)

    def weighted(self, x, w, b, z, R, fwd, adj):
        zp, zn = _split_pos_neg(x, w, b, z, fwd)
        if b is not None:
            zp, zn = _add_bias(zp, b.clamp(min=0)), _add_bias(zn, b.clamp(max=0))
        sp = R / self.stab(zp)
        sn = R / self.stab(zn)
        a, bt = self.alpha, self.beta
        return 0.5 * (x * adj(a * sp - bt * sn, w) + x.abs() * adj(a * sp + bt * sn, w.abs()))


class Gamma(Rule):
    """Generalised γ rule (Zennit ``Gamma``; equals Montavon's LRP-γ for non-negative inputs).

    Outputs with z > 0 use the positive-contribution denominator x⁺(w+γw⁺) + x⁻(w+γw⁻) + (b+γb⁺),
    outputs with z < 0 the negative one x⁺(w+γw⁻) + x⁻(w+γw⁺) + (b+γb⁻); z = 0 gets nothing.
    One extra forward, two adjoints: z_± = z + γ(Σ(xw)^± + b^±),
    R_in = (1 + γ/2) x ⊙ Wᵀ(s₊ + s₋) + (γ/2) |x| ⊙ |W|ᵀ(s₊ − s₋).
    """

    name = "gamma"

    def __init__(self, gamma: float = 0.25, epsilon: float = 1e-6, stabilizer: str = "signed"):
        super().__init__(epsilon, stabilizer)
        if not isinstance(gamma, (int, float)) or isinstance(gamma, bool):
            raise TypeError(f"gamma: expected a float, got {type(gamma).__name__}")
        if not gamma >= 0:
            raise ValueError(f"gamma: expected >= 0, got {gamma}")
        self.gamma = float(gamma)

    def weighted(self, x, w, b, z, R, fwd, adj):
        g = self.gamma
        cp, cn = _split_pos_neg(x, w, b, z, fwd)
        zpos, zneg = z + g * cp, z + g * cn
        if b is not None:
            zpos, zneg = _add_bias(zpos, g * b.clamp(min=0)), _add_bias(zneg, g * b.clamp(max=0))
        sp = (z > 0).to(R.dtype) * R / self.stab(zpos)
        sn = (z < 0).to(R.dtype) * R / self.stab(zneg)
        return (1 + 0.5 * g) * x * adj(sp + sn, w) + (0.5 * g) * x.abs() * adj(sp - sn, w.abs())


class ZBox(Rule):
    """z^B rule for a bounded input layer, ``low <= x <= high`` (Zennit ``ZBox``):
    z = Wx + b − (W⁺l + b⁺) − (W⁻h + b⁻);  R_in = x ⊙ Wᵀs − l ⊙ W⁺ᵀs − h ⊙ W⁻ᵀs,  s = R/stab z."""

    name = "zbox"

    def __init__(self, low: Union[float, Tensor] = 0.0, high: Union[float, Tensor] = 1.0,
                 epsilon: float = 1e-6, stabilizer: str = "signed"):
        super().__init__(epsilon, stabilizer)
        for nm, v in (("low", low), ("high", high)):
            if not isinstance(v, (int, float, Tensor)) or isinstance(v, bool):
                raise TypeError(f"{nm}: expected a float or a tensor, got {type(v).__name__}")
        if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high:
            raise ValueError(f"low, high: expected low <= high, got {low} > {high}")
        self.low, self.high = low, high

    def _bound(self, v, x):
        if isinstance(v, Tensor):
            v = v.to(dtype=x.dtype, device=x.device)
            if v.dim() == x.dim() - 1:  # per-sample bound without the batch dimension
                v = v.unsqueeze(0)
            try:
                return torch.broadcast_to(v, x.shape)
            except RuntimeError as e:
                raise ValueError(f"low/high: shape {tuple(v.shape)} does not broadcast to the layer input "
                                 f"{tuple(x.shape)}") from e
        return torch.full_like(x, float(v))

    def weighted(self, x, w, b, z, R, fwd, adj):
        lo, hi = self._bound(self.low, x), self._bound(self.high, x)
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        den = fwd(x, w, b) - fwd(lo, wp, _pos(b)) - fwd(hi, wn, _neg(b))
        s = R / self.stab(den)
        return x * adj(s, w) - lo * adj(s, wp) - hi * adj(s, wn)


class Flat(Rule):
    """Flat rule: every input in the receptive field gets an equal share (weights := 1, inputs := 1, no bias)."""

    name = "flat"

    def weighted(self, x, w, b, z, R, fwd, adj):
        ones_w = torch.ones_like(w)
        den = fwd(torch.ones_like(x), ones_w, None)
        return adj(R / self.stab(den), ones_w)


class WSquare(Rule):
    """w² rule: R_in = (W²)ᵀ(R / stab(W²·1 + b²)) (Zennit ``WSquare``; ``bias=False`` drops b²)."""

    name = "wsquare"

    def __init__(self, epsilon: float = 1e-6, stabilizer: str = "signed", bias: bool = True):
        super().__init__(epsilon, stabilizer)
        self.bias = bool(bias)

    def weighted(self, x, w, b, z, R, fwd, adj):
        w2 = w * w
        b2 = None if (b is None or not self.bias) else b * b
        den = fwd(torch.ones_like(x), w2, b2)
        return adj(R / self.stab(den), w2)


RULES = {"epsilon": Epsilon, "pass": Pass, "zplus": ZPlus, "alphabeta": AlphaBeta, "gamma": Gamma,
         "zbox": ZBox, "flat": Flat, "wsquare": WSquare}
