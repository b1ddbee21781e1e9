// Element-wise optics, written once for the CPU loops and the CUDA kernels.
//
// Every function here is pure and works on one pixel, so the CPU tests that
// exercise csrc/ also cover the maths that cuda/ runs. Nothing in this header
// may allocate, throw or touch global state.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define OPTDIFF_HD __host__ __device__ __forceinline__
#else
#define OPTDIFF_HD inline
#endif

namespace optdiff {

// Layout-compatible with std::complex<T>, fftw_complex, cufftComplex and
// NumPy's complex64/complex128. Written by hand because std::complex
// multiplication calls __mulsc3 (slow, no vectorisation) without -ffast-math.
template <class T>
struct cplx {
    T re, im;
};

template <class T>
OPTDIFF_HD cplx<T> cmul(cplx<T> a, cplx<T> b) {
    return {a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re};
}

// a * conj(b)
template <class T>
OPTDIFF_HD cplx<T> cmul_conj(cplx<T> a, cplx<T> b) {
    return {a.re * b.re + a.im * b.im, a.im * b.re - a.re * b.im};
}

template <class T>
OPTDIFF_HD cplx<T> cscale(cplx<T> a, T s) {
    return {a.re * s, a.im * s};
}

template <class T>
OPTDIFF_HD T cabs2(cplx<T> a) {
    return a.re * a.re + a.im * a.im;
}

template <class T>
OPTDIFF_HD cplx<T> cexpi(T phase) {
    return {std::cos(phase), std::sin(phase)};
}

// ---------------------------------------------------------------------------
// Sampling geometry
// ---------------------------------------------------------------------------

// Spatial frequency (cycles per metre) of FFT bin `k` on a grid of `n` samples
// with spacing `pitch`, in FFT order: 0, 1, ..., then negative frequencies.
OPTDIFF_HD double fft_frequency(int64_t k, int64_t n, double pitch) {
    const int64_t kk = (k < (n + 1) / 2) ? k : k - n;
    return static_cast<double>(kk) / (static_cast<double>(n) * pitch);
}

// Centred coordinate (metres) of pixel `j` on an `n`-pixel axis: the optical
// axis passes through the middle of the window, so tilts pivot about it.
OPTDIFF_HD double centred_coordinate(int64_t j, int64_t n, double pitch) {
    return (static_cast<double>(j) - 0.5 * static_cast<double>(n - 1)) * pitch;
}

// ---------------------------------------------------------------------------
// Free-space transfer functions (carrier exp(ikz) dropped)
// ---------------------------------------------------------------------------

enum class Method : int { AngularSpectrum = 0, BandLimitedAS = 1, Fresnel = 2 };

// Phase (radians) of the non-paraxial angular-spectrum transfer function in
// split-step form: dz (kz - k) = -dz (kx^2+ky^2) / (k + sqrt(k^2-kx^2-ky^2)).
// This form keeps full precision for small angles, where kz - k computed
// directly would cancel catastrophically. `evanescent` is set when
// kx^2+ky^2 >= k^2; those waves are cut (transfer 0).
OPTDIFF_HD double angular_spectrum_phase(double fx, double fy, double wavelength, double dz,
                                         bool* evanescent) {
    const double two_pi = 6.283185307179586476925286766559;
    const double k = two_pi / wavelength;
    const double kx = two_pi * fx;
    const double ky = two_pi * fy;
    const double kt2 = kx * kx + ky * ky;
    const double kz2 = k * k - kt2;
    *evanescent = !(kz2 > 0.0);
    if (*evanescent) return 0.0;
    return -dz * kt2 / (k + sqrt(kz2));
}

// Paraxial (Fresnel) transfer function phase: -pi lambda dz (fx^2 + fy^2).
OPTDIFF_HD double fresnel_phase(double fx, double fy, double wavelength, double dz) {
    const double pi = 3.1415926535897932384626433832795;
    return -pi * wavelength * dz * (fx * fx + fy * fy);
}

// Band limit of Matsushima & Shimobaba (2009), Opt. Express 17, 19662:
// frequencies above 1 / (lambda sqrt((2 df dz)^2 + 1)), df = 1/(padded window),
// alias in the sampled transfer function and are removed.
OPTDIFF_HD double band_limit_frequency(double wavelength, double dz, int64_t n_padded,
                                       double pitch) {
    const double df = 1.0 / (static_cast<double>(n_padded) * pitch);
    const double s = 2.0 * df * dz;
    return 1.0 / (wavelength * sqrt(s * s + 1.0));
}

// Transfer function value at FFT bin (ky_bin, kx_bin) of an n_padded grid,
// times `scale` (the caller folds the inverse-FFT 1/n^2 in here).
template <class T>
OPTDIFF_HD cplx<T> transfer_function_value(int64_t row, int64_t col, int64_t n_padded, double pitch,
                                           double wavelength, double dz, Method method,
                                           double scale) {
    const double fy = fft_frequency(row, n_padded, pitch);
    const double fx = fft_frequency(col, n_padded, pitch);
    double phase = 0.0;
    if (method == Method::Fresnel) {
        phase = fresnel_phase(fx, fy, wavelength, dz);
    } else {
        bool evanescent = false;
        phase = angular_spectrum_phase(fx, fy, wavelength, dz, &evanescent);
        if (evanescent) return {T(0), T(0)};
        if (method == Method::BandLimitedAS) {
            const double lim = band_limit_frequency(wavelength, dz, n_padded, pitch);
            if (fabs(fx) >= lim || fabs(fy) >= lim) return {T(0), T(0)};
        }
    }
    return {static_cast<T>(scale * cos(phase)), static_cast<T>(scale * sin(phase))};
}

// d/d(dz) of transfer_function_value: i psi H, where psi = phase / dz is the
// transfer function's phase per metre (the phase is linear in dz): for the
// angular spectrum psi = -(kx^2+ky^2) / (k + sqrt(k^2-kx^2-ky^2)), for Fresnel
// -pi lambda (fx^2+fy^2). Cut waves (evanescent, or beyond the band limit of
// the band-limited method, a step in dz whose derivative is 0 almost
// everywhere) stay 0.
template <class T>
OPTDIFF_HD cplx<T> transfer_function_dz_value(int64_t row, int64_t col, int64_t n_padded,
                                              double pitch, double wavelength, double dz,
                                              Method method, double scale) {
    const double fy = fft_frequency(row, n_padded, pitch);
    const double fx = fft_frequency(col, n_padded, pitch);
    double psi = 0.0;
    if (method == Method::Fresnel) {
        psi = fresnel_phase(fx, fy, wavelength, 1.0);
    } else {
        bool evanescent = false;
        psi = angular_spectrum_phase(fx, fy, wavelength, 1.0, &evanescent);
        if (evanescent) return {T(0), T(0)};
        if (method == Method::BandLimitedAS) {
            const double lim = band_limit_frequency(wavelength, dz, n_padded, pitch);
            if (fabs(fx) >= lim || fabs(fy) >= lim) return {T(0), T(0)};
        }
    }
    const double phase = psi * dz;
    // i psi exp(i phase) = psi (-sin, cos)
    return {static_cast<T>(-scale * psi * sin(phase)), static_cast<T>(scale * psi * cos(phase))};
}

// d(tilt phase)/d(theta) per metre of the coordinate: k cos(theta). The
// derivative of a loss with respect to a tilt angle is this times the sum of
// x (or y) times dLoss/dphi over the plane where the tilt acts.
OPTDIFF_HD double tilt_phase_slope(double wavelength, double theta) {
    const double two_pi = 6.283185307179586476925286766559;
    return two_pi / wavelength * cos(theta);
}

// Linear phase of a beam tilted by angles (theta_x, theta_y) from the optical
// axis: exp(i k (sin(theta_x) x + sin(theta_y) y)) on centred coordinates.
// A mirror tilted by alpha deviates the beam by 2 alpha: pass 2 alpha here.
template <class T>
OPTDIFF_HD cplx<T> tilt_value(int64_t row, int64_t col, int64_t n, double pitch, double wavelength,
                              double theta_x, double theta_y) {
    const double two_pi = 6.283185307179586476925286766559;
    const double k = two_pi / wavelength;
    const double x = centred_coordinate(col, n, pitch);
    const double y = centred_coordinate(row, n, pitch);
    const double phase = k * (sin(theta_x) * x + sin(theta_y) * y);
    return {static_cast<T>(cos(phase)), static_cast<T>(sin(phase))};
}

// ---------------------------------------------------------------------------
// Phase layers, detection and their adjoints
// ---------------------------------------------------------------------------

// Modulation of a phase layer combined with a tilt: exp(i phi) * tilt.
// Computed once per call and per layer, never per sample.
template <class T>
OPTDIFF_HD cplx<T> layer_modulation(T phi, cplx<T> tilt) {
    return cmul(cexpi(phi), tilt);
}

// An input value as a field: complex as is, a real amplitude a as a + 0i, so
// amplitude-encoded images go in without a complex copy of the batch.
template <class T>
OPTDIFF_HD cplx<T> as_field(cplx<T> v) {
    return v;
}
template <class T>
OPTDIFF_HD cplx<T> as_field(T a) {
    return {a, T(0)};
}

// Camera intensity |E|^2.
template <class T>
OPTDIFF_HD T intensity(cplx<T> e) {
    return cabs2(e);
}

// Gradient (d/dRe + i d/dIm) of a real loss with respect to the camera field
// E, given g = dLoss/dI and I = |E|^2.
template <class T>
OPTDIFF_HD cplx<T> intensity_backward(cplx<T> e, T g) {
    return cscale(e, T(2) * g);
}

// Intensity-matching loss mean((I - target)^2) over `count` pixels: its
// residual d = I - target, with dLoss/dI = (2 / count) * d.
template <class T>
OPTDIFF_HD T intensity_residual(T i, T target) {
    return i - target;
}

// For w = u * exp(i phi) * tilt and G = dLoss/dw (same convention):
// dLoss/dphi = Re(conj(G) * i w) = Im(G * conj(w)).
template <class T>
OPTDIFF_HD T phase_gradient(cplx<T> grad_w, cplx<T> w) {
    return grad_w.im * w.re - grad_w.re * w.im;
}

// dLoss/du = conj(m) * dLoss/dw for w = u * m.
template <class T>
OPTDIFF_HD cplx<T> modulation_backward(cplx<T> grad_w, cplx<T> m) {
    return cmul_conj(grad_w, m);
}

// True when a value is a finite number (no NaN, no infinity).
template <class T>
OPTDIFF_HD bool is_finite_value(T v) {
    return v - v == T(0);
}

}  // namespace optdiff
