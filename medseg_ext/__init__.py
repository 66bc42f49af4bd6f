"""medseg_ext: fast, exact C++/CUDA/Triton kernels for medical image segmentation research.

Families: losses (ready: soft_region_stats, dice_loss), lrp, topology, cam, mser (planned).
``backends()`` says which implementations are compiled and usable on this machine.
"""
from ._dispatch import backends, use_backend
from .losses import DiceLoss, RegionStats, dice_loss, soft_region_stats

__version__ = "0.1.0"

__all__ = ["__version__", "backends", "use_backend", "soft_region_stats", "RegionStats", "dice_loss", "DiceLoss"]
