"""MSERResult geometry (segmented reductions in torch ops, medseg_ext/mser/result.py) against NumPy
computed region by region from the pixel lists: bounding boxes, centroids, covariances (np.cov),
ellipses (np.linalg.eigh), ellipsoids, union mask and label image (brute force), subset."""
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg_ext import mser as M
from medseg_ext.mser import MSERResult
from medseg_ext.mser import result as result_module


def _regions(res):
    o = res.offsets.numpy()
    return [res.values.numpy()[o[r]:o[r + 1]] for r in range(len(res))]


def _check_geometry(res):
    nd = len(res.shape)
    R = len(res)
    bb, cen, cov = res.bboxes.numpy(), res.centroids.numpy(), res.covariances.numpy()
    assert bb.shape == (R, 2 * nd) and bb.dtype == np.int64
    assert cen.shape == (R, nd) and cov.shape == (R, nd, nd)
    for r in range(R):
        pts = res.pixels(r).astype(np.float64)
        np.testing.assert_array_equal(bb[r, :nd], pts.min(0))
        np.testing.assert_array_equal(bb[r, nd:], pts.max(0) - pts.min(0) + 1)
        np.testing.assert_allclose(cen[r], pts.mean(0), rtol=1e-13, atol=1e-12)
        want = np.cov(pts.T, bias=True).reshape(nd, nd) if len(pts) > 1 else np.zeros((nd, nd))
        np.testing.assert_allclose(cov[r], want, rtol=1e-12, atol=1e-10)
    c, axes, vec = res.ellipsoids
    np.testing.assert_array_equal(c.numpy(), cen)
    if R:
        w, v = np.linalg.eigh(cov)
        np.testing.assert_allclose(axes.numpy(), 2 * np.sqrt(np.clip(w, 0, None)), rtol=1e-9, atol=1e-6)
        # eigenvectors: V diag(w) V^T rebuilds the covariance, columns orthonormal
        vv = vec.numpy()
        np.testing.assert_allclose(np.einsum("rij,rj,rkj->rik", vv, (axes.numpy() / 2) ** 2, vv), cov, atol=1e-9)
        np.testing.assert_allclose(np.einsum("rji,rjk->rik", vv, vv), np.broadcast_to(np.eye(nd), vv.shape),
                                   atol=1e-12)
    if nd == 2:
        e = res.ellipses.numpy()
        assert e.shape == (R, 5)
        for r in range(R):
            cxy = cov[r][::-1, ::-1]  # (y, x) -> (x, y)
            w, v = np.linalg.eigh(cxy)
            w = np.clip(w, 0, None)
            np.testing.assert_allclose(e[r, :2], cen[r][::-1], rtol=1e-13)
            np.testing.assert_allclose(e[r, 2:4], 2 * np.sqrt(w[::-1]), rtol=1e-9, atol=1e-6)
            assert 0 <= e[r, 4] < 180
            if w[1] - w[0] > 1e-6 * max(w[1], 1e-300):  # a defined major axis: same direction (mod 180)
                want = np.degrees(np.arctan2(v[1, 1], v[0, 1])) % 180.0
                d = abs(e[r, 4] - want) % 180.0
                assert min(d, 180 - d) < 1e-6, (e[r, 4], want)
            else:
                assert e[r, 4] == 0.0  # isotropic: angle 0 by convention


def _check_masks(res):
    n = int(np.prod(res.shape))
    regs, area, im, pol = _regions(res), res.area.numpy(), res.image_index.numpy(), res.polarity.numpy()
    want_lab = np.zeros((res.batch_size, n), np.int64)
    for b in range(res.batch_size):
        for p in range(n):
            inside = [r for r in range(len(res)) if im[r] == b and p in set(regs[r].tolist())]
            want_lab[b, p] = 0 if not inside else min(inside, key=lambda r: (area[r], r)) + 1
    np.testing.assert_array_equal(res.label_image().numpy().reshape(res.batch_size, n), want_lab)
    for which, sign in ((None, 0), ("bright", 1), ("dark", -1)):
        want = np.zeros((res.batch_size, n), bool)
        for r in range(len(res)):
            if sign == 0 or pol[r] == sign:
                want[im[r], regs[r]] = True
        got = res.union_mask(which)
        assert got.shape == (res.batch_size,) + res.shape and got.dtype == torch.bool
        np.testing.assert_array_equal(got.numpy().reshape(res.batch_size, n), want)


@settings(max_examples=25, deadline=None)
@given(shape=st.sampled_from([(13, 17), (1, 40), (40, 1), (6, 7, 8), (1, 1, 30), (9, 11)]),
       batch=st.integers(1, 3), levels=st.sampled_from([2, 6, 256]), sixteen=st.booleans(),
       seed=st.integers(0, 2**16), numpy_path=st.booleans())
def test_geometry_matches_numpy(shape, batch, levels, sixteen, seed, numpy_path):
    # numpy_path=False runs the GPU code path (segment_reduce / scatter_reduce) on the CPU
    rng = np.random.default_rng(seed)
    img = rng.integers(0, levels, (batch,) + shape)
    img = (img * (65535 // max(levels - 1, 1))).astype(np.uint16) if sixteen else img.astype(np.uint8)
    res = M.mser(img, None, batch=True, min_area=1, max_area=1.0, max_variation=1e9, delta=1)
    with mock.patch.object(result_module, "_CPU_NUMPY", numpy_path):
        _check_geometry(res)
        if np.prod(shape) * batch <= 400:
            _check_masks(res)


def test_both_reduction_paths_agree():
    rng = np.random.default_rng(2)
    res = M.mser(rng.integers(0, 20, (2, 30, 33)).astype(np.uint8), None, batch=True, min_area=1, max_variation=1e9,
                 delta=1)
    assert len(res) > 10
    got = {}
    for flag in (True, False):
        with mock.patch.object(result_module, "_CPU_NUMPY", flag):
            res._cache.clear()
            got[flag] = [res.bboxes, res.centroids, res.covariances, res.ellipses]
    for a, b in zip(got[True], got[False]):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-12)


def test_empty_and_single_pixel_results():
    img = np.zeros((5, 6), np.uint8)
    res = M.mser(img, None)
    assert len(res) == 0
    assert res.bboxes.shape == (0, 4) and res.centroids.shape == (0, 2) and res.covariances.shape == (0, 2, 2)
    assert res.ellipses.shape == (0, 5) and [t.shape for t in res.ellipsoids] == [(0, 2), (0, 2), (0, 2, 2)]
    assert not res.union_mask().any() and not res.label_image().any()
    assert len(res.subset([])) == 0 and len(res.subset(np.zeros(0, bool))) == 0
    img[2, 3] = 200
    one = M.mser(img, "mmser", max_area=29)  # the bright pixel is the only strict local minimum
    assert one.values.tolist() == [2 * 6 + 3]
    assert one.ellipses.tolist() == [[3.0, 2.0, 0.0, 0.0, 0.0]]
    assert one.label_image()[0].nonzero().tolist() == [[2, 3]]


def test_covariance_far_from_the_origin_is_exact():
    # three pixels at x = a, a+1, a+2 with a = 2^22: the variance is 2/3 exactly; E[x²] − E[x]² would
    # lose ~1e-3 to cancellation at x² ≈ 1.8e13
    n = 2**22 + 3
    vals = torch.tensor([n - 3, n - 2, n - 1], dtype=torch.int64)
    res = MSERResult(vals, torch.tensor([0, 3]), torch.tensor([0]), torch.tensor([7], dtype=torch.int32),
                     torch.tensor([3]), torch.tensor([0.0], dtype=torch.float64), torch.tensor([1], dtype=torch.int8),
                     (1, n), 1)
    assert res.covariances[0].tolist() == [[0.0, 0.0], [0.0, 2.0 / 3.0]]
    assert res.centroids[0].tolist() == [0.0, float(n - 2)]
    e = res.ellipses[0].tolist()
    assert e[2] == pytest.approx(2 * np.sqrt(2 / 3), rel=1e-15) and e[3] == 0.0 and e[4] == 0.0


def test_non_contiguous_fields_and_index_dtypes():
    rng = np.random.default_rng(3)
    res = M.mser(rng.integers(0, 5, (2, 9, 10)).astype(np.uint8), None, batch=True, min_area=1, max_variation=1e9,
                 delta=1)
    assert len(res) > 2
    # every field as a strided view of a wider tensor, values as int32
    wide = lambda t: torch.stack([t, t], dim=-1)[..., 0]  # noqa: E731
    odd = MSERResult(wide(res.values.to(torch.int32)), wide(res.offsets), wide(res.image_index), wide(res.level),
                     wide(res.area), wide(res.variation), wide(res.polarity), res.shape, res.batch_size)
    assert not odd.values.is_contiguous()
    for name in ("bboxes", "centroids", "covariances", "ellipses"):
        torch.testing.assert_close(getattr(odd, name), getattr(res, name), rtol=0, atol=0)
    assert torch.equal(odd.label_image(), res.label_image()) and torch.equal(odd.union_mask(), res.union_mask())


def test_subset_by_mask_indices_and_tensor():
    rng = np.random.default_rng(5)
    res = M.mser(rng.integers(0, 8, (2, 12, 13)).astype(np.uint8), None, batch=True, min_area=2, max_variation=1e9,
                 delta=1)
    R = len(res)
    assert R > 4
    keep = np.arange(R) % 3 == 1
    for k in (keep, torch.from_numpy(keep), np.nonzero(keep)[0], np.nonzero(keep)[0].tolist(),
              torch.from_numpy(np.nonzero(keep)[0] - R)):
        sub = res.subset(k)
        assert len(sub) == keep.sum()
        assert [r.tolist() for r in _regions(sub)] == [r.tolist() for r, k_ in zip(_regions(res), keep) if k_]
        for name in ("image_index", "level", "area", "variation", "polarity"):
            assert torch.equal(getattr(sub, name), getattr(res, name)[torch.from_numpy(keep)]), name
        torch.testing.assert_close(sub.covariances, res.covariances[torch.from_numpy(keep)], rtol=0, atol=0)
    for bad in (np.ones(R + 1, bool), [R], [-R - 1], np.array([0.5])):
        with pytest.raises(ValueError, match="keep"):
            res.subset(bad)
    for bad in (-1, R, 1.0, True):
        with pytest.raises(ValueError, match="r: expected a region index"):
            res.pixels(bad)


def test_to_and_cpu_keep_the_regions():
    rng = np.random.default_rng(8)
    res = M.mser(rng.integers(0, 8, (15, 16)).astype(np.uint8), None, min_area=2, max_variation=1e9, delta=1)
    moved = res.to("cpu")
    assert moved.device.type == "cpu" and moved.shape == res.shape and moved.batch_size == res.batch_size
    for name in MSERResult._FIELDS:
        assert torch.equal(getattr(moved, name), getattr(res, name)), name
    assert torch.equal(res.cpu().bboxes, res.bboxes)


def test_geometry_of_an_image_beyond_int32_pixels():
    # a hand-built result on a (3, 2^30 + 5) image (2^31 + 15 pixels, never allocated): the coordinates
    # take the int64 path and come out exact
    shape = (3, 2**30 + 5)
    n = shape[0] * shape[1]
    vals = torch.tensor([n - 1, n - 2, n - shape[1] - 1, 0, 1], dtype=torch.int64)
    res = MSERResult(vals, torch.tensor([0, 3, 5]), torch.tensor([0, 0]), torch.tensor([5, 6], dtype=torch.int32),
                     torch.tensor([3, 2]), torch.zeros(2, dtype=torch.float64), torch.tensor([1, -1], dtype=torch.int8),
                     shape, 1)
    w = shape[1]
    assert res.bboxes.tolist() == [[1, w - 2, 2, 2], [0, 0, 1, 2]]
    pts = np.array([[2, w - 1], [2, w - 2], [1, w - 1]], dtype=np.float64)
    np.testing.assert_array_equal(res.centroids[0].numpy(), pts.mean(0))
    np.testing.assert_allclose(res.covariances[0].numpy(), np.cov((pts - pts.mean(0)).T, bias=True), atol=1e-15)
    assert res.pixels(0).tolist() == [[2, w - 1], [2, w - 2], [1, w - 1]]
