#include "fft_fftw.hpp"

#include <fftw3.h>

#include <atomic>
#include <map>
#include <mutex>
#include <new>
#include <stdexcept>
#include <tuple>

namespace optdiff {
namespace fft {

namespace {

std::mutex planner_mutex;  // guards every call into FFTW's planner
std::atomic<int> effort{1};
// FFTW reuses wisdom from timed (MEASURE/PATIENT) planning even for ESTIMATE plans, so an
// "estimate" plan made after timed ones could differ from a fresh process's: set when timed
// plans have added wisdom, cleared when it is forgotten (under planner_mutex).
bool timed_wisdom = false;

unsigned planner_flags() {
    switch (effort.load()) {
        case 0: return FFTW_ESTIMATE;
        case 2: return FFTW_PATIENT;
        default: return FFTW_MEASURE;
    }
}

using Key = std::tuple<int64_t, int64_t, int64_t, int, int>;  // len, howmany, dist, sign, effort

template <class T>
struct Traits;

template <>
struct Traits<double> {
    using complex_t = fftw_complex;
    using plan_t = fftw_plan;
    static plan_t many(int rank, const int* n, int howmany, complex_t* data, int stride, int dist,
                       int sign, unsigned flags) {
        return fftw_plan_many_dft(rank, n, howmany, data, nullptr, stride, dist, data, nullptr,
                                  stride, dist, sign, flags);
    }
    static void execute(void* p, cplx<double>* d) {
        auto* c = reinterpret_cast<complex_t*>(d);
        fftw_execute_dft(static_cast<plan_t>(p), c, c);
    }
    static complex_t* alloc(size_t n) { return fftw_alloc_complex(n); }
    static void free(complex_t* p) { fftw_free(p); }
};

template <>
struct Traits<float> {
    using complex_t = fftwf_complex;
    using plan_t = fftwf_plan;
    static plan_t many(int rank, const int* n, int howmany, complex_t* data, int stride, int dist,
                       int sign, unsigned flags) {
        return fftwf_plan_many_dft(rank, n, howmany, data, nullptr, stride, dist, data, nullptr,
                                   stride, dist, sign, flags);
    }
    static void execute(void* p, cplx<float>* d) {
        auto* c = reinterpret_cast<complex_t*>(d);
        fftwf_execute_dft(static_cast<plan_t>(p), c, c);
    }
    static complex_t* alloc(size_t n) { return fftwf_alloc_complex(n); }
    static void free(complex_t* p) { fftwf_free(p); }
};

template <class T>
std::map<Key, void*>& cache() {
    static std::map<Key, void*> c;  // plans live for the whole process
    return c;
}

}  // namespace

template <class T>
void Plan<T>::execute(cplx<T>* data) const {
    Traits<T>::execute(handle, data);
}

template <class T>
Plan<T> get_plan_2d(int64_t len, int sign) {
    return get_plan<T>(len, 0, len * len, sign);  // howmany 0 marks the 2-D plan
}

template <class T>
Plan<T> get_plan(int64_t len, int64_t howmany, int64_t dist, int sign) {
    using Tr = Traits<T>;
    const int fl = static_cast<int>(planner_flags());
    const Key key{len, howmany, dist, sign, fl};
    std::lock_guard<std::mutex> lock(planner_mutex);
    auto& c = cache<T>();
    auto it = c.find(key);
    if (it != c.end()) return Plan<T>{it->second};

    // ESTIMATE must not depend on what this process timed before: the same plan as in a fresh
    // process is what makes "estimate" bitwise reproducible across processes.
    if (fl == static_cast<int>(FFTW_ESTIMATE)) {
        if (timed_wisdom) {
            fftw_forget_wisdom();
            fftwf_forget_wisdom();
            timed_wisdom = false;
        }
    } else {
        timed_wisdom = true;
    }
    // Plan on scratch memory (FFTW_MEASURE overwrites its arrays), aligned
    // like every workspace so the plan may run on them.
    const bool two_d = howmany == 0;
    const size_t total = static_cast<size_t>(two_d ? 1 : howmany) * static_cast<size_t>(dist);
    typename Tr::complex_t* scratch = Tr::alloc(total);
    if (!scratch) throw std::bad_alloc();
    const int n = static_cast<int>(len);
    const int fsign = sign < 0 ? FFTW_FORWARD : FFTW_BACKWARD;
    const int dims[2] = {n, n};
    typename Tr::plan_t p =
        two_d ? Tr::many(2, dims, 1, scratch, 1, n * n, fsign, static_cast<unsigned>(fl))
              : Tr::many(1, &n, static_cast<int>(howmany), scratch, 1, static_cast<int>(dist),
                         fsign, static_cast<unsigned>(fl));
    Tr::free(scratch);
    if (!p) throw std::runtime_error("FFTW could not create a plan for this grid size");
    c.emplace(key, static_cast<void*>(p));
    return Plan<T>{static_cast<void*>(p)};
}

void* aligned_alloc_bytes(size_t bytes) {
    void* p = fftw_malloc(bytes);
    if (!p && bytes) throw std::bad_alloc();
    return p;
}

void aligned_free(void* p) { fftw_free(p); }

void set_planner_effort(int e) {
    if (e < 0 || e > 2)
        throw std::invalid_argument(
            "planner effort must be 0 (estimate), 1 (measure) or 2 (patient)");
    effort.store(e);
}

int planner_effort() { return effort.load(); }

namespace {
std::atomic<int> periodic(0);
}

void set_periodic_path(int p) {
    if (p < 0 || p > 2)
        throw std::invalid_argument("periodic path must be 0 (auto), 1 (2-D) or 2 (blocked)");
    periodic.store(p);
}

int periodic_path() { return periodic.load(); }

template struct Plan<float>;
template struct Plan<double>;
template Plan<float> get_plan<float>(int64_t, int64_t, int64_t, int);
template Plan<double> get_plan<double>(int64_t, int64_t, int64_t, int);
template Plan<float> get_plan_2d<float>(int64_t, int);
template Plan<double> get_plan_2d<double>(int64_t, int);

}  // namespace fft
}  // namespace optdiff
