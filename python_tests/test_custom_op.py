"""medseg_ext._custom_op: the fast eager path computes exactly what the registered torch custom op
computes (values, gradients, retained-graph second backward), and the registered op takes over
whenever something traces (fake/meta tensors, torch.compile)."""
import pytest
import torch

import medseg_ext
from medseg_ext import _custom_op as CO
from medseg_ext.losses import detection as D
from medseg_ext.losses import region_losses as RL


def _cases():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, 5, 6, 3, generator=g)
    y = torch.randint(0, 4, (2, 5, 6, 3), generator=g)
    rows = torch.randn(40, 3, generator=g)
    lab = torch.randint(0, 4, (40,), generator=g)
    return [
        ("dice", lambda t: medseg_ext.dice_loss(t, y), z),
        ("dice_ce", lambda t: medseg_ext.losses.dice_ce_loss(t, y), z),
        ("gdice_sigmoid",
         lambda t: medseg_ext.losses.generalized_dice_loss(t[:, :1], (y > 1).long(), activation="sigmoid"), z),
        ("tversky_none", lambda t: medseg_ext.losses.tversky_loss(t, y, reduction="none").sum(), z.double()),
        ("focal", lambda t: D.sigmoid_focal_loss(t, lab), rows),
    ]


@pytest.mark.parametrize("name,fn,z", _cases(), ids=[c[0] for c in _cases()])
def test_fast_path_equals_registered_op(name, fn, z, monkeypatch):
    out = {}
    for fast in (True, False):
        monkeypatch.setattr(CO, "EAGER_FAST_PATH", fast)
        t = z.clone().requires_grad_(True)
        loss = fn(t)
        loss.backward()
        with torch.no_grad():
            nograd = fn(z)
        out[fast] = (loss.detach(), t.grad, nograd)
    for a, b in zip(out[True], out[False]):
        assert torch.equal(a, b)


def test_eager_calls_skip_the_registered_op_and_tracing_uses_it(monkeypatch):
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    y = torch.randint(0, 3, (2, 4, 4))
    calls = []
    real = RL._region_loss_op.op

    def spy(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(RL._region_loss_op, "op", spy)
    medseg_ext.dice_loss(z, y).backward()
    assert calls == []
    # fake tensors (what torch.compile / export trace with) take the registered op and its fake impl
    from torch._subclasses.fake_tensor import FakeTensorMode
    mode = FakeTensorMode()
    fz, fy = mode.from_tensor(z.detach()), mode.from_tensor(y)
    with mode:
        loss = medseg_ext.dice_loss(fz, fy, validate=False)
    assert calls == [1] and loss.shape == ()
    monkeypatch.setattr(CO, "EAGER_FAST_PATH", False)
    medseg_ext.dice_loss(z, y)
    assert calls == [1, 1]


def test_meta_tensors_take_the_fake_implementation():
    z = torch.empty(2, 3, 4, 4, device="meta")
    y = torch.empty(2, 4, 4, dtype=torch.int64, device="meta")
    out = RL._region_loss_op(z, y, False, True, None, False, "dice", [1e-5, 1e-5], True, "mean", "smooth",
                             "square", "zero", False, None, False)
    assert out[0].device.type == "meta" and out[1].shape == (2, 3, 2)


def test_binding_of_keyword_and_default_arguments():
    def f(a, b, c=3):
        return a + b + c

    op = CO.FastCustomOp(lambda *a: None, f)
    assert op._bind((1,), {"b": 2}) == (1, 2, 3)
    assert op._bind((1, 2), {"c": 5}) == (1, 2, 5)
    with pytest.raises(TypeError, match="missing argument 'b'"):
        op._bind((1,), {})
    with pytest.raises(TypeError, match="unexpected"):
        op._bind((1, 2), {"d": 1})


def test_retained_graph_second_backward_equal():
    z = torch.randn(1, 3, 6, 7, requires_grad=True)
    y = torch.randint(0, 3, (1, 6, 7))
    loss = medseg_ext.losses.dice_ce_loss(z, y)
    loss.backward(retain_graph=True)
    g1 = z.grad.clone()
    z.grad = None
    loss.backward()
    torch.testing.assert_close(z.grad, g1, rtol=1e-6, atol=1e-9)


def test_jit_trace_records_the_registered_op():
    x = torch.randn(1, 3, 4, 4)
    y = torch.randint(0, 3, (1, 4, 4))
    traced = torch.jit.trace(lambda a: medseg_ext.dice_loss(a, y), (x,))
    assert "medseg_ext::region_loss" in str(traced.graph)
    torch.testing.assert_close(traced(2 * x), medseg_ext.dice_loss(2 * x, y))
