// Host emulation of device.hpp (OPTDIFF_CUDA_EMULATION): one fake device
// whose memory is host memory. Used only to test the CUDA back end's
// orchestration and kernel bodies on machines without a GPU.
//
// Fresh allocations are filled with NaN bit patterns so that reading scratch
// memory that was never written shows up in the results.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "device.hpp"
#include "streams.hpp"

namespace optdiff {
namespace gpu {

namespace {
std::atomic<int64_t> g_workspace_limit{int64_t(1) << 30};

void* poisoned_alloc(size_t bytes) {
    if (bytes == 0) return nullptr;
    const size_t rounded = (bytes + 255) / 256 * 256;
    void* p = std::aligned_alloc(256, rounded);
    if (p == nullptr)
        throw CudaOutOfMemory("emulated allocation of " + std::to_string(bytes) + " bytes failed");
    std::memset(p, 0xFF, rounded);  // all-ones: NaN for float and double
    return p;
}
}  // namespace

int device_count() noexcept { return 1; }
std::string no_device_reason() { return ""; }
int current_device() { return 0; }
void set_device(int device) {
    if (device != 0)
        throw std::invalid_argument("CUDA device " + std::to_string(device) +
                                    " does not exist (1 device(s) visible)");
}
std::string device_name(int) { return "host emulation"; }
int runtime_version() noexcept { return 0; }
int driver_version() noexcept { return 0; }

DeviceGuard::DeviceGuard(int device) { set_device(device); }
DeviceGuard::~DeviceGuard() = default;

void check_launch(const char*) {}
void synchronize(Stream) {}

void* device_malloc(size_t bytes) { return poisoned_alloc(bytes); }
void device_free(void* ptr) noexcept { std::free(ptr); }
void* workspace_malloc(size_t bytes, Stream) { return poisoned_alloc(bytes); }
void workspace_free(void* ptr, Stream) noexcept { std::free(ptr); }
void trim_workspace_pool() {}

void set_workspace_limit(int64_t bytes) {
    if (bytes < (int64_t(1) << 20))
        throw std::invalid_argument("workspace limit must be at least 1 MiB, got " +
                                    std::to_string(bytes) + " bytes");
    g_workspace_limit.store(bytes);
}
int64_t get_workspace_limit() { return g_workspace_limit.load(); }

void copy_async(void* dst, const void* src, size_t bytes, Stream) {
    if (bytes && dst != src) std::memmove(dst, src, bytes);
}
void zero_async(void* dst, size_t bytes, Stream) {
    if (bytes) std::memset(dst, 0, bytes);
}
void copy_to_device_sync(void* dst, const void* src, size_t bytes, Stream) {
    if (bytes) std::memcpy(dst, src, bytes);
}
void copy_to_host_sync(void* dst, const void* src, size_t bytes, Stream) {
    if (bytes) std::memcpy(dst, src, bytes);
}

// One host thread does all the emulated work in order: no capture, and
// every stream is already ordered after every other.
bool stream_is_capturing(Stream) { return false; }
void stream_wait(Stream, Stream) {}

int pointer_device(const void* ptr) { return ptr ? 0 : -1; }

void require_device_pointer(const void* ptr, int device, const char* what) {
    if (ptr == nullptr) throw std::invalid_argument(std::string(what) + " is a null pointer");
    set_device(device);
}

}  // namespace gpu
}  // namespace optdiff
