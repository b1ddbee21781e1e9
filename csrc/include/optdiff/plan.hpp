// Host-side planning shared by the CPU and CUDA back ends: validated
// parameters, grid sizes, transfer functions and tilt/modulation tables.
// Only the hot loops differ between back ends; everything here is common.
#pragma once

#include <cstdint>
#include <vector>

#include "optdiff/physics.hpp"

namespace optdiff {

// One free-space hop. SI units throughout: metres and radians.
struct PropagationSpec {
    double wavelength = 0.0;  // vacuum wavelength [m], > 0
    double pitch = 0.0;       // pixel pitch of the field [m], > 0
    double distance = 0.0;    // propagation distance [m], any sign
    Method method = Method::AngularSpectrum;
    int padding = 1;          // 1: periodic, 2: linear (zero-pad, propagate, crop)
    double tilt_x = 0.0;      // beam angle applied to the input [rad]
    double tilt_y = 0.0;
};

// Throws std::invalid_argument naming the offending field.
void validate(const PropagationSpec& spec, int64_t n);
void validate_grid_size(int64_t n);

inline int64_t padded_size(int64_t n, int padding) { return n * padding; }

// Transfer function on the padded grid, FFT order, row-major [np, np], with
// the inverse FFT's 1/np^2 folded in (`normalised`) so one multiply does both.
template <class T>
std::vector<cplx<T>> make_transfer_function(const PropagationSpec& spec, int64_t n,
                                            bool normalised);

// Tilt phase on the unpadded [n, n] grid; all ones when both angles are 0.
template <class T>
std::vector<cplx<T>> make_tilt(const PropagationSpec& spec, int64_t n);

inline bool has_tilt(const PropagationSpec& s) { return s.tilt_x != 0.0 || s.tilt_y != 0.0; }

}  // namespace optdiff
