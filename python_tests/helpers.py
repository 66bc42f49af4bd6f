"""Input generators shared by the tests: random segmentation outputs with the awkward cases
(non-contiguous layouts, empty classes, ties, huge values, ignore_index) drawn by hypothesis."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from hypothesis import strategies as st

try:
    import triton  # noqa: F401
    HAVE_TRITON = True
except Exception:  # noqa: BLE001
    HAVE_TRITON = False

HAVE_CUDA = torch.cuda.is_available()

FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
LABEL_DTYPES = [torch.int64, torch.int32, torch.uint8, torch.int16]


@dataclass
class Case:
    logits: torch.Tensor
    labels: torch.Tensor
    activation: str
    ignore_index: Optional[int]
    reduction_unit: str

    def kwargs(self):
        return dict(activation=self.activation, ignore_index=self.ignore_index, reduction_unit=self.reduction_unit)

    def numpy(self):
        """float64 copies of exactly the values the kernels see."""
        return self.logits.detach().to(torch.float64).cpu().numpy(), self.labels.to(torch.int64).cpu().numpy()


def make_logits(rng, shape, dtype, layout: str, special: str) -> torch.Tensor:
    B, C = shape[:2]
    base = rng.standard_normal(shape) * rng.choice([0.1, 1.0, 4.0])
    if special == "ties":
        base[:, :, ...] = base[:, :1, ...]  # every class equal at every element
    elif special == "huge":
        big = 6.0e4 if dtype == torch.float16 else 1.0e4
        base = np.where(rng.random(shape) < 0.2, np.sign(base) * big, base)
    elif special == "tiny":
        base = base * 1e-6
    elif special == "neg_inf" and C > 1:
        base[:, 1:2] = -np.inf  # one class impossible everywhere; rows keep a finite max
    if layout == "channels_last":
        perm = [0] + list(range(2, len(shape))) + [1]
        t = torch.from_numpy(np.ascontiguousarray(base.transpose(perm))).to(dtype)
        inv = [0, len(shape) - 1] + list(range(1, len(shape) - 1))
        return t.permute(inv)
    if layout == "strided":
        wide = np.repeat(base, 2, axis=-1)
        wide[..., 1::2] = np.nan  # the skipped elements would poison any kernel that read them
        return torch.from_numpy(wide).to(dtype)[..., ::2]
    if layout == "transposed" and len(shape) >= 4:
        t = torch.from_numpy(np.ascontiguousarray(np.swapaxes(base, -1, -2))).to(dtype)
        return t.transpose(-1, -2)
    return torch.from_numpy(base).to(dtype)


@st.composite
def region_cases(draw, max_elems=6000, dtypes=FLOATS, max_classes=40):
    nsp = draw(st.integers(1, 3))
    spatial = tuple(draw(st.lists(st.integers(1, 9), min_size=nsp, max_size=nsp)))
    B = draw(st.integers(1, 3))
    activation = draw(st.sampled_from(["softmax", "sigmoid"]))
    lowest = 2 if activation == "softmax" else 1
    C = draw(st.integers(lowest, max_classes))
    while B * C * int(np.prod(spatial)) > max_elems and C > lowest:
        C = max(lowest, C // 2)
    dtype = draw(st.sampled_from(dtypes))
    label_dtype = draw(st.sampled_from(LABEL_DTYPES if C < 127 else [torch.int64, torch.int32]))
    layout = draw(st.sampled_from(["contiguous", "channels_last", "strided", "transposed"]))
    special = draw(st.sampled_from(["none", "none", "ties", "huge", "tiny", "neg_inf"]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    shape = (B, C) + spatial
    logits = make_logits(rng, shape, dtype, layout, special)
    n_classes = 2 if (activation == "sigmoid" and C == 1) else C
    present = rng.choice(n_classes, size=rng.integers(1, n_classes + 1), replace=False)  # some classes empty
    labels = present[rng.integers(0, len(present), size=(B,) + spatial)]
    ignore_index = draw(st.sampled_from([None, None, "class", "outside"]))
    if ignore_index is not None:
        if ignore_index == "class":
            ignore_index = int(present[0])
        else:
            ignore_index = 255 if label_dtype == torch.uint8 else -1
            if label_dtype == torch.uint8 and C >= 255:
                ignore_index = None
        if ignore_index is not None:
            labels = np.where(rng.random(labels.shape) < 0.2, ignore_index, labels)
    labels = torch.from_numpy(labels.astype(np.int64)).to(label_dtype)
    reduction_unit = draw(st.sampled_from(["sample", "batch"]))
    return Case(logits, labels, activation, ignore_index, reduction_unit)


def tolerance(dtype, n):
    """Absolute tolerance for sums of n probabilities accumulated from inputs of this dtype."""
    if dtype == torch.float64:
        return 1e-9 * max(1, n)
    return 2e-6 * max(1, n) + 1e-5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dist_rank_region_loss(rank, world, port, logits, labels, kind, out):
    """One gloo rank: its slice of the batch, region_loss with dist_sync=True; result into out[rank].
    Lives here (not in a test module) so that spawned processes can import it by name."""
    import medseg_ext

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        half = logits.shape[0] // world
        z = logits[rank * half:(rank + 1) * half].clone().requires_grad_(True)
        loss = medseg_ext.region_loss(z, labels[rank * half:(rank + 1) * half], kind=kind, reduction_unit="batch",
                                      dist_sync=True)
        loss.backward()
        out[rank] = (loss.detach().clone(), z.grad.clone())
    finally:
        dist.destroy_process_group()


def dist_rank_losses(rank, world, port, logits, labels, calls, out):
    """One gloo rank: each (function name, kwargs) of ``calls`` on its slice of the batch with
    dist_sync=True; [(loss, grad)] into out[rank]."""
    import medseg_ext

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        half = logits.shape[0] // world
        results = []
        for name, kwargs in calls:
            z = logits[rank * half:(rank + 1) * half].clone().requires_grad_(True)
            loss = getattr(medseg_ext, name)(z, labels[rank * half:(rank + 1) * half], dist_sync=True, **kwargs)
            loss.backward()
            results.append((loss.detach().clone(), z.grad.clone()))
        out[rank] = results
    finally:
        dist.destroy_process_group()


def bad_region_inputs(bad: str, device: str = "cpu"):
    """(1, 3, 6) logits and (1, 6) labels with one defect: "label" (label 3 of 3 classes at element 3),
    "nan" or "inf" (logit of class 1 at element 2)."""
    logits = torch.randn(1, 3, 6, device=device)
    labels = torch.randint(0, 3, (1, 6), device=device)
    if bad == "label":
        labels[0, 3] = 3
    elif bad == "nan":
        logits[0, 1, 2] = float("nan")
    else:
        logits[0, 1, 2] = float("inf")
    return logits, labels
