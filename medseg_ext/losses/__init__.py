"""Fused segmentation losses and metrics (family 1). Spec: shared/reference/seeds-losses.md."""
from . import affinity, detection, distance, label_aware, metrics, pointwise
from .detection import (DistributionFocalLoss, GIoULoss, SigmoidFocalLoss, centerness_loss, centerness_target,
                        distribution_focal_loss, giou_loss, sigmoid_focal_loss)
from .label_aware import LabelAwareModulation, confuse_labels, distance_bins, dual_energy_to_rgb, la_modulate
from .affinity import (BalancedAffinityLoss, ClassCounter, ClusteringAffinity, balanced_affinity_loss,
                       class_balanced_weights, gaussian_affinity, label_histogram)
from .distance import (BoundaryLoss, HausdorffDTLoss, LogHausdorffDTLoss, average_surface_distance, boundary_loss,
                       distance_transform_edt, hausdorff_distance, hausdorff_dt_loss, hd95, log_hausdorff_dt_loss,
                       signed_distance, surface_edges)
from .fused import FusedStats, fused_stats
from .metrics import (accuracy, cohen_kappa, confusion_counts, confusion_from_labels, dice_score, iou, oii,
                      oii_guided_alpha, precision, recall, segmentation_metrics, specificity)
from .pointwise import (BCELoss, ComboLoss, CrossEntropyLoss, DibeDisLoss, DibeLoss, DiceCELoss, DiceFocalLoss,
                        ELCELoss, ExpLogLoss, FocalLoss, HybridFocalLoss, SquaredDiceLoss, WBCELoss, WCELoss, bce_loss,
                        combo_loss, cross_entropy_loss, dibe_dis_loss, dibe_loss, dice_ce_loss, dice_focal_loss,
                        el_ce_loss, exp_log_loss, focal_loss, hybrid_focal_loss, squared_dice_loss, wbce_loss, wce_loss)
from .region import RegionStats, soft_region_stats
from .region_losses import (DibeRegLoss, DiceLoss, FocalTverskyLoss, GeneralizedDiceLoss, JaccardLoss, KappaLoss,
                            LogDiceLoss, TverskyLoss, dibe_reg_loss, dice_loss, focal_tversky_loss,
                            generalized_dice_loss, jaccard_loss, kappa_loss, log_dice_loss, region_loss, tversky_loss)

__all__ = ["soft_region_stats", "RegionStats", "region_loss", "dice_loss", "DiceLoss", "jaccard_loss",
           "JaccardLoss", "tversky_loss", "TverskyLoss", "focal_tversky_loss", "FocalTverskyLoss", "kappa_loss",
           "KappaLoss", "generalized_dice_loss", "GeneralizedDiceLoss", "log_dice_loss", "LogDiceLoss", "dibe_reg_loss",
           "DibeRegLoss", "fused_stats", "FusedStats", "metrics"]
__all__ += ["sigmoid_focal_loss", "giou_loss", "centerness_target", "centerness_loss", "distribution_focal_loss",
            "SigmoidFocalLoss", "GIoULoss", "DistributionFocalLoss", "dual_energy_to_rgb", "confuse_labels",
            "la_modulate", "LabelAwareModulation", "distance_bins"]
__all__ += pointwise.__all__ + metrics.__all__ + [n for n in affinity.__all__ if n != "centre_spread_regulariser"]
__all__ += distance.__all__
