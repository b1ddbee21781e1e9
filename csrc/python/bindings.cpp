// pybind11 bindings of the CPU core (module optdiff._core).
// Thin by design: check arrays, take views without copies, release the GIL,
// call the core. Physics lives in csrc/; friendly defaults in python/optdiff.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <complex>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "array_checks.hpp"
#include "optdiff/optdiff.hpp"
#include "spec_from_python.hpp"

namespace py = pybind11;
using namespace optdiff;
using optdiff::python::hop_from_python;
using optdiff::python::hop_to_python;
using optdiff::python::stack_from_python;

namespace {

std::string shape_str(const py::array& a) {
    std::ostringstream o;
    o << "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) o << (i ? ", " : "") << a.shape(i);
    o << (a.ndim() == 1 ? ",)" : ")");
    return o.str();
}

[[noreturn]] void type_error(const std::string& m) { throw py::type_error(m); }
[[noreturn]] void value_error(const std::string& m) { throw py::value_error(m); }

template <class S>
std::string dtype_name() {
    return py::str(py::dtype::of<S>()).cast<std::string>();
}

// Checks dtype and C-contiguity; returns the array unchanged (never a copy).
template <class S>
void check_basic(const py::array& a, const char* name, bool writeable) {
    if (!a.dtype().is(py::dtype::of<S>()))
        type_error(std::string(name) + " must have dtype " + dtype_name<S>() + ", got " +
                   py::str(a.dtype()).cast<std::string>() + " (convert with .astype(np." +
                   dtype_name<S>() + ") first)");
    if (!(a.flags() & py::array::c_style))
        value_error(std::string(name) + " must be C-contiguous; pass np.ascontiguousarray(" + name +
                    ") (optdiff never copies silently)");
    if (writeable && !a.writeable()) value_error(std::string(name) + " must be writeable");
    optdiff::python::require_aligned(a.data(), alignof(S), name);
}

// A field batch [B, n, n] or a single [n, n]; returns B.
template <class S>
int64_t check_batch(const py::array& a, const char* name, int64_t n, bool writeable) {
    check_basic<S>(a, name, writeable);
    if (a.ndim() != 2 && a.ndim() != 3)
        value_error(std::string(name) +
                    " must have shape [B, n, n] or [n, n] with n = " + std::to_string(n) +
                    ", got rank " + std::to_string(a.ndim()) + " shape " + shape_str(a));
    const py::ssize_t r = a.ndim();
    if (a.shape(r - 1) != n || a.shape(r - 2) != n)
        value_error(std::string(name) + " must end in (" + std::to_string(n) + ", " +
                    std::to_string(n) + ") to match the propagator's n, got shape " + shape_str(a));
    const int64_t b = r == 3 ? a.shape(0) : 1;
    if (b == 0)
        value_error(std::string(name) + " has a batch of 0 samples; pass at least one field");
    return b;
}

template <class S>
void check_same_shape(const py::array& a, const char* name, const py::array& ref,
                      const char* refname) {
    bool same = a.ndim() == ref.ndim();
    for (py::ssize_t i = 0; same && i < a.ndim(); ++i) same = a.shape(i) == ref.shape(i);
    if (!same)
        value_error(std::string(name) + " must have the shape of " + refname + " " +
                    shape_str(ref) + ", got " + shape_str(a));
}

template <class R>
void check_finite(const py::array& a, const char* name) {
    const auto* p = static_cast<const R*>(a.data());
    const int64_t count =
        static_cast<int64_t>(a.size()) * static_cast<int64_t>(a.itemsize() / sizeof(R));
    bool ok;
    {
        py::gil_scoped_release nogil;
        ok = all_finite(p, count);
    }
    if (!ok) value_error(std::string(name) + " contains NaN or infinite values");
}

// Finite inputs can still give gradients beyond the float range (a huge field or
// grad_intensity): one pass over the L*n*n (or B*n*n) result, not over the batch's inputs.
void check_gradient_finite(const py::array& g) {
    const bool f32 =
        g.dtype().is(py::dtype::of<std::complex<float>>()) || g.dtype().is(py::dtype::of<float>());
    const int64_t count = static_cast<int64_t>(g.nbytes()) / (f32 ? 4 : 8);
    const bool ok = f32 ? all_finite(static_cast<const float*>(g.data()), count)
                        : all_finite(static_cast<const double*>(g.data()), count);
    if (!ok)
        value_error(std::string("the gradients overflow ") + (f32 ? "float32" : "float64") +
                    ": field or grad_intensity too large (scale them down)");
}

// Partial overlap would corrupt results; identical buffers mean "in place" unless
// `allow_same` is false (an output that must not replace an input read throughout).
void check_overlap(const py::array& a, const py::array& b, const char* an, const char* bn,
                   bool allow_same = true) {
    const char* a0 = static_cast<const char*>(a.data());
    const char* b0 = static_cast<const char*>(b.data());
    const char* a1 = a0 + a.nbytes();
    const char* b1 = b0 + b.nbytes();
    if (allow_same && a0 == b0 && a1 == b1) return;
    if (a0 < b1 && b0 < a1)
        value_error(std::string(an) + " and " + bn + " overlap in memory" +
                    (allow_same ? " without being the same array" : ""));
}

template <class T>
void run_propagator(const Propagator<T>& p, const py::array& x, py::array& out, int nthreads,
                    bool adjoint) {
    using C = std::complex<T>;
    const int64_t b = check_batch<C>(x, "field", p.n(), false);
    check_batch<C>(out, "out", p.n(), true);
    check_same_shape<C>(out, "out", x, "field");
    check_overlap(x, out, "field", "out");
    check_finite<T>(x, "field");
    const auto* in = static_cast<const cplx<T>*>(x.data());
    auto* o = static_cast<cplx<T>*>(out.mutable_data());
    py::gil_scoped_release nogil;
    if (adjoint)
        p.adjoint(in, o, b, nthreads);
    else
        p.forward(in, o, b, nthreads);
}

template <class T>
void bind_propagator(py::module_& m, const char* name) {
    using C = std::complex<T>;
    py::class_<Propagator<T>>(m, name)
        .def(py::init([](int64_t n, const py::object& hop) {
                 const PropagationSpec s = hop_from_python(hop);
                 py::gil_scoped_release nogil;  // planning may time FFTs
                 return new Propagator<T>(n, s);
             }),
             py::arg("n"), py::arg("hop"))
        .def_property_readonly("n", &Propagator<T>::n)
        .def_property_readonly("spec",
                               [](const Propagator<T>& p) { return hop_to_python(p.spec()); })
        .def(
            "forward",
            [](const Propagator<T>& p, const py::array& x, py::array& out, int nthreads) {
                run_propagator(p, x, out, nthreads, false);
            },
            py::arg("field"), py::arg("out"), py::arg("nthreads") = 0)
        .def(
            "adjoint",
            [](const Propagator<T>& p, const py::array& x, py::array& out, int nthreads) {
                run_propagator(p, x, out, nthreads, true);
            },
            py::arg("field"), py::arg("out"), py::arg("nthreads") = 0)
        .def("transfer_function", [](const Propagator<T>& p) {
            std::vector<cplx<T>> h;
            {
                py::gil_scoped_release nogil;
                h = p.transfer_function();
            }
            const int64_t np_ = p.n() * p.spec().padding;
            py::array_t<C> a({np_, np_});
            std::memcpy(static_cast<void*>(a.mutable_data()), static_cast<const void*>(h.data()),
                        h.size() * sizeof(C));
            return a;
        });
}

template <class T>
void check_phases(const py::array& ph, int64_t n, int64_t L) {
    check_basic<T>(ph, "phases", false);
    if (ph.ndim() != 3 || ph.shape(0) != L || ph.shape(1) != n || ph.shape(2) != n)
        value_error("phases must have shape (L, n, n) = (" + std::to_string(L) + ", " +
                    std::to_string(n) + ", " + std::to_string(n) + "), got " + shape_str(ph));
    check_finite<T>(ph, "phases");
}

// The [L, n, n] table exp(i phi) * tilt written by forward and read by backward.
template <class T>
cplx<T>* modulation_table(py::array& a, int64_t n, int64_t L, bool writeable) {
    check_basic<std::complex<T>>(a, "modulation", writeable);
    if (a.ndim() != 3 || a.shape(0) != L || a.shape(1) != n || a.shape(2) != n)
        value_error("modulation must have shape (L, n, n) = (" + std::to_string(L) + ", " +
                    std::to_string(n) + ", " + std::to_string(n) + "), got " + shape_str(a));
    return static_cast<cplx<T>*>(a.mutable_data());
}

template <class T>
void bind_stack(py::module_& m, const char* name) {
    using C = std::complex<T>;
    using S = PhaseStack<T>;
    py::class_<S>(m, name)
        .def(py::init([](int64_t n, const py::object& hops, const py::object& input_hop) {
                 const StackSpec s = stack_from_python(n, hops, input_hop);
                 py::gil_scoped_release nogil;
                 return new S(s);
             }),
             py::arg("n"), py::arg("hops"), py::arg("input_hop") = py::none())
        .def_property_readonly("n", &S::n)
        .def_property_readonly("num_layers", &S::layers)
        .def(
            "forward",
            [](const S& s, const py::array& x, const py::array& ph, py::array& inten,
               std::optional<py::array> saved, std::optional<py::array> camera, int nthreads,
               std::optional<py::array> modulation) {
                const int64_t n = s.n(), L = s.layers();
                // A real field (an amplitude-encoded image) is read as is, no complex copy.
                const bool real = x.dtype().is(py::dtype::of<T>());
                const int64_t b = real ? check_batch<T>(x, "field", n, false)
                                       : check_batch<C>(x, "field", n, false);
                check_phases<T>(ph, n, L);
                // `out` of PhaseStack.forward (forward_train and camera_field pass their own).
                check_batch<T>(inten, "out", n, true);
                check_same_shape<T>(inten, "out", x, "field");
                check_overlap(x, inten, "field", "out");
                check_overlap(ph, inten, "phases", "out", false);
                cplx<T>* sp = nullptr;
                if (saved) {
                    check_basic<C>(*saved, "saved", true);
                    if (saved->size() != b * (L + 1) * n * n)
                        value_error("saved must hold B*(L+1)*n*n values");
                    sp = static_cast<cplx<T>*>(saved->mutable_data());
                }
                cplx<T>* cp = nullptr;
                if (camera) {
                    check_batch<C>(*camera, "camera_field", n, true);
                    check_same_shape<C>(*camera, "camera_field", x, "field");
                    check_overlap(x, *camera, "field", "camera_field");
                    cp = static_cast<cplx<T>*>(camera->mutable_data());
                }
                cplx<T>* mp = modulation ? modulation_table<T>(*modulation, n, L, true) : nullptr;
                check_finite<T>(x, "field");
                py::gil_scoped_release nogil;
                if (real)
                    s.forward_real(static_cast<const T*>(x.data()),
                                   static_cast<const T*>(ph.data()), b,
                                   static_cast<T*>(inten.mutable_data()), sp, cp, nthreads, mp);
                else
                    s.forward(static_cast<const cplx<T>*>(x.data()),
                              static_cast<const T*>(ph.data()), b,
                              static_cast<T*>(inten.mutable_data()), sp, cp, nthreads, mp);
            },
            py::arg("field"), py::arg("phases"), py::arg("intensity"),
            py::arg("saved") = py::none(), py::arg("camera_field") = py::none(),
            py::arg("nthreads") = 0, py::arg("modulation") = py::none())
        .def(
            "backward",
            [](const S& s, const py::array& x, const py::array& ph, std::optional<py::array> saved,
               const py::array& g, py::array& gph, std::optional<py::array> gx, int nthreads,
               std::optional<py::array> modulation, std::optional<py::array> gdist,
               std::optional<py::array> gtilt) {
                const int64_t n = s.n(), L = s.layers();
                const int64_t b = check_batch<C>(x, "field", n, false);
                check_phases<T>(ph, n, L);
                check_batch<T>(g, "grad_intensity", n, false);
                check_same_shape<T>(g, "grad_intensity", x, "field");
                check_finite<T>(g, "grad_intensity");
                check_basic<T>(gph, "grad_phases", true);
                if (gph.size() != L * n * n) value_error("grad_phases must have shape (L, n, n)");
                const cplx<T>* sp = nullptr;
                if (saved) {
                    check_basic<C>(*saved, "saved", false);
                    if (saved->size() != b * (L + 1) * n * n)
                        value_error("saved must hold B*(L+1)*n*n values");
                    sp = static_cast<const cplx<T>*>(saved->data());
                }
                cplx<T>* gp = nullptr;
                if (gx) {
                    check_batch<C>(*gx, "grad_field", n, true);
                    check_same_shape<C>(*gx, "grad_field", x, "field");
                    gp = static_cast<cplx<T>*>(gx->mutable_data());
                }
                const cplx<T>* mp =
                    modulation ? modulation_table<T>(*modulation, n, L, false) : nullptr;
                // Parameter gradients (float64): distances [L + 1] and tilts [L + 1, 2], the
                // input hop's last.
                StackParamGrads pg;
                if (gdist) {
                    check_basic<double>(*gdist, "grad_distances", true);
                    if (gdist->ndim() != 1 || gdist->shape(0) != L + 1)
                        value_error("grad_distances must have shape (L + 1,)");
                    pg.distances = static_cast<double*>(gdist->mutable_data());
                    pg.input_distance = pg.distances + L;
                }
                if (gtilt) {
                    check_basic<double>(*gtilt, "grad_tilts", true);
                    if (gtilt->ndim() != 2 || gtilt->shape(0) != L + 1 || gtilt->shape(1) != 2)
                        value_error("grad_tilts must have shape (L + 1, 2)");
                    pg.tilts = static_cast<double*>(gtilt->mutable_data());
                    pg.input_tilt = pg.tilts + 2 * L;
                }
                {
                    py::gil_scoped_release nogil;
                    s.backward(
                        static_cast<const cplx<T>*>(x.data()), static_cast<const T*>(ph.data()), sp,
                        static_cast<const T*>(g.data()), b, static_cast<T*>(gph.mutable_data()), gp,
                        nthreads, mp, pg.any() ? &pg : nullptr);
                }
                check_gradient_finite(gph);
                if (gx) check_gradient_finite(*gx);
            },
            py::arg("field"), py::arg("phases"), py::arg("saved"), py::arg("grad_intensity"),
            py::arg("grad_phases"), py::arg("grad_field") = py::none(), py::arg("nthreads") = 0,
            py::arg("modulation") = py::none(), py::arg("grad_distances") = py::none(),
            py::arg("grad_tilts") = py::none())
        .def(
            "mse_loss_and_grad",
            [](const S& s, const py::array& x, const py::array& ph, const py::array& target,
               py::array& gph, std::optional<py::array> inten, int nthreads) {
                const int64_t n = s.n(), L = s.layers();
                const int64_t b = check_batch<C>(x, "field", n, false);
                check_phases<T>(ph, n, L);
                check_batch<T>(target, "target", n, false);
                check_same_shape<T>(target, "target", x, "field");
                check_basic<T>(gph, "grad_phases", true);
                if (gph.size() != L * n * n) value_error("grad_phases must have shape (L, n, n)");
                T* ip = nullptr;
                if (inten) {
                    check_batch<T>(*inten, "intensity", n, true);
                    if (inten->size() != x.size())
                        value_error("intensity must have the field's shape " + shape_str(x));
                    check_overlap(target, *inten, "target", "intensity");
                    check_overlap(x, *inten, "field", "intensity");
                    ip = static_cast<T*>(inten->mutable_data());
                }
                double loss;
                {
                    py::gil_scoped_release nogil;
                    loss = s.mse_loss_and_grad(static_cast<const cplx<T>*>(x.data()),
                                               static_cast<const T*>(ph.data()),
                                               static_cast<const T*>(target.data()), b,
                                               static_cast<T*>(gph.mutable_data()), ip, nthreads);
                }
                // Any NaN or infinity in field or target reaches the loss: one test
                // here instead of two passes over the inputs before the work.
                if (!std::isfinite(loss))
                    value_error(
                        "the loss is not finite: field or target contains NaN or infinite values, "
                        "or "
                        "the intensity overflows " +
                        std::string(sizeof(T) == 4 ? "float32" : "float64") +
                        " (scale the field down)");
                check_gradient_finite(gph);
                return loss;
            },
            py::arg("field"), py::arg("phases"), py::arg("target"), py::arg("grad_phases"),
            py::arg("intensity") = py::none(), py::arg("nthreads") = 0);
}

// Noise and the DDPM update over float32 or float64 arrays (the core's
// sampler.hpp), any shape, C-contiguous.
template <class T>
void normal_into(py::array& out, uint64_t seed, uint64_t stream, uint64_t offset, int nthreads) {
    check_basic<T>(out, "out", true);
    py::gil_scoped_release nogil;
    standard_normal<T>(static_cast<T*>(out.mutable_data()), static_cast<int64_t>(out.size()), seed,
                       stream, offset, nthreads);
}

template <class T>
void ddpm_update_into(const py::array& x, const py::array& v, py::array& out, const DdpmStep& st,
                      uint64_t seed, uint64_t stream, uint64_t offset, int nthreads) {
    check_basic<T>(x, "x", false);
    check_basic<T>(v, "eps", false);
    check_basic<T>(out, "out", true);
    if (v.size() != x.size() || out.size() != x.size())
        value_error("x, eps and out must have the same number of elements, got shapes " +
                    shape_str(x) + ", " + shape_str(v) + " and " + shape_str(out));
    check_overlap(x, out, "x", "out");
    check_overlap(v, out, "eps", "out");
    const int64_t count = static_cast<int64_t>(x.size());
    bool ok;
    {
        py::gil_scoped_release nogil;
        ddpm_update<T>(static_cast<const T*>(x.data()), static_cast<const T*>(v.data()), count, st,
                       seed, stream, offset, static_cast<T*>(out.mutable_data()), nthreads);
        // NaN/Inf in x or eps reaches out: one read of the result instead of two of the inputs.
        ok = all_finite(static_cast<const T*>(out.data()), count);
    }
    if (ok) return;
    const bool in_place = out.data() == x.data() || out.data() == v.data();
    if (!in_place) {
        check_finite<T>(x, "x");
        check_finite<T>(v, "eps");
    }
    value_error(std::string(in_place ? "x or eps contains NaN or infinite values, or " : "") +
                "the update overflows " + (sizeof(T) == 4 ? "float32" : "float64") +
                " (c1, c2, sigma, eps_scale, eps_offset or the values too large); out holds the "
                "non-finite result");
}

bool is_float64(const py::array& a) { return a.dtype().is(py::dtype::of<double>()); }

void bind_sampler(py::module_& m) {
    m.def(
        "standard_normal",
        [](py::array& out, uint64_t seed, uint64_t stream, uint64_t offset, int nthreads) {
            if (is_float64(out))
                normal_into<double>(out, seed, stream, offset, nthreads);
            else
                normal_into<float>(out, seed, stream, offset, nthreads);
        },
        py::arg("out"), py::arg("seed"), py::arg("stream"), py::arg("offset"),
        py::arg("nthreads") = 0);
    m.def(
        "ddpm_update",
        [](const py::array& x, const py::array& v, py::array& out, double c1, double c2,
           double sigma, double eps_scale, double eps_offset, uint64_t seed, uint64_t stream,
           uint64_t offset, int nthreads) {
            const DdpmStep st{c1, c2, sigma, eps_scale, eps_offset};
            if (is_float64(x))
                ddpm_update_into<double>(x, v, out, st, seed, stream, offset, nthreads);
            else
                ddpm_update_into<float>(x, v, out, st, seed, stream, offset, nthreads);
        },
        py::arg("x"), py::arg("eps"), py::arg("out"), py::arg("c1"), py::arg("c2"),
        py::arg("sigma"), py::arg("eps_scale"), py::arg("eps_offset"), py::arg("seed"),
        py::arg("stream"), py::arg("offset"), py::arg("nthreads") = 0);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() =
        "optdiff CPU core: batched free-space propagation and phase stacks with exact adjoints "
        "(FFTW3)";

    bind_propagator<float>(m, "Propagator32");
    bind_propagator<double>(m, "Propagator64");
    bind_stack<float>(m, "PhaseStack32");
    bind_stack<double>(m, "PhaseStack64");
    bind_sampler(m);

    m.def("set_num_threads", &set_num_threads, py::arg("n"));
    m.def("get_num_threads", &get_num_threads);
    m.def("set_planner_effort", &set_planner_effort, py::arg("effort"));
    m.def("get_planner_effort", &get_planner_effort);
    m.def("_set_periodic_path", &set_periodic_path, py::arg("path"),
          "Testing hook: 0 auto, 1 FFTW 2-D (resident), 2 blocked, for padding-1 plans made from "
          "now on.");
    m.def("_get_periodic_path", &get_periodic_path);
#ifdef OPTDIFF_HAVE_OPENMP
    m.attr("has_openmp") = true;
#else
    m.attr("has_openmp") = false;
#endif
}
