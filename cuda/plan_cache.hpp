// The FFT plan cache of the CUDA back end, shared by cuFFT (fft_cufft.cpp)
// and its CPU emulation (emulation/fft_emu.cpp) so that the emulated tests
// exercise the same keys, eviction and deferred destruction.
//
// Keys: (device, precision, geometry, stream identity). The stream identity
// is the handle, except for cudaStreamPerThread (handle 2), which names a
// different stream on every host thread: there the key also holds the thread,
// so two threads never share a plan on what are really two streams. The
// legacy default stream (0, or cudaStreamLegacy = 1) is one stream for all.
//
// Eviction never waits for the GPU under the cache lock: an evicted plan is
// moved to a "retired" list and destroyed later, outside the lock, once no
// caller holds it and `Plan::idle()` says its last transform has finished
// (an event query, which does not block). `clear()` waits for the retired
// plans' own work (their events), never for the whole device.
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <utility>
#include <vector>

#include "device.hpp"

namespace optdiff {
namespace gpu {

// (handle, thread): thread is 0 unless the handle is the per-thread default stream.
using StreamIdentity = std::pair<std::uintptr_t, std::uint64_t>;

constexpr std::uintptr_t kLegacyStreamHandle = 0x1;     // cudaStreamLegacy
constexpr std::uintptr_t kPerThreadStreamHandle = 0x2;  // cudaStreamPerThread

inline std::uint64_t this_thread_number() {
    static std::atomic<std::uint64_t> next{1};
    thread_local const std::uint64_t mine = next.fetch_add(1);
    return mine;
}

inline StreamIdentity stream_identity(Stream s) {
    auto h = reinterpret_cast<std::uintptr_t>(s);
    if (h == kLegacyStreamHandle) h = 0;  // the same stream as handle 0
    return {h, h == kPerThreadStreamHandle ? this_thread_number() : 0};
}

using PlanKey =
    std::tuple<int, bool, int, int64_t, int64_t, int64_t, int64_t, std::uintptr_t, std::uint64_t>;

struct PlanCacheStats {
    int64_t cached = 0;     // plans in the LRU
    int64_t retired = 0;    // evicted, waiting for their users / their work to finish
    int64_t destroyed = 0;  // destroyed since the process started
};

// Plan: constructed elsewhere; must provide `bool idle() const noexcept`
// (its queued work has finished; never blocks) and a destructor that may wait
// for its own work only.
template <class Plan>
class PlanCache {
public:
    explicit PlanCache(std::size_t capacity) : capacity_(capacity) {}

    std::shared_ptr<Plan> find(const PlanKey& key) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = index_.find(key);
        if (it == index_.end()) return nullptr;
        lru_.splice(lru_.begin(), lru_, it->second);
        return it->second->second;
    }

    // Stores `plan` unless a racing thread stored one first (that one is
    // returned). Plans pushed out of the LRU are retired, not destroyed.
    std::shared_ptr<Plan> insert(const PlanKey& key, std::shared_ptr<Plan> plan) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = index_.find(key);
        if (it != index_.end()) return it->second->second;
        lru_.emplace_front(key, plan);
        index_[key] = lru_.begin();
        while (lru_.size() > capacity_) {
            index_.erase(lru_.back().first);
            retired_.push_back(std::move(lru_.back().second));
            lru_.pop_back();
        }
        return plan;
    }

    // Destroys the retired plans nobody uses and whose work is done; with
    // `wait`, those nobody uses even if their work is still queued (their
    // destructors wait for it). The destructors run outside the lock.
    void reap(bool wait) {
        std::vector<std::shared_ptr<Plan>> doomed;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            for (auto it = retired_.begin(); it != retired_.end();) {
                // use_count 1: only this list holds it (no call is using it).
                if (it->use_count() == 1 && (wait || (*it)->idle())) {
                    doomed.push_back(std::move(*it));
                    it = retired_.erase(it);
                } else {
                    ++it;
                }
            }
        }
        destroyed_.fetch_add(static_cast<int64_t>(doomed.size()));
        doomed.clear();  // here, outside the lock
    }

    // Retires every cached plan and destroys those nobody uses (waiting for
    // their own work); plans still in use are destroyed by a later reap.
    void clear() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            for (auto& entry : lru_) retired_.push_back(std::move(entry.second));
            lru_.clear();
            index_.clear();
        }
        reap(true);
    }

    PlanCacheStats stats() {
        std::lock_guard<std::mutex> lock(mutex_);
        PlanCacheStats s;
        s.cached = static_cast<int64_t>(lru_.size());
        s.retired = static_cast<int64_t>(retired_.size());
        s.destroyed = destroyed_.load();
        return s;
    }

private:
    std::size_t capacity_;
    std::mutex mutex_;
    std::list<std::pair<PlanKey, std::shared_ptr<Plan>>> lru_;  // front = most recent
    std::map<PlanKey, typename std::list<std::pair<PlanKey, std::shared_ptr<Plan>>>::iterator>
        index_;
    std::list<std::shared_ptr<Plan>> retired_;
    std::atomic<int64_t> destroyed_{0};
};

}  // namespace gpu
}  // namespace optdiff
