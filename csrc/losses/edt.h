// Exact Euclidean distance transform (losses family, group D), batched over B x C, 1-3 spatial axes,
// anisotropic spacing. Separable: a nearest-background scan along the last axis, then the
// Felzenszwalb-Huttenlocher lower envelope of parabolas along every other axis (squared distances),
// then a square root. Semantics: scipy.ndimage.distance_transform_edt per volume, except that a
// volume without any background voxel is +inf everywhere (see medseg_ext/reference/distance.py).
#pragma once

#include <cstdint>

#include "common/tensor_view.h"

namespace medseg {
namespace losses {

// What is written per voxel (m = mask != 0; EDT(x) = distance to the nearest voxel where x is false):
//   Plain:    EDT(m)                      (scipy semantics; +inf in a volume without background)
//   Inverted: EDT(!m)                     (distance to the nearest non-zero voxel)
//   Field:    EDT(m) + EDT(!m)            (MONAI HausdorffDTLoss distance field; 0 in uniform volumes)
//   Signed:   m ? offset - EDT(m) : EDT(!m)  (Kervadec one_hot2dist; 0 in uniform volumes)
enum class EdtMode : int { Plain = 0, Inverted = 1, Field = 2, Signed = 3 };

struct EdtGeometry {
  int64_t volumes = 0;      // B * C (or 1 for a plain spatial array)
  int64_t dims[3] = {1, 1, 1};  // spatial sizes, padded at the front with 1
  double spacing[3] = {1.0, 1.0, 1.0};
  bool squared = false;     // return squared distances (no square root); Plain/Inverted only
  EdtMode mode = EdtMode::Plain;
  double offset = 1.0;      // Signed mode's inside offset
};

// mask: uint8 (0 = background) or bool bytes, contiguous (volumes, d0, d1, d2).
// out:  float32 or float64, contiguous, same shape. Checks shapes, strides and dtypes before writing.
EdtGeometry edt_check(const TensorDesc& mask, const TensorDesc& out, const double* spacing, int n_spacing,
                      bool squared, int mode, double offset);
void edt_cpu(const TensorDesc& mask, const TensorDesc& out, const EdtGeometry& g);

// Surface voxels (MONAI get_mask_edges: mask XOR binary_erosion with the cross element, border =
// background): out = 1 where mask != 0 and a face neighbour along one of the last `spatial_dims` axes
// is 0 or outside the volume. mask and out: contiguous uint8 (volumes, d0, d1, d2).
void surface_edges_check(const TensorDesc& mask, const TensorDesc& out, int spatial_dims);
void surface_edges_cpu(const TensorDesc& mask, const TensorDesc& out, int spatial_dims);

// Chamfer distance transforms that are exact for their metric (two raster passes with unit weights):
// metric 0 = taxicab (face neighbours, L1), 1 = chessboard (all 3^d - 1 neighbours, L-inf); the
// voxel grid is unit-spaced (scipy distance_transform_cdt). Sites are the zero voxels of mask
// (or the non-zero ones when invert); a volume without sites is +inf. Parallel over volumes.
void cdt_cpu(const TensorDesc& mask, const TensorDesc& out, int metric, bool invert);

#ifdef MEDSEG_EXT_WITH_CUDA
void surface_edges_cuda(const TensorDesc& mask, const TensorDesc& out, int spatial_dims, intptr_t stream);
// Same contract on device pointers; one kernel launch per axis pass for the whole batch, on `stream`.
void edt_cuda(const TensorDesc& mask, const TensorDesc& out, const EdtGeometry& g, intptr_t stream);
#endif

}  // namespace losses
}  // namespace medseg
