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
* ``_triangle_kernel`` (maxdim 2): Ripser++'s apparent-pair pass over every triangle of every
  cloud, the decisions of rips.cpp's ``assemble_triangles`` in the same value type; only the
  triangles that are not the lower half of an apparent pair are written out (with their
  zero-diameter earliest cofacet), and rips.cpp takes them as its dimension-2 columns
  (``RipsOptions::triangle_*``) instead of enumerating ~C(n, 3) triangles itself.

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
# the device's triangle pass (maxdim 2) for clouds up to this size; larger clouds use rips.cpp's own
# (the kernel's register tiles spill beyond, and its int32 offsets need n^2 < 2^31)
TRIANGLE_MAX_POINTS = 512


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


@triton.jit
def _binom(v, K: tl.constexpr):
    # C(v, K) for int64 v >= 0, K <= 4: exact (the products of consecutive integers divide exactly)
    if K == 1:
        r = v
    elif K == 2:
        r = v * (v - 1) // 2
    elif K == 3:
        r = v * (v - 1) * (v - 2) // 6
    else:
        r = v * (v - 1) * (v - 2) * (v - 3) // 24
    return tl.where(v >= K, r, 0)


@triton.jit
def _load_vt(ptr, mask, other, F64: tl.constexpr):
    x = tl.load(ptr, mask=mask, other=other)
    if F64:
        y = x.to(tl.float64)
    else:  # round to nearest, as the CPU's static_cast<float>
        y = x.to(tl.float32)
    return y  # one return: the compiler wants one type per return site


@triton.jit
def _triangle_kernel(dist_ptr, dstart_ptr, sizes_ptr, thr_ptr, count_ptr, cstart_ptr, cap_ptr, out_idx_ptr,
                     out_diam_ptr, out_zero_ptr, F64: tl.constexpr, BLOCK: tl.constexpr, XC: tl.constexpr):
    """Program (cloud c, vertex b): every triangle {w > b > a} within the threshold; those that are not
    the lower half of an apparent pair (Ripser++'s pass, the decisions of rips.cpp's
    assemble_triangles in the same value type) go to the cloud's output list with their index, diameter
    and zero-diameter earliest cofacet (-1: none). The list is unordered (one atomic per (b, a));
    count_ptr receives the full count even past the cloud's capacity, so the host can size a second
    launch."""
    c = tl.program_id(0)
    b = tl.program_id(1)
    b64 = b.to(tl.int64)
    # int32 offsets inside the cloud (n <= TRIANGLE_MAX_POINTS) from one int64 base: fewer registers
    n = tl.load(sizes_ptr + c).to(tl.int32)
    D = dist_ptr + tl.load(dstart_ptr + c)
    o0 = tl.load(cstart_ptr + c)
    cap = tl.load(cap_ptr + c)
    thr = tl.load(thr_ptr)
    inf = float("inf")
    v = tl.arange(0, BLOCK)
    vin = v < n
    rb = _load_vt(D + b * n + v, vin & (b < n), inf, F64)
    wmask = (v > b) & vin
    hi = tl.where(b < n - 1, b, 0)
    for a in range(0, hi):
        ra = _load_vt(D + a * n + v, vin, inf, F64)
        dab = _load_vt(D + b * n + a, b < n, inf, F64)
        diam = tl.maximum(dab, tl.maximum(ra, rb))
        tri = wmask & (diam <= thr)
        # x: the largest vertex outside {w, b, a} with max(d(w,x), d(b,x), d(a,x)) <= diam, or -1
        best = tl.full((BLOCK,), -1, tl.int32)
        for x0 in range(0, n, XC):
            xs = x0 + tl.arange(0, XC)
            xm = xs < n
            dwx = _load_vt(D + v[:, None] * n + xs[None, :], tri[:, None] & xm[None, :], inf, F64)
            rbx = _load_vt(D + b * n + xs, xm, inf, F64)
            rax = _load_vt(D + a * n + xs, xm, inf, F64)
            m = tl.maximum(dwx, tl.maximum(rbx, rax)[None, :])
            ok = (m <= diam[:, None]) & xm[None, :] & (xs[None, :] != v[:, None]) & (xs != b)[None, :] & \
                (xs != a)[None, :]
            best = tl.maximum(best, tl.max(tl.where(ok, xs[None, :], -1), axis=1))
        x = best
        has = tri & (x >= 0)
        xi = tl.where(has, x, 0)
        rbx = _load_vt(D + b * n + xi, has, inf, F64)
        rax = _load_vt(D + a * n + xi, has, inf, F64)
        rwx = _load_vt(D + v * n + xi, has, inf, F64)
        # sigma = tau − {x} is the latest facet of tau = sigma + {x} iff no facet tau − {y}, y > x
        # (a smaller index), has the same diameter: {b, a, x}, {w, a, x}, {w, b, x}
        f1 = (v > x) & (tl.maximum(dab, tl.maximum(rbx, rax)) >= diam)
        f2 = (b > x) & (tl.maximum(ra, tl.maximum(rwx, rax)) >= diam)
        f3 = (a > x) & (tl.maximum(rb, tl.maximum(rwx, rbx)) >= diam)
        apparent = has & ((f1 | f2 | f3) == 0)
        keep = tri & (apparent == 0)
        # simplex indices in int64 (the interpreter hands the loop variable over as a Python int)
        a64 = b64 * 0 + a
        w64 = v.to(tl.int64)
        x64 = xi.to(tl.int64)
        c3w = _binom(w64, 3)
        c4w = _binom(w64, 4)
        c2b = _binom(b64, 2)
        c3b = _binom(b64, 3)
        z = tl.where(x > v, _binom(x64, 4) + c3w + c2b + a64,
                     tl.where(x > b, c4w + _binom(x64, 3) + c2b + a64,
                              tl.where(x > a, c4w + c3b + _binom(x64, 2) + a64, c4w + c3b + _binom(a64, 2) + x64)))
        z = tl.where(has, z, -1)
        k32 = keep.to(tl.int32)
        total = tl.sum(k32, axis=0)
        base = tl.atomic_add(count_ptr + c, total.to(tl.int64))
        pos = base + tl.cumsum(k32, axis=0).to(tl.int64) - 1
        put = keep & (pos < cap)
        tl.store(out_idx_ptr + o0 + pos, c3w + c2b + a64, mask=put)
        tl.store(out_diam_ptr + o0 + pos, diam.to(tl.float64), mask=put)
        tl.store(out_zero_ptr + o0 + pos, z, mask=put)


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
    elif kernel == "triangle":
        vt = "*fp64" if constexprs.get("F64") else "*fp32"
        sig = {"dist_ptr": "*fp64", "dstart_ptr": "*i64", "sizes_ptr": "*i64", "thr_ptr": vt, "count_ptr": "*i64",
               "cstart_ptr": "*i64", "cap_ptr": "*i64", "out_idx_ptr": "*i64", "out_diam_ptr": "*fp64",
               "out_zero_ptr": "*i64", "F64": "constexpr", "BLOCK": "constexpr", "XC": "constexpr"}
        config = triangle_config(int(constexprs["BLOCK"]))
        constexprs = {**constexprs, "XC": config["XC"]}
        fn, options = _triangle_kernel, {"num_warps": config["num_warps"]}
    else:
        raise ValueError(f"kernel: expected 'pairwise', 'prim' or 'triangle', got {kernel!r}")
    compiled = triton.compile(ASTSource(fn, sig, constexprs=constexprs),
                              target=GPUTarget("cuda", target_arch, 32), options=options)
    return compiled.asm["ptx"]


def triangle_config(block: int) -> dict:
    """Warps and x-chunk of the triangle kernel (ptxas, sm_90: no spills up to BLOCK 256)."""
    if block <= 32:
        return {"XC": 16, "num_warps": 2}
    if block <= 128:
        return {"XC": 16, "num_warps": 4}
    return {"XC": 8, "num_warps": 8}


TRIANGLE_SLOTS_BASE = 256


def triangle_capacity(n):
    """Output slots per cloud of n points (an int or an int64 tensor) for the first launch of the
    triangle pass: about 3% of the C(n, 3) triangles (on random 185-point clouds ~2% are not
    apparent); when a cloud has more, the pass is launched again with the exact counts."""
    return TRIANGLE_SLOTS_BASE + n * (n - 1) * (n - 2) // 6 // 32


def triangle_columns(dist: torch.Tensor, sizes: torch.Tensor, nmax: int, threshold: float, float64: bool):
    """The dimension-2 columns of every cloud for rips.cpp at maxdim 2 (RipsOptions::triangle_*):
    (index int64, diameter float64, zero-diameter earliest cofacet int64 or -1) concatenated over
    the clouds, and int64 offsets (B + 1), all on the distances' device. Order within a cloud is
    arbitrary (the reduction sorts its columns)."""
    _check_device(dist, "clouds")
    if nmax > TRIANGLE_MAX_POINTS:
        raise ValueError(f"clouds: the device's triangle pass takes clouds of at most {TRIANGLE_MAX_POINTS} "
                         f"points, got {nmax}")
    B = int(sizes.numel())
    dev = dist.device
    vt = torch.float64 if float64 else torch.float32
    if B == 0 or nmax < 3:
        empty = torch.zeros(0, dtype=torch.int64, device=dev)
        return empty, torch.zeros(0, dtype=torch.float64, device=dev), empty.clone(), \
            torch.zeros(B + 1, dtype=torch.int64, device=dev)
    dstart = _cloud_layout(sizes, sizes * sizes)
    thr = torch.tensor([threshold], dtype=torch.float64).to(vt).to(dev)
    BLOCK = max(16, triton.next_power_of_2(nmax))
    caps = triangle_capacity(sizes)
    for _ in range(2):
        counts = torch.zeros(B, dtype=torch.int64, device=dev)
        cstart = _cloud_layout(sizes, caps)
        total = int(caps.sum())
        idx = torch.empty(total, dtype=torch.int64, device=dev)
        diam = torch.empty(total, dtype=torch.float64, device=dev)
        zero = torch.empty(total, dtype=torch.int64, device=dev)
        _triangle_kernel[(B, nmax)](dist, dstart, sizes, thr, counts, cstart, caps, idx, diam, zero,
                                    F64=float64, BLOCK=BLOCK, **triangle_config(BLOCK))
        if not bool((counts > caps).any()):
            break
        caps = torch.maximum(caps, counts)  # exact counts: the second launch fits
    # compact the per-cloud slots into one list, clouds in order
    owner = torch.repeat_interleave(torch.arange(B, device=dev), caps)
    local = torch.arange(total, device=dev) - cstart[owner]
    flat = local < counts[owner]
    offsets = torch.zeros(B + 1, dtype=torch.int64, device=dev)
    offsets[1:] = torch.cumsum(counts, 0)
    return idx[flat], diam[flat], zero[flat], offsets
