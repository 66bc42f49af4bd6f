// Component tree by union-find over pixels sorted with a counting sort (linear time for 8/16-bit),
// then level compression (Berger et al. 2007 / Najman & Couprie 2006 style, own implementation).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/errors.h"
#include "mser/mser.h"

namespace medseg {
namespace mser {

namespace {

inline int32_t find_root(std::vector<int32_t>& zpar, int32_t x) {
  int32_t r = x;
  while (zpar[r] != r) r = zpar[r];
  while (zpar[x] != r) {
    const int32_t nx = zpar[x];
    zpar[x] = r;
    x = nx;
  }
  return r;
}

}  // namespace

template <typename T>
void build_tree(const T* img, const uint8_t* mask, const Geometry& g, bool bright, int maxval, Tree& tree) {
  const int64_t N = g.numel();
  MEDSEG_CHECK(N < (int64_t(1) << 31) - 1, "image: at most 2^31 - 2 pixels per image, got ", N);
  const int32_t n = static_cast<int32_t>(N);
  const int nlev = maxval + 1;
  auto keyof = [&](int32_t p) -> int32_t {
    const int32_t v = static_cast<int32_t>(img[p]);
    return bright ? maxval - v : v;
  };
  // counting sort of the pixels inside the mask by key (stable in the pixel index)
  std::vector<int32_t> start(static_cast<size_t>(nlev) + 1, 0);
  int32_t count = 0;
  for (int32_t p = 0; p < n; ++p) {
    if (mask && !mask[p]) continue;
    const int32_t v = static_cast<int32_t>(img[p]);
    MEDSEG_CHECK(v >= 0 && v <= maxval, "image: value ", v, " outside [0, ", maxval, "]");
    ++start[keyof(p) + 1];
    ++count;
  }
  for (int k = 0; k < nlev; ++k) start[k + 1] += start[k];
  std::vector<int32_t> order(static_cast<size_t>(count));
  {
    std::vector<int32_t> pos(start.begin(), start.end() - 1);
    for (int32_t p = 0; p < n; ++p) {
      if (mask && !mask[p]) continue;
      order[pos[keyof(p)]++] = p;
    }
  }
  const NbrList nb = neighbour_list(g);
  std::vector<int32_t> parent(static_cast<size_t>(n), -1), zpar(static_cast<size_t>(n), -1);
  auto join = [&](int32_t p, int32_t q) {
    if (zpar[q] < 0) return;  // not processed yet or outside the mask
    const int32_t r = find_root(zpar, q);
    if (r != p) {
      parent[r] = p;
      zpar[r] = p;
    }
  };
  if (g.d0 == 1 && (g.connectivity == 4 || g.connectivity == 8)) {
    // 2-D fast path: 32-bit coordinates, unrolled neighbours
    const int32_t W = static_cast<int32_t>(g.d2), H = static_cast<int32_t>(g.d1);
    const bool eight = g.connectivity == 8;
    for (int32_t i = 0; i < count; ++i) {
      const int32_t p = order[i];
      parent[p] = p;
      zpar[p] = p;
      const int32_t y = p / W, x = p - y * W;
      const bool l = x > 0, r = x < W - 1, u = y > 0, d = y < H - 1;
      if (l) join(p, p - 1);
      if (r) join(p, p + 1);
      if (u) join(p, p - W);
      if (d) join(p, p + W);
      if (eight) {
        if (u && l) join(p, p - W - 1);
        if (u && r) join(p, p - W + 1);
        if (d && l) join(p, p + W - 1);
        if (d && r) join(p, p + W + 1);
      }
    }
  } else if (g.connectivity == 6) {
    // 3-D face neighbours: 32-bit coordinates, unrolled
    const int32_t W = static_cast<int32_t>(g.d2), H = static_cast<int32_t>(g.d1), D = static_cast<int32_t>(g.d0);
    const int32_t P = W * H;
    for (int32_t i = 0; i < count; ++i) {
      const int32_t p = order[i];
      parent[p] = p;
      zpar[p] = p;
      const int32_t z = p / P, rem = p - z * P, y = rem / W, x = rem - y * W;
      if (x > 0) join(p, p - 1);
      if (x < W - 1) join(p, p + 1);
      if (y > 0) join(p, p - W);
      if (y < H - 1) join(p, p + W);
      if (z > 0) join(p, p - P);
      if (z < D - 1) join(p, p + P);
    }
  } else {
    const int64_t d1 = g.d1, d2 = g.d2, d0 = g.d0, plane = d1 * d2;
    for (int32_t i = 0; i < count; ++i) {
      const int32_t p = order[i];
      parent[p] = p;
      zpar[p] = p;
      const int64_t z = p / plane, rem = p - z * plane, y = rem / d2, x = rem - y * d2;
      for (int k = 0; k < nb.count; ++k) {
        const int64_t qz = z + nb.dz[k], qy = y + nb.dy[k], qx = x + nb.dx[k];
        if (qz < 0 || qz >= d0 || qy < 0 || qy >= d1 || qx < 0 || qx >= d2) continue;
        join(p, static_cast<int32_t>(qz * plane + qy * d2 + qx));
      }
    }
  }
  // level compression: every pixel points to the canonical pixel of its node
  auto pkey = [&](int32_t p) { return keyof(p); };
  for (int32_t i = count - 1; i >= 0; --i) {
    const int32_t p = order[i];
    const int32_t q = parent[p];
    if (pkey(parent[q]) == pkey(q)) parent[p] = parent[q];
  }
  // nodes = canonical pixels, numbered in processing order (children before parents)
  std::vector<int32_t>& node = zpar;  // reuse: pixel -> node id of canonical pixels
  int32_t m = 0;
  for (int32_t i = 0; i < count; ++i) {
    const int32_t p = order[i];
    const bool canonical = parent[p] == p || pkey(parent[p]) != pkey(p);
    node[p] = canonical ? m++ : -1;
  }
  tree.parent.assign(static_cast<size_t>(m), -1);
  tree.level.assign(static_cast<size_t>(m), 0);
  tree.key.assign(static_cast<size_t>(m), 0);
  tree.area.assign(static_cast<size_t>(m), 0);
  tree.pixel_node.assign(static_cast<size_t>(n), -1);
  for (int32_t i = 0; i < count; ++i) {
    const int32_t p = order[i];
    const int32_t id = node[p] >= 0 ? node[p] : node[parent[p]];
    tree.pixel_node[p] = id;
    tree.area[id] += 1;
    if (node[p] >= 0) {
      tree.level[id] = static_cast<int32_t>(img[p]);
      tree.key[id] = pkey(p);
      tree.parent[id] = parent[p] == p ? -1 : node[parent[p]];
    }
  }
  for (int32_t id = 0; id < m; ++id) {
    const int32_t par = tree.parent[id];
    if (par >= 0) tree.area[par] += tree.area[id];
  }
}

template void build_tree<uint8_t>(const uint8_t*, const uint8_t*, const Geometry&, bool, int, Tree&);
template void build_tree<uint16_t>(const uint16_t*, const uint8_t*, const Geometry&, bool, int, Tree&);

}  // namespace mser
}  // namespace medseg
