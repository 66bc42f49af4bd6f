"""Plain NumPy oracles of the topology family (seeds-part1.md §3, §9.1, §10.1–10.2).

Deliberately different algorithms from the C++ core: H0 by Prim's minimum spanning tree; H1/H2 by
the textbook reduction of the full *boundary* matrix (homology, not cohomology; no clearing, no
apparent pairs) over Z/p, on every simplex up to dimension maxdim + 1 (small N only); Wasserstein
by scipy's Hungarian solver on the augmented matrix; bottleneck by a threshold search whose
feasibility test is again a scipy assignment.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.optimize import linear_sum_assignment


# ---------------------------------------------------------------- embedding, distances

def sliding_window(v, dim=3, tau=1, drop_last=False):
    """(T,) -> (n, dim), n = T − (dim−1)τ (− τ with drop_last)."""
    v = np.asarray(v, dtype=np.float64)
    n = len(v) - (dim - 1) * tau - (tau if drop_last else 0)
    if n <= 0:
        return np.zeros((0, dim))
    return np.stack([v[j * tau: j * tau + n] for j in range(dim)], axis=1)


def pairwise_dist(X, metric="euclidean"):
    X = np.asarray(X, dtype=np.float64)
    diff = np.abs(X[:, None, :] - X[None, :, :])
    if metric == "euclidean":
        return np.sqrt((diff ** 2).sum(-1))
    if metric in ("manhattan", "cityblock"):
        return diff.sum(-1)
    if metric == "chebyshev":
        return diff.max(-1) if X.shape[1] else np.zeros((len(X), len(X)))
    raise ValueError(metric)


# ---------------------------------------------------------------- H0 by Prim

def h0_deaths(X=None, D=None):
    """Finite H0 deaths (sorted, zero-length bars dropped) = the MST edge lengths; plus one (0, inf)."""
    D = pairwise_dist(X) if D is None else np.asarray(D, float)
    n = len(D)
    if n == 0:
        return np.zeros(0)
    intree = np.zeros(n, bool)
    intree[0] = True
    best = D[0].copy()
    out = []
    for _ in range(n - 1):
        b = np.where(intree, np.inf, best)
        j = int(np.argmin(b))
        out.append(b[j])
        intree[j] = True
        best = np.minimum(best, D[j])
    d = np.sort(np.asarray(out))
    return d[d > 0]


# ---------------------------------------------------------------- full boundary-matrix reduction

def vietoris_rips(X=None, D=None, maxdim=1, coeff=2, threshold=np.inf):
    """Diagrams [H0, ..., H_maxdim] as (k, 2) float64 arrays, ripser.py conventions, by reducing
    the boundary matrix of every simplex of dimension <= maxdim + 1 with diameter <= threshold.
    Exponential in N: for N <= ~12."""
    D = pairwise_dist(X) if D is None else np.asarray(D, float)
    n = len(D)
    p = int(coeff)
    simplices = []  # (diameter, dimension, vertices)
    for k in range(1, min(maxdim + 2, max(n - 1, 0)) + 2):
        for s in itertools.combinations(range(n), k):
            diam = max((D[a, b] for a, b in itertools.combinations(s, 2)), default=0.0)
            if diam <= threshold:
                simplices.append((diam, k - 1, s))
    simplices.sort(key=lambda t: (t[0], t[1], t[2]))  # a valid filtration: faces come first
    position = {s: i for i, (_, _, s) in enumerate(simplices)}
    inverse = [0] + [pow(a, p - 2, p) for a in range(1, p)]
    # columns: dict row -> coefficient in Z/p, boundary with alternating signs
    columns = []
    for _, k, s in simplices:
        col = {}
        if k > 0:
            for i in range(len(s)):
                face = s[:i] + s[i + 1:]
                col[position[face]] = (-1) ** i % p
        columns.append(col)
    low_owner = {}
    lows = [None] * len(columns)
    for j, col in enumerate(columns):
        while col:
            low = max(col)
            if low not in low_owner:
                break
            other = columns[low_owner[low]]
            factor = (-col[low] * inverse[other[low]]) % p
            for r, c in other.items():
                v = (col.get(r, 0) + factor * c) % p
                if v:
                    col[r] = v
                else:
                    col.pop(r, None)
        if col:
            low = max(col)
            low_owner[low] = j
            lows[j] = low
    dgms = [[] for _ in range(maxdim + 1)]
    paired = set()
    for j, low in enumerate(lows):
        if low is None:
            continue
        paired.add(low)
        paired.add(j)
        birth, k = simplices[low][0], simplices[low][1]
        death = simplices[j][0]
        if k <= maxdim and death > birth:
            dgms[k].append((birth, death))
    for j, (diam, k, _) in enumerate(simplices):
        if j not in paired and k <= maxdim:
            dgms[k].append((diam, np.inf))
    return [np.asarray(d, dtype=np.float64).reshape(-1, 2) for d in dgms]


def euler_characteristic_check(D, eps, maxdim_full):
    """Σ(−1)^k β_k(ε) computed from the reference diagrams vs Σ(−1)^k #k-simplices of VR_ε."""
    dg = vietoris_rips(D=D, maxdim=maxdim_full)
    betti = [int(((d[:, 0] <= eps) & (d[:, 1] > eps)).sum()) for d in dg]
    n = len(D)
    count = 0
    for k in range(1, n + 1):
        for s in itertools.combinations(range(n), k):
            diam = max((D[a, b] for a, b in itertools.combinations(s, 2)), default=0.0)
            if diam <= eps:
                count += (-1) ** (k - 1)
    return sum((-1) ** k * b for k, b in enumerate(betti)), count


# ---------------------------------------------------------------- diagram distances

def _split(A, essential):
    A = np.asarray(A, float).reshape(-1, 2)
    fin = A[np.isfinite(A[:, 1])]
    ess = np.sort(A[~np.isfinite(A[:, 1]), 0])
    if essential == "error" and len(ess):
        raise ValueError("essential points with essential='error'")
    return fin, ess


def _costs(A, B, ground):
    if ground == "linf":
        C = np.abs(A[:, None] - B[None]).max(-1) if len(A) and len(B) else np.zeros((len(A), len(B)))
        dA, dB = (A[:, 1] - A[:, 0]) / 2, (B[:, 1] - B[:, 0]) / 2
    else:
        C = np.linalg.norm(A[:, None] - B[None], axis=-1) if len(A) and len(B) else np.zeros((len(A), len(B)))
        dA, dB = (A[:, 1] - A[:, 0]) / np.sqrt(2), (B[:, 1] - B[:, 0]) / np.sqrt(2)
    return C, dA, dB


def augmented_matrix(A, B, q, ground, big=1e300):
    """The (m+n)×(m+n) matrix of §3.5: point↔point, point↔own diagonal copy, diagonal↔diagonal 0."""
    m, n = len(A), len(B)
    C, dA, dB = _costs(A, B, ground)
    K = np.zeros((m + n, m + n))
    K[:m, :n] = C ** q
    K[:m, n:] = big
    K[np.arange(m), n + np.arange(m)] = dA ** q
    K[m:, :n] = big
    K[m + np.arange(n), np.arange(n)] = dB ** q
    return K


def wasserstein(A, B, q=1.0, ground="linf", essential="drop"):
    A, ea = _split(A, essential)
    B, eb = _split(B, essential)
    extra = 0.0
    if essential == "match":
        if len(ea) != len(eb):
            return np.inf
        extra = float((np.abs(ea - eb) ** q).sum())
    if len(A) + len(B) == 0:
        return extra ** (1.0 / q)
    K = augmented_matrix(A, B, q, ground)
    r, c = linear_sum_assignment(K)
    return (K[r, c].sum() + extra) ** (1.0 / q)


def wasserstein_bruteforce(A, B, q=1.0, ground="linf"):
    """Minimum over every permutation of the augmented matrix (|A| + |B| <= 7)."""
    A = np.asarray(A, float).reshape(-1, 2)
    B = np.asarray(B, float).reshape(-1, 2)
    K = augmented_matrix(A, B, q, ground)
    N = len(K)
    best = min((sum(K[i, perm[i]] for i in range(N)) for perm in itertools.permutations(range(N))), default=0.0)
    return best ** (1.0 / q)


def bottleneck(A, B, ground="linf", essential="drop"):
    A, ea = _split(A, essential)
    B, eb = _split(B, essential)
    extra = 0.0
    if essential == "match":
        if len(ea) != len(eb):
            return np.inf
        extra = float(np.abs(ea - eb).max()) if len(ea) else 0.0
    m, n = len(A), len(B)
    if m + n == 0:
        return extra
    C, dA, dB = _costs(A, B, ground)
    cand = np.unique(np.concatenate([C.ravel(), dA, dB, [0.0]]))

    def feasible(eps):
        allowed = np.zeros((m + n, m + n), bool)
        allowed[:m, :n] = C <= eps
        allowed[np.arange(m), n + np.arange(m)] = dA <= eps
        allowed[m + np.arange(n), np.arange(n)] = dB <= eps
        allowed[m:, n:] = True
        cost = np.where(allowed, 0.0, 1.0)
        r, c = linear_sum_assignment(cost)
        return cost[r, c].sum() == 0

    lo, hi = 0, len(cand) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if feasible(cand[mid]):
            hi = mid
        else:
            lo = mid + 1
    return max(extra, float(cand[lo]))


def h0_distance_dp(a, b, q=1.0, c=0.5):
    """Exact W_q between H0 diagrams given by their finite deaths (births all 0); c = 1/2 (linf)
    or 1/sqrt(2) (l2). Order-preserving DP, O(mn)."""
    a = np.sort(np.asarray(a, float))
    b = np.sort(np.asarray(b, float))
    m, n = len(a), len(b)
    T = np.zeros((m + 1, n + 1))
    T[1:, 0] = np.cumsum((c * a) ** q)
    T[0, 1:] = np.cumsum((c * b) ** q)
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            T[i, j] = min(T[i - 1, j - 1] + abs(a[i - 1] - b[j - 1]) ** q,
                          T[i - 1, j] + (c * a[i - 1]) ** q, T[i, j - 1] + (c * b[j - 1]) ** q)
    return T[m, n] ** (1.0 / q)


def diagram_distance_matrix(diagrams, q=1.0, ground="linf", essential="drop"):
    K = len(diagrams)
    out = np.zeros((K, K))
    for i in range(K):
        for j in range(i + 1, K):
            out[i, j] = out[j, i] = (bottleneck(diagrams[i], diagrams[j], ground, essential) if math.isinf(q)
                                     else wasserstein(diagrams[i], diagrams[j], q, ground, essential))
    return out
