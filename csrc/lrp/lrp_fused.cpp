// Fused element-wise stages of the fast signed-input LRP rules. One pass over memory each,
// OpenMP over (k, m, c) rows; reductions are combined in row order (thread-count independent).
#include "lrp/lrp_fused.h"

#include <cmath>
#include <vector>

#include "common/parallel.h"

namespace medseg {
namespace lrp {

namespace {

// Signed stabiliser d + eps * sgn0(d), sgn0(0) = sgn0(-0) = +1; NaN stays NaN.
template <typename T>
inline T stab(T d, T eps) {
  return d >= T(0) ? d + eps : d - eps;
}

template <typename T, SignedRule RULE>
void coeff_rows(const T* z, const T* h, const T* b, const T* R, T* uv, int64_t K, int64_t M, int64_t C, int64_t S,
                const SignedParams& p, double* err, double* mass) {
  const int64_t rows = K * M * C;
  std::vector<double> perr(static_cast<size_t>(rows)), pmass(static_cast<size_t>(rows));
  const T alpha = T(p.alpha), beta = T(p.beta), gamma = T(p.gamma), eps = T(p.epsilon), half = T(0.5);
  parallel_for(rows, [&](int64_t r) {
    const int64_t c = r % C, km = r / C, m = km % M;
    const T bias = b ? b[c] : T(0);
    const T bpos = bias > T(0) ? bias : T(0), bneg = bias < T(0) ? bias : T(0);
    const T* zr = z + (m * C + c) * S;
    const T* hr = h + (m * C + c) * S;
    const T* Rr = R + r * S;
    T* ur = uv + (km * 2 * C + c) * S;
    T* vr = uv + (km * 2 * C + C + c) * S;
    double e = 0.0, ms = 0.0;
    for (int64_t i = 0; i < S; ++i) {
      const T zv = zr[i], hv = hr[i], Rv = Rr[i];
      const T wx = zv - bias;
      T u, v;
      if (RULE == SignedRule::ZPlus) {
        const T P = (wx + hv) * half + bpos;
        u = v = Rv / stab(P, eps);
      } else if (RULE == SignedRule::AlphaBeta) {
        const T P = (wx + hv) * half + bpos;
        const T N = (wx - hv) * half + bneg;
        const T sp = Rv * (alpha / stab(P, eps));
        const T sn = Rv * (beta / stab(N, eps));
        u = sp - sn;
        v = sp + sn;
      } else {
        const T P = (wx + hv) * half + bpos;
        const T N = (wx - hv) * half + bneg;
        const T sp = zv > T(0) ? Rv / stab(zv + gamma * P, eps) : T(0);
        const T sn = zv < T(0) ? Rv / stab(zv + gamma * N, eps) : T(0);
        u = sp + sn;
        v = sp - sn;
      }
      ur[i] = u;
      vr[i] = v;
      e += double(hv) * (std::fabs(double(u)) + std::fabs(double(v)));
      ms += std::fabs(double(Rv));
    }
    perr[static_cast<size_t>(r)] = e;
    pmass[static_cast<size_t>(r)] = ms;
  });
  double e = 0.0, ms = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    e += perr[static_cast<size_t>(r)];
    ms += pmass[static_cast<size_t>(r)];
  }
  *err = e;
  *mass = ms;
}

}  // namespace

template <typename T>
void signed_coeffs(const T* z, const T* h, const T* b, const T* R, T* uv, int64_t K, int64_t M, int64_t C,
                   int64_t S, const SignedParams& p, double* err, double* mass) {
  switch (p.rule) {
    case SignedRule::ZPlus:
      coeff_rows<T, SignedRule::ZPlus>(z, h, b, R, uv, K, M, C, S, p, err, mass);
      break;
    case SignedRule::AlphaBeta:
      coeff_rows<T, SignedRule::AlphaBeta>(z, h, b, R, uv, K, M, C, S, p, err, mass);
      break;
    case SignedRule::Gamma:
      coeff_rows<T, SignedRule::Gamma>(z, h, b, R, uv, K, M, C, S, p, err, mass);
      break;
  }
}

template <typename T>
void combine(const T* x, const T* g, T* out, int64_t K, int64_t M, int64_t C, int64_t S, double c1, double c2) {
  const T a1 = T(c1), a2 = T(c2);
  parallel_for(K * M * C, [&](int64_t r) {
    const int64_t c = r % C, km = r / C, m = km % M;
    const T* xr = x + (m * C + c) * S;
    const T* g1 = g + (km * 2 * C + c) * S;
    const T* g2 = g + (km * 2 * C + C + c) * S;
    T* o = out + r * S;
    for (int64_t i = 0; i < S; ++i) {
      const T xv = xr[i];
      o[i] = g1[i] * (a1 * xv) + g2[i] * (a2 * std::fabs(xv));
    }
  });
}

template <typename T>
void eps_div(const T* R, const T* z, const T* mult, T* out, int64_t K, int64_t n, double eps) {
  constexpr int64_t kBlock = 16384;
  const int64_t nb = (n + kBlock - 1) / kBlock;
  const T e = T(eps);
  parallel_for(K * nb, [&](int64_t t) {
    const int64_t k = t / nb, i0 = (t % nb) * kBlock, i1 = i0 + kBlock < n ? i0 + kBlock : n;
    const T* Rk = R + k * n;
    T* ok = out + k * n;
    if (mult) {
      for (int64_t i = i0; i < i1; ++i) ok[i] = Rk[i] / stab(z[i], e) * mult[i];
    } else {
      for (int64_t i = i0; i < i1; ++i) ok[i] = Rk[i] / stab(z[i], e);
    }
  });
}

template <typename T>
void norm_freeze_eps(const T* x, const T* z, const T* R, const T* weight, T* out, int64_t K, int64_t M, int64_t C,
                     int64_t S, double norm_eps, double eps) {
  const T e = T(eps);
  parallel_for(M * C, [&](int64_t r) {
    const int64_t c = r % C;
    const T* xr = x + r * S;
    const T* zr = z + r * S;
    double mean = 0.0;
    for (int64_t i = 0; i < S; ++i) mean += double(xr[i]);
    mean = S > 0 ? mean / double(S) : 0.0;
    double var = 0.0;
    for (int64_t i = 0; i < S; ++i) {
      const double d = double(xr[i]) - mean;
      var += d * d;
    }
    var = S > 0 ? var / double(S) : 0.0;
    T a = T(1) / std::sqrt(T(var) + T(norm_eps));
    if (weight) a = a * weight[c];
    for (int64_t k = 0; k < K; ++k) {
      const T* Rr = R + (k * M * C + r) * S;
      T* o = out + (k * M * C + r) * S;
      for (int64_t i = 0; i < S; ++i) o[i] = Rr[i] / stab(zr[i], e) * (xr[i] * a);
    }
  });
}

template void signed_coeffs<float>(const float*, const float*, const float*, const float*, float*, int64_t, int64_t,
                                   int64_t, int64_t, const SignedParams&, double*, double*);
template void signed_coeffs<double>(const double*, const double*, const double*, const double*, double*, int64_t,
                                    int64_t, int64_t, int64_t, const SignedParams&, double*, double*);
template void eps_div<float>(const float*, const float*, const float*, float*, int64_t, int64_t, double);
template void eps_div<double>(const double*, const double*, const double*, double*, int64_t, int64_t, double);
template void norm_freeze_eps<float>(const float*, const float*, const float*, const float*, float*, int64_t, int64_t,
                                     int64_t, int64_t, double, double);
template void norm_freeze_eps<double>(const double*, const double*, const double*, const double*, double*, int64_t,
                                      int64_t, int64_t, int64_t, double, double);
template void combine<float>(const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t, double, double);
template void combine<double>(const double*, const double*, double*, int64_t, int64_t, int64_t, int64_t, double,
                              double);

}  // namespace lrp
}  // namespace medseg
