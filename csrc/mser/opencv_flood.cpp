// The `opencv` preset: the grey-level MSER of OpenCV 4.x (features2d/src/mser.cpp,
// Nistér & Stewénius linear-time flood) re-implemented from its documented behaviour
// (shared/reference/seeds-part2.md §5.4.1) so that the region sets are identical:
//   * the 1-pixel image border is never flooded; 4-connectivity, neighbour order right, down,
//     left, up; boundary pixels wait in one LIFO stack per grey level;
//   * a history node is written when a component leaves a grey level or merges; its children are
//     the largest child (`child`, ties go to the component merged last) and, linked behind it,
//     the other children of at least min_area pixels;
//   * var = (|h1| - |h0|) / |h| with h1 the highest ancestor at grey <= v + delta and h0 the deepest
//     node on the largest-child chain at grey >= v - delta (float arithmetic as OpenCV);
//   * capture: min_area <= size <= max_area, 0 <= var <= max_variation, var <= var of every linked
//     child, and (var == 0 or var < var(parent)); min_diversity is not used.
// OpenCV evaluates var lazily while flooding; every evaluation it makes uses the final tree (the
// ancestor chain is only read once it reaches grey v + delta, or at the final flush), so the
// stability and capture pass below runs once on the finished history tree.
#include <cfloat>
#include <cstdint>
#include <vector>

#include "common/errors.h"
#include "mser/mser.h"

namespace medseg {
namespace mser {

namespace {

struct HNode {
  int32_t val, size, parent, child, next, head;
};
using Hist = std::vector<HNode>;

inline int32_t add_node(Hist& H) {
  H.push_back(HNode{0, 0, -1, -1, -1, -1});
  return static_cast<int32_t>(H.size()) - 1;
}

struct Comp {
  int32_t head = -1;  // one pixel of the component
  int32_t hist = -1;
  int gray = 0;
  int32_t size = 0;
  void init(int g) {
    head = -1;
    hist = -1;
    size = 0;
    gray = g;
  }
};

struct Flood {
  Hist H;
  int min_area;

  void grow(Comp& c, int new_gray) {
    if (new_gray < c.gray) new_gray = c.gray;
    int32_t h;
    if (c.hist >= 0 && H[c.hist].val == c.gray) {
      h = c.hist;
    } else {
      h = add_node(H);
      H[h].child = c.hist;
      if (c.hist >= 0) H[c.hist].parent = h;
    }
    H[h].val = c.gray;
    H[h].size = c.size;
    H[h].head = c.head;
    c.gray = new_gray;
    c.hist = h;
  }

  // c1: the component below on the stack (higher grey), c2: the top one; the result is c1.
  void merge(Comp& c1, Comp& c2) {
    grow(c1, c1.gray);
    grow(c2, c1.gray);
    if (c1.size == 0) c1.head = c2.head;
    c1.size += c2.size;
    const int32_t h = c1.hist, h1 = H[h].child, h2 = c2.hist;
    if (h1 >= 0 && H[h1].size > H[h2].size) {
      if (H[h2].size >= min_area) {
        H[h2].next = H[h1].next;
        H[h1].next = h2;
        H[h2].parent = h;
      }
    } else {
      H[h].child = h2;
      H[h2].parent = h;
      if (h1 >= 0 && H[h1].size >= min_area) H[h2].next = h1;
    }
  }
};

}  // namespace

namespace {

template <int XO, typename HT>
void opencv_pass_impl(const uint8_t* img, int64_t rows, int64_t cols, int delta, int min_area, int max_area,
                      double max_variation, Regions& out) {
  constexpr int mask_xor = XO;
  constexpr uint8_t xo = static_cast<uint8_t>(XO);
  MEDSEG_CHECK(rows >= 3 && cols >= 3, "image: the opencv preset needs at least 3 x 3 pixels");
  const int64_t n = rows * cols;
  MEDSEG_CHECK(n < (int64_t(1) << 31) - 1, "image: at most 2^31 - 2 pixels per image");
  // One 16-bit cell per pixel holds its grey level (xor'ed for the polarity) until the pixel is
  // first reached, then kReached: a neighbour test is one load and one compare, and the grey level
  // comes with it (measured 3-10 % faster than a 1-bit "reached" bitmap beside the image). The
  // 1-pixel border starts as reached, so it is never flooded (and needs no bounds tests). A
  // waiting pixel carries the neighbour direction to resume at in its heap entry
  // (pixel << 3 | direction 1..5), so a pop reads no per-pixel state at all.
  // Buffers are per thread and reused across calls (the batch and both polarities reuse them).
  thread_local std::vector<uint16_t> cells;
  thread_local std::vector<HT> heap;
  thread_local Flood F;
  cells.resize(static_cast<size_t>(n));
  uint16_t* cell = cells.data();
  constexpr uint16_t kReached = 0xFFFF;
  int64_t level_size[256] = {0};
  for (int64_t x = 0; x < cols; ++x) {
    cell[x] = kReached;
    cell[(rows - 1) * cols + x] = kReached;
  }
  {
    int64_t hist[4][256] = {{0}};  // 4 partial histograms (fewer store-to-load stalls)
    for (int64_t y = 1; y < rows - 1; ++y) {
      const uint8_t* row = img + y * cols;
      uint16_t* crow = cell + y * cols;
      crow[0] = kReached;
      crow[cols - 1] = kReached;
      int64_t x = 1;
      for (; x + 4 <= cols - 1; x += 4) {
        ++hist[0][row[x]];
        ++hist[1][row[x + 1]];
        ++hist[2][row[x + 2]];
        ++hist[3][row[x + 3]];
      }
      for (; x < cols - 1; ++x) ++hist[0][row[x]];
      for (x = 1; x < cols - 1; ++x) crow[x] = static_cast<uint16_t>(row[x] ^ xo);
    }
    for (int g = 0; g < 256; ++g) level_size[g ^ XO] = hist[0][g] + hist[1][g] + hist[2][g] + hist[3][g];
  }
  // one LIFO stack of waiting boundary pixels per grey level, in one buffer
  heap.resize(static_cast<size_t>((rows - 2) * (cols - 2) + 256));
  HT* hp[256];  // hp[g] points at the top element (one slot below the first push when empty)
  HT* hbase[256];
  {
    HT* b = heap.data();
    for (int g = 0; g < 256; ++g) {
      hbase[g] = b;
      hp[g] = b;  // slot 0 is never read (empty when hp == hbase), pushes go to 1..level_size
      b += level_size[g] + 1;
    }
  }

  // Pixel lists are not kept while flooding: every history node remembers one of its pixels
  // (`head`), and the few selected regions are rebuilt at the end by a flood from that pixel.
  F.min_area = min_area;
  F.H.clear();
  Comp stack[258];
  int ci = 0;
  stack[0].init(256);
  int32_t ptr = static_cast<int32_t>(cols + 1);
  ci = 1;
  int curr = cell[ptr];
  stack[1].init(curr);
  cell[ptr] = kReached;
  int resume = 1;
  const int32_t off[5] = {0, 1, static_cast<int32_t>(cols), -1, -static_cast<int32_t>(cols)};
  const int32_t W = static_cast<int32_t>(cols);
  // The neighbour loop unrolled (right, down, left, up); a pixel resumed from the heap jumps to
  // the direction it stopped at. A lower neighbour is entered at once (depth first, as OpenCV).
#define MSER_NB(K, OFF, NEXT)                                  \
  {                                                           \
    const int32_t q = ptr + (OFF);                            \
    const int gq = cell[q];                                   \
    if (gq != kReached) {                                     \
      cell[q] = kReached;                                     \
      if (gq < curr) {                                        \
        *(++hp[curr]) = (static_cast<HT>(ptr) << 3) | ((K) + 1); \
        ptr = q;                                              \
        ++ci;                                                 \
        stack[ci].init(gq);                                   \
        curr = gq;                                            \
        goto dir1;                                            \
      }                                                       \
      *(++hp[gq]) = (static_cast<HT>(q) << 3) | 1;            \
      __builtin_prefetch(cell + q + W);                       \
      __builtin_prefetch(cell + q - W);                       \
    }                                                         \
  }
  for (;;) {
    if (__builtin_expect(resume == 1, 1)) goto dir1;  // a freshly pushed pixel: the common case
    switch (resume) {
      case 1: goto dir1;
      case 2: goto dir2;
      case 3: goto dir3;
      case 4: goto dir4;
      default: goto done;
    }
  dir1:
    MSER_NB(1, 1, dir2)
  dir2:
    MSER_NB(2, W, dir3)
  dir3:
    MSER_NB(3, -1, dir4)
  dir4:
    MSER_NB(4, -W, done)
  done:
    {
      Comp& c = stack[ci];
      if (c.size == 0) c.head = ptr;
      ++c.size;
    }
    if (hp[curr] != hbase[curr]) {
      const HT e = *(hp[curr]--);
      ptr = static_cast<int32_t>(e >> 3);
      resume = static_cast<int>(e & 7);
      continue;
    }
    for (++curr; curr < 256 && hp[curr] == hbase[curr]; ++curr) {
    }
    if (curr >= 256) break;
    {
      const HT e = *(hp[curr]--);
      ptr = static_cast<int32_t>(e >> 3);
      resume = static_cast<int>(e & 7);
    }
    if (curr < stack[ci - 1].gray) {
      F.grow(stack[ci], curr);
    } else {
      --ci;
      F.merge(stack[ci], stack[ci + 1]);
    }
  }
#undef MSER_NB
  for (; stack[ci].gray != 256; --ci) F.grow(stack[ci], 256);

  // stability on the finished history tree, then OpenCV's capture rule
  const Hist& H = F.H;
  const int32_t m = static_cast<int32_t>(H.size());
  thread_local std::vector<float> var;
  var.assign(static_cast<size_t>(m), FLT_MAX);
  for (int32_t h = 0; h < m; ++h) {
    if (H[h].size < min_area) continue;
    const int v = H[h].val;
    int32_t d = h;
    while (H[d].child >= 0 && H[H[d].child].val >= v - delta) d = H[d].child;
    int32_t u = h;
    while (H[u].parent >= 0 && H[H[u].parent].val <= v + delta) u = H[u].parent;
    var[h] = static_cast<float>(H[u].size - H[d].size) / static_cast<float>(H[h].size);
  }
  // the region of node h = the 4-connected set of non-border pixels with grey ^ mask <= val
  // around its pixel `head` (the flood finished every level <= val before leaving it)
  thread_local std::vector<int32_t> todo;
  for (int32_t h = 0; h < m; ++h) {
    const int32_t sz = H[h].size;
    if (sz < min_area || sz > max_area || var[h] < 0.f || var[h] > max_variation) continue;
    bool ok = true;
    for (int32_t c = H[h].child; c >= 0 && ok; c = H[c].next)
      if (var[c] >= 0.f && var[h] > var[c]) ok = false;
    if (!ok) continue;
    const int32_t p = H[h].parent;
    if (var[h] > 0.f && p >= 0 && var[p] >= 0.f && var[h] >= var[p]) continue;
    const int v = H[h].val;
    const int32_t seed = H[h].head;
    if (sz == 0) {  // only with min_area 0: an empty region, as OpenCV
      out.offsets.push_back(static_cast<int64_t>(out.values.size()));
      out.level.push_back(mask_xor ? 255 - v : v);
      out.area.push_back(0);
      out.variation.push_back(var[h]);
      out.polarity.push_back(mask_xor ? int8_t(1) : int8_t(-1));
      continue;
    }
    MEDSEG_CHECK(seed >= 0 && seed < n && (img[seed] ^ xo) <= v,
                 "internal: bad region seed in the opencv flood");
    const size_t o = out.values.size();
    out.offsets.push_back(static_cast<int64_t>(o));
    out.values.resize(o + static_cast<size_t>(sz));
    int64_t* dst = out.values.data() + o;
    // every cell is kReached after the flood; the region's pixels are unmarked while it is
    // collected and marked again afterwards
    auto unmark = [cell](int64_t p) { cell[p] = 0; };
    auto is_marked = [cell](int64_t p) { return cell[p] == kReached; };
    auto mark = [cell](int64_t p) { cell[p] = kReached; };
    todo.clear();
    todo.push_back(seed);
    unmark(seed);
    int32_t cnt = 0;
    while (!todo.empty()) {
      const int32_t a = todo.back();
      todo.pop_back();
      MEDSEG_CHECK(cnt < sz, "internal: region larger than its history node in the opencv flood");
      dst[cnt++] = a;
      for (int k = 1; k <= 4; ++k) {
        const int32_t q = a + off[k];
        const int64_t y = q / cols, x = q - y * cols;
        if (!is_marked(q) || y == 0 || y == rows - 1 || x == 0 || x == cols - 1) continue;
        if ((img[q] ^ xo) > v) continue;
        unmark(q);
        todo.push_back(q);
      }
    }
    MEDSEG_CHECK(cnt == sz, "internal: region smaller than its history node in the opencv flood");
    for (int32_t j = 0; j < sz; ++j) mark(dst[j]);
    out.level.push_back(mask_xor ? 255 - H[h].val : H[h].val);
    out.area.push_back(sz);
    out.variation.push_back(var[h]);
    out.polarity.push_back(mask_xor ? int8_t(1) : int8_t(-1));
  }
}

}  // namespace

void opencv_pass(const uint8_t* img, int64_t rows, int64_t cols, int mask_xor, int delta, int min_area, int max_area,
                 double max_variation, Regions& out) {
  MEDSEG_CHECK(mask_xor == 0 || mask_xor == 255, "internal: mask_xor must be 0 or 255");
  // heap entries pixel << 3 | direction in 32 bits
  const bool small = rows * cols < (int64_t(1) << 29) && !wide_entries_forced();
  if (mask_xor == 255) {
    if (small) {
      opencv_pass_impl<255, uint32_t>(img, rows, cols, delta, min_area, max_area, max_variation, out);
    } else {
      opencv_pass_impl<255, uint64_t>(img, rows, cols, delta, min_area, max_area, max_variation, out);
    }
  } else {
    if (small) {
      opencv_pass_impl<0, uint32_t>(img, rows, cols, delta, min_area, max_area, max_variation, out);
    } else {
      opencv_pass_impl<0, uint64_t>(img, rows, cols, delta, min_area, max_area, max_variation, out);
    }
  }
}

}  // namespace mser
}  // namespace medseg
