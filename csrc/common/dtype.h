// Scalar conversions and dtype dispatch. Half types are read bit-exactly into float32 and
// written back with round-to-nearest-even, so no compiler half support is needed on the CPU.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "tensor_view.h"

namespace medseg {

struct Half { uint16_t bits; };
struct BFloat16 { uint16_t bits; };

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Branch-free (so loops over it vectorise): the three cases are computed and one is selected.
// Normal: rebias the exponent; Inf/NaN: exponent 31 -> 255, payload kept; zero/subnormal: m·2^-24,
// exactly, as (2^-14 · (1 + m/1024)) − 2^-14. Bit-identical to the textbook conversion for all
// 65536 inputs (checked exhaustively when this was written).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t(h) & 0x8000u) << 16;
  const uint32_t em = uint32_t(h & 0x7fffu) << 13;  // exponent and mantissa at float32 positions
  const uint32_t exp = em & 0x0f800000u;
  const float normal = bits_to_float(em + ((127u - 15u) << 23));
  const float infnan = bits_to_float(em + ((255u - 31u) << 23));
  const float sub = bits_to_float(em + (113u << 23)) - bits_to_float(113u << 23);
  const float mag = exp == 0x0f800000u ? infnan : (exp == 0 ? sub : normal);
  return bits_to_float(float_to_bits(mag) | sign);
}

inline uint16_t float_to_half(float f) {
  const uint32_t u = float_to_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t absu = u & 0x7fffffffu;
  if (absu >= 0x7f800000u) return uint16_t(sign | 0x7c00u | (absu > 0x7f800000u ? 0x200u : 0));
  if (absu >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds past the largest half
  if (absu < 0x38800000u) {                                    // result is subnormal or zero
    if (absu < 0x33000000u) return uint16_t(sign);
    const uint32_t e = absu >> 23;
    const uint32_t m = (absu & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14..24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return uint16_t(sign | r);
  }
  uint32_t r = absu - 0x38000000u;  // rebias exponent 127 -> 15
  const uint32_t rem = r & 0x1fffu;
  r >>= 13;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return uint16_t(sign | r);
}

inline float bf16_to_float(uint16_t b) { return bits_to_float(uint32_t(b) << 16); }
inline uint16_t float_to_bf16(float f) {
  uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);  // keep NaN a NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

// Storage type -> arithmetic type: half types accumulate in float32, float64 stays float64.
template <typename S> struct compute_type { using type = float; };
template <> struct compute_type<double> { using type = double; };

template <typename C> inline C load_as(const float* p) { return C(*p); }
template <typename C> inline C load_as(const double* p) { return C(*p); }
template <typename C> inline C load_as(const Half* p) { return C(half_to_float(p->bits)); }
template <typename C> inline C load_as(const BFloat16* p) { return C(bf16_to_float(p->bits)); }

inline void store_from(float* p, double v) { *p = float(v); }
inline void store_from(double* p, double v) { *p = v; }
inline void store_from(Half* p, double v) { p->bits = float_to_half(float(v)); }
inline void store_from(BFloat16* p, double v) { p->bits = float_to_bf16(float(v)); }

template <typename T> struct type_tag { using type = T; };

// Calls f(type_tag<S>{}) with S the storage type of a floating dtype.
template <typename F>
auto dispatch_floating(DType t, const char* arg, F&& f) {
  switch (t) {
    case DType::Float32: return f(type_tag<float>{});
    case DType::Float64: return f(type_tag<double>{});
    case DType::Float16: return f(type_tag<Half>{});
    case DType::BFloat16: return f(type_tag<BFloat16>{});
    default: fail(arg, ": expected a floating dtype (float32, float64, float16, bfloat16), got ", dtype_name(t));
  }
}

// Calls f(type_tag<S>{}) with S the storage type of an integer label dtype.
template <typename F>
auto dispatch_label(DType t, const char* arg, F&& f) {
  switch (t) {
    case DType::UInt8: return f(type_tag<uint8_t>{});
    case DType::Int8: return f(type_tag<int8_t>{});
    case DType::Int16: return f(type_tag<int16_t>{});
    case DType::UInt16: return f(type_tag<uint16_t>{});
    case DType::Int32: return f(type_tag<int32_t>{});
    case DType::Int64: return f(type_tag<int64_t>{});
    default: fail(arg, ": expected an integer dtype (uint8, uint16, int8, int16, int32, int64), got ", dtype_name(t));
  }
}

// Calls f(type_tag<S>{}, type_tag<L>{}) for the storage types of float logits and integer labels.
template <typename F>
auto dispatch_logits_labels(DType logits, DType labels, F&& f) {
  return dispatch_floating(logits, "logits", [&](auto st) {
    return dispatch_label(labels, "labels", [&](auto lt) { return f(st, lt); });
  });
}

}  // namespace medseg
