// Batched in-place complex FFTs for the CUDA back end (cuFFT C2C / Z2Z).
//
// Plans are cached per (device, precision, geometry, stream): a cuFFT plan
// owns a work area, so two streams must never share one, and creating a plan
// costs far more than a transform. The cache is an LRU of a few dozen plans
// guarded by a mutex; an evicted plan stays alive until its last user drops
// its shared_ptr. Transforms are unnormalised (forward sign -1, inverse +1);
// the 1/np^2 of the inverse is folded into the transfer function.
#pragma once

#include <cstdint>
#include <memory>

#include "device.hpp"

namespace optdiff {
namespace gpu {

// One batched transform over equally spaced sequences of one buffer, with
// FFTW/cuFFT "advanced layout" semantics:
//  rank 1: element x of transform b at data[b * dist + x * stride];
//  rank 2: element (y, x) of transform b at data[b * dist + y * size + x]
//          (contiguous square images, `stride` must be 1).
struct FftGeometry {
    int rank = 1;
    int64_t size = 0;    // transform length per dimension
    int64_t stride = 1;  // element stride (rank 1)
    int64_t dist = 0;    // distance between consecutive transforms
    int64_t batch = 0;   // number of transforms
};

class FftPlan;  // opaque, implemented by fft_cufft.cpp (or fft_emu.cpp)

// Returns a cached plan (or makes one) for the current device.
std::shared_ptr<FftPlan> get_fft_plan(bool double_precision, const FftGeometry& geometry,
                                      Stream stream);

// In-place transform of `data` (cplx<float> or cplx<double>, matching the
// plan's precision). `inverse`: sign +1, else -1. Thread-safe.
void fft_execute(FftPlan& plan, void* data, bool inverse);

// Drops every cached plan (each is destroyed once no call uses it).
void clear_fft_plan_cache();
int fft_plan_cache_size();
// cuFFT library version (e.g. 12500), 0 when unknown.
int fft_library_version() noexcept;

}  // namespace gpu
}  // namespace optdiff
