// Vietoris–Rips persistence by the Ripser algorithm (see rips.h for the source and conventions).
//
// Outline, per dimension d >= 1 (H0 is a union–find pass over the edges):
//  * Simplices are integers in the combinatorial number system: {v_d > ... > v_0} <-> Σ C(v_i, i+1).
//    Cofacets are enumerated from the index and the vertices without storing any boundary matrix.
//  * Persistent *cohomology*: columns are d-simplices in reverse filtration order (diameter
//    descending, index ascending), rows are (d+1)-simplices; the pivot of a column is its earliest
//    cofacet (smallest diameter, ties: largest index). Reduction by left-to-right column additions.
//  * Clearing: a d-simplex that was a pivot in dimension d-1 is never reduced (its column is zero).
//  * Apparent pairs (σ, τ) with diam σ = diam τ, where τ is the earliest cofacet of σ and σ the
//    latest facet of τ, are pairs of every reduction: such σ are not reduced and their columns are
//    their plain coboundaries, recomputed on demand.
//  * Emergent pairs: when the earliest cofacet of a column has the column's diameter and no other
//    column holds it as pivot, the column is already reduced; no heap is built.
//  * Reduced columns that become pivots are stored explicitly (sorted entries) for later additions.
#include "topology/rips.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "common/errors.h"

namespace medseg {
namespace topology {

namespace {

using index_t = int64_t;
constexpr index_t kNone = -1;

// C(v, k) for v in [0, n], k in [0, kmax]; a ValueError when a needed value passes int64.
class BinomialTable {
 public:
  BinomialTable(int64_t n, int kmax) : n_(n), kmax_(kmax), table_((kmax + 1) * (n + 1), 0) {
    for (int64_t v = 0; v <= n; ++v) {
      at(v, 0) = 1;
      for (int k = 1; k <= kmax; ++k) {
        if (v == 0) {
          at(v, k) = 0;
          continue;
        }
        const index_t a = at(v - 1, k - 1), b = at(v - 1, k);
        if (a > std::numeric_limits<index_t>::max() - b)
          fail("vietoris_rips: ", n, " points with maxdim ", kmax - 2,
               " need simplex indices C(n, maxdim+2) beyond the 64-bit range; use fewer points, a lower maxdim "
               "or a threshold with a sparse input");
        at(v, k) = a + b;
      }
    }
  }
  index_t operator()(int64_t v, int k) const { return table_[k * (n_ + 1) + v]; }
  const index_t& at_row(int k) const { return table_[k * (n_ + 1)]; }  // C(., k) for v = 0..n

 private:
  index_t& at(int64_t v, int k) { return table_[k * (n_ + 1) + v]; }
  int64_t n_;
  int kmax_;
  std::vector<index_t> table_;
};

// Open-addressing hash map int64 key (>= 0) -> int64 value, linear probing. Replaces
// std::unordered_map on the hot clearing/pivot lookups (one probe sequence in one array).
class IndexMap {
 public:
  explicit IndexMap(size_t expected = 16) { rehash(std::max<size_t>(16, expected * 2)); }
  size_t bytes() const { return keys_.capacity() * sizeof(index_t) + values_.capacity() * sizeof(int64_t); }
  void clear() {
    // A table much larger than its last use (left by an earlier, bigger cloud of a reused
    // workspace) restarts at the size of that use instead of being swept whole every time.
    if (keys_.size() > 1024 && size_ * 8 < keys_.size()) {
      const size_t want = std::max<size_t>(16, size_ * 2);
      keys_.clear();
      values_.clear();
      rehash(want);
      return;
    }
    std::fill(keys_.begin(), keys_.end(), kEmpty);
    size_ = 0;
  }
  const int64_t* find(index_t key) const {
    for (size_t i = slot(key);; i = (i + 1) & mask_) {
      if (keys_[i] == key) return &values_[i];
      if (keys_[i] == kEmpty) return nullptr;
    }
  }
  bool contains(index_t key) const { return find(key) != nullptr; }
  void insert(index_t key, int64_t value) {
    if (2 * (size_ + 1) > keys_.size()) rehash(keys_.size() * 2);
    size_t i = slot(key);
    while (keys_[i] != kEmpty && keys_[i] != key) i = (i + 1) & mask_;
    if (keys_[i] == kEmpty) ++size_;
    keys_[i] = key;
    values_[i] = value;
  }
  void swap(IndexMap& o) {
    keys_.swap(o.keys_);
    values_.swap(o.values_);
    std::swap(mask_, o.mask_);
    std::swap(size_, o.size_);
    std::swap(shift_, o.shift_);
  }
  template <typename F>
  void for_each(F&& f) const {
    for (size_t i = 0; i < keys_.size(); ++i)
      if (keys_[i] != kEmpty) f(keys_[i], values_[i]);
  }

 private:
  static constexpr index_t kEmpty = -1;
  size_t slot(index_t key) const {
    uint64_t h = static_cast<uint64_t>(key) * 0x9E3779B97F4A7C15ull;
    return static_cast<size_t>(h >> shift_);
  }
  void rehash(size_t capacity) {
    size_t cap = 16;
    int bits = 4;
    while (cap < capacity) {
      cap <<= 1;
      ++bits;
    }
    std::vector<index_t> old_keys;
    std::vector<int64_t> old_values;
    old_keys.swap(keys_);
    old_values.swap(values_);
    keys_.assign(cap, kEmpty);
    values_.assign(cap, 0);
    mask_ = cap - 1;
    shift_ = 64 - bits;
    size_ = 0;
    for (size_t i = 0; i < old_keys.size(); ++i)
      if (old_keys[i] != kEmpty) insert(old_keys[i], old_values[i]);
  }
  std::vector<index_t> keys_;
  std::vector<int64_t> values_;
  size_t mask_ = 0, size_ = 0;
  int shift_ = 60;
};

// A coboundary entry; the diameter in the filtration's value type (16 bytes for float: the
// reduction heap moves half the memory of a double-keyed entry).
template <typename value_t>
struct EntryT {
  index_t index;
  value_t diam;
  int32_t coef;
};

// Filtration order: smaller diameter first, ties broken by larger index first.
template <typename A, typename B>
inline bool later_in_filtration(A da, index_t ia, B db, index_t ib) {
  return da > db || (da == db && ia < ib);
}
struct HeapLater {
  template <typename E>
  bool operator()(const E& a, const E& b) const {
    return a.diam > b.diam || (a.diam == b.diam && a.index < b.index);
  }
};

struct Column {
  index_t index;
  double diam;
  index_t zero_cofacet;  // earliest cofacet when it has the same diameter, else kNone
};

// Where a pivot's reduced column lives.
struct PivotSlot {
  index_t simplex;   // the column's simplex
  int64_t begin;     // into stored entries; -1: the plain coboundary of `simplex`
  int64_t end;
  int32_t pivot_coef;
  bool compact;      // stored entries combined (sorted by index, no duplicates, no zeros)
};

// Buffers of one cloud's computation, kept by a caller that runs many clouds (one per thread in
// the batch) so that no cloud allocates, page-faults or rehashes from scratch.
template <typename value_t>
struct Workspace {
  std::vector<value_t> dist;
  std::vector<PivotSlot> slots;
  std::vector<EntryT<value_t>> stored, heap, scratch;
  std::vector<uint64_t> cleared_bits;
  std::vector<Column> edges, edges_to_reduce, simplices, columns, next;
  std::vector<int64_t> parent;
  std::vector<uint64_t> keys;
  IndexMap cleared, next_cleared, pivots;

  size_t bytes() const {
    return dist.capacity() * sizeof(value_t) + slots.capacity() * sizeof(PivotSlot) +
           (stored.capacity() + heap.capacity() + scratch.capacity()) * sizeof(EntryT<value_t>) +
           cleared_bits.capacity() * 8 +
           (edges.capacity() + edges_to_reduce.capacity() + simplices.capacity() + columns.capacity() +
            next.capacity()) * sizeof(Column) +
           (parent.capacity() + keys.capacity()) * 8 + cleared.bytes() + next_cleared.bytes() + pivots.bytes();
  }
};

template <typename value_t>
class RipsComputer {
  using Entry = EntryT<value_t>;

 public:
  RipsComputer(const double* dist, int64_t n, const RipsOptions& opt, Workspace<value_t>& ws)
      : n_(n), maxdim_(opt.maxdim), p_(opt.coeff), binom_(n, opt.maxdim + 2), ws_(ws), dist_(ws.dist),
        slots_(ws.slots), stored_(ws.stored), cleared_bits_(ws.cleared_bits), opt_(opt) {
    dist_.resize(static_cast<size_t>(n * n));
    // + 0: a -0 entry becomes +0 (equal in every comparison; keeps float bits monotone for keys)
    for (int64_t i = 0; i < n * n; ++i) dist_[i] = static_cast<value_t>(dist[i]) + value_t(0);
    // Enclosing radius: at this value the complex is a cone, so nothing of degree >= 1 survives
    // past it and H0 is one component; truncating there changes no diagram (Henselman-Petrusek).
    double enclosing = std::numeric_limits<double>::infinity();
    for (int64_t i = 0; i < n; ++i) {
      double r = 0;
      for (int64_t j = 0; j < n; ++j) r = std::max(r, static_cast<double>(dist_[i * n + j]));
      enclosing = std::min(enclosing, r);
    }
    // the user's threshold rounded to the filtration's value type, as the distances are
    threshold_ = std::min(static_cast<double>(static_cast<value_t>(opt.threshold)), enclosing);
    // inverses mod p in O(p) (inv(a) = -(p / a) * inv(p mod a)); the former O(p^2) search took ~4 s
    // per cloud at p = 46337
    inverse_.assign(p_, 0);
    if (p_ > 1) inverse_[1] = 1;
    for (int a = 2; a < p_; ++a)
      inverse_[a] = static_cast<int>((static_cast<int64_t>(p_ - p_ / a) * inverse_[p_ % a]) % p_);
    out_.assign(maxdim_ + 1, {});
  }

  Diagrams run() {
    if (n_ == 0) return out_;
    // Dimension 1 needs no clearing list for dimension 0: compute_h0 hands over only the edges that
    // did not merge two components (the others are the dimension-0 pivots).
    std::vector<Column>& edges_to_reduce = ws_.edges_to_reduce;
    std::vector<Column>& simplices = ws_.simplices;  // all (d-1)-simplices within the threshold, for building dimension d
    edges_to_reduce.clear();
    simplices.clear();
    compute_h0(edges_to_reduce, simplices);
    IndexMap& cleared = ws_.cleared;  // d-simplices that are pivots of dimension d-1 (incl. apparent pairs)
    IndexMap& next_cleared = ws_.next_cleared;
    IndexMap& pivots = ws_.pivots;    // (d+1)-simplex -> slot in slots_
    cleared.clear();
    for (int d = 1; d <= maxdim_; ++d) {
      const bool keep_next = d < maxdim_;
      next_cleared.clear();
      std::vector<Column>& columns = ws_.columns;
      columns.clear();
      if (d == 1) {
        columns.reserve(edges_to_reduce.size());
        int64_t v[8];
        for (const Column& e : edges_to_reduce) {
          get_vertices(e.index, 1, v);
          add_column_or_record_apparent(e.index, e.diam, 1, v, keep_next, columns, next_cleared);
        }
        edges_to_reduce.clear();
      } else if (d == 2 && !keep_next && opt_.triangle_count >= 0) {
        add_given_triangles(cleared, columns);
      } else if (d == 2) {
        std::vector<Column>& next = ws_.next;
        next.clear();
        if (keep_next) next.reserve(simplices.size());
        if (keep_next) assemble_triangles<true>(simplices, cleared, columns, next, next_cleared);
        else assemble_triangles<false>(simplices, cleared, columns, next, next_cleared);
        simplices.swap(next);
      } else {
        std::vector<Column>& next = ws_.next;
        next.clear();
        if (keep_next) next.reserve(simplices.size());
        // simplices holds the (d-1)-simplices; adding a vertex above all of theirs gives every
        // d-simplex exactly once
        int64_t tv[8];
        const value_t* row[8];
        for (const Column& s : simplices) {
          get_vertices(s.index, d - 1, tv + 1);  // tv = [w, vertices of s descending]
          for (int i = 0; i < d; ++i) row[i] = dist_.data() + tv[1 + i] * n_;
          for (int64_t w = n_ - 1; w > tv[1]; --w) {
            value_t dmax = row[0][w];
            for (int i = 1; i < d; ++i) dmax = std::max(dmax, row[i][w]);
            const double diam = std::max(s.diam, static_cast<double>(dmax));
            if (diam > threshold_) continue;
            const index_t idx = s.index + binom_(w, d + 1);
            if (keep_next) next.push_back({idx, diam, kNone});
            if (cleared.contains(idx)) continue;  // clearing: a pivot of dimension d-1
            tv[0] = w;
            add_column_or_record_apparent(idx, diam, d, tv, keep_next, columns, next_cleared);
          }
        }
        simplices.swap(next);
      }
      std::sort(columns.begin(), columns.end(), [](const Column& a, const Column& b) {
        return later_in_filtration(a.diam, a.index, b.diam, b.index);
      });
      pivots.clear();
      slots_.clear();
      stored_.clear();
      reduce_dimension(d, columns, pivots);
      if (keep_next) {
        pivots.for_each([&](index_t key, int64_t) { next_cleared.insert(key, 0); });
        cleared.swap(next_cleared);
      }
    }
    return out_;
  }

  // Dimension 2 written out for three vertices (the bulk of the work at maxdim 2: hundreds of
  // thousands of triangles per 185-point cloud, nearly all in apparent pairs). Same decisions as
  // the generic path (cleared -> skipped; apparent -> recorded; else a column with its
  // zero-diameter earliest cofacet), all comparisons in the filtration's value type.
  //  * clearing by a bitset over triangle indices (when C(n, 3) is small), not hash probes;
  //  * the earliest cofacet with the triangle's diameter: vertices x scanned descending;
  //  * the triangle sigma = tau - {x} is the latest facet of that cofacet tau iff no facet tau - {y}
  //    with y > x (a smaller index) has the same diameter: at most three facets of three edges.
  template <bool kKeepNext>
  void assemble_triangles(const std::vector<Column>& edges, const IndexMap& cleared, std::vector<Column>& columns,
                          std::vector<Column>& next, IndexMap& next_cleared) {
    const int64_t n = n_;
    const index_t ntri = binom_(n, 3);
    const bool use_bits = ntri <= (index_t(1) << 24);  // 2 MiB of bits at most (n <= 465)
    if (use_bits) {
      cleared_bits_.assign(static_cast<size_t>((ntri + 63) / 64), 0);
      cleared.for_each([&](index_t k, int64_t) { cleared_bits_[k >> 6] |= uint64_t(1) << (k & 63); });
    }
    const uint64_t* bits = cleared_bits_.data();
    const value_t thr = static_cast<value_t>(threshold_);  // exact: threshold_ is a value_t value
    const value_t* D = dist_.data();
    const index_t* c1 = &binom_.at_row(1);
    const index_t* c2 = &binom_.at_row(2);
    const index_t* c3 = &binom_.at_row(3);
    const index_t* c4 = &binom_.at_row(4);
    for (const Column& e : edges) {
      int64_t ev[2];
      get_vertices(e.index, 1, ev);
      const int64_t b = ev[0], a = ev[1];
      const value_t* rb = D + b * n;
      const value_t* ra = D + a * n;
      const value_t dab = static_cast<value_t>(e.diam);
      for (int64_t w = n - 1; w > b; --w) {
        const value_t diam = std::max(dab, std::max(ra[w], rb[w]));
        if (diam > thr) continue;
        const index_t idx = e.index + c3[w];
        if (kKeepNext) next.push_back({idx, static_cast<double>(diam), kNone});
        if (use_bits ? ((bits[idx >> 6] >> (idx & 63)) & 1) != 0 : cleared.contains(idx)) continue;
        const value_t* rw = D + w * n;
        const int64_t x = last_vertex_within(rw, rb, ra, diam, n, w, b, a);
        if (x < 0) {
          columns.push_back({idx, static_cast<double>(diam), kNone});
          continue;
        }
        // facets of tau = {w, b, a, x} before sigma in index order: tau - {y} for y > x
        bool apparent = true;
        if (w > x) apparent = std::max(dab, std::max(rb[x], ra[x])) < diam;                      // {b, a, x}
        if (apparent && b > x) apparent = std::max(ra[w], std::max(rw[x], ra[x])) < diam;        // {w, a, x}
        if (apparent && a > x) apparent = std::max(rb[w], std::max(rw[x], rb[x])) < diam;        // {w, b, x}
        if (apparent && !kKeepNext) continue;
        index_t z;
        if (x > w) z = c4[x] + c3[w] + c2[b] + c1[a];
        else if (x > b) z = c4[w] + c3[x] + c2[b] + c1[a];
        else if (x > a) z = c4[w] + c3[b] + c2[x] + c1[a];
        else z = c4[w] + c3[b] + c2[a] + c1[x];
        if (apparent) next_cleared.insert(z, 0);
        else columns.push_back({idx, static_cast<double>(diam), z});
      }
    }
  }

  // The top-dimension triangle columns from RipsOptions (the GPU path's apparent-pair pass): the
  // same decisions as assemble_triangles<false> made elsewhere; here only clearing and the
  // threshold (which includes the enclosing radius) are applied.
  void add_given_triangles(const IndexMap& cleared, std::vector<Column>& columns) const {
    const index_t ntri = binom_(n_, 3), ntet = binom_(n_, 4);
    columns.reserve(static_cast<size_t>(opt_.triangle_count));
    for (int64_t i = 0; i < opt_.triangle_count; ++i) {
      const index_t idx = opt_.triangle_index[i], z = opt_.triangle_zero[i];
      const double diam = opt_.triangle_diam[i];
      MEDSEG_CHECK(idx >= 0 && idx < ntri && z >= -1 && z < ntet,
                   "vietoris_rips: internal, a given triangle column is out of range");
      if (diam > threshold_ || cleared.contains(idx)) continue;
      columns.push_back({idx, diam, z < 0 ? kNone : z});
    }
  }

  // The largest vertex x outside {w, b, a} with max(rw[x], rb[x], ra[x]) <= limit, or -1: the
  // added vertex of the earliest cofacet of the triangle {w, b, a} with diameter `limit`. Four
  // vertices per step with SSE for float; one branch per vertex otherwise.
  static int64_t last_vertex_within(const value_t* rw, const value_t* rb, const value_t* ra, value_t limit, int64_t n,
                                    int64_t w, int64_t b, int64_t a) {
    int64_t x = n;
#if defined(__SSE2__)
    if constexpr (std::is_same_v<value_t, float>) {
      const __m128 lim = _mm_set1_ps(limit);
      while (x >= 4) {
        x -= 4;
        const __m128 m = _mm_max_ps(_mm_max_ps(_mm_loadu_ps(rw + x), _mm_loadu_ps(rb + x)), _mm_loadu_ps(ra + x));
        int mask = _mm_movemask_ps(_mm_cmple_ps(m, lim));
        while (mask != 0) {
          const int bit = 31 - __builtin_clz(static_cast<unsigned>(mask));
          const int64_t y = x + bit;
          if (y != w && y != b && y != a) return y;
          mask &= ~(1 << bit);
        }
      }
    }
#endif
    while (--x >= 0) {
      const value_t m = std::max(std::max(rw[x], rb[x]), ra[x]);
      if (m <= limit && x != w && x != b && x != a) return x;
    }
    return -1;
  }

  // A d-simplex that forms an apparent pair with its earliest cofacet is not a column: the pair
  // has zero persistence, and the cofacet is recorded for clearing in dimension d+1. Otherwise it
  // becomes a column (with its zero-diameter earliest cofacet, if any, for the emergent check).
  bool add_column_or_record_apparent(index_t idx, double diam, int d, const int64_t* v, bool keep_next,
                                     std::vector<Column>& columns, IndexMap& next_cleared) const {
    int64_t w = -1;
    const index_t z = zero_pivot_cofacet_v(idx, diam, d, v, &w);
    if (z == kNone) {
      columns.push_back({idx, diam, z});
      return false;
    }
    // vertices of the cofacet: v with w inserted (descending), no decoding needed
    int64_t u[8], f[8];
    int c = 0, i = 0;
    for (; i <= d && v[i] > w; ++i) u[c++] = v[i];
    u[c++] = w;
    for (; i <= d; ++i) u[c++] = v[i];
    if (zero_pivot_facet_v(diam, d + 1, u, f) == idx) {
      if (keep_next) next_cleared.insert(z, 0);
      return true;
    }
    columns.push_back({idx, diam, z});
    return false;
  }

 private:
  double diameter_of(const int64_t* v, int count) const {
    double diam = 0;
    for (int i = 0; i < count; ++i)
      for (int j = i + 1; j < count; ++j) diam = std::max(diam, static_cast<double>(dist_[v[i] * n_ + v[j]]));
    return diam;
  }

  // Vertices of a dim-simplex, descending. Level k: the largest v <= top with C(v, k) <= idx; a
  // binary search for k >= 3, the inverse of v(v-1)/2 (then exact correction steps) for k = 2,
  // and v = idx for k = 1.
  void get_vertices(index_t idx, int dim, int64_t* out) const {
    int64_t top = n_ - 1;
    for (int k = dim + 1; k >= 1; --k) {
      int64_t v;
      if (k == 1) {
        v = idx;
      } else if (k == 2) {
        v = static_cast<int64_t>(0.5 * (1.0 + std::sqrt(1.0 + 8.0 * static_cast<double>(idx))));
        v = std::min(std::max<int64_t>(v, 1), top);
        while (v > 1 && binom_(v, 2) > idx) --v;
        while (v < top && binom_(v + 1, 2) <= idx) ++v;
      } else {
        int64_t lo = k - 1, hi = top;
        while (lo < hi) {
          const int64_t mid = lo + (hi - lo + 1) / 2;
          if (binom_(mid, k) <= idx) lo = mid;
          else hi = mid - 1;
        }
        v = lo;
      }
      out[dim + 1 - k] = v;
      idx -= binom_(v, k);
      top = v - 1;
    }
  }

  // Earliest cofacet of a simplex if its diameter equals `diam`, else kNone. Cofacets come in
  // descending index order, so the first with that diameter is the earliest.
  index_t zero_pivot_cofacet(index_t idx, double diam, int dim) const {
    int64_t v[8];
    get_vertices(idx, dim, v);
    return zero_pivot_cofacet_v(idx, diam, dim, v);
  }

  // The same with the vertices (descending) known. Reads rows of the (symmetric) distance matrix,
  // so the scan over w is contiguous in memory.
  // `added` (optional) receives the vertex that makes the cofacet.
  index_t zero_pivot_cofacet_v(index_t idx, double diam, int dim, const int64_t* v, int64_t* added = nullptr) const {
    const value_t limit = static_cast<value_t>(diam);  // exact: diam is a value_t value
    const value_t* row[8];
    for (int i = 0; i <= dim; ++i) row[i] = dist_.data() + v[i] * n_;
    // w runs down through the gaps between the simplex's vertices; in the gap below the j-th
    // vertex, j vertices lie above w (combinatorial-number-system bookkeeping per gap)
    index_t below = idx, above = 0;
    int k = dim + 1;
    int64_t hi = n_ - 1;
    for (int j = 0; j <= dim + 1; ++j) {
      const int64_t lo = j <= dim ? v[j] + 1 : 0;
      for (int64_t w = hi; w >= lo; --w) {
        if (row[0][w] > limit) continue;
        bool equal = true;
        for (int i = 1; i <= dim; ++i)
          if (row[i][w] > limit) {
            equal = false;
            break;
          }
        if (equal) {
          if (added != nullptr) *added = w;
          return above + binom_(w, k + 1) + below;
        }
      }
      if (j <= dim) {
        below -= binom_(v[j], k);
        above += binom_(v[j], k + 1);
        --k;
        hi = v[j] - 1;
      }
    }
    return kNone;
  }

  // Latest facet of a simplex if its diameter equals `diam`, else kNone. Facets in ascending index
  // order (dropping the largest vertex first); the first with that diameter is the latest.
  // `facet` receives the facet's vertices when one is found.
  index_t zero_pivot_facet_v(double diam, int dim, const int64_t* u, int64_t* facet) const {
    for (int j = 0; j <= dim; ++j) {
      int c = 0;
      for (int i = 0; i <= dim; ++i)
        if (i != j) facet[c++] = u[i];
      if (diameter_of(facet, dim) == diam) {
        index_t fidx = 0;
        for (int i = 0; i < dim; ++i) fidx += binom_(facet[i], dim - i);
        return fidx;
      }
    }
    return kNone;
  }

  index_t zero_pivot_facet(index_t idx, double diam, int dim) const {
    int64_t u[8], f[8];
    get_vertices(idx, dim, u);
    return zero_pivot_facet_v(diam, dim, u, f);
  }

  // Appends the coboundary (within the threshold) of a dim-simplex, times `factor`.
  void coboundary(index_t idx, double diam, int dim, int32_t factor, std::vector<Entry>& out) const {
    int64_t v[8];
    get_vertices(idx, dim, v);
    const value_t* row[8];
    for (int i = 0; i <= dim; ++i) row[i] = dist_.data() + v[i] * n_;
    const int32_t negated = (p_ - factor) % p_;
    index_t below = idx, above = 0;
    int k = dim + 1;
    int64_t hi = n_ - 1;
    for (int j = 0; j <= dim + 1; ++j) {
      const int64_t lo = j <= dim ? v[j] + 1 : 0;
      const int32_t coef = (j & 1) ? negated : factor;  // orientation: (-1)^(vertices above w)
      for (int64_t w = hi; w >= lo; --w) {
        value_t dmax = row[0][w];
        for (int i = 1; i <= dim; ++i) dmax = std::max(dmax, row[i][w]);
        const double d = std::max(diam, static_cast<double>(dmax));
        if (d > threshold_) continue;
        out.push_back({above + binom_(w, k + 1) + below, static_cast<value_t>(d), coef});
      }
      if (j <= dim) {
        below -= binom_(v[j], k);
        above += binom_(v[j], k + 1);
        --k;
        hi = v[j] - 1;
      }
    }
  }

  double simplex_diameter(index_t idx, int dim) const {
    int64_t v[8];
    get_vertices(idx, dim, v);
    return diameter_of(v, dim + 1);
  }

  // Pops the earliest entry with a nonzero total coefficient; false when the column is zero.
  bool pop_pivot(std::vector<Entry>& heap, Entry& pivot) {
    HeapLater cmp;
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), cmp);
      Entry e = heap.back();
      heap.pop_back();
      int64_t coef = e.coef;
      while (!heap.empty() && heap.front().index == e.index) {
        coef += heap.front().coef;
        std::pop_heap(heap.begin(), heap.end(), cmp);
        heap.pop_back();
      }
      coef %= p_;
      if (coef != 0) {
        e.coef = static_cast<int32_t>(coef);
        pivot = e;
        return true;
      }
    }
    return false;
  }

  void push_all(std::vector<Entry>& heap, const std::vector<Entry>& add) {
    HeapLater cmp;
    for (const Entry& e : add) {
      heap.push_back(e);
      std::push_heap(heap.begin(), heap.end(), cmp);
    }
  }

  // Combines the duplicate entries of a lazily stored column (coefficients summed mod p, zeros
  // dropped), in place; the column's sum is unchanged.
  void compact_slot(PivotSlot& slot) {
    Entry* first = stored_.data() + slot.begin;
    Entry* last = stored_.data() + slot.end;
    std::sort(first, last, [](const Entry& a, const Entry& b) { return a.index < b.index; });
    Entry* out = first;
    for (Entry* it = first; it != last;) {
      int64_t coef = 0;
      Entry* run = it;
      for (; it != last && it->index == run->index; ++it) coef += it->coef;
      coef %= p_;
      if (coef != 0) {
        *out = *run;
        out->coef = static_cast<int32_t>(coef);
        ++out;
      }
    }
    slot.end = slot.begin + (out - first);
    slot.compact = true;
  }

  int32_t coefficient_of(const std::vector<Entry>& col, index_t idx) const {
    for (const Entry& e : col)
      if (e.index == idx) return e.coef;
    fail("vietoris_rips: internal error, pivot missing from a column");
  }

  void reduce_dimension(int d, const std::vector<Column>& columns, IndexMap& pivots) {
    std::vector<Entry>& heap = ws_.heap;
    std::vector<Entry>& scratch = ws_.scratch;
    auto add_pivot = [&](index_t pivot, const PivotSlot& slot) {
      pivots.insert(pivot, static_cast<int64_t>(slots_.size()));
      slots_.push_back(slot);
    };
    for (const Column& col : columns) {
      // Emergent pair: the earliest cofacet has the column's diameter and no column holds it yet
      // (neither a reduced one nor a skipped apparent one), so the column is already reduced.
      if (col.zero_cofacet != kNone && !pivots.contains(col.zero_cofacet)) {
        const index_t f = zero_pivot_facet(col.zero_cofacet, col.diam, d + 1);
        const bool taken_by_apparent =
            f != kNone && f != col.index && zero_pivot_cofacet(f, col.diam, d) == col.zero_cofacet;
        if (!taken_by_apparent) {
          int32_t coef = 1;  // over Z/2 every coefficient is 1
          if (p_ != 2) {
            scratch.clear();
            coboundary(col.index, col.diam, d, 1, scratch);
            coef = coefficient_of(scratch, col.zero_cofacet);
          }
          add_pivot(col.zero_cofacet, {col.index, -1, -1, coef, true});
          continue;
        }
      }
      // Plain coboundary first (its entries are distinct cofacets, so its pivot is its earliest
      // entry): when that pivot is new the column is reduced as it is and is stored as "recompute"
      // (no heap, no explicit copy). Only columns that need additions go through the heap.
      heap.clear();
      coboundary(col.index, col.diam, d, 1, heap);
      if (heap.empty()) {
        out_[d].push_back(col.diam);
        out_[d].push_back(std::numeric_limits<double>::infinity());
        continue;
      }
      {
        const Entry* first = &heap[0];
        for (const Entry& e : heap)
          if (later_in_filtration(first->diam, first->index, e.diam, e.index)) first = &e;
        if (!pivots.contains(first->index)) {
          const index_t f = zero_pivot_facet(first->index, first->diam, d + 1);
          const bool apparent = f != kNone && zero_pivot_cofacet(f, first->diam, d) == first->index;
          if (!apparent) {
            add_pivot(first->index, {col.index, -1, -1, first->coef, true});
            if (first->diam > col.diam) {
              out_[d].push_back(col.diam);
              out_[d].push_back(first->diam);
            }
            continue;
          }
        }
      }
      std::make_heap(heap.begin(), heap.end(), HeapLater());
      Entry pivot;
      while (true) {
        if (!pop_pivot(heap, pivot)) {  // zero column: an essential class
          out_[d].push_back(col.diam);
          out_[d].push_back(std::numeric_limits<double>::infinity());
          break;
        }
        const int64_t* found = pivots.find(pivot.index);
        index_t apparent = kNone;
        if (found == nullptr) {
          const index_t f = zero_pivot_facet(pivot.index, pivot.diam, d + 1);
          if (f != kNone && zero_pivot_cofacet(f, pivot.diam, d) == pivot.index) apparent = f;
        }
        if (found == nullptr && apparent == kNone) {
          // new pivot: store the reduced column lazily, as the heap's raw contents (pivot first,
          // the rest unsorted, duplicates not yet combined): a copy, no pops. Most stored columns
          // are never added to another one; those that are get compacted on first use.
          PivotSlot slot{col.index, static_cast<int64_t>(stored_.size()), 0, pivot.coef, false};
          stored_.push_back(pivot);
          stored_.insert(stored_.end(), heap.begin(), heap.end());
          slot.end = static_cast<int64_t>(stored_.size());
          add_pivot(pivot.index, slot);
          if (pivot.diam > col.diam) {
            out_[d].push_back(col.diam);
            out_[d].push_back(pivot.diam);
          }
          break;
        }
        // add factor × (the other column) so that the pivot cancels
        heap.push_back(pivot);
        std::push_heap(heap.begin(), heap.end(), HeapLater());
        scratch.clear();
        PivotSlot* slot = found != nullptr ? &slots_[*found] : nullptr;
        if (slot != nullptr && slot->begin >= 0) {
          if (!slot->compact) compact_slot(*slot);
          const int32_t factor = static_cast<int32_t>(((p_ - pivot.coef) % p_) * inverse_[slot->pivot_coef] % p_);
          for (int64_t i = slot->begin; i < slot->end; ++i) {
            Entry e = stored_[i];
            e.coef = static_cast<int32_t>((static_cast<int64_t>(e.coef) * factor) % p_);
            scratch.push_back(e);
          }
        } else {  // a column that is its own coboundary (emergent or apparent): recompute it
          const index_t simplex = slot != nullptr ? slot->simplex : apparent;
          coboundary(simplex, simplex_diameter(simplex, d), d, 1, scratch);
          const int32_t other_coef = slot != nullptr ? slot->pivot_coef : coefficient_of(scratch, pivot.index);
          const int32_t factor = static_cast<int32_t>(((p_ - pivot.coef) % p_) * inverse_[other_coef] % p_);
          if (factor != 1)
            for (Entry& e : scratch) e.coef = static_cast<int32_t>((static_cast<int64_t>(e.coef) * factor) % p_);
        }
        push_all(heap, scratch);
      }
    }
  }

  // Filtration order (diameter ascending, ties: larger index first). For float values and edge
  // indices below 2^32 one 64-bit key per edge, (float bits << 32) | (2^32 - 1 - index): the bits
  // of a non-negative float (no -0: see the constructor) order as its value.
  void sort_edges_in_filtration_order(std::vector<Column>& edges) {
    if constexpr (std::is_same_v<value_t, float>) {
      if (binom_(n_, 2) <= index_t(0xFFFFFFFF)) {
        std::vector<uint64_t>& keys = ws_.keys;
        keys.resize(edges.size());
        for (size_t i = 0; i < edges.size(); ++i) {
          const float f = static_cast<float>(edges[i].diam);
          uint32_t bits;
          std::memcpy(&bits, &f, 4);
          keys[i] = (static_cast<uint64_t>(bits) << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(edges[i].index));
        }
        std::sort(keys.begin(), keys.end());
        for (size_t i = 0; i < edges.size(); ++i) {
          const uint32_t bits = static_cast<uint32_t>(keys[i] >> 32);
          float f;
          std::memcpy(&f, &bits, 4);
          edges[i] = {static_cast<index_t>(0xFFFFFFFFu - static_cast<uint32_t>(keys[i])), static_cast<double>(f), kNone};
        }
        return;
      }
    }
    std::sort(edges.begin(), edges.end(), [](const Column& a, const Column& b) {
      return later_in_filtration(b.diam, b.index, a.diam, a.index);
    });
  }

  void compute_h0(std::vector<Column>& edges_to_reduce, std::vector<Column>& simplices) {
    std::vector<Column>& edges = ws_.edges;
    edges.clear();
    for (int64_t j = 1; j < n_; ++j)
      for (int64_t i = 0; i < j; ++i) {
        const double d = static_cast<double>(dist_[j * n_ + i]);
        if (d <= threshold_) edges.push_back({binom_(j, 2) + i, d, kNone});
      }
    // the edge list builds dimension 2, unless its columns are given (RipsOptions::triangle_*)
    if (maxdim_ > 2 || (maxdim_ == 2 && opt_.triangle_count < 0)) simplices.assign(edges.begin(), edges.end());
    sort_edges_in_filtration_order(edges);
    std::vector<int64_t>& parent = ws_.parent;
    parent.resize(static_cast<size_t>(n_));
    std::iota(parent.begin(), parent.end(), 0);
    auto find = [&](int64_t x) {
      while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
      }
      return x;
    };
    for (const Column& e : edges) {
      int64_t v[2];
      get_vertices(e.index, 1, v);
      const int64_t a = find(v[0]), b = find(v[1]);
      if (a != b) {
        parent[std::max(a, b)] = std::min(a, b);
        if (e.diam > 0) {
          out_[0].push_back(0.0);
          out_[0].push_back(e.diam);
        }
      } else if (maxdim_ >= 1) {
        edges_to_reduce.push_back(e);
      }
    }
    for (int64_t i = 0; i < n_; ++i)
      if (find(i) == i) {
        out_[0].push_back(0.0);
        out_[0].push_back(std::numeric_limits<double>::infinity());
      }
    // dimension-1 columns in reverse filtration order
    std::reverse(edges_to_reduce.begin(), edges_to_reduce.end());
  }

  int64_t n_;
  int maxdim_;
  int p_;
  BinomialTable binom_;
  Workspace<value_t>& ws_;
  std::vector<value_t>& dist_;
  double threshold_;
  std::vector<int> inverse_;
  Diagrams out_;
  std::vector<PivotSlot>& slots_;
  std::vector<Entry>& stored_;
  std::vector<uint64_t>& cleared_bits_;
  const RipsOptions& opt_;
};

}  // namespace

void check_index_range(int64_t n, int maxdim) {
  MEDSEG_CHECK(maxdim >= 0 && maxdim <= 5, "maxdim: expected 0..5, got ", maxdim);
  BinomialTable table(n, maxdim + 2);
  (void)table;
}

Diagrams rips_from_distances(const double* dist, int64_t n, const RipsOptions& opt) {
  RipsWorkspace local;
  return rips_from_distances(dist, n, opt, local);
}

struct RipsWorkspace::Impl {
  Workspace<float> f32;
  Workspace<double> f64;
};

RipsWorkspace::RipsWorkspace() : impl_(new Impl) {}
RipsWorkspace::~RipsWorkspace() = default;

namespace {
template <typename value_t>
Diagrams run_in(Workspace<value_t>& ws, const double* dist, int64_t n, const RipsOptions& opt) {
  Diagrams out = RipsComputer<value_t>(dist, n, opt, ws).run();
  // a workspace that grew past 256 MiB (one big cloud) is given back rather than kept
  if (ws.bytes() > (size_t(256) << 20)) ws = Workspace<value_t>();
  return out;
}
}  // namespace

Diagrams rips_from_distances(const double* dist, int64_t n, const RipsOptions& opt, RipsWorkspace& ws) {
  MEDSEG_CHECK(opt.maxdim >= 0 && opt.maxdim <= 5, "maxdim: expected 0..5, got ", opt.maxdim);
  MEDSEG_CHECK(opt.coeff >= 2, "coeff: expected a prime, got ", opt.coeff);
  for (int a = 2; a * a <= opt.coeff; ++a) MEDSEG_CHECK(opt.coeff % a != 0, "coeff: expected a prime, got ", opt.coeff);
  MEDSEG_CHECK(opt.coeff < 46341, "coeff: expected a prime below 46341, got ", opt.coeff);
  if (opt.float64) return run_in(ws.impl_->f64, dist, n, opt);
  return run_in(ws.impl_->f32, dist, n, opt);
}

namespace {
// max|diff| * sqrt(sum (diff / max|diff|)^2): no overflow or underflow of the squares; +inf when a
// coordinate difference itself overflows (the distance is beyond float64).
double scaled_euclidean(const double* a, const double* b, int64_t dim) {
  double mx = 0;
  for (int64_t k = 0; k < dim; ++k) mx = std::max(mx, std::fabs(a[k] - b[k]));
  if (mx == 0 || std::isinf(mx)) return mx;
  double s = 0;
  for (int64_t k = 0; k < dim; ++k) {
    const double r = std::fabs(a[k] - b[k]) / mx;
    s += r * r;
  }
  return mx * std::sqrt(s);
}
}  // namespace

void pairwise_distances(const double* points, int64_t n, int64_t dim, Metric metric, double* out) {
  for (int64_t i = 0; i < n; ++i) {
    out[i * n + i] = 0.0;
    for (int64_t j = i + 1; j < n; ++j) {
      const double* a = points + i * dim;
      const double* b = points + j * dim;
      double acc = 0;
      for (int64_t k = 0; k < dim; ++k) {
        const double diff = std::fabs(a[k] - b[k]);
        if (metric == Metric::Euclidean) acc += diff * diff;
        else if (metric == Metric::Manhattan) acc += diff;
        else acc = std::max(acc, diff);
      }
      if (metric == Metric::Euclidean) {
        acc = std::sqrt(acc);
        // The sum of squares overflows for |diff| > ~1e154 (inf) and underflows for |diff| < ~1e-154
        // (0 or few digits) although the distance itself is representable: such entries (also exact
        // zeros) are recomputed scaled by the largest |diff|. The same rule as the GPU path's
        // _rescale_extreme_distances (medseg_ext/topology/rips.py), so both give the same doubles.
        if (std::isinf(acc) || acc < 0x1p-450) acc = scaled_euclidean(a, b, dim);
      }
      out[i * n + j] = acc;
      out[j * n + i] = acc;
    }
  }
}

double rips_memory_estimate(int64_t n, int maxdim, bool float64) {
  const double value = float64 ? 8.0 : 4.0;
  double bytes = static_cast<double>(n) * n * (8.0 + value);  // double input + value_t copy
  // simplices of the largest reduced dimension (list + column entry), upper bound C(n, d+1)
  double count = 1;
  for (int k = 1; k <= std::max(1, maxdim) + 1; ++k) count = count * static_cast<double>(n - k + 1) / k;
  if (maxdim >= 1) bytes += std::max(0.0, count) * (sizeof(Column) * 2.0);
  else bytes += static_cast<double>(n) * (n - 1) / 2 * sizeof(Column);
  return bytes;
}

double rips_memory_estimate_cloud(const double* dist, int64_t n, int maxdim, double threshold, bool float64) {
  if (n == 0) return 0.0;
  const double value = float64 ? 8.0 : 4.0;
  // the effective threshold, as RipsComputer uses it (values compared in double here: the bound
  // only needs to be close)
  double enclosing = std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n; ++i) {
    double r = 0;
    for (int64_t j = 0; j < n; ++j) r = std::max(r, dist[i * n + j]);
    enclosing = std::min(enclosing, r);
  }
  const double thr = std::min(threshold, enclosing);
  double edges = 0, max_degree = 0;
  for (int64_t i = 0; i < n; ++i) {
    double deg = 0;
    for (int64_t j = 0; j < n; ++j)
      if (j != i && dist[i * n + j] <= thr) deg += 1;
    edges += deg;
    max_degree = std::max(max_degree, deg);
  }
  edges /= 2;
  // Triangles counted exactly (bitset adjacency, popcount of common neighbours above the edge);
  // higher counts extrapolated: N_k ≈ N_(k-1) · t / (k+1), t = 3·N_2/N_1 the mean number of
  // triangles on an edge, capped by the degree bound N_(k-1)·(Δ−k+1)/(k+1) and by C(n, k+1).
  double triangles = 0;
  if (maxdim >= 2 && n >= 3) {
    const int64_t words = (n + 63) / 64;
    std::vector<uint64_t> adj(static_cast<size_t>(n * words), 0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        if (j != i && dist[i * n + j] <= thr) adj[i * words + j / 64] |= uint64_t(1) << (j % 64);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j) {
        if (!(dist[i * n + j] <= thr)) continue;
        // common neighbours k > j
        int64_t w0 = (j + 1) / 64;
        for (int64_t w = w0; w < words; ++w) {
          uint64_t bits = adj[i * words + w] & adj[j * words + w];
          if (w == w0) bits &= ~uint64_t(0) << ((j + 1) % 64);
          triangles += static_cast<double>(__builtin_popcountll(bits));
        }
      }
  }
  double bytes = static_cast<double>(n) * n * (8.0 + value);
  // below the top dimension every simplex is listed and may enter the clearing map; in the top
  // dimension only columns are kept (all of them, in the worst case counted here)
  auto per_simplex = [&](int k) { return k < maxdim ? 2.0 * sizeof(Column) + 64.0 : 1.0 * sizeof(Column); };
  double count = edges, binom = static_cast<double>(n) * (n - 1) / 2;
  bytes += count * per_simplex(1);
  const double per_edge = edges > 0 ? 3.0 * triangles / edges : 0.0;
  for (int k = 2; k <= maxdim; ++k) {
    binom = binom * static_cast<double>(n - k) / (k + 1);
    const double degree_bound = count * std::max(0.0, max_degree - k + 1) / (k + 1);
    count = k == 2 ? triangles : std::min(degree_bound, count * per_edge / (k + 1));
    count = std::min(count, binom);
    bytes += count * per_simplex(k);
  }
  return bytes;
}

}  // namespace topology
}  // namespace medseg
