"""MSER family benchmark: medseg_ext.mser vs OpenCV (cv2.MSER_create) on the same generated images.

Cases (fixed seeds, in this process):

* ``1080p``: one 1920×1080 8-bit natural-looking image (multi-scale smoothed noise, filled
  shapes, mild noise), both polarities, OpenCV defaults. OpenCV with ``cv2.setNumThreads(1)``;
  medseg_ext ``preset="opencv"`` (identical regions) with 1 and 2 threads (the two polarities run
  in parallel), and the standard definition (``preset=None``, union-find tree) for information.
* ``batch``: B such images (different seeds), OpenCV in a loop vs one batched call on 2 threads.
* ``volume``: one 3-D 16-bit volume (smoothed noise + spheres), both polarities, 6-connectivity,
  medseg_ext only (no peer handles 3-D or 16-bit).

Times: median wall milliseconds and median process CPU milliseconds (``time.process_time``: the
CPU time of all threads of this process, so it is insensitive to other load on a shared machine
but does not show a multi-thread speed-up); ``×cv2`` = OpenCV wall time / medseg_ext wall time,
``×cv2 cpu`` the same ratio of CPU times. OpenCV ≥ 5.0.0 is called
with ``min_diversity=0`` because its grey path compares the variation with minDiversity (OpenCV
issue #29652); 4.x ignores minDiversity there, so the regions are the same as 4.x defaults.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from . import harness

PEERS = ("opencv-python-headless",)
SIZES = {"small": {"batch": 64, "volume": 128, "repeat": 3}, "paper": {"batch": 64, "volume": 256, "repeat": 5}}


def natural_image(h: int = 1080, w: int = 1920, seed: int = 0) -> np.ndarray:
    """8-bit image with structure at several scales, flat shapes and sensor noise."""
    import cv2
    rng = np.random.default_rng(seed)
    f = np.zeros((h, w), np.float32)
    for sigma, weight in ((48, 1.0), (16, 0.5), (4, 0.25)):
        g = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), sigma)
        f += weight * g / (g.std() + 1e-9)
    f = (f - f.min()) / (np.ptp(f) + 1e-9) * 200 + 20
    img = f.astype(np.uint8)
    for _ in range(60):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        v = int(rng.integers(0, 256))
        if rng.random() < 0.5:
            cv2.circle(img, c, int(rng.integers(4, 60)), v, -1)
        else:
            d = (int(rng.integers(6, 120)), int(rng.integers(6, 120)))
            cv2.rectangle(img, c, (c[0] + d[0], c[1] + d[1]), v, -1)
    return cv2.add(img, rng.integers(0, 4, (h, w)).astype(np.uint8))


def volume(n: int, seed: int = 0) -> np.ndarray:
    """(n, n, n) uint16 volume: smoothed noise (CT-like range) with bright and dark spheres."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n, n)).astype(np.float32)
    for ax in range(3):  # separable box smoothing, 3 passes
        for _ in range(3):
            x = (np.roll(x, 1, ax) + x + np.roll(x, -1, ax)) / 3
    x = (x - x.min()) / (np.ptp(x) + 1e-9) * 3000 + 1000
    zz, yy, xx = np.ogrid[0:n, 0:n, 0:n]
    for _ in range(12):
        c = rng.uniform(0, n, 3)
        r = rng.uniform(n / 40, n / 8)
        inside = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r
        x[inside] = rng.uniform(0, 4000)
    return np.clip(x, 0, 65535).astype(np.uint16)


def _cv2_mser(cv2):
    md = 0.0 if int(cv2.__version__.split(".")[0]) >= 5 else 0.2
    return cv2.MSER_create(5, 60, 14400, 0.25, md)


def _time(fn, repeat: int, warmup: int = 1) -> dict:
    """Median/min wall seconds and median process CPU seconds of fn() (after warm-up calls)."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"median_s": float(np.median(wall)), "min_s": min(wall), "cpu_s": float(np.median(cpu))}


def run(device: str = "cpu", size: str = "small", repeat: Optional[int] = None, measure_memory: bool = False,
        out=print) -> dict:
    """Runs the benchmark, prints the table, returns the results dict (CPU only: no GPU path yet)."""
    from .. import mser as M
    if size not in SIZES:
        raise ValueError(f"size: expected one of {tuple(SIZES)}, got {size!r}")
    cfg = SIZES[size]
    repeat = cfg["repeat"] if repeat is None else repeat
    if str(device).startswith("cuda"):
        out("note: the mser family has no GPU path yet; running the CPU benchmark")
    try:
        import cv2
    except Exception:  # noqa: BLE001
        cv2 = None
        out("note: opencv (cv2) is not importable; peer rows are skipped")
    if measure_memory:
        out("note: peak-memory measurement is not implemented for the mser benchmark")
    rows = []

    def row(case, impl, threads, t, regions, ref=None):
        r = {"case": case, "impl": impl, "threads": threads, "median_ms": t["median_s"] * 1e3,
             "min_ms": t["min_s"] * 1e3, "cpu_ms": t["cpu_s"] * 1e3 if "cpu_s" in t else None,
             "regions": regions}
        if ref is not None:
            r["x_cv2"] = ref["median_s"] / t["median_s"]
            if "cpu_s" in t and "cpu_s" in ref:
                r["x_cv2_cpu"] = ref["cpu_s"] / t["cpu_s"]
        rows.append(r)
        out(f"  {case:8s} {impl:28s} threads={threads}  {r['median_ms']:9.1f} ms"
            + (f"  cpu {r['cpu_ms']:9.1f} ms" if r["cpu_ms"] is not None else "") + f"  regions={regions}"
            + (f"  ×cv2={r['x_cv2']:.2f}" if ref is not None else "")
            + (f"  ×cv2(cpu)={r['x_cv2_cpu']:.2f}" if "x_cv2_cpu" in r else ""))
        return r

    img = natural_image()
    ref = None
    if cv2 is not None:
        cv2.setNumThreads(1)
        m = _cv2_mser(cv2)
        t = _time(lambda: m.detectRegions(img), repeat)
        ref = t
        row("1080p", f"cv2 {cv2.__version__}", 1, t, len(m.detectRegions(img)[0]))
    for threads in (1, 2):
        t = _time(lambda: M.mser(img, "opencv", num_threads=threads), repeat)
        row("1080p", "medseg_ext opencv preset", threads, t, len(M.mser(img, "opencv")), ref)
    t = _time(lambda: M.mser(img, None, num_threads=2), repeat)
    row("1080p", "medseg_ext standard (tree)", 2, t, len(M.mser(img, None)), ref)

    B = cfg["batch"]
    imgs = np.stack([natural_image(seed=s) for s in range(B)])
    ref_b = None
    if cv2 is not None:
        m = _cv2_mser(cv2)
        t = _time(lambda: [m.detectRegions(x) for x in imgs], 1, warmup=0)
        ref_b = t
        row(f"batch{B}", "cv2 loop", 1, t, None)
    nb = len(M.mser(imgs[:2], "opencv", batch=True, num_threads=2))  # warm-up (and a count)
    for threads in (1, 2):
        t = _time(lambda: M.mser(imgs, "opencv", batch=True, num_threads=threads), 1, warmup=0)
        nb = len(M.mser(imgs, "opencv", batch=True, num_threads=threads)) if threads == 2 else nb
        row(f"batch{B}", "medseg_ext opencv preset", threads, t, nb if threads == 2 else None, ref_b)

    n = cfg["volume"]
    vol = volume(n)
    t0 = time.perf_counter()
    res = M.mser(vol, None, connectivity=6, delta=50, min_area=60, max_area=0.01, num_threads=2)
    t = {"median_s": time.perf_counter() - t0, "min_s": time.perf_counter() - t0}
    row(f"vol{n}", "medseg_ext standard 16-bit 3-D", 2, t, len(res))

    table = harness.markdown_table(rows, ["case", "impl", "threads", "median_ms", "min_ms", "cpu_ms", "regions", "x_cv2",
                                            "x_cv2_cpu"])
    out(table)
    return {"rows": rows, "table": table, "size": size}
