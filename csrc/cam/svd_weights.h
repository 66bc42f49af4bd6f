// SVD-Grad-CAM rank-1 channel weights (closed form, no reconstruction) over M slices P x Q.
#pragma once

#include <cstdint>

namespace medseg {
namespace cam {

// procedure: 0 = usv (Eq. 10), 1 = uv (Eq. 9); reduction: 0 = all elements, 1 = paper_literal.
// g: contiguous (M, P, Q); w: (M,) out; status: (M,) out, 1 where the top eigenvalue is (nearly)
// tied, or the slice holds inf or float64 values beyond ~1e±140 (Gram matrix out of double's range),
// and the caller must use a dense eigensolver (rescaling); NaN input gives w = NaN.
void svd_rank1_weights_f32(const float* g, int64_t M, int64_t P, int64_t Q, int procedure, int reduction, double* w,
                           uint8_t* status);
void svd_rank1_weights_f64(const double* g, int64_t M, int64_t P, int64_t Q, int procedure, int reduction, double* w,
                           uint8_t* status);

}  // namespace cam
}  // namespace medseg
