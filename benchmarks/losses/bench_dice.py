"""Dice loss forward+backward: medseg_ext vs MONAI vs SMP; the same code as `medseg-ext bench losses`.

    python benchmarks/losses/bench_dice.py [--device cpu|cuda] [--size small|paper] [--repeat N] [--json]
"""
import sys
from pathlib import Path

# run from a source checkout without installing the command (the compiled _C must still be built)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from medseg_ext.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", "losses", *sys.argv[1:]]))
