"""Channel weights and maps of the CAM family as pure, batched tensor functions.

A: activations (B, K, *S), G: gradients ∂score/∂A (B, K, *S), S one to three spatial dims. All run
on A's device, keep autograd (so a CAM can be differentiated when the inputs carry a graph), and
accumulate in float32 at least (half/bfloat16 inputs) or float64 (float64 inputs).
"""
from __future__ import annotations

import numbers

import torch

PROCEDURES = ("usv", "uv", "u", "vt")
REDUCTIONS = ("all", "paper_literal")


def _acc(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def check_float_tensor(name: str, t, min_dim: int = 3, layout: str = "(B, K, *spatial)") -> None:
    """A floating-point tensor with at least ``min_dim`` dimensions, else an error naming ``name``."""
    if not torch.is_tensor(t):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if not t.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating point, got {t.dtype}")
    if t.dim() < min_dim:
        raise ValueError(f"{name} must be {layout}, got shape {tuple(t.shape)}")


def _check_pair(A: torch.Tensor, G: torch.Tensor) -> None:
    check_float_tensor("activations", A)
    check_float_tensor("gradients", G)
    if A.shape != G.shape:
        raise ValueError(f"gradients shape {tuple(G.shape)} != activations shape {tuple(A.shape)}")
    if A.device != G.device:  # else torch's own device error, which names neither argument
        raise ValueError(f"gradients are on {G.device} but activations on {A.device}")


def _absmax(t: torch.Tensor, dim: int, keepdim: bool = True) -> torch.Tensor:
    """max |t| along dim in one pass (aminmax; abs().amax writes a copy first); NaN propagates."""
    lo, hi = torch.aminmax(t, dim=dim, keepdim=keepdim)
    return torch.maximum(hi, -lo)


def gradcam_weights(G: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Eq. 2): spatial mean of the gradient, (B, K)."""
    check_float_tensor("gradients", G)
    return _acc(G).flatten(2).mean(-1)


def gradcampp_weights(A: torch.Tensor, G: torch.Tensor, *, denominator: str = "paper", eps: float = 1e-6) -> torch.Tensor:
    """Grad-CAM++: w_k = Σ_ij α_ij ReLU(g_ij), α = g² / (2g² + D·g³).

    ``denominator="paper"`` (Chattopadhay Eq. 19, pytorch-grad-cam): D = Σ_ab A_ab, α uses g³ at (i,j);
    ``"torchcam"``: the term is Σ_ab A_ab g³_ab (TorchCAM 0.5). α = 0 where g = 0.
    """
    _check_pair(A, G)
    if denominator not in ("paper", "torchcam"):
        raise ValueError(f"denominator must be 'paper' or 'torchcam', got {denominator!r}")
    a, g = _acc(A).flatten(2), _acc(G).flatten(2)
    # α is evaluated on ĝ = g / m, m = max|g| per channel (numerator and denominator divided by m²):
    # g² and g³ overflow float32 for |g| ≳ 1e13 and gave inf/inf = NaN. Same value in exact arithmetic.
    m = _absmax(g.detach(), -1)
    m = torch.where(m > 0, m, torch.ones_like(m))    # NaN / inf stay and propagate
    gh = g / m
    g2 = gh * gh
    g3 = g2 * gh
    if denominator == "paper":
        den = 2 * g2 + m * a.sum(-1, keepdim=True) * g3 + eps / (m * m)
    else:
        den = 2 * g2 + m * (g3 * a).sum(-1, keepdim=True) + eps / (m * m)
    alpha = torch.where(g != 0, g2 / den, torch.zeros_like(g2))
    return (alpha * torch.relu(g)).sum(-1)


def xgradcam_weights(A: torch.Tensor, G: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """XGrad-CAM: Σ(G·A) / (Σ A + eps) per channel."""
    _check_pair(A, G)
    a, g = _acc(A).flatten(2), _acc(G).flatten(2)
    return (g * a).sum(-1) / (a.sum(-1) + eps)


def hirescam_map(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """HiResCAM: Σ_k G_k ⊙ A_k, (B, *S)."""
    _check_pair(A, G)
    return (_acc(G) * _acc(A)).sum(1)


def layercam_map(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """LayerCAM: Σ_k ReLU(G_k) ⊙ A_k, (B, *S)."""
    _check_pair(A, G)
    return (torch.relu(_acc(G)) * _acc(A)).sum(1)


def eigen_projection(X: torch.Tensor, *, center: bool = True, sign: str = "channel_sum",
                     compute_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Eigen-CAM projection of X (B, K, *S): the pixels × channels matrix M (optionally centred per
    channel) projected on its first right singular vector, M·v₁ = σ₁u₁, reshaped to (B, *S).

    Uses the smaller Gram matrix (pixels² or channels²) and ``eigh`` (batched), not a full SVD.
    ``sign="channel_sum"`` fixes the SVD sign so that Σ_k v₁[k] ≥ 0 (the map grows with the
    activation), ``"none"`` leaves the eigh sign (as pytorch-grad-cam leaves LAPACK's).
    NaN entries of X are read as 0 (as pytorch-grad-cam does); ±inf make the whole map NaN.
    """
    if sign not in ("channel_sum", "none"):
        raise ValueError(f"sign must be 'channel_sum' or 'none', got {sign!r}")
    check_float_tensor("X", X)
    B, K = X.shape[:2]
    S = X.shape[2:]
    M = X.flatten(2).transpose(1, 2).to(compute_dtype)           # (B, N, K)
    # NaN read as 0 (pytorch-grad-cam's rule). nan_to_num also turned ±inf into ±1.8e308, whose Gram
    # matrix overflowed: a NaN or a finite garbage map depending on the shape. Now a sample holding ±inf
    # gets a NaN map, and each sample is divided by its max |M| (the projection is homogeneous of
    # degree 1; multiplied back below) so that M^T M does not overflow / underflow for |X| ~ 1e±160.
    M = torch.nan_to_num(M, nan=0.0, posinf=float("inf"), neginf=-float("inf"))
    amax = _absmax(M.detach().flatten(1), 1, keepdim=False) if M.shape[1] * M.shape[2] else M.new_zeros(B)
    bad = torch.isinf(amax)
    scale = torch.where(~bad & (amax > 0), amax, torch.ones_like(amax))
    M = torch.where(bad.view(-1, 1, 1), torch.zeros_like(M), M / scale.view(-1, 1, 1))
    if center:
        M = M - M.mean(dim=1, keepdim=True)
    N = M.shape[1]
    if N <= K:
        gram = M @ M.transpose(1, 2)                              # (B, N, N)
        lam, vec = torch.linalg.eigh(gram)
        u1 = vec[..., -1]                                         # (B, N)
        proj = u1 * lam[..., -1:].clamp_min(0).sqrt()
    else:
        gram = M.transpose(1, 2) @ M                              # (B, K, K)
        lam, vec = torch.linalg.eigh(gram)
        proj = (M @ vec[..., -1:]).squeeze(-1)
    if sign == "channel_sum":
        s = torch.sign((proj * M.sum(-1)).sum(-1, keepdim=True))  # sign of Σ_k v1[k]
        proj = proj * torch.where(s == 0, torch.ones_like(s), s)
    proj = torch.where(bad.view(-1, 1), torch.full_like(proj, float("nan")), proj * scale.view(-1, 1))
    return proj.reshape(B, *S).to(_acc(X).dtype)


def _kernel():
    from .._dispatch import _load_extension
    mod, _ = _load_extension()
    return getattr(mod, "cam_svd_rank1_weights_cpu", None) if mod is not None else None


def _rank1_cpu(G: torch.Tensor, procedure: str, reduction: str):
    """The C++ closed form for n = 1 (CPU, no autograd); None when the kernel is not built."""
    fn = _kernel()
    if fn is None:
        return None
    from .._tensor import desc
    P, Q = G.shape[-2:]
    g = G.reshape(-1, P, Q)
    if g.dtype not in (torch.float32, torch.float64):
        g = g.float()
    g = g.contiguous()
    w = torch.empty(g.shape[0], dtype=torch.float64)
    st = torch.zeros(g.shape[0], dtype=torch.uint8)
    fn(desc(g), desc(w), desc(st), 0 if procedure == "usv" else 1, 0 if reduction == "all" else 1)
    bad = st.nonzero().flatten()
    if bad.numel():  # (nearly) tied top eigenvalue, inf, or extreme float64 |G|: dense path for those slices
        w[bad] = svd_gradcam_weights(g[bad].double(), 1, procedure, reduction, backend="torch")
    return w.reshape(G.shape[:-2])


def svd_gradcam_weights(G: torch.Tensor, n: int = 1, procedure: str = "usv", reduction: str = "all",
                        *, method: str = "closed", compute_dtype: torch.dtype = torch.float64,
                        backend: str = "auto") -> torch.Tensor:
    """SVD-Grad-CAM channel weights (seeds §8.3) of per-channel gradient slices G (..., P, Q).

    procedure: ``"usv"`` Eq. 10 (rank-n reconstruction, default), ``"uv"`` Eq. 9, ``"u"`` Eq. 7,
    ``"vt"`` Eq. 8 (the last two depend on the SVD sign convention: LAPACK's, via torch.linalg.svd).
    reduction: ``"all"`` mean over all P·Q entries of the rank-n product (prose + notebook), or
    ``"paper_literal"`` (rows 1..P, first n columns, / (n·P)).
    method: ``"closed"`` (closed forms; usv/uv from the eigen-decomposition of the smaller Gram
    matrix, no reconstruction) or ``"explicit"`` (SVD, materialised product; the test oracle).
    backend: ``"auto"`` uses the C++ kernel (csrc/cam/svd_weights.cpp: Gram matrix, repeated
    squaring to the top eigenvector, OpenMP over slices) for n = 1, usv/uv, CPU tensors without
    autograd, Q ≤ 64; ``"torch"`` always uses batched ``torch.linalg.eigh``.
    Edge cases: ``uv`` components with numerically zero σ_r (≤ √(10·max(P,Q)·eps)·σ_1) contribute 0;
    a slice holding NaN or ±inf gets a NaN weight; each slice is rescaled internally, so float64
    magnitudes up to ~1e±300 neither overflow nor underflow.
    Returns (...) weights in G's (accumulation) dtype.
    """
    if procedure not in PROCEDURES:
        raise ValueError(f"procedure must be one of {PROCEDURES}, got {procedure!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if method not in ("closed", "explicit"):
        raise ValueError(f"method must be 'closed' or 'explicit', got {method!r}")
    if not torch.is_tensor(G) or not G.dtype.is_floating_point:
        raise TypeError("G must be a floating-point tensor")
    if G.dim() < 2:
        raise ValueError(f"G must be (..., P, Q), got shape {tuple(G.shape)}")
    P, Q = G.shape[-2:]
    r = min(P, Q)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):  # Integral: numpy ints are fine
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    n = int(n)
    if not 1 <= n <= r:
        raise ValueError(f"n must be in [1, min(P, Q)] = [1, {r}], got {n}")
    if backend not in ("auto", "torch"):
        raise ValueError(f"backend must be 'auto' or 'torch', got {backend!r}")
    out_dtype = _acc(G).dtype
    if (backend == "auto" and method == "closed" and n == 1 and procedure in ("usv", "uv") and G.device.type == "cpu"
            and not (G.requires_grad and torch.is_grad_enabled()) and Q <= 64 and G.numel() > 0):
        w = _rank1_cpu(G, procedure, reduction)
        if w is not None:
            return w.to(out_dtype)
    Gc = G.to(compute_dtype)
    # Each slice is divided by its max |G| (weights are homogeneous: degree 1 for usv, 0 otherwise),
    # so G^T G neither overflows (|G| ~ 1e160) nor underflows (~1e-160) in float64. Slices holding
    # NaN/inf get a NaN weight, as in the C++ kernel, instead of a LinAlgError from eigh/svd.
    # The scale is detached: for a constant scale the function is the same, so is its gradient.
    amax = _absmax(Gc.detach().flatten(-2), -1)[..., None]
    finite = torch.isfinite(amax)
    scale = torch.where(finite & (amax > 0), amax, torch.ones_like(amax))
    Gc = torch.where(finite, Gc / scale, torch.zeros_like(Gc))
    w = _svd_weights_scaled(Gc, n, procedure, reduction, method, P, Q, r)
    if procedure == "usv":
        w = w * scale[..., 0, 0]
    w = torch.where(finite[..., 0, 0], w, torch.full_like(w, float("nan")))
    return w.to(out_dtype)


def _svd_weights_scaled(Gc: torch.Tensor, n: int, procedure: str, reduction: str, method: str, P: int, Q: int,
                        r: int) -> torch.Tensor:
    """svd_gradcam_weights on finite slices with max |G| = 1 (or 0), in Gc's dtype."""
    out_dtype = Gc.dtype
    # uv: a component whose σ_r is numerically 0 has an arbitrary (u_r, v_r) from the null space, and
    # t_r/σ_r is noise/noise: an O(1) random term for rank-deficient G with n > rank. Such components
    # (σ_r ≤ √(10·max(P,Q)·eps)·σ_1, the resolution of σ from Gram eigenvalues) contribute 0, in both
    # the closed forms and the explicit product.
    rel = (10 * max(P, Q) * torch.finfo(Gc.dtype).eps) ** 0.5
    if method == "explicit" or procedure in ("u", "vt"):
        U, s, Vh = torch.linalg.svd(Gc, full_matrices=False)
        U, s, Vh = U[..., :, :n], s[..., :n], Vh[..., :n, :]
        if procedure == "u":
            w = U.sum((-2, -1)) / (n * P)
        elif procedure == "vt":
            w = Vh.sum((-2, -1)) / (n * Q)
        else:
            Mx = U @ ((s[..., :, None] if procedure == "usv" else (s > rel * s[..., :1])[..., :, None].to(s.dtype))
                      * Vh)
            w = Mx.mean((-2, -1)) if reduction == "all" else Mx[..., :, :n].sum((-2, -1)) / (n * P)
        return w.to(out_dtype)
    # closed forms (usv / uv): only the top-n right (or left) singular vectors are needed
    if procedure == "usv" and reduction == "all" and n == r:
        return Gc.mean((-2, -1)).to(out_dtype)                     # full rank: exact Grad-CAM weight
    if Q <= P:
        lam, V = torch.linalg.eigh(Gc.transpose(-2, -1) @ Gc)    # (.., Q), (.., Q, Q) ascending
        V = V[..., :, Q - n:].flip(-1)                             # top-n v_r as columns
        sig = lam[..., Q - n:].flip(-1).clamp_min(0).sqrt()
        t = Gc.sum(-2)[..., None, :] @ V                            # σ_r·su_r = 1ᵀ G v_r, (.., 1, n)
        t = t.squeeze(-2)
        keep = sig > rel * sig[..., :1]
        coef = t if procedure == "usv" else t / torch.where(keep, sig, torch.ones_like(sig))
        if procedure == "uv":
            coef = torch.where(keep, coef, torch.zeros_like(coef))
        if reduction == "all":
            w = (coef * V.sum(-2)).sum(-1) / (P * Q)
        else:
            w = (coef * V[..., :n, :].sum(-2)).sum(-1) / (n * P)
        return w.to(out_dtype)
    lam, U = torch.linalg.eigh(Gc @ Gc.transpose(-2, -1))         # P < Q
    U = U[..., :, P - n:].flip(-1)
    sig = lam[..., P - n:].flip(-1).clamp_min(0).sqrt()
    su = U.sum(-2)                                                  # (.., n)
    GtU = Gc.transpose(-2, -1) @ U                                  # σ_r v_r as columns, (.., Q, n)
    if reduction == "all":
        t = GtU.sum(-2)                                             # σ_r·sv_r
    else:
        t = GtU[..., :n, :].sum(-2)                                 # σ_r·Σ_{j≤n} v_r[j]
    if procedure == "uv":
        keep = sig > rel * sig[..., :1]
        t = torch.where(keep, t / torch.where(keep, sig, torch.ones_like(sig)), torch.zeros_like(t))
    w = (su * t).sum(-1) / ((P * Q) if reduction == "all" else (n * P))
    return w.to(out_dtype)


def svd_gradcam_channel_weights(G: torch.Tensor, n: int = 1, procedure: str = "usv", reduction: str = "all",
                                method: str = "closed") -> torch.Tensor:
    """Channel weights (B, K) from gradients G (B, K, *S): 2-D slices (P, Q) = (H, W); 3-D (D, H, W)
    slices are matricised as (D·H, W); 1-D (L,) as (L, 1)."""
    check_float_tensor("gradients", G)
    if G.dim() == 3:
        M = G[..., None]
    elif G.dim() == 4:
        M = G
    elif G.dim() == 5:
        M = G.flatten(2, 3)
    else:
        raise ValueError(f"gradients must be (B, K, *S) with 1-3 spatial dims, got shape {tuple(G.shape)}")
    return svd_gradcam_weights(M, n, procedure, reduction, method=method)
