// A CUDA emulator for tests on machines without a GPU (tests only; never part of the wheel).
//
// The package's *_cuda.cu files are rewritten by translate.py (kernel<<<cfg>>>(args) becomes
// cuda_emu::launch(cfg, kernel, args); `extern __shared__ T x[];` becomes a pointer to the launch's
// dynamic shared memory) and compiled as C++ against this header, which the fake cuda_runtime.h,
// cuda_fp16.h, cuda_bf16.h and math_constants.h beside it include. The result is a second build of
// medseg_ext._C whose *_cuda functions take host pointers, so the tests can run the CUDA kernels and
// their host drivers on CPU tensors and compare them with the CPU kernels.
//
// Execution model, kept close to the hardware's so that the bugs it finds are the GPU's bugs:
// * one OS thread per CUDA thread of a block, all of them running at once; blocks run one after
//   the other (so `__shared__` variables become function statics, shared by the block's threads);
// * __syncthreads() is a barrier over the block's threads that have not returned yet; warp
//   shuffles are a barrier over the warp's live threads around an exchange buffer;
// * launches are checked like the driver checks them (at most 1024 threads per block, grid y/z at
//   most 65535, at most 48 KiB of dynamic shared memory) and a bad one is reported by
//   cudaGetLastError(), not run;
// * dynamic shared memory and cudaMallocAsync memory start filled with 0xFF bytes (NaN as floats,
//   -1 as integers), so reading them before writing shows up in results;
// * a barrier that waits longer than MEDSEG_CUDA_EMU_TIMEOUT_S seconds (default 60) breaks the
//   launch (cudaErrorLaunchTimeout) instead of hanging the test run: a kernel whose threads wait at
//   different barriers deadlocks on a GPU too.
#pragma once

#include <math.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/dtype.h"

// ---- qualifiers ------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __constant__ static
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

// ---- vector types, errors, streams -----------------------------------------------------------
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
struct CUstream_st;
typedef CUstream_st* cudaStream_t;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorNoDevice = 100,
  cudaErrorLaunchTimeout = 702,
  cudaErrorLaunchFailure = 719,
};

namespace cuda_emu {

inline thread_local uint3 tl_threadIdx{0, 0, 0};
inline thread_local uint3 tl_blockIdx{0, 0, 0};
inline thread_local dim3 tl_blockDim{1, 1, 1};
inline thread_local dim3 tl_gridDim{1, 1, 1};
inline thread_local cudaError_t tl_last_error = cudaSuccess;  // the runtime's error is per host thread

struct Deadlock {};

inline std::chrono::milliseconds barrier_timeout() {
  const char* s = std::getenv("MEDSEG_CUDA_EMU_TIMEOUT_S");
  const double sec = s ? std::atof(s) : 60.0;
  return std::chrono::milliseconds(static_cast<long long>((sec > 0 ? sec : 60.0) * 1000));
}

// A reusable barrier whose participants may leave (a returned thread no longer takes part) and
// whose waits time out; the last thread to arrive runs `on_complete` before anyone is released.
class Barrier {
 public:
  explicit Barrier(int expected = 0) : expected_(expected) {}
  void reset(int expected) {
    std::lock_guard<std::mutex> lock(m_);
    expected_ = expected;
    arrived_ = 0;
    broken_ = false;
  }
  void arrive_and_wait(const std::function<void()>& on_complete = {}) {
    std::unique_lock<std::mutex> lock(m_);
    if (broken_) throw Deadlock{};
    const uint64_t phase = phase_;
    if (++arrived_ >= expected_) {
      complete(on_complete);
      return;
    }
    if (!cv_.wait_for(lock, barrier_timeout(), [&] { return phase_ != phase || broken_; })) broken_ = true;
    if (phase_ == phase) {  // released by a break, not by completion
      cv_.notify_all();
      throw Deadlock{};
    }
  }
  void arrive_and_drop() {
    std::lock_guard<std::mutex> lock(m_);
    --expected_;
    if (expected_ > 0 && arrived_ >= expected_) complete({});
  }
  void break_all() {
    std::lock_guard<std::mutex> lock(m_);
    broken_ = true;
    cv_.notify_all();
  }

 private:
  void complete(const std::function<void()>& on_complete) {
    if (on_complete) on_complete();
    arrived_ = 0;
    ++phase_;
    cv_.notify_all();
  }
  std::mutex m_;
  std::condition_variable cv_;
  int expected_;
  int arrived_ = 0;
  uint64_t phase_ = 0;
  bool broken_ = false;
};

// Per-block state shared by the block's threads.
struct Block {
  int threads = 0;
  Barrier sync;                                  // __syncthreads
  std::vector<std::unique_ptr<Barrier>> warps;   // shuffles, one per warp
  std::vector<uint64_t> lanes;                   // shuffle exchange slots, 32 per warp
  std::vector<unsigned char> dynamic_shared;     // extern __shared__
  void reset() {
    sync.reset(threads);
    for (size_t w = 0; w < warps.size(); ++w) {
      const int in_warp = threads - static_cast<int>(w) * 32;
      warps[w]->reset(in_warp < 32 ? in_warp : 32);
    }
    std::memset(dynamic_shared.data(), 0xFF, dynamic_shared.size());
  }
};

inline thread_local Block* tl_block = nullptr;
inline thread_local int tl_linear = 0;

inline void* dynamic_shared() { return tl_block->dynamic_shared.data(); }

inline void syncthreads() { tl_block->sync.arrive_and_wait(); }

// A warp shuffle: every live lane of the warp posts its value, then reads lane `src(lane)`'s; lanes
// whose source is outside their width-segment or the warp keep their own value.
template <typename T, typename Source>
T shfl_exchange(T v, int width, Source src_of) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "shuffle of a type wider than 64 bits");
  Block* b = tl_block;
  const int lane = tl_linear & 31, warp = tl_linear >> 5;
  uint64_t* slots = b->lanes.data() + static_cast<size_t>(warp) * 32;
  std::memcpy(&slots[lane], &v, sizeof(T));
  b->warps[warp]->arrive_and_wait();
  const int in_warp = b->threads - warp * 32 < 32 ? b->threads - warp * 32 : 32;
  T r = v;
  const int src = src_of(lane);
  if (src / width == lane / width && src < in_warp) std::memcpy(&r, &slots[src], sizeof(T));
  b->warps[warp]->arrive_and_wait();
  return r;
}

template <typename T>
T shfl_down(unsigned /*mask*/, T v, unsigned delta, int width) {
  return shfl_exchange(v, width, [delta](int lane) { return lane + static_cast<int>(delta); });
}

template <typename T>
T shfl_xor(unsigned /*mask*/, T v, int lane_mask, int width) {
  return shfl_exchange(v, width, [lane_mask](int lane) { return lane ^ lane_mask; });
}

struct LaunchConfig {
  dim3 grid, block;
  size_t shared;
  LaunchConfig(dim3 g, dim3 b, size_t s = 0, cudaStream_t = nullptr) : grid(g), block(b), shared(s) {}
};

constexpr size_t kMaxDynamicShared = 48 * 1024;

// Runs every block of the grid; `body` is one thread's call of the kernel.
inline void run_grid(const LaunchConfig& cfg, const std::function<void()>& body) {
  const uint64_t nthreads = uint64_t(cfg.block.x) * cfg.block.y * cfg.block.z;
  if (nthreads == 0 || nthreads > 1024 || cfg.block.z > 64 || cfg.grid.x == 0 || cfg.grid.y == 0 ||
      cfg.grid.z == 0 || cfg.grid.x > 2147483647u || cfg.grid.y > 65535 || cfg.grid.z > 65535 ||
      cfg.shared > kMaxDynamicShared) {
    tl_last_error = cudaErrorInvalidConfiguration;
    return;
  }
  const int n = static_cast<int>(nthreads);
  Block block;
  block.threads = n;
  for (int w = 0; w < (n + 31) / 32; ++w) block.warps.emplace_back(new Barrier());
  block.lanes.assign(static_cast<size_t>((n + 31) / 32) * 32, 0);
  block.dynamic_shared.assign(cfg.shared ? cfg.shared : 1, 0xFF);
  block.reset();
  const uint64_t nblocks = uint64_t(cfg.grid.x) * cfg.grid.y * cfg.grid.z;
  Barrier between_blocks(n);
  std::atomic<bool> failed{false};
  auto thread_main = [&](int t) {
    tl_blockDim = cfg.block;
    tl_gridDim = cfg.grid;
    tl_block = &block;
    tl_linear = t;
    tl_threadIdx = uint3{static_cast<unsigned>(t % cfg.block.x),
                         static_cast<unsigned>((t / cfg.block.x) % cfg.block.y),
                         static_cast<unsigned>(t / (cfg.block.x * cfg.block.y))};
    for (uint64_t bi = 0; bi < nblocks; ++bi) {
      tl_blockIdx = uint3{static_cast<unsigned>(bi % cfg.grid.x),
                          static_cast<unsigned>((bi / cfg.grid.x) % cfg.grid.y),
                          static_cast<unsigned>(bi / (uint64_t(cfg.grid.x) * cfg.grid.y))};
      bool mine_failed = false;
      try {
        body();
      } catch (const Deadlock&) {
        mine_failed = true;
      }
      if (mine_failed) {
        failed = true;
        block.sync.break_all();
        for (auto& w : block.warps) w->break_all();
      } else {
        // a returned thread leaves the block's barriers, as an exited GPU thread does
        block.sync.arrive_and_drop();
        block.warps[tl_linear >> 5]->arrive_and_drop();
      }
      bool stop = false;
      try {
        between_blocks.arrive_and_wait([&] {
          if (!failed) block.reset();
        });
      } catch (const Deadlock&) {
        stop = true;
      }
      if (stop || failed) return;
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (int t = 0; t < n; ++t) threads.emplace_back(thread_main, t);
  for (auto& th : threads) th.join();
  if (failed) tl_last_error = cudaErrorLaunchTimeout;
}

template <typename... P, typename... A>
void launch(const LaunchConfig& cfg, void (*kernel)(P...), A&&... args) {
  // parameters are copied once, as the driver copies them into the launch's parameter space
  std::tuple<std::decay_t<P>...> params(static_cast<std::decay_t<P>>(std::forward<A>(args))...);
  run_grid(cfg, [&] { std::apply(kernel, params); });
}

// Atomics on plain memory (GCC builtins; the kernels' data are ordinary arrays).
template <typename T>
T atomic_add(T* p, T v) {
  if constexpr (std::is_integral_v<T>) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
  } else {  // floating point: a compare-and-swap loop on the value's bytes (the generic builtins)
    T old;
    __atomic_load(p, &old, __ATOMIC_SEQ_CST);
    T sum = old + v;
    while (!__atomic_compare_exchange(p, &old, &sum, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) sum = old + v;
    return old;
  }
}
template <typename T>
T atomic_max(T* p, T v) {
  T old;
  __atomic_load(p, &old, __ATOMIC_SEQ_CST);
  while (old < v && !__atomic_compare_exchange(p, &old, &v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
  }
  return old;
}
template <typename T>
T atomic_min(T* p, T v) {
  T old;
  __atomic_load(p, &old, __ATOMIC_SEQ_CST);
  while (v < old && !__atomic_compare_exchange(p, &old, &v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
  }
  return old;
}

}  // namespace cuda_emu

#define threadIdx (::cuda_emu::tl_threadIdx)
#define blockIdx (::cuda_emu::tl_blockIdx)
#define blockDim (::cuda_emu::tl_blockDim)
#define gridDim (::cuda_emu::tl_gridDim)
constexpr int warpSize = 32;

inline void __syncthreads() { ::cuda_emu::syncthreads(); }
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::cuda_emu::shfl_down(mask, v, delta, width);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::cuda_emu::shfl_xor(mask, v, lane_mask, width);
}
template <typename T>
T atomicAdd(T* p, T v) {
  return ::cuda_emu::atomic_add(p, v);
}
template <typename T>
T atomicMax(T* p, T v) {
  return ::cuda_emu::atomic_max(p, v);
}
template <typename T>
T atomicMin(T* p, T v) {
  return ::cuda_emu::atomic_min(p, v);
}
template <typename T>
T atomicCAS(T* p, T expected, T desired) {
  __atomic_compare_exchange(p, &expected, &desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return expected;
}

// ---- device math ---------------------------------------------------------------------------
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __fdiv_rn(float a, float b) { return a / b; }  // IEEE division, as on the device
inline float __ll2float_rn(long long x) { return static_cast<float>(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }

// ---- runtime API ---------------------------------------------------------------------------
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument (emulated)";
    case cudaErrorMemoryAllocation: return "out of memory (emulated)";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument (emulated)";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected (emulated)";
    case cudaErrorLaunchTimeout: return "the launch deadlocked at a barrier (emulated)";
    default: return "unspecified launch failure (emulated)";
  }
}
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = ::cuda_emu::tl_last_error;
  ::cuda_emu::tl_last_error = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() { return ::cuda_emu::tl_last_error; }
inline cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 0;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 0;  // the emulated module is driven by the tests, never picked for real CUDA tensors
  return cudaSuccess;
}
inline cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) {
  *p = std::malloc(bytes ? bytes : 1);
  if (!*p) return cudaErrorMemoryAllocation;
  std::memset(*p, 0xFF, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMalloc(void** p, size_t bytes) { return cudaMallocAsync(p, bytes, nullptr); }
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) { return cudaFreeAsync(p, nullptr); }
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t = nullptr) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice,
                      cudaMemcpyDefault };
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t bytes, cudaMemcpyKind, cudaStream_t = nullptr) {
  std::memmove(d, s, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

// ---- 16-bit floats (IEEE binary16 and bfloat16 bit patterns, as torch stores them) ------------
struct __half {
  uint16_t x;
};
struct __nv_bfloat16 {
  uint16_t x;
};

// The conversions are the package's own bit-exact ones (common/dtype.h; round to nearest even).
inline float __half2float(__half h) { return ::medseg::half_to_float(h.x); }
inline __half __float2half_rn(float f) { return __half{::medseg::float_to_half(f)}; }
inline __half __float2half(float f) { return __float2half_rn(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return ::medseg::bf16_to_float(h.x); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{::medseg::float_to_bf16(f)}; }
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }

// ---- math_constants.h ------------------------------------------------------------------------
#define CUDART_INF (std::numeric_limits<double>::infinity())
#define CUDART_INF_F (std::numeric_limits<float>::infinity())
#define CUDART_NAN (std::numeric_limits<double>::quiet_NaN())
#define CUDART_NAN_F (std::numeric_limits<float>::quiet_NaN())
