// Element-wise parts of a DDPM sampling step, written once for the CPU loops
// and the CUDA kernels: counter-based Gaussian noise and the x_t -> x_{t-1}
// update.
//
// Noise element i of the stream (seed, stream) is lane i % 4 of
// normal4(seed, stream, i / 4). It depends on nothing else: not on the thread
// count, the batch split or the order of evaluation, so a generation is
// reproducible and any slice of it can be redrawn. The random bits are the
// same on every back end; the normals agree to float rounding (a GPU or a
// -march=native build may contract a * b + c into one FMA).
//
// Random bits: Philox4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel random
// numbers: as easy as 1, 2, 3", SC 2011). Gaussians: Box-Muller, with ln and
// sin/cos evaluated by short series on reduced ranges (no table, no branch)
// so the CPU loop vectorises; float32 accuracy (see tests/test_sampler.py).
// |z| <= 6.66 because the smallest uniform is 2^-32.
#pragma once

#include <cstdint>
#include <cstring>

#include "optdiff/physics.hpp"

namespace optdiff {

struct u32x4 {
    uint32_t v0, v1, v2, v3;
};

// 32 x 32 -> 64-bit product split into high and low words.
OPTDIFF_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
    const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
    *hi = static_cast<uint32_t>(p >> 32);
    *lo = static_cast<uint32_t>(p);
}

// One Philox round: two 32-bit products mixed with the other words and the key.
OPTDIFF_HD u32x4 philox_round(u32x4 c, uint32_t k0, uint32_t k1) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(0xD2511F53u, c.v0, &hi0, &lo0);
    mulhilo32(0xCD9E8D57u, c.v2, &hi1, &lo1);
    return u32x4{hi1 ^ c.v1 ^ k0, lo1, hi0 ^ c.v3 ^ k1, lo0};
}

// Philox4x32 with 10 rounds: a bijection of the 128-bit counter keyed by 64
// bits, the key bumped by Weyl constants between rounds. Checked against the
// Random123 known-answer vectors. Straight-line code (no round loop) so a
// loop over counters vectorises.
OPTDIFF_HD u32x4 philox4x32_10(u32x4 c, uint32_t k0, uint32_t k1) {
    const uint32_t w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
    c = philox_round(c, k0, k1);
    c = philox_round(c, k0 + 1 * w0, k1 + 1 * w1);
    c = philox_round(c, k0 + 2 * w0, k1 + 2 * w1);
    c = philox_round(c, k0 + 3 * w0, k1 + 3 * w1);
    c = philox_round(c, k0 + 4 * w0, k1 + 4 * w1);
    c = philox_round(c, k0 + 5 * w0, k1 + 5 * w1);
    c = philox_round(c, k0 + 6 * w0, k1 + 6 * w1);
    c = philox_round(c, k0 + 7 * w0, k1 + 7 * w1);
    c = philox_round(c, k0 + 8 * w0, k1 + 8 * w1);
    return philox_round(c, k0 + 9 * w0, k1 + 9 * w1);
}

OPTDIFF_HD float float_from_bits(uint32_t b) {
    float f;
    std::memcpy(&f, &b, sizeof f);
    return f;
}

OPTDIFF_HD uint32_t bits_from_float(float f) {
    uint32_t b;
    std::memcpy(&b, &f, sizeof b);
    return b;
}

// Uniform in (0, 1]: 31 random bits, shifted by half a step so 0 never
// occurs (the signed conversion vectorises; an unsigned one does not on SSE2).
OPTDIFF_HD float uniform_open0(uint32_t b) {
    return static_cast<float>(static_cast<int32_t>(b >> 1)) * 4.656612873077393e-10f +
           2.3283064365386963e-10f;
}

// Uniform in [-1/2, 1/2]: the bits read as a signed fraction of 2^32.
OPTDIFF_HD float uniform_centred(uint32_t b) {
    return static_cast<float>(static_cast<int32_t>(b)) * 2.3283064365386963e-10f;
}

// ln(u) for normal positive floats u (here u in (0, 1]).
// u = m 2^e with m in [1/sqrt2, sqrt2); ln m = 2 atanh(s), s = (m-1)/(m+1),
// |s| <= 0.172, summed to s^9: truncation < 4e-10, below float rounding.
OPTDIFF_HD float log_positive(float u) {
    // Integer selects only: a conditional float multiply is not if-converted
    // by GCC (it could trap), and a branch stops vectorisation.
    const uint32_t bits = bits_from_float(u);
    const uint32_t mant = bits & 0x007FFFFFu;
    const bool big = mant > 0x003504F3u;  // mantissa of sqrt(2)
    const int32_t e = static_cast<int32_t>(bits >> 23) - 127 + (big ? 1 : 0);
    const float m = float_from_bits(mant | (big ? 0x3F000000u : 0x3F800000u));  // [1/sqrt2, sqrt2)
    const float s = (m - 1.0f) / (m + 1.0f);
    const float s2 = s * s;
    const float p = 1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9))));
    return 2.0f * s * p + static_cast<float>(e) * 0.693147180559945f;
}

// sin and cos of 2 pi v for v in [-1/2, 1/2]. v = q/4 + f with integer q and
// |f| <= 1/8, so r = 2 pi f is within [-pi/4, pi/4]; Taylor series to r^9
// (sin) and r^10 (cos) leave < 2e-9. The quadrant q then rotates (sin, cos).
OPTDIFF_HD void sincos_turns(float v, float* s, float* c) {
    const float two_pi = 6.28318530717958647f;
    const int32_t q =
        static_cast<int32_t>(4.0f * v + 2.5f) - 2;  // nearest integer to 4v (4v + 2.5 > 0)
    const float r = (v - 0.25f * static_cast<float>(q)) * two_pi;
    const float r2 = r * r;
    // The nested series read best on one line each.
    // clang-format off
    const float sr = r * (1.0f - r2 * (1.0f / 6) * (1.0f - r2 * (1.0f / 20) * (1.0f - r2 * (1.0f / 42) * (1.0f - r2 * (1.0f / 72)))));
    const float cr = 1.0f - r2 * 0.5f * (1.0f - r2 * (1.0f / 12) * (1.0f - r2 * (1.0f / 30) * (1.0f - r2 * (1.0f / 56) * (1.0f - r2 * (1.0f / 90)))));
    // clang-format on
    // sin(r + q pi/2), cos(r + q pi/2) for q mod 4 = 0, 1, 2, 3.
    const int32_t k = q & 3;
    const float sa = (k & 1) ? cr : sr;
    const float ca = (k & 1) ? sr : cr;
    *s = float_from_bits(bits_from_float(sa) ^ (static_cast<uint32_t>(k & 2) << 30));  // sign flips
    *c = float_from_bits(bits_from_float(ca) ^ (static_cast<uint32_t>((k + 1) & 2) << 30));
}

// Two independent standard normals from two random words (Box-Muller).
OPTDIFF_HD void box_muller(uint32_t radius_bits, uint32_t angle_bits, float* z0, float* z1) {
    const float rad = sqrtf(-2.0f * log_positive(uniform_open0(radius_bits)));
    float s, c;
    sincos_turns(uniform_centred(angle_bits), &s, &c);
    *z0 = rad * c;
    *z1 = rad * s;
}

// Normals 4j .. 4j+3 of the stream (seed, stream).
OPTDIFF_HD void normal4(uint64_t seed, uint64_t stream, uint64_t j, float z[4]) {
    const u32x4 ctr{static_cast<uint32_t>(j), static_cast<uint32_t>(j >> 32),
                    static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)};
    const u32x4 b =
        philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    box_muller(b.v0, b.v1, &z[0], &z[1]);
    box_muller(b.v2, b.v3, &z[2], &z[3]);
}

// Coefficients of one ancestral step with an affine read-out of the noise:
// eps = eps_scale * v + eps_offset, x_{t-1} = c1 (x_t - c2 eps) + sigma z.
struct DdpmStep {
    double c1 = 1.0, c2 = 0.0, sigma = 0.0;
    double eps_scale = 1.0, eps_offset = 0.0;
};

template <class T>
OPTDIFF_HD T ddpm_update_value(T x, T v, T z, T c1, T c2, T sigma, T eps_scale, T eps_offset) {
    const T eps = eps_scale * v + eps_offset;
    return c1 * (x - c2 * eps) + sigma * z;
}

}  // namespace optdiff
