// Uses optdiff as another simulator would: only the public header and the
// static library, no Python. Checks a few properties and exits non-zero on
// failure, printing what failed. Run by tests/test_embed_cpp.py.
#include <cmath>
#include <complex>
#include <cstdio>
#include <random>
#include <vector>

#include "optdiff/optdiff.hpp"

using optdiff::cplx;

namespace {
int failures = 0;
void expect(bool ok, const char* what, double value) {
    std::printf("%-52s %s (%.3e)\n", what, ok ? "ok" : "FAILED", value);
    if (!ok) ++failures;
}

double dot_re(const std::vector<cplx<double>>& a, const std::vector<cplx<double>>& b) {
    double s = 0;  // Re <a, b> = Re sum conj(a) b
    for (size_t i = 0; i < a.size(); ++i) s += a[i].re * b[i].re + a[i].im * b[i].im;
    return s;
}
double norm2(const std::vector<cplx<double>>& a) { return dot_re(a, a); }
}  // namespace

int main() {
    const int64_t n = 48, batch = 3, L = 3;
    std::mt19937 rng(1);
    std::normal_distribution<double> nd;
    auto rand_field = [&](int64_t count) {
        std::vector<cplx<double>> f(static_cast<size_t>(count));
        for (auto& v : f) v = {nd(rng), nd(rng)};
        return f;
    };

    optdiff::PropagationSpec spec;
    spec.wavelength = 850e-9;
    spec.pitch = 9.2e-6;
    spec.distance = 20e-3;
    spec.padding = 1;

    // Periodic angular-spectrum propagation is unitary: energy is conserved.
    optdiff::Propagator<double> p1(n, spec);
    auto x = rand_field(batch * n * n), y = rand_field(batch * n * n);
    std::vector<cplx<double>> ax(x.size()), ahy(y.size());
    p1.forward(x.data(), ax.data(), batch);
    expect(std::fabs(norm2(ax) / norm2(x) - 1.0) < 1e-12, "energy conserved (padding 1)",
           norm2(ax) / norm2(x) - 1.0);

    // Adjointness with padding 2 and a tilt: <Ax, y> = <x, A^H y>.
    spec.padding = 2;
    spec.tilt_x = 1e-3;
    optdiff::Propagator<double> p2(n, spec);
    p2.forward(x.data(), ax.data(), batch);
    p2.adjoint(y.data(), ahy.data(), batch);
    const double adj = std::fabs(dot_re(ax, y) - dot_re(x, ahy)) / std::sqrt(norm2(ax) * norm2(y));
    expect(adj < 1e-13, "adjointness <Ax,y> = <x,A^H y> (padding 2, tilt)", adj);

    // Stack gradient against a central finite difference of loss = sum(w * I).
    optdiff::StackSpec ss;
    ss.n = n;
    spec.tilt_x = 0.0;
    for (int l = 0; l < L; ++l) ss.hops.push_back(spec);
    ss.has_input_hop = true;
    ss.input_hop = spec;
    optdiff::PhaseStack<double> stack(ss);
    std::vector<double> phases(static_cast<size_t>(L * n * n)),
        weights(static_cast<size_t>(batch * n * n));
    for (auto& v : phases) v = nd(rng);
    for (auto& v : weights) v = nd(rng);
    std::vector<double> inten(weights.size()), grad(phases.size());
    std::vector<cplx<double>> saved(static_cast<size_t>(batch * (L + 1) * n * n));
    stack.forward(x.data(), phases.data(), batch, inten.data(), saved.data(), nullptr);
    stack.backward(x.data(), phases.data(), saved.data(), weights.data(), batch, grad.data(),
                   nullptr);
    auto loss = [&](const std::vector<double>& ph) {
        std::vector<double> in(weights.size());
        stack.forward(x.data(), ph.data(), batch, in.data(), nullptr, nullptr);
        double s = 0;
        for (size_t i = 0; i < in.size(); ++i) s += weights[i] * in[i];
        return s;
    };
    double worst = 0;
    const int64_t probes[3] = {0, (L * n * n) / 2 + 7, L * n * n - 1};
    for (int64_t k : probes) {
        const double h = 1e-6;
        auto pp = phases, pm = phases;
        pp[static_cast<size_t>(k)] += h;
        pm[static_cast<size_t>(k)] -= h;
        const double fd = (loss(pp) - loss(pm)) / (2 * h);
        worst =
            std::fmax(worst, std::fabs(fd - grad[static_cast<size_t>(k)]) / (std::fabs(fd) + 1e-3));
    }
    expect(worst < 1e-5, "stack phase gradient vs finite differences", worst);

    // Fused intensity-MSE step: the same loss and gradient as forward, the
    // loss computed here and backward with dLoss/dI = 2 (I - target) / count.
    std::vector<double> target(weights.size()), g_fused(phases.size()), dloss(weights.size());
    for (auto& v : target) v = std::fabs(nd(rng));
    const double loss_fused = stack.mse_loss_and_grad(x.data(), phases.data(), target.data(), batch,
                                                      g_fused.data(), nullptr);
    double sq = 0;
    for (size_t i = 0; i < inten.size(); ++i) {
        const double d = inten[i] - target[i];
        sq += d * d;
        dloss[i] = 2.0 * d / static_cast<double>(inten.size());
    }
    stack.backward(x.data(), phases.data(), saved.data(), dloss.data(), batch, grad.data(),
                   nullptr);
    double gdiff = 0, gnorm = 0;
    for (size_t i = 0; i < grad.size(); ++i) {
        gdiff = std::fmax(gdiff, std::fabs(grad[i] - g_fused[i]));
        gnorm = std::fmax(gnorm, std::fabs(grad[i]));
    }
    const double mse_err =
        std::fabs(loss_fused - sq / static_cast<double>(inten.size())) / loss_fused + gdiff / gnorm;
    expect(mse_err < 1e-12, "fused mse_loss_and_grad = forward + loss + backward", mse_err);

    // Sampler noise: Philox4x32-10 against a Random123 known-answer vector,
    // and the threaded normals against normal4 evaluated here one by one.
    const optdiff::u32x4 kat = optdiff::philox4x32_10(
        {0x243F6A88u, 0x85A308D3u, 0x13198A2Eu, 0x03707344u}, 0xA4093822u, 0x299F31D0u);
    const bool kat_ok = kat.v0 == 0xD16CFE09u && kat.v1 == 0x94FDCCEBu && kat.v2 == 0x5001E420u &&
                        kat.v3 == 0x24126EA1u;
    std::vector<float> z(1003);
    optdiff::standard_normal(z.data(), static_cast<int64_t>(z.size()), 5, 6, 2, 2);
    double zerr = 0;
    for (size_t i = 0; i < z.size(); ++i) {
        float q[4];
        optdiff::normal4(5, 6, (i + 2) / 4, q);
        zerr = std::fmax(zerr, std::fabs(z[i] - q[(i + 2) % 4]));
    }
    expect(kat_ok && zerr < 1e-5, "Philox known answer; threaded normals = normal4", zerr);

    std::printf("%d passed, %d failed\n", 5 - failures, failures);
    return failures == 0 ? 0 : 1;
}
