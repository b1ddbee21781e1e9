// cuFFT implementation of fft.hpp (host code).
#include <cuda_runtime_api.h>
#include <cufft.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "fft.hpp"
#include "streams.hpp"

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

PlanKey make_key(int device, bool dbl, const FftGeometry& g, Stream s) {
    const StreamIdentity id = stream_identity(s);
    return PlanKey(device, dbl, g.rank, g.size, g.stride, g.dist, g.batch, id.first, id.second);
}

}  // namespace

class FftPlan {
public:
    FftPlan(bool dbl, const FftGeometry& g, Stream stream, int device)
        : double_(dbl), device_(device), stream_(stream) {
        if (g.rank != 1 && g.rank != 2) throw std::invalid_argument("FFT rank must be 1 or 2");
        if (g.size < 1 || g.batch < 1 || g.stride < 1 || g.dist < 1)
            throw std::invalid_argument("FFT geometry must be positive");
        if (g.rank == 2 && g.stride != 1)
            throw std::invalid_argument("2-D FFTs must be contiguous (stride 1)");
        check_cufft(cufftCreate(&handle_), "plan creation (cufftCreate)");
        try {
            // The work area comes from the memory pool at each transform.
            check_cufft(cufftSetAutoAllocation(handle_, 0), "cufftSetAutoAllocation");
            long long n[2] = {g.size, g.size};
            // Non-null embeds: cuFFT ignores stride/dist when they are null.
            long long embed[2] = {g.size, g.size};
            size_t work = 0;
            check_cufft(
                cufftMakePlanMany64(handle_, g.rank, n, embed, g.stride, g.dist, embed, g.stride,
                                    g.dist, dbl ? CUFFT_Z2Z : CUFFT_C2C, g.batch, &work),
                "planning a " + std::to_string(g.rank) + "-D transform of size " +
                    std::to_string(g.size) + " x batch " + std::to_string(g.batch));
            work_bytes_ = work;
            check_cufft(cufftSetStream(handle_, static_cast<cudaStream_t>(stream)),
                        "cufftSetStream");
            // Marks the end of the last transform, so that eviction can tell
            // (without blocking) when the plan may go.
            const cudaError_t err = cudaEventCreateWithFlags(&done_, cudaEventDisableTiming);
            if (err != cudaSuccess) {
                (void)cudaGetLastError();
                throw CudaError(std::string("cudaEventCreate for an FFT plan: ") +
                                cudaGetErrorName(err));
            }
        } catch (...) {
            cufftDestroy(handle_);
            throw;
        }
    }
    // Waits only for this plan's own transforms (its event), then destroys it.
    // The cache calls this outside its lock, and never for a plan that was
    // used during stream capture unless the cache is cleared.
    ~FftPlan() {
        int previous = -1;
        if (cudaGetDevice(&previous) == cudaSuccess && previous != device_) {
            (void)cudaSetDevice(device_);
        }
        if (recorded_) (void)cudaEventSynchronize(done_);
        (void)cudaEventDestroy(done_);
        (void)cufftDestroy(handle_);
        if (previous >= 0 && previous != device_) (void)cudaSetDevice(previous);
        (void)cudaGetLastError();
    }
    FftPlan(const FftPlan&) = delete;
    FftPlan& operator=(const FftPlan&) = delete;

    void execute(void* data, bool inverse) {
        const int dir = inverse ? CUFFT_INVERSE : CUFFT_FORWARD;
        std::lock_guard<std::mutex> lock(mutex_);  // a handle's enqueue is not re-entrant
        // Stream-ordered: freed on the plan's stream after the transform.
        Workspace<char> work(work_bytes_, stream_);
        if (work_bytes_ > 0) check_cufft(cufftSetWorkArea(handle_, work.get()), "cufftSetWorkArea");
        if (double_) {
            auto* p = static_cast<cufftDoubleComplex*>(data);
            check_cufft(cufftExecZ2Z(handle_, p, p, dir), "cufftExecZ2Z");
        } else {
            auto* p = static_cast<cufftComplex*>(data);
            check_cufft(cufftExecC2C(handle_, p, p, dir), "cufftExecC2C");
        }
        if (stream_is_capturing(stream_)) {
            in_graph_ = true;  // a graph may replay it at any time: never reaped
        } else {
            const cudaError_t err = cudaEventRecord(done_, static_cast<cudaStream_t>(stream_));
            if (err != cudaSuccess) {
                (void)cudaGetLastError();
                throw CudaError(std::string("cudaEventRecord after an FFT: ") +
                                cudaGetErrorName(err));
            }
            recorded_ = true;
        }
    }

    // Non-blocking: no transform of this plan is queued or running.
    bool idle() const noexcept {
        if (in_graph_) return false;
        if (!recorded_) return true;
        const cudaError_t err = cudaEventQuery(done_);
        if (err == cudaErrorNotReady) return false;
        if (err != cudaSuccess) (void)cudaGetLastError();
        return true;
    }

    int64_t work_bytes() const { return static_cast<int64_t>(work_bytes_); }

private:
    cufftHandle handle_ = 0;
    bool double_ = false;
    int device_ = 0;
    Stream stream_ = nullptr;
    size_t work_bytes_ = 0;
    cudaEvent_t done_ = nullptr;
    // Written under mutex_ by execute, read by idle() from the cache's reaper.
    std::atomic<bool> recorded_{false};
    std::atomic<bool> in_graph_{false};
    std::mutex mutex_;
};

namespace {

constexpr size_t kMaxCachedPlans = 32;

PlanCache<FftPlan>& plan_cache() {
    static auto* cache =
        new PlanCache<FftPlan>(kMaxCachedPlans);  // never destroyed: see device.cpp
    return *cache;
}

}  // namespace

std::shared_ptr<FftPlan> get_fft_plan(bool double_precision, const FftGeometry& geometry,
                                      Stream stream) {
    const int device = current_device();
    const PlanKey key = make_key(device, double_precision, geometry, stream);
    PlanCache<FftPlan>& c = plan_cache();
    // Destroy evicted plans whose work is done (never while this stream is
    // being captured: destroying frees device memory).
    if (!stream_is_capturing(stream)) c.reap(false);
    if (auto hit = c.find(key)) return hit;
    // Plan outside the lock (it can take milliseconds); a racing thread may
    // make the same plan, in which case the first one stored wins.
    std::shared_ptr<FftPlan> plan;
    try {
        plan = std::make_shared<FftPlan>(double_precision, geometry, stream, device);
    } catch (const CudaOutOfMemory&) {
        clear_fft_plan_cache();  // cached plans hold device memory: drop them and retry once
        trim_workspace_pool();
        plan = std::make_shared<FftPlan>(double_precision, geometry, stream, device);
    }
    return c.insert(key, std::move(plan));
}

void fft_execute(FftPlan& plan, void* data, bool inverse) { plan.execute(data, inverse); }

void clear_fft_plan_cache() { plan_cache().clear(); }

int fft_plan_cache_size() { return static_cast<int>(plan_cache().stats().cached); }

PlanCacheStats fft_plan_cache_stats() { return plan_cache().stats(); }

int64_t fft_work_bytes(const FftPlan& plan) { return plan.work_bytes(); }

int fft_library_version() noexcept {
    int v = 0;
    if (cufftGetVersion(&v) != CUFFT_SUCCESS) return 0;
    return v;
}

}  // namespace gpu
}  // namespace optdiff
