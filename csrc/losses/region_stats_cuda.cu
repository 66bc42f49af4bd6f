// CUDA implementation of soft_region_stats and its backward (see region_stats.h).
//
// Forward: grid (blocks over space, B); each block of kThreads threads covers kPerThread*kThreads
// spatial elements, first computes each element's softmax max and normaliser (one read of its
// C logits), then for every class reduces I, P, G over the block with a fixed shuffle tree and
// writes one partial (in the compute type: float64 logits keep float64 sums). The host side sums
// partials in a fixed order: deterministic, no float atomics. Backward: one thread per element, two reads of its C logits, one write of C grads.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "common/dtype.h"
#include "losses/region_stats.h"

namespace medseg {
namespace losses {

namespace {

constexpr int kThreads = 256;
constexpr int kPerThread = 4;
constexpr int64_t kBlockElems = int64_t(kThreads) * kPerThread;

template <typename S> struct device_type { using type = S; };
template <> struct device_type<Half> { using type = __half; };
template <> struct device_type<BFloat16> { using type = __nv_bfloat16; };

template <typename T> __device__ __forceinline__ T to_compute(float v) { return T(v); }
template <typename T> __device__ __forceinline__ T to_compute(double v) { return T(v); }
template <typename T> __device__ __forceinline__ T to_compute(__half v) { return T(__half2float(v)); }
template <typename T> __device__ __forceinline__ T to_compute(__nv_bfloat16 v) { return T(__bfloat162float(v)); }

__device__ __forceinline__ void store_value(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_value(double* p, double v) { *p = v; }
__device__ __forceinline__ void store_value(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store_value(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

__device__ __forceinline__ float dev_exp(float x) { return __expf(x); }
__device__ __forceinline__ double dev_exp(double x) { return exp(x); }

struct Geo {
  int64_t C, S2, S3, S;
  int64_t lb, lc, l1, l2, l3;
  int64_t yb, y1, y2, y3;
};

Geo make_geo(const TensorDesc& lg, const TensorDesc& lab) {
  Geo g;
  g.C = lg.shape[1];
  g.S2 = lg.shape[3];
  g.S3 = lg.shape[4];
  g.S = lg.shape[2] * lg.shape[3] * lg.shape[4];
  g.lb = lg.strides[0];
  g.lc = lg.strides[1];
  g.l1 = lg.strides[2];
  g.l2 = lg.strides[3];
  g.l3 = lg.strides[4];
  g.yb = lab.strides[0];
  g.y1 = lab.strides[1];
  g.y2 = lab.strides[2];
  g.y3 = lab.strides[3];
  return g;
}

struct Params {
  bool sigmoid, binary, has_ignore;
  int64_t ignore_index;
};

// Element s of sample b: its logits offset (without the class term), its class (-1: none),
// whether it counts, and whether its label is out of range.
template <typename L>
__device__ __forceinline__ void element(const Geo& g, const Params& p, const L* lab, int64_t b, int64_t s,
                                        int64_t& loff, int64_t& cls, bool& valid, bool& bad_label) {
  const int64_t plane = g.S2 * g.S3;
  const int64_t i1 = s / plane, rem = s % plane;
  const int64_t i2 = rem / g.S3, i3 = rem % g.S3;
  loff = b * g.lb + i1 * g.l1 + i2 * g.l2 + i3 * g.l3;
  const int64_t y = static_cast<int64_t>(lab[b * g.yb + i1 * g.y1 + i2 * g.y2 + i3 * g.y3]);
  bad_label = false;
  cls = -1;
  valid = !(p.has_ignore && y == p.ignore_index);
  if (!valid) return;
  if (p.binary) {
    if (y == 0 || y == 1) cls = y == 1 ? 0 : -1;
    else bad_label = true;
  } else {
    if (y >= 0 && y < g.C) cls = y;
    else bad_label = true;
  }
  if (bad_label) valid = false;
}

// Softmax max and 1/normaliser of one element; flags NaN, +inf and all -inf rows.
template <typename T, typename D>
__device__ __forceinline__ void softmax_row(const D* lg, const Geo& g, int64_t loff, T& m, T& inv, bool& bad) {
  m = -INFINITY;
  bad = false;
  for (int64_t c = 0; c < g.C; ++c) {
    const T z = to_compute<T>(lg[loff + c * g.lc]);
    bad |= isnan(z);
    m = z > m ? z : m;
  }
  bad |= isinf(m);
  T sum = 0;
  for (int64_t c = 0; c < g.C; ++c) sum += dev_exp(to_compute<T>(lg[loff + c * g.lc]) - m);
  inv = T(1) / sum;
}

template <typename T>
__device__ __forceinline__ T sigmoid_of(T z) {
  const T e = dev_exp(-fabs(z));
  const T r = T(1) / (T(1) + e);
  return z >= 0 ? r : e * r;
}

template <typename V>
__device__ __forceinline__ V block_sum(V v, V* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // scratch may still be read from the previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  V total = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kThreads / 32; ++w) total += scratch[w];
  return total;  // meaningful in thread 0 only
}

template <typename D, typename L, typename T>
__global__ void __launch_bounds__(kThreads) stats_kernel(const D* __restrict__ lg, const L* __restrict__ lab,
                                                         T* __restrict__ partial, int32_t* __restrict__ counts,
                                                         Geo g, Params p, int64_t n_blocks) {
  __shared__ T scratch_f[kThreads / 32];
  __shared__ int scratch_i[kThreads / 32];
  const int64_t b = blockIdx.y;
  const int64_t blk = blockIdx.x;
  int64_t loff[kPerThread], cls[kPerThread];
  bool valid[kPerThread];
  T m[kPerThread], inv[kPerThread];
  int n_valid = 0, n_bad_logit = 0, n_bad_label = 0;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int64_t s = blk * kBlockElems + int64_t(k) * kThreads + threadIdx.x;
    valid[k] = false;
    cls[k] = -1;
    loff[k] = 0;
    m[k] = 0;
    inv[k] = 1;
    if (s >= g.S) continue;
    bool bad_label;
    element(g, p, lab, b, s, loff[k], cls[k], valid[k], bad_label);
    n_bad_label += bad_label;
    if (!valid[k]) continue;
    bool bad = false;
    if (!p.sigmoid) {
      softmax_row<T>(lg, g, loff[k], m[k], inv[k], bad);
    } else {
      for (int64_t c = 0; c < g.C; ++c) bad |= isnan(to_compute<T>(lg[loff[k] + c * g.lc]));
    }
    n_bad_logit += bad;
    n_valid += 1;
  }
  const int64_t base = (b * n_blocks + blk) * 3;
  for (int64_t c = 0; c < g.C; ++c) {
    T sI = 0, sP = 0, sG = 0;
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      if (!valid[k]) continue;
      const T z = to_compute<T>(lg[loff[k] + c * g.lc]);
      const T prob = p.sigmoid ? sigmoid_of(z) : dev_exp(z - m[k]) * inv[k];
      sP += prob;
      if (cls[k] == c) {
        sI += prob;
        sG += T(1);
      }
    }
    sI = block_sum(sI, scratch_f);
    sP = block_sum(sP, scratch_f);
    sG = block_sum(sG, scratch_f);
    if (threadIdx.x == 0) {
      partial[(base + 0) * g.C + c] = sI;
      partial[(base + 1) * g.C + c] = sP;
      partial[(base + 2) * g.C + c] = sG;
    }
  }
  n_valid = block_sum(n_valid, scratch_i);
  n_bad_logit = block_sum(n_bad_logit, scratch_i);
  n_bad_label = block_sum(n_bad_label, scratch_i);
  if (threadIdx.x == 0) {
    counts[base + 0] = n_valid;
    counts[base + 1] = n_bad_logit;
    counts[base + 2] = n_bad_label;
  }
}

template <typename D, typename L, typename T>
__global__ void __launch_bounds__(kThreads) backward_kernel(const D* __restrict__ lg, const L* __restrict__ lab,
                                                            const T* __restrict__ coeff, D* __restrict__ out,
                                                            Geo g, Params p, bool per_sample) {
  extern __shared__ double shared_mem[];  // (C, 2) of this block's unit: dL/dI, dL/dP, as T
  T* shared_coeff = reinterpret_cast<T*>(shared_mem);
  const int64_t b = blockIdx.y;
  const T* unit_coeff = coeff + (per_sample ? b : 0) * g.C * 2;
  for (int64_t i = threadIdx.x; i < 2 * g.C; i += blockDim.x) shared_coeff[i] = unit_coeff[i];
  __syncthreads();
  const int64_t s = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (s >= g.S) return;
  int64_t loff, cls;
  bool valid, bad_label;
  element(g, p, lab, b, s, loff, cls, valid, bad_label);
  D* o = out + b * g.C * g.S + s;
  if (!valid) {
    for (int64_t c = 0; c < g.C; ++c) store_value(o + c * g.S, T(0));
    return;
  }
  if (p.sigmoid) {
    for (int64_t c = 0; c < g.C; ++c) {
      const T prob = sigmoid_of(to_compute<T>(lg[loff + c * g.lc]));
      const T h = T(shared_coeff[2 * c + 1]) + (cls == c ? T(shared_coeff[2 * c]) : T(0));
      store_value(o + c * g.S, prob * (T(1) - prob) * h);
    }
    return;
  }
  T m, inv;
  bool bad;
  softmax_row<T>(lg, g, loff, m, inv, bad);
  T dot = 0;
  for (int64_t c = 0; c < g.C; ++c) {
    const T prob = dev_exp(to_compute<T>(lg[loff + c * g.lc]) - m) * inv;
    dot += prob * (T(shared_coeff[2 * c + 1]) + (cls == c ? T(shared_coeff[2 * c]) : T(0)));
  }
  for (int64_t c = 0; c < g.C; ++c) {
    const T prob = dev_exp(to_compute<T>(lg[loff + c * g.lc]) - m) * inv;
    const T h = T(shared_coeff[2 * c + 1]) + (cls == c ? T(shared_coeff[2 * c]) : T(0));
    store_value(o + c * g.S, prob * (h - dot));
  }
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  MEDSEG_CHECK(err == cudaSuccess, what, ": CUDA launch failed: ", cudaGetErrorString(err));
}

Params make_params(const RegionStatsParams& prm, int64_t C) {
  Params p;
  p.sigmoid = prm.sigmoid;
  p.binary = prm.sigmoid && C == 1;
  p.has_ignore = prm.has_ignore;
  p.ignore_index = prm.ignore_index;
  return p;
}

}  // namespace

int64_t region_stats_cuda_blocks(int64_t spatial_size) { return (spatial_size + kBlockElems - 1) / kBlockElems; }

void soft_region_stats_cuda(const TensorDesc& logits, const TensorDesc& labels, void* partial, int32_t* counts,
                            const RegionStatsParams& params, intptr_t stream) {
  const Geo g = make_geo(logits, labels);
  const int64_t B = logits.shape[0];
  const int64_t n_blocks = region_stats_cuda_blocks(g.S);
  if (B == 0 || n_blocks == 0 || g.C == 0) return;
  MEDSEG_CHECK(B <= 65535, "logits: batch size ", B, " exceeds the CUDA grid limit 65535");
  MEDSEG_CHECK(n_blocks <= 2147483647LL, "logits: spatial size too large for the CUDA grid");
  const Params p = make_params(params, g.C);
  const dim3 grid(static_cast<unsigned>(n_blocks), static_cast<unsigned>(B));
  auto s = reinterpret_cast<cudaStream_t>(stream);
  dispatch_logits_labels(logits.dtype, labels.dtype, [&](auto st, auto lt) {
    using D = typename device_type<typename decltype(st)::type>::type;
    using T = typename compute_type<typename decltype(st)::type>::type;
    using L = typename decltype(lt)::type;
    stats_kernel<D, L, T><<<grid, kThreads, 0, s>>>(static_cast<const D*>(logits.data),
                                                    static_cast<const L*>(labels.data), static_cast<T*>(partial),
                                                    counts, g, p,
                                                    n_blocks);
  });
  check_launch("soft_region_stats");
}

void soft_region_stats_backward_cuda(const TensorDesc& logits, const TensorDesc& labels, const void* coeff,
                                     const TensorDesc& grad_logits, const RegionStatsParams& params,
                                     intptr_t stream) {
  MEDSEG_CHECK(grad_logits.dtype == logits.dtype, "grad_logits: dtype must equal the logits dtype");
  const Geo g = make_geo(logits, labels);
  const int64_t B = logits.shape[0];
  if (B == 0 || g.S == 0 || g.C == 0) return;
  MEDSEG_CHECK(B <= 65535, "logits: batch size ", B, " exceeds the CUDA grid limit 65535");
  const Params p = make_params(params, g.C);
  const int64_t n_blocks = (g.S + kThreads - 1) / kThreads;
  MEDSEG_CHECK(n_blocks <= 2147483647LL, "logits: spatial size too large for the CUDA grid");
  const size_t shared = size_t(2 * g.C) * (logits.dtype == DType::Float64 ? sizeof(double) : sizeof(float));
  MEDSEG_CHECK(shared <= 48 * 1024, "logits: too many classes (", g.C, ") for the CUDA backward");
  const dim3 grid(static_cast<unsigned>(n_blocks), static_cast<unsigned>(B));
  auto s = reinterpret_cast<cudaStream_t>(stream);
  dispatch_logits_labels(logits.dtype, labels.dtype, [&](auto st, auto lt) {
    using D = typename device_type<typename decltype(st)::type>::type;
    using T = typename compute_type<typename decltype(st)::type>::type;
    using L = typename decltype(lt)::type;
    backward_kernel<D, L, T><<<grid, kThreads, shared, s>>>(static_cast<const D*>(logits.data),
                                                            static_cast<const L*>(labels.data),
                                                            static_cast<const T*>(coeff),
                                                            static_cast<D*>(grad_logits.data), g, p,
                                                            params.per_sample);
  });
  check_launch("soft_region_stats_backward");
}

}  // namespace losses
}  // namespace medseg
