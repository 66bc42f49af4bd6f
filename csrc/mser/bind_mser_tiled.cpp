// pybind11 glue of the tiled component tree (mser_tiled.h), registered as its own family entry so
// bind_mser.cpp keeps only a small hook (the `tile` argument of mser_detect_cpu).
#include <pybind11/numpy.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "common/bind_util.h"
#include "mser/mser.h"
#include "mser/bind_mser_common.h"
#include "mser/mser_tiled.h"

namespace py = pybind11;
namespace ms = medseg::mser;
using namespace medseg::mser::bind;  // carr, make_geometry, parse_side, to_array, mask_ptr

namespace {

// tile as given by Python: one size per spatial axis; 2-D gets a unit z extent
void tile_sizes(const std::vector<int64_t>& tile, const std::vector<int64_t>& shape, int32_t out[3]) {
  MEDSEG_CHECK(shape.size() == 2 || shape.size() == 3, "image: expected a 2-D or 3-D spatial shape");
  MEDSEG_CHECK(tile.size() == shape.size(), "tile: expected ", shape.size(), " sizes, got ", tile.size());
  out[0] = 1;
  for (size_t i = 0; i < tile.size(); ++i) {
    MEDSEG_CHECK(tile[i] >= 1 && tile[i] <= INT32_MAX, "tile: sizes must be >= 1, got ", tile[i]);
    out[3 - tile.size() + i] = static_cast<int32_t>(tile[i]);
  }
}

template <typename T>
py::tuple tree_tiled(carr<T> img, py::object mask_obj, std::vector<int64_t> shape, int connectivity, bool bright,
                     int maxval, int delta, const std::string& side, bool normalize, std::vector<int64_t> tile,
                     int num_threads) {
  int32_t ts[3];
  tile_sizes(tile, shape, ts);
  return tree_with_stability(img, mask_obj, shape, connectivity, maxval, delta, side, normalize,
                             [&](const uint8_t* mask, const ms::Geometry& g, ms::Tree& t) {
                               ms::build_tree_tiled<T>(img.data(), mask, g, bright, maxval, ts, num_threads, t);
                             });
}

// Canonical parent form of B images (B, N): (par, area), each (B, N) int32.
template <typename T>
py::tuple parents_tiled(carr<T> imgs, py::object mask_obj, std::vector<int64_t> shape, int connectivity, bool bright,
                        int maxval, std::vector<int64_t> tile, int num_threads) {
  MEDSEG_CHECK(imgs.ndim() == 2, "image: internal, expected (B, N)");
  const ms::Geometry g = make_geometry(shape, connectivity);
  const int64_t B = imgs.shape(0), N = imgs.shape(1);
  MEDSEG_CHECK(N == g.numel(), "image: buffer size does not match the shape");
  MEDSEG_CHECK(maxval >= 1 && maxval <= 65535, "maxval: expected 1..65535");
  int32_t ts[3];
  tile_sizes(tile, shape, ts);
  carr<uint8_t> keep;
  const uint8_t* mask = mask_ptr(mask_obj, B * N, keep);
  py::array_t<int32_t> par({B, N}), area({B, N});
  int32_t* pp = par.mutable_data();
  int32_t* pa = area.mutable_data();
  {
    py::gil_scoped_release release;
    for (int64_t b = 0; b < B; ++b)
      ms::tiled_parents<T>(imgs.data() + b * N, mask ? mask + b * N : nullptr, g, bright, maxval, ts, num_threads,
                           pp + b * N, pa + b * N);
  }
  return py::make_tuple(par, area);
}

void bind_mser_tiled(py::module_& m) {
  m.def("mser_tree_tiled_cpu", &tree_tiled<uint8_t>, py::arg("image"), py::arg("mask"), py::arg("shape"),
        py::arg("connectivity"), py::arg("bright"), py::arg("maxval"), py::arg("delta"), py::arg("side"),
        py::arg("normalize"), py::arg("tile"), py::arg("num_threads"),
        "Tiled component tree of one image (same arrays as mser_tree_cpu), tiles and merges on OpenMP threads.");
  m.def("mser_tree_tiled_cpu", &tree_tiled<uint16_t>, py::arg("image"), py::arg("mask"), py::arg("shape"),
        py::arg("connectivity"), py::arg("bright"), py::arg("maxval"), py::arg("delta"), py::arg("side"),
        py::arg("normalize"), py::arg("tile"), py::arg("num_threads"));
  m.def("mser_tiled_parents_cpu", &parents_tiled<uint8_t>, py::arg("images"), py::arg("mask"), py::arg("shape"),
        py::arg("connectivity"), py::arg("bright"), py::arg("maxval"), py::arg("tile"), py::arg("num_threads"),
        "Canonical parent form (par, area) of B images (B, N) by the tiled tree (see mser_tiled.h).");
  m.def("mser_tiled_parents_cpu", &parents_tiled<uint16_t>, py::arg("images"), py::arg("mask"), py::arg("shape"),
        py::arg("connectivity"), py::arg("bright"), py::arg("maxval"), py::arg("tile"), py::arg("num_threads"));
  m.def(
      "mser_node_stability_cpu",
      [](carr<int32_t> parent, carr<int32_t> key, carr<int32_t> area, int delta, const std::string& side,
         bool normalize) {
        const int64_t M = parent.size();
        MEDSEG_CHECK(key.size() == M && area.size() == M, "tree: parent, key and area differ in length");
        MEDSEG_CHECK(delta >= 0, "delta: expected >= 0, got ", delta);
        ms::Tree t;
        t.parent.assign(parent.data(), parent.data() + M);
        t.key.assign(key.data(), key.data() + M);
        t.area.assign(area.data(), area.data() + M);
        for (int64_t i = 0; i < M; ++i) {
          const int32_t q = t.parent[i];
          // node_stability walks parents upwards by id: children-first numbering is required
          MEDSEG_CHECK(q == -1 || (q > i && q < M), "tree: parents must be -1 or a larger node id");
        }
        ms::Params p;
        p.delta = delta;
        p.side = parse_side(side);
        p.normalize = normalize;
        std::vector<double> stab;
        {
          py::gil_scoped_release release;
          ms::node_stability(t, p, stab);
        }
        return to_array(stab);
      },
      py::arg("parent"), py::arg("key"), py::arg("area"), py::arg("delta"), py::arg("side"), py::arg("normalize"),
      "MSER stability of every node of a children-first tree (parent, key, area).");
#ifdef MEDSEG_EXT_WITH_CUDA
  m.def(
      "mser_tiled_parents_cuda",
      [](uintptr_t img, bool is16, uintptr_t mask, int64_t B, std::vector<int64_t> shape, int connectivity,
         bool bright, int maxval, std::vector<int64_t> tile, uintptr_t work, uintptr_t par, uintptr_t area,
         intptr_t stream) {
        const ms::Geometry g = make_geometry(shape, connectivity);
        MEDSEG_CHECK(B >= 1, "image: empty batch");
        MEDSEG_CHECK(maxval >= 1 && maxval <= 65535, "maxval: expected 1..65535");
        int32_t ts[3];
        tile_sizes(tile, shape, ts);
        ms::tiled_parents_cuda(reinterpret_cast<const void*>(img), is16, reinterpret_cast<const uint8_t*>(mask), B,
                               g, bright, maxval, ts, reinterpret_cast<int32_t*>(work),
                               reinterpret_cast<int32_t*>(par), reinterpret_cast<int32_t*>(area), stream);
      },
      py::arg("images"), py::arg("is16"), py::arg("mask"), py::arg("batch"), py::arg("shape"),
      py::arg("connectivity"), py::arg("bright"), py::arg("maxval"), py::arg("tile"), py::arg("work"),
      py::arg("par"), py::arg("area"), py::arg("stream"),
      "CUDA tiled tree of B images (device pointers): canonical parent form into par/area (B, N) int32.");
  m.def(
      "mser_vlfeat_diversity_cuda",
      [](uintptr_t order, uintptr_t level_start, int64_t levels, uintptr_t up, uintptr_t root, uintptr_t area,
         double min_diversity, uintptr_t keep, uintptr_t anchor, intptr_t stream) {
        MEDSEG_CHECK(levels >= 0, "levels: expected >= 0, got ", levels);
        const auto i64 = [](uintptr_t p) { return reinterpret_cast<const int64_t*>(p); };
        ms::vlfeat_diversity_cuda(i64(order), i64(level_start), levels, i64(up), i64(root), i64(area),
                                  static_cast<float>(min_diversity), reinterpret_cast<bool*>(keep),
                                  reinterpret_cast<int64_t*>(anchor), stream);
      },
      py::arg("order"), py::arg("level_start"), py::arg("levels"), py::arg("up"), py::arg("root"), py::arg("area"),
      py::arg("min_diversity"), py::arg("keep"), py::arg("anchor"), py::arg("stream"),
      "VLFeat's diversity rule over the levels of a candidate forest (device pointers, int64; see mser_tiled.h).");
#endif
}

}  // namespace

MEDSEG_REGISTER_FAMILY(mser_tiled, bind_mser_tiled)
