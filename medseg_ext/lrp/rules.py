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
        if epsilon == 0.0:
            return z
        t = z + 0.0                      # -0.0 -> +0.0, so that sgn0(-0.0) = +1 as for 0
        return t.abs().add_(epsilon).copysign_(t)
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

    def _fusable(self, R: Tensor, z: Tensor) -> bool:
        return self.stabilizer == "signed" and self.epsilon > 0.0 and R.dim() == z.dim() + 1 \
            and tuple(R.shape[1:]) == tuple(z.shape) and R.dtype == z.dtype

    def div(self, R: Tensor, z: Tensor) -> Tensor:
        """R / stab(z); with ε = 0 (LRP-0) a zero denominator gives 0, not NaN."""
        if self._fusable(R, z):
            from .fused import eps_div
            return eps_div(R, z, self.epsilon)
        s = R / self.stab(z)
        if self.epsilon == 0.0 or (self.stabilizer == "paper" and bool((z == -self.epsilon).any())):
            s = s.masked_fill(self.stab(z) == 0, 0.0)
        return s

    def div_mul(self, R: Tensor, z: Tensor, mult: Tensor) -> Tensor:
        """``mult * R / stab(z)`` (one fused pass when possible); mult has z's shape."""
        if self._fusable(R, z) and mult.shape == z.shape and mult.dtype == z.dtype:
            from .fused import eps_div
            return eps_div(R, z, self.epsilon, mult)
        return mult * self.div(R, z)

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
        g = adj(self.div(R, z), w)          # a fresh tensor of shape (K, *x.shape): scale it in place
        return g.mul_(x) if g.shape[1:] == x.shape and g.dtype == x.dtype else x * g


class Pass(Rule):
    """Relevance passes through unchanged (only for shape-preserving elementwise layers)."""

    name = "pass"

    def __init__(self):
        super().__init__(0.0)

    def weighted(self, x, w, b, z, R, fwd, adj):
        raise TypeError("Pass: cannot be used on a weighted layer (conv/linear); use Epsilon or another rule")


def _cat_bias(bs, like):
    if all(b is None for b in bs):
        return None
    return torch.cat([b if b is not None else torch.zeros_like(like) for b in bs])


def _blocks(x_parts, w_rows, b_rows, fwd, adj):
    """A block layer: output row r = Σ_c W[r][c] · x_parts[c] + b[r], evaluated as ONE forward
    (inputs stacked along channels, weights as a block matrix) when the layer has groups == 1,
    else block by block. Returns (outputs per row, adjoint(s_rows) -> per-column input gradients)."""
    lay = getattr(fwd, "layout", None)
    nr, nc = len(w_rows), len(x_parts)
    w0 = w_rows[0][0]
    if lay is not None and lay["groups"] == 1:
        od, idim, cd = lay["out_dim"], 1 - lay["out_dim"], lay["ch_dim"]
        W = torch.cat([torch.cat(row, dim=idim) for row in w_rows], dim=od)
        X = torch.cat(x_parts, dim=cd) if nc > 1 else x_parts[0]
        B = _cat_bias(b_rows, w0.new_zeros(w0.shape[od]))
        outs = torch.chunk(fwd(X, W, B), nr, dim=cd) if nr > 1 else (fwd(X, W, B),)

        def adjoint(s_rows):
            scd = cd + 1 if cd >= 0 else cd
            S = torch.cat(s_rows, dim=scd) if nr > 1 else s_rows[0]
            G = adj(S, W, x_parts[0].shape[cd] * nc)
            return torch.chunk(G, nc, dim=scd) if nc > 1 else (G,)
        return outs, adjoint
    outs = []
    for r in range(nr):
        o = None
        for c in range(nc):
            t = fwd(x_parts[c], w_rows[r][c], b_rows[r] if c == 0 else None)
            o = t if o is None else o + t
        outs.append(o)

    def adjoint(s_rows):
        res = []
        for c in range(nc):
            g = None
            for r in range(nr):
                t = adj(s_rows[r], w_rows[r][c])
                g = t if g is None else g + t
            res.append(g)
        return res
    return outs, adjoint


def _nonneg(x: Tensor) -> bool:
    return bool((x >= 0).all())


FAST_TOL = 1e-5
"""Fast signed rules: a layer whose estimated rounding error (unit roundoff × Σ h·(|u| + |v|), see
:mod:`medseg_ext.lrp.fused`) exceeds ``FAST_TOL`` × Σ|R| is recomputed with the exact block form."""


def _check_exact(exact) -> bool:
    if not isinstance(exact, bool):
        raise TypeError(f"exact: expected a bool, got {type(exact).__name__}")
    return exact


def _fast_signed(rule: "Rule", name: str, x, w, b, z, R, fwd, adj, **kw):
    """The fast form of z⁺/αβ/γ (one extra conv |W|·|x| and one grouped adjoint call, fused
    element-wise stages), or None when it does not apply or its error estimate is too large."""
    pair = getattr(adj, "pair", None)
    if pair is None or rule.exact or rule.stabilizer != "signed" or rule.epsilon == 0.0 or z.dim() < 2:
        return None
    from . import fused
    x, z = x.contiguous(), z.contiguous()   # one memory layout, so results do not depend on the input's strides
    wa = w.abs()
    xa = x if bool((x >= 0).all()) else x.abs()
    h = fwd(xa, wa, None)
    K, M, C = R.shape[0], z.shape[0], z.shape[1]
    UV, c1, c2, err, mass = fused.signed_coeffs(z.reshape(M, C, -1), h.reshape(M, C, -1), b,
                                                R.reshape(K, M, C, -1), name, epsilon=rule.epsilon, **kw)
    ur = torch.finfo(z.dtype).eps / 2
    if not (ur * err <= FAST_TOL * mass):   # also catches NaN/Inf estimates
        return None
    G = pair(UV.reshape((K, M, 2 * C) + tuple(z.shape[2:])), w, wa)
    Cin = x.shape[1]
    out = fused.combine(x.reshape(M, Cin, -1), G.reshape(K, M, 2 * Cin, -1), c1, c2)
    return out.reshape((K,) + tuple(x.shape))


class ZPlus(Rule):
    """z⁺ rule (α1β0 for signed inputs, as Zennit): z⁺ = W⁺x⁺ + W⁻x⁻ + b⁺;
    R_in = x⁺ ⊙ W⁺ᵀ(R/stab z⁺) + x⁻ ⊙ W⁻ᵀ(R/stab z⁺).

    One forward and one adjoint call per layer: for signed inputs [x⁺, x⁻] are stacked along the
    channels against [W⁺, W⁻] (every term exact, no cancellation).
    """

    name = "zplus"

    def __init__(self, epsilon: float = 1e-6, stabilizer: str = "signed", exact: bool = False):
        super().__init__(epsilon, stabilizer)
        self.exact = _check_exact(exact)

    def weighted(self, x, w, b, z, R, fwd, adj):
        r = _fast_signed(self, "zplus", x, w, b, z, R, fwd, adj)
        if r is not None:
            return r
        wp = w.clamp(min=0)
        if _nonneg(x):
            (zp,), ad = _blocks([x], [[wp]], [_pos(b)], fwd, adj)
            return x * ad([self.div(R, zp)])[0]
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        (zp,), ad = _blocks([xp, xn], [[wp, w.clamp(max=0)]], [_pos(b)], fwd, adj)
        gp, gn = ad([self.div(R, zp)])
        return xp * gp + xn * gn


class AlphaBeta(Rule):
    """αβ rule, α − β = 1, α, β ≥ 0 (Zennit's signed-input form):
    R_in = α Σ_k (x w)⁺_jk/z⁺_k R_k − β Σ_k (x w)⁻_jk/z⁻_k R_k, z⁺ incl. b⁺, z⁻ incl. b⁻.

    One forward (z⁺ and z⁻ as two output blocks) and one adjoint call per layer.
    """

    name = "alphabeta"

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, epsilon: float = 1e-6, stabilizer: str = "signed",
                 exact: bool = False):
        super().__init__(epsilon, stabilizer)
        self.exact = _check_exact(exact)
        for nm, v in (("alpha", alpha), ("beta", beta)):
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise TypeError(f"{nm}: expected a float, got {type(v).__name__}")
            if not 0 <= v < float("inf"):   # also NaN: NaN/inf would pass the α − β test below as NaN
                raise ValueError(f"{nm}: expected a finite value >= 0, got {v}")
        if abs((alpha - beta) - 1.0) > 1e-12:
            raise ValueError(f"alpha, beta: expected alpha - beta == 1, got alpha={alpha}, beta={beta}")
        self.alpha, self.beta = float(alpha), float(beta)

    def weighted(self, x, w, b, z, R, fwd, adj):
        r = _fast_signed(self, "alphabeta", x, w, b, z, R, fwd, adj, alpha=self.alpha, beta=self.beta)
        if r is not None:
            return r
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        if _nonneg(x):
            (zp, zn), ad = _blocks([x], [[wp], [wn]], [_pos(b), _neg(b)], fwd, adj)
            (g,) = ad([self.alpha * self.div(R, zp), -self.beta * self.div(R, zn)])
            return x * g
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        (zp, zn), ad = _blocks([xp, xn], [[wp, wn], [wn, wp]], [_pos(b), _neg(b)], fwd, adj)
        gp, gn = ad([self.alpha * self.div(R, zp), -self.beta * self.div(R, zn)])
        return xp * gp + xn * gn


class Gamma(Rule):
    """Generalised γ rule (Zennit ``Gamma``; equals Montavon's LRP-γ for non-negative inputs).

    Outputs with z > 0 use the positive-contribution denominator x⁺(w+γw⁺) + x⁻(w+γw⁻) + (b+γb⁺),
    outputs with z < 0 the negative one x⁺(w+γw⁻) + x⁻(w+γw⁺) + (b+γb⁻); z = 0 gets nothing.
    One forward and one adjoint call per layer (block weights).
    """

    name = "gamma"

    def __init__(self, gamma: float = 0.25, epsilon: float = 1e-6, stabilizer: str = "signed", exact: bool = False):
        super().__init__(epsilon, stabilizer)
        self.exact = _check_exact(exact)
        if not isinstance(gamma, (int, float)) or isinstance(gamma, bool):
            raise TypeError(f"gamma: expected a float, got {type(gamma).__name__}")
        if not 0 <= gamma < float("inf"):   # inf would turn w + γw⁺ into inf/NaN weights
            raise ValueError(f"gamma: expected a finite value >= 0, got {gamma}")
        self.gamma = float(gamma)

    def weighted(self, x, w, b, z, R, fwd, adj):
        r = _fast_signed(self, "gamma", x, w, b, z, R, fwd, adj, gamma=self.gamma)
        if r is not None:
            return r
        g = self.gamma
        w1 = w + g * w.clamp(min=0)
        w2 = w + g * w.clamp(max=0)
        b1 = None if b is None else b + g * b.clamp(min=0)
        b2 = None if b is None else b + g * b.clamp(max=0)
        if _nonneg(x):
            (zpos, zneg), ad = _blocks([x], [[w1], [w2]], [b1, b2], fwd, adj)
        else:
            xp, xn = x.clamp(min=0), x.clamp(max=0)
            (zpos, zneg), ad = _blocks([xp, xn], [[w1, w2], [w2, w1]], [b1, b2], fwd, adj)
        sp = (z > 0).to(R.dtype) * self.div(R, zpos)
        sn = (z < 0).to(R.dtype) * self.div(R, zneg)
        if _nonneg(x):
            return x * ad([sp, sn])[0]
        gp, gn = ad([sp, sn])
        return xp * gp + xn * gn


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
            # a NaN/inf bound would make every denominator of the layer NaN/inf (relevance NaN or 0)
            if not bool(torch.isfinite(torch.as_tensor(v)).all()):
                raise ValueError(f"{nm}: expected finite bounds, got {v}")
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
        s = self.div(R, den)
        return x * adj(s, w) - lo * adj(s, wp) - hi * adj(s, wn)


class Flat(Rule):
    """Flat rule: every input in the receptive field gets an equal share (weights := 1, inputs := 1, no bias)."""

    name = "flat"

    def weighted(self, x, w, b, z, R, fwd, adj):
        ones_w = torch.ones_like(w)
        den = fwd(torch.ones_like(x), ones_w, None)
        return adj(self.div(R, den), ones_w)


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
        return adj(self.div(R, den), w2)


RULES = {"epsilon": Epsilon, "pass": Pass, "zplus": ZPlus, "alphabeta": AlphaBeta, "gamma": Gamma,
         "zbox": ZBox, "flat": Flat, "wsquare": WSquare}
