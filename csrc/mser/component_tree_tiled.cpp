// Multi-core CPU driver of the tiled component tree (tiled_tree.h): tiles in parallel, then the
// merge rounds (the tasks of a round in parallel), then the canonicalisation. The result is the
// same tree as build_tree / build_tree_flood (identical node numbering and arrays).
#include <algorithm>
#include <cstdint>
#include <exception>
#include <limits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/errors.h"
#include "mser/mser_tiled.h"
#include "mser/tiled_tree.h"

namespace medseg {
namespace mser {

namespace {

constexpr int32_t kTiledParallelMinPixels = 1 << 15;

int resolve_threads(int num_threads) {
#ifdef _OPENMP
  return num_threads > 0 ? num_threads : omp_get_max_threads();
#else
  (void)num_threads;
  return 1;
#endif
}

}  // namespace

tiled::TileGrid tiled_grid(const Geometry& g, const int32_t tile[3]) {
  MEDSEG_CHECK(g.numel() < (int64_t(1) << 31) - 1, "image: at most 2^31 - 2 pixels per image, got ", g.numel());
  for (int a = 0; a < 3; ++a) MEDSEG_CHECK(tile[a] >= 1, "tile: sizes must be >= 1, got ", tile[a]);
  return tiled::make_grid(static_cast<int32_t>(g.d0), static_cast<int32_t>(g.d1), static_cast<int32_t>(g.d2), tile);
}

template <typename T>
void tiled_parents(const T* img, const uint8_t* mask, const Geometry& g, bool bright, int maxval,
                   const int32_t tile[3], int num_threads, int32_t* out_par, int32_t* out_area) {
  const tiled::TileGrid grid = tiled_grid(g, tile);
  const int32_t n = static_cast<int32_t>(g.numel());
  const int64_t tile_px = static_cast<int64_t>(grid.tile[0] + 2) * (grid.tile[1] + 2) * (grid.tile[2] + 2);
  MEDSEG_CHECK(tile_px < (int64_t(1) << 31) - 1, "tile: at most 2^31 - 2 pixels per tile");
  if (maxval < static_cast<int>(std::numeric_limits<T>::max())) {
    for (int32_t p = 0; p < n; ++p) {
      if (mask && !mask[p]) continue;
      const int32_t v = static_cast<int32_t>(img[p]);
      MEDSEG_CHECK(v <= maxval, "image: value ", v, " outside [0, ", maxval, "]");
    }
  }
  // small images stay on one thread: a parallel region costs more than their whole tree, worst of
  // all on an oversubscribed machine
  const int threads = n >= kTiledParallelMinPixels ? resolve_threads(num_threads) : 1;
  const tiled::Keys<T> key{img, maxval, bright};
  const tiled::Offsets nb = tiled::offsets_of(g.connectivity);
  const int key_bits = maxval < 256 ? 8 : 16;
  std::vector<int32_t> par(static_cast<size_t>(n)), area(static_cast<size_t>(n));

  // (i) local trees, one tile per task, scratch per thread (padded layout: see tiled::Local)
  const int64_t ntiles = grid.tiles();
  const tiled::Local L0 = tiled::local_layout(grid.tile_box(0), nb);  // the largest tile
#pragma omp parallel num_threads(threads) if (ntiles > 1 && threads > 1)
  {
    const size_t cap = static_cast<size_t>(L0.numel);
    std::vector<int32_t> lkey(cap), lglob(cap), order(cap), tmp(cap), lpar(cap), lzpar(cap), larea(cap), cnt(256);
#pragma omp for schedule(dynamic, 4)
    for (int64_t t = 0; t < ntiles; ++t) {
      const tiled::Box box = grid.tile_box(t);
      const tiled::Local L = tiled::local_layout(box, nb);
      std::fill(lkey.begin(), lkey.begin() + L.numel, -1);
      for (int32_t z = 0; z < box.size(0); ++z)
        for (int32_t y = 0; y < box.size(1); ++y) {
          const int32_t row = ((box.lo[0] + z) * grid.dim[1] + box.lo[1] + y) * grid.dim[2] + box.lo[2];
          const int32_t l0 = tiled::local_index(L, z, y, 0);
          for (int32_t x = 0; x < box.size(2); ++x) {
            const int32_t p = row + x;
            lkey[l0 + x] = mask && !mask[p] ? -1 : key(p);
            lglob[l0 + x] = p;
          }
        }
      tiled::tile_tree<int32_t>(lkey.data(), L, key_bits, order.data(), tmp.data(), cnt.data(), lpar.data(),
                                lzpar.data(), larea.data());
      for (int32_t z = 0; z < box.size(0); ++z)
        for (int32_t y = 0; y < box.size(1); ++y) {
          const int32_t l0 = tiled::local_index(L, z, y, 0);
          for (int32_t x = 0; x < box.size(2); ++x) {
            const int32_t l = l0 + x, p = lglob[l];
            par[p] = lpar[l] < 0 ? -1 : lglob[lpar[l]];
            area[p] = larea[l];
          }
        }
    }
  }

  // (ii) merge rounds; the tasks of one round own disjoint groups
  tiled::Round rounds[3 * 32];
  const int nrounds = tiled::make_rounds(grid, rounds);
  for (int r = 0; r < nrounds; ++r) {
    const tiled::Round rd = rounds[r];
    const int64_t tasks = tiled::round_tasks(grid, rd);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (tasks > 1 && threads > 1)
    for (int64_t t = 0; t < tasks; ++t) {
      int32_t split = 0;
      const tiled::Box box = tiled::round_box(grid, rd, t, split);
      tiled::merge_border(par.data(), area.data(), key, grid, box, rd.axis, split, nb);
    }
  }

  // (iii) canonicalisation: level roots, the max-reduction (serial: it is one streaming pass),
  // then the canonical parent form
  std::vector<int32_t> lr(static_cast<size_t>(n)), canon(static_cast<size_t>(n), -1);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int32_t p = 0; p < n; ++p) lr[p] = tiled::level_root_of(par.data(), key, p);
  for (int32_t p = 0; p < n; ++p)
    if (lr[p] >= 0) canon[lr[p]] = p;  // ascending p: the last write is the maximum
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int32_t p = 0; p < n; ++p) tiled::finish_pixel(par.data(), lr.data(), canon.data(), area.data(), p, out_par, out_area);
}

template <typename T>
void tree_from_parents(const T* img, const Geometry& g, bool bright, int maxval, const int32_t* cpar,
                       const int32_t* carea, Tree& tree, int num_threads) {
  const int32_t n = static_cast<int32_t>(g.numel());
  const int threads = n >= kTiledParallelMinPixels ? resolve_threads(num_threads) : 1;
  const tiled::Keys<T> key{img, maxval, bright};
  auto canonical = [&](int32_t p) { return carea[p] > 0; };  // every node has area >= 1 at its canonical pixel
  // nodes = canonical pixels by (key, pixel index): a stable counting sort by key, parallel over fixed
  // pixel chunks (histogram per chunk; chunk c's slots of key k follow those of chunks < c, so the
  // numbering is the serial one whatever the thread count)
  const int nlev = maxval + 1;
  const int nchunk = threads;
  const int32_t per = (n + nchunk - 1) / nchunk;
  std::vector<int32_t> cnt(static_cast<size_t>(nchunk) * nlev, 0);
#pragma omp parallel for schedule(static, 1) num_threads(threads) if (threads > 1)
  for (int c = 0; c < nchunk; ++c) {
    int32_t* h = cnt.data() + static_cast<size_t>(c) * nlev;
    const int32_t lo = c * per, hi = std::min(n, lo + per);
    for (int32_t p = lo; p < hi; ++p)
      if (canonical(p)) ++h[key(p)];
  }
  int32_t m = 0;
  for (int k = 0; k < nlev; ++k)
    for (int c = 0; c < nchunk; ++c) {  // exclusive prefix in (key, chunk) order
      int32_t& v = cnt[static_cast<size_t>(c) * nlev + k];
      const int32_t here = v;
      v = m;
      m += here;
    }
  std::vector<int32_t> node_of(static_cast<size_t>(n), -1), pix(static_cast<size_t>(m));
#pragma omp parallel for schedule(static, 1) num_threads(threads) if (threads > 1)
  for (int c = 0; c < nchunk; ++c) {
    int32_t* next = cnt.data() + static_cast<size_t>(c) * nlev;
    const int32_t lo = c * per, hi = std::min(n, lo + per);
    for (int32_t p = lo; p < hi; ++p)
      if (canonical(p)) {
        const int32_t id = next[key(p)]++;
        node_of[p] = id;
        pix[id] = p;
      }
  }
  tree.parent.assign(static_cast<size_t>(m), -1);
  tree.level.assign(static_cast<size_t>(m), 0);
  tree.key.assign(static_cast<size_t>(m), 0);
  tree.area.assign(static_cast<size_t>(m), 0);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int32_t id = 0; id < m; ++id) {
    const int32_t p = pix[id];
    tree.parent[id] = cpar[p] == p ? -1 : node_of[cpar[p]];
    tree.level[id] = static_cast<int32_t>(img[p]);
    tree.key[id] = key(p);
    tree.area[id] = carea[p];
  }
  tree.pixel_node.assign(static_cast<size_t>(n), -1);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int32_t p = 0; p < n; ++p)
    if (cpar[p] >= 0) tree.pixel_node[p] = node_of[canonical(p) ? p : cpar[p]];
}

template <typename T>
void build_tree_tiled(const T* img, const uint8_t* mask, const Geometry& g, bool bright, int maxval,
                      const int32_t tile[3], int num_threads, Tree& tree) {
  const size_t n = static_cast<size_t>(g.numel());
  std::vector<int32_t> cpar(n), carea(n);
  tiled_parents<T>(img, mask, g, bright, maxval, tile, num_threads, cpar.data(), carea.data());
  tree_from_parents<T>(img, g, bright, maxval, cpar.data(), carea.data(), tree, num_threads);
}

template void tiled_parents<uint8_t>(const uint8_t*, const uint8_t*, const Geometry&, bool, int, const int32_t*, int,
                                     int32_t*, int32_t*);
template void tiled_parents<uint16_t>(const uint16_t*, const uint8_t*, const Geometry&, bool, int, const int32_t*,
                                      int, int32_t*, int32_t*);
template void tree_from_parents<uint8_t>(const uint8_t*, const Geometry&, bool, int, const int32_t*, const int32_t*,
                                         Tree&, int);
template void tree_from_parents<uint16_t>(const uint16_t*, const Geometry&, bool, int, const int32_t*,
                                          const int32_t*, Tree&, int);
template void build_tree_tiled<uint8_t>(const uint8_t*, const uint8_t*, const Geometry&, bool, int, const int32_t*,
                                        int, Tree&);
template void build_tree_tiled<uint16_t>(const uint16_t*, const uint8_t*, const Geometry&, bool, int,
                                         const int32_t*, int, Tree&);

}  // namespace mser
}  // namespace medseg
