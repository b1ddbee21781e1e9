// CPU loops of the sampling step: counter-based Gaussian noise and the DDPM
// update, threaded over blocks of the array. The maths is in
// optdiff/sampler.hpp (shared with the CUDA kernels).
#include <algorithm>

#include "optdiff/optdiff.hpp"
#include "simd_clones.hpp"
#include "threads.hpp"

namespace optdiff {

namespace {

// Counters (4 normals each) per block: 256 floats of noise stay in L1 while
// the block's elements are updated.
constexpr int64_t kBlockCounters = 64;
// Below this many elements per thread, waking threads costs more than it saves.
constexpr int64_t kElementsPerThread = 1 << 15;

// The generator's AVX2 copy (simd_clones.hpp) is 10-20% faster than the SSE2
// one on the Xeon VM: the 32x32->64-bit products need lane shuffles either way.

// Normals of counters jb .. jb+m-1 (m <= kBlockCounters), lane l into zl.
// The loop vectorises because sampler.hpp has no branches and this file is
// built with -fno-math-errno (sqrtf needs no errno path).
// jb is a multiple of kBlockCounters, so the counter's high word is the same
// for the whole block and the loop needs no 64-bit lane arithmetic.
OPTDIFF_SIMD_CLONES void normal_block(uint64_t jb, int64_t m, uint32_t k0, uint32_t k1, uint32_t s0,
                                      uint32_t s1, float* __restrict z0, float* __restrict z1,
                                      float* __restrict z2, float* __restrict z3) {
    const uint32_t lo = static_cast<uint32_t>(jb), hi = static_cast<uint32_t>(jb >> 32);
#pragma omp simd
    for (int32_t k = 0; k < static_cast<int32_t>(m); ++k) {
        const u32x4 b = philox4x32_10(u32x4{lo + static_cast<uint32_t>(k), hi, s0, s1}, k0, k1);
        box_muller(b.v0, b.v1, &z0[k], &z1[k]);
        box_muller(b.v2, b.v3, &z2[k], &z3[k]);
    }
}

// Calls fn(first, last, z) for consecutive element ranges [first, last) of
// [0, count) (positions in the caller's array), where z[i - first] is normal
// number offset + i of (seed, stream). Threads take whole blocks.
template <class Fn>
void over_noise_blocks(int64_t count, uint64_t offset, uint64_t seed, uint64_t stream,
                       int num_threads, const Fn& fn) {
    if (count <= 0) return;
    const uint64_t j_first =
        offset / 4 / kBlockCounters * kBlockCounters;  // blocks aligned in the stream
    const uint64_t j_last = (offset + static_cast<uint64_t>(count) - 1) / 4;  // inclusive
    const int64_t blocks = static_cast<int64_t>((j_last - j_first) / kBlockCounters) + 1;
    const int nt =
        resolve_threads(num_threads, std::min<int64_t>(blocks, count / kElementsPerThread + 1));
    const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    const uint32_t s0 = static_cast<uint32_t>(stream), s1 = static_cast<uint32_t>(stream >> 32);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
        const uint64_t jb = j_first + static_cast<uint64_t>(blk) * kBlockCounters;
        const int64_t m = static_cast<int64_t>(std::min<uint64_t>(kBlockCounters, j_last - jb + 1));
        alignas(64) float z0[kBlockCounters], z1[kBlockCounters], z2[kBlockCounters],
            z3[kBlockCounters];
        normal_block(jb, m, k0, k1, s0, s1, z0, z1, z2, z3);
        alignas(64) float z[4 * kBlockCounters];
        for (int64_t k = 0; k < m; ++k) {
            z[4 * k] = z0[k];
            z[4 * k + 1] = z1[k];
            z[4 * k + 2] = z2[k];
            z[4 * k + 3] = z3[k];
        }
        // Element e = offset + i of the stream sits at z[e - 4 jb]. Inclusive
        // last elements: offset + count and 4 (jb + m) may both be 2^64 (0 mod 2^64).
        const uint64_t e_begin = std::max<uint64_t>(offset, 4 * jb);
        const uint64_t e_last = std::min<uint64_t>(offset + (static_cast<uint64_t>(count) - 1),
                                                   4 * jb + (4 * static_cast<uint64_t>(m) - 1));
        fn(static_cast<int64_t>(e_begin - offset), static_cast<int64_t>(e_last - offset) + 1,
           z + (e_begin - 4 * jb));
    }
}

}  // namespace

template <class T>
void standard_normal(T* out, int64_t count, uint64_t seed, uint64_t stream, uint64_t offset,
                     int num_threads) {
    validate_noise_range(count, offset);
    over_noise_blocks(count, offset, seed, stream, num_threads,
                      [&](int64_t first, int64_t last, const float* z) {
                          for (int64_t i = first; i < last; ++i)
                              out[i] = static_cast<T>(z[i - first]);
                      });
}

template <class T>
void ddpm_update(const T* x, const T* v, int64_t count, const DdpmStep& step, uint64_t seed,
                 uint64_t stream, uint64_t offset, T* out, int num_threads) {
    validate_noise_range(count, offset);
    const T c1 = static_cast<T>(step.c1), c2 = static_cast<T>(step.c2),
            sigma = static_cast<T>(step.sigma);
    const T a = static_cast<T>(step.eps_scale), b = static_cast<T>(step.eps_offset);
    if (step.sigma == 0.0) {  // last step: no noise to draw
        const int nt = resolve_threads(num_threads, count / kElementsPerThread + 1);
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t i = 0; i < count; ++i)
            out[i] = ddpm_update_value(x[i], v[i], T(0), c1, c2, sigma, a, b);
        return;
    }
    over_noise_blocks(count, offset, seed, stream, num_threads,
                      [&](int64_t first, int64_t last, const float* z) {
#pragma omp simd
                          for (int64_t i = first; i < last; ++i)
                              out[i] = ddpm_update_value(x[i], v[i], static_cast<T>(z[i - first]),
                                                         c1, c2, sigma, a, b);
                      });
}

template void standard_normal<float>(float*, int64_t, uint64_t, uint64_t, uint64_t, int);
template void standard_normal<double>(double*, int64_t, uint64_t, uint64_t, uint64_t, int);
template void ddpm_update<float>(const float*, const float*, int64_t, const DdpmStep&, uint64_t,
                                 uint64_t, uint64_t, float*, int);
template void ddpm_update<double>(const double*, const double*, int64_t, const DdpmStep&, uint64_t,
                                  uint64_t, uint64_t, double*, int);

}  // namespace optdiff
