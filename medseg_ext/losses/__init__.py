"""Fused segmentation losses and metrics (family 1). Spec: shared/reference/seeds-losses.md."""
from .region import RegionStats, soft_region_stats
from .region_losses import (DibeRegLoss, DiceLoss, FocalTverskyLoss, GeneralizedDiceLoss, JaccardLoss, KappaLoss,
                            LogDiceLoss, TverskyLoss, dibe_reg_loss, dice_loss, focal_tversky_loss,
                            generalized_dice_loss, jaccard_loss, kappa_loss, log_dice_loss, region_loss, tversky_loss)

__all__ = ["soft_region_stats", "RegionStats", "region_loss", "dice_loss", "DiceLoss", "jaccard_loss",
           "JaccardLoss", "tversky_loss", "TverskyLoss", "focal_tversky_loss", "FocalTverskyLoss", "kappa_loss",
           "KappaLoss", "generalized_dice_loss", "GeneralizedDiceLoss", "log_dice_loss", "LogDiceLoss", "dibe_reg_loss",
           "DibeRegLoss"]
