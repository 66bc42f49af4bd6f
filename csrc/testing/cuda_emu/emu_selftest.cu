// Kernels that check the emulator itself (python_tests/cuda_emu/test_emu_selftest.py): the oracle of
// the other cuda_emu tests must follow the hardware's rules. Built only into the emulator module.
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "common/bind_util.h"

namespace {

// Per warp, the sum of its lanes' values by the usual shuffle tree; lane 0 writes it.
__global__ void warp_sum_kernel(const int* in, int* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  int v = in[i];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) out[i / 32] = v;
}

// Threads at or past `live` return before the barrier; the others must not wait for them.
__global__ void early_exit_kernel(const float* in, float* out, int live) {
  __shared__ float buf[256];
  const int t = threadIdx.x;
  if (t >= live) return;
  buf[t] = in[blockIdx.x * blockDim.x + t];
  __syncthreads();
  if (t == 0) {
    float s = 0;
    for (int k = 0; k < live; ++k) s += buf[k];
    out[blockIdx.x] = s;
  }
}

__global__ void dynamic_shared_kernel(uint32_t* out) {
  extern __shared__ uint32_t sm[];
  out[threadIdx.x] = sm[threadIdx.x];  // read before any write: the emulator's 0xFF fill
}

// Half of warp 0 shuffles while everyone else waits at __syncthreads: a deadlock on a GPU too.
__global__ void deadlock_kernel(int* out) {
  int v = static_cast<int>(threadIdx.x);
  if (threadIdx.x < 16) {
    v = __shfl_down_sync(0x0000ffffu, v, 1);
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = v;
}

__global__ void atomic_kernel(int* count, float* fsum, int* imax) {
  atomicAdd(count, 1);
  atomicAdd(fsum, 0.5f);
  atomicMax(imax, static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x));
}

// Every thread of a 3-D grid of 3-D blocks writes its coordinates at its global linear id.
__global__ void index_kernel(int* out) {
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned id = block * (blockDim.x * blockDim.y * blockDim.z) + thread;
  int* o = out + 6 * id;
  o[0] = blockIdx.x, o[1] = blockIdx.y, o[2] = blockIdx.z;
  o[3] = threadIdx.x, o[4] = threadIdx.y, o[5] = threadIdx.z;
}

void bind_cuda_emu_selftest(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("emu_warp_sum", [](std::vector<int> in, int threads) {
    std::vector<int> out(in.size() / 32, 0);
    warp_sum_kernel<<<static_cast<unsigned>(in.size() / threads), threads>>>(in.data(), out.data());
    return py::make_tuple(out, static_cast<int>(cudaGetLastError()));
  });
  m.def("emu_early_exit", [](std::vector<float> in, int threads, int live) {
    std::vector<float> out(in.size() / threads, -1.0f);
    early_exit_kernel<<<static_cast<unsigned>(in.size() / threads), threads>>>(in.data(), out.data(), live);
    return py::make_tuple(out, static_cast<int>(cudaGetLastError()));
  });
  m.def("emu_dynamic_shared", [](int threads, size_t bytes) {
    std::vector<uint32_t> out(threads, 0);
    dynamic_shared_kernel<<<1, threads, bytes>>>(out.data());
    return py::make_tuple(out, static_cast<int>(cudaGetLastError()));
  });
  m.def("emu_deadlock", []() {
    std::vector<int> out(64, -1);
    py::gil_scoped_release release;
    deadlock_kernel<<<1, 64>>>(out.data());
    return static_cast<int>(cudaGetLastError());
  });
  m.def("emu_atomics", [](unsigned blocks, int threads) {
    int count = 0, imax = -1;
    float fsum = 0;
    atomic_kernel<<<blocks, threads>>>(&count, &fsum, &imax);
    return py::make_tuple(count, fsum, imax, static_cast<int>(cudaGetLastError()));
  });
  m.def("emu_index", [](std::vector<unsigned> grid, std::vector<unsigned> block) {
    const size_t n = size_t(grid[0]) * grid[1] * grid[2] * block[0] * block[1] * block[2];
    std::vector<int> out(6 * (n ? n : 1), -1);
    index_kernel<<<dim3(grid[0], grid[1], grid[2]), dim3(block[0], block[1], block[2])>>>(out.data());
    return py::make_tuple(out, static_cast<int>(cudaGetLastError()));
  });
}

}  // namespace

MEDSEG_REGISTER_FAMILY(cuda_emu_selftest, bind_cuda_emu_selftest)
