// Host-side planning shared by the CPU and CUDA back ends: validated
// parameters, grid sizes, transfer functions and tilt/modulation tables.
// Only the hot loops differ between back ends; everything here is common.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "optdiff/physics.hpp"

namespace optdiff {

// One free-space hop. SI units throughout: metres and radians.
struct PropagationSpec {
    double wavelength = 0.0;  // vacuum wavelength [m], > 0
    double pitch = 0.0;       // pixel pitch of the field [m], > 0
    double distance = 0.0;    // propagation distance [m], any sign
    Method method = Method::AngularSpectrum;
    int padding = 1;      // 1: periodic, 2: linear (zero-pad, propagate, crop)
    double tilt_x = 0.0;  // beam angle applied to the input [rad]
    double tilt_y = 0.0;
};

// Description of a stack: optional input hop, then for each layer l a phase
// mask followed by hop l (the last hop ends at the camera).
struct StackSpec {
    int64_t n = 0;
    std::vector<PropagationSpec> hops;  // one per layer; tilt of hop l acts on mask l's output
    bool has_input_hop = false;
    PropagationSpec input_hop;  // propagation of the input before mask 0
};

// Where PhaseStack::backward (CPU) and CudaPhaseStack::backward write the gradients of the loss
// with respect to the stack's physical parameters (all optional; summed over the batch, in double
// precision whatever T is). Asking for none costs nothing.
//  * distances [L]: d/d(distance of hop l), exact for every method (the
//    band-limited method's cut-off is a step in the distance: its derivative
//    is 0 almost everywhere, so the cut waves stay cut);
//  * tilts [L, 2]: d/d(tilt_x, tilt_y of hop l), the ramp applied after mask l;
//  * input_distance [1]: d/d(distance of the input hop) (0 without one);
//  * input_tilt [2]: d/d(input tilt), also without an input hop (the derivative
//    at tilt 0 of a ramp applied to the input field).
struct StackParamGrads {
    double* distances = nullptr;
    double* tilts = nullptr;
    double* input_distance = nullptr;
    double* input_tilt = nullptr;
    bool any() const { return distances || tilts || input_distance || input_tilt; }
};

// Method names as the Python API spells them: 'as', 'bl-as', 'fresnel' (also
// 'angular_spectrum', 'band_limited'). parse_method throws
// std::invalid_argument with method_error(repr of what was given).
Method parse_method(const std::string& name);
const char* method_name(Method m);
std::string method_error(const std::string& got);
// validate()'s message for a padding that is not 1 or 2 (also used for
// values that are not integers at all, e.g. True or 1.5 from Python).
std::string padding_error(const std::string& got);

// Throw std::invalid_argument naming the offending field; the messages are
// the same for every back end because both call these.
void validate(const PropagationSpec& spec, int64_t n);
void validate_grid_size(int64_t n);
// The grid size, at least one layer, then every hop ("layer 2: ..." or
// "input hop: ..." in front of the hop's own message).
void validate_stack(const StackSpec& spec);

inline int64_t padded_size(int64_t n, int padding) { return n * padding; }

// The noise numbers offset .. offset + count - 1 of a stream (sampler.hpp)
// must exist: count >= 0 and offset + count <= 2^64 (exactly 2^64 is fine).
// Throws std::invalid_argument naming offset and count otherwise.
void validate_noise_range(int64_t count, uint64_t offset);

// The error of a forward pass whose camera intensity |E|^2 is not finite
// although its inputs are: the field is too large for the precision.
std::string intensity_overflow_message(bool double_precision);

// Transfer function on the padded grid, FFT order, row-major [np, np], with
// the inverse FFT's 1/np^2 folded in (`normalised`) so one multiply does both.
template <class T>
std::vector<cplx<T>> make_transfer_function(const PropagationSpec& spec, int64_t n,
                                            bool normalised);

// Its derivative with respect to the hop's distance (transfer_function_dz_value),
// laid out and scaled the same way.
template <class T>
std::vector<cplx<T>> make_transfer_function_dz(const PropagationSpec& spec, int64_t n,
                                               bool normalised);

// Tilt phase on the unpadded [n, n] grid; all ones when both angles are 0.
template <class T>
std::vector<cplx<T>> make_tilt(const PropagationSpec& spec, int64_t n);

// d loss / d (tilt_x, tilt_y) of a ramp of `hop`'s angles acting on an n x n
// plane where d loss / d phi is `grad` [n, n]: k cos(theta) times the first
// moments of grad in x and y (summed in double, in a fixed order). Both back
// ends get their tilt gradients from their phase gradients this way.
template <class T>
void tilt_gradient(const T* grad, int64_t n, const PropagationSpec& hop, double* out);

inline bool has_tilt(const PropagationSpec& s) { return s.tilt_x != 0.0 || s.tilt_y != 0.0; }

}  // namespace optdiff
