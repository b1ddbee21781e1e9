#include "passes.hpp"

#include "simd_clones.hpp"  // one AVX2 copy and one baseline copy of each pass

namespace optdiff {
namespace pass {

namespace {
// The loop bodies, written once; inlined into each clone so they are
// compiled for that clone's instruction set.
template <class T>
__attribute__((always_inline)) inline void mul_t(cplx<T>* __restrict b, const cplx<T>* __restrict h,
                                                 int64_t n, bool adjoint) {
    if (adjoint)
        for (int64_t i = 0; i < n; ++i) b[i] = cmul_conj(b[i], h[i]);
    else
        for (int64_t i = 0; i < n; ++i) b[i] = cmul(b[i], h[i]);
}

template <class T>
__attribute__((always_inline)) inline void modulate_t(cplx<T>* __restrict b,
                                                      const cplx<T>* __restrict m,
                                                      cplx<T>* __restrict w, int64_t n) {
    if (w)
        for (int64_t i = 0; i < n; ++i) {
            const cplx<T> v = cmul(b[i], m[i]);
            b[i].re = v.re;  // member stores: GCC does not vectorise a loop
            b[i].im = v.im;  // that copies a struct to two places
            w[i].re = v.re;
            w[i].im = v.im;
        }
    else
        for (int64_t i = 0; i < n; ++i) b[i] = cmul(b[i], m[i]);
}

template <class T>
__attribute__((always_inline)) inline void camera_t(const cplx<T>* __restrict b,
                                                    T* __restrict inten, cplx<T>* __restrict eL,
                                                    cplx<T>* __restrict cam, int64_t n) {
    if (inten)
        for (int64_t i = 0; i < n; ++i) inten[i] = intensity(b[i]);
    if (eL)
        for (int64_t i = 0; i < n; ++i) eL[i] = b[i];
    if (cam)
        for (int64_t i = 0; i < n; ++i) cam[i] = b[i];
}

template <class T>
__attribute__((always_inline)) inline void intensity_adjoint_t(cplx<T>* __restrict b,
                                                               const cplx<T>* __restrict eL,
                                                               const T* __restrict g, int64_t n) {
    for (int64_t i = 0; i < n; ++i) b[i] = intensity_backward(eL[i], g[i]);
}

// Sum of squares in kLanes independent partial sums (vectorisable without
// reassociating anything), added in a fixed order at the end.
constexpr int64_t kLanes = 8;

// One camera pixel of the fused MSE step; returns d = I - target.
template <class T>
__attribute__((always_inline)) inline T mse_pixel(cplx<T>* __restrict b, const T* __restrict t,
                                                  T grad_scale, T* __restrict inten, int64_t i) {
    const cplx<T> e = b[i];
    const T v = intensity(e);
    const T d = intensity_residual(v, t[i]);
    if (inten) inten[i] = v;
    b[i] = intensity_backward(e, grad_scale * d);
    return d;
}

template <class T>
__attribute__((always_inline)) inline double mse_camera_t(cplx<T>* __restrict b,
                                                          const T* __restrict t, T grad_scale,
                                                          T* __restrict inten, int64_t n) {
    double lane[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes)
        for (int64_t j = 0; j < kLanes; ++j) {
            const double d = mse_pixel(b, t, grad_scale, inten, i + j);
            lane[j] += d * d;
        }
    for (; i < n; ++i) {
        const double d = mse_pixel(b, t, grad_scale, inten, i);
        lane[i % kLanes] += d * d;
    }
    double s = 0.0;
    for (int64_t j = 0; j < kLanes; ++j) s += lane[j];
    return s;
}

template <class T>
__attribute__((always_inline)) inline void mask_adjoint_t(cplx<T>* __restrict b,
                                                          const cplx<T>* __restrict w,
                                                          const cplx<T>* __restrict m,
                                                          T* __restrict acc, int64_t n,
                                                          bool carry) {
    if (carry)
        for (int64_t i = 0; i < n; ++i) {
            const cplx<T> gw = b[i];
            acc[i] += phase_gradient(gw, w[i]);
            b[i] = modulation_backward(gw, m[i]);
        }
    else
        for (int64_t i = 0; i < n; ++i) acc[i] += phase_gradient(b[i], w[i]);
}
}  // namespace

#define OPTDIFF_DEFINE_PASSES(T)                                                                   \
    OPTDIFF_SIMD_CLONES void mul(cplx<T>* b, const cplx<T>* h, int64_t n, bool adjoint) {          \
        mul_t(b, h, n, adjoint);                                                                   \
    }                                                                                              \
    OPTDIFF_SIMD_CLONES void modulate(cplx<T>* b, const cplx<T>* m, cplx<T>* w, int64_t n) {       \
        modulate_t(b, m, w, n);                                                                    \
    }                                                                                              \
    OPTDIFF_SIMD_CLONES void camera(const cplx<T>* b, T* inten, cplx<T>* eL, cplx<T>* cam,         \
                                    int64_t n) {                                                   \
        camera_t(b, inten, eL, cam, n);                                                            \
    }                                                                                              \
    OPTDIFF_SIMD_CLONES void intensity_adjoint(cplx<T>* b, const cplx<T>* eL, const T* g,          \
                                               int64_t n) {                                        \
        intensity_adjoint_t(b, eL, g, n);                                                          \
    }                                                                                              \
    OPTDIFF_SIMD_CLONES double mse_camera(cplx<T>* b, const T* t, T grad_scale, T* inten,          \
                                          int64_t n) {                                             \
        return mse_camera_t(b, t, grad_scale, inten, n);                                           \
    }                                                                                              \
    OPTDIFF_SIMD_CLONES void mask_adjoint(cplx<T>* b, const cplx<T>* w, const cplx<T>* m, T* acc,  \
                                          int64_t n, bool carry) {                                 \
        mask_adjoint_t(b, w, m, acc, n, carry);                                                    \
    }

OPTDIFF_DEFINE_PASSES(float)
OPTDIFF_DEFINE_PASSES(double)

#undef OPTDIFF_DEFINE_PASSES

}  // namespace pass
}  // namespace optdiff
