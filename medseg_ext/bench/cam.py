"""CAM family benchmark: medseg_ext.cam vs pytorch-grad-cam and TorchCAM on the same model, layer,
inputs and targets, in this process.

Cases:
* ``resnet50``: random-weight torchvision ResNet-50, ``layer4`` (2048×7×7 at 224²), batch B:
  Grad-CAM, Grad-CAM++, Eigen-CAM (ours / pytorch-grad-cam / TorchCAM where it has the method) and
  the floor: one plain forward (``torch.no_grad``) of the same batch.
* ``scorecam``: Score-CAM needs one forward per channel; on CPU it is run on ResNet-18 ``layer4``
  (512 channels) at a small input (64² small / 96² paper), batch 1, next to its floor (the masked
  inputs forwarded in chunks, scores only).
* ``svd-weights``: SVD-Grad-CAM weights of 1664 gradient slices 7×7 (DenseNet-169's last layer):
  ours (closed form) vs a NumPy per-channel ``np.linalg.svd`` loop (the reference / notebook way).

``×ours`` = peer median / ours (> 1: we are faster); ``×floor`` = time / floor time. ``maxdiff``:
max |ours − peer| of the normalised maps.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from . import harness

PEERS = ("grad-cam", "torchcam")
SIZES = {"small": {"batch": 2, "res": 224, "score_res": 64}, "paper": {"batch": 4, "res": 224, "score_res": 96}}


def _pgc():
    try:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        return pgc, ClassifierOutputTarget
    except Exception:  # noqa: BLE001
        return None, None


def _tc():
    try:
        import torchcam.methods as tcm
        return tcm
    except Exception:  # noqa: BLE001
        return None


def _model(name: str, device: str):
    import torchvision
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval().to(device)


def _time(fn, device, repeat, warmup=1):
    return harness.time_call(fn, warmup=warmup, repeat=repeat, device=device)["median"]


def _resnet_rows(device, cfg, repeat, out):
    from .. import cam
    model = _model("resnet50", device)
    B, R = cfg["batch"], cfg["res"]
    x = torch.randn(B, 3, R, R, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        classes = model(x).argmax(1).tolist()
    rows = []

    def fwd():
        with torch.no_grad():
            return model(x)
    t_floor = _time(fwd, device, repeat)
    rows.append({"case": "resnet50", "method": "forward (floor)", "impl": "torch", "median_ms": 1e3 * t_floor})
    out(f"  forward floor: {1e3 * t_floor:.1f} ms")
    pgc, COT = _pgc()
    tcm = _tc()
    for method, pname, tname in (("gradcam", "GradCAM", "GradCAM"), ("gradcam++", "GradCAMPlusPlus", "GradCAMpp"),
                                 ("eigencam", "EigenCAM", None)):
        ours_maps = {}

        def ours():
            ours_maps["m"] = cam.compute_cam(model, x, "layer4", method, target=classes).maps
        t_ours = _time(ours, device, repeat)
        rows.append({"case": "resnet50", "method": method, "impl": "medseg_ext", "median_ms": 1e3 * t_ours,
                     "x_floor": t_ours / t_floor})
        out(f"  {method} medseg_ext: {1e3 * t_ours:.1f} ms")
        if pgc is not None:
            theirs = {}
            c = getattr(pgc, pname)(model=model, target_layers=[model.layer4])

            def peer():
                theirs["m"] = c(input_tensor=x, targets=[COT(k) for k in classes])
            t = _time(peer, device, repeat)
            c.activations_and_grads.release()
            diff = float(np.abs(ours_maps["m"].float().cpu().numpy() - theirs["m"]).max())
            if method == "eigencam":
                diff = None  # sign convention differs (ours fixed, theirs LAPACK's)
            rows.append({"case": "resnet50", "method": method, "impl": "pytorch-grad-cam", "median_ms": 1e3 * t,
                         "x_floor": t / t_floor, "x_ours": t / t_ours, "maxdiff": diff})
            out(f"  {method} pytorch-grad-cam: {1e3 * t:.1f} ms")
        if tcm is not None and tname is not None:
            ext = getattr(tcm, tname)(model, "layer4", input_shape=(3, R, R))

            def peer_tc():
                o = model(x)
                m = ext(class_idx=classes, scores=o)[0]
                return torch.nn.functional.interpolate(m[:, None], size=(R, R), mode="bilinear")[:, 0]
            t = _time(peer_tc, device, repeat)
            ext.remove_hooks()
            rows.append({"case": "resnet50", "method": method, "impl": "torchcam", "median_ms": 1e3 * t,
                         "x_floor": t / t_floor, "x_ours": t / t_ours})
            out(f"  {method} torchcam: {1e3 * t:.1f} ms")
    return rows


def _scorecam_rows(device, cfg, repeat, out):
    from .. import cam
    model = _model("resnet18", device)
    R = cfg["score_res"]
    x = torch.randn(1, 3, R, R, generator=torch.Generator().manual_seed(2)).to(device)
    with torch.no_grad():
        cls = model(x).argmax(1).tolist()
    bs = 64
    rows = []
    masked = x * torch.rand(bs, 1, R, R, device=device)

    def floor():   # 512 masked forwards, in chunks of bs
        with torch.no_grad():
            for _ in range(512 // bs):
                model(masked)
    t_floor = _time(floor, device, 1, warmup=0)
    rows.append({"case": f"scorecam r18 {R}²", "method": "512 masked forwards (floor)", "impl": "torch",
                 "median_ms": 1e3 * t_floor})
    out(f"  score-cam floor: {1e3 * t_floor:.1f} ms")
    res = {}

    def ours():
        res["m"] = cam.compute_cam(model, x, "layer4", "scorecam", target=cls, batch_size=bs).maps
    t_ours = _time(ours, device, 1, warmup=0)
    rows.append({"case": f"scorecam r18 {R}²", "method": "scorecam", "impl": "medseg_ext", "median_ms": 1e3 * t_ours,
                 "x_floor": t_ours / t_floor})
    out(f"  score-cam medseg_ext: {1e3 * t_ours:.1f} ms")
    pgc, COT = _pgc()
    if pgc is not None:
        import contextlib
        import io
        c = pgc.ScoreCAM(model=model, target_layers=[model.layer4])
        c.batch_size = bs
        theirs = {}

        def peer():
            with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar
                theirs["m"] = c(input_tensor=x, targets=[COT(k) for k in cls])
        t = _time(peer, device, 1, warmup=0)
        c.activations_and_grads.release()
        ours_pgc = cam.compute_cam(model, x, "layer4", "scorecam", target=cls, batch_size=bs,
                                   scorecam_align_corners=True).maps
        rows.append({"case": f"scorecam r18 {R}²", "method": "scorecam", "impl": "pytorch-grad-cam",
                     "median_ms": 1e3 * t, "x_floor": t / t_floor, "x_ours": t / t_ours,
                     "maxdiff": float(np.abs(ours_pgc.cpu().numpy() - theirs["m"]).max())})
        out(f"  score-cam pytorch-grad-cam: {1e3 * t:.1f} ms")
    tcm = _tc()
    if tcm is not None:
        ext = tcm.ScoreCAM(model, "layer4", batch_size=bs, input_shape=(3, R, R))

        def peer_tc():
            with torch.no_grad():
                o = model(x)
            return ext(class_idx=cls, scores=o)
        t = _time(peer_tc, device, 1, warmup=0)
        ext.remove_hooks()
        rows.append({"case": f"scorecam r18 {R}²", "method": "scorecam", "impl": "torchcam", "median_ms": 1e3 * t,
                     "x_floor": t / t_floor, "x_ours": t / t_ours})
        out(f"  score-cam torchcam: {1e3 * t:.1f} ms")
    return rows


def numpy_svd_loop(G: np.ndarray, n: int = 1) -> np.ndarray:
    """The per-channel NumPy loop (as the paper's notebook, on correctly laid-out slices)."""
    out = np.empty(G.shape[0])
    for k in range(G.shape[0]):
        U, s, Vt = np.linalg.svd(G[k], full_matrices=True)
        out[k] = (U[:, :n] @ np.diag(s[:n]) @ Vt[:n, :]).mean()
    return out


def _svd_rows(device, repeat, out):
    from .. import cam
    G = torch.randn(1664, 7, 7, generator=torch.Generator().manual_seed(3))
    Gn = G.numpy()
    t_np = _time(lambda: numpy_svd_loop(Gn), "cpu", max(1, repeat // 2))
    Gd = G.to(device)
    t_ours = _time(lambda: cam.svd_gradcam_weights(Gd, 1), device, repeat)
    t_f32 = _time(lambda: cam.svd_gradcam_weights(Gd, 1, compute_dtype=torch.float32), device, repeat)
    diff = float(np.abs(cam.svd_gradcam_weights(Gd, 1).cpu().numpy() - numpy_svd_loop(Gn)).max())
    out(f"  svd weights: numpy {1e3 * t_np:.2f} ms, ours {1e3 * t_ours:.2f} ms")
    return [{"case": "svd-weights 1664×7×7", "method": "usv n=1", "impl": "numpy per-channel loop",
             "median_ms": 1e3 * t_np, "x_ours": t_np / t_ours},
            {"case": "svd-weights 1664×7×7", "method": "usv n=1", "impl": "medseg_ext (f64 compute)",
             "median_ms": 1e3 * t_ours, "maxdiff": diff},
            {"case": "svd-weights 1664×7×7", "method": "usv n=1", "impl": "medseg_ext (f32 compute)",
             "median_ms": 1e3 * t_f32, "x_ours": t_f32 / t_ours}]


def run(device: str = "cpu", size: str = "small", repeat: int = 3, measure_memory: bool = True, out=print) -> dict:
    """Runs the benchmark, prints the table, returns the results dict."""
    if size not in SIZES:
        raise ValueError(f"size: expected one of {tuple(SIZES)}, got {size!r}")
    cfg = SIZES[size]
    if _pgc()[0] is None:
        out("note: pytorch-grad-cam (grad-cam) is not importable; its rows are skipped")
    if _tc() is None:
        out("note: torchcam is not importable; its rows are skipped")
    if measure_memory:
        out("note: peak memory is not measured by this benchmark yet")
    t0 = time.perf_counter()
    rows = _svd_rows(device, repeat, out)
    rows += _resnet_rows(device, cfg, repeat, out)
    rows += _scorecam_rows(device, cfg, repeat, out)
    cols = ["case", "method", "impl", "median_ms", "x_floor", "x_ours", "maxdiff"]
    table = harness.markdown_table(rows, cols)
    out(table)
    out("x_floor: time / floor (plain no-grad forward; for Score-CAM the masked forwards). x_ours: that row's "
        "median / medseg_ext's (> 1: medseg_ext is faster). maxdiff: max |ours - peer| of the normalised maps. "
        f"Total {time.perf_counter() - t0:.0f} s, torch threads {torch.get_num_threads()}.")
    return {"rows": rows, "table": table, "size": size}
