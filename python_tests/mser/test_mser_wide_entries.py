"""The floods' 64-bit stack entries (used above 2^27 / 2^29 pixels), forced on small images in a
subprocess by MEDSEG_EXT_MSER_WIDE_ENTRIES=1: the same trees as union-find and the same regions as
OpenCV as with the 32-bit entries."""
import os
import subprocess
import sys

_CHECK = r"""
import numpy as np, torch
import medseg_ext.mser as M
from medseg_ext._dispatch import extension
assert extension().mser_wide_entries_forced()
rng = np.random.default_rng(3)
for shape, conn, dt in [((37, 41), 8, np.uint16), ((30, 33), 4, np.uint8), ((7, 9, 10), 6, np.uint16),
                        ((6, 7, 8), 26, np.uint8), ((1, 50), 4, np.uint8)]:
    hi = 255 if dt == np.uint8 else 65535
    img = rng.integers(0, hi + 1, shape).astype(dt)
    img[: shape[0] // 2] //= 29
    for pol in ("bright", "dark"):
        t = M.component_tree(img, polarity=pol, connectivity=conn)
        u = M.component_tree(img, polarity=pol, connectivity=conn, algorithm="union_find")
        for a in ("parent", "area", "level", "pixel_node", "stability"):
            assert torch.equal(getattr(t, a), getattr(u, a)), (shape, pol, a)
import cv2
for s in range(4):
    img = rng.integers(0, 256, (40, 52)).astype(np.uint8)
    img = cv2.GaussianBlur(img, (5, 5), 1.5)
    mine = M.mser(img, "opencv", delta=2, min_area=5, max_area=400, max_variation=1.0)
    regs, _ = cv2.MSER_create(2, 5, 400, 1.0).detectRegions(img)
    want = sorted(sorted(int(y) * 52 + int(x) for x, y in r) for r in regs)
    got = sorted(sorted(int(v) for v in mine.values[mine.offsets[i]:mine.offsets[i + 1]]) for i in range(len(mine)))
    assert got == want, s
print("WIDE-OK")
"""


def test_wide_entries_hook_is_off_by_default():
    from medseg_ext._dispatch import extension
    assert not extension().mser_wide_entries_forced() or os.environ.get("MEDSEG_EXT_MSER_WIDE_ENTRIES") == "1"


def test_wide_stack_entries_give_the_same_results():
    env = dict(os.environ, MEDSEG_EXT_MSER_WIDE_ENTRIES="1")
    out = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0 and "WIDE-OK" in out.stdout, out.stderr[-3000:]
