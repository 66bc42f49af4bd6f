// Component tree by a linear-time flood (hierarchical queue, Nistér & Stewénius 2008 style, own
// implementation): one LIFO stack of boundary pixels per level, a bitmap of non-empty levels and a
// stack of open components. Much better memory locality than union-find in sorted order (the
// flood stays spatially local), same output: nodes are renumbered to the union-find numbering
// (key, largest own-level pixel index), so both builders return identical arrays.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "common/errors.h"
#include "mser/mser.h"

namespace medseg {
namespace mser {

namespace {

// Where the flood's pixels live. The flood works on "indices" of a layout; a layout enumerates the
// valid (unmasked) pixels with their keys, finds a pixel's neighbours and maps an index back to
// the raster pixel index.
//
// RasterLayout: the image itself (index = raster pixel index).
template <typename T>
struct RasterLayout {
  const T* img;
  const uint8_t* mask;
  bool bright;
  int maxval;
  const NbrList* nb;
  uint32_t d0, d1, d2, plane;
  bool is3d;
  int64_t far;  // the far neighbours' offset (a row in 2-D, a plane in 3-D): prefetched ahead
  int32_t off[26];

  RasterLayout(const T* img_, const uint8_t* mask_, const Geometry& g, bool bright_, int maxval_, const NbrList& nb_)
      : img(img_), mask(mask_), bright(bright_), maxval(maxval_), nb(&nb_) {
    d0 = static_cast<uint32_t>(g.d0);
    d1 = static_cast<uint32_t>(g.d1);
    d2 = static_cast<uint32_t>(g.d2);
    plane = d1 * d2;
    is3d = nb_.three_d;
    for (int j = 0; j < nb_.count; ++j) off[j] = static_cast<int32_t>(nb_.off[j]);
    far = is3d ? static_cast<int64_t>(plane) : static_cast<int64_t>(d2);
  }
  int64_t size() const { return static_cast<int64_t>(d0) * plane; }
  int32_t key(int32_t p) const {
    const int32_t v = static_cast<int32_t>(img[p]);
    return bright ? maxval - v : v;
  }
  template <typename F>
  void for_each_valid(F&& f) const {
    const int32_t n = static_cast<int32_t>(size());
    for (int32_t p = 0; p < n; ++p) {
      if (mask && !mask[p]) continue;
      const int32_t v = static_cast<int32_t>(img[p]);
      MEDSEG_CHECK(v >= 0 && v <= maxval, "image: value ", v, " outside [0, ", maxval, "]");
      f(p, bright ? maxval - v : v);
    }
  }
  struct Loc {
    uint32_t z, y, x;
    bool interior;  // every neighbour is inside the image: no bounds tests
  };
  Loc locate(int32_t p) const {
    const uint32_t up = static_cast<uint32_t>(p), z = up / plane, rem = up - z * plane, y = rem / d2, x = rem - y * d2;
    return Loc{z, y, x, x > 0 && x + 1 < d2 && y > 0 && y + 1 < d1 && (!is3d || (z > 0 && z + 1 < d0))};
  }
  int32_t neighbour(const Loc& L, int32_t p, int j) const {  // -1: outside the image
    if (!L.interior) {
      const int64_t qz = int64_t(L.z) + nb->dz[j], qy = int64_t(L.y) + nb->dy[j], qx = int64_t(L.x) + nb->dx[j];
      if (qz < 0 || qz >= d0 || qy < 0 || qy >= d1 || qx < 0 || qx >= d2) return -1;
    }
    return p + off[j];
  }
  int32_t raster(const Loc&, int32_t p) const { return p; }
  void prefetch_around(int64_t q) const {
    __builtin_prefetch(img + q + far);
    __builtin_prefetch(img + q - far);
  }
};

// BrickLayout (3-D volumes): the keys copied into 8×8×8 bricks, so that a voxel's neighbours in
// z and y are 64 and 8 entries away instead of a plane and a row. In raster order the 3-D flood
// waits on a cache miss for nearly every z-neighbour (256³ uint16: planes 128 KiB apart); in
// bricks most neighbours share a brick that is already in cache. The volume is padded to whole
// bricks; padding voxels are never valid.
template <typename T>
struct BrickLayout {
  const NbrList* nb;
  uint32_t d0, d1, d2, nbx, nby, nbz;
  std::vector<T> keys;  // key (already polarity-mapped) per brick index
  const uint8_t* mask;
  int32_t inner_off[26];

  BrickLayout(const T* img, const uint8_t* mask_, const Geometry& g, bool bright, int maxval, const NbrList& nb_)
      : nb(&nb_), mask(mask_) {
    d0 = static_cast<uint32_t>(g.d0);
    d1 = static_cast<uint32_t>(g.d1);
    d2 = static_cast<uint32_t>(g.d2);
    nbz = (d0 + 7) / 8;
    nby = (d1 + 7) / 8;
    nbx = (d2 + 7) / 8;
    for (int j = 0; j < nb_.count; ++j) inner_off[j] = nb_.dz[j] * 64 + nb_.dy[j] * 8 + nb_.dx[j];
    keys.assign(static_cast<size_t>(size()), 0);
    for (uint32_t z = 0; z < d0; ++z)
      for (uint32_t y = 0; y < d1; ++y) {
        const int64_t r = (static_cast<int64_t>(z) * d1 + y) * d2;
        for (uint32_t x = 0; x < d2; ++x) {
          if (mask && !mask[r + x]) continue;  // masked voxels are never read (checked as in the raster flood)
          const int32_t v = static_cast<int32_t>(img[r + x]);
          MEDSEG_CHECK(v >= 0 && v <= maxval, "image: value ", v, " outside [0, ", maxval, "]");
          keys[static_cast<size_t>(index(z, y, x))] = static_cast<T>(bright ? maxval - v : v);
        }
      }
  }
  static int64_t padded_size(const Geometry& g) {
    return ((g.d0 + 7) / 8) * ((g.d1 + 7) / 8) * ((g.d2 + 7) / 8) * 512;
  }
  int64_t size() const { return static_cast<int64_t>(nbz) * nby * nbx * 512; }
  int32_t index(uint32_t z, uint32_t y, uint32_t x) const {
    const uint32_t brick = ((z >> 3) * nby + (y >> 3)) * nbx + (x >> 3);
    return static_cast<int32_t>((brick << 9) | ((z & 7) << 6) | ((y & 7) << 3) | (x & 7));
  }
  int32_t key(int32_t i) const { return static_cast<int32_t>(keys[static_cast<size_t>(i)]); }
  template <typename F>
  void for_each_valid(F&& f) const {
    for (uint32_t z = 0; z < d0; ++z)
      for (uint32_t y = 0; y < d1; ++y) {
        const int64_t r = (static_cast<int64_t>(z) * d1 + y) * d2;
        for (uint32_t x = 0; x < d2; ++x) {
          if (mask && !mask[r + x]) continue;
          const int32_t i = index(z, y, x);
          f(i, key(i));
        }
      }
  }
  struct Loc {
    uint32_t z, y, x;
    bool interior;  // every neighbour is in the same brick and inside the volume
  };
  Loc locate(int32_t p) const {
    const uint32_t up = static_cast<uint32_t>(p), brick = up >> 9, iz = (up >> 6) & 7, iy = (up >> 3) & 7,
                   ix = up & 7, plane = nby * nbx, bz = brick / plane, rem = brick - bz * plane, by = rem / nbx,
                   bx = rem - by * nbx;
    const uint32_t z = bz * 8 + iz, y = by * 8 + iy, x = bx * 8 + ix;
    const bool inner = iz - 1 < 6 && iy - 1 < 6 && ix - 1 < 6;  // 1..6 on every axis (unsigned wrap for 0)
    return Loc{z, y, x, inner && z + 1 < d0 && y + 1 < d1 && x + 1 < d2};
  }
  int32_t neighbour(const Loc& L, int32_t p, int j) const {  // -1: outside the volume
    if (L.interior) return p + inner_off[j];
    const int64_t qz = int64_t(L.z) + nb->dz[j], qy = int64_t(L.y) + nb->dy[j], qx = int64_t(L.x) + nb->dx[j];
    if (qz < 0 || qz >= d0 || qy < 0 || qy >= d1 || qx < 0 || qx >= d2) return -1;
    return index(static_cast<uint32_t>(qz), static_cast<uint32_t>(qy), static_cast<uint32_t>(qx));
  }
  int32_t raster(const Loc& L, int32_t) const {
    return static_cast<int32_t>((static_cast<int64_t>(L.z) * d1 + L.y) * d2 + L.x);
  }
  void prefetch_around(int64_t q) const {
    __builtin_prefetch(keys.data() + q + 64);
    __builtin_prefetch(keys.data() + q - 64);
  }
};

// The flood keeps one bit per index ("reached") instead of a state byte, and a waiting pixel
// carries the neighbour index to resume at in its stack entry (index << 5 | neighbour, 26 < 32), so
// a pop reads no per-pixel state: a bitmap of n/8 bytes stays in cache where n bytes did not
// (256³: 2 MiB against 16 MiB). Entries are 32-bit below 2^27 indices, else 64-bit.
template <typename HT, typename Layout>
void flood_nodes(const Layout& lay, int maxval, int32_t n_raster, std::vector<int32_t>& nkey,
                 std::vector<int32_t>& npar, std::vector<int32_t>& nmax, std::vector<int32_t>& narea,
                 std::vector<int32_t>& pnode) {
  const int nlev = maxval + 1;
  const int64_t nidx = lay.size();
  const int64_t nwords_pix = (nidx + 63) / 64;
  // every index starts reached (padding, masked pixels) except the valid pixels
  std::vector<uint64_t> reached(static_cast<size_t>(nwords_pix) + 1, ~uint64_t(0));
  uint64_t* vis = reached.data();
  std::vector<int32_t> lsize(static_cast<size_t>(nlev) + 1, 0);
  int64_t count = 0;
  lay.for_each_valid([&](int32_t i, int32_t k) {
    vis[i >> 6] &= ~(uint64_t(1) << (i & 63));
    ++lsize[k];
    ++count;
  });
  // one LIFO stack per level in one buffer; a level never holds more waiting pixels than it has
  std::vector<HT> buf(static_cast<size_t>(count) + static_cast<size_t>(nlev));
  std::vector<int64_t> top(static_cast<size_t>(nlev)), base(static_cast<size_t>(nlev));
  {
    int64_t b = 0;
    for (int k = 0; k < nlev; ++k) {
      base[k] = b;
      top[k] = b;  // empty when top == base
      b += lsize[k] + 1;
    }
  }
  // non-empty levels: a bitmap and a summary bit per word (16-bit keys: 1024 words, 16 summary words)
  const int nwords = (nlev + 63) / 64, nsum = (nwords + 63) / 64;
  std::vector<uint64_t> nonempty(static_cast<size_t>(nwords), 0), summary(static_cast<size_t>(nsum), 0);
  auto push = [&](int32_t k, HT e) {
    buf[static_cast<size_t>(top[k]++)] = e;
    nonempty[k >> 6] |= uint64_t(1) << (k & 63);
    summary[k >> 12] |= uint64_t(1) << ((k >> 6) & 63);
  };
  auto pop = [&](int32_t k) -> HT {
    const HT e = buf[static_cast<size_t>(--top[k])];
    if (top[k] == base[k]) {
      uint64_t& w = nonempty[k >> 6];
      w &= ~(uint64_t(1) << (k & 63));
      if (!w) summary[k >> 12] &= ~(uint64_t(1) << ((k >> 6) & 63));
    }
    return e;
  };
  auto next_level = [&](int32_t from) -> int32_t {  // smallest non-empty level >= from, or -1
    if (from >= nlev) return -1;
    int w = from >> 6;
    const uint64_t bits = nonempty[w] & (~uint64_t(0) << (from & 63));
    if (bits) return (w << 6) + __builtin_ctzll(bits);
    ++w;  // the next non-empty word, through the summary
    for (int s = w >> 6; s < nsum; ++s) {
      uint64_t sb = summary[s];
      if (s == (w >> 6)) sb &= (w & 63) ? (~uint64_t(0) << (w & 63)) : ~uint64_t(0);
      if (sb) {
        const int wn = (s << 6) + __builtin_ctzll(sb);
        return (wn << 6) + __builtin_ctzll(nonempty[wn]);
      }
    }
    return -1;
  };

  const int nbc = lay.nb->count;
  nkey.reserve(static_cast<size_t>(count / 4 + 16));
  pnode.assign(static_cast<size_t>(n_raster), -1);
  std::vector<int32_t> cstack;  // open components (node ids, keys nkey[id])
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

  int64_t scan = 0;  // bitmap word of the next unreached pixel (several seeds only when a mask splits the image)
  while (true) {
    while (scan < nwords_pix && vis[scan] == ~uint64_t(0)) ++scan;
    if (scan >= nwords_pix) break;
    int32_t p = static_cast<int32_t>(scan * 64 + __builtin_ctzll(~vis[scan]));
    vis[p >> 6] |= uint64_t(1) << (p & 63);
    cstack.clear();
    int32_t k = lay.key(p);
    cstack.push_back(new_node(k));
    int j = 0;
    while (true) {
      // explore p from neighbour j
      const auto loc = lay.locate(p);
      bool descended = false;
      for (; j < nbc; ++j) {
        const int32_t q = lay.neighbour(loc, p, j);
        if (q < 0) continue;
        uint64_t& word = vis[q >> 6];
        const uint64_t bit = uint64_t(1) << (q & 63);
        if (word & bit) continue;
        word |= bit;
        const int32_t kq = lay.key(q);
        if (kq < k) {  // a lower neighbour is entered at once; p waits to resume at j + 1
          push(k, (static_cast<HT>(p) << 5) | static_cast<HT>(j + 1));
          cstack.push_back(new_node(kq));
          p = q;
          k = kq;
          j = 0;
          descended = true;
          break;
        }
        push(kq, static_cast<HT>(q) << 5);
      }
      if (descended) continue;
      // p is done: it belongs to the open component at level k (the top one)
      const int32_t c = cstack.back(), r = lay.raster(loc, p);
      pnode[r] = c;
      ++narea[c];
      if (r > nmax[c]) nmax[c] = r;
      const int32_t kn = next_level(k);
      if (kn < 0) break;
      const HT e = pop(kn);
      p = static_cast<int32_t>(e >> 5);
      j = static_cast<int>(e & 31);
      // look ahead: the next pixels this level will hand out (LIFO) get their far neighbours fetched
      for (int64_t t = top[kn] - 1; t > base[kn] && t >= top[kn] - 3; --t)
        lay.prefetch_around(static_cast<int64_t>(buf[static_cast<size_t>(t)] >> 5));
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
}

}  // namespace

template <typename T>
void build_tree_flood(const T* img, const uint8_t* mask, const Geometry& g, bool bright, int maxval, Tree& tree) {
  const int64_t N = g.numel();
  MEDSEG_CHECK(N < (int64_t(1) << 31) - 1, "image: at most 2^31 - 2 pixels per image, got ", N);
  const int32_t n = static_cast<int32_t>(N);
  const int nlev = maxval + 1;
  // nodes in creation order; renumbered at the end
  std::vector<int32_t> nkey, npar, nmax, narea, pnode;
  const NbrList nb = neighbour_list(g);
  // volumes from 2^18 voxels on (64³) run in bricks; smaller ones stay in cache either way
  const int64_t padded = BrickLayout<T>::padded_size(g);
  const bool bricks = nb.three_d && padded < (int64_t(1) << 31) - 1 && (N >= (int64_t(1) << 18) || bricks_forced());
  if (bricks) {
    const BrickLayout<T> lay(img, mask, g, bright, maxval, nb);
    if (padded < (int64_t(1) << 27) && !wide_entries_forced()) {
      flood_nodes<uint32_t>(lay, maxval, n, nkey, npar, nmax, narea, pnode);
    } else {
      flood_nodes<uint64_t>(lay, maxval, n, nkey, npar, nmax, narea, pnode);
    }
  } else {
    const RasterLayout<T> lay(img, mask, g, bright, maxval, nb);
    if (N < (int64_t(1) << 27) && !wide_entries_forced()) {
      flood_nodes<uint32_t>(lay, maxval, n, nkey, npar, nmax, narea, pnode);
    } else {
      flood_nodes<uint64_t>(lay, maxval, n, nkey, npar, nmax, narea, pnode);
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
