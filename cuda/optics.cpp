// Orchestration of the CUDA back end: which kernels and transforms run, on
// which buffers, in which layout. Host code only (kernels in kernels.cu).
//
// Work layouts. A hop with padding 1 works on dense images [b][r][c] and
// uses one batched 2-D transform. A hop with padding 2 works on a
// "rows-outermost" padded buffer [r][b][c] (r, c < np = 2n), so that
//  * the rows that carry data (r < n) of all samples are one contiguous
//    block: the forward row transforms skip the n all-zero rows of every
//    image, and the inverse row transforms skip the n rows the crop drops;
//  * the column transforms are a single batched 1-D plan with stride
//    batch*np and distance 1 (one transform per (sample, column)).
// This saves a quarter of the FFT work of a plain padded 2-D transform and
// needs no copies besides the fused pad/crop kernels.
#include "optics.hpp"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "fft.hpp"
#include "kernels.hpp"

namespace optdiff {
namespace gpu {

namespace {

struct Layout {
    int64_t sample;
    int64_t row;
};

Layout work_layout(int64_t n, int64_t np, int64_t batch) {
    if (np == n) return Layout{np * np, np};
    return Layout{np, batch * np};
}

template <class T>
Strided<T> view(T* ptr, const Layout& l) {
    return Strided<T>{ptr, l.sample, l.row};
}

template <class T>
Strided<const T> cview(const T* ptr, const Layout& l) {
    return Strided<const T>{ptr, l.sample, l.row};
}

// In-place P (or P^H with conj(H)) on a work buffer holding `batch` samples
// in the work layout of `hop`, between pad and crop.
// `table` (nullable): multiply by it instead of the hop's H (dH/d(distance)).
template <class T>
void hop_transform(const DeviceHop<T>& hop, cplx<T>* work, int64_t batch, bool adjoint,
                   Stream stream, const cplx<T>* table = nullptr) {
    constexpr bool dbl = std::is_same<T, double>::value;
    const cplx<T>* h = table ? table : hop.h.get();
    const int64_t n = hop.n;
    const int64_t np = hop.np;
    const Layout lay = work_layout(n, np, batch);
    if (np == n) {
        auto plan = get_fft_plan(dbl, FftGeometry{2, np, 1, np * np, batch}, stream);
        fft_execute(*plan, work, false);
        launch_multiply_transfer(view(work, lay), h, adjoint, np, batch, stream);
        fft_execute(*plan, work, true);
    } else {
        // rows r < n of every sample: buffer rows 0 .. n*batch-1
        auto rows = get_fft_plan(dbl, FftGeometry{1, np, 1, np, n * batch}, stream);
        auto cols = get_fft_plan(dbl, FftGeometry{1, np, batch * np, 1, batch * np}, stream);
        fft_execute(*rows, work, false);  // rows n..np-1 are zero: their transform is zero
        fft_execute(*cols, work, false);
        launch_multiply_transfer(view(work, lay), h, adjoint, np, batch, stream);
        fft_execute(*cols, work, true);
        fft_execute(*rows, work, true);  // rows n..np-1 are cropped away: not needed
    }
}

// Samples per chunk so that the per-sample scratch fits the budget.
int64_t chunk_size(int64_t batch, int64_t bytes_per_sample) {
    if (batch <= 0) return 0;
    if (bytes_per_sample <= 0) return batch;
    const int64_t c = get_workspace_limit() / bytes_per_sample;
    return std::max<int64_t>(1, std::min(c, batch));
}

void require(bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument(what);
}

template <class T>
void check_no_partial_overlap(const cplx<T>* a, const cplx<T>* b, int64_t count) {
    if (a == b) return;
    const auto pa = reinterpret_cast<std::uintptr_t>(a);
    const auto pb = reinterpret_cast<std::uintptr_t>(b);
    const auto bytes = static_cast<std::uintptr_t>(count) * sizeof(cplx<T>);
    require(pa + bytes <= pb || pb + bytes <= pa,
            "the output overlaps the input without being the same array; pass the input itself "
            "for an in-place call or a separate array");
}

}  // namespace

// ---------------------------------------------------------------------------

template <class T>
DeviceHop<T>::DeviceHop(const PropagationSpec& s, int64_t n_) : spec(s), n(n_) {
    validate(spec, n);
    np = padded_size(n, spec.padding);
    const std::vector<cplx<T>> hv = make_transfer_function<T>(spec, n, true);
    h = DeviceArray<cplx<T>>(hv.size());
    copy_to_device_sync(h.get(), hv.data(), hv.size() * sizeof(cplx<T>), nullptr);
    if (has_tilt(spec)) {
        const std::vector<cplx<T>> tv = make_tilt<T>(spec, n);
        tilt = DeviceArray<cplx<T>>(tv.size());
        copy_to_device_sync(tilt.get(), tv.data(), tv.size() * sizeof(cplx<T>), nullptr);
    }
}

template <class T>
const cplx<T>* DeviceHop<T>::dz_table() const {
    std::call_once(dz_once_, [this] {
        const std::vector<cplx<T>> d = make_transfer_function_dz<T>(spec, n, true);
        dh_ = DeviceArray<cplx<T>>(d.size());
        copy_to_device_sync(dh_.get(), d.data(), d.size() * sizeof(cplx<T>), nullptr);
    });
    return dh_.get();
}

// ---------------------------------------------------------------------------

template <class T>
CudaPropagator<T>::CudaPropagator(int64_t n, const PropagationSpec& spec, int device)
    : device_(device < 0 ? current_device() : device) {
    validate(spec, n);
    DeviceGuard guard(device_);
    hop_ = std::make_unique<DeviceHop<T>>(spec, n);
}

template <class T>
void CudaPropagator<T>::forward(const cplx<T>* in, cplx<T>* out, int64_t batch,
                                Stream stream) const {
    apply(in, out, batch, stream, false);
}

template <class T>
void CudaPropagator<T>::adjoint(const cplx<T>* in, cplx<T>* out, int64_t batch,
                                Stream stream) const {
    apply(in, out, batch, stream, true);
}

template <class T>
void CudaPropagator<T>::apply(const cplx<T>* in, cplx<T>* out, int64_t batch, Stream stream,
                              bool adjoint) const {
    require(batch >= 0, "batch must be >= 0, got " + std::to_string(batch));
    if (batch == 0) return;
    require(in != nullptr && out != nullptr, "input and output pointers must not be null");
    const DeviceHop<T>& hop = *hop_;
    const int64_t n = hop.n;
    const int64_t np = hop.np;
    const int64_t nn = n * n;
    check_no_partial_overlap(in, out, batch * nn);
    DeviceGuard guard(device_);
    using C = cplx<T>;
    const C* tilt = hop.tilt_or_null();
    const TableOp tilt_op = adjoint ? TableOp::ConjMultiply : TableOp::Multiply;

    if (np == n) {
        // Periodic: transform in place in the output array, no scratch.
        const int64_t bc = chunk_size(batch, nn * static_cast<int64_t>(sizeof(C)));
        for (int64_t b0 = 0; b0 < batch; b0 += bc) {
            const int64_t nb = std::min(bc, batch - b0);
            const C* src = in + b0 * nn;
            C* dst = out + b0 * nn;
            if (!adjoint && tilt) {
                launch_pad_load(dense_view(src, n), tilt, tilt_op, Strided<C>{}, dense_view(dst, n),
                                n, n, nb, stream);
            } else {
                copy_async(dst, src, static_cast<size_t>(nb * nn) * sizeof(C), stream);
            }
            hop_transform(hop, dst, nb, adjoint, stream);
            if (adjoint && tilt) {
                launch_crop_store(dense_view(static_cast<const C*>(dst), n), tilt, tilt_op,
                                  dense_view(dst, n), n, nb, stream);
            }
        }
        return;
    }

    // Linear convolution: pad into scratch, transform, crop into the output.
    const int64_t bc = chunk_size(batch, np * np * static_cast<int64_t>(sizeof(C)));
    Workspace<C> work(static_cast<size_t>(bc * np * np), stream);
    for (int64_t b0 = 0; b0 < batch; b0 += bc) {
        const int64_t nb = std::min(bc, batch - b0);
        const Layout lay = work_layout(n, np, nb);
        const bool tilt_in = !adjoint && tilt;
        const bool tilt_out = adjoint && tilt;
        launch_pad_load(dense_view(in + b0 * nn, n), tilt_in ? tilt : nullptr,
                        tilt_in ? tilt_op : TableOp::None, Strided<C>{}, view(work.get(), lay), n,
                        np, nb, stream);
        hop_transform(hop, work.get(), nb, adjoint, stream);
        launch_crop_store(cview(static_cast<const C*>(work.get()), lay), tilt_out ? tilt : nullptr,
                          tilt_out ? tilt_op : TableOp::None, dense_view(out + b0 * nn, n), n, nb,
                          stream);
    }
}

// ---------------------------------------------------------------------------

template <class T>
struct CudaPhaseStack<T>::Call {
    Stream stream = nullptr;
    const cplx<T>* m = nullptr;  // [L, n, n] modulation of this call
    cplx<T>* work[2] = {nullptr, nullptr};
    double* partial = nullptr;  // [groups, n, n] (backward only)
    int* nonfinite = nullptr;   // set by the camera kernel when an intensity is not finite
    Call(Stream s, const cplx<T>* m_, cplx<T>* w0, cplx<T>* w1, double* partial_ = nullptr)
        : stream(s), m(m_), work{w0, w1}, partial(partial_) {}
};

template <class T>
struct CudaPhaseStack<T>::ParamScratch {
    cplx<T>* work = nullptr;      // a padded work buffer for d output / d distance
    double* dz_pixels = nullptr;  // [L + 1, n, n] per-pixel distance derivative terms
    T* input_phase = nullptr;     // [n, n] d loss / d phase of the input plane
};

template <class T>
CudaPhaseStack<T>::CudaPhaseStack(const StackSpec& spec, int device)
    : spec_(spec), device_(device < 0 ? current_device() : device) {
    validate_stack(spec_);
    DeviceGuard guard(device_);
    const int64_t n = spec_.n;
    int64_t prev_np = 0;
    if (spec_.has_input_hop) {
        input_hop_ = std::make_unique<DeviceHop<T>>(spec_.input_hop, n);
        prev_np = input_hop_->np;
        max_np_ = prev_np;
    }
    for (const PropagationSpec& h : spec_.hops) {
        hops_.push_back(std::make_unique<DeviceHop<T>>(h, n));
        const int64_t np = hops_.back()->np;
        if (prev_np != 0 && prev_np != np) mixed_padding_ = true;
        prev_np = np;
        max_np_ = std::max(max_np_, np);
    }
}

template <class T>
CudaPhaseStack<T>::~CudaPhaseStack() = default;

template <class T>
void CudaPhaseStack<T>::make_modulation(const T* phases, cplx<T>* m, Stream stream) const {
    const int64_t nn = spec_.n * spec_.n;
    for (int64_t l = 0; l < layers(); ++l) {
        launch_layer_modulation(phases + l * nn, hops_[static_cast<size_t>(l)]->tilt_or_null(),
                                m + l * nn, nn, stream);
    }
}

template <class T>
void CudaPhaseStack<T>::forward_chunk(Call& call, Input input, int64_t bc, T* intensity,
                                      cplx<T>* saved, cplx<T>* camera_field) const {
    using C = cplx<T>;
    const Stream s = call.stream;
    const int64_t n = spec_.n;
    const int64_t nn = n * n;
    const int64_t L = layers();
    const int64_t S = (L + 1) * nn;  // saved fields per sample

    Strided<const C> src = dense_view(input.field, n);
    int which = -1;  // work buffer holding the current field (-1: user input)
    int64_t cur_np = n;
    // The first pad kernel reads the user's input, which may be real.
    auto pad_load = [&](const C* table, TableOp op, Strided<C> save, Strided<C> dst, int64_t np) {
        if (which < 0 && input.amplitude) {
            launch_pad_load(dense_view(input.amplitude, n), table, op, save, dst, n, np, bc, s);
        } else {
            launch_pad_load(src, table, op, save, dst, n, np, bc, s);
        }
    };

    if (input_hop_) {
        const DeviceHop<T>& hop = *input_hop_;
        const Layout lay = work_layout(n, hop.np, bc);
        const C* tilt = hop.tilt_or_null();
        pad_load(tilt, tilt ? TableOp::Multiply : TableOp::None, Strided<C>{},
                 view(call.work[0], lay), hop.np);
        hop_transform(hop, call.work[0], bc, false, s);
        src = cview(static_cast<const C*>(call.work[0]), lay);
        which = 0;
        cur_np = hop.np;
    }
    for (int64_t l = 0; l < L; ++l) {
        const DeviceHop<T>& hop = *hops_[static_cast<size_t>(l)];
        // In place when the layout does not change, else the other buffer.
        const int w = which < 0 ? 0 : (hop.np == cur_np ? which : 1 - which);
        const Layout lay = work_layout(n, hop.np, bc);
        const Strided<C> save = saved ? Strided<C>{saved + l * nn, S, n} : Strided<C>{};
        pad_load(call.m + l * nn, TableOp::Multiply, save, view(call.work[w], lay), hop.np);
        hop_transform(hop, call.work[w], bc, false, s);
        src = cview(static_cast<const C*>(call.work[w]), lay);
        which = w;
        cur_np = hop.np;
    }
    launch_camera(src, intensity, camera_field ? dense_view(camera_field, n) : Strided<C>{},
                  saved ? Strided<C>{saved + L * nn, S, n} : Strided<C>{}, call.nonfinite, n, bc,
                  s);
}

template <class T>
void CudaPhaseStack<T>::backward_chunk(Call& call, const cplx<T>* saved, const T* grad_intensity,
                                       int64_t bc, T* grad_phases, bool accumulate,
                                       cplx<T>* grad_input, const ParamScratch* params,
                                       const cplx<T>* input) const {
    using C = cplx<T>;
    const Stream s = call.stream;
    const int64_t n = spec_.n;
    const int64_t nn = n * n;
    const int64_t L = layers();
    const int64_t S = (L + 1) * nn;
    auto saved_view = [&](int64_t slot) { return Strided<const C>{saved + slot * nn, S, n}; };

    // G = dLoss/dE_L = 2 g E_L, padded for the adjoint of the last hop.
    int which = 0;
    int64_t cur_np = hops_.back()->np;
    launch_intensity_backward_pad(saved_view(L), grad_intensity,
                                  view(call.work[0], work_layout(n, cur_np, bc)), n, cur_np, bc, s);
    const int64_t dz_groups = backward_groups(n, n, bc);
    // d loss / d distance of `hop` whose output gradient is in `g` (its work layout), for the
    // hop's input loaded from `src` (times `table` when given): per-pixel terms into slot.
    auto distance_terms = [&](const DeviceHop<T>& hop, const C* g, Strided<const C> src,
                              const C* table, int64_t slot) {
        const Layout lay = work_layout(n, hop.np, bc);
        launch_pad_load(src, table, table ? TableOp::Multiply : TableOp::None, Strided<C>{},
                        view(params->work, lay), n, hop.np, bc, s);
        hop_transform(hop, params->work, bc, false, s, hop.dz_table());
        launch_inner_partial(cview(g, lay), cview(static_cast<const C*>(params->work), lay),
                             call.partial, dz_groups, n, bc, s);
        launch_reduce_groups(call.partial, dz_groups, nn, params->dz_pixels + slot * nn, accumulate,
                             s);
    };
    for (int64_t l = L - 1; l >= 0; --l) {
        const DeviceHop<T>& hop = *hops_[static_cast<size_t>(l)];
        const Layout lay = work_layout(n, hop.np, bc);
        if (params) distance_terms(hop, call.work[which], saved_view(l), nullptr, l);
        hop_transform(hop, call.work[which], bc, true, s);  // grad_w = P_l^H(G)
        const Strided<const C> grad_w = cview(static_cast<const C*>(call.work[which]), lay);

        // Where G = conj(M_l) grad_w goes: the next adjoint hop's padded
        // input, the caller's grad_input, or nowhere.
        const DeviceHop<T>* next = nullptr;
        if (l > 0) {
            next = hops_[static_cast<size_t>(l - 1)].get();
        } else if (grad_input && input_hop_) {
            next = input_hop_.get();
        }
        Strided<C> dst{};
        int64_t np_dst = n;
        int next_which = which;
        if (next) {
            next_which = next->np == cur_np ? which : 1 - which;
            np_dst = next->np;
            dst = view(call.work[next_which], work_layout(n, np_dst, bc));
        } else if (grad_input) {
            dst = dense_view(grad_input, n);
        }
        const int64_t groups = backward_groups(n, np_dst, bc);
        launch_layer_backward(grad_w, saved_view(l), call.m + l * nn, call.partial, groups, dst, n,
                              np_dst, bc, s);
        launch_reduce_groups(call.partial, groups, nn, grad_phases + l * nn, accumulate, s);
        which = next_which;
        cur_np = np_dst;
    }
    if (grad_input && input_hop_) {
        const DeviceHop<T>& hop = *input_hop_;
        const Layout lay = work_layout(n, hop.np, bc);
        const C* tilt = hop.tilt_or_null();
        if (params) distance_terms(hop, call.work[which], dense_view(input, n), tilt, L);
        hop_transform(hop, call.work[which], bc, true, s);
        launch_crop_store(cview(static_cast<const C*>(call.work[which]), lay), tilt,
                          tilt ? TableOp::ConjMultiply : TableOp::None, dense_view(grad_input, n),
                          n, bc, s);
    }
    if (params) {  // d loss / d phase of the input plane = phase_gradient(grad_input, input)
        launch_layer_backward(dense_view(static_cast<const C*>(grad_input), n),
                              dense_view(input, n), call.m, call.partial, dz_groups, Strided<C>{},
                              n, n, bc, s);
        launch_reduce_groups(call.partial, dz_groups, nn, params->input_phase, accumulate, s);
    }
}

template <class T>
void CudaPhaseStack<T>::forward(const cplx<T>* input, const T* phases, int64_t batch, T* intensity,
                                cplx<T>* saved, cplx<T>* camera_field, Stream stream,
                                bool check_intensity) const {
    forward_impl(Input{input, nullptr}, phases, batch, intensity, saved, camera_field, stream,
                 check_intensity);
}

template <class T>
void CudaPhaseStack<T>::forward_real(const T* amplitude, const T* phases, int64_t batch,
                                     T* intensity, cplx<T>* saved, cplx<T>* camera_field,
                                     Stream stream, bool check_intensity) const {
    forward_impl(Input{nullptr, amplitude}, phases, batch, intensity, saved, camera_field, stream,
                 check_intensity);
}

template <class T>
void CudaPhaseStack<T>::forward_impl(Input input, const T* phases, int64_t batch, T* intensity,
                                     cplx<T>* saved, cplx<T>* camera_field, Stream stream,
                                     bool check_intensity) const {
    using C = cplx<T>;
    require(batch >= 0, "batch must be >= 0, got " + std::to_string(batch));
    if (batch == 0) return;
    require(input.field != nullptr || input.amplitude != nullptr, "input must not be null");
    require(phases != nullptr, "phases must not be null");
    require(intensity != nullptr || saved != nullptr || camera_field != nullptr,
            "forward needs at least one output (intensity, saved or camera_field)");
    DeviceGuard guard(device_);
    const int64_t n = spec_.n;
    const int64_t nn = n * n;
    const int64_t L = layers();
    const int64_t S = (L + 1) * nn;

    Workspace<C> m(static_cast<size_t>(L * nn), stream);
    make_modulation(phases, m.get(), stream);

    const int nbuf = mixed_padding_ ? 2 : 1;
    const int64_t per_sample = max_np_ * max_np_ * static_cast<int64_t>(sizeof(C)) * nbuf;
    const int64_t bc = chunk_size(batch, per_sample);
    Workspace<C> w0(static_cast<size_t>(bc * max_np_ * max_np_), stream);
    Workspace<C> w1(mixed_padding_ ? static_cast<size_t>(bc * max_np_ * max_np_) : 0, stream);

    Call call(stream, m.get(), w0.get(), w1.get());
    // A flag the camera kernel sets (no extra pass over the intensities).
    const bool check = check_intensity && intensity != nullptr;
    Workspace<int> flag(check ? 1 : 0, stream);
    if (check) {
        zero_async(flag.get(), sizeof(int), stream);
        call.nonfinite = flag.get();
    }
    for (int64_t b0 = 0; b0 < batch; b0 += bc) {
        const int64_t nb = std::min(bc, batch - b0);
        forward_chunk(call, input.skip(b0 * nn), nb, intensity ? intensity + b0 * nn : nullptr,
                      saved ? saved + b0 * S : nullptr,
                      camera_field ? camera_field + b0 * nn : nullptr);
    }
    if (check) {
        int host_flag = 0;
        copy_to_host_sync(&host_flag, flag.get(), sizeof(int), stream);
        require(host_flag == 0, intensity_overflow_message(std::is_same<T, double>::value));
    }
}

template <class T>
void CudaPhaseStack<T>::backward(const cplx<T>* input, const T* phases, const cplx<T>* saved,
                                 const T* grad_intensity, int64_t batch, T* grad_phases,
                                 cplx<T>* grad_input, Stream stream,
                                 const StackParamGrads* params) const {
    using C = cplx<T>;
    require(batch >= 0, "batch must be >= 0, got " + std::to_string(batch));
    if (params && !params->any()) params = nullptr;
    require(phases != nullptr, "phases must not be null");
    require(grad_phases != nullptr, "grad_phases must not be null");
    const int64_t n = spec_.n;
    const int64_t nn = n * n;
    const int64_t L = layers();
    const int64_t S = (L + 1) * nn;
    DeviceGuard guard(device_);
    if (batch == 0) {
        zero_async(grad_phases, static_cast<size_t>(L * nn) * sizeof(T), stream);
        if (params) finish_param_grads(params, nullptr, nullptr, nullptr, stream);
        return;
    }
    require(grad_intensity != nullptr, "grad_intensity must not be null");
    require(saved != nullptr || input != nullptr,
            "backward without a saved forward pass (recompute mode) needs the input");
    require(params == nullptr || input != nullptr, "parameter gradients need the input field");

    Workspace<C> m(static_cast<size_t>(L * nn), stream);
    make_modulation(phases, m.get(), stream);

    const int nbuf = mixed_padding_ ? 2 : 1;
    const int64_t per_sample = max_np_ * max_np_ * static_cast<int64_t>(sizeof(C)) * nbuf +
                               (saved ? 0 : S * static_cast<int64_t>(sizeof(C)));
    const int64_t bc = chunk_size(batch, per_sample);
    Workspace<C> w0(static_cast<size_t>(bc * max_np_ * max_np_), stream);
    Workspace<C> w1(mixed_padding_ ? static_cast<size_t>(bc * max_np_ * max_np_) : 0, stream);
    Workspace<C> tape(saved ? 0 : static_cast<size_t>(bc * S), stream);
    // backward_groups is largest for the smallest image (np_dst = n).
    Workspace<double> partial(static_cast<size_t>(backward_groups(n, n, bc) * nn), stream);

    // Parameter gradients: one more padded buffer, the per-pixel terms, and a grad_input of our
    // own when the caller wants none (the input plane's phase gradient is read from it).
    const bool pg = params != nullptr;
    Workspace<C> pwork(pg ? static_cast<size_t>(bc * max_np_ * max_np_) : 0, stream);
    Workspace<double> dz_pixels(pg ? static_cast<size_t>((L + 1) * nn) : 0, stream);
    Workspace<T> input_phase(pg ? static_cast<size_t>(nn) : 0, stream);
    Workspace<C> own_grad_input(pg && !grad_input ? static_cast<size_t>(bc * nn) : 0, stream);
    if (pg) zero_async(dz_pixels.get(), static_cast<size_t>((L + 1) * nn) * sizeof(double), stream);
    const ParamScratch ps{pwork.get(), dz_pixels.get(), input_phase.get()};

    Call call(stream, m.get(), w0.get(), w1.get(), partial.get());
    for (int64_t b0 = 0; b0 < batch; b0 += bc) {
        const int64_t nb = std::min(bc, batch - b0);
        const C* chunk_saved = nullptr;
        if (saved) {
            chunk_saved = saved + b0 * S;
        } else {
            forward_chunk(call, Input{input + b0 * nn, nullptr}, nb, nullptr, tape.get(), nullptr);
            chunk_saved = tape.get();
        }
        C* gi = grad_input ? grad_input + b0 * nn : (pg ? own_grad_input.get() : nullptr);
        backward_chunk(call, chunk_saved, grad_intensity + b0 * nn, nb, grad_phases, b0 > 0, gi,
                       pg ? &ps : nullptr, input ? input + b0 * nn : nullptr);
    }
    if (pg) finish_param_grads(params, grad_phases, dz_pixels.get(), input_phase.get(), stream);
}

template <class T>
void CudaPhaseStack<T>::finish_param_grads(const StackParamGrads* p, const T* grad_phases,
                                           const double* dz_pixels, const T* input_phase,
                                           Stream stream) const {
    const int64_t n = spec_.n, nn = n * n, L = layers();
    std::vector<double> dz(static_cast<size_t>((L + 1) * nn), 0.0);
    std::vector<T> gph(static_cast<size_t>((L + 1) * nn), T(0));  // L layers, then the input plane
    if (dz_pixels) {                                              // batch > 0
        copy_to_host_sync(dz.data(), dz_pixels, dz.size() * sizeof(double), stream);
        copy_to_host_sync(gph.data(), grad_phases, static_cast<size_t>(L * nn) * sizeof(T), stream);
        copy_to_host_sync(gph.data() + L * nn, input_phase, static_cast<size_t>(nn) * sizeof(T),
                          stream);
    }
    auto total = [&](int64_t slot) {  // pixels in order: the same sums for any launch
        double s = 0.0;
        for (int64_t i = 0; i < nn; ++i) s += dz[static_cast<size_t>(slot * nn + i)];
        return s;
    };
    if (p->distances)
        for (int64_t l = 0; l < L; ++l) p->distances[l] = total(l);
    if (p->input_distance) *p->input_distance = input_hop_ ? total(L) : 0.0;
    if (p->tilts)
        for (int64_t l = 0; l < L; ++l)
            tilt_gradient(gph.data() + l * nn, n, hops_[static_cast<size_t>(l)]->spec,
                          p->tilts + 2 * l);
    if (p->input_tilt) {
        PropagationSpec at_input = input_hop_ ? input_hop_->spec : hops_[0]->spec;
        if (!input_hop_) at_input.tilt_x = at_input.tilt_y = 0.0;
        tilt_gradient(gph.data() + L * nn, n, at_input, p->input_tilt);
    }
}

template <class T>
void CudaPhaseStack<T>::mse_loss_and_grad(const cplx<T>* input, const T* phases, const T* target,
                                          int64_t batch, T* grad_phases, T* intensity,
                                          double* sq_sum, Stream stream) const {
    using C = cplx<T>;
    require(batch >= 1,
            "the fused MSE step needs at least one sample, got batch " + std::to_string(batch));
    require(input != nullptr && phases != nullptr && target != nullptr,
            "input, phases and target must not be null");
    require(grad_phases != nullptr && sq_sum != nullptr, "grad_phases and sq_sum must not be null");
    const int64_t n = spec_.n;
    const int64_t nn = n * n;
    const int64_t L = layers();
    const int64_t S = (L + 1) * nn;
    DeviceGuard guard(device_);

    Workspace<C> m(static_cast<size_t>(L * nn), stream);
    make_modulation(phases, m.get(), stream);

    const int nbuf = mixed_padding_ ? 2 : 1;
    const int64_t per_sample = max_np_ * max_np_ * static_cast<int64_t>(sizeof(C)) * nbuf +
                               S * static_cast<int64_t>(sizeof(C)) +
                               2 * nn * static_cast<int64_t>(sizeof(T));
    const int64_t bc = chunk_size(batch, per_sample);
    Workspace<C> w0(static_cast<size_t>(bc * max_np_ * max_np_), stream);
    Workspace<C> w1(mixed_padding_ ? static_cast<size_t>(bc * max_np_ * max_np_) : 0, stream);
    Workspace<C> tape(static_cast<size_t>(bc * S), stream);
    Workspace<T> inten_chunk(intensity ? 0 : static_cast<size_t>(bc * nn), stream);
    Workspace<T> g(static_cast<size_t>(bc * nn), stream);
    // backward_groups(n, n, .) is the most any kernel here uses (np_dst = n).
    Workspace<double> partial(static_cast<size_t>(backward_groups(n, n, bc) * nn), stream);
    const T grad_scale =
        static_cast<T>(2.0 / (static_cast<double>(batch) * static_cast<double>(nn)));

    Call call(stream, m.get(), w0.get(), w1.get(), partial.get());
    for (int64_t b0 = 0; b0 < batch; b0 += bc) {
        const int64_t nb = std::min(bc, batch - b0);
        T* I = intensity ? intensity + b0 * nn : inten_chunk.get();
        forward_chunk(call, Input{input + b0 * nn, nullptr}, nb, I, tape.get(), nullptr);
        launch_mse_residual(I, target + b0 * nn, grad_scale, g.get(), partial.get(),
                            backward_groups(n, n, nb), nn, nb, stream);
        launch_reduce_groups(partial.get(), backward_groups(n, n, nb), nn, sq_sum, b0 > 0, stream);
        backward_chunk(call, tape.get(), g.get(), nb, grad_phases, b0 > 0, nullptr);
    }
}

// ---------------------------------------------------------------------------

void validate_binning(int64_t n, int64_t h, int64_t w, int64_t k) {
    validate_grid_size(n);
    require(k >= 1, "bin size k must be >= 1, got " + std::to_string(k));
    require(h >= 1 && w >= 1, "binned output must be at least 1 x 1");
    require(h * k <= n && w * k <= n, "binned region (" + std::to_string(h) + "*" +
                                          std::to_string(k) + " x " + std::to_string(w) + "*" +
                                          std::to_string(k) + ") does not fit the " +
                                          std::to_string(n) + " x " + std::to_string(n) + " image");
}

template <class T>
void bin_readout(const T* in, T* out, int64_t batch, int64_t n, int64_t h, int64_t w, int64_t k,
                 Stream stream) {
    validate_binning(n, h, w, k);
    require(batch >= 0, "batch must be >= 0");
    if (batch == 0) return;
    launch_bin_forward(in, out, batch, n, h, w, k, stream);
}

template <class T>
void bin_readout_backward(const T* grad_out, T* grad_in, int64_t batch, int64_t n, int64_t h,
                          int64_t w, int64_t k, Stream stream) {
    validate_binning(n, h, w, k);
    require(batch >= 0, "batch must be >= 0");
    if (batch == 0) return;
    launch_bin_backward(grad_out, grad_in, batch, n, h, w, k, stream);
}

// ---------------------------------------------------------------------------

namespace {

// out must be the input itself (element-wise in place) or not overlap it.
template <class T>
void check_elementwise_alias(const T* in, const T* out, int64_t count, const char* in_name) {
    if (in == out) return;
    const auto pi = reinterpret_cast<std::uintptr_t>(in);
    const auto po = reinterpret_cast<std::uintptr_t>(out);
    const auto bytes = static_cast<std::uintptr_t>(count) * sizeof(T);
    require(pi + bytes <= po || po + bytes <= pi,
            std::string("out overlaps ") + in_name + " without being the same array; pass " +
                in_name + " itself for an in-place update or a separate array");
}

}  // namespace

template <class T>
void standard_normal_async(T* out, int64_t count, uint64_t seed, uint64_t stream, uint64_t offset,
                           Stream cuda_stream) {
    validate_noise_range(count, offset);  // the planner: the CPU sampler's check
    if (count == 0) return;
    require(out != nullptr, "out must not be null");
    launch_standard_normal(out, count, seed, stream, offset, cuda_stream);
}

template <class T>
void ddpm_update_async(const T* x, const T* v, int64_t count, const DdpmStep& step, uint64_t seed,
                       uint64_t stream, uint64_t offset, T* out, Stream cuda_stream) {
    validate_noise_range(count, offset);  // the planner: the CPU sampler's check
    require(step.sigma >= 0.0, "sigma must be >= 0, got " + std::to_string(step.sigma));
    if (count == 0) return;
    require(x != nullptr && v != nullptr && out != nullptr, "x, eps and out must not be null");
    check_elementwise_alias(x, out, count, "x");
    check_elementwise_alias(v, out, count, "eps");
    launch_ddpm_update(x, v, out, count, step, seed, stream, offset, cuda_stream);
}

template struct DeviceHop<float>;
template struct DeviceHop<double>;
template class CudaPropagator<float>;
template class CudaPropagator<double>;
template class CudaPhaseStack<float>;
template class CudaPhaseStack<double>;
template void bin_readout<float>(const float*, float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                 Stream);
template void bin_readout<double>(const double*, double*, int64_t, int64_t, int64_t, int64_t,
                                  int64_t, Stream);
template void bin_readout_backward<float>(const float*, float*, int64_t, int64_t, int64_t, int64_t,
                                          int64_t, Stream);
template void bin_readout_backward<double>(const double*, double*, int64_t, int64_t, int64_t,
                                           int64_t, int64_t, Stream);
template void standard_normal_async<float>(float*, int64_t, uint64_t, uint64_t, uint64_t, Stream);
template void standard_normal_async<double>(double*, int64_t, uint64_t, uint64_t, uint64_t, Stream);
template void ddpm_update_async<float>(const float*, const float*, int64_t, const DdpmStep&,
                                       uint64_t, uint64_t, uint64_t, float*, Stream);
template void ddpm_update_async<double>(const double*, const double*, int64_t, const DdpmStep&,
                                        uint64_t, uint64_t, uint64_t, double*, Stream);

}  // namespace gpu
}  // namespace optdiff
