// pybind11 glue of the tiled component tree (mser_tiled.h), registered as its own family entry so
// bind_mser.cpp keeps only a small hook (the `tile` argument of mser_detect_cpu).
#include <pybind11/numpy.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "common/bind_util.h"
#include "mser/mser.h"
#include "mser/mser_tiled.h"

namespace py = pybind11;
namespace ms = medseg::mser;

namespace {

template <typename T>
using carr = py::array_t<T, py::array::c_style>;

ms::Geometry tiled_geometry(const std::vector<int64_t>& shape, int connectivity) {
  MEDSEG_CHECK(shape.size() == 2 || shape.size() == 3, "image: expected a 2-D or 3-D spatial shape");
  ms::Geometry g;
  g.d0 = shape.size() == 3 ? shape[0] : 1;
  g.d1 = shape[shape.size() - 2];
  g.d2 = shape[shape.size() - 1];
  MEDSEG_CHECK(g.d0 >= 1 && g.d1 >= 1 && g.d2 >= 1, "image: empty spatial shape");
  if (shape.size() == 2) {
    MEDSEG_CHECK(connectivity == 4 || connectivity == 8, "connectivity: expected 4 or 8 in 2-D, got ", connectivity);
  } else {
    MEDSEG_CHECK(connectivity == 6 || connectivity == 26, "connectivity: expected 6 or 26 in 3-D, got ",
                 connectivity);
  }
  g.connectivity = connectivity;
  return g;
}

// tile as given by Python: one size per spatial axis; 2-D gets a unit z extent
void tile_sizes(const std::vector<int64_t>& tile, const std::vector<int64_t>& shape, int32_t out[3]) {
  MEDSEG_CHECK(tile.size() == shape.size(), "tile: expected ", shape.size(), " sizes, got ", tile.size());
  out[0] = 1;
  for (size_t i = 0; i < tile.size(); ++i) {
    MEDSEG_CHECK(tile[i] >= 1 && tile[i] <= INT32_MAX, "tile: sizes must be >= 1, got ", tile[i]);
    out[3 - tile.size() + i] = static_cast<int32_t>(tile[i]);
  }
}

ms::Side side_of(const std::string& s) {
  if (s == "two_sided") return ms::Side::TwoSided;
  if (s == "ancestor") return ms::Side::Ancestor;
  if (s == "descendant") return ms::Side::Descendant;
  medseg::fail("variation: expected 'two_sided', 'ancestor' or 'descendant', got '", s, "'");
}

template <typename T>
py::array_t<T> vec_array(const std::vector<T>& v) {
  py::array_t<T> a(static_cast<py::ssize_t>(v.size()));
  if (!v.empty()) std::copy(v.begin(), v.end(), a.mutable_data());
  return a;
}

const uint8_t* mask_ptr(py::object mask_obj, int64_t size, carr<uint8_t>& keep) {
  if (mask_obj.is_none()) return nullptr;
  keep = mask_obj.cast<carr<uint8_t>>();
  MEDSEG_CHECK(keep.size() == size, "mask: size does not match the image");
  return keep.data();
}

template <typename T>
py::tuple tree_tiled(carr<T> img, py::object mask_obj, std::vector<int64_t> shape, int connectivity, bool bright,
                     int maxval, int delta, const std::string& side, bool normalize, std::vector<int64_t> tile,
                     int num_threads) {
  const ms::Geometry g = tiled_geometry(shape, connectivity);
  MEDSEG_CHECK(img.size() == g.numel(), "image: buffer size does not match the shape");
  MEDSEG_CHECK(maxval >= 1 && maxval <= 65535, "maxval: expected 1..65535");
  int32_t ts[3];
  tile_sizes(tile, shape, ts);
  carr<uint8_t> keep;
  const uint8_t* mask = mask_ptr(mask_obj, g.numel(), keep);
  ms::Params p;
  p.delta = delta;
  p.side = side_of(side);
  p.normalize = normalize;
  ms::Tree t;
  std::vector<double> stab;
  {
    py::gil_scoped_release release;
    ms::build_tree_tiled<T>(img.data(), mask, g, bright, maxval, ts, num_threads, t);
    ms::node_stability(t, p, stab);
  }
  return py::make_tuple(vec_array(t.pixel_node), vec_array(t.parent), vec_array(t.level), vec_array(t.area),
                        vec_array(stab));
}

// Canonical parent form of B images (B, N): (par, area), each (B, N) int32.
template <typename T>
py::tuple parents_tiled(carr<T> imgs, py::object mask_obj, std::vector<int64_t> shape, int connectivity, bool bright,
                        int maxval, std::vector<int64_t> tile, int num_threads) {
  MEDSEG_CHECK(imgs.ndim() == 2, "image: internal, expected (B, N)");
  const ms::Geometry g = tiled_geometry(shape, connectivity);
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
        p.side = side_of(side);
        p.normalize = normalize;
        std::vector<double> stab;
        {
          py::gil_scoped_release release;
          ms::node_stability(t, p, stab);
        }
        return vec_array(stab);
      },
      py::arg("parent"), py::arg("key"), py::arg("area"), py::arg("delta"), py::arg("side"), py::arg("normalize"),
      "MSER stability of every node of a children-first tree (parent, key, area).");
#ifdef MEDSEG_EXT_WITH_CUDA
  m.def(
      "mser_tiled_parents_cuda",
      [](uintptr_t img, bool is16, uintptr_t mask, int64_t B, std::vector<int64_t> shape, int connectivity,
         bool bright, int maxval, std::vector<int64_t> tile, uintptr_t work, uintptr_t par, uintptr_t area,
         intptr_t stream) {
        const ms::Geometry g = tiled_geometry(shape, connectivity);
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
#endif
}

}  // namespace

MEDSEG_REGISTER_FAMILY(mser_tiled, bind_mser_tiled)
