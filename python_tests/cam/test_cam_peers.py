"""Parity with pytorch-grad-cam and TorchCAM on the same model and layer (1e-5 after their
normalisation); skipped when a peer is missing."""
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from cam_nets import TinySeg, make  # noqa: E402

from medseg_ext import cam  # noqa: E402

ATOL = 1e-5


def _inputs(shape=(2, 3, 16, 16), seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _pgc_run(cls_, model, layer_mod, x, classes, **kw):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    with cls_(model=model, target_layers=[layer_mod], **kw) as c:
        return c(input_tensor=x, targets=[ClassifierOutputTarget(int(k)) for k in classes])


PGC = [("gradcam", "GradCAM", {}), ("hirescam", "HiResCAM", {}), ("gradcam++", "GradCAMPlusPlus", {}),
       ("xgradcam", "XGradCAM", {}), ("layercam", "LayerCAM", {}),
       ("scorecam", "ScoreCAM", dict(scorecam_align_corners=True)),
       ("ablationcam", "AblationCAM", {})]


@pytest.mark.parametrize("method,name,kw", PGC)
@pytest.mark.parametrize("layer", ["conv2", "act"])
def test_pytorch_grad_cam_parity(method, name, kw, layer):
    pgc = pytest.importorskip("pytorch_grad_cam")
    model = make()
    x = _inputs()
    classes = [1, 3]
    theirs = _pgc_run(getattr(pgc, name), model, model.get_submodule(layer), x, classes)
    ours = cam.compute_cam(model, x, layer, method, target=classes, **kw).maps.numpy()
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("method,name", [("eigencam", "EigenCAM"), ("eigengradcam", "EigenGradCAM")])
def test_pytorch_grad_cam_eigen_parity_up_to_sign(method, name):
    """pytorch-grad-cam keeps LAPACK's sign; ours fixes it (Σ v1 ≥ 0): equal to one of the two signs."""
    pgc = pytest.importorskip("pytorch_grad_cam")
    model = make()
    x = _inputs()
    theirs = _pgc_run(getattr(pgc, name), model, model.conv2, x, [1, 3])
    for b in range(x.shape[0]):
        xb = x[b:b + 1]
        plus = cam.compute_cam(model, xb, "conv2", method, target=[[1, 3][b]]).maps[0].numpy()
        minus = cam.compute_cam(model, xb, "conv2", method, target=[[1, 3][b]], eigen_sign="none")
        res = cam.compute_cam(model, xb, "conv2", method, target=[[1, 3][b]], keep=True, size=None, relu=False,
                              normalize=False, eigen_sign="none")
        del minus
        # the other sign: rebuild with the projection negated
        from medseg_ext.cam.weights import eigen_projection
        X = res.activations if method == "eigencam" else res.activations * res.gradients
        flipped = cam.cam_epilogue(maps=-eigen_projection(X, sign="channel_sum"), size=x.shape[2:])[0].numpy()
        ok = [np.abs(m - theirs[b]).max() <= ATOL for m in (plus, flipped)]
        assert any(ok), (np.abs(plus - theirs[b]).max(), np.abs(flipped - theirs[b]).max())


def test_pytorch_grad_cam_resnet18_gradcam_and_segmentation_3d():
    pgc = pytest.importorskip("pytorch_grad_cam")
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = tv.models.resnet18(num_classes=7).eval()
    x = _inputs((2, 3, 64, 64))
    for name, method in (("GradCAM", "gradcam"), ("GradCAMPlusPlus", "gradcam++")):
        theirs = _pgc_run(getattr(pgc, name), model, model.layer4, x, [2, 5])
        ours = cam.compute_cam(model, x, "layer4", method, target=[2, 5]).maps.numpy()
        np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)
    # segmentation target, 2-D (pytorch-grad-cam resizes 3-D with scipy zoom: not the same resampling)
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget
    torch.manual_seed(0)
    seg = TinySeg().eval()
    xs = _inputs((1, 1, 12, 12))
    mask = np.zeros((12, 12), np.float32)
    mask[3:8, 2:9] = 1
    with pgc.GradCAM(model=seg, target_layers=[seg.mid]) as c:
        theirs = c(input_tensor=xs, targets=[SemanticSegmentationTarget(2, mask)])
    ours = cam.compute_cam(seg, xs, "mid", "gradcam", target=cam.SegmentationTarget(2, torch.from_numpy(mask)))
    np.testing.assert_allclose(ours.maps.numpy(), theirs, atol=ATOL, rtol=0)


TC = [("gradcam", "GradCAM", {}), ("xgradcam", "XGradCAM", {}), ("layercam", "LayerCAM", {}),
      ("cam", "CAM", dict(relu=False)),  # TorchCAM's plain CAM applies no ReLU
      ("scorecam", "ScoreCAM", dict(scorecam_normalize_first=True))]


def _tc_model():
    model = make()
    with torch.no_grad():  # larger logits: TorchCAM divides by (max + 1e-8), visible on tiny map ranges
        model.fc.weight.mul_(100)
    return model


@pytest.mark.parametrize("method,name,kw", TC)
def test_torchcam_parity(method, name, kw):
    methods = pytest.importorskip("torchcam.methods")
    model = _tc_model()
    x = _inputs()
    classes = [1, 3]
    extra = dict(input_shape=tuple(x.shape[1:]))
    if name == "CAM":
        extra["fc_layer"] = "fc"
    with getattr(methods, name)(model, "act" if name == "CAM" else "conv2", **extra) as ext:
        ctx = torch.no_grad() if name in ("CAM", "ScoreCAM") else torch.enable_grad()
        with ctx:
            out = model(x)
        theirs = ext(class_idx=classes, scores=out)[0].detach().numpy()
    ours = cam.compute_cam(model, x, "act" if name == "CAM" else "conv2", method, target=classes, size=None,
                           **kw).maps.numpy()
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)


def test_torchcam_gradcampp_divides_nothing():
    """TorchCAM 0.5's Grad-CAM++ does ``alpha[idx][mask].div_(...)`` on an advanced-indexing copy, so
    its α stays g²: its weights are Σ g²·ReLU(g). We do not copy that; this pins the finding."""
    methods = pytest.importorskip("torchcam.methods")
    model = _tc_model()
    x = _inputs()
    with methods.GradCAMpp(model, "conv2", input_shape=tuple(x.shape[1:])) as ext:
        out = model(x)
        theirs = ext(class_idx=[1, 3], scores=out)[0].detach()
    r = cam.compute_cam(model, x, "conv2", "gradcam", target=[1, 3], keep=True, size=None)
    G, A = r.gradients, r.activations
    w_bug = (G.pow(2) * torch.relu(G)).flatten(2).sum(-1)
    torch.testing.assert_close(cam.cam_epilogue(A, w_bug), theirs, atol=ATOL, rtol=0)
    ours = cam.compute_cam(model, x, "conv2", "gradcam++", target=[1, 3], size=None,
                           gradcampp_denominator="torchcam").maps
    assert (ours - theirs).abs().max() > 1e-3
