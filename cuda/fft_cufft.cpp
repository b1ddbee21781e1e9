// cuFFT implementation of fft.hpp (host code).
#include <cuda_runtime_api.h>
#include <cufft.h>

#include <cstdint>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "fft.hpp"

namespace optdiff {
namespace gpu {

namespace {

const char* cufft_error_name(cufftResult r) {
    switch (r) {
        case CUFFT_SUCCESS: return "CUFFT_SUCCESS";
        case CUFFT_INVALID_PLAN: return "CUFFT_INVALID_PLAN";
        case CUFFT_ALLOC_FAILED: return "CUFFT_ALLOC_FAILED";
        case CUFFT_INVALID_TYPE: return "CUFFT_INVALID_TYPE";
        case CUFFT_INVALID_VALUE: return "CUFFT_INVALID_VALUE";
        case CUFFT_INTERNAL_ERROR: return "CUFFT_INTERNAL_ERROR";
        case CUFFT_EXEC_FAILED: return "CUFFT_EXEC_FAILED";
        case CUFFT_SETUP_FAILED: return "CUFFT_SETUP_FAILED";
        case CUFFT_INVALID_SIZE: return "CUFFT_INVALID_SIZE";
        case CUFFT_UNALIGNED_DATA: return "CUFFT_UNALIGNED_DATA";
        case CUFFT_INVALID_DEVICE: return "CUFFT_INVALID_DEVICE";
        case CUFFT_NO_WORKSPACE: return "CUFFT_NO_WORKSPACE";
        case CUFFT_NOT_IMPLEMENTED: return "CUFFT_NOT_IMPLEMENTED";
        case CUFFT_NOT_SUPPORTED: return "CUFFT_NOT_SUPPORTED";
        default: return "unknown cuFFT error";
    }
}

void check_cufft(cufftResult r, const std::string& what) {
    if (r == CUFFT_SUCCESS) return;
    (void)cudaGetLastError();
    const std::string text = "cuFFT " + what + " failed: " + cufft_error_name(r) + " (" +
                             std::to_string(static_cast<int>(r)) + ")";
    if (r == CUFFT_ALLOC_FAILED) {
        throw CudaOutOfMemory(text +
                              "; out of GPU memory for the FFT work area, reduce the batch "
                              "size or the workspace limit");
    }
    throw CudaError(text);
}

using PlanKey = std::tuple<int, bool, int, int64_t, int64_t, int64_t, int64_t, std::uintptr_t>;

PlanKey make_key(int device, bool dbl, const FftGeometry& g, Stream s) {
    return PlanKey(device, dbl, g.rank, g.size, g.stride, g.dist, g.batch,
                   reinterpret_cast<std::uintptr_t>(s));
}

}  // namespace

class FftPlan {
public:
    FftPlan(bool dbl, const FftGeometry& g, Stream stream, int device)
        : double_(dbl), device_(device) {
        if (g.rank != 1 && g.rank != 2) throw std::invalid_argument("FFT rank must be 1 or 2");
        if (g.size < 1 || g.batch < 1 || g.stride < 1 || g.dist < 1)
            throw std::invalid_argument("FFT geometry must be positive");
        if (g.rank == 2 && g.stride != 1)
            throw std::invalid_argument("2-D FFTs must be contiguous (stride 1)");
        check_cufft(cufftCreate(&handle_), "plan creation (cufftCreate)");
        try {
            long long n[2] = {g.size, g.size};
            // Non-null embeds: cuFFT ignores stride/dist when they are null.
            long long embed[2] = {g.size, g.size};
            size_t work = 0;
            check_cufft(
                cufftMakePlanMany64(handle_, g.rank, n, embed, g.stride, g.dist, embed, g.stride,
                                    g.dist, dbl ? CUFFT_Z2Z : CUFFT_C2C, g.batch, &work),
                "planning a " + std::to_string(g.rank) + "-D transform of size " +
                    std::to_string(g.size) + " x batch " + std::to_string(g.batch));
            check_cufft(cufftSetStream(handle_, static_cast<cudaStream_t>(stream)),
                        "cufftSetStream");
        } catch (...) {
            cufftDestroy(handle_);
            throw;
        }
    }
    // The plan's work area may still be in use by queued transforms, and the
    // stream it was made for may be gone by now: wait for the whole device
    // before destroying. Plans are only destroyed on eviction or when the
    // cache is cleared, never per call.
    ~FftPlan() {
        int previous = -1;
        if (cudaGetDevice(&previous) == cudaSuccess && previous != device_) {
            (void)cudaSetDevice(device_);
        }
        (void)cudaDeviceSynchronize();
        (void)cufftDestroy(handle_);
        if (previous >= 0 && previous != device_) (void)cudaSetDevice(previous);
        (void)cudaGetLastError();
    }
    FftPlan(const FftPlan&) = delete;
    FftPlan& operator=(const FftPlan&) = delete;

    void execute(void* data, bool inverse) {
        const int dir = inverse ? CUFFT_INVERSE : CUFFT_FORWARD;
        std::lock_guard<std::mutex> lock(mutex_);
        if (double_) {
            auto* p = static_cast<cufftDoubleComplex*>(data);
            check_cufft(cufftExecZ2Z(handle_, p, p, dir), "cufftExecZ2Z");
        } else {
            auto* p = static_cast<cufftComplex*>(data);
            check_cufft(cufftExecC2C(handle_, p, p, dir), "cufftExecC2C");
        }
    }

private:
    cufftHandle handle_ = 0;
    bool double_ = false;
    int device_ = 0;
    std::mutex mutex_;  // a handle's enqueue is not re-entrant
};

namespace {

constexpr size_t kMaxCachedPlans = 32;

struct PlanCache {
    std::mutex mutex;
    std::list<std::pair<PlanKey, std::shared_ptr<FftPlan>>> lru;  // front = most recent
    std::map<PlanKey, std::list<std::pair<PlanKey, std::shared_ptr<FftPlan>>>::iterator> index;
};

PlanCache& plan_cache() {
    static PlanCache* cache = new PlanCache();  // never destroyed: see device.cpp
    return *cache;
}

}  // namespace

std::shared_ptr<FftPlan> get_fft_plan(bool double_precision, const FftGeometry& geometry,
                                      Stream stream) {
    const int device = current_device();
    const PlanKey key = make_key(device, double_precision, geometry, stream);
    PlanCache& c = plan_cache();
    {
        std::lock_guard<std::mutex> lock(c.mutex);
        auto it = c.index.find(key);
        if (it != c.index.end()) {
            c.lru.splice(c.lru.begin(), c.lru, it->second);
            return it->second->second;
        }
    }
    // Plan outside the lock (it can take milliseconds); a racing thread may
    // make the same plan, in which case the first one stored wins.
    std::shared_ptr<FftPlan> plan;
    try {
        plan = std::make_shared<FftPlan>(double_precision, geometry, stream, device);
    } catch (const CudaOutOfMemory&) {
        clear_fft_plan_cache();  // cached plans hold work areas: drop them and retry once
        trim_workspace_pool();
        plan = std::make_shared<FftPlan>(double_precision, geometry, stream, device);
    }
    std::lock_guard<std::mutex> lock(c.mutex);
    auto it = c.index.find(key);
    if (it != c.index.end()) return it->second->second;
    c.lru.emplace_front(key, plan);
    c.index[key] = c.lru.begin();
    while (c.lru.size() > kMaxCachedPlans) {
        c.index.erase(c.lru.back().first);
        c.lru.pop_back();
    }
    return plan;
}

void fft_execute(FftPlan& plan, void* data, bool inverse) { plan.execute(data, inverse); }

void clear_fft_plan_cache() {
    PlanCache& c = plan_cache();
    std::list<std::pair<PlanKey, std::shared_ptr<FftPlan>>> dropped;
    {
        std::lock_guard<std::mutex> lock(c.mutex);
        dropped.swap(c.lru);
        c.index.clear();
    }
    // `dropped` is destroyed here, outside the lock.
}

int fft_plan_cache_size() {
    PlanCache& c = plan_cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    return static_cast<int>(c.lru.size());
}

int fft_library_version() noexcept {
    int v = 0;
    if (cufftGetVersion(&v) != CUFFT_SUCCESS) return 0;
    return v;
}

}  // namespace gpu
}  // namespace optdiff
