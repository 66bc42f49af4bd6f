// pybind11 glue of the mser family (registered into medseg_ext._C by bindings.cpp).
// Python (medseg_ext/mser/) validates and hands over C-contiguous uint8/uint16 arrays of shape
// (B, N) with the spatial shape; sizes are checked here again before anything is read.
#include <pybind11/numpy.h>

#include <algorithm>
#include <exception>
#include <cstdint>
#include <string>
#include <vector>

#include "common/bind_util.h"
#include "common/parallel.h"
#include "mser/mser.h"
#include "mser/bind_mser_common.h"
#include "mser/mser_tiled.h"

namespace py = pybind11;
namespace ms = medseg::mser;
using namespace medseg::mser::bind;  // carr, make_geometry, parse_side, to_array, mask_ptr

namespace {

template <typename T>
py::tuple tree_impl(carr<T> img, py::object mask_obj, std::vector<int64_t> shape, int connectivity, bool bright,
                    int maxval, int delta, const std::string& side, bool normalize, const std::string& algorithm) {
  MEDSEG_CHECK(algorithm == "flood" || algorithm == "union_find", "algorithm: expected 'flood' or 'union_find', got '",
               algorithm, "'");
  return tree_with_stability(img, mask_obj, shape, connectivity, maxval, delta, side, normalize,
                             [&](const uint8_t* mask, const ms::Geometry& g, ms::Tree& t) {
                               if (algorithm == "flood") {
                                 ms::build_tree_flood<T>(img.data(), mask, g, bright, maxval, t);
                               } else {
                                 ms::build_tree<T>(img.data(), mask, g, bright, maxval, t);
                               }
                             });
}

template <typename T>
py::tuple detect_impl(carr<T> imgs, py::object mask_obj, std::vector<int64_t> shape, int connectivity,
                      const std::string& polarity, int maxval, const std::string& mode, int delta, int64_t min_area,
                      int64_t max_area, double max_variation, double min_diversity, const std::string& side,
                      bool normalize, const std::string& rule, int num_threads, std::vector<int64_t> tile) {
  MEDSEG_CHECK(imgs.ndim() == 2, "image: internal, expected (B, N)");
  const ms::Geometry g = make_geometry(shape, connectivity);
  const int64_t B = imgs.shape(0), N = imgs.shape(1);
  MEDSEG_CHECK(N == g.numel(), "image: buffer size does not match the shape");
  MEDSEG_CHECK(maxval >= 1 && maxval <= 65535, "maxval: expected 1..65535");
  MEDSEG_CHECK(delta >= 0, "delta: expected >= 0, got ", delta);
  carr<uint8_t> mask_arr;
  const uint8_t* mask = mask_ptr(mask_obj, B * N, mask_arr);
  std::vector<int> pols;  // +1 bright, -1 dark, in output order (dark first, as OpenCV)
  if (polarity == "dark" || polarity == "both") pols.push_back(-1);
  if (polarity == "bright" || polarity == "both") pols.push_back(+1);
  MEDSEG_CHECK(!pols.empty(), "polarity: expected 'bright', 'dark' or 'both', got '", polarity, "'");
  const bool cvmode = mode == "opencv";
  MEDSEG_CHECK(cvmode || mode == "tree", "mode: internal, expected 'tree' or 'opencv'");
  if (cvmode) {
    MEDSEG_CHECK(sizeof(T) == 1 && shape.size() == 2 && connectivity == 4 && mask == nullptr,
                 "preset 'opencv': needs 8-bit 2-D images, connectivity 4 and no mask");
    MEDSEG_CHECK(min_area <= INT32_MAX && max_area <= INT32_MAX, "min_area/max_area: too large");
  }
  ms::Params p;
  p.delta = delta;
  p.min_area = min_area;
  p.max_area = max_area;
  p.max_variation = max_variation;
  p.min_diversity = min_diversity;
  p.side = parse_side(side);
  p.normalize = normalize;
  MEDSEG_CHECK(rule == "local_min" || rule == "vlfeat", "rule: internal, expected 'local_min' or 'vlfeat'");
  p.rule = rule == "vlfeat" ? ms::Rule::VLFeat : ms::Rule::LocalMin;
  // tile (one size per spatial axis): build the trees with the tiled builder (mser_tiled.h)
  int32_t ts[3] = {1, 1, 1};
  MEDSEG_CHECK(tile.empty() || tile.size() == shape.size(), "tile: expected ", shape.size(), " sizes");
  for (size_t i = 0; i < tile.size(); ++i) {
    MEDSEG_CHECK(tile[i] >= 1 && tile[i] <= INT32_MAX, "tile: sizes must be >= 1, got ", tile[i]);
    ts[3 - tile.size() + i] = static_cast<int32_t>(tile[i]);
  }
  const int64_t npol = static_cast<int64_t>(pols.size());
  const int64_t tasks = B * npol;
  std::vector<ms::Regions> res(static_cast<size_t>(tasks));
  {
    py::gil_scoped_release release;
    const T* base = imgs.data();
    auto work = [&](int64_t t) {
      const int64_t b = t / npol;
      const int pol = pols[t % npol];
      const T* img = base + b * N;
      if (cvmode) {
        ms::opencv_pass(reinterpret_cast<const uint8_t*>(img), g.d1, g.d2, pol > 0 ? 255 : 0, delta,
                        static_cast<int>(min_area), static_cast<int>(max_area), max_variation, res[t]);
      } else {
        ms::Tree tree;
        if (tile.empty()) {
          ms::build_tree_flood<T>(img, mask ? mask + b * N : nullptr, g, pol > 0, maxval, tree);
        } else {  // threads inside the tree only when this loop runs serially (no nested regions)
          ms::build_tree_tiled<T>(img, mask ? mask + b * N : nullptr, g, pol > 0, maxval, ts, num_threads, tree);
        }
        ms::select_regions(tree, p, static_cast<int8_t>(pol), res[t]);
      }
    };
    if (num_threads <= 0) {
      medseg::parallel_for(tasks, work);
    } else if (num_threads == 1 || tasks == 1) {
      for (int64_t t = 0; t < tasks; ++t) work(t);
    } else {
      // explicit thread count (benchmarks, callers sharing the machine); dynamic schedule, the output
      // order does not depend on it
      bool failed = false;
      std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
      for (int64_t t = 0; t < tasks; ++t) {
        try {
          work(t);
        } catch (...) {
#pragma omp critical(medseg_mser_error)
          {
            if (!error) error = std::current_exception();
            failed = true;
          }
        }
      }
      (void)failed;
      if (error) std::rethrow_exception(error);
    }
  }
  int64_t R = 0, V = 0;
  for (const auto& r : res) {
    R += static_cast<int64_t>(r.level.size());
    V += static_cast<int64_t>(r.values.size());
  }
  py::array_t<int64_t> values(V), offsets(R + 1), image(R), area(R);
  py::array_t<int32_t> level(R);
  py::array_t<int8_t> pol(R);
  py::array_t<double> var(R);
  int64_t* pv = values.mutable_data();
  int64_t* po = offsets.mutable_data();
  int64_t* pi = image.mutable_data();
  int64_t* pa = area.mutable_data();
  int32_t* pl = level.mutable_data();
  int8_t* pp = pol.mutable_data();
  double* pw = var.mutable_data();
  int64_t r0 = 0, v0 = 0;
  for (int64_t t = 0; t < tasks; ++t) {
    const auto& r = res[t];
    const int64_t nr = static_cast<int64_t>(r.level.size());
    std::copy(r.values.begin(), r.values.end(), pv + v0);
    for (int64_t i = 0; i < nr; ++i) {
      po[r0 + i] = v0 + r.offsets[i];
      pi[r0 + i] = t / npol;
      pa[r0 + i] = r.area[i];
      pl[r0 + i] = r.level[i];
      pp[r0 + i] = r.polarity[i];
      pw[r0 + i] = r.variation[i];
    }
    r0 += nr;
    v0 += static_cast<int64_t>(r.values.size());
  }
  po[R] = V;
  return py::make_tuple(values, offsets, image, level, area, var, pol);
}

void bind_mser(py::module_& m) {
  m.def("mser_wide_entries_forced", &ms::wide_entries_forced,
        "True when MEDSEG_EXT_MSER_WIDE_ENTRIES=1 forced the floods' 64-bit stack entries (a test hook).");
  m.def("mser_tree_cpu", &tree_impl<uint8_t>, py::arg("image"), py::arg("mask"), py::arg("shape"),
        py::arg("connectivity"), py::arg("bright"), py::arg("maxval"), py::arg("delta"), py::arg("side"),
        py::arg("normalize"), py::arg("algorithm"),
        "Component tree of one image: (pixel_node, parent, level, area, stability) arrays.");
  m.def("mser_tree_cpu", &tree_impl<uint16_t>, py::arg("image"), py::arg("mask"), py::arg("shape"),
        py::arg("connectivity"), py::arg("bright"), py::arg("maxval"), py::arg("delta"), py::arg("side"),
        py::arg("normalize"), py::arg("algorithm"));
  m.def("mser_detect_cpu", &detect_impl<uint8_t>, py::arg("images"), py::arg("mask"), py::arg("shape"),
        py::arg("connectivity"), py::arg("polarity"), py::arg("maxval"), py::arg("mode"), py::arg("delta"),
        py::arg("min_area"), py::arg("max_area"), py::arg("max_variation"), py::arg("min_diversity"),
        py::arg("side"), py::arg("normalize"), py::arg("rule"), py::arg("num_threads"),
        py::arg("tile") = std::vector<int64_t>{},
        "MSER of B images (B, N): (values, offsets, image, level, area, variation, polarity).");
  m.def("mser_detect_cpu", &detect_impl<uint16_t>, py::arg("images"), py::arg("mask"), py::arg("shape"),
        py::arg("connectivity"), py::arg("polarity"), py::arg("maxval"), py::arg("mode"), py::arg("delta"),
        py::arg("min_area"), py::arg("max_area"), py::arg("max_variation"), py::arg("min_diversity"),
        py::arg("side"), py::arg("normalize"), py::arg("rule"), py::arg("num_threads"),
        py::arg("tile") = std::vector<int64_t>{});
}

}  // namespace

MEDSEG_REGISTER_FAMILY(mser, bind_mser)
