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

struct Hist {
  std::vector<int32_t> val, size, parent, child, next;
  std::vector<int32_t> head;
  int32_t add() {
    val.push_back(0);
    size.push_back(0);
    parent.push_back(-1);
    child.push_back(-1);
    next.push_back(-1);
    head.push_back(-1);
    return static_cast<int32_t>(val.size()) - 1;
  }
};

struct Comp {
  int32_t head = -1, tail = -1;
  int32_t hist = -1;
  int gray = 0;
  int32_t size = 0;
  void init(int g) {
    head = tail = -1;
    hist = -1;
    size = 0;
    gray = g;
  }
};

struct Flood {
  Hist H;
  std::vector<int32_t> nxt;
  int min_area;

  void grow(Comp& c, int new_gray) {
    if (new_gray < c.gray) new_gray = c.gray;
    int32_t h;
    if (c.hist >= 0 && H.val[c.hist] == c.gray) {
      h = c.hist;
    } else {
      h = H.add();
      H.child[h] = c.hist;
      if (c.hist >= 0) H.parent[c.hist] = h;
    }
    H.val[h] = c.gray;
    H.size[h] = c.size;
    H.head[h] = c.head;
    c.gray = new_gray;
    c.hist = h;
  }

  // c1: the component below on the stack (higher grey), c2: the top one; the result is c1.
  void merge(Comp& c1, Comp& c2) {
    grow(c1, c1.gray);
    grow(c2, c1.gray);
    if (c1.size == 0) {
      c1.head = c2.head;
      c1.tail = c2.tail;
    } else {
      nxt[c1.tail] = c2.head;
      c1.tail = c2.tail;
    }
    c1.size += c2.size;
    const int32_t h = c1.hist, h1 = H.child[h], h2 = c2.hist;
    if (h1 >= 0 && H.size[h1] > H.size[h2]) {
      if (H.size[h2] >= min_area) {
        H.next[h2] = H.next[h1];
        H.next[h1] = h2;
        H.parent[h2] = h;
      }
    } else {
      H.child[h] = h2;
      H.parent[h2] = h;
      if (h1 >= 0 && H.size[h1] >= min_area) H.next[h2] = h1;
    }
  }
};

}  // namespace

void opencv_pass(const uint8_t* img, int64_t rows, int64_t cols, int mask_xor, int delta, int min_area, int max_area,
                 double max_variation, Regions& out) {
  MEDSEG_CHECK(rows >= 3 && cols >= 3, "image: the opencv preset needs at least 3 x 3 pixels");
  const int64_t n = rows * cols;
  MEDSEG_CHECK(n < (int64_t(1) << 31) - 1, "image: at most 2^31 - 2 pixels per image");
  std::vector<uint8_t> dir(static_cast<size_t>(n), 0);
  int64_t level_size[256] = {0};
  for (int64_t x = 0; x < cols; ++x) dir[x] = dir[(rows - 1) * cols + x] = 5;
  for (int64_t y = 1; y < rows - 1; ++y) {
    dir[y * cols] = dir[y * cols + cols - 1] = 5;
    for (int64_t x = 1; x < cols - 1; ++x) ++level_size[img[y * cols + x] ^ mask_xor];
  }
  // one LIFO stack of waiting boundary pixels per grey level, in one buffer
  std::vector<int32_t> heap(static_cast<size_t>((rows - 2) * (cols - 2) + 256));
  int32_t* hp[256];  // hp[g] points at the top element (one slot below the first push when empty)
  int32_t* hbase[256];
  {
    int32_t* b = heap.data();
    for (int g = 0; g < 256; ++g) {
      hbase[g] = b;
      hp[g] = b;  // slot 0 is a sentinel, pushes go to 1..level_size
      b += level_size[g] + 1;
    }
  }
  const uint8_t xo = static_cast<uint8_t>(mask_xor);

  Flood F;
  F.nxt.assign(static_cast<size_t>(n), -1);
  F.min_area = min_area;
  F.H.val.reserve(static_cast<size_t>(n / 4 + 16));
  std::vector<Comp> stack(258);
  int ci = 0;
  stack[0].init(256);
  int32_t ptr = static_cast<int32_t>(cols + 1);
  ci = 1;
  stack[1].init(img[ptr] ^ xo);
  dir[ptr] = 1;
  const int32_t off[5] = {0, 1, static_cast<int32_t>(cols), -1, -static_cast<int32_t>(cols)};
  uint8_t* dr = dir.data();
  for (;;) {
    int curr = img[ptr] ^ xo;
    int k = dr[ptr];
    for (; k <= 4; ++k) {
      const int32_t q = ptr + off[k];
      if (dr[q] != 0) continue;
      dr[q] = 1;
      const int gq = img[q] ^ xo;
      if (gq < curr) {
        *(++hp[curr]) = ptr;
        dr[ptr] = static_cast<uint8_t>(k + 1);
        ptr = q;
        ++ci;
        stack[ci].init(gq);
        curr = gq;
        k = 0;  // the loop increment makes it 1
        continue;
      }
      *(++hp[gq]) = q;
    }
    dr[ptr] = 5;
    Comp& c = stack[ci];
    if (c.size > 0) F.nxt[c.tail] = ptr; else c.head = ptr;
    c.tail = ptr;
    ++c.size;
    if (hp[curr] != hbase[curr]) {
      ptr = *(hp[curr]--);
      continue;
    }
    for (++curr; curr < 256 && hp[curr] == hbase[curr]; ++curr) {
    }
    if (curr >= 256) break;
    ptr = *(hp[curr]--);
    if (curr < stack[ci - 1].gray) {
      F.grow(stack[ci], curr);
    } else {
      --ci;
      F.merge(stack[ci], stack[ci + 1]);
    }
  }
  for (; stack[ci].gray != 256; --ci) F.grow(stack[ci], 256);

  // stability on the finished history tree, then OpenCV's capture rule
  const Hist& H = F.H;
  const int32_t m = static_cast<int32_t>(H.val.size());
  std::vector<float> var(static_cast<size_t>(m), FLT_MAX);
  for (int32_t h = 0; h < m; ++h) {
    if (H.size[h] < min_area) continue;
    const int v = H.val[h];
    int32_t d = h;
    while (H.child[d] >= 0 && H.val[H.child[d]] >= v - delta) d = H.child[d];
    int32_t u = h;
    while (H.parent[u] >= 0 && H.val[H.parent[u]] <= v + delta) u = H.parent[u];
    var[h] = static_cast<float>(H.size[u] - H.size[d]) / static_cast<float>(H.size[h]);
  }
  for (int32_t h = 0; h < m; ++h) {
    const int32_t sz = H.size[h];
    if (sz < min_area || sz > max_area || var[h] < 0.f || var[h] > max_variation) continue;
    bool ok = true;
    for (int32_t c = H.child[h]; c >= 0 && ok; c = H.next[c])
      if (var[c] >= 0.f && var[h] > var[c]) ok = false;
    if (!ok) continue;
    const int32_t p = H.parent[h];
    if (var[h] > 0.f && p >= 0 && var[p] >= 0.f && var[h] >= var[p]) continue;
    out.offsets.push_back(static_cast<int64_t>(out.values.size()));
    int32_t px = H.head[h];
    for (int32_t j = 0; j < sz; ++j) {
      MEDSEG_CHECK(px >= 0 && px < n, "internal: broken pixel list in the opencv flood");
      out.values.push_back(px);
      px = F.nxt[px];
    }
    out.level.push_back(mask_xor ? 255 - H.val[h] : H.val[h]);
    out.area.push_back(sz);
    out.variation.push_back(var[h]);
    out.polarity.push_back(mask_xor ? int8_t(1) : int8_t(-1));
  }
}

}  // namespace mser
}  // namespace medseg
