// CPU instruction-set dispatch. Kernel files (*_cpu.cpp) are compiled three times: for the
// x86-64 baseline (namespace isa_base) and, on x86-64, with AVX2+FMA (namespace isa_avx2) and with
// AVX-512 F/BW/DQ/VL (namespace isa_avx512, 512-bit vectors preferred); the entry point picks the
// variant at run time (MEDSEG_ISA_CALL), so one wheel is fast on new CPUs and still runs on old
// ones. MEDSEG_EXT_CPU_ISA=base|avx2 caps the choice (tests compare the variants).
#pragma once

#include <cstdlib>
#include <cstring>

#ifndef MEDSEG_ISA_NS
#define MEDSEG_ISA_NS isa_base
#define MEDSEG_ISA_IS_BASE 1
#endif

// Forced inlining for the small math helpers called inside `#pragma omp simd` element loops: a
// call the compiler leaves out of line stops the loop from vectorising (seen with GCC 12 on the
// sigmoid focal rows: one scalar call per element, 4x slower).
#if defined(__GNUC__)
#define MEDSEG_SIMD_INLINE inline __attribute__((always_inline))
#else
#define MEDSEG_SIMD_INLINE inline
#endif

namespace medseg {

inline bool cpu_use_avx2() {
#if defined(MEDSEG_EXT_HAVE_AVX2_BUILD) && (defined(__x86_64__) || defined(_M_X64))
  static const bool use = [] {
    const char* forced = std::getenv("MEDSEG_EXT_CPU_ISA");
    if (forced && std::strcmp(forced, "base") == 0) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return use;
#else
  return false;
#endif
}

inline bool cpu_use_avx512() {
#if defined(MEDSEG_EXT_HAVE_AVX512_BUILD) && (defined(__x86_64__) || defined(_M_X64))
  static const bool use = [] {
    const char* forced = std::getenv("MEDSEG_EXT_CPU_ISA");
    if (forced && (std::strcmp(forced, "base") == 0 || std::strcmp(forced, "avx2") == 0)) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && cpu_use_avx2();
  }();
  return use;
#else
  return false;
#endif
}

inline const char* cpu_isa_name() {
  return cpu_use_avx512() ? "avx512" : cpu_use_avx2() ? "avx2+fma" : "baseline";
}

}  // namespace medseg

// `return MEDSEG_ISA_CALL(fn, args...);` from an entry point of the baseline build: the best
// variant of fn this build and CPU have.
#if defined(MEDSEG_EXT_HAVE_AVX512_BUILD)
#define MEDSEG_ISA_CALL(fn, ...)                                                        \
  (::medseg::cpu_use_avx512() ? isa_avx512::fn(__VA_ARGS__)                             \
   : ::medseg::cpu_use_avx2() ? isa_avx2::fn(__VA_ARGS__) : isa_base::fn(__VA_ARGS__))
#elif defined(MEDSEG_EXT_HAVE_AVX2_BUILD)
#define MEDSEG_ISA_CALL(fn, ...) \
  (::medseg::cpu_use_avx2() ? isa_avx2::fn(__VA_ARGS__) : isa_base::fn(__VA_ARGS__))
#else
#define MEDSEG_ISA_CALL(fn, ...) isa_base::fn(__VA_ARGS__)
#endif

namespace medseg {

}  // namespace medseg
