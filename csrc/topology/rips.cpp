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
#include <unordered_map>
#include <vector>

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

 private:
  index_t& at(int64_t v, int k) { return table_[k * (n_ + 1) + v]; }
  int64_t n_;
  int kmax_;
  std::vector<index_t> table_;
};

struct Entry {
  index_t index;
  double diam;  // stored in double; the values themselves are of the filtration's value type
  int32_t coef;
};

// Filtration order: smaller diameter first, ties broken by larger index first.
inline bool later_in_filtration(double da, index_t ia, double db, index_t ib) {
  return da > db || (da == db && ia < ib);
}
struct HeapLater {
  bool operator()(const Entry& a, const Entry& b) const {
    return later_in_filtration(a.diam, a.index, b.diam, b.index);
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
};

template <typename value_t>
class RipsComputer {
 public:
  RipsComputer(const double* dist, int64_t n, const RipsOptions& opt)
      : n_(n), maxdim_(opt.maxdim), p_(opt.coeff), binom_(n, opt.maxdim + 2), dist_(n * n) {
    for (int64_t i = 0; i < n * n; ++i) dist_[i] = static_cast<value_t>(dist[i]);
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
    inverse_.assign(p_, 0);
    for (int a = 1; a < p_; ++a)
      for (int b = 1; b < p_; ++b)
        if ((a * b) % p_ == 1) inverse_[a] = b;
    out_.assign(maxdim_ + 1, {});
  }

  Diagrams run() {
    if (n_ == 0) return out_;
    // Dimension 1 needs no clearing list: compute_h0 hands over only the edges that did not merge
    // two components (the others are the dimension-0 pivots).
    std::vector<Column> edges_to_reduce;
    std::vector<Column> simplices;  // all d-simplices within the threshold, for building d+1
    compute_h0(edges_to_reduce, simplices);
    std::unordered_map<index_t, PivotSlot> pivots;
    for (int d = 1; d <= maxdim_; ++d) {
      std::vector<Column> columns;
      if (d == 1) {
        columns.reserve(edges_to_reduce.size());
        for (const Column& e : edges_to_reduce) {
          const index_t z = zero_pivot_cofacet(e.index, e.diam, 1);
          if (z != kNone && zero_pivot_facet(z, e.diam, 2) == e.index) continue;  // apparent pair
          columns.push_back({e.index, e.diam, z});
        }
        edges_to_reduce.clear();
        edges_to_reduce.shrink_to_fit();
      } else {
        std::vector<Column> next;
        if (d < maxdim_) next.reserve(simplices.size());
        // simplices holds the (d-1)-simplices; their upward cofacets are every d-simplex once
        for (const Column& s : simplices) {
          verts_.resize(d);
          get_vertices(s.index, d - 1, verts_.data());
          for (int64_t w = n_ - 1; w > verts_[0]; --w) {
            double diam = s.diam;
            for (int i = 0; i < d; ++i) diam = std::max(diam, static_cast<double>(dist_[w * n_ + verts_[i]]));
            if (diam > threshold_) continue;
            const index_t idx = s.index + binom_(w, d + 1);
            if (d < maxdim_) next.push_back({idx, diam, kNone});
            if (pivots.count(idx)) continue;  // cleared
            const index_t f = zero_pivot_facet(idx, diam, d);
            if (f != kNone && zero_pivot_cofacet(f, diam, d - 1) == idx) continue;  // apparent, as cofacet
            const index_t z = zero_pivot_cofacet(idx, diam, d);
            if (z != kNone && zero_pivot_facet(z, diam, d + 1) == idx) continue;  // apparent, as facet
            columns.push_back({idx, diam, z});
          }
        }
        simplices.swap(next);
      }
      std::sort(columns.begin(), columns.end(), [](const Column& a, const Column& b) {
        return later_in_filtration(a.diam, a.index, b.diam, b.index);
      });
      pivots.clear();
      stored_.clear();
      reduce_dimension(d, columns, pivots);
    }
    return out_;
  }

 private:
  double diameter_of(const int64_t* v, int count) const {
    double diam = 0;
    for (int i = 0; i < count; ++i)
      for (int j = i + 1; j < count; ++j) diam = std::max(diam, static_cast<double>(dist_[v[i] * n_ + v[j]]));
    return diam;
  }

  // Vertices of a dim-simplex, descending.
  void get_vertices(index_t idx, int dim, int64_t* out) const {
    int64_t top = n_ - 1;
    for (int k = dim + 1; k >= 1; --k) {
      // largest v in [k-1, top] with C(v, k) <= idx
      int64_t lo = k - 1, hi = top;
      while (lo < hi) {
        const int64_t mid = lo + (hi - lo + 1) / 2;
        if (binom_(mid, k) <= idx) lo = mid;
        else hi = mid - 1;
      }
      out[dim + 1 - k] = lo;
      idx -= binom_(lo, k);
      top = lo - 1;
    }
  }

  // Earliest cofacet of a simplex if its diameter equals `diam`, else kNone. Cofacets come in
  // descending index order, so the first with that diameter is the earliest.
  index_t zero_pivot_cofacet(index_t idx, double diam, int dim) {
    int64_t v[8];
    get_vertices(idx, dim, v);
    index_t below = idx, above = 0;
    int j = 0, k = dim + 1;
    for (int64_t w = n_ - 1; w >= 0; --w) {
      if (j <= dim && w == v[j]) {
        below -= binom_(v[j], k);
        above += binom_(v[j], k + 1);
        --k;
        ++j;
        continue;
      }
      bool equal = true;
      for (int i = 0; i <= dim && equal; ++i)
        if (static_cast<double>(dist_[w * n_ + v[i]]) > diam) equal = false;
      if (equal) return above + binom_(w, k + 1) + below;
    }
    return kNone;
  }

  // Latest facet of a simplex if its diameter equals `diam`, else kNone. Facets in ascending index
  // order (dropping the largest vertex first); the first with that diameter is the latest.
  index_t zero_pivot_facet(index_t idx, double diam, int dim) {
    int64_t u[8], f[8];
    get_vertices(idx, dim, u);
    for (int j = 0; j <= dim; ++j) {
      int c = 0;
      for (int i = 0; i <= dim; ++i)
        if (i != j) f[c++] = u[i];
      if (diameter_of(f, dim) == diam) {
        index_t fidx = 0;
        for (int i = 0; i < dim; ++i) fidx += binom_(f[i], dim - i);
        return fidx;
      }
    }
    return kNone;
  }

  // Appends the coboundary (within the threshold) of a dim-simplex, times `factor`.
  void coboundary(index_t idx, double diam, int dim, int32_t factor, std::vector<Entry>& out) {
    int64_t v[8];
    get_vertices(idx, dim, v);
    index_t below = idx, above = 0;
    int j = 0, k = dim + 1;
    for (int64_t w = n_ - 1; w >= 0; --w) {
      if (j <= dim && w == v[j]) {
        below -= binom_(v[j], k);
        above += binom_(v[j], k + 1);
        --k;
        ++j;
        continue;
      }
      double d = diam;
      for (int i = 0; i <= dim; ++i) d = std::max(d, static_cast<double>(dist_[w * n_ + v[i]]));
      if (d > threshold_) continue;
      // orientation: (-1)^(number of vertices above w)
      int32_t c = (j & 1) ? (p_ - factor) % p_ : factor;
      out.push_back({above + binom_(w, k + 1) + below, d, c});
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

  int32_t coefficient_of(const std::vector<Entry>& col, index_t idx) const {
    for (const Entry& e : col)
      if (e.index == idx) return e.coef;
    fail("vietoris_rips: internal error, pivot missing from a column");
  }

  void reduce_dimension(int d, const std::vector<Column>& columns, std::unordered_map<index_t, PivotSlot>& pivots) {
    pivots.reserve(columns.size());
    std::vector<Entry> heap, scratch;
    for (const Column& col : columns) {
      // Emergent pair: the earliest cofacet has the column's diameter and is free.
      if (col.zero_cofacet != kNone && !pivots.count(col.zero_cofacet)) {
        const index_t f = zero_pivot_facet(col.zero_cofacet, col.diam, d + 1);
        const bool taken_by_apparent = f != kNone && f != col.index && zero_pivot_cofacet(f, col.diam, d) == col.zero_cofacet;
        if (!taken_by_apparent) {
          scratch.clear();
          coboundary(col.index, col.diam, d, 1, scratch);
          pivots[col.zero_cofacet] = {col.index, -1, -1, coefficient_of(scratch, col.zero_cofacet)};
          continue;
        }
      }
      heap.clear();
      coboundary(col.index, col.diam, d, 1, heap);
      std::make_heap(heap.begin(), heap.end(), HeapLater());
      Entry pivot;
      while (true) {
        if (!pop_pivot(heap, pivot)) {
          out_[d].push_back(col.diam);
          out_[d].push_back(std::numeric_limits<double>::infinity());
          break;
        }
        auto it = pivots.find(pivot.index);
        index_t other = kNone;
        int32_t other_coef = 0;
        const PivotSlot* slot = nullptr;
        if (it != pivots.end()) {
          slot = &it->second;
          other_coef = slot->pivot_coef;
        } else {
          const index_t f = zero_pivot_facet(pivot.index, pivot.diam, d + 1);
          if (f != kNone && zero_pivot_cofacet(f, pivot.diam, d) == pivot.index) other = f;  // apparent column
        }
        if (slot == nullptr && other == kNone) {
          // new pivot: store the reduced column (pivot first, then the rest in filtration order)
          PivotSlot s{col.index, static_cast<int64_t>(stored_.size()), 0, pivot.coef};
          stored_.push_back(pivot);
          Entry e;
          while (pop_pivot(heap, e)) stored_.push_back(e);
          s.end = static_cast<int64_t>(stored_.size());
          pivots[pivot.index] = s;
          if (pivot.diam > col.diam) {
            out_[d].push_back(col.diam);
            out_[d].push_back(pivot.diam);
          }
          break;
        }
        // add factor × other column so that the pivot cancels
        heap.push_back(pivot);
        std::push_heap(heap.begin(), heap.end(), HeapLater());
        scratch.clear();
        if (slot != nullptr && slot->begin >= 0) {
          const int32_t factor = static_cast<int32_t>(((p_ - pivot.coef) % p_) * inverse_[other_coef] % p_);
          for (int64_t i = slot->begin; i < slot->end; ++i) {
            Entry e = stored_[i];
            e.coef = static_cast<int32_t>((static_cast<int64_t>(e.coef) * factor) % p_);
            scratch.push_back(e);
          }
        } else {
          const index_t simplex = slot != nullptr ? slot->simplex : other;
          const double sdiam = simplex_diameter(simplex, d);
          coboundary(simplex, sdiam, d, 1, scratch);
          if (slot == nullptr) other_coef = coefficient_of(scratch, pivot.index);
          const int32_t factor = static_cast<int32_t>(((p_ - pivot.coef) % p_) * inverse_[other_coef] % p_);
          for (Entry& e : scratch) e.coef = static_cast<int32_t>((static_cast<int64_t>(e.coef) * factor) % p_);
        }
        push_all(heap, scratch);
      }
    }
  }

  void compute_h0(std::vector<Column>& edges_to_reduce, std::vector<Column>& simplices) {
    std::vector<Column> edges;
    for (int64_t j = 1; j < n_; ++j)
      for (int64_t i = 0; i < j; ++i) {
        const double d = static_cast<double>(dist_[j * n_ + i]);
        if (d <= threshold_) edges.push_back({binom_(j, 2) + i, d, kNone});
      }
    if (maxdim_ >= 2) simplices = edges;
    std::sort(edges.begin(), edges.end(), [](const Column& a, const Column& b) {
      return later_in_filtration(b.diam, b.index, a.diam, a.index);  // filtration order
    });
    std::vector<int64_t> parent(n_);
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
  std::vector<value_t> dist_;
  double threshold_;
  std::vector<int> inverse_;
  Diagrams out_;
  std::vector<Entry> stored_;
  std::vector<int64_t> verts_;
};

}  // namespace

void check_index_range(int64_t n, int maxdim) {
  MEDSEG_CHECK(maxdim >= 0 && maxdim <= 5, "maxdim: expected 0..5, got ", maxdim);
  BinomialTable table(n, maxdim + 2);
  (void)table;
}

Diagrams rips_from_distances(const double* dist, int64_t n, const RipsOptions& opt) {
  MEDSEG_CHECK(opt.maxdim >= 0 && opt.maxdim <= 5, "maxdim: expected 0..5, got ", opt.maxdim);
  MEDSEG_CHECK(opt.coeff >= 2, "coeff: expected a prime, got ", opt.coeff);
  for (int a = 2; a * a <= opt.coeff; ++a) MEDSEG_CHECK(opt.coeff % a != 0, "coeff: expected a prime, got ", opt.coeff);
  MEDSEG_CHECK(opt.coeff < 46341, "coeff: expected a prime below 46341, got ", opt.coeff);
  if (opt.float64) return RipsComputer<double>(dist, n, opt).run();
  return RipsComputer<float>(dist, n, opt).run();
}

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
      if (metric == Metric::Euclidean) acc = std::sqrt(acc);
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

}  // namespace topology
}  // namespace medseg
