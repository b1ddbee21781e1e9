#include <cmath>

#include "optdiff/optdiff.hpp"

namespace optdiff {

namespace {
template <class T>
bool all_finite_impl(const T* d, int64_t count) {
    // Sum of (v - v) is NaN iff some v is NaN or infinite; no early exit keeps
    // the loop vectorisable, which matters for [B, N, N] inputs.
    T acc = T(0);
    for (int64_t i = 0; i < count; ++i) acc += d[i] - d[i];
    return acc == T(0);
}
}  // namespace

bool all_finite(const float* d, int64_t count) { return all_finite_impl(d, count); }
bool all_finite(const double* d, int64_t count) { return all_finite_impl(d, count); }

}  // namespace optdiff
