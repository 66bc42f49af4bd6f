// Tiled component tree: the drivers of tiled_tree.h (CPU: component_tree_tiled.cpp, CUDA:
// tiled_tree_cuda.cu). Output "canonical parent form" per pixel p of an image:
//   par[p]  = -1 outside the mask; for a non-canonical pixel the canonical pixel of its node; for a
//             canonical pixel the canonical pixel of the parent node, or p itself at a root;
//   area[p] = the node's area at its canonical pixel, 0 elsewhere.
// The canonical pixel of a node is the largest pixel index among its own-level pixels, so par is
// exactly the level-compressed parent array of build_tree (component_tree.cpp).
#pragma once

#include <cstdint>

#include "mser/mser.h"
#include "mser/tiled_tree.h"

namespace medseg {
namespace mser {

// Grid of one image; checks the pixel count and the tile sizes (tile = (t0, t1, t2), clamped).
tiled::TileGrid tiled_grid(const Geometry& g, const int32_t tile[3]);

// CPU, one image, num_threads <= 0: the OpenMP default.
template <typename T>
void tiled_parents(const T* img, const uint8_t* mask, const Geometry& g, bool bright, int maxval,
                   const int32_t tile[3], int num_threads, int32_t* par, int32_t* area);

// Node form (the Tree of mser.h, same numbering as build_tree) from the canonical parent form;
// num_threads <= 0: the OpenMP default (the numbering does not depend on it).
template <typename T>
void tree_from_parents(const T* img, const Geometry& g, bool bright, int maxval, const int32_t* par,
                       const int32_t* area, Tree& tree, int num_threads = 1);

template <typename T>
void build_tree_tiled(const T* img, const uint8_t* mask, const Geometry& g, bool bright, int maxval,
                      const int32_t tile[3], int num_threads, Tree& tree);

#ifdef MEDSEG_EXT_WITH_CUDA
// CUDA, B images (device pointers, (B, N) row-major; mask may be null). work: 4 * B * N int32 of
// device scratch. Asynchronous on `stream`.
// A tile plus its 1-pixel border lives in shared memory (14 bytes a pixel, under 48 KiB).
constexpr int64_t kCudaMaxLocalPixels = 3400;
void tiled_parents_cuda(const void* img, bool is16, const uint8_t* mask, int64_t B, const Geometry& g, bool bright,
                        int maxval, const int32_t tile[3], int32_t* work, int32_t* par, int32_t* area,
                        intptr_t stream);

// VLFeat's diversity rule over the candidate forest (vlfeat_select_cuda.cu; device pointers, int64 node
// ids): candidates `order` grouped by level (level_start, levels + 1 entries, top level first), `up` the
// nearest candidate ancestor (-1: none), `root` the tree root, `area` per node. Writes keep[q] and
// anchor[q] (nearest kept candidate ancestor, -1: none) for every candidate q. Asynchronous on `stream`.
void vlfeat_diversity_cuda(const int64_t* order, const int64_t* level_start, int64_t levels, const int64_t* up,
                           const int64_t* root, const int64_t* area, float min_diversity, bool* keep,
                           int64_t* anchor, intptr_t stream);
#endif

}  // namespace mser
}  // namespace medseg
