// Vietoris–Rips persistent homology (Ripser's algorithm, written from Bauer, "Ripser: efficient
// computation of Vietoris–Rips persistence barcodes", J. Appl. Comput. Topol. 2021) and exact
// distances between persistence diagrams.
//
// Conventions (ripser.py's): the filtration value of a simplex is its diameter (the largest
// pairwise distance), a simplex enters at diameter <= threshold, pairs with death == birth are
// not reported, essential classes have death = +inf, H0 has one essential bar per connected
// component. Filtration values are float32 by default (as ripser.py, which rounds its distance
// matrix to float32) or float64.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace medseg {
namespace topology {

enum class Metric : int { Euclidean = 0, Manhattan = 1, Chebyshev = 2 };

struct RipsOptions {
  int maxdim = 1;
  double threshold = 0;  // +inf: no threshold (the enclosing radius is used internally, exact)
  int coeff = 2;         // prime p of Z/p
  bool float64 = false;  // filtration values in double instead of float
  // Dimension-2 columns found elsewhere (the GPU path's apparent-pair pass), used when maxdim == 2
  // (dimension 2 is then the top one): every triangle {w > b > a} that is not the lower half of an
  // apparent pair, in any order, with its diameter (a value of the filtration's type) and its
  // earliest cofacet of the same diameter (-1: none). Cleared triangles and those above the
  // threshold are dropped here; the columns are then exactly those of the triangle pass.
  // triangle_count < 0: not given (the triangle pass runs).
  const int64_t* triangle_index = nullptr;
  const double* triangle_diam = nullptr;
  const int64_t* triangle_zero = nullptr;
  int64_t triangle_count = -1;
};

// Per dimension, flattened (birth, death) pairs.
using Diagrams = std::vector<std::vector<double>>;

// dist: n×n row-major symmetric matrix with zero diagonal (checked by the caller).
Diagrams rips_from_distances(const double* dist, int64_t n, const RipsOptions& opt);

// Reusable buffers for many clouds in a row (one per thread): the same result as the call above,
// without per-cloud allocation. Not shared between threads. Above 256 MiB it is released after
// the cloud that grew it.
class RipsWorkspace {
 public:
  RipsWorkspace();
  ~RipsWorkspace();
  RipsWorkspace(const RipsWorkspace&) = delete;
  RipsWorkspace& operator=(const RipsWorkspace&) = delete;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};
Diagrams rips_from_distances(const double* dist, int64_t n, const RipsOptions& opt, RipsWorkspace& ws);

// points: n×dim row-major, contiguous. out: n×n.
void pairwise_distances(const double* points, int64_t n, int64_t dim, Metric metric, double* out);

// Checks that every simplex index up to dimension maxdim + 1 fits in int64 (throws ValueError).
void check_index_range(int64_t n, int maxdim);

// Upper bound of the bytes of the dominant allocations of one cloud (distance matrix, simplex
// and column lists of the largest dimension).
double rips_memory_estimate(int64_t n, int maxdim, bool float64);
// The same for a given n×n distance matrix and threshold: edges and triangles within the
// (effective) threshold counted exactly, higher simplex counts extrapolated from them (an
// estimate, not a bound, above dimension 2).
double rips_memory_estimate_cloud(const double* dist, int64_t n, int maxdim, double threshold, bool float64);

// ---------------------------------------------------------------- diagram distances

enum class Ground : int { LInf = 0, L2 = 1 };

// A diagram as (birth, death) pairs, all finite (essential points are handled by the caller).
struct DiagramView {
  const double* pairs = nullptr;
  int64_t size = 0;
};

// Exact q-Wasserstein of finite diagrams by the assignment solver alone (no H0 DP); tests and benchmarks.
double wasserstein_assignment(DiagramView a, DiagramView b, double q, Ground ground);
// Exact bottleneck distance: binary search over candidate values with a bipartite matching test.
double bottleneck_finite(DiagramView a, DiagramView b, Ground ground);

enum class Essential : int { Drop = 0, Match = 1, Error = 2 };

// Distance between two diagrams given as (birth, death) pairs, deaths may be +inf (essential).
// q = +inf: bottleneck. Essential points: dropped, matched by sorted births (a different count
// gives +inf, as GUDHI), or a ValueError.
double diagram_distance(const double* a, int64_t m, const double* b, int64_t n, double q, Ground ground,
                        Essential essential);

}  // namespace topology
}  // namespace medseg
