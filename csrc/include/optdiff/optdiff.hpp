// optdiff public C++ API: batched free-space propagation and phase-layer
// stacks with exact adjoint gradients, on the CPU (FFTW3 + OpenMP).
//
// Conventions (shared with the Python API):
//  * fields are row-major complex arrays [batch, n, n] of cplx<T> (layout of
//    std::complex<T>); phases are real [layers, n, n]; SI units (metres, rad);
//  * a gradient of a real loss with respect to a complex value z is
//    dLoss/dRe(z) + i dLoss/dIm(z);
//  * every call is thread-safe; work is split over the batch with
//    `num_threads` threads (0 = the global setting, see set_num_threads).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "optdiff/physics.hpp"
#include "optdiff/plan.hpp"
#include "optdiff/sampler.hpp"

namespace optdiff {

// Global default thread count for every call that is passed num_threads = 0.
void set_num_threads(int n);  // n >= 1
int get_num_threads();

// FFTW planner effort for plans made from now on: 0 estimate, 1 measure
// (default), 2 patient. Plans are cached per shape; wisdom stays in-process.
void set_planner_effort(int effort);
int get_planner_effort();

// How periodic (padding 1) hops are transformed, for plans made from now on:
// 0 auto (time both once per grid size), 1 FFTW's 2-D transform with the
// field resident between hops, 2 blocked row/column passes. For tests and
// benchmarks; results agree to rounding either way.
void set_periodic_path(int path);
int get_periodic_path();

// True when every value is finite. Used to reject NaN/Inf input early.
bool all_finite(const float* data, int64_t count);
bool all_finite(const double* data, int64_t count);

template <class T>
struct HopPlan;  // internal: transfer function + FFT plans for one hop

// One free-space hop applied to a batch of fields: out = P(tilt * in) and its
// adjoint in = conj(tilt) * P^H(out). `in` and `out` may be the same buffer.
template <class T>
class Propagator {
public:
    Propagator(int64_t n, const PropagationSpec& spec);
    ~Propagator();
    Propagator(Propagator&&) noexcept;
    Propagator& operator=(Propagator&&) noexcept;

    void forward(const cplx<T>* in, cplx<T>* out, int64_t batch, int num_threads = 0) const;
    void adjoint(const cplx<T>* in, cplx<T>* out, int64_t batch, int num_threads = 0) const;

    int64_t n() const;
    const PropagationSpec& spec() const;
    // Transfer function on the padded grid in FFT order, without 1/np^2.
    std::vector<cplx<T>> transfer_function() const;

private:
    std::unique_ptr<HopPlan<T>> plan_;
};

// A stack of phase layers (StackSpec, validated by validate_stack: plan.hpp).
template <class T>
class PhaseStack {
public:
    explicit PhaseStack(const StackSpec& spec);
    ~PhaseStack();
    PhaseStack(PhaseStack&&) noexcept;
    PhaseStack& operator=(PhaseStack&&) noexcept;

    int64_t n() const;
    int64_t layers() const;
    // Complex values stored per sample by forward for backward: one field per
    // layer (the modulated field) plus the camera field.
    int64_t saved_fields_per_sample() const { return layers() + 1; }
    const StackSpec& spec() const;

    // intensity [B,n,n] = |camera field|^2. `saved` (nullable) receives
    // [B, L+1, n, n]; `camera_field` (nullable) receives the complex field;
    // `modulation` (nullable) receives exp(i phi_l) * tilt_l [L, n, n] so that
    // backward need not evaluate L n^2 sines and cosines again.
    // Throws std::invalid_argument (after writing the outputs) when an
    // intensity is not finite: |E|^2 overflowed T, or the input held NaN/Inf.
    void forward(const cplx<T>* input, const T* phases, int64_t batch, T* intensity, cplx<T>* saved,
                 cplx<T>* camera_field, int num_threads = 0, cplx<T>* modulation = nullptr) const;

    // forward for a real input field (e.g. an amplitude-encoded image)
    // [B,n,n]: the same as passing it with zero imaginary part, without the
    // caller widening the batch to complex first.
    void forward_real(const T* amplitude, const T* phases, int64_t batch, T* intensity,
                      cplx<T>* saved, cplx<T>* camera_field, int num_threads = 0,
                      cplx<T>* modulation = nullptr) const;

    // Given dLoss/dIntensity, writes dLoss/dphases [L,n,n] (summed over the
    // batch) and, when grad_input is non-null, dLoss/dinput [B,n,n].
    // `saved` from forward, or nullptr to recompute it per sample (memory
    // bounded by threads * (L+1) fields instead of B * (L+1)).
    // `modulation` (nullable): the table forward wrote for these phases.
    // `params` (nullable): also the parameter gradients (StackParamGrads);
    // they cost one extra hop per layer and sample when asked, nothing when not.
    void backward(const cplx<T>* input, const T* phases, const cplx<T>* saved,
                  const T* grad_intensity, int64_t batch, T* grad_phases, cplx<T>* grad_input,
                  int num_threads = 0, const cplx<T>* modulation = nullptr,
                  const StackParamGrads* params = nullptr) const;

    // Fused training step for intensity matching:
    // loss = mean over the batch and pixels of (|E_L|^2 - target)^2.
    // Each sample runs forward, loss and backward while its fields stay in
    // the thread's cache, so no tape goes to memory (scratch is O(threads L n^2)).
    // Writes dLoss/dphases [L,n,n] and, when `intensity` is non-null, the
    // camera intensities [B,n,n]; returns the loss. Bitwise the same for any
    // thread count.
    double mse_loss_and_grad(const cplx<T>* input, const T* phases, const T* target, int64_t batch,
                             T* grad_phases, T* intensity, int num_threads = 0) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------
// Sampling step (optdiff/sampler.hpp): noise and update in one threaded pass
// ---------------------------------------------------------------------------

// out[i] = standard normal number offset + i of the stream (seed, stream);
// the same numbers for any thread count and on every back end.
template <class T>
void standard_normal(T* out, int64_t count, uint64_t seed, uint64_t stream, uint64_t offset = 0,
                     int num_threads = 0);

// One ancestral DDPM step on `count` values: out[i] = c1 (x[i] - c2 eps_i) +
// sigma z_i with eps_i = eps_scale v[i] + eps_offset (v: the read-out, e.g.
// a camera intensity) and z_i = standard_normal number offset + i of (seed,
// stream). `out` may be `x` or `v`. sigma == 0 draws no noise.
template <class T>
void ddpm_update(const T* x, const T* v, int64_t count, const DdpmStep& step, uint64_t seed,
                 uint64_t stream, uint64_t offset, T* out, int num_threads = 0);

}  // namespace optdiff
