// Kernels of the optdiff CUDA back end (see kernels.hpp for the contracts).
//
// Each kernel is a small functor evaluated for one pixel p of a (padded)
// image and one "lane" of the batch: the thread loops over samples
// b = lane, lane + lanes, ... so that per-pixel tables (transfer function,
// modulation, tilt) are loaded once per thread. Grid: x over pixels, y over
// lanes. The sampling kernels, which have no images, use a 1-D grid-stride
// loop over a 64-bit index instead (`launch_flat`). Compiled by nvcc; the same file also compiles
// as plain C++ (then `launch` is a host loop), which is how the orchestration is tested on machines
// without a GPU.
#include "kernels.hpp"

#include <algorithm>
#include <cstdint>

namespace optdiff {
namespace gpu {

namespace {

constexpr int kThreads = 256;
// Enough blocks to fill the largest GPUs several times over; beyond that a
// thread handles several samples (reusing its per-pixel table values).
constexpr int64_t kTargetBlocks = 8192;
constexpr int64_t kMaxLanes = 65535;       // gridDim.y limit
constexpr int64_t kMaxReduceGroups = 512;  // bounds the partial-sum buffer
// Grid-stride kernels: 2M threads keep any GPU busy; each thread then takes
// every (gridDim.x * kThreads)-th index, so counts beyond 2^31 work.
constexpr int64_t kMaxFlatBlocks = kTargetBlocks;

int64_t lanes_for(int64_t npix, int64_t batch, int64_t cap) {
    const int64_t blocks_x = std::max<int64_t>(1, (npix + kThreads - 1) / kThreads);
    int64_t lanes = (kTargetBlocks + blocks_x - 1) / blocks_x;
    lanes = std::min(lanes, batch);
    lanes = std::min(lanes, cap);
    return std::max<int64_t>(lanes, 1);
}

#if defined(__CUDACC__)

template <class F>
__global__ void __launch_bounds__(kThreads) grid_kernel(const F f, int npix) {
    const int p = static_cast<int>(blockIdx.x) * kThreads + static_cast<int>(threadIdx.x);
    if (p < npix)
        f(static_cast<int64_t>(p), static_cast<int64_t>(blockIdx.y),
          static_cast<int64_t>(gridDim.y));
}

template <class F>
void launch(const F& f, int64_t npix, int64_t lanes, Stream stream, const char* name) {
    if (npix <= 0 || lanes <= 0) return;
    const dim3 grid(static_cast<unsigned>((npix + kThreads - 1) / kThreads),
                    static_cast<unsigned>(lanes));
    grid_kernel<F>
        <<<grid, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(f, static_cast<int>(npix));
    check_launch(name);
}

template <class F>
__global__ void __launch_bounds__(kThreads) flat_kernel(const F f, int64_t total) {
    const int64_t step = static_cast<int64_t>(gridDim.x) * kThreads;
    for (int64_t i =
             static_cast<int64_t>(blockIdx.x) * kThreads + static_cast<int64_t>(threadIdx.x);
         i < total; i += step)
        f(i);
}

// f(i) for i in [0, total).
template <class F>
void launch_flat(const F& f, int64_t total, Stream stream, const char* name) {
    if (total <= 0) return;
    const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, kMaxFlatBlocks);
    flat_kernel<F>
        <<<static_cast<unsigned>(blocks), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(f,
                                                                                            total);
    check_launch(name);
}

#else  // host emulation: the same functors, run by a loop

template <class F>
void launch(const F& f, int64_t npix, int64_t lanes, Stream, const char*) {
    for (int64_t lane = 0; lane < lanes; ++lane)
        for (int64_t p = 0; p < npix; ++p) f(p, lane, lanes);
}

template <class F>
void launch_flat(const F& f, int64_t total, Stream, const char*) {
    for (int64_t i = 0; i < total; ++i) f(i);
}

#endif

template <class T>
OPTDIFF_HD cplx<T> apply_table(cplx<T> v, cplx<T> t, TableOp op) {
    if (op == TableOp::Multiply) return cmul(v, t);
    if (op == TableOp::ConjMultiply) return modulation_backward(v, t);
    return v;
}

// ---------------------------------------------------------------------------

template <class T>
struct LayerModulationFn {
    const T* phi;
    const cplx<T>* tilt;
    cplx<T>* m;
    OPTDIFF_HD void operator()(int64_t p, int64_t, int64_t) const {
        const cplx<T> t = tilt ? tilt[p] : cplx<T>{T(1), T(0)};
        m[p] = layer_modulation(phi[p], t);
    }
};

// S: cplx<T> (fields) or T (real amplitudes).
template <class T, class S>
struct PadLoadFn {
    Strided<const S> src;
    const cplx<T>* table;
    TableOp op;
    Strided<cplx<T>> save;
    Strided<cplx<T>> dst;
    int64_t n, np, batch;
    OPTDIFF_HD void operator()(int64_t p, int64_t lane, int64_t lanes) const {
        const int64_t r = p / np;
        const int64_t c = p - r * np;
        if (r < n && c < n) {
            const cplx<T> t = (op != TableOp::None) ? table[r * n + c] : cplx<T>{T(1), T(0)};
            for (int64_t b = lane; b < batch; b += lanes) {
                const cplx<T> v = apply_table(as_field<T>(src.at(b, r, c)), t, op);
                if (save.ptr) save.at(b, r, c) = v;
                dst.at(b, r, c) = v;
            }
        } else {
            for (int64_t b = lane; b < batch; b += lanes) dst.at(b, r, c) = cplx<T>{T(0), T(0)};
        }
    }
};

template <class T>
struct IntensityBackwardPadFn {
    Strided<const cplx<T>> e;
    const T* g;
    Strided<cplx<T>> dst;
    int64_t n, np, batch;
    OPTDIFF_HD void operator()(int64_t p, int64_t lane, int64_t lanes) const {
        const int64_t r = p / np;
        const int64_t c = p - r * np;
        if (r < n && c < n) {
            for (int64_t b = lane; b < batch; b += lanes)
                dst.at(b, r, c) = intensity_backward(e.at(b, r, c), g[(b * n + r) * n + c]);
        } else {
            for (int64_t b = lane; b < batch; b += lanes) dst.at(b, r, c) = cplx<T>{T(0), T(0)};
        }
    }
};

template <class T>
struct MultiplyTransferFn {
    Strided<cplx<T>> data;
    const cplx<T>* h;
    bool conjugate;
    int64_t np, batch;
    OPTDIFF_HD void operator()(int64_t p, int64_t lane, int64_t lanes) const {
        const int64_t r = p / np;
        const int64_t c = p - r * np;
        const cplx<T> hv = h[p];
        for (int64_t b = lane; b < batch; b += lanes) {
            cplx<T>& x = data.at(b, r, c);
            x = conjugate ? cmul_conj(x, hv) : cmul(x, hv);
        }
    }
};

template <class T>
struct CropStoreFn {
    Strided<const cplx<T>> src;
    const cplx<T>* table;
    TableOp op;
    Strided<cplx<T>> dst;
    int64_t n, batch;
    OPTDIFF_HD void operator()(int64_t p, int64_t lane, int64_t lanes) const {
        const int64_t r = p / n;
        const int64_t c = p - r * n;
        const cplx<T> t = (op != TableOp::None) ? table[p] : cplx<T>{T(1), T(0)};
        for (int64_t b = lane; b < batch; b += lanes)
            dst.at(b, r, c) = apply_table(src.at(b, r, c), t, op);
    }
};

template <class T>
struct CameraFn {
    Strided<const cplx<T>> e;
    T* inten;
    Strided<cplx<T>> camera;
    Strided<cplx<T>> save;
    int* nonfinite;
    int64_t n, batch;
    OPTDIFF_HD void operator()(int64_t p, int64_t lane, int64_t lanes) const {
        const int64_t r = p / n;
        const int64_t c = p - r * n;
        bool ok = true;
        for (int64_t b = lane; b < batch; b += lanes) {
            const cplx<T> v = e.at(b, r, c);
            if (inten) {
                const T i = intensity(v);
                inten[b * n * n + p] = i;
                ok = ok && is_finite_value(i);
            }
            if (camera.ptr) camera.at(b, r, c) = v;
            if (save.ptr) save.at(b, r, c) = v;
        }
        if (!ok && nonfinite)
            *nonfinite = 1;  // every writer stores the same value: no atomics needed
    }
};

template <class T>
struct LayerBackwardFn {
    Strided<const cplx<T>> grad_w;
    Strided<const cplx<T>> w;
    const cplx<T>* m;
    double* partial;
    Strided<cplx<T>> dst;
    int64_t n, np_dst, batch;
    OPTDIFF_HD void operator()(int64_t p, int64_t lane, int64_t lanes) const {
        const int64_t r = p / np_dst;
        const int64_t c = p - r * np_dst;
        if (r < n && c < n) {
            const int64_t q = r * n + c;
            const cplx<T> mv = m[q];
            double acc = 0.0;
            for (int64_t b = lane; b < batch; b += lanes) {
                const cplx<T> gw = grad_w.at(b, r, c);
                acc += static_cast<double>(phase_gradient(gw, w.at(b, r, c)));
                if (dst.ptr) dst.at(b, r, c) = modulation_backward(gw, mv);
            }
            partial[lane * n * n + q] = acc;
        } else if (dst.ptr) {
            for (int64_t b = lane; b < batch; b += lanes) dst.at(b, r, c) = cplx<T>{T(0), T(0)};
        }
    }
};

template <class T>
struct InnerPartialFn {
    Strided<const cplx<T>> a, v;
    double* partial;
    int64_t n, batch;
    OPTDIFF_HD void operator()(int64_t p, int64_t lane, int64_t lanes) const {
        const int64_t r = p / n;
        const int64_t c = p - r * n;
        double acc = 0.0;
        for (int64_t b = lane; b < batch; b += lanes) {
            const cplx<T> x = a.at(b, r, c), y = v.at(b, r, c);
            acc += static_cast<double>(x.re) * static_cast<double>(y.re) +
                   static_cast<double>(x.im) * static_cast<double>(y.im);
        }
        partial[lane * n * n + p] = acc;
    }
};

template <class T>
struct MseResidualFn {
    const T* inten;
    const T* target;
    T grad_scale;
    T* g;
    double* partial;
    int64_t npix, batch;
    OPTDIFF_HD void operator()(int64_t p, int64_t lane, int64_t lanes) const {
        double acc = 0.0;
        for (int64_t b = lane; b < batch; b += lanes) {
            const int64_t i = b * npix + p;
            const T d = intensity_residual(inten[i], target[i]);
            acc += static_cast<double>(d) * static_cast<double>(d);
            g[i] = grad_scale * d;
        }
        partial[lane * npix + p] = acc;
    }
};

template <class T>
struct ReduceGroupsFn {
    const double* partial;
    int64_t groups, npix;
    T* out;
    bool accumulate;
    OPTDIFF_HD void operator()(int64_t p, int64_t, int64_t) const {
        double s = 0.0;
        for (int64_t g = 0; g < groups; ++g) s += partial[g * npix + p];
        out[p] = accumulate ? static_cast<T>(static_cast<double>(out[p]) + s) : static_cast<T>(s);
    }
};

template <class T>
struct BinForwardFn {
    const T* in;
    T* out;
    int64_t batch, n, h, w, k, r0, c0;
    OPTDIFF_HD void operator()(int64_t p, int64_t lane, int64_t lanes) const {
        const int64_t i = p / w;
        const int64_t j = p - i * w;
        const int64_t rs = r0 + i * k;
        const int64_t cs = c0 + j * k;
        for (int64_t b = lane; b < batch; b += lanes) {
            const T* img = in + b * n * n;
            double s = 0.0;
            for (int64_t dr = 0; dr < k; ++dr)
                for (int64_t dc = 0; dc < k; ++dc)
                    s += static_cast<double>(img[(rs + dr) * n + cs + dc]);
            out[b * h * w + p] = static_cast<T>(s / static_cast<double>(k * k));
        }
    }
};

template <class T>
struct BinBackwardFn {
    const T* gout;
    T* gin;
    int64_t batch, n, h, w, k, r0, c0;
    OPTDIFF_HD void operator()(int64_t p, int64_t lane, int64_t lanes) const {
        const int64_t r = p / n;
        const int64_t c = p - r * n;
        const bool inside = r >= r0 && r < r0 + h * k && c >= c0 && c < c0 + w * k;
        const int64_t q = inside ? ((r - r0) / k) * w + (c - c0) / k : 0;
        const T scale = static_cast<T>(1.0 / static_cast<double>(k * k));
        for (int64_t b = lane; b < batch; b += lanes)
            gin[b * n * n + p] = inside ? gout[b * h * w + q] * scale : T(0);
    }
};

// Noise number e of a stream lies in Philox counter e / 4, lane e % 4.
// Calls op(i, z) for the elements i of [0, count) (noise numbers offset + i)
// that counter j0 + k produces. Unsigned arithmetic: offset + count may reach
// 2^64, and 4j + 3 < 2^64 for every counter.
template <class Op>
struct NoiseCounterFn {
    Op op;
    uint64_t seed, stream, offset, count, j0;
    OPTDIFF_HD void operator()(int64_t k) const {
        const uint64_t j = j0 + static_cast<uint64_t>(k);
        float z[4];
        normal4(seed, stream, j, z);
        for (uint64_t l = 0; l < 4; ++l) {
            const uint64_t e = 4 * j + l;
            if (e >= offset && e - offset < count) op(static_cast<int64_t>(e - offset), z[l]);
        }
    }
};

// The same op per element with z = 0 (sigma == 0: no noise evaluated).
template <class Op>
struct NoNoiseFn {
    Op op;
    OPTDIFF_HD void operator()(int64_t i) const { op(i, 0.0f); }
};

template <class T>
struct StoreNormalOp {
    T* out;
    OPTDIFF_HD void operator()(int64_t i, float z) const { out[i] = static_cast<T>(z); }
};

// Reads x[i] and v[i] before writing out[i]: out may be x or v.
template <class T>
struct DdpmOp {
    const T* x;
    const T* v;
    T* out;
    T c1, c2, sigma, eps_scale, eps_offset;
    OPTDIFF_HD void operator()(int64_t i, float z) const {
        out[i] =
            ddpm_update_value(x[i], v[i], static_cast<T>(z), c1, c2, sigma, eps_scale, eps_offset);
    }
};

template <class Op>
void launch_noise(const Op& op, int64_t count, uint64_t seed, uint64_t stream, uint64_t offset,
                  Stream cuda_stream, const char* name) {
    if (count <= 0) return;
    const uint64_t j0 = offset / 4;
    const uint64_t j1 = (offset + static_cast<uint64_t>(count) - 1) / 4;  // mod 2^64: exact
    launch_flat(NoiseCounterFn<Op>{op, seed, stream, offset, static_cast<uint64_t>(count), j0},
                static_cast<int64_t>(j1 - j0 + 1), cuda_stream, name);
}

template <class T>
struct FiniteFn {
    const T* data;
    int64_t count, span;
    int* flag;
    OPTDIFF_HD void operator()(int64_t p, int64_t, int64_t) const {
        bool ok = true;
        for (int64_t i = p; i < count; i += span) ok = ok && is_finite_value(data[i]);
        if (!ok) *flag = 1;  // every writer stores the same value: no atomics needed
    }
};

}  // namespace

// ---------------------------------------------------------------------------

template <class T>
void launch_layer_modulation(const T* phi, const cplx<T>* tilt, cplx<T>* m, int64_t npix,
                             Stream stream) {
    launch(LayerModulationFn<T>{phi, tilt, m}, npix, 1, stream, "layer_modulation");
}

template <class T>
void launch_pad_load(Strided<const cplx<T>> src, const cplx<T>* table, TableOp op,
                     Strided<cplx<T>> save, Strided<cplx<T>> dst, int64_t n, int64_t np,
                     int64_t batch, Stream stream) {
    const int64_t npix = np * np;
    launch(PadLoadFn<T, cplx<T>>{src, table, op, save, dst, n, np, batch}, npix,
           lanes_for(npix, batch, kMaxLanes), stream, "pad_load");
}

template <class T>
void launch_pad_load(Strided<const T> src, const cplx<T>* table, TableOp op, Strided<cplx<T>> save,
                     Strided<cplx<T>> dst, int64_t n, int64_t np, int64_t batch, Stream stream) {
    const int64_t npix = np * np;
    launch(PadLoadFn<T, T>{src, table, op, save, dst, n, np, batch}, npix,
           lanes_for(npix, batch, kMaxLanes), stream, "pad_load_real");
}

template <class T>
void launch_intensity_backward_pad(Strided<const cplx<T>> e, const T* g, Strided<cplx<T>> dst,
                                   int64_t n, int64_t np, int64_t batch, Stream stream) {
    const int64_t npix = np * np;
    launch(IntensityBackwardPadFn<T>{e, g, dst, n, np, batch}, npix,
           lanes_for(npix, batch, kMaxLanes), stream, "intensity_backward_pad");
}

template <class T>
void launch_multiply_transfer(Strided<cplx<T>> data, const cplx<T>* h, bool conjugate, int64_t np,
                              int64_t batch, Stream stream) {
    const int64_t npix = np * np;
    launch(MultiplyTransferFn<T>{data, h, conjugate, np, batch}, npix,
           lanes_for(npix, batch, kMaxLanes), stream, "multiply_transfer");
}

template <class T>
void launch_crop_store(Strided<const cplx<T>> src, const cplx<T>* table, TableOp op,
                       Strided<cplx<T>> dst, int64_t n, int64_t batch, Stream stream) {
    const int64_t npix = n * n;
    launch(CropStoreFn<T>{src, table, op, dst, n, batch}, npix, lanes_for(npix, batch, kMaxLanes),
           stream, "crop_store");
}

template <class T>
void launch_camera(Strided<const cplx<T>> e, T* intensity_out, Strided<cplx<T>> camera,
                   Strided<cplx<T>> save, int* nonfinite, int64_t n, int64_t batch, Stream stream) {
    const int64_t npix = n * n;
    launch(CameraFn<T>{e, intensity_out, camera, save, nonfinite, n, batch}, npix,
           lanes_for(npix, batch, kMaxLanes), stream, "camera");
}

int64_t backward_groups(int64_t n, int64_t np_dst, int64_t batch) {
    const int64_t side = std::max(n, np_dst);
    return lanes_for(side * side, batch, kMaxReduceGroups);
}

template <class T>
void launch_layer_backward(Strided<const cplx<T>> grad_w, Strided<const cplx<T>> w,
                           const cplx<T>* m, double* partial, int64_t groups, Strided<cplx<T>> dst,
                           int64_t n, int64_t np_dst, int64_t batch, Stream stream) {
    const int64_t side = dst.ptr ? np_dst : n;
    launch(LayerBackwardFn<T>{grad_w, w, m, partial, dst, n, side, batch}, side * side, groups,
           stream, "layer_backward");
}

template <class T>
void launch_inner_partial(Strided<const cplx<T>> a, Strided<const cplx<T>> v, double* partial,
                          int64_t groups, int64_t n, int64_t batch, Stream stream) {
    launch(InnerPartialFn<T>{a, v, partial, n, batch}, n * n, groups, stream, "inner_partial");
}

template <class T>
void launch_mse_residual(const T* intensity, const T* target, T grad_scale, T* g, double* partial,
                         int64_t groups, int64_t npix, int64_t batch, Stream stream) {
    launch(MseResidualFn<T>{intensity, target, grad_scale, g, partial, npix, batch}, npix, groups,
           stream, "mse_residual");
}

template <class T>
void launch_reduce_groups(const double* partial, int64_t groups, int64_t npix, T* out,
                          bool accumulate, Stream stream) {
    launch(ReduceGroupsFn<T>{partial, groups, npix, out, accumulate}, npix, 1, stream,
           "reduce_groups");
}

template <class T>
void launch_bin_forward(const T* in, T* out, int64_t batch, int64_t n, int64_t h, int64_t w,
                        int64_t k, Stream stream) {
    const int64_t npix = h * w;
    launch(BinForwardFn<T>{in, out, batch, n, h, w, k, (n - h * k) / 2, (n - w * k) / 2}, npix,
           lanes_for(npix, batch, kMaxLanes), stream, "bin_forward");
}

template <class T>
void launch_bin_backward(const T* grad_out, T* grad_in, int64_t batch, int64_t n, int64_t h,
                         int64_t w, int64_t k, Stream stream) {
    const int64_t npix = n * n;
    launch(BinBackwardFn<T>{grad_out, grad_in, batch, n, h, w, k, (n - h * k) / 2, (n - w * k) / 2},
           npix, lanes_for(npix, batch, kMaxLanes), stream, "bin_backward");
}

template <class T>
void launch_standard_normal(T* out, int64_t count, uint64_t seed, uint64_t stream, uint64_t offset,
                            Stream cuda_stream) {
    launch_noise(StoreNormalOp<T>{out}, count, seed, stream, offset, cuda_stream,
                 "standard_normal");
}

template <class T>
void launch_ddpm_update(const T* x, const T* v, T* out, int64_t count, const DdpmStep& step,
                        uint64_t seed, uint64_t stream, uint64_t offset, Stream cuda_stream) {
    const DdpmOp<T> op{x,
                       v,
                       out,
                       static_cast<T>(step.c1),
                       static_cast<T>(step.c2),
                       static_cast<T>(step.sigma),
                       static_cast<T>(step.eps_scale),
                       static_cast<T>(step.eps_offset)};
    if (step.sigma == 0.0) {  // the last step: the CPU draws no noise either
        launch_flat(NoNoiseFn<DdpmOp<T>>{op}, count, cuda_stream, "ddpm_update");
        return;
    }
    launch_noise(op, count, seed, stream, offset, cuda_stream, "ddpm_update");
}

template <class T>
bool all_finite(const T* data, int64_t count, Stream stream) {
    if (count <= 0) return true;
    Workspace<int> flag(1, stream);
    zero_async(flag.get(), sizeof(int), stream);
    const int64_t span = std::min<int64_t>(count, int64_t(1) << 22);
    launch(FiniteFn<T>{data, count, span, flag.get()}, span, 1, stream, "all_finite");
    int host_flag = 0;
    copy_to_host_sync(&host_flag, flag.get(), sizeof(int), stream);
    return host_flag == 0;
}

// ---------------------------------------------------------------------------

#define OPTDIFF_INSTANTIATE(T)                                                                     \
    template void launch_layer_modulation<T>(const T*, const cplx<T>*, cplx<T>*, int64_t, Stream); \
    template void launch_pad_load<T>(Strided<const cplx<T>>, const cplx<T>*, TableOp,              \
                                     Strided<cplx<T>>, Strided<cplx<T>>, int64_t, int64_t,         \
                                     int64_t, Stream);                                             \
    template void launch_pad_load<T>(Strided<const T>, const cplx<T>*, TableOp, Strided<cplx<T>>,  \
                                     Strided<cplx<T>>, int64_t, int64_t, int64_t, Stream);         \
    template void launch_intensity_backward_pad<T>(                                                \
        Strided<const cplx<T>>, const T*, Strided<cplx<T>>, int64_t, int64_t, int64_t, Stream);    \
    template void launch_multiply_transfer<T>(Strided<cplx<T>>, const cplx<T>*, bool, int64_t,     \
                                              int64_t, Stream);                                    \
    template void launch_crop_store<T>(Strided<const cplx<T>>, const cplx<T>*, TableOp,            \
                                       Strided<cplx<T>>, int64_t, int64_t, Stream);                \
    template void launch_camera<T>(Strided<const cplx<T>>, T*, Strided<cplx<T>>, Strided<cplx<T>>, \
                                   int*, int64_t, int64_t, Stream);                                \
    template void launch_layer_backward<T>(Strided<const cplx<T>>, Strided<const cplx<T>>,         \
                                           const cplx<T>*, double*, int64_t, Strided<cplx<T>>,     \
                                           int64_t, int64_t, int64_t, Stream);                     \
    template void launch_reduce_groups<T>(const double*, int64_t, int64_t, T*, bool, Stream);      \
    template void launch_inner_partial<T>(Strided<const cplx<T>>, Strided<const cplx<T>>, double*, \
                                          int64_t, int64_t, int64_t, Stream);                      \
    template void launch_mse_residual<T>(const T*, const T*, T, T*, double*, int64_t, int64_t,     \
                                         int64_t, Stream);                                         \
    template void launch_bin_forward<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t, \
                                        Stream);                                                   \
    template void launch_bin_backward<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t,         \
                                         int64_t, Stream);                                         \
    template void launch_standard_normal<T>(T*, int64_t, uint64_t, uint64_t, uint64_t, Stream);    \
    template void launch_ddpm_update<T>(const T*, const T*, T*, int64_t, const DdpmStep&,          \
                                        uint64_t, uint64_t, uint64_t, Stream);                     \
    template bool all_finite<T>(const T*, int64_t, Stream);

OPTDIFF_INSTANTIATE(float)
OPTDIFF_INSTANTIATE(double)

#undef OPTDIFF_INSTANTIATE

}  // namespace gpu
}  // namespace optdiff
