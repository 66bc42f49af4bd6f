"""The detection benchmark measures like for like: every implementation computes the same loss and
gradients on the same inputs, on the CPU and (when present) on a GPU, and the LA table runs."""
import pytest
import torch

from medseg_ext.bench import detection as bench

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("frac", [0.02, 1.0])
def test_implementations_agree(device, frac):
    if device == "cuda":
        pytest.importorskip("triton")
    d0 = bench.make_inputs(1, frac, seed=3, device=device)
    out = {}
    for impl in bench.IMPLS:
        d = {k: (v.detach().clone().requires_grad_(k in ("cls", "pred", "bins")) if torch.is_tensor(v) else v)
             for k, v in d0.items()}
        loss = bench._loss_fn(impl)(d)
        loss.backward()
        out[impl] = (float(loss.detach()), [d[k].grad for k in ("cls", "pred", "bins")])
    # the fused kernels vs mmdet's eager formulas: the same loss and gradients to float32 rounding
    assert out["medseg_ext"][0] == pytest.approx(out["eager"][0], rel=1e-5)
    for g, r in zip(out["medseg_ext"][1], out["eager"][1]):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-8)
    # torchvision's GIoU uses its own eps rule: the loss agrees to ~1e-2 relative only (see CONVENTIONS)
    assert out["torchvision"][0] == pytest.approx(out["eager"][0], rel=2e-2)


def test_inputs_identical_across_calls_and_devices():
    a = bench.make_inputs(1, 0.02, seed=5)
    b = bench.make_inputs(1, 0.02, seed=5)
    assert a["num_pos"] == b["num_pos"] == round(bench.LOCATIONS_PER_IMAGE * 0.02)
    for k in ("cls", "labels", "pred", "gt", "ctr", "bins", "dist"):
        assert torch.equal(a[k], b[k]), k
    if torch.cuda.is_available():
        c = bench.make_inputs(1, 0.02, seed=5, device="cuda")
        assert torch.equal(a["cls"], c["cls"].cpu())


@pytest.mark.parametrize("device", DEVICES)
def test_la_table_runs(device):
    lines = []
    rows = bench.la_table(repeat=1, warmup=0, out=lines.append, channels=8, size=(6, 7), batch=1, device=device)
    assert [r["part"] for r in rows] == list(bench.LA_PARTS)
    assert all(r["median_s"] > 0 for r in rows)
    assert "atss_head" in lines[-1]


def test_la_parts_compute_the_same_modulation():
    # 'la' (hand-written tower pass) and 'la_autograd' are two engines for one formula
    la = bench.make_la_case("la", batch=1, channels=8, size=(5, 6), seed=1).run()
    ref = bench.make_la_case("la_autograd", batch=1, channels=8, size=(5, 6), seed=1).run()
    torch.testing.assert_close(la, ref, rtol=1e-4, atol=1e-5)


def test_run_rejects_bad_device():
    with pytest.raises(ValueError, match="device"):
        bench.run(device="tpu", size="small", repeat=1)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="device"):
            bench.run(device="cuda", size="small", repeat=1)
