// OpenMP helpers shared by the CPU drivers.  Without OpenMP (setup.py warns at build time) the
// pragmas vanish and everything runs serially with the same results.
#pragma once

#ifdef _OPENMP
#include <omp.h>
#endif

namespace supercl {
namespace cpu {

inline int resolve_threads(int requested) {
#ifdef _OPENMP
  return requested > 0 ? requested : omp_get_max_threads();
#else
  (void)requested;
  return 1;
#endif
}

}  // namespace cpu
}  // namespace supercl
