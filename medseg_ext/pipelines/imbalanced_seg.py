"""Extremely imbalanced segmentation (the DIBE setting, foreground < 1:1000) trained on the fused losses.

    medseg-ext pipeline imbalanced_seg [--dim 2|3] [--steps 300] [--losses dice,focal,dibe,affinity]
                                       [--size 96] [--batch 8] [--eval-every 50] [--seed 0]

Data (generated, reproducible from --seed): smoothed Gaussian noise with 2–4 large dim "distractor"
blobs and one tiny bright target blob per image; only the target is foreground, so size and
brightness are the cues and the foreground fraction stays below 1:1000 (checked, printed).
Every loss trains the same SmallUNet from the same initial weights on the same batches:
  dice      dice_loss(activation="sigmoid", reduction_unit="batch")
  focal     focal_loss(alpha=0.25, gamma=2)
  dibe      dibe_loss (DIBE Eq. 19, α = 0.3, γ = 2)
  dice_ce   dice_ce_loss(activation="sigmoid")
  affinity  ClusteringAffinity head (2 classes × 2 centres on 8-d pixel embeddings) with the
            class-balanced affinity loss, weights (1−β)/(1−β^n), β = 0.99999, from running pixel counts
After each --eval-every steps the hard validation predictions give the metrics of
medseg_ext.losses.metrics for the foreground class (IoU, Dice, precision, recall, kappa, OII),
pooled over the validation set.
"""
from __future__ import annotations

import argparse
import math
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import losses as L
from ..models.small_unet import SmallUNet

LOSSES = ("dice", "focal", "dibe", "dice_ce", "affinity")
METRICS = ("iou", "dice", "precision", "recall", "kappa", "oii")


def _smooth(x: torch.Tensor, dim: int, passes: int = 2) -> torch.Tensor:
    pool = F.avg_pool2d if dim == 2 else F.avg_pool3d
    for _ in range(passes):
        x = pool(x, 3, stride=1, padding=1, count_include_pad=False)
    return x


def make_dataset(n: int, size: int = 96, dim: int = 2, seed: int = 0):
    """(images (n, 1, *S) float32, labels (n, *S) int64): one tiny bright target per image, 2–4 large
    dim distractors, smoothed noise. Target radius 1.2–1.8 voxels, so < 1:1000 of the voxels for
    size ≥ 96 in 2-D and ≥ 32 in 3-D."""
    if dim not in (2, 3):
        raise ValueError(f"dim: expected 2 or 3, got {dim!r}")
    if size < 16 or size % 4:
        raise ValueError(f"size: expected a multiple of 4 >= 16, got {size!r}")
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*([np.arange(size, dtype=np.float32)] * dim), indexing="ij"))
    images = np.empty((n, 1) + (size,) * dim, np.float32)
    labels = np.zeros((n,) + (size,) * dim, np.int64)

    def blob(centre, radius):
        d2 = ((grid - np.asarray(centre, np.float32).reshape((dim,) + (1,) * dim)) ** 2).sum(0)
        return d2 <= radius * radius

    for i in range(n):
        img = np.zeros((size,) * dim, np.float32)
        for _ in range(int(rng.integers(2, 5))):
            img += 0.6 * blob(rng.uniform(6, size - 6, dim), rng.uniform(4, 7))
        target = blob(rng.uniform(4, size - 4, dim), rng.uniform(1.2, 1.8))
        img[target] += 1.4
        labels[i] = target
        images[i, 0] = img
    x = torch.from_numpy(images)
    noise = _smooth(torch.from_numpy(rng.standard_normal(images.shape).astype(np.float32)), dim, 1)
    return x + 0.35 * noise / noise.std(), torch.from_numpy(labels)


def _unet(dim: int, out_channels: int, features: int) -> SmallUNet:
    """Two poolings, instance norm: fits 2 CPU cores and still sees the tiny targets."""
    return SmallUNet(1, out_channels, (features, 2 * features, 4 * features), norm="instance", dim=dim)


class _AffinityNet(torch.nn.Module):
    """SmallUNet emitting 8-d pixel embeddings, followed by a Gaussian-affinity layer (2 classes)."""

    def __init__(self, dim: int, features: int):
        super().__init__()
        self.body = _unet(dim, 8, features)
        self.affinity = L.ClusteringAffinity(2, 2, 8, sigma=8.0)

    def forward(self, x):
        return self.affinity(self.body(x))


def _make_model(loss: str, dim: int, features: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return _AffinityNet(dim, features) if loss == "affinity" else _unet(dim, 1, features)


def _loss_fn(loss: str, model: torch.nn.Module, counter: Optional[L.ClassCounter]):
    if loss == "dice":
        return lambda out, y: L.dice_loss(out, y, activation="sigmoid", reduction_unit="batch")
    if loss == "focal":
        return lambda out, y: L.focal_loss(out, y, alpha=0.25, gamma=2.0)
    if loss == "dibe":
        return lambda out, y: L.dibe_loss(out, y)
    if loss == "dice_ce":
        return lambda out, y: L.dice_ce_loss(out, y, activation="sigmoid")
    if loss == "affinity":
        def fn(out, y):
            counter.update(y)
            w = L.class_balanced_weights(counter.counts, 0.99999, warn=False).to(out.dtype)
            return L.balanced_affinity_loss(out, y, model.affinity.centres, margin=0.1, class_weight=w)
        return fn
    raise ValueError(f"losses: unknown loss {loss!r}; expected some of {LOSSES}")


def predict(loss: str, model: torch.nn.Module, x: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """Hard foreground maps (n, *S) int64: logit > 0, or the larger affinity for the affinity head."""
    outs = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            out = model(x[i:i + batch])
            outs.append(out.argmax(1) if loss == "affinity" else (out[:, 0] > 0).long())
    return torch.cat(outs)


def evaluate(pred: torch.Tensor, labels: torch.Tensor) -> Dict[str, float]:
    """Pooled foreground-class metrics of hard predictions."""
    counts = L.confusion_from_labels(pred, labels, 2, reduction_unit="batch")[:, 1:]
    return {k: float(v.reshape(-1)[0]) for k, v in L.segmentation_metrics(counts).items() if k in METRICS}


def run(dim: int = 2, steps: int = 300, losses: Sequence[str] = ("dice", "focal", "dibe", "affinity"),
        size: Optional[int] = None, batch: int = 8, n_train: int = 96, n_val: int = 32, eval_every: int = 50,
        features: int = 8, lr: float = 3e-3, seed: int = 0, show_progress: bool = True, out=print) -> dict:
    """Train one model per loss; returns {loss: [ {step, seconds, loss, *metrics} per evaluation ]}."""
    for name in losses:
        if name not in LOSSES:
            raise ValueError(f"losses: unknown loss {name!r}; expected some of {LOSSES}")
    if steps < 1 or eval_every < 1 or batch < 1:
        raise ValueError("steps, eval_every, batch: expected positive integers")
    size = size or (96 if dim == 2 else 32)
    x_tr, y_tr = make_dataset(n_train, size, dim, seed)
    x_va, y_va = make_dataset(n_val, size, dim, seed + 1)
    frac = float(y_tr.float().mean())
    out(f"imbalanced_seg: {dim}-D {size}^{dim}, {n_train} train / {n_val} val, foreground fraction "
        f"{frac:.2e} (1:{1 / max(frac, 1e-12):.0f}), {steps} steps, batch {batch}")
    order = torch.Generator().manual_seed(seed)
    batches = [torch.randint(0, n_train, (batch,), generator=order) for _ in range(steps)]
    history: Dict[str, List[dict]] = {}
    for name in losses:
        model = _make_model(name, dim, features, seed)
        counter = L.ClassCounter(2, unit="pixels") if name == "affinity" else None
        fn = _loss_fn(name, model, counter)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        bar = None
        if show_progress:
            try:
                from tqdm import tqdm
                bar = tqdm(total=steps, desc=f"{name:>9}", leave=False)
            except ImportError:
                bar = None
        rows, t0, running = [], time.perf_counter(), math.nan
        for step, idx in enumerate(batches, 1):
            model.train()
            loss = fn(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"{name}: loss became {value} at step {step}")
            running = value if math.isnan(running) else 0.9 * running + 0.1 * value
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{running:.4f}")
            if step % eval_every == 0 or step == steps:
                model.eval()
                m = evaluate(predict(name, model, x_va), y_va)
                rows.append({"step": step, "seconds": time.perf_counter() - t0, "loss": running, **m})
                (bar.write if bar is not None else out)(_row(name, rows[-1]))
        if bar is not None:
            bar.close()
        history[name] = rows
    out("\nfinal validation metrics (foreground class, pooled):")
    out("| loss | " + " | ".join(METRICS) + " | train s |")
    out("|---|" + "---|" * (len(METRICS) + 1))
    for name, rows in history.items():
        r = rows[-1]
        out(f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in METRICS) + f" | {r['seconds']:.1f} |")
    return history


def _row(name: str, r: dict) -> str:
    return (f"{name:>9} step {r['step']:>4} loss {r['loss']:.4f} " +
            " ".join(f"{k} {r[k]:+.3f}" for k in METRICS))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="medseg-ext pipeline imbalanced_seg", description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=2, choices=(2, 3))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--losses", default="dice,focal,dibe,affinity", help=f"comma list of {','.join(LOSSES)}")
    p.add_argument("--size", type=int, default=None, help="image side (default 96 in 2-D, 32 in 3-D)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--train", type=int, default=96)
    p.add_argument("--val", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--features", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    run(a.dim, a.steps, [s.strip() for s in a.losses.split(",") if s.strip()], a.size, a.batch, a.train, a.val,
        a.eval_every, a.features, a.lr, a.seed, show_progress=not a.no_progress)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
