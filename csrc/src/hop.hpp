// One free-space hop on the CPU: transfer function + cached FFT plans, and
// the hot loop that runs it on one sample held in a per-thread buffer.
//
// The hop is written around a `load` and a `store` functor so that callers
// fuse their element-wise work (tilt, phase modulation, saving the tape,
// intensity, gradient accumulation) into the passes the hop makes anyway.
#pragma once

#include <cstring>
#include <vector>

#include "fft_fftw.hpp"
#include "optdiff/plan.hpp"

namespace optdiff {

// Per-thread scratch: one padded grid, aligned for FFTW.
template <class T>
struct Workspace {
    cplx<T>* buf = nullptr;
    int64_t size = 0;
    Workspace() = default;
    explicit Workspace(int64_t elems) : size(elems) {
        buf = static_cast<cplx<T>*>(fft::aligned_alloc_bytes(sizeof(cplx<T>) * static_cast<size_t>(elems)));
    }
    Workspace(const Workspace&) = delete;
    Workspace& operator=(const Workspace&) = delete;
    Workspace(Workspace&& o) noexcept : buf(o.buf), size(o.size) { o.buf = nullptr; o.size = 0; }
    Workspace& operator=(Workspace&& o) noexcept {
        if (this != &o) {
            if (buf) fft::aligned_free(buf);
            buf = o.buf;
            size = o.size;
            o.buf = nullptr;
            o.size = 0;
        }
        return *this;
    }
    ~Workspace() { if (buf) fft::aligned_free(buf); }
};

template <class T>
struct HopPlan {
    PropagationSpec spec;
    int64_t n = 0, np = 0;
    std::vector<cplx<T>> h;     // normalised transfer function [np*np], FFT order
    std::vector<cplx<T>> tilt;  // [n*n], empty when the hop has no tilt
    fft::Plan<T> fwd2d, bwd2d;                  // padding 1
    fft::Plan<T> rows_fwd, rows_bwd, cols_fwd, cols_bwd;  // padding 2 (pruned)

    HopPlan(int64_t n_, const PropagationSpec& s) : spec(s), n(n_) {
        validate(s, n_);
        np = padded_size(n, s.padding);
        h = make_transfer_function<T>(s, n, /*normalised=*/true);
        if (has_tilt(s)) tilt = make_tilt<T>(s, n);
        if (s.padding == 1) {
            fwd2d = fft::get_plan<T>(fft::Layout::Full2D, np, 0, -1);
            bwd2d = fft::get_plan<T>(fft::Layout::Full2D, np, 0, +1);
        } else {
            rows_fwd = fft::get_plan<T>(fft::Layout::Rows, np, n, -1);
            rows_bwd = fft::get_plan<T>(fft::Layout::Rows, np, n, +1);
            cols_fwd = fft::get_plan<T>(fft::Layout::Cols, np, 0, -1);
            cols_bwd = fft::get_plan<T>(fft::Layout::Cols, np, 0, +1);
        }
    }

    int64_t workspace_size() const { return np * np; }

    // Runs the hop (or its adjoint when `adjoint`, i.e. with conj(H)) on one
    // sample: in(r,c) = load(idx) for idx = r*n+c, then store(idx, out(r,c)).
    template <class Load, class Store>
    void run(Workspace<T>& ws, bool adjoint, Load&& load, Store&& store) const {
        cplx<T>* b = ws.buf;
        const int64_t nn = n * n;
        if (np == n) {
            for (int64_t i = 0; i < nn; ++i) b[i] = load(i);
            fwd2d.execute(b);
            multiply_h(b, 0, np * np, adjoint);
            bwd2d.execute(b);
            for (int64_t i = 0; i < nn; ++i) store(i, b[i]);
            return;
        }
        // Padding: the field sits in the top-left n x n corner of np x np.
        // Row transforms run only on the n rows that hold data; the rows
        // below are zero and stay zero, so they are cleared, not transformed.
        for (int64_t r = 0; r < n; ++r) {
            cplx<T>* row = b + r * np;
            const int64_t base = r * n;
            for (int64_t c = 0; c < n; ++c) row[c] = load(base + c);
            std::memset(static_cast<void*>(row + n), 0, sizeof(cplx<T>) * static_cast<size_t>(np - n));
        }
        std::memset(static_cast<void*>(b + n * np), 0, sizeof(cplx<T>) * static_cast<size_t>((np - n) * np));
        rows_fwd.execute(b);
        cols_fwd.execute(b);
        multiply_h(b, 0, np * np, adjoint);
        cols_bwd.execute(b);
        // Only the first n rows survive the crop: transform just those.
        rows_bwd.execute(b);
        for (int64_t r = 0; r < n; ++r) {
            const cplx<T>* row = b + r * np;
            const int64_t base = r * n;
            for (int64_t c = 0; c < n; ++c) store(base + c, row[c]);
        }
    }

private:
    void multiply_h(cplx<T>* b, int64_t begin, int64_t end, bool adjoint) const {
        const cplx<T>* hp = h.data();
        if (adjoint) {
            for (int64_t i = begin; i < end; ++i) b[i] = cmul_conj(b[i], hp[i]);
        } else {
            for (int64_t i = begin; i < end; ++i) b[i] = cmul(b[i], hp[i]);
        }
    }
};

}  // namespace optdiff
