"""LRP family benchmark: medseg_ext vs Zennit and Captum on MONAI BasicUNet with random weights.

Cases (one input, fixed seeds, same process):

* ``fwd+bwd``: a plain forward + backward of the net (input and parameter gradients): the cost
  LRP is compared with.
* ``medseg eps``: medseg_ext ε-LRP (the paper's EpsilonComposite), forward + one relevance pass
  for one region seed (threshold mask of the sigmoid output, the largest object).
* ``medseg EpsilonPlus`` / ``medseg Alpha2Beta1``: the same with those composites.
* ``zennit EpsilonPlus`` / ``zennit Alpha2Beta1``: Zennit's Gradient attributor with the composite
  (instance norm has no Zennit rule: it is differentiated by autograd).
* ``captum LRP``: Captum's LRP (reported as failing when it cannot run the net).
* ``K=8 one pass`` vs ``K=8 single passes``: 8 region seeds in one batched relevance pass vs 8
  forward+relevance calls.

Sizes: ``small`` (default, ≈ 1–2 min on 2 cores) = 2-D 1×1×256² BasicUNet features
(32, 32, 64, 128, 256, 32); ``paper`` adds the issue's 2-D features (32, 64, 128, 256, 512, 32) net;
``large`` = the 3-D 1×1×96³ BasicUNet (MONAI default features; slow on a CPU: one timed call per
row, no warm-up, no K = 8 rows).
Times: median wall seconds and median process CPU seconds per call (all threads; the steadier
figure on a shared machine); ``×fwd+bwd`` = time / plain forward+backward; ``×zennit`` = Zennit's
time / ours for the same composite.
"""
from __future__ import annotations

import traceback
from typing import Optional

import torch

from . import harness

PEERS = ("captum", "zennit", "monai")
SIZES = {
    "small": [("2d-256-f32", 2, (1, 1, 256, 256), (32, 32, 64, 128, 256, 32))],
    "paper": [("2d-256-f32", 2, (1, 1, 256, 256), (32, 32, 64, 128, 256, 32)),
              ("2d-256-f512", 2, (1, 1, 256, 256), (32, 64, 128, 256, 512, 32))],
    "large": [("3d-96", 3, (1, 1, 96, 96, 96), (32, 32, 64, 128, 256, 32))],
}


def make_net(dims: int, features, device: str = "cpu", seed: int = 0):
    from monai.networks.nets import BasicUNet
    torch.manual_seed(seed)
    net = BasicUNet(spatial_dims=dims, in_channels=1, out_channels=1, features=tuple(features)).to(device).eval()
    return net


def _seed_masks(logits, K):
    """K region masks: the thresholded output split into K horizontal bands (K regions of one map)."""
    prob = torch.sigmoid(logits)[:, 0]
    m = prob > 0.5
    if m.sum() == 0:
        m = prob >= prob.median()
    H = m.shape[1]
    bands = torch.zeros((K,) + tuple(m.shape), dtype=torch.bool, device=m.device)
    for k in range(K):
        bands[k, :, k * H // K:(k + 1) * H // K] = m[:, k * H // K:(k + 1) * H // K]
    return bands


def make_case(impl: str, dims: int, shape, features, device: str = "cpu", K: int = 1) -> harness.Case:
    from medseg_ext import lrp
    net = make_net(dims, features, device)
    torch.manual_seed(1)
    x = torch.rand(shape, device=device)
    if impl == "fwd+bwd":
        def run():
            xx = x.clone().requires_grad_(True)
            net.zero_grad(set_to_none=True)
            net(xx).sum().backward()
        return harness.Case(run)
    if impl.startswith("medseg"):
        comp = {"medseg eps": lambda: lrp.EpsilonComposite(), "medseg EpsilonPlus": lambda: lrp.EpsilonPlus(),
                "medseg Alpha2Beta1": lambda: lrp.EpsilonAlpha2Beta1(),
                "medseg GammaBox": lambda: lrp.EpsilonGammaBox(0.0, 1.0)}[impl.split(" K")[0]]()
        if impl.endswith("singles"):
            def run():
                for k in range(K):
                    eng = lrp.LRP(net, comp)
                    z = eng.forward(x)
                    eng.relevance(lrp.make_seed(z, _seed_masks(z, K)[k:k + 1], 0)[0])
            return harness.Case(run)

        def run():
            eng = lrp.LRP(net, comp)
            z = eng.forward(x)
            seed = lrp.make_seed(z, _seed_masks(z, K), 0)
            return eng.relevance(seed if K > 1 else seed[0])
        return harness.Case(run)
    if impl.startswith("zennit"):
        import zennit.composites as zc
        from zennit.attribution import Gradient
        name = {"zennit EpsilonPlus": "EpsilonPlus", "zennit Alpha2Beta1": "EpsilonAlpha2Beta1",
                "zennit GammaBox": "EpsilonGammaBox"}[impl]
        kw = {"low": 0.0, "high": 1.0} if name == "EpsilonGammaBox" else {}
        comp = getattr(zc, name)(**kw)
        with torch.no_grad():
            z0 = net(x)
        seed = lrp.make_seed(z0, _seed_masks(z0, 1), 0)[0]

        def run():
            with Gradient(model=net, composite=comp) as attributor:
                attributor(x.clone(), seed)
        return harness.Case(run)
    if impl == "captum LRP":
        from captum.attr import LRP as CaptumLRP

        class Seeded(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, xx):
                return self.inner(xx).flatten(1)

        def run():
            CaptumLRP(Seeded(net)).attribute(x.clone(), target=0)
        return harness.Case(run)
    raise ValueError(f"impl: unknown {impl!r}")


def _measure(impl, dims, shape, features, device, K, repeat, measure_memory, out, warmup=1):
    row = {"net": None, "impl": impl}
    try:
        case = make_case(impl, dims, shape, features, device, K)
        t = harness.time_call(case.run, warmup=warmup, repeat=repeat, device=device)
        row.update(median_s=t["median"], min_s=t["min"], cpu_s=t["cpu_median"])
        if measure_memory:
            spec = harness.CaseSpec(__name__, "make_case", dict(impl=impl, dims=dims, shape=tuple(shape),
                                                                features=tuple(features), device=device, K=K))
            mem = harness.peak_memory(spec, device, case=case)
            if "peak_bytes" in mem and mem["peak_bytes"] is not None:
                row["peak_MiB"] = mem["peak_bytes"] / harness.MiB
    except Exception as exc:  # noqa: BLE001
        msg = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        row["error"] = msg
        out(f"  {impl}: fails: {msg}")
    return row


def run(device: str = "cpu", size: str = "small", repeat: int = 3, measure_memory: bool = False, out=print) -> dict:
    if size not in SIZES:
        raise ValueError(f"size: expected one of {tuple(SIZES)}, got {size!r}")
    try:
        import monai  # noqa: F401
    except Exception:  # noqa: BLE001
        out("note: monai is not importable; the LRP benchmark needs monai.networks.nets.BasicUNet")
        return {"rows": [], "table": "", "size": size}
    have = {}
    for peer in ("captum", "zennit"):
        try:
            __import__(peer)
            have[peer] = True
        except Exception:  # noqa: BLE001
            have[peer] = False
            out(f"note: peer {peer} is not importable; its rows are skipped")
    impls = ["fwd+bwd", "medseg eps"]
    for comp in ("EpsilonPlus", "Alpha2Beta1", "GammaBox"):  # each composite next to its Zennit row
        impls += [f"medseg {comp}"] + ([f"zennit {comp}"] if have["zennit"] else [])
    if have["captum"]:
        impls += ["captum LRP"]
    rows = []
    for name, dims, shape, feats in SIZES[size]:
        out(f"[{name}] shape {shape} features {feats}")
        slow = dims == 3 and not str(device).startswith("cuda")   # 3-D on a CPU: one call per row
        base = None
        for impl in impls:
            r = _measure(impl, dims, shape, feats, device, 1, 1 if slow else repeat, measure_memory, out,
                         warmup=0 if slow else 1)
            r["net"] = name
            rows.append(r)
            if impl == "fwd+bwd" and "median_s" in r:
                base = r["median_s"]
            out(f"  {impl}: {r.get('median_s', float('nan')):.3f} s (cpu {r.get('cpu_s', float('nan')):.3f} s)")
        for impl in (() if slow else ("medseg eps K8", "medseg eps K8 singles")):
            singles = impl.endswith("singles")   # 8 forward+relevance calls per timed call: one timed call, no warm-up
            r = _measure(impl, dims, shape, feats, device, 8, 1 if singles else max(1, repeat - 1), measure_memory,
                         out, warmup=0 if singles else 1)
            r["net"] = name
            rows.append(r)
            out(f"  {impl}: {r.get('median_s', float('nan')):.3f} s (cpu {r.get('cpu_s', float('nan')):.3f} s)")
        by = {r["impl"]: r for r in rows if r["net"] == name}
        for r in rows:
            if r["net"] != name or "median_s" not in r:
                continue
            if base:
                r["x_fwd_bwd"] = r["median_s"] / base
            peer = {"medseg EpsilonPlus": "zennit EpsilonPlus", "medseg Alpha2Beta1": "zennit Alpha2Beta1",
                    "medseg GammaBox": "zennit GammaBox"}.get(r["impl"])
            if peer and "median_s" in by.get(peer, {}):
                r["x_zennit"] = by[peer]["median_s"] / r["median_s"]
            if r["impl"] == "medseg eps K8" and "median_s" in by.get("medseg eps", {}):
                r["x_one_region"] = r["median_s"] / by["medseg eps"]["median_s"]
            if r["impl"] == "medseg eps K8 singles" and "median_s" in by.get("medseg eps K8", {}):
                r["x_one_region"] = r["median_s"] / by["medseg eps"]["median_s"]
    for r in rows:  # the same ratios in process CPU time
        by = {q["impl"]: q for q in rows if q["net"] == r["net"]}
        b = by.get("fwd+bwd", {}).get("cpu_s")
        if "cpu_s" in r and b:
            r["cpu_x_fwd_bwd"] = r["cpu_s"] / b
        peer = {"medseg EpsilonPlus": "zennit EpsilonPlus", "medseg Alpha2Beta1": "zennit Alpha2Beta1",
                "medseg GammaBox": "zennit GammaBox"}.get(r["impl"])
        if peer and "cpu_s" in r and "cpu_s" in by.get(peer, {}):
            r["cpu_x_zennit"] = by[peer]["cpu_s"] / r["cpu_s"]
    cols = ["net", "impl", "median_s", "cpu_s", "x_fwd_bwd", "cpu_x_fwd_bwd", "x_zennit", "cpu_x_zennit",
            "x_one_region", "peak_MiB", "error"]
    table = harness.markdown_table(rows, cols)
    out(table)
    out("x_fwd_bwd: time / plain forward+backward (< 1: cheaper). x_zennit: Zennit time / medseg_ext time for the "
        "same composite (> 1: medseg_ext faster). x_one_region: time / one-region medseg eps.")
    return {"rows": rows, "table": table, "size": size}
