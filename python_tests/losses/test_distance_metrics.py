"""Surface-distance metrics (Hausdorff, HD95, ASD, ASSD): MONAI parity (values and empty-mask
conventions), the NumPy reference, scipy's directed_hausdorff on point sets, and the analytic
properties of seeds-losses.md §6.5."""
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg_ext.losses import distance as D
from medseg_ext.reference import distance as R


@st.composite
def mask_pairs(draw):
    rank = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 7 if rank == 3 else 10), min_size=rank, max_size=rank)))
    B, C = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    dens = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    p = rng.random((B, C) + shape) < rng.uniform(0, 1)
    g = rng.random((B, C) + shape) < dens
    spacing = tuple(draw(st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=rank, max_size=rank)))
    return p, g, spacing


def close(a, b):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=1e-5,
                               atol=1e-5, equal_nan=True)


@settings(max_examples=40)
@given(mask_pairs(), st.sampled_from([None, 0, 50, 95, 100]), st.booleans(), st.booleans())
def test_hausdorff_matches_reference(case, percentile, directed, include_background):
    p, g, sp = case
    got = D.hausdorff_distance(p, g, percentile=percentile, spacing=sp, directed=directed,
                               include_background=include_background)
    want = R.hausdorff_distance(p, g, percentile=percentile, spacing=sp, directed=directed,
                                include_background=include_background)
    assert got.dtype == torch.float32 and tuple(got.shape) == want.shape
    close(got, want)


@settings(max_examples=30)
@given(mask_pairs(), st.booleans())
def test_average_surface_distance_matches_reference(case, symmetric):
    p, g, sp = case
    got = D.average_surface_distance(p, g, symmetric=symmetric, spacing=sp, include_background=True)
    close(got, R.average_surface_distance(p, g, symmetric=symmetric, spacing=sp, include_background=True))


def _monai_cases():
    rng = np.random.default_rng(7)
    for shape in [(9, 11), (6, 7, 5)]:
        p = rng.random((2, 3) + shape) < 0.55
        g = rng.random((2, 3) + shape) < 0.45
        p[0, 1] = False           # pred empty, target not -> inf (NaN with a percentile)
        g[1, 2] = False
        p[1, 2] = False           # both empty -> NaN
        g[0, 2] = False           # target empty, pred not
        p[1, 1] = True            # full pred: its surface is the array border
        yield torch.from_numpy(p).float(), torch.from_numpy(g).float()


@pytest.mark.parametrize("kw", [dict(), dict(percentile=95), dict(percentile=50, include_background=True),
                                dict(directed=True), dict(spacing=2.0), dict(percentile=95, directed=True)])
def test_hausdorff_matches_monai(kw):
    metrics = pytest.importorskip("monai.metrics")
    for p, g in _monai_cases():
        sp = kw.get("spacing")
        if sp is not None:
            kw = dict(kw, spacing=(2.0, 1.0, 0.5)[: p.dim() - 2])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = metrics.compute_hausdorff_distance(p, g, **kw)
        close(D.hausdorff_distance(p, g, **kw), want)
        if kw.get("percentile") == 95:
            rest = {k: v for k, v in kw.items() if k != "percentile"}
            close(D.hd95(p, g, **rest), want)


@pytest.mark.parametrize("kw", [dict(), dict(symmetric=True), dict(symmetric=True, include_background=True),
                                dict(spacing=True)])
def test_average_surface_distance_matches_monai(kw):
    metrics = pytest.importorskip("monai.metrics")
    for p, g in _monai_cases():
        if "spacing" in kw:
            kw = dict(kw, spacing=(2.0, 1.0, 0.5)[: p.dim() - 2])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = metrics.compute_average_surface_distance(p, g, **kw)
        close(D.average_surface_distance(p, g, **kw), want)


def test_empty_mask_conventions():
    z = torch.zeros(1, 2, 6, 6)
    o = z.clone()
    o[0, 1, 2:4, 2:4] = 1
    assert torch.isnan(D.hausdorff_distance(z, z)).all()
    assert torch.isinf(D.hausdorff_distance(o, z)).all() and torch.isinf(D.hausdorff_distance(z, o)).all()
    assert torch.isnan(D.hd95(o, z)).all()          # MONAI: torch.quantile of all-inf values
    assert torch.isinf(D.average_surface_distance(o, z, symmetric=True)).all()
    assert torch.isinf(D.average_surface_distance(z, o)).all()
    assert torch.isnan(D.average_surface_distance(z, z)).all()


@given(st.integers(0, 2**31 - 1), st.integers(-3, 3), st.integers(-3, 3))
def test_properties(seed, ty, tx):
    rng = np.random.default_rng(seed)
    a = np.zeros((1, 1, 16, 16), bool)
    a[0, 0, 5:11, 5:11] = rng.random((6, 6)) < 0.6
    a[0, 0, 7, 7] = True
    b = np.roll(a, (ty, tx), axis=(2, 3))  # nothing wraps: the object sits inside [5, 11) +- 3
    c = rng.random((1, 1, 16, 16)) < 0.1
    c[0, 0, 0, 0] = True
    h = lambda x, y: float(D.hausdorff_distance(x, y, include_background=True))  # noqa: E731
    assert h(a, a) == 0
    assert h(a, b) == pytest.approx(np.hypot(ty, tx), abs=1e-6)
    assert h(a, c) == pytest.approx(h(c, a))
    assert h(a, c) <= h(a, b) + h(b, c) + 1e-5


def test_directed_hausdorff_equals_scipy_on_surface_points():
    spatial = pytest.importorskip("scipy.spatial.distance")
    rng = np.random.default_rng(11)
    p = rng.random((1, 1, 9, 10, 8)) < 0.3
    g = rng.random((1, 1, 9, 10, 8)) < 0.3
    ep = np.argwhere(D.surface_edges(p)[0, 0].numpy()) * np.array([1.0, 2.0, 0.5])
    eg = np.argwhere(D.surface_edges(g)[0, 0].numpy()) * np.array([1.0, 2.0, 0.5])
    got = D.hausdorff_distance(p, g, spacing=(1.0, 2.0, 0.5), directed=True, include_background=True)
    assert float(got) == pytest.approx(spatial.directed_hausdorff(ep, eg)[0], rel=1e-6)
    sym = D.hausdorff_distance(p, g, spacing=(1.0, 2.0, 0.5), include_background=True)
    assert float(sym) == pytest.approx(max(spatial.directed_hausdorff(ep, eg)[0],
                                           spatial.directed_hausdorff(eg, ep)[0]), rel=1e-6)


def test_surface_edges_match_scipy_erosion():
    ndimage = pytest.importorskip("scipy.ndimage")
    m = np.random.default_rng(5).random((2, 2, 7, 8, 6)) < 0.6
    e = D.surface_edges(m).numpy()
    for b in range(2):
        for c in range(2):
            assert np.array_equal(e[b, c], m[b, c] ^ ndimage.binary_erosion(m[b, c]))


def test_bad_input():
    a = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError, match="target"):
        D.hausdorff_distance(a, torch.zeros(1, 2, 4, 5))
    with pytest.raises(ValueError, match="pred"):
        D.hausdorff_distance(torch.zeros(4, 4), torch.zeros(4, 4))
    with pytest.raises(ValueError, match="percentile"):
        D.hausdorff_distance(a, a, percentile=101)
    with pytest.raises(ValueError, match="spacing"):
        D.average_surface_distance(a, a, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(TypeError, match="target"):
        D.hausdorff_distance(a, [[0]])


@pytest.mark.parametrize("shape", [(2, 3, 7, 8, 6), (2, 2, 1, 9), (1, 2, 9, 1), (3, 1, 1, 1, 5), (2, 2, 11),
                                   (1, 1, 1), (2, 1, 4, 1, 3)])
def test_surface_edges_kernel_matches_torch_and_scipy(shape):
    ndimage = pytest.importorskip("scipy.ndimage")
    from medseg_ext import _dispatch
    m = torch.from_numpy(np.random.default_rng(sum(shape)).random(shape) < 0.7)
    fast = D.surface_edges(m, spatial_dims=len(shape) - 2)
    with _dispatch.use_backend("reference"):
        slow = D.surface_edges(m, spatial_dims=len(shape) - 2)
    assert torch.equal(fast, slow)
    for b in range(shape[0]):
        for c in range(shape[1]):
            v = m[b, c].numpy()
            assert np.array_equal(fast[b, c].numpy(), v ^ ndimage.binary_erosion(v))


def test_non_contiguous_and_dtype_inputs_give_the_same_metrics():
    rng = np.random.default_rng(13)
    p = torch.from_numpy(rng.random((2, 3, 9, 8, 7)) < 0.5)
    g = torch.from_numpy(rng.random((2, 3, 9, 8, 7)) < 0.5)
    base = D.hausdorff_distance(p, g, percentile=90, spacing=(1.0, 2.0, 3.0))
    pt, gt = p.transpose(2, 4).contiguous().transpose(2, 4), g.permute(1, 0, 2, 3, 4).contiguous().permute(1, 0, 2, 3, 4)
    assert not pt.is_contiguous() and not gt.is_contiguous()
    close(D.hausdorff_distance(pt.to(torch.uint8), gt.double(), percentile=90, spacing=(1.0, 2.0, 3.0)), base)
    close(D.average_surface_distance(pt, gt, symmetric=True), D.average_surface_distance(p, g, symmetric=True))


@pytest.mark.parametrize("metric", ["taxicab", "chessboard"])
def test_cdt_kernel_matches_scipy_and_reference(metric):
    ndimage = pytest.importorskip("scipy.ndimage")
    from medseg_ext import _dispatch
    rng = np.random.default_rng(17)
    for shape in [(2, 3, 9, 11), (1, 2, 6, 7, 5), (1, 1, 1, 13)]:
        m = torch.from_numpy(rng.random(shape) < 0.8)
        m.reshape(-1, shape[-1])[:, 0] = False
        nsp = len(shape) - 2
        got = D._cdt_volumes(m, nsp, metric, invert=False)
        with _dispatch.use_backend("reference"):
            slow = D._cdt_volumes(m, nsp, metric, invert=False)
        torch.testing.assert_close(got, slow)
        for b in range(shape[0]):
            for c in range(shape[1]):
                want = ndimage.distance_transform_cdt(m[b, c].numpy(), metric=metric)
                np.testing.assert_array_equal(got[b, c].numpy(), want)
    full = D._cdt_volumes(torch.ones(1, 1, 4, 4, dtype=torch.bool), 2, metric, invert=False)
    assert torch.isinf(full).all()


@pytest.mark.parametrize("metric", ["taxicab", "chessboard"])
def test_non_euclidean_metrics_match_monai_and_reference(metric):
    metrics = pytest.importorskip("monai.metrics")
    for p, g in _monai_cases():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hd = metrics.compute_hausdorff_distance(p, g, distance_metric=metric, percentile=90)
            asd = metrics.compute_average_surface_distance(p, g, distance_metric=metric, symmetric=True)
        close(D.hausdorff_distance(p, g, distance_metric=metric, percentile=90), hd)
        close(D.average_surface_distance(p, g, distance_metric=metric, symmetric=True), asd)
        close(D.hausdorff_distance(p, g, distance_metric=metric),
              R.hausdorff_distance(p.numpy(), g.numpy(), distance_metric=metric))
    with pytest.raises(ValueError, match="spacing"):
        D.hausdorff_distance(p, g, distance_metric=metric, spacing=(1.0, 2.0, 1.0))
    with pytest.raises(ValueError, match="distance_metric"):
        D.hausdorff_distance(p, g, distance_metric="cosine")
