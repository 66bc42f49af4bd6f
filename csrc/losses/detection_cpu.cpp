// CPU kernels of the fused detection losses and the LA mechanism (see detection.h).
//
// The loss kernels split the rows (anchors) into fixed chunks (parallel_for, static split), so
// sums are bit-identical for any thread count. Inside a chunk, the element-wise losses work in
// tiles: the tile is gathered into small contiguous buffers of the compute type (any strides, any
// float dtype), one branch-free loop computes loss and gradient together (vectorised with the
// polynomial exp/log below, since glibc's expf/logf are scalar calls), and the gradient tile is
// stored into the contiguous output.
#include "losses/detection.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "common/dtype.h"
#include "common/isa.h"
#include "common/parallel.h"

namespace medseg {
namespace losses {
namespace MEDSEG_ISA_NS {

namespace {

constexpr int64_t kTileElems = 2048;   // elements per gathered tile
constexpr int64_t kChunkElems = 65536;  // elements per parallel job (fixed: deterministic sums)

// ---------------------------------------------------------------- vectorisable float math

// Forced inlining (MEDSEG_SIMD_INLINE, common/isa.h): a call left in the element loop stops the vectoriser.
#define MEDSEG_DET_INLINE MEDSEG_SIMD_INLINE

inline float as_float(int32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof(f));
  return f;
}
inline int32_t as_int(float f) {
  int32_t i;
  std::memcpy(&i, &f, sizeof(i));
  return i;
}

// exp(x): x = k ln2 + r (two-part ln2), degree-6 polynomial for exp(r) (Cephes expf
// coefficients), 2^k built in the exponent bits. Underflow gives exactly 0.
MEDSEG_DET_INLINE float fexp(float x) {
  const float xc = std::min(std::max(x, -87.3f), 88.7f);
  const float k = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  float r = xc - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  return x < -87.3f ? 0.0f : y * as_float((static_cast<int32_t>(k) + 127) << 23);
}

// log(x) for normal x > 0: x = m·2^e with m in [√½, √2), log(1 + f) by the Cephes logf
// polynomial, e·ln2 added in two parts.
MEDSEG_DET_INLINE float flog(float x) {
  const int32_t bits = as_int(x);
  int32_t e = ((bits >> 23) & 0xff) - 126;
  float m = as_float((bits & 0x807fffff) | 0x3f000000);  // in [0.5, 1)
  const bool small = m < 0.707106781186547524f;
  e = small ? e - 1 : e;
  const float f = small ? m + m - 1.0f : m - 1.0f;
  const float z = f * f;
  float y = 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  const float fe = static_cast<float>(e);
  y += -2.12194440e-4f * fe;
  y += -0.5f * z;
  return f + y + 0.693359375f * fe;
}

// log(1 + e) for e in [0, 1], accurate for tiny e: log(u)·e/(u − 1) with u = 1 + e (the rounding
// of u cancels), and e itself when u rounds to 1.
MEDSEG_DET_INLINE float flog1p_unit(float e) {
  const float u = 1.0f + e;
  const float d = u - 1.0f;
  const float lg = flog(u);  // computed unconditionally: a call inside a select blocks if-conversion
  return d == 0.0f ? e : lg * (e / (d == 0.0f ? 1.0f : d));
}

inline double fexp(double x) { return std::exp(x); }
inline double flog(double x) { return std::log(x); }
inline double flog1p_unit(double e) { return std::log1p(e); }

struct Rows {
  int64_t n, c;      // rows, columns
  int64_t sn, sc;    // strides
  bool dense() const { return sc == 1 && sn == c; }
};

template <typename S, typename T>
inline void gather_rows(const S* src, const Rows& g, int64_t r0, int64_t nr, T* dst) {
  if (g.dense()) {
    const S* p = src + r0 * g.c;
    const int64_t m = nr * g.c;
    for (int64_t i = 0; i < m; ++i) dst[i] = load_as<T>(p + i);
    return;
  }
  for (int64_t r = 0; r < nr; ++r)
    for (int64_t j = 0; j < g.c; ++j) dst[r * g.c + j] = load_as<T>(src + (r0 + r) * g.sn + j * g.sc);
}

template <typename T>
inline void gather_weight(const TensorDesc& w, int64_t r0, int64_t nr, int64_t c, T* dst) {
  if (w.data == nullptr) {
    std::fill(dst, dst + nr * c, T(1));
    return;
  }
  const T* p = static_cast<const T*>(w.data);
  const int64_t sn = w.strides[0], sc = w.ndim > 1 ? w.strides[1] : 0;
  for (int64_t r = 0; r < nr; ++r)
    for (int64_t j = 0; j < c; ++j) dst[r * c + j] = p[(r0 + r) * sn + j * sc];
}

template <typename S>
inline void store_tile(const TensorDesc& d, int64_t off, const typename compute_type<S>::type* src, int64_t m) {
  if (d.data == nullptr) return;
  S* o = static_cast<S*>(d.data) + off;
  if constexpr (std::is_same<S, typename compute_type<S>::type>::value) {
    std::memcpy(o, src, sizeof(S) * m);
  } else {
    for (int64_t i = 0; i < m; ++i) store_from(o + i, src[i]);
  }
}

template <typename T>
int any_nan(const T* v, int64_t m) {
  int bad = 0;
#pragma omp simd reduction(| : bad)
  for (int64_t i = 0; i < m; ++i) bad |= int(v[i] != v[i]);
  return bad;
}

template <typename T>
[[noreturn]] void report_nan(const char* arg, const T* v, int64_t m, int64_t first_row, int64_t row_len) {
  for (int64_t i = 0; i < m; ++i)
    if (std::isnan(v[i])) fail(arg, ": NaN at row ", first_row + i / row_len, ", column ", i % row_len);
  fail(arg, ": NaN");
}

// Runs body(job, r0, r1) over fixed row chunks and returns the chunk partials summed in order.
template <typename F>
double chunked_rows(int64_t n_rows, int64_t row_len, F&& body) {
  if (n_rows <= 0) return 0.0;
  const int64_t rows_per_chunk = std::max<int64_t>(1, kChunkElems / std::max<int64_t>(1, row_len));
  const int64_t jobs = (n_rows + rows_per_chunk - 1) / rows_per_chunk;
  std::vector<double> partial(static_cast<size_t>(jobs), 0.0);
  parallel_for(jobs, [&](int64_t job) {
    const int64_t r0 = job * rows_per_chunk;
    partial[job] = body(r0, std::min(n_rows, r0 + rows_per_chunk));
  });
  double s = 0.0;
  for (double v : partial) s += v;
  return s;
}

// ---------------------------------------------------------------- sigmoid focal loss

// Loss (weighted, unscaled) and gradient of m elements from contiguous tiles; a separate function on
// restrict pointers so the vectoriser sees a plain element-wise loop.
template <typename T, bool kGammaTwo>
void focal_tile(const T* __restrict z, const T* __restrict t, const T* __restrict w, T* __restrict gr,
                T* __restrict le, int64_t m, T alpha, T gamma, T scale) {
  const T tiny = std::numeric_limits<float>::min();  // flog needs a normal float
#pragma omp simd
  for (int64_t i = 0; i < m; ++i) {
    const T zi = z[i], ti = t[i], wi = w[i];
    const T e = fexp(-std::fabs(zi));
    const T inv = T(1) / (T(1) + e);
    const T p = zi >= T(0) ? inv : e * inv;  // σ(z)
    const T q = zi >= T(0) ? e * inv : inv;  // 1 − σ(z), without cancellation
    const T bce = std::max(zi, T(0)) - zi * ti + flog1p_unit(e);
    const bool pos = ti > T(0.5);
    const T pt = pos ? q : p;  // |t − σ(z)|
    const T aw = pos ? alpha : T(1) - alpha;
    T mod, dmod;
    if constexpr (kGammaTwo) {
      mod = pt * pt;
      dmod = T(2) * pt;
    } else {
      const T lg = flog(std::max(pt, tiny));
      const T zero = pt <= T(0) ? T(1) : T(0);  // arithmetic masks: && would be control flow
      const T e1 = fexp(gamma * lg), e2 = fexp((gamma - T(1)) * lg);
      mod = zero * (gamma > T(0) ? T(1) : T(0)) > T(0) ? T(0) : e1;
      dmod = gamma * (zero * (gamma != T(1) ? T(1) : T(0)) > T(0) ? T(0) : e2);
    }
    const T dpt = (pos ? -p : p) * q;  // d|t − σ(z)|/dz
    le[i] = aw * wi * bce * mod;  // unscaled: summed in float64 by the caller
    gr[i] = aw * wi * ((p - ti) * mod + bce * dmod * dpt) * scale;
  }
}

// kGammaTwo: the default γ = 2 as pt·pt; otherwise pt^γ = exp(γ log pt), with 0^γ = 0 for γ > 0,
// 0^0 = 1, and the derivative factor γ·pt^(γ−1) taken as 0 at pt = 0 unless γ = 1. Everything in
// the element loop is a select, so it vectorises.
template <typename S, bool kGammaTwo>
void focal_impl(const TensorDesc& logits, const TensorDesc& labels, const TensorDesc& weight, double alpha_d,
                double gamma_d, double scale_d, const DetectionOutputs& out) {
  using T = typename compute_type<S>::type;
  const Rows g{logits.shape[0], logits.shape[1], logits.strides[0], logits.strides[1]};
  const S* z_src = static_cast<const S*>(logits.data);
  const int64_t* lab = static_cast<const int64_t*>(labels.data);
  const int64_t lab_stride = labels.strides[0];
  const int64_t C = g.c;
  const T alpha = T(alpha_d), gamma = T(gamma_d), scale = T(scale_d);
  if (g.n == 0 || C == 0) {
    *out.loss_sum = scale_d * 0.0;  // NaN for the mean of nothing, as torch.mean
    return;
  }
  const int64_t rows_per_tile = std::max<int64_t>(1, kTileElems / C);
  *out.loss_sum = scale_d * chunked_rows(g.n, C, [&](int64_t c0, int64_t c1) {
    std::vector<T> zb(rows_per_tile * C), t(rows_per_tile * C), w(rows_per_tile * C), gr(rows_per_tile * C),
        le(rows_per_tile * C);
    // float32/float64 inputs in (N, C) row-major layout are read and written in place, no staging
    constexpr bool kSameType = std::is_same<S, T>::value;
    double acc = 0.0;
    for (int64_t r0 = c0; r0 < c1; r0 += rows_per_tile) {
      const int64_t nr = std::min(rows_per_tile, c1 - r0);
      const int64_t m = nr * C;
      const T* z;
      if constexpr (kSameType) {
        if (g.dense()) {
          z = reinterpret_cast<const T*>(z_src) + r0 * C;
        } else {
          gather_rows(z_src, g, r0, nr, zb.data());
          z = zb.data();
        }
      } else {
        gather_rows(z_src, g, r0, nr, zb.data());
        z = zb.data();
      }
      if (any_nan(z, m)) report_nan("logits", z, m, r0, C);
      for (int64_t r = 0; r < nr; ++r) {
        const int64_t y = lab[(r0 + r) * lab_stride];
        MEDSEG_CHECK(y >= 0 && y <= C, "labels: value ", y, " at row ", r0 + r, " is outside [0, C] with C = ", C,
                     " (C means background)");
        T* tr = t.data() + r * C;
        for (int64_t j = 0; j < C; ++j) tr[j] = T(0);
        if (y < C) tr[y] = T(1);
      }
      gather_weight(weight, r0, nr, C, w.data());
      if (weight.data != nullptr && any_nan(w.data(), m)) report_nan("weight", w.data(), m, r0, C);
      T* grp = gr.data();
      if constexpr (kSameType) grp = static_cast<T*>(out.grad.data) + r0 * C;
      focal_tile<T, kGammaTwo>(z, t.data(), w.data(), grp, le.data(), m, alpha, gamma, scale);
      double tile_sum = 0.0;  // unscaled weighted losses, summed in float64
#pragma omp simd reduction(+ : tile_sum)
      for (int64_t i = 0; i < m; ++i) tile_sum += double(le[i]);
      acc += tile_sum;
      if constexpr (!kSameType) store_tile<S>(out.grad, r0 * C, gr.data(), m);
      if (out.loss_elem.data != nullptr) {
        for (int64_t i = 0; i < m; ++i) le[i] *= scale;
        store_tile<S>(out.loss_elem, r0 * C, le.data(), m);
      }
    }
    return acc;
  });
}

// ---------------------------------------------------------------- GIoU loss

// d max(u, v)/du as torch.maximum: 1, ½ at a tie, 0.
template <typename T>
MEDSEG_DET_INLINE T dmax(T u, T v) {
  return u > v ? T(1) : (u == v ? T(0.5) : T(0));
}

// One tile of boxes in structure-of-arrays form: a[k][i], b[k][i] coordinates, w[i] weights;
// writes the weighted loss l[i] (unscaled) and the scaled gradient ga[k][i].
template <typename T>
void giou_tile(const T* const* a, const T* const* b, const T* __restrict w, T eps, T scale, int64_t n,
               T* __restrict l, T* const* ga) {
  const T* __restrict a0 = a[0]; const T* __restrict a1 = a[1]; const T* __restrict a2 = a[2];
  const T* __restrict a3 = a[3];
  const T* __restrict b0 = b[0]; const T* __restrict b1 = b[1]; const T* __restrict b2 = b[2];
  const T* __restrict b3 = b[3];
  T* __restrict g0 = ga[0]; T* __restrict g1 = ga[1]; T* __restrict g2 = ga[2]; T* __restrict g3 = ga[3];
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    // forward, exactly mmdet's bbox_overlaps(mode='giou', is_aligned=True)
    const T wa = a2[i] - a0[i], ha = a3[i] - a1[i], wb = b2[i] - b0[i], hb = b3[i] - b1[i];
    const T union_raw0 = wa * ha + wb * hb;
    const T iwx = std::min(a2[i], b2[i]) - std::max(a0[i], b0[i]);
    const T iwy = std::min(a3[i], b3[i]) - std::max(a1[i], b1[i]);
    const T cwx = std::max(iwx, T(0)), cwy = std::max(iwy, T(0));
    const T overlap = cwx * cwy;
    const T union_raw = union_raw0 - overlap;
    const T uni = std::max(union_raw, eps);
    const T ewx_raw = std::max(a2[i], b2[i]) - std::min(a0[i], b0[i]);
    const T ewy_raw = std::max(a3[i], b3[i]) - std::min(a1[i], b1[i]);
    const T ewx = std::max(ewx_raw, T(0)), ewy = std::max(ewy_raw, T(0));
    const T enc_raw = ewx * ewy;
    const T enc = std::max(enc_raw, eps);
    const T giou = overlap / uni - (enc - uni) / enc;
    l[i] = (T(1) - giou) * w[i];
    // backward of loss = 1 − giou, the way torch autograd runs through those ops: clamp(min=0)
    // passes the gradient only where its input is > 0, a max/min tie splits it in half
    const T up = -w[i] * scale;  // dL/dgiou
    const T g_uni = up * (-overlap / (uni * uni) + T(1) / enc);
    const T g_enc = up * (-uni / (enc * enc));
    const T g_union_raw = g_uni * dmax(union_raw, eps);
    const T g_overlap = up / uni - g_union_raw;
    const T g_enc_raw = g_enc * dmax(enc_raw, eps);
    const T g_ewx = g_enc_raw * ewy * (ewx_raw > T(0) ? T(1) : T(0));
    const T g_ewy = g_enc_raw * ewx * (ewy_raw > T(0) ? T(1) : T(0));
    const T g_iwx = g_overlap * cwy * (iwx > T(0) ? T(1) : T(0));
    const T g_iwy = g_overlap * cwx * (iwy > T(0) ? T(1) : T(0));
    // area_a = (a2 − a0)(a3 − a1); iw = min(a2, b2) − max(a0, b0); ew = max(a2, b2) − min(a0, b0)
    // (d min(u, v)/du = d max(v, u)/du with the same tie rule)
    g0[i] = -g_union_raw * ha - g_iwx * dmax(a0[i], b0[i]) - g_ewx * dmax(b0[i], a0[i]);
    g2[i] = g_union_raw * ha + g_iwx * dmax(b2[i], a2[i]) + g_ewx * dmax(a2[i], b2[i]);
    g1[i] = -g_union_raw * wa - g_iwy * dmax(a1[i], b1[i]) - g_ewy * dmax(b1[i], a1[i]);
    g3[i] = g_union_raw * wa + g_iwy * dmax(b3[i], a3[i]) + g_ewy * dmax(a3[i], b3[i]);
  }
}

template <typename S>
void giou_impl(const TensorDesc& pred, const TensorDesc& target, const TensorDesc& weight, double eps_d,
               double scale_d, const DetectionOutputs& out) {
  using T = typename compute_type<S>::type;
  constexpr int64_t kBoxTile = 256;
  const int64_t N = pred.shape[0];
  const S* a_src = static_cast<const S*>(pred.data);
  const S* b_src = static_cast<const S*>(target.data);
  const int64_t as0 = pred.strides[0], as1 = pred.strides[1], bs0 = target.strides[0], bs1 = target.strides[1];
  const T* w_src = static_cast<const T*>(weight.data);
  const int64_t ws = weight.data ? weight.strides[0] : 0;
  const T eps = T(eps_d), scale = T(scale_d);
  S* grad = static_cast<S*>(out.grad.data);
  S* le = static_cast<S*>(out.loss_elem.data);
  *out.loss_sum = scale_d * chunked_rows(N, 16, [&](int64_t c0, int64_t c1) {
    std::vector<T> buf(static_cast<size_t>(kBoxTile) * 14);
    T* a[4]; T* b[4]; T* ga[4];
    for (int k = 0; k < 4; ++k) {
      a[k] = buf.data() + k * kBoxTile;
      b[k] = buf.data() + (4 + k) * kBoxTile;
      ga[k] = buf.data() + (8 + k) * kBoxTile;
    }
    T* w = buf.data() + 12 * kBoxTile;
    T* l = buf.data() + 13 * kBoxTile;
    double acc = 0.0;
    for (int64_t r0 = c0; r0 < c1; r0 += kBoxTile) {
      const int64_t n = std::min(kBoxTile, c1 - r0);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t r = r0 + i;
        for (int k = 0; k < 4; ++k) {
          a[k][i] = load_as<T>(a_src + r * as0 + k * as1);
          b[k][i] = load_as<T>(b_src + r * bs0 + k * bs1);
        }
        w[i] = w_src ? w_src[r * ws] : T(1);
      }
      for (int k = 0; k < 4; ++k) {
        if (any_nan(a[k], n)) for (int64_t i = 0; i < n; ++i) if (std::isnan(a[k][i])) fail("pred: NaN at box ", r0 + i, ", coordinate ", k);
        if (any_nan(b[k], n)) for (int64_t i = 0; i < n; ++i) if (std::isnan(b[k][i])) fail("target: NaN at box ", r0 + i, ", coordinate ", k);
      }
      if (any_nan(w, n)) for (int64_t i = 0; i < n; ++i) if (std::isnan(w[i])) fail("weight: NaN at box ", r0 + i);
      giou_tile<T>(a, b, w, eps, scale, n, l, ga);
      for (int64_t i = 0; i < n; ++i) {
        acc += double(l[i]);
        if (le) store_from(le + r0 + i, double(l[i] * scale));
        S* o = grad + (r0 + i) * 4;
        for (int k = 0; k < 4; ++k) store_from(o + k, double(ga[k][i]));
      }
    }
    return acc;
  });
}

// ---------------------------------------------------------------- centerness

template <typename T, typename P>
inline T centerness_of(const P* pts, int64_t ps0, int64_t ps1, bool boxes, const P* gt, int64_t gs0, int64_t gs1,
                       int64_t i) {
  T cx, cy;
  if (boxes) {
    cx = (load_as<T>(pts + i * ps0 + 2 * ps1) + load_as<T>(pts + i * ps0)) / T(2);
    cy = (load_as<T>(pts + i * ps0 + 3 * ps1) + load_as<T>(pts + i * ps0 + ps1)) / T(2);
  } else {
    cx = load_as<T>(pts + i * ps0);
    cy = load_as<T>(pts + i * ps0 + ps1);
  }
  const T l = cx - load_as<T>(gt + i * gs0), t = cy - load_as<T>(gt + i * gs0 + gs1);
  const T r = load_as<T>(gt + i * gs0 + 2 * gs1) - cx, b = load_as<T>(gt + i * gs0 + 3 * gs1) - cy;
  if (!(l >= T(0) && r >= T(0) && t >= T(0) && b >= T(0)))
    fail("points: point ", i, " is not inside gt_boxes[", i, "] (distances l, t, r, b = ", double(l), ", ",
         double(t), ", ", double(r), ", ", double(b), "; NaN or negative)");
  const T mx_lr = std::max(l, r), mx_tb = std::max(t, b);
  if (!(mx_lr > T(0) && mx_tb > T(0)))
    fail("gt_boxes: box ", i, " has zero width or height at its point (centerness 0/0)");
  return std::sqrt(std::min(l, r) / mx_lr * (std::min(t, b) / mx_tb));
}

template <typename S>
void centerness_bce_impl(const TensorDesc& logits, const TensorDesc& points, const TensorDesc& gt,
                         const TensorDesc& weight, double scale_d, const TensorDesc& target_out,
                         const DetectionOutputs& out) {
  using T = typename compute_type<S>::type;
  const int64_t N = logits.shape[0];
  const S* z_src = static_cast<const S*>(logits.data);
  const S* p_src = static_cast<const S*>(points.data);
  const S* g_src = static_cast<const S*>(gt.data);
  const bool boxes = points.shape[1] == 4;
  const T* w_src = static_cast<const T*>(weight.data);
  const int64_t ws = weight.data ? weight.strides[0] : 0;
  const T scale = T(scale_d);
  S* grad = static_cast<S*>(out.grad.data);
  S* le = static_cast<S*>(out.loss_elem.data);
  *out.loss_sum = scale_d * chunked_rows(N, 16, [&](int64_t r0, int64_t r1) {
    double acc = 0.0;
    for (int64_t i = r0; i < r1; ++i) {
      const T tgt = centerness_of<T>(p_src, points.strides[0], points.strides[1], boxes, g_src, gt.strides[0],
                                     gt.strides[1], i);
      dispatch_floating(target_out.dtype, "target_out", [&](auto tag) {
        using O = typename decltype(tag)::type;
        store_from(static_cast<O*>(target_out.data) + i, double(tgt));
      });
      const T z = load_as<T>(z_src + i * logits.strides[0]);
      if (std::isnan(z)) fail("logits: NaN at row ", i);
      const T w = w_src ? w_src[i * ws] : T(1);
      if (std::isnan(w)) fail("weight: NaN at row ", i);
      const T e = fexp(-std::fabs(z));
      const T inv = T(1) / (T(1) + e);
      const T p = z >= T(0) ? inv : e * inv;
      const T bce = std::max(z, T(0)) - z * tgt + flog1p_unit(e);
      acc += double(bce * w);
      if (le) store_from(le + i, double(bce * w * scale));
      store_from(grad + i, double((p - tgt) * w * scale));
    }
    return acc;
  });
}

// ---------------------------------------------------------------- distribution focal loss

// ---------------------------------------------------------------- tile transposition (DFL)

#if defined(__AVX2__)
// In-register transpose of an 8×8 float block: rows in, columns out.
MEDSEG_DET_INLINE void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}
#endif

// zt[k * ld + r] = src[r * sn + k * sc] for r < n, k < K (compute type T).
template <typename S, typename T>
void gather_transposed(const S* src, int64_t sn, int64_t sc, int64_t K, int64_t n, T* zt, int64_t ld) {
  int64_t r0 = 0, kfast = 0;
#if defined(__AVX2__)
  if constexpr (std::is_same<S, float>::value && std::is_same<T, float>::value) {
    if (sc == 1) {
      kfast = K / 8 * 8;
      for (; r0 + 8 <= n; r0 += 8)
        for (int64_t k0 = 0; k0 < kfast; k0 += 8) {
          __m256 v[8];
          for (int j = 0; j < 8; ++j) v[j] = _mm256_loadu_ps(src + (r0 + j) * sn + k0);
          transpose8(v);
          for (int j = 0; j < 8; ++j) _mm256_storeu_ps(zt + (k0 + j) * ld + r0, v[j]);
        }
    }
  }
#endif
  for (int64_t k = 0; k < K; ++k) {  // what the blocks did not cover: tail rows, tail columns
    const int64_t rs = k < kfast ? r0 : 0;
    for (int64_t r = rs; r < n; ++r) zt[k * ld + r] = load_as<T>(src + r * sn + k * sc);
  }
}

// dst[r * K + k] = zt[k * ld + r] (dst contiguous (n, K) of storage type S).
template <typename S, typename T>
void scatter_transposed(const T* zt, int64_t ld, int64_t K, int64_t n, S* dst) {
  int64_t r0 = 0, kfast = 0;
#if defined(__AVX2__)
  if constexpr (std::is_same<S, float>::value && std::is_same<T, float>::value) {
    kfast = K / 8 * 8;
    for (; r0 + 8 <= n; r0 += 8)
      for (int64_t k0 = 0; k0 < kfast; k0 += 8) {
        __m256 v[8];
        for (int j = 0; j < 8; ++j) v[j] = _mm256_loadu_ps(zt + (k0 + j) * ld + r0);
        transpose8(v);
        for (int j = 0; j < 8; ++j) _mm256_storeu_ps(dst + (r0 + j) * K + k0, v[j]);
      }
  }
#endif
  for (int64_t r = 0; r < n; ++r) {
    const int64_t ks = r < r0 ? kfast : 0;
    for (int64_t k = ks; k < K; ++k) store_from(dst + r * K + k, double(zt[k * ld + r]));
  }
}

// Rows are processed in tiles stored transposed, zt[k * kRows + r], so every loop below runs over
// the rows of the tile with unit stride and vectorises (K = 17 is too short to vectorise along).
template <typename S>
void dfl_impl(const TensorDesc& logits, const TensorDesc& target, const TensorDesc& weight, double scale_d,
              const DetectionOutputs& out) {
  using T = typename compute_type<S>::type;
  constexpr int64_t kRows = 264;  // not a power of two: the transposed accesses would share cache sets
  const Rows g{logits.shape[0], logits.shape[1], logits.strides[0], logits.strides[1]};
  const int64_t K = g.c;
  const S* z_src = static_cast<const S*>(logits.data);
  const T* y_src = static_cast<const T*>(target.data);
  const int64_t ys = target.strides[0];
  const T* w_src = static_cast<const T*>(weight.data);
  const int64_t ws = weight.data ? weight.strides[0] : 0;
  const T scale = T(scale_d);
  S* grad = static_cast<S*>(out.grad.data);
  S* le = static_cast<S*>(out.loss_elem.data);
  *out.loss_sum = scale_d * chunked_rows(g.n, K, [&](int64_t c0, int64_t c1) {
    std::vector<T> zt(static_cast<size_t>(K * kRows)), row(static_cast<size_t>(K));
    std::vector<T> mx(kRows), sum(kRows), wl(kRows), wr(kRows), wv(kRows), f(kRows), lo(kRows);
    std::vector<int32_t> left(kRows), right(kRows);
    double acc = 0.0;
    for (int64_t r0 = c0; r0 < c1; r0 += kRows) {
      const int64_t n = std::min(kRows, c1 - r0);
      gather_transposed(z_src + r0 * g.sn, g.sn, g.sc, K, n, zt.data(), kRows);
      int bad = 0;
      for (int64_t k = 0; k < K; ++k) bad |= any_nan(zt.data() + k * kRows, n);
      if (bad)
        for (int64_t r = 0; r < n; ++r)
          for (int64_t k = 0; k < K; ++k)
            if (std::isnan(zt[k * kRows + r])) fail("logits: NaN at row ", r0 + r, ", column ", k);
      // per-row bins, weights and validation (scalar: n values)
      for (int64_t r = 0; r < n; ++r) {
        const int64_t i = r0 + r;
        const T y = y_src[i * ys];
        if (!(y >= T(0) && y <= T(K - 1)))
          fail("target: value ", double(y), " at row ", i, " is outside [0, K - 1] with K = ", K, " bins");
        const T w = w_src ? w_src[i * ws] : T(1);
        if (std::isnan(w)) fail("weight: NaN at row ", i);
        const int64_t l = std::min<int64_t>(static_cast<int64_t>(y), K - 1);
        left[r] = static_cast<int32_t>(l);
        right[r] = static_cast<int32_t>(std::min<int64_t>(l + 1, K - 1));
        wl[r] = T(l + 1) - y;
        wr[r] = y - T(l);
        wv[r] = w;
        f[r] = w * scale;
        mx[r] = -std::numeric_limits<T>::infinity();
        sum[r] = T(0);
      }
      for (int64_t k = 0; k < K; ++k) {
        const T* zk = zt.data() + k * kRows;
#pragma omp simd
        for (int64_t r = 0; r < n; ++r) mx[r] = std::max(mx[r], zk[r]);
      }
      for (int64_t r = 0; r < n; ++r)
        if (std::isinf(mx[r])) fail("logits: +inf or a row of all -inf at row ", r0 + r);
      // loss needs the raw logits of the two bins: read them before zt is overwritten by exp
      for (int64_t r = 0; r < n; ++r) {
        const T zl = zt[left[r] * kRows + r] - mx[r], zr = zt[right[r] * kRows + r] - mx[r];
        lo[r] = -(wl[r] * zl) - (wr[r] > T(0) ? wr[r] * zr : T(0));  // + (wl + wr)·log Σ exp, below
      }
      for (int64_t k = 0; k < K; ++k) {
        T* zk = zt.data() + k * kRows;
#pragma omp simd
        for (int64_t r = 0; r < n; ++r) {
          const T e = fexp(zk[r] - mx[r]);
          zk[r] = e;
          sum[r] += e;
        }
      }
      for (int64_t r = 0; r < n; ++r) {
        const T loss = lo[r] + (wl[r] + wr[r]) * flog(sum[r]);
        acc += double(loss * wv[r]);
        if (le) store_from(le + r0 + r, double(loss * f[r]));
        sum[r] = f[r] / sum[r];  // now w·scale / Σ exp
      }
      // gradient (p_k (wl + wr) − wl [k = left] − wr [k = right])·w·scale, still transposed
      for (int64_t k = 0; k < K; ++k) {
        T* zk = zt.data() + k * kRows;
        const int32_t kk = static_cast<int32_t>(k);
#pragma omp simd
        for (int64_t r = 0; r < n; ++r) {
          const T hit = (left[r] == kk ? wl[r] : T(0)) + (right[r] == kk ? wr[r] : T(0));
          zk[r] = zk[r] * sum[r] * (wl[r] + wr[r]) - hit * f[r];
        }
      }
      scatter_transposed(zt.data(), kRows, K, n, grad + r0 * K);
    }
    return acc;
  });
}

// ---------------------------------------------------------------- LA modulation

template <typename S>
void la_modulate_impl(const TensorDesc& x_in, const TensorDesc& g1_in, const TensorDesc& g2_in, double a_d,
                      double b_d, double c_d, const TensorDesc& out_d, const TensorDesc& factor_d) {
  using T = typename compute_type<S>::type;
  const TensorDesc x = x_in.padded_to(5, 0), g1 = g1_in.padded_to(5, 0);
  const bool has_g2 = g2_in.data != nullptr;
  const TensorDesc g2 = has_g2 ? g2_in.padded_to(5, 0) : g1;
  const int64_t inner = x.shape[4];
  const int64_t outer = x.shape[0] * x.shape[1] * x.shape[2] * x.shape[3];
  const T a = T(a_d), b = T(b_d), c = has_g2 ? T(c_d) : T(0);
  S* out = static_cast<S*>(out_d.data);
  S* fac = static_cast<S*>(factor_d.data);
  const S* xs = static_cast<const S*>(x.data);
  const S* g1s = static_cast<const S*>(g1.data);
  const S* g2s = static_cast<const S*>(g2.data);
  if (outer == 0 || inner == 0) return;
  const int64_t rows_per_job = std::max<int64_t>(1, kChunkElems / inner);
  const int64_t jobs = (outer + rows_per_job - 1) / rows_per_job;
  parallel_for(jobs, [&](int64_t job) {
    const int64_t q0 = job * rows_per_job, q1 = std::min(outer, q0 + rows_per_job);
    std::vector<T> vx(inner), v1(inner), v2(inner), vf(inner), vo(inner);
    for (int64_t q = q0; q < q1; ++q) {
      int64_t rem = q, idx[4];
      for (int d = 3; d >= 0; --d) {
        idx[d] = rem % x.shape[d];
        rem /= x.shape[d];
      }
      int64_t ox = 0, o1 = 0, o2 = 0;
      for (int d = 0; d < 4; ++d) {
        ox += idx[d] * x.strides[d];
        o1 += idx[d] * g1.strides[d];
        o2 += idx[d] * g2.strides[d];
      }
      for (int64_t t = 0; t < inner; ++t) {
        vx[t] = load_as<T>(xs + ox + t * x.strides[4]);
        v1[t] = load_as<T>(g1s + o1 + t * g1.strides[4]);
        v2[t] = load_as<T>(g2s + o2 + t * g2.strides[4]);
      }
      if (any_nan(v1.data(), inner) || any_nan(v2.data(), inner))
        fail("gradients: NaN in the label gradient g1/g2 (row ", q, ")");
#pragma omp simd
      for (int64_t t = 0; t < inner; ++t) {
        const T s1 = T(1) / (T(1) + fexp(-v1[t]));
        const T s2 = T(1) / (T(1) + fexp(-v2[t]));
        const T f = a + b * s1 - c * s2;
        vf[t] = f;
        vo[t] = vx[t] * f;
      }
      for (int64_t t = 0; t < inner; ++t) {
        store_from(out + q * inner + t, vo[t]);
        store_from(fac + q * inner + t, vf[t]);
      }
    }
  });
}

}  // namespace

void sigmoid_focal_entry(const TensorDesc& logits, const TensorDesc& labels, const TensorDesc& weight, double alpha,
                         double gamma, double scale, const DetectionOutputs& out) {
  dispatch_floating(logits.dtype, "logits", [&](auto st) {
    using S = typename decltype(st)::type;
    if (gamma == 2.0)
      focal_impl<S, true>(logits, labels, weight, alpha, gamma, scale, out);
    else
      focal_impl<S, false>(logits, labels, weight, alpha, gamma, scale, out);
  });
}

void giou_entry(const TensorDesc& pred, const TensorDesc& target, const TensorDesc& weight, double eps, double scale,
                const DetectionOutputs& out) {
  dispatch_floating(pred.dtype, "pred", [&](auto st) {
    giou_impl<typename decltype(st)::type>(pred, target, weight, eps, scale, out);
  });
}

void centerness_bce_entry(const TensorDesc& logits, const TensorDesc& points, const TensorDesc& gt_boxes,
                          const TensorDesc& weight, double scale, const TensorDesc& target_out,
                          const DetectionOutputs& out) {
  dispatch_floating(logits.dtype, "logits", [&](auto st) {
    centerness_bce_impl<typename decltype(st)::type>(logits, points, gt_boxes, weight, scale, target_out, out);
  });
}

void distribution_focal_entry(const TensorDesc& logits, const TensorDesc& target, const TensorDesc& weight,
                              double scale, const DetectionOutputs& out) {
  dispatch_floating(logits.dtype, "logits", [&](auto st) {
    dfl_impl<typename decltype(st)::type>(logits, target, weight, scale, out);
  });
}

void la_modulate_entry(const TensorDesc& x, const TensorDesc& g1, const TensorDesc& g2, double a, double b, double c,
                       const TensorDesc& out, const TensorDesc& factor) {
  dispatch_floating(x.dtype, "x", [&](auto st) {
    la_modulate_impl<typename decltype(st)::type>(x, g1, g2, a, b, c, out, factor);
  });
}

}  // namespace MEDSEG_ISA_NS

#ifdef MEDSEG_ISA_IS_BASE
// ---------------------------------------------------------------- entry points (baseline build only)

namespace {

void check_rank(const TensorDesc& d, int rank, const char* arg, const char* what) {
  MEDSEG_CHECK(d.ndim == rank, arg, ": expected ", what, ", got rank ", d.ndim);
}

void check_same_dtype(const TensorDesc& d, DType want, const char* arg, const char* other) {
  MEDSEG_CHECK(d.dtype == want, arg, ": dtype ", dtype_name(d.dtype), " must equal the dtype of ", other, " (",
               dtype_name(want), ")");
}

DType compute_dtype(DType t) { return t == DType::Float64 ? DType::Float64 : DType::Float32; }

// Optional per-row weight (N) (or per-element (N, C) where allowed) of the compute type.
void check_weight(const TensorDesc& w, DType input, int64_t n, int64_t c, bool per_element_ok) {
  if (w.data == nullptr) return;
  check_same_dtype(w, compute_dtype(input), "weight", "the compute type (float32, float64 for float64 inputs)");
  MEDSEG_CHECK(w.ndim == 1 || (per_element_ok && w.ndim == 2), "weight: unexpected rank ", w.ndim);
  MEDSEG_CHECK(w.shape[0] == n, "weight: ", w.shape[0], " rows, expected ", n);
  if (w.ndim == 2) MEDSEG_CHECK(w.shape[1] == c, "weight: ", w.shape[1], " columns, expected ", c);
}

void check_outputs(const DetectionOutputs& out, const TensorDesc& input, int64_t elems) {
  MEDSEG_CHECK(out.loss_sum != nullptr, "internal: loss_sum pointer is null");
  MEDSEG_CHECK(out.grad.dtype == input.dtype && out.grad.numel() == input.numel(),
               "internal: grad buffer must match the input's dtype and size");
  if (out.loss_elem.data != nullptr)
    MEDSEG_CHECK(out.loss_elem.dtype == input.dtype && out.loss_elem.numel() == elems,
                 "internal: loss_elem buffer has the wrong dtype or size");
}

}  // namespace

void sigmoid_focal_cpu(const TensorDesc& logits, const TensorDesc& labels, const TensorDesc& weight, double alpha,
                       double gamma, double scale, const DetectionOutputs& out) {
  check_rank(logits, 2, "logits", "(N, C)");
  check_rank(labels, 1, "labels", "(N,)");
  MEDSEG_CHECK(labels.dtype == DType::Int64, "internal: labels must be int64");
  MEDSEG_CHECK(labels.shape[0] == logits.shape[0], "labels: ", labels.shape[0], " rows, logits has ",
               logits.shape[0]);
  MEDSEG_CHECK(gamma >= 0 && std::isfinite(gamma), "gamma: expected a finite value >= 0");
  check_weight(weight, logits.dtype, logits.shape[0], logits.shape[1], true);
  check_outputs(out, logits, logits.numel());
  return MEDSEG_ISA_CALL(sigmoid_focal_entry, logits, labels, weight, alpha, gamma, scale, out);
}

void giou_cpu(const TensorDesc& pred, const TensorDesc& target, const TensorDesc& weight, double eps, double scale,
              const DetectionOutputs& out) {
  check_rank(pred, 2, "pred", "(N, 4)");
  check_rank(target, 2, "target", "(N, 4)");
  MEDSEG_CHECK(pred.shape[1] == 4 && target.shape[1] == 4 && target.shape[0] == pred.shape[0],
               "target: shape must equal pred's (N, 4)");
  check_same_dtype(target, pred.dtype, "target", "pred");
  check_weight(weight, pred.dtype, pred.shape[0], 1, false);
  check_outputs(out, pred, pred.shape[0]);
  return MEDSEG_ISA_CALL(giou_entry, pred, target, weight, eps, scale, out);
}

void centerness_target_cpu(const TensorDesc& points, const TensorDesc& gt_boxes, const TensorDesc& target_out) {
  check_rank(points, 2, "points", "(N, 2) points or (N, 4) anchors");
  check_rank(gt_boxes, 2, "gt_boxes", "(N, 4)");
  MEDSEG_CHECK(points.shape[1] == 2 || points.shape[1] == 4, "points: expected (N, 2) or (N, 4)");
  MEDSEG_CHECK(gt_boxes.shape[1] == 4 && gt_boxes.shape[0] == points.shape[0], "gt_boxes: expected (N, 4) with N = ",
               points.shape[0]);
  check_same_dtype(gt_boxes, points.dtype, "gt_boxes", "points");
  MEDSEG_CHECK(target_out.numel() == points.shape[0], "internal: target_out has the wrong size");
  const int64_t N = points.shape[0];
  dispatch_floating(points.dtype, "points", [&](auto st) {
    using S = typename decltype(st)::type;
    using T = typename compute_type<S>::type;
    const S* p = static_cast<const S*>(points.data);
    const S* g = static_cast<const S*>(gt_boxes.data);
    const bool boxes = points.shape[1] == 4;
    dispatch_floating(target_out.dtype, "target_out", [&](auto ot) {
      using O = typename decltype(ot)::type;
      O* o = static_cast<O*>(target_out.data);
      parallel_for((N + 4095) / 4096, [&](int64_t job) {
        for (int64_t i = job * 4096; i < std::min(N, (job + 1) * 4096); ++i)
          store_from(o + i, double(isa_base::centerness_of<T>(p, points.strides[0], points.strides[1], boxes, g,
                                                    gt_boxes.strides[0], gt_boxes.strides[1], i)));
      });
    });
  });
}

void centerness_bce_cpu(const TensorDesc& logits, const TensorDesc& points, const TensorDesc& gt_boxes,
                        const TensorDesc& weight, double scale, const TensorDesc& target_out,
                        const DetectionOutputs& out) {
  check_rank(logits, 1, "logits", "(N,)");
  check_rank(points, 2, "points", "(N, 2) points or (N, 4) anchors");
  check_rank(gt_boxes, 2, "gt_boxes", "(N, 4)");
  const int64_t N = logits.shape[0];
  MEDSEG_CHECK(points.shape[0] == N && (points.shape[1] == 2 || points.shape[1] == 4),
               "points: expected (N, 2) or (N, 4) with N = ", N);
  MEDSEG_CHECK(gt_boxes.shape[0] == N && gt_boxes.shape[1] == 4, "gt_boxes: expected (N, 4) with N = ", N);
  check_same_dtype(points, logits.dtype, "points", "logits");
  check_same_dtype(gt_boxes, logits.dtype, "gt_boxes", "logits");
  check_weight(weight, logits.dtype, N, 1, false);
  MEDSEG_CHECK(target_out.numel() == N, "internal: target_out has the wrong size");
  check_outputs(out, logits, N);
  return MEDSEG_ISA_CALL(centerness_bce_entry, logits, points, gt_boxes, weight, scale, target_out, out);
}

void distribution_focal_cpu(const TensorDesc& logits, const TensorDesc& target, const TensorDesc& weight,
                            double scale, const DetectionOutputs& out) {
  check_rank(logits, 2, "logits", "(N, K)");
  check_rank(target, 1, "target", "(N,)");
  MEDSEG_CHECK(logits.shape[1] >= 2 || logits.shape[0] == 0, "logits: need at least 2 bins, got ", logits.shape[1]);
  MEDSEG_CHECK(target.shape[0] == logits.shape[0], "target: ", target.shape[0], " rows, logits has ",
               logits.shape[0]);
  check_same_dtype(target, compute_dtype(logits.dtype), "target", "the compute type");
  check_weight(weight, logits.dtype, logits.shape[0], 1, false);
  check_outputs(out, logits, logits.shape[0]);
  return MEDSEG_ISA_CALL(distribution_focal_entry, logits, target, weight, scale, out);
}

void dual_energy_to_rgb_cpu(const TensorDesc& high_in, const TensorDesc& low_in, const TensorDesc& out_in,
                            int64_t channel_stride) {
  MEDSEG_CHECK(high_in.ndim <= 4, "high: rank ", high_in.ndim, " exceeds 4");
  MEDSEG_CHECK(low_in.ndim == high_in.ndim && out_in.ndim == high_in.ndim, "low: rank must equal high's");
  for (int d = 0; d < high_in.ndim; ++d) {
    MEDSEG_CHECK(low_in.shape[d] == high_in.shape[d], "low: shape must equal high's");
    MEDSEG_CHECK(out_in.shape[d] == high_in.shape[d], "internal: out shape must equal high's");
  }
  const TensorDesc h = high_in.padded_to(4, 0), l = low_in.padded_to(4, 0), o = out_in.padded_to(4, 0);
  const int64_t n = h.numel();
  dispatch_label(h.dtype, "high", [&](auto ht) {
    using H = typename decltype(ht)::type;
    dispatch_label(l.dtype, "low", [&](auto lt) {
      using L = typename decltype(lt)::type;
      dispatch_floating(o.dtype, "out", [&](auto ot) {
        using O = typename decltype(ot)::type;
        const H* hp = static_cast<const H*>(h.data);
        const L* lp = static_cast<const L*>(l.data);
        O* op = static_cast<O*>(o.data);
        const int64_t s3 = h.shape[3], s23 = h.shape[2] * s3, s123 = h.shape[1] * s23;
        parallel_for((n + 8191) / 8192, [&](int64_t job) {
          for (int64_t i = job * 8192; i < std::min(n, (job + 1) * 8192); ++i) {
            const int64_t i0 = i / s123, i1 = (i / s23) % h.shape[1], i2 = (i / s3) % h.shape[2], i3 = i % s3;
            const double hv = double(hp[i0 * h.strides[0] + i1 * h.strides[1] + i2 * h.strides[2] + i3 * h.strides[3]]);
            const double lv = double(lp[i0 * l.strides[0] + i1 * l.strides[1] + i2 * l.strides[2] + i3 * l.strides[3]]);
            if (!(hv >= 0 && hv <= 65535)) fail("high: value ", hv, " at flat index ", i, " is outside [0, 65535]");
            if (!(lv >= 0 && lv <= 65535)) fail("low: value ", lv, " at flat index ", i, " is outside [0, 65535]");
            double ch3;
            if (lv > 0)
              ch3 = 510.0 / (1.0 + std::exp(-hv / lv)) - 255.0;
            else
              ch3 = hv > 0 ? 255.0 : 0.0;  // L = 0: R = +inf (H > 0) or 0/0 := 0
            O* base = op + i0 * o.strides[0] + i1 * o.strides[1] + i2 * o.strides[2] + i3 * o.strides[3];
            store_from(base, hv / 256.0);
            store_from(base + channel_stride, lv / 256.0);
            store_from(base + 2 * channel_stride, ch3);
          }
        });
      });
    });
  });
}

void confuse_labels_cpu(const TensorDesc& scores, const TensorDesc& labels, int64_t* assigned_out,
                        int64_t* confuse_out, const TensorDesc& onehot_assigned, const TensorDesc& onehot_confuse) {
  check_rank(scores, 4, "scores", "(B, C, H, W)");
  const int64_t B = scores.shape[0], C = scores.shape[1], H = scores.shape[2], W = scores.shape[3];
  const bool has_labels = labels.data != nullptr;
  if (has_labels) {
    check_rank(labels, 3, "labels", "(B, H, W)");
    MEDSEG_CHECK(labels.dtype == DType::Int64, "internal: labels must be int64");
    MEDSEG_CHECK(labels.shape[0] == B && labels.shape[1] == H && labels.shape[2] == W,
                 "labels: shape must be the scores' (B, H, W)");
  }
  for (const TensorDesc* oh : {&onehot_assigned, &onehot_confuse})
    if (oh->data != nullptr)
      MEDSEG_CHECK(oh->dtype == scores.dtype && oh->numel() == scores.numel(),
                   "internal: one-hot buffer must match the scores' dtype and size");
  const int64_t rows = B * H * W, plane = H * W;
  if (rows == 0) return;
  MEDSEG_CHECK(C >= 1, "scores: the class dim C is 0");
  dispatch_floating(scores.dtype, "scores", [&](auto st) {
    using S = typename decltype(st)::type;
    using T = typename compute_type<S>::type;
    const S* sp = static_cast<const S*>(scores.data);
    const int64_t* lp = static_cast<const int64_t*>(labels.data);
    S* y1 = static_cast<S*>(onehot_assigned.data);
    S* y2 = static_cast<S*>(onehot_confuse.data);
    parallel_for((rows + 4095) / 4096, [&](int64_t job) {
      for (int64_t r = job * 4096; r < std::min(rows, (job + 1) * 4096); ++r) {
        const int64_t b = r / plane, hw = r % plane, hh = hw / W, ww = hw % W;
        const S* row = sp + b * scores.strides[0] + hh * scores.strides[2] + ww * scores.strides[3];
        const int64_t cs = scores.strides[1];
        int64_t assigned;
        if (has_labels) {
          assigned = lp[b * labels.strides[0] + hh * labels.strides[1] + ww * labels.strides[2]];
          MEDSEG_CHECK(assigned >= 0 && assigned <= C, "labels: value ", assigned, " at row ", r,
                       " is outside [0, C] with C = ", C, " (C means background)");
        }
        // one scan: argmax of the row (pseudo-label) and, once the assigned class is known,
        // argmax with that entry read as 0; ties to the lowest index
        T best = -std::numeric_limits<T>::infinity();
        int64_t best_k = 0;
        for (int64_t k = 0; k < C; ++k) {
          const T v = load_as<T>(row + k * cs);
          if (!(v >= T(0))) fail("scores: value ", double(v), " at row ", r, ", class ", k,
                                 " (expected probabilities >= 0, e.g. sigmoid outputs; NaN is not allowed)");
          if (v > best) {
            best = v;
            best_k = k;
          }
        }
        if (!has_labels) assigned = best_k;
        int64_t confuse = 0;
        T cbest = -std::numeric_limits<T>::infinity();
        for (int64_t k = 0; k < C; ++k) {
          const T v = k == assigned ? T(0) : load_as<T>(row + k * cs);
          if (v > cbest) {
            cbest = v;
            confuse = k;
          }
        }
        assigned_out[r] = assigned;
        confuse_out[r] = confuse;
        const int64_t obase = b * C * plane + hw;
        for (int64_t k = 0; k < C; ++k) {
          if (y1) store_from(y1 + obase + k * plane, k == assigned ? 1.0 : 0.0);
          if (y2) store_from(y2 + obase + k * plane, k == confuse ? 1.0 : 0.0);
        }
      }
    });
  });
}

void la_modulate_cpu(const TensorDesc& x, const TensorDesc& g1, const TensorDesc& g2, double a, double b, double c,
                     const TensorDesc& out, const TensorDesc& factor) {
  MEDSEG_CHECK(x.ndim <= 5, "x: rank ", x.ndim, " exceeds 5");
  for (const TensorDesc* g : {&g1, &g2}) {
    if (g->data == nullptr) continue;
    MEDSEG_CHECK(g->ndim == x.ndim, "gradients: rank must equal x's");
    for (int d = 0; d < x.ndim; ++d) MEDSEG_CHECK(g->shape[d] == x.shape[d], "gradients: shape must equal x's");
    check_same_dtype(*g, x.dtype, "gradients", "x");
  }
  MEDSEG_CHECK(g1.data != nullptr, "internal: g1 is required");
  MEDSEG_CHECK(out.dtype == x.dtype && factor.dtype == x.dtype && out.numel() == x.numel() &&
                   factor.numel() == x.numel(),
               "internal: out/factor buffers must match x");
  return MEDSEG_ISA_CALL(la_modulate_entry, x, g1, g2, a, b, c, out, factor);
}
#endif  // MEDSEG_ISA_IS_BASE

}  // namespace losses
}  // namespace medseg
