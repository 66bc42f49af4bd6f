"""The GPU path of vietoris_rips_batch (medseg_ext/triton/topology_batch.py) against the CPU path
(bit for bit, same order), ripser.py (exact) and NumPy. Without a GPU the Triton kernels run on CPU
tensors under TRITON_INTERPRET=1 (set by conftest.py) through ``use_backend("triton")``, so the
clouds stay small; python_tests/topology/test_topo_gpu.py runs the same path on a real device."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import medseg_ext
from helpers import HAVE_CUDA, HAVE_TRITON
from topo_cases import assert_bitwise, assert_same_diagrams, distance_matrix, numpy_distances

pytestmark = [pytest.mark.triton, pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")]
DEVICE = "cuda" if HAVE_CUDA else "cpu"


def gpu_batch(clouds, **kw):
    if isinstance(clouds, np.ndarray):
        clouds = torch.from_numpy(clouds).to(DEVICE)
    elif isinstance(clouds, list):
        clouds = [torch.from_numpy(np.asarray(c, dtype=np.float64)).to(DEVICE) for c in clouds]
    with medseg_ext.use_backend("triton"):
        return medseg_ext.vietoris_rips_batch(clouds, **kw)


def cpu_batch(clouds, **kw):
    return medseg_ext.vietoris_rips_batch(clouds, device="cpu", **kw)


@st.composite
def batches(draw, max_clouds=3, max_n=10):
    sizes = draw(st.lists(st.integers(0, max_n), min_size=0, max_size=max_clouds))
    d = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["gauss", "grid", "scaled"]))
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        if kind == "grid":  # ties and duplicate points
            out.append(rng.integers(0, 3, size=(n, d)).astype(np.float64))
        elif kind == "scaled":
            out.append(rng.standard_normal((n, d)) * 10.0 ** rng.integers(-3, 4))
        else:
            out.append(rng.standard_normal((n, d)))
    return out


def test_distance_kernel_equals_the_cpu_operations_bitwise():
    from medseg_ext.triton import topology_batch as tb

    rng = np.random.default_rng(3)
    clouds = [rng.standard_normal((n, 3)) * s for n, s in ((7, 1.0), (0, 1.0), (1, 5.0), (40, 1e-3), (19, 1e3))]
    clouds[3][5] = clouds[3][11]  # a duplicate point: distance exactly 0
    flat = torch.from_numpy(np.concatenate([c.reshape(-1) for c in clouds])).to(DEVICE)
    sizes = torch.tensor([len(c) for c in clouds], dtype=torch.int64, device=DEVICE)
    for metric in ("euclidean", "manhattan", "chebyshev"):
        D = tb.pairwise_distances(flat, sizes, 3, 40, metric).cpu().numpy()
        start = 0
        for c in clouds:
            n = len(c)
            np.testing.assert_array_equal(D[start:start + n * n].reshape(n, n), numpy_distances(c, metric),
                                          err_msg=metric)
            start += n * n
    with pytest.raises(ValueError, match="metric"):
        tb.pairwise_distances(flat, sizes, 3, 40, "cosine")


def test_compiled_kernels_round_like_the_cpu():
    # no GPU needed: the kernels compiled for sm_90 (in a child process without TRITON_INTERPRET:
    # the interpreter accepts code the compiler rejects, e.g. return types that differ per branch);
    # the float64 distance kernel must not contract acc + diff*diff into an FMA (rips.cpp is built
    # without FMA) and must take the correctly rounded sqrt; Prim rounds to float32 to nearest
    import os
    import subprocess
    import sys

    code = ("from medseg_ext.triton import topology_batch as tb\n"
            "import re\n"
            "for m in (0, 1, 2):\n"
            "    p = tb.compiled_ptx('pairwise', METRIC=m, T=32)\n"
            "    print('pairwise', m, len(re.findall(r'\\bfma\\.', p)), len(re.findall(r'sqrt\\.rn\\.f64', p)),"
            " len(re.findall(r'sqrt', p)))\n"
            "p = tb.compiled_ptx('prim', F64=False, BLOCK=256)\n"
            "print('prim', len(re.findall(r'cvt\\.rn\\.f32\\.f64', p)), len(re.findall(r'cvt\\.r[zmp]\\.f32', p)))\n"
            "for f64 in (False, True):\n"
            "    p = tb.compiled_ptx('triangle', F64=f64, BLOCK=256)\n"
            "    print('triangle' + str(int(f64)), len(re.findall(r'atom\\.global', p)))\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    if r.returncode != 0 and ("ImportError" in r.stderr or "FileNotFoundError" in r.stderr):
        pytest.skip(f"this triton cannot compile for NVIDIA targets here: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = dict((ln.split()[0] + (ln.split()[1] if ln.startswith("pairwise") else ""), ln.split()[1:])
                 for ln in r.stdout.splitlines())
    euclid = lines["pairwise0"]
    assert euclid[1] == "0" and int(euclid[2]) > 0 and euclid[2] == euclid[3], euclid  # no FMA; sqrt.rn.f64 only
    assert lines["pairwise1"][1:] == ["0", "0", "0"] and lines["pairwise2"][1:] == ["0", "0", "0"]
    assert int(lines["prim"][0]) > 0 and lines["prim"][1] == "0"
    assert int(lines["triangle0"][0]) > 0 and int(lines["triangle1"][0]) > 0  # both value types compile


@settings(max_examples=20)
@given(batches(), st.integers(0, 2), st.sampled_from(["euclidean", "manhattan", "chebyshev"]),
       st.sampled_from([math.inf, 0.0, 0.7, 1.5]), st.sampled_from(["float32", "float64"]))
def test_gpu_path_equals_cpu_path_bitwise(clouds, maxdim, metric, threshold, precision):
    kw = dict(maxdim=maxdim, metric=metric, threshold=threshold, precision=precision)
    assert_bitwise(gpu_batch(clouds, **kw), cpu_batch(clouds, **kw))


@pytest.mark.peer
@pytest.mark.filterwarnings("ignore:The input:UserWarning")  # ripser.py's shape hints on tiny clouds
@settings(max_examples=8)
@given(st.integers(1, 10), st.integers(1, 3), st.integers(0, 2**31 - 1), st.integers(0, 2),
       st.sampled_from([math.inf, 1.0, 2.3]))
def test_gpu_path_equals_ripser_on_integer_points(n, d, seed, maxdim, threshold):
    # integer coordinates: exact squared distances, ties and duplicates; ripser.py computes the same
    ripser = pytest.importorskip("ripser")
    X = np.random.default_rng(seed).integers(-2, 3, size=(3, n, d)).astype(np.float64)
    got = gpu_batch(X, maxdim=maxdim, threshold=threshold)
    for b in range(3):
        assert_same_diagrams(got[b], ripser.ripser(X[b], maxdim=maxdim, thresh=threshold)["dgms"], maxdim)


@pytest.mark.peer
def test_gpu_path_distance_matrices_equal_ripser_and_cpu():
    ripser = pytest.importorskip("ripser")
    rng = np.random.default_rng(5)
    D = np.stack([distance_matrix(x) for x in rng.standard_normal((3, 8, 3))])
    got = gpu_batch(D, maxdim=2, distance_matrix=True)
    assert_bitwise(got, cpu_batch(D, maxdim=2, distance_matrix=True))
    ragged = [distance_matrix(rng.standard_normal((n, 2))) for n in (4, 0, 9)]
    assert_bitwise(gpu_batch(ragged, maxdim=1, distance_matrix=True),
                   cpu_batch(ragged, maxdim=1, distance_matrix=True))
    for b in range(3):
        assert_same_diagrams(got[b], ripser.ripser(D[b], maxdim=2, distance_matrix=True)["dgms"], 2)


def numpy_triangle_columns(D, threshold):
    """The dimension-2 columns rips.cpp's triangle pass makes at maxdim 2 (before clearing), from its
    rule in NumPy: every triangle {w > b > a} within the threshold that is not the lower half of an
    apparent pair, as (index, diameter, zero-diameter earliest cofacet or -1)."""
    from math import comb

    n = len(D)
    out = set()
    for w in range(n):
        for b in range(w):
            for a in range(b):
                diam = max(D[w, b], D[w, a], D[b, a])
                if not diam <= threshold:
                    continue
                xs = [x for x in range(n) if x not in (w, b, a) and max(D[w, x], D[b, x], D[a, x]) <= diam]
                idx = comb(w, 3) + comb(b, 2) + a
                if not xs:
                    out.add((idx, float(diam), -1))
                    continue
                x = max(xs)
                tau = sorted((w, b, a, x), reverse=True)
                # apparent iff no facet tau - {y} with y > x has the triangle's diameter
                if all(max(D[p, q] for p in tau for q in tau if p < q and y not in (p, q)) < diam
                       for y in (w, b, a) if y > x):
                    continue
                z = sum(comb(v, 4 - i) for i, v in enumerate(tau))
                out.add((idx, float(diam), z))
    return out


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_triangle_columns_equal_numpy_rule(precision):
    from medseg_ext.triton import topology_batch as tb

    rng = np.random.default_rng(12)
    # clouds of different sizes in one launch; the grid cloud (ties, duplicates) padded to 3 coordinates
    clouds = [rng.standard_normal((8, 3)), np.pad(rng.integers(0, 3, size=(7, 2)).astype(np.float64), ((0, 0), (0, 1))),
              np.zeros((2, 3)), rng.standard_normal((5, 3))]
    flat = torch.from_numpy(np.concatenate([c.reshape(-1) for c in clouds])).to(DEVICE)
    sizes = torch.tensor([len(c) for c in clouds], dtype=torch.int64, device=DEVICE)
    D = tb.pairwise_distances(flat, sizes, 3, 8, "euclidean")
    vt = np.float64 if precision == "float64" else np.float32
    for threshold in (math.inf, 1.3):
        idx, diam, zero, off = (t.cpu() for t in tb.triangle_columns(D, sizes, 8, threshold, precision == "float64"))
        for b, c in enumerate(clouds):
            sl = slice(int(off[b]), int(off[b + 1]))
            got = {(int(i), float(d), int(z)) for i, d, z in zip(idx[sl], diam[sl], zero[sl])}
            assert sl.stop - sl.start == len(got)  # no triangle twice
            assert got == numpy_triangle_columns(numpy_distances(c, "euclidean").astype(vt), vt(threshold)), \
                (b, threshold)


def test_triangle_columns_relaunch_when_the_slots_overflow(monkeypatch):
    from medseg_ext.triton import topology_batch as tb

    rng = np.random.default_rng(13)
    X = [rng.integers(0, 3, size=(7, 3)).astype(np.float64), rng.standard_normal((6, 3))]
    want = gpu_batch(X, maxdim=2)
    monkeypatch.setattr(tb, "TRIANGLE_SLOTS_BASE", 0)  # C(7, 3) // 32 = 1 slot: the first launch overflows
    assert tb.triangle_capacity(7) == 1
    launches = []
    kernel = tb._triangle_kernel
    monkeypatch.setattr(tb, "_triangle_kernel", type("Spy", (), {
        "__getitem__": lambda self, grid: (launches.append(grid), kernel[grid])[1]})())
    assert_bitwise(gpu_batch(X, maxdim=2), want)
    assert len(launches) == 2
    assert_bitwise(want, cpu_batch(X, maxdim=2))


def test_circle_has_one_h1_class_and_h0_from_the_mst():
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    X = np.stack([np.cos(t), np.sin(t)], axis=1)[None]
    got = gpu_batch(X, maxdim=1)
    assert_bitwise(got, cpu_batch(X, maxdim=1))
    h0, h1 = got[0]
    assert h1.shape == (1, 2) and h1[0, 1] > 1.7 and h1[0, 0] < 0.3  # the circle's one long H1 class
    # H0: 23 equal MST edges (the chord of 2π/24, rounded to float32) and one essential class
    chord = float(np.float32(numpy_distances(X[0], "euclidean")[0, 1]))
    assert torch.equal(h0[:-1, 1], torch.full((23,), chord, dtype=torch.float64))
    assert h0[-1, 1] == math.inf and bool((h0[:, 0] == 0).all())


def test_small_and_degenerate_clouds():
    # n = 0, 1, 2, all points equal, a threshold below every distance (every point essential)
    clouds = [np.zeros((0, 2)), np.array([[1.0, 2.0]]), np.array([[0.0, 0.0], [3.0, 4.0]]), np.zeros((4, 2))]
    for maxdim in (0, 1, 2):
        got = gpu_batch(clouds, maxdim=maxdim)
        assert_bitwise(got, cpu_batch(clouds, maxdim=maxdim))
        h0 = got.dimension(0)
        assert h0[0].shape == (0, 2)
        assert h0[1].tolist() == [[0.0, math.inf]]
        assert h0[2].tolist() == [[0.0, 5.0], [0.0, math.inf]]
        assert h0[3].tolist() == [[0.0, math.inf]]  # zero-length MST edges are not reported
    far = np.array([[[0.0], [1.0], [3.0]]])
    got = gpu_batch(far, maxdim=1, threshold=0.5)
    assert got[0][0].tolist() == [[0.0, math.inf]] * 3 and got[0][1].shape == (0, 2)
    got = gpu_batch(far, maxdim=1, threshold=1.0)  # the edge of length 1 is kept, 2 components
    assert got[0][0].tolist() == [[0.0, 1.0], [0.0, math.inf], [0.0, math.inf]]
    for maxdim in (0, 2):
        empty = gpu_batch([], maxdim=maxdim)
        assert len(empty) == 0 and empty.maxdim == maxdim and empty.values[0].shape == (0, 2)
        empty = gpu_batch(np.zeros((0, 5, 3)), maxdim=maxdim)
        assert len(empty) == 0 and empty.maxdim == maxdim


def test_threshold_rounds_like_the_cpu_path_and_coeff():
    # a threshold between a distance in float64 and its float32 rounding: both paths round it
    X = np.array([[[0.0, 0.0], [0.1, 0.0], [0.1, 0.3], [0.45, 0.3]]])
    for precision in ("float32", "float64"):
        for thr in (0.1, float(np.nextafter(0.1, 0)), 0.3, float(np.float32(0.35))):
            kw = dict(maxdim=1, threshold=thr, precision=precision)
            assert_bitwise(gpu_batch(X, **kw), cpu_batch(X, **kw))
    rng = np.random.default_rng(8)
    X = rng.standard_normal((2, 9, 2))
    assert_bitwise(gpu_batch(X, maxdim=2, coeff=3), cpu_batch(X, maxdim=2, coeff=3))


def test_chunks_give_the_same_result(monkeypatch):
    from medseg_ext.topology import rips

    rng = np.random.default_rng(9)
    clouds = [rng.standard_normal((n, 3)) for n in (6, 11, 0, 9, 12)]
    whole = gpu_batch(clouds, maxdim=1)
    assert_bitwise(gpu_batch(clouds, maxdim=1, chunk_size=2), whole)
    monkeypatch.setattr(rips, "_GPU_CHUNK_BYTES", 1000)  # about one cloud per device chunk
    assert rips._gpu_chunks([6, 11, 0, 9, 12], None) == [(0, 1), (1, 3), (3, 4), (4, 5)]
    assert_bitwise(gpu_batch(clouds, maxdim=1), whole)
    assert_bitwise(whole, cpu_batch(clouds, maxdim=1))


def test_gpu_path_errors(monkeypatch):
    X = np.random.default_rng(0).standard_normal((2, 6, 2))
    if not HAVE_CUDA:
        with pytest.raises(RuntimeError, match="device.*no CUDA device"):
            medseg_ext.vietoris_rips_batch(X, device="cuda")
    with pytest.raises(ValueError, match="device"):
        medseg_ext.vietoris_rips_batch(X, device="tpu")
    with pytest.raises(ValueError, match="device"):
        medseg_ext.vietoris_rips_batch(X, device=3.5)
    with pytest.raises(ValueError, match="client"):
        gpu_batch(X, client="tcp://127.0.0.1:1", device=DEVICE)
    with pytest.raises(MemoryError, match="memory_limit"):
        gpu_batch(np.random.default_rng(1).standard_normal((2, 40, 3)), maxdim=2, memory_limit=1e4)
    bad = X.copy()
    bad[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="clouds: contains NaN"):
        gpu_batch(bad)
    with pytest.raises(ValueError, match=r"clouds\[1\]"):
        gpu_batch([X[0], np.array([[0.0, np.inf]])])
    with pytest.raises(ValueError, match="chunk_size"):
        gpu_batch(X, chunk_size=0)
    if not HAVE_CUDA:
        # the Triton kernels on CPU tensors only in the interpreter: otherwise a clear error
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(RuntimeError, match="CUDA device"):
            gpu_batch(X)
