// Exact distances between persistence diagrams (see rips.h for the entry points).
//
// Wasserstein: the classic reduction to an assignment problem. Diagram A (m points) and B (n points)
// are each augmented with the other's diagonal projections; the (m+n)×(m+n) cost matrix is
//     [ ‖a_i − b_j‖^q            | δ(a_i)^q in every column ]
//     [ δ(b_j)^q in every row    | 0                         ]
// (diagonal slots are interchangeable, so "every column" equals the usual diag(δ), +inf elsewhere,
// without infinities). Solved by shortest augmenting paths with potentials (Kuhn–Munkres /
// Jonker–Volgenant form, O(N³)). δ is (d − b)/2 under L∞ and (d − b)/√2 under L2.
// H0 fast path: when every birth is 0 the optimal matching preserves order, and an O(mn) DP over
// the two sorted death lists is exact (seeds-part1.md §9.1, §10.2.6).
// Bottleneck: the smallest candidate value (a ground distance or a diagonal distance) for which
// the augmented bipartite graph of pairs within that value has a perfect matching (Hopcroft–Karp).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/errors.h"
#include "topology/rips.h"

namespace medseg {
namespace topology {

namespace {

inline double ground_distance(const double* a, const double* b, Ground g) {
  const double db = std::fabs(a[0] - b[0]), dd = std::fabs(a[1] - b[1]);
  return g == Ground::LInf ? std::max(db, dd) : std::hypot(db, dd);
}

inline double diagonal_distance(const double* a, Ground g) {
  const double pers = a[1] - a[0];
  return g == Ground::LInf ? pers / 2.0 : pers / std::sqrt(2.0);
}

inline double power(double x, double q) { return q == 1.0 ? x : (q == 2.0 ? x * x : std::pow(x, q)); }

// Minimum-cost perfect assignment of a dense N×N matrix; returns the column of each row.
// Shortest augmenting paths with dual potentials, one row at a time: a Dijkstra search over the
// columns not yet scanned (a shrinking list, so later steps get cheaper), stopping at the first
// free column; only the scanned rows and columns get their potentials updated (Crouse 2016).
std::vector<int64_t> solve_assignment(const std::vector<double>& cost, int64_t N) {
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> u(N, 0.0), v(N, 0.0), shortest(N);
  std::vector<int64_t> col4row(N, -1), row4col(N, -1), path(N, -1), remaining(N);
  std::vector<char> scanned_row(N), scanned_col(N);
  // Start from feasible duals (column then row reduction: u_i + v_j <= c_ij) and assign greedily
  // where the reduced cost is zero; only the rows left over need a shortest-path search. Any
  // feasible start keeps the searches exact.
  for (int64_t j = 0; j < N; ++j) v[j] = inf;
  for (int64_t i = 0; i < N; ++i) {
    const double* row = cost.data() + i * N;
    for (int64_t j = 0; j < N; ++j) v[j] = std::min(v[j], row[j]);
  }
  for (int64_t i = 0; i < N; ++i) {
    const double* row = cost.data() + i * N;
    double best = inf;
    int64_t arg = -1;
    for (int64_t j = 0; j < N; ++j) {
      const double r = row[j] - v[j];
      if (r < best || (r == best && row4col[j] < 0 && arg >= 0 && row4col[arg] >= 0)) {
        best = r;
        arg = j;
      }
    }
    u[i] = best;
    if (arg >= 0 && row4col[arg] < 0) {
      row4col[arg] = i;
      col4row[i] = arg;
    }
  }
  for (int64_t cur = 0; cur < N; ++cur) {
    if (col4row[cur] >= 0) continue;  // assigned by the greedy start
    double min_val = 0;
    int64_t i = cur, n_remaining = N, sink = -1;
    for (int64_t it = 0; it < N; ++it) remaining[it] = N - 1 - it;
    std::fill(scanned_row.begin(), scanned_row.end(), 0);
    std::fill(scanned_col.begin(), scanned_col.end(), 0);
    std::fill(shortest.begin(), shortest.end(), inf);
    while (sink < 0) {
      scanned_row[i] = 1;
      const double* row = cost.data() + i * N;
      const double base = min_val - u[i];
      int64_t best = -1;
      double lowest = inf;
      for (int64_t it = 0; it < n_remaining; ++it) {
        const int64_t j = remaining[it];
        const double r = base + row[j] - v[j];
        if (r < shortest[j]) {
          path[j] = i;
          shortest[j] = r;
        }
        // ties prefer a free column: the search ends sooner
        if (shortest[j] < lowest || (shortest[j] == lowest && row4col[j] < 0)) {
          lowest = shortest[j];
          best = it;
        }
      }
      MEDSEG_CHECK(best >= 0 && lowest < inf, "wasserstein: internal error, no augmenting path (non-finite cost?)");
      min_val = lowest;
      const int64_t j = remaining[best];
      scanned_col[j] = 1;
      remaining[best] = remaining[--n_remaining];
      if (row4col[j] < 0) sink = j;
      else i = row4col[j];
    }
    u[cur] += min_val;
    for (int64_t r = 0; r < N; ++r)
      if (scanned_row[r] && r != cur) u[r] += min_val - shortest[col4row[r]];
    for (int64_t c = 0; c < N; ++c)
      if (scanned_col[c]) v[c] -= min_val - shortest[c];
    for (int64_t j = sink;;) {  // flip the path
      const int64_t r = path[j];
      row4col[j] = r;
      std::swap(col4row[r], j);
      if (r == cur) break;
    }
  }
  return col4row;
}

bool all_births_zero(DiagramView d) {
  for (int64_t i = 0; i < d.size; ++i)
    if (d.pairs[2 * i] != 0.0) return false;
  return true;
}

// Σ cost^q of an optimal matching of two diagrams whose births are all 0 (deaths >= 0): the
// optimal matching is order-preserving, so T[i][j] = best cost of x[:i] vs y[:j] is a DP over
// match / x to the diagonal / y to the diagonal. Rolling rows; q = 1 without pow.
template <bool kLinear>
double h0_dp_impl(const std::vector<double>& x, const std::vector<double>& y, double q, double c, double scale) {
  const size_t m = x.size(), n = y.size();
  auto pw = [q, scale](double v) { return kLinear ? v / scale : power(v / scale, q); };
  std::vector<double> diag_y(n), prev(n + 1), cur(n + 1);
  for (size_t j = 0; j < n; ++j) diag_y[j] = pw(c * y[j]);
  prev[0] = 0;
  for (size_t j = 1; j <= n; ++j) prev[j] = prev[j - 1] + diag_y[j - 1];
  for (size_t i = 1; i <= m; ++i) {
    const double xi = x[i - 1], da = pw(c * xi);
    cur[0] = prev[0] + da;
    for (size_t j = 1; j <= n; ++j) {
      const double match = prev[j - 1] + pw(std::fabs(xi - y[j - 1]));
      cur[j] = std::min(match, std::min(prev[j] + da, cur[j - 1] + diag_y[j - 1]));
    }
    std::swap(prev, cur);
  }
  return prev[n];
}

double h0_dp_power_sum(DiagramView a, DiagramView b, double q, Ground g, double scale) {
  std::vector<double> x(a.size), y(b.size);
  for (int64_t i = 0; i < a.size; ++i) x[i] = a.pairs[2 * i + 1];
  for (int64_t j = 0; j < b.size; ++j) y[j] = b.pairs[2 * j + 1];
  std::sort(x.begin(), x.end());
  std::sort(y.begin(), y.end());
  const double c = g == Ground::LInf ? 0.5 : 1.0 / std::sqrt(2.0);
  return q == 1.0 ? h0_dp_impl<true>(x, y, q, c, scale) : h0_dp_impl<false>(x, y, q, c, scale);
}

double assignment_power_sum(DiagramView a, DiagramView b, double q, Ground g, double scale = 1.0) {
  const int64_t m = a.size, n = b.size, N = m + n;
  if (N == 0) return 0.0;
  std::vector<double> cost(N * N, 0.0);
  for (int64_t i = 0; i < m; ++i) {
    double* row = cost.data() + i * N;
    for (int64_t j = 0; j < n; ++j) row[j] = power(ground_distance(a.pairs + 2 * i, b.pairs + 2 * j, g) / scale, q);
    const double diag = power(diagonal_distance(a.pairs + 2 * i, g) / scale, q);
    for (int64_t j = n; j < N; ++j) row[j] = diag;
  }
  for (int64_t j = 0; j < n; ++j) {
    const double diag = power(diagonal_distance(b.pairs + 2 * j, g) / scale, q);
    for (int64_t i = m; i < N; ++i) cost[i * N + j] = diag;
  }
  const auto col = solve_assignment(cost, N);
  double total = 0;
  for (int64_t i = 0; i < N; ++i) total += cost[i * N + col[i]];
  return total;
}

// Hopcroft–Karp on the augmented graph of pairs within eps; true when it has a perfect matching.
class BottleneckGraph {
 public:
  BottleneckGraph(DiagramView a, DiagramView b, Ground g) : m_(a.size), n_(b.size) {
    cost_.resize(m_ * n_);
    for (int64_t i = 0; i < m_; ++i)
      for (int64_t j = 0; j < n_; ++j) cost_[i * n_ + j] = ground_distance(a.pairs + 2 * i, b.pairs + 2 * j, g);
    da_.resize(m_);
    db_.resize(n_);
    for (int64_t i = 0; i < m_; ++i) da_[i] = diagonal_distance(a.pairs + 2 * i, g);
    for (int64_t j = 0; j < n_; ++j) db_[j] = diagonal_distance(b.pairs + 2 * j, g);
  }

  std::vector<double> candidates() const {
    std::vector<double> c(cost_);
    c.insert(c.end(), da_.begin(), da_.end());
    c.insert(c.end(), db_.begin(), db_.end());
    c.push_back(0.0);
    std::sort(c.begin(), c.end());
    c.erase(std::unique(c.begin(), c.end()), c.end());
    return c;
  }

  // left l < m: point a_l; l >= m: diagonal copy of b_(l-m). right r < n: point b_r; r >= n:
  // diagonal copy of a_(r-n).
  bool perfect(double eps) {
    const int64_t N = m_ + n_;
    eps_ = eps;
    match_left_.assign(N, -1);
    match_right_.assign(N, -1);
    int64_t size = 0;
    while (bfs()) {
      for (int64_t l = 0; l < N; ++l)
        if (match_left_[l] < 0 && dfs(l)) ++size;
    }
    return size == N;
  }

 private:
  template <typename F>
  void for_neighbours(int64_t l, F&& f) const {
    if (l < m_) {
      for (int64_t r = 0; r < n_; ++r)
        if (cost_[l * n_ + r] <= eps_ && !f(r)) return;
      if (da_[l] <= eps_) f(n_ + l);
    } else {
      const int64_t j = l - m_;
      if (db_[j] <= eps_ && !f(j)) return;
      for (int64_t r = n_; r < n_ + m_; ++r)
        if (!f(r)) return;
    }
  }

  bool bfs() {
    const int64_t N = m_ + n_;
    dist_.assign(N, -1);
    std::vector<int64_t> queue;
    for (int64_t l = 0; l < N; ++l)
      if (match_left_[l] < 0) {
        dist_[l] = 0;
        queue.push_back(l);
      }
    bool found = false;
    for (size_t h = 0; h < queue.size(); ++h) {
      const int64_t l = queue[h];
      for_neighbours(l, [&](int64_t r) {
        const int64_t l2 = match_right_[r];
        if (l2 < 0) found = true;
        else if (dist_[l2] < 0) {
          dist_[l2] = dist_[l] + 1;
          queue.push_back(l2);
        }
        return true;
      });
    }
    return found;
  }

  bool dfs(int64_t l) {
    bool ok = false;
    for_neighbours(l, [&](int64_t r) {
      const int64_t l2 = match_right_[r];
      if (l2 < 0 || (dist_[l2] == dist_[l] + 1 && dfs(l2))) {
        match_left_[l] = r;
        match_right_[r] = l;
        ok = true;
        return false;
      }
      return true;
    });
    if (!ok) dist_[l] = -1;
    return ok;
  }

  int64_t m_, n_;
  double eps_ = 0;
  std::vector<double> cost_, da_, db_;
  std::vector<int64_t> match_left_, match_right_, dist_;
};

}  // namespace

double wasserstein_assignment(DiagramView a, DiagramView b, double q, Ground ground) {
  return std::pow(assignment_power_sum(a, b, q, ground), 1.0 / q);
}

double bottleneck_finite(DiagramView a, DiagramView b, Ground ground) {
  if (a.size + b.size == 0) return 0.0;
  BottleneckGraph graph(a, b, ground);
  const auto cand = graph.candidates();
  // the largest candidate always admits a perfect matching (every point to its diagonal copy)
  size_t lo = 0, hi = cand.size() - 1;
  while (lo < hi) {
    const size_t mid = (lo + hi) / 2;
    if (graph.perfect(cand[mid])) hi = mid;
    else lo = mid + 1;
  }
  return cand[lo];
}

namespace {

// Finite points and the sorted births of the essential points (death = +inf) of one diagram.
void split_diagram(const double* pairs, int64_t size, std::vector<double>& finite, std::vector<double>& essential) {
  finite.clear();
  essential.clear();
  for (int64_t i = 0; i < size; ++i) {
    const double b = pairs[2 * i], d = pairs[2 * i + 1];
    if (std::isinf(d)) essential.push_back(b);
    else {
      finite.push_back(b);
      finite.push_back(d);
    }
  }
  std::sort(essential.begin(), essential.end());
}

}  // namespace

double diagram_distance(const double* a, int64_t m, const double* b, int64_t n, double q, Ground ground,
                        Essential essential) {
  std::vector<double> fa, fb, ea, eb;
  split_diagram(a, m, fa, ea);
  split_diagram(b, n, fb, eb);
  const bool bottleneck = std::isinf(q);
  double extra = 0;  // essential part: Σ |b − b'|^q, or the max for the bottleneck
  if (essential == Essential::Error) {
    MEDSEG_CHECK(ea.empty() && eb.empty(), "essential='error': a diagram has points with death = inf");
  } else if (essential == Essential::Match) {
    if (ea.size() != eb.size()) return std::numeric_limits<double>::infinity();
    for (size_t i = 0; i < ea.size(); ++i) {
      const double diff = std::fabs(ea[i] - eb[i]);
      extra = bottleneck ? std::max(extra, diff) : extra + power(diff, q);
    }
  }
  const DiagramView va{fa.data(), static_cast<int64_t>(fa.size() / 2)};
  const DiagramView vb{fb.data(), static_cast<int64_t>(fb.size() / 2)};
  if (bottleneck) return std::max(extra, bottleneck_finite(va, vb, ground));
  const bool h0 = all_births_zero(va) && all_births_zero(vb);
  // Σ cost^q overflows (an inf cost stops the assignment) or underflows to 0 / few digits at extreme
  // scales although W_q is representable. Every cost is <= 3·max|value| (finite values are checked
  // to lie within ±2^1022, so costs themselves are finite); when that bound^q might overflow, or the
  // plain sum came out tiny, the costs are divided by the largest one (the optimal matching is the
  // same) and the result multiplied back. The plain path is kept otherwise (same bits as before).
  double maxabs = 0;
  for (double v : fa) maxabs = std::max(maxabs, std::fabs(v));
  for (double v : fb) maxabs = std::max(maxabs, std::fabs(v));
  for (double v : ea) maxabs = std::max(maxabs, std::fabs(v));
  for (double v : eb) maxabs = std::max(maxabs, std::fabs(v));
  const double slots = static_cast<double>(va.size + vb.size + ea.size() + 1);
  if (std::isfinite(power(3.0 * maxabs, q) * slots)) {
    const double sum = h0 ? h0_dp_power_sum(va, vb, q, ground, 1.0) : assignment_power_sum(va, vb, q, ground);
    if (sum + extra >= 0x1p-900) return std::pow(sum + extra, 1.0 / q);
  }
  double scale = 0;  // the largest cost that can enter the sum
  for (int64_t i = 0; i < va.size; ++i) {
    scale = std::max(scale, diagonal_distance(va.pairs + 2 * i, ground));
    for (int64_t j = 0; j < vb.size; ++j)
      scale = std::max(scale, ground_distance(va.pairs + 2 * i, vb.pairs + 2 * j, ground));
  }
  for (int64_t j = 0; j < vb.size; ++j) scale = std::max(scale, diagonal_distance(vb.pairs + 2 * j, ground));
  if (essential == Essential::Match)
    for (size_t i = 0; i < ea.size(); ++i) scale = std::max(scale, std::fabs(ea[i] - eb[i]));
  if (scale == 0) return 0.0;
  double scaled_extra = 0;
  if (essential == Essential::Match)
    for (size_t i = 0; i < ea.size(); ++i) scaled_extra += power(std::fabs(ea[i] - eb[i]) / scale, q);
  const double sum = h0 ? h0_dp_power_sum(va, vb, q, ground, scale) : assignment_power_sum(va, vb, q, ground, scale);
  return scale * std::pow(sum + scaled_extra, 1.0 / q);
}

}  // namespace topology
}  // namespace medseg
