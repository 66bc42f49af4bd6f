// The one compiled module, medseg_ext._C: build facts, then every family's functions, which each
// family registers from csrc/<family>/bind_<family>.cpp (common/bind_util.h). Arrays cross as
// descriptors (data pointer, dtype name, shape, strides in elements) built by medseg_ext/_tensor.py,
// so torch, NumPy and CuPy arrays all work and nothing links libtorch. The caller (Python) keeps
// the arrays alive for the duration of the call and has checked devices; the C++ side checks
// shapes, dtypes and values before writing.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "common/errors.h"
#include "common/isa.h"
#include "common/parallel.h"
#include "common/bind_util.h"

#ifdef MEDSEG_EXT_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace py = pybind11;

namespace {

py::dict build_info() {
  py::dict info;
  info["openmp"] = medseg::openmp_enabled();
  info["max_threads"] = medseg::max_threads();
  info["cpu_isa"] = std::string(medseg::cpu_isa_name());
  info["cxx_standard"] = static_cast<long>(__cplusplus);
#ifdef MEDSEG_EXT_WITH_CUDA
  info["cuda_compiled"] = true;
#ifdef MEDSEG_EXT_CUDA_EMU
  info["cuda_emulated"] = true;  // a test build: the CUDA kernels run on CPU threads (csrc/testing/cuda_emu)
#endif
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

  // every family's functions (csrc/<family>/bind_<family>.cpp), in registration order
  for (const auto& entry : medseg::family_registry()) entry.second(m);
}
