"""NumPy reference for the LRP family (the oracle of python_tests/lrp).

Readable, loop-based, float64. A conv / transposed conv layer is turned into its dense matrix by
explicit loops over output positions and kernel taps (:func:`conv_matrix`), and every rule is then
applied to the dense layer from its definition (seeds-part2 §1.3, §1.9; Zennit's signed-input
forms of z⁺, γ, αβ, z^B):

    contributions c_jk = x_j W_kj,  z_k = Σ_j c_jk + b_k,  R_j = Σ_k (share of j in k) R_k.
"""
from __future__ import annotations

import itertools

import numpy as np

from . import mser as mser_reference


def sgn0(z):
    return np.where(z >= 0, 1.0, -1.0)


def stab(z, eps, mode="signed"):
    return z + eps * sgn0(z) if mode == "signed" else z + eps


def conv_matrix(w, in_shape, stride=1, padding=0, dilation=1, groups=1, transposed=False, output_padding=0):
    """Dense matrix M (out_size × in_size) and out shape (C_out, *spatial) of a conv or transposed conv.

    w: conv weight (C_out, C_in/groups, *k) or transposed-conv weight (C_in, C_out/groups, *k).
    in_shape: (C_in, *spatial) of one sample.
    """
    w = np.asarray(w, dtype=np.float64)
    d = w.ndim - 2
    tup = lambda v: [int(v)] * d if np.isscalar(v) else [int(a) for a in v]  # noqa: E731
    s, p, dl, op = tup(stride), tup(padding), tup(dilation), tup(output_padding)
    k = list(w.shape[2:])
    cin, sp_in = in_shape[0], list(in_shape[1:])
    if not transposed:
        cout = w.shape[0]
        sp_out = [(sp_in[i] + 2 * p[i] - dl[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(d)]
    else:
        cout = w.shape[1] * groups
        sp_out = [(sp_in[i] - 1) * s[i] - 2 * p[i] + dl[i] * (k[i] - 1) + op[i] + 1 for i in range(d)]
    out_shape = (cout,) + tuple(sp_out)
    M = np.zeros((int(np.prod(out_shape)), int(np.prod(in_shape))))
    cin_g, cout_g = cin // groups, cout // groups
    if not transposed:
        for co in range(cout):
            g = co // cout_g
            for opos in itertools.product(*[range(n) for n in sp_out]):
                oi = np.ravel_multi_index((co,) + opos, out_shape)
                for cl in range(cin_g):
                    ci = g * cin_g + cl
                    for kk in itertools.product(*[range(n) for n in k]):
                        ipos = [opos[i] * s[i] - p[i] + kk[i] * dl[i] for i in range(d)]
                        if all(0 <= ipos[i] < sp_in[i] for i in range(d)):
                            ii = np.ravel_multi_index((ci,) + tuple(ipos), in_shape)
                            M[oi, ii] += w[(co, cl) + kk]
    else:
        for ci in range(cin):
            g = ci // cin_g
            for ipos in itertools.product(*[range(n) for n in sp_in]):
                ii = np.ravel_multi_index((ci,) + ipos, in_shape)
                for cl in range(cout_g):
                    co = g * cout_g + cl
                    for kk in itertools.product(*[range(n) for n in k]):
                        opos = [ipos[i] * s[i] - p[i] + kk[i] * dl[i] for i in range(d)]
                        if all(0 <= opos[i] < sp_out[i] for i in range(d)):
                            oi = np.ravel_multi_index((co,) + tuple(opos), out_shape)
                            M[oi, ii] += w[(ci, cl) + kk]
    return M, out_shape


def conv_bias_vector(b, out_shape):
    if b is None:
        return np.zeros(int(np.prod(out_shape)))
    return np.repeat(np.asarray(b, dtype=np.float64), int(np.prod(out_shape[1:])))


def lrp_dense(x, W, b, R, rule="epsilon", epsilon=1e-6, stabilizer="signed", gamma=0.25, alpha=2.0, beta=1.0,
              low=0.0, high=1.0, wsquare_bias=True):
    """Relevance R_j of the inputs of one dense layer z = W x + b (x: (J,), W: (K, J), R: (K,))."""
    x = np.asarray(x, np.float64)
    W = np.asarray(W, np.float64)
    b = np.zeros(W.shape[0]) if b is None else np.asarray(b, np.float64)
    R = np.asarray(R, np.float64)
    st = lambda z: stab(z, epsilon, stabilizer)  # noqa: E731
    c = W * x[None, :]                           # contributions c[k, j] = x_j W_kj
    if rule == "epsilon":
        z = c.sum(1) + b
        return (c / st(z)[:, None] * R[:, None]).sum(0)
    if rule in ("zplus", "alphabeta"):
        xp, xn = np.maximum(x, 0), np.minimum(x, 0)
        Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
        cpos = Wp * xp[None] + Wn * xn[None]    # positive contributions
        cneg = Wn * xp[None] + Wp * xn[None]    # negative contributions
        zp = cpos.sum(1) + np.maximum(b, 0)
        if rule == "zplus":
            return (cpos / st(zp)[:, None] * R[:, None]).sum(0)
        zn = cneg.sum(1) + np.minimum(b, 0)
        return (alpha * cpos / st(zp)[:, None] * R[:, None] - beta * cneg / st(zn)[:, None] * R[:, None]).sum(0)
    if rule == "gamma":
        z = c.sum(1) + b
        xp, xn = np.maximum(x, 0), np.minimum(x, 0)
        W1 = W + gamma * np.maximum(W, 0)
        W2 = W + gamma * np.minimum(W, 0)
        cpos = W1 * xp[None] + W2 * xn[None]
        cneg = W2 * xp[None] + W1 * xn[None]
        zpos = cpos.sum(1) + b + gamma * np.maximum(b, 0)
        zneg = cneg.sum(1) + b + gamma * np.minimum(b, 0)
        out = np.zeros_like(x)
        for k in range(W.shape[0]):
            if z[k] > 0:
                out += cpos[k] / st(zpos[k]) * R[k]
            elif z[k] < 0:
                out += cneg[k] / st(zneg[k]) * R[k]
        return out
    if rule == "zbox":
        lo = np.broadcast_to(np.asarray(low, np.float64), x.shape)
        hi = np.broadcast_to(np.asarray(high, np.float64), x.shape)
        Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
        cz = W * x[None] - Wp * lo[None] - Wn * hi[None]
        z = cz.sum(1) + b - np.maximum(b, 0) - np.minimum(b, 0)
        return (cz / st(z)[:, None] * R[:, None]).sum(0)
    if rule == "flat":
        cf = np.ones_like(W) if np.all(W != 0) else (W != 0).astype(np.float64)
        return (cf / st(cf.sum(1))[:, None] * R[:, None]).sum(0)
    if rule == "wsquare":
        W2 = W * W
        z = W2.sum(1) + (b * b if wsquare_bias else 0.0)
        return (W2 / st(z)[:, None] * R[:, None]).sum(0)
    raise ValueError(f"rule: unknown {rule!r}")


def lrp_conv(x, w, b, R, stride=1, padding=0, dilation=1, groups=1, transposed=False, output_padding=0, **rule_kw):
    """One sample: x (C_in, *sp), R (C_out, *sp_out) -> R_in (C_in, *sp) via the dense matrix."""
    x = np.asarray(x, np.float64)
    if rule_kw.get("rule") == "flat":  # flat: ones on the layer's receptive-field structure
        w = np.ones_like(np.asarray(w, np.float64))
    M, out_shape = conv_matrix(w, x.shape, stride, padding, dilation, groups, transposed, output_padding)
    if tuple(np.shape(R)) != tuple(out_shape):
        raise ValueError(f"R: expected shape {out_shape}, got {np.shape(R)}")
    bias = conv_bias_vector(b, out_shape)
    rk = dict(rule_kw)
    for key in ("low", "high"):
        if key in rk and np.ndim(rk[key]) > 0:
            rk[key] = np.broadcast_to(np.asarray(rk[key], np.float64), x.shape).ravel()
    r = lrp_dense(x.ravel(), M, bias if b is not None else None, np.asarray(R, np.float64).ravel(), **rk)
    return r.reshape(x.shape)


def fast_signed_coeffs(z, h, b, R, rule, alpha=2.0, beta=1.0, gamma=0.25, epsilon=1e-6):
    """Oracle of ``medseg_ext.lrp.fused.signed_coeffs`` (float64, element by element).

    z, h: (M, C, S); b: (C,) or None; R: (K, M, C, S). Returns (UV (K, M, 2C, S), c1, c2, err, mass)
    with P = (z − b + h)/2 + b⁺ and N = (z − b − h)/2 + b⁻ (see the fused module's table)."""
    z, h, R = (np.asarray(a, np.float64) for a in (z, h, R))
    K, M, C, S = R.shape
    bb = np.zeros(C) if b is None else np.asarray(b, np.float64)
    UV = np.zeros((K, M, 2 * C, S))
    err = mass = 0.0

    def st(d):  # signed stabiliser, sgn0(0) = +1; NaN stays NaN
        return d + epsilon if d >= 0 else d - epsilon
    for k, m, c, i in itertools.product(range(K), range(M), range(C), range(S)):
        zv, hv, Rv, bv = z[m, c, i], h[m, c, i], R[k, m, c, i], bb[c]
        P = (zv - bv + hv) / 2 + max(bv, 0.0)
        N = (zv - bv - hv) / 2 + min(bv, 0.0)
        with np.errstate(all="ignore"):
            if rule == "zplus":
                u = v = Rv / st(P)
            elif rule == "alphabeta":
                sp, sn = alpha * Rv / st(P), beta * Rv / st(N)
                u, v = sp - sn, sp + sn
            elif rule == "gamma":
                sp = Rv / st(zv + gamma * P) if zv > 0 else 0.0
                sn = Rv / st(zv + gamma * N) if zv < 0 else 0.0
                u, v = sp + sn, sp - sn
            else:
                raise ValueError(f"rule: unknown {rule!r}")
            UV[k, m, c, i], UV[k, m, C + c, i] = u, v
            err += hv * (abs(u) + abs(v))
            mass += abs(Rv)
    c1, c2 = (1.0 + gamma / 2, gamma / 2) if rule == "gamma" else (0.5, 0.5)
    return UV, c1, c2, err, mass


def fast_combine(x, G, c1, c2):
    """Oracle of ``medseg_ext.lrp.fused.combine``: c1·x·G[:, :, :C] + c2·|x|·G[:, :, C:]."""
    x, G = np.asarray(x, np.float64), np.asarray(G, np.float64)
    C = x.shape[1]
    out = np.zeros((G.shape[0],) + x.shape)
    for k, m, c, i in itertools.product(range(G.shape[0]), range(x.shape[0]), range(C), range(x.shape[2])):
        out[k, m, c, i] = c1 * x[m, c, i] * G[k, m, c, i] + c2 * abs(x[m, c, i]) * G[k, m, C + c, i]
    return out


def lrp_add(xs, R, epsilon=1e-6, stabilizer="signed"):
    """Addition rule: R_m = x_m · R / stab(Σ x)."""
    z = sum(np.asarray(a, np.float64) for a in xs)
    return [np.asarray(a, np.float64) * R / stab(z, epsilon, stabilizer) for a in xs]


def log_scale(x, thresh=0.1):
    """Eq. 2: f_pos(x) + f_neg(x), written elementwise with Python's math."""
    import math
    x = np.asarray(x, np.float64)
    out = np.zeros_like(x)
    for i, v in np.ndenumerate(x):
        fpos = math.log(max(thresh, v) / thresh)
        fneg = -math.log(abs(min(-thresh, v)) / thresh)
        out[i] = fpos + fneg
    return out


def cumulative_threshold(values, percentile):
    """The value at which the sorted cumulative sum first reaches ``percentile`` % of the total."""
    v = sorted(float(a) for a in np.ravel(values))
    total = sum(v)
    acc = 0.0
    for a in v:
        acc += a
        if acc >= total * 0.01 * percentile:
            return a
    return v[-1]


def normalize_attr(attr, sign="positive", outlier_perc=5.0):
    a = np.asarray(attr, np.float64)
    if sign == "all":
        thr = cumulative_threshold(np.abs(a), 100 - outlier_perc)
    elif sign == "positive":
        a = np.where(a > 0, a, 0.0)
        thr = cumulative_threshold(a, 100 - outlier_perc)
    elif sign == "negative":
        a = np.where(a < 0, a, 0.0)
        thr = -cumulative_threshold(np.abs(a), 100 - outlier_perc)
    elif sign == "absolute_value":
        a = np.abs(a)
        thr = cumulative_threshold(a, 100 - outlier_perc)
    else:
        raise ValueError(sign)
    return np.clip(a / thr, -1, 1)


def label_components(mask, full=True):
    """Connected components (8/26-connectivity if ``full`` else 4/6), labels 1.. in raster order:
    the MSER reference's breadth-first labelling. Returns (labels, count)."""
    m = np.asarray(mask, bool)
    lab = mser_reference.label(m, 3 ** m.ndim - 1 if full else 2 * m.ndim)
    return lab, int(lab.max(initial=0))


def select_largest(mask, full=True):
    """Largest foreground component (ties: the one met first in raster order); empty -> empty."""
    lab, n = label_components(mask, full)
    if n == 0:
        return np.zeros(np.shape(mask), bool)
    sizes = [(lab == i).sum() for i in range(1, n + 1)]
    return lab == (int(np.argmax(sizes)) + 1)
