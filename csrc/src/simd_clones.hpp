// Runtime SIMD dispatch without -march: a function marked OPTDIFF_SIMD_CLONES
// is compiled twice (AVX2 and baseline x86-64) and the loader picks the copy
// the CPU can run. Define OPTDIFF_NO_CLONES to build one baseline copy.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(OPTDIFF_NO_CLONES)
#define OPTDIFF_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define OPTDIFF_SIMD_CLONES
#endif
