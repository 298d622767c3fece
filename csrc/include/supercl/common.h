// supercl/common.h -- the few primitives that let one kernel body run on the host and the device.
//
// Every algorithm in csrc/include/supercl/ is written once, as SUPERCL_HD inline functions over
// raw pointers, sizes and strides with 64-bit indices.  The CPU backend (csrc/cpu/) loops over
// them; the CUDA backend (kernels/cuda/, compiled at run time by NVRTC through CuPy) launches
// one thread per element and calls the same functions.  The handful of operations whose form
// differs between the two -- atomics, and floating-point arithmetic that must not be contracted
// into fused multiply-adds -- live here, each with a host and a device definition, so that the
// CPU tests exercise the exact logic the GPU runs.
//
// Bit-identical results across backends rest on three rules:
//   1. integer accumulation only (int64 fixed point), so the order of atomics cannot matter;
//   2. floating-point arithmetic through sc_dadd/sc_dsub/sc_dmul (and the float forms), which
//      are correctly rounded IEEE-754 operations on both sides: __dadd_rn & co. on the device
//      (never fused into FMA by nvcc), plain operators on the host, where setup.py compiles
//      with -ffp-contract=off so that GCC/Clang do not fuse them either;
//   3. ties broken by index, never by arrival order.
#pragma once

#if defined(__CUDACC_RTC__)
// NVRTC has no C library headers; these are the only types the kernels need.
typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
#define SUPERCL_DBL_MAX 1.7976931348623157e+308
#else
#include <cfloat>
#include <cmath>
#include <cstdint>
#define SUPERCL_DBL_MAX DBL_MAX
#endif

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define SUPERCL_HD __host__ __device__ __forceinline__
#else
#define SUPERCL_HD inline
#endif

namespace supercl {

// ---------------------------------------------------------------------------------------------
// Memory primitives.  The union-find of connected-component labeling reads and lowers parent
// pointers that other threads lower concurrently; on the host these are GCC/Clang __atomic
// builtins (relaxed: only the single word matters, no ordering with other memory is needed),
// so the CPU driver may run many rows of one image in parallel exactly as the GPU does.
// ---------------------------------------------------------------------------------------------

// kAtomic = false is for host code that owns the memory alone (one image per thread): the
// same operation without the atomic instruction.  The device always uses the atomic form.
template <bool kAtomic = true>
SUPERCL_HD int32_t sc_load(const int32_t* addr) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const volatile int32_t*>(addr);
#else
  return kAtomic ? __atomic_load_n(addr, __ATOMIC_RELAXED) : *addr;
#endif
}

template <bool kAtomic = true>
SUPERCL_HD void sc_store(int32_t* addr, int32_t value) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<volatile int32_t*>(addr) = value;
#else
  if (kAtomic)
    __atomic_store_n(addr, value, __ATOMIC_RELAXED);
  else
    *addr = value;
#endif
}

// *addr = min(*addr, value); returns the previous value.
template <bool kAtomic = true>
SUPERCL_HD int32_t sc_atomic_min(int32_t* addr, int32_t value) {
#if defined(__CUDA_ARCH__)
  return atomicMin(addr, value);
#else
  if (!kAtomic) {
    const int32_t old = *addr;
    if (value < old) *addr = value;
    return old;
  }
  int32_t old = __atomic_load_n(addr, __ATOMIC_RELAXED);
  while (value < old &&
         !__atomic_compare_exchange_n(addr, &old, value, /*weak=*/true, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED)) {
  }
  return old;
#endif
}

// *addr += value for integer accumulators.  Atomic on the device.  On the host the CPU
// drivers give each image's accumulators to a single thread (see csrc/cpu/slic.cpp), so a
// plain add is race-free and avoids a locked instruction per pixel and channel.  Integer
// addition is associative, so both give the same sums in any order.
SUPERCL_HD void sc_accumulate(int64_t* addr, int64_t value) {
#if defined(__CUDA_ARCH__)
  atomicAdd(reinterpret_cast<unsigned long long*>(addr), static_cast<unsigned long long>(value));
#else
  *addr += value;
#endif
}

// ---------------------------------------------------------------------------------------------
// Correctly rounded float arithmetic that the compiler may not fuse.
// ---------------------------------------------------------------------------------------------

SUPERCL_HD float sc_fadd(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

SUPERCL_HD float sc_fmul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

SUPERCL_HD double sc_dadd(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

SUPERCL_HD double sc_dsub(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}

SUPERCL_HD double sc_dmul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

SUPERCL_HD double sc_floor(double a) {
#if defined(__CUDA_ARCH__)
  return floor(a);
#else
  return std::floor(a);
#endif
}

// Quotient of two integers, correctly rounded to double: both conversions are exact below
// 2^53 and IEEE division is correctly rounded on both sides (NVRTC's default -prec-div=true).
// Used for fixed-point means.
SUPERCL_HD double sc_int_ratio(int64_t num, int64_t den) {
  return static_cast<double>(num) / static_cast<double>(den);
}

template <typename T>
SUPERCL_HD T sc_min(T a, T b) {
  return b < a ? b : a;
}

template <typename T>
SUPERCL_HD T sc_max(T a, T b) {
  return a < b ? b : a;
}

// Floor division for a possibly negative numerator and a positive denominator.
SUPERCL_HD int64_t sc_floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (q * b > a) ? q - 1 : q;
}

}  // namespace supercl
