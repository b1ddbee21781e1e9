// Batched single-hop propagation: threads over the batch, one padded buffer
// per thread, tilt fused into the load (forward) or the store (adjoint).
#include <stdexcept>
#include <vector>

#include "hop.hpp"
#include "optdiff/optdiff.hpp"
#include "threads.hpp"

#ifdef OPTDIFF_HAVE_OPENMP
#include <omp.h>
#endif

namespace optdiff {

template <class T>
Propagator<T>::Propagator(int64_t n, const PropagationSpec& spec)
    : plan_(new HopPlan<T>(n, spec)) {}
template <class T>
Propagator<T>::~Propagator() = default;
template <class T>
Propagator<T>::Propagator(Propagator&&) noexcept = default;
template <class T>
Propagator<T>& Propagator<T>::operator=(Propagator&&) noexcept = default;

template <class T>
int64_t Propagator<T>::n() const {
    return plan_->n;
}
template <class T>
const PropagationSpec& Propagator<T>::spec() const {
    return plan_->spec;
}

template <class T>
std::vector<cplx<T>> Propagator<T>::transfer_function() const {
    return make_transfer_function<T>(plan_->spec, plan_->n, /*normalised=*/false);
}

namespace {
template <class T>
void run_batch(const HopPlan<T>& hop, const cplx<T>* in, cplx<T>* out, int64_t batch,
               int num_threads, bool adjoint) {
    if (batch < 0) throw std::invalid_argument("batch must be >= 0");
    if (batch == 0) return;
    const int nt = resolve_threads(num_threads, batch);
    const int64_t nn = hop.n * hop.n;
    WorkspaceSize size;
    hop.add_to(size);
    std::vector<Workspace<T>> ws;
    ws.reserve(static_cast<size_t>(nt));
    for (int t = 0; t < nt; ++t) ws.emplace_back(size.buf, size.cols);
    const cplx<T>* tilt = hop.tilt.empty() ? nullptr : hop.tilt.data();

#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t b = 0; b < batch; ++b) {
#ifdef OPTDIFF_HAVE_OPENMP
        Workspace<T>& w = ws[static_cast<size_t>(omp_get_thread_num())];
#else
        Workspace<T>& w = ws[0];
#endif
        const cplx<T>* src = in + b * nn;
        cplx<T>* dst = out + b * nn;
        if (!tilt) {
            hop.run(
                w, adjoint, [&](int64_t i) { return src[i]; },
                [&](int64_t i, cplx<T> v) { dst[i] = v; });
        } else if (!adjoint) {
            hop.run(
                w, false, [&](int64_t i) { return cmul(src[i], tilt[i]); },
                [&](int64_t i, cplx<T> v) { dst[i] = v; });
        } else {
            hop.run(
                w, true, [&](int64_t i) { return src[i]; },
                [&](int64_t i, cplx<T> v) { dst[i] = cmul_conj(v, tilt[i]); });
        }
    }
}
}  // namespace

template <class T>
void Propagator<T>::forward(const cplx<T>* in, cplx<T>* out, int64_t batch, int num_threads) const {
    run_batch(*plan_, in, out, batch, num_threads, false);
}

template <class T>
void Propagator<T>::adjoint(const cplx<T>* in, cplx<T>* out, int64_t batch, int num_threads) const {
    run_batch(*plan_, in, out, batch, num_threads, true);
}

template class Propagator<float>;
template class Propagator<double>;

}  // namespace optdiff
