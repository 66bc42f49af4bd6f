"""The `medseg-ext` command: info, bench, pipeline, demo (also `python -m medseg_ext`)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Optional, Sequence

FAMILIES = ("losses", "lrp", "topology", "cam", "mser")


def _submodules(package: str, skip: Sequence[str] = ()) -> tuple:
    import importlib
    import pkgutil

    pkg = importlib.import_module(package)
    return tuple(sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)
                        if not m.name.startswith("_") and m.name not in skip))


def implemented_bench() -> tuple:
    """Benchmarks shipped as medseg_ext/bench/<name>.py, each with run(device, size, repeat,
    measure_memory) and PEERS (a family, or a part of one such as losses_distance)."""
    return _submodules("medseg_ext.bench", skip=("harness",))


def implemented_pipelines() -> tuple:
    """Pipelines shipped as medseg_ext/pipelines/<name>.py, each with main(argv) -> int."""
    return _submodules("medseg_ext.pipelines")


# ---------------------------------------------------------------- info


def cmd_info(args) -> int:
    import medseg_ext
    from .bench import harness

    doc = {"medseg_ext": medseg_ext.__version__, "backends": medseg_ext.backends(),
           "versions": harness.versions(("monai", "segmentation-models-pytorch")),
           "machine": harness.machine_info("cuda" if _cuda_available() else "cpu")}
    print(json.dumps(doc, indent=2, default=str))
    return 0


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# ---------------------------------------------------------------- bench


def cmd_bench(args) -> int:
    family = args.family
    available = implemented_bench()
    if family not in available:
        if family in FAMILIES:
            msg = f"bench: the {family!r} family has no benchmark yet"
        else:
            msg = f"bench: unknown family {family!r}"
        print(f"{msg} (available: {', '.join(available)})", file=sys.stderr)
        return 2
    if args.device == "cuda" and not _cuda_available():
        print("bench: --device cuda asked for, but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.repeat < 1:
        print(f"bench: --repeat must be >= 1, got {args.repeat}", file=sys.stderr)
        return 2

    import importlib

    from .bench import harness

    if args.tune_malloc:
        from . import _malloc
        print("malloc: tuned (mmap and trim thresholds 1 GiB) for every row" if _malloc.tune_cpu_malloc()
              else "malloc: --tune-malloc needs glibc; running with the default allocator")
    bench = importlib.import_module(f"medseg_ext.bench.{family}")
    results = bench.run(device=args.device, size=args.size, repeat=args.repeat, measure_memory=not args.no_memory)
    if args.json:
        path = harness.write_json(results, family, args.device, peers=bench.PEERS)
        print(f"results written to {path}")
    return 0


# ---------------------------------------------------------------- pipeline


def cmd_pipeline(args) -> int:
    import importlib

    available = implemented_pipelines()
    if args.name == "list":
        print("\n".join(available) or "no pipelines yet")
        return 0
    if args.name not in available:
        print(f"pipeline: unknown pipeline {args.name!r} (available: {', '.join(available) or 'none'})",
              file=sys.stderr)
        return 2
    return importlib.import_module(f"medseg_ext.pipelines.{args.name}").main(list(args.rest))


# ---------------------------------------------------------------- demo


def _synthetic_volumes(n: int, size: int, generator, n_classes: int = 4, noise: float = 0.35):
    """Noisy 3-D volumes with one ellipsoid per foreground class; class k has mean intensity k."""
    import torch

    ax = torch.arange(size, dtype=torch.float32)
    z, y, x = torch.meshgrid(ax, ax, ax, indexing="ij")
    images = torch.zeros(n, 1, size, size, size)
    labels = torch.zeros(n, size, size, size, dtype=torch.int64)
    for i in range(n):
        for k in range(1, n_classes):
            centre = torch.rand(3, generator=generator) * (size - 16) + 8
            axes = torch.rand(3, generator=generator) * 4 + 4
            inside = (((z - centre[0]) / axes[0]) ** 2 + ((y - centre[1]) / axes[1]) ** 2
                      + ((x - centre[2]) / axes[2]) ** 2) <= 1
            labels[i][inside] = k  # later classes lie on top of earlier ones
        images[i, 0] = labels[i].float() + noise * torch.randn(size, size, size, generator=generator)
    return images, labels


def _tiny_net(n_classes: int, width: int = 8):
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv3d(1, width, 3, padding=1), nn.ReLU(),
        nn.Conv3d(width, width, 3, padding=1), nn.ReLU(),
        nn.Conv3d(width, width, 3, padding=1), nn.ReLU(),
        nn.Conv3d(width, n_classes, 1),
    )


def _hard_dice(pred, target, n_classes: int):
    """Per-class Dice of hard label maps over the whole set (nan when a class is absent in both)."""
    out = []
    for k in range(n_classes):
        p, g = pred == k, target == k
        denom = int(p.sum() + g.sum())
        out.append(float("nan") if denom == 0 else 2.0 * int((p & g).sum()) / denom)
    return out


def cmd_demo(args) -> int:
    import torch

    import medseg_ext

    if args.device == "cuda" and not _cuda_available():
        print("demo: --device cuda asked for, but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.steps < 1:
        print(f"demo: --steps must be >= 1, got {args.steps}", file=sys.stderr)
        return 2
    n_classes, size, batch = 4, 32, 2
    names = ["background", "class 1", "class 2", "class 3"]
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    train_x, train_y = _synthetic_volumes(16, size, g, n_classes)
    val_x, val_y = _synthetic_volumes(8, size, g, n_classes)
    dev = torch.device(args.device)
    # channels-last makes oneDNN's Conv3d backward several times faster on CPU; the loss takes any strides
    fmt = torch.channels_last_3d
    train_x, val_x = (t.to(dev, memory_format=fmt) for t in (train_x, val_x))
    train_y, val_y = train_y.to(dev), val_y.to(dev)

    net = _tiny_net(n_classes).to(dev, memory_format=fmt)
    opt = torch.optim.Adam(net.parameters(), lr=3e-2)
    # one-cycle: a short warm-up then decay, so a few dozen steps suffice from a random start
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-2, total_steps=args.steps, pct_start=0.2)
    loss_fn = medseg_ext.DiceLoss()  # softmax Dice from logits and integer labels, MONAI defaults
    print(f"demo: {len(train_x)} training / {len(val_x)} validation volumes of {size}³, {n_classes} classes "
          f"(class k = ellipsoid of intensity k, Gaussian noise σ 0.35); a 4-layer Conv3d net trained with "
          f"medseg_ext.DiceLoss for {args.steps} steps on {args.device}")
    every = max(1, args.steps // 10)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(train_x), (batch,), generator=g).to(dev)
        loss = loss_fn(net(train_x[idx]), train_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % every == 0 or step == 1:
            print(f"  step {step:4d}  dice loss {loss.item():.4f}")
    elapsed = time.perf_counter() - t0

    net.eval()
    with torch.no_grad():
        logits = net(val_x)
        val_loss = float(loss_fn(logits, val_y))
        pred = logits.argmax(dim=1)
    dice = _hard_dice(pred, val_y, n_classes)
    print(f"trained in {elapsed:.1f} s ({args.steps / elapsed:.1f} steps/s); validation dice loss {val_loss:.4f}")
    print("validation hard Dice per class: " + ", ".join(f"{n} {d:.3f}" for n, d in zip(names, dice)))
    fg = [d for d in dice[1:] if d == d]
    print(f"mean foreground hard Dice: {sum(fg) / len(fg):.3f}")
    return 0


# ---------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medseg-ext", description="medseg_ext: fast, exact segmentation kernels.")
    sub = p.add_subparsers(dest="command", metavar="{info,bench,pipeline,demo}")

    s = sub.add_parser("info", help="backends compiled and usable here, and versions")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("bench", help="benchmark a family against its peer libraries")
    s.add_argument("family", metavar="name", help=f"one of: {', '.join(implemented_bench())}")
    s.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    s.add_argument("--size", choices=("small", "paper", "large"), default="small")
    s.add_argument("--repeat", type=int, default=10, help="timed calls per case (after 2 warm-up calls)")
    s.add_argument("--json", action="store_true", help="also write benchmarks/results/<family>-<device>-<date>.json")
    s.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    s.add_argument("--tune-malloc", action="store_true",
                   help="call medseg_ext.tune_cpu_malloc() first: freed buffers stay in the process (every row, "
                        "peers included, runs with it)")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("pipeline", help="run a paper's pipeline end to end (medseg_ext/pipelines/<name>.py)")
    s.add_argument("name", help="pipeline name; `medseg-ext pipeline list` lists them")
    s.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the pipeline (see its --help)")
    s.set_defaults(func=cmd_pipeline)

    s = sub.add_parser("demo", help="train a tiny 3-D net with medseg_ext.DiceLoss on synthetic data")
    s.add_argument("--steps", type=int, default=100)
    s.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
