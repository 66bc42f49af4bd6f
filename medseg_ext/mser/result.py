"""MSERResult: the regions of a batch as ragged tensors, and their geometry.

The geometry (bounding boxes, centroids, covariances, ellipses, label images) is computed by
segmented reductions in torch ops on the device the regions live on, so results of CUDA inputs
stay on the GPU. On a GPU, sums use ``torch.segment_reduce`` (one reduction per segment, no float
atomics, so the same bits on every run) and minima/maxima the order-free ``scatter_reduce``; on the
CPU NumPy's ``reduceat`` does both (sequential per region, several times faster there).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

__all__ = ["MSERResult"]

# CPU results reduce and expand with NumPy (reduceat, repeat); tests switch it off to run the device code
# path on the CPU
_CPU_NUMPY = True


@dataclass
class MSERResult:
    """Regions of B images as ragged tensors.

    ``values[offsets[r]:offsets[r+1]]`` are the flat pixel indices (C order, within image
    ``image_index[r]``) of region r; ``polarity`` is +1 (bright) or -1 (dark); ``level`` the
    threshold grey level; ``variation`` the stability score of the chosen definition. Regions
    are ordered by image, then dark before bright, then children before parents. All tensors live
    on one device (that of the image given to :func:`mser`); the geometry properties are computed
    there and returned there. ``pixels`` and ``to_opencv`` return NumPy arrays (host copies).
    """
    values: torch.Tensor
    offsets: torch.Tensor
    image_index: torch.Tensor
    level: torch.Tensor
    area: torch.Tensor
    variation: torch.Tensor
    polarity: torch.Tensor
    shape: Tuple[int, ...]
    batch_size: int
    _cache: Dict[str, Any] = field(default_factory=dict, repr=False)

    _FIELDS = ("values", "offsets", "image_index", "level", "area", "variation", "polarity")

    def __len__(self) -> int:
        return int(self.level.numel())

    @property
    def device(self) -> torch.device:
        return self.values.device

    def to(self, device) -> "MSERResult":
        """The same regions with every tensor on ``device``."""
        return MSERResult(*(getattr(self, k).to(device) for k in self._FIELDS), self.shape, self.batch_size)

    def cpu(self) -> "MSERResult":
        return self.to("cpu")

    # --- per-pixel views (cached) ------------------------------------------------------------
    def _counts(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def _expand(self, per_region: torch.Tensor) -> torch.Tensor:
        """A per-region value repeated for every entry of ``values`` (CPU: NumPy's repeat, ~20x faster
        there than torch.repeat_interleave, which builds an index and gathers)."""
        counts = self._counts()
        if _CPU_NUMPY and per_region.device.type == "cpu":
            return torch.from_numpy(np.repeat(per_region.numpy(), counts.numpy()))
        return torch.repeat_interleave(per_region, counts, output_size=self.values.numel())

    def _segment_ids(self) -> torch.Tensor:
        """Region index of every entry of ``values``."""
        if "seg" not in self._cache:
            self._cache["seg"] = self._expand(torch.arange(len(self), device=self.device))
        return self._cache["seg"]

    def _coords(self) -> List[torch.Tensor]:
        """Per axis the integer coordinate of every entry of ``values`` (int32 when the image has
        fewer than 2^31 pixels: faster divisions)."""
        if "coords" not in self._cache:
            small = math.prod(self.shape) < 2**31
            rest = self.values.to(torch.int32 if small else torch.int64)
            out = []
            for s in reversed(self.shape[1:]):
                out.append(rest % s)
                rest = rest // s
            out.append(rest)  # the first axis: no modulo needed, indices lie inside the image
            self._cache["coords"] = out[::-1]
        return self._cache["coords"]

    def _segment_reduce(self, x: torch.Tensor, op: str) -> torch.Tensor:
        """Per region the sum / min / max of ``x`` (one entry per pixel of ``values``). CPU: NumPy's
        ``reduceat`` (sequential, fastest there); other devices: ``segment_reduce`` for sums (no float
        atomics) and the order-free ``scatter_reduce`` for min/max."""
        counts = self._counts()
        R = counts.numel()
        if _CPU_NUMPY and x.device.type == "cpu" and bool((counts > 0).all()):
            fn = {"sum": np.add, "min": np.minimum, "max": np.maximum}[op]
            return torch.from_numpy(fn.reduceat(x.contiguous().numpy(), self.offsets[:-1].numpy()))
        if op == "sum":
            return torch.segment_reduce(x, "sum", lengths=counts)
        init = torch.iinfo(x.dtype).max if op == "min" else torch.iinfo(x.dtype).min
        out = torch.full((R,), init, dtype=x.dtype, device=x.device)
        return out.scatter_reduce_(0, self._segment_ids(), x, reduce="amin" if op == "min" else "amax")

    def pixels(self, r: int) -> np.ndarray:
        """Coordinates (k, ndim) of region r, in array axis order (a NumPy copy on the host)."""
        R = len(self)
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 0 <= r < R:
            raise ValueError(f"r: expected a region index in [0, {R}), got {r!r}")
        o = self.offsets[r:r + 2].tolist()
        return self._unravel(self.values[o[0]:o[1]].cpu().numpy())

    def _unravel(self, flat: np.ndarray) -> np.ndarray:
        return np.stack(np.unravel_index(flat, self.shape), axis=1)

    # --- geometry ----------------------------------------------------------------------------
    @property
    def bboxes(self) -> torch.Tensor:
        """(R, 2·ndim) int64: per axis the first index, then per axis the extent (OpenCV's (y, x, h, w)
        order in 2-D)."""
        R, nd = len(self), len(self.shape)
        if R == 0:
            return torch.zeros((0, 2 * nd), dtype=torch.int64, device=self.device)
        lo, hi = zip(*[(self._segment_reduce(c, "min").to(torch.int64), self._segment_reduce(c, "max").to(torch.int64))
                       for c in self._coords()])
        return torch.stack(list(lo) + [h - l + 1 for h, l in zip(hi, lo)], dim=1)

    @property
    def centroids(self) -> torch.Tensor:
        """(R, ndim) float64 mean pixel coordinate, array axis order."""
        R, nd = len(self), len(self.shape)
        if R == 0:
            return torch.zeros((0, nd), dtype=torch.float64, device=self.device)
        if "mean" not in self._cache:
            a = self.area.to(torch.float64)
            self._cache["mean"] = torch.stack(
                [self._segment_reduce(c.to(torch.float64), "sum") / a for c in self._coords()], dim=1)
        return self._cache["mean"]

    @property
    def covariances(self) -> torch.Tensor:
        """(R, ndim, ndim) float64 second central moments (population covariance of the pixel
        coordinates), from the centred coordinates (no E[x²] − E[x]² cancellation)."""
        R, nd = len(self), len(self.shape)
        if R == 0:
            return torch.zeros((0, nd, nd), dtype=torch.float64, device=self.device)
        mean = self.centroids
        a = self.area.to(torch.float64)
        # (a mixed int/float torch.sub is ~5x slower on the CPU than converting first)
        d = [c.to(torch.float64).sub_(self._expand(mean[:, i].contiguous())) for i, c in enumerate(self._coords())]
        cov = torch.empty((R, nd, nd), dtype=torch.float64, device=self.device)
        prod = torch.empty_like(d[0])  # one buffer for the products: fresh large buffers fault in pages
        for i in range(nd):
            for j in range(i, nd):
                m = self._segment_reduce(torch.mul(d[i], d[j], out=prod), "sum") / a
                cov[:, i, j] = m
                cov[:, j, i] = m
        return cov

    @property
    def ellipses(self) -> torch.Tensor:
        """2-D: (R, 5) = (cx, cy, semi-major, semi-minor, angle in degrees in [0, 180) from +x towards
        +y); semi-axes = 2·sqrt(eigenvalues of the covariance), closed form for 2 × 2. An isotropic
        region (equal eigenvalues, e.g. one pixel) has angle 0. 3-D volumes: use ``ellipsoids``."""
        if len(self.shape) != 2:
            raise ValueError("ellipses: defined for 2-D images; use ellipsoids for volumes")
        cov, mean = self.covariances, self.centroids
        cyy, cxy, cxx = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
        half_sum = 0.5 * (cxx + cyy)
        radius = torch.hypot(0.5 * (cxx - cyy), cxy)
        big = half_sum + radius
        # the small eigenvalue as det / big avoids the cancellation of half_sum - radius
        small = torch.where(big > 0, (cxx * cyy - cxy * cxy) / big.clamp(min=torch.finfo(torch.float64).tiny),
                            torch.zeros_like(big))
        ang = torch.rad2deg(0.5 * torch.atan2(2 * cxy, cxx - cyy)) % 180.0
        ang = torch.where(ang >= 180.0, ang - 180.0, ang)  # -0.0 % 180 rounds to 180.0
        return torch.stack([mean[:, 1], mean[:, 0], 2 * big.clamp(min=0).sqrt(), 2 * small.clamp(min=0).sqrt(), ang],
                           dim=1)

    @property
    def ellipsoids(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(centroids (R, nd), semi-axes (R, nd) = 2·sqrt(eigenvalues, ascending), axes (R, nd, nd) as columns)."""
        cov, nd = self.covariances, len(self.shape)
        if len(self) == 0:
            z = torch.zeros((0, nd), dtype=torch.float64, device=self.device)
            return self.centroids, z, torch.zeros((0, nd, nd), dtype=torch.float64, device=self.device)
        w, v = torch.linalg.eigh(cov)
        return self.centroids, 2 * w.clamp(min=0).sqrt(), v

    # --- masks -------------------------------------------------------------------------------
    def _global_values(self) -> torch.Tensor:
        n = math.prod(self.shape)
        if self.batch_size == 1:
            return self.values.to(torch.int64)
        return self.values.to(torch.int64) + self._expand(self.image_index.to(torch.int64) * n)

    def union_mask(self, polarity=None) -> torch.Tensor:
        """(B, *shape) bool: pixels inside any region (of the given polarity, or of both)."""
        if polarity is not None and polarity not in ("bright", "dark"):
            raise ValueError(f"polarity: expected 'bright', 'dark' or None, got {polarity!r}")
        n = math.prod(self.shape)
        out = torch.zeros(self.batch_size * n, dtype=torch.bool, device=self.device)
        gv = self._global_values()
        if polarity is not None:
            gv = gv[self._expand(self.polarity == (1 if polarity == "bright" else -1))]
        out.index_fill_(0, gv, True)
        return out.reshape((self.batch_size,) + self.shape)

    def label_image(self) -> torch.Tensor:
        """(B, *shape) int64: 1 + index of the smallest region containing the pixel (the lower index
        among equal areas), 0 outside all regions."""
        n = math.prod(self.shape)
        R = len(self)
        none = torch.iinfo(torch.int64).max
        best = torch.full((self.batch_size * n,), none, dtype=torch.int64, device=self.device)
        if R:
            # rank of (area, index): the smallest region wins a pixel by a plain minimum
            order = torch.argsort(self.area.to(torch.int64), stable=True)
            rank = torch.empty_like(order)
            rank[order] = torch.arange(R, device=self.device)
            best.scatter_reduce_(0, self._global_values(), self._expand(rank), reduce="amin")
            lab = torch.where(best == none, torch.zeros_like(best), order[best.clamp(max=R - 1)] + 1)
        else:
            lab = torch.zeros_like(best)
        return lab.reshape((self.batch_size,) + self.shape)

    def subset(self, keep) -> "MSERResult":
        """The regions where ``keep`` (bool (R,) or indices; tensor, array or list) is true, as a new result."""
        R = len(self)
        k = torch.as_tensor(np.asarray(keep.cpu() if isinstance(keep, torch.Tensor) else keep))
        if k.dtype != torch.bool:
            if k.numel() == 0:  # np.asarray([]) is float64: no indices
                k = k.to(torch.int64)
            if k.is_floating_point() or k.is_complex():
                raise ValueError(f"keep: expected booleans or integer indices, got {k.dtype}")
            idx = k.to(torch.int64).reshape(-1)
            if idx.numel() and (int(idx.min()) < -R or int(idx.max()) >= R):
                raise ValueError(f"keep: indices must lie in [-{R}, {R}), got [{int(idx.min())}, {int(idx.max())}]")
            k = torch.zeros(R, dtype=torch.bool)
            k[idx] = True
        if tuple(k.shape) != (R,):
            raise ValueError(f"keep: expected {R} booleans, got shape {tuple(k.shape)}")
        k = k.to(self.device)
        counts = self._counts()
        vals = self.values[self._expand(k)]
        off = torch.cat([torch.zeros(1, dtype=torch.int64, device=self.device), torch.cumsum(counts[k], 0)])
        return MSERResult(vals, off, self.image_index[k], self.level[k], self.area[k], self.variation[k],
                          self.polarity[k], self.shape, self.batch_size)

    def to_opencv(self, image: int = 0) -> Tuple[List[np.ndarray], np.ndarray]:
        """Regions of one 2-D image in OpenCV's format (NumPy, host): [(k, 2) int32 (x, y)], bboxes (R, 4)
        (x, y, w, h)."""
        if len(self.shape) != 2:
            raise ValueError("to_opencv: 2-D images only")
        if isinstance(image, bool) or not isinstance(image, (int, np.integer)) or not 0 <= image < self.batch_size:
            raise ValueError(f"image: expected an index in [0, {self.batch_size}), got {image!r}")
        sel = np.nonzero(self.image_index.cpu().numpy() == image)[0]
        o, v = self.offsets.cpu().numpy(), self.values.cpu().numpy()  # one copy, not one per region
        regs = [self._unravel(v[o[r]:o[r + 1]])[:, ::-1].astype(np.int32) for r in sel]
        bb = self.bboxes.cpu().numpy()[sel][:, [1, 0, 3, 2]] if len(sel) else np.zeros((0, 4), np.int64)
        return regs, bb
