// Element-wise passes over one sample's field, for the hops whose field stays
// resident in the workspace between layers (periodic grids, FFTW 2-D plans).
//
// Each pass is a plain loop over arrays calling the physics.hpp functions.
// On x86-64 with GCC or Clang they are compiled twice (baseline SSE2 and
// AVX2) and the loader picks the AVX2 copy on CPUs that have it: portable
// binaries that still use the wide registers. No FMA is enabled, so both
// copies round identically and results do not depend on the CPU.
#pragma once

#include <cstdint>

#include "optdiff/physics.hpp"

namespace optdiff {
namespace pass {

// b[i] *= h[i]   (or conj(h[i]) when `adjoint`): the transfer function.
void mul(cplx<float>* b, const cplx<float>* h, int64_t count, bool adjoint);
void mul(cplx<double>* b, const cplx<double>* h, int64_t count, bool adjoint);

// b[i] *= m[i]; w[i] = b[i] (w may be null): a mask, saving its output.
void modulate(cplx<float>* b, const cplx<float>* m, cplx<float>* w, int64_t count);
void modulate(cplx<double>* b, const cplx<double>* m, cplx<double>* w, int64_t count);

// Camera plane: inten[i] = |b[i]|^2, eL[i] = camera[i] = b[i] (each nullable).
void camera(const cplx<float>* b, float* inten, cplx<float>* eL, cplx<float>* cam, int64_t count);
void camera(const cplx<double>* b, double* inten, cplx<double>* eL, cplx<double>* cam,
            int64_t count);

// Start of the adjoint: b[i] = dLoss/dconj(E_L) from dLoss/dI.
void intensity_adjoint(cplx<float>* b, const cplx<float>* eL, const float* g, int64_t count);
void intensity_adjoint(cplx<double>* b, const cplx<double>* eL, const double* g, int64_t count);

// Fused MSE step at the camera: d = |b[i]|^2 - target[i]; inten[i] = |b[i]|^2
// (nullable); b[i] becomes dLoss/dconj(E) with dLoss/dI = grad_scale * d.
// Returns sum d^2 (double, fixed summation order).
double mse_camera(cplx<float>* b, const float* target, float grad_scale, float* inten,
                  int64_t count);
double mse_camera(cplx<double>* b, const double* target, double grad_scale, double* inten,
                  int64_t count);

// Adjoint through a mask: acc[i] += dLoss/dphi[i]; then, when `carry`,
// b[i] becomes the gradient before the mask.
void mask_adjoint(cplx<float>* b, const cplx<float>* w, const cplx<float>* m, float* acc,
                  int64_t count, bool carry);
void mask_adjoint(cplx<double>* b, const cplx<double>* w, const cplx<double>* m, double* acc,
                  int64_t count, bool carry);

}  // namespace pass
}  // namespace optdiff
