// CUDA runtime implementation of device.hpp (host code, no kernels).
#include "device.hpp"

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <string>
#include <vector>

#include "fft.hpp"
#include "streams.hpp"

namespace optdiff {
namespace gpu {

namespace {

std::string error_text(cudaError_t err) {
    return std::string(cudaGetErrorName(err)) + " (" + cudaGetErrorString(err) + ")";
}

[[noreturn]] void throw_cuda(cudaError_t err, const std::string& what) {
    // Clear the (non-sticky) error state so later calls are not blamed for it.
    (void)cudaGetLastError();
    if (err == cudaErrorMemoryAllocation) {
        throw CudaOutOfMemory(what +
                              ": out of GPU memory (cudaErrorMemoryAllocation); reduce the "
                              "batch size or free device memory");
    }
    if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) {
        throw CudaError(what + ": no usable CUDA device: " + error_text(err));
    }
    throw CudaError(what + ": " + error_text(err));
}

void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw_cuda(err, what);
}

cudaStream_t as_stream(Stream s) { return static_cast<cudaStream_t>(s); }

std::atomic<int64_t> g_workspace_limit{int64_t(1) << 30};

// Private stream-ordered memory pools, one per device, created on first use
// and deliberately never destroyed (process teardown order is unknown).
struct PoolTable {
    std::mutex mutex;
    std::vector<int> state;  // 0 unknown, 1 pool ready, 2 pools unsupported
    std::vector<cudaMemPool_t> pools;
};

PoolTable& pool_table() {
    static PoolTable* table = new PoolTable();
    return *table;
}

// Returns the pool of `device`, or nullptr when the device has no pool
// support (then plain cudaMalloc/cudaFree are used).
cudaMemPool_t device_pool(int device) {
    PoolTable& t = pool_table();
    std::lock_guard<std::mutex> lock(t.mutex);
    if (device < 0) return nullptr;
    const size_t d = static_cast<size_t>(device);
    if (t.state.size() <= d) {
        t.state.resize(d + 1, 0);
        t.pools.resize(d + 1, nullptr);
    }
    if (t.state[d] == 0) {
        int supported = 0;
        // OPTDIFF_CUDA_NO_POOL=1: plain cudaMalloc/cudaFree for every scratch buffer, so that
        // compute-sanitizer bounds-checks each one (benchmarks/gpu_check.sh sets it there).
        const char* no_pool = std::getenv("OPTDIFF_CUDA_NO_POOL");
        if ((no_pool != nullptr && no_pool[0] == '1') ||
            cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, device) !=
                cudaSuccess ||
            supported == 0) {
            (void)cudaGetLastError();
            t.state[d] = 2;
        } else {
            cudaMemPoolProps props{};
            props.allocType = cudaMemAllocationTypePinned;
            props.handleTypes = cudaMemHandleTypeNone;
            props.location.type = cudaMemLocationTypeDevice;
            props.location.id = device;
            cudaMemPool_t pool = nullptr;
            check(cudaMemPoolCreate(&pool, &props), "creating the optdiff memory pool");
            // Keep freed blocks cached (up to the workspace budget) instead of
            // returning them to the driver at every synchronisation.
            uint64_t keep = static_cast<uint64_t>(g_workspace_limit.load());
            check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep),
                  "configuring the optdiff memory pool");
            t.pools[d] = pool;
            t.state[d] = 1;
        }
    }
    return t.state[d] == 1 ? t.pools[d] : nullptr;
}

}  // namespace

int device_count() noexcept {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

std::string no_device_reason() {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err == cudaSuccess) return n > 0 ? std::string() : std::string("no CUDA device found");
    (void)cudaGetLastError();
    if (err == cudaErrorInsufficientDriver) {
        return "no usable NVIDIA driver (libcuda.so.1 missing or older than the CUDA " +
               std::to_string(runtime_version() / 1000) + " runtime): " + error_text(err);
    }
    return error_text(err);
}

int current_device() {
    int d = 0;
    check(cudaGetDevice(&d), "cudaGetDevice");
    return d;
}

void set_device(int device) {
    const int n = device_count();
    if (device < 0 || device >= n) {
        throw std::invalid_argument("CUDA device " + std::to_string(device) + " does not exist (" +
                                    std::to_string(n) + " device(s) visible)");
    }
    check(cudaSetDevice(device), "cudaSetDevice");
}

std::string device_name(int device) {
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    return std::string(prop.name);
}

int runtime_version() noexcept {
    int v = 0;
    if (cudaRuntimeGetVersion(&v) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return v;
}

int driver_version() noexcept {
    int v = 0;
    if (cudaDriverGetVersion(&v) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return v;
}

DeviceGuard::DeviceGuard(int device) {
    previous_ = current_device();
    if (previous_ != device) {
        set_device(device);
    } else {
        previous_ = -1;  // nothing to restore
    }
}

DeviceGuard::~DeviceGuard() {
    if (previous_ >= 0) {
        if (cudaSetDevice(previous_) != cudaSuccess) (void)cudaGetLastError();
    }
}

void check_launch(const char* what) {
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) {
        if (err == cudaErrorNoKernelImageForDevice || err == cudaErrorInvalidDeviceFunction) {
            throw CudaError(std::string("kernel ") + what + ": " + error_text(err) +
                            "; rebuild optdiff with OPTDIFF_CUDA_ARCHITECTURES covering this GPU "
                            "(e.g. -DOPTDIFF_CUDA_ARCHITECTURES=native)");
        }
        throw_cuda(err, std::string("launching kernel ") + what);
    }
}

void synchronize(Stream stream) {
    check(cudaStreamSynchronize(as_stream(stream)), "cudaStreamSynchronize");
}

void* device_malloc(size_t bytes) {
    if (bytes == 0) return nullptr;
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, bytes);
    if (err == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        clear_fft_plan_cache();
        trim_workspace_pool();
        err = cudaMalloc(&p, bytes);
    }
    if (err != cudaSuccess) {
        throw_cuda(err, "cudaMalloc of " + std::to_string(bytes) + " bytes");
    }
    return p;
}

void device_free(void* ptr) noexcept {
    if (ptr == nullptr) return;
    // Free with the owning device current (objects may die on any thread).
    int owner = -1;
    int current = -1;
    cudaPointerAttributes attr{};
    if (cudaPointerGetAttributes(&attr, ptr) == cudaSuccess && attr.type == cudaMemoryTypeDevice)
        owner = attr.device;
    if (cudaGetDevice(&current) != cudaSuccess) current = -1;
    const bool switch_device = owner >= 0 && current >= 0 && owner != current;
    if (switch_device) (void)cudaSetDevice(owner);
    (void)cudaFree(ptr);  // errors (e.g. during process exit) are ignored
    if (switch_device) (void)cudaSetDevice(current);
    (void)cudaGetLastError();
}

void* workspace_malloc(size_t bytes, Stream stream) {
    if (bytes == 0) return nullptr;
    cudaMemPool_t pool = device_pool(current_device());
    if (pool == nullptr) return device_malloc(bytes);
    void* p = nullptr;
    cudaError_t err = cudaMallocFromPoolAsync(&p, bytes, pool, as_stream(stream));
    if (err == cudaErrorMemoryAllocation && !stream_is_capturing(stream)) {
        (void)cudaGetLastError();
        clear_fft_plan_cache();
        if (cudaMemPoolTrimTo(pool, 0) != cudaSuccess) (void)cudaGetLastError();
        err = cudaMallocFromPoolAsync(&p, bytes, pool, as_stream(stream));
    }
    if (err != cudaSuccess) {
        throw_cuda(err, "allocating " + std::to_string(bytes) + " bytes of GPU workspace");
    }
    return p;
}

void workspace_free(void* ptr, Stream stream) noexcept {
    if (ptr == nullptr) return;
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) {
        (void)cudaGetLastError();
        return;
    }
    cudaMemPool_t pool = nullptr;
    try {
        pool = device_pool(device);
    } catch (...) {
        pool = nullptr;
    }
    const cudaError_t err = pool ? cudaFreeAsync(ptr, as_stream(stream)) : cudaFree(ptr);
    if (err != cudaSuccess) (void)cudaGetLastError();
}

void trim_workspace_pool() {
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) {
        (void)cudaGetLastError();
        return;
    }
    cudaMemPool_t pool = device_pool(device);
    if (pool != nullptr && cudaMemPoolTrimTo(pool, 0) != cudaSuccess) (void)cudaGetLastError();
}

void set_workspace_limit(int64_t bytes) {
    if (bytes < (int64_t(1) << 20)) {
        throw std::invalid_argument("workspace limit must be at least 1 MiB, got " +
                                    std::to_string(bytes) + " bytes");
    }
    g_workspace_limit.store(bytes);
    PoolTable& t = pool_table();
    std::lock_guard<std::mutex> lock(t.mutex);
    uint64_t keep = static_cast<uint64_t>(bytes);
    for (size_t d = 0; d < t.pools.size(); ++d) {
        if (t.state[d] == 1 && cudaMemPoolSetAttribute(t.pools[d], cudaMemPoolAttrReleaseThreshold,
                                                       &keep) != cudaSuccess) {
            (void)cudaGetLastError();
        }
    }
}

int64_t get_workspace_limit() { return g_workspace_limit.load(); }

void copy_async(void* dst, const void* src, size_t bytes, Stream stream) {
    if (bytes == 0 || dst == src) return;
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, as_stream(stream)),
          "cudaMemcpyAsync");
}

void zero_async(void* dst, size_t bytes, Stream stream) {
    if (bytes == 0) return;
    check(cudaMemsetAsync(dst, 0, bytes, as_stream(stream)), "cudaMemsetAsync");
}

void copy_to_device_sync(void* dst, const void* src, size_t bytes, Stream stream) {
    if (bytes == 0) return;
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, as_stream(stream)),
          "copying to the GPU");
    check(cudaStreamSynchronize(as_stream(stream)), "copying to the GPU (synchronize)");
}

void copy_to_host_sync(void* dst, const void* src, size_t bytes, Stream stream) {
    if (bytes == 0) return;
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, as_stream(stream)),
          "copying from the GPU");
    check(cudaStreamSynchronize(as_stream(stream)), "copying from the GPU (synchronize)");
}

int pointer_device(const void* ptr) {
    if (ptr == nullptr) return -1;
    cudaPointerAttributes attr{};
    if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    if (attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged) return attr.device;
    return -1;
}

bool stream_is_capturing(Stream stream) {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    const cudaError_t err = cudaStreamIsCapturing(as_stream(stream), &status);
    if (err != cudaSuccess) {
        // e.g. the legacy stream queried while another stream captures
        // globally: treat as capturing (the safe answer: nothing is freed).
        (void)cudaGetLastError();
        return true;
    }
    return status != cudaStreamCaptureStatusNone;
}

void stream_wait(Stream waiter, Stream producer) {
    if (waiter == producer) return;
    cudaEvent_t ev = nullptr;
    check(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "cudaEventCreate (stream order)");
    cudaError_t err = cudaEventRecord(ev, as_stream(producer));
    if (err == cudaSuccess) err = cudaStreamWaitEvent(as_stream(waiter), ev, 0);
    // Destroying an event whose record and wait are queued is allowed: the
    // resources go once the work completes.
    (void)cudaEventDestroy(ev);
    check(err, "ordering the gradient's stream after the tape's (event record + wait)");
}

void require_device_pointer(const void* ptr, int device, const char* what) {
    if (ptr == nullptr) throw std::invalid_argument(std::string(what) + " is a null pointer");
    const int d = pointer_device(ptr);
    if (d < 0) {
        throw std::invalid_argument(std::string(what) +
                                    " is not GPU memory (a host pointer was passed where a CUDA "
                                    "device array is required)");
    }
    if (d != device) {
        throw std::invalid_argument(std::string(what) + " lives on CUDA device " +
                                    std::to_string(d) + " but this object was created on device " +
                                    std::to_string(device));
    }
}

}  // namespace gpu
}  // namespace optdiff
