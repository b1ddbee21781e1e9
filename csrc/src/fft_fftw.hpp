// FFTW3 plans for the shapes the propagators need, cached process-wide.
//
// FFTW's planner is not thread-safe, so every plan is made under one mutex
// and kept for the life of the process; executing a cached plan on other
// (aligned, same-layout) arrays with fftw_execute_dft is thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

#include "optdiff/physics.hpp"

namespace optdiff {
namespace fft {

// Opaque cached plan: `howmany` contiguous 1-D transforms of length `len`,
// `dist` elements apart, executed in place on any 64-byte aligned buffer.
template <class T>
struct Plan {
    void* handle = nullptr;
    void execute(cplx<T>* data) const;
};

// sign: -1 forward, +1 backward (unnormalised).
template <class T>
Plan<T> get_plan(int64_t len, int64_t howmany, int64_t dist, int sign);

// One in-place 2-D transform of a contiguous len x len array.
template <class T>
Plan<T> get_plan_2d(int64_t len, int sign);

// Aligned allocation matching the planner's alignment (fftw_malloc).
void* aligned_alloc_bytes(size_t bytes);
void aligned_free(void* p);

void set_planner_effort(int effort);
int planner_effort();

void set_periodic_path(int path);  // see optdiff.hpp
int periodic_path();

}  // namespace fft
}  // namespace optdiff
