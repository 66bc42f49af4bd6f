"""medseg_ext: fast, exact C++/CUDA/Triton kernels for medical image segmentation research.

Families: losses (fused region, pointwise and compound losses and hard metrics from logits +
integer labels), lrp, topology, cam, mser (see README.md for the status of each).
``backends()`` says which implementations are compiled and usable on this machine.
"""
from ._dispatch import backends, use_backend
from ._malloc import _tune_from_env, cpu_malloc_tuned, tune_cpu_malloc
from . import losses
from .losses import *  # noqa: F401,F403  (the losses family's public names, listed in losses.__all__)

__version__ = "0.1.0"

__all__ = ["__version__", "backends", "use_backend", "tune_cpu_malloc", "cpu_malloc_tuned", "losses"] + [n for n in losses.__all__ if n != "metrics"]

# topology family
from . import topology  # noqa: E402
from .topology import (RaggedDiagrams, bottleneck, diagram_distance_matrix, diagram_distance_pairs,  # noqa: E402
                       rips_memory_estimate, sliding_window, vietoris_rips, vietoris_rips_batch, wasserstein)

__all__ += ["topology", "vietoris_rips", "vietoris_rips_batch", "RaggedDiagrams", "rips_memory_estimate",
            "wasserstein", "bottleneck", "diagram_distance_matrix", "diagram_distance_pairs", "sliding_window"]

# lrp, cam and mser families: used through their namespaces (medseg_ext.lrp.explain,
# medseg_ext.cam.compute_cam, medseg_ext.mser.mser)
from . import cam, lrp, mser  # noqa: E402

__all__ += ["cam", "lrp", "mser"]

_tune_from_env()   # MEDSEG_EXT_TUNE_MALLOC=1: opt-in malloc tuning (medseg_ext/_malloc.py)
