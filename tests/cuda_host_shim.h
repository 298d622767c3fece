// Compiles kernels/cuda/*.cu as host C++ for tests/test_cuda_emulated.py: __global__ functions
// become plain functions and the launch geometry is one block of one thread, so every
// grid-stride loop visits all its indices in order.  The shared bodies take their host paths
// (no __CUDA_ARCH__); the few CUDA atomics the .cu files call directly get host definitions.
#pragma once
#include <cstdint>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct supercl_dim3 {
  unsigned int x;
};
static const supercl_dim3 blockIdx = {0}, threadIdx = {0}, blockDim = {1}, gridDim = {1};

inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long value) {
  const unsigned long long old = *address;
  *address = old + value;
  return old;
}

inline int atomicMin(int* address, int value) {
  const int old = *address;
  if (value < old) *address = value;
  return old;
}

// Block-level CUDA: with one thread per block, shared memory is a function's static storage and
// a barrier has nothing to wait for.
#define __shared__ static
inline void __syncthreads() {}
