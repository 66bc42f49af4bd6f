// SVD-Grad-CAM rank-1 channel weights over many small gradient slices (seeds-part1.md §8.3).
//
// For each slice G (P x Q) the weight needs only the top right singular vector v1 of G (and
// sigma1 * su1 = 1^T G v1), never the reconstruction U S V^T:
//   usv, all:     w = (1^T G v1)(1^T v1) / (P Q)          uv, all:     w = that / sigma1
//   usv, literal: w = (1^T G v1) v1[0] / P                 uv, literal: w = that / sigma1
// v1 is the top eigenvector of the Gram matrix C = G^T G (Q x Q), found by repeated squaring of
// C / tr(C) until it is numerically rank one (the powers C^(2^k) converge at rate (l2/l1)^(2^k)),
// then refined by power steps on C. Products are sign-invariant, so no sign convention is needed.
// Slices whose top eigenvalue is (nearly) tied, and slices holding inf or float64 values whose Gram
// matrix leaves double's range, are flagged (status 1) and left to the caller's dense eigensolver. One matrix per OpenMP iteration; doubles throughout.
#include "cam/svd_weights.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/parallel.h"

namespace medseg {
namespace cam {

namespace {

// The weight of one slice from its converged v1 (and C = G^T G): lambda1 = v^T C v, a = 1^T G v, then
// the procedure/reduction formula of the header comment. C and v are read with element stride
// `stride` (1 for one slice; 4 for the interleaved layout of block4).
template <typename T>
inline double slice_weight(const T* g, const double* C, const double* v, int64_t stride, int64_t P, int64_t Q,
                           int procedure, int reduction) {
  double lam = 0.0;
  for (int64_t i = 0; i < Q; ++i) {
    double s = 0.0;
    for (int64_t m = 0; m < Q; ++m) s += C[(i * Q + m) * stride] * v[m * stride];
    lam += v[i * stride] * s;
  }
  double a = 0.0;
  for (int64_t p = 0; p < P; ++p) {
    double s = 0.0;
    for (int64_t i = 0; i < Q; ++i) s += static_cast<double>(g[p * Q + i]) * v[i * stride];
    a += s;
  }
  double coef = a;
  if (procedure == 1) {
    const double sig = std::sqrt(std::max(lam, 0.0));
    coef = sig > 0.0 ? a / sig : 0.0;
  }
  if (reduction == 0) {
    double sv = 0.0;
    for (int64_t i = 0; i < Q; ++i) sv += v[i * stride];
    return coef * sv / static_cast<double>(P * Q);
  }
  return coef * v[0] / static_cast<double>(P);
}

// Traces below this leave Gram entries subnormal (|G| below ~1e-140, float64 input only).
constexpr double kTinyTrace = 1e-280;

// A slice whose trace tr = ||G||_F^2 is outside (kTinyTrace, inf): NaN input -> NaN; an all-zero slice
// -> 0; else status 1 for the caller's dense path, which rescales each slice. That covers inf input
// and finite float64 |G| beyond ~1e±150, whose Gram matrix over/underflowed (NaN or 0 weights before).
template <typename T>
double rare_slice(const T* g, int64_t P, int64_t Q, double tr, uint8_t* status) {
  if (std::isnan(tr)) return std::nan("");
  if (tr == 0.0) {
    bool zero = true;
    for (int64_t e = 0; e < P * Q && zero; ++e) zero = g[e] == T(0);
    if (zero) return 0.0;
  }
  *status = 1;
  return 0.0;
}

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
  if (!(tr > kTinyTrace) || !std::isfinite(tr)) {
    *w = rare_slice(g, P, Q, tr, status);
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
  *w = slice_weight(g, C, v, 1, P, Q, procedure, reduction);
}


// Four slices at once, lane-interleaved ([entry * 4 + lane]): the inner lane loops vectorise and
// the four independent dependency chains hide the FMA latency of the short (Q = 7) dot products.
// Same algorithm and stopping rule as one_slice, per lane (a lane that converged keeps squaring a
// rank-one matrix, which leaves it unchanged up to rounding).
template <typename T, int PC, int QC>
void block4(const T* g0, int64_t P_, int64_t Q_, int procedure, int reduction, double* w, uint8_t* status,
            double* buf) {
  constexpr int L = 4;
  const int64_t P = PC > 0 ? PC : P_;
  const int64_t Q = QC > 0 ? QC : Q_;
  double* C = buf;
  double* A = C + Q * Q * L;
  double* B = A + Q * Q * L;
  double* v = B + Q * Q * L;
  double* t = v + Q * L;
  const T* g[L];
  for (int l = 0; l < L; ++l) g[l] = g0 + l * P * Q;
  for (int64_t i = 0; i < Q; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double s[L] = {0.0, 0.0, 0.0, 0.0};
      for (int64_t p = 0; p < P; ++p)
        for (int l = 0; l < L; ++l)
          s[l] += static_cast<double>(g[l][p * Q + i]) * static_cast<double>(g[l][p * Q + j]);
      for (int l = 0; l < L; ++l) {
        C[(i * Q + j) * L + l] = s[l];
        C[(j * Q + i) * L + l] = s[l];
      }
    }
  double tr[L] = {0.0, 0.0, 0.0, 0.0};
  for (int64_t i = 0; i < Q; ++i)
    for (int l = 0; l < L; ++l) tr[l] += C[(i * Q + i) * L + l];
  bool valid[L], conv[L];
  double inv[L];
  for (int l = 0; l < L; ++l) {
    valid[l] = tr[l] > kTinyTrace && std::isfinite(tr[l]);
    conv[l] = !valid[l];
    inv[l] = valid[l] ? 1.0 / tr[l] : 0.0;
  }
  for (int64_t e = 0; e < Q * Q; ++e)
    for (int l = 0; l < L; ++l) A[e * L + l] = C[e * L + l] * inv[l];
  for (int k = 0; k < 24; ++k) {
    bool all = true;
    for (int l = 0; l < L; ++l) all = all && conv[l];
    if (all) break;
    for (int64_t i = 0; i < Q; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        double s[L] = {0.0, 0.0, 0.0, 0.0};
        for (int64_t m = 0; m < Q; ++m)
          for (int l = 0; l < L; ++l) s[l] += A[(i * Q + m) * L + l] * A[(m * Q + j) * L + l];
        for (int l = 0; l < L; ++l) {
          B[(i * Q + j) * L + l] = s[l];
          B[(j * Q + i) * L + l] = s[l];
        }
      }
    double trb[L] = {0.0, 0.0, 0.0, 0.0}, fro[L] = {0.0, 0.0, 0.0, 0.0};
    for (int64_t i = 0; i < Q; ++i)
      for (int l = 0; l < L; ++l) trb[l] += B[(i * Q + i) * L + l];
    for (int l = 0; l < L; ++l) inv[l] = trb[l] > 0.0 ? 1.0 / trb[l] : 0.0;
    for (int64_t e = 0; e < Q * Q; ++e)
      for (int l = 0; l < L; ++l) {
        A[e * L + l] = B[e * L + l] * inv[l];
        fro[l] += A[e * L + l] * A[e * L + l];
      }
    for (int l = 0; l < L; ++l) conv[l] = conv[l] || (1.0 - fro[l]) <= 1e-13;
  }
  for (int l = 0; l < L; ++l) {
    status[l] = 0;
    if (!valid[l]) {
      w[l] = rare_slice(g[l], P, Q, tr[l], status + l);
      continue;
    }
    if (!conv[l]) {
      status[l] = 1;
      w[l] = 0.0;
      continue;
    }
    int64_t jmax = 0;
    for (int64_t i = 1; i < Q; ++i)
      if (A[(i * Q + i) * L + l] > A[(jmax * Q + jmax) * L + l]) jmax = i;
    double nv = 0.0;
    for (int64_t i = 0; i < Q; ++i) {
      v[i * L + l] = A[(i * Q + jmax) * L + l];
      nv += v[i * L + l] * v[i * L + l];
    }
    nv = 1.0 / std::sqrt(nv);
    for (int64_t i = 0; i < Q; ++i) v[i * L + l] *= nv;
  }
  for (int it = 0; it < 2; ++it) {  // power refinement on C
    double n2[L] = {0.0, 0.0, 0.0, 0.0};
    for (int64_t i = 0; i < Q; ++i) {
      double s[L] = {0.0, 0.0, 0.0, 0.0};
      for (int64_t m = 0; m < Q; ++m)
        for (int l = 0; l < L; ++l) s[l] += C[(i * Q + m) * L + l] * v[m * L + l];
      for (int l = 0; l < L; ++l) {
        t[i * L + l] = s[l];
        n2[l] += s[l] * s[l];
      }
    }
    for (int l = 0; l < L; ++l) {
      if (!(valid[l] && conv[l] && n2[l] > 0.0)) continue;
      const double r = 1.0 / std::sqrt(n2[l]);
      for (int64_t i = 0; i < Q; ++i) v[i * L + l] = t[i * L + l] * r;
    }
  }
  for (int l = 0; l < L; ++l) {
    if (!valid[l] || !conv[l]) continue;
    w[l] = slice_weight(g[l], C + l, v + l, L, P, Q, procedure, reduction);
  }
}

template <typename T, int PC, int QC>
void run_shape(const T* g, int64_t M, int64_t P, int64_t Q, int procedure, int reduction, double* w,
               uint8_t* status) {
  const int64_t blocks = M / 4;  // four slices per iteration, the remainder one by one
  parallel_for(blocks + (M - 4 * blocks), [&](int64_t k) {
    thread_local std::vector<double> buf;
    const size_t need = static_cast<size_t>(4 * (3 * Q * Q + 2 * Q));
    if (buf.size() < need) buf.assign(need, 0.0);
    double* C = buf.data();
    if (k < blocks) {
      block4<T, PC, QC>(g + 4 * k * P * Q, P, Q, procedure, reduction, w + 4 * k, status + 4 * k, C);
      return;
    }
    const int64_t s = 4 * blocks + (k - blocks);
    one_slice<T, PC, QC>(g + s * P * Q, P, Q, procedure, reduction, w + s, status + s, C, C + Q * Q, C + 2 * Q * Q,
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
