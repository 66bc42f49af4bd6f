// pybind11 helpers shared by the mser family's binding files (bind_mser.cpp, bind_mser_tiled.cpp).
#pragma once

#include <pybind11/numpy.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "common/bind_util.h"
#include "mser/mser.h"

namespace medseg {
namespace mser {
namespace bind {

namespace py = pybind11;

template <typename T>
using carr = py::array_t<T, py::array::c_style>;

// spatial shape (H, W) or (D, H, W) as given by Python; 2-D gets a unit depth
inline Geometry make_geometry(const std::vector<int64_t>& shape, int connectivity) {
  MEDSEG_CHECK(shape.size() == 2 || shape.size() == 3, "image: expected a 2-D or 3-D spatial shape");
  Geometry g;
  g.d0 = shape.size() == 3 ? shape[0] : 1;
  g.d1 = shape[shape.size() - 2];
  g.d2 = shape[shape.size() - 1];
  if (shape.size() == 2) {
    MEDSEG_CHECK(connectivity == 4 || connectivity == 8, "connectivity: expected 4 or 8 in 2-D, got ", connectivity);
  } else {
    MEDSEG_CHECK(connectivity == 6 || connectivity == 26, "connectivity: expected 6 or 26 in 3-D, got ",
                 connectivity);
  }
  MEDSEG_CHECK(g.d0 >= 1 && g.d1 >= 1 && g.d2 >= 1, "image: empty spatial shape");
  g.connectivity = connectivity;
  return g;
}

inline Side parse_side(const std::string& s) {
  if (s == "two_sided") return Side::TwoSided;
  if (s == "ancestor") return Side::Ancestor;
  if (s == "descendant") return Side::Descendant;
  medseg::fail("variation: expected 'two_sided', 'ancestor' or 'descendant', got '", s, "'");
}

template <typename T>
py::array_t<T> to_array(const std::vector<T>& v) {
  py::array_t<T> a(static_cast<py::ssize_t>(v.size()));
  if (!v.empty()) std::copy(v.begin(), v.end(), a.mutable_data());
  return a;
}

// the optional uint8 mask of `size` elements (nullptr for None); `keep` holds the array alive
inline const uint8_t* mask_ptr(py::object mask_obj, int64_t size, carr<uint8_t>& keep) {
  if (mask_obj.is_none()) return nullptr;
  keep = mask_obj.cast<carr<uint8_t>>();
  MEDSEG_CHECK(keep.size() == size, "mask: size does not match the image");
  return keep.data();
}

// The component-tree bindings' common body: input checks, the mask, then build(mask, geometry, tree)
// and the stability of every node, without the GIL; returns (pixel_node, parent, level, area, stability).
template <typename T, typename Build>
py::tuple tree_with_stability(const carr<T>& img, py::object mask_obj, const std::vector<int64_t>& shape,
                              int connectivity, int maxval, int delta, const std::string& side, bool normalize,
                              Build build) {
  const Geometry g = make_geometry(shape, connectivity);
  MEDSEG_CHECK(img.size() == g.numel(), "image: buffer size does not match the shape");
  MEDSEG_CHECK(maxval >= 1 && maxval <= 65535, "maxval: expected 1..65535");
  carr<uint8_t> keep;
  const uint8_t* mask = mask_ptr(mask_obj, g.numel(), keep);
  Params p;
  p.delta = delta;
  p.side = parse_side(side);
  p.normalize = normalize;
  Tree t;
  std::vector<double> stab;
  {
    py::gil_scoped_release release;
    build(mask, g, t);
    node_stability(t, p, stab);
  }
  return py::make_tuple(to_array(t.pixel_node), to_array(t.parent), to_array(t.level), to_array(t.area),
                        to_array(stab));
}

}  // namespace bind
}  // namespace mser
}  // namespace medseg
