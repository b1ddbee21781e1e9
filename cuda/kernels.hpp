// Element-wise CUDA kernels of the optdiff CUDA back end.
//
// Every kernel evaluates the physics through optdiff/physics.hpp (the same
// functions the CPU loops call); only indexing lives here. Fields are viewed
// through `Strided`: element (b, r, c) of sample b at
// ptr[b * sample + r * row + c], which describes both the user's dense
// [B, n, n] arrays and the padded work layouts (see optics.cpp).
//
// All launchers enqueue on `stream` and return immediately; launch failures
// throw optdiff::gpu::CudaError. Nothing here synchronises except
// all_finite().
#pragma once

#include <cstdint>

#include "device.hpp"
#include "optdiff/physics.hpp"
#include "optdiff/sampler.hpp"

namespace optdiff {
namespace gpu {

template <class E>
struct Strided {
    E* ptr = nullptr;
    int64_t sample = 0;  // elements between samples
    int64_t row = 0;     // elements between rows
    OPTDIFF_HD E& at(int64_t b, int64_t r, int64_t c) const {
        return ptr[b * sample + r * row + c];
    }
};

// Dense [batch, n, n] view.
template <class E>
Strided<E> dense_view(E* ptr, int64_t n) {
    return Strided<E>{ptr, n * n, n};
}

enum class TableOp : int {
    None = 0,         // v
    Multiply = 1,     // v * t                 (tilt of a forward hop; layer modulation)
    ConjMultiply = 2  // conj(t) * v           (adjoint of either: modulation_backward)
};

// M[p] = layer_modulation(phi[p], tilt[p]) for p < npix; tilt may be null
// (no tilt: factor 1).
template <class T>
void launch_layer_modulation(const T* phi, const cplx<T>* tilt, cplx<T>* m, int64_t npix,
                             Stream stream);

// Loads the n x n field of every sample into a zero-padded np x np grid:
//   v = op(src(b, r, c), table[r*n + c]);  save(b, r, c) = v (if save.ptr);
//   dst(b, r, c) = v inside, 0 for r >= n or c >= n.
// dst may alias src when both have the same layout (same element addresses).
template <class T>
void launch_pad_load(Strided<const cplx<T>> src, const cplx<T>* table, TableOp op,
                     Strided<cplx<T>> save, Strided<cplx<T>> dst, int64_t n, int64_t np,
                     int64_t batch, Stream stream);
// The same for a real source (amplitudes): read as src + 0i.
template <class T>
void launch_pad_load(Strided<const T> src, const cplx<T>* table, TableOp op, Strided<cplx<T>> save,
                     Strided<cplx<T>> dst, int64_t n, int64_t np, int64_t batch, Stream stream);

// dst(b) padded to np with intensity_backward(e(b, r, c), g[b, r, c]) inside
// (g dense [batch, n, n]), zeros outside.
template <class T>
void launch_intensity_backward_pad(Strided<const cplx<T>> e, const T* g, Strided<cplx<T>> dst,
                                   int64_t n, int64_t np, int64_t batch, Stream stream);

// data(b, r, c) *= H[r*np + c] (or conj(H)) on the whole np x np grid.
template <class T>
void launch_multiply_transfer(Strided<cplx<T>> data, const cplx<T>* h, bool conjugate, int64_t np,
                              int64_t batch, Stream stream);

// dst(b, r, c) = op(src(b, r, c), table[r*n + c]) for r, c < n.
template <class T>
void launch_crop_store(Strided<const cplx<T>> src, const cplx<T>* table, TableOp op,
                       Strided<cplx<T>> dst, int64_t n, int64_t batch, Stream stream);

// Camera: intensity[b, r, c] = |E|^2 (dense, may be null); camera and save
// (may have null ptr) receive E itself. *nonfinite (nullable device int) is
// set to 1 when an intensity is not finite, and left alone otherwise.
template <class T>
void launch_camera(Strided<const cplx<T>> e, T* intensity, Strided<cplx<T>> camera,
                   Strided<cplx<T>> save, int* nonfinite, int64_t n, int64_t batch, Stream stream);

// Intensity-matching loss of the fused step, per pixel p of an npix-pixel
// image: d = intensity[b, p] - target[b, p], g[b, p] = grad_scale * d (g may
// be intensity), partial[group * npix + p] = sum of d^2 over the group's
// samples (b = group, group + groups, ...). groups <= backward_groups(n, n, batch).
template <class T>
void launch_mse_residual(const T* intensity, const T* target, T grad_scale, T* g, double* partial,
                         int64_t groups, int64_t npix, int64_t batch, Stream stream);

// Number of batch groups used by launch_layer_backward for this problem: the
// caller sizes `partial` as groups * n * n doubles.
int64_t backward_groups(int64_t n, int64_t np_dst, int64_t batch);

// One layer of the stack's backward pass, fused:
//   gw = grad_w(b, r, c) (dLoss/dw_l), w = w(b, r, c) (saved modulated field),
//   partial[g, r*n + c] = sum over b in group g of phase_gradient(gw, w)
//   (b = g, g + groups, ... in increasing order: deterministic);
//   dst(b, r, c) = modulation_backward(gw, m[r*n + c]) padded to np_dst with
//   zeros (skipped when dst.ptr is null).
// dst may alias grad_w when both have the same layout.
template <class T>
void launch_layer_backward(Strided<const cplx<T>> grad_w, Strided<const cplx<T>> w,
                           const cplx<T>* m, double* partial, int64_t groups, Strided<cplx<T>> dst,
                           int64_t n, int64_t np_dst, int64_t batch, Stream stream);

// partial[g, r*n + c] = sum over b in group g (b = g, g + groups, ...) of
// Re(conj(a(b, r, c)) * v(b, r, c)) for r, c < n: the per-pixel terms of the
// derivative of a loss with respect to a hop's distance (a: the gradient at
// the hop's output, v: d output / d distance). groups <= backward_groups(n, n, batch).
template <class T>
void launch_inner_partial(Strided<const cplx<T>> a, Strided<const cplx<T>> v, double* partial,
                          int64_t groups, int64_t n, int64_t batch, Stream stream);

// out[p] = (accumulate ? out[p] : 0) + sum_g partial[g, p], in order of g.
template <class T>
void launch_reduce_groups(const double* partial, int64_t groups, int64_t npix, T* out,
                          bool accumulate, Stream stream);

// Read-out binning of intensities [batch, n, n] -> [batch, h, w]: mean of the
// k x k blocks of the centred (h*k) x (w*k) region whose top-left pixel is
// ((n - h*k) / 2, (n - w*k) / 2) (integer division).
template <class T>
void launch_bin_forward(const T* in, T* out, int64_t batch, int64_t n, int64_t h, int64_t w,
                        int64_t k, Stream stream);
// Its adjoint / backward: grad_in[b, r, c] = grad_out[b, i, j] / k^2 inside
// block (i, j), 0 outside the binned region.
template <class T>
void launch_bin_backward(const T* grad_out, T* grad_in, int64_t batch, int64_t n, int64_t h,
                         int64_t w, int64_t k, Stream stream);

// Sampling step (optdiff/sampler.hpp, the CPU's standard_normal and
// ddpm_update): element i of the output gets noise number offset + i of the
// stream (seed, stream). One thread per Philox counter j writes the elements
// 4j .. 4j+3 that fall in [offset, offset + count); grid-stride, so any count.
// offset + count must not exceed 2^64.
template <class T>
void launch_standard_normal(T* out, int64_t count, uint64_t seed, uint64_t stream, uint64_t offset,
                            Stream cuda_stream);
// out[i] = ddpm_update_value(x[i], v[i], z_i, step...); out may be x or v
// (element-wise). step.sigma == 0: no noise is evaluated.
template <class T>
void launch_ddpm_update(const T* x, const T* v, T* out, int64_t count, const DdpmStep& step,
                        uint64_t seed, uint64_t stream, uint64_t offset, Stream cuda_stream);

// True when all `count` values are finite (synchronises `stream`).
template <class T>
bool all_finite(const T* data, int64_t count, Stream stream);

}  // namespace gpu
}  // namespace optdiff
