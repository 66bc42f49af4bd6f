"""LRP on a U-Net (seeds-part2 §1): train a small U-Net / residual U-Net / U-Net++ (batch or instance norm)
on generated "pore" images, segment a test image, explain the largest segmented object with one
forward and one backward pass, and save the relevance map (raw and Eq. 2 log-scaled, .npy) and
an overlay (.png).

    medseg-ext pipeline lrp_unet [--arch unet|resunet|monai-basic|monai-unet|monai-unetpp] [--norm batch|instance]
                                 [--steps 100] [--size 64] [--rule epsilon|epsilon_plus|alpha2beta1|gamma_box]
                                 [--thresh 0.1] [--out lrp_out]

The generated task: grey noisy images with a few bright elongated ellipses ("needle-shaped
pores"); the target mask is the ellipses. ``--steps 0`` keeps random weights.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional

import numpy as np


def generate(n: int, size: int, seed: int):
    """(n, 1, size, size) float32 images in [0, 1] and (n, 1, size, size) masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    imgs = np.zeros((n, 1, size, size), np.float32)
    masks = np.zeros((n, 1, size, size), np.float32)
    for i in range(n):
        m = np.zeros((size, size), bool)
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0.15, 0.85, 2) * size
            a, b = rng.uniform(0.12, 0.3) * size, rng.uniform(0.03, 0.07) * size
            th = rng.uniform(0, np.pi)
            u = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
            v = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
            m |= (u / a) ** 2 + (v / b) ** 2 <= 1
        img = 0.3 + 0.1 * rng.standard_normal((size, size)) + 0.45 * m
        imgs[i, 0] = np.clip(img, 0, 1)
        masks[i, 0] = m
    return imgs, masks


def build(arch: str, norm: str):
    if arch in ("unet", "resunet"):
        from medseg_ext.models.small_unet import SmallUNet
        return SmallUNet(1, 1, (8, 16, 32), norm=norm, residual=arch == "resunet")
    if arch == "monai-basic":
        from monai.networks.nets import BasicUNet
        return BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=(8, 8, 16, 32, 64, 8),
                         norm=norm)
    if arch == "monai-unet":
        from monai.networks.nets import UNet
        return UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(8, 16, 32), strides=(2, 2),
                    num_res_units=2, norm=norm, act="LeakyReLU")
    if arch == "monai-unetpp":
        import torch
        from monai.networks.nets import BasicUNetPlusPlus

        class FirstOutput(torch.nn.Module):
            """BasicUNetPlusPlus returns a list (deep supervision); LRP explains its first entry."""

            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner(x)[0]
        return FirstOutput(BasicUNetPlusPlus(spatial_dims=2, in_channels=1, out_channels=1,
                                             features=(8, 8, 16, 32, 64, 8), norm=norm))
    raise ValueError(f"arch: unknown {arch!r}")


def _progress(it, total, desc):
    try:
        from tqdm import tqdm
        return tqdm(it, total=total, desc=desc, file=sys.stdout, mininterval=1.0)
    except Exception:  # noqa: BLE001
        def gen():
            for i, v in enumerate(it):
                if i % max(1, total // 10) == 0:
                    print(f"{desc}: {i}/{total}", flush=True)
                yield v
        return gen()


def main(argv: Optional[List[str]] = None) -> int:
    import torch

    from medseg_ext import lrp

    p = argparse.ArgumentParser(prog="medseg-ext pipeline lrp_unet", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="unet", choices=("unet", "resunet", "monai-basic", "monai-unet", "monai-unetpp"))
    p.add_argument("--norm", default="batch", choices=("batch", "instance"))
    p.add_argument("--steps", type=int, default=100, help="training steps (0: random weights)")
    p.add_argument("--size", type=int, default=64, help="image side (a multiple of 16)")
    p.add_argument("--rule", default="epsilon", choices=("epsilon", "epsilon_plus", "alpha2beta1", "gamma_box"))
    p.add_argument("--thresh", type=float, default=0.1, help="Eq. 2 threshold")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="lrp_out", help="output folder")
    args = p.parse_args(argv)
    if args.size < 16 or args.size % 16:
        p.error("--size: expected a multiple of 16, >= 16")
    if args.steps < 0:
        p.error("--steps: expected >= 0")
    if not args.thresh > 0:
        p.error("--thresh: expected > 0")
    torch.manual_seed(args.seed)
    net = build(args.arch, args.norm).float()
    imgs, masks = generate(64, args.size, args.seed)
    X, Y = torch.from_numpy(imgs), torch.from_numpy(masks)
    t0 = time.perf_counter()
    if args.steps:
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        net.train()
        rng = np.random.default_rng(args.seed + 1)
        for _ in _progress(range(args.steps), args.steps, "train"):
            idx = torch.from_numpy(rng.integers(0, len(X), 8))
            logits = net(X[idx])
            prob = torch.sigmoid(logits)
            inter = (prob * Y[idx]).sum()
            dice = 1 - (2 * inter + 1) / (prob.sum() + Y[idx].sum() + 1)
            loss = dice + torch.nn.functional.binary_cross_entropy_with_logits(logits, Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    print(f"training: {args.steps} steps in {time.perf_counter() - t0:.1f} s")
    timgs, tmasks = generate(1, args.size, args.seed + 100)
    x = torch.from_numpy(timgs)
    composite = {"epsilon": lambda: lrp.EpsilonComposite(), "epsilon_plus": lambda: lrp.EpsilonPlus(),
                 "alpha2beta1": lambda: lrp.EpsilonAlpha2Beta1(),
                 "gamma_box": lambda: lrp.EpsilonGammaBox(0.0, 1.0)}[args.rule]()
    t1 = time.perf_counter()
    R, eng = lrp.explain(net, x, composite=composite, components="largest", return_engine=True)
    t_lrp = time.perf_counter() - t1
    z = eng.output
    pred = (torch.sigmoid(z) > 0.5)[0, 0].numpy()
    gt = tmasks[0, 0] > 0.5
    dice = 2 * (pred & gt).sum() / max(1, pred.sum() + gt.sum())
    obj = lrp.region_masks(z, components="largest")[0, 0].numpy()
    rel = R[0, 0, 0].numpy().astype(np.float64)
    scaled = lrp.log_scale(rel, args.thresh)
    seed_total = float(lrp.make_seed(z, torch.from_numpy(obj)[None], 0).sum())
    pos = np.clip(rel, 0, None)
    inside = float(pos[obj].sum() / pos.sum()) if pos.sum() > 0 else float("nan")
    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, "relevance.npy"), rel)
    np.save(os.path.join(args.out, "relevance_log.npy"), scaled)
    np.save(os.path.join(args.out, "object_mask.npy"), obj)
    png = None
    try:
        png = os.path.join(args.out, "overlay.png")
        lrp.overlay(timgs[0, 0], rel, png, log_thresh=args.thresh)
    except ImportError:
        png = None
    print(f"test Dice {dice:.3f}; explained object: {int(obj.sum())} px; LRP ({args.rule}) {t_lrp:.2f} s")
    print(f"seeded relevance {seed_total:.4g}, input relevance {rel.sum():.4g} "
          f"(the difference is what biases, norm shifts and stabilisers absorb or inject); positive relevance inside the object {inside:.1%}")
    print(f"saved {args.out}/relevance.npy, relevance_log.npy, object_mask.npy" + (f", {png}" if png else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
