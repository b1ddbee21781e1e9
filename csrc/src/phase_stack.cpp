// Multi-layer phase stack: forward to the camera intensity and the exact
// adjoint (reverse-mode) gradient for every phase mask and the input field.
//
// Each thread carries one sample at a time through the whole stack in its
// own padded buffer, so a sample's field stays in cache from layer to layer
// instead of streaming the batch through memory once per layer.
#include <algorithm>
#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "hop.hpp"
#include "optdiff/optdiff.hpp"
#include "threads.hpp"

#ifdef OPTDIFF_HAVE_OPENMP
#include <omp.h>
#endif

namespace optdiff {

namespace {
int thread_index() {
#ifdef OPTDIFF_HAVE_OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// Phase gradients are summed over the batch in a fixed number of groups
// (independent of the thread count) and the groups are added in order, so
// the result is bitwise the same for any number of threads.
constexpr int64_t kGradientGroups = 16;

template <class T>
struct Scratch {
    Workspace<T> ws;             // padded FFT buffer
    std::vector<cplx<T>> field;  // one unpadded field carried between hops
    std::vector<cplx<T>> tape;   // recompute and fused modes: this sample's tape
};
}  // namespace

template <class T>
struct PhaseStack<T>::Impl {
    StackSpec spec;
    int64_t n = 0, L = 0, nn = 0;
    std::vector<std::unique_ptr<HopPlan<T>>> hops;
    std::unique_ptr<HopPlan<T>> input_hop;
    WorkspaceSize ws_size;

    explicit Impl(const StackSpec& s) : spec(s), n(s.n) {
        validate_stack(s);  // before any plan is made: the messages of every back end
        L = static_cast<int64_t>(s.hops.size());
        nn = n * n;
        for (const PropagationSpec& h : s.hops) {
            hops.emplace_back(new HopPlan<T>(n, h));
            hops.back()->add_to(ws_size);
        }
        if (s.has_input_hop) {
            input_hop.reset(new HopPlan<T>(n, s.input_hop));
            input_hop->add_to(ws_size);
        }
        resident = true;
        for (const auto& h : hops) resident = resident && h->resident();
        if (input_hop) resident = resident && input_hop->resident();
    }

    // True when every hop keeps the field in the workspace between hops
    // (periodic grids on FFTW 2-D plans): then the mask, tape and gradient
    // work runs as one pass between two hops instead of a store and a load.
    bool resident = false;

    // M_l = exp(i phi_l) * tilt_l, once per call for all samples, into m [L*nn].
    void modulation(const T* phases, int nt, cplx<T>* m) const {
        const int64_t rows = L * n;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t rr = 0; rr < rows; ++rr) {
            const int64_t l = rr / n;
            const cplx<T>* tilt = hops[static_cast<size_t>(l)]->tilt.empty()
                                      ? nullptr
                                      : hops[static_cast<size_t>(l)]->tilt.data();
            const int64_t off = rr * n;
            const int64_t toff = (rr % n) * n;
            for (int64_t c = 0; c < n; ++c) {
                const cplx<T> t = tilt ? tilt[toff + c] : cplx<T>{T(1), T(0)};
                m[off + c] = layer_modulation(phases[off + c], t);
            }
        }
    }

    // `carry`: every stack needs the field buffer (the parameter-gradient path
    // runs the generic hops, which carry the field outside the workspace).
    std::vector<Scratch<T>> scratch(int nt, bool with_tape, bool carry = false) const {
        std::vector<Scratch<T>> s(static_cast<size_t>(nt));
        for (auto& x : s) {
            x.ws = Workspace<T>(ws_size.buf, ws_size.cols);
            if (!resident || carry)
                x.field.resize(static_cast<size_t>(nn));  // resident stacks carry it in ws
            if (with_tape) x.tape.resize(static_cast<size_t>((L + 1) * nn));
        }
        return s;
    }

    // forward for complex fields or real amplitudes (In = cplx<T> or T).
    template <class In>
    void forward_batch(const In* input, const T* phases, int64_t batch, T* inten, cplx<T>* saved,
                       cplx<T>* camera, int num_threads, cplx<T>* modulation_out) const {
        if (batch < 0) throw std::invalid_argument("batch must be >= 0");
        if (batch == 0) return;
        const int nt = resolve_threads(num_threads, batch);
        std::vector<cplx<T>> own;
        cplx<T>* mod = modulation_out;
        if (!mod) {
            own.resize(static_cast<size_t>(L * nn));
            mod = own.data();
        }
        modulation(phases, resolve_threads(num_threads, L * n), mod);
        std::vector<Scratch<T>> scr = scratch(nt, false);
        const int64_t per = (L + 1) * nn;
        std::atomic<bool> overflow{false};
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
        for (int64_t b = 0; b < batch; ++b) {
            T* ib = inten ? inten + b * nn : nullptr;
            forward_sample(input + b * nn, mod, saved ? saved + b * per : nullptr, ib,
                           camera ? camera + b * nn : nullptr,
                           scr[static_cast<size_t>(thread_index())]);
            // The sample's intensity is still in cache: checking it here costs a read of n^2
            // values, not another pass over the batch. A finite field can give |E|^2 = inf.
            if (ib && !all_finite(ib, nn)) overflow.store(true, std::memory_order_relaxed);
        }
        if (overflow.load())
            throw std::invalid_argument(intensity_overflow_message(sizeof(T) == 8));
    }

    // forward_sample for resident stacks: ws.buf holds the field throughout
    // and ends holding the camera field E_L (not yet stored anywhere).
    // In: cplx<T> (fields) or T (real amplitudes, widened as they are loaded).
    template <class In>
    void propagate_resident(const In* u, const cplx<T>* mod, cplx<T>* tape, Scratch<T>& s) const {
        cplx<T>* b = s.ws.buf;
        const cplx<T>* tin = input_tilt();
        if (tin)
            for (int64_t i = 0; i < nn; ++i) b[i] = cmul(as_field<T>(u[i]), tin[i]);
        else
            for (int64_t i = 0; i < nn; ++i) b[i] = as_field<T>(u[i]);
        if (input_hop) input_hop->run_resident(s.ws, false);
        for (int64_t l = 0; l < L; ++l) {
            pass::modulate(b, mod + l * nn, tape ? tape + l * nn : nullptr, nn);
            hops[static_cast<size_t>(l)]->run_resident(s.ws, false);
        }
    }

    // backward_sample for resident stacks, from dLoss/dconj(E_L) in ws.buf.
    void backpropagate_resident(const cplx<T>* tape, const cplx<T>* mod, T* acc, cplx<T>* grad_u,
                                Scratch<T>& s) const {
        cplx<T>* b = s.ws.buf;
        for (int64_t l = L - 1; l >= 0; --l) {
            hops[static_cast<size_t>(l)]->run_resident(s.ws, true);
            pass::mask_adjoint(b, tape + l * nn, mod + l * nn, acc + l * nn, nn,
                               l > 0 || grad_u != nullptr);
        }
        if (!grad_u) return;
        if (input_hop) input_hop->run_resident(s.ws, true);
        const cplx<T>* tin = input_tilt();
        if (tin)
            for (int64_t i = 0; i < nn; ++i) grad_u[i] = cmul_conj(b[i], tin[i]);
        else
            std::copy(b, b + nn, grad_u);
    }

    // The input hop's tilt table, or null (no input hop or no tilt).
    const cplx<T>* input_tilt() const {
        return input_hop && !input_hop->tilt.empty() ? input_hop->tilt.data() : nullptr;
    }

    // One sample forward (In as in propagate_resident). `tape` (nullable)
    // receives [w_0..w_{L-1}, E_L]; `inten` and `camera` (nullable) receive
    // |E_L|^2 and E_L.
    template <class In>
    void forward_sample(const In* u, const cplx<T>* mod, cplx<T>* tape, T* inten, cplx<T>* camera,
                        Scratch<T>& s) const {
        if (resident) {
            propagate_resident(u, mod, tape, s);
            pass::camera(s.ws.buf, inten, tape ? tape + L * nn : nullptr, camera, nn);
            return;
        }
        cplx<T>* a = s.field.data();
        const cplx<T>* src = a;
        if (input_hop) {
            const cplx<T>* tin = input_tilt();
            if (tin)
                input_hop->run(
                    s.ws, false, [&](int64_t i) { return cmul(as_field<T>(u[i]), tin[i]); },
                    [&](int64_t i, cplx<T> v) { a[i] = v; });
            else
                input_hop->run(
                    s.ws, false, [&](int64_t i) { return as_field<T>(u[i]); },
                    [&](int64_t i, cplx<T> v) { a[i] = v; });
        } else if constexpr (std::is_same<In, cplx<T>>::value) {
            src = u;
        } else {  // a real field meets mask 0 directly: widen it into the carry buffer
            for (int64_t i = 0; i < nn; ++i) a[i] = as_field<T>(u[i]);
        }
        for (int64_t l = 0; l < L; ++l) {
            const cplx<T>* m = mod + l * nn;
            cplx<T>* w = tape ? tape + l * nn : nullptr;
            const cplx<T>* in = src;
            auto load = [&](int64_t i) {
                const cplx<T> v = cmul(in[i], m[i]);
                if (w) w[i] = v;
                return v;
            };
            if (l + 1 < L) {
                hops[static_cast<size_t>(l)]->run(s.ws, false, load,
                                                  [&](int64_t i, cplx<T> v) { a[i] = v; });
                src = a;
            } else {
                cplx<T>* eL = tape ? tape + L * nn : nullptr;
                hops[static_cast<size_t>(l)]->run(s.ws, false, load, [&](int64_t i, cplx<T> v) {
                    if (inten) inten[i] = intensity(v);
                    if (eL) eL[i] = v;
                    if (camera) camera[i] = v;
                });
            }
        }
    }

    // One sample backward; adds dLoss/dphi into acc [L, nn]. With g null the
    // tape's last field already holds dLoss/dconj(E_L) instead of E_L.
    void backward_sample(const cplx<T>* tape, const T* g, const cplx<T>* mod, T* acc,
                         cplx<T>* grad_u, Scratch<T>& s) const {
        if (resident) {
            if (g)
                pass::intensity_adjoint(s.ws.buf, tape + L * nn, g, nn);
            else
                std::copy(tape + L * nn, tape + (L + 1) * nn, s.ws.buf);
            return backpropagate_resident(tape, mod, acc, grad_u, s);
        }
        cplx<T>* a = s.field.data();
        const cplx<T>* eL = tape + L * nn;
        for (int64_t l = L - 1; l >= 0; --l) {
            const cplx<T>* w = tape + l * nn;
            const cplx<T>* m = mod + l * nn;
            T* d = acc + l * nn;
            const bool carry = l > 0 || grad_u != nullptr;
            auto store = [&](int64_t i, cplx<T> gw) {
                d[i] += phase_gradient(gw, w[i]);
                if (carry) a[i] = modulation_backward(gw, m[i]);
            };
            if (l == L - 1 && g)
                hops[static_cast<size_t>(l)]->run(
                    s.ws, true, [&](int64_t i) { return intensity_backward(eL[i], g[i]); }, store);
            else if (l == L - 1)
                hops[static_cast<size_t>(l)]->run(
                    s.ws, true, [&](int64_t i) { return eL[i]; }, store);
            else
                hops[static_cast<size_t>(l)]->run(
                    s.ws, true, [&](int64_t i) { return a[i]; }, store);
        }
        if (!grad_u) return;
        if (input_hop) {
            const cplx<T>* tin = input_tilt();
            input_hop->run(
                s.ws, true, [&](int64_t i) { return a[i]; },
                [&](int64_t i, cplx<T> v) { grad_u[i] = tin ? cmul_conj(v, tin[i]) : v; });
        } else {
            std::copy(a, a + nn, grad_u);
        }
    }

    // Backward of one sample with the parameter gradients, on the generic hop
    // runs (any stack). Adds dLoss/dphi into acc [L, nn], dLoss/d(phase of the
    // input plane, where the input tilt acts) into acc_in [nn], and
    // dLoss/d(distance) of hop l into dz[l] (dz[L]: the input hop).
    void backward_sample_params(const cplx<T>* u, const cplx<T>* tape, const T* g,
                                const cplx<T>* mod, T* acc, T* acc_in, double* dz, cplx<T>* grad_u,
                                Scratch<T>& s) const {
        cplx<T>* a = s.field.data();  // dLoss/dconj of the field after the current hop
        const cplx<T>* eL = tape + L * nn;
        for (int64_t i = 0; i < nn; ++i) a[i] = intensity_backward(eL[i], g[i]);
        for (int64_t l = L - 1; l >= 0; --l) {
            const HopPlan<T>& hop = *hops[static_cast<size_t>(l)];
            const cplx<T>* w = tape + l * nn;
            const cplx<T>* m = mod + l * nn;
            T* d = acc + l * nn;
            dz[l] += distance_derivative(
                hop, [&](int64_t i) { return w[i]; }, a, s);
            hop.run(
                s.ws, true, [&](int64_t i) { return a[i]; },
                [&](int64_t i, cplx<T> gw) {
                    d[i] += phase_gradient(gw, w[i]);
                    a[i] = modulation_backward(gw, m[i]);
                });
        }
        // a: the gradient at mask 0's input (the input hop's output, or the input).
        const cplx<T>* tin = input_tilt();
        auto w_in = [&](int64_t i) { return tin ? cmul(u[i], tin[i]) : u[i]; };
        if (!input_hop) {
            for (int64_t i = 0; i < nn; ++i) acc_in[i] += phase_gradient(a[i], u[i]);
            if (grad_u) std::copy(a, a + nn, grad_u);
            return;
        }
        dz[L] += distance_derivative(*input_hop, w_in, a, s);
        input_hop->run(
            s.ws, true, [&](int64_t i) { return a[i]; },
            [&](int64_t i, cplx<T> gw) {
                acc_in[i] += phase_gradient(gw, w_in(i));
                if (grad_u) grad_u[i] = tin ? cmul_conj(gw, tin[i]) : gw;
            });
    }

    // Re sum conj(grad_out) * dP/d(distance)(input): the loss's derivative with
    // respect to the hop's distance, for one sample (summed in a fixed order).
    template <class Load>
    static double distance_derivative(const HopPlan<T>& hop, Load&& load, const cplx<T>* grad_out,
                                      Scratch<T>& s) {
        double sum = 0.0;
        hop.run_dz(s.ws, load, [&](int64_t i, cplx<T> v) {
            sum += static_cast<double>(grad_out[i].re) * static_cast<double>(v.re) +
                   static_cast<double>(grad_out[i].im) * static_cast<double>(v.im);
        });
        return sum;
    }

    void backward_params(const cplx<T>* input, const T* phases, const cplx<T>* saved,
                         const T* grad_intensity, int64_t batch, T* grad_phases,
                         cplx<T>* grad_input, int num_threads, const cplx<T>* modulation,
                         const StackParamGrads& p) const {
        const int64_t per_group = (L + 1) * nn;  // L phase layers + the input plane
        std::vector<T> total(static_cast<size_t>(per_group), T(0));
        std::vector<double> dz(static_cast<size_t>(L + 1), 0.0);
        if (batch > 0) {
            for (const auto& h : hops) h->ensure_dz_tables();
            if (input_hop) input_hop->ensure_dz_tables();
            std::vector<cplx<T>> own;
            const cplx<T>* mod = modulation_table(phases, modulation, own, num_threads);
            const bool recompute = saved == nullptr;
            const int64_t groups = std::min<int64_t>(batch, kGradientGroups);
            const int nt = resolve_threads(num_threads, groups);
            std::vector<Scratch<T>> scr = scratch(nt, recompute, /*carry=*/true);
            std::vector<T> acc(static_cast<size_t>(groups * per_group), T(0));
            std::vector<double> dzg(static_cast<size_t>(groups * (L + 1)), 0.0);
            const int64_t per = (L + 1) * nn;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
            for (int64_t gi = 0; gi < groups; ++gi) {
                Scratch<T>& sc = scr[static_cast<size_t>(thread_index())];
                T* a = acc.data() + gi * per_group;
                double* d = dzg.data() + gi * (L + 1);
                const int64_t b0 = gi * batch / groups, b1 = (gi + 1) * batch / groups;
                for (int64_t b = b0; b < b1; ++b) {
                    const cplx<T>* u = input + b * nn;
                    if (recompute) forward_sample(u, mod, sc.tape.data(), nullptr, nullptr, sc);
                    const cplx<T>* tape = recompute ? sc.tape.data() : saved + b * per;
                    backward_sample_params(u, tape, grad_intensity + b * nn, mod, a, a + L * nn, d,
                                           grad_input ? grad_input + b * nn : nullptr, sc);
                }
            }
            reduce_groups(acc, groups, per_group, total.data(), num_threads);
            for (int64_t gi = 0; gi < groups; ++gi)  // groups in order: any thread count
                for (int64_t l = 0; l <= L; ++l)
                    dz[static_cast<size_t>(l)] += dzg[static_cast<size_t>(gi * (L + 1) + l)];
        }
        std::copy(total.begin(), total.begin() + L * nn, grad_phases);
        if (p.distances) std::copy(dz.begin(), dz.begin() + L, p.distances);
        if (p.input_distance) *p.input_distance = input_hop ? dz[static_cast<size_t>(L)] : 0.0;
        if (p.tilts)
            for (int64_t l = 0; l < L; ++l)
                tilt_gradient(total.data() + l * nn, n, hops[static_cast<size_t>(l)]->spec,
                              p.tilts + 2 * l);
        if (p.input_tilt) {
            PropagationSpec at_input = input_hop ? input_hop->spec : hops[0]->spec;
            if (!input_hop) at_input.tilt_x = at_input.tilt_y = 0.0;
            tilt_gradient(total.data() + L * nn, n, at_input, p.input_tilt);
        }
    }

    // Forward, loss and backward of one sample for the fused MSE step; the
    // tape lives in the thread's scratch (in cache). Adds dLoss/dphi into
    // acc and returns sum (I - target)^2 over the sample.
    double mse_sample(const cplx<T>* u, const T* target, T grad_scale, const cplx<T>* mod, T* acc,
                      T* inten, Scratch<T>& s) const {
        cplx<T>* tape = s.tape.data();
        if (resident) {  // E_L is in ws.buf: turn it into dLoss/dconj(E_L) in place
            propagate_resident(u, mod, tape, s);
            const double sq = pass::mse_camera(s.ws.buf, target, grad_scale, inten, nn);
            backpropagate_resident(tape, mod, acc, nullptr, s);
            return sq;
        }
        forward_sample(u, mod, tape, nullptr, nullptr, s);  // the tape ends with E_L
        const double sq = pass::mse_camera(tape + L * nn, target, grad_scale, inten, nn);
        backward_sample(tape, nullptr, mod, acc, nullptr, s);
        return sq;
    }

    // exp(i phi) * tilt: the caller's table when given, else computed into `own`.
    const cplx<T>* modulation_table(const T* phases, const cplx<T>* given,
                                    std::vector<cplx<T>>& own, int num_threads) const {
        if (given) return given;
        own.resize(static_cast<size_t>(L * nn));
        modulation(phases, resolve_threads(num_threads, L * n), own.data());
        return own.data();
    }

    // Runs sample(b, acc, scratch) -> double for every sample, the batch split
    // into fixed groups over the threads (acc: the group's [L, nn] phase
    // gradient). Writes the summed gradient to grad and returns the sum of the
    // returned values; both are added in group order, so they are the same
    // for any thread count.
    template <class Sample>
    double over_groups(int64_t batch, int num_threads, bool with_tape, T* grad,
                       Sample&& sample) const {
        const int64_t groups = std::min<int64_t>(batch, kGradientGroups);
        const int nt = resolve_threads(num_threads, groups);
        std::vector<Scratch<T>> scr = scratch(nt, with_tape);
        std::vector<T> acc(static_cast<size_t>(groups * L * nn), T(0));
        std::vector<double> part(static_cast<size_t>(groups), 0.0);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
        for (int64_t gi = 0; gi < groups; ++gi) {
            Scratch<T>& sc = scr[static_cast<size_t>(thread_index())];
            T* a = acc.data() + gi * L * nn;
            const int64_t b0 = gi * batch / groups, b1 = (gi + 1) * batch / groups;
            double sum = 0.0;
            for (int64_t b = b0; b < b1; ++b) sum += sample(b, a, sc);
            part[static_cast<size_t>(gi)] = sum;
        }
        reduce_groups(acc, groups, L * nn, grad, num_threads);
        double total = 0.0;
        for (double v : part) total += v;
        return total;
    }

    // grad = sum over groups of acc [groups, total], added in group order a
    // chunk at a time (the same sums for any thread count, contiguous access).
    static void reduce_groups(const std::vector<T>& acc, int64_t groups, int64_t total, T* grad,
                              int num_threads) {
        constexpr int64_t kChunk = 2048;
        const int64_t chunks = (total + kChunk - 1) / kChunk;
        const int ntr = resolve_threads(num_threads, chunks);
#pragma omp parallel for num_threads(ntr) schedule(static)
        for (int64_t ch = 0; ch < chunks; ++ch) {
            const int64_t i0 = ch * kChunk, i1 = std::min(total, i0 + kChunk);
            T* out = grad + i0;
            const T* a0 = acc.data() + i0;
            for (int64_t i = 0; i < i1 - i0; ++i) out[i] = T(0) + a0[i];
            for (int64_t gi = 1; gi < groups; ++gi) {
                const T* ag = acc.data() + gi * total + i0;
                for (int64_t i = 0; i < i1 - i0; ++i) out[i] += ag[i];
            }
        }
    }
};

template <class T>
PhaseStack<T>::PhaseStack(const StackSpec& spec) : impl_(new Impl(spec)) {}
template <class T>
PhaseStack<T>::~PhaseStack() = default;
template <class T>
PhaseStack<T>::PhaseStack(PhaseStack&&) noexcept = default;
template <class T>
PhaseStack<T>& PhaseStack<T>::operator=(PhaseStack&&) noexcept = default;
template <class T>
int64_t PhaseStack<T>::n() const {
    return impl_->n;
}
template <class T>
int64_t PhaseStack<T>::layers() const {
    return impl_->L;
}
template <class T>
const StackSpec& PhaseStack<T>::spec() const {
    return impl_->spec;
}

template <class T>
void PhaseStack<T>::forward(const cplx<T>* input, const T* phases, int64_t batch, T* inten,
                            cplx<T>* saved, cplx<T>* camera, int num_threads,
                            cplx<T>* modulation) const {
    impl_->forward_batch(input, phases, batch, inten, saved, camera, num_threads, modulation);
}

template <class T>
void PhaseStack<T>::forward_real(const T* amplitude, const T* phases, int64_t batch, T* inten,
                                 cplx<T>* saved, cplx<T>* camera, int num_threads,
                                 cplx<T>* modulation) const {
    impl_->forward_batch(amplitude, phases, batch, inten, saved, camera, num_threads, modulation);
}

template <class T>
void PhaseStack<T>::backward(const cplx<T>* input, const T* phases, const cplx<T>* saved,
                             const T* grad_intensity, int64_t batch, T* grad_phases,
                             cplx<T>* grad_input, int num_threads, const cplx<T>* modulation,
                             const StackParamGrads* params) const {
    if (batch < 0) throw std::invalid_argument("batch must be >= 0");
    const Impl& s = *impl_;
    if (params && params->any())
        return s.backward_params(input, phases, saved, grad_intensity, batch, grad_phases,
                                 grad_input, num_threads, modulation, *params);
    const int64_t nn = s.nn, L = s.L, per = (L + 1) * nn;
    if (batch == 0) {
        std::fill(grad_phases, grad_phases + L * nn, T(0));
        return;
    }
    const bool recompute = saved == nullptr;
    std::vector<cplx<T>> own;
    const cplx<T>* mod = s.modulation_table(phases, modulation, own, num_threads);
    s.over_groups(
        batch, num_threads, recompute, grad_phases, [&](int64_t b, T* acc, Scratch<T>& sc) {
            const cplx<T>* tape = saved ? saved + b * per : sc.tape.data();
            if (recompute)
                s.forward_sample(input + b * nn, mod, sc.tape.data(), nullptr, nullptr, sc);
            s.backward_sample(tape, grad_intensity + b * nn, mod, acc,
                              grad_input ? grad_input + b * nn : nullptr, sc);
            return 0.0;
        });
}

template <class T>
double PhaseStack<T>::mse_loss_and_grad(const cplx<T>* input, const T* phases, const T* target,
                                        int64_t batch, T* grad_phases, T* intensity,
                                        int num_threads) const {
    if (batch < 0) throw std::invalid_argument("batch must be >= 0");
    const Impl& s = *impl_;
    const int64_t nn = s.nn, L = s.L;
    if (batch == 0) {
        std::fill(grad_phases, grad_phases + L * nn, T(0));
        return 0.0;
    }
    std::vector<cplx<T>> own;
    const cplx<T>* mod = s.modulation_table(phases, nullptr, own, num_threads);
    // loss = sum d^2 / count, so dLoss/dI = 2 d / count.
    const double count = static_cast<double>(batch) * static_cast<double>(nn);
    const T grad_scale = static_cast<T>(2.0 / count);
    const double sq = s.over_groups(
        batch, num_threads, true, grad_phases, [&](int64_t b, T* acc, Scratch<T>& sc) {
            return s.mse_sample(input + b * nn, target + b * nn, grad_scale, mod, acc,
                                intensity ? intensity + b * nn : nullptr, sc);
        });
    return sq / count;
}

template class PhaseStack<float>;
template class PhaseStack<double>;

}  // namespace optdiff
