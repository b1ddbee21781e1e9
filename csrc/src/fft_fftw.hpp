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

enum class Layout : int {
    Full2D = 0,  // whole np x np grid, one 2-D transform
    Rows = 1,    // `count` contiguous rows of length np (row stride np)
    Cols = 2,    // all np columns of an np x np grid (element stride np)
};

// Opaque cached plan; executes in place on an aligned buffer.
template <class T>
struct Plan {
    void* handle = nullptr;
    void execute(cplx<T>* data) const;
};

// sign: -1 forward, +1 backward (unnormalised). `count` is used by Rows only.
template <class T>
Plan<T> get_plan(Layout layout, int64_t np, int64_t count, int sign);

// Aligned allocation matching the planner's alignment (fftw_malloc).
void* aligned_alloc_bytes(size_t bytes);
void aligned_free(void* p);

void set_planner_effort(int effort);
int planner_effort();

}  // namespace fft
}  // namespace optdiff
