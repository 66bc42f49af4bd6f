// MSER family: component trees (max-/min-trees) by union-find over counting-sorted pixels, MSER
// stability on the tree (OpenCV / VLFeat / paper variants) and an exact re-implementation of the
// OpenCV 4.x grey MSER flood (for the `opencv` preset). Spec: shared/reference/seeds-part2.md §5.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <vector>

namespace medseg {
namespace mser {

// Geometry of one image or volume: shape (d0, d1, d2) in C order (2-D: d0 = 1).
struct Geometry {
  int64_t d0 = 1, d1 = 1, d2 = 1;
  int connectivity = 4;  // 2-D: 4 or 8, 3-D: 6 or 26
  int64_t numel() const { return d0 * d1 * d2; }
};

// The floods store a waiting pixel and its resume index in one 32-bit stack entry below 2^27 (tree)
// or 2^29 (OpenCV flood) pixels and in 64 bits above. MEDSEG_EXT_MSER_WIDE_ENTRIES=1 (read once)
// forces the 64-bit entries on small images, so the tests cover that path without 2^29 pixels.
inline bool wide_entries_forced() {
  static const bool forced = [] {
    const char* v = std::getenv("MEDSEG_EXT_MSER_WIDE_ENTRIES");
    return v != nullptr && v[0] == '1';
  }();
  return forced;
}

// The flood tree builder runs 3-D volumes of 2^18 voxels or more in 8×8×8 bricks (a cache-friendly
// copy of the keys). MEDSEG_EXT_MSER_BRICKS=1 (read once) uses bricks for every 3-D volume, so the
// tests cover that path, partial bricks included, on small volumes.
inline bool bricks_forced() {
  static const bool forced = [] {
    const char* v = std::getenv("MEDSEG_EXT_MSER_BRICKS");
    return v != nullptr && v[0] == '1';
  }();
  return forced;
}

// The neighbour offsets of a connectivity, in (z, y, x) raster order: 4/8 stay in the plane,
// 6 = faces, 26 = all. Shared by both tree builders so they visit neighbours identically.
struct NbrList {
  int count = 0;
  bool three_d = false;  // some neighbours lie in other planes (connectivity 6 or 26)
  int dz[26], dy[26], dx[26];
  int64_t off[26];  // flat offset for an interior pixel
};

inline NbrList neighbour_list(const Geometry& g) {
  NbrList n;
  const bool is3d = g.connectivity == 6 || g.connectivity == 26;
  n.three_d = is3d;
  for (int z = -1; z <= 1; ++z)
    for (int y = -1; y <= 1; ++y)
      for (int x = -1; x <= 1; ++x) {
        const int nz = (z != 0) + (y != 0) + (x != 0);
        if (nz == 0 || (!is3d && z != 0)) continue;
        if ((g.connectivity == 4 || g.connectivity == 6) && nz != 1) continue;
        n.dz[n.count] = z;
        n.dy[n.count] = y;
        n.dx[n.count] = x;
        n.off[n.count] = z * g.d1 * g.d2 + y * g.d2 + x;
        ++n.count;
      }
  return n;
}

// Component tree of the level sets {I <= t} of key = (bright ? maxval - I : I) over the pixels
// with mask != 0 (all pixels when mask is null). Nodes are numbered in increasing key, so a
// child always has a smaller id than its parent. pixel_node[p] = -1 for masked-out pixels.
struct Tree {
  std::vector<int32_t> pixel_node;  // N
  std::vector<int32_t> parent;      // M, -1 for roots
  std::vector<int32_t> level;       // M, in image units
  std::vector<int32_t> key;         // M, in flooding units (increasing towards the root)
  std::vector<int32_t> area;        // M
};

template <typename T>
void build_tree(const T* img, const uint8_t* mask, const Geometry& g, bool bright, int maxval, Tree& tree);

// The same tree by a hierarchical-queue flood (better locality); identical output arrays.
template <typename T>
void build_tree_flood(const T* img, const uint8_t* mask, const Geometry& g, bool bright, int maxval, Tree& tree);

enum class Side { TwoSided, Ancestor, Descendant };
enum class Rule { LocalMin, VLFeat };

struct Params {
  int delta = 5;
  int64_t min_area = 60, max_area = 14400;
  double max_variation = 0.25;
  double min_diversity = 0.0;
  Side side = Side::TwoSided;
  bool normalize = true;
  Rule rule = Rule::LocalMin;
};

// Selected regions of one polarity, appended to the output lists.
struct Regions {
  std::vector<int64_t> values;   // flat pixel indices, region after region
  std::vector<int64_t> offsets;  // starts (the caller appends the final end)
  std::vector<int32_t> level;
  std::vector<int64_t> area;
  std::vector<double> variation;
  std::vector<int8_t> polarity;  // +1 bright, -1 dark
};

// Stability of every node (side, normalize) and the selection rule; appends the regions.
void select_regions(const Tree& tree, const Params& p, int8_t polarity, Regions& out);
// Stability of every node only (exposed for tests and users of the tree).
void node_stability(const Tree& tree, const Params& p, std::vector<double>& stab);

// OpenCV 4.x grey MSER on one 8-bit 2-D image (h x w >= 3 x 3): mask_xor 0 = dark pass,
// 255 = bright pass. Same region sets as cv::MSER::detectRegions.
void opencv_pass(const uint8_t* img, int64_t h, int64_t w, int mask_xor, int delta, int min_area, int max_area,
                 double max_variation, Regions& out);

}  // namespace mser
}  // namespace medseg
