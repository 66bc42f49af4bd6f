"""Losses family benchmark: Dice loss forward + backward, medseg_ext vs MONAI vs SMP.

Every implementation gets the same float32 logits and int64 labels (fixed seed) and is timed in
this process; CPU peak memory is measured per case in a fresh subprocess (harness.peak_memory).
"""
from __future__ import annotations

import importlib.util
import math
import os
import sys
from typing import Callable, Optional

import torch

from . import harness

SIZES = {
    "small": [(1, 14, 64, 64, 64)],
    "paper": [(2, 14, 96, 96, 96), (1, 117, 64, 64, 64), (8, 4, 512, 512)],
}
PEERS = ("monai", "segmentation-models-pytorch")  # distribution names, for the results file

CONVENTIONS = {
    "medseg_ext": "softmax, per-sample, smooth 1e-5",
    "monai": "softmax, per-sample, smooth 1e-5",
    "smp": "softmax, batch-pooled, smooth 0, absent classes zeroed",
    "other": "the MONAI class's conventions (dice_ce/generalized_dice/tversky softmax, dice_focal sigmoid); "
             "dibe: sigmoid, eager = the same formulas in plain PyTorch",
}

_SMP_ALIAS = "_medseg_ext_bench_smp_losses"


def _load_smp_losses():
    """SMP's ``losses`` subpackage, loaded alone under a private name.

    SMP's top-level import pulls in its encoders (timm, torchvision), which need a torchvision
    built for the installed torch; its losses need only torch, so they are loaded by file path.
    """
    if _SMP_ALIAS in sys.modules:
        return sys.modules[_SMP_ALIAS]
    spec = importlib.util.find_spec("segmentation_models_pytorch")  # locates, does not execute
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("segmentation_models_pytorch is not installed")
    init = None
    for loc in spec.submodule_search_locations:
        cand = os.path.join(loc, "losses", "__init__.py")
        if os.path.isfile(cand):
            init = cand
            break
    if init is None:
        raise ImportError("segmentation_models_pytorch has no losses/ subpackage")
    lspec = importlib.util.spec_from_file_location(_SMP_ALIAS, init,
                                                   submodule_search_locations=[os.path.dirname(init)])
    mod = importlib.util.module_from_spec(lspec)
    sys.modules[_SMP_ALIAS] = mod
    try:
        lspec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[_SMP_ALIAS]
        raise
    return mod


# Losses timed side by side; each maps impl -> factory of (logits, labels (B, *S)) -> scalar loss.
# All use the same conventions as the MONAI class named (checked by the parity tests), except SMP
# (see CONVENTIONS) and "eager" (the same DIBE formulas written as plain PyTorch ops).
LOSSES = ("dice", "dice_ce", "dice_focal", "generalized_dice", "tversky", "dibe")


def _monai(name: str, **kw):
    import monai.losses

    loss = getattr(monai.losses, name)(to_onehot_y=True, **kw)
    return lambda x, y: loss(x, y.unsqueeze(1))  # MONAI wants labels as (B, 1, *S)


def _eager_dibe(x, y):
    """DIBE (θ = 0.5, λ = 0.25, α = 0.3, γ = 2, sigmoid per channel) in plain PyTorch ops."""
    from medseg_ext.losses.fused import pointwise_spec, torch_fused_stats
    from medseg_ext.losses.region_losses import _epilogue

    stats, ext = torch_fused_stats(x, y, True, True, None, pointwise_spec("dibe", gamma=2.0, alpha=0.3, beta=0.7))
    pw = (0.25 * ext[..., 1] + 0.75 * ext[..., 2]).sum() / stats[..., 3].sum()
    reg = _epilogue("dibe_reg", stats, [1.0, 1.0, 0.7, 0.3, 0.5], True, "mean", "smooth", "square", "max_finite",
                    None)[0]
    return 0.5 * pw + 0.5 * reg


def _loss_fn(impl: str, loss: str = "dice") -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(logits, labels (B, *S)) -> scalar loss, for impl in medseg_ext / monai / smp / eager."""
    import functools

    import medseg_ext

    table = {
        "dice": {"medseg_ext": lambda: medseg_ext.dice_loss, "monai": lambda: _monai("DiceLoss", softmax=True),
                 "smp": lambda: _load_smp_losses().DiceLoss(mode="multiclass", from_logits=True)},
        "dice_ce": {"medseg_ext": lambda: medseg_ext.dice_ce_loss, "monai": lambda: _monai("DiceCELoss", softmax=True)},
        "dice_focal": {"medseg_ext": lambda: medseg_ext.dice_focal_loss,
                       "monai": lambda: _monai("DiceFocalLoss", sigmoid=True)},
        "generalized_dice": {"medseg_ext": lambda: medseg_ext.generalized_dice_loss,
                             "monai": lambda: _monai("GeneralizedDiceLoss", softmax=True)},
        "tversky": {"medseg_ext": lambda: functools.partial(medseg_ext.tversky_loss, alpha=0.3, beta=0.7),
                    "monai": lambda: _monai("TverskyLoss", softmax=True, alpha=0.3, beta=0.7)},
        "dibe": {"medseg_ext": lambda: functools.partial(medseg_ext.dibe_loss, gamma_reg=2.0),
                 "eager": lambda: _eager_dibe},
    }
    if loss not in table:
        raise ValueError(f"loss: expected one of {tuple(table)}, got {loss!r}")
    if impl not in table[loss]:
        raise ValueError(f"impl: {impl!r} has no {loss!r} loss (have {tuple(table[loss])})")
    return table[loss][impl]()


def available_peers() -> dict:
    """{peer: None if usable else the reason it is skipped}."""
    out = {}
    for impl in ("monai", "smp"):
        try:
            _loss_fn(impl, "dice")
            out[impl] = None
        except Exception as exc:  # noqa: BLE001 - any failure means "skip with a note"
            out[impl] = f"{type(exc).__name__}: {exc}"
    return out


def make_inputs(shape, device: str = "cpu", seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    B, C = shape[:2]
    logits = torch.randn(shape, generator=g, dtype=torch.float32)
    labels = torch.randint(0, C, (B,) + tuple(shape[2:]), generator=g, dtype=torch.int64)
    return logits.to(device).requires_grad_(True), labels.to(device)


def make_dice_case(impl: str, shape, device: str = "cpu", seed: int = 0, backend: Optional[str] = None,
                   loss: str = "dice") -> harness.Case:
    """Factory named by the CaseSpec: inputs built here, so the memory baseline excludes them."""
    import medseg_ext

    fn = _loss_fn(impl, loss)
    logits, labels = make_inputs(tuple(shape), device, seed)

    def run():
        with medseg_ext.use_backend(backend):
            loss = fn(logits, labels)
            loss.backward()
        return loss

    def reset():
        logits.grad = None  # each call allocates its gradient, as in training

    return harness.Case(run=run, reset=reset)


def bytes_moved(shape) -> int:
    """What our op must move: logits + labels read in forward and again in backward, gradient written."""
    n = math.prod(shape)
    n_labels = n // shape[1]
    return 2 * n * 4 + 2 * n_labels * 8 + n * 4


def _shape_str(shape) -> str:
    """(2, 14, 96, 96, 96) -> "2×14×96³"; non-cubic spatial dims are written out."""
    B, C, *sp = shape
    if len(set(sp)) == 1 and len(sp) in (2, 3):
        spatial = f"{sp[0]}{'²' if len(sp) == 2 else '³'}"
    else:
        spatial = "×".join(map(str, sp))
    return f"{B}×{C}×{spatial}"


def _variants(device: str, peers: dict) -> list:
    """(row label, impl, forced backend) in table order; the first is the baseline 'ours'."""
    import medseg_ext

    rows = []
    if device.startswith("cuda"):
        b = medseg_ext.backends()
        if b["triton"]["usable"]:
            rows.append(("medseg_ext (triton)", "medseg_ext", "triton"))
        if b["cuda"]["usable"]:
            rows.append(("medseg_ext (cuda)", "medseg_ext", "cuda"))
        if not rows:
            raise RuntimeError("no GPU backend of medseg_ext is usable (see `medseg-ext info`)")
    else:
        rows.append(("medseg_ext (cpu)", "medseg_ext", None))
    rows += [(impl, impl, None) for impl in ("monai", "smp", "eager") if peers.get(impl) is None]
    return rows


def _has_loss(impl: str, loss: str) -> bool:
    try:
        _loss_fn(impl, loss)
    except ValueError:
        return False
    return True


def _measure(impl, label, backend, loss, shape, device, warmup, repeat, measure_memory, out) -> Optional[dict]:
    """One row: value, times and peak memory of one implementation of one loss on one shape."""
    spec = harness.CaseSpec("medseg_ext.bench.losses", "make_dice_case",
                            dict(impl=impl, shape=tuple(shape), device=device, backend=backend, loss=loss))
    row = {"shape": _shape_str(shape), "loss": loss, "impl": label,
           "conventions": CONVENTIONS.get(impl if loss == "dice" else "other", "")}
    try:
        case = spec.build()
        value = float(case.run().detach())
        t = harness.time_call(case.run, reset=case.reset, warmup=warmup, repeat=repeat, device=device)
    except Exception as exc:  # noqa: BLE001 - one failing peer must not end the run
        out(f"note: {label} {loss} failed on {row['shape']}: {type(exc).__name__}: {exc}")
        return None
    mem = harness.peak_memory(spec, device, case=case) if measure_memory else {"error": "not measured"}
    if "error" in mem and measure_memory:
        out(f"note: peak memory of {label} {loss} on {row['shape']}: {mem['error']}")
    row.update(value=value, median_s=t["median"], min_s=t["min"], max_s=t["max"], repeat=repeat,
               peak_bytes=mem.get("peak_bytes"))
    return row


def run(device: str = "cpu", size: str = "small", repeat: int = 10, warmup: int = 2, measure_memory: bool = True,
        out=print, losses=LOSSES) -> dict:
    """Runs the benchmark, prints the table and notes through ``out``, returns the results dict."""
    if size not in SIZES:
        raise ValueError(f"size: expected one of {tuple(SIZES)}, got {size!r}")
    peers = available_peers()
    for name, why in peers.items():
        if why is not None:
            out(f"note: skipping {name}: {why}")
    variants = _variants(device, peers)
    bw = harness.copy_bandwidth(device)
    out(f"device {device}; torch threads {torch.get_num_threads()}; copy bandwidth "
        f"{bw['bytes_per_s'] / 1e9:.1f} GB/s read+write (median of a {bw['buffer_bytes'] // harness.MiB} MiB "
        f"copy_; {bw['bytes_per_s'] / 2e9:.1f} GB/s of bytes copied, the convention of issue #4, whose floor "
        "is twice the floor column)")
    if measure_memory and not device.startswith("cuda") and not harness.cpu_peak_supported():
        out("note: CPU peak memory needs Linux /proc/self/clear_refs; not measured")

    rows = []
    for shape in SIZES[size]:
        floor = harness.floor_seconds(bytes_moved(shape), bw)
        for loss in losses:
            base = None  # the first medseg_ext row of each (shape, loss) is the baseline of its ratios
            for label, impl, backend in variants:
                if impl != "medseg_ext" and not _has_loss(impl, loss):
                    continue
                row = _measure(impl, label, backend, loss, shape, device, warmup, repeat, measure_memory, out)
                if row is None:
                    continue
                row["floor_s"], row["bytes_moved"] = floor, bytes_moved(shape)
                base = base or row
                row["time_ratio"] = row["median_s"] / base["median_s"]
                row["mem_ratio"] = (row["peak_bytes"] / base["peak_bytes"]
                                    if row["peak_bytes"] and base["peak_bytes"] else None)
                rows.append(row)
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()

    out("")
    out(format_table(rows))
    out("")
    out("time ×ours, mem ×ours: peer / the first medseg_ext row of the same shape (> 1: medseg_ext is better). "
        "floor: (2×logits + 2×labels + grad bytes) ÷ copy bandwidth (read+write); ×floor = median / floor.")
    out("Loss values differ only by convention: SMP pools the batch, uses smooth 0 and zeroes absent classes; "
        "MONAI's DiceCELoss computes its Dice in float32.")
    return {"benchmark": "segmentation losses forward+backward", "size": size, "repeat": repeat, "warmup": warmup,
            "copy_bandwidth": bw, "skipped": {k: v for k, v in peers.items() if v is not None}, "rows": rows}


def format_table(rows) -> str:
    table = []
    for r in rows:
        table.append({
            "shape": r["shape"], "loss": r["loss"], "impl": r["impl"], "value": f"{r['value']:.6f}",
            "median ms": r["median_s"] * 1e3, "min ms": r["min_s"] * 1e3, "max ms": r["max_s"] * 1e3,
            "peak MiB": r["peak_bytes"] / harness.MiB if r["peak_bytes"] is not None else None,
            "time ×ours": r["time_ratio"], "mem ×ours": r["mem_ratio"],
            "floor ms": r["floor_s"] * 1e3, "×floor": r["median_s"] / r["floor_s"],
            "conventions": r["conventions"],
        })
    return harness.markdown_table(table)
