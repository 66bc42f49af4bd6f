// Component tree by a linear-time flood (hierarchical queue, Nistér & Stewénius 2008 style, own
// implementation): one LIFO stack of boundary pixels per level, a bitmap of non-empty levels and a
// stack of open components. Much better memory locality than union-find in sorted order (the
// flood stays spatially local), same output: nodes are renumbered to the union-find numbering
// (key, largest own-level pixel index), so both builders return identical arrays.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/errors.h"
#include "mser/mser.h"

namespace medseg {
namespace mser {

template <typename T>
void build_tree_flood(const T* img, const uint8_t* mask, const Geometry& g, bool bright, int maxval, Tree& tree) {
  const int64_t N = g.numel();
  MEDSEG_CHECK(N < (int64_t(1) << 31) - 1, "image: at most 2^31 - 2 pixels per image, got ", N);
  const int32_t n = static_cast<int32_t>(N);
  const int nlev = maxval + 1;
  auto keyof = [&](int32_t p) -> int32_t {
    const int32_t v = static_cast<int32_t>(img[p]);
    return bright ? maxval - v : v;
  };
  // per-level stack capacities and the visit state (0 = not yet, 1..K = next neighbour to look at + 1,
  // 255 = done or outside the mask)
  std::vector<int32_t> lsize(static_cast<size_t>(nlev) + 1, 0);
  std::vector<uint8_t> state(static_cast<size_t>(n), 0);
  int32_t count = 0;
  for (int32_t p = 0; p < n; ++p) {
    if (mask && !mask[p]) {
      state[p] = 255;
      continue;
    }
    const int32_t v = static_cast<int32_t>(img[p]);
    MEDSEG_CHECK(v >= 0 && v <= maxval, "image: value ", v, " outside [0, ", maxval, "]");
    ++lsize[keyof(p)];
    ++count;
  }
  std::vector<int32_t> buf(static_cast<size_t>(count) + static_cast<size_t>(nlev));
  std::vector<int32_t> top(static_cast<size_t>(nlev)), base(static_cast<size_t>(nlev));
  {
    int64_t b = 0;
    for (int k = 0; k < nlev; ++k) {
      base[k] = static_cast<int32_t>(b);
      top[k] = static_cast<int32_t>(b);  // empty when top == base
      b += lsize[k] + 1;
    }
  }
  const int nwords = (nlev + 63) / 64;
  std::vector<uint64_t> nonempty(static_cast<size_t>(nwords), 0);
  auto push = [&](int32_t k, int32_t p) {
    buf[top[k]++] = p;
    nonempty[k >> 6] |= uint64_t(1) << (k & 63);
  };
  auto pop = [&](int32_t k) -> int32_t {
    const int32_t p = buf[--top[k]];
    if (top[k] == base[k]) nonempty[k >> 6] &= ~(uint64_t(1) << (k & 63));
    return p;
  };
  auto next_level = [&](int32_t from) -> int32_t {  // smallest non-empty level >= from, or -1
    if (from >= nlev) return -1;
    int w = from >> 6;
    uint64_t bits = nonempty[w] & (~uint64_t(0) << (from & 63));
    while (true) {
      if (bits) return (w << 6) + __builtin_ctzll(bits);
      if (++w >= nwords) return -1;
      bits = nonempty[w];
    }
  };

  const NbrList nb = neighbour_list(g);
  const int64_t d1 = g.d1, d2 = g.d2, d0 = g.d0, plane = d1 * d2;
  // nodes in creation order; renumbered at the end
  std::vector<int32_t> nkey, npar, nmax;
  std::vector<int32_t> narea;
  nkey.reserve(static_cast<size_t>(count / 4 + 16));
  std::vector<int32_t> pnode(static_cast<size_t>(n), -1);
  // open components: node ids, their keys are nkey[id]
  std::vector<int32_t> cstack;
  cstack.reserve(static_cast<size_t>(nlev) + 2);
  auto new_node = [&](int32_t k) {
    nkey.push_back(k);
    npar.push_back(-1);
    nmax.push_back(-1);
    narea.push_back(0);
    return static_cast<int32_t>(nkey.size()) - 1;
  };
  // close the open components below level k: each becomes a child of the next one (or of a new
  // component at level k when the next one is above k)
  auto raise_to = [&](int32_t k) {
    while (true) {
      const int32_t c = cstack.back();
      if (nkey[c] >= k) return;
      cstack.pop_back();
      int32_t up;
      if (cstack.empty() || nkey[cstack.back()] > k) {
        up = new_node(k);
        cstack.push_back(up);
      } else {
        up = cstack.back();
      }
      npar[c] = up;
      narea[up] += narea[c];
    }
  };

  int32_t scan = 0;
  while (true) {
    while (scan < n && state[scan] != 0) ++scan;
    if (scan >= n) break;
    int32_t p = scan;
    state[p] = 1;
    cstack.clear();
    cstack.push_back(new_node(keyof(p)));
    int32_t k = keyof(p);
    while (true) {
      // explore p from its saved neighbour index
      const int64_t z = p / plane, rem = p - z * plane, y = rem / d2, x = rem - y * d2;
      int j = state[p] - 1;
      bool descended = false;
      for (; j < nb.count; ++j) {
        const int64_t qz = z + nb.dz[j], qy = y + nb.dy[j], qx = x + nb.dx[j];
        if (qz < 0 || qz >= d0 || qy < 0 || qy >= d1 || qx < 0 || qx >= d2) continue;
        const int32_t q = static_cast<int32_t>(p + nb.off[j]);
        if (state[q] != 0) continue;
        state[q] = 1;
        const int32_t kq = keyof(q);
        if (kq < k) {
          state[p] = static_cast<uint8_t>(j + 2);
          push(k, p);
          cstack.push_back(new_node(kq));
          p = q;
          k = kq;
          descended = true;
          break;
        }
        push(kq, q);
      }
      if (descended) continue;
      // p is done: it belongs to the open component at level k (the top one)
      state[p] = 255;
      const int32_t c = cstack.back();
      pnode[p] = c;
      ++narea[c];
      if (p > nmax[c]) nmax[c] = p;
      const int32_t kn = next_level(k);
      if (kn < 0) break;
      p = pop(kn);
      if (kn > k) raise_to(kn);
      k = kn;
    }
    // close everything: the last open component is a root
    while (cstack.size() > 1) {
      const int32_t c = cstack.back();
      cstack.pop_back();
      npar[c] = cstack.back();
      narea[cstack.back()] += narea[c];
    }
  }
  // renumber by (key, largest own-level pixel index)
  const int32_t m = static_cast<int32_t>(nkey.size());
  // two stable passes: by largest own pixel index (unique per node), then counting sort by key
  std::vector<int32_t> by_pixel(static_cast<size_t>(n), -1);
  for (int32_t i = 0; i < m; ++i) by_pixel[nmax[i]] = i;
  std::vector<int32_t> kstart(static_cast<size_t>(nlev) + 1, 0);
  for (int32_t i = 0; i < m; ++i) ++kstart[nkey[i] + 1];
  for (int k = 0; k < nlev; ++k) kstart[k + 1] += kstart[k];
  std::vector<int32_t> order(static_cast<size_t>(m));
  for (int32_t p = 0; p < n; ++p) {
    const int32_t i = by_pixel[p];
    if (i >= 0) order[kstart[nkey[i]]++] = i;
  }
  std::vector<int32_t> rank(static_cast<size_t>(m));
  for (int32_t i = 0; i < m; ++i) rank[order[i]] = i;
  tree.parent.assign(static_cast<size_t>(m), -1);
  tree.level.assign(static_cast<size_t>(m), 0);
  tree.key.assign(static_cast<size_t>(m), 0);
  tree.area.assign(static_cast<size_t>(m), 0);
  for (int32_t i = 0; i < m; ++i) {
    const int32_t r = rank[i];
    tree.parent[r] = npar[i] >= 0 ? rank[npar[i]] : -1;
    tree.key[r] = nkey[i];
    tree.level[r] = bright ? maxval - nkey[i] : nkey[i];
    tree.area[r] = narea[i];
  }
  tree.pixel_node.assign(static_cast<size_t>(n), -1);
  for (int32_t p = 0; p < n; ++p)
    if (pnode[p] >= 0) tree.pixel_node[p] = rank[pnode[p]];
}

template void build_tree_flood<uint8_t>(const uint8_t*, const uint8_t*, const Geometry&, bool, int, Tree&);
template void build_tree_flood<uint16_t>(const uint16_t*, const uint8_t*, const Geometry&, bool, int, Tree&);

}  // namespace mser
}  // namespace medseg
