// pybind11 glue of the LRP family (registered into medseg_ext._C by bindings.cpp).
// medseg_ext/lrp/fused.py validates shapes and dtypes and hands over contiguous buffers; every
// size, dtype and contiguity is checked here again before anything is read or written.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/bind_util.h"
#include "lrp/lrp_fused.h"

namespace py = pybind11;
using medseg::DType;
using medseg::TensorDesc;
using medseg::to_desc;

namespace {

void check_dense(const TensorDesc& d, const char* arg, DType dt, const std::vector<int64_t>& shape) {
  MEDSEG_CHECK(d.dtype == dt, arg, ": expected dtype ", medseg::dtype_name(dt), ", got ", medseg::dtype_name(d.dtype));
  MEDSEG_CHECK(d.ndim == static_cast<int>(shape.size()), arg, ": expected ", shape.size(), " dimensions, got ",
               d.ndim);
  for (int i = d.ndim - 1; i >= 0; --i)
    MEDSEG_CHECK(d.shape[i] == shape[static_cast<size_t>(i)], arg, ": size ", d.shape[i], " at dimension ", i,
                 ", expected ", shape[static_cast<size_t>(i)]);
  MEDSEG_CHECK(d.is_contiguous(), arg, ": expected a contiguous tensor");
}

// An optional tensor argument (None: null), checked like check_dense.
const void* optional_dense(const py::object& obj, const char* arg, DType dt, const std::vector<int64_t>& shape) {
  if (obj.is_none()) return nullptr;
  const TensorDesc d = to_desc(obj.cast<py::tuple>(), arg);
  check_dense(d, arg, dt, shape);
  return d.data;
}

py::tuple signed_coeffs(const py::tuple& z, const py::tuple& h, const py::object& b, const py::tuple& R,
                        const py::tuple& uv, int rule, double alpha, double beta, double gamma, double epsilon) {
  const TensorDesc dz = to_desc(z, "z"), dh = to_desc(h, "h"), dR = to_desc(R, "R"), duv = to_desc(uv, "uv");
  MEDSEG_CHECK(dz.dtype == DType::Float32 || dz.dtype == DType::Float64, "z: expected float32 or float64, got ",
               medseg::dtype_name(dz.dtype));
  MEDSEG_CHECK(dz.ndim == 3, "z: expected (M, C, S), got ", dz.ndim, " dimensions");
  MEDSEG_CHECK(dR.ndim == 4, "R: expected (K, M, C, S), got ", dR.ndim, " dimensions");
  const int64_t M = dz.shape[0], C = dz.shape[1], S = dz.shape[2], K = dR.shape[0];
  check_dense(dz, "z", dz.dtype, {M, C, S});
  check_dense(dh, "h", dz.dtype, {M, C, S});
  check_dense(dR, "R", dz.dtype, {K, M, C, S});
  check_dense(duv, "uv", dz.dtype, {K, M, 2 * C, S});
  const void* pb = optional_dense(b, "b", dz.dtype, {C});
  MEDSEG_CHECK(rule >= 0 && rule <= 2, "rule: expected 0 (zplus), 1 (alphabeta) or 2 (gamma), got ", rule);
  MEDSEG_CHECK(epsilon > 0.0, "epsilon: expected > 0, got ", epsilon);
  medseg::lrp::SignedParams p;
  p.rule = static_cast<medseg::lrp::SignedRule>(rule);
  p.alpha = alpha;
  p.beta = beta;
  p.gamma = gamma;
  p.epsilon = epsilon;
  double err = 0.0, mass = 0.0;
  {
    py::gil_scoped_release nogil;
    if (dz.dtype == DType::Float32) {
      medseg::lrp::signed_coeffs<float>(static_cast<const float*>(dz.data), static_cast<const float*>(dh.data),
                                        static_cast<const float*>(pb), static_cast<const float*>(dR.data),
                                        static_cast<float*>(duv.data), K, M, C, S, p, &err, &mass);
    } else {
      medseg::lrp::signed_coeffs<double>(static_cast<const double*>(dz.data), static_cast<const double*>(dh.data),
                                         static_cast<const double*>(pb), static_cast<const double*>(dR.data),
                                         static_cast<double*>(duv.data), K, M, C, S, p, &err, &mass);
    }
  }
  return py::make_tuple(err, mass);
}

void combine(const py::tuple& x, const py::tuple& g, const py::tuple& out, double c1, double c2) {
  const TensorDesc dx = to_desc(x, "x"), dg = to_desc(g, "G"), dout = to_desc(out, "out");
  MEDSEG_CHECK(dx.dtype == DType::Float32 || dx.dtype == DType::Float64, "x: expected float32 or float64, got ",
               medseg::dtype_name(dx.dtype));
  MEDSEG_CHECK(dx.ndim == 3, "x: expected (M, C, S), got ", dx.ndim, " dimensions");
  MEDSEG_CHECK(dg.ndim == 4, "G: expected (K, M, 2C, S), got ", dg.ndim, " dimensions");
  const int64_t M = dx.shape[0], C = dx.shape[1], S = dx.shape[2], K = dg.shape[0];
  check_dense(dx, "x", dx.dtype, {M, C, S});
  check_dense(dg, "G", dx.dtype, {K, M, 2 * C, S});
  check_dense(dout, "out", dx.dtype, {K, M, C, S});
  py::gil_scoped_release nogil;
  if (dx.dtype == DType::Float32) {
    medseg::lrp::combine<float>(static_cast<const float*>(dx.data), static_cast<const float*>(dg.data),
                                static_cast<float*>(dout.data), K, M, C, S, c1, c2);
  } else {
    medseg::lrp::combine<double>(static_cast<const double*>(dx.data), static_cast<const double*>(dg.data),
                                 static_cast<double*>(dout.data), K, M, C, S, c1, c2);
  }
}

void eps_div(const py::tuple& R, const py::tuple& z, const py::object& mult, const py::tuple& out, double eps) {
  const TensorDesc dR = to_desc(R, "R"), dz = to_desc(z, "z"), dout = to_desc(out, "out");
  MEDSEG_CHECK(dz.dtype == DType::Float32 || dz.dtype == DType::Float64, "z: expected float32 or float64, got ",
               medseg::dtype_name(dz.dtype));
  MEDSEG_CHECK(dz.ndim == 1 && dR.ndim == 2, "R, z: expected (K, n) and (n,)");
  const int64_t n = dz.shape[0], K = dR.shape[0];
  check_dense(dz, "z", dz.dtype, {n});
  check_dense(dR, "R", dz.dtype, {K, n});
  check_dense(dout, "out", dz.dtype, {K, n});
  const void* pm = optional_dense(mult, "mult", dz.dtype, {n});
  MEDSEG_CHECK(eps > 0.0, "epsilon: expected > 0, got ", eps);
  py::gil_scoped_release nogil;
  if (dz.dtype == DType::Float32) {
    medseg::lrp::eps_div<float>(static_cast<const float*>(dR.data), static_cast<const float*>(dz.data),
                                static_cast<const float*>(pm), static_cast<float*>(dout.data), K, n, eps);
  } else {
    medseg::lrp::eps_div<double>(static_cast<const double*>(dR.data), static_cast<const double*>(dz.data),
                                 static_cast<const double*>(pm), static_cast<double*>(dout.data), K, n, eps);
  }
}

void norm_freeze_eps(const py::tuple& x, const py::tuple& z, const py::tuple& R, const py::object& weight,
                     const py::tuple& out, double norm_eps, double eps) {
  const TensorDesc dx = to_desc(x, "x"), dz = to_desc(z, "z"), dR = to_desc(R, "R"), dout = to_desc(out, "out");
  MEDSEG_CHECK(dx.dtype == DType::Float32 || dx.dtype == DType::Float64, "x: expected float32 or float64, got ",
               medseg::dtype_name(dx.dtype));
  MEDSEG_CHECK(dx.ndim == 3 && dR.ndim == 4, "x, R: expected (M, C, S) and (K, M, C, S)");
  const int64_t M = dx.shape[0], C = dx.shape[1], S = dx.shape[2], K = dR.shape[0];
  check_dense(dx, "x", dx.dtype, {M, C, S});
  check_dense(dz, "z", dx.dtype, {M, C, S});
  check_dense(dR, "R", dx.dtype, {K, M, C, S});
  check_dense(dout, "out", dx.dtype, {K, M, C, S});
  const void* pw = optional_dense(weight, "weight", dx.dtype, {C});
  MEDSEG_CHECK(eps > 0.0, "epsilon: expected > 0, got ", eps);
  MEDSEG_CHECK(norm_eps >= 0.0, "norm_eps: expected >= 0, got ", norm_eps);
  py::gil_scoped_release nogil;
  if (dx.dtype == DType::Float32) {
    medseg::lrp::norm_freeze_eps<float>(static_cast<const float*>(dx.data), static_cast<const float*>(dz.data),
                                        static_cast<const float*>(dR.data), static_cast<const float*>(pw),
                                        static_cast<float*>(dout.data), K, M, C, S, norm_eps, eps);
  } else {
    medseg::lrp::norm_freeze_eps<double>(static_cast<const double*>(dx.data), static_cast<const double*>(dz.data),
                                         static_cast<const double*>(dR.data), static_cast<const double*>(pw),
                                         static_cast<double*>(dout.data), K, M, C, S, norm_eps, eps);
  }
}

void bind_lrp(py::module_& m) {
  m.def("lrp_norm_freeze_eps", &norm_freeze_eps, py::arg("x"), py::arg("z"), py::arg("R"), py::arg("weight"),
        py::arg("out"), py::arg("norm_eps"), py::arg("epsilon"),
        "Frozen instance norm, epsilon rule: out = R / stab(z) * x * weight / sqrt(var + norm_eps) per plane.");
  m.def("lrp_eps_div", &eps_div, py::arg("R"), py::arg("z"), py::arg("mult"), py::arg("out"), py::arg("epsilon"),
        "Epsilon-rule division: out = R / (z + eps * sgn0(z)) (* mult), R (K, n), z and mult (n,).");
  m.def("lrp_signed_coeffs", &signed_coeffs, py::arg("z"), py::arg("h"), py::arg("b"), py::arg("R"), py::arg("uv"),
        py::arg("rule"), py::arg("alpha"), py::arg("beta"), py::arg("gamma"), py::arg("epsilon"),
        "Fast signed-input LRP rules, stage 1: [u; v] coefficients and the rounding-error estimate (err, mass).");
  m.def("lrp_combine", &combine, py::arg("x"), py::arg("G"), py::arg("out"), py::arg("c1"), py::arg("c2"),
        "Fast signed-input LRP rules, stage 2: out = c1 * x * G[:, :, :C] + c2 * |x| * G[:, :, C:].");
}

}  // namespace

MEDSEG_REGISTER_FAMILY(lrp, bind_lrp)
