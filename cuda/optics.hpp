// CUDA versions of optdiff::Propagator and optdiff::PhaseStack.
//
// Same semantics as the CPU classes in optdiff/optdiff.hpp, on device memory:
// every pointer argument is a device (or managed) pointer on the device the
// object was created on, every call is asynchronous on `stream` (a
// cudaStream_t passed as void*, nullptr = legacy default stream) and the
// caller must keep the buffers alive until the stream has reached the work.
// Calls are thread-safe and may run concurrently on different streams:
// objects are immutable after construction and every call allocates its own
// stream-ordered scratch memory.
//
// The object owns, on its device: the normalised transfer function of every
// hop ([np, np], FFT order, 1/np^2 folded in) and the tilt tables ([n, n],
// only for tilted hops). The per-layer modulation exp(i phi) * tilt depends
// on the phases, so it is computed once per call (not per sample) into call
// scratch memory.
//
// Large batches are processed in chunks whose padded work fields fit the
// workspace budget (set_workspace_limit).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "device.hpp"
#include "optdiff/physics.hpp"
#include "optdiff/plan.hpp"
#include "optdiff/sampler.hpp"

namespace optdiff {
namespace gpu {

// One free-space hop resident on a device.
template <class T>
struct DeviceHop {
    PropagationSpec spec;
    int64_t n = 0;
    int64_t np = 0;             // padded size n * padding
    DeviceArray<cplx<T>> h;     // [np, np], normalised
    DeviceArray<cplx<T>> tilt;  // [n, n]; empty when the hop has no tilt

    DeviceHop(const PropagationSpec& spec, int64_t n);
    const cplx<T>* tilt_or_null() const { return tilt.empty() ? nullptr : tilt.get(); }
    // dH/d(distance), same layout as h; made on the first parameter-gradient
    // call (thread-safe), so stacks that never ask keep one table per hop.
    const cplx<T>* dz_table() const;

private:
    mutable std::once_flag dz_once_;
    mutable DeviceArray<cplx<T>> dh_;
};

template <class T>
class CudaPropagator {
public:
    // device < 0: the current device.
    CudaPropagator(int64_t n, const PropagationSpec& spec, int device = -1);

    // out = P(tilt * in) for `batch` fields [batch, n, n]; out may equal in.
    void forward(const cplx<T>* in, cplx<T>* out, int64_t batch, Stream stream) const;
    // in = conj(tilt) * P^H(out); out may equal in.
    void adjoint(const cplx<T>* in, cplx<T>* out, int64_t batch, Stream stream) const;

    int64_t n() const { return hop_->n; }
    int64_t padded_n() const { return hop_->np; }
    int device() const { return device_; }
    const PropagationSpec& spec() const { return hop_->spec; }

private:
    void apply(const cplx<T>* in, cplx<T>* out, int64_t batch, Stream stream, bool adjoint) const;

    int device_ = 0;
    std::unique_ptr<DeviceHop<T>> hop_;
};

template <class T>
class CudaPhaseStack {
public:
    explicit CudaPhaseStack(const StackSpec& spec, int device = -1);
    ~CudaPhaseStack();

    int64_t n() const { return spec_.n; }
    int64_t layers() const { return static_cast<int64_t>(hops_.size()); }
    int64_t saved_fields_per_sample() const { return layers() + 1; }
    const StackSpec& spec() const { return spec_; }
    int device() const { return device_; }

    // intensity [B, n, n] = |camera field|^2 (may be null when camera_field is
    // given); saved (nullable) receives [B, L+1, n, n] (w_0 .. w_{L-1}, E_L),
    // the layout of the CPU back end; camera_field (nullable) [B, n, n].
    // check_intensity: wait for the stream, then throw std::invalid_argument
    // (the CPU's message) when an intensity is not finite (|E|^2 overflowed).
    void forward(const cplx<T>* input, const T* phases, int64_t batch, T* intensity, cplx<T>* saved,
                 cplx<T>* camera_field, Stream stream, bool check_intensity = false) const;
    // forward for a real input field [B, n, n] (amplitudes): the same as the
    // complex field amplitude + 0i; the first pad kernel reads it directly.
    void forward_real(const T* amplitude, const T* phases, int64_t batch, T* intensity,
                      cplx<T>* saved, cplx<T>* camera_field, Stream stream,
                      bool check_intensity = false) const;

    // grad_phases [L, n, n] (summed over the batch, overwritten) and, when
    // grad_input is non-null, grad_input [B, n, n]. saved from forward, or
    // nullptr to recompute the forward pass chunk by chunk (then input is
    // required; otherwise it is not read).
    // params (nullable; host memory): also the parameter gradients of
    // StackParamGrads (plan.hpp), as the CPU back end computes them; then the
    // input is required and the call waits for the stream before returning.
    void backward(const cplx<T>* input, const T* phases, const cplx<T>* saved,
                  const T* grad_intensity, int64_t batch, T* grad_phases, cplx<T>* grad_input,
                  Stream stream, const StackParamGrads* params = nullptr) const;

    // Fused training step for intensity matching (the CPU back end's
    // mse_loss_and_grad): forward with the tape kept chunk by chunk on the
    // device, residual d = I - target, backward with dLoss/dI = 2 d / (B n^2).
    // Writes grad_phases [L, n, n], intensity [B, n, n] when non-null, and
    // sq_sum [n, n] (double): per pixel, the sum of d^2 over the batch; the
    // loss is their sum / (B n^2), added by the caller in pixel order.
    void mse_loss_and_grad(const cplx<T>* input, const T* phases, const T* target, int64_t batch,
                           T* grad_phases, T* intensity, double* sq_sum, Stream stream) const;

private:
    struct Call;  // per-call scratch
    // The caller's input field: complex, or (amplitude non-null) real.
    struct Input {
        const cplx<T>* field = nullptr;
        const T* amplitude = nullptr;
        Input skip(int64_t elements) const {  // the input from element `elements` on
            return Input{field ? field + elements : nullptr,
                         amplitude ? amplitude + elements : nullptr};
        }
    };
    void forward_impl(Input input, const T* phases, int64_t batch, T* intensity, cplx<T>* saved,
                      cplx<T>* camera_field, Stream stream, bool check_intensity) const;
    void forward_chunk(Call& call, Input input, int64_t bc, T* intensity, cplx<T>* saved,
                       cplx<T>* camera_field) const;
    struct ParamScratch;  // parameter gradients: buffers of one backward call
    void backward_chunk(Call& call, const cplx<T>* saved, const T* grad_intensity, int64_t bc,
                        T* grad_phases, bool accumulate, cplx<T>* grad_input,
                        const ParamScratch* params = nullptr, const cplx<T>* input = nullptr) const;
    void make_modulation(const T* phases, cplx<T>* m, Stream stream) const;
    void finish_param_grads(const StackParamGrads* p, const T* grad_phases, const double* dz_pixels,
                            const T* input_phase, Stream stream) const;

    StackSpec spec_;
    int device_ = 0;
    std::unique_ptr<DeviceHop<T>> input_hop_;
    std::vector<std::unique_ptr<DeviceHop<T>>> hops_;
    int64_t max_np_ = 0;
    bool mixed_padding_ = false;  // consecutive hops with different padded sizes
};

// Read-out binning (see kernels.hpp), on device memory.
template <class T>
void bin_readout(const T* in, T* out, int64_t batch, int64_t n, int64_t h, int64_t w, int64_t k,
                 Stream stream);
template <class T>
void bin_readout_backward(const T* grad_out, T* grad_in, int64_t batch, int64_t n, int64_t h,
                          int64_t w, int64_t k, Stream stream);
void validate_binning(int64_t n, int64_t h, int64_t w, int64_t k);

// Sampling step on device memory (kernels.hpp launch_standard_normal /
// launch_ddpm_update, the CPU's optdiff::standard_normal / ddpm_update):
// argument checks (count >= 0, offset + count <= 2^64, sigma >= 0, out
// either exactly x / v or disjoint from them), then the launch.
template <class T>
void standard_normal_async(T* out, int64_t count, uint64_t seed, uint64_t stream, uint64_t offset,
                           Stream cuda_stream);
template <class T>
void ddpm_update_async(const T* x, const T* v, int64_t count, const DdpmStep& step, uint64_t seed,
                       uint64_t stream, uint64_t offset, T* out, Stream cuda_stream);

}  // namespace gpu
}  // namespace optdiff
