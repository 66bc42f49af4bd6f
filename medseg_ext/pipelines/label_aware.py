"""Label-aware mechanism pipeline: a small ATSS/GFL-style detector trained on generated X-ray-like
images of overlapping objects, with and without LA (seeds-part1.md §1), reporting mAP50 both ways.

    medseg-ext pipeline label_aware [--steps 300] [--batch 8] [--train 256] [--val 96] [--seed 0]

Data: 64×64 single-channel "transmission" images I = exp(−Σ μ·mask) + noise with 2–4 objects of 3
classes (solid rectangle, ellipse, hollow rectangle — the first and last are easily confused where
objects overlap), most of them overlapping another object. Targets: points inside a box and within
1.5 strides of its centre are positive (smallest box wins), as centre sampling in ATSS/FCOS.
Losses (fused kernels of medseg_ext.losses.detection): focal (avg_factor #pos) + 2·GIoU (centerness
weighted) + 0.25·DFL + centerness BCE. Evaluation: score = σ(cls)·σ(centerness), threshold 0.05,
class-wise NMS at IoU 0.6, VOC all-point AP at IoU 0.5 averaged over classes.
"""
from __future__ import annotations

import argparse
import math
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..losses import detection as D

NUM_CLASSES = 3


# ---------------------------------------------------------------- data


def make_dataset(n: int, size: int = 64, seed: int = 0, overlap: float = 0.7):
    """(images (n, 1, size, size) float32, [boxes (k, 4) float32 x1 y1 x2 y2], [labels (k,) int64])."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    images = np.zeros((n, 1, size, size), np.float32)
    all_boxes, all_labels = [], []
    for i in range(n):
        density = np.zeros((size, size), np.float32)
        boxes, labels = [], []
        for j in range(int(rng.integers(2, 5))):
            w, h = rng.uniform(12, 28, 2)
            if j > 0 and rng.random() < overlap:  # next to a previous object, so that they overlap
                px1, py1, px2, py2 = boxes[int(rng.integers(0, j))]
                cx = np.clip(rng.uniform(px1, px2), w / 2, size - w / 2)
                cy = np.clip(rng.uniform(py1, py2), h / 2, size - h / 2)
            else:
                cx, cy = rng.uniform(w / 2, size - w / 2), rng.uniform(h / 2, size - h / 2)
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            k = int(rng.integers(0, NUM_CLASSES))
            inside = (xx >= x1) & (xx <= x2) & (yy >= y1) & (yy <= y2)
            if k == 0:
                mask = inside
            elif k == 1:
                mask = ((xx - cx) / (w / 2)) ** 2 + ((yy - cy) / (h / 2)) ** 2 <= 1
            else:
                t = 3.0
                mask = inside & ~((xx >= x1 + t) & (xx <= x2 - t) & (yy >= y1 + t) & (yy <= y2 - t))
            density += rng.uniform(0.5, 0.9) * mask
            boxes.append((x1, y1, x2, y2))
            labels.append(k)
        images[i, 0] = np.exp(-density) + rng.normal(0, 0.05, (size, size))
        all_boxes.append(torch.tensor(boxes, dtype=torch.float32))
        all_labels.append(torch.tensor(labels, dtype=torch.int64))
    return torch.from_numpy(images), all_boxes, all_labels


def grid_points(h: int, w: int, stride: int) -> torch.Tensor:
    """(h·w, 2) centres (x, y) of the feature locations, row-major."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    return torch.stack([(xs.reshape(-1) + 0.5) * stride, (ys.reshape(-1) + 0.5) * stride], 1)


def assign(points: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, stride: int,
           radius: float = 1.5) -> Tuple[torch.Tensor, torch.Tensor]:
    """Centre-sampling assignment of one image: (labels (P,) with C = background, gt boxes (P, 4))."""
    P = points.shape[0]
    if boxes.numel() == 0:
        return torch.full((P,), NUM_CLASSES, dtype=torch.int64), torch.zeros(P, 4)
    px, py = points[:, 0:1], points[:, 1:2]
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    r = radius * stride
    inside = (px > boxes[:, 0]) & (px < boxes[:, 2]) & (py > boxes[:, 1]) & (py < boxes[:, 3])
    central = ((px - cx).abs() < r) & ((py - cy).abs() < r)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand(P, -1)
    area = torch.where(inside & central, area, torch.full_like(area, math.inf))
    best_area, best = area.min(1)
    lab = torch.where(torch.isfinite(best_area), labels[best], torch.full_like(best, NUM_CLASSES))
    return lab, boxes[best]


# ---------------------------------------------------------------- training


def decode(points: torch.Tensor, bin_logits: torch.Tensor, stride: int) -> torch.Tensor:
    """Boxes from per-side bin logits (P, 4, K): distance = Σ_b b·softmax_b, in strides."""
    K = bin_logits.shape[-1]
    dist = (bin_logits.softmax(-1) * torch.arange(K, dtype=bin_logits.dtype)).sum(-1) * stride
    return torch.stack([points[:, 0] - dist[:, 0], points[:, 1] - dist[:, 1],
                        points[:, 0] + dist[:, 2], points[:, 1] + dist[:, 3]], 1)


def detection_loss(model, images, boxes, labels):
    stride, K, C = model.stride, model.num_bins, model.num_classes
    B, _, S, _ = images.shape
    h = w = S // stride
    points = grid_points(h, w, stride)
    assigned = [assign(points, b, l, stride) for b, l in zip(boxes, labels)]
    lab = torch.stack([a[0] for a in assigned])            # (B, P)
    gt = torch.stack([a[1] for a in assigned]).reshape(-1, 4)
    cls, bins, ctr = model(images, lab.reshape(B, h, w))
    cls = cls.permute(0, 2, 3, 1).reshape(-1, C)
    bins = bins.permute(0, 2, 3, 1).reshape(-1, 4, K)
    ctr = ctr.permute(0, 2, 3, 1).reshape(-1)
    lab = lab.reshape(-1)
    pos = lab < C
    num_pos = max(int(pos.sum()), 1)
    loss = D.sigmoid_focal_loss(cls, lab, avg_factor=float(num_pos))
    if pos.any():
        pts = points.repeat(B, 1)[pos]
        g = gt[pos]
        ctr_loss, ctr_t = D.centerness_loss(ctr[pos], pts, g, avg_factor=float(num_pos))
        norm = max(float(ctr_t.sum()), 1e-6)
        loss = loss + ctr_loss + D.giou_loss(decode(pts, bins[pos], stride), g, ctr_t, avg_factor=norm,
                                             loss_weight=2.0)
        target = torch.stack([pts[:, 0] - g[:, 0], pts[:, 1] - g[:, 1], g[:, 2] - pts[:, 0], g[:, 3] - pts[:, 1]],
                             1) / stride
        loss = loss + D.distribution_focal_loss(bins[pos].reshape(-1, K), target.clamp(0, K - 1 - 0.01).reshape(-1),
                                                ctr_t.repeat_interleave(4), avg_factor=4 * norm, loss_weight=0.25)
    return loss


def train(model, images, boxes, labels, steps: int, batch: int, lr: float, seed: int, progress=None):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.15)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, images.shape[0], (batch,), generator=g).tolist()
        loss = detection_loss(model, images[idx], [boxes[i] for i in idx], [labels[i] for i in idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress(step, float(loss.detach()))


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def predict(model, images, score_thr: float = 0.05, iou_thr: float = 0.6, max_det: int = 100):
    """Per image (boxes (k, 4), scores (k,), classes (k,)) after class-wise NMS."""
    from torchvision.ops import batched_nms

    model.eval()
    stride, K, C = model.stride, model.num_bins, model.num_classes
    out = []
    for start in range(0, images.shape[0], 32):
        x = images[start:start + 32]
        cls, bins, ctr = model(x)  # LA enables gradients for its own first pass
        B, _, h, w = cls.shape
        points = grid_points(h, w, stride)
        for b in range(B):
            score = (cls[b].sigmoid() * ctr[b].sigmoid()).permute(1, 2, 0).reshape(-1, C)
            boxes = decode(points, bins[b].permute(1, 2, 0).reshape(-1, 4, K), stride)
            keep = score > score_thr
            p_idx, c_idx = keep.nonzero(as_tuple=True)
            bx, sc = boxes[p_idx], score[p_idx, c_idx]
            k = batched_nms(bx, sc, c_idx, iou_thr)[:max_det]
            out.append((bx[k], sc[k], c_idx[k]))
    return out


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def average_precision_50(detections: Sequence, gt_boxes: Sequence, gt_labels: Sequence,
                         num_classes: int = NUM_CLASSES, iou_thr: float = 0.5) -> Tuple[float, List[float]]:
    """VOC-style mAP: per class, detections of all images by descending score, greedy matching to
    unmatched ground truth at IoU ≥ iou_thr, AP = area under the monotone precision envelope (all
    points). Classes without ground truth are left out of the mean."""
    aps = []
    for c in range(num_classes):
        recs = []
        n_gt = 0
        for (bx, sc, cl), gb, gl in zip(detections, gt_boxes, gt_labels):
            g = gb[gl == c]
            n_gt += len(g)
            m = cl == c
            recs.append((bx[m], sc[m], g))
        if n_gt == 0:
            continue
        flat = [(float(s), i, j) for i, (_, sc, _) in enumerate(recs) for j, s in enumerate(sc.tolist())]
        flat.sort(key=lambda t: -t[0])
        used = [torch.zeros(len(r[2]), dtype=torch.bool) for r in recs]
        tp = np.zeros(len(flat))
        for d, (_, i, j) in enumerate(flat):
            g = recs[i][2]
            if len(g) == 0:
                continue
            iou = box_iou(recs[i][0][j:j + 1], g)[0]
            iou[used[i]] = -1
            best = int(iou.argmax())
            if float(iou[best]) >= iou_thr:
                tp[d] = 1
                used[i][best] = True
        ctp = np.cumsum(tp)
        recall = ctp / n_gt
        precision = ctp / np.arange(1, len(flat) + 1)
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.concatenate([[0.0], precision, [0.0]])
        for k in range(len(mpre) - 2, -1, -1):
            mpre[k] = max(mpre[k], mpre[k + 1])
        idx = np.nonzero(mrec[1:] != mrec[:-1])[0]
        aps.append(float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1])))
    return (float(np.mean(aps)) if aps else float("nan")), aps


# ---------------------------------------------------------------- CLI


def run(steps: int = 300, batch: int = 8, n_train: int = 256, n_val: int = 96, seed: int = 0, lr: float = 3e-3,
        show_progress: bool = True, out=print) -> dict:
    from ..models.atss_head import TinyDetector

    train_x, train_b, train_l = make_dataset(n_train, seed=seed)
    val_x, val_b, val_l = make_dataset(n_val, seed=seed + 10_000)
    results = {}
    for name, la in (("baseline", False), ("label-aware", True)):
        torch.manual_seed(seed)
        model = TinyDetector(NUM_CLASSES, label_aware=la)
        bar = None
        if show_progress:
            try:
                from tqdm import tqdm
                bar = tqdm(total=steps, desc=f"{name:>11}", leave=False)
            except ImportError:
                bar = None

        def progress(step, loss, bar=bar):
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")

        t0 = time.perf_counter()
        train(model, train_x, train_b, train_l, steps, batch, lr, seed, progress)
        if bar is not None:
            bar.close()
        train_s = time.perf_counter() - t0
        m, per_class = average_precision_50(predict(model, val_x), val_b, val_l)
        results[name] = {"mAP50": m, "AP50_per_class": per_class, "train_seconds": train_s}
        out(f"{name:>11}: mAP50 {m:.4f}  per class {[round(a, 4) for a in per_class]}  "
            f"({steps} steps, {train_s:.1f} s)")
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="medseg-ext pipeline label_aware", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--train", type=int, default=256, help="training images")
    p.add_argument("--val", type=int, default=96, help="validation images")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch/OpenMP threads (default 1: the tensors are small, more threads only add overhead)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(list(argv) if argv is not None else None)
    for name in ("steps", "batch", "train", "val"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be >= 1")
    if a.threads < 1:
        p.error("--threads must be >= 1")
    torch.set_num_threads(a.threads)
    run(a.steps, a.batch, a.train, a.val, a.seed, a.lr, show_progress=not a.no_progress)
    return 0
