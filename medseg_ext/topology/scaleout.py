"""Dask scale-out of the batch ops (DESIGN.md principle 7: existing engines, no home-made cluster code).

The work is split into chunks (clouds for :func:`~medseg_ext.topology.vietoris_rips_batch`, diagram
pairs for :func:`~medseg_ext.topology.diagram_distance_matrix`); every task runs the same compiled
medseg_ext function on a ``dask.distributed`` worker, and the pieces are put back together in
order, so the result equals the local call bit for bit. ``client`` is a ``distributed.Client`` or
a scheduler address (``"tcp://10.0.0.5:8786"``; a client is opened for the call and closed after).

    from dask.distributed import Client, LocalCluster
    client = Client(LocalCluster(n_workers=2, threads_per_worker=1))
    dg = medseg_ext.vietoris_rips_batch(clouds, maxdim=2, client=client)
    PR = medseg_ext.diagram_distance_matrix(dg.dimension(0), q=1, ground="l2", client=client)

Workers must be able to import ``medseg_ext`` (the same version). ``dask[distributed]`` is an
optional dependency (extra ``medseg_ext[dist]``), imported only here and only when asked. Each
task's call is itself parallel (OpenMP over the machine's cores); on a ``LocalCluster`` prefer
one thread per worker.
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Callable, Iterator, List, Optional, Sequence

import numpy as np
import torch

from .rips import RaggedDiagrams

EXTRA_HINT = "pip install 'medseg_ext[dist]'  (dask[distributed])"


def import_distributed():
    """The ``distributed`` module, or an ImportError that names the extra to install."""
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ImportError("medseg_ext scale-out needs dask.distributed, which is not installed: "
                          f"{EXTRA_HINT}") from exc
    return distributed


@contextlib.contextmanager
def connect(client: Any) -> Iterator[Any]:
    """A ``distributed.Client`` from a client (used as is) or a scheduler address string (a client
    opened here and closed on exit)."""
    distributed = import_distributed()
    if isinstance(client, distributed.Client):
        yield client
        return
    if isinstance(client, str):
        if not client:
            raise ValueError("client: empty scheduler address")
        c = distributed.Client(client)
        try:
            yield c
        finally:
            c.close()
        return
    raise TypeError(f"client: expected a dask.distributed.Client or a scheduler address string, "
                    f"got {type(client).__name__}")


def _total_threads(client: Any) -> int:
    try:
        return max(1, int(sum(client.nthreads().values())))
    except Exception:  # noqa: BLE001 - an unreachable/odd scheduler still gets a sensible split
        return 1


def _check_chunk(chunk_size: Any) -> Optional[int]:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise TypeError(f"chunk_size: expected a positive integer, got {type(chunk_size).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive integer, got {chunk_size}")
    return int(chunk_size)


def _chunk_bounds(n: int, chunk: int) -> List[tuple]:
    return [(s, min(n, s + chunk)) for s in range(0, n, chunk)]


def _gather_in_order(client: Any, futures: Sequence[Any], progress: Optional[Callable[[int], Any]],
                     weights: Sequence[int]) -> list:
    """Results of ``futures`` in submission order; ``progress(weight)`` as each one finishes."""
    if progress is None:
        return client.gather(list(futures))
    from distributed import as_completed
    index = {f.key: i for i, f in enumerate(futures)}
    out = [None] * len(futures)
    for fut in as_completed(list(futures)):
        i = index[fut.key]
        out[i] = fut.result()
        progress(weights[i])
    return out


def _compact(t: torch.Tensor) -> torch.Tensor:
    """``t`` alone in its storage (a pickled view would carry its whole base storage to the worker)."""
    if t.is_contiguous() and t.storage_offset() == 0 and t.untyped_storage().nbytes() == t.numel() * t.element_size():
        return t
    return t.clone(memory_format=torch.contiguous_format)


def compact_ragged(r: RaggedDiagrams) -> RaggedDiagrams:
    """A RaggedDiagrams whose tensors own their storage (cheap to send to a worker)."""
    return RaggedDiagrams([_compact(v) for v in r.values], [_compact(o) for o in r.offsets])


def _rips_task(chunk: Any, kwargs: dict) -> RaggedDiagrams:
    from medseg_ext.topology import vietoris_rips_batch
    return vietoris_rips_batch(chunk, **kwargs)


def rips_batch_distributed(clouds: Any, client: Any, chunk_size: Optional[int] = None,
                           progress: Optional[Callable[[int], Any]] = None, **kwargs: Any) -> RaggedDiagrams:
    """:func:`vietoris_rips_batch` of ``clouds`` on a Dask cluster, in chunks of ``chunk_size`` clouds;
    ``kwargs`` are that function's options. ``progress(n_clouds)`` is called as chunks finish."""
    chunk = _check_chunk(chunk_size)
    from .rips import _validated_clouds
    clouds = _validated_clouds(clouds, bool(kwargs.get("distance_matrix", False)))
    B = int(clouds.shape[0]) if isinstance(clouds, torch.Tensor) else len(clouds)
    with connect(client) as c:
        if chunk is None:
            chunk = max(1, math.ceil(B / (4 * _total_threads(c))))
        bounds = _chunk_bounds(B, chunk)
        if not bounds:
            return RaggedDiagrams.concat([], maxdim=int(kwargs.get("maxdim", 1)))
        pieces = [_compact(clouds[s:e]) if isinstance(clouds, torch.Tensor) else [_compact(c) for c in clouds[s:e]]
                  for s, e in bounds]
        data = c.scatter(pieces, hash=False)
        futures = [c.submit(_rips_task, d, kwargs, pure=False) for d in data]
        parts = _gather_in_order(c, futures, progress, [e - s for s, e in bounds])
    return RaggedDiagrams.concat(parts)


def _pairs_task(ragged: RaggedDiagrams, pairs: np.ndarray, kwargs: dict) -> np.ndarray:
    from medseg_ext.topology import diagram_distance_pairs
    return diagram_distance_pairs(ragged, pairs, dim=0, **kwargs).numpy()


def distance_matrix_distributed(diagrams: RaggedDiagrams, client: Any, chunk_size: Optional[int] = None,
                                progress: Optional[Callable[[int], Any]] = None, dim: int = 0,
                                **kwargs: Any) -> torch.Tensor:
    """:func:`diagram_distance_matrix` of the H_dim diagrams in ``diagrams`` on a Dask cluster: the
    K(K−1)/2 pairs i < j in chunks of ``chunk_size`` pairs, each computed by
    :func:`diagram_distance_pairs` on a worker (the diagrams are sent to every worker once).
    ``kwargs``: q, ground, essential. ``progress(n_pairs)`` as chunks finish."""
    chunk = _check_chunk(chunk_size)
    if not isinstance(diagrams, RaggedDiagrams):
        raise TypeError(f"diagrams: expected a RaggedDiagrams, got {type(diagrams).__name__}")
    one = compact_ragged(RaggedDiagrams([diagrams.values[dim]], [diagrams.offsets[dim]]))
    K = len(one)
    out = torch.zeros((K, K), dtype=torch.float64)
    iu, ju = np.triu_indices(K, 1)
    P = int(iu.size)
    if P == 0:
        return out
    pairs = np.stack([iu, ju], axis=1).astype(np.int64)
    with connect(client) as c:
        if chunk is None:
            chunk = max(64, math.ceil(P / (4 * _total_threads(c))))
        bounds = _chunk_bounds(P, chunk)
        [shared] = c.scatter([one], broadcast=True, hash=False)
        futures = [c.submit(_pairs_task, shared, pairs[s:e], kwargs, pure=False) for s, e in bounds]
        parts = _gather_in_order(c, futures, progress, [e - s for s, e in bounds])
    w = torch.from_numpy(np.concatenate(parts))
    out[iu, ju] = w
    out[ju, iu] = w
    return out


def map_tasks(client: Any, fn: Callable, items: Sequence[Any], progress: Optional[Callable[[int], Any]] = None,
              **kwargs: Any) -> list:
    """``[fn(item, **kwargs) for item in items]`` on the cluster (``client``: Client or address), or
    in this process when ``client`` is None; results in order. ``fn`` must be importable on the
    workers (a module-level function of an installed package)."""
    if client is None:
        out = []
        for it in items:
            out.append(fn(it, **kwargs))
            if progress is not None:
                progress(1)
        return out
    with connect(client) as c:
        data = c.scatter(list(items), hash=False)
        task = functools.partial(fn, **kwargs) if kwargs else fn
        futures = [c.submit(task, d, pure=False) for d in data]
        return _gather_in_order(c, futures, progress, [1] * len(futures))
