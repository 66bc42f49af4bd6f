"""medseg_ext: fast, exact C++/CUDA/Triton kernels for medical image segmentation research.

Families: losses (soft_region_stats and the region losses: Dice, Jaccard, Tversky,
focal-Tversky, kappa), lrp, topology, cam, mser (planned).
``backends()`` says which implementations are compiled and usable on this machine.
"""
from ._dispatch import backends, use_backend
from .losses import (DibeRegLoss, DiceLoss, FocalTverskyLoss, GeneralizedDiceLoss, JaccardLoss, KappaLoss,
                     LogDiceLoss, RegionStats, TverskyLoss, dibe_reg_loss, dice_loss, focal_tversky_loss,
                     generalized_dice_loss, jaccard_loss, kappa_loss, log_dice_loss, region_loss, soft_region_stats,
                     tversky_loss)

__version__ = "0.1.0"

__all__ = ["__version__", "backends", "use_backend", "soft_region_stats", "RegionStats", "region_loss",
           "dice_loss", "DiceLoss", "jaccard_loss", "JaccardLoss", "tversky_loss", "TverskyLoss",
           "focal_tversky_loss", "FocalTverskyLoss", "kappa_loss", "KappaLoss", "generalized_dice_loss",
           "GeneralizedDiceLoss", "log_dice_loss", "LogDiceLoss", "dibe_reg_loss", "DibeRegLoss"]

# topology family
from .topology import (RaggedDiagrams, bottleneck, diagram_distance_matrix, rips_memory_estimate,  # noqa: E402
                       sliding_window, vietoris_rips, vietoris_rips_batch, wasserstein)

__all__ += ["vietoris_rips", "vietoris_rips_batch", "RaggedDiagrams", "rips_memory_estimate", "wasserstein",
            "bottleneck", "diagram_distance_matrix", "sliding_window"]
