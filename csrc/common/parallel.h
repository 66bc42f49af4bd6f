// Thread-level parallelism. The schedule is static and the work split never depends on the
// number of threads, so reductions built on parallel_for give bit-identical results on any
// machine: each chunk writes its own partial, and partials are combined in chunk order.
#pragma once

#include <cstdint>
#include <exception>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace medseg {

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline bool openmp_enabled() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

// Runs f(i) for i in [0, n). Exceptions thrown inside f are caught per iteration and the first
// one is rethrown after the loop (an exception may not escape an OpenMP region).
template <typename F>
void parallel_for(int64_t n, F&& f) {
  if (n <= 0) return;
  bool failed = false;
  std::exception_ptr error;
#pragma omp parallel for schedule(static) if (n > 1)
  for (int64_t i = 0; i < n; ++i) {
    bool skip;
#pragma omp atomic read
    skip = failed;
    if (skip) continue;
    try {
      f(i);
    } catch (...) {
#pragma omp critical(medseg_parallel_for_error)
      {
        if (!error) error = std::current_exception();
#pragma omp atomic write
        failed = true;
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace medseg
