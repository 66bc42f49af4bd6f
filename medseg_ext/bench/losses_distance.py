"""Distance group (D) of the losses family vs scipy and MONAI (`medseg-ext bench losses_distance`).

Cases (same generated inputs for every implementation, this process, fixed seeds):

* ``edt-batch``: exact EDT of a B×C×S³ batch of blob masks (float32 out): ``distance_transform_edt``
  (one call, all volumes) vs a scipy ``distance_transform_edt`` loop over B×C.
* ``edt-128``: one 128³ volume (the issue's "at least 3× scipy" target; size ``paper`` only).
* ``hd-loss``: HausdorffDTLoss forward + backward (softmax, C channels) vs MONAI's.
* ``hd95``: ``hd95`` vs MONAI ``compute_hausdorff_distance(percentile=95)`` on one-hot masks.
* ``boundary``: ``boundary_loss`` forward + backward vs the LIVIAETS recipe (scipy ``one_hot2dist``
  per volume + einsum), written here since the authors' repository is not a package.

The ``check`` column is the max abs difference between our result and the peer's.
``time_ratio`` = peer median / medseg_ext median (> 1: medseg_ext is faster); CPU columns count all
threads' time (robust on a shared machine). Peak MiB: VmHWM growth of one call in a fresh process.
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch

from . import harness

PEERS = ("scipy", "monai")
SIZES = {"small": {"B": 2, "C": 3, "S": 48, "edt128": False},
         "paper": {"B": 2, "C": 3, "S": 96, "edt128": True}}


def make_masks(B: int, C: int, S: int, seed: int = 0) -> torch.Tensor:
    """(B, C, S, S, S) bool: per volume a union of 3 random ellipsoids (organ-like blobs)."""
    rng = np.random.default_rng(seed)
    ax = np.arange(S, dtype=np.float32)
    z, y, x = np.meshgrid(ax, ax, ax, indexing="ij")
    out = np.zeros((B, C, S, S, S), dtype=bool)
    for b in range(B):
        for c in range(C):
            for _ in range(3):
                cz, cy, cx = rng.uniform(0.2, 0.8, 3) * S
                rz, ry, rx = rng.uniform(0.08, 0.25, 3) * S
                out[b, c] |= ((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1
    return torch.from_numpy(out)


def make_labels(B: int, C: int, S: int, seed: int = 0) -> torch.Tensor:
    """(B, S, S, S) int64 class map: the blobs of make_masks painted over a background 0."""
    m = make_masks(B, C - 1, S, seed)
    lab = torch.zeros((B, S, S, S), dtype=torch.int64)
    for c in range(C - 1):
        lab[m[:, c]] = c + 1
    return lab


def _peer(name: str):
    try:
        if name == "scipy":
            from scipy import ndimage
            return ndimage
        if name == "monai":
            import monai.losses
            import monai.metrics
            return monai
    except Exception:  # noqa: BLE001
        return None
    return None


def make_case(case: str, impl: str, B: int, C: int, S: int) -> harness.Case:
    """Factory for the CaseSpecs (peak memory is measured in a fresh process)."""
    from ..losses import distance as D

    if case == "edt":
        m = make_masks(B, C, S)
        if impl == "medseg_ext":
            return harness.Case(run=lambda: D.distance_transform_edt(m))
        nd = _peer("scipy")
        mn = m.numpy()
        return harness.Case(run=lambda: [nd.distance_transform_edt(v) for v in mn.reshape((-1,) + mn.shape[2:])])
    raise ValueError(case)


def _time(fn: Callable, repeat: int, warmup: int = 1) -> dict:
    # GPU rows (when CUDA is in use) time finished work
    device = "cuda" if torch.cuda.is_available() and torch.cuda.is_initialized() else "cpu"
    r = harness.time_call(fn, warmup=warmup, repeat=repeat, device=device)
    return {"median_s": r["median"], "min_s": r["min"], "cpu_s": r["cpu_median"]}


def _maxdiff(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    if not np.array_equal(np.isfinite(a), np.isfinite(b)):
        return float("inf")
    return float(np.abs(a[both] - b[both]).max()) if both.any() else 0.0


def _edt_rows(B, C, S, repeat, measure_memory, out, label, device) -> list:
    from ..losses import distance as D

    nd = _peer("scipy")
    m = make_masks(B, C, S)
    md = m.to(device)
    ours = D.distance_transform_edt(md).cpu()
    rows = [{"case": label, "impl": "medseg_ext", **_time(lambda: D.distance_transform_edt(md), repeat)}]
    if nd is not None:
        mn = m.numpy()
        vols = mn.reshape((-1,) + mn.shape[2:])
        ref = np.stack([nd.distance_transform_edt(v) for v in vols]).reshape(mn.shape)
        rows[0]["check"] = f"max|Δ| vs scipy {_maxdiff(ours.numpy(), ref):.1e}"
        rows.append({"case": label, "impl": "scipy loop", **_time(
            lambda: [nd.distance_transform_edt(v) for v in vols], max(1, min(repeat, 3)))})
    if measure_memory and device == "cpu" and harness.cpu_peak_supported():
        for r in rows:
            impl = "medseg_ext" if r["impl"] == "medseg_ext" else "scipy"
            mem = harness.peak_memory_cpu(harness.CaseSpec("medseg_ext.bench.losses_distance", "make_case",
                                                           {"case": "edt", "impl": impl, "B": B, "C": C, "S": S}))
            r["peak_bytes"] = mem.get("peak_bytes")
            if "error" in mem:
                out(f"note: peak memory of {r['impl']}: {mem['error']}")
    return rows


def _hd_loss_rows(B, C, S, repeat, out, device) -> list:
    from ..losses import distance as D

    monai = _peer("monai")
    g = torch.Generator().manual_seed(1)
    logits = torch.randn((B, C, S, S, S), generator=g).to(device)
    target = torch.nn.functional.one_hot(make_labels(B, C, S), C).movedim(-1, 1).float().to(device)

    def fwd_bwd(loss_fn):
        def call():
            x = logits.detach().requires_grad_(True)
            v = loss_fn(x, target)
            v.backward()
            return v.detach(), x.grad
        return call

    ours = D.HausdorffDTLoss(softmax=True)
    v0, g0 = fwd_bwd(ours)()
    label = f"hd-loss fwd+bwd {B}×{C}×{S}³"
    rows = [{"case": label, "impl": "medseg_ext", **_time(fwd_bwd(ours), repeat)}]
    if monai is not None:
        peer = monai.losses.HausdorffDTLoss(softmax=True)
        v1, g1 = fwd_bwd(peer)()
        rows[0]["check"] = f"loss Δ {abs(float(v0) - float(v1)):.1e}, grad max|Δ| {_maxdiff(g0.cpu(), g1.cpu()):.1e}"
        rows.append({"case": label, "impl": "MONAI HausdorffDTLoss",
                     **_time(fwd_bwd(peer), max(1, min(repeat, 3)))})
    return rows


def _metric_rows(B, C, S, repeat, out, device) -> list:
    from ..losses import distance as D

    monai = _peer("monai")
    target = torch.nn.functional.one_hot(make_labels(B, C, S, seed=0), C).movedim(-1, 1).float().to(device)
    pred = torch.nn.functional.one_hot(make_labels(B, C, S, seed=5), C).movedim(-1, 1).float().to(device)
    label = f"hd95 {B}×{C}×{S}³"
    mine = D.hd95(pred, target)
    rows = [{"case": label, "impl": "medseg_ext", **_time(lambda: D.hd95(pred, target), repeat)}]
    if monai is not None:
        def peer():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return monai.metrics.compute_hausdorff_distance(pred, target, percentile=95)
        rows[0]["check"] = f"max|Δ| vs MONAI {_maxdiff(mine.cpu(), peer().cpu()):.1e}"
        rows.append({"case": label, "impl": "MONAI compute_hausdorff_distance", **_time(peer, max(1, min(repeat, 3)))})
    return rows


def _boundary_rows(B, C, S, repeat, out, device) -> list:
    from ..losses import distance as D

    nd = _peer("scipy")
    g = torch.Generator().manual_seed(2)
    logits = torch.randn((B, C, S, S, S), generator=g).to(device)
    lab = make_labels(B, C, S).to(device)

    def ours():
        x = logits.detach().requires_grad_(True)
        v = D.boundary_loss(x, lab)
        v.backward()
        return v.detach()

    label = f"boundary fwd+bwd {B}×{C}×{S}³"
    v0 = ours()
    rows = [{"case": label, "impl": "medseg_ext", **_time(ours, repeat)}]
    if nd is not None:
        def liviaets():  # one_hot2dist per (b, c) with scipy, then SurfaceLoss on classes 1..C-1
            oh = torch.nn.functional.one_hot(lab, C).movedim(-1, 1).cpu().numpy().astype(bool)
            dist = np.zeros(oh.shape, dtype=np.float32)
            for b in range(B):
                for c in range(C):
                    pos = oh[b, c]
                    if pos.any():
                        neg = ~pos
                        dist[b, c] = (nd.distance_transform_edt(neg) * neg
                                      - (nd.distance_transform_edt(pos) - 1) * pos)
            x = logits.detach().requires_grad_(True)
            probs = torch.softmax(x, 1)
            dm = torch.from_numpy(dist).to(device)
            v = torch.einsum("bk...,bk...->bk...", probs[:, 1:], dm[:, 1:]).mean()
            v.backward()
            return v.detach()
        rows[0]["check"] = f"loss Δ {abs(float(v0) - float(liviaets())):.1e}"
        rows.append({"case": label, "impl": "LIVIAETS recipe (scipy)", **_time(liviaets, max(1, min(repeat, 3)))})
    return rows


def run(device: str = "cpu", size: str = "small", repeat: int = 5, measure_memory: bool = True, out=print) -> dict:
    """Runs the benchmark, prints the table and returns the results dict."""
    if size not in SIZES:
        raise ValueError(f"size: expected one of {tuple(SIZES)}, got {size!r}")
    device = str(device)
    for name in PEERS:
        if _peer(name) is None:
            out(f"note: peer {name} is not importable; its rows are skipped")
    cfg = SIZES[size]
    B, C, S = cfg["B"], cfg["C"], cfg["S"]
    out(f"threads: torch {torch.get_num_threads()}; inputs {B}×{C}×{S}³ blob masks; device {device}")
    rows = _edt_rows(B, C, S, repeat, measure_memory, out, f"edt-batch {B}×{C}×{S}³", device)
    if cfg["edt128"]:
        rows += _edt_rows(1, 1, 128, repeat, measure_memory, out, "edt-128 1×1×128³", device)
    rows += _hd_loss_rows(B, C, S, repeat, out, device)
    rows += _metric_rows(B, C, S, repeat, out, device)
    rows += _boundary_rows(B, C, S, repeat, out, device)
    base = {}
    for r in rows:
        r["median_ms"] = r["median_s"] * 1e3
        r["cpu_ms"] = r["cpu_s"] * 1e3
        if r.get("peak_bytes") is not None:
            r["peak_MiB"] = r["peak_bytes"] / harness.MiB
        b = base.setdefault(r["case"], r)
        r["time_ratio"] = r["median_s"] / b["median_s"] if b["median_s"] else None
        r["cpu_ratio"] = r["cpu_s"] / b["cpu_s"] if b["cpu_s"] else None
    cols = ["case", "impl", "median_ms", "cpu_ms", "time_ratio", "cpu_ratio", "peak_MiB", "check"]
    table = harness.markdown_table(rows, cols)
    out(table)
    out("time_ratio: peer median / medseg_ext median (> 1: medseg_ext is faster); cpu_ratio: the same in process "
        "CPU time (all threads). Peak MiB: VmHWM growth of one call in a fresh process.")
    return {"rows": rows, "table": table, "size": size}
