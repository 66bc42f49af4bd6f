"""Shared helpers of the mser tests."""
import numpy as np

from medseg_ext.reference import mser as R


def region_set(res, polarity=True):
    """Set of (polarity, sorted pixel tuple) of an MSERResult (image 0 or all)."""
    v = res.values.numpy()
    o = res.offsets.numpy()
    pol = res.polarity.numpy()
    img = res.image_index.numpy()
    return sorted(((int(img[i]), int(pol[i]) if polarity else 0, tuple(np.sort(v[o[i]:o[i + 1]]).tolist()))
                   for i in range(len(res))))


def ref_set(regs, image=0, polarity=True):
    return sorted(((image, r["polarity"] if polarity else 0, tuple(r["pixels"].tolist())) for r in regs))


def blobs(rng, h, w, n=4, levels=(0, 70, 120, 180, 255)):
    """Quantised sum of Gaussian blobs: nested extremal regions with plateaus."""
    yy, xx = np.mgrid[0:h, 0:w]
    f = np.zeros((h, w))
    for _ in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        s = rng.uniform(1.5, max(2.0, min(h, w) / 3))
        f += rng.uniform(-1, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    f = (f - f.min()) / (np.ptp(f) + 1e-12)
    lv = np.asarray(levels)
    return lv[np.clip((f * len(lv)).astype(int), 0, len(lv) - 1)].astype(np.uint8)


def opencv_regions(cv2, img, delta, min_area, max_area, max_variation, pass2only):
    # OpenCV 5.0.0 compares the variation with minDiversity in the grey path (OpenCV issue #29652,
    # a regression fixed after 5.0.0); 4.x ignores minDiversity there, which is what 0 reproduces.
    md = 0.0 if int(cv2.__version__.split(".")[0]) >= 5 else 0.2
    m = cv2.MSER_create(delta=delta, min_area=min_area, max_area=max_area, max_variation=max_variation,
                        min_diversity=md)
    m.setPass2Only(pass2only)
    regs, boxes = m.detectRegions(img)
    W = img.shape[1]
    return regs, boxes, sorted(tuple(sorted((r[:, 1] * W + r[:, 0]).tolist())) for r in regs)


def concentric():
    """Nested dark squares 7×7: levels 0 (1 px), 1 (9), 2 (25) inside a background of 10 (49)."""
    img = np.full((7, 7), 10, np.uint8)
    img[1:6, 1:6] = 2
    img[2:5, 2:5] = 1
    img[3, 3] = 0
    return img
