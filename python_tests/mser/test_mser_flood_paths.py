"""The flood tree builder's less common paths, against union-find (an independent builder) and cv2:

* 3-D volumes of 2^18 voxels or more run in 8×8×8 bricks (a re-laid copy of the keys);
  MEDSEG_EXT_MSER_BRICKS=1 forces bricks on small volumes, partial bricks included;
* the floods' 64-bit stack entries (used above 2^27 / 2^29 pixels), forced on small images by
  MEDSEG_EXT_MSER_WIDE_ENTRIES=1.
Both hooks are read once per process, so those checks run in subprocesses.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import medseg_ext.mser as M
from medseg_ext._dispatch import extension

_TREES = r"""
import numpy as np, torch
import medseg_ext.mser as M
from medseg_ext._dispatch import extension
import os
assert extension().mser_wide_entries_forced() == (os.environ.get("MEDSEG_EXT_MSER_WIDE_ENTRIES") == "1")
rng = np.random.default_rng(3)
cases = [((37, 41), 8, np.uint16), ((30, 33), 4, np.uint8), ((1, 50), 4, np.uint8),
         ((7, 9, 10), 6, np.uint16), ((6, 7, 8), 26, np.uint8), ((8, 8, 8), 6, np.uint8),
         ((9, 17, 3), 26, np.uint16), ((1, 9, 17), 6, np.uint16), ((17, 1, 2), 26, np.uint8),
         ((16, 8, 9), 6, np.uint16)]
for shape, conn, dt in cases:
    hi = 255 if dt == np.uint8 else 65535
    img = rng.integers(0, hi + 1, shape).astype(dt)
    img[: max(1, shape[0] // 2)] //= 29          # plateaus and ties
    mask = rng.random(shape) > 0.15
    for pol in ("bright", "dark"):
        for m in (None, mask):
            t = M.component_tree(img, polarity=pol, connectivity=conn, mask=m)
            u = M.component_tree(img, polarity=pol, connectivity=conn, mask=m, algorithm="union_find")
            for a in ("parent", "area", "level", "pixel_node", "stability"):
                assert torch.equal(getattr(t, a), getattr(u, a)), (shape, conn, pol, a)
import cv2
for s in range(4):
    img = cv2.GaussianBlur(rng.integers(0, 256, (40, 52)).astype(np.uint8), (5, 5), 1.5)
    mine = M.mser(img, "opencv", delta=2, min_area=5, max_area=400, max_variation=1.0)
    regs, _ = cv2.MSER_create(2, 5, 400, 1.0).detectRegions(img)
    want = sorted(sorted(int(y) * 52 + int(x) for x, y in r) for r in regs)
    got = sorted(sorted(int(v) for v in mine.values[mine.offsets[i]:mine.offsets[i + 1]]) for i in range(len(mine)))
    assert got == want, s
print("PATHS-OK")
"""


@pytest.mark.parametrize("env", [{"MEDSEG_EXT_MSER_BRICKS": "1"}, {"MEDSEG_EXT_MSER_WIDE_ENTRIES": "1"},
                                 {"MEDSEG_EXT_MSER_BRICKS": "1", "MEDSEG_EXT_MSER_WIDE_ENTRIES": "1"}],
                         ids=["bricks", "wide", "bricks+wide"])
def test_forced_paths_give_the_same_results(env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("MEDSEG_EXT_MSER_")}
    out = subprocess.run([sys.executable, "-c", _TREES], capture_output=True, text=True, env=dict(full, **env),
                         timeout=600)
    assert out.returncode == 0 and "PATHS-OK" in out.stdout, out.stderr[-3000:]


def test_hooks_are_off_by_default():
    if os.environ.get("MEDSEG_EXT_MSER_WIDE_ENTRIES") != "1":
        assert not extension().mser_wide_entries_forced()


@pytest.mark.parametrize("conn,dtype", [(6, np.uint16), (26, np.uint8)])
def test_bricked_volume_at_the_size_threshold(conn, dtype):
    # 66·65·63 = 270,270 voxels >= 2^18: bricks without any hook, partial bricks on every axis
    rng = np.random.default_rng(8)
    hi = 255 if dtype == np.uint8 else 4095
    vol = rng.integers(0, hi + 1, (66, 65, 63)).astype(dtype)
    vol[:30] //= 7
    mask = rng.random(vol.shape) > 0.05
    for m in (None, mask):
        t = M.component_tree(vol, polarity="dark", connectivity=conn, mask=m)
        u = M.component_tree(vol, polarity="dark", connectivity=conn, mask=m, algorithm="union_find")
        for a in ("parent", "area", "level", "pixel_node"):
            assert torch.equal(getattr(t, a), getattr(u, a)), a
