"""Specular-highlight pipeline of Bappy et al. (seeds-part2.md §5.2–5.6) on generated frames:
RGB endoscopy-like frames with planted specular highlights and white tissue -> grey (Eq. 1) ->
MMSER (one batched call) ∪ IS_en (Eqs. 5–7) = S_R (Eq. 8) -> OpenCV Navier–Stokes inpainting
(Eq. 9, [10] = Bertalmio 2001) -> pixel accuracy, precision, recall, F1, Jaccard against the
planted highlights (per frame, averaged, and pooled).

    medseg-ext pipeline specular [--frames 16] [--height 288] [--width 384] [--delta 5]
                                 [--a-max 400] [--t-h 20] [--out DIR]

Frames: pink/red tissue with smooth shading, darker vessels and sensor noise; K highlights per
frame (white, saturated core with a soft halo; truth = the pixels at least 3/4 of the way to white);
one large white-tissue patch per frame (bright, unsaturated, not specular: the IS mask fires on
it and the IS_en area filter must remove it). The feature matching of the paper (§5.7) is not
part of this pipeline.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import List, Optional, Tuple

import numpy as np

# a pixel belongs to a planted highlight when its colour is at least this far (fraction) from the
# tissue colour towards white: the specular core plus the inner part of its halo
TRUTH_LEVEL = 0.75


def generate(n: int, h: int, w: int, seed: int = 0, k: Tuple[int, int] = (4, 10)) -> Tuple[np.ndarray, np.ndarray]:
    """(n, h, w, 3) uint8 frames and (n, h, w) bool planted-highlight truth."""
    import cv2
    rng = np.random.default_rng(seed)
    frames = np.zeros((n, h, w, 3), np.uint8)
    truth = np.zeros((n, h, w), bool)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    for i in range(n):
        low = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), max(h, w) / 10)
        low = (low - low.mean()) / (low.std() + 1e-9)
        vign = 1.0 - 0.45 * (((yy - h / 2) / h) ** 2 + ((xx - w / 2) / w) ** 2) * 4
        base = np.clip(0.55 + 0.12 * low, 0.2, 0.9) * vign
        r = 220 * base
        g = 110 * base
        b = 100 * base
        # vessels: dark thin smooth curves
        ves = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(2, 5))):
            pts = np.cumsum(rng.normal(0, 12, (12, 2)), axis=0) + rng.uniform([0, 0], [w, h])
            cv2.polylines(ves, [pts.astype(np.int32)], False, 1.0, int(rng.integers(1, 3)))
        ves = cv2.GaussianBlur(ves, (0, 0), 1.2)
        r, g, b = r * (1 - 0.35 * ves), g * (1 - 0.45 * ves), b * (1 - 0.35 * ves)
        img = np.stack([r, g, b], -1)
        # white tissue patch: bright, low saturation, large (not specular)
        cy, cx = rng.uniform(0.2 * h, 0.8 * h), rng.uniform(0.2 * w, 0.8 * w)
        ay, ax = rng.uniform(10, 18), rng.uniform(14, 26)
        wt = np.exp(-(((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2) ** 2)
        img = img * (1 - 0.8 * wt[..., None]) + 0.8 * wt[..., None] * np.array([205.0, 195.0, 190.0])
        # specular highlights: saturated white core, soft halo
        for _ in range(int(rng.integers(*k))):
            cy, cx = rng.uniform(5, h - 5), rng.uniform(5, w - 5)
            if wt[int(cy), int(cx)] > 0.05:
                continue
            sy, sx = rng.uniform(1.2, 5.0), rng.uniform(1.2, 5.0)
            th = rng.uniform(0, np.pi)
            dy, dx = yy - cy, xx - cx
            u = (dx * np.cos(th) + dy * np.sin(th)) / sx
            v = (-dx * np.sin(th) + dy * np.cos(th)) / sy
            prof = np.clip(1.6 * np.exp(-0.5 * (u * u + v * v)), 0, 1)
            img = img * (1 - prof[..., None]) + prof[..., None] * 255.0
            truth[i] |= prof >= TRUTH_LEVEL
        img = img + rng.normal(0, 1.5, img.shape)
        frames[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return frames, truth


def metrics(pred: np.ndarray, truth: np.ndarray) -> dict:
    tp = float((pred & truth).sum())
    fp = float((pred & ~truth).sum())
    fn = float((~pred & truth).sum())
    tn = float((~pred & ~truth).sum())
    acc = (tp + tn) / max(tp + tn + fp + fn, 1.0)
    prec = tp / (tp + fp) if tp + fp else 1.0
    rec = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    jac = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    return {"accuracy": acc, "precision": prec, "recall": rec, "f1": f1, "jaccard": jac}


def _progress(it, total, desc):
    try:
        from tqdm import tqdm
        return tqdm(it, total=total, desc=desc, leave=False)
    except Exception:  # noqa: BLE001
        return it


def run(frames: np.ndarray, *, delta: int, a_max: int, t_h: int, min_area: int = 1, connectivity: int = 8,
        kind: str = "l1_sorted", inpaint: bool = True, verbose: bool = True, min_level: float = 0.0,
        dilate: int = 2):
    """S_R masks (n, h, w), their parts and the inpainted frames."""
    import cv2

    from ..mser import grey_u8, is_enhanced, is_mask, mser

    n = frames.shape[0]
    grey = grey_u8(frames)
    t0 = time.perf_counter()
    res = mser(grey, "mmser", delta=delta, min_area=min_area, max_area=max(a_max - 1, 0), connectivity=connectivity,
               batch=True)
    if min_level > 0:
        # [D] "only maximum intensity" regions: threshold level >= min_level · (the frame's max grey)
        gmax = grey.reshape(n, -1).max(1).astype(np.float64)
        res = res.subset(res.level.numpy() >= min_level * gmax[res.image_index.numpy()])
    m_rs = res.union_mask().numpy()
    t_mmser = time.perf_counter() - t0
    isen = np.zeros_like(m_rs)
    out = np.empty_like(frames)
    t0 = time.perf_counter()
    for i in _progress(range(n), n, "IS_en + inpaint"):
        isen[i] = is_enhanced(is_mask(frames[i], kind), t_h, connectivity)
        if inpaint:
            sr = (m_rs[i] | isen[i]).astype(np.uint8) * 255
            if dilate > 0:  # the halo around a highlight is inpainted too
                sr = cv2.dilate(sr, np.ones((3, 3), np.uint8), iterations=dilate)
            out[i] = cv2.inpaint(frames[i], sr, 3, cv2.INPAINT_NS)
        if verbose and not _has_tqdm() and (i + 1) % max(1, n // 4) == 0:
            print(f"  frame {i + 1}/{n}", flush=True)
    t_rest = time.perf_counter() - t0
    return m_rs | isen, m_rs, isen, out if inpaint else None, {"mmser_s": t_mmser, "is_en_inpaint_s": t_rest,
                                                               "regions": len(res)}


def _has_tqdm() -> bool:
    try:
        import tqdm  # noqa: F401
        return True
    except Exception:  # noqa: BLE001
        return False


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="medseg-ext pipeline specular", description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--height", type=int, default=288)
    p.add_argument("--width", type=int, default=384)
    p.add_argument("--delta", type=int, default=5, help="MMSER Δt (not reported by the paper)")
    p.add_argument("--a-max", type=int, default=400, help="MMSER A_max in pixels (A < A_max; not reported)")
    p.add_argument("--min-area", type=int, default=3)
    p.add_argument("--t-h", type=int, default=20, help="IS_en area threshold t_h (paper: 20)")
    p.add_argument("--saturation", default="l1_sorted", choices=("l1_sorted", "paper_rgb"))
    p.add_argument("--min-level", type=float, default=0.75,
                   help="[D] keep MMSER regions whose grey level >= this fraction of the frame's maximum (0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-inpaint", action="store_true")
    p.add_argument("--dilate", type=int, default=2, help="3x3 dilations of S_R before inpainting (metrics use S_R)")
    p.add_argument("--out", default=None, help="directory for overlays (PNG) and masks (.npz)")
    args = p.parse_args(argv)
    if args.frames < 1 or args.height < 8 or args.width < 8:
        p.error("need at least one frame of at least 8 x 8 pixels")
    print(f"generating {args.frames} frames {args.height}x{args.width} ...", flush=True)
    frames, truth = generate(args.frames, args.height, args.width, args.seed)
    sr, m_rs, isen, inp, timing = run(frames, delta=args.delta, a_max=args.a_max, t_h=args.t_h,
                                      min_area=args.min_area, kind=args.saturation, inpaint=not args.no_inpaint,
                                      min_level=args.min_level, dilate=args.dilate)
    rows = {name: [metrics(m[i], truth[i]) for i in range(len(frames))]
            for name, m in (("MMSER", m_rs), ("IS_en", isen), ("S_R", sr))}
    print(f"MMSER: {timing['regions']} regions in {timing['mmser_s']:.3f} s (batched); "
          f"IS_en + inpainting {timing['is_en_inpaint_s']:.3f} s")
    print(f"{'mask':6s} {'acc':>7s} {'prec':>7s} {'rec':>7s} {'F1':>7s} {'Jacc':>7s}   (mean over frames; pooled F1)")
    for name, r in rows.items():
        mean = {k: float(np.mean([x[k] for x in r])) for k in r[0]}
        pooled = metrics({"MMSER": m_rs, "IS_en": isen, "S_R": sr}[name], truth)
        print(f"{name:6s} {mean['accuracy']:7.4f} {mean['precision']:7.4f} {mean['recall']:7.4f} {mean['f1']:7.4f} "
              f"{mean['jaccard']:7.4f}   pooled F1 {pooled['f1']:.4f}")
    if inp is not None:
        before = float(np.mean(frames[truth].astype(float)))
        after = float(np.mean(inp[truth].astype(float)))
        print(f"mean intensity on the planted highlights: {before:.1f} before, {after:.1f} after inpainting")
    if args.out:
        import cv2
        os.makedirs(args.out, exist_ok=True)
        np.savez_compressed(os.path.join(args.out, "specular_masks.npz"), sr=sr, mmser=m_rs, is_en=isen, truth=truth)
        for i in range(len(frames)):
            ov = frames[i].copy()
            ov[sr[i] & truth[i]] = (0, 255, 0)
            ov[sr[i] & ~truth[i]] = (255, 0, 0)
            ov[~sr[i] & truth[i]] = (0, 0, 255)
            tiles = [frames[i], ov] + ([inp[i]] if inp is not None else [])
            cv2.imwrite(os.path.join(args.out, f"frame{i:03d}.png"), cv2.cvtColor(np.concatenate(tiles, 1),
                                                                                 cv2.COLOR_RGB2BGR))
        print(f"overlays (green TP, red FP, blue FN) and masks in {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
