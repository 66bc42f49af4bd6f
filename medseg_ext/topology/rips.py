"""Vietoris–Rips persistent homology of point clouds (single and batched).

Conventions (ripser.py's, seeds-part1.md §3.4): the filtration value of a simplex is its diameter
(the full pairwise distance, not half of it); a simplex is present at values >= its diameter and
<= ``threshold``; pairs with death == birth are not reported; essential classes have death = +inf;
H0 has one essential bar (0, inf) per connected component, all H0 births are 0. Filtration values
are rounded to float32 by default, exactly as ripser.py does, so diagrams equal ripser.py's
bit for bit; ``precision="float64"`` keeps double precision. Diagrams come back as float64.
"""
from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence

import torch

from .. import _dispatch
from .._tensor import desc
from ._inputs import (as_float64_tensor, check_coeff, check_distance_matrices, check_distance_matrix, check_finite,
                      check_int, check_memory, check_metric, check_precision, check_threshold, resolve_memory_limit)

MAX_DIM = 5


def rips_memory_estimate(n_points: int, maxdim: int = 1, precision: str = "float32") -> int:
    """Data-free upper bound (bytes) of the dominant allocations for one cloud of ``n_points``
    points: the distance matrix and C(n, maxdim+1) simplices of the largest dimension. The ops
    themselves check a tighter bound from the data (edges within the threshold and the largest
    vertex degree) against ``memory_limit`` when this one is large."""
    n = check_int(n_points, "n_points", 0, 2**62)
    md = check_int(maxdim, "maxdim", 0, MAX_DIM)
    return int(_dispatch.extension().rips_memory_estimate(n, md, check_precision(precision)))


def _distance_bytes(n: int, float64: bool) -> float:
    """The n×n distance matrices every call allocates (double input + filtration-typed copy)."""
    return float(n) * n * (8 + (8 if float64 else 4))


def _prepare_cloud(x: Any, distance_matrix: bool, arg: str, device: Any = "cpu") -> torch.Tensor:
    t = as_float64_tensor(x, arg, device)
    if distance_matrix:
        return check_distance_matrix(t, arg)
    if t.dim() == 1 and t.numel() == 0:
        t = t.reshape(0, 1)
    if t.dim() != 2:
        raise ValueError(f"{arg}: expected an (n, d) point cloud, got shape {tuple(t.shape)} "
                         "(pass distance_matrix=True for an (n, n) distance matrix)")
    check_finite(t, arg)
    if t.shape[0] > 0 and t.shape[1] == 0:
        raise ValueError(f"{arg}: points have 0 coordinates")
    return t


def vietoris_rips(points_or_distance_matrix: Any, maxdim: int = 1, threshold: Any = math.inf,
                  metric: str = "euclidean", coeff: int = 2, distance_matrix: bool = False,
                  precision: str = "float32", memory_limit: Optional[float] = None) -> List[torch.Tensor]:
    """Persistence diagrams H0..H_maxdim of the Vietoris–Rips filtration of one point cloud.

    Args:
        points_or_distance_matrix: (n, d) coordinates, or an (n, n) distance matrix with
            ``distance_matrix=True`` (symmetric, >= 0, zero diagonal).
        maxdim: highest homology dimension (0..5; 2 is the MCI paper's setting).
        threshold: largest filtration value kept; ``inf`` or ``"enclosing"`` for the full
            filtration (computed exactly up to the enclosing radius).
        metric: ``"euclidean"`` (default), ``"manhattan"`` or ``"chebyshev"`` for coordinates.
        coeff: prime p of the coefficient field Z/p (2 by default, as ripser.py).
        precision: ``"float32"`` (ripser.py parity) or ``"float64"`` filtration values.
        memory_limit: bytes; a ``MemoryError`` is raised before any work when the estimated
            peak exceeds it (first the data-free ``rips_memory_estimate``; when that does not fit,
            an estimate from the distances: edges and triangles within the threshold counted,
            higher simplex counts extrapolated). None: the machine's physical memory.

    Returns:
        ``maxdim + 1`` float64 tensors of shape (k_i, 2) holding (birth, death) rows, in no
        particular order (compare sorted).
    """
    md = check_int(maxdim, "maxdim", 0, MAX_DIM)
    thr = check_threshold(threshold)
    p = check_coeff(coeff)
    met = check_metric(metric)
    f64 = check_precision(precision)
    t = _prepare_cloud(points_or_distance_matrix, bool(distance_matrix), "points_or_distance_matrix")
    C_ = _dispatch.extension()
    n = int(t.shape[0])
    C_.rips_check_index_range(n, md)  # ValueError on 64-bit simplex index overflow, before the estimate
    dim = 0 if distance_matrix else int(t.shape[1])
    limit = resolve_memory_limit(memory_limit)
    if C_.rips_memory_estimate(n, md, f64) > limit:  # the data-free bound does not fit: bound from the data
        # the distance matrices alone (which the estimate from the data also needs) must fit first
        check_memory(_distance_bytes(n, f64), limit, "vietoris_rips")
        estimate = C_.rips_estimate_cpu(desc(t.reshape(-1)), [n], dim, md, thr, met, f64)[0]
        check_memory(estimate, limit, "vietoris_rips")
    out = C_.rips_cpu(desc(t), bool(distance_matrix), md, thr, p, met, f64)
    return [torch.from_numpy(a) for a in out]


class RaggedDiagrams:
    """Diagrams of B clouds, per homology dimension k: ``values[k]`` (total_k, 2) float64 and
    ``offsets[k]`` (B + 1) int64, cloud b's H_k = ``values[k][offsets[k][b]:offsets[k][b+1]]``.

    ``len(r)`` is B; ``r[b]`` is cloud b's list of per-dimension tensors (views, no copy);
    ``r.to_list()`` gives all of them.
    """

    def __init__(self, values: Sequence[torch.Tensor], offsets: Sequence[torch.Tensor]):
        self.values = list(values)
        self.offsets = list(offsets)

    @property
    def maxdim(self) -> int:
        return len(self.values) - 1

    def __len__(self) -> int:
        return int(self.offsets[0].numel()) - 1 if self.offsets else 0

    def dimension(self, k: int) -> List[torch.Tensor]:
        """H_k diagram of every cloud (views)."""
        o = self.offsets[k].tolist()
        return [self.values[k][o[b]:o[b + 1]] for b in range(len(o) - 1)]

    def __getitem__(self, b: int) -> List[torch.Tensor]:
        B = len(self)
        if not -B <= b < B:
            raise IndexError(f"cloud index {b} out of range for {B} clouds")
        b %= B
        return [self.values[k][int(self.offsets[k][b]):int(self.offsets[k][b + 1])] for k in range(len(self.values))]

    def to_list(self) -> List[List[torch.Tensor]]:
        per_dim = [self.dimension(k) for k in range(len(self.values))]
        return [[per_dim[k][b] for k in range(len(per_dim))] for b in range(len(self))]

    def subset(self, start: int, stop: int) -> "RaggedDiagrams":
        """Clouds ``start:stop`` (0 <= start <= stop <= B) as a new RaggedDiagrams (values are views)."""
        B = len(self)
        if not 0 <= start <= stop <= B:
            raise IndexError(f"subset {start}:{stop} out of range for {B} clouds")
        values, offsets = [], []
        for k in range(len(self.values)):
            o = self.offsets[k][start:stop + 1]
            values.append(self.values[k][int(o[0]):int(o[-1])])
            offsets.append(o - o[0])
        return RaggedDiagrams(values, offsets)

    @classmethod
    def concat(cls, parts: Sequence["RaggedDiagrams"], maxdim: Optional[int] = None) -> "RaggedDiagrams":
        """The clouds of ``parts`` one after the other (all with the same maxdim); ``maxdim`` gives the
        layout of an empty result when ``parts`` is empty."""
        parts = list(parts)
        if not parts:
            md = 0 if maxdim is None else int(maxdim)
            return cls([torch.zeros((0, 2), dtype=torch.float64) for _ in range(md + 1)],
                       [torch.zeros(1, dtype=torch.int64) for _ in range(md + 1)])
        md = parts[0].maxdim
        if any(r.maxdim != md for r in parts):
            raise ValueError(f"parts: every RaggedDiagrams needs the same maxdim, got {[r.maxdim for r in parts]}")
        values, offsets = [], []
        for k in range(md + 1):
            values.append(torch.cat([r.values[k] for r in parts]))
            pieces, shift = [torch.zeros(1, dtype=torch.int64)], 0
            for r in parts:
                pieces.append(r.offsets[k][1:] + shift)
                shift += int(r.offsets[k][-1])
            offsets.append(torch.cat(pieces))
        return cls(values, offsets)

    def __repr__(self) -> str:
        counts = [int(v.shape[0]) for v in self.values]
        return f"RaggedDiagrams(clouds={len(self)}, maxdim={self.maxdim}, points_per_dim={counts})"


def _validated_clouds(clouds: Any, dm: bool, device: Any = "cpu") -> Any:
    """The batch input validated on ``device``: a (B, n, d) float64 tensor, or a list of prepared
    (n_b, d) clouds (equal d) / (n_b, n_b) distance matrices."""
    if isinstance(clouds, (torch.Tensor,)) or (not isinstance(clouds, (list, tuple)) and hasattr(clouds, "shape")):
        # one (B, n, d) array: validated in one vectorised pass, no per-cloud Python
        t = as_float64_tensor(clouds, "clouds", device)
        if t.dim() != 3:
            raise ValueError(f"clouds: expected a (B, n, d) array or a sequence of (n, d) clouds, got shape "
                             f"{tuple(t.shape)}")
        if dm:
            t = check_distance_matrices(t, "clouds")
        else:
            check_finite(t, "clouds")
            if t.shape[1] > 0 and t.shape[2] == 0:
                raise ValueError("clouds: points have 0 coordinates")
        return t
    if isinstance(clouds, (list, tuple)):
        prepared = [_prepare_cloud(c, dm, f"clouds[{b}]", device) for b, c in enumerate(clouds)]
        if not dm:
            dims = {int(c.shape[1]) for c in prepared if c.shape[0] > 0}
            if len(dims) > 1:
                raise ValueError(f"clouds: every cloud needs the same number of coordinates, got {sorted(dims)}")
        return prepared
    raise TypeError(f"clouds: expected a (B, n, d) tensor/array or a list of clouds, got {type(clouds).__name__}")


def _flatten_batch(validated: Any, dm: bool) -> tuple:
    """(flat float64 data, per-cloud sizes, coordinates per point or 0 for distance matrices) of a
    batch from :func:`_validated_clouds`, on the batch's device."""
    if isinstance(validated, torch.Tensor):
        sizes = [int(validated.shape[1])] * int(validated.shape[0])
        dim = 0 if dm else max(int(validated.shape[2]), 1)
        return validated.reshape(-1).contiguous(), sizes, dim
    sizes = [int(c.shape[0]) for c in validated]
    if dm:
        dim = 0
    else:
        dims = {int(c.shape[1]) for c in validated if c.shape[0] > 0}
        dim = dims.pop() if dims else 1
    if not validated:
        return torch.zeros(0, dtype=torch.float64), sizes, dim
    return torch.cat([c.reshape(-1) for c in validated]), sizes, dim


def vietoris_rips_batch(clouds: Any, maxdim: int = 1, threshold: Any = math.inf, metric: str = "euclidean",
                        coeff: int = 2, distance_matrix: bool = False, precision: str = "float32",
                        memory_limit: Optional[float] = None, client: Any = None,
                        chunk_size: Optional[int] = None, device: Any = None) -> RaggedDiagrams:
    """Diagrams of many clouds in one call, parallel over clouds (OpenMP, deterministic), the GIL
    released. Same conventions and arguments as :func:`vietoris_rips`.

    Args:
        clouds: a (B, n, d) tensor/array of equal-size clouds, or a sequence of (n_b, d) clouds
            (sizes may differ, d must not); with ``distance_matrix=True`` (B, n, n) or a sequence
            of (n_b, n_b) matrices.
        memory_limit: bytes for the whole call (inputs, outputs and the per-thread working memory
            of the largest cloud); ``MemoryError`` before any work when the estimate exceeds it.
            With ``client``: the limit of each chunk's call on its worker.
        client: a ``dask.distributed.Client`` or a scheduler address (``"tcp://host:8786"``): the
            clouds are split into chunks of ``chunk_size`` clouds, each worker runs this function on
            its chunks, and the result is reassembled in order, equal to the local call bit for bit.
            Needs the extra ``medseg_ext[dist]``. None (default): this process only.
        chunk_size: clouds per task (default: about 4 tasks per worker thread). On the GPU path:
            clouds per device chunk (default: as many as fit 256 MiB of distance matrices).
        device: None (default: where the input is: a CUDA tensor, or a list of CUDA tensors, takes
            the GPU path), ``"cpu"`` or ``"cuda"`` (``"cuda:k"``, a ``torch.device``). The GPU path
            (Triton, :mod:`medseg_ext.triton.topology_batch`) computes the distance matrices, H0
            (Prim's minimum spanning tree per cloud) and, at maxdim 2 (clouds up to 512 points),
            the triangles that are not in apparent pairs on the device; dimensions >= 1 are reduced
            by the same C++ code as the CPU path, on those matrices copied to the host (parallel
            over clouds). The distances are computed with the CPU path's operations in float64, so the
            diagrams are the CPU path's. ``medseg_ext.use_backend("triton")`` runs the GPU path's
            kernels wherever the data is, CPU tensors included (under ``TRITON_INTERPRET=1``:
            tests), whatever ``device`` says; ``use_backend("cpu")`` forces the CPU path.

    Returns:
        :class:`RaggedDiagrams` (values + offsets per dimension; ``to_list()`` for a list view),
        on the CPU for both paths.
    """
    md = check_int(maxdim, "maxdim", 0, MAX_DIM)
    thr = check_threshold(threshold)
    p = check_coeff(coeff)
    met = check_metric(metric)
    f64 = check_precision(precision)
    dm = bool(distance_matrix)
    if chunk_size is not None:  # checked here too: the local CPU path does not use it and ignored a bad value
        check_int(chunk_size, "chunk_size", 1, 2**62)
    # with client= and no device asked for, CUDA inputs go to the (CPU) workers, as before the GPU path
    gpu = None if client is not None and device is None else _gpu_target(clouds, device)
    if gpu is not None:
        if client is not None:
            raise ValueError("client: the Dask path runs on CPU workers; leave device unset (or 'cpu') with client")
        validated = _validated_clouds(clouds, dm, gpu)
        return _rips_batch_gpu(validated, dm, md, thr, p, met, f64, memory_limit, chunk_size)
    validated = _validated_clouds(clouds, dm)
    if client is not None:
        from .scaleout import rips_batch_distributed
        return rips_batch_distributed(validated, client, chunk_size, maxdim=md, threshold=threshold, metric=metric,
                                      coeff=p, distance_matrix=dm, precision=precision, memory_limit=memory_limit)
    flat, sizes, dim = _flatten_batch(validated, dm)
    C_ = _dispatch.extension()
    largest = max(sizes, default=0)
    C_.rips_check_index_range(largest, md)
    threads = max(1, min(len(sizes), int(C_.build_info().get("max_threads", 1))))
    limit = resolve_memory_limit(memory_limit)
    data_bytes = flat.numel() * 8
    out_bytes = sum(sizes) * (md + 1) * 2 * 8 * 2  # rough: at most ~n pairs per dimension, values + copy
    per_cloud = C_.rips_memory_estimate(largest, md, f64)
    if threads * per_cloud + 2 * data_bytes + out_bytes > limit:  # data-free bound too big: bound from the data
        check_memory(threads * _distance_bytes(largest, f64) + 2 * data_bytes, limit, "vietoris_rips_batch")
        per_cloud = max(C_.rips_estimate_cpu(desc(flat), sizes, dim, md, thr, met, f64), default=0.0)
    check_memory(threads * per_cloud + 2 * data_bytes + out_bytes, limit, "vietoris_rips_batch")
    values, offsets = C_.rips_batch_cpu(desc(flat), sizes, dim, md, thr, p, met, f64)
    return RaggedDiagrams([torch.from_numpy(v) for v in values], [torch.from_numpy(o) for o in offsets])


# ---------------------------------------------------------------- GPU path

def _input_device(clouds: Any) -> torch.device:
    if isinstance(clouds, torch.Tensor):
        return clouds.device
    if isinstance(clouds, (list, tuple)):
        for c in clouds:
            if isinstance(c, torch.Tensor):
                return c.device
    return torch.device("cpu")


def _gpu_target(clouds: Any, device: Any) -> Optional[torch.device]:
    """None for the CPU path, else the device the Triton path runs on (a CPU device only when the
    Triton backend is forced with ``use_backend("triton")``: the interpreter, in tests)."""
    if device is None:
        dev = _input_device(clouds)
    else:
        try:
            dev = torch.device(device)
        except (TypeError, RuntimeError, ValueError) as exc:
            raise ValueError(f"device: expected 'cpu', 'cuda' or a torch.device, got {device!r}") from exc
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device: {device!r} asked for, but torch sees no CUDA device; the GPU path of "
                               "vietoris_rips_batch needs one (use device='cpu')")
    backend = _dispatch.select_backend(clouds=torch.empty(0, device=dev))
    if backend == "triton":
        return dev
    if backend == "cuda":
        raise RuntimeError("vietoris_rips_batch: the topology GPU path is written in Triton (no compiled CUDA "
                           f"kernels); install triton or unset {_dispatch.GPU_BACKEND_ENV}=cuda")
    return None  # "cpu", or "reference" (the topology ops have no separate reference backend)


# device bytes of one chunk: distance matrices (copied to the host for dimensions >= 1) and, at
# maxdim 2, the slots of the device's triangle columns
_GPU_CHUNK_BYTES = 256 * 2**20
# maxdim 2: the dimension-2 columns come from the device's apparent-pair pass (False: rips.cpp's own
# triangle pass on the host; the benchmark times both)
_DEVICE_TRIANGLES = True


def _gpu_chunks(sizes: List[int], chunk_size: Optional[int], maxdim: int = 0) -> List[tuple]:
    if chunk_size is not None:
        step = check_int(chunk_size, "chunk_size", 1, 2**62)
        return [(a, min(a + step, len(sizes))) for a in range(0, len(sizes), step)]
    from ..triton.topology_batch import triangle_capacity

    chunks, start, acc = [], 0, 0
    for b, n in enumerate(sizes):
        nbytes = n * n * 8 + (triangle_capacity(n) * 24 if maxdim == 2 and _DEVICE_TRIANGLES else 0)  # approx.
        if b > start and acc + nbytes > _GPU_CHUNK_BYTES:
            chunks.append((start, b))
            start, acc = b, 0
        acc += nbytes
    if start < len(sizes):
        chunks.append((start, len(sizes)))
    return chunks


def _rescale_extreme_distances(D: torch.Tensor, points: torch.Tensor, sizes: List[int], dim: int) -> torch.Tensor:
    """rips.cpp's rule for Euclidean distances whose sum of squares over- or underflowed (inf or
    below 2^-450, zeros off the diagonal included): recomputed as max|diff|·sqrt(Σ (diff/max|diff|)²)
    with the same float64 operations in the same order, so the GPU path keeps the CPU path's doubles
    (the kernel computes the plain formula; these entries are rare)."""
    n_t = torch.tensor(sizes, dtype=torch.int64, device=D.device)
    dstart = torch.cumsum(n_t * n_t, 0) - n_t * n_t
    pstart = torch.cumsum(n_t * dim, 0) - n_t * dim
    f = torch.nonzero(torch.isinf(D) | (D < 2.0 ** -450)).flatten()
    if f.numel() == 0:
        return D
    b = torch.searchsorted(dstart, f, right=True) - 1
    local = f - dstart[b]
    i, j = local // n_t[b], local % n_t[b]
    keep = i != j
    f, b, i, j = f[keep], b[keep], i[keep], j[keep]
    if f.numel() == 0:
        return D
    pa, pb = pstart[b] + i * dim, pstart[b] + j * dim
    diffs = [torch.abs(points[pa + k] - points[pb + k]) for k in range(dim)]
    mx = torch.zeros_like(diffs[0])
    for d in diffs:
        mx = torch.maximum(mx, d)
    s = torch.zeros_like(mx)
    for d in diffs:
        r = d / mx
        s = s + r * r
    val = torch.where((mx == 0) | torch.isinf(mx), mx, mx * torch.sqrt(s))
    D = D.clone()
    D[f] = val
    return D


def _rips_batch_gpu(validated: Any, dm: bool, md: int, thr: float, p: int, met: str, f64: bool,
                    memory_limit: Optional[float], chunk_size: Optional[int]) -> RaggedDiagrams:
    """Distances and H0 on the device (Triton), at maxdim 2 also the dimension-2 columns (apparent
    pairs removed on the device); dimensions >= 1 reduced by the C++ code on the host copies of the
    device's distance matrices, chunk by chunk."""
    from ..triton import topology_batch as tb

    flat, sizes, dim = _flatten_batch(validated, dm)
    C_ = _dispatch.extension()
    largest = max(sizes, default=0)
    C_.rips_check_index_range(largest, md)
    if largest > tb.MAX_POINTS:
        raise ValueError(f"clouds: the GPU path takes clouds of at most {tb.MAX_POINTS} points, got {largest}")
    limit = resolve_memory_limit(memory_limit)
    threads = max(1, min(len(sizes), int(C_.build_info().get("max_threads", 1))))
    starts = [0]
    for n in sizes:
        starts.append(starts[-1] + (n * n if dm else n * dim))
    parts = []
    for a, b in _gpu_chunks(sizes, chunk_size, md):
        csizes = sizes[a:b]
        s_dev = torch.tensor(csizes, dtype=torch.int64, device=flat.device)
        nmax = max(csizes, default=0)
        data = flat[starts[a]:starts[b]]
        D = data if dm else tb.pairwise_distances(data, s_dev, dim, nmax, met)
        if not dm and met == "euclidean":
            D = _rescale_extreme_distances(D, data, csizes, dim)
        deaths = tb.mst_deaths(D, s_dev, nmax, thr, f64)
        values, offsets = [], []
        if md >= 1:
            # the reduction of dimensions >= 1 reads the device's matrices: the same numbers as H0
            host = D.cpu()
            data_bytes = host.numel() * 8
            out_bytes = sum(csizes) * (md + 1) * 2 * 8 * 2
            per_cloud = C_.rips_memory_estimate(nmax, md, f64)
            if threads * per_cloud + data_bytes + out_bytes > limit:
                per_cloud = max(C_.rips_estimate_cpu(desc(host), csizes, 0, md, thr, met, f64), default=0.0)
            check_memory(threads * per_cloud + data_bytes + out_bytes, limit, "vietoris_rips_batch")
            if md == 2 and _DEVICE_TRIANGLES and nmax <= tb.TRIANGLE_MAX_POINTS:
                t_idx, t_diam, t_zero, t_off = (x.cpu() for x in tb.triangle_columns(D, s_dev, nmax, thr, f64))
                values, offsets = C_.rips_batch_cpu_triangles(desc(host), csizes, md, thr, p, f64, desc(t_idx),
                                                              desc(t_diam), desc(t_zero), t_off.tolist())
            else:
                values, offsets = C_.rips_batch_cpu(desc(host), csizes, 0, md, thr, p, met, f64)
        h0_values, h0_offsets = tb.h0_from_deaths(deaths, s_dev)
        parts.append(RaggedDiagrams([h0_values.cpu()] + [torch.from_numpy(v) for v in values[1:]],
                                    [h0_offsets.cpu()] + [torch.from_numpy(o) for o in offsets[1:]]))
    return RaggedDiagrams.concat(parts, maxdim=md)
