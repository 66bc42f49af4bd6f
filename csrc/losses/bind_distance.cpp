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
      [](py::tuple mask, py::tuple out, std::vector<double> spacing, bool squared) {
        const TensorDesc md = to_desc(mask, "mask");
        const TensorDesc od = to_desc(out, "out");
        const auto g = medseg::losses::edt_check(md, od, spacing.data(), static_cast<int>(spacing.size()), squared);
        py::gil_scoped_release release;
        medseg::losses::edt_cpu(md, od, g);
      },
      py::arg("mask"), py::arg("out"), py::arg("spacing"), py::arg("squared"),
      "Exact Euclidean distance transform of each (d0, d1, d2) volume of a uint8 mask, written to out "
      "(float32/float64); non-zero voxels get the distance to the nearest zero voxel, +inf if none.");
#ifdef MEDSEG_EXT_WITH_CUDA
  m.def(
      "edt_cuda",
      [](py::tuple mask, py::tuple out, std::vector<double> spacing, bool squared, intptr_t stream) {
        const TensorDesc md = to_desc(mask, "mask");
        const TensorDesc od = to_desc(out, "out");
        const auto g = medseg::losses::edt_check(md, od, spacing.data(), static_cast<int>(spacing.size()), squared);
        medseg::losses::edt_cuda(md, od, g, stream);
      },
      py::arg("mask"), py::arg("out"), py::arg("spacing"), py::arg("squared"), py::arg("stream"),
      "CUDA version of edt_cpu (device pointers, one launch per axis pass for the whole batch).");
#endif
}

}  // namespace

MEDSEG_REGISTER_FAMILY(losses_distance, bind_distance)
