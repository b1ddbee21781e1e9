// A minimal embedding of optdiff: propagate a Gaussian beam, run a two-layer phase stack with
// its exact gradient, and check both against what physics says. Prints each check and exits
// non-zero if one fails (tests/test_cpp_install.py builds and runs it against an install).
#include <cmath>
#include <cstdio>
#include <vector>

#include "optdiff/optdiff.hpp"

using optdiff::cplx;

int main() {
    const int64_t n = 64;
    const double pitch = 8e-6, wavelength = 633e-9;
    int failures = 0;
    auto check = [&](bool ok, const char* what, double value) {
        std::printf("%-48s %-6s %.6e\n", what, ok ? "ok" : "FAILED", value);
        failures += ok ? 0 : 1;
    };

    // A centred Gaussian beam of waist w0 on the grid.
    const double w0 = 60e-6;
    std::vector<cplx<double>> beam(n * n), out(n * n);
    double energy_in = 0.0;
    for (int64_t y = 0; y < n; ++y)
        for (int64_t x = 0; x < n; ++x) {
            const double cx = (x - 0.5 * (n - 1)) * pitch, cy = (y - 0.5 * (n - 1)) * pitch;
            const double a = std::exp(-(cx * cx + cy * cy) / (w0 * w0));
            beam[y * n + x] = {a, 0.0};
            energy_in += a * a;
        }

    // Propagation: periodic angular spectrum is unitary, so the energy is conserved; the beam
    // spreads, so the on-axis intensity drops as (w0/w(z))^2 with w(z) = w0 sqrt(1 + (z/zR)^2).
    optdiff::PropagationSpec hop;
    hop.wavelength = wavelength;
    hop.pitch = pitch;
    hop.distance = 5e-3;
    hop.padding = 1;
    optdiff::Propagator<double> prop(n, hop);
    prop.forward(beam.data(), out.data(), 1);
    double energy_out = 0.0;
    for (const auto& v : out) energy_out += optdiff::cabs2(v);
    check(std::fabs(energy_out / energy_in - 1.0) < 1e-12, "propagation conserves energy",
          energy_out / energy_in - 1.0);
    const double zr = M_PI * w0 * w0 / wavelength, z = hop.distance;
    const double expect_peak = 1.0 / (1.0 + (z / zr) * (z / zr));
    // the pixel nearest the axis (the grid's centre lies between four pixels)
    const double peak =
        optdiff::cabs2(out[(n / 2) * n + n / 2]) / optdiff::cabs2(beam[(n / 2) * n + n / 2]);
    check(std::fabs(peak / expect_peak - 1.0) < 1e-2,
          "on-axis intensity follows the Gaussian beam law", peak / expect_peak - 1.0);

    // A two-layer phase stack: intensity out, gradient of sum(I * w) for the phases, checked
    // against a central finite difference along a random direction.
    optdiff::StackSpec spec;
    spec.n = n;
    hop.padding = 2;
    spec.hops = {hop, hop};
    optdiff::PhaseStack<double> stack(spec);
    std::vector<double> phases(2 * n * n), weights(n * n), dir(2 * n * n), intensity(n * n),
        grad(2 * n * n);
    for (int64_t i = 0; i < 2 * n * n; ++i) {
        phases[i] = std::sin(0.37 * i);
        dir[i] = std::cos(1.3 * i);
    }
    for (int64_t i = 0; i < n * n; ++i) weights[i] = std::cos(0.11 * i);
    auto loss = [&](const std::vector<double>& ph) {
        std::vector<double> I(n * n);
        stack.forward(beam.data(), ph.data(), 1, I.data(), nullptr, nullptr);
        double s = 0.0;
        for (int64_t i = 0; i < n * n; ++i) s += weights[i] * I[i];
        return s;
    };
    std::vector<cplx<double>> saved(stack.saved_fields_per_sample() * n * n);
    stack.forward(beam.data(), phases.data(), 1, intensity.data(), saved.data(), nullptr);
    stack.backward(beam.data(), phases.data(), saved.data(), weights.data(), 1, grad.data(),
                   nullptr);
    const double eps = 1e-6;
    std::vector<double> plus(phases), minus(phases);
    for (int64_t i = 0; i < 2 * n * n; ++i) {
        plus[i] += eps * dir[i];
        minus[i] -= eps * dir[i];
    }
    const double fd = (loss(plus) - loss(minus)) / (2 * eps);
    double analytic = 0.0;
    for (int64_t i = 0; i < 2 * n * n; ++i) analytic += grad[i] * dir[i];
    check(std::fabs(fd - analytic) <= 1e-6 * std::fabs(analytic) + 1e-12,
          "stack gradient matches finite difference", (fd - analytic) / analytic);

    std::printf("%d failed\n", failures);
    return failures == 0 ? 0 : 1;
}
