"""Dask scale-out: vietoris_rips_batch(client=) and diagram_distance_matrix(client=) equal the local
calls bit for bit (chunking and reassembly); diagram_distance_pairs equals single wasserstein calls;
RaggedDiagrams.subset/concat; the ImportError without dask names the extra."""
import math
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import medseg_ext
from medseg_ext.topology import RaggedDiagrams, diagram_distance_pairs
from topo_cases import distance_matrix


def assert_ragged_equal(a, b):
    assert len(a) == len(b) and a.maxdim == b.maxdim
    for k in range(a.maxdim + 1):
        assert torch.equal(a.offsets[k], b.offsets[k]), f"offsets H{k}"
        assert torch.equal(a.values[k], b.values[k]), f"values H{k}"


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0")
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


# ---------------------------------------------------------------- no dask needed
def test_import_error_names_the_extra(monkeypatch):
    from medseg_ext.topology import scaleout
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(ImportError, match=r"medseg_ext\[dist\]"):
        scaleout.import_distributed()
    X = np.zeros((2, 3, 2))
    with pytest.raises(ImportError, match=r"medseg_ext\[dist\]"):
        medseg_ext.vietoris_rips_batch(X, client="tcp://127.0.0.1:1")
    with pytest.raises(ImportError, match=r"medseg_ext\[dist\]"):
        medseg_ext.diagram_distance_matrix([np.zeros((0, 2))] * 3, client="tcp://127.0.0.1:1")


@given(st.integers(0, 7), st.integers(0, 40), st.sampled_from([1.0, 2.0, math.inf]), st.sampled_from(["linf", "l2"]),
       st.integers(0, 2**31 - 1))
@settings(max_examples=20)
def test_pairs_equal_single_calls(K, P, q, ground, seed):
    rng = np.random.default_rng(seed)
    dgms = []
    for _ in range(K):
        b = rng.uniform(0, 2, rng.integers(0, 6))
        d = b + rng.exponential(1.0, b.size)
        if b.size and rng.random() < 0.3:
            d[0] = b[0]  # a point on the diagonal
        dgms.append(np.stack([b, d], 1))
    pairs = rng.integers(0, K, size=(P, 2)) if K else np.zeros((0, 2), dtype=np.int64)
    got = diagram_distance_pairs(dgms, pairs, q=q, ground=ground)
    assert got.shape == (len(pairs),) and got.dtype == torch.float64
    for p, (i, j) in enumerate(pairs):
        want = 0.0 if i == j else medseg_ext.wasserstein(dgms[i], dgms[j], q=q, ground=ground)
        assert got[p].item() == want
    if K:
        M = medseg_ext.diagram_distance_matrix(dgms, q=q, ground=ground)
        iu = np.triu_indices(K, 1)
        np.testing.assert_array_equal(diagram_distance_pairs(dgms, np.stack(iu, 1), q=q, ground=ground).numpy(),
                                      M.numpy()[iu])


def test_pairs_errors_and_ragged_input():
    X = torch.randn(5, 12, 2, dtype=torch.float64)
    dg = medseg_ext.vietoris_rips_batch(X, maxdim=1)
    got = diagram_distance_pairs(dg, torch.tensor([[0, 4], [3, 1]]), dim=1, q=2)
    assert got[1].item() == medseg_ext.wasserstein(dg[3][1], dg[1][1], q=2)
    with pytest.raises(ValueError, match="pairs: indices"):
        diagram_distance_pairs(dg, [[0, 5]], dim=0)
    with pytest.raises(ValueError, match="pairs: indices"):
        diagram_distance_pairs(dg, [[-1, 0]], dim=0)
    with pytest.raises(ValueError, match=r"pairs: expected a \(P, 2\)"):
        diagram_distance_pairs(dg, [0, 1, 2], dim=0)
    with pytest.raises(TypeError, match="pairs: expected integer"):
        diagram_distance_pairs(dg, [[0.0, 1.0]], dim=0)
    with pytest.raises(ValueError, match="dim"):
        diagram_distance_pairs(dg, [[0, 1]])
    with pytest.raises(ValueError, match="essential='error'"):
        diagram_distance_pairs(dg, [[0, 1]], dim=0, essential="error")
    assert diagram_distance_pairs(dg, np.zeros((0, 2), dtype=int), dim=0).shape == (0,)


def test_ragged_subset_and_concat():
    clouds = [np.random.default_rng(i).standard_normal((n, 2)) for i, n in enumerate([5, 0, 9, 1, 7])]
    full = medseg_ext.vietoris_rips_batch(clouds, maxdim=1)
    parts = [full.subset(0, 2), full.subset(2, 2), full.subset(2, 5)]
    assert [len(p) for p in parts] == [2, 0, 3]
    for b in range(3):
        for k in range(2):
            assert torch.equal(parts[2][b][k], full[2 + b][k])
    assert_ragged_equal(RaggedDiagrams.concat(parts), full)
    empty = RaggedDiagrams.concat([], maxdim=2)
    assert len(empty) == 0 and empty.maxdim == 2
    with pytest.raises(IndexError):
        full.subset(3, 6)
    with pytest.raises(ValueError, match="same maxdim"):
        RaggedDiagrams.concat([full, medseg_ext.vietoris_rips_batch(clouds, maxdim=0)])


# ---------------------------------------------------------------- on a LocalCluster
def test_rips_batch_on_cluster_equals_local(client):
    X = torch.randn(7, 20, 3, dtype=torch.float64)
    local = medseg_ext.vietoris_rips_batch(X, maxdim=2)
    for chunk in (None, 1, 3, 7, 50):
        assert_ragged_equal(medseg_ext.vietoris_rips_batch(X, maxdim=2, client=client, chunk_size=chunk), local)
    # ragged list input with an empty cloud, other options passed through
    rng = np.random.default_rng(3)
    clouds = [rng.integers(0, 3, (n, 2)).astype(float) for n in (6, 0, 11, 1, 9, 4)]
    kw = dict(maxdim=1, threshold=2.5, metric="manhattan", coeff=3)
    assert_ragged_equal(medseg_ext.vietoris_rips_batch(clouds, client=client, chunk_size=4, **kw),
                        medseg_ext.vietoris_rips_batch(clouds, **kw))
    D = np.stack([distance_matrix(x) for x in X.numpy()[:4]])
    assert_ragged_equal(medseg_ext.vietoris_rips_batch(D, maxdim=1, distance_matrix=True, client=client, chunk_size=3),
                        medseg_ext.vietoris_rips_batch(D, maxdim=1, distance_matrix=True))
    empty = medseg_ext.vietoris_rips_batch([], maxdim=2, client=client)
    assert len(empty) == 0 and empty.maxdim == 2


def test_distance_matrix_on_cluster_equals_local(client):
    X = torch.randn(9, 15, 3, dtype=torch.float64)
    dg = medseg_ext.vietoris_rips_batch(X, maxdim=1)
    for dim, kw in ((0, dict(q=1, ground="l2")), (1, dict(q=2, ground="linf")), (0, dict(q=math.inf))):
        local = medseg_ext.diagram_distance_matrix(dg, dim=dim, **kw)
        for chunk in (None, 1, 5, 100):
            got = medseg_ext.diagram_distance_matrix(dg, dim=dim, client=client, chunk_size=chunk, **kw)
            assert torch.equal(got, local)
    lst = dg.dimension(0)
    kw = dict(q=1, essential="match")
    assert torch.equal(medseg_ext.diagram_distance_matrix(lst, client=client, chunk_size=4, **kw),
                       medseg_ext.diagram_distance_matrix(lst, **kw))
    for K in (0, 1):
        got = medseg_ext.diagram_distance_matrix(lst[:K], client=client)
        assert got.shape == (K, K) and torch.all(got == 0)


def test_scheduler_address_and_argument_errors(client):
    X = torch.randn(4, 10, 2, dtype=torch.float64)
    addr = client.scheduler.address  # a string: a client is opened for the call and closed after
    assert_ragged_equal(medseg_ext.vietoris_rips_batch(X, maxdim=1, client=addr, chunk_size=2),
                        medseg_ext.vietoris_rips_batch(X, maxdim=1))
    with pytest.raises(TypeError, match="client"):
        medseg_ext.vietoris_rips_batch(X, client=42)
    with pytest.raises(ValueError, match="client: empty"):
        medseg_ext.vietoris_rips_batch(X, client="")
    with pytest.raises(ValueError, match="chunk_size"):
        medseg_ext.vietoris_rips_batch(X, client=client, chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size"):
        medseg_ext.diagram_distance_matrix([np.zeros((0, 2))] * 2, client=client, chunk_size=2.5)
    bad = [np.zeros((3, 2)), np.array([[0.0, np.nan]])]
    with pytest.raises(ValueError, match=r"clouds\[1\]"):  # validated here, before any task is sent
        medseg_ext.vietoris_rips_batch(bad, client=client)
    with pytest.raises(MemoryError):  # a worker's error comes back as itself
        medseg_ext.vietoris_rips_batch(np.random.default_rng(0).standard_normal((2, 200, 3)), maxdim=2,
                                       memory_limit=1e6, client=client)


def test_process_workers_equal_local():
    """One worker process (pickling of chunks and results, medseg_ext imported on the worker)."""
    distributed = pytest.importorskip("distributed")
    X = torch.randn(5, 16, 3, dtype=torch.float64)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cl, \
            distributed.Client(cl) as c:
        dg = medseg_ext.vietoris_rips_batch(X, maxdim=1, client=c, chunk_size=2)
        M = medseg_ext.diagram_distance_matrix(dg, dim=1, client=c, chunk_size=3)
    local = medseg_ext.vietoris_rips_batch(X, maxdim=1)
    assert_ragged_equal(dg, local)
    assert torch.equal(M, medseg_ext.diagram_distance_matrix(local, dim=1))
