#include "optdiff/plan.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

namespace optdiff {

namespace {
void require(bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument(what);
}
}  // namespace

std::string method_error(const std::string& got) {
    return "method must be 'as' (angular spectrum), 'bl-as' (band-limited angular spectrum) or 'fresnel', got " +
           got;
}

Method parse_method(const std::string& m) {
    if (m == "as" || m == "angular_spectrum") return Method::AngularSpectrum;
    if (m == "bl-as" || m == "band_limited") return Method::BandLimitedAS;
    if (m == "fresnel") return Method::Fresnel;
    throw std::invalid_argument(method_error("'" + m + "'"));
}

const char* method_name(Method m) {
    switch (m) {
        case Method::BandLimitedAS: return "bl-as";
        case Method::Fresnel: return "fresnel";
        default: return "as";
    }
}

std::string padding_error(const std::string& got) {
    return "padding must be 1 (periodic) or 2 (linear convolution), got " + got;
}

void validate_grid_size(int64_t n) {
    require(n >= 2 && n <= 16384,
            "n must be between 2 and 16384 pixels per side, got " + std::to_string(n));
}

void validate(const PropagationSpec& s, int64_t n) {
    validate_grid_size(n);
    require(std::isfinite(s.wavelength) && s.wavelength > 0.0,
            "wavelength must be a finite positive number of metres (e.g. 850e-9)");
    require(std::isfinite(s.pitch) && s.pitch > 0.0,
            "pitch must be a finite positive number of metres (e.g. 9.2e-6)");
    require(std::isfinite(s.distance), "distance must be a finite number of metres");
    require(s.padding == 1 || s.padding == 2, padding_error(std::to_string(s.padding)));
    require(s.method == Method::AngularSpectrum || s.method == Method::BandLimitedAS ||
                s.method == Method::Fresnel,
            method_error(std::to_string(static_cast<int>(s.method))));
    require(std::isfinite(s.tilt_x) && std::isfinite(s.tilt_y) && std::fabs(s.tilt_x) < 1.5707963 &&
                std::fabs(s.tilt_y) < 1.5707963,
            "tilt angles must be finite and below pi/2 in magnitude [rad]");
}

void validate_stack(const StackSpec& s) {
    validate_grid_size(s.n);
    require(!s.hops.empty(), "a phase stack needs at least one layer (distances must not be empty)");
    for (size_t l = 0; l < s.hops.size(); ++l) {
        try {
            validate(s.hops[l], s.n);
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument("layer " + std::to_string(l) + ": " + e.what());
        }
    }
    if (s.has_input_hop) {
        try {
            validate(s.input_hop, s.n);
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument(std::string("input hop: ") + e.what());
        }
    }
}

template <class T>
std::vector<cplx<T>> make_transfer_function(const PropagationSpec& s, int64_t n,
                                            bool normalised) {
    const int64_t np = padded_size(n, s.padding);
    const double scale = normalised ? 1.0 / (static_cast<double>(np) * static_cast<double>(np)) : 1.0;
    std::vector<cplx<T>> h(static_cast<size_t>(np * np));
    for (int64_t r = 0; r < np; ++r)
        for (int64_t c = 0; c < np; ++c)
            h[static_cast<size_t>(r * np + c)] = transfer_function_value<T>(
                r, c, np, s.pitch, s.wavelength, s.distance, s.method, scale);
    return h;
}

template <class T>
std::vector<cplx<T>> make_tilt(const PropagationSpec& s, int64_t n) {
    std::vector<cplx<T>> t(static_cast<size_t>(n * n));
    for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < n; ++c)
            t[static_cast<size_t>(r * n + c)] =
                tilt_value<T>(r, c, n, s.pitch, s.wavelength, s.tilt_x, s.tilt_y);
    return t;
}

template std::vector<cplx<float>> make_transfer_function<float>(const PropagationSpec&, int64_t, bool);
template std::vector<cplx<double>> make_transfer_function<double>(const PropagationSpec&, int64_t, bool);
template std::vector<cplx<float>> make_tilt<float>(const PropagationSpec&, int64_t);
template std::vector<cplx<double>> make_tilt<double>(const PropagationSpec&, int64_t);

}  // namespace optdiff
