"""Earlier name of the persistent-homology MCI pipeline: ``medseg-ext pipeline mci`` runs
:mod:`medseg_ext.pipelines.ph_mci` (same options; see its docstring)."""
from __future__ import annotations

from typing import List, Optional

from .ph_mci import NETWORKS, PLANTED, generate, network_slices  # noqa: F401  (re-exported)
from .ph_mci import main as _main

__all__ = ["NETWORKS", "PLANTED", "generate", "network_slices", "main"]


def main(argv: Optional[List[str]] = None) -> int:
    return _main(argv, prog="medseg-ext pipeline mci")
