"""NumPy reference (the oracle) for the CAM family: channel weights, maps, the epilogue and the
quality metrics. Plain, per-sample / per-channel loops in float64; seeds-part1.md §8, §9.1, §10.3.

A, G: (B, K, *S) activations and gradients (channels first).
"""
from __future__ import annotations

import numpy as np


# ---------------------------------------------------------------- weights and maps

def gradcam_weights(G):
    G = np.asarray(G, np.float64)
    return G.reshape(G.shape[0], G.shape[1], -1).mean(-1)


def gradcampp_weights(A, G, denominator="paper", eps=1e-6):
    A = np.asarray(A, np.float64).reshape(A.shape[0], A.shape[1], -1)
    G = np.asarray(G, np.float64).reshape(A.shape)
    out = np.zeros(A.shape[:2])
    for b in range(A.shape[0]):
        for k in range(A.shape[1]):
            g, a = G[b, k], A[b, k]
            d = a.sum() * g ** 3 if denominator == "paper" else np.sum(a * g ** 3)
            alpha = np.where(g != 0, g ** 2 / (2 * g ** 2 + d + eps), 0.0)
            out[b, k] = np.sum(alpha * np.maximum(g, 0))
    return out


def xgradcam_weights(A, G, eps=1e-7):
    A = np.asarray(A, np.float64).reshape(A.shape[0], A.shape[1], -1)
    G = np.asarray(G, np.float64).reshape(A.shape)
    return (A * G).sum(-1) / (A.sum(-1) + eps)


def hirescam_map(A, G):
    return (np.asarray(A, np.float64) * np.asarray(G, np.float64)).sum(1)


def layercam_map(A, G):
    return (np.maximum(np.asarray(G, np.float64), 0) * np.asarray(A, np.float64)).sum(1)


def svd_gradcam_weights(G, n=1, procedure="usv", reduction="all"):
    """G (..., P, Q): per-slice np.linalg.svd, explicit products (seeds §9.1)."""
    G = np.asarray(G, np.float64)
    P, Q = G.shape[-2:]
    flat = G.reshape(-1, P, Q)
    out = np.empty(flat.shape[0])
    for i, g in enumerate(flat):
        U, s, Vt = np.linalg.svd(g, full_matrices=False)
        U, s, Vt = U[:, :n], s[:n], Vt[:n, :]
        if procedure in ("usv", "uv"):
            Mx = U @ ((s[:, None] if procedure == "usv" else 1.0) * Vt)
            out[i] = Mx.mean() if reduction == "all" else Mx[:, :n].sum() / (n * P)
        elif procedure == "u":
            out[i] = U.sum() / (n * P)
        elif procedure == "vt":
            out[i] = Vt.sum() / (n * Q)
        else:
            raise ValueError(procedure)
    return out.reshape(G.shape[:-2])


def svd_gradcam_channel_weights(G, n=1, procedure="usv", reduction="all"):
    G = np.asarray(G, np.float64)
    if G.ndim == 3:
        G = G[..., None]
    elif G.ndim == 5:
        G = G.reshape(G.shape[0], G.shape[1], G.shape[2] * G.shape[3], G.shape[4])
    return svd_gradcam_weights(G, n, procedure, reduction)


def eigen_projection(X, center=True, sign="channel_sum"):
    """Per sample: M = pixels × channels, centred; M @ v1 from np.linalg.svd; sign so Σ v1 ≥ 0."""
    X = np.asarray(X, np.float64)
    out = []
    for x in X:
        M = np.nan_to_num(x.reshape(x.shape[0], -1).T)
        if center:
            M = M - M.mean(0)
        _, _, Vt = np.linalg.svd(M, full_matrices=False)
        v = Vt[0]
        if sign == "channel_sum" and v.sum() < 0:
            v = -v
        out.append((M @ v).reshape(x.shape[1:]))
    return np.stack(out)


def softmax(s, axis=-1):
    s = np.asarray(s, np.float64)
    e = np.exp(s - s.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def ablation_weights(y, y_ablated):
    """(y − y_k) / y, y (B,), y_ablated (B, K)."""
    y = np.asarray(y, np.float64)[:, None]
    return (y - np.asarray(y_ablated, np.float64)) / y


# ---------------------------------------------------------------- epilogue

def _linear_resize_axis(a, axis, out_len, align_corners=False):
    n = a.shape[axis]
    if align_corners:
        pos = np.zeros(out_len) if out_len == 1 else np.arange(out_len) * ((n - 1) / (out_len - 1) if n > 1 else 0.0)
    else:
        pos = np.clip((np.arange(out_len) + 0.5) * (n / out_len) - 0.5, 0, None)
    i0 = np.clip(np.floor(pos).astype(int), 0, n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    w = pos - i0
    a0 = np.take(a, i0, axis=axis)
    a1 = np.take(a, i1, axis=axis)
    shape = [1] * a.ndim
    shape[axis] = out_len
    w = w.reshape(shape)
    return a0 * (1 - w) + a1 * w


def resize(maps, size, align_corners=False):
    """(B, *S) -> (B, *size), separable (bi/tri)linear, torch's half-pixel convention."""
    out = np.asarray(maps, np.float64)
    for ax, L in enumerate(size):
        if out.shape[ax + 1] != L:
            out = _linear_resize_axis(out, ax + 1, L, align_corners)
    return out


def normalize(maps):
    maps = np.asarray(maps, np.float64)
    out = np.zeros_like(maps)
    for b in range(maps.shape[0]):
        lo, hi = maps[b].min(), maps[b].max()
        if hi > lo:
            out[b] = (maps[b] - lo) / (hi - lo)
    return out


def cam_from_weights(A, w, size=None, relu=True, norm=True, align_corners=False):
    A = np.asarray(A, np.float64)
    maps = np.einsum("bk,bk...->b...", np.asarray(w, np.float64), A)
    return finish(maps, size, relu, norm, align_corners)


def finish(maps, size=None, relu=True, norm=True, align_corners=False):
    maps = np.asarray(maps, np.float64)
    if relu:
        maps = np.maximum(maps, 0)
    if size is not None:
        maps = resize(maps, size, align_corners)
    return normalize(maps) if norm else maps


def minmax_masks(A, size, align_corners=False, eps=1e-8):
    """Score-CAM masks: each channel resized to the input and min-max normalised (B, K, *size)."""
    A = np.asarray(A, np.float64)
    B, K = A.shape[:2]
    m = resize(A.reshape((B * K,) + A.shape[2:]), size, align_corners)
    lo = m.reshape(B * K, -1).min(1)
    hi = m.reshape(B * K, -1).max(1)
    m = (m - lo.reshape((-1,) + (1,) * len(size))) / (hi - lo + eps).reshape((-1,) + (1,) * len(size))
    return m.reshape((B, K) + tuple(size))


# ---------------------------------------------------------------- metrics

def adcc(drop_frac, coherency, complexity):
    a, b, c = coherency, 1.0 - complexity, 1.0 - drop_frac
    if a <= 0 or b <= 0 or c <= 0:
        return 0.0
    return 3.0 / (1.0 / a + 1.0 / b + 1.0 / c)


def average_drop(y, y_cam, denominator="all"):
    y, y_cam = np.asarray(y, np.float64), np.asarray(y_cam, np.float64)
    d = np.maximum(0.0, (y - y_cam) / y)
    if denominator == "all":
        return 100.0 * d.mean()
    return 100.0 * d.sum() / max(1, int(np.sum(~(y < y_cam))))


def average_increase(y, y_cam):
    y, y_cam = np.asarray(y, np.float64), np.asarray(y_cam, np.float64)
    return 100.0 * np.sum(y < y_cam) / len(y)


def coherency(cam_x, cam_e):
    a, b = np.ravel(cam_x).astype(np.float64), np.ravel(cam_e).astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.array_equal(a, b) else 0.5
    return 0.5 * (1.0 + np.corrcoef(a, b)[0, 1])


def complexity(cam_x):
    return float(np.abs(np.asarray(cam_x, np.float64)).mean())
