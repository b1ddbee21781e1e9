// Host emulation of fft.hpp with FFTW's advanced interface, whose layout
// semantics (howmany, stride, dist, embed) are those of cufftPlanMany.
// Plans go through the same cache as cuFFT's (plan_cache.hpp), so the keys,
// the eviction and the deferred destruction are tested without a GPU; an
// emulated plan's work is done when execute returns (always idle).
#include <fftw3.h>

#include <memory>
#include <mutex>
#include <stdexcept>

#include "fft.hpp"

namespace optdiff {
namespace gpu {

namespace {
std::mutex& planner_mutex() {  // the FFTW planner is not thread-safe
    static std::mutex m;
    return m;
}
}  // namespace

class FftPlan {
public:
    FftPlan(bool dbl, const FftGeometry& g) : double_(dbl) {
        if (g.rank != 1 && g.rank != 2) throw std::invalid_argument("FFT rank must be 1 or 2");
        if (g.size < 1 || g.batch < 1 || g.stride < 1 || g.dist < 1)
            throw std::invalid_argument("FFT geometry must be positive");
        if (g.rank == 2 && g.stride != 1)
            throw std::invalid_argument("2-D FFTs must be contiguous");
        const int n[2] = {static_cast<int>(g.size), static_cast<int>(g.size)};
        const int extent =
            static_cast<int>(g.rank == 1 ? (g.batch - 1) * g.dist + (g.size - 1) * g.stride + 1
                                         : (g.batch - 1) * g.dist + g.size * g.size);
        std::lock_guard<std::mutex> lock(planner_mutex());
        const unsigned flags = FFTW_ESTIMATE | FFTW_UNALIGNED;
        if (dbl) {
            fftw_complex* buf = fftw_alloc_complex(static_cast<size_t>(extent));
            for (int sign : {FFTW_FORWARD, FFTW_BACKWARD})
                (sign == FFTW_FORWARD ? pd_fwd_ : pd_inv_) = fftw_plan_many_dft(
                    g.rank, n, static_cast<int>(g.batch), buf, n, static_cast<int>(g.stride),
                    static_cast<int>(g.dist), buf, n, static_cast<int>(g.stride),
                    static_cast<int>(g.dist), sign, flags);
            fftw_free(buf);
            if (!pd_fwd_ || !pd_inv_) throw CudaError("FFTW planning failed");
        } else {
            fftwf_complex* buf = fftwf_alloc_complex(static_cast<size_t>(extent));
            for (int sign : {FFTW_FORWARD, FFTW_BACKWARD})
                (sign == FFTW_FORWARD ? pf_fwd_ : pf_inv_) = fftwf_plan_many_dft(
                    g.rank, n, static_cast<int>(g.batch), buf, n, static_cast<int>(g.stride),
                    static_cast<int>(g.dist), buf, n, static_cast<int>(g.stride),
                    static_cast<int>(g.dist), sign, flags);
            fftwf_free(buf);
            if (!pf_fwd_ || !pf_inv_) throw CudaError("FFTW planning failed");
        }
    }
    ~FftPlan() {
        std::lock_guard<std::mutex> lock(planner_mutex());
        if (pd_fwd_) fftw_destroy_plan(pd_fwd_);
        if (pd_inv_) fftw_destroy_plan(pd_inv_);
        if (pf_fwd_) fftwf_destroy_plan(pf_fwd_);
        if (pf_inv_) fftwf_destroy_plan(pf_inv_);
    }
    bool idle() const noexcept { return true; }
    void execute(void* data, bool inverse) {
        if (double_) {
            auto* p = static_cast<fftw_complex*>(data);
            fftw_execute_dft(inverse ? pd_inv_ : pd_fwd_, p, p);
        } else {
            auto* p = static_cast<fftwf_complex*>(data);
            fftwf_execute_dft(inverse ? pf_inv_ : pf_fwd_, p, p);
        }
    }

private:
    bool double_;
    fftw_plan pd_fwd_ = nullptr, pd_inv_ = nullptr;
    fftwf_plan pf_fwd_ = nullptr, pf_inv_ = nullptr;
};

namespace {
PlanCache<FftPlan>& plan_cache() {
    static auto* cache = new PlanCache<FftPlan>(32);  // the capacity of fft_cufft.cpp
    return *cache;
}
}  // namespace

std::shared_ptr<FftPlan> get_fft_plan(bool double_precision, const FftGeometry& g, Stream stream) {
    const StreamIdentity id = stream_identity(stream);
    const PlanKey key(0, double_precision, g.rank, g.size, g.stride, g.dist, g.batch, id.first,
                      id.second);
    plan_cache().reap(false);
    if (auto hit = plan_cache().find(key)) return hit;
    return plan_cache().insert(key, std::make_shared<FftPlan>(double_precision, g));
}
void fft_execute(FftPlan& plan, void* data, bool inverse) { plan.execute(data, inverse); }
void clear_fft_plan_cache() { plan_cache().clear(); }
int fft_plan_cache_size() { return static_cast<int>(plan_cache().stats().cached); }
PlanCacheStats fft_plan_cache_stats() { return plan_cache().stats(); }
int64_t fft_work_bytes(const FftPlan&) { return 0; }
int fft_library_version() noexcept { return 0; }

}  // namespace gpu
}  // namespace optdiff
