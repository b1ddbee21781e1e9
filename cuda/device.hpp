// Thin layer over the CUDA runtime used by the CUDA back end of optdiff.
//
// This header is free of CUDA types so that host-only translation units (the
// pybind11 bindings, the orchestration in optics.cpp) compile with the plain
// host compiler. Streams travel as `void*` (a cudaStream_t; nullptr is the
// legacy default stream).
//
// Errors never abort: every failing runtime call becomes a C++ exception
// (CudaOutOfMemory for allocation failures, CudaError otherwise) whose text
// names the operation, the CUDA error name and its description.
//
// The same interface is implemented a second time on the host
// (device_emu.cpp, OPTDIFF_CUDA_EMULATION) so that the orchestration and the
// kernel bodies can be exercised on a machine without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace optdiff {
namespace gpu {

using Stream = void*;  // cudaStream_t

// Any failure of the CUDA runtime, the driver or cuFFT.
class CudaError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// The device (or a memory pool on it) ran out of memory.
class CudaOutOfMemory : public CudaError {
public:
    using CudaError::CudaError;
};

// Number of usable CUDA devices; 0 when there is no driver, no device, or the
// runtime cannot start. Never throws.
int device_count() noexcept;

// Human-readable reason why device_count() is 0 ("" when it is not).
std::string no_device_reason();

int current_device();
void set_device(int device);
std::string device_name(int device);
int runtime_version() noexcept;  // e.g. 13000, 0 when unknown
int driver_version() noexcept;   // 0 when there is no driver

// Sets `device` current for the lifetime of the guard and restores the
// previous one afterwards (without throwing from the destructor).
class DeviceGuard {
public:
    explicit DeviceGuard(int device);
    ~DeviceGuard();
    DeviceGuard(const DeviceGuard&) = delete;
    DeviceGuard& operator=(const DeviceGuard&) = delete;

private:
    int previous_ = -1;
};

// Throws CudaError if the last kernel launch failed (bad configuration,
// missing kernel image for this GPU, ...). `what` names the kernel.
void check_launch(const char* what);

void synchronize(Stream stream);

// ---- memory ---------------------------------------------------------------

// Plain device allocation (cudaMalloc), usable from any stream.
void* device_malloc(size_t bytes);
void device_free(void* ptr) noexcept;

// Stream-ordered workspace allocation from a private memory pool of the
// current device (cudaMallocFromPoolAsync); falls back to cudaMalloc on
// devices without memory-pool support. On an out-of-memory error the FFT plan
// cache is dropped and the pool trimmed once before giving up.
void* workspace_malloc(size_t bytes, Stream stream);
void workspace_free(void* ptr, Stream stream) noexcept;
// Returns cached, unused pool memory of the current device to the driver.
void trim_workspace_pool();

// Budget for the per-call scratch buffers of one call (bytes); the batch is
// processed in chunks so that the padded work fields fit. Default 1 GiB.
void set_workspace_limit(int64_t bytes);
int64_t get_workspace_limit();

void copy_async(void* dst, const void* src, size_t bytes, Stream stream);  // any direction
void zero_async(void* dst, size_t bytes, Stream stream);
// Host <-> device copies that return when the data has arrived.
void copy_to_device_sync(void* dst, const void* src, size_t bytes, Stream stream);
void copy_to_host_sync(void* dst, const void* src, size_t bytes, Stream stream);

// Device of a pointer: >= 0 for device or managed memory, -1 for host
// memory (pageable, pinned or unknown to CUDA).
int pointer_device(const void* ptr);

// Throws std::invalid_argument naming `what` unless `ptr` is non-null device
// (or managed) memory on `device`.
void require_device_pointer(const void* ptr, int device, const char* what);

// Owning device allocation (cudaMalloc) of `count` elements of E.
template <class E>
class DeviceArray {
public:
    DeviceArray() = default;
    explicit DeviceArray(size_t count)
        : ptr_(static_cast<E*>(device_malloc(count * sizeof(E)))), count_(count) {}
    ~DeviceArray() { device_free(ptr_); }
    DeviceArray(DeviceArray&& o) noexcept : ptr_(o.ptr_), count_(o.count_) {
        o.ptr_ = nullptr;
        o.count_ = 0;
    }
    DeviceArray& operator=(DeviceArray&& o) noexcept {
        if (this != &o) {
            device_free(ptr_);
            ptr_ = o.ptr_;
            count_ = o.count_;
            o.ptr_ = nullptr;
            o.count_ = 0;
        }
        return *this;
    }
    DeviceArray(const DeviceArray&) = delete;
    DeviceArray& operator=(const DeviceArray&) = delete;

    E* get() const { return ptr_; }
    size_t size() const { return count_; }
    bool empty() const { return count_ == 0; }

private:
    E* ptr_ = nullptr;
    size_t count_ = 0;
};

// Stream-ordered scratch buffer: allocated on `stream` and released on the
// same stream when it goes out of scope, after the work queued on it.
template <class E>
class Workspace {
public:
    Workspace(size_t count, Stream stream)
        : ptr_(count ? static_cast<E*>(workspace_malloc(count * sizeof(E), stream)) : nullptr),
          stream_(stream) {}
    ~Workspace() { workspace_free(ptr_, stream_); }
    Workspace(const Workspace&) = delete;
    Workspace& operator=(const Workspace&) = delete;
    E* get() const { return ptr_; }

private:
    E* ptr_ = nullptr;
    Stream stream_ = nullptr;
};

}  // namespace gpu
}  // namespace optdiff
