"""Vietoris–Rips and diagram distances: medseg_ext vs ripser.py, giotto-ph, persim, GUDHI/POT; the same
code as `medseg-ext bench topology`.

    python benchmarks/topology/bench_topology.py [--size small|paper] [--repeat N] [--json] [--no-memory]
"""
import sys
from pathlib import Path

# run from a source checkout without installing the command (the compiled _C must still be built)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from medseg_ext.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", "topology", *sys.argv[1:]]))
