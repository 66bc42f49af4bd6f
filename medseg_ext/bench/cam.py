"""CAM family benchmark: medseg_ext.cam vs pytorch-grad-cam and TorchCAM on the same model, layer,
inputs and targets, in this process.

Cases:
* ``resnet50``: random-weight torchvision ResNet-50, ``layer4`` (2048×7×7 at 224²), batch B:
  Grad-CAM, Grad-CAM++, Eigen-CAM (ours / pytorch-grad-cam / TorchCAM where it has the method) and
  the floor: one plain forward (``torch.no_grad``) of the same batch.
* ``scorecam``: Score-CAM needs one forward per channel; on CPU it is run on ResNet-18 ``layer4``
  (512 channels) at a small input (64² small / 96² paper), batch 1, next to its floor (the masked
  inputs forwarded in chunks, scores only).
* ``unet3d``: a random-weight two-level 3-D U-Net at 32³ (small) / 96³ (paper) with a segmentation
  target (class-1 logits summed over a box): Grad-CAM at the bottleneck (ours / pytorch-grad-cam),
  Score-CAM (ours; the peers' Score-CAM is 2-D only), floor = one forward.
* ``peak memory`` (unless --no-memory): one ResNet-50 Grad-CAM call per implementation in a fresh
  process (harness.peak_memory), next to a plain no-grad forward.
* ``svd-weights``: SVD-Grad-CAM weights of 1664 gradient slices 7×7 (DenseNet-169's last layer):
  ours (closed form) vs a NumPy per-channel ``np.linalg.svd`` loop (the reference / notebook way).

Times are best-of-repeat. ``×ours`` = peer / ours (> 1: we are faster); ``×floor`` = time / floor time. ``maxdiff``:
max |ours − peer| of the normalised maps.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from . import harness

PEERS = ("grad-cam", "torchcam")
SIZES = {"small": {"batch": 2, "res": 224, "score_res": 64, "vol": 32},
         "paper": {"batch": 4, "res": 224, "score_res": 96, "vol": 96}}


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


_CPU: dict = {}


def _time(fn, device, repeat, warmup=1):
    """Best-of-``repeat`` wall seconds: on a shared, loaded machine the minimum is the least disturbed
    estimate of a call's own cost. The best process CPU seconds of the same calls are left in
    ``_CPU["last"]`` (robust to load when torch/OpenMP use one thread: OMP_NUM_THREADS=1)."""
    r = harness.time_call(fn, warmup=warmup, repeat=repeat, device=device)
    _CPU["last"] = r["cpu_min"]
    return r["min"]


def _row(rows, t, floor=None, ours=None, **kw):
    """Append a row with wall and CPU times and their ratios."""
    c = _CPU["last"]
    row = dict(kw, best_ms=1e3 * t, cpu_ms=1e3 * c, _t=t, _c=c)
    if floor is not None:
        row["x_floor"] = t / floor[0]
        row["cpu_x_floor"] = c / floor[1]
    if ours is not None:
        row["x_ours"] = t / ours[0]
        row["cpu_x_ours"] = c / ours[1]
    rows.append(row)
    return (t, c)


def _resnet_rows(device, cfg, repeat, out):
    from .. import cam
    model = _model("resnet50", device)
    B, R = cfg["batch"], cfg["res"]
    case = f"resnet50 {R}² b{B}"
    x = torch.randn(B, 3, R, R, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        classes = model(x).argmax(1).tolist()
    rows = []

    def fwd():
        with torch.no_grad():
            return model(x)
    floor = _row(rows, _time(fwd, device, repeat), case=case, method="forward (floor)", impl="torch")
    out(f"  forward floor: {rows[-1]['best_ms']:.1f} ms")
    pgc, COT = _pgc()
    tcm = _tc()
    for method, pname, tname in (("gradcam", "GradCAM", "GradCAM"), ("gradcam++", "GradCAMPlusPlus", "GradCAMpp"),
                                 ("eigencam", "EigenCAM", None)):
        ours_maps = {}

        def ours():
            ours_maps["m"] = cam.compute_cam(model, x, "layer4", method, target=classes).maps
        mine = _row(rows, _time(ours, device, repeat), floor, case=case, method=method, impl="medseg_ext")
        out(f"  {method} medseg_ext: {rows[-1]['best_ms']:.1f} ms")
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
            _row(rows, t, floor, mine, case=case, method=method, impl="pytorch-grad-cam", maxdiff=diff)
            out(f"  {method} pytorch-grad-cam: {rows[-1]['best_ms']:.1f} ms")
        if tcm is not None and tname is not None:
            ext = getattr(tcm, tname)(model, "layer4", input_shape=(3, R, R))

            def peer_tc():
                o = model(x)
                m = ext(class_idx=classes, scores=o)[0]
                return torch.nn.functional.interpolate(m[:, None], size=(R, R), mode="bilinear")[:, 0]
            t = _time(peer_tc, device, repeat)
            ext.remove_hooks()
            _row(rows, t, floor, mine, case=case, method=method, impl="torchcam")
            out(f"  {method} torchcam: {rows[-1]['best_ms']:.1f} ms")
    return rows


def _scorecam_rows(device, cfg, repeat, out):
    from .. import cam
    model = _model("resnet18", device)
    R = cfg["score_res"]
    case = f"scorecam r18 layer4 {R}²"
    x = torch.randn(1, 3, R, R, generator=torch.Generator().manual_seed(2)).to(device)
    with torch.no_grad():
        cls = model(x).argmax(1).tolist()
    bs = 64
    rows = []
    masked = x * torch.rand(bs, 1, R, R, device=device)

    def floor_fn():   # 512 masked forwards, in chunks of bs
        with torch.no_grad():
            for _ in range(512 // bs):
                model(masked)
    floor = _row(rows, _time(floor_fn, device, 2, warmup=0), case=case, method="512 masked forwards (floor)",
                 impl="torch")
    out(f"  score-cam floor: {rows[-1]['best_ms']:.1f} ms")

    def ours():
        cam.compute_cam(model, x, "layer4", "scorecam", target=cls, batch_size=bs)
    mine = _row(rows, _time(ours, device, 2, warmup=0), floor, case=case, method="scorecam", impl="medseg_ext")
    out(f"  score-cam medseg_ext: {rows[-1]['best_ms']:.1f} ms")
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
        t = _time(peer, device, 2, warmup=0)
        c.activations_and_grads.release()
        ours_pgc = cam.compute_cam(model, x, "layer4", "scorecam", target=cls, batch_size=bs,
                                   scorecam_align_corners=True).maps
        _row(rows, t, floor, mine, case=case, method="scorecam", impl="pytorch-grad-cam",
             maxdiff=float(np.abs(ours_pgc.cpu().numpy() - theirs["m"]).max()))
        out(f"  score-cam pytorch-grad-cam: {rows[-1]['best_ms']:.1f} ms")
    tcm = _tc()
    if tcm is not None:
        ext = tcm.ScoreCAM(model, "layer4", batch_size=bs, input_shape=(3, R, R))

        def peer_tc():
            with torch.no_grad():
                o = model(x)
            return ext(class_idx=cls, scores=o)
        t = _time(peer_tc, device, 2, warmup=0)
        ext.remove_hooks()
        _row(rows, t, floor, mine, case=case, method="scorecam", impl="torchcam")
        out(f"  score-cam torchcam: {rows[-1]['best_ms']:.1f} ms")
    return rows


def _unet3d_rows(device, cfg, repeat, out):
    """3-D U-Net (random weights) with a segmentation target: Σ of class-1 logits over a box mask."""
    from .. import cam
    from ..models.cam_cnn import TinyUNet3d
    torch.manual_seed(0)
    model = TinyUNet3d().eval().to(device)
    V = cfg["vol"]
    case = f"unet3d {V}³ seg target"
    x = torch.randn(1, 1, V, V, V, generator=torch.Generator().manual_seed(4)).to(device)
    mask = torch.zeros(V, V, V, dtype=torch.bool, device=device)
    mask[V // 4: 3 * V // 4, V // 4: 3 * V // 4, V // 4: 3 * V // 4] = True
    tgt = cam.SegmentationTarget(1, mask)
    rows = []

    def fwd():
        with torch.no_grad():
            return model(x)
    floor = _row(rows, _time(fwd, device, repeat), case=case, method="forward (floor)", impl="torch")
    res = {}

    def ours():
        res["m"] = cam.compute_cam(model, x, "bottleneck", "gradcam", target=tgt).maps
    mine = _row(rows, _time(ours, device, repeat), floor, case=case, method="gradcam", impl="medseg_ext")
    out(f"  3-D gradcam medseg_ext: {rows[-1]['best_ms']:.1f} ms")
    pgc, _ = _pgc()
    if pgc is not None:
        from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget
        c = pgc.GradCAM(model=model, target_layers=[model.bottleneck])
        theirs = {}
        m_np = mask.float().cpu().numpy()

        def peer():
            theirs["m"] = c(input_tensor=x, targets=[SemanticSegmentationTarget(1, m_np)])
        try:
            t = _time(peer, device, repeat)
            # pytorch-grad-cam resizes 3-D maps with scipy.ndimage.zoom (spline order 1, its own
            # grid): compare at the layer resolution instead -> no maxdiff here
            _row(rows, t, floor, mine, case=case, method="gradcam", impl="pytorch-grad-cam")
            out(f"  3-D gradcam pytorch-grad-cam: {rows[-1]['best_ms']:.1f} ms")
        except Exception as exc:  # noqa: BLE001
            out(f"  3-D gradcam pytorch-grad-cam failed: {type(exc).__name__}: {exc}")
        finally:
            c.activations_and_grads.release()

    def ours_sc():
        cam.compute_cam(model, x, "bottleneck", "scorecam", target=tgt, batch_size=8)
    _row(rows, _time(ours_sc, device, 1, warmup=0), floor, case=case, method="scorecam (32 channels)",
         impl="medseg_ext")
    out(f"  3-D scorecam medseg_ext: {rows[-1]['best_ms']:.1f} ms (pytorch-grad-cam / TorchCAM: 2-D only)")
    return rows


def make_case(impl: str, method: str = "gradcam", batch: int = 2, res: int = 224, device: str = "cpu") -> harness.Case:
    """Factory for the peak-memory subprocess: ResNet-50 ``layer4``, one call of ``method`` by ``impl``
    (``medseg_ext``, ``pytorch-grad-cam``, ``torchcam``) or the plain forward (``impl="forward"``)."""
    from .. import cam
    model = _model("resnet50", device)
    x = torch.randn(batch, 3, res, res, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        classes = model(x).argmax(1).tolist()
    if impl == "forward":
        def run():
            with torch.no_grad():
                model(x)
        return harness.Case(run=run)
    if impl == "medseg_ext":
        return harness.Case(run=lambda: cam.compute_cam(model, x, "layer4", method, target=classes))
    names = {"gradcam": ("GradCAM", "GradCAM"), "gradcam++": ("GradCAMPlusPlus", "GradCAMpp")}[method]
    if impl == "pytorch-grad-cam":
        pgc, COT = _pgc()
        c = getattr(pgc, names[0])(model=model, target_layers=[model.layer4])
        return harness.Case(run=lambda: c(input_tensor=x, targets=[COT(k) for k in classes]))
    if impl == "torchcam":
        ext = getattr(_tc(), names[1])(model, "layer4", input_shape=(3, res, res))
        return harness.Case(run=lambda: ext(class_idx=classes, scores=model(x)))
    raise ValueError(impl)


def _memory_rows(device, cfg, out):
    rows = []
    impls = ["forward", "medseg_ext"] + (["pytorch-grad-cam"] if _pgc()[0] is not None else []) + (
        ["torchcam"] if _tc() is not None else [])
    for impl in impls:
        spec = harness.CaseSpec("medseg_ext.bench.cam", "make_case",
                                dict(impl=impl, method="gradcam", batch=cfg["batch"], res=cfg["res"], device=device))
        r = harness.peak_memory(spec, device)
        mib = r["peak_bytes"] / harness.MiB if "peak_bytes" in r else None
        rows.append({"case": f"resnet50 {cfg['res']}² b{cfg['batch']} peak memory",
                     "method": "forward" if impl == "forward" else "gradcam", "impl": impl if impl != "forward"
                     else "torch (no_grad)", "peak_MiB": mib, "note": r.get("error")})
        out(f"  peak memory {impl}: {mib if mib is None else round(mib, 1)} MiB")
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
    Gd = G.to(device)
    case = "svd-weights 1664×7×7"
    rows = []
    t_np = _time(lambda: numpy_svd_loop(Gn), "cpu", max(2, repeat))
    c_np = _CPU["last"]
    mine = (_time(lambda: cam.svd_gradcam_weights(Gd, 1), device, 10 * repeat), _CPU["last"])
    diff = float(np.abs(cam.svd_gradcam_weights(Gd, 1).cpu().numpy() - numpy_svd_loop(Gn)).max())
    _CPU["last"] = c_np
    _row(rows, t_np, None, mine, case=case, method="usv n=1", impl="numpy per-channel loop")
    _CPU["last"] = mine[1]
    _row(rows, mine[0], None, None, case=case, method="usv n=1",
         impl="medseg_ext (C++ kernel)" if str(device) == "cpu" else "medseg_ext (eigh)", maxdiff=diff)
    _row(rows, _time(lambda: cam.svd_gradcam_weights(Gd, 1, backend="torch"), device, 2 * repeat), None, mine,
         case=case, method="usv n=1", impl="medseg_ext backend='torch' (batched eigh)")
    out(f"  svd weights: numpy {1e3 * t_np:.2f} ms, ours {1e3 * mine[0]:.2f} ms")
    return rows


def run(device: str = "cpu", size: str = "small", repeat: int = 3, measure_memory: bool = True, out=print) -> dict:
    """Runs the benchmark, prints the table, returns the results dict."""
    if size not in SIZES:
        raise ValueError(f"size: expected one of {tuple(SIZES)}, got {size!r}")
    cfg = SIZES[size]
    if _pgc()[0] is None:
        out("note: pytorch-grad-cam (grad-cam) is not importable; its rows are skipped")
    if _tc() is None:
        out("note: torchcam is not importable; its rows are skipped")
    t0 = time.perf_counter()
    rows = _svd_rows(device, repeat, out)
    rows += _resnet_rows(device, cfg, repeat, out)
    rows += _scorecam_rows(device, cfg, repeat, out)
    rows += _unet3d_rows(device, cfg, repeat, out)
    if measure_memory:
        rows += _memory_rows(device, cfg, out)
    cols = ["case", "method", "impl", "best_ms", "cpu_ms", "x_floor", "cpu_x_floor", "x_ours", "cpu_x_ours",
            "maxdiff"] + (["peak_MiB"] if measure_memory else [])
    for r in rows:
        r.pop("_t", None)
        r.pop("_c", None)
    table = harness.markdown_table(rows, cols)
    out(table)
    out("best_ms: best of --repeat calls after a warm-up. x_floor: time / floor (plain no-grad forward; for Score-CAM "
        "the masked forwards). x_ours: that row's time / medseg_ext's; cpu_*: the same in process CPU time "
        "(robust to load with OMP_NUM_THREADS=1) (> 1: medseg_ext is faster). maxdiff: max |ours - peer| of the normalised maps. peak_MiB: VmHWM growth of one Grad-CAM call in a "
        "fresh process (CPU) / max_memory_allocated (CUDA). "
        f"Total {time.perf_counter() - t0:.0f} s, torch threads {torch.get_num_threads()}.")
    return {"rows": rows, "table": table, "size": size}
