#include "optdiff/plan.hpp"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>

namespace optdiff {

namespace {
void require(bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument(what);
}
}  // namespace

std::string method_error(const std::string& got) {
    return "method must be 'as' (angular spectrum), 'bl-as' (band-limited angular spectrum) or "
           "'fresnel', got " +
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

namespace {
std::string num(double v) {
    std::ostringstream o;
    o << std::setprecision(3) << v;
    return o.str();
}

// Finite but absurd parameters (a distance of 1e300 m, a wavelength of
// 1e308 m, a pitch of 5e-324 m) would overflow the quantities that
// physics.hpp computes from them and fill the field with NaN. Each bound
// below is the largest intermediate of transfer_function_value / tilt_value,
// evaluated in the same order.
void validate_derived(const PropagationSpec& s, int64_t n) {
    constexpr double two_pi = 6.283185307179586476925286766559;
    constexpr double pi = 3.1415926535897932384626433832795;
    const double k = two_pi / s.wavelength;
    const double k2 = k * k;  // the angular spectrum compares kx^2 + ky^2 with it
    require(std::isnormal(k2),
            "wavelength " + num(s.wavelength) +
                " m is out of range: the wavenumber 2 pi / wavelength squares to " + num(k2) +
                "; wavelengths are in metres (e.g. 850e-9)");
    const double np = static_cast<double>(padded_size(n, s.padding));
    const double df = 1.0 / (np * s.pitch);                     // frequency step of the padded grid
    const double f2 = 2.0 * (0.5 / s.pitch) * (0.5 / s.pitch);  // fx^2 + fy^2 at the grid's corner
    require(std::isnormal(df) && std::isfinite(f2),
            "pitch " + num(s.pitch) +
                " m is out of range: the frequency step 1 / (n * padding * pitch) is " + num(df) +
                " and the largest squared frequency " + num(f2) +
                "; pitches are in metres (e.g. 9.2e-6)");
    // The largest phase intermediates: dz * (kx^2 + ky^2) with kx^2 + ky^2 < k^2 for the
    // propagating waves (angular spectrum), pi * lambda * dz * (fx^2 + fy^2) (Fresnel). Both
    // are required for every method, so a distance is valid or not whatever the method.
    const double phase =
        std::max(std::fabs(s.distance) * k2, std::fabs(pi * s.wavelength * s.distance) * f2);
    const double per_metre = std::max(k2, pi * s.wavelength * f2);
    require(std::isfinite(phase),
            "distance " + num(s.distance) +
                " m is out of range: the transfer function's phase overflows (|distance| "
                "must stay below " +
                num(std::numeric_limits<double>::max() / per_metre) +
                " m at this wavelength and pitch)");
    if (has_tilt(s))  // phase k * (sin(theta) x + ...) with |x| up to n * pitch / 2
        require(std::isfinite(k * static_cast<double>(n) * s.pitch),
                "tilt: the tilt phase 2 pi / wavelength * n * pitch = " +
                    num(k * static_cast<double>(n) * s.pitch) +
                    " overflows; check the wavelength and pitch (metres)");
}
}  // namespace

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
    validate_derived(s, n);
}

void validate_stack(const StackSpec& s) {
    validate_grid_size(s.n);
    require(!s.hops.empty(),
            "a phase stack needs at least one layer (distances must not be empty)");
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

void validate_noise_range(int64_t count, uint64_t offset) {
    require(count >= 0, "count must be >= 0, got " + std::to_string(count));
    // offset + count <= 2^64, written without computing offset + count (it may wrap to 0).
    require(count == 0 || static_cast<uint64_t>(count) - 1 <= UINT64_MAX - offset,
            "offset " + std::to_string(offset) + " + count " + std::to_string(count) +
                " runs past the end of the stream (2**64 numbers): offset must be at most 2**64 - "
                "count; "
                "use a smaller offset or another stream");
}

std::string intensity_overflow_message(bool double_precision) {
    return std::string("field is too large: the intensity overflows ") +
           (double_precision ? "float64 (|E|^2 above 1.8e308" : "float32 (|E|^2 above 3.4e38") +
           " at the camera); scale the field down";
}

namespace {
// The padded grid's table of value(r, c, np, pitch, wavelength, distance, method, scale), with
// the inverse FFT's 1/np^2 folded in when `normalised`.
template <class T, class Value>
std::vector<cplx<T>> padded_table(const PropagationSpec& s, int64_t n, bool normalised,
                                  Value value) {
    const int64_t np = padded_size(n, s.padding);
    const double scale =
        normalised ? 1.0 / (static_cast<double>(np) * static_cast<double>(np)) : 1.0;
    std::vector<cplx<T>> h(static_cast<size_t>(np * np));
    for (int64_t r = 0; r < np; ++r)
        for (int64_t c = 0; c < np; ++c)
            h[static_cast<size_t>(r * np + c)] =
                value(r, c, np, s.pitch, s.wavelength, s.distance, s.method, scale);
    return h;
}
}  // namespace

template <class T>
std::vector<cplx<T>> make_transfer_function(const PropagationSpec& s, int64_t n, bool normalised) {
    return padded_table<T>(s, n, normalised, transfer_function_value<T>);
}

template <class T>
std::vector<cplx<T>> make_transfer_function_dz(const PropagationSpec& s, int64_t n,
                                               bool normalised) {
    return padded_table<T>(s, n, normalised, transfer_function_dz_value<T>);
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

template <class T>
void tilt_gradient(const T* grad, int64_t n, const PropagationSpec& hop, double* out) {
    double sx = 0.0, sy = 0.0;
    for (int64_t r = 0; r < n; ++r) {
        double row = 0.0, rowx = 0.0;
        for (int64_t c = 0; c < n; ++c) {
            const double v = static_cast<double>(grad[r * n + c]);
            row += v;
            rowx += centred_coordinate(c, n, hop.pitch) * v;
        }
        sx += rowx;
        sy += centred_coordinate(r, n, hop.pitch) * row;
    }
    out[0] = tilt_phase_slope(hop.wavelength, hop.tilt_x) * sx;
    out[1] = tilt_phase_slope(hop.wavelength, hop.tilt_y) * sy;
}

template void tilt_gradient<float>(const float*, int64_t, const PropagationSpec&, double*);
template void tilt_gradient<double>(const double*, int64_t, const PropagationSpec&, double*);

template std::vector<cplx<float>> make_transfer_function<float>(const PropagationSpec&, int64_t,
                                                                bool);
template std::vector<cplx<double>> make_transfer_function<double>(const PropagationSpec&, int64_t,
                                                                  bool);
template std::vector<cplx<float>> make_transfer_function_dz<float>(const PropagationSpec&, int64_t,
                                                                   bool);
template std::vector<cplx<double>> make_transfer_function_dz<double>(const PropagationSpec&,
                                                                     int64_t, bool);
template std::vector<cplx<float>> make_tilt<float>(const PropagationSpec&, int64_t);
template std::vector<cplx<double>> make_tilt<double>(const PropagationSpec&, int64_t);

}  // namespace optdiff
