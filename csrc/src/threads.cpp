#include "threads.hpp"

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <thread>

#include "fft_fftw.hpp"
#include "optdiff/optdiff.hpp"

#ifdef OPTDIFF_HAVE_OPENMP
#include <omp.h>
#endif

namespace optdiff {

namespace {
int default_threads() {
#ifdef OPTDIFF_HAVE_OPENMP
    return std::max(1, omp_get_max_threads());
#else
    return 1;
#endif
}
std::atomic<int> global_threads{0};  // 0: not set yet, use default_threads()
}  // namespace

void set_num_threads(int n) {
    if (n < 1) throw std::invalid_argument("number of threads must be at least 1");
    global_threads.store(n);
}

int get_num_threads() {
    const int g = global_threads.load();
    return g > 0 ? g : default_threads();
}

int resolve_threads(int requested, int64_t work_items) {
    if (requested < 0)
        throw std::invalid_argument("nthreads must be >= 1 (or None for the default)");
    int t = requested > 0 ? requested : get_num_threads();
#ifndef OPTDIFF_HAVE_OPENMP
    t = 1;
#endif
    if (work_items < t) t = static_cast<int>(std::max<int64_t>(1, work_items));
    return t;
}

void set_planner_effort(int effort) { fft::set_planner_effort(effort); }
int get_planner_effort() { return fft::planner_effort(); }
void set_periodic_path(int path) { fft::set_periodic_path(path); }
int get_periodic_path() { return fft::periodic_path(); }

}  // namespace optdiff
