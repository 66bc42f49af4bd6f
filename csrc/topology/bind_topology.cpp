// pybind11 glue of the topology family (registered into medseg_ext._C by bindings.cpp).
// Python (medseg_ext/topology/) validates values (finite, symmetric, zero diagonal) and hands over
// contiguous float64 buffers; sizes are checked here again before anything is read.
#include <pybind11/numpy.h>

#include <cmath>
#include <exception>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "common/bind_util.h"
#include "common/parallel.h"
#include "topology/rips.h"

namespace py = pybind11;
using medseg::TensorDesc;
using medseg::to_desc;
namespace topo = medseg::topology;

namespace {

const double* contiguous_f64(const TensorDesc& d, const char* arg, int ndim) {
  MEDSEG_CHECK(d.dtype == medseg::DType::Float64, arg, ": internal, expected float64");
  MEDSEG_CHECK(d.ndim == ndim, arg, ": internal, expected ", ndim, " dimensions, got ", d.ndim);
  if (d.numel() == 0) return static_cast<const double*>(d.data);
  MEDSEG_CHECK(d.is_contiguous(), arg, ": internal, expected a contiguous array");
  return static_cast<const double*>(d.data);
}

topo::Metric parse_metric(const std::string& m) {
  if (m == "euclidean") return topo::Metric::Euclidean;
  if (m == "manhattan" || m == "cityblock") return topo::Metric::Manhattan;
  if (m == "chebyshev") return topo::Metric::Chebyshev;
  medseg::fail("metric: expected 'euclidean', 'manhattan' or 'chebyshev', got '", m, "'");
}

topo::Ground parse_ground(const std::string& g) {
  if (g == "linf") return topo::Ground::LInf;
  if (g == "l2") return topo::Ground::L2;
  medseg::fail("ground: expected 'linf' or 'l2', got '", g, "'");
}

topo::Essential parse_essential(const std::string& e) {
  if (e == "drop") return topo::Essential::Drop;
  if (e == "match") return topo::Essential::Match;
  if (e == "error") return topo::Essential::Error;
  medseg::fail("essential: expected 'drop', 'match' or 'error', got '", e, "'");
}

// Ragged diagrams (values (k, 2) float64 + offsets, as RaggedDiagrams holds them), checked.
const double* ragged_diagrams(const py::tuple& values, const std::vector<int64_t>& offsets) {
  const TensorDesc dv = to_desc(values, "diagrams");
  const double* pv = contiguous_f64(dv, "diagrams", 2);
  MEDSEG_CHECK(dv.shape[1] == 2, "diagrams: expected (k, 2) arrays");
  MEDSEG_CHECK(!offsets.empty() && offsets.front() == 0 && offsets.back() == dv.shape[0],
               "diagrams: internal, offsets do not cover the values");
  for (size_t i = 1; i < offsets.size(); ++i)
    MEDSEG_CHECK(offsets[i] >= offsets[i - 1], "diagrams: internal, offsets decrease");
  return pv;
}

py::array_t<double> pairs_array(const std::vector<double>& flat) {
  const py::ssize_t k = static_cast<py::ssize_t>(flat.size() / 2);
  py::array_t<double> out({k, static_cast<py::ssize_t>(2)});
  if (k > 0) std::copy(flat.begin(), flat.end(), out.mutable_data());
  return out;
}

topo::RipsOptions make_options(int maxdim, double threshold, int coeff, bool float64) {
  topo::RipsOptions o;
  o.maxdim = maxdim;
  o.threshold = threshold;
  o.coeff = coeff;
  o.float64 = float64;
  return o;
}

// One cloud: coordinates (n × dim) or a distance matrix (dim == 0: n × n).
topo::Diagrams one_cloud(const double* data, int64_t n, int64_t dim, topo::Metric metric,
                         const topo::RipsOptions& opt) {
  if (dim == 0) return topo::rips_from_distances(data, n, opt);
  std::vector<double> dist(static_cast<size_t>(n * n));
  topo::pairwise_distances(data, n, dim, metric, dist.data());
  return topo::rips_from_distances(dist.data(), n, opt);
}

// The same with a thread's reusable buffers (batch): no per-cloud allocation.
topo::Diagrams one_cloud(const double* data, int64_t n, int64_t dim, topo::Metric metric, const topo::RipsOptions& opt,
                         topo::RipsWorkspace& ws, std::vector<double>& dist) {
  if (dim == 0) return topo::rips_from_distances(data, n, opt, ws);
  dist.resize(static_cast<size_t>(n * n));
  topo::pairwise_distances(data, n, dim, metric, dist.data());
  return topo::rips_from_distances(dist.data(), n, opt, ws);
}

// f(b, workspace, distance buffer) for b in [0, B): one workspace per thread, kept across clouds;
// dynamic schedule, one cloud at a time (clouds differ in cost, and on a shared machine a thread
// may stall: no thread waits on a fixed share). Each cloud writes only its own result, so the
// output does not depend on the schedule. The first exception is rethrown after the loop.
template <typename F>
void for_each_cloud(int64_t B, F&& f) {
  if (B <= 0) return;
  bool failed = false;
  std::exception_ptr error;
#pragma omp parallel if (B > 1)
  {
    std::unique_ptr<topo::RipsWorkspace> ws;
    std::vector<double> dist;
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < B; ++b) {
      bool skip;
#pragma omp atomic read
      skip = failed;
      if (skip) continue;
      try {
        if (!ws) ws.reset(new topo::RipsWorkspace());
        f(b, *ws, dist);
      } catch (...) {
#pragma omp critical(medseg_topology_batch_error)
        {
          if (!error) error = std::current_exception();
#pragma omp atomic write
          failed = true;
        }
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

// Start of each cloud in the flat batch data (dim 0: n x n distance matrices, else n x dim
// coordinates), checked against the data length; the largest cloud checked for maxdim.
std::vector<int64_t> cloud_starts(const std::vector<int64_t>& sizes, int64_t dim, int64_t total, int maxdim) {
  MEDSEG_CHECK(dim >= 0, "clouds: internal, negative dimension");
  const int64_t B = static_cast<int64_t>(sizes.size());
  std::vector<int64_t> start(B + 1, 0);
  int64_t largest = 0;
  for (int64_t b = 0; b < B; ++b) {
    MEDSEG_CHECK(sizes[b] >= 0, "clouds: negative cloud size");
    start[b + 1] = start[b] + (dim == 0 ? sizes[b] * sizes[b] : sizes[b] * dim);
    largest = std::max(largest, sizes[b]);
  }
  MEDSEG_CHECK(start[B] == total, "clouds: sizes do not add up to the data length");
  topo::check_index_range(largest, maxdim);
  return start;
}

// ragged per dimension: values (total, 2), offsets (B + 1) in pairs
py::tuple ragged_result(const std::vector<topo::Diagrams>& results, int maxdim) {
  const int64_t B = static_cast<int64_t>(results.size());
  py::list values, offsets;
  for (int k = 0; k <= maxdim; ++k) {
    py::array_t<int64_t> off(B + 1);
    int64_t* o = off.mutable_data();
    o[0] = 0;
    for (int64_t b = 0; b < B; ++b) o[b + 1] = o[b] + static_cast<int64_t>(results[b][k].size() / 2);
    py::array_t<double> val({static_cast<py::ssize_t>(o[B]), static_cast<py::ssize_t>(2)});
    double* v = val.mutable_data();
    for (int64_t b = 0; b < B; ++b) std::copy(results[b][k].begin(), results[b][k].end(), v + 2 * o[b]);
    values.append(val);
    offsets.append(off);
  }
  return py::make_tuple(values, offsets);
}

template <typename T>
const T* contiguous_1d(const TensorDesc& d, medseg::DType dtype, const char* arg) {
  MEDSEG_CHECK(d.dtype == dtype && d.ndim == 1, arg, ": internal, expected a 1-D ", medseg::dtype_name(dtype),
               " array");
  MEDSEG_CHECK(d.numel() == 0 || d.is_contiguous(), arg, ": internal, expected a contiguous array");
  return static_cast<const T*>(d.data);
}

void bind_topology(py::module_& m) {
  m.def(
      "rips_cpu",
      [](py::tuple data, bool is_distance, int maxdim, double threshold, int coeff, const std::string& metric,
         bool float64) {
        const TensorDesc d = to_desc(data, "points");
        const double* ptr = contiguous_f64(d, "points", 2);
        const int64_t n = d.shape[0];
        if (is_distance) MEDSEG_CHECK(d.shape[1] == n, "distance matrix: expected a square matrix");
        const auto opt = make_options(maxdim, threshold, coeff, float64);
        const topo::Metric met = parse_metric(metric);
        topo::check_index_range(n, maxdim);
        topo::Diagrams dg;
        {
          py::gil_scoped_release release;
          dg = one_cloud(ptr, n, is_distance ? 0 : d.shape[1], met, opt);
        }
        py::list out;
        for (const auto& flat : dg) out.append(pairs_array(flat));
        return out;
      },
      py::arg("data"), py::arg("is_distance"), py::arg("maxdim"), py::arg("threshold"), py::arg("coeff"),
      py::arg("metric"), py::arg("float64"),
      "Vietoris-Rips diagrams of one cloud (n x dim coordinates or an n x n distance matrix), per dimension "
      "an (k, 2) float64 array.");

  m.def(
      "rips_batch_cpu",
      [](py::tuple data, std::vector<int64_t> sizes, int64_t dim, int maxdim, double threshold, int coeff,
         const std::string& metric, bool float64) {
        const TensorDesc d = to_desc(data, "clouds");
        const double* ptr = contiguous_f64(d, "clouds", 1);
        const auto opt = make_options(maxdim, threshold, coeff, float64);
        const topo::Metric met = parse_metric(metric);
        const std::vector<int64_t> start = cloud_starts(sizes, dim, d.shape[0], maxdim);
        const int64_t B = static_cast<int64_t>(sizes.size());
        std::vector<topo::Diagrams> results(B);
        {
          py::gil_scoped_release release;
          for_each_cloud(B, [&](int64_t b, topo::RipsWorkspace& ws, std::vector<double>& dist) {
            results[b] = one_cloud(ptr + start[b], sizes[b], dim, met, opt, ws, dist);
          });
        }
        return ragged_result(results, maxdim);
      },
      py::arg("data"), py::arg("sizes"), py::arg("dim"), py::arg("maxdim"), py::arg("threshold"), py::arg("coeff"),
      py::arg("metric"), py::arg("float64"),
      "Diagrams of many clouds (flat float64 data, per-cloud point counts; dim 0: distance matrices), parallel "
      "over clouds. Returns ([values (total, 2)] per dimension, [offsets (B + 1)] per dimension).");

  m.def(
      "rips_batch_cpu_triangles",
      [](py::tuple data, std::vector<int64_t> sizes, int maxdim, double threshold, int coeff, bool float64,
         py::tuple tri_index, py::tuple tri_diam, py::tuple tri_zero, std::vector<int64_t> tri_offsets) {
        const TensorDesc d = to_desc(data, "clouds");
        const double* ptr = contiguous_f64(d, "clouds", 1);
        MEDSEG_CHECK(maxdim == 2, "triangles: internal, given triangle columns need maxdim 2, got ", maxdim);
        const TensorDesc di = to_desc(tri_index, "triangles"), dd = to_desc(tri_diam, "triangles"),
                         dz = to_desc(tri_zero, "triangles");
        const int64_t* pi = contiguous_1d<int64_t>(di, medseg::DType::Int64, "triangles");
        const double* pd = contiguous_1d<double>(dd, medseg::DType::Float64, "triangles");
        const int64_t* pz = contiguous_1d<int64_t>(dz, medseg::DType::Int64, "triangles");
        const int64_t B = static_cast<int64_t>(sizes.size());
        MEDSEG_CHECK(static_cast<int64_t>(tri_offsets.size()) == B + 1 && tri_offsets.front() == 0 &&
                         tri_offsets.back() == di.numel() && dd.numel() == di.numel() && dz.numel() == di.numel(),
                     "triangles: internal, offsets do not cover the triangle lists");
        for (int64_t b = 0; b < B; ++b)
          MEDSEG_CHECK(tri_offsets[b + 1] >= tri_offsets[b], "triangles: internal, offsets decrease");
        const std::vector<int64_t> start = cloud_starts(sizes, 0, d.shape[0], maxdim);
        const auto opt = make_options(maxdim, threshold, coeff, float64);
        std::vector<topo::Diagrams> results(B);
        {
          py::gil_scoped_release release;
          for_each_cloud(B, [&](int64_t b, topo::RipsWorkspace& ws, std::vector<double>&) {
            topo::RipsOptions o = opt;
            o.triangle_index = pi + tri_offsets[b];
            o.triangle_diam = pd + tri_offsets[b];
            o.triangle_zero = pz + tri_offsets[b];
            o.triangle_count = tri_offsets[b + 1] - tri_offsets[b];
            results[b] = topo::rips_from_distances(ptr + start[b], sizes[b], o, ws);
          });
        }
        return ragged_result(results, maxdim);
      },
      py::arg("data"), py::arg("sizes"), py::arg("maxdim"), py::arg("threshold"), py::arg("coeff"),
      py::arg("float64"), py::arg("tri_index"), py::arg("tri_diam"), py::arg("tri_zero"), py::arg("tri_offsets"),
      "rips_batch_cpu for distance matrices at maxdim 2 with the dimension-2 columns given per cloud (the GPU "
      "path's apparent-pair pass: triangle index, diameter, zero-diameter earliest cofacet or -1; ragged by "
      "tri_offsets); the triangle pass is skipped.");

  m.def(
      "rips_estimate_cpu",
      [](py::tuple data, std::vector<int64_t> sizes, int64_t dim, int maxdim, double threshold,
         const std::string& metric, bool float64) {
        const TensorDesc d = to_desc(data, "clouds");
        const double* ptr = contiguous_f64(d, "clouds", 1);
        const topo::Metric met = parse_metric(metric);
        const int64_t B = static_cast<int64_t>(sizes.size());
        std::vector<int64_t> start(B + 1, 0);
        for (int64_t b = 0; b < B; ++b) {
          MEDSEG_CHECK(sizes[b] >= 0, "clouds: negative cloud size");
          start[b + 1] = start[b] + (dim == 0 ? sizes[b] * sizes[b] : sizes[b] * dim);
        }
        MEDSEG_CHECK(start[B] == d.shape[0], "clouds: sizes do not add up to the data length");
        std::vector<double> est(B, 0.0);
        {
          py::gil_scoped_release release;
          medseg::parallel_for(B, [&](int64_t b) {
            const int64_t n = sizes[b];
            if (dim == 0) {
              est[b] = topo::rips_memory_estimate_cloud(ptr + start[b], n, maxdim, threshold, float64);
            } else {
              std::vector<double> dist(static_cast<size_t>(n * n));
              topo::pairwise_distances(ptr + start[b], n, dim, met, dist.data());
              est[b] = topo::rips_memory_estimate_cloud(dist.data(), n, maxdim, threshold, float64);
            }
          });
        }
        return est;
      },
      py::arg("data"), py::arg("sizes"), py::arg("dim"), py::arg("maxdim"), py::arg("threshold"), py::arg("metric"),
      py::arg("float64"),
      "Per-cloud memory estimate (bytes) from the distances: edges and triangles within the threshold counted, "
      "higher simplex counts extrapolated.");
  m.def("rips_memory_estimate", &topo::rips_memory_estimate, py::arg("n"), py::arg("maxdim"), py::arg("float64"),
        "Upper bound of the bytes of the dominant allocations for one cloud of n points.");
  m.def("rips_check_index_range", &topo::check_index_range, py::arg("n"), py::arg("maxdim"));

  m.def(
      "diagram_distance_cpu",
      [](py::tuple a, py::tuple b, double q, const std::string& ground, const std::string& essential) {
        const TensorDesc da = to_desc(a, "d1"), db = to_desc(b, "d2");
        const double* pa = contiguous_f64(da, "d1", 2);
        const double* pb = contiguous_f64(db, "d2", 2);
        MEDSEG_CHECK(da.shape[1] == 2 && db.shape[1] == 2, "diagrams: expected (k, 2) arrays");
        const auto g = parse_ground(ground);
        const auto e = parse_essential(essential);
        py::gil_scoped_release release;
        return topo::diagram_distance(pa, da.shape[0], pb, db.shape[0], q, g, e);
      },
      py::arg("d1"), py::arg("d2"), py::arg("q"), py::arg("ground"), py::arg("essential"),
      "q-Wasserstein (q = inf: bottleneck) distance between two (k, 2) float64 diagrams.");

  m.def(
      "wasserstein_assignment_cpu",
      [](py::tuple a, py::tuple b, double q, const std::string& ground) {
        const TensorDesc da = to_desc(a, "d1"), db = to_desc(b, "d2");
        const double* pa = contiguous_f64(da, "d1", 2);
        const double* pb = contiguous_f64(db, "d2", 2);
        MEDSEG_CHECK(da.shape[1] == 2 && db.shape[1] == 2, "diagrams: expected (k, 2) arrays");
        for (int64_t i = 0; i < 2 * da.shape[0]; ++i) MEDSEG_CHECK(std::isfinite(pa[i]), "d1: expected finite points");
        for (int64_t i = 0; i < 2 * db.shape[0]; ++i) MEDSEG_CHECK(std::isfinite(pb[i]), "d2: expected finite points");
        return topo::wasserstein_assignment({pa, da.shape[0]}, {pb, db.shape[0]}, q, parse_ground(ground));
      },
      py::arg("d1"), py::arg("d2"), py::arg("q"), py::arg("ground"),
      "q-Wasserstein of finite diagrams by the assignment solver only (no H0 DP); for tests.");

  m.def(
      "diagram_distance_matrix_cpu",
      [](py::tuple values, std::vector<int64_t> offsets, double q, const std::string& ground,
         const std::string& essential, uintptr_t out_ptr) {
        const double* pv = ragged_diagrams(values, offsets);
        const auto g = parse_ground(ground);
        const auto e = parse_essential(essential);
        const int64_t K = static_cast<int64_t>(offsets.size()) - 1;
        double* out = reinterpret_cast<double*>(out_ptr);
        std::vector<std::pair<int64_t, int64_t>> pairs;
        pairs.reserve(K * (K - 1) / 2);
        for (int64_t i = 0; i < K; ++i)
          for (int64_t j = i + 1; j < K; ++j) pairs.emplace_back(i, j);
        py::gil_scoped_release release;
        for (int64_t i = 0; i < K; ++i) out[i * K + i] = 0.0;
        medseg::parallel_for(static_cast<int64_t>(pairs.size()), [&](int64_t p) {
          const int64_t i = pairs[p].first, j = pairs[p].second;
          const double w = topo::diagram_distance(pv + 2 * offsets[i], offsets[i + 1] - offsets[i], pv + 2 * offsets[j],
                                                  offsets[j + 1] - offsets[j], q, g, e);
          out[i * K + j] = w;
          out[j * K + i] = w;
        });
      },
      py::arg("values"), py::arg("offsets"), py::arg("q"), py::arg("ground"), py::arg("essential"),
      py::arg("out_ptr"),
      "All-pairs distances of K ragged diagrams into a contiguous float64 K x K buffer (symmetric, zero diagonal).");

  m.def(
      "diagram_distance_pairs_cpu",
      [](py::tuple values, std::vector<int64_t> offsets, std::vector<int64_t> first, std::vector<int64_t> second,
         double q, const std::string& ground, const std::string& essential) {
        const double* pv = ragged_diagrams(values, offsets);
        MEDSEG_CHECK(first.size() == second.size(), "pairs: internal, index lists of different lengths");
        const int64_t K = static_cast<int64_t>(offsets.size()) - 1;
        const int64_t P = static_cast<int64_t>(first.size());
        for (int64_t p = 0; p < P; ++p)
          MEDSEG_CHECK(first[p] >= 0 && first[p] < K && second[p] >= 0 && second[p] < K, "pairs: index ",
                       (first[p] < 0 || first[p] >= K) ? first[p] : second[p], " out of range for ", K, " diagrams");
        const auto g = parse_ground(ground);
        const auto e = parse_essential(essential);
        py::array_t<double> out(static_cast<py::ssize_t>(P));
        double* o = out.mutable_data();
        {
          py::gil_scoped_release release;
          medseg::parallel_for(P, [&](int64_t p) {
            const int64_t i = first[p], j = second[p];
            o[p] = i == j ? 0.0
                          : topo::diagram_distance(pv + 2 * offsets[i], offsets[i + 1] - offsets[i],
                                                   pv + 2 * offsets[j], offsets[j + 1] - offsets[j], q, g, e);
          });
        }
        return out;
      },
      py::arg("values"), py::arg("offsets"), py::arg("first"), py::arg("second"), py::arg("q"), py::arg("ground"),
      py::arg("essential"),
      "Distances of the listed pairs (first[p], second[p]) of K ragged diagrams, parallel over pairs; a (P,) "
      "float64 array (0 for i == j).");
}

}  // namespace

MEDSEG_REGISTER_FAMILY(topology, bind_topology)
