// Helpers for the pybind11 glue of every family (csrc/<family>/bind_<family>.cpp).
//
// Each family registers its functions with MEDSEG_REGISTER_FAMILY(name, fn); bindings.cpp creates
// the module and runs every registered function, so adding a family never touches bindings.cpp.
// Arrays cross as descriptors (data pointer, dtype name, shape, strides in elements) built by
// medseg_ext/_tensor.py; the caller keeps them alive for the duration of the call.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common/errors.h"
#include "common/tensor_view.h"

namespace medseg {

namespace py = pybind11;

using FamilyBinder = void (*)(py::module_&);

// Function-local static: safe to use from static initialisers in any translation unit.
inline std::vector<std::pair<std::string, FamilyBinder>>& family_registry() {
  static std::vector<std::pair<std::string, FamilyBinder>> registry;
  return registry;
}

struct FamilyRegistrar {
  FamilyRegistrar(const char* name, FamilyBinder fn) { family_registry().emplace_back(name, fn); }
};

// (ptr, dtype name, shape, strides) -> TensorDesc, with the checks every entry point needs.
inline TensorDesc to_desc(const py::tuple& t, const char* arg) {
  MEDSEG_CHECK(t.size() == 4, arg, ": internal descriptor must be (ptr, dtype, shape, strides)");
  TensorDesc d;
  d.data = reinterpret_cast<void*>(t[0].cast<uintptr_t>());
  d.dtype = parse_dtype(t[1].cast<std::string>(), arg);
  const auto shape = t[2].cast<std::vector<int64_t>>();
  const auto strides = t[3].cast<std::vector<int64_t>>();
  MEDSEG_CHECK(shape.size() == strides.size(), arg, ": shape and strides differ in length");
  MEDSEG_CHECK(shape.size() <= static_cast<size_t>(kMaxRank), arg, ": rank ", shape.size(),
               " exceeds the supported maximum ", kMaxRank);
  d.ndim = static_cast<int>(shape.size());
  for (int i = 0; i < d.ndim; ++i) {
    MEDSEG_CHECK(shape[i] >= 0, arg, ": negative size in shape");
    d.shape[i] = shape[i];
    d.strides[i] = strides[i];
  }
  return d;
}

}  // namespace medseg

// One per family, at namespace scope in csrc/<family>/bind_<family>.cpp:
//   static void bind_topology(pybind11::module_& m) { m.def(...); }
//   MEDSEG_REGISTER_FAMILY(topology, bind_topology)
#define MEDSEG_REGISTER_FAMILY(name, fn) \
  static const ::medseg::FamilyRegistrar medseg_family_registrar_##name(#name, fn);
