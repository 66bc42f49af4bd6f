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

// Extra statistics of the same pass, for the squared-denominator Dice, the pointwise and compound
// losses and the hard confusion counts (seeds-losses.md section 5, groups S/P/C/H):
//   Q = sum p^2 (valid elements);
//   Spos = sum over elements with g = 1 of f_pos, Sneg = sum over valid elements with g = 0 of
//   f_neg, where f is the pointwise loss of the kind below without its class/branch weights
//   (lambda, alpha_c, the WCE weight are applied to Spos/Sneg by the epilogue);
//   Ph = number of elements predicted as the class (argmax for softmax, z > logit(threshold) for
//   sigmoid), TPh = those of them whose label is the class (counts, exact in float64 < 2^53).
// Layout: (U, C, 5) float64, last axis Q, Spos, Sneg, Ph, TPh. Backward coefficients: (U, C, 3)
// float64 = dL/dQ, dL/dSpos, dL/dSneg.
enum class PointwiseKind : int { none = 0, log = 1, focal = 2, el = 3, dibe = 4 };
constexpr int kExtQ = 0, kExtSpos = 1, kExtSneg = 2, kExtPh = 3, kExtTPh = 4, kNumExt = 5, kNumExtCoeff = 3;

struct ExtraParams {
  PointwiseKind kind = PointwiseKind::none;
  double gamma = 2.0;      // focal / EL / DIBE_Dis exponent
  double a_pos = 1.0;      // DIBE_Dis 1 + alpha on the y = 1, yhat = 0 branch (standard FN)
  double a_neg = 1.0;      // DIBE_Dis 1 + beta on the y = 0, yhat = 1 branch (standard FP)
  double logit_threshold = 0.0;  // sigmoid yhat = [z > logit(t)]; t = 0.5 -> 0
  bool want_q = true;     // Q = sum p^2 (else its passes are skipped and it comes back 0)
  bool want_hard = true;  // hard counts Ph, TPh (likewise)
};

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

// The same two passes with the extra statistics: ext is contiguous float64 (U, C, 5) and
// ext_coeff (U, C, 3), both laid out as described above. Softmax supports the kinds none, log,
// focal and el on the g = 1 term only (Sneg stays 0); sigmoid supports every kind on both terms.
// probs (null: not wanted): float32 softmax logits with dense spatial dims and kind none/log only;
// receives the probabilities as a contiguous (B, C, S) tensor (0 on ignored elements) for
// softmax_probs_backward_cpu, which then needs no second softmax.
void fused_stats_cpu(const TensorDesc& logits, const TensorDesc& labels, double* out, double* ext,
                     const RegionStatsParams& params, const ExtraParams& extra, float* probs = nullptr);
void fused_stats_backward_cpu(const TensorDesc& logits, const TensorDesc& labels, const double* coeff,
                              const double* ext_coeff, const TensorDesc& grad_logits,
                              const RegionStatsParams& params, const ExtraParams& extra);

// dL/dlogits of the softmax statistics from the stored probabilities (probs and grad: contiguous
// float32 (B, C, S1, S2, S3)); coefficients as fused_stats_backward_cpu's (ext_coeff may be null).
void softmax_probs_backward_cpu(const TensorDesc& probs, const TensorDesc& labels, const double* coeff,
                                const double* ext_coeff, const TensorDesc& grad, const RegionStatsParams& params,
                                const ExtraParams& extra);

// Per-ISA variants behind the entry points above (see common/isa.h).
#define MEDSEG_REGION_STATS_ISA_DECL(ns)                                                                 \
  namespace ns {                                                                                          \
  void stats_entry(const TensorDesc&, const TensorDesc&, double*, double*, const RegionStatsParams&,     \
                   const ExtraParams*, float*);                                                           \
  void probs_backward_entry(const TensorDesc&, const TensorDesc&, const double*, const double*,          \
                            const TensorDesc&, const RegionStatsParams&, const ExtraParams*);             \
  void backward_entry(const TensorDesc&, const TensorDesc&, const double*, const double*,                \
                      const TensorDesc&, const RegionStatsParams&, const ExtraParams*);                   \
  }
MEDSEG_REGION_STATS_ISA_DECL(isa_base)
MEDSEG_REGION_STATS_ISA_DECL(isa_avx2)
MEDSEG_REGION_STATS_ISA_DECL(isa_avx512)
#undef MEDSEG_REGION_STATS_ISA_DECL

#ifdef MEDSEG_EXT_WITH_CUDA
// GPU versions. Statistics come back as per-block partials so the final sum is done in a fixed
// order by the caller (deterministic, no float atomics):
//   partial: (B, n_blocks, 3, C) = I, P, G per block, float64 for float64 logits, else float32;
//   counts:  int32   (B, n_blocks, 3)    = valid elements, bad logits, bad labels per block.
int64_t region_stats_cuda_blocks(int64_t spatial_size);
void soft_region_stats_cuda(const TensorDesc& logits, const TensorDesc& labels, void* partial,
                            int32_t* counts, const RegionStatsParams& params, intptr_t stream);
// coeff: contiguous (U, C, 2) = dL/dI, dL/dP, float64 for float64 logits, else float32.
void soft_region_stats_backward_cuda(const TensorDesc& logits, const TensorDesc& labels,
                                     const void* coeff, const TensorDesc& grad_logits,
                                     const RegionStatsParams& params, intptr_t stream);
#endif

}  // namespace losses
}  // namespace medseg
