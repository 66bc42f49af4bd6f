"""CAM quality pipeline (seeds-part1.md §8): SVD-Grad-CAM vs Grad-CAM and the other CAM methods on a
generated radiograph-like binary data set with a small DenseNet-style classifier trained for a few
steps (no weights can be downloaded), scored with the paper's Table 2 columns.

    medseg-ext pipeline cam_eval [--train 256] [--val 48] [--steps 80] [--size 64] [--methods gradcam,...]
                                 [--out maps.npz] [--overlays DIR]

Images: a smooth, bone-like bright band on a dark background with noise; "abnormal" images
(label 1) carry a small bright elliptical blob. The classifier (``medseg_ext.models.cam_cnn``, two
softmax outputs instead of the paper's one sigmoid, so that "the predicted class's score" is defined
for normal images too) is trained with the paper's focal loss (α 0.25, γ 2) and Adam, and explained at its last BN+ReLU
(``final_relu``, followed by GAP + linear: the paper's layer) and at ``block2`` (before the final
BN+ReLU, where the gradient varies spatially). At ``final_relu`` SVD-Grad-CAM equals Grad-CAM and
CAM exactly (§8.8); the pipeline prints that check. Target: the predicted class's probability (after
the final activation, as the notebook).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import List, Optional

import numpy as np
import torch


def generate(count: int, size: int, seed: int):
    """(count, 1, size, size) float32 images in [0, 1], labels (count,) and lesion masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    imgs = np.zeros((count, 1, size, size), np.float32)
    masks = np.zeros((count, size, size), bool)
    labels = (np.arange(count) % 2).astype(np.int64)
    rng.shuffle(labels)
    for i in range(count):
        ang = rng.uniform(-0.6, 0.6)
        off = rng.uniform(0.35, 0.65)
        d = (xx - off) * np.cos(ang) + (yy - 0.5) * np.sin(ang)
        band = np.exp(-(d / rng.uniform(0.08, 0.14)) ** 2)
        img = 0.15 + 0.55 * band + 0.05 * rng.standard_normal((size, size))
        if labels[i]:
            cy, cx = rng.uniform(0.25, 0.75, 2)
            r = rng.uniform(0.05, 0.09)
            blob = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
            img = img + 0.45 * blob
            masks[i] = blob
        imgs[i, 0] = np.clip(img, 0, 1)
    return torch.from_numpy(imgs), torch.from_numpy(labels), torch.from_numpy(masks)


def focal_loss(logits: torch.Tensor, y: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Binary focal loss (α for the positive class, 1 − α for the negative) on 2-class softmax logits."""
    logp = torch.log_softmax(logits, 1).gather(1, y[:, None])[:, 0]
    pt = logp.exp()
    at = torch.where(y > 0, torch.full_like(pt, alpha), torch.full_like(pt, 1 - alpha))
    return -(at * (1 - pt) ** gamma * logp).mean()


def train(model, x, y, steps: int, batch: int, lr: float, seed: int, log) -> float:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    loss = torch.tensor(0.0)
    for s in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        loss = focal_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (s + 1) % max(1, steps // 5) == 0:
            log(f"  train step {s + 1}/{steps}: focal loss {loss.item():.4f}")
    model.eval()
    return float(loss.detach())


METHODS = [  # (row name, layer, method, options)
    ("CAM", "final_relu", "cam", {}),
    ("Grad-CAM", "final_relu", "gradcam", {}),
    ("SVD-Grad-CAM (usv, n=1)", "final_relu", "svdgradcam", {}),
    ("Grad-CAM++", "final_relu", "gradcam++", {}),
    ("Smooth-Grad-CAM", "final_relu", "smoothgradcam", dict(smooth_samples=4)),
    ("Eigen-CAM", "final_relu", "eigencam", {}),
    ("Ablation-CAM", "final_relu", "ablationcam", {}),
    ("Score-CAM", "final_relu", "scorecam", {}),
    ("Grad-CAM @block2", "block2", "gradcam", {}),
    ("SVD-Grad-CAM usv n=1 @block2", "block2", "svdgradcam", {}),
    ("SVD-Grad-CAM uv n=1 @block2", "block2", "svdgradcam", dict(procedure="uv")),
]


def save_overlays(folder: str, images: np.ndarray, labels: np.ndarray, maps: dict) -> List[str]:
    """One PNG per method: a row of images (grey) with the map as a translucent heat map on top."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("--overlays needs matplotlib (pip install medseg_ext[plot])") from e
    os.makedirs(folder, exist_ok=True)
    paths = []
    for name, m in maps.items():
        n = images.shape[0]
        fig, axes = plt.subplots(1, n, figsize=(1.6 * n, 1.9), squeeze=False)
        for i, ax in enumerate(axes[0]):
            ax.imshow(images[i].reshape(images.shape[-2:]), cmap="gray")
            ax.imshow(m[i], cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
            ax.set_title("abnormal" if labels[i] == 1 else "normal", fontsize=7)
            ax.axis("off")
        fig.suptitle(name, fontsize=9)
        path = os.path.join(folder, re.sub(r"[^A-Za-z0-9@+=-]+", "_", name).strip("_") + ".png")
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="medseg-ext pipeline cam_eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=256)
    ap.add_argument("--val", type=int, default=48)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cam-batch", type=int, default=64, help="rows per chunk for Score-/Ablation-CAM")
    ap.add_argument("--out", default=None, help="save the maps of every method (npz)")
    ap.add_argument("--overlays", default=None, metavar="DIR",
                    help="save a PNG per method: the first 8 val images with the map overlaid (needs matplotlib)")
    ap.add_argument("--methods", default=None,
                    help="comma-separated method keys to run (e.g. gradcam,svdgradcam; default: all rows)")
    args = ap.parse_args(argv)
    for k in ("train", "val", "size", "steps", "batch", "cam_batch"):
        if getattr(args, k) < 1:
            ap.error(f"--{k.replace('_', '-')} must be >= 1")

    from ..cam import ClassTarget, compute_cam
    from ..cam import metrics as M
    from ..models.cam_cnn import TinyDenseNet

    def log(msg):
        print(msg, flush=True)

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    xtr, ytr, _ = generate(args.train, args.size, args.seed)
    xva, yva, mva = generate(args.val, args.size, args.seed + 1)
    model = TinyDenseNet(classes=2)
    log(f"data: {args.train} train / {args.val} val images {args.size}², DenseNet-style model "
        f"({sum(p.numel() for p in model.parameters())} parameters, {model.channels} channels at final_relu)")
    train(model, xtr, ytr, args.steps, args.batch, args.lr, args.seed, log)
    with torch.no_grad():
        acc = float((model(xva).argmax(1) == yva).float().mean())
    log(f"val accuracy {100 * acc:.1f}%")
    target = ClassTarget(None, "softmax")  # the predicted class, its probability
    kw = dict(target=target, size=None)
    g = compute_cam(model, xva, "final_relu", "gradcam", **kw).maps
    s = compute_cam(model, xva, "final_relu", "svdgradcam", **kw).maps
    c = compute_cam(model, xva, "final_relu", "cam", target=ClassTarget(None), size=None).maps
    gl = compute_cam(model, xva, "final_relu", "gradcam", target=ClassTarget(None), size=None).maps
    log(f"GAP-head check at final_relu: max|SVD-Grad-CAM − Grad-CAM| = {float((s - g).abs().max()):.2e}; "
        f"with a logit target max|CAM − Grad-CAM| = {float((c - gl).abs().max()):.2e}")

    todo = METHODS
    if args.methods:
        keys = {k.strip() for k in args.methods.split(",") if k.strip()}
        unknown = keys - {m[2] for m in METHODS}
        if unknown:
            ap.error(f"--methods: unknown {sorted(unknown)}; choose from {sorted({m[2] for m in METHODS})}")
        todo = [m for m in METHODS if m[2] in keys]
    rows, saved = [], {}
    batches = [xva[i:i + 16] for i in range(0, xva.shape[0], 16)]
    for i, (name, layer, method, opts) in enumerate(todo):
        tm = time.perf_counter()
        row = M.evaluate(model, batches, layer, method, target, batch_size=args.cam_batch, **opts)
        # pointing game on abnormal images: the CAM's arg-max inside the lesion
        maps = compute_cam(model, xva, layer, method, target, batch_size=args.cam_batch, **opts).maps
        ab = yva == 1
        hit = mva[ab].flatten(1).gather(1, maps[ab].flatten(1).argmax(1, keepdim=True)).float().mean()
        row.update(name=name, pointing=100 * float(hit), seconds=time.perf_counter() - tm)
        rows.append(row)
        saved[name] = maps.numpy()
        log(f"[{i + 1}/{len(todo)}] {name}: ADCC {row['ADCC']:.2f} ({row['seconds']:.1f} s)")
    cols = ["AverageDrop", "AverageIncrease", "Coherency", "Complexity", "ADCC", "ADCC_per_image", "pointing"]
    log("\n| Method | Avg Drop ↓ | Avg Increase ↑ | Coherency ↑ | Complexity ↓ | ADCC ↑ | ADCC/img ↑ | Pointing ↑ |")
    log("|---|" + "---|" * len(cols))
    for r in rows:
        log(f"| {r['name']} | " + " | ".join(f"{r[c]:.2f}" for c in cols) + " |")
    log(f"\n(percent; {rows[0]['N']} val images; target: predicted class probability; ADCC from the averaged columns as "
        f"the paper's Table 2, ADCC/img the mean of per-image ADCC; total {time.perf_counter() - t0:.1f} s)")
    if args.overlays:
        for path in save_overlays(args.overlays, xva[:8].numpy(), yva[:8].numpy(),
                                  {k: v[:8] for k, v in saved.items()}):
            log(f"overlay saved to {path}")
    if args.out:
        np.savez_compressed(args.out, images=xva.numpy(), labels=yva.numpy(), lesions=mva.numpy(),
                            **{k.replace(" ", "_"): v for k, v in saved.items()})
        log(f"maps saved to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
