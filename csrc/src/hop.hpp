// One free-space hop on the CPU: transfer function + cached FFT plans, and
// the hot loop that runs it on one sample held in a per-thread workspace.
//
// The 2-D transform is done by hand as row transforms and column transforms
// so that (1) rows known to be zero (padding) are never transformed, (2) rows
// cropped away are never computed, and (3) the transfer-function multiply is
// fused into the column pass while a block of columns sits in cache.
// The hop takes a `load` and a `store` functor so callers fuse their
// element-wise work (tilt, modulation, saving the tape, intensity, gradient
// accumulation) into the row passes it makes anyway.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "fft_fftw.hpp"
#include "optdiff/plan.hpp"
#include "passes.hpp"

namespace optdiff {

inline double now_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

constexpr int64_t kRowBlock = 4;  // rows loaded and transformed together
constexpr int64_t kColBlock = 8;  // columns gathered, transformed, multiplied together

// Row stride rounded up to 64 bytes so every row (and block) keeps the
// alignment FFTW planned for.
template <class T>
inline int64_t aligned_stride(int64_t len) {
    const int64_t per = static_cast<int64_t>(64 / sizeof(cplx<T>));
    return (len + per - 1) / per * per;
}

// Per-thread scratch: n rows of the padded width, plus a column block.
template <class T>
struct Workspace {
    cplx<T>* buf = nullptr;
    cplx<T>* cols = nullptr;
    Workspace() = default;
    Workspace(int64_t buf_elems, int64_t col_elems) {
        buf = static_cast<cplx<T>*>(
            fft::aligned_alloc_bytes(sizeof(cplx<T>) * static_cast<size_t>(buf_elems)));
        cols = static_cast<cplx<T>*>(
            fft::aligned_alloc_bytes(sizeof(cplx<T>) * static_cast<size_t>(col_elems)));
    }
    Workspace(const Workspace&) = delete;
    Workspace& operator=(const Workspace&) = delete;
    Workspace(Workspace&& o) noexcept : buf(o.buf), cols(o.cols) { o.buf = o.cols = nullptr; }
    Workspace& operator=(Workspace&& o) noexcept {
        if (this != &o) {
            release();
            buf = o.buf;
            cols = o.cols;
            o.buf = o.cols = nullptr;
        }
        return *this;
    }
    ~Workspace() { release(); }

private:
    void release() {
        if (buf) fft::aligned_free(buf);
        if (cols) fft::aligned_free(cols);
        buf = cols = nullptr;
    }
};

// Sizes a workspace must have to serve a set of hops.
struct WorkspaceSize {
    int64_t buf = 0, cols = 0;
    void cover(int64_t b, int64_t c) {
        buf = std::max(buf, b);
        cols = std::max(cols, c);
    }
};

template <class T>
struct HopPlan {
    PropagationSpec spec;
    int64_t n = 0, np = 0, ld = 0;
    std::vector<cplx<T>> ht;    // normalised transfer function, transposed: ht[c*np + r]
    std::vector<cplx<T>> tilt;  // [n*n], empty when the hop has no tilt
    fft::Plan<T> row_f, row_b, row_tail_f, row_tail_b;
    fft::Plan<T> col_f, col_b, col_tail_f, col_tail_b;
    // Periodic hops may instead use FFTW's own 2-D transform (faster for
    // small grids that fit in cache); chosen by timing both when planned.
    bool use_2d = false;
    fft::Plan<T> f2d, b2d;
    std::vector<cplx<T>> h_rows;  // row-major copy of H for the 2-D path

    HopPlan(int64_t n_, const PropagationSpec& s) : spec(s), n(n_) {
        validate(s, n_);
        np = padded_size(n, s.padding);
        ld = aligned_stride<T>(np);
        const std::vector<cplx<T>> h = make_transfer_function<T>(s, n, /*normalised=*/true);
        ht.resize(h.size());
        for (int64_t r = 0; r < np; ++r)
            for (int64_t c = 0; c < np; ++c)
                ht[static_cast<size_t>(c * np + r)] = h[static_cast<size_t>(r * np + c)];
        if (has_tilt(s)) tilt = make_tilt<T>(s, n);
        row_f = fft::get_plan<T>(np, kRowBlock, ld, -1);
        row_b = fft::get_plan<T>(np, kRowBlock, ld, +1);
        col_f = fft::get_plan<T>(np, kColBlock, ld, -1);
        col_b = fft::get_plan<T>(np, kColBlock, ld, +1);
        if (n % kRowBlock) {
            row_tail_f = fft::get_plan<T>(np, n % kRowBlock, ld, -1);
            row_tail_b = fft::get_plan<T>(np, n % kRowBlock, ld, +1);
        }
        if (np % kColBlock) {
            col_tail_f = fft::get_plan<T>(np, np % kColBlock, ld, -1);
            col_tail_b = fft::get_plan<T>(np, np % kColBlock, ld, +1);
        }
        choose_strategy();
    }

    void add_to(WorkspaceSize& w) const { w.cover(n * ld, kColBlock * ld); }

    // Picks the periodic path: the forced one (set_periodic_path), else the
    // faster of the blocked and the 2-D path, timed once per grid size and
    // remembered so every hop of a stack takes the same path (and a stack
    // can keep its field resident between hops).
    void choose_strategy() {
        if (spec.padding != 1) return;
        h_rows = make_transfer_function<T>(spec, n, /*normalised=*/true);
        f2d = fft::get_plan_2d<T>(n, -1);
        b2d = fft::get_plan_2d<T>(n, +1);
        use_2d = periodic_choice();
        if (!use_2d) std::vector<cplx<T>>().swap(h_rows);
    }

    bool periodic_choice() {
        if (fft::periodic_path() != 0) return fft::periodic_path() == 1;
        static std::mutex mutex;
        static std::map<std::pair<int64_t, int>, bool> chosen;
        const auto key = std::make_pair(n, fft::planner_effort());
        {
            std::lock_guard<std::mutex> lock(mutex);
            auto it = chosen.find(key);
            if (it != chosen.end()) return it->second;
        }
        const bool two_d_faster = time_strategies();
        std::lock_guard<std::mutex> lock(mutex);
        return chosen.emplace(key, two_d_faster)
            .first->second;  // another thread may have been first
    }

    // True when FFTW's 2-D path ran faster than the blocked one.
    bool time_strategies() {
        if (fft::planner_effort() == 0)
            return n <= 128;  // FFTW_ESTIMATE: no timing, a rule of thumb
        WorkspaceSize size;
        add_to(size);
        Workspace<T> ws(size.buf, size.cols);
        for (int64_t i = 0; i < n * ld; ++i) ws.buf[i] = {T(1), T(0)};
        const cplx<T> one{T(1), T(0)};
        cplx<T> sink{T(0), T(0)};
        auto timed = [&](bool two_d) {
            use_2d = two_d;
            double best = 1e30;
            for (int rep = 0; rep < 3; ++rep) {
                const auto t0 = now_seconds();
                run(
                    ws, false, [&](int64_t) { return one; },
                    [&](int64_t, cplx<T> v) { sink.re += v.re; });
                best = std::min(best, now_seconds() - t0);
            }
            return best;
        };
        const double t_blocked = timed(false);
        return timed(true) < t_blocked;
    }

    // Resident path (use_2d only): the field is already in ws.buf as a
    // contiguous n x n array and stays there; callers run their element-wise
    // work on it between hops, saving a load and a store pass per hop.
    bool resident() const { return use_2d; }
    void run_resident(Workspace<T>& ws, bool adjoint) const {
        run_resident_with(ws, adjoint, h_rows.data());
    }
    void run_resident_with(Workspace<T>& ws, bool adjoint, const cplx<T>* rows) const {
        f2d.execute(ws.buf);
        pass::mul(ws.buf, rows, n * n, adjoint);
        b2d.execute(ws.buf);
    }

    // dH/d(distance) in the layouts of ht and h_rows, made on first use
    // (parameter gradients only; thread-safe).
    mutable std::once_flag dz_once;
    mutable std::vector<cplx<T>> dht, dh_rows;
    void ensure_dz_tables() const {
        std::call_once(dz_once, [this] {
            std::vector<cplx<T>> d = make_transfer_function_dz<T>(spec, n, /*normalised=*/true);
            if (use_2d) {
                dh_rows = std::move(d);
                return;
            }
            dht.resize(d.size());
            for (int64_t r = 0; r < np; ++r)
                for (int64_t c = 0; c < np; ++c)
                    dht[static_cast<size_t>(c * np + r)] = d[static_cast<size_t>(r * np + c)];
        });
    }

    // Runs the hop (or its adjoint when `adjoint`, i.e. with conj(H)) on one
    // sample: input(r,c) = load(r*n+c), then store(r*n+c, output(r,c)).
    template <class Load, class Store>
    void run(Workspace<T>& ws, bool adjoint, Load&& load, Store&& store) const {
        run_with(ws, adjoint, ht.data(), h_rows.data(), load, store);
    }

    // run() with dH/d(distance) in place of H: the derivative of the hop's
    // output with respect to its distance (ensure_dz_tables() first).
    template <class Load, class Store>
    void run_dz(Workspace<T>& ws, Load&& load, Store&& store) const {
        run_with(ws, false, dht.data(), dh_rows.data(), load, store);
    }

    // run() with the transfer function given in both layouts (transposed for
    // the blocked path, row-major for the 2-D path).
    template <class Load, class Store>
    void run_with(Workspace<T>& ws, bool adjoint, const cplx<T>* table_t, const cplx<T>* table_rows,
                  Load&& load, Store&& store) const {
        cplx<T>* b = ws.buf;
        if (use_2d) {  // periodic: contiguous n x n, FFTW 2-D, H in place
            const int64_t nn = n * n;
            for (int64_t i = 0; i < nn; ++i) b[i] = load(i);
            run_resident_with(ws, adjoint, table_rows);
            for (int64_t i = 0; i < nn; ++i) store(i, b[i]);
            return;
        }
        // 1. Rows that hold data (the padded rows below are zero and are
        //    handled in the column pass): load, zero-extend, transform.
        for (int64_t r0 = 0; r0 < n; r0 += kRowBlock) {
            const int64_t rows = std::min(kRowBlock, n - r0);
            for (int64_t r = r0; r < r0 + rows; ++r) {
                cplx<T>* row = b + r * ld;
                const int64_t base = r * n;
                for (int64_t c = 0; c < n; ++c) row[c] = load(base + c);
                for (int64_t c = n; c < np; ++c) row[c] = {T(0), T(0)};
            }
            (rows == kRowBlock ? row_f : row_tail_f).execute(b + r0 * ld);
        }
        // 2. Column blocks: gather (transpose) the n data rows, zero-extend
        //    to np, transform, multiply by H, transform back, keep the n rows
        //    that survive the crop.
        cplx<T>* t = ws.cols;
        for (int64_t c0 = 0; c0 < np; c0 += kColBlock) {
            const int64_t cb = std::min(kColBlock, np - c0);
            for (int64_t r = 0; r < n; ++r) {
                const cplx<T>* src = b + r * ld + c0;
                for (int64_t j = 0; j < cb; ++j) t[j * ld + r] = src[j];
            }
            for (int64_t j = 0; j < cb; ++j)
                for (int64_t r = n; r < np; ++r) t[j * ld + r] = {T(0), T(0)};
            const fft::Plan<T>& pf = cb == kColBlock ? col_f : col_tail_f;
            const fft::Plan<T>& pb = cb == kColBlock ? col_b : col_tail_b;
            pf.execute(t);
            for (int64_t j = 0; j < cb; ++j) {
                cplx<T>* col = t + j * ld;
                const cplx<T>* hc = table_t + (c0 + j) * np;
                if (adjoint)
                    for (int64_t r = 0; r < np; ++r) col[r] = cmul_conj(col[r], hc[r]);
                else
                    for (int64_t r = 0; r < np; ++r) col[r] = cmul(col[r], hc[r]);
            }
            pb.execute(t);
            for (int64_t r = 0; r < n; ++r) {
                cplx<T>* dst = b + r * ld + c0;
                for (int64_t j = 0; j < cb; ++j) dst[j] = t[j * ld + r];
            }
        }
        // 3. Inverse row transforms, then hand the cropped n x n to `store`.
        for (int64_t r0 = 0; r0 < n; r0 += kRowBlock) {
            const int64_t rows = std::min(kRowBlock, n - r0);
            (rows == kRowBlock ? row_b : row_tail_b).execute(b + r0 * ld);
            for (int64_t r = r0; r < r0 + rows; ++r) {
                const cplx<T>* row = b + r * ld;
                const int64_t base = r * n;
                for (int64_t c = 0; c < n; ++c) store(base + c, row[c]);
            }
        }
    }
};

}  // namespace optdiff
