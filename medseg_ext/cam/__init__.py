"""CAM family: the Grad-CAM family with SVD-filtered Grad-CAM, batched on the tensors' device, for
2-D and 3-D models, classification and segmentation targets, and the CAM quality metrics.
Spec: shared/reference/seeds-part1.md §8, §10.3; anchors.md §4.

    res = medseg_ext.cam.compute_cam(model, x, "layer4", "svdgradcam", target=ClassTarget(None, "sigmoid"))
    res.maps            # (B, H, W) in [0, 1], x's dtype and device

Pure torch (no compiled kernel yet): small batched SVDs use Gram matrices + ``torch.linalg.eigh``.
"""
from . import metrics
from ._hooks import LayerCapture, resolve_layer
from .epilogue import cam_epilogue, normalize_maps, resize_maps
from .methods import METHODS, CAMResult, compute_cam
from .metrics import adcc, evaluate, per_image_metrics, summarize
from .targets import ClassTarget, SegmentationTarget
from .weights import (eigen_projection, gradcam_weights, gradcampp_weights, hirescam_map, layercam_map,
                      svd_gradcam_channel_weights, svd_gradcam_weights, xgradcam_weights)

__all__ = ["compute_cam", "CAMResult", "METHODS", "ClassTarget", "SegmentationTarget", "LayerCapture",
           "resolve_layer", "cam_epilogue", "normalize_maps", "resize_maps", "gradcam_weights",
           "gradcampp_weights", "xgradcam_weights", "hirescam_map", "layercam_map", "eigen_projection",
           "svd_gradcam_weights", "svd_gradcam_channel_weights", "metrics", "adcc", "evaluate",
           "per_image_metrics", "summarize"]
