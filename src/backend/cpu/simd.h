// Runtime choice of the widest vectors for the CPU's elementwise loops, with the same bits on
// every machine.
//
// The build targets baseline x86-64 (SSE2: 4 floats a vector), so a binary runs on any x86-64
// host. A loop marked TESSERA_SIMD_CLONES is compiled twice, for baseline x86-64 and for AVX2
// (8 floats), and the loader picks the clone the CPU runs (GCC's target_clones, an ifunc resolved
// once at start). OpenMP regions inside the function are cloned with it.
//
// The clones give the same bits: AVX2 alone adds no fused multiply-add (that is FMA, not asked
// for here), and without -ffast-math the vectoriser neither reassociates nor contracts, so each
// lane carries out the scalar code's IEEE operations in its order, whatever the vector width.
// tests/ops/test_activation.cpp checks the activations against their scalar formulas bit for bit.
#pragma once

// ThreadSanitizer's runtime is not up yet when the loader runs ifunc resolvers: a TSan build takes
// the baseline loops alone (a binary with clones crashed before main).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(__SANITIZE_THREAD__)
#define TESSERA_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define TESSERA_SIMD_CLONES
#endif
