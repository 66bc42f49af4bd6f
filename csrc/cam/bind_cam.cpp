// pybind11 glue of the cam family (registered with MEDSEG_REGISTER_FAMILY; bindings.cpp untouched).
#include <cstdint>

#include "cam/svd_weights.h"
#include "common/bind_util.h"

namespace {

using medseg::DType;
using medseg::TensorDesc;
using medseg::to_desc;
namespace py = pybind11;

void check_contiguous(const TensorDesc& d, const char* arg) {
  MEDSEG_CHECK(d.is_contiguous(), arg, ": internal, expected a contiguous array");
}

void bind_cam(py::module_& m) {
  m.def(
      "cam_svd_rank1_weights_cpu",
      [](py::tuple g, py::tuple w, py::tuple status, int procedure, int reduction) {
        const TensorDesc dg = to_desc(g, "G");
        const TensorDesc dw = to_desc(w, "weights");
        const TensorDesc ds = to_desc(status, "status");
        MEDSEG_CHECK(dg.ndim == 3, "G: internal, expected (M, P, Q)");
        MEDSEG_CHECK(dw.ndim == 1 && dw.dtype == DType::Float64 && dw.shape[0] == dg.shape[0],
                     "weights: internal, expected float64 (M,)");
        MEDSEG_CHECK(ds.ndim == 1 && ds.dtype == DType::UInt8 && ds.shape[0] == dg.shape[0],
                     "status: internal, expected uint8 (M,)");
        MEDSEG_CHECK(procedure == 0 || procedure == 1, "procedure: internal, expected 0 (usv) or 1 (uv)");
        MEDSEG_CHECK(reduction == 0 || reduction == 1, "reduction: internal, expected 0 (all) or 1 (literal)");
        MEDSEG_CHECK(dg.shape[1] >= 1 && dg.shape[2] >= 1 && dg.shape[2] <= 64,
                     "G: slices must be P x Q with 1 <= Q <= 64");
        check_contiguous(dg, "G");
        check_contiguous(dw, "weights");
        check_contiguous(ds, "status");
        const int64_t M = dg.shape[0], P = dg.shape[1], Q = dg.shape[2];
        auto* wp = static_cast<double*>(dw.data);
        auto* sp = static_cast<uint8_t*>(ds.data);
        py::gil_scoped_release release;
        if (dg.dtype == DType::Float32) {
          medseg::cam::svd_rank1_weights_f32(static_cast<const float*>(dg.data), M, P, Q, procedure, reduction, wp, sp);
        } else {
          MEDSEG_CHECK(dg.dtype == DType::Float64, "G: internal, expected float32 or float64");
          medseg::cam::svd_rank1_weights_f64(static_cast<const double*>(dg.data), M, P, Q, procedure, reduction, wp, sp);
        }
      },
      py::arg("G"), py::arg("weights"), py::arg("status"), py::arg("procedure"), py::arg("reduction"),
      "SVD-Grad-CAM rank-1 weights of M contiguous P x Q slices (closed form); status 1 = tied top eigenvalue or out-of-range slice (dense path).");
}

}  // namespace

MEDSEG_REGISTER_FAMILY(cam, bind_cam)
