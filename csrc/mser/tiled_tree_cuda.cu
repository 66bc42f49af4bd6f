// CUDA driver of the tiled component tree (tiled_tree.h), batched over B images:
//   tile_kernel    one block per (tile, image): the block loads the tile's keys into shared memory,
//                  one thread builds the local tree there (counting sort + union-find are sequential
//                  per tile), the block writes parents and areas back;
//   merge_kernel   one thread per border (pair of groups) and image, one launch per merge round;
//   level_root_kernel / canon_kernel (atomicMax) / finish_kernel: the canonicalisation.
// Compile-checked only: this code has not been run on a GPU (the machine it was written on has none).
#include <cuda_runtime.h>

#include <cstdint>

#include "common/errors.h"
#include "mser/mser_tiled.h"

namespace medseg {
namespace mser {

namespace {

constexpr int kTileThreads = 64;
constexpr int kThreads = 256;

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) fail("mser tiled_parents_cuda: ", what, ": ", cudaGetErrorString(err));
}

int blocks_for(int64_t n, int threads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<int>(b < 65535 * 16 ? (b < 1 ? 1 : b) : 65535 * 16);  // grid-stride loops do the rest
}

template <typename T>
__global__ void tile_kernel(const T* __restrict__ imgs, const uint8_t* __restrict__ masks, int64_t N,
                            tiled::TileGrid grid, tiled::Offsets nb, int32_t maxval, bool bright, int key_bits,
                            int32_t cap, int32_t* __restrict__ par, int32_t* __restrict__ area) {
  // shared: lkey, cnt (int32), then order, tmp, lpar, lzpar, larea (int16), each of the padded size
  extern __shared__ int32_t smem[];
  int32_t* lkey = smem;
  int32_t* cnt = lkey + cap;
  int16_t* order = reinterpret_cast<int16_t*>(cnt + 256);
  int16_t* tmp = order + cap;
  int16_t* lpar = tmp + cap;
  int16_t* lzpar = lpar + cap;
  int16_t* larea = lzpar + cap;
  const int64_t b = blockIdx.y;
  const tiled::Box box = grid.tile_box(blockIdx.x);
  const tiled::Local L = tiled::local_layout(box, nb);
  const T* img = imgs + b * N;
  const uint8_t* mask = masks ? masks + b * N : nullptr;
  const tiled::Keys<T> key{img, maxval, bright};
  for (int32_t l = threadIdx.x; l < L.numel; l += blockDim.x) {
    const int32_t p = tiled::local_to_global(L, box, grid, l);
    lkey[l] = p < 0 || (mask && !mask[p]) ? -1 : key(p);
  }
  __syncthreads();
  if (threadIdx.x == 0) tiled::tile_tree<int16_t>(lkey, L, key_bits, order, tmp, cnt, lpar, lzpar, larea);
  __syncthreads();
  int32_t* bpar = par + b * N;
  int32_t* barea = area + b * N;
  for (int32_t l = threadIdx.x; l < L.numel; l += blockDim.x) {
    const int32_t p = tiled::local_to_global(L, box, grid, l);
    if (p < 0) continue;
    bpar[p] = lpar[l] < 0 ? -1 : tiled::local_to_global(L, box, grid, lpar[l]);
    barea[p] = larea[l];
  }
}

template <typename T>
__global__ void merge_kernel(const T* __restrict__ imgs, int64_t N, int64_t B, tiled::TileGrid grid, tiled::Round rd,
                             int64_t tasks, tiled::Offsets nb, int32_t maxval, bool bright, int32_t* par,
                             int32_t* area) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < tasks * B;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / tasks, t = i - b * tasks;
    const tiled::Keys<T> key{imgs + b * N, maxval, bright};
    int32_t split = 0;
    const tiled::Box box = tiled::round_box(grid, rd, t, split);
    tiled::merge_border(par + b * N, area + b * N, key, grid, box, rd.axis, split, nb);
  }
}

template <typename T>
__global__ void level_root_kernel(const T* __restrict__ imgs, int64_t N, int64_t B, int32_t maxval, bool bright,
                                  const int32_t* __restrict__ par, int32_t* __restrict__ lr) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < B * N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / N;
    const tiled::Keys<T> key{imgs + b * N, maxval, bright};
    lr[i] = tiled::level_root_of(par + b * N, key, static_cast<int32_t>(i - b * N));
  }
}

__global__ void canon_kernel(int64_t N, int64_t B, const int32_t* __restrict__ lr, int32_t* canon) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < B * N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t r = lr[i];
    if (r < 0) continue;
    const int64_t b = i / N;
    atomicMax(canon + b * N + r, static_cast<int32_t>(i - b * N));
  }
}

__global__ void finish_kernel(int64_t N, int64_t B, const int32_t* __restrict__ par, const int32_t* __restrict__ lr,
                              const int32_t* __restrict__ canon, const int32_t* __restrict__ area,
                              int32_t* __restrict__ out_par, int32_t* __restrict__ out_area) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < B * N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / N, o = b * N;
    tiled::finish_pixel(par + o, lr + o, canon + o, area + o, static_cast<int32_t>(i - o), out_par + o, out_area + o);
  }
}

template <typename T>
void run(const T* imgs, const uint8_t* masks, int64_t B, const Geometry& g, bool bright, int maxval,
         const int32_t tile[3], int32_t* work, int32_t* out_par, int32_t* out_area, cudaStream_t stream) {
  const tiled::TileGrid grid = tiled_grid(g, tile);
  const int64_t N = g.numel();
  const tiled::Offsets nb = tiled::offsets_of(g.connectivity);
  const int64_t cap = tiled::local_layout(grid.tile_box(0), nb).numel;  // the largest tile, padded
  MEDSEG_CHECK(cap <= kCudaMaxLocalPixels, "tile: the CUDA path keeps a tile and a 1-pixel border in shared memory, "
               "at most ", kCudaMaxLocalPixels, " pixels, got ", cap, " (use smaller tiles, e.g. 32 x 32)");
  MEDSEG_CHECK(B <= 65535, "image: the CUDA path takes at most 65535 images per call, got ", B);
  MEDSEG_CHECK(grid.tiles() <= INT32_MAX, "tile: too many tiles");
  const int key_bits = maxval < 256 ? 8 : 16;
  int32_t* par = work;
  int32_t* area = work + B * N;
  int32_t* lr = work + 2 * B * N;
  int32_t* canon = work + 3 * B * N;

  const size_t smem = static_cast<size_t>(cap) * (sizeof(int32_t) + 5 * sizeof(int16_t)) + 256 * sizeof(int32_t);
  tile_kernel<T><<<dim3(static_cast<unsigned>(grid.tiles()), static_cast<unsigned>(B)), kTileThreads, smem, stream>>>(
      imgs, masks, N, grid, nb, maxval, bright, key_bits, static_cast<int32_t>(cap), par, area);
  check_cuda(cudaGetLastError(), "tile_kernel launch");

  tiled::Round rounds[3 * 32];
  const int nrounds = tiled::make_rounds(grid, rounds);
  for (int r = 0; r < nrounds; ++r) {
    const int64_t tasks = tiled::round_tasks(grid, rounds[r]);
    merge_kernel<T><<<blocks_for(tasks * B, kTileThreads), kTileThreads, 0, stream>>>(
        imgs, N, B, grid, rounds[r], tasks, nb, maxval, bright, par, area);
    check_cuda(cudaGetLastError(), "merge_kernel launch");
  }

  const int nb_px = blocks_for(B * N, kThreads);
  level_root_kernel<T><<<nb_px, kThreads, 0, stream>>>(imgs, N, B, maxval, bright, par, lr);
  check_cuda(cudaGetLastError(), "level_root_kernel launch");
  check_cuda(cudaMemsetAsync(canon, 0xFF, static_cast<size_t>(B * N) * sizeof(int32_t), stream), "memset");
  canon_kernel<<<nb_px, kThreads, 0, stream>>>(N, B, lr, canon);
  check_cuda(cudaGetLastError(), "canon_kernel launch");
  finish_kernel<<<nb_px, kThreads, 0, stream>>>(N, B, par, lr, canon, area, out_par, out_area);
  check_cuda(cudaGetLastError(), "finish_kernel launch");
}

}  // namespace

void tiled_parents_cuda(const void* img, bool is16, const uint8_t* mask, int64_t B, const Geometry& g, bool bright,
                        int maxval, const int32_t tile[3], int32_t* work, int32_t* par, int32_t* area,
                        intptr_t stream) {
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  if (is16) {
    run<uint16_t>(static_cast<const uint16_t*>(img), mask, B, g, bright, maxval, tile, work, par, area, s);
  } else {
    run<uint8_t>(static_cast<const uint8_t*>(img), mask, B, g, bright, maxval, tile, work, par, area, s);
  }
}

}  // namespace mser
}  // namespace medseg
