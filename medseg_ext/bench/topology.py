"""Topology family benchmark: Vietoris–Rips persistence and diagram distances vs the peers.

Cases (all on the same generated data, in this process, fixed seeds):

* ``vr-single``: one 185-point cloud in R³ (sliding window, dim 3, τ 1, of a random series of
  length 187, as the MCI paper's ROI series), maxdim 2: medseg_ext vs ripser.py vs giotto-ph
  (1 and 2 threads).
* ``vr-sphere``: 192 random points on S³ (Ripser's sphere_3_192 benchmark, regenerated), maxdim 2.
* ``vr-batch``: B such clouds (64 at ``--size small``, 512 ``paper``, 2,000 ``large``: the issue's
  case): ``vietoris_rips_batch`` (OpenMP over clouds) vs a loop of giotto-ph (2 threads per cloud)
  and of ripser.py (ripser.py on the first 8 clouds only, extrapolated to B: labelled "scaled").
* ``w-h0`` / ``w-h1``: one pair of H0 (184 finite points) / H1 diagrams: persim.wasserstein,
  GUDHI (POT backend), medseg_ext (H0: the exact DP; also the assignment solver alone).
* ``pr-matrix``: the PR matrix of one 34-ROI network (H0): persim over all ordered pairs, as the
  authors' code does, vs ``diagram_distance_matrix`` (unique pairs, OpenMP).
* ``pr-subject``: every PR matrix of one subject (6 networks × H0, H1, H2), medseg_ext only.

With ``--device cuda`` (``medseg-ext bench topology --device cuda``) only the GPU case runs:

* ``vr-gpu``: 10,000 such clouds (2,000 at ``--size small``), maxdim 2, on the GPU path of
  ``vietoris_rips_batch`` (Triton distances, H0 and the dimension-2 apparent-pair pass on the
  device, the C++ reduction of dimensions >= 1 on all CPU cores) vs giotto-ph with all CPU cores
  (``n_threads=-1``), the CPU path and the GPU path with the triangle pass left to the host, these
  timed on the first 500 clouds (200 small) and scaled to the full count; the GPU results are
  checked bit for bit against the CPU path on those clouds. Also maxdim 0 (all on the device).

Times: median wall seconds and the process CPU seconds per call (the CPU figure is robust on a
shared machine; for threaded rows it adds up the threads). ``×ours`` = peer / medseg_ext median.
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

from . import harness

PEERS = ("ripser", "giotto-ph", "persim", "gudhi", "POT")
# "large" is the batch case: 2,000 clouds × 185 points in R³, maxdim 2, 2 threads (minutes:
# the giotto-ph loop alone takes ~2–4 min on a 2-core machine). Not the default.
SIZES = {"small": {"batch": 64, "repeat_slow": 1}, "paper": {"batch": 512, "repeat_slow": 3},
         "large": {"batch": 2000, "repeat_slow": 1}}
# --device cuda: the GPU case (10,000 clouds) and the subsample the CPU rows time
GPU_SIZES = {"small": {"clouds": 2000, "peer_clouds": 200}, "paper": {"clouds": 10000, "peer_clouds": 500},
             "large": {"clouds": 10000, "peer_clouds": 500}}


def make_clouds(count: int, seed: int = 0, T: int = 187) -> np.ndarray:
    """(count, T − 2, 3) float64 sliding-window clouds of random series."""
    rng = np.random.default_rng(seed)
    series = rng.standard_normal((count, T))
    return np.stack([series[:, j: j + T - 2] for j in range(3)], axis=-1)


def _peer(name: str):
    try:
        if name == "ripser":
            from ripser import ripser
            return ripser
        if name == "giotto-ph":
            from gph import ripser_parallel
            return ripser_parallel
        if name == "persim":
            import persim
            return persim.wasserstein
        if name == "gudhi":
            import ot  # noqa: F401  (GUDHI's Wasserstein needs POT)
            from gudhi.wasserstein import wasserstein_distance
            return wasserstein_distance
    except Exception:  # noqa: BLE001
        return None
    return None


def make_vr_case(impl: str, n_clouds: int = 1, seed: int = 0) -> harness.Case:
    """Factory for the CaseSpec (peak memory is measured in a fresh process)."""
    import medseg_ext

    X = make_clouds(n_clouds, seed)
    if impl == "medseg_ext":
        if n_clouds == 1:
            return harness.Case(run=lambda: medseg_ext.vietoris_rips(X[0], maxdim=2))
        return harness.Case(run=lambda: medseg_ext.vietoris_rips_batch(X, maxdim=2))
    if impl == "ripser.py":
        fn = _peer("ripser")
        return harness.Case(run=lambda: [fn(x, maxdim=2)["dgms"] for x in X])
    if impl.startswith("giotto-ph"):
        fn = _peer("giotto-ph")
        threads = int(impl.split("(")[1].split()[0]) if "(" in impl else 1
        return harness.Case(run=lambda: [fn(x, maxdim=2, n_threads=threads)["dgms"] for x in X])
    raise ValueError(impl)


def _time(fn: Callable, repeat: int, warmup: int = 1) -> dict:
    r = harness.time_call(fn, warmup=warmup, repeat=repeat)
    return {"median_s": r["median"], "min_s": r["min"], "cpu_s": r["cpu_median"]}


def _vr_rows(size: str, repeat: int, measure_memory: bool, out) -> list:
    import medseg_ext

    rows = []
    have_ripser, have_gph = _peer("ripser") is not None, _peer("giotto-ph") is not None
    X1 = make_clouds(1)[0]
    ref_points = sum(len(d) for d in medseg_ext.vietoris_rips(X1, maxdim=2))
    single = [("medseg_ext", lambda: medseg_ext.vietoris_rips(X1, maxdim=2), repeat)]
    if have_ripser:
        rips_fn = _peer("ripser")
        single.append(("ripser.py", lambda: rips_fn(X1, maxdim=2), max(1, min(repeat, 3))))
    if have_gph:
        gph = _peer("giotto-ph")
        single.append(("giotto-ph (1 thread)", lambda: gph(X1, maxdim=2, n_threads=1), repeat))
        single.append(("giotto-ph (2 threads)", lambda: gph(X1, maxdim=2, n_threads=2), repeat))
    base = None
    for label, call, rep in single:
        t = _time(call, rep)
        row = {"case": "vr-single 185×3, maxdim 2", "impl": label, **t, "per_cloud_ms": t["median_s"] * 1e3,
               "check": f"{ref_points} diagram points"}
        if measure_memory and harness.cpu_peak_supported():
            mem = harness.peak_memory_cpu(harness.CaseSpec("medseg_ext.bench.topology", "make_vr_case",
                                                           {"impl": label, "n_clouds": 1}))
            row["peak_bytes"] = mem.get("peak_bytes")
            if "error" in mem:
                out(f"note: peak memory of {label}: {mem['error']}")
        base = base or row
        row["time_ratio"] = row["median_s"] / base["median_s"]
        rows.append(row)

    # Ripser's own benchmark shape, regenerated: 192 random points on the 3-sphere, maxdim 2
    S3 = np.random.default_rng(4).standard_normal((192, 4))
    S3 /= np.linalg.norm(S3, axis=1, keepdims=True)
    sphere = [("medseg_ext", lambda: medseg_ext.vietoris_rips(S3, maxdim=2), repeat)]
    if have_ripser:
        sphere.append(("ripser.py", lambda: rips_fn(S3, maxdim=2), 1))
    if have_gph:
        sphere.append(("giotto-ph (1 thread)", lambda: gph(S3, maxdim=2, n_threads=1), repeat))
    s3_points = sum(len(d) for d in medseg_ext.vietoris_rips(S3, maxdim=2))
    base = None
    for label, call, rep in sphere:
        t = _time(call, rep)
        row = {"case": "vr-sphere 192 pts on S³, maxdim 2", "impl": label, **t, "per_cloud_ms": t["median_s"] * 1e3,
               "check": f"{s3_points} diagram points"}
        base = base or row
        row["time_ratio"] = row["median_s"] / base["median_s"]
        rows.append(row)

    B = SIZES[size]["batch"]
    XB = make_clouds(B, seed=1)
    batch_rows = [("medseg_ext (batch, 2 threads)", lambda: medseg_ext.vietoris_rips_batch(XB, maxdim=2), B, 1)]
    if have_gph:
        gph = _peer("giotto-ph")
        batch_rows.append(("giotto-ph (loop, 2 threads)",
                           lambda: [gph(x, maxdim=2, n_threads=2) for x in XB], B, 1))
    if have_ripser:
        rips_fn = _peer("ripser")
        sub = min(8, B)
        batch_rows.append((f"ripser.py (loop; first {sub} clouds, scaled)",
                           lambda: [rips_fn(x, maxdim=2) for x in XB[:sub]], sub, 1))
    base = None
    for label, call, count, rep in batch_rows:
        t = _time(call, max(1, min(rep, repeat)), warmup=0 if count > 8 else 1)
        scale = B / count
        row = {"case": f"vr-batch {B}×(185×3), maxdim 2", "impl": label, "median_s": t["median_s"] * scale,
               "min_s": t["min_s"] * scale, "cpu_s": t["cpu_s"] * scale, "per_cloud_ms": t["median_s"] / count * 1e3}
        base = base or row
        row["time_ratio"] = row["median_s"] / base["median_s"]
        rows.append(row)
    return rows


def _diagram_rows(size: str, repeat: int, out) -> list:
    import torch

    import medseg_ext
    from medseg_ext import _dispatch
    from medseg_ext._tensor import desc

    rows = []
    X = make_clouds(2, seed=2)
    dg = [medseg_ext.vietoris_rips(x, maxdim=1) for x in X]
    persim_w, gudhi_w = _peer("persim"), _peer("gudhi")
    C_ = _dispatch.extension()
    for k in (0, 1):
        a = dg[0][k].numpy()
        b = dg[1][k].numpy()
        fa, fb = a[np.isfinite(a[:, 1])], b[np.isfinite(b[:, 1])]
        impls = [("medseg_ext" + (" (H0 DP)" if k == 0 else ""),
                  lambda: medseg_ext.wasserstein(a, b, q=1, ground="l2"))]
        if k == 0:
            ta, tb = torch.from_numpy(np.ascontiguousarray(fa)), torch.from_numpy(np.ascontiguousarray(fb))
            impls.append(("medseg_ext (assignment only)", lambda: C_.wasserstein_assignment_cpu(desc(ta), desc(tb), 1.0,
                                                                                                 "l2")))
        if persim_w is not None:
            impls.append(("persim", lambda: persim_w(a, b)))
        if gudhi_w is not None:
            impls.append(("gudhi (POT)", lambda: gudhi_w(fa, fb, order=1, internal_p=2)))
        base = None
        for label, call in impls:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = float(call())
                t = _time(call, repeat)
            row = {"case": f"w-h{k} ({len(fa)} vs {len(fb)} points), q=1, l2", "impl": label, **t,
                   "check": f"{value:.12g}"}
            base = base or row
            row["time_ratio"] = row["median_s"] / base["median_s"]
            rows.append(row)

    # PR matrix of one 34-ROI network (H0)
    n_roi = 34
    XR = make_clouds(n_roi, seed=3)
    batch = medseg_ext.vietoris_rips_batch(XR, maxdim=0)
    h0 = [d.numpy() for d in batch.dimension(0)]
    impls = [("medseg_ext (unique pairs, 2 threads)", lambda: medseg_ext.diagram_distance_matrix(h0, ground="l2"))]
    if persim_w is not None:
        def persim_matrix():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return np.array([[persim_w(h0[i], h0[j]) for j in range(n_roi)] for i in range(n_roi)])
        impls.append(("persim (all ordered pairs, as the authors' code)", persim_matrix))
    base = None
    ours = None
    for label, call in impls:
        M = np.asarray(call())
        if ours is None:
            ours = M
        t = _time(call, 1 if "persim" in label else repeat, warmup=0 if "persim" in label else 1)
        row = {"case": f"pr-matrix {n_roi}×{n_roi} H0, q=1, l2", "impl": label, **t,
               "check": f"max |Δ| vs ours {np.abs(M - ours).max():.1e}"}
        base = base or row
        row["time_ratio"] = row["median_s"] / base["median_s"]
        rows.append(row)

    # every PR matrix of one subject: 6 networks (160 ROIs) × H0, H1, H2 (ours only; persim would
    # need ~4,518 ordered pairs × 3 dimensions at the per-pair costs above)
    from ..pipelines.mci import NETWORKS
    subject = medseg_ext.vietoris_rips_batch(make_clouds(160, seed=5), maxdim=2)
    per_dim = [subject.dimension(k) for k in range(3)]

    def all_pr():
        for k in range(3):
            start = 0
            for n in NETWORKS.values():
                medseg_ext.diagram_distance_matrix(per_dim[k][start:start + n], q=1, ground="l2")
                start += n

    t = _time(all_pr, repeat)
    rows.append({"case": "pr-subject: 6 networks × H0–H2 (160 ROIs)", "impl": "medseg_ext (2 threads)", **t,
                 "time_ratio": 1.0, "check": "6,537 unique pairs"})
    return rows


def gpu_rows(clouds: int, peer_clouds: int, repeat: int, out, device: str = "cuda", n_points: int = 185) -> list:
    """The ``vr-gpu`` rows: the GPU path on ``clouds`` clouds of ``n_points`` points in R³ (maxdim 2,
    and maxdim 0) vs giotto-ph (n_threads=-1) and the CPU path on the first ``peer_clouds``, scaled.
    ``device`` is where the input tensor lives; the tests call this with tiny sizes on CPU tensors
    inside ``use_backend("triton")`` (the interpreter), the benchmark with "cuda"."""
    import torch

    import medseg_ext

    X = make_clouds(clouds, seed=7, T=n_points + 2)
    XD = torch.from_numpy(X).to(device)
    sub = min(peer_clouds, clouds)
    threads = int(medseg_ext.backends()["cpu"]["threads"] or 1)
    medseg_ext.vietoris_rips_batch(XD[:2], maxdim=2)  # compiles the Triton kernels outside the timing
    rows = []
    for md in (2, 0):
        def cpu_path(md=md):
            with medseg_ext.use_backend("cpu"):  # the CPU path even where the caller forces Triton
                return medseg_ext.vietoris_rips_batch(X[:sub], maxdim=md, device="cpu")

        gpu = medseg_ext.vietoris_rips_batch(XD[:sub], maxdim=md)
        cpu = cpu_path()
        same = all(torch.equal(gpu.values[k], cpu.values[k]) and torch.equal(gpu.offsets[k], cpu.offsets[k])
                   for k in range(md + 1))

        def host_triangles(md=md):
            # the GPU path with rips.cpp's own triangle pass instead of the device's (what the
            # device's apparent-pair pass saves)
            from ..topology import rips

            saved, rips._DEVICE_TRIANGLES = rips._DEVICE_TRIANGLES, False
            try:
                return medseg_ext.vietoris_rips_batch(XD[:sub], maxdim=md)
            finally:
                rips._DEVICE_TRIANGLES = saved

        impls = [(f"medseg_ext GPU path (Triton + C++ on {threads} threads)",
                  lambda md=md: medseg_ext.vietoris_rips_batch(XD, maxdim=md), clouds, max(1, min(repeat, 2)))]
        if md == 2:
            impls.append((f"medseg_ext GPU path, dimension-2 columns on the host (first {sub}, scaled)",
                          host_triangles, sub, 1))
            alt = host_triangles()
            same = same and all(torch.equal(alt.values[k], cpu.values[k]) for k in range(md + 1))
        impls.append((f"medseg_ext CPU path ({threads} threads; first {sub}, scaled)", cpu_path, sub, 1))
        gph = _peer("giotto-ph")
        if gph is not None:
            impls.append((f"giotto-ph (loop, n_threads=-1; first {sub}, scaled)",
                          lambda md=md: [gph(x, maxdim=md, n_threads=-1) for x in X[:sub]], sub, 1))
        base = None
        for label, call, count, rep in impls:
            t = _time(call, rep, warmup=0)  # the kernels were compiled above; the big calls are long
            scale = clouds / count
            row = {"case": f"vr-gpu {clouds}×({n_points}×3), maxdim {md}", "impl": label,
                   "median_s": t["median_s"] * scale, "min_s": t["min_s"] * scale, "cpu_s": t["cpu_s"] * scale,
                   "per_cloud_ms": t["median_s"] / count * 1e3,
                   "check": f"GPU == CPU path bit for bit on {sub} clouds: {same}"}
            base = base or row
            row["time_ratio"] = row["median_s"] / base["median_s"]
            rows.append(row)
            if label.startswith("giotto-ph"):
                out(f"vr-gpu maxdim {md}: giotto-ph (all cores) / GPU path = {row['time_ratio']:.2f}x "
                    f"(the issue asks for >= 10x at maxdim 2)")
    return rows


def _finish(rows: list, out) -> str:
    for r in rows:
        r["median_ms"] = r["median_s"] * 1e3
        r["cpu_ms"] = r["cpu_s"] * 1e3
        if r.get("peak_bytes") is not None:
            r["peak_MiB"] = r["peak_bytes"] / harness.MiB
    base_cpu = {}
    for r in rows:
        base_cpu.setdefault(r["case"], r["cpu_s"])
        r["cpu_ratio"] = r["cpu_s"] / base_cpu[r["case"]] if base_cpu[r["case"]] else None
    cols = ["case", "impl", "median_ms", "cpu_ms", "per_cloud_ms", "time_ratio", "cpu_ratio", "peak_MiB", "check"]
    table = harness.markdown_table(rows, cols)
    out(table)
    return table


def run(device: str = "cpu", size: str = "small", repeat: int = 5, measure_memory: bool = True, out=print) -> dict:
    """Runs the benchmark, prints the table, returns the results dict. ``device="cuda"``: the GPU
    case only (``vr-gpu``); a RuntimeError when torch sees no CUDA device."""
    if size not in SIZES:
        raise ValueError(f"size: expected one of {tuple(SIZES)}, got {size!r}")
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("device: 'cuda' asked for, but torch sees no CUDA device (the topology GPU "
                               "benchmark needs one; run without --device cuda for the CPU benchmark)")
        if _peer("giotto-ph") is None:
            out("note: peer giotto-ph is not importable; its rows are skipped")
        g = GPU_SIZES[size]
        rows = gpu_rows(g["clouds"], g["peer_clouds"], repeat, out, device=str(device))
        table = _finish(rows, out)
        out("time_ratio: median / the GPU path's median (> 1: the GPU path is faster); rows on a subsample are "
            "scaled to the full count. cpu_ms: process CPU time (sums threads).")
        return {"rows": rows, "table": table, "size": size, "device": str(device)}
    for name in ("ripser", "giotto-ph", "persim", "gudhi"):
        if _peer(name) is None:
            out(f"note: peer {name} is not importable; its rows are skipped")
    rows = _vr_rows(size, repeat, measure_memory, out) + _diagram_rows(size, repeat, out)
    table = _finish(rows, out)
    out("time_ratio: peer median / medseg_ext median (> 1: medseg_ext is faster). cpu_ms: process CPU time "
        "(sums threads); cpu_ratio: the same ratio in CPU time (robust on a loaded machine). Peak MiB: VmHWM "
        "growth of one call in a fresh process.")
    return {"rows": rows, "table": table, "size": size}


def main(argv=None) -> int:
    """``python -m medseg_ext.bench.topology [--device cpu|cuda] [--size small|paper|large] [--repeat N]
    [--no-memory]`` (the same as ``medseg-ext bench topology``; ``large`` runs the issue's 2,000-cloud
    batch; ``--device cuda`` the 10,000-cloud GPU case, 2,000 at ``--size small``)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m medseg_ext.bench.topology")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--size", choices=tuple(SIZES), default="small")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-memory", action="store_true")
    args = ap.parse_args(argv)
    try:
        run(args.device, size=args.size, repeat=args.repeat, measure_memory=not args.no_memory)
    except RuntimeError as exc:
        print(f"bench topology: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
