// A free-space hop as Python passes it to both compiled modules
// (optdiff._core from csrc/python/bindings.cpp, optdiff._cuda from
// cuda/bindings_cuda.cpp): the plain tuple
//
//     (wavelength, pitch, distance, method, padding, tilt_x, tilt_y)
//
// with method 'as' | 'bl-as' | 'fresnel' and padding 1 | 2. Converted here
// only; the checks and their messages are the planner's (optdiff::validate,
// plan.hpp), so a wrong value raises the same ValueError from either module.
// Needs the GIL (it reads Python objects).
#pragma once

#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "optdiff/plan.hpp"

namespace optdiff {
namespace python {

namespace py = pybind11;

inline std::string repr_of(py::handle o) { return py::repr(o).cast<std::string>(); }

// A real number (int, float, NumPy scalar); anything else names `what`.
inline double hop_number(py::handle o, const char* what) {
    const double v = PyFloat_AsDouble(o.ptr());
    if (v == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        throw std::invalid_argument(std::string(what) + " must be a real number, got " +
                                    repr_of(o));
    }
    return v;
}

// 1 or 2 as an integer; not a bool (True would silently mean padding 1).
inline int hop_padding(py::handle o) {
    Py_ssize_t v = 0;
    if (!PyBool_Check(o.ptr()) && PyIndex_Check(o.ptr())) {
        v = PyNumber_AsSsize_t(o.ptr(), nullptr);
        if (v == -1 && PyErr_Occurred()) PyErr_Clear();
    }
    if (v != 1 && v != 2) throw std::invalid_argument(padding_error(repr_of(o)));
    return static_cast<int>(v);
}

inline Method hop_method(py::handle o) {
    if (!PyUnicode_Check(o.ptr())) throw std::invalid_argument(method_error(repr_of(o)));
    return parse_method(o.cast<std::string>());
}

// The tuple (or list) of seven values -> PropagationSpec. Not validated:
// validate() / validate_stack() or the constructors do that.
inline PropagationSpec hop_from_python(py::handle hop) {
    if (!(PyTuple_Check(hop.ptr()) || PyList_Check(hop.ptr())) || py::len(hop) != 7)
        throw std::invalid_argument(
            "a hop must be a tuple (wavelength, pitch, distance, method, padding, tilt_x, tilt_y), "
            "got " +
            repr_of(hop));
    const py::sequence t = py::reinterpret_borrow<py::sequence>(hop);
    PropagationSpec s;
    s.wavelength = hop_number(t[0], "wavelength");
    s.pitch = hop_number(t[1], "pitch");
    s.distance = hop_number(t[2], "distance");
    s.method = hop_method(t[3]);
    s.padding = hop_padding(t[4]);
    s.tilt_x = hop_number(t[5], "tilt_x");
    s.tilt_y = hop_number(t[6], "tilt_y");
    return s;
}

inline py::tuple hop_to_python(const PropagationSpec& s) {
    return py::make_tuple(s.wavelength, s.pitch, s.distance, method_name(s.method), s.padding,
                          s.tilt_x, s.tilt_y);
}

// n, a sequence of hops (one per layer) and an optional input hop (None) ->
// StackSpec, validated (validate_stack: the same messages on both back ends).
inline StackSpec stack_from_python(int64_t n, py::handle hops, py::handle input_hop) {
    if (!(PyTuple_Check(hops.ptr()) || PyList_Check(hops.ptr())))
        throw std::invalid_argument("hops must be a list of hop tuples, got " + repr_of(hops));
    StackSpec spec;
    spec.n = n;
    size_t l = 0;
    for (py::handle h : hops) {
        try {
            spec.hops.push_back(hop_from_python(h));
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument("layer " + std::to_string(l) + ": " + e.what());
        }
        ++l;
    }
    if (!input_hop.is_none()) {
        try {
            spec.input_hop = hop_from_python(input_hop);
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument(std::string("input hop: ") + e.what());
        }
        spec.has_input_hop = true;
    }
    validate_stack(spec);
    return spec;
}

}  // namespace python
}  // namespace optdiff
