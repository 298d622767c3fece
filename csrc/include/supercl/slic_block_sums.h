// supercl/slic_block_sums.h -- the device's per-block reduction of SLIC's centre sums (2-D and
// 3-D accumulate kernels, kernels/cuda/slic.cu and slic_3d.cu).  Device-only machinery; the
// host backend never includes it.  The arithmetic of a run's sums stays in slic.h/slic_3d.h.
//
// A block's threads cover a few rows of a few images, which a few superpixels own: instead of
// sending every run's 3 + C (4 + C) sums to global memory with int64 atomics on the few hot
// addresses of those centres, the block adds them into a small table in shared memory keyed by
// the centre's global index (image * k_max + label), then flushes each occupied slot with one
// set of global atomics.  Keys are inserted by linear probing with a 64-bit compare-and-swap; a
// run whose key finds no slot within a few probes goes straight to global memory.  All adds are int64 (as
// two's-complement unsigned), so the sums -- and the labels -- do not depend on which path a
// run takes, nor on the order of any atomics: the result equals the host's bit for bit.
//
// Host compilation (tests/cuda_host_shim.h, one thread in one block): the macros below make the
// table a function-static array, the barrier a no-op and the compare-and-swap a plain one, so
// the same kernel text runs there (and the shim needs nothing new).
#pragma once

#include "supercl/common.h"

// Slots per block: a block of 256 threads covers 4096 pixels (16-pixel chunks), which ~20
// centres own at K = 100 on 256^2 and ~300 at K = 20,000 on 512^2 (3.6-pixel superpixels).
// 18 KiB of shared memory per block at 256 slots.  Override (tests) to force overflow.
#ifndef SUPERCL_SLIC_SLOTS
#define SUPERCL_SLIC_SLOTS 256
#endif
// Probes before a run gives up on the table and adds to global memory directly: bounds the
// cost of a full table (more centres in a block than slots) to a few shared-memory CAS.
#define SUPERCL_SLIC_PROBES 8
// Fields per slot: up to 8, i.e. C <= 5 in 2-D and C <= 4 in 3-D; more channels take the
// direct path (the launcher passes use_table = 0).
#define SUPERCL_SLIC_SLOT_FIELDS 8
#define SUPERCL_SLIC_EMPTY_KEY 0xffffffffffffffffULL

#if defined(__CUDA_ARCH__)
#define SUPERCL_SHARED __shared__
#define SUPERCL_SYNC() __syncthreads()
#else
#define SUPERCL_SHARED static
#define SUPERCL_SYNC() ((void)0)
#endif

namespace supercl {

SUPERCL_HD unsigned long long slic_cas(unsigned long long* address, unsigned long long expected,
                                       unsigned long long desired) {
#if defined(__CUDA_ARCH__)
  return atomicCAS(address, expected, desired);
#else
  const unsigned long long old = *address;
  if (old == expected) *address = desired;
  return old;
#endif
}

// Empties the table; every thread of the block calls it (thread t clears slots t, t + blockDim,
// ..), then the block synchronises.
SUPERCL_HD void slic_block_clear(unsigned long long* keys, int64_t* sums, int64_t thread,
                                 int64_t threads) {
  for (int64_t s = thread; s < SUPERCL_SLIC_SLOTS; s += threads) {
    keys[s] = SUPERCL_SLIC_EMPTY_KEY;
    for (int64_t f = 0; f < SUPERCL_SLIC_SLOT_FIELDS; ++f)
      sums[s * SUPERCL_SLIC_SLOT_FIELDS + f] = 0;
  }
}

// The sums of centre `key` in the table (inserting the key), or nullptr when SUPERCL_SLIC_PROBES
// probes found other keys (a full or crowded table).
SUPERCL_HD int64_t* slic_block_slot(unsigned long long* keys, int64_t* sums,
                                    unsigned long long key) {
  // Fibonacci hashing: neighbouring labels spread over the table.
  int64_t h = static_cast<int64_t>((key * 0x9E3779B97F4A7C15ULL) >> 40) % SUPERCL_SLIC_SLOTS;
  for (int64_t probe = 0; probe < SUPERCL_SLIC_PROBES && probe < SUPERCL_SLIC_SLOTS; ++probe) {
    const unsigned long long old = slic_cas(keys + h, SUPERCL_SLIC_EMPTY_KEY, key);
    if (old == SUPERCL_SLIC_EMPTY_KEY || old == key) return sums + h * SUPERCL_SLIC_SLOT_FIELDS;
    h = (h + 1) % SUPERCL_SLIC_SLOTS;
  }
  return nullptr;
}

// Adds every occupied slot to the global sums (fields per centre: `fields`), after the block
// has synchronised; every thread calls it (thread t flushes slots t, t + blockDim, ..).
SUPERCL_HD void slic_block_flush(const unsigned long long* keys, const int64_t* sums,
                                 int64_t fields, int64_t thread, int64_t threads,
                                 int64_t* global_sums) {
  for (int64_t s = thread; s < SUPERCL_SLIC_SLOTS; s += threads) {
    const unsigned long long key = keys[s];
    if (key == SUPERCL_SLIC_EMPTY_KEY) continue;
    int64_t* target = global_sums + static_cast<int64_t>(key) * fields;
    for (int64_t f = 0; f < fields; ++f) {
      const int64_t v = sums[s * SUPERCL_SLIC_SLOT_FIELDS + f];
      if (v != 0) sc_accumulate(target + f, v);
    }
  }
}

}  // namespace supercl
