"""Triton kernels of the batched Vietoris–Rips GPU path (spec: csrc/topology/rips.cpp, the CPU path).

* ``_pairwise_kernel``: the n×n distance matrix of every cloud, a T×T tile per program (grid:
  clouds × row tiles × column tiles). float64 with the CPU's operation order (per coordinate
  |a−b|, then ``acc += diff*diff`` / ``acc += diff`` / ``max``, then the correctly rounded float64
  sqrt) and
  launched with ``enable_fp_fusion=False``: no multiply–add contraction, so every entry is the
  same double as ``pairwise_distances`` in rips.cpp (compiled without FMA), and the diagrams
  decided by float32 ties come out identical.
* ``_prim_kernel``: H0 of one cloud per program by Prim's algorithm on the dense matrix (n−1
  rounds of a vector argmin over the padded block). Distances are rounded to the filtration's
  value type (float32 by default) exactly as the CPU reduction rounds them, and edges above the
  (equally rounded) threshold are absent: a round whose nearest vertex is unreachable starts a
  new component (an essential class). The MST edge lengths are the H0 deaths (the multiset of
  minimum-spanning-forest weights does not depend on how ties are broken).

Clouds of different sizes share one launch: per-cloud sizes and start offsets come in int64
tensors and each program masks to its own n.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

METRIC_CODES = {"euclidean": 0, "manhattan": 1, "cityblock": 1, "chebyshev": 2}
# launch options of the distance kernel, shared with compiled_ptx (which the tests inspect).
# enable_fp_fusion=False: without it the compiled kernel contracts acc + diff*diff into fma.rn.f64
# (seen in its PTX), one rounding fewer than rips.cpp and so different float64 distances.
PAIRWISE_OPTIONS = {"num_warps": 2, "enable_fp_fusion": False}
MAX_POINTS = 1 << 15  # one cloud's Prim block lives in registers (and spills a little above 8192)


@triton.jit
def _pairwise_kernel(points_ptr, pstart_ptr, dstart_ptr, sizes_ptr, out_ptr, DIM,
                     METRIC: tl.constexpr, T: tl.constexpr):
    b = tl.program_id(0)
    n = tl.load(sizes_ptr + b)
    p0 = tl.load(pstart_ptr + b)
    d0 = tl.load(dstart_ptr + b)
    i = tl.program_id(1).to(tl.int64) * T + tl.arange(0, T).to(tl.int64)
    j = tl.program_id(2).to(tl.int64) * T + tl.arange(0, T).to(tl.int64)
    mi = i < n
    mj = j < n
    acc = tl.zeros((T, T), dtype=tl.float64)
    for k in range(0, DIM):
        a = tl.load(points_ptr + p0 + i * DIM + k, mask=mi, other=0.0)
        c = tl.load(points_ptr + p0 + j * DIM + k, mask=mj, other=0.0)
        diff = tl.abs(a[:, None] - c[None, :])
        if METRIC == 0:
            acc = acc + diff * diff
        elif METRIC == 1:
            acc = acc + diff
        else:
            acc = tl.maximum(acc, diff)
    if METRIC == 0:
        # float64 sqrt lowers to llvm.sqrt.f64 = PTX sqrt.rn.f64 (correctly rounded, as std::sqrt);
        # only the float32 tl.sqrt is approximate (tl.sqrt_rn takes float32 only)
        acc = tl.sqrt(acc)
    acc = tl.where(i[:, None] == j[None, :], 0.0, acc)
    tl.store(out_ptr + d0 + i[:, None] * n + j[None, :], acc, mask=mi[:, None] & mj[None, :])


@triton.jit
def _prim_kernel(dist_ptr, dstart_ptr, sizes_ptr, thr_ptr, deaths_ptr, L, F64: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    n = tl.load(sizes_ptr + b)
    d0 = tl.load(dstart_ptr + b)
    thr = tl.load(thr_ptr)  # already rounded to the value type (float32 or float64 tensor)
    v = tl.arange(0, BLOCK)
    valid = v < n
    row = tl.load(dist_ptr + d0 + v.to(tl.int64), mask=valid, other=0.0)  # row of vertex 0
    if F64:
        row = row.to(tl.float64)
    else:
        row = row.to(tl.float32)  # round to nearest, as the CPU's static_cast<float>
    inf = float("inf")
    in_tree = v == 0
    reach = valid & (row <= thr) & (in_tree == 0)
    key = tl.where(reach, row, inf)
    for r in range(1, n):
        free = valid & (in_tree == 0)
        kmin = tl.min(tl.where(free, key, inf), axis=0)
        # the smallest free vertex at that key (when kmin is inf: any free vertex, reachable or not)
        u = tl.min(tl.where(free & (key == kmin), v, BLOCK), axis=0)
        pick = v == u
        reached = tl.max(tl.where(pick & reach, 1, 0), axis=0) > 0
        w = tl.max(tl.where(pick, key, -inf), axis=0)
        # -1 marks a round that starts a new component (no edge within the threshold reaches it)
        tl.store(deaths_ptr + b.to(tl.int64) * L + (r - 1), tl.where(reached, w, -1.0).to(deaths_ptr.dtype.element_ty))
        in_tree = in_tree | pick
        ru = tl.load(dist_ptr + d0 + u.to(tl.int64) * n + v.to(tl.int64), mask=valid, other=0.0)
        if F64:
            ru = ru.to(tl.float64)
        else:
            ru = ru.to(tl.float32)
        within = free & (pick == 0) & (ru <= thr)
        key = tl.where(within & ((reach == 0) | (ru < key)), ru, key)
        reach = reach | within


def _check_device(t: torch.Tensor, what: str) -> None:
    import os

    if t.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(f"{what}: the Triton kernels need a CUDA device (CPU tensors only under "
                           "TRITON_INTERPRET=1, for tests)")


def _cloud_layout(sizes: torch.Tensor, per_cloud: torch.Tensor) -> torch.Tensor:
    """Start offsets (int64, on the sizes' device) of clouds stored one after the other."""
    start = torch.zeros_like(sizes)
    if sizes.numel() > 1:
        start[1:] = torch.cumsum(per_cloud, 0)[:-1]
    return start


def pairwise_distances(points: torch.Tensor, sizes: torch.Tensor, dim: int, nmax: int, metric: str) -> torch.Tensor:
    """Distance matrices of clouds stored one after the other in ``points`` (flat float64, cloud b's
    (n_b, dim) coordinates row-major); ``sizes`` int64 (B,) on the same device. Returns the flat
    float64 matrices (cloud b's n_b×n_b block after the blocks of clouds 0..b−1)."""
    _check_device(points, "clouds")
    if metric not in METRIC_CODES:
        raise ValueError(f"metric: the GPU path supports {tuple(METRIC_CODES)}, got {metric!r}")
    if points.dtype != torch.float64 or sizes.dtype != torch.int64:
        raise TypeError("clouds: internal, expected float64 points and int64 sizes")
    B = int(sizes.numel())
    pstart = _cloud_layout(sizes, sizes * dim)
    dstart = _cloud_layout(sizes, sizes * sizes)
    total = int((sizes * sizes).sum()) if B else 0
    out = torch.empty(total, dtype=torch.float64, device=points.device)
    if B == 0 or nmax == 0 or total == 0:
        return out
    T = max(16, min(32, triton.next_power_of_2(nmax)))  # 32x32 float64 tile: ~110 registers, no spills (sm_90)
    tiles = triton.cdiv(nmax, T)
    _pairwise_kernel[(B, tiles, tiles)](points, pstart, dstart, sizes, out, dim, METRIC=METRIC_CODES[metric], T=T,
                                        **PAIRWISE_OPTIONS)
    return out


def prim_warps(block: int) -> int:
    """Warps of a Prim program: few (cheap reductions) for the small clouds; enough for a big
    block in registers (ptxas for sm_90: no spills up to 8192 points, a few beyond)."""
    for limit, warps in ((128, 1), (512, 2), (2048, 4), (8192, 8)):
        if block <= limit:
            return warps
    return 16


def mst_deaths(dist: torch.Tensor, sizes: torch.Tensor, nmax: int, threshold: float, float64: bool) -> torch.Tensor:
    """(B, max(nmax−1, 1)) Prim round results per cloud in the value type: an MST edge length, −1
    for a round that starts a new component, −2 for rounds past the cloud's n−1."""
    _check_device(dist, "clouds")
    if nmax > MAX_POINTS:
        raise ValueError(f"clouds: the GPU path takes clouds of at most {MAX_POINTS} points, got {nmax}")
    B = int(sizes.numel())
    vt = torch.float64 if float64 else torch.float32
    L = max(nmax - 1, 1)
    deaths = torch.full((B, L), -2.0, dtype=vt, device=dist.device)
    if B == 0 or nmax <= 1:
        return deaths
    dstart = _cloud_layout(sizes, sizes * sizes)
    # the threshold rounded to the value type, as the CPU reduction does (static_cast<value_t>)
    thr = torch.tensor([threshold], dtype=torch.float64).to(vt).to(dist.device)
    BLOCK = max(16, triton.next_power_of_2(nmax))
    warps = prim_warps(BLOCK)
    _prim_kernel[(B,)](dist, dstart, sizes, thr, deaths, L, F64=float64, BLOCK=BLOCK, num_warps=warps)
    return deaths


def h0_from_deaths(deaths: torch.Tensor, sizes: torch.Tensor):
    """H0 diagrams (ripser.py conventions) from :func:`mst_deaths`: per cloud its positive MST edge
    lengths ascending as (0, death), then one (0, inf) per component. Returns float64 values
    (total, 2) and int64 offsets (B + 1), on the deaths' device; the same rows in the same order
    as the CPU reduction's Kruskal pass (ascending deaths, then the essential classes)."""
    B, L = deaths.shape
    dev = deaths.device
    if B == 0:
        return torch.zeros((0, 2), dtype=torch.float64, device=dev), torch.zeros(1, dtype=torch.int64, device=dev)
    srt = torch.sort(deaths, dim=1).values  # markers (< 0) and zero-length edges first
    finite = srt > 0
    n_fin = finite.sum(1)
    n_ess = torch.where(sizes > 0, 1 + (deaths == -1).sum(1), torch.zeros_like(sizes))
    counts = n_fin + n_ess
    offsets = torch.zeros(B + 1, dtype=torch.int64, device=dev)
    offsets[1:] = torch.cumsum(counts, 0)
    total = int(offsets[-1])
    values = torch.zeros((total, 2), dtype=torch.float64, device=dev)
    values[:, 1] = float("inf")
    # the positives sit at the end of each sorted row: rank among them = column − (L − n_fin)
    cols = torch.arange(L, device=dev).expand(B, L)
    pos = offsets[:-1, None] + cols - (L - n_fin)[:, None]
    values[pos[finite], 1] = srt[finite].to(torch.float64)
    return values, offsets


def compiled_ptx(kernel: str, target_arch: int = 90, **constexprs) -> str:
    """PTX of one of the kernels compiled for an NVIDIA target with the launch options the wrappers
    use, without a GPU (tests read it: no float64 multiply-add contraction, a correctly rounded
    sqrt). Needs the real compiler: not under TRITON_INTERPRET=1."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if kernel == "pairwise":
        sig = {"points_ptr": "*fp64", "pstart_ptr": "*i64", "dstart_ptr": "*i64", "sizes_ptr": "*i64",
               "out_ptr": "*fp64", "DIM": "i32", "METRIC": "constexpr", "T": "constexpr"}
        fn, options = _pairwise_kernel, dict(PAIRWISE_OPTIONS)
    elif kernel == "prim":
        vt = "*fp64" if constexprs.get("F64") else "*fp32"
        sig = {"dist_ptr": "*fp64", "dstart_ptr": "*i64", "sizes_ptr": "*i64", "thr_ptr": vt, "deaths_ptr": vt,
               "L": "i32", "F64": "constexpr", "BLOCK": "constexpr"}
        fn, options = _prim_kernel, {"num_warps": prim_warps(int(constexprs["BLOCK"]))}
    else:
        raise ValueError(f"kernel: expected 'pairwise' or 'prim', got {kernel!r}")
    compiled = triton.compile(ASTSource(fn, sig, constexprs=constexprs),
                              target=GPUTarget("cuda", target_arch, 32), options=options)
    return compiled.asm["ptx"]
