#include <cstdint>
#include <cstring>

#include "optdiff/optdiff.hpp"

namespace optdiff {

namespace {
// A value is NaN or infinite iff all its exponent bits are set. Testing the
// bits with integer operations and OR-ing the results has no loop-carried
// floating-point dependency and no early exit, so the loop vectorises (a
// float sum would run at one add per latency, ~6% of a small training step).
template <class T, class U, U kExp>
bool all_finite_impl(const T* d, int64_t count) {
    static_assert(sizeof(T) == sizeof(U), "bit pattern type must match");
    U bad = 0;
    for (int64_t i = 0; i < count; ++i) {
        U bits;
        std::memcpy(&bits, d + i, sizeof(U));
        bad |= static_cast<U>((bits & kExp) == kExp);
    }
    return bad == 0;
}
}  // namespace

bool all_finite(const float* d, int64_t count) {
    return all_finite_impl<float, uint32_t, 0x7f800000u>(d, count);
}
bool all_finite(const double* d, int64_t count) {
    return all_finite_impl<double, uint64_t, 0x7ff0000000000000ull>(d, count);
}

}  // namespace optdiff
