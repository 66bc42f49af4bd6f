// Tiled component tree (max-/min-tree), written once for a multi-core CPU driver
// (component_tree_tiled.cpp) and a CUDA driver (tiled_tree_cuda.cu). Own implementation of the
// classic scheme (Wilkinson et al. 2008 concurrent merge; Blin et al. 2022 per-tile GPU trees):
//   (i)   a local union-find tree per tile, pixels counting-sorted by key inside the tile;
//   (ii)  merge rounds: adjacent tile groups are paired along one axis (then the next), group size
//         doubling each round; every pair is merged by connecting each pixel pair across the shared
//         border, walking both ancestor chains in key order. Pairs of one round touch disjoint
//         groups, so a round needs no atomics; areas are carried along the merged chains;
//   (iii) canonicalisation: every pixel points to the canonical pixel of its node (the largest
//         pixel index among the node's own-level pixels, as the serial union-find in
//         component_tree.cpp picks), canonical pixels to the canonical pixel of their parent node;
//   (iv)  the area of every node (at its canonical pixel).
// Keys as in mser.h: key = I (min-tree) or maxval - I (max-tree); keys grow towards the root.
// Working arrays are global over the image (flat C-order index p): par[p] (-1 outside the mask,
// p itself at a root), area[p] (meaningful at level roots). All functions are plain sequential
// code, callable from a host thread or from one device thread.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define MSER_HD __host__ __device__ inline
#else
#define MSER_HD inline
#endif

namespace medseg {
namespace mser {
namespace tiled {

// Neighbour offsets of a connectivity (4/8 in the plane, 6/26 in 3-D), (z, y, x) raster order.
struct Offsets {
  int count = 0;
  int8_t dz[26], dy[26], dx[26];
};

MSER_HD Offsets offsets_of(int connectivity) {
  Offsets o;
  const bool is3d = connectivity == 6 || connectivity == 26;
  const bool faces = connectivity == 4 || connectivity == 6;
  for (int z = -1; z <= 1; ++z)
    for (int y = -1; y <= 1; ++y)
      for (int x = -1; x <= 1; ++x) {
        const int nz = (z != 0) + (y != 0) + (x != 0);
        if (nz == 0 || (!is3d && z != 0) || (faces && nz != 1)) continue;
        o.dz[o.count] = static_cast<int8_t>(z);
        o.dy[o.count] = static_cast<int8_t>(y);
        o.dx[o.count] = static_cast<int8_t>(x);
        ++o.count;
      }
  return o;
}

// key(p) of one image (the mask is not read here: outside pixels have par[p] < 0).
template <typename T>
struct Keys {
  const T* img;
  int32_t maxval;
  bool bright;
  MSER_HD int32_t operator()(int32_t p) const {
    const int32_t v = static_cast<int32_t>(img[p]);
    return bright ? maxval - v : v;
  }
};

// Half-open box [lo, hi) per axis, axis 0 = z, 1 = y, 2 = x.
struct Box {
  int32_t lo[3], hi[3];
  MSER_HD int32_t size(int a) const { return hi[a] - lo[a]; }
  MSER_HD int32_t numel() const { return size(0) * size(1) * size(2); }
};

// The image cut into tiles of tile[a] pixels per axis (the last tile of an axis may be smaller).
struct TileGrid {
  int32_t dim[3];
  int32_t tile[3];
  int32_t nt[3];
  MSER_HD int64_t tiles() const { return static_cast<int64_t>(nt[0]) * nt[1] * nt[2]; }
  MSER_HD Box tile_box(int64_t t) const {
    Box b;
    const int32_t c[3] = {static_cast<int32_t>(t / (static_cast<int64_t>(nt[1]) * nt[2])),
                          static_cast<int32_t>((t / nt[2]) % nt[1]), static_cast<int32_t>(t % nt[2])};
    for (int a = 0; a < 3; ++a) {
      b.lo[a] = c[a] * tile[a];
      b.hi[a] = b.lo[a] + tile[a] < dim[a] ? b.lo[a] + tile[a] : dim[a];
    }
    return b;
  }
};

MSER_HD TileGrid make_grid(int32_t d0, int32_t d1, int32_t d2, const int32_t tile[3]) {
  TileGrid g;
  g.dim[0] = d0;
  g.dim[1] = d1;
  g.dim[2] = d2;
  for (int a = 0; a < 3; ++a) {
    g.tile[a] = tile[a] < g.dim[a] ? tile[a] : g.dim[a];
    g.nt[a] = (g.dim[a] + g.tile[a] - 1) / g.tile[a];
  }
  return g;
}

// One merge round: groups of gs[b] tiles along every axis b; along `axis` the groups 2j and 2j+1
// (gs[axis] tiles each) are merged. Axes are merged fully one after the other (x, then y, then z),
// so a group spans the whole image along the axes already done and one tile along those not yet.
struct Round {
  int axis;
  int32_t gs[3];
};

MSER_HD int32_t ceil_div(int32_t a, int32_t b) { return (a + b - 1) / b; }

// Rounds in execution order; returns their count (at most 3 * 31).
MSER_HD int make_rounds(const TileGrid& g, Round* out) {
  int n = 0;
  int32_t gs[3] = {1, 1, 1};
  for (int axis = 2; axis >= 0; --axis) {
    for (int32_t s = 1; s < g.nt[axis]; s *= 2) {
      Round r;
      r.axis = axis;
      for (int a = 0; a < 3; ++a) r.gs[a] = gs[a];
      r.gs[axis] = s;
      out[n++] = r;
    }
    gs[axis] = g.nt[axis];
  }
  return n;
}

// Independent merge tasks of a round (one per pair of groups).
MSER_HD int64_t round_tasks(const TileGrid& g, const Round& r) {
  int64_t n = 1;
  for (int a = 0; a < 3; ++a) {
    const int32_t groups = ceil_div(g.nt[a], r.gs[a]);
    n *= a == r.axis ? groups / 2 : groups;
  }
  return n;
}

// Box of the union of the two groups of task t, and the first coordinate of the second group
// along the round's axis.
MSER_HD Box round_box(const TileGrid& g, const Round& r, int64_t t, int32_t& split) {
  Box b;
  for (int a = 2; a >= 0; --a) {
    const int32_t groups = ceil_div(g.nt[a], r.gs[a]);
    const int32_t n = a == r.axis ? groups / 2 : groups;
    const int32_t i = static_cast<int32_t>(t % n);
    t /= n;
    const int32_t span = r.gs[a] * g.tile[a];  // pixels per group along a
    if (a == r.axis) {
      b.lo[a] = 2 * i * span;
      split = b.lo[a] + span;
      b.hi[a] = split + span < g.dim[a] ? split + span : g.dim[a];
    } else {
      b.lo[a] = i * span;
      b.hi[a] = b.lo[a] + span < g.dim[a] ? b.lo[a] + span : g.dim[a];
    }
  }
  return b;
}

// ---------------------------------------------------------------------------------------------
// (i) Local tree of one tile. Local layout: the tile box padded by one pixel on every axis the
// connectivity reaches along; padding pixels have key -1 (as pixels outside the mask), so the
// union-find needs neither coordinates nor bounds checks. Local indices have type I (signed;
// int16 is enough for padded tiles up to 32767 pixels).
struct Local {
  int32_t pad[3];   // 0 or 1 per axis
  int32_t dim[3];   // padded extents
  int32_t numel;    // padded pixel count
  int count;        // neighbour offsets in local indices
  int32_t off[26];
};

MSER_HD Local local_layout(const Box& box, const Offsets& nb) {
  Local L;
  for (int a = 0; a < 3; ++a) L.pad[a] = 0;
  for (int k = 0; k < nb.count; ++k) {
    if (nb.dz[k]) L.pad[0] = 1;
    if (nb.dy[k]) L.pad[1] = 1;
    if (nb.dx[k]) L.pad[2] = 1;
  }
  for (int a = 0; a < 3; ++a) L.dim[a] = box.size(a) + 2 * L.pad[a];
  L.numel = L.dim[0] * L.dim[1] * L.dim[2];
  L.count = nb.count;
  for (int k = 0; k < nb.count; ++k) L.off[k] = (nb.dz[k] * L.dim[1] + nb.dy[k]) * L.dim[2] + nb.dx[k];
  return L;
}

// Local index of box pixel (z, y, x) (box-relative coordinates).
MSER_HD int32_t local_index(const Local& L, int32_t z, int32_t y, int32_t x) {
  return ((z + L.pad[0]) * L.dim[1] + y + L.pad[1]) * L.dim[2] + x + L.pad[2];
}

// Global flat index of local index l, -1 for a padding pixel.
MSER_HD int32_t local_to_global(const Local& L, const Box& box, const TileGrid& g, int32_t l) {
  const int32_t z = l / (L.dim[1] * L.dim[2]) - L.pad[0], rem = l % (L.dim[1] * L.dim[2]);
  const int32_t y = rem / L.dim[2] - L.pad[1], x = rem % L.dim[2] - L.pad[2];
  if (z < 0 || z >= box.size(0) || y < 0 || y >= box.size(1) || x < 0 || x >= box.size(2)) return -1;
  return ((box.lo[0] + z) * g.dim[1] + box.lo[1] + y) * g.dim[2] + box.lo[2] + x;
}

template <typename I>
MSER_HD int32_t local_find(I* zpar, int32_t x) {
  int32_t r = x;
  while (zpar[r] != r) r = zpar[r];
  while (zpar[x] != r) {
    const int32_t nx = zpar[x];
    zpar[x] = static_cast<I>(r);
    x = nx;
  }
  return r;
}

// lkey[L.numel]: key, or -1 outside the mask and on the padding; key_bits = 8 or 16.
// Out: lpar[l] = parent after level compression (itself at the root, -1 outside), larea[l] = area
// of the node whose level root is l (areas fit I: at most L.numel). Scratch: order, tmp (L.numel),
// cnt[256].
template <typename I>
MSER_HD void tile_tree(const int32_t* lkey, const Local& L, int key_bits, I* order, I* tmp, int32_t* cnt, I* lpar,
                       I* lzpar, I* larea) {
  const int32_t n = L.numel;
  // counting sort of the inside pixels by key: LSD radix, 8 bits per pass, stable
  int32_t m = 0;
  for (int32_t l = 0; l < n; ++l) {
    lpar[l] = static_cast<I>(-1);
    lzpar[l] = static_cast<I>(-1);
    if (lkey[l] >= 0) order[m++] = static_cast<I>(l);
  }
  I* src = order;
  I* dst = tmp;
  for (int shift = 0; shift < key_bits; shift += 8) {
    for (int b = 0; b < 256; ++b) cnt[b] = 0;
    for (int32_t i = 0; i < m; ++i) ++cnt[(lkey[src[i]] >> shift) & 255];
    int32_t s = 0;
    for (int b = 0; b < 256; ++b) {
      const int32_t c = cnt[b];
      cnt[b] = s;
      s += c;
    }
    for (int32_t i = 0; i < m; ++i) dst[cnt[(lkey[src[i]] >> shift) & 255]++] = src[i];
    I* t = src;
    src = dst;
    dst = t;
  }
  const I* ord = src;
  // union-find in key order: the pixel being processed becomes the root of every neighbouring
  // component already built (their keys are <= its key)
  for (int32_t i = 0; i < m; ++i) {
    const int32_t p = ord[i];
    lpar[p] = static_cast<I>(p);
    lzpar[p] = static_cast<I>(p);
    for (int k = 0; k < L.count; ++k) {
      const int32_t q = p + L.off[k];
      if (lzpar[q] < 0) continue;  // not processed yet, outside the mask, or padding
      const int32_t r = local_find(lzpar, q);
      if (r != p) {
        lpar[r] = static_cast<I>(p);
        lzpar[r] = static_cast<I>(p);
      }
    }
  }
  // areas: a parent comes later in the order than its children
  for (int32_t l = 0; l < n; ++l) larea[l] = static_cast<I>(lkey[l] >= 0 ? 1 : 0);
  for (int32_t i = 0; i < m; ++i) {
    const int32_t p = ord[i], q = lpar[p];
    if (q != p) larea[q] = static_cast<I>(larea[q] + larea[p]);
  }
  // level compression, parents first
  for (int32_t i = m - 1; i >= 0; --i) {
    const int32_t p = ord[i], q = lpar[p];
    if (lkey[lpar[q]] == lkey[q]) lpar[p] = lpar[q];
  }
}

// ---------------------------------------------------------------------------------------------
// (ii) Merging. levroot(x): the level root of x's node (compressing the same-level path).
template <typename K>
MSER_HD int32_t levroot(int32_t* par, const K& key, int32_t x) {
  const int32_t k = key(x);
  int32_t r = x;
  while (true) {
    const int32_t q = par[r];
    if (q == r || key(q) != k) break;
    r = q;
  }
  while (x != r) {
    const int32_t nx = par[x];
    par[x] = r;
    x = nx;
  }
  return r;
}

// Level root of the parent node of level root x, -1 at the root.
template <typename K>
MSER_HD int32_t parent_root(int32_t* par, const K& key, int32_t x) {
  const int32_t q = par[x];
  return q == x ? -1 : levroot(par, key, q);
}

// Connects the components of two neighbouring pixels: the two ancestor chains are merged into one
// chain sorted by key (nodes of equal key are fused), from the lower end up to the first common
// ancestor. `carry` is the old area of the topmost node of the other chain below x, which every node
// of x's chain from there up has to gain; above the common ancestor nothing changes.
template <typename K>
MSER_HD void connect(int32_t* par, int32_t* area, const K& key, int32_t p, int32_t q) {
  int32_t x = levroot(par, key, p), y = levroot(par, key, q);
  if (key(x) > key(y)) {
    const int32_t t = x;
    x = y;
    y = t;
  }
  int32_t carry = 0;
  while (x != y && y >= 0) {
    // invariant: key(x) <= key(y), both level roots
    const int32_t z = parent_root(par, key, x);
    if (z >= 0 && key(z) <= key(y)) {
      area[x] += carry;
      x = z;
    } else {
      // y goes between x and z (if key(x) == key(y), x is fused into y and stops being a level root)
      const int32_t ax = area[x];
      area[x] = ax + carry;
      carry = ax;
      par[x] = y;
      x = y;
      y = z;
    }
  }
  if (y < 0) {
    // x's chain ran out: the rest of y's chain (now x) gains the other side's total
    while (x >= 0) {
      area[x] += carry;
      x = parent_root(par, key, x);
    }
  }
}

// Merges the two groups of one round task: every pixel pair across the plane between coordinate
// split - 1 and split along `axis`, inside `box` along the other axes.
template <typename K>
MSER_HD void merge_border(int32_t* par, int32_t* area, const K& key, const TileGrid& g, const Box& box, int axis,
                          int32_t split, const Offsets& nb) {
  int32_t lo[3] = {box.lo[0], box.lo[1], box.lo[2]}, hi[3] = {box.hi[0], box.hi[1], box.hi[2]};
  lo[axis] = split - 1;
  hi[axis] = split;
  for (int32_t z = lo[0]; z < hi[0]; ++z)
    for (int32_t y = lo[1]; y < hi[1]; ++y)
      for (int32_t x = lo[2]; x < hi[2]; ++x) {
        const int32_t p = (z * g.dim[1] + y) * g.dim[2] + x;
        if (par[p] < 0) continue;
        for (int k = 0; k < nb.count; ++k) {
          const int32_t d[3] = {nb.dz[k], nb.dy[k], nb.dx[k]};
          if (d[axis] != 1) continue;
          const int32_t c[3] = {z + d[0], y + d[1], x + d[2]};
          bool in = true;
          for (int a = 0; a < 3; ++a) in = in && c[a] >= box.lo[a] && c[a] < box.hi[a];
          if (!in) continue;  // across another group border: merged in a later round
          const int32_t q = (c[0] * g.dim[1] + c[1]) * g.dim[2] + c[2];
          if (par[q] >= 0) connect(par, area, key, p, q);
        }
      }
}

// ---------------------------------------------------------------------------------------------
// (iii) Canonicalisation, three pixel-parallel passes with read-only inputs:
//   lr[p]     = level root of p (-1 outside)                              (level_root_of)
//   canon[r]  = max { p : lr[p] = r }   (a max-reduction: serial or atomicMax in the drivers)
//   out[p]    = canonical parent form, out_area at canonical pixels        (finish_pixel)
template <typename K>
MSER_HD int32_t level_root_of(const int32_t* par, const K& key, int32_t p) {
  if (par[p] < 0) return -1;
  const int32_t k = key(p);
  int32_t r = p;
  while (true) {
    const int32_t q = par[r];
    if (q == r || key(q) != k) return r;
    r = q;
  }
}

// (iv) the area is read at the level root; non-canonical pixels get area 0.
MSER_HD void finish_pixel(const int32_t* par, const int32_t* lr, const int32_t* canon, const int32_t* area,
                          int32_t p, int32_t* out_par, int32_t* out_area) {
  const int32_t r = lr[p];
  if (r < 0) {
    out_par[p] = -1;
    out_area[p] = 0;
    return;
  }
  const int32_t c = canon[r];
  if (c != p) {
    out_par[p] = c;
    out_area[p] = 0;
    return;
  }
  const int32_t q = par[r];
  out_par[p] = q == r ? p : canon[lr[q]];
  out_area[p] = area[r];
}

}  // namespace tiled
}  // namespace mser
}  // namespace medseg
