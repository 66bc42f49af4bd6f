// The one compiled module, medseg_ext._C. Arrays cross as descriptors
// (data pointer, dtype name, shape, strides in elements) built by medseg_ext/_tensor.py, so
// torch, NumPy and CuPy arrays all work and nothing links libtorch. The caller (Python) keeps
// the arrays alive for the duration of the call and has checked devices; the C++ side checks
// shapes, dtypes and values before writing.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "common/errors.h"
#include "common/isa.h"
#include "common/parallel.h"
#include "common/tensor_view.h"
#include "losses/region_stats.h"

#ifdef MEDSEG_EXT_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace py = pybind11;
using medseg::TensorDesc;

namespace {

TensorDesc to_desc(const py::tuple& t, const char* arg) {
  MEDSEG_CHECK(t.size() == 4, arg, ": internal descriptor must be (ptr, dtype, shape, strides)");
  TensorDesc d;
  d.data = reinterpret_cast<void*>(t[0].cast<uintptr_t>());
  d.dtype = medseg::parse_dtype(t[1].cast<std::string>(), arg);
  const auto shape = t[2].cast<std::vector<int64_t>>();
  const auto strides = t[3].cast<std::vector<int64_t>>();
  MEDSEG_CHECK(shape.size() == strides.size(), arg, ": shape and strides differ in length");
  MEDSEG_CHECK(shape.size() <= static_cast<size_t>(medseg::kMaxRank), arg, ": rank ", shape.size(),
               " exceeds the supported maximum ", medseg::kMaxRank);
  d.ndim = static_cast<int>(shape.size());
  for (int i = 0; i < d.ndim; ++i) {
    MEDSEG_CHECK(shape[i] >= 0, arg, ": negative size in shape");
    d.shape[i] = shape[i];
    d.strides[i] = strides[i];
  }
  return d;
}

medseg::losses::RegionStatsParams region_params(bool sigmoid, bool per_sample, bool has_ignore,
                                                int64_t ignore_index) {
  medseg::losses::RegionStatsParams p;
  p.sigmoid = sigmoid;
  p.per_sample = per_sample;
  p.has_ignore = has_ignore;
  p.ignore_index = ignore_index;
  return p;
}

py::dict build_info() {
  py::dict info;
  info["openmp"] = medseg::openmp_enabled();
  info["max_threads"] = medseg::max_threads();
  info["cpu_isa"] = std::string(medseg::cpu_isa_name());
  info["cxx_standard"] = static_cast<long>(__cplusplus);
#ifdef MEDSEG_EXT_WITH_CUDA
  info["cuda_compiled"] = true;
  info["cuda_architectures"] = std::string(MEDSEG_EXT_CUDA_ARCHS);
  int rt = 0;
  cudaRuntimeGetVersion(&rt);
  info["cuda_runtime_version"] = rt;
#else
  info["cuda_compiled"] = false;
  info["cuda_architectures"] = std::string();
  info["cuda_runtime_version"] = 0;
#endif
  return info;
}

int cuda_device_count() {
#ifdef MEDSEG_EXT_WITH_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "medseg_ext compiled kernels (CPU C++ and, when built with a CUDA toolkit, CUDA)";
  py::register_exception<medseg::ValueError>(m, "KernelValueError", PyExc_ValueError);

  m.def("build_info", &build_info, "Compile-time facts: OpenMP, CUDA architectures, runtime version.");
  m.def("cuda_device_count", &cuda_device_count, "Number of CUDA devices the CUDA runtime sees (0 if not built).");

  m.def(
      "region_stats_cpu",
      [](py::tuple logits, py::tuple labels, uintptr_t out_ptr, bool sigmoid, bool per_sample, bool has_ignore,
         int64_t ignore_index) {
        TensorDesc lg, lab;
        medseg::losses::normalise_region_inputs(to_desc(logits, "logits"), to_desc(labels, "labels"), lg, lab);
        const auto prm = region_params(sigmoid, per_sample, has_ignore, ignore_index);
        py::gil_scoped_release release;
        medseg::losses::soft_region_stats_cpu(lg, lab, reinterpret_cast<double*>(out_ptr), prm);
      },
      py::arg("logits"), py::arg("labels"), py::arg("out_ptr"), py::arg("sigmoid"), py::arg("per_sample"),
      py::arg("has_ignore"), py::arg("ignore_index"),
      "Soft region statistics I, P, G, N into a contiguous float64 (U, C, 4) buffer.");

  m.def(
      "region_stats_backward_cpu",
      [](py::tuple logits, py::tuple labels, uintptr_t coeff_ptr, py::tuple grad_logits, bool sigmoid,
         bool per_sample, bool has_ignore, int64_t ignore_index) {
        TensorDesc lg, lab;
        medseg::losses::normalise_region_inputs(to_desc(logits, "logits"), to_desc(labels, "labels"), lg, lab);
        TensorDesc gl = to_desc(grad_logits, "grad_logits").padded_to(5, 2);
        const auto prm = region_params(sigmoid, per_sample, has_ignore, ignore_index);
        py::gil_scoped_release release;
        medseg::losses::soft_region_stats_backward_cpu(lg, lab, reinterpret_cast<const double*>(coeff_ptr), gl,
                                                       prm);
      },
      py::arg("logits"), py::arg("labels"), py::arg("coeff_ptr"), py::arg("grad_logits"), py::arg("sigmoid"),
      py::arg("per_sample"), py::arg("has_ignore"), py::arg("ignore_index"),
      "Writes dL/dlogits (contiguous, logits dtype) from float64 (U, C, 2) coefficients dL/dI, dL/dP.");

#ifdef MEDSEG_EXT_WITH_CUDA
  m.def("region_stats_cuda_blocks", &medseg::losses::region_stats_cuda_blocks, py::arg("spatial_size"),
        "Number of spatial blocks per sample the CUDA statistics kernel writes partials for.");
  m.def(
      "region_stats_cuda",
      [](py::tuple logits, py::tuple labels, uintptr_t partial_ptr, uintptr_t counts_ptr, bool sigmoid,
         bool per_sample, bool has_ignore, int64_t ignore_index, intptr_t stream) {
        TensorDesc lg, lab;
        medseg::losses::normalise_region_inputs(to_desc(logits, "logits"), to_desc(labels, "labels"), lg, lab);
        const auto prm = region_params(sigmoid, per_sample, has_ignore, ignore_index);
        medseg::losses::soft_region_stats_cuda(lg, lab, reinterpret_cast<float*>(partial_ptr),
                                               reinterpret_cast<int32_t*>(counts_ptr), prm, stream);
      },
      py::arg("logits"), py::arg("labels"), py::arg("partial_ptr"), py::arg("counts_ptr"), py::arg("sigmoid"),
      py::arg("per_sample"), py::arg("has_ignore"), py::arg("ignore_index"), py::arg("stream"));
  m.def(
      "region_stats_backward_cuda",
      [](py::tuple logits, py::tuple labels, uintptr_t coeff_ptr, py::tuple grad_logits, bool sigmoid,
         bool per_sample, bool has_ignore, int64_t ignore_index, intptr_t stream) {
        TensorDesc lg, lab;
        medseg::losses::normalise_region_inputs(to_desc(logits, "logits"), to_desc(labels, "labels"), lg, lab);
        TensorDesc gl = to_desc(grad_logits, "grad_logits").padded_to(5, 2);
        const auto prm = region_params(sigmoid, per_sample, has_ignore, ignore_index);
        medseg::losses::soft_region_stats_backward_cuda(lg, lab, reinterpret_cast<const float*>(coeff_ptr), gl, prm,
                                                        stream);
      },
      py::arg("logits"), py::arg("labels"), py::arg("coeff_ptr"), py::arg("grad_logits"), py::arg("sigmoid"),
      py::arg("per_sample"), py::arg("has_ignore"), py::arg("ignore_index"), py::arg("stream"));
#endif
}
