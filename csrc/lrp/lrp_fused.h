// Fused element-wise stages of the fast signed-input z+ / alpha-beta / gamma LRP rules
// (medseg_ext/lrp/fused.py documents the algebra; medseg_ext/reference/lrp.py holds the NumPy oracle).
#pragma once

#include <cstdint>

namespace medseg {
namespace lrp {

enum class SignedRule : int { ZPlus = 0, AlphaBeta = 1, Gamma = 2 };

struct SignedParams {
  SignedRule rule = SignedRule::ZPlus;
  double alpha = 2.0, beta = 1.0, gamma = 0.25, epsilon = 1e-6;
};

// z, h: (M, C, S) contiguous; b: (C,) or nullptr; R: (K, M, C, S); uv: (K, M, 2C, S) written.
// Returns err = sum h * (|u| + |v|) and mass = sum |R| (double, combined in a fixed order).
template <typename T>
void signed_coeffs(const T* z, const T* h, const T* b, const T* R, T* uv, int64_t K, int64_t M, int64_t C,
                   int64_t S, const SignedParams& p, double* err, double* mass);

// x: (M, C, S); g: (K, M, 2C, S); out: (K, M, C, S) = c1 * x * g[:, :, :C] + c2 * |x| * g[:, :, C:].
template <typename T>
void combine(const T* x, const T* g, T* out, int64_t K, int64_t M, int64_t C, int64_t S, double c1, double c2);

// out[k, i] = R[k, i] / stab(z[i]) (* mult[i] when mult is not null), stab(d) = d + eps * sgn0(d):
// the epsilon-rule's division for every layer kind, in one pass. R, out: (K, n); z, mult: (n).
template <typename T>
void eps_div(const T* R, const T* z, const T* mult, T* out, int64_t K, int64_t n, double eps);

// Frozen instance norm under the epsilon rule, per (m, c) plane of S values:
//   a = weight[c] / sqrt(var + norm_eps) (biased variance, two-pass, accumulated in double),
//   out[k] = R[k] / stab(z) * (x * a).
// x, z: (M, C, S); R, out: (K, M, C, S); weight: (C) or nullptr.
template <typename T>
void norm_freeze_eps(const T* x, const T* z, const T* R, const T* weight, T* out, int64_t K, int64_t M, int64_t C,
                     int64_t S, double norm_eps, double eps);

}  // namespace lrp
}  // namespace medseg
