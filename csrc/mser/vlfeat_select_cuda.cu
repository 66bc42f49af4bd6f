// VLFeat's diversity rule on the GPU (the last step of tiled.select_vlfeat): a candidate node is kept
// unless (A(a) - A)/A(a) < min_diversity in float32, where a is its nearest kept candidate ancestor, or
// its root when there is none. The dependency runs top-down, so one block walks the levels of the
// candidate forest in order (one __syncthreads per level; a level's nodes are spread over the threads).
// Levels number at most the distinct keys on a chain (256 for 8-bit, 65536 for 16-bit images); one
// round of torch ops per level would cost ~12 launches a level, here the whole walk is one launch.
// Tested on the CPU emulator (python_tests/cuda_emu); not yet run on a GPU.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/errors.h"
#include "mser/mser_tiled.h"

namespace medseg {
namespace mser {

namespace {

constexpr int kLevelThreads = 256;

__global__ void diversity_kernel(const int64_t* __restrict__ order, const int64_t* __restrict__ level_start,
                                 int64_t levels, const int64_t* __restrict__ up, const int64_t* __restrict__ root,
                                 const int64_t* __restrict__ area, float min_diversity, bool* keep,
                                 int64_t* anchor) {
  for (int64_t d = 0; d < levels; ++d) {
    const int64_t end = level_start[d + 1];
    for (int64_t i = level_start[d] + threadIdx.x; i < end; i += blockDim.x) {
      const int64_t q = order[i];
      const int64_t p = up[q];
      const int64_t anc = p < 0 ? -1 : (keep[p] ? p : anchor[p]);
      anchor[q] = anc;
      const int64_t ref = anc >= 0 ? anc : root[q];
      // IEEE conversions and division: the build's --use_fast_math must not change VLFeat's float32 test
      // (nvcc still emits div.rn.ftz: harmless, the quotient is 0 or >= 2^-31, far from subnormal)
      const float div = __fdiv_rn(__ll2float_rn(area[ref] - area[q]), __ll2float_rn(area[ref]));
      keep[q] = !(div < min_diversity);
    }
    __syncthreads();  // the next level reads this level's keep/anchor (global memory, same block)
  }
}

}  // namespace

void vlfeat_diversity_cuda(const int64_t* order, const int64_t* level_start, int64_t levels, const int64_t* up,
                           const int64_t* root, const int64_t* area, float min_diversity, bool* keep,
                           int64_t* anchor, intptr_t stream) {
  if (levels <= 0) return;
  diversity_kernel<<<1, kLevelThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      order, level_start, levels, up, root, area, min_diversity, keep, anchor);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) fail("mser vlfeat_diversity_cuda: launch: ", cudaGetErrorString(err));
}

}  // namespace mser
}  // namespace medseg
