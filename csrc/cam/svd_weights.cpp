// SVD-Grad-CAM rank-1 channel weights over many small gradient slices (seeds-part1.md §8.3).
//
// For each slice G (P x Q) the weight needs only the top right singular vector v1 of G (and
// sigma1 * su1 = 1^T G v1), never the reconstruction U S V^T:
//   usv, all:     w = (1^T G v1)(1^T v1) / (P Q)          uv, all:     w = that / sigma1
//   usv, literal: w = (1^T G v1) v1[0] / P                 uv, literal: w = that / sigma1
// v1 is the top eigenvector of the Gram matrix C = G^T G (Q x Q), found by repeated squaring of
// C / tr(C) until it is numerically rank one (the powers C^(2^k) converge at rate (l2/l1)^(2^k)),
// then refined by power steps on C. Products are sign-invariant, so no sign convention is needed.
// Slices whose top eigenvalue is (nearly) tied are flagged (status 1) and left to the caller's
// dense eigensolver. One matrix per OpenMP iteration; doubles throughout.
#include "cam/svd_weights.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/parallel.h"

namespace medseg {
namespace cam {

namespace {

// PC / QC > 0: the slice shape known at compile time (7 x 7: DenseNet/ResNet last layers at 224²),
// so every loop has a constant trip count and is unrolled; 0: run-time shape.
template <typename T, int PC, int QC>
void one_slice(const T* g, int64_t P_, int64_t Q_, int procedure, int reduction, double* w, uint8_t* status,
               double* C, double* A, double* B, double* v, double* t) {
  const int64_t P = PC > 0 ? PC : P_;
  const int64_t Q = QC > 0 ? QC : Q_;
  // Gram C = G^T G
  for (int64_t i = 0; i < Q; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double s = 0.0;
      for (int64_t p = 0; p < P; ++p) s += static_cast<double>(g[p * Q + i]) * static_cast<double>(g[p * Q + j]);
      C[i * Q + j] = s;
      C[j * Q + i] = s;
    }
  double tr = 0.0;
  for (int64_t i = 0; i < Q; ++i) tr += C[i * Q + i];
  *status = 0;
  if (!(tr > 0.0) || !std::isfinite(tr)) {  // G == 0 (w = 0) or non-finite input (propagate NaN)
    *w = tr == 0.0 ? 0.0 : std::nan("");
    return;
  }
  const double inv_tr = 1.0 / tr;  // multiply by reciprocals: divisions dominated the inner loops
  for (int64_t i = 0; i < Q * Q; ++i) A[i] = C[i] * inv_tr;
  bool converged = false;
  for (int k = 0; k < 24 && !converged; ++k) {
    // B = A * A (symmetric), then normalise to trace 1
    double trb = 0.0;
    for (int64_t i = 0; i < Q; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        double s = 0.0;
        for (int64_t m = 0; m < Q; ++m) s += A[i * Q + m] * A[m * Q + j];
        B[i * Q + j] = s;
        B[j * Q + i] = s;
      }
    for (int64_t i = 0; i < Q; ++i) trb += B[i * Q + i];
    if (!(trb > 0.0)) break;
    double fro = 0.0;
    const double inv = 1.0 / trb;
    for (int64_t i = 0; i < Q * Q; ++i) {
      A[i] = B[i] * inv;
      fro += A[i] * A[i];
    }
    // A = sum mu_i v_i v_i^T with sum mu_i = 1: ||A||_F^2 = sum mu_i^2 -> 1 when rank one
    converged = (1.0 - fro) <= 1e-13;
  }
  if (!converged) {
    *status = 1;
    *w = 0.0;
    return;
  }
  int64_t jmax = 0;
  for (int64_t i = 1; i < Q; ++i)
    if (A[i * Q + i] > A[jmax * Q + jmax]) jmax = i;
  double nv = 0.0;
  for (int64_t i = 0; i < Q; ++i) {
    v[i] = A[i * Q + jmax];
    nv += v[i] * v[i];
  }
  nv = 1.0 / std::sqrt(nv);
  for (int64_t i = 0; i < Q; ++i) v[i] *= nv;
  for (int it = 0; it < 2; ++it) {  // power refinement on C
    double n2 = 0.0;
    for (int64_t i = 0; i < Q; ++i) {
      double s = 0.0;
      for (int64_t m = 0; m < Q; ++m) s += C[i * Q + m] * v[m];
      t[i] = s;
      n2 += s * s;
    }
    if (!(n2 > 0.0)) break;
    n2 = 1.0 / std::sqrt(n2);
    for (int64_t i = 0; i < Q; ++i) v[i] = t[i] * n2;
  }
  // lambda1 = v^T C v, a = 1^T G v
  double lam = 0.0;
  for (int64_t i = 0; i < Q; ++i) {
    double s = 0.0;
    for (int64_t m = 0; m < Q; ++m) s += C[i * Q + m] * v[m];
    lam += v[i] * s;
  }
  double a = 0.0;
  for (int64_t p = 0; p < P; ++p) {
    double s = 0.0;
    for (int64_t i = 0; i < Q; ++i) s += static_cast<double>(g[p * Q + i]) * v[i];
    a += s;
  }
  double coef = a;
  if (procedure == 1) {
    const double sig = std::sqrt(std::max(lam, 0.0));
    coef = sig > 0.0 ? a / sig : 0.0;
  }
  if (reduction == 0) {
    double sv = 0.0;
    for (int64_t i = 0; i < Q; ++i) sv += v[i];
    *w = coef * sv / static_cast<double>(P * Q);
  } else {
    *w = coef * v[0] / static_cast<double>(P);
  }
}

template <typename T, int PC, int QC>
void run_shape(const T* g, int64_t M, int64_t P, int64_t Q, int procedure, int reduction, double* w,
               uint8_t* status) {
  parallel_for(M, [&](int64_t k) {
    thread_local std::vector<double> buf;
    if (static_cast<int64_t>(buf.size()) < 3 * Q * Q + 2 * Q) buf.assign(static_cast<size_t>(3 * Q * Q + 2 * Q), 0.0);
    double* C = buf.data();
    one_slice<T, PC, QC>(g + k * P * Q, P, Q, procedure, reduction, w + k, status + k, C, C + Q * Q, C + 2 * Q * Q,
                         C + 3 * Q * Q, C + 3 * Q * Q + Q);
  });
}

template <typename T>
void run(const T* g, int64_t M, int64_t P, int64_t Q, int procedure, int reduction, double* w, uint8_t* status) {
  if (P == 7 && Q == 7) return run_shape<T, 7, 7>(g, M, P, Q, procedure, reduction, w, status);
  run_shape<T, 0, 0>(g, M, P, Q, procedure, reduction, w, status);
}

}  // namespace

void svd_rank1_weights_f32(const float* g, int64_t M, int64_t P, int64_t Q, int procedure, int reduction, double* w,
                           uint8_t* status) {
  run(g, M, P, Q, procedure, reduction, w, status);
}

void svd_rank1_weights_f64(const double* g, int64_t M, int64_t P, int64_t Q, int procedure, int reduction, double* w,
                           uint8_t* status) {
  run(g, M, P, Q, procedure, reduction, w, status);
}

}  // namespace cam
}  // namespace medseg
