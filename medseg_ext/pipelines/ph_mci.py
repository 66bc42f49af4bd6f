"""Persistent-homology MCI pipeline (seeds-part1.md §3.8) on generated data with a planted group
difference: ROI time series -> sliding windows -> Vietoris–Rips diagrams -> PR matrices (ROI × ROI
per subject, network and dimension) and PS matrices (subject × subject per ROI and dimension) ->
Wilcoxon rank-sum P-plots -> the paper's dual-path CNN on the PR matrices.

    medseg-ext pipeline ph_mci [--subjects 12] [--length 187] [--maxdim 2] [--drop-last]
        [--dask [--workers 2] | --scheduler tcp://host:8786] [--epochs 15] [--out DIR | --out file.npz]

The generated series are AR(1) noise; in the second group the ROIs of one network (CO) carry an
added oscillation, which gives their delay embeddings a loop (H1) and changes their H0 spread. The
screen should therefore flag far more CO pairs than pairs of the other networks, and the CO
classifiers should beat chance. ``--dask`` runs the batch steps (diagrams in chunks of clouds, PR
matrices per subject, PS matrices per ROI) on a Dask ``LocalCluster``; ``--scheduler`` on a running
Dask scheduler (workers need medseg_ext installed). ``--out DIR`` writes results.npz, summary.json
and, with matplotlib, persistence-diagram and P-plot figures; ``--out X.npz`` only the arrays.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np

NETWORKS = {"CB": 18, "CO": 32, "DMN": 34, "FP": 21, "OP": 22, "SM": 33}  # Dosenbach 160 ROIs
PLANTED = "CO"
PR_CONVENTION = dict(q=1.0, ground="l2", essential="drop")  # persim's, as the paper's numbers (§3.5)


def network_slices() -> Dict[str, slice]:
    """ROI index range of each network in the 160-ROI order of :data:`NETWORKS`."""
    out, start = {}, 0
    for net, n in NETWORKS.items():
        out[net] = slice(start, start + n)
        start += n
    return out


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
    sl = network_slices()[PLANTED]
    t = np.arange(length)
    for s in np.nonzero(labels == 1)[0]:
        period = rng.uniform(6.0, 9.0, size=(sl.stop - sl.start, 1))
        phase = rng.uniform(0, 2 * np.pi, size=(sl.stop - sl.start, 1))
        x[s, sl] += effect * 3.0 * np.sin(2 * np.pi * t / period + phase)
    return x, labels


# ---------------------------------------------------------------- worker tasks (module level: importable)
def pr_task(subject_diagrams: Any, maxdim: int) -> Dict[str, np.ndarray]:
    """All PR matrices of one subject (a RaggedDiagrams of its 160 ROI clouds): {"NET_Hk": (n, n)}."""
    from medseg_ext.topology import diagram_distance_matrix
    per_dim = [subject_diagrams.dimension(k) for k in range(maxdim + 1)]
    return {f"{net}_H{k}": diagram_distance_matrix(per_dim[k][sl], **PR_CONVENTION).numpy()
            for net, sl in network_slices().items() for k in range(maxdim + 1)}


def ps_task(roi_diagrams: List[List[Any]]) -> np.ndarray:
    """PS matrices of one ROI: ``roi_diagrams[k]`` = the S subjects' H_k diagrams -> (maxdim+1, S, S)."""
    from medseg_ext.topology import diagram_distance_matrix
    return np.stack([diagram_distance_matrix(d, **PR_CONVENTION).numpy() for d in roi_diagrams])


# ---------------------------------------------------------------- statistics
def pplot(M: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Wilcoxon rank-sum P-plot of (S, n, n) PR matrices between groups 0 and 1: an (n, n) symmetric
    matrix of two-sided p-values (scipy.stats.ranksums per ROI pair i < j), 1 on the diagonal."""
    from scipy.stats import ranksums
    labels = np.asarray(labels)
    n = M.shape[1]
    iu = np.triu_indices(n, 1)
    a, b = M[labels == 0][:, iu[0], iu[1]], M[labels == 1][:, iu[0], iu[1]]
    P = np.ones((n, n))
    if iu[0].size:
        pv = ranksums(a, b, axis=0).pvalue
        P[iu] = pv
        P[(iu[1], iu[0])] = pv
    return P


def ps_separation(PS: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per PS matrix (..., S, S): mean between-group distance / mean within-group distance (> 1 when
    the ROI's diagrams separate the groups)."""
    labels = np.asarray(labels)
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(len(labels), dtype=bool)
    between = PS[..., ~same].mean(-1)
    within = PS[..., same & off].mean(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return between / within


# ---------------------------------------------------------------- plots (matplotlib optional)
def save_plots(out_dir: str, diagrams_examples: Dict[str, list], pplots: Dict[str, np.ndarray], maxdim: int,
               alpha: float) -> List[str]:
    """Persistence diagrams of example clouds and the P-plots (−log10 p per network and dimension)."""
    try:
        import matplotlib
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        print("      matplotlib not installed: no figures (pip install 'medseg_ext[plot]')")
        return []
    files = []
    fig, axes = plt.subplots(1, len(diagrams_examples), figsize=(4.2 * len(diagrams_examples), 4), squeeze=False)
    for ax, (title, dgms) in zip(axes[0], diagrams_examples.items()):
        finite = np.concatenate([d[np.isfinite(d[:, 1])] for d in dgms if len(d)] or [np.zeros((0, 2))])
        top = float(finite[:, 1].max()) * 1.1 if len(finite) else 1.0
        for k, d in enumerate(dgms):
            d = np.asarray(d)
            if not len(d):
                continue
            inf = ~np.isfinite(d[:, 1])
            ax.scatter(d[~inf, 0], d[~inf, 1], s=10, label=f"H{k}")
            if inf.any():
                ax.scatter(d[inf, 0], np.full(int(inf.sum()), top), marker="^", s=25, c="k",
                           label="death = inf" if k == 0 else None)
        ax.plot([0, top], [0, top], "k--", lw=0.8)
        ax.axhline(top, color="grey", lw=0.5)
        ax.set(xlabel="birth", ylabel="death", title=title)
        ax.legend(loc="lower right")
    fig.tight_layout()
    path = os.path.join(out_dir, "diagrams.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    files.append(path)

    nets = list(NETWORKS)
    fig, axes = plt.subplots(maxdim + 1, len(nets), figsize=(2.6 * len(nets), 2.6 * (maxdim + 1)), squeeze=False)
    for j, net in enumerate(nets):
        for k in range(maxdim + 1):
            P = pplots[f"{net}_H{k}"]
            ax = axes[k][j]
            im = ax.imshow(-np.log10(np.clip(P, 1e-300, 1.0)), vmin=0, vmax=max(4.0, -np.log10(alpha) + 1),
                           cmap="magma")
            sig = np.argwhere(np.triu(P < alpha, 1))
            if len(sig):
                ax.scatter(sig[:, 1], sig[:, 0], s=2, c="cyan")
            ax.set_title(f"{net} H{k}: {int(len(sig))} p<{alpha:g}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.6, label="-log10 p")
    path = os.path.join(out_dir, "pplots.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    files.append(path)
    return files


# ---------------------------------------------------------------- progress
class _Progress:
    """tqdm when installed and enabled, else silent; ``update(n)`` / context manager."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self._bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
                self._bar = tqdm(total=total, desc=desc, leave=False, unit="it")
            except ImportError:
                pass

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.close()


def _open_cluster(args) -> tuple:
    """(client or None, closer)."""
    if not (args.dask or args.scheduler):
        return None, lambda: None
    from medseg_ext.topology.scaleout import import_distributed
    distributed = import_distributed()
    if args.scheduler:
        client = distributed.Client(args.scheduler)
        print(f"      Dask scheduler {args.scheduler}: {len(client.nthreads())} workers")
        return client, client.close
    cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                       processes=not args.dask_threads, dashboard_address=":0")
    client = distributed.Client(cluster)
    kind = "threads" if args.dask_threads else "processes"
    print(f"      Dask LocalCluster: {args.workers} workers ({kind}), 1 thread each")

    def close():
        client.close()
        cluster.close()
    return client, close


def main(argv: Optional[List[str]] = None, prog: str = "medseg-ext pipeline ph_mci") -> int:
    import torch

    import medseg_ext as mx
    from medseg_ext.models.ph_cnn import train_classifier
    from medseg_ext.topology import RaggedDiagrams
    from medseg_ext.topology.scaleout import compact_ragged, map_tasks, rips_batch_distributed

    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--subjects", type=int, default=12, help="subjects per group (default 12)")
    p.add_argument("--length", type=int, default=187, help="time points per series (ADNI: 187)")
    p.add_argument("--maxdim", type=int, default=2, choices=(0, 1, 2))
    p.add_argument("--effect", type=float, default=1.0, help="size of the planted oscillation (0: none)")
    p.add_argument("--drop-last", action="store_true", help="184 points per cloud, as the authors' code")
    p.add_argument("--alpha", type=float, default=0.01, help="rank-sum p-value threshold")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ps", action="store_true", help="skip the PS (subject × subject) matrices")
    p.add_argument("--epochs", type=int, default=15, help="CNN training epochs (0: no classifier; paper: 100)")
    p.add_argument("--batch-size", type=int, default=8, help="CNN batch size (default 8)")
    p.add_argument("--cnn-width", type=float, default=0.25, help="CNN channel multiplier (1.0 = the paper's)")
    p.add_argument("--cnn-head", choices=("paper", "notebook"), default="paper")
    p.add_argument("--cnn-normalize", choices=("matrix", "dataset"), default="dataset",
                   help="one mean/std from the training matrices (default) or each PR matrix standardised on its "
                        "own (the authors' notebook; hides differences of scale)")
    p.add_argument("--dask", action="store_true", help="run the batch steps on a Dask LocalCluster")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default 2)")
    p.add_argument("--dask-threads", action="store_true", help="LocalCluster workers as threads, not processes")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (tcp://host:port)")
    p.add_argument("--chunk-size", type=int, default=None, help="clouds per Dask task (default: automatic)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--out", default=None, help="directory for results.npz, summary.json and figures "
                                                "(a path ending in .npz: only the arrays)")
    args = p.parse_args(argv)
    if args.subjects < 2 or args.length < 10:
        p.error("--subjects must be >= 2 and --length >= 10")
    if args.workers < 1 or args.epochs < 0 or not args.cnn_width > 0 or args.batch_size < 1:
        p.error("--workers must be >= 1, --epochs >= 0, --batch-size >= 1 and --cnn-width > 0")
    if args.chunk_size is not None and args.chunk_size < 1:
        p.error("--chunk-size must be >= 1")
    show = not args.no_progress

    t_start = time.perf_counter()
    client, close = _open_cluster(args)
    if client is not None:
        print(f"      cluster ready in {time.perf_counter() - t_start:.1f} s")
    t0 = time.perf_counter()
    try:
        series, labels = generate(args.subjects, args.length, args.seed, args.effect)
        S, R, _ = series.shape
        md = args.maxdim
        clouds = mx.sliding_window(torch.from_numpy(series), 3, 1, drop_last=args.drop_last)  # (S, R, n, 3) view
        n_pts = int(clouds.shape[2])
        flat = clouds.reshape(S * R, n_pts, 3)
        print(f"[1/5] {S} subjects × {R} ROIs -> {S * R} clouds of {n_pts} points in R³, H0..H{md}")
        with _Progress(S * R, "diagrams", show) as bar:
            if client is not None:
                dg = rips_batch_distributed(flat, client, args.chunk_size, progress=bar.update, maxdim=md)
            else:  # a few subjects per call: one call per chunk keeps all threads busy and feeds the bar
                step = max(1, min(S, 4))
                parts = []
                for s in range(0, S, step):
                    parts.append(mx.vietoris_rips_batch(flat[s * R:min(S, s + step) * R], maxdim=md))
                    bar.update((min(S, s + step) - s) * R)
                dg = RaggedDiagrams.concat(parts)
        t1 = time.perf_counter()
        print(f"      diagrams in {t1 - t0:.1f} s ({(t1 - t0) / (S * R) * 1e3:.1f} ms per cloud)")

        subjects = [compact_ragged(dg.subset(s * R, (s + 1) * R)) for s in range(S)]  # own storage: cheap to ship
        with _Progress(S, "PR matrices", show) as bar:
            per_subject = map_tasks(client, pr_task, subjects, progress=bar.update, maxdim=md)
        pr = {key: np.stack([m[key] for m in per_subject]) for key in per_subject[0]}
        t2 = time.perf_counter()
        print(f"[2/5] PR matrices ({len(NETWORKS)} networks × {md + 1} dims × {S} subjects) in {t2 - t1:.1f} s")

        ps = None
        if not args.no_ps:
            per_dim = [dg.dimension(k) for k in range(md + 1)]
            rois = [[[per_dim[k][s * R + r].clone() for s in range(S)] for k in range(md + 1)] for r in range(R)]
            with _Progress(R, "PS matrices", show) as bar:
                ps = np.stack(map_tasks(client, ps_task, rois, progress=bar.update))  # (R, md+1, S, S)
            sep = ps_separation(ps, labels)  # (R, md+1)
            t3 = time.perf_counter()
            print(f"[3/5] PS matrices ({R} ROIs × {md + 1} dims, {S}×{S} each) in {t3 - t2:.1f} s; "
                  "mean between/within-group distance ratio per network:")
            print("      network | " + " | ".join(f"H{k}" for k in range(md + 1)))
            for net, sl in network_slices().items():
                mark = "  <- planted" if net == PLANTED else ""
                print(f"      {net:7s} | " + " | ".join(f"{np.nanmean(sep[sl, k]):.3f}" for k in range(md + 1)) + mark)
        else:
            t3 = t2
            print("[3/5] PS matrices skipped (--no-ps)")

        print(f"[4/5] Wilcoxon rank-sum P-plots per ROI pair, HC vs MCI, p < {args.alpha}")
        pplots, pvalues, summary_rows = {}, {}, []
        for net, n in NETWORKS.items():
            for k in range(md + 1):
                key = f"{net}_H{k}"
                P = pplot(pr[key], labels)
                pplots[key] = P
                pvalues[key] = P[np.triu_indices(n, 1)]
                summary_rows.append({"network": net, "dim": k, "significant": int((pvalues[key] < args.alpha).sum()),
                                     "pairs": int(pvalues[key].size)})
        print("      network | H | significant pairs | pairs | fraction")
        for row in summary_rows:
            mark = "  <- planted" if row["network"] == PLANTED else ""
            print(f"      {row['network']:7s} | {row['dim']} | {row['significant']:5d} | {row['pairs']:5d} | "
                  f"{row['significant'] / row['pairs']:.3f}{mark}")
        t4 = time.perf_counter()

        accuracy = {}
        if args.epochs > 0:
            print(f"[5/5] dual-path CNN per network and dimension ({args.epochs} epochs, width {args.cnn_width:g}, "
                  "fixed stratified 80/20 split, test accuracy after the last epoch)")
            with _Progress(len(pr), "CNN", show) as bar:
                for key, M in pr.items():
                    res = train_classifier(M, labels, epochs=args.epochs, width=args.cnn_width, head=args.cnn_head,
                                           batch_size=args.batch_size, seed=args.seed,
                                           normalize=args.cnn_normalize)
                    accuracy[key] = res
                    bar.update(1)
            n_test = next(iter(accuracy.values()))["n_test"]
            print(f"      test accuracy ({n_test} test subjects; chance 0.5)")
            print("      network | " + " | ".join(f"H{k}" for k in range(md + 1)))
            for net in NETWORKS:
                mark = "  <- planted" if net == PLANTED else ""
                print(f"      {net:7s} | " + " | ".join(f"{accuracy[f'{net}_H{k}']['test_acc']:.2f}"
                                                    for k in range(md + 1)) + mark)
        else:
            print("[5/5] classifier skipped (--epochs 0)")
        t5 = time.perf_counter()

        if args.out:
            arrays = {"labels": labels, **{f"PR_{k}": v for k, v in pr.items()},
                      **{f"p_{k}": v for k, v in pvalues.items()}, **{f"pplot_{k}": v for k, v in pplots.items()}}
            if ps is not None:
                arrays.update({f"PS_H{k}": ps[:, k] for k in range(md + 1)})
            if args.out.endswith(".npz"):
                np.savez_compressed(args.out, **arrays)
                print(f"saved {args.out}")
            else:
                os.makedirs(args.out, exist_ok=True)
                np.savez_compressed(os.path.join(args.out, "results.npz"), **arrays)
                summary = {"args": vars(args), "screen": summary_rows,
                           "accuracy": {k: v for k, v in accuracy.items()},
                           "seconds": {"diagrams": t1 - t0, "pr": t2 - t1, "ps": t3 - t2, "pplots": t4 - t3,
                                       "cnn": t5 - t4}}
                with open(os.path.join(args.out, "summary.json"), "w") as f:
                    json.dump(summary, f, indent=1)
                sl = network_slices()[PLANTED]
                examples = {f"{PLANTED} ROI 0, HC subject 0": dg[sl.start],
                            f"{PLANTED} ROI 0, MCI subject {S - 1}": dg[(S - 1) * R + sl.start]}
                files = save_plots(args.out, {t: [d.numpy() for d in v] for t, v in examples.items()}, pplots, md,
                                   args.alpha)
                print(f"saved {args.out}/results.npz, summary.json" + "".join(f", {os.path.basename(f)}"
                                                                            for f in files))
        print(f"total {time.perf_counter() - t_start:.1f} s")
    finally:
        close()
    return 0
