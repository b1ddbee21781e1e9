// XLA FFI handlers of the CPU core for optdiff.jax (module optdiff._jax_ffi).
//
// JAX hands these handlers its own buffers (no copies) on the CPU; the Python side
// (python/optdiff/jax/_ffi.py) registers the capsules with jax.ffi.register_ffi_target and
// calls them through jax.ffi.ffi_call. Physical parameters travel as attributes: a hop is 7
// doubles (wavelength, pitch, distance, method, padding, tilt_x, tilt_y), validated by the
// planner (validate / validate_stack) when the propagator or stack is first built; built
// objects are cached by their parameters so a jitted training loop plans once.
//
// Batching: the field may have any leading batch dimensions. Under jax.vmap (vmap_method
// "expand_dims") the phases get k leading vmap dimensions, and every operand carries those k
// dimensions, of full size or 1 (broadcast). The handlers loop over the k-dimensional vmap
// grid, each cell being one call of the core with its own phases and samples.
//
// Gradient conventions: the core's gradient of a real loss with respect to complex z is
// dL/dRe z + i dL/dIm z; JAX's cotangent is its conjugate. The handlers convert, so the
// Python side passes JAX cotangents in and gets JAX cotangents out.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <complex>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "optdiff/optdiff.hpp"
#include "xla/ffi/api/ffi.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

#ifdef OPTDIFF_FFTW_PLANNER_LOCK
#include <fftw3.h>
#endif

namespace ffi = xla::ffi;
namespace py = pybind11;
using optdiff::cplx;

namespace {

constexpr int kHopValues = 7;

optdiff::PropagationSpec hop_from(const double* v) {
    optdiff::PropagationSpec s;
    s.wavelength = v[0];
    s.pitch = v[1];
    s.distance = v[2];
    const int m = static_cast<int>(v[3]);
    if (m < 0 || m > 2 || static_cast<double>(m) != v[3])
        throw std::invalid_argument("method code must be 0, 1 or 2");
    s.method = static_cast<optdiff::Method>(m);
    s.padding = static_cast<int>(v[4]);
    if (static_cast<double>(s.padding) != v[4])
        throw std::invalid_argument("padding must be 1 or 2");
    s.tilt_x = v[5];
    s.tilt_y = v[6];
    return s;
}

// Built propagators and stacks, keyed by precision, n and the raw bits of their parameters.
// Building one plans FFTs and tabulates transfer functions: far too slow for every call.
template <class Obj>
class Cache {
public:
    template <class Make>
    std::shared_ptr<const Obj> get(const std::string& key, Make make) {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = map_.find(key);
        if (it != map_.end()) return it->second;
        if (map_.size() >= 64) map_.clear();  // a sweep over many geometries: start afresh
        auto obj = std::make_shared<const Obj>(make());
        map_.emplace(key, obj);
        return obj;
    }

private:
    std::mutex mu_;
    std::map<std::string, std::shared_ptr<const Obj>> map_;
};

std::string key_of(int64_t n, ffi::Span<const double> values, bool flag) {
    std::string k(reinterpret_cast<const char*>(&n), sizeof n);
    k.append(reinterpret_cast<const char*>(values.begin()), values.size() * sizeof(double));
    k.push_back(flag ? '1' : '0');
    return k;
}

template <class T>
std::shared_ptr<const optdiff::Propagator<T>> propagator_for(int64_t n,
                                                             ffi::Span<const double> hop) {
    static Cache<optdiff::Propagator<T>> cache;
    if (hop.size() != kHopValues) throw std::invalid_argument("hop must hold 7 values");
    return cache.get(key_of(n, hop, false),
                     [&] { return optdiff::Propagator<T>(n, hop_from(hop.begin())); });
}

template <class T>
std::shared_ptr<const optdiff::PhaseStack<T>> stack_for(int64_t n, ffi::Span<const double> hops,
                                                        bool has_input_hop) {
    static Cache<optdiff::PhaseStack<T>> cache;
    if (hops.size() % kHopValues != 0 || hops.size() < kHopValues * (has_input_hop ? 2u : 1u))
        throw std::invalid_argument("hops must hold 7 values per hop");
    return cache.get(key_of(n, hops, has_input_hop), [&] {
        optdiff::StackSpec spec;
        spec.n = n;
        const double* v = hops.begin();
        const size_t count = hops.size() / kHopValues;
        size_t first = 0;
        if (has_input_hop) {
            spec.has_input_hop = true;
            spec.input_hop = hop_from(v);
            first = 1;
        }
        for (size_t h = first; h < count; ++h) spec.hops.push_back(hop_from(v + h * kHopValues));
        optdiff::validate_stack(spec);
        return optdiff::PhaseStack<T>(spec);
    });
}

std::vector<int64_t> dims_of(const ffi::AnyBuffer& b) {
    auto d = b.dimensions();
    return std::vector<int64_t>(d.begin(), d.end());
}

int64_t product(const std::vector<int64_t>& d, size_t from, size_t to) {
    int64_t p = 1;
    for (size_t i = from; i < to; ++i) p *= d[i];
    return p;
}

std::string dims_str(const std::vector<int64_t>& d) {
    std::string s = "(";
    for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
    return s + ")";
}

// The vmap grid (the first k dimensions of a full-size result) and, for an operand that may
// broadcast over it (size 1 in some of those dimensions), the operand's cell for each grid cell.
struct Grid {
    std::vector<int64_t> vd;  // sizes of the k vmap dimensions
    int64_t cells() const { return product(vd, 0, vd.size()); }

    void check(const std::vector<int64_t>& d, const char* name) const {
        if (d.size() < vd.size())
            throw std::invalid_argument(std::string(name) + " has rank " +
                                        std::to_string(d.size()) + ", fewer than the " +
                                        std::to_string(vd.size()) + " vmap dimensions");
        for (size_t i = 0; i < vd.size(); ++i)
            if (d[i] != vd[i] && d[i] != 1)
                throw std::invalid_argument(std::string(name) + " shape " + dims_str(d) +
                                            " does not broadcast over the vmap dimensions " +
                                            dims_str(vd));
    }
    // Row-major index of grid cell g in an operand whose vmap dimensions are d[0..k).
    int64_t cell(const std::vector<int64_t>& d, int64_t g) const {
        int64_t idx = 0, stride = 1;
        for (size_t i = vd.size(); i-- > 0;) {
            const int64_t coord = g % vd[i];
            g /= vd[i];
            if (d[i] != 1) idx += coord * stride;
            stride *= d[i];
        }
        return idx;
    }
};

ffi::Error as_ffi_error(const std::exception& e) {
    if (dynamic_cast<const std::invalid_argument*>(&e))
        return ffi::Error::InvalidArgument(e.what());
    return ffi::Error::Internal(e.what());
}

// XLA allocates each call's outputs afresh. The tape is large (B (L+1) n^2 complex values: 34 MB
// at n=128, B=64, L=3), so the allocator maps new pages every call and the first write of each
// 4 KiB page faults; the NumPy API reuses its tape instead. Asking for transparent huge pages
// on the aligned interior of the tape and the other batch-sized outputs (a hint; THP in "madvise"
// mode honours it) makes that 512x fewer faults. It changes nothing else about the memory.
void prefer_huge_pages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    constexpr uintptr_t huge = uintptr_t(2) << 20, page = 4096;
    const uintptr_t lo = reinterpret_cast<uintptr_t>(p), hi = lo + bytes;
    const uintptr_t begin = (lo + huge - 1) & ~(huge - 1), end = hi & ~(huge - 1);
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
        // Then fault the pages in with one call instead of one trap per page (Linux >= 5.14; an
        // older kernel refuses the advice and the pages fault in as they are written).
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
    const uintptr_t pb = (lo + page - 1) & ~(page - 1), pe = hi & ~(page - 1);
    if (pe > pb) madvise(reinterpret_cast<void*>(pb), pe - pb, MADV_POPULATE_WRITE);
#else
    (void)p;
    (void)bytes;
#endif
}

template <class T>
void conj_in_place(cplx<T>* a, int64_t count) {
    for (int64_t i = 0; i < count; ++i) a[i].im = -a[i].im;
}

// ---- propagation: mode 0 forward A, 1 adjoint A^H, 2 transpose A^T (the VJP of A in JAX's
// convention: conj(A^H conj(ct))), all on any leading batch dimensions -------------------
template <class T>
void propagate_impl(const ffi::AnyBuffer& x, ffi::Result<ffi::AnyBuffer>& y,
                    ffi::Span<const double> hop, int32_t mode) {
    const auto d = dims_of(x);
    if (d.size() < 2 || d[d.size() - 1] != d[d.size() - 2])
        throw std::invalid_argument("field must have shape [..., n, n], got " + dims_str(d));
    const int64_t n = d.back();
    const int64_t batch = product(d, 0, d.size() - 2);
    if (batch == 0) return;
    auto p = propagator_for<T>(n, hop);
    const auto* in = static_cast<const cplx<T>*>(x.untyped_data());
    auto* out = static_cast<cplx<T>*>(y->untyped_data());
    if (mode == 0) {
        p->forward(in, out, batch);
    } else if (mode == 1) {
        p->adjoint(in, out, batch);
    } else {
        const int64_t count = batch * n * n;
        if (out != in) std::memcpy(out, in, sizeof(cplx<T>) * count);
        conj_in_place(out, count);
        p->adjoint(out, out, batch);
        conj_in_place(out, count);
    }
}

ffi::Error propagate(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y, ffi::Span<const double> hop,
                     int32_t mode) {
    try {
        if (x.element_type() == ffi::C64)
            propagate_impl<float>(x, y, hop, mode);
        else if (x.element_type() == ffi::C128)
            propagate_impl<double>(x, y, hop, mode);
        else
            return ffi::Error::InvalidArgument("field must be complex64 or complex128");
    } catch (const std::exception& e) {
        return as_ffi_error(e);
    }
    return ffi::Error::Success();
}

// ---- stack forward: intensity; with `train`, also the tape and the modulation table --------
template <class T>
void stack_forward_impl(const ffi::AnyBuffer& field, const ffi::AnyBuffer& phases,
                        ffi::AnyBuffer& intensity, cplx<T>* saved, cplx<T>* modulation,
                        ffi::Span<const double> hops, bool has_input_hop) {
    const auto fd = dims_of(field), pd = dims_of(phases), od = dims_of(intensity);
    if (pd.size() < 3)
        throw std::invalid_argument("phases must have shape [L, n, n], got " + dims_str(pd));
    const size_t k = pd.size() - 3;
    const int64_t n = pd.back(), L = pd[k], nn = n * n;
    if (fd.size() < k + 2 || fd.back() != n || fd[fd.size() - 2] != n)
        throw std::invalid_argument("field must have shape [..., " + std::to_string(n) + ", " +
                                    std::to_string(n) + "] to match phases, got " + dims_str(fd));
    Grid grid{std::vector<int64_t>(od.begin(), od.begin() + k)};
    grid.check(fd, "field");
    grid.check(pd, "phases");
    const int64_t per_cell = product(od, k, od.size() - 2);  // samples per grid cell
    if (product(fd, k, fd.size() - 2) != per_cell)
        throw std::invalid_argument("field batch " + dims_str(fd) + " does not match " +
                                    dims_str(od));
    auto stack = stack_for<T>(n, hops, has_input_hop);
    if (stack->layers() != L)
        throw std::invalid_argument("phases has " + std::to_string(L) + " layers, the stack " +
                                    std::to_string(stack->layers()));
    const auto* f = static_cast<const cplx<T>*>(field.untyped_data());
    const auto* ph = static_cast<const T*>(phases.untyped_data());
    auto* out = static_cast<T*>(intensity.untyped_data());
    const int64_t cells = grid.cells();
    if (per_cell == 0 || cells == 0) return;
    const bool one_call = grid.cell(pd, cells - 1) == 0 && grid.cell(fd, cells - 1) == cells - 1;
    if (one_call) {
        // Phases shared by every cell and the field batched over all of them: one core call,
        // its threads spread over every sample; the modulation table is the same for each cell.
        stack->forward(f, ph, cells * per_cell, out, saved, nullptr, 0, modulation);
        for (int64_t g = 1; modulation && g < cells; ++g)
            std::memcpy(modulation + g * L * nn, modulation, sizeof(cplx<T>) * L * nn);
        return;
    }
    for (int64_t g = 0; g < cells; ++g)
        stack->forward(f + grid.cell(fd, g) * per_cell * nn, ph + grid.cell(pd, g) * L * nn,
                       per_cell, out + g * per_cell * nn,
                       saved ? saved + g * per_cell * (L + 1) * nn : nullptr, nullptr, 0,
                       modulation ? modulation + g * L * nn : nullptr);
}

template <class F>
ffi::Error by_precision(const ffi::AnyBuffer& field, const ffi::AnyBuffer& phases, F&& run) {
    try {
        if (field.element_type() == ffi::C64 && phases.element_type() == ffi::F32)
            run(float{});
        else if (field.element_type() == ffi::C128 && phases.element_type() == ffi::F64)
            run(double{});
        else
            return ffi::Error::InvalidArgument(
                "field and phases must be complex64 with float32 or complex128 with float64");
    } catch (const std::exception& e) {
        return as_ffi_error(e);
    }
    return ffi::Error::Success();
}

ffi::Error stack_forward(ffi::AnyBuffer field, ffi::AnyBuffer phases,
                         ffi::Result<ffi::AnyBuffer> intensity, ffi::Span<const double> hops,
                         bool has_input_hop) {
    return by_precision(field, phases, [&](auto t) {
        using T = decltype(t);
        prefer_huge_pages(intensity->untyped_data(), intensity->size_bytes());
        stack_forward_impl<T>(field, phases, *intensity, nullptr, nullptr, hops, has_input_hop);
    });
}

ffi::Error stack_forward_train(ffi::AnyBuffer field, ffi::AnyBuffer phases,
                               ffi::Result<ffi::AnyBuffer> intensity,
                               ffi::Result<ffi::AnyBuffer> saved,
                               ffi::Result<ffi::AnyBuffer> modulation, ffi::Span<const double> hops,
                               bool has_input_hop) {
    return by_precision(field, phases, [&](auto t) {
        using T = decltype(t);
        prefer_huge_pages(saved->untyped_data(), saved->size_bytes());
        prefer_huge_pages(intensity->untyped_data(), intensity->size_bytes());
        stack_forward_impl<T>(
            field, phases, *intensity, static_cast<cplx<T>*>(saved->untyped_data()),
            static_cast<cplx<T>*>(modulation->untyped_data()), hops, has_input_hop);
    });
}

// ---- stack backward: d loss / d phases per vmap cell and the field's cotangent ------------
template <class T>
void stack_backward_impl(const ffi::AnyBuffer& field, const ffi::AnyBuffer& phases,
                         const ffi::AnyBuffer& saved, const ffi::AnyBuffer& modulation,
                         const ffi::AnyBuffer& ct, ffi::AnyBuffer& grad_phases,
                         ffi::AnyBuffer& grad_field, ffi::Span<const double> hops,
                         bool has_input_hop, bool field_grad) {
    const auto fd = dims_of(field), pd = dims_of(phases), sd = dims_of(saved),
               md = dims_of(modulation), cd = dims_of(ct), gpd = dims_of(grad_phases);
    const size_t k = pd.size() - 3;
    const int64_t n = pd.back(), L = pd[k], nn = n * n;
    // grad_phases is full-size over the vmap grid; grad_field is empty when nobody wants it.
    Grid grid{std::vector<int64_t>(gpd.begin(), gpd.begin() + k)};
    grid.check(fd, "field");
    grid.check(pd, "phases");
    grid.check(sd, "saved fields");
    grid.check(md, "modulation");
    grid.check(cd, "grad_intensity");
    const int64_t per_cell = product(cd, k, cd.size() - 2);
    if (field_grad &&
        static_cast<int64_t>(grad_field.element_count()) != grid.cells() * per_cell * nn)
        throw std::invalid_argument("grad_field has " + std::to_string(grad_field.element_count()) +
                                    " elements, expected " +
                                    std::to_string(grid.cells() * per_cell * nn));
    auto stack = stack_for<T>(n, hops, has_input_hop);
    const auto* f = static_cast<const cplx<T>*>(field.untyped_data());
    const auto* ph = static_cast<const T*>(phases.untyped_data());
    const auto* sv = static_cast<const cplx<T>*>(saved.untyped_data());
    const auto* mod = static_cast<const cplx<T>*>(modulation.untyped_data());
    const auto* g_int = static_cast<const T*>(ct.untyped_data());
    auto* g_ph = static_cast<T*>(grad_phases.untyped_data());
    auto* g_f = field_grad ? static_cast<cplx<T>*>(grad_field.untyped_data()) : nullptr;
    const int64_t cells = grid.cells();
    if (cells == 0) return;
    if (per_cell == 0) {
        std::fill(g_ph, g_ph + cells * L * nn, T(0));
        return;
    }
    // Cells with few samples each (vmap over single fields) run side by side, one thread each;
    // otherwise one after the other with the core's threads over the samples.
    const bool parallel_cells = cells > 1 && per_cell < optdiff::get_num_threads();
    const int threads_per_call = parallel_cells ? 1 : 0;
    std::vector<std::string> errors(static_cast<size_t>(cells));
    auto run_cell = [&](int64_t g) {
        try {
            stack->backward(f + grid.cell(fd, g) * per_cell * nn, ph + grid.cell(pd, g) * L * nn,
                            sv + grid.cell(sd, g) * per_cell * (L + 1) * nn,
                            g_int + grid.cell(cd, g) * per_cell * nn, per_cell, g_ph + g * L * nn,
                            g_f ? g_f + g * per_cell * nn : nullptr, threads_per_call,
                            mod + grid.cell(md, g) * L * nn);
        } catch (const std::exception& e) {
            errors[static_cast<size_t>(g)] = e.what();
        }
    };
    if (parallel_cells) {
#ifdef OPTDIFF_HAVE_OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(optdiff::get_num_threads())
#endif
        for (int64_t g = 0; g < cells; ++g) run_cell(g);
    } else {
        for (int64_t g = 0; g < cells; ++g) run_cell(g);
    }
    for (const auto& e : errors)
        if (!e.empty()) throw std::invalid_argument(e);
    if (g_f) conj_in_place(g_f, cells * per_cell * nn);  // core convention -> JAX cotangent
}

ffi::Error stack_backward(ffi::AnyBuffer field, ffi::AnyBuffer phases, ffi::AnyBuffer saved,
                          ffi::AnyBuffer modulation, ffi::AnyBuffer ct,
                          ffi::Result<ffi::AnyBuffer> grad_phases,
                          ffi::Result<ffi::AnyBuffer> grad_field, ffi::Span<const double> hops,
                          bool has_input_hop, bool field_grad) {
    return by_precision(field, phases, [&](auto t) {
        using T = decltype(t);
        if (field_grad) prefer_huge_pages(grad_field->untyped_data(), grad_field->size_bytes());
        stack_backward_impl<T>(field, phases, saved, modulation, ct, *grad_phases, *grad_field,
                               hops, has_input_hop, field_grad);
    });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(OptdiffPropagate, propagate,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<ffi::Span<const double>>("hop")
                                  .Attr<int32_t>("mode"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(OptdiffStackForward, stack_forward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<ffi::Span<const double>>("hops")
                                  .Attr<bool>("has_input_hop"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(OptdiffStackForwardTrain, stack_forward_train,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<ffi::Span<const double>>("hops")
                                  .Attr<bool>("has_input_hop"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(OptdiffStackBackward, stack_backward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<ffi::Span<const double>>("hops")
                                  .Attr<bool>("has_input_hop")
                                  .Attr<bool>("field_grad"));

namespace {
template <class Fn>
py::capsule capsule(Fn* fn) {
    return py::capsule(reinterpret_cast<void*>(fn));
}
}  // namespace

PYBIND11_MODULE(_jax_ffi, m) {
    m.doc() = "XLA FFI handlers of optdiff's CPU core, registered by optdiff.jax";
#ifdef OPTDIFF_FFTW_PLANNER_LOCK
    // This module links its own copy of the static core (and of its planner mutex); FFTW's
    // process-wide lock keeps its planning safe against optdiff._core planning in another thread.
    fftw_make_planner_thread_safe();
    fftwf_make_planner_thread_safe();
#endif
    m.attr("planner_lock") = py::bool_(
#ifdef OPTDIFF_FFTW_PLANNER_LOCK
        true
#else
        false
#endif
    );
    // Its own copy of the core has its own thread setting; optdiff.jax keeps it in step.
    m.def("set_num_threads", &optdiff::set_num_threads, py::arg("n"));
    m.def("get_num_threads", &optdiff::get_num_threads);
    m.def("set_planner_effort", &optdiff::set_planner_effort, py::arg("effort"));
    py::dict targets;
    targets["optdiff_propagate"] = capsule(OptdiffPropagate);
    targets["optdiff_stack_forward"] = capsule(OptdiffStackForward);
    targets["optdiff_stack_forward_train"] = capsule(OptdiffStackForwardTrain);
    targets["optdiff_stack_backward"] = capsule(OptdiffStackBackward);
    m.def(
        "registrations", [targets]() { return targets; },
        "FFI target name -> handler capsule, for jax.ffi.register_ffi_target(platform='cpu')");
}
