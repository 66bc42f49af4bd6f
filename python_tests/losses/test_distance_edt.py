"""Exact EDT (losses group D): C++ kernel vs scipy.ndimage.distance_transform_edt (with sampling),
vs the brute-force NumPy reference, edge cases and bad input."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from medseg_ext import _dispatch
from medseg_ext.losses import distance as D
from medseg_ext.reference import distance as R

ndimage = pytest.importorskip("scipy.ndimage")


@st.composite
def masks(draw, max_rank=3, max_side=9):
    rank = draw(st.integers(1, max_rank))
    shape = tuple(draw(st.lists(st.integers(1, max_side), min_size=rank, max_size=rank)))
    density = draw(st.sampled_from([0.05, 0.5, 0.9, 0.99]))
    seed = draw(st.integers(0, 2**31 - 1))
    m = np.random.default_rng(seed).random(shape) < density
    spacing = tuple(draw(st.lists(st.sampled_from([0.3, 1.0, 1.7, 2.5]), min_size=rank, max_size=rank)))
    return m, spacing


def scipy_edt(m, spacing=None):
    """scipy with the documented rule: a volume without background is +inf."""
    if m.all():
        return np.full(m.shape, np.inf)
    return ndimage.distance_transform_edt(m, sampling=spacing)


@given(masks())
def test_edt_matches_scipy_and_reference(case):
    m, spacing = case
    got = D.distance_transform_edt(m, spacing, dtype=torch.float64)
    assert isinstance(got, np.ndarray) and got.shape == m.shape and got.dtype == np.float64
    want = scipy_edt(m, spacing)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(R.edt(m, spacing) if (~m).any() else np.full(m.shape, np.inf), want, rtol=1e-12)
    got32 = D.distance_transform_edt(torch.from_numpy(m), spacing)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), want, rtol=2e-7)
    sq = D.distance_transform_edt(m, spacing, squared=True, dtype=torch.float64)
    np.testing.assert_allclose(sq, want ** 2, rtol=1e-12)


@given(st.integers(1, 3), st.integers(1, 3), st.integers(2, 3), st.integers(0, 2**31 - 1),
       st.sampled_from([torch.bool, torch.uint8, torch.int64, torch.float32, torch.float64]))
def test_batched_equals_per_volume_scipy(B, C, rank, seed, dtype):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(1, 10, size=rank))
    m = rng.random((B, C) + shape) < 0.7
    m.reshape(B * C, -1)[:, 0] = False  # every volume has background (scipy's phantom rule aside)
    spacing = tuple(rng.choice([0.5, 1.0, 2.0], size=rank))
    t = torch.from_numpy(m).to(dtype) * (3 if dtype != torch.bool else 1)
    got = D.distance_transform_edt(t, spacing)
    for b in range(B):
        for c in range(C):
            np.testing.assert_allclose(got[b, c].numpy(), ndimage.distance_transform_edt(m[b, c], sampling=spacing),
                                       rtol=2e-7, atol=1e-6)


def test_volumes_are_independent_and_full_volume_is_inf():
    m = torch.zeros(2, 2, 5, 6, dtype=torch.bool)
    m[0, 0] = True            # full volume: no background anywhere -> inf
    m[0, 1, 2, 3] = True      # single pixel -> 1
    m[1, 1, :, :3] = True     # half plane
    out = D.distance_transform_edt(m)
    assert torch.isinf(out[0, 0]).all()
    assert out[0, 1].sum() == 1.0 and out[0, 1, 2, 3] == 1.0
    assert (out[1, 0] == 0).all()
    np.testing.assert_allclose(out[1, 1, 0, :3].numpy(), [3, 2, 1])


def test_single_pixel_background_and_line_shapes():
    m = np.ones((7, 5), dtype=bool)
    m[3, 2] = False
    got = D.distance_transform_edt(m, (2.0, 0.5), dtype=torch.float64)
    ii, jj = np.indices(m.shape)
    np.testing.assert_allclose(got, np.hypot((ii - 3) * 2.0, (jj - 2) * 0.5))
    for shape in [(1, 17), (17, 1), (1, 1, 9), (9, 1, 1), (1,), (2, 1, 3)]:
        mm = np.random.default_rng(1).random(shape) < 0.6
        mm.flat[0] = False
        np.testing.assert_allclose(D.distance_transform_edt(mm, dtype=torch.float64),
                                   ndimage.distance_transform_edt(mm))


def test_non_contiguous_inputs():
    base = torch.rand(2, 3, 11, 9, 8) < 0.8
    base[..., 0, 0, 0] = False
    views = [base.transpose(2, 4), base[:, :, ::2, :, 1:], base.permute(1, 0, 2, 3, 4)]
    for v in views:
        assert not v.is_contiguous()
        got = D.distance_transform_edt(v)
        want = D.distance_transform_edt(v.contiguous())
        assert torch.equal(got, want)
        for b in range(v.shape[0]):
            np.testing.assert_allclose(got[b, 0].numpy(), scipy_edt(v[b, 0].numpy()), rtol=2e-7)


def test_large_distances_stay_exact():
    m = np.ones((1, 3000), dtype=bool)
    m[0, 0] = False
    got = D.distance_transform_edt(m, dtype=torch.float32)
    np.testing.assert_array_equal(got[0], np.arange(3000, dtype=np.float32))
    m2 = np.ones((300, 301), dtype=bool)
    m2[0, 0] = False
    np.testing.assert_allclose(D.distance_transform_edt(m2, (1e3, 1e-3), dtype=torch.float64),
                               ndimage.distance_transform_edt(m2, sampling=(1e3, 1e-3)), rtol=1e-12)


def test_empty_and_zero_size():
    assert D.distance_transform_edt(torch.zeros(0, 3, 4, 4)).shape == (0, 3, 4, 4)
    assert D.distance_transform_edt(np.zeros((3, 0))).shape == (3, 0)
    assert (D.distance_transform_edt(torch.zeros(4, 5)) == 0).all()


def test_reference_backend_and_spatial_dims():
    m = torch.rand(2, 6, 7) < 0.7
    m[:, 0, 0] = False
    fast = D.distance_transform_edt(m, spatial_dims=2, spacing=(1.5, 1.0))
    with _dispatch.use_backend("reference"):
        slow = D.distance_transform_edt(m, spatial_dims=2, spacing=(1.5, 1.0))
    torch.testing.assert_close(fast, slow)
    as3d = D.distance_transform_edt(m)  # 3-D spatial by default for rank 3
    np.testing.assert_allclose(as3d.numpy(), ndimage.distance_transform_edt(m.numpy()), rtol=2e-7)


def test_signed_distance_matches_kervadec_formula():
    rng = np.random.default_rng(3)
    m = rng.random((2, 2, 8, 9)) < 0.4
    m[0, 1] = False
    m[1, 0] = True
    got = D.signed_distance(torch.from_numpy(m), spacing=(1.0, 2.0), dtype=torch.float64)
    for b in range(2):
        for c in range(2):
            np.testing.assert_allclose(got[b, c].numpy(), R.signed_distance(m[b, c], (1.0, 2.0)), atol=1e-12)
    assert (got[0, 1] == 0).all() and (got[1, 0] == 0).all()
    mm = m[0, 0]
    want = (ndimage.distance_transform_edt(~mm, sampling=(1.0, 2.0)) * ~mm
            - (ndimage.distance_transform_edt(mm, sampling=(1.0, 2.0)) - 1) * mm)
    np.testing.assert_allclose(got[0, 0].numpy(), want, atol=1e-12)


@pytest.mark.parametrize("bad, exc, word", [
    (dict(mask=[[1, 0]]), TypeError, "mask"),
    (dict(mask=torch.zeros(())), ValueError, "mask"),
    (dict(mask=torch.zeros(1, 2, 3, 4, 5, 6)), ValueError, "mask"),
    (dict(mask=torch.zeros(4, 4), spacing=(1.0,)), ValueError, "spacing"),
    (dict(mask=torch.zeros(4, 4), spacing=(1.0, -1.0)), ValueError, "spacing"),
    (dict(mask=torch.zeros(4, 4), spacing=(1.0, float("nan"))), ValueError, "spacing"),
    (dict(mask=torch.tensor([[0.0, float("nan")]])), ValueError, "NaN"),
    (dict(mask=torch.zeros(4, 4), dtype=torch.float16), ValueError, "dtype"),
    (dict(mask=torch.zeros(4, 4), spatial_dims=4), ValueError, "spatial_dims"),
    (dict(mask=torch.zeros(4, 4, dtype=torch.complex64)), TypeError, "complex"),
    (dict(mask=np.array([["a"]])), TypeError, "mask"),
])
def test_bad_input(bad, exc, word):
    with pytest.raises(exc, match=word):
        D.distance_transform_edt(**bad)


def test_kernel_checks_shapes():
    C_ = _dispatch.extension()
    from medseg_ext._tensor import desc
    m = torch.zeros(1, 2, 3, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="out"):
        C_.edt_cpu(desc(m), desc(torch.zeros(1, 2, 3, 5)), [1.0, 1.0, 1.0], False)
    with pytest.raises(ValueError, match="out"):
        C_.edt_cpu(desc(m), desc(torch.zeros(1, 2, 3, 4, dtype=torch.int32)), [1.0, 1.0, 1.0], False)
    with pytest.raises(ValueError, match="spacing"):
        C_.edt_cpu(desc(m), desc(torch.zeros(1, 2, 3, 4)), [1.0, 1.0], False)
    with pytest.raises(ValueError, match="contiguous"):
        C_.edt_cpu(desc(m), desc(torch.zeros(1, 2, 4, 3).transpose(2, 3)), [1.0, 1.0, 1.0], False)
    with pytest.raises(ValueError, match="mask"):
        C_.edt_cpu(desc(m.float()), desc(torch.zeros(1, 2, 3, 4)), [1.0, 1.0, 1.0], False)


@pytest.mark.parametrize("mode", ["plain", "inverted", "field", "signed"])
def test_kernel_modes_match_reference_backend(mode):
    rng = np.random.default_rng(4)
    m = torch.from_numpy(rng.random((3, 2, 5, 6, 4)) < 0.5)
    m[0, 0] = True
    m[1, 1] = False
    for dtype in (torch.float32, torch.float64):
        fast = D._edt_volumes(m, 3, (1.0, 2.0, 0.5), dtype, mode=mode, offset=0.75)
        with _dispatch.use_backend("reference"):
            slow = D._edt_volumes(m, 3, (1.0, 2.0, 0.5), dtype, mode=mode, offset=0.75)
        torch.testing.assert_close(fast, slow)
    if mode in ("field", "signed"):
        assert (fast[0, 0] == 0).all() and (fast[1, 1] == 0).all()


def test_threaded_path_matches_scipy():
    """Above the serial threshold (2^16 voxels) the passes run through parallel_for."""
    rng = np.random.default_rng(8)
    m = rng.random((2, 2, 40, 41, 42)) < 0.9
    m[..., 3, 5, 7] = False
    got = D.distance_transform_edt(torch.from_numpy(m), (1.0, 0.5, 2.0), dtype=torch.float64)
    sig = D.signed_distance(torch.from_numpy(m), (1.0, 0.5, 2.0), dtype=torch.float64)
    for b in range(2):
        for c in range(2):
            want = ndimage.distance_transform_edt(m[b, c], sampling=(1.0, 0.5, 2.0))
            np.testing.assert_allclose(got[b, c].numpy(), want, rtol=1e-12)
            out = ndimage.distance_transform_edt(~m[b, c], sampling=(1.0, 0.5, 2.0))
            np.testing.assert_allclose(sig[b, c].numpy(), np.where(m[b, c], 1 - want, out), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["field", "signed"])
def test_large_uniform_volumes_are_zero(mode):
    """Volumes split over several work chunks (> 2^15 voxels): every chunk sees the uniform flag."""
    m = torch.zeros(3, 40, 40, 41, dtype=torch.bool)
    m[0] = True
    m[2, 10:20, 5:30, 7:9] = True
    out = D._edt_volumes(m, 3, (1.0, 1.0, 1.0), torch.float32, mode=mode)
    assert (out[0] == 0).all() and (out[1] == 0).all()
    assert torch.isfinite(out[2]).all() and (out[2] != 0).any()


def test_custom_op_opcheck_and_compile():
    m = torch.rand(2, 1, 6, 7) < 0.6
    m[..., 0, 0] = False
    torch.library.opcheck(D._edt_op.op, (m, 2, [1.0, 2.0], False, False, 0, 1.0),
                          test_utils=("test_schema", "test_faketensor"))
    x = torch.randn(2, 3, 8, 9, requires_grad=True)
    lab = torch.randint(0, 3, (2, 1, 8, 9))
    onehot = torch.nn.functional.one_hot(lab[:, 0], 3).movedim(-1, 1).float()
    compiled = torch.compile(lambda a, b: D.hausdorff_dt_loss(a, b, softmax=True), backend="aot_eager")
    torch.testing.assert_close(compiled(x, onehot), D.hausdorff_dt_loss(x, onehot, softmax=True))


def test_numpy_negative_strides_big_endian_and_expanded_tensors():
    m = np.random.default_rng(2).random((9, 8)) < 0.6
    m[0, 0] = m[-1, -1] = False
    np.testing.assert_allclose(D.distance_transform_edt(m[::-1, ::-2], dtype=torch.float64),
                               ndimage.distance_transform_edt(m[::-1, ::-2]))
    big = m.astype(">f8")
    np.testing.assert_allclose(D.distance_transform_edt(big, dtype=torch.float64), ndimage.distance_transform_edt(m))
    e = torch.from_numpy(m)[None, None].expand(2, 3, 9, 8)
    out = D.distance_transform_edt(e)
    np.testing.assert_allclose(out[1, 2].numpy(), ndimage.distance_transform_edt(m), rtol=2e-7)
