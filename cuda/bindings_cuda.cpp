// pybind11 module optdiff._cuda: thin bindings of the CUDA back end.
//
// Array arguments are raw device addresses (Python ints, 0 = none) so that
// CuPy arrays, PyTorch tensors or anything exposing __cuda_array_interface__
// / DLPack are used in place, without copies; `stream` is a cudaStream_t as an
// int (0 = legacy default stream). The bindings validate (device residency,
// shapes through the C++ classes) and release the GIL; they do no maths.
// Shapes, dtypes and contiguity of Python objects are checked by
// optdiff.cuda_backend before any address reaches this module.
//
// Exceptions: CudaOutOfMemoryError (a MemoryError), CudaError (a
// RuntimeError), ValueError for invalid arguments. Nothing aborts.
//
// Built a second time as optdiff._cuda_emu with OPTDIFF_CUDA_EMULATION: the
// same code on the CPU, where "device addresses" are host addresses.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <complex>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "array_checks.hpp"  // csrc/python: shared with optdiff._core
#include "device.hpp"
#include "fft.hpp"
#include "kernels.hpp"
#include "optdiff/plan.hpp"
#include "optics.hpp"
#include "plan_cache.hpp"
#include "spec_from_python.hpp"  // csrc/python: the hop tuple, shared with optdiff._core
#include "streams.hpp"

#ifndef OPTDIFF_CUDA_MODULE
#define OPTDIFF_CUDA_MODULE _cuda
#endif
#ifndef OPTDIFF_CUDA_EMULATION
#define OPTDIFF_CUDA_EMULATION 0
#endif

namespace py = pybind11;
using namespace optdiff;
using namespace optdiff::gpu;
using optdiff::python::hop_from_python;
using optdiff::python::stack_from_python;

namespace {

using Addr = std::uintptr_t;
using Release = py::call_guard<py::gil_scoped_release>;

Stream as_stream(Addr s) { return reinterpret_cast<Stream>(s); }

// Alignment a device address of E must have. Complex values: their full
// size (8 bytes for complex64, 16 for complex128), as cuFFT's float2/double2
// transforms in place on the caller's arrays need (alignof(cplx<T>) is only
// alignof(T)).
template <class E>
struct DeviceAlignment {
    static constexpr std::size_t value = alignof(E);
};
template <class T>
struct DeviceAlignment<cplx<T>> {
    static constexpr std::size_t value = sizeof(cplx<T>);
};
template <class T>
struct DeviceAlignment<const cplx<T>> : DeviceAlignment<cplx<T>> {};

// A required device address on `device` (any address is fine for an empty batch).
template <class E>
E* required(Addr a, int device, const char* what, bool used = true) {
    if (!used) return reinterpret_cast<E*>(a);
    require_device_pointer(reinterpret_cast<const void*>(a), device, what);
    optdiff::python::require_aligned(reinterpret_cast<const void*>(a), DeviceAlignment<E>::value,
                                     what);
    return reinterpret_cast<E*>(a);
}

// An optional device address (0 = not given).
template <class E>
E* optional_ptr(Addr a, int device, const char* what, bool used = true) {
    if (a == 0) return nullptr;
    return required<E>(a, device, what, used);
}

int resolve_device(int device) { return device < 0 ? current_device() : device; }

// Device memory owned by Python (used for NumPy inputs and results that have
// no array library to live in).
class Buffer {
public:
    Buffer(int64_t nbytes, int device) {
        if (nbytes < 0) throw std::invalid_argument("nbytes must be >= 0");
        device_ = resolve_device(device);
        DeviceGuard guard(device_);
        nbytes_ = static_cast<size_t>(nbytes);
        ptr_ = device_malloc(nbytes_ ? nbytes_ : 1);  // a valid, unique address even when empty
    }
    ~Buffer() { device_free(ptr_); }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;

    Addr ptr() const { return reinterpret_cast<Addr>(ptr_); }
    size_t nbytes() const { return nbytes_; }
    int device() const { return device_; }

    void upload(const py::array& src, Addr stream) {
        const size_t bytes = contiguous_bytes(src, "source");
        const void* data = src.data();
        py::gil_scoped_release release;
        DeviceGuard guard(device_);
        copy_to_device_sync(ptr_, data, bytes, as_stream(stream));
    }

    void download(py::array& dst, Addr stream) const {
        if (!dst.writeable()) throw std::invalid_argument("destination array is read-only");
        const size_t bytes = contiguous_bytes(dst, "destination");
        void* data = dst.mutable_data();
        py::gil_scoped_release release;
        DeviceGuard guard(device_);
        copy_to_host_sync(data, ptr_, bytes, as_stream(stream));
    }

private:
    size_t contiguous_bytes(const py::array& a, const char* what) const {
        if (!(a.flags() & py::array::c_style)) {
            throw std::invalid_argument(std::string(what) + " array must be C-contiguous");
        }
        const size_t bytes = static_cast<size_t>(a.nbytes());
        if (bytes > nbytes_) {
            throw std::invalid_argument(std::string(what) + " array has " + std::to_string(bytes) +
                                        " bytes but the device buffer only " +
                                        std::to_string(nbytes_));
        }
        return bytes;
    }

    void* ptr_ = nullptr;
    size_t nbytes_ = 0;
    int device_ = 0;
};

template <class T>
py::array_t<std::complex<T>> transfer_function_array(int64_t n, const PropagationSpec& spec,
                                                     bool normalised) {
    validate(spec, n);
    const std::vector<cplx<T>> h = make_transfer_function<T>(spec, n, normalised);
    const int64_t np = padded_size(n, spec.padding);
    py::array_t<std::complex<T>> out({np, np});
    std::memcpy(static_cast<void*>(out.mutable_data()), h.data(), h.size() * sizeof(cplx<T>));
    return out;
}

// CudaPhaseStack::forward (In = cplx<T>, complex fields) and forward_real
// (In = T, real amplitudes): the same arguments and outputs.
template <class T, class In,
          void (CudaPhaseStack<T>::*Method)(const In*, const T*, int64_t, T*, cplx<T>*, cplx<T>*,
                                            Stream, bool) const>
void stack_forward(const CudaPhaseStack<T>& self, Addr input, Addr phases, int64_t batch,
                   Addr intensity, Addr saved, Addr camera_field, Addr stream,
                   bool check_intensity) {
    const int d = self.device();
    const bool used = batch > 0;
    (self.*Method)(required<const In>(input, d, "input", used),
                   required<const T>(phases, d, "phases", used), batch,
                   optional_ptr<T>(intensity, d, "intensity", used),
                   optional_ptr<cplx<T>>(saved, d, "saved", used),
                   optional_ptr<cplx<T>>(camera_field, d, "camera_field", used), as_stream(stream),
                   check_intensity);
}

template <class T>
void bind_precision(py::module_& m, const char* suffix) {
    using C = cplx<T>;
    using P = CudaPropagator<T>;
    using S = CudaPhaseStack<T>;
    const std::string prop_name = std::string("Propagator") + suffix;
    const std::string stack_name = std::string("PhaseStack") + suffix;

    py::class_<P>(m, prop_name.c_str(), py::module_local(),
                  "One free-space hop on a CUDA device (see optdiff/cuda/optics.hpp).")
        .def(py::init([](int64_t n, const py::object& hop, int device) {
                 const PropagationSpec spec = hop_from_python(hop);
                 py::gil_scoped_release release;
                 return std::make_unique<P>(n, spec, device);
             }),
             py::arg("n"), py::arg("hop"), py::arg("device") = -1,
             "hop: (wavelength, pitch, distance, method, padding, tilt_x, tilt_y), method "
             "'as' | 'bl-as' | 'fresnel'.")
        .def(
            "forward",
            [](const P& self, Addr in, Addr out, int64_t batch, Addr stream) {
                const bool used = batch > 0;
                self.forward(required<const C>(in, self.device(), "input", used),
                             required<C>(out, self.device(), "output", used), batch,
                             as_stream(stream));
            },
            py::arg("input"), py::arg("output"), py::arg("batch"), py::arg("stream") = 0, Release(),
            "out = P(tilt * in) for [batch, n, n] fields; output may equal input.")
        .def(
            "adjoint",
            [](const P& self, Addr in, Addr out, int64_t batch, Addr stream) {
                const bool used = batch > 0;
                self.adjoint(required<const C>(in, self.device(), "input", used),
                             required<C>(out, self.device(), "output", used), batch,
                             as_stream(stream));
            },
            py::arg("input"), py::arg("output"), py::arg("batch"), py::arg("stream") = 0, Release(),
            "in = conj(tilt) * P^H(out); output may equal input.")
        .def_property_readonly("n", &P::n)
        .def_property_readonly("padded_n", &P::padded_n)
        .def_property_readonly("device", &P::device);

    py::class_<S>(m, stack_name.c_str(), py::module_local(),
                  "A stack of phase layers on a CUDA device (see optdiff/cuda/optics.hpp).")
        .def(py::init(
                 [](int64_t n, const py::object& hops, const py::object& input_hop, int device) {
                     const StackSpec spec = stack_from_python(n, hops, input_hop);
                     py::gil_scoped_release release;
                     return std::make_unique<S>(spec, device);
                 }),
             py::arg("n"), py::arg("hops"), py::arg("input_hop") = py::none(),
             py::arg("device") = -1,
             "hops and input_hop: tuples (wavelength, pitch, distance, method, padding, tilt_x, "
             "tilt_y), as for optdiff._core.")
        .def("forward", &stack_forward<T, C, &S::forward>, py::arg("input"), py::arg("phases"),
             py::arg("batch"), py::arg("intensity") = 0, py::arg("saved") = 0,
             py::arg("camera_field") = 0, py::arg("stream") = 0, py::arg("check_intensity") = false,
             Release(),
             "intensity [B,n,n]; saved [B,L+1,n,n]; camera_field [B,n,n] (0 = not wanted). "
             "check_intensity: synchronise and raise ValueError when an intensity overflowed.")
        .def("forward_real", &stack_forward<T, T, &S::forward_real>, py::arg("amplitude"),
             py::arg("phases"), py::arg("batch"), py::arg("intensity") = 0, py::arg("saved") = 0,
             py::arg("camera_field") = 0, py::arg("stream") = 0, py::arg("check_intensity") = false,
             Release(),
             "forward for a real input field [B,n,n] (read as amplitude + 0i); outputs as forward.")
        .def(
            "backward",
            [](const S& self, Addr input, Addr phases, Addr saved, Addr grad_intensity,
               int64_t batch, Addr grad_phases, Addr grad_input, Addr stream, Addr grad_distances,
               Addr grad_tilts) {
                const int d = self.device();
                const bool used = batch > 0;
                // parameter gradients: host float64 buffers [L + 1] and [L + 1, 2], the input
                // hop's last (Python allocates them; 0 = not wanted)
                StackParamGrads pg;
                if (grad_distances) {
                    pg.distances = reinterpret_cast<double*>(grad_distances);
                    pg.input_distance = pg.distances + self.layers();
                }
                if (grad_tilts) {
                    pg.tilts = reinterpret_cast<double*>(grad_tilts);
                    pg.input_tilt = pg.tilts + 2 * self.layers();
                }
                self.backward(optional_ptr<const C>(input, d, "input", used || pg.any()),
                              required<const T>(phases, d, "phases"),
                              optional_ptr<const C>(saved, d, "saved", used),
                              optional_ptr<const T>(grad_intensity, d, "grad_intensity", used),
                              batch, required<T>(grad_phases, d, "grad_phases"),
                              optional_ptr<C>(grad_input, d, "grad_input", used), as_stream(stream),
                              pg.any() ? &pg : nullptr);
            },
            py::arg("input"), py::arg("phases"), py::arg("saved"), py::arg("grad_intensity"),
            py::arg("batch"), py::arg("grad_phases"), py::arg("grad_input") = 0,
            py::arg("stream") = 0, py::arg("grad_distances") = 0, py::arg("grad_tilts") = 0,
            Release(),
            "grad_phases [L,n,n] (overwritten, summed over the batch); grad_input [B,n,n] or 0; "
            "saved = 0 recomputes the forward pass (then input is required). grad_distances, "
            "grad_tilts: addresses of host float64 arrays [L+1] and [L+1,2] for the parameter "
            "gradients (the input hop's last), or 0; asking for them synchronises the stream.")
        .def(
            "mse_loss_and_grad",
            [](const S& self, Addr input, Addr phases, Addr target, int64_t batch, Addr grad_phases,
               Addr sq_sum, Addr intensity, Addr stream) {
                const int d = self.device();
                self.mse_loss_and_grad(required<const C>(input, d, "input"),
                                       required<const T>(phases, d, "phases"),
                                       required<const T>(target, d, "target"), batch,
                                       required<T>(grad_phases, d, "grad_phases"),
                                       optional_ptr<T>(intensity, d, "intensity", true),
                                       required<double>(sq_sum, d, "sq_sum"), as_stream(stream));
            },
            py::arg("input"), py::arg("phases"), py::arg("target"), py::arg("batch"),
            py::arg("grad_phases"), py::arg("sq_sum"), py::arg("intensity") = 0,
            py::arg("stream") = 0, Release(),
            "Fused intensity-MSE step: grad_phases [L,n,n] (overwritten), intensity [B,n,n] or 0, "
            "sq_sum [n,n] float64 = per-pixel sum over the batch of (I - target)^2.")
        .def_property_readonly("n", &S::n)
        .def_property_readonly("num_layers", &S::layers)
        .def_property_readonly("saved_fields_per_sample", &S::saved_fields_per_sample)
        .def_property_readonly("device", &S::device);

    const std::string bin_name = std::string("bin_readout") + suffix;
    const std::string bin_back_name = std::string("bin_readout_backward") + suffix;
    m.def(
        bin_name.c_str(),
        [](Addr in, Addr out, int64_t batch, int64_t n, int64_t h, int64_t w, int64_t k,
           Addr stream, int device) {
            const int d = resolve_device(device);
            DeviceGuard guard(d);
            const bool used = batch > 0;
            bin_readout<T>(required<const T>(in, d, "input", used),
                           required<T>(out, d, "output", used), batch, n, h, w, k,
                           as_stream(stream));
        },
        py::arg("input"), py::arg("output"), py::arg("batch"), py::arg("n"), py::arg("h"),
        py::arg("w"), py::arg("k"), py::arg("stream") = 0, py::arg("device") = -1, Release(),
        "[B,n,n] -> [B,h,w]: means of k x k blocks of the centred region.");
    m.def(
        bin_back_name.c_str(),
        [](Addr grad_out, Addr grad_in, int64_t batch, int64_t n, int64_t h, int64_t w, int64_t k,
           Addr stream, int device) {
            const int d = resolve_device(device);
            DeviceGuard guard(d);
            const bool used = batch > 0;
            bin_readout_backward<T>(required<const T>(grad_out, d, "grad_output", used),
                                    required<T>(grad_in, d, "grad_input", used), batch, n, h, w, k,
                                    as_stream(stream));
        },
        py::arg("grad_output"), py::arg("grad_input"), py::arg("batch"), py::arg("n"), py::arg("h"),
        py::arg("w"), py::arg("k"), py::arg("stream") = 0, py::arg("device") = -1, Release(),
        "Adjoint of the binning: [B,h,w] -> [B,n,n].");

    const std::string normal_name = std::string("standard_normal") + suffix;
    const std::string ddpm_name = std::string("ddpm_update") + suffix;
    m.def(
        normal_name.c_str(),
        [](Addr out, int64_t count, uint64_t seed, uint64_t stream, uint64_t offset,
           Addr cuda_stream, int device) {
            const int d = resolve_device(device);
            DeviceGuard guard(d);
            standard_normal_async<T>(required<T>(out, d, "out", count > 0), count, seed, stream,
                                     offset, as_stream(cuda_stream));
        },
        py::arg("out"), py::arg("count"), py::arg("seed"), py::arg("stream"), py::arg("offset"),
        py::arg("cuda_stream") = 0, py::arg("device") = -1, Release(),
        "out[i] = normal number offset + i of the noise stream (seed, stream), i < count; "
        "asynchronous on cuda_stream.");
    m.def(
        ddpm_name.c_str(),
        [](Addr x, Addr eps, Addr out, int64_t count, double c1, double c2, double sigma,
           double eps_scale, double eps_offset, uint64_t seed, uint64_t stream, uint64_t offset,
           Addr cuda_stream, int device) {
            const int d = resolve_device(device);
            DeviceGuard guard(d);
            const bool used = count > 0;
            DdpmStep step;
            step.c1 = c1;
            step.c2 = c2;
            step.sigma = sigma;
            step.eps_scale = eps_scale;
            step.eps_offset = eps_offset;
            ddpm_update_async<T>(required<const T>(x, d, "x", used),
                                 required<const T>(eps, d, "eps", used), count, step, seed, stream,
                                 offset, required<T>(out, d, "out", used), as_stream(cuda_stream));
        },
        py::arg("x"), py::arg("eps"), py::arg("out"), py::arg("count"), py::arg("c1"),
        py::arg("c2"), py::arg("sigma"), py::arg("eps_scale"), py::arg("eps_offset"),
        py::arg("seed"), py::arg("stream"), py::arg("offset"), py::arg("cuda_stream") = 0,
        py::arg("device") = -1, Release(),
        "out = c1 (x - c2 (eps_scale eps + eps_offset)) + sigma z, z = noise numbers offset.. of "
        "(seed, stream); out may be x or eps; sigma = 0 draws no noise.");

    const std::string finite_name = std::string("all_finite") + suffix;
    m.def(
        finite_name.c_str(),
        [](Addr data, int64_t count, Addr stream, int device, const std::string& name) {
            const int d = resolve_device(device);
            DeviceGuard guard(d);
            if (count < 0) throw std::invalid_argument("count must be >= 0");
            if (count == 0) return true;
            return all_finite<T>(required<const T>(data, d, name.c_str()), count,
                                 as_stream(stream));
        },
        py::arg("data"), py::arg("count"), py::arg("stream") = 0, py::arg("device") = -1,
        py::arg("name") = "data", Release(),
        "True when all `count` real values are finite (synchronises the stream); `name`: the "
        "argument the errors name.");
}

}  // namespace

PYBIND11_MODULE(OPTDIFF_CUDA_MODULE, m) {
    m.doc() = "optdiff CUDA back end (cuFFT + kernels); use optdiff.cuda_backend instead.";

    // Module-local translators (another module may bind the same C++ types);
    // they run newest first, so the more specific class is registered last.
    py::register_local_exception<CudaError>(m, "CudaError", PyExc_RuntimeError);
    py::register_local_exception<CudaOutOfMemory>(m, "CudaOutOfMemoryError", PyExc_MemoryError);

    m.attr("EMULATION") = py::bool_(OPTDIFF_CUDA_EMULATION != 0);

    m.def("device_count", &device_count,
          "Number of usable CUDA devices; 0 (never an error) when "
          "there is no driver or device.");
    m.def("no_device_reason", &no_device_reason, "Why device_count() is 0 ('' otherwise).");
    m.def("current_device", &current_device);
    m.def("device_name", &device_name, py::arg("device"));
    m.def("runtime_version", &runtime_version);
    m.def("driver_version", &driver_version);
    m.def("cufft_version", &fft_library_version);
    m.def(
        "pointer_device", [](Addr p) { return pointer_device(reinterpret_cast<const void*>(p)); },
        py::arg("ptr"), "Device of a device/managed address, -1 for host memory.");
    m.def(
        "synchronize",
        [](Addr stream, int device) {
            DeviceGuard guard(resolve_device(device));
            synchronize(as_stream(stream));
        },
        py::arg("stream") = 0, py::arg("device") = -1, Release());
    m.def("set_workspace_limit", &set_workspace_limit, py::arg("nbytes"),
          "Scratch budget of one call in bytes (default 1 GiB); larger batches run in chunks.");
    m.def("get_workspace_limit", &get_workspace_limit);
    m.def("clear_plan_cache", &clear_fft_plan_cache, Release());
    m.def("plan_cache_size", &fft_plan_cache_size);
    m.def(
        "plan_cache_stats",
        [] {
            const PlanCacheStats st = fft_plan_cache_stats();
            py::dict d;
            d["cached"] = st.cached;
            d["retired"] = st.retired;
            d["destroyed"] = st.destroyed;
            return d;
        },
        "FFT plans cached, retired (evicted, waiting for their work) and destroyed so far.");
    m.def(
        "stream_identity",
        [](Addr stream) {
            const StreamIdentity id = stream_identity(as_stream(stream));
            return py::make_tuple(id.first, id.second);
        },
        py::arg("stream"),
        "The stream part of the FFT plan cache's key in the calling thread: (handle, thread), "
        "thread 0 unless the handle is the per-thread default stream (2).");
    m.def(
        "stream_wait",
        [](Addr waiter, Addr producer, int device) {
            DeviceGuard guard(resolve_device(device));
            stream_wait(as_stream(waiter), as_stream(producer));
        },
        py::arg("waiter"), py::arg("producer"), py::arg("device") = -1, Release(),
        "Work queued on `waiter` from now on runs after the work queued on `producer` so far "
        "(event record + cudaStreamWaitEvent; the host does not wait).");
    m.def(
        "trim_memory_pool",
        [](int device) {
            DeviceGuard guard(resolve_device(device));
            trim_workspace_pool();
        },
        py::arg("device") = -1, Release(), "Return cached scratch memory to the driver.");

    m.def(
        "validate_hop", [](int64_t n, const py::object& hop) { validate(hop_from_python(hop), n); },
        py::arg("n"), py::arg("hop"),
        "Raises ValueError naming the bad parameter (no device needed).");
    m.def(
        "validate_stack",
        [](int64_t n, const py::object& hops, const py::object& input_hop) {
            stack_from_python(n, hops, input_hop);
        },
        py::arg("n"), py::arg("hops"), py::arg("input_hop") = py::none(),
        "The checks (and messages) of a stack's constructor, here and in optdiff._core, without a "
        "device.");
    m.def(
        "memcpy",
        [](Addr dst, Addr src, int64_t nbytes, Addr stream, int device) {
            if (nbytes < 0) throw std::invalid_argument("nbytes must be >= 0");
            if (nbytes == 0) return;
            const int d = resolve_device(device);
            DeviceGuard guard(d);
            copy_async(reinterpret_cast<void*>(required<char>(dst, d, "destination")),
                       required<const char>(src, d, "source"), static_cast<size_t>(nbytes),
                       as_stream(stream));
        },
        py::arg("dst"), py::arg("src"), py::arg("nbytes"), py::arg("stream") = 0,
        py::arg("device") = -1, Release(), "Asynchronous device-to-device copy on `stream`.");
    m.def(
        "transfer_function",
        [](int64_t n, const py::object& hop, bool double_precision, bool normalised) -> py::array {
            const PropagationSpec s = hop_from_python(hop);  // the tilt plays no part here
            if (double_precision) return transfer_function_array<double>(n, s, normalised);
            return transfer_function_array<float>(n, s, normalised);
        },
        py::arg("n"), py::arg("hop"), py::arg("double_precision") = true,
        py::arg("normalised") = false,
        "Host copy of the transfer function [n*padding]^2 in FFT order (shared planner).");

    py::class_<Buffer>(m, "DeviceBuffer", py::module_local(),
                       "Device memory owned by Python (cudaMalloc).")
        .def(py::init<int64_t, int>(), py::arg("nbytes"), py::arg("device") = -1)
        .def_property_readonly("ptr", &Buffer::ptr)
        .def_property_readonly("nbytes", &Buffer::nbytes)
        .def_property_readonly("device", &Buffer::device)
        .def("upload", &Buffer::upload, py::arg("source"), py::arg("stream") = 0,
             "Copy a C-contiguous host array into the buffer; returns when done.")
        .def("download", &Buffer::download, py::arg("destination"), py::arg("stream") = 0,
             "Copy the buffer into a C-contiguous host array; returns when done.");

    bind_precision<float>(m, "32");
    bind_precision<double>(m, "64");
}
