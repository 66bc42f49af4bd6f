"""Fused segmentation losses and metrics (family 1). Spec: shared/reference/seeds-losses.md."""
from .dice import DiceLoss, dice_loss
from .region import RegionStats, soft_region_stats

__all__ = ["soft_region_stats", "RegionStats", "dice_loss", "DiceLoss"]
