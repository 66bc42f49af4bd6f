// CPU implementation of soft_region_stats and its backward (see region_stats.h).
//
// Work is split into fixed chunks of kChunk spatial elements of one sample; each chunk is
// processed in tiles of kTile elements: the tile's C x kTile logits are gathered once into a
// small buffer (any strides, any float dtype), the activation is computed there, and the
// per-class sums of the tile are added to the chunk's own partial. Partials are combined in
// chunk order, so the result does not depend on the thread count.
#include "losses/region_stats.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#if defined(__SSE2__)
#include <immintrin.h>
#endif
#include <vector>

#include "common/dtype.h"
#include "common/isa.h"
#include "common/parallel.h"

namespace medseg {
namespace losses {
namespace MEDSEG_ISA_NS {

namespace {

constexpr int64_t kChunk = 16384;
constexpr int64_t kTile = 256;

struct Geometry {
  int64_t B, C, S1, S2, S3, S;
  int64_t lb, lc, l1, l2, l3;  // logits strides
  int64_t yb, y1, y2, y3;      // labels strides
  bool logits_linear, labels_linear;  // spatial dims dense and in order: element s is at offset s
  explicit Geometry(const TensorDesc& lg, const TensorDesc& lab)
      : B(lg.shape[0]), C(lg.shape[1]), S1(lg.shape[2]), S2(lg.shape[3]), S3(lg.shape[4]),
        S(lg.shape[2] * lg.shape[3] * lg.shape[4]),
        lb(lg.strides[0]), lc(lg.strides[1]), l1(lg.strides[2]), l2(lg.strides[3]), l3(lg.strides[4]),
        yb(lab.strides[0]), y1(lab.strides[1]), y2(lab.strides[2]), y3(lab.strides[3]),
        logits_linear((S3 == 1 || l3 == 1) && (S2 == 1 || l2 == S3) && (S1 == 1 || l1 == S2 * S3)),
        labels_linear((S3 == 1 || y3 == 1) && (S2 == 1 || y2 == S3) && (S1 == 1 || y1 == S2 * S3)) {}
};

// Offsets of the tile's elements [s0, s0 + n) in the logits (without the b, c terms) and labels.
inline void tile_offsets(const Geometry& g, int64_t s0, int64_t n, int64_t* loff, int64_t* yoff) {
  const int64_t plane = g.S2 * g.S3;
  int64_t i1 = s0 / plane, rem = s0 % plane;
  int64_t i2 = rem / g.S3, i3 = rem % g.S3;
  for (int64_t t = 0; t < n; ++t) {
    loff[t] = i1 * g.l1 + i2 * g.l2 + i3 * g.l3;
    yoff[t] = i1 * g.y1 + i2 * g.y2 + i3 * g.y3;
    if (++i3 == g.S3) {
      i3 = 0;
      if (++i2 == g.S2) {
        i2 = 0;
        ++i1;
      }
    }
  }
}

// Reads the labels of a tile. cls[t] is the class whose g is 1 (-1: none, e.g. a binary
// background pixel), valid[t] says whether the element counts. Throws on an out-of-range label.
template <typename L>
void load_labels(const L* lab, const Geometry& g, const RegionStatsParams& prm, int64_t b, int64_t s0,
                 int64_t n, const int64_t* yoff, int32_t* cls, bool* valid) {
  const bool binary = prm.sigmoid && g.C == 1;
  const L* base = lab + b * g.yb;
  int64_t y[kTile];
  if (g.labels_linear) {
    for (int64_t t = 0; t < n; ++t) y[t] = static_cast<int64_t>(base[s0 + t]);
  } else {
    for (int64_t t = 0; t < n; ++t) y[t] = static_cast<int64_t>(base[yoff[t]]);
  }
  const int64_t hi = binary ? 2 : g.C;
  const int64_t ign = prm.ignore_index;
  const bool has_ign = prm.has_ignore;
  int bad = 0;
#pragma omp simd reduction(| : bad)
  for (int64_t t = 0; t < n; ++t) {
    const bool ignored = has_ign && y[t] == ign;
    const bool ok = y[t] >= 0 && y[t] < hi;
    valid[t] = !ignored && ok;
    bad |= int(!ignored && !ok);
    const int64_t c = binary ? (y[t] == 1 ? 0 : -1) : y[t];
    cls[t] = valid[t] ? static_cast<int32_t>(c) : -1;
  }
  if (!bad) return;
  for (int64_t t = 0; t < n; ++t) {
    if ((has_ign && y[t] == ign) || (y[t] >= 0 && y[t] < hi)) continue;
    if (binary)
      fail("labels: value ", y[t], " at sample ", b, ", spatial index ", s0 + t,
           " is not 0 or 1 (binary sigmoid output with C = 1)",
           has_ign ? "" : "; pass ignore_index to skip such elements");
    fail("labels: value ", y[t], " at sample ", b, ", spatial index ", s0 + t, " is outside [0, C) with C = ",
         g.C, has_ign ? "" : "; pass ignore_index to skip such elements");
  }
}

[[noreturn]] void bad_logit(int64_t b, int64_t s, const char* what) {
  fail("logits: ", what, " at sample ", b, ", spatial index ", s,
       " (NaN is never allowed; softmax also rejects +inf and rows that are all -inf)");
}

// exp for float32 that the compiler can vectorise (glibc's expf is a scalar call): range
// reduction x = k ln2 + r (Cody-Waite split of ln2), a degree-6 polynomial for exp(r) (the
// Cephes expf coefficients, ~1 ulp), and 2^k assembled in the exponent bits. Underflow returns
// exactly 0; NaN is caught by the callers before it matters.
MEDSEG_SIMD_INLINE float vexp(float x) {
  const float xc = std::min(std::max(x, -87.3f), 88.7f);
  // round to nearest by adding and removing 1.5 * 2^23 (no libm call, vectorises on plain SSE2)
  const float k = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = xc - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.3f ? 0.0f : y * scale;
}
MEDSEG_SIMD_INLINE double vexp(double x) { return std::exp(x); }

// Turns the C x n logits in buf (row stride kTile) into probabilities in place and validates them.
// Loops are branch-free over t so they vectorise; errors are located after the fact.
template <typename T>
void activate_tile(T* buf, int64_t C, int64_t n, bool sigmoid, int64_t b, int64_t s0, T* lse = nullptr) {
  // ignored elements were zeroed by gather_tile, so everything below may read them freely
  int nan_seen = 0;
  for (int64_t i = 0; i < C; ++i) {
    const T* row = buf + i * kTile;
#pragma omp simd reduction(| : nan_seen)
    for (int64_t t = 0; t < n; ++t) nan_seen |= int(row[t] != row[t]);
  }
  if (nan_seen) {
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < C; ++i)
        if (std::isnan(buf[i * kTile + t])) bad_logit(b, s0 + t, "NaN");
  }
  if (sigmoid) {
    for (int64_t i = 0; i < C; ++i) {
      T* row = buf + i * kTile;
#pragma omp simd
      for (int64_t t = 0; t < n; ++t) {
        const T z = row[t];
        const T e = vexp(-std::fabs(z));  // in (0, 1]: no overflow for any z
        const T r = T(1) / (T(1) + e);
        row[t] = z >= 0 ? r : e * r;
      }
    }
    return;
  }
  T m[kTile], sum[kTile];
  for (int64_t t = 0; t < n; ++t) m[t] = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < C; ++i) {
    const T* row = buf + i * kTile;
#pragma omp simd
    for (int64_t t = 0; t < n; ++t) m[t] = std::max(m[t], row[t]);
  }
  const T inf = std::numeric_limits<T>::infinity();
  int inf_seen = 0;
#pragma omp simd reduction(| : inf_seen)
  for (int64_t t = 0; t < n; ++t) {
    inf_seen |= int(m[t] == inf) | int(m[t] == -inf);
    sum[t] = 0;
  }
  if (inf_seen) {
    for (int64_t t = 0; t < n; ++t)
      if (std::isinf(m[t])) bad_logit(b, s0 + t, m[t] > 0 ? "+inf" : "a row of all -inf");
  }
  for (int64_t i = 0; i < C; ++i) {
    T* row = buf + i * kTile;
#pragma omp simd
    for (int64_t t = 0; t < n; ++t) {
      const T e = vexp(row[t] - m[t]);
      row[t] = e;
      sum[t] += e;
    }
  }
  if (lse) {  // log-sum-exp per element, for exact log-probabilities in the pointwise losses
    for (int64_t t = 0; t < n; ++t) lse[t] = m[t] + std::log(sum[t]);
  }
  for (int64_t t = 0; t < n; ++t) sum[t] = T(1) / sum[t];
  for (int64_t i = 0; i < C; ++i) {
    T* row = buf + i * kTile;
#pragma omp simd
    for (int64_t t = 0; t < n; ++t) row[t] *= sum[t];
  }
}

// Gathers the tile's C x n logits as compute type T; contiguous spatial runs take a linear path.
template <typename S, typename T>
void gather_tile(const S* lg, const Geometry& g, int64_t b, int64_t s0, int64_t n, const int64_t* loff,
                 const T* wt, T* buf) {
  const bool linear = g.logits_linear;
  for (int64_t i = 0; i < g.C; ++i) {
    const S* base = lg + b * g.lb + i * g.lc;
    T* row = buf + i * kTile;
    if (linear) {
      const S* src = base + s0;
#pragma omp simd
      for (int64_t t = 0; t < n; ++t) {
        const T v = load_as<T>(src + t);  // loaded unconditionally, then selected: no masked loads
        row[t] = wt[t] != T(0) ? v : T(0);
      }
    } else {
      for (int64_t t = 0; t < n; ++t) row[t] = wt[t] != T(0) ? load_as<T>(base + loff[t]) : T(0);
    }
  }
}

// Everything both passes do to a tile: labels, weights, gathered logits, probabilities in buf.
// With raw, the logits are also kept there (row stride kTile); with lse, softmax log-sum-exps.
template <typename S, typename L, typename T>
void prepare_tile(const S* lg, const L* lab, const Geometry& g, const RegionStatsParams& prm, int64_t b, int64_t s0,
                  int64_t n, int64_t* loff, int64_t* yoff, int32_t* cls, bool* valid, T* wt, T* buf,
                  T* raw = nullptr, T* lse = nullptr) {
  if (!g.logits_linear || !g.labels_linear) tile_offsets(g, s0, n, loff, yoff);
  load_labels(lab, g, prm, b, s0, n, yoff, cls, valid);
  for (int64_t t = 0; t < n; ++t) wt[t] = valid[t] ? T(1) : T(0);
  gather_tile(lg, g, b, s0, n, loff, wt, buf);
  if (raw) std::memcpy(raw, buf, sizeof(T) * static_cast<size_t>(g.C * kTile));
  activate_tile(buf, g.C, n, prm.sigmoid, b, s0, lse);
}

// ---------------------------------------------------------------- pointwise losses (groups P, C)

// One pointwise term written for the "positive" orientation: the element's own class has
// probability p = exp(lp), q = 1 - p (given separately, accurately). Returns the unweighted loss f
// and kappa = p * df/dp, from which the logit gradient follows: sigmoid dz = kappa * q, softmax
// dz_c = kappa * ([c == y] - p_c). The negative (g = 0) sigmoid term is the same function of -z.
// same: yhat == y (DIBE_Dis picks the focal branch then, its modified branch otherwise).
// Limits where a power would give inf * 0 are taken explicitly (they are 0).
template <typename T>
inline void pointwise_term(PointwiseKind kind, T lp, T p, T q, bool same, T gamma, T a, T& f, T& kappa) {
  switch (kind) {
    case PointwiseKind::log:
      f = -lp;
      kappa = T(-1);
      return;
    case PointwiseKind::el: {
      const T u = -lp;
      f = std::pow(u, gamma);
      kappa = gamma == T(1) ? T(-1) : (u > T(0) ? -gamma * std::pow(u, gamma - T(1)) : T(0));
      return;
    }
    case PointwiseKind::dibe:
      if (!same) {  // y = 1, yhat = 0 branch: -(1 - p^a)^gamma * a * log p
        const T pa = std::pow(p, a);
        const T w = T(1) - pa;
        f = -std::pow(w, gamma) * a * lp;
        kappa = w > T(0) ? a * std::pow(w, gamma - T(1)) * (gamma * a * pa * lp - w) : T(0);
        return;
      }
      [[fallthrough]];
    case PointwiseKind::focal: {  // -(1 - p)^gamma * log p
      const T qg = std::pow(q, gamma);
      f = -qg * lp;
      const T lead = (gamma == T(0) || q == T(0)) ? T(0) : gamma * p * std::pow(q, gamma - T(1)) * lp;
      kappa = lead - qg;
      return;
    }
    default:
      f = T(0);
      kappa = T(0);
  }
}

// Accurate sigmoid pieces of one logit: p, q = 1 - p, log p, log q (no cancellation anywhere).
template <typename T>
inline void sigmoid_parts(T z, T& p, T& q, T& lp, T& lq) {
  const T e = std::exp(-std::fabs(z));
  const T r = T(1) / (T(1) + e);
  const T l1 = std::log1p(e);
  p = z >= 0 ? r : e * r;
  q = z >= 0 ? e * r : r;
  lp = -(std::max(-z, T(0)) + l1);
  lq = -(std::max(z, T(0)) + l1);
}

// log(1 + x) for x in [0, 1] without a libm call, so loops over it vectorise: 2 atanh(s) with
// s = x / (2 + x) <= 1/3, odd series to s^13 (relative error < 2e-8, under float rounding).
MEDSEG_SIMD_INLINE float vlog1p01(float x) {
  const float s = x / (2.0f + x);
  const float s2 = s * s;
  float r = 1.0f / 13.0f;
  r = r * s2 + 1.0f / 11.0f;
  r = r * s2 + 1.0f / 9.0f;
  r = r * s2 + 1.0f / 7.0f;
  r = r * s2 + 0.2f;
  r = r * s2 + 1.0f / 3.0f;
  r = r * s2 + 1.0f;
  return 2.0f * s * r;
}
MEDSEG_SIMD_INLINE double vlog1p01(double x) { return std::log1p(x); }

// log(x) for normal floats x > 0 without a libm call, so the per-element log-sum-exp vectorises:
// x = 2^k m with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s), s = (m - 1)/(m + 1), |s| < 0.172,
// odd series to s^9 (truncation < 1e-9); k ln 2 with the Cody-Waite split of ln 2.
MEDSEG_SIMD_INLINE float vlog(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  int32_t k = ((bits >> 23) & 0xff) - 127;
  const int32_t mbits = (bits & 0x007fffff) | 0x3f800000;
  float m;
  std::memcpy(&m, &mbits, sizeof(m));
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  k = big ? k + 1 : k;
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  float r = 1.0f / 9.0f;
  r = r * s2 + 1.0f / 7.0f;
  r = r * s2 + 0.2f;
  r = r * s2 + 1.0f / 3.0f;
  r = r * s2 + 1.0f;
  const float kf = static_cast<float>(k);
  return kf * 0.693359375f + (kf * -2.12194440e-4f + 2.0f * s * r);
}
MEDSEG_SIMD_INLINE double vlog(double x) { return std::log(x); }

// sigmoid_parts with vexp/vlog1p01: branch-free, for the vectorised log and focal rows below.
template <typename T>
MEDSEG_SIMD_INLINE void sigmoid_parts_v(T z, T& p, T& q, T& lp, T& lq) {
  const T e = vexp(-std::fabs(z));
  const T r = T(1) / (T(1) + e);
  const T l1 = vlog1p01(e);
  p = z >= 0 ? r : e * r;
  q = z >= 0 ? e * r : r;
  lp = -(std::max(-z, T(0)) + l1);
  lq = -(std::max(z, T(0)) + l1);
}

// Pointwise kinds with a vectorised sigmoid path: log and focal (powers as vexp(gamma * log)).
inline bool vector_kind(PointwiseKind k) {
  return k == PointwiseKind::none || k == PointwiseKind::log || k == PointwiseKind::focal;
}

// Extras of one sigmoid channel c over a tile (acc: Q, Spos, Sneg, Ph, TPh of that channel).
// kSquare: gamma == 2 exactly (the focal default), where the powers are products, not exp(gamma log).
template <typename T, bool kFocal, bool kSquare = false>
void sigmoid_row_extras(const T* raw, const T* prow, const int32_t* cls, const T* wt, int32_t c, int64_t n, T gamma,
                        T zt, bool pw, double* acc) {
  double q2 = 0, sp = 0, sn = 0, ph = 0, tph = 0;
#pragma omp simd reduction(+ : q2, sp, sn, ph, tph)
  for (int64_t t = 0; t < n; ++t) {
    const T w = wt[t];
    const bool pos = cls[t] == c;  // -1 (ignored or binary background) never matches
    const bool neg = !pos && w != T(0);
    const T z = raw[t];
    const T yh = z > zt ? w : T(0);
    q2 += double(prow[t] * prow[t] * w);
    ph += double(yh);
    tph += pos ? double(yh) : 0.0;
    T p, q, lp, lq;
    sigmoid_parts_v(z, p, q, lp, lq);
    T fpos = -lp, fneg = -lq;
    if (kFocal && kSquare) {
      fpos *= q * q;
      fneg *= p * p;
    } else if (kFocal) {
      fpos *= vexp(gamma * lq);  // (1 - p)^gamma
      fneg *= vexp(gamma * lp);  // p^gamma
    }
    sp += pos ? double(fpos) : 0.0;  // selects, not products: an infinite term of a masked lane stays out
    sn += neg ? double(fneg) : 0.0;
  }
  acc[0] += q2;
  if (pw) {
    acc[1] += sp;
    acc[2] += sn;
  }
  acc[3] += ph;
  acc[4] += tph;
}

// Backward of one sigmoid channel: dz = p q (A + [pos] B + 2 p cQ) + [pos] cpos kpos q - [neg] cneg kneg p.
template <typename S, typename T, bool kFocal, bool kSquare = false>
void sigmoid_row_backward(const T* raw, const int32_t* cls, const T* wt, int32_t c, int64_t n, T a, T b, T cq,
                          T cpos, T cneg, T gamma, S* o) {
#pragma omp simd
  for (int64_t t = 0; t < n; ++t) {
    const T w = wt[t];
    const bool pos = cls[t] == c;
    T p, q, lp, lq;
    sigmoid_parts_v(raw[t], p, q, lp, lq);
    T dz = p * q * (a + (pos ? b : T(0)) + T(2) * p * cq);
    T kpos = T(-1), kneg = T(-1);
    if (kFocal && kSquare) {
      kpos = T(2) * p * q * lp - q * q;
      kneg = T(2) * q * p * lq - p * p;
    } else if (kFocal) {
      // q^g (g p lp/q - 1), not g p q^(g-1) lp - q^g: for g < 1 and q underflowed to 0 (z >= ~104 in
      // float) q^(g-1) is inf and lp is 0, so the product was NaN; lp/q -> -1 as q -> 0 is the limit
      const T rpos = q > T(0) ? lp / q : T(-1);
      const T rneg = p > T(0) ? lq / p : T(-1);
      kpos = vexp(gamma * lq) * (gamma * p * rpos - T(1));
      kneg = vexp(gamma * lp) * (gamma * q * rneg - T(1));
    }
    dz += pos ? cpos * kpos * q : -cneg * kneg * p;
    store_from(o + t, w != T(0) ? dz : T(0));
  }
}

// 1 - exp(x) for x <= 0 given e = exp(x): a series near 0 (float: error < 2e-9 relative), expm1 in double.
MEDSEG_SIMD_INLINE float one_minus_exp(float x, float e) {
  const float series = -x * (1.0f + x * (0.5f + x * (1.0f / 6.0f + x * (1.0f / 24.0f + x * (1.0f / 120.0f)))));
  return x > -0.1f ? series : 1.0f - e;
}
MEDSEG_SIMD_INLINE double one_minus_exp(double x, double) { return -std::expm1(x); }

// DIBE_Dis (seeds-losses.md §2.5) of one orientation, vectorisable: the focal branch where yhat
// equals the label (same), else -(1 - p^a)^gamma a log p; f and kappa = p df/dp as pointwise_term.
// Both branches are computed and one selected; 1 - p^a uses a series where p^a is close to 1.
template <typename T, bool kSquare>
MEDSEG_SIMD_INLINE void dibe_term_v(T lp, T p, T q, T lq, bool same, T gamma, T a, T& f, T& kappa) {
  T qg, qg1;  // q^gamma, q^(gamma - 1)
  if (kSquare) {
    qg = q * q;
    qg1 = q;
  } else {
    // q^0 = 1 even at q = 0 (z = +inf on a target): vexp(0 * -inf) would be NaN
    qg = gamma == T(0) ? T(1) : vexp(gamma * lq);
    qg1 = vexp((gamma - T(1)) * lq);
  }
  const T f_focal = -qg * lp;
  const T lead = gamma * p * qg1 * lp;
  const T k_focal = (q == T(0) ? T(0) : lead) - qg;  // gamma = 0: lead is 0 already
  const T x = a * lp;  // <= 0
  const T pa = vexp(x);
  const T w = one_minus_exp(x, pa);  // 1 - p^a without cancellation
  T wg, wg1;  // w^gamma, w^(gamma - 1)
  if (kSquare) {
    wg = w * w;
    wg1 = w;
  } else {
    const T lw = vlog(w > T(0) ? w : T(1));
    const T wg_pos = vexp(gamma * lw);
    const T wg_zero = gamma == T(0) ? T(1) : T(0);
    wg = w > T(0) ? wg_pos : wg_zero;
    wg1 = vexp((gamma - T(1)) * lw);
  }
  const T f_mod = -wg * a * lp;
  const T k_mod = w > T(0) ? a * wg1 * (gamma * a * pa * lp - w) : T(0);
  f = same ? f_focal : f_mod;
  kappa = same ? k_focal : k_mod;
}

// DIBE_Dis extras of one sigmoid channel (Spos, Sneg; Q and the hard counts as sigmoid_row_extras).
template <typename T, bool kSquare>
void sigmoid_row_extras_dibe(const T* raw, const T* prow, const int32_t* cls, const T* wt, int32_t c, int64_t n,
                             T gamma, T a_pos, T a_neg, T zt, double* acc) {
  double q2 = 0, sp = 0, sn = 0, ph = 0, tph = 0;
#pragma omp simd reduction(+ : q2, sp, sn, ph, tph)
  for (int64_t t = 0; t < n; ++t) {
    const T w = wt[t];
    const bool pos = cls[t] == c;
    const bool neg = !pos && w != T(0);
    const T z = raw[t];
    const bool yhat = z > zt;
    q2 += double(prow[t] * prow[t] * w);
    ph += yhat ? double(w) : 0.0;
    tph += (pos & yhat) ? 1.0 : 0.0;
    T p, q, lp, lq, fp, kp, fn, kn;
    sigmoid_parts_v(z, p, q, lp, lq);
    dibe_term_v<T, kSquare>(lp, p, q, lq, yhat, gamma, a_pos, fp, kp);
    dibe_term_v<T, kSquare>(lq, q, p, lp, z <= zt, gamma, a_neg, fn, kn);
    sp += pos ? double(fp) : 0.0;
    sn += neg ? double(fn) : 0.0;
  }
  acc[0] += q2;
  acc[1] += sp;
  acc[2] += sn;
  acc[3] += ph;
  acc[4] += tph;
}

// Backward of one DIBE_Dis sigmoid channel (the formula of sigmoid_row_backward).
template <typename S, typename T, bool kSquare>
void sigmoid_row_backward_dibe(const T* raw, const int32_t* cls, const T* wt, int32_t c, int64_t n, T a, T b,
                               T cq, T cpos, T cneg, T gamma, T a_pos, T a_neg, T zt, S* o) {
#pragma omp simd
  for (int64_t t = 0; t < n; ++t) {
    const T w = wt[t];
    const bool pos = cls[t] == c;
    const T z = raw[t];
    const bool yhat = z > zt;
    const bool nyhat = z <= zt;
    T p, q, lp, lq, fp, kp, fn, kn;
    sigmoid_parts_v(z, p, q, lp, lq);
    dibe_term_v<T, kSquare>(lp, p, q, lq, yhat, gamma, a_pos, fp, kp);
    dibe_term_v<T, kSquare>(lq, q, p, lp, nyhat, gamma, a_neg, fn, kn);
    const T bpos = pos ? b : T(0);
    const T tpos = cpos * kp * q, tneg = -cneg * kn * p;
    const T dz = p * q * (a + bpos + T(2) * p * cq) + (pos ? tpos : tneg);
    store_from(o + t, w != T(0) ? dz : T(0));
  }
}

// Hard softmax counts of one tile: ŷ = argmax of the logits (first index on ties, torch.argmax).
template <typename T>
void softmax_hard_counts(const T* raw, const int32_t* cls, const bool* valid, int64_t C, int64_t n, double* Ph,
                         double* TPh) {
  T bestv[kTile];
  int32_t besti[kTile];
  for (int64_t t = 0; t < n; ++t) {
    bestv[t] = raw[t];
    besti[t] = 0;
  }
  for (int64_t c = 1; c < C; ++c) {
    const T* row = raw + c * kTile;
    const int32_t ci = static_cast<int32_t>(c);
#pragma omp simd
    for (int64_t t = 0; t < n; ++t) {
      const bool gt = row[t] > bestv[t];
      bestv[t] = gt ? row[t] : bestv[t];
      besti[t] = gt ? ci : besti[t];
    }
  }
  for (int64_t t = 0; t < n; ++t) {
    if (!valid[t]) continue;
    Ph[besti[t]] += 1;
    TPh[besti[t]] += besti[t] == cls[t];
  }
}

// Softmax extras of one tile, row-wise so the loops over elements vectorise: Q = sum p^2, the hard
// argmax counts, and the pointwise term of the element's own class (needs lse and the complement
// q = sum_{c != y} p_c, exact where p_y is close to 1).
template <typename T>
void softmax_tile_extras(const T* buf, const T* raw, const T* lse, const int32_t* cls, const bool* valid,
                         int64_t C, int64_t n, const ExtraParams& ex, bool pw, double* acc) {
  double* Q = acc;
  double* Spos = acc + C;
  double* Ph = acc + 3 * C;
  double* TPh = acc + 4 * C;
  T qs[kTile];
  if (ex.want_q) {
    T wt[kTile];
    for (int64_t t = 0; t < n; ++t) wt[t] = valid[t] ? T(1) : T(0);
    for (int64_t c = 0; c < C; ++c) {
      const T* row = buf + c * kTile;
      double s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t t = 0; t < n; ++t) s += double(row[t] * row[t] * wt[t]);
      Q[c] += s;
    }
  }
  if (ex.want_hard) softmax_hard_counts(raw, cls, valid, C, n, Ph, TPh);
  if (!pw) return;
  for (int64_t t = 0; t < n; ++t) qs[t] = T(0);
  for (int64_t c = 0; c < C; ++c) {
    const T* row = buf + c * kTile;
    const int32_t ci = static_cast<int32_t>(c);
#pragma omp simd
    for (int64_t t = 0; t < n; ++t) qs[t] += cls[t] == ci ? T(0) : row[t];
  }
  const T gamma = T(ex.gamma), a_pos = T(ex.a_pos);
  for (int64_t t = 0; t < n; ++t) {
    if (!valid[t]) continue;
    const int32_t y = cls[t];
    T f, kappa;
    pointwise_term(ex.kind, raw[y * kTile + t] - lse[t], buf[y * kTile + t], qs[t], true, gamma, a_pos, f, kappa);
    Spos[y] += double(f);
  }
}

// The extra statistics of one prepared tile (see ExtraParams), added to acc (5 x C: Q, Spos,
// Sneg, Ph, TPh): row-wise and vectorised for softmax and the sigmoid none/log/focal/dibe kinds,
// per element for the sigmoid el kind.
template <typename T>
void tile_extras(const T* buf, const T* raw, const T* lse, const int32_t* cls, const bool* valid, int64_t C,
                 int64_t n, bool sigmoid, const ExtraParams& ex, double* acc) {
  const T gamma = T(ex.gamma), a_pos = T(ex.a_pos), a_neg = T(ex.a_neg), zt = T(ex.logit_threshold);
  const bool pw = ex.kind != PointwiseKind::none;
  double* Q = acc;
  double* Spos = acc + C;
  double* Sneg = acc + 2 * C;
  double* Ph = acc + 3 * C;
  double* TPh = acc + 4 * C;
  if (sigmoid && (vector_kind(ex.kind) || ex.kind == PointwiseKind::dibe)) {  // row-wise, vectorised
    T wt[kTile];
    for (int64_t t = 0; t < n; ++t) wt[t] = valid[t] ? T(1) : T(0);
    const bool square = ex.gamma == 2.0;
    for (int64_t c = 0; c < C; ++c) {
      double row[5] = {0, 0, 0, 0, 0};
      const int32_t ci = static_cast<int32_t>(c);
      const T* zr = raw + c * kTile;
      const T* pr = buf + c * kTile;
      if (ex.kind == PointwiseKind::dibe && square)
        sigmoid_row_extras_dibe<T, true>(zr, pr, cls, wt, ci, n, gamma, a_pos, a_neg, zt, row);
      else if (ex.kind == PointwiseKind::dibe)
        sigmoid_row_extras_dibe<T, false>(zr, pr, cls, wt, ci, n, gamma, a_pos, a_neg, zt, row);
      else if (ex.kind == PointwiseKind::focal && square)
        sigmoid_row_extras<T, true, true>(zr, pr, cls, wt, ci, n, gamma, zt, pw, row);
      else if (ex.kind == PointwiseKind::focal)
        sigmoid_row_extras<T, true>(zr, pr, cls, wt, ci, n, gamma, zt, pw, row);
      else
        sigmoid_row_extras<T, false>(zr, pr, cls, wt, ci, n, gamma, zt, pw, row);
      Q[c] += row[0];
      Spos[c] += row[1];
      Sneg[c] += row[2];
      Ph[c] += row[3];
      TPh[c] += row[4];
    }
    return;
  }
  if (!sigmoid) {
    softmax_tile_extras(buf, raw, lse, cls, valid, C, n, ex, pw, acc);
    return;
  }
  for (int64_t t = 0; t < n; ++t) {
    if (!valid[t]) continue;
    const int32_t y = cls[t];
    if (sigmoid) {
      for (int64_t c = 0; c < C; ++c) {
        const T z = raw[c * kTile + t];
        const bool pos = y == c;
        const bool yhat = z > zt;
        const T pc = buf[c * kTile + t];
        Q[c] += double(pc * pc);
        Ph[c] += yhat;
        TPh[c] += yhat && pos;
        if (!pw) continue;
        T p, q, lp, lq, f, kappa;
        sigmoid_parts(z, p, q, lp, lq);
        if (pos) {
          pointwise_term(ex.kind, lp, p, q, yhat == pos, gamma, a_pos, f, kappa);
          Spos[c] += double(f);
        } else {
          pointwise_term(ex.kind, lq, q, p, yhat == pos, gamma, a_neg, f, kappa);
          Sneg[c] += double(f);
        }
      }
      continue;
    }
  }
}

// ---------------------------------------------------------------- softmax fast path
// float32 logits and labels with dense spatial dims, pointwise kind none or log: every softmax
// region loss, CE and DiceCE. The logits are read straight from the tensor (no gathered copy),
// only the exponentials are kept in the tile buffer, probabilities are never normalised in place,
// and each class's statistics are one vectorised loop over its row. Same definitions and checks
// as the general path; per-tile sums are float (at most kTile terms), accumulated in double.

inline bool softmax_fast_eligible(const Geometry& g, const RegionStatsParams& prm, const ExtraParams* ex) {
  return !prm.sigmoid && g.logits_linear && g.labels_linear &&
         (!ex || ex->kind == PointwiseKind::none || ex->kind == PointwiseKind::log);
}

// Row maxima (masked: ignored elements read as 0, so NaN/inf there is allowed, as in gather_tile),
// the argmax (first index on ties) and the checks of the general path.
// (Loads are unconditional and selects are arithmetic so no masked load/store is emitted: those
// are microcoded and slow on AMD cores.)
// kMasked: some labels may be ignored (else wt is all 1); kCheck: the forward's validation (the
// backward reads logits the forward has already checked).
template <bool kMasked, bool kCheck>
inline void softmax_fast_max(const float* base, int64_t lc, int64_t C, int64_t n, const float* wt, int64_t b,
                             int64_t s0, float* m) {
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < n; ++t) m[t] = -inf;
  float nan_seen = 0.0f;
  for (int64_t c = 0; c < C; ++c) {
    const float* row = base + c * lc;
#pragma omp simd reduction(+ : nan_seen)
    for (int64_t t = 0; t < n; ++t) {
      const float r = row[t];
      const float x = kMasked ? (wt[t] != 0.0f ? r : 0.0f) : r;
      const float mo = m[t];
      if (kCheck) nan_seen += x != x ? 1.0f : 0.0f;
      m[t] = x > mo ? x : mo;
    }
  }
  if (!kCheck) return;
  int inf_seen = 0;
#pragma omp simd reduction(| : inf_seen)
  for (int64_t t = 0; t < n; ++t) inf_seen |= int(m[t] == inf) | int(m[t] == -inf);
  if (nan_seen == 0.0f && !inf_seen) return;
  for (int64_t t = 0; t < n; ++t) {
    if (wt[t] == 0.0f) continue;
    for (int64_t c = 0; c < C; ++c)
      if (std::isnan(base[c * lc + t])) bad_logit(b, s0 + t, "NaN");
  }
  for (int64_t t = 0; t < n; ++t)
    if (std::isinf(m[t])) bad_logit(b, s0 + t, m[t] > 0 ? "+inf" : "a row of all -inf");
}

// Statistics of the chunk [c0, c1) of sample b: acc = I[C], P[C], G[C], N (as stats_impl's
// partials), eacc = Q[C], Spos[C], Sneg[C], Ph[C], TPh[C] or null.
// Software prefetch of the next tile's logits rows: the C rows of a tile are C separate streams
// (one per class, S elements apart), more than the hardware prefetchers follow reliably.
inline void prefetch_next_tile(const float* base, int64_t lc, int64_t C, int64_t n_next) {
  for (int64_t c = 0; c < C; ++c) {
    const float* row = base + c * lc + kTile;
    for (int64_t t = 0; t < n_next; t += 16) __builtin_prefetch(row + t, 0, 3);
  }
}

// Row of probabilities out to memory with non-temporal stores where the target is aligned: the
// buffer is read again only by the backward, so caching it (and reading each line for ownership
// first) is wasted bandwidth. Plain stores where unaligned or without SSE.
inline void stream_row(float* dst, const float* src, int64_t n) {
  int64_t t = 0;
#if defined(__AVX__)
  if ((reinterpret_cast<uintptr_t>(dst) & 31) == 0)
    for (; t + 8 <= n; t += 8) _mm256_stream_ps(dst + t, _mm256_load_ps(src + t));
#elif defined(__SSE2__)
  if ((reinterpret_cast<uintptr_t>(dst) & 15) == 0)
    for (; t + 4 <= n; t += 4) _mm_stream_ps(dst + t, _mm_load_ps(src + t));
#endif
  for (; t < n; ++t) dst[t] = src[t];
}

inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();  // streamed stores visible before the job ends
#endif
}

// probs (null: not wanted): contiguous (B, C, S) float32 that receives p (0 on ignored elements),
// so the backward can start from p instead of recomputing the softmax.
template <bool kMasked, bool kStore, typename L>
void softmax_fast_stats_job(const float* lg, const L* lab, const Geometry& g, const RegionStatsParams& prm,
                            const ExtraParams* ex, int64_t b, int64_t c0, int64_t c1, double* acc, double* eacc,
                            float* probs) {
  const int64_t C = g.C;
  std::vector<float> ebuf(static_cast<size_t>(C * kTile));
  float* e = ebuf.data();
  int64_t yoff[kTile];
  int32_t cls[kTile], best[kTile];
  bool valid[kTile];
  float wt[kTile], m[kTile], sum[kTile], inv[kTile], lse[kTile];
  alignas(32) float ptile[kTile];
  const bool want_ce = ex && ex->kind == PointwiseKind::log;
  const bool want_q = ex && ex->want_q, want_hard = ex && ex->want_hard;
  for (int64_t s0 = c0; s0 < c1; s0 += kTile) {
    const int64_t n = std::min(kTile, c1 - s0);
    load_labels(lab, g, prm, b, s0, n, yoff, cls, valid);
    int64_t nvalid = 0;
    for (int64_t t = 0; t < n; ++t) {
      wt[t] = valid[t] ? 1.0f : 0.0f;
      nvalid += valid[t];
      sum[t] = 0.0f;
    }
    const float* base = lg + b * g.lb + s0;
    prefetch_next_tile(base, g.lc, C, std::min(kTile, c1 - s0 - n));
    softmax_fast_max<kMasked, true>(base, g.lc, C, n, wt, b, s0, m);
    for (int64_t c = 0; c < C; ++c) {
      const float* row = base + c * g.lc;
      float* er = e + c * kTile;
#pragma omp simd
      for (int64_t t = 0; t < n; ++t) {
        const float r = row[t];
        const float x = kMasked ? (wt[t] != 0.0f ? r : 0.0f) : r;
        const float v = vexp(x - m[t]);
        er[t] = v;
        sum[t] += v;
      }
    }
    if (want_hard) {  // argmax = the first class whose (masked) logit equals the row maximum
      for (int64_t t = 0; t < n; ++t) best[t] = int32_t(C);
      for (int64_t c = C - 1; c >= 0; --c) {
        const float* row = base + c * g.lc;
        const int32_t ci = static_cast<int32_t>(c);
#pragma omp simd
        for (int64_t t = 0; t < n; ++t) {
          const float r = row[t];
          const float x = wt[t] != 0.0f ? r : 0.0f;
          const int32_t bo = best[t];
          best[t] = x == m[t] ? ci : bo;
        }
      }
    }
#pragma omp simd
    for (int64_t t = 0; t < n; ++t) {
      inv[t] = 1.0f / sum[t];
      lse[t] = m[t] + vlog(sum[t]);
    }
    for (int64_t c = 0; c < C; ++c) {
      const float* row = base + c * g.lc;
      const float* er = e + c * kTile;
      float* pr = kStore ? probs + (b * C + c) * g.S + s0 : nullptr;
      const int32_t ci = static_cast<int32_t>(c);
      float sI = 0, sP = 0, sG = 0, sS = 0;
#pragma omp simd reduction(+ : sI, sP, sG, sS)
      for (int64_t t = 0; t < n; ++t) {
        const float p = er[t] * inv[t];
        const float ce = lse[t] - row[t];  // -log p_y, exact where p_y underflows
        const bool own = cls[t] == ci;     // -1 (ignored) never matches
        if (kStore) ptile[t] = kMasked ? (wt[t] != 0.0f ? p : 0.0f) : p;
        sP += kMasked ? (wt[t] != 0.0f ? p : 0.0f) : p;
        sI += own ? p : 0.0f;
        sG += own ? 1.0f : 0.0f;
        sS += own ? ce : 0.0f;
      }
      if (kStore) stream_row(pr, ptile, n);
      acc[c] += sI;
      acc[C + c] += sP;
      acc[2 * C + c] += sG;
      if (eacc && want_ce) eacc[C + c] += sS;
      if (!eacc || !(want_q || want_hard)) continue;
      float sQ = 0, sPh = 0, sTPh = 0;
#pragma omp simd reduction(+ : sQ, sPh, sTPh)
      for (int64_t t = 0; t < n; ++t) {
        const float p = er[t] * inv[t];
        const bool hit = wt[t] != 0.0f && best[t] == ci;
        sQ += wt[t] != 0.0f ? p * p : 0.0f;
        sPh += hit ? 1.0f : 0.0f;
        sTPh += hit && cls[t] == ci ? 1.0f : 0.0f;
      }
      if (want_q) eacc[c] += sQ;
      if (want_hard) {
        eacc[3 * C + c] += sPh;
        eacc[4 * C + c] += sTPh;
      }
    }
    acc[3 * C] += double(nvalid);
  }
  if (kStore) stream_fence();
}

// Gradient of the chunk: dz_c = p_c (A_c + p_c cq2_c - base) + [c == y] (p_c B_c + k_y), with
// base = sum_k p_k H_k + k_y, H_k = A_k + [k == y] B_k + p_k cq2_k, k_y = -cpos_y for the log
// kind (kappa = -1) and 0 without a pointwise term; ignored elements get 0. cq2 = 2 dL/dQ.
// The forward has validated the logits, so the row maxima need no checks here. kMasked: some
// labels may be ignore_index (their logits are read as 0); kQ: some dL/dQ is non-zero.
template <bool kMasked, bool kQ, typename L>
void softmax_fast_backward_job(const float* lg, const L* lab, const Geometry& g, const RegionStatsParams& prm,
                               int64_t b, int64_t c0, int64_t c1, const float* A, const float* Bc, const float* cq2,
                               const float* cpos, float* out) {
  const int64_t C = g.C;
  std::vector<float> ebuf(static_cast<size_t>(C * kTile));
  float* e = ebuf.data();
  int64_t yoff[kTile];
  int32_t cls[kTile];
  bool valid[kTile];
  float wt[kTile], m[kTile], sum[kTile], dA[kTile], dQ[kTile], inv[kTile], basev[kTile], ky[kTile];
  for (int64_t s0 = c0; s0 < c1; s0 += kTile) {
    const int64_t n = std::min(kTile, c1 - s0);
    load_labels(lab, g, prm, b, s0, n, yoff, cls, valid);
    const float* base = lg + b * g.lb + s0;
    for (int64_t t = 0; t < n; ++t) {
      wt[t] = valid[t] ? 1.0f : 0.0f;
      sum[t] = dA[t] = dQ[t] = 0.0f;
    }
    prefetch_next_tile(base, g.lc, C, std::min(kTile, c1 - s0 - n));
    softmax_fast_max<kMasked, false>(base, g.lc, C, n, wt, b, s0, m);
    for (int64_t c = 0; c < C; ++c) {
      const float* row = base + c * g.lc;
      float* er = e + c * kTile;
      const float ac = A[c], qc = kQ ? cq2[c] : 0.0f;
#pragma omp simd
      for (int64_t t = 0; t < n; ++t) {
        const float r = row[t];
        const float x = kMasked ? (wt[t] != 0.0f ? r : 0.0f) : r;
        const float v = vexp(x - m[t]);
        er[t] = v;
        sum[t] += v;
        dA[t] += v * ac;
        if (kQ) dQ[t] += v * v * qc;
      }
    }
    for (int64_t t = 0; t < n; ++t) {  // the element's own class: one scalar lookup each
      const int32_t y = cls[t];
      const float r = 1.0f / sum[t];
      const float ey = y >= 0 ? e[y * kTile + t] : 0.0f;
      const float k = y >= 0 ? -cpos[y] : 0.0f;
      inv[t] = r;
      ky[t] = k;
      basev[t] = (dA[t] + (y >= 0 ? ey * Bc[y] : 0.0f)) * r + (kQ ? dQ[t] * r * r : 0.0f) + k;
    }
    for (int64_t c = 0; c < C; ++c) {
      const float* er = e + c * kTile;
      float* o = out + (b * C + c) * g.S + s0;
      const int32_t ci = static_cast<int32_t>(c);
      const float ac = A[c], bc = Bc[c], qc = kQ ? cq2[c] : 0.0f;
#pragma omp simd
      for (int64_t t = 0; t < n; ++t) {
        const float p = er[t] * inv[t];
        const float d = p * (ac + (kQ ? p * qc : 0.0f) - basev[t]) + (cls[t] == ci ? p * bc + ky[t] : 0.0f);
        o[t] = kMasked ? (wt[t] != 0.0f ? d : 0.0f) : d;
      }
    }
  }
}

// The softmax backward from stored probabilities (softmax_fast_stats_job with probs): the same
// formula as softmax_fast_backward_job, without the row maxima and exponentials. Ignored elements
// hold p = 0, so their gradient is 0 without a mask (k_y is 0 there too).
template <bool kQ, typename L>
void softmax_probs_backward_job(const float* probs, const L* lab, const Geometry& g, const RegionStatsParams& prm,
                                int64_t b, int64_t c0, int64_t c1, const float* A, const float* Bc, const float* cq2,
                                const float* cpos, float* out) {
  const int64_t C = g.C;
  int64_t yoff[kTile];
  int32_t cls[kTile];
  bool valid[kTile];
  float dot[kTile], basev[kTile], ky[kTile];
  for (int64_t s0 = c0; s0 < c1; s0 += kTile) {
    const int64_t n = std::min(kTile, c1 - s0);
    load_labels(lab, g, prm, b, s0, n, yoff, cls, valid);
    const float* pb = probs + b * C * g.S + s0;
    prefetch_next_tile(pb, g.S, C, std::min(kTile, c1 - s0 - n));
    for (int64_t t = 0; t < n; ++t) dot[t] = 0.0f;
    for (int64_t c = 0; c < C; ++c) {
      const float* row = pb + c * g.S;
      const float ac = A[c], qc = kQ ? cq2[c] : 0.0f;
#pragma omp simd
      for (int64_t t = 0; t < n; ++t) {
        const float p = row[t];
        dot[t] += p * (kQ ? ac + p * qc : ac);
      }
    }
    for (int64_t t = 0; t < n; ++t) {
      const int32_t y = cls[t];
      const float py = y >= 0 ? pb[y * g.S + t] : 0.0f;
      const float k = y >= 0 ? -cpos[y] : 0.0f;
      ky[t] = k;
      basev[t] = dot[t] + (y >= 0 ? py * Bc[y] : 0.0f) + k;
    }
    for (int64_t c = 0; c < C; ++c) {
      const float* row = pb + c * g.S;
      float* o = out + (b * C + c) * g.S + s0;
      const int32_t ci = static_cast<int32_t>(c);
      const float ac = A[c], bc = Bc[c], qc = kQ ? cq2[c] : 0.0f;
#pragma omp simd
      for (int64_t t = 0; t < n; ++t) {
        const float p = row[t];
        o[t] = p * ((kQ ? ac + p * qc : ac) - basev[t]) + (cls[t] == ci ? p * bc + ky[t] : 0.0f);
      }
    }
  }
}

// Entry of the backward from probabilities: coefficients as fused_stats_backward_cpu's.
template <typename L>
void probs_backward_impl(const TensorDesc& probs, const TensorDesc& labels, const double* coeff,
                         const double* ext_coeff, const TensorDesc& grad, const RegionStatsParams& prm,
                         const ExtraParams* ex) {
  const Geometry g(probs, labels);
  const int64_t C = g.C;
  if (g.B == 0 || g.S == 0 || C == 0) return;
  const float* pr = static_cast<const float*>(probs.data);
  const L* lab = static_cast<const L*>(labels.data);
  float* out = static_cast<float*>(grad.data);
  const int64_t chunks_per_b = (g.S + kChunk - 1) / kChunk;
  parallel_for(g.B * chunks_per_b, [&](int64_t job) {
    const int64_t b = job / chunks_per_b;
    const int64_t c0 = (job % chunks_per_b) * kChunk;
    const int64_t c1 = std::min(g.S, c0 + kChunk);
    const int64_t u = prm.per_sample ? b : 0;
    std::vector<float> A(C), Bc(C), cq2(C, 0.0f), cpos(C, 0.0f);
    bool any_q = false;
    for (int64_t i = 0; i < C; ++i) {
      A[i] = float(coeff[(u * C + i) * 2 + 1]);
      Bc[i] = float(coeff[(u * C + i) * 2]);
      if (!ext_coeff) continue;
      const double* ec = ext_coeff + (u * C + i) * kNumExtCoeff;
      cq2[i] = float(2.0 * ec[0]);
      cpos[i] = ex->kind == PointwiseKind::log ? float(ec[1]) : 0.0f;
      any_q |= cq2[i] != 0.0f;
    }
    if (any_q)
      softmax_probs_backward_job<true>(pr, lab, g, prm, b, c0, c1, A.data(), Bc.data(), cq2.data(), cpos.data(), out);
    else
      softmax_probs_backward_job<false>(pr, lab, g, prm, b, c0, c1, A.data(), Bc.data(), cq2.data(), cpos.data(), out);
  });
}

template <typename S, typename L>
void stats_impl(const TensorDesc& logits, const TensorDesc& labels, double* out, double* ext,
                const RegionStatsParams& prm, const ExtraParams* ex, float* probs) {
  using T = typename compute_type<S>::type;
  const Geometry g(logits, labels);
  const S* lg = static_cast<const S*>(logits.data);
  const L* lab = static_cast<const L*>(labels.data);
  const int64_t C = g.C;
  const int64_t U = prm.per_sample ? g.B : 1;
  std::fill(out, out + U * C * kNumStats, 0.0);
  if (ext) std::fill(ext, ext + U * C * kNumExt, 0.0);
  if (g.B == 0 || g.S == 0 || C == 0) return;

  const int64_t chunks_per_b = (g.S + kChunk - 1) / kChunk;
  const int64_t jobs = g.B * chunks_per_b;
  const int64_t stride = 3 * C + 1;  // I[C], P[C], G[C], N
  const int64_t ext_stride = ext ? kNumExt * C : 0;
  std::vector<double> partial(static_cast<size_t>(jobs * stride), 0.0);
  std::vector<double> ext_partial(static_cast<size_t>(jobs * ext_stride), 0.0);

  const bool fast = std::is_same<S, float>::value && softmax_fast_eligible(g, prm, ext ? ex : nullptr);
  MEDSEG_CHECK(!probs || fast, "probs: only float32 softmax logits with dense spatial dims (and labels likewise) "
               "and pointwise kind none or log can store probabilities");
  parallel_for(jobs, [&](int64_t job) {
    const int64_t b = job / chunks_per_b;
    const int64_t c0 = (job % chunks_per_b) * kChunk;
    const int64_t c1 = std::min(g.S, c0 + kChunk);
    if constexpr (std::is_same<S, float>::value) {
      if (fast) {
        double* acc = partial.data() + job * stride;
        double* eacc = ext ? ext_partial.data() + job * ext_stride : nullptr;
        const ExtraParams* e = ext ? ex : nullptr;
        if (prm.has_ignore) {  // else every label is valid (load_labels throws otherwise)
          if (probs)
            softmax_fast_stats_job<true, true>(lg, lab, g, prm, e, b, c0, c1, acc, eacc, probs);
          else
            softmax_fast_stats_job<true, false>(lg, lab, g, prm, e, b, c0, c1, acc, eacc, nullptr);
        } else {
          if (probs)
            softmax_fast_stats_job<false, true>(lg, lab, g, prm, e, b, c0, c1, acc, eacc, probs);
          else
            softmax_fast_stats_job<false, false>(lg, lab, g, prm, e, b, c0, c1, acc, eacc, nullptr);
        }
        return;
      }
    }
    std::vector<T> buf(static_cast<size_t>(C * kTile));
    int64_t loff[kTile], yoff[kTile];
    int32_t cls[kTile];  // 32-bit so compares line up with float lanes when vectorised
    bool valid[kTile];
    T wt[kTile];  // 1 for counted elements, 0 for ignored: lets the loops below stay branch-free
    double* acc = partial.data() + job * stride;
    std::vector<double> tileI(C), tileP(C), tileG(C);  // double: no drift over long tiles of equal values
    std::vector<T> raw(ext ? static_cast<size_t>(C * kTile) : 0);
    T lse[kTile];
    const bool want_lse = ext && !prm.sigmoid && ex->kind != PointwiseKind::none;
    for (int64_t s0 = c0; s0 < c1; s0 += kTile) {
      const int64_t n = std::min(kTile, c1 - s0);
      prepare_tile(lg, lab, g, prm, b, s0, n, loff, yoff, cls, valid, wt, buf.data(), ext ? raw.data() : nullptr,
                   want_lse ? lse : nullptr);
      if (ext)
        tile_extras(buf.data(), raw.data(), lse, cls, valid, C, n, prm.sigmoid, *ex,
                    ext_partial.data() + job * ext_stride);
      int64_t nvalid = 0;
      for (int64_t i = 0; i < C; ++i) {
        const T* row = buf.data() + i * kTile;
        double s = 0;  // simd order is fixed per build: deterministic
#pragma omp simd reduction(+ : s)
        for (int64_t t = 0; t < n; ++t) s += double(row[t] * wt[t]);
        tileP[i] = s;
        tileI[i] = 0;
        tileG[i] = 0;
      }
      for (int64_t t = 0; t < n; ++t) {
        nvalid += valid[t];
        if (cls[t] >= 0) {
          tileI[cls[t]] += buf[cls[t] * kTile + t];
          tileG[cls[t]] += 1;
        }
      }
      for (int64_t i = 0; i < C; ++i) {
        acc[i] += tileI[i];
        acc[C + i] += tileP[i];
        acc[2 * C + i] += tileG[i];
      }
      acc[3 * C] += double(nvalid);
    }
  });

  for (int64_t job = 0; job < jobs; ++job) {
    const int64_t u = prm.per_sample ? job / chunks_per_b : 0;
    const double* acc = partial.data() + job * stride;
    double* o = out + u * C * kNumStats;
    for (int64_t i = 0; i < C; ++i) {
      o[i * kNumStats + kStatI] += acc[i];
      o[i * kNumStats + kStatP] += acc[C + i];
      o[i * kNumStats + kStatG] += acc[2 * C + i];
      o[i * kNumStats + kStatN] += acc[3 * C];
    }
    if (!ext) continue;
    const double* ea = ext_partial.data() + job * ext_stride;
    double* eo = ext + u * C * kNumExt;
    for (int64_t i = 0; i < C; ++i)
      for (int k = 0; k < kNumExt; ++k) eo[i * kNumExt + k] += ea[k * C + i];
  }
  if (ext && !(ex->want_q && ex->want_hard)) {  // statistics not asked for are 0 on every path
    for (int64_t i = 0; i < U * C; ++i) {
      if (!ex->want_q) ext[i * kNumExt + 0] = 0.0;
      if (!ex->want_hard) ext[i * kNumExt + 3] = ext[i * kNumExt + 4] = 0.0;
    }
  }
}

// Backward of one chunk [c0, c1) of sample b with the extra statistics: region coefficients A
// (dL/dP), Bc (dL/dI) plus ec = (dL/dQ, dL/dSpos, dL/dSneg) per class. Softmax and the sigmoid
// log/focal/dibe kinds run row-wise (vectorised); the sigmoid el kind per element.
template <typename S, typename L, typename T>
void extras_backward_job(const S* lg, const L* lab, const Geometry& g, const RegionStatsParams& prm,
                         const ExtraParams& ex, int64_t b, int64_t c0, int64_t c1, const std::vector<T>& A,
                         const std::vector<T>& Bc, const double* ec, S* out) {
  const int64_t C = g.C;
  const T gamma = T(ex.gamma), a_pos = T(ex.a_pos), a_neg = T(ex.a_neg), zt = T(ex.logit_threshold);
  const bool pw = ex.kind != PointwiseKind::none;
  std::vector<T> cq(C), cpos(C), cneg(C);
  for (int64_t i = 0; i < C; ++i) {
    cq[i] = T(ec[i * kNumExtCoeff + 0]);
    cpos[i] = T(ec[i * kNumExtCoeff + 1]);
    cneg[i] = T(ec[i * kNumExtCoeff + 2]);
  }
  std::vector<T> buf(static_cast<size_t>(C * kTile)), raw(static_cast<size_t>(C * kTile));
  int64_t loff[kTile], yoff[kTile];
  int32_t cls[kTile];
  bool valid[kTile];
  T wt[kTile], lse[kTile], dot[kTile], ky[kTile], qs[kTile];
  for (int64_t s0 = c0; s0 < c1; s0 += kTile) {
    const int64_t n = std::min(kTile, c1 - s0);
    prepare_tile(lg, lab, g, prm, b, s0, n, loff, yoff, cls, valid, wt, buf.data(), raw.data(),
                 (!prm.sigmoid && pw) ? lse : nullptr);
    if (prm.sigmoid && (vector_kind(ex.kind) || ex.kind == PointwiseKind::dibe)) {  // row-wise, vectorised
      const bool square = ex.gamma == 2.0;
      for (int64_t c = 0; c < C; ++c) {
        S* o = out + (b * C + c) * g.S + s0;
        const int32_t ci = static_cast<int32_t>(c);
        const T* zr = raw.data() + c * kTile;
        const T cp = pw ? cpos[c] : T(0), cn = pw ? cneg[c] : T(0);
        if (ex.kind == PointwiseKind::dibe && square)
          sigmoid_row_backward_dibe<S, T, true>(zr, cls, wt, ci, n, A[c], Bc[c], cq[c], cp, cn, gamma, a_pos, a_neg,
                                                zt, o);
        else if (ex.kind == PointwiseKind::dibe)
          sigmoid_row_backward_dibe<S, T, false>(zr, cls, wt, ci, n, A[c], Bc[c], cq[c], cp, cn, gamma, a_pos, a_neg,
                                                 zt, o);
        else if (ex.kind == PointwiseKind::focal && square)
          sigmoid_row_backward<S, T, true, true>(zr, cls, wt, ci, n, A[c], Bc[c], cq[c], cp, cn, gamma, o);
        else if (ex.kind == PointwiseKind::focal)
          sigmoid_row_backward<S, T, true>(zr, cls, wt, ci, n, A[c], Bc[c], cq[c], cp, cn, gamma, o);
        else
          sigmoid_row_backward<S, T, false>(zr, cls, wt, ci, n, A[c], Bc[c], cq[c], cp, cn, gamma, o);
      }
      continue;
    }
    if (!prm.sigmoid) {
      // dz_c = p_c (H_c - sum_k p_k H_k) + k_y ([c == y] - p_c), H_c = A_c + [c == y] B_c + 2 p_c dL/dQ_c;
      // row-wise so the loops over elements vectorise; ignored elements get 0 through wt
      for (int64_t t = 0; t < n; ++t) {
        dot[t] = T(0);
        ky[t] = T(0);
        qs[t] = T(0);
      }
      for (int64_t c = 0; c < C; ++c) {
        const T* row = buf.data() + c * kTile;
        const int32_t ci = static_cast<int32_t>(c);
        const T ac = A[c], bc = Bc[c], qc = T(2) * cq[c];
#pragma omp simd
        for (int64_t t = 0; t < n; ++t) {
          const T h = ac + (cls[t] == ci ? bc : T(0)) + qc * row[t];
          dot[t] += row[t] * h;
          qs[t] += cls[t] == ci ? T(0) : row[t];
        }
      }
      if (pw) {
        for (int64_t t = 0; t < n; ++t) {
          if (!valid[t]) continue;
          const int32_t y = cls[t];
          T f, kappa;
          pointwise_term(ex.kind, raw[y * kTile + t] - lse[t], buf[y * kTile + t], qs[t], true, gamma, a_pos, f,
                         kappa);
          ky[t] = kappa * cpos[y];
        }
      }
      for (int64_t c = 0; c < C; ++c) {
        const T* row = buf.data() + c * kTile;
        S* o = out + (b * C + c) * g.S + s0;
        const int32_t ci = static_cast<int32_t>(c);
        const T ac = A[c], bc = Bc[c], qc = T(2) * cq[c];
#pragma omp simd
        for (int64_t t = 0; t < n; ++t) {
          const bool own = cls[t] == ci;
          const T h = ac + (own ? bc : T(0)) + qc * row[t];
          store_from(o + t, (row[t] * (h - dot[t] - ky[t]) + (own ? ky[t] : T(0))) * wt[t]);
        }
      }
      continue;
    }
    for (int64_t t = 0; t < n; ++t) {
      const int32_t y = cls[t];
      S* o = out + b * C * g.S + s0 + t;
      if (!valid[t]) {
        for (int64_t c = 0; c < C; ++c) store_from(o + c * g.S, 0.0);
        continue;
      }
      if (prm.sigmoid) {
        for (int64_t c = 0; c < C; ++c) {
          const T z = raw[c * kTile + t];
          const bool pos = y == c;
          T p, q, lp, lq;
          sigmoid_parts(z, p, q, lp, lq);
          const T hc = A[c] + (pos ? Bc[c] : T(0)) + T(2) * p * cq[c];
          T dz = p * q * hc;
          if (pw) {
            T f, kappa;
            const bool same = (z > zt) == pos;
            if (pos) {
              pointwise_term(ex.kind, lp, p, q, same, gamma, a_pos, f, kappa);
              dz += cpos[c] * kappa * q;
            } else {
              pointwise_term(ex.kind, lq, q, p, same, gamma, a_neg, f, kappa);
              dz -= cneg[c] * kappa * p;
            }
          }
          store_from(o + c * g.S, dz);
        }
        continue;
      }
    }
  }
}

template <typename S, typename L>
void backward_impl(const TensorDesc& logits, const TensorDesc& labels, const double* coeff, const double* ext_coeff,
                   const TensorDesc& grad_logits, const RegionStatsParams& prm, const ExtraParams* ex) {
  using T = typename compute_type<S>::type;
  const Geometry g(logits, labels);
  const S* lg = static_cast<const S*>(logits.data);
  const L* lab = static_cast<const L*>(labels.data);
  S* out = static_cast<S*>(grad_logits.data);
  const int64_t C = g.C;
  if (g.B == 0 || g.S == 0 || C == 0) return;

  const int64_t chunks_per_b = (g.S + kChunk - 1) / kChunk;
  const bool fast = std::is_same<S, float>::value && softmax_fast_eligible(g, prm, ext_coeff ? ex : nullptr);
  parallel_for(g.B * chunks_per_b, [&](int64_t job) {
    const int64_t b = job / chunks_per_b;
    const int64_t c0 = (job % chunks_per_b) * kChunk;
    const int64_t c1 = std::min(g.S, c0 + kChunk);
    const double* gs = coeff + (prm.per_sample ? b : 0) * C * 2;
    std::vector<T> A(C), Bc(C);  // dL/dP and dL/dI of this unit
    for (int64_t i = 0; i < C; ++i) {
      A[i] = T(gs[2 * i + 1]);
      Bc[i] = T(gs[2 * i]);
    }
    if constexpr (std::is_same<S, float>::value) {
      if (fast) {
        const double* ec = ext_coeff ? ext_coeff + (prm.per_sample ? b : 0) * C * kNumExtCoeff : nullptr;
        std::vector<float> cq2(C, 0.0f), cpos(C, 0.0f);
        for (int64_t i = 0; ec && i < C; ++i) {
          cq2[i] = float(2.0 * ec[i * kNumExtCoeff + 0]);
          cpos[i] = ex->kind == PointwiseKind::log ? float(ec[i * kNumExtCoeff + 1]) : 0.0f;
        }
        bool any_q = false;
        for (int64_t i = 0; i < C; ++i) any_q |= cq2[i] != 0.0f;
        auto run = [&](auto masked, auto q) {
          softmax_fast_backward_job<decltype(masked)::value, decltype(q)::value>(
              lg, lab, g, prm, b, c0, c1, A.data(), Bc.data(), cq2.data(), cpos.data(), out);
        };
        using T1 = std::true_type;
        using F0 = std::false_type;
        if (prm.has_ignore)
          any_q ? run(T1{}, T1{}) : run(T1{}, F0{});
        else
          any_q ? run(F0{}, T1{}) : run(F0{}, F0{});
        return;
      }
    }
    std::vector<T> buf(static_cast<size_t>(C * kTile));
    int64_t loff[kTile], yoff[kTile];
    int32_t cls[kTile];  // 32-bit so compares line up with float lanes when vectorised
    bool valid[kTile];
    T wt[kTile], dot[kTile];
    if (ext_coeff) {
      extras_backward_job<S, L, T>(lg, lab, g, prm, *ex, b, c0, c1, A, Bc,
                                   ext_coeff + (prm.per_sample ? b : 0) * C * kNumExtCoeff, out);
      return;
    }
    for (int64_t s0 = c0; s0 < c1; s0 += kTile) {
      const int64_t n = std::min(kTile, c1 - s0);
      prepare_tile(lg, lab, g, prm, b, s0, n, loff, yoff, cls, valid, wt, buf.data());
      if (prm.sigmoid) {
        for (int64_t i = 0; i < C; ++i) {
          const T* row = buf.data() + i * kTile;
          S* o = out + (b * C + i) * g.S + s0;
          const int32_t ci = static_cast<int32_t>(i);
          const T ai = A[i], bi = Bc[i];
#pragma omp simd
          for (int64_t t = 0; t < n; ++t) {
            const T p = row[t];
            const T h = ai + (cls[t] == ci ? bi : T(0));
            store_from(o + t, p * (T(1) - p) * h * wt[t]);
          }
        }
        continue;
      }
      // softmax: dz_c = p_c (H_c - sum_k p_k H_k), H_k = A_k + [k == y] B_k
      for (int64_t t = 0; t < n; ++t) dot[t] = cls[t] >= 0 ? buf[cls[t] * kTile + t] * Bc[cls[t]] : T(0);
      for (int64_t i = 0; i < C; ++i) {
        const T* row = buf.data() + i * kTile;
#pragma omp simd
        for (int64_t t = 0; t < n; ++t) dot[t] += row[t] * A[i];
      }
      for (int64_t i = 0; i < C; ++i) {
        const T* row = buf.data() + i * kTile;
        S* o = out + (b * C + i) * g.S + s0;
        const int32_t ci = static_cast<int32_t>(i);
        const T ai = A[i], bi = Bc[i];
#pragma omp simd
        for (int64_t t = 0; t < n; ++t) {
          const T h = ai + (cls[t] == ci ? bi : T(0));
          store_from(o + t, row[t] * (h - dot[t]) * wt[t]);
        }
      }
    }
  });
}

}  // namespace

void stats_entry(const TensorDesc& logits, const TensorDesc& labels, double* out, double* ext,
                 const RegionStatsParams& params, const ExtraParams* extra, float* probs) {
  dispatch_logits_labels(logits.dtype, labels.dtype, [&](auto st, auto lt) {
    stats_impl<typename decltype(st)::type, typename decltype(lt)::type>(logits, labels, out, ext, params, extra,
                                                                         probs);
  });
}

void probs_backward_entry(const TensorDesc& probs, const TensorDesc& labels, const double* coeff,
                          const double* ext_coeff, const TensorDesc& grad, const RegionStatsParams& params,
                          const ExtraParams* extra) {
  dispatch_logits_labels(probs.dtype, labels.dtype, [&](auto, auto lt) {
    probs_backward_impl<typename decltype(lt)::type>(probs, labels, coeff, ext_coeff, grad, params, extra);
  });
}

void backward_entry(const TensorDesc& logits, const TensorDesc& labels, const double* coeff, const double* ext_coeff,
                    const TensorDesc& grad_logits, const RegionStatsParams& params, const ExtraParams* extra) {
  dispatch_logits_labels(logits.dtype, labels.dtype, [&](auto st, auto lt) {
    backward_impl<typename decltype(st)::type, typename decltype(lt)::type>(logits, labels, coeff, ext_coeff,
                                                                            grad_logits, params, extra);
  });
}

}  // namespace MEDSEG_ISA_NS

#ifdef MEDSEG_ISA_IS_BASE
// ---------------------------------------------------------------- entry points (baseline build only)

namespace {
void check_extra_params(const RegionStatsParams& params, const ExtraParams& ex) {
  const int k = static_cast<int>(ex.kind);
  MEDSEG_CHECK(k >= 0 && k <= static_cast<int>(PointwiseKind::dibe), "pointwise kind: unknown code ", k);
  MEDSEG_CHECK(std::isfinite(ex.gamma) && ex.gamma >= 0, "gamma: must be finite and >= 0, got ", ex.gamma);
  MEDSEG_CHECK(std::isfinite(ex.a_pos) && ex.a_pos >= 1 && std::isfinite(ex.a_neg) && ex.a_neg >= 1,
               "alpha/beta: 1 + alpha and 1 + beta must be finite and >= 1");
  MEDSEG_CHECK(!std::isnan(ex.logit_threshold), "threshold: must be in (0, 1)");
  MEDSEG_CHECK(params.sigmoid || ex.kind != PointwiseKind::dibe,
               "pointwise kind: DIBE_Dis is defined for sigmoid outputs only");
}
}  // namespace

void normalise_region_inputs(const TensorDesc& logits_in, const TensorDesc& labels_in, TensorDesc& logits,
                             TensorDesc& labels) {
  MEDSEG_CHECK(logits_in.ndim >= 3 && logits_in.ndim <= 5, "logits: expected shape (B, C, *spatial) with 1 to 3 ",
               "spatial dims, got rank ", logits_in.ndim);
  MEDSEG_CHECK(labels_in.ndim == logits_in.ndim - 1, "labels: expected rank ", logits_in.ndim - 1,
               " (B, *spatial), got rank ", labels_in.ndim);
  MEDSEG_CHECK(labels_in.shape[0] == logits_in.shape[0], "labels: batch size ", labels_in.shape[0],
               " does not match logits batch size ", logits_in.shape[0]);
  for (int i = 1; i < labels_in.ndim; ++i)
    MEDSEG_CHECK(labels_in.shape[i] == logits_in.shape[i + 1], "labels: spatial dim ", i - 1, " is ",
                 labels_in.shape[i], " but logits has ", logits_in.shape[i + 1]);
  // pad the spatial dims in front: (B, C, S) -> (B, C, 1, 1, S), keeping the last dim fastest
  logits = logits_in.padded_to(5, 2);
  labels = labels_in.padded_to(4, 1);
}

void fused_stats_cpu(const TensorDesc& logits, const TensorDesc& labels, double* out, double* ext,
                     const RegionStatsParams& params, const ExtraParams& extra, float* probs) {
  if (ext) check_extra_params(params, extra);
  MEDSEG_CHECK(!probs || logits.dtype == DType::Float32, "probs: only float32 logits can store probabilities");
  return MEDSEG_ISA_CALL(stats_entry, logits, labels, out, ext, params, &extra, probs);
}

void softmax_probs_backward_cpu(const TensorDesc& probs, const TensorDesc& labels, const double* coeff,
                                const double* ext_coeff, const TensorDesc& grad, const RegionStatsParams& params,
                                const ExtraParams& extra) {
  MEDSEG_CHECK(probs.dtype == DType::Float32 && grad.dtype == DType::Float32, "probs: expected float32");
  MEDSEG_CHECK(!params.sigmoid, "probs: the backward from probabilities is for softmax outputs");
  if (ext_coeff) check_extra_params(params, extra);
  MEDSEG_CHECK(!ext_coeff || extra.kind == PointwiseKind::none || extra.kind == PointwiseKind::log,
               "probs: pointwise kind must be none or log");
  return MEDSEG_ISA_CALL(probs_backward_entry, probs, labels, coeff, ext_coeff, grad, params, &extra);
}

void fused_stats_backward_cpu(const TensorDesc& logits, const TensorDesc& labels, const double* coeff,
                              const double* ext_coeff, const TensorDesc& grad_logits, const RegionStatsParams& params,
                              const ExtraParams& extra) {
  MEDSEG_CHECK(grad_logits.dtype == logits.dtype, "grad_logits: dtype must equal the logits dtype");
  if (ext_coeff) check_extra_params(params, extra);
  return MEDSEG_ISA_CALL(backward_entry, logits, labels, coeff, ext_coeff, grad_logits, params, &extra);
}

void soft_region_stats_cpu(const TensorDesc& logits, const TensorDesc& labels, double* out,
                           const RegionStatsParams& params) {
  fused_stats_cpu(logits, labels, out, nullptr, params, ExtraParams{}, nullptr);
}

void soft_region_stats_backward_cpu(const TensorDesc& logits, const TensorDesc& labels, const double* coeff,
                                    const TensorDesc& grad_logits, const RegionStatsParams& params) {
  fused_stats_backward_cpu(logits, labels, coeff, nullptr, grad_logits, params, ExtraParams{});
}
#endif  // MEDSEG_ISA_IS_BASE

}  // namespace losses
}  // namespace medseg
