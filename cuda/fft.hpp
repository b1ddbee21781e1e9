// Batched in-place complex FFTs for the CUDA back end (cuFFT C2C / Z2Z).
//
// Plans are cached per (device, precision, geometry, stream identity; see
// plan_cache.hpp): creating a plan costs far more than a transform. A plan
// owns no work area: each transform takes one from the back end's
// stream-ordered memory pool (cufftSetAutoAllocation(0) + cufftSetWorkArea),
// so cuFFT's scratch counts against the same pool as the rest. The cache is
// an LRU of a few dozen plans; an evicted plan is destroyed later, outside
// the cache lock, once nobody uses it and its last transform has finished
// (never a device-wide synchronisation, never during stream capture).
// Transforms are unnormalised (forward sign -1, inverse +1); the 1/np^2 of
// the inverse is folded into the transfer function.
#pragma once

#include <cstdint>
#include <memory>

#include "device.hpp"
#include "plan_cache.hpp"

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

// Drops every cached plan (each is destroyed once no call uses it, after its
// own queued transforms; not while a CUDA graph that uses it may still run).
void clear_fft_plan_cache();
int fft_plan_cache_size();
PlanCacheStats fft_plan_cache_stats();
// Work-area bytes a transform of `plan` takes from the pool (0 in emulation).
int64_t fft_work_bytes(const FftPlan& plan);
// cuFFT library version (e.g. 12500), 0 when unknown.
int fft_library_version() noexcept;

}  // namespace gpu
}  // namespace optdiff
