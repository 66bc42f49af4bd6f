"""Detection-loss benchmark: Focal + GIoU + DFL forward + backward on 5 FPN levels, medseg_ext vs the
same losses written as eager PyTorch (mmdetection's formulas, which is what mmdet runs on CPU) and
vs torchvision.ops; plus the LA modulation against one head forward.

Inputs (fixed seed, the same tensors for every implementation): an ATSS/GFL-style batch at
mmdet's 1333×800 scale, strides 8..128: 100×167 + 50×84 + 25×42 + 13×21 + 7×11 = 22,300
locations per image, one anchor each, 12 classes (CLCXray). The loss is
    focal(cls logits (N, 12), labels, avg_factor = #pos)
  + 2.0 · GIoU(pred boxes (P, 4), gt boxes, weight = centerness, avg_factor = Σ weight)
  + 0.25 · DFL(bin logits (4P, 17), continuous targets, weight = centerness ×4, avg_factor = 4·Σ weight)
with P = positives (ATSS: a few % of the locations) or, in the "dense" scenario, P = N (box losses
on every location, as dense one-stage heads without assignment masks compute them).
"""
from __future__ import annotations


import os
import statistics
import time

import torch

from . import harness

LEVELS = ((100, 167), (50, 84), (25, 42), (13, 21), (7, 11))
LOCATIONS_PER_IMAGE = sum(h * w for h, w in LEVELS)
NUM_CLASSES = 12
NUM_BINS = 17
SIZES = {"small": [(2, 0.02), (2, 1.0)], "paper": [(8, 0.02), (8, 1.0)]}  # (batch, positive fraction)
PEERS = ("torchvision",)
IMPLS = ("medseg_ext", "eager", "torchvision")
CONVENTIONS = {
    "medseg_ext": "fused C++ kernels, gradient in forward",
    "eager": "mmdet formulas in plain PyTorch (py_sigmoid_focal_loss, bbox_overlaps giou, DFL)",
    "torchvision": "torchvision.ops sigmoid_focal_loss (one-hot targets) + generalized_box_iou_loss; DFL eager",
}


def make_inputs(batch: int, pos_fraction: float, seed: int = 0, device: str = "cpu"):
    """The benchmark's inputs, drawn on the CPU from ``seed`` (identical on every device), then moved."""
    g = torch.Generator().manual_seed(seed)
    n = batch * LOCATIONS_PER_IMAGE
    p = max(1, int(round(n * pos_fraction)))
    cls = torch.randn(n, NUM_CLASSES, generator=g) - 2.0
    labels = torch.full((n,), NUM_CLASSES, dtype=torch.int64)
    pos = torch.randperm(n, generator=g)[:p]
    labels[pos] = torch.randint(0, NUM_CLASSES, (p,), generator=g)
    xy = torch.rand(p, 2, generator=g) * 800
    gt = torch.cat([xy, xy + torch.rand(p, 2, generator=g) * 200 + 4], 1)
    pred = gt + torch.randn(p, 4, generator=g) * 8
    ctr = torch.rand(p, generator=g)
    bins = torch.randn(4 * p, NUM_BINS, generator=g)
    dist = torch.rand(4 * p, generator=g) * (NUM_BINS - 1 - 0.01)
    d = dict(cls=cls, labels=labels, pred=pred, gt=gt, ctr=ctr, bins=bins, dist=dist)
    d = {k: v.to(device) for k, v in d.items()}
    d["num_pos"] = p
    return d


def _loss_fn(impl: str):
    from ..reference import detection as ref

    if impl == "medseg_ext":
        from ..losses import detection as D

        def loss(d):
            w = d["ctr"]
            return (D.sigmoid_focal_loss(d["cls"], d["labels"], avg_factor=float(d["num_pos"]))
                    + D.giou_loss(d["pred"], d["gt"], w, avg_factor=float(w.sum()), loss_weight=2.0)
                    + D.distribution_focal_loss(d["bins"], d["dist"], w.repeat_interleave(4),
                                                avg_factor=4 * float(w.sum()), loss_weight=0.25))
        return loss
    if impl == "eager":
        def loss(d):
            w = d["ctr"]
            return (ref.torch_sigmoid_focal_loss(d["cls"], d["labels"], avg_factor=float(d["num_pos"]))
                    + ref.torch_giou_loss(d["pred"], d["gt"], w, avg_factor=float(w.sum()), loss_weight=2.0)
                    + ref.torch_distribution_focal_loss(d["bins"], d["dist"], w.repeat_interleave(4),
                                                        avg_factor=4 * float(w.sum()), loss_weight=0.25))
        return loss
    if impl == "torchvision":
        import torchvision.ops as tvo

        def loss(d):
            w = d["ctr"]
            target = torch.nn.functional.one_hot(d["labels"], NUM_CLASSES + 1)[:, :NUM_CLASSES].to(d["cls"].dtype)
            focal = tvo.sigmoid_focal_loss(d["cls"], target, reduction="sum") / (d["num_pos"] + ref.FLOAT32_EPS)
            giou = (tvo.generalized_box_iou_loss(d["pred"], d["gt"]) * w).sum() / (float(w.sum()) + ref.FLOAT32_EPS)
            return (focal + 2.0 * giou
                    + ref.torch_distribution_focal_loss(d["bins"], d["dist"], w.repeat_interleave(4),
                                                        avg_factor=4 * float(w.sum()), loss_weight=0.25))
        return loss
    raise ValueError(f"impl: expected one of {IMPLS}, got {impl!r}")


def measure(case: harness.Case, repeat: int, warmup: int = 2, device: str = "cpu") -> dict:
    """Wall seconds (median, min, max) and median process CPU seconds (all threads summed) of one call.
    The minimum is the least disturbed call when other jobs share the cores. On CUDA every call is
    synchronised before and after, so wall time is the GPU time of the call plus its launches."""
    for _ in range(warmup):
        if case.reset is not None:
            case.reset()
        case.run()
    wall, cpu = [], []
    for _ in range(repeat):
        if case.reset is not None:
            case.reset()
        harness._sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        case.run()
        harness._sync(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"median": statistics.median(wall), "min": min(wall), "max": max(wall), "cpu": statistics.median(cpu)}


def make_case(impl: str, batch: int, pos_fraction: float, seed: int = 0, device: str = "cpu") -> harness.Case:
    fn = _loss_fn(impl)
    d = make_inputs(batch, pos_fraction, seed, device)
    leaves = [d[k].requires_grad_(True) for k in ("cls", "pred", "bins")]

    def run():
        loss = fn(d)
        loss.backward()
        return loss

    def reset():
        for t in leaves:
            t.grad = None

    return harness.Case(run=run, reset=reset)


# ---------------------------------------------------------------- LA modulation vs one head forward

LA_PARTS = ("head", "head_cl", "atss_head", "modulate", "la", "la_autograd", "la_c0", "reg_head", "la_reg")
# the branch each part belongs to: LAcls parts are compared with the cls branch, LAreg with the reg branch
_BRANCH = {"reg_head": "reg_head", "la_reg": "reg_head"}
LA_PART_NOTES = {
    "head": "one cls-branch forward: 4 × (conv3×3 + GN + ReLU) + classifier, NCHW (PyTorch default), no_grad",
    "head_cl": "the same forward in channels_last (PyTorch's fastest CPU layout for these convs)",
    "atss_head": "one whole ATSS head forward (cls + reg towers, classifier, 4·17-bin regressor, centerness), NCHW",
    "modulate": "the fused x·(1 + σ(g1) − σ(g2)) pass alone",
    "la": "LabelAwareModulation (vjp='auto': the hand-written tower pass) — first pass + both label-gradient VJPs "
          "+ modulation",
    "la_autograd": "the same with vjp='autograd' (previous engine: first pass with graph + two torch.autograd.grad)",
    "la_c0": "LAcls with a = 0.5, b = 1, c = 0 (Eq. 4 form, no confuse term: one VJP), tower pass",
    "reg_head": "one reg-branch forward: 4 × (conv3×3 + GN + ReLU) + the 4·17-bin regressor conv, NCHW, no_grad",
    "la_reg": "LabelAwareModulation(mode='reg') on the reg branch (Eq. 6: x·(0.5 + σ(g)), one VJP of the target "
              "bins' scores), tower pass",
}


def _tower(channels: int, depth: int = 4):
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Conv2d(channels, channels, 3, padding=1),
                   torch.nn.GroupNorm(max(1, min(32, channels // 8)), channels),
                   torch.nn.ReLU()]
    return layers


def make_la_case(part: str, batch: int = 2, channels: int = 64, size=(50, 84), seed: int = 0,
                 device: str = "cpu") -> harness.Case:
    """One part of the LA cost table (see LA_PARTS / LA_PART_NOTES); the cls head is the one LA wraps.
    GroupNorm has 8 groups at 64 channels and 32 (ATSS) at 256. Weights and inputs are drawn on the CPU
    from ``seed``, then moved to ``device``."""
    from ..losses import label_aware as LA

    torch.manual_seed(seed)
    head = torch.nn.Sequential(*_tower(channels), torch.nn.Conv2d(channels, NUM_CLASSES, 3, padding=1)).to(device)
    x = torch.randn(batch, channels, *size).to(device)
    labels = torch.randint(0, NUM_CLASSES + 1, (batch,) + tuple(size)).to(device)
    g1, g2 = torch.randn_like(x), torch.randn_like(x)
    if part == "head":
        def run():
            with torch.no_grad():
                return head(x)
    elif part == "head_cl":
        head_cl = head.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)

        def run():
            with torch.no_grad():
                return head_cl(x_cl)
    elif part == "atss_head":
        reg_tower = torch.nn.Sequential(*_tower(channels)).to(device)
        reg_out = torch.nn.Conv2d(channels, 4 * NUM_BINS, 3, padding=1).to(device)
        ctr_out = torch.nn.Conv2d(channels, 1, 3, padding=1).to(device)

        def run():
            with torch.no_grad():
                r = reg_tower(x)
                return head(x), reg_out(r), ctr_out(r)
    elif part == "modulate":
        def run():
            return LA.la_modulate(x, g1, g2)
    elif part in ("reg_head", "la_reg"):
        torch.manual_seed(seed + 1)
        reg_head = torch.nn.Sequential(*_tower(channels),
                                       torch.nn.Conv2d(channels, 4 * NUM_BINS, 3, padding=1)).to(device)
        bins = torch.randint(0, NUM_BINS - 1, (batch, 4) + tuple(size)).to(device)
        if part == "reg_head":
            def run():
                with torch.no_grad():
                    return reg_head(x)
        else:
            la_reg = LA.LabelAwareModulation(reg_head, mode="reg", num_bins=NUM_BINS)

            def run():
                return la_reg(x, bins)
    elif part in ("la", "la_autograd", "la_c0"):
        la = (LA.LabelAwareModulation(head, a=0.5, b=1.0, c=0.0) if part == "la_c0" else
              LA.LabelAwareModulation(head, vjp="auto" if part == "la" else "autograd"))

        def run():
            return la(x, labels)
    else:
        raise ValueError(f"part: expected one of {LA_PARTS}, got {part!r}")
    return harness.Case(run=run)


def measure_interleaved(cases: dict, repeat: int, warmup: int = 2, device: str = "cpu") -> dict:
    """Like :func:`measure`, but the cases take turns call by call, so that a load change on a shared
    machine hits every case alike (ratios of these numbers are what the LA table reports)."""
    for _ in range(warmup):
        for case in cases.values():
            case.run()
    wall = {k: [] for k in cases}
    cpu = {k: [] for k in cases}
    for _ in range(repeat):
        for k, case in cases.items():
            harness._sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            case.run()
            harness._sync(device)
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return {k: {"median": statistics.median(wall[k]), "min": min(wall[k]), "max": max(wall[k]),
                "cpu": statistics.median(cpu[k]), "cpu_min": min(cpu[k])} for k in cases}


LA_CONFIGS = ({"channels": 64, "size": (50, 84)}, {"channels": 256, "size": (25, 42)})


def la_table(repeat: int = 10, warmup: int = 2, out=print, channels: int = 64, size=(50, 84), batch: int = 2,
             device: str = "cpu") -> list:
    t = measure_interleaved({p: make_la_case(p, batch=batch, channels=channels, size=size, device=device)
                             for p in LA_PARTS}, repeat, warmup, device)
    rows = [{"part": p, "channels": channels, "size": tuple(size), "median_s": t[p]["median"], "min_s": t[p]["min"],
             "cpu_s": t[p]["cpu"], "cpu_min_s": t[p]["cpu_min"]} for p in LA_PARTS]
    base = {r["part"]: r for r in rows}
    out(f"LA cost against one head forward (B={batch}, {channels} ch, {size[0]}×{size[1]}, {NUM_CLASSES} classes; "
        f"torch threads {torch.get_num_threads()}; parts interleaved call by call, {repeat} rounds):")
    if str(device).startswith("cuda"):
        # process CPU time says nothing about GPU work: ratios of the synchronised wall times
        table = [{"part": r["part"], "median ms": r["median_s"] * 1e3, "min ms": r["min_s"] * 1e3,
                  "× head (median)": r["median_s"] / base["head"]["median_s"],
                  "× head_cl (median)": r["median_s"] / base["head_cl"]["median_s"],
                  "× atss_head (median)": r["median_s"] / base["atss_head"]["median_s"],
                  "× own branch (median)": r["median_s"] / base[_BRANCH.get(r["part"], "head")]["median_s"]}
                 for r in rows]
    else:
        table = [{"part": r["part"], "median ms": r["median_s"] * 1e3, "min ms": r["min_s"] * 1e3,
                  "cpu ms": r["cpu_s"] * 1e3, "× head (min wall)": r["min_s"] / base["head"]["min_s"],
                  "× head (cpu)": r["cpu_s"] / base["head"]["cpu_s"],
                  "× head_cl (cpu)": r["cpu_s"] / base["head_cl"]["cpu_s"],
                  "× atss_head (cpu)": r["cpu_s"] / base["atss_head"]["cpu_s"],
                  "× own branch (cpu)": r["cpu_s"] / base[_BRANCH.get(r["part"], "head")]["cpu_s"]} for r in rows]
    out(harness.markdown_table(table))
    return rows


def run(device: str = "cpu", size: str = "small", repeat: int = 10, warmup: int = 2, measure_memory: bool = True,
        out=print) -> dict:
    if size not in SIZES:
        raise ValueError(f"size: expected one of {tuple(SIZES)}, got {size!r}")
    device = str(device)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("device: 'cuda' asked for, but torch sees no CUDA device")
        # the medseg_ext rows take the Triton detection kernels (medseg_ext/triton/detection.py)
        where = f"device {device} ({torch.cuda.get_device_name()}), medseg_ext backend triton"
    elif device == "cpu":
        where = f"device cpu; torch threads {torch.get_num_threads()}"
    else:
        raise ValueError(f"device: expected 'cpu' or 'cuda[:N]', got {device!r}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    out(f"{where}; load average {load:.1f}; {LOCATIONS_PER_IMAGE} locations per image "
        f"(5 FPN levels), {NUM_CLASSES} classes, {NUM_BINS} bins")
    rows = []
    for batch, frac in SIZES[size]:
        n = batch * LOCATIONS_PER_IMAGE
        p = max(1, int(round(n * frac)))
        scenario = f"B={batch}, N={n}, P={p}" + (" (dense)" if frac >= 1 else " (ATSS positives)")
        base = None
        for impl in IMPLS:
            spec = harness.CaseSpec("medseg_ext.bench.detection", "make_case",
                                    dict(impl=impl, batch=batch, pos_fraction=frac, device=device))
            try:
                case = spec.build()
                value = float(case.run().detach())
                t = measure(case, repeat, warmup, device)
                cpu = t["cpu"]
            except Exception as exc:  # noqa: BLE001 - one failing peer must not end the run
                out(f"note: {impl} failed on {scenario}: {type(exc).__name__}: {exc}")
                continue
            mem = harness.peak_memory(spec, device, case=case if device.startswith("cuda") else None) \
                if measure_memory else {"error": "not measured"}
            row = {"scenario": scenario, "impl": impl, "loss": value, "median_s": t["median"], "min_s": t["min"],
                   "max_s": t["max"], "cpu_s": cpu, "peak_bytes": mem.get("peak_bytes"), "conventions": CONVENTIONS[impl]}
            if base is None:
                base = row
            row["time_ratio"] = row["median_s"] / base["median_s"]
            row["cpu_ratio"] = row["cpu_s"] / base["cpu_s"]
            row["min_ratio"] = row["min_s"] / base["min_s"]
            row["mem_ratio"] = (row["peak_bytes"] / base["peak_bytes"]
                                if row["peak_bytes"] and base["peak_bytes"] else None)
            rows.append(row)
            del case
    out("")
    out(format_table(rows))
    out("")
    out("time ×ours (median wall), min ×ours (fastest call), cpu ×ours (process CPU time, all threads, "
        "OpenMP spin-waits included), mem ×ours: implementation / medseg_ext on the same inputs (> 1: medseg_ext "
        "is faster / smaller). Loss values agree to float32 rounding (torchvision's GIoU uses its own eps = 1e-7 rule).")

    la_rows = []
    for cfg in LA_CONFIGS:
        out("")
        la_rows += la_table(repeat, warmup, out, device=device, **cfg)
    out("; ".join(f"{p}: {note}" for p, note in LA_PART_NOTES.items()) + ". The second (trained) head pass is "
        "not included.")
    return {"benchmark": "focal + giou + dfl forward+backward; LA modulation", "size": size, "repeat": repeat,
            "load_average": load, "rows": rows, "la_rows": la_rows}


def format_table(rows) -> str:
    return harness.markdown_table([{
        "scenario": r["scenario"], "impl": r["impl"], "loss": f"{r['value'] if 'value' in r else r['loss']:.6f}",
        "median ms": r["median_s"] * 1e3, "min ms": r["min_s"] * 1e3, "max ms": r["max_s"] * 1e3,
        "cpu ms": r["cpu_s"] * 1e3,
        "peak MiB": r["peak_bytes"] / harness.MiB if r["peak_bytes"] is not None else None,
        "time ×ours": r["time_ratio"], "min ×ours": r["min_ratio"], "cpu ×ours": r["cpu_ratio"],
        "mem ×ours": r["mem_ratio"],
    } for r in rows])
