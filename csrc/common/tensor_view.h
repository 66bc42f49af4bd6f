// A typed, strided view over memory we do not own (a torch tensor, a NumPy or CuPy array).
// Python hands over (pointer, dtype name, shape, strides in elements); nothing here links
// libtorch (DESIGN.md principle 1). Rank is at most kMaxRank; strides may be zero or any
// positive value, so broadcast and transposed inputs are read without a copy.
#pragma once

#include <cstdint>
#include <string>

#include "errors.h"

namespace medseg {

constexpr int kMaxRank = 5;

enum class DType : int { Float32, Float64, Float16, BFloat16, Int8, Int16, Int32, Int64, UInt8, UInt16 };

inline DType parse_dtype(const std::string& name, const char* arg) {
  if (name == "float32") return DType::Float32;
  if (name == "float64") return DType::Float64;
  if (name == "float16") return DType::Float16;
  if (name == "bfloat16") return DType::BFloat16;
  if (name == "int8") return DType::Int8;
  if (name == "int16") return DType::Int16;
  if (name == "int32") return DType::Int32;
  if (name == "int64") return DType::Int64;
  if (name == "uint8") return DType::UInt8;
  if (name == "uint16") return DType::UInt16;
  fail(arg, ": unsupported dtype '", name, "'");
}

inline bool is_floating(DType t) {
  return t == DType::Float32 || t == DType::Float64 || t == DType::Float16 || t == DType::BFloat16;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
    case DType::Int8: return "int8";
    case DType::Int16: return "int16";
    case DType::Int32: return "int32";
    case DType::Int64: return "int64";
    case DType::UInt8: return "uint8";
    case DType::UInt16: return "uint16";
  }
  return "?";
}

// Untyped description, as it crosses the binding.
struct TensorDesc {
  void* data = nullptr;
  DType dtype = DType::Float32;
  int ndim = 0;
  int64_t shape[kMaxRank] = {1, 1, 1, 1, 1};
  int64_t strides[kMaxRank] = {0, 0, 0, 0, 0};

  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  // Row-major dense: each axis longer than 1 has the stride of the axes after it (the strides of
  // axes of length 0 or 1 do not matter, as in torch).
  bool is_contiguous() const {
    int64_t expect = 1;
    for (int i = ndim - 1; i >= 0; --i) {
      if (shape[i] > 1 && strides[i] != expect) return false;
      expect *= shape[i];
    }
    return true;
  }
  // Same view with size-1 axes inserted at position `at` until the rank is `rank`.
  TensorDesc padded_to(int rank, int at) const {
    MEDSEG_CHECK(rank <= kMaxRank && rank >= ndim, "internal: cannot pad rank ", ndim, " to ", rank);
    TensorDesc out = *this;
    const int extra = rank - ndim;
    for (int i = 0; i < rank; ++i) {
      if (i < at) {
        out.shape[i] = shape[i];
        out.strides[i] = strides[i];
      } else if (i < at + extra) {
        out.shape[i] = 1;
        out.strides[i] = 0;
      } else {
        out.shape[i] = shape[i - extra];
        out.strides[i] = strides[i - extra];
      }
    }
    out.ndim = rank;
    return out;
  }
};

// Typed rank-N view; index arithmetic in int64 so volumes past 2^31 elements are addressed right.
template <typename T, int N>
struct StridedView {
  T* data;
  int64_t shape[N];
  int64_t strides[N];

  StridedView(const TensorDesc& d) : data(static_cast<T*>(d.data)) {
    for (int i = 0; i < N; ++i) {
      shape[i] = i < d.ndim ? d.shape[i] : 1;
      strides[i] = i < d.ndim ? d.strides[i] : 0;
    }
  }
  template <typename... Idx>
  T& operator()(Idx... idx) const {
    static_assert(sizeof...(Idx) == N, "index count must equal the view's rank");
    const int64_t ix[N] = {static_cast<int64_t>(idx)...};
    int64_t off = 0;
    for (int i = 0; i < N; ++i) off += ix[i] * strides[i];
    return data[off];
  }
};

}  // namespace medseg
