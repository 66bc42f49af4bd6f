// CUDA exact EDT (see edt.h): one kernel launch per axis pass for the whole B x C batch.
//
// Pass 1 (last axis): one thread per line, nearest-background scan forwards and backwards.
// Passes 2, 3: one thread per line of the axis; neighbouring threads own neighbouring lines, so
// every row read/write is coalesced. The Felzenszwalb-Huttenlocher envelope (site index, site value,
// boundaries) lives in a scratch buffer laid out [position][line] (coalesced too), in float64 so
// float32 outputs stay exact for integer squared distances. The output is overwritten in place:
// the envelope phase reads out[q] before any write, the evaluation phase reads only the scratch.
#include <cuda_runtime.h>
#include <math_constants.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "common/errors.h"
#include "losses/edt.h"

namespace medseg {
namespace losses {

namespace {

constexpr int kThreads = 256;

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) fail("edt_cuda: ", what, ": ", cudaGetErrorString(err));
}

template <typename T>
__device__ __forceinline__ T finish(double sq, bool final_pass, bool squared) {
  return static_cast<T>(final_pass && !squared ? sqrt(sq) : sq);
}

template <typename T>
__global__ void scan_last_axis_kernel(const uint8_t* __restrict__ mask, T* __restrict__ out, int64_t lines,
                                      int64_t n, double h, bool final_pass, bool squared, bool invert) {
  const int64_t l = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (l >= lines) return;
  const uint8_t* m = mask + l * n;
  T* o = out + l * n;
  const double inf = CUDART_INF;
  int64_t last = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (!m[i] != invert) last = i;
    o[i] = last < 0 ? static_cast<T>(inf) : static_cast<T>(i - last);
  }
  int64_t next = -1;
  for (int64_t i = n - 1; i >= 0; --i) {
    if (!m[i] != invert) next = i;
    double steps = static_cast<double>(o[i]);
    if (next >= 0) steps = fmin(steps, static_cast<double>(next - i));
    const double d = steps * h;
    o[i] = finish<T>(d * d, final_pass, squared);
  }
}

// Lines of length n and stride `inner`; line id = o * inner + t (t fastest), lines = outer * inner.
template <typename T>
__global__ void envelope_axis_kernel(T* __restrict__ out, int64_t lines, int64_t n, int64_t inner, double h,
                                     int32_t* __restrict__ vs, double* __restrict__ fs, double* __restrict__ zs,
                                     bool final_pass, bool squared) {
  const int64_t l = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (l >= lines) return;
  const int64_t o = l / inner, t = l - o * inner;
  T* base = out + o * n * inner + t;
  const double inf = CUDART_INF;
  // scratch entry k of this line is at [k * lines + l]
  int64_t k = -1;
  for (int64_t q = 0; q < n; ++q) {
    const double fq = static_cast<double>(base[q * inner]);
    if (!(fq < inf)) continue;
    double s = -inf;
    while (k >= 0) {
      const int64_t r = vs[k * lines + l];
      s = 0.5 * ((fq - fs[k * lines + l]) / (static_cast<double>(q - r) * h) + static_cast<double>(q + r) * h);
      if (s <= zs[k * lines + l]) {
        --k;
      } else {
        break;
      }
    }
    if (k < 0) {
      k = 0;
      s = -inf;
    } else {
      ++k;
    }
    vs[k * lines + l] = static_cast<int32_t>(q);
    fs[k * lines + l] = fq;
    zs[k * lines + l] = s;
    zs[(k + 1) * lines + l] = inf;
  }
  if (k < 0) {
    for (int64_t p = 0; p < n; ++p) base[p * inner] = static_cast<T>(inf);
    return;
  }
  int64_t j = 0;
  for (int64_t p = 0; p < n; ++p) {
    const double x = static_cast<double>(p) * h;
    while (zs[(j + 1) * lines + l] < x) ++j;
    const double dx = x - static_cast<double>(vs[j * lines + l]) * h;
    base[p * inner] = finish<T>(dx * dx + fs[j * lines + l], final_pass, squared);
  }
}

// Modes Field / Signed: out = inside transform, other = outside transform; uniform volumes -> 0.
// Per volume: uniform (one transform has no site, so it is +inf at the first voxel). Its own launch,
// so that no thread of combine_kernel can overwrite a first voxel before another one reads it.
template <typename T>
__global__ void uniform_kernel(const T* __restrict__ out, const T* __restrict__ other, uint8_t* __restrict__ flags,
                               int64_t volumes, int64_t vol) {
  const int64_t v = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (v >= volumes) return;
  flags[v] = isinf(static_cast<double>(out[v * vol])) || isinf(static_cast<double>(other[v * vol]));
}

template <typename T>
__global__ void combine_kernel(const uint8_t* __restrict__ mask, T* __restrict__ out, const T* __restrict__ other,
                               const uint8_t* __restrict__ flags, int64_t total, int64_t vol, bool field,
                               double offset) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  if (flags[i / vol]) {
    out[i] = T(0);
    return;
  }
  const double in = static_cast<double>(out[i]), o = static_cast<double>(other[i]);
  out[i] = static_cast<T>(field ? in + o : (mask[i] ? offset - in : o));
}

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

template <typename T>
void edt_pass(const uint8_t* mask, T* out, const EdtGeometry& g, bool invert, bool squared, void* scratch,
              cudaStream_t stream) {
  const int64_t d0 = g.dims[0], d1 = g.dims[1], d2 = g.dims[2];
  const int64_t total = g.volumes * d0 * d1 * d2;
  const bool pass1 = d1 > 1, pass0 = d0 > 1;
  const int64_t lines_last = g.volumes * d0 * d1;
  scan_last_axis_kernel<T><<<blocks_for(lines_last), kThreads, 0, stream>>>(mask, out, lines_last, d2, g.spacing[2],
                                                                             !pass1 && !pass0, squared, invert);
  check_cuda(cudaGetLastError(), "scan launch");
  if (!pass1 && !pass0) return;
  const int64_t lines1 = pass1 ? total / d1 : 0, lines0 = pass0 ? total / d0 : 0;
  const int64_t max_lines = lines1 > lines0 ? lines1 : lines0;
  const size_t bytes_f = static_cast<size_t>(total) * sizeof(double);
  const size_t bytes_z = static_cast<size_t>(total + max_lines) * sizeof(double);
  auto* fs = static_cast<double*>(scratch);
  auto* zs = reinterpret_cast<double*>(static_cast<char*>(scratch) + bytes_f);
  auto* vs = reinterpret_cast<int32_t*>(static_cast<char*>(scratch) + bytes_f + bytes_z);
  if (pass1) {
    envelope_axis_kernel<T><<<blocks_for(lines1), kThreads, 0, stream>>>(out, lines1, d1, d2, g.spacing[1], vs, fs,
                                                                          zs, !pass0, squared);
    check_cuda(cudaGetLastError(), "axis-1 launch");
  }
  if (pass0) {
    envelope_axis_kernel<T><<<blocks_for(lines0), kThreads, 0, stream>>>(out, lines0, d0, d1 * d2, g.spacing[0], vs,
                                                                          fs, zs, true, squared);
    check_cuda(cudaGetLastError(), "axis-0 launch");
  }
}

template <typename T>
void run_cuda(const uint8_t* mask, T* out, const EdtGeometry& g, cudaStream_t stream) {
  const int64_t d0 = g.dims[0], d1 = g.dims[1], d2 = g.dims[2];
  const int64_t vol = d0 * d1 * d2;
  const int64_t total = g.volumes * vol;
  if (total == 0) return;
  MEDSEG_CHECK(d0 <= INT32_MAX && d1 <= INT32_MAX, "mask: a spatial axis longer than 2^31 - 1");
  MEDSEG_CHECK(blocks_for(total) <= 0x7fffffffu, "mask: too many voxels for one launch");
  // envelope scratch (site values, boundaries, site indices) + the second transform of modes 2 and 3
  const int64_t shortest = d0 > 1 && d1 > 1 ? (d0 < d1 ? d0 : d1) : (d0 > 1 ? d0 : (d1 > 1 ? d1 : total));
  const int64_t max_lines = total / shortest;  // lines of the envelope pass with the most lines
  const bool two = g.mode == EdtMode::Field || g.mode == EdtMode::Signed;
  const size_t bytes_env = static_cast<size_t>(total) * sizeof(double) +
                           static_cast<size_t>(total + max_lines) * sizeof(double) +
                           static_cast<size_t>(total) * sizeof(int32_t);
  const size_t bytes_other = two ? static_cast<size_t>(total) * sizeof(T) + static_cast<size_t>(g.volumes) : 0;
  void* scratch = nullptr;
  check_cuda(cudaMallocAsync(&scratch, bytes_env + bytes_other, stream), "scratch allocation");
  if (!two) {
    edt_pass<T>(mask, out, g, g.mode == EdtMode::Inverted, g.squared, scratch, stream);
  } else {
    T* other = reinterpret_cast<T*>(static_cast<char*>(scratch) + bytes_env);
    edt_pass<T>(mask, out, g, false, false, scratch, stream);
    edt_pass<T>(mask, other, g, true, false, scratch, stream);
    auto* flags = reinterpret_cast<uint8_t*>(other + total);
    uniform_kernel<T><<<blocks_for(g.volumes), kThreads, 0, stream>>>(out, other, flags, g.volumes, vol);
    check_cuda(cudaGetLastError(), "uniform launch");
    combine_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(mask, out, other, flags, total, vol,
                                                                   g.mode == EdtMode::Field, g.offset);
    check_cuda(cudaGetLastError(), "combine launch");
  }
  check_cuda(cudaFreeAsync(scratch, stream), "scratch free");
}

__global__ void surface_edges_kernel(const uint8_t* __restrict__ m, uint8_t* __restrict__ o, int64_t total,
                                     int64_t d0, int64_t d1, int64_t d2, bool use0, bool use1) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  if (!m[i]) {
    o[i] = 0;
    return;
  }
  const int64_t j = i % d2, i1 = (i / d2) % d1, i0 = (i / (d1 * d2)) % d0;
  bool interior = j > 0 && j + 1 < d2 && m[i - 1] && m[i + 1];
  if (interior && use1) interior = i1 > 0 && i1 + 1 < d1 && m[i - d2] && m[i + d2];
  if (interior && use0) interior = i0 > 0 && i0 + 1 < d0 && m[i - d1 * d2] && m[i + d1 * d2];
  o[i] = interior ? 0 : 1;
}

}  // namespace

void surface_edges_cuda(const TensorDesc& mask, const TensorDesc& out, int spatial_dims, intptr_t stream) {
  const int64_t total = mask.shape[0] * mask.shape[1] * mask.shape[2] * mask.shape[3];
  if (total == 0) return;
  MEDSEG_CHECK(blocks_for(total) <= 0x7fffffffu, "mask: too many voxels for one launch");
  surface_edges_kernel<<<blocks_for(total), kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      static_cast<const uint8_t*>(mask.data), static_cast<uint8_t*>(out.data), total, mask.shape[1], mask.shape[2],
      mask.shape[3], spatial_dims >= 3, spatial_dims >= 2);
  check_cuda(cudaGetLastError(), "surface edges launch");
}

void edt_cuda(const TensorDesc& mask, const TensorDesc& out, const EdtGeometry& g, intptr_t stream) {
  auto s = reinterpret_cast<cudaStream_t>(stream);
  const auto* m = static_cast<const uint8_t*>(mask.data);
  if (out.dtype == DType::Float32) {
    run_cuda<float>(m, static_cast<float*>(out.data), g, s);
  } else {
    run_cuda<double>(m, static_cast<double*>(out.data), g, s);
  }
}

}  // namespace losses
}  // namespace medseg
