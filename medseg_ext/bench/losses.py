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


def _loss_fn(impl: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(logits, labels (B, *S)) -> scalar loss, for impl in medseg_ext / monai / smp."""
    if impl == "medseg_ext":
        import medseg_ext

        return medseg_ext.dice_loss
    if impl == "monai":
        from monai.losses import DiceLoss

        loss = DiceLoss(softmax=True, to_onehot_y=True)
        return lambda x, y: loss(x, y.unsqueeze(1))  # MONAI wants labels as (B, 1, *S)
    if impl == "smp":
        loss = _load_smp_losses().DiceLoss(mode="multiclass", from_logits=True)
        return loss
    raise ValueError(f"impl: expected medseg_ext, monai or smp, got {impl!r}")


def available_peers() -> dict:
    """{peer: None if usable else the reason it is skipped}."""
    out = {}
    for impl in ("monai", "smp"):
        try:
            _loss_fn(impl)
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


def make_dice_case(impl: str, shape, device: str = "cpu", seed: int = 0, backend: Optional[str] = None
                   ) -> harness.Case:
    """Factory named by the CaseSpec: inputs built here, so the memory baseline excludes them."""
    import medseg_ext

    fn = _loss_fn(impl)
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
    rows += [(impl, impl, None) for impl in ("monai", "smp") if peers.get(impl) is None]
    return rows


def run(device: str = "cpu", size: str = "small", repeat: int = 10, warmup: int = 2, measure_memory: bool = True,
        out=print) -> dict:
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
        f"{bw['bytes_per_s'] / 1e9:.1f} GB/s (median of a {bw['buffer_bytes'] // harness.MiB} MiB copy_)")
    if measure_memory and not device.startswith("cuda") and not harness.cpu_peak_supported():
        out("note: CPU peak memory needs Linux /proc/self/clear_refs; not measured")

    rows = []
    for shape in SIZES[size]:
        floor = harness.floor_seconds(bytes_moved(shape), bw)
        base = None
        for label, impl, backend in variants:
            spec = harness.CaseSpec("medseg_ext.bench.losses", "make_dice_case",
                                    dict(impl=impl, shape=tuple(shape), device=device, backend=backend))
            row = {"shape": _shape_str(shape), "impl": label, "conventions": CONVENTIONS[impl]}
            try:
                case = spec.build()
                value = float(case.run().detach())
                t = harness.time_call(case.run, reset=case.reset, warmup=warmup, repeat=repeat, device=device)
            except Exception as exc:  # noqa: BLE001 - one failing peer must not end the run
                out(f"note: {label} failed on {row['shape']}: {type(exc).__name__}: {exc}")
                continue
            mem = harness.peak_memory(spec, device, case=case) if measure_memory else {"error": "not measured"}
            if "error" in mem and measure_memory:
                out(f"note: peak memory of {label} on {row['shape']}: {mem['error']}")
            del case
            row.update(value=value, median_s=t["median"], min_s=t["min"], max_s=t["max"], repeat=repeat,
                       peak_bytes=mem.get("peak_bytes"), floor_s=floor, bytes_moved=bytes_moved(shape))
            if base is None:
                base = row
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
        "floor: (2×logits + 2×labels + grad bytes) ÷ copy bandwidth; ×floor = median / floor.")
    out("Loss values differ only by convention: SMP pools the batch, uses smooth 0 and zeroes absent classes.")
    return {"benchmark": "dice_loss forward+backward", "size": size, "repeat": repeat, "warmup": warmup,
            "copy_bandwidth": bw, "skipped": {k: v for k, v in peers.items() if v is not None}, "rows": rows}


def format_table(rows) -> str:
    table = []
    for r in rows:
        table.append({
            "shape": r["shape"], "impl": r["impl"], "loss": f"{r['value']:.6f}",
            "median ms": r["median_s"] * 1e3, "min ms": r["min_s"] * 1e3, "max ms": r["max_s"] * 1e3,
            "peak MiB": r["peak_bytes"] / harness.MiB if r["peak_bytes"] is not None else None,
            "time ×ours": r["time_ratio"], "mem ×ours": r["mem_ratio"],
            "floor ms": r["floor_s"] * 1e3, "×floor": r["median_s"] / r["floor_s"],
            "conventions": r["conventions"],
        })
    return harness.markdown_table(table)
