"""Ripser's o3 benchmark shape, regenerated: 1024 random orthogonal 3×3 matrices as points in R⁹,
threshold 1.8. medseg_ext vs giotto-ph (1 thread) in one process, CPU seconds and their ratio.

    python benchmarks/topology/o3_shape.py [--maxdim 2]

maxdim 3 (Ripser's setting) enumerates ~5·10⁸ tetrahedra here; raise memory_limit if the estimate
refuses it on a small machine.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import medseg_ext  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--maxdim", type=int, default=2)
    p.add_argument("--points", type=int, default=1024)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    Q = np.stack([np.linalg.qr(rng.standard_normal((3, 3)))[0] for _ in range(args.points)]).reshape(-1, 9)
    rows = []
    c = time.process_time()
    ours = medseg_ext.vietoris_rips(Q, maxdim=args.maxdim, threshold=1.8)
    rows.append(("medseg_ext", time.process_time() - c, [len(d) for d in ours]))
    try:
        from gph import ripser_parallel
        c = time.process_time()
        peer = ripser_parallel(Q, maxdim=args.maxdim, thresh=1.8, n_threads=1)["dgms"]
        rows.append(("giotto-ph (1 thread)", time.process_time() - c, [len(d) for d in peer]))
    except ImportError:
        print("note: giotto-ph not installed")
    print(f"o3 {args.points} points, threshold 1.8, maxdim {args.maxdim}")
    print("| impl | cpu s | ×ours | points per dimension |\n|---|---|---|---|")
    for name, t, counts in rows:
        print(f"| {name} | {t:.2f} | {t / rows[0][1]:.2f} | {counts} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
