"""MSER family benchmark: medseg_ext.mser vs OpenCV (cv2.MSER_create) on the same generated images.

Cases (fixed seeds, in this process):

* ``1080p``: one 1920×1080 8-bit natural-looking image (multi-scale smoothed noise, filled
  shapes, mild noise), both polarities, OpenCV defaults. OpenCV with ``cv2.setNumThreads(1)``;
  medseg_ext ``preset="opencv"`` (identical regions) with 1 and 2 threads (the two polarities run
  in parallel), and the standard definition (``preset=None``, union-find tree) for information.
* ``batch``: B such images (different seeds), OpenCV in a loop vs one batched call on 2 threads.
* ``volume``: one 3-D 16-bit volume (smoothed noise + spheres), both polarities, 6-connectivity,
  medseg_ext only (no peer handles 3-D or 16-bit).
* VLFeat (when the C library libvl is installed: ``apt-get install libvlfeat1``; called through
  ``medseg_ext.bench._vlfeat_mser``): the same 1080p 8-bit image and an 8-bit 128³ volume (the
  16-bit volume rescaled; VLFeat is the only peer in 3-D), VLFeat's defaults, both polarities
  (VLFeat: one ``vl_mser_process`` on the image and one on ``255 - image``, as its MATLAB
  driver), single thread, vs ``preset="vlfeat"`` (identical regions: checked in the run, each
  VLFeat seed lies in one of our regions of the same polarity, level and area). ``×vlfeat`` =
  VLFeat wall time / ours. VLFeat returns seeds only, we also return the pixel lists; VLFeat is
  timed with one call (no warm-up; it takes seconds).

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
SIZES = {"small": {"batch": 64, "volume": 128, "vl_volume": 128, "repeat": 3},
         "paper": {"batch": 64, "volume": 256, "vl_volume": 128, "repeat": 5}}


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


def volume_u8(n: int, seed: int = 0) -> np.ndarray:
    """The :func:`volume` rescaled to 8 bits (VLFeat's MSER takes 8-bit data only)."""
    v = volume(n, seed).astype(np.float64)
    return np.round((v - v.min()) / (np.ptp(v) + 1e-9) * 255).astype(np.uint8)


def same_regions(res, vl) -> bool:
    """True when the medseg_ext result and the VLFeat result hold the same regions: equal counts
    and every VLFeat seed inside one of our regions with its polarity, level and area (a region
    is the component of its level set containing the seed, so this identifies it)."""
    if len(res) != len(vl["seeds"]):
        return False
    v, o = res.values.numpy(), res.offsets.numpy()
    by_key: dict = {}
    for r, key in enumerate(zip(res.polarity.tolist(), res.level.tolist(), res.area.tolist())):
        by_key.setdefault(key, []).append(r)
    used = set()
    for seed, pol, lev, area in zip(vl["seeds"], vl["polarity"], vl["level"], vl["area"]):
        hit = [r for r in by_key.get((int(pol), int(lev), int(area)), ()) if r not in used
               and np.any(v[o[r]:o[r + 1]] == seed)]
        if not hit:
            return False
        used.add(hit[0])
    return True


def _vlfeat_rows(M, img, cfg, repeat, row, out) -> None:
    """VLFeat (libvl) vs preset "vlfeat": the 1080p image and an 8-bit volume, one thread."""
    from . import _vlfeat_mser as V
    if not V.available():
        out(f"note: {V.unavailable_reason()}; VLFeat rows are skipped")
        return
    name = f"VLFeat {V.version()} (libvl)"
    n = cfg["vl_volume"]
    for case, data in (("1080p", img), (f"vol{n}u8", volume_u8(n))):
        t = _time(lambda: V.vl_mser(data, records=False), 1, warmup=0)
        vl = V.vl_mser(data)
        ref = t
        row(case, name, 1, t, len(vl["seeds"]))
        for threads in (1, 2):
            t = _time(lambda: M.mser(data, "vlfeat", num_threads=threads), repeat)
            res = M.mser(data, "vlfeat", num_threads=threads)
            row(case, "medseg_ext vlfeat preset", threads, t, len(res), ref, peer="vlfeat")
        out(f"  {case}: region sets identical to VLFeat: {same_regions(res, vl)}")


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

    def row(case, impl, threads, t, regions, ref=None, peer="cv2"):
        r = {"case": case, "impl": impl, "threads": threads, "median_ms": t["median_s"] * 1e3,
             "min_ms": t["min_s"] * 1e3, "cpu_ms": t["cpu_s"] * 1e3 if "cpu_s" in t else None,
             "regions": regions}
        if ref is not None:
            r[f"x_{peer}"] = ref["median_s"] / t["median_s"]
            if "cpu_s" in t and "cpu_s" in ref:
                r[f"x_{peer}_cpu"] = ref["cpu_s"] / t["cpu_s"]
        rows.append(r)
        out(f"  {case:8s} {impl:28s} threads={threads}  {r['median_ms']:9.1f} ms"
            + (f"  cpu {r['cpu_ms']:9.1f} ms" if r["cpu_ms"] is not None else "") + f"  regions={regions}"
            + (f"  ×{peer}={r[f'x_{peer}']:.2f}" if ref is not None else "")
            + (f"  ×{peer}(cpu)={r[f'x_{peer}_cpu']:.2f}" if f"x_{peer}_cpu" in r else ""))
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

    _vlfeat_rows(M, img, cfg, repeat, row, out)

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
                                            "x_cv2_cpu", "x_vlfeat", "x_vlfeat_cpu"])
    out(table)
    return {"rows": rows, "table": table, "size": size}
