"""MCI persistent-homology pipeline (seeds-part1.md §3.8) on generated data with a planted group
difference: ROI time series -> sliding windows -> Vietoris–Rips diagrams (one batched call) ->
PR matrices per subject, network and homology dimension -> Wilcoxon rank-sum screen per ROI pair.

    medseg-ext pipeline mci [--subjects 12] [--length 187] [--maxdim 2] [--drop-last] [--out results.npz]

The generated series are AR(1) noise; in the second group the ROIs of one network (CO) carry an
added oscillation, which gives their delay embeddings a loop (H1) and changes their H0 spread.
The screen should therefore flag far more CO pairs than pairs of the other networks. The
paper's CNN classifier, plots and Dask scale-out are not part of this pipeline.
"""
from __future__ import annotations

import argparse
import time
from typing import List, Optional

import numpy as np

NETWORKS = {"CB": 18, "CO": 32, "DMN": 34, "FP": 21, "OP": 22, "SM": 33}  # Dosenbach 160 ROIs
PLANTED = "CO"


def generate(subjects_per_group: int, length: int, seed: int, effect: float) -> tuple:
    """(2·S, 160, T) float64 series and group labels (0 = HC, 1 = MCI)."""
    rng = np.random.default_rng(seed)
    n_roi = sum(NETWORKS.values())
    S = 2 * subjects_per_group
    x = np.zeros((S, n_roi, length))
    noise = rng.standard_normal((S, n_roi, length))
    for t in range(1, length):
        x[:, :, t] = 0.6 * x[:, :, t - 1] + noise[:, :, t]
    labels = np.repeat([0, 1], subjects_per_group)
    start = sum(NETWORKS[k] for k in NETWORKS if list(NETWORKS).index(k) < list(NETWORKS).index(PLANTED))
    stop = start + NETWORKS[PLANTED]
    t = np.arange(length)
    for s in np.nonzero(labels == 1)[0]:
        period = rng.uniform(6.0, 9.0, size=(stop - start, 1))
        phase = rng.uniform(0, 2 * np.pi, size=(stop - start, 1))
        x[s, start:stop] += effect * 3.0 * np.sin(2 * np.pi * t / period + phase)
    return x, labels


def main(argv: Optional[List[str]] = None) -> int:
    import torch
    from scipy.stats import ranksums

    import medseg_ext as mx

    p = argparse.ArgumentParser(prog="medseg-ext pipeline mci", description=__doc__.split("\n\n")[0])
    p.add_argument("--subjects", type=int, default=12, help="subjects per group (default 12)")
    p.add_argument("--length", type=int, default=187, help="time points per series (ADNI: 187)")
    p.add_argument("--maxdim", type=int, default=2, choices=(0, 1, 2))
    p.add_argument("--effect", type=float, default=1.0, help="size of the planted oscillation (0: none)")
    p.add_argument("--drop-last", action="store_true", help="184 points per cloud, as the authors' code")
    p.add_argument("--alpha", type=float, default=0.01, help="rank-sum p-value threshold")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="save PR matrices and p-values to this .npz")
    args = p.parse_args(argv)
    if args.subjects < 2 or args.length < 10:
        p.error("--subjects must be >= 2 and --length >= 10")

    t0 = time.perf_counter()
    series, labels = generate(args.subjects, args.length, args.seed, args.effect)
    S, R, _ = series.shape
    clouds = mx.sliding_window(torch.from_numpy(series), 3, 1, drop_last=args.drop_last)  # (S, R, n, 3) view
    print(f"[1/3] {S} subjects × {R} ROIs -> {S * R} clouds of {clouds.shape[2]} points in R³")
    dg = mx.vietoris_rips_batch(clouds.reshape(S * R, clouds.shape[2], 3), maxdim=args.maxdim)
    t1 = time.perf_counter()
    print(f"      diagrams in {t1 - t0:.1f} s ({(t1 - t0) / (S * R) * 1e3:.1f} ms per cloud, all threads)")

    pr = {}
    per_dim = [dg.dimension(k) for k in range(args.maxdim + 1)]
    start = 0
    for net, n in NETWORKS.items():
        for k in range(args.maxdim + 1):
            mats = [mx.diagram_distance_matrix(per_dim[k][s * R + start: s * R + start + n], q=1, ground="l2")
                    for s in range(S)]  # persim's convention, as the paper's numbers
            pr[(net, k)] = torch.stack(mats).numpy()
        start += n
    t2 = time.perf_counter()
    print(f"[2/3] PR matrices ({len(NETWORKS)} networks × {args.maxdim + 1} dims × {S} subjects) in {t2 - t1:.1f} s")

    print(f"[3/3] Wilcoxon rank-sum per ROI pair, HC vs MCI, p < {args.alpha}")
    rows = []
    pvalues = {}
    for (net, k), M in pr.items():
        n = M.shape[1]
        iu = np.triu_indices(n, 1)
        a, b = M[labels == 0][:, iu[0], iu[1]], M[labels == 1][:, iu[0], iu[1]]
        pv = ranksums(a, b, axis=0).pvalue
        pvalues[(net, k)] = pv
        rows.append((net, k, int((pv < args.alpha).sum()), len(pv)))
    print("network | H | significant pairs | pairs | fraction")
    for net, k, sig, tot in rows:
        mark = "  <- planted" if net == PLANTED else ""
        print(f"{net:7s} | {k} | {sig:5d} | {tot:5d} | {sig / tot:.3f}{mark}")
    if args.out:
        np.savez_compressed(args.out, labels=labels,
                            **{f"PR_{net}_H{k}": M for (net, k), M in pr.items()},
                            **{f"p_{net}_H{k}": v for (net, k), v in pvalues.items()})
        print(f"saved {args.out}")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0
