"""Tiled component tree vs the serial CPU trees, one 1920×1080 image, 8- and 16-bit.

    python -m medseg_ext.bench._mser_tiled [--repeat 5] [--tiles 128,256,512] [--threads 1,2]
    python -m medseg_ext.bench._mser_tiled --device cuda [--batch 16]

(a script, not a ``medseg-ext bench`` family: the leading underscore keeps it out of that list).

Times ``component_tree`` (tree + node arrays + stability, max-tree, 4-connectivity) by
``algorithm="flood"`` and ``"union_find"`` (single-threaded) and ``"tiled"`` per tile size and
thread count. Reported: min wall ms and min process CPU ms (``time.process_time``, all threads of
this process) over the repeats. On a shared machine the CPU time is the stable number; it does not
show a multi-thread speed-up (it adds the threads up), the wall time does, when cores are free.
The image: a sum of Gaussian blobs (sizes 10–150 px) plus sensor noise, fixed seed.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def test_image(h: int = 1080, w: int = 1920, bits: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    f = np.zeros((h, w))
    for _ in range(40):
        cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(10, 150)
        f += rng.uniform(-1, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    f = (f - f.min()) / np.ptp(f)
    if bits == 8:
        return np.clip(f * 230 + rng.normal(0, 6, (h, w)), 0, 255).astype(np.uint8)
    return np.clip(f * 60000 + rng.normal(0, 800, (h, w)), 0, 65535).astype(np.uint16)


def _time(fn, repeat: int):
    wall, cpu = [], []
    fn()  # warm-up
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return 1e3 * min(wall), 1e3 * min(cpu)


def run(repeat: int = 5, tiles=(128, 256, 512), threads=(1, 2)):
    from medseg_ext import mser as M

    rows = []
    for bits in (8, 16):
        img = test_image(bits=bits)
        for alg in ("flood", "union_find"):
            w, c = _time(lambda: M.component_tree(img, algorithm=alg), repeat)
            rows.append((f"{bits}-bit", alg, "-", 1, w, c))
        for t in tiles:
            for th in threads:
                w, c = _time(lambda: M.component_tree(img, algorithm="tiled", tile=t, num_threads=th), repeat)
                rows.append((f"{bits}-bit", "tiled", f"{t}x{t}", th, w, c))
    print("| image | algorithm | tile | threads | wall ms (min) | CPU ms (min) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.0f} | {r[5]:.0f} |")
    return rows


def run_cuda(repeat: int = 5, batch: int = 16):
    """Per-pixel tiled trees (``tiled_parents``) of a batch of 1080p images: the CUDA driver against the
    CPU drivers (tiled on all threads, and flood's full component tree per image) on the same images,
    and the parent arrays checked equal. Prints ms per image and the ratios."""
    import torch

    from medseg_ext import mser as M
    from medseg_ext.mser.tiled import tiled_parents

    if not torch.cuda.is_available():
        raise RuntimeError("device: 'cuda' asked for, but torch sees no CUDA device")
    print(f"GPU {torch.cuda.get_device_name()}; CPU threads {torch.get_num_threads()}; batch {batch} × 1920×1080")
    print("| image | impl | ms per image (min) | ×cuda |")
    print("|---|---|---|---|")
    for bits in (8, 16):
        imgs = np.stack([test_image(bits=bits, seed=i) for i in range(batch)])
        gpu = torch.from_numpy(imgs.astype(np.int32) if bits == 16 else imgs).cuda()

        def on_gpu():
            out = tiled_parents(gpu, batch=True)
            torch.cuda.synchronize()
            return out

        par_gpu, _ = on_gpu()
        par_cpu, _ = tiled_parents(imgs, batch=True)
        if not torch.equal(par_gpu.cpu(), par_cpu):
            print(f"note: {bits}-bit: the CUDA parents differ from the CPU parents")
        g = _time(on_gpu, repeat)[0] / batch
        c = _time(lambda: tiled_parents(imgs, batch=True), max(1, repeat // 2))[0] / batch
        f = _time(lambda: M.component_tree(imgs[0], algorithm="flood"), max(1, repeat // 2))[0]
        for name, ms in (("cuda tiled", g), ("cpu tiled (all threads)", c), ("cpu flood (1 image)", f)):
            print(f"| {bits}-bit | {name} | {ms:.2f} | {ms / g:.1f} |")
    _mser_rows(batch, repeat)


def _mser_rows(batch: int, repeat: int):
    """Whole mser() of a batch of 8-bit 1080p images, standard definition (both polarities), on the GPU
    (tiled.mser_cuda) against the CPU kernels and OpenCV's loop (its own definition and defaults)."""
    import torch

    from medseg_ext import mser as M
    from medseg_ext.mser import MSERResult

    imgs = np.stack([test_image(bits=8, seed=i) for i in range(batch)])
    gpu = torch.from_numpy(imgs).cuda()

    def on_gpu(preset):
        out = M.mser(gpu, preset, batch=True)
        torch.cuda.synchronize()
        return out

    def checked(preset):
        """The GPU result of ``preset`` and whether it equals the CPU's, field for field."""
        got, want = on_gpu(preset), M.mser(imgs, preset, batch=True)
        same = all(torch.equal(getattr(got, k).cpu(), getattr(want, k)) for k in MSERResult._FIELDS)
        return got, "identical to" if same else "DIFFERS from"

    got, same = checked(None)
    print(f"\nmser(preset=None) of {batch} × 1920×1080 8-bit: {len(got)} regions; GPU result {same} the CPU's")
    print("| impl | ms per image (min) | ×gpu |")
    print("|---|---|---|")
    g = _time(lambda: on_gpu(None), repeat)[0] / batch
    rows = [("medseg_ext mser, GPU", g),
            ("medseg_ext mser, CPU (all threads)", _time(lambda: M.mser(imgs, None, batch=True), 1)[0] / batch)]
    try:
        import cv2

        det = cv2.MSER_create()
        rows.append(("cv2.MSER_create() loop (its defaults)", _time(lambda: [det.detectRegions(im) for im in imgs],
                                                                      1)[0] / batch))
    except ImportError:
        pass
    for name, ms in rows:
        print(f"| {name} | {ms:.2f} | {ms / g:.1f} |")

    # the vlfeat preset: its diversity walk is the one-block kernel (vlfeat_select_cuda.cu)
    got, same = checked("vlfeat")
    g = _time(lambda: on_gpu("vlfeat"), repeat)[0] / batch
    c = _time(lambda: M.mser(imgs, "vlfeat", batch=True), 1)[0] / batch
    print(f"\nmser(preset='vlfeat') of {batch} × 1920×1080 8-bit: {len(got)} regions, GPU result {same} the CPU's; "
          f"GPU {g:.2f} ms, CPU {c:.2f} ms per image ({c / g:.1f}×)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tiles", default="128,256,512")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--batch", type=int, default=16, help="images per CUDA call")
    a = ap.parse_args(argv)
    if a.device == "cuda":
        run_cuda(a.repeat, a.batch)
    else:
        run(a.repeat, tuple(int(x) for x in a.tiles.split(",")), tuple(int(x) for x in a.threads.split(",")))


if __name__ == "__main__":
    main()
