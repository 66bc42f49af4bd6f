// Fused dense-detection losses and the label-aware (LA) mechanism's element-wise kernels
// (seeds-part1.md §1; mmdetection 2.x semantics). Every loss kernel makes ONE pass over its
// inputs and writes both the weighted loss (summed, or per element) and dloss/dinput, scaled by
// `scale` (= loss_weight / avg_factor, chosen in Python); autograd later multiplies the saved
// gradient by the incoming one (the Liger/Apex "gradient in the forward" pattern).
//
// Conventions shared by the loss kernels:
//  * inputs are strided views of any float dtype; half types are read into float32, float64
//    stays float64; sums are accumulated in float64 per fixed-size chunk and combined in chunk
//    order, so results do not depend on the thread count;
//  * `weight` views are of the compute type (float32, or float64 for float64 inputs) and may
//    have zero strides (broadcast); data == nullptr means no weight;
//  * `grad` is contiguous, of the input's dtype, fully overwritten;
//  * `loss_elem` (data == nullptr: not wanted) is contiguous, of the input's dtype;
//  * NaN inputs and out-of-range labels raise medseg::ValueError naming the argument and the index.
#pragma once

#include <cstdint>

#include "common/tensor_view.h"

namespace medseg {
namespace losses {

struct DetectionOutputs {
  double* loss_sum = nullptr;  // one float64: scale * Σ weighted loss
  TensorDesc loss_elem;        // optional per-element weighted loss (times scale)
  TensorDesc grad;             // scale * weight * dloss/dinput
};

// logits (N, C) float; labels (N) int64 in [0, C] (C = background: every target of the row is 0);
// weight (N, C) compute type (broadcast strides allowed). loss = BCE(z, t)·(αt + (1−α)(1−t))·|t − σ(z)|^γ.
void sigmoid_focal_cpu(const TensorDesc& logits, const TensorDesc& labels, const TensorDesc& weight, double alpha,
                       double gamma, double scale, const DetectionOutputs& out);

// pred, target (N, 4) boxes x1 y1 x2 y2 of the same float dtype; weight (N); loss = 1 − GIoU with
// mmdet's eps rule: union and enclosing area are clamped below by eps. The gradient is the one
// torch autograd gives for mmdet's formula (ties of max/min split the gradient in half; a clamp at
// exactly 0 passes none).
void giou_cpu(const TensorDesc& pred, const TensorDesc& target, const TensorDesc& weight, double eps, double scale,
              const DetectionOutputs& out);

// ATSS centerness target of points (N, 2) (or anchors (N, 4), their centres) inside gt boxes (N, 4):
// sqrt(min(l,r)/max(l,r) · min(t,b)/max(t,b)), written to target_out (N) (any float dtype).
void centerness_target_cpu(const TensorDesc& points, const TensorDesc& gt_boxes, const TensorDesc& target_out);

// Fused: centerness target (as above, also written to target_out) + BCE-with-logits of logits (N).
void centerness_bce_cpu(const TensorDesc& logits, const TensorDesc& points, const TensorDesc& gt_boxes,
                        const TensorDesc& weight, double scale, const TensorDesc& target_out,
                        const DetectionOutputs& out);

// Distribution focal loss (GFL): logits (N, K) over K bins, continuous target (N) in [0, K − 1]:
// (⌊y⌋ + 1 − y)·CE(z, ⌊y⌋) + (y − ⌊y⌋)·CE(z, ⌊y⌋ + 1); weight (N).
void distribution_focal_cpu(const TensorDesc& logits, const TensorDesc& target, const TensorDesc& weight,
                            double scale, const DetectionOutputs& out);

// ---------------------------------------------------------------- label-aware mechanism

// Eq. 1 of the paper for 16-bit dual-energy pairs: ch0 = H/256, ch1 = L/256,
// ch2 = 510·σ(H/L) − 255 with the L = 0 rule: H > 0 → 255 (R = +inf), H = L = 0 → 0 (R = 0).
// high, low: integer views of the same shape (rank ≤ 4, padded); out: float32/float64 view of that
// shape (channel 0), channel_stride: elements between the channels.
void dual_energy_to_rgb_cpu(const TensorDesc& high, const TensorDesc& low, const TensorDesc& out,
                            int64_t channel_stride);

// Row-wise label construction of LAcls on scores (B, C, H, W) (any strides; probabilities ≥ 0):
//   labels given (B, H, W) int64 in [0, C] (C = background): assigned = labels, confuse = argmax
//   of the row with the assigned entry set to 0 (the overall argmax for background rows);
//   labels absent (data == nullptr): assigned = argmax (pseudo-label), confuse as above.
// Ties go to the lowest index (torch/NumPy argmax). assigned_out, confuse_out: contiguous int64
// (B, H, W). onehot_assigned / onehot_confuse (data may be nullptr): contiguous (B, C, H, W) of the
// scores' dtype; background rows of the assigned one-hot are all zero.
void confuse_labels_cpu(const TensorDesc& scores, const TensorDesc& labels, int64_t* assigned_out,
                        int64_t* confuse_out, const TensorDesc& onehot_assigned, const TensorDesc& onehot_confuse);

// LA modulation, one pass: factor = a + b·σ(g1) − c·σ(g2) (g2 absent: c ignored), out = x·factor.
// x, g1, g2 same shape (rank ≤ 5, any strides, float); out, factor contiguous of x's dtype.
void la_modulate_cpu(const TensorDesc& x, const TensorDesc& g1, const TensorDesc& g2, double a, double b, double c,
                     const TensorDesc& out, const TensorDesc& factor);

// Per-ISA variants behind the entry points (common/isa.h).
#define MEDSEG_DETECTION_ISA_DECL(ns)                                                                          \
  namespace ns {                                                                                                \
  void sigmoid_focal_entry(const TensorDesc&, const TensorDesc&, const TensorDesc&, double, double, double,    \
                           const DetectionOutputs&);                                                            \
  void giou_entry(const TensorDesc&, const TensorDesc&, const TensorDesc&, double, double,                     \
                  const DetectionOutputs&);                                                                     \
  void centerness_bce_entry(const TensorDesc&, const TensorDesc&, const TensorDesc&, const TensorDesc&, double,  \
                            const TensorDesc&, const DetectionOutputs&);                                        \
  void distribution_focal_entry(const TensorDesc&, const TensorDesc&, const TensorDesc&, double,               \
                                const DetectionOutputs&);                                                       \
  void la_modulate_entry(const TensorDesc&, const TensorDesc&, const TensorDesc&, double, double, double,       \
                         const TensorDesc&, const TensorDesc&);                                                 \
  }
MEDSEG_DETECTION_ISA_DECL(isa_base)
MEDSEG_DETECTION_ISA_DECL(isa_avx2)
MEDSEG_DETECTION_ISA_DECL(isa_avx512)
#undef MEDSEG_DETECTION_ISA_DECL

}  // namespace losses
}  // namespace medseg
