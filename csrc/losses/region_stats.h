// Soft region statistics of a segmentation output, the sufficient statistics of every region
// loss (Dice, Jaccard, Tversky, Kappa, ...): per (unit, class)
//   I = sum p*g,  P = sum p,  G = sum g,  N = number of valid elements,
// read from logits (B, C, S1, S2, S3) and integer labels (B, S1, S2, S3) in one pass, without
// materialising the softmax or the one-hot labels. The backward is a second pass that writes
// dL/dlogits from the O(U*C) coefficients dL/dI and dL/dP (G and N do not depend on logits):
//   dL/dp_ic = dL/dP_uc + g_ic * dL/dI_uc
// chained through the sigmoid, p(1-p), or the softmax Jacobian, p_c (H_c - sum_k p_k H_k).
#pragma once

#include <cstdint>

#include "common/tensor_view.h"

namespace medseg {
namespace losses {

struct RegionStatsParams {
  bool sigmoid = false;       // false: softmax over C; true: independent sigmoid per channel
  bool per_sample = true;     // unit = one sample (U = B) or the whole batch (U = 1)
  bool has_ignore = false;
  int64_t ignore_index = -100;
};

// Layout of the statistics tensor: (U, C, 4) float64, last axis I, P, G, N.
constexpr int kStatI = 0, kStatP = 1, kStatG = 2, kStatN = 3, kNumStats = 4;

// logits and labels as given by Python (ranks 3..5 and 2..4); checks shapes, returns them padded
// to (B, C, S1, S2, S3) and (B, S1, S2, S3).
void normalise_region_inputs(const TensorDesc& logits_in, const TensorDesc& labels_in,
                             TensorDesc& logits, TensorDesc& labels);

// out: contiguous float64 (U, C, 4).
void soft_region_stats_cpu(const TensorDesc& logits, const TensorDesc& labels, double* out,
                           const RegionStatsParams& params);

// coeff: contiguous float64 (U, C, 2) = dL/dI, dL/dP (the same layout as the CUDA coeff);
// grad_logits: contiguous (B, C, S1, S2, S3) tensor of the logits' dtype, fully overwritten.
void soft_region_stats_backward_cpu(const TensorDesc& logits, const TensorDesc& labels,
                                    const double* coeff, const TensorDesc& grad_logits,
                                    const RegionStatsParams& params);

// Per-ISA variants behind the two entry points above (see common/isa.h).
#define MEDSEG_REGION_STATS_ISA_DECL(ns)                                                                 \
  namespace ns {                                                                                          \
  void stats_entry(const TensorDesc&, const TensorDesc&, double*, const RegionStatsParams&);             \
  void backward_entry(const TensorDesc&, const TensorDesc&, const double*, const TensorDesc&,            \
                      const RegionStatsParams&);                                                          \
  }
MEDSEG_REGION_STATS_ISA_DECL(isa_base)
MEDSEG_REGION_STATS_ISA_DECL(isa_avx2)
#undef MEDSEG_REGION_STATS_ISA_DECL

#ifdef MEDSEG_EXT_WITH_CUDA
// GPU versions. Statistics come back as per-block partials so the final sum is done in a fixed
// order by the caller (deterministic, no float atomics):
//   partial: float32 (B, n_blocks, 3, C) = I, P, G per block;
//   counts:  int32   (B, n_blocks, 3)    = valid elements, bad logits, bad labels per block.
int64_t region_stats_cuda_blocks(int64_t spatial_size);
void soft_region_stats_cuda(const TensorDesc& logits, const TensorDesc& labels, float* partial,
                            int32_t* counts, const RegionStatsParams& params, intptr_t stream);
// coeff: contiguous float32 (U, C, 2) = dL/dI, dL/dP.
void soft_region_stats_backward_cuda(const TensorDesc& logits, const TensorDesc& labels,
                                     const float* coeff, const TensorDesc& grad_logits,
                                     const RegionStatsParams& params, intptr_t stream);
#endif

}  // namespace losses
}  // namespace medseg
