// pybind11 glue of the distance group (EDT) of the losses family (registered into medseg_ext._C).
// medseg_ext/losses/distance.py hands over a contiguous uint8 mask viewed as (volumes, d0, d1, d2)
// and a contiguous float32/float64 output of the same shape; everything is checked again here.
#include <vector>

#include "common/bind_util.h"
#include "losses/edt.h"

namespace py = pybind11;
using medseg::TensorDesc;
using medseg::to_desc;

namespace {

void bind_distance(py::module_& m) {
  m.def(
      "edt_cpu",
      [](py::tuple mask, py::tuple out, std::vector<double> spacing, bool squared, int mode, double offset) {
        const TensorDesc md = to_desc(mask, "mask");
        const TensorDesc od = to_desc(out, "out");
        const auto g = medseg::losses::edt_check(md, od, spacing.data(), static_cast<int>(spacing.size()), squared,
                                                    mode, offset);
        py::gil_scoped_release release;
        medseg::losses::edt_cpu(md, od, g);
      },
      py::arg("mask"), py::arg("out"), py::arg("spacing"), py::arg("squared"), py::arg("mode") = 0,
      py::arg("offset") = 1.0,
      "Exact Euclidean distance transform of each (d0, d1, d2) volume of a uint8 mask, written to out "
      "(float32/float64); mode 0: non-zero voxels get the distance to the nearest zero voxel (+inf if none), "
      "1: the same for the inverted mask, 2: MONAI distance field EDT(m) + EDT(!m), 3: signed distance "
      "m ? offset - EDT(m) : EDT(!m); modes 2 and 3 are 0 in uniform volumes.");
  m.def(
      "surface_edges_cpu",
      [](py::tuple mask, py::tuple out, int spatial_dims) {
        const TensorDesc md = to_desc(mask, "mask");
        const TensorDesc od = to_desc(out, "out");
        medseg::losses::surface_edges_check(md, od, spatial_dims);
        py::gil_scoped_release release;
        medseg::losses::surface_edges_cpu(md, od, spatial_dims);
      },
      py::arg("mask"), py::arg("out"), py::arg("spatial_dims"),
      "Surface voxels (mask XOR erosion with the cross element, border = background) of uint8 volumes.");
  m.def(
      "cdt_cpu",
      [](py::tuple mask, py::tuple out, int metric, bool invert) {
        const TensorDesc md = to_desc(mask, "mask");
        const TensorDesc od = to_desc(out, "out");
        py::gil_scoped_release release;
        medseg::losses::cdt_cpu(md, od, metric, invert);
      },
      py::arg("mask"), py::arg("out"), py::arg("metric"), py::arg("invert"),
      "Exact taxicab (metric 0) or chessboard (1) distance transform of uint8 volumes, unit grid.");
#ifdef MEDSEG_EXT_WITH_CUDA
  m.def(
      "surface_edges_cuda",
      [](py::tuple mask, py::tuple out, int spatial_dims, intptr_t stream) {
        const TensorDesc md = to_desc(mask, "mask");
        const TensorDesc od = to_desc(out, "out");
        medseg::losses::surface_edges_check(md, od, spatial_dims);
        medseg::losses::surface_edges_cuda(md, od, spatial_dims, stream);
      },
      py::arg("mask"), py::arg("out"), py::arg("spatial_dims"), py::arg("stream"));
  m.def(
      "edt_cuda",
      [](py::tuple mask, py::tuple out, std::vector<double> spacing, bool squared, int mode, double offset,
         intptr_t stream) {
        const TensorDesc md = to_desc(mask, "mask");
        const TensorDesc od = to_desc(out, "out");
        const auto g = medseg::losses::edt_check(md, od, spacing.data(), static_cast<int>(spacing.size()), squared,
                                                    mode, offset);
        medseg::losses::edt_cuda(md, od, g, stream);
      },
      py::arg("mask"), py::arg("out"), py::arg("spacing"), py::arg("squared"), py::arg("mode"),
      py::arg("offset"), py::arg("stream"),
      "CUDA version of edt_cpu (device pointers, one launch per axis pass for the whole batch).");
#endif
}

}  // namespace

MEDSEG_REGISTER_FAMILY(losses_distance, bind_distance)
