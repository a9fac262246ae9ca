// One chain's NUTS transition in C++ around TorchInductor's compiled leapfrog leaf.
//
// ppgen.inference.native_nuts prepends, before this file:
//   - the model's TorchInductor kernels, renamed ppgen_kernel_<i>;
//   - PPGEN_REAL (float or double), PPGEN_DIM (D), PPGEN_SCRATCH_BYTES;
//   - ppgen_leaf(in, scratch, ext, out): the kernels called in TorchInductor's order on
//     the leaf's seven inputs (z, r, grad, rho, step, half step, inverse metric) and the
//     leaf's seven outputs (z, r, grad, U, H, M^-1 r, rho + r) located.
//
// The algorithm is the reference kernel's (ppgen/inference/mcmc/reference.py): multinomial
// NUTS with Stan's biased progressive sampling between subtrees, uniform progressive
// sampling within one, the generalised U-turn criterion on every binary block (kept as
// O(max depth) block starts), a divergence when H - H0 > 1000. Momentum sums and dot
// products are accumulated in double.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace ppgen_native {

using real = PPGEN_REAL;
constexpr int64_t D = PPGEN_DIM;
constexpr double MAX_DELTA_H = 1000.0;
constexpr double NEG_INF = -std::numeric_limits<double>::infinity();

// xoshiro256** seeded by splitmix64: one stream per transition, from (seed, counter).
struct Rng {
    uint64_t s[4];
    explicit Rng(uint64_t seed) {
        for (auto& word : s) {
            seed += 0x9E3779B97F4A7C15ULL;
            uint64_t x = seed;
            x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
            x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
            word = x ^ (x >> 31);
        }
    }
    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    uint64_t next() {
        const uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
        s[2] ^= t; s[3] = rotl(s[3], 45);
        return result;
    }
    double uniform() { return (next() >> 11) * 0x1.0p-53; }  // [0, 1)
    double normal() {  // Marsaglia's polar method, one of the pair
        double u, v, q;
        do {
            u = 2.0 * uniform() - 1.0;
            v = 2.0 * uniform() - 1.0;
            q = u * u + v * v;
        } while (q >= 1.0 || q == 0.0);
        return u * std::sqrt(-2.0 * std::log(q) / q);
    }
};

// The transition's uniforms: from the generator, or (mode 2, for tests) replayed in
// the reference's Noise layout (randomness.py): direction and merge coin per depth, then every
// subtree's leaf choices (depth j's at 2^j - 1 + leaf).
struct Uniforms {
    Rng rng;
    const double* replay;
    int depth;
    double direction(int j) { return replay ? replay[2 * j] : rng.uniform(); }
    double merge(int j) { return replay ? replay[2 * j + 1] : rng.uniform(); }
    double choice(int j, uint64_t n) { return replay ? replay[2 * depth + (uint64_t(1) << j) - 1 + n] : rng.uniform(); }
};

double logaddexp(double a, double b) {
    if (a == NEG_INF) return b;
    if (b == NEG_INF) return a;
    return std::max(a, b) + std::log1p(std::exp(-std::fabs(a - b)));
}

double dot(const real* a, const double* b) {
    double s = 0.0;
    for (int64_t i = 0; i < D; ++i) s += static_cast<double>(a[i]) * b[i];
    return s;
}

int trailing(uint64_t n, uint64_t bit) {
    int count = 0;
    while ((n & 1) == bit && count < 64) { n >>= 1; ++count; }
    return count;
}

// A trajectory end: position, momentum, gradient, velocity M^-1 r, potential.
struct Point {
    std::vector<real> z, r, g, v;
    real U = 0;
    Point() : z(D), r(D), g(D), v(D) {}
};

struct Proposal {
    std::vector<real> z, g;
    real U = 0;
    Proposal() : z(D), g(D) {}
    void take(const real* z_, const real* g_, real U_) {
        std::memcpy(z.data(), z_, D * sizeof(real));
        std::memcpy(g.data(), g_, D * sizeof(real));
        U = U_;
    }
};

struct Leaf {
    std::vector<char> scratch;
    std::vector<real> zero;
    const int64_t* ext;
    const real* inverse;
    real step[1], half[1];
    real* out[7];
    Leaf(const int64_t* ext_, const real* inverse_) : scratch(PPGEN_SCRATCH_BYTES + 64), zero(D, 0), ext(ext_), inverse(inverse_) {}
    char* aligned() { return scratch.data() + (64 - reinterpret_cast<uintptr_t>(scratch.data()) % 64) % 64; }
    // one leapfrog step from p (z, r, g) with step size `eps`; p takes the new point
    void step_from(Point& p, real eps, real& H) {
        step[0] = eps;
        half[0] = eps / 2;
        void* in[7] = {p.z.data(), p.r.data(), p.g.data(), zero.data(), step, half, const_cast<real*>(inverse)};
        ppgen_leaf(in, aligned(), ext, out);
        std::memmove(p.z.data(), out[0], D * sizeof(real));
        std::memmove(p.r.data(), out[1], D * sizeof(real));
        std::memmove(p.g.data(), out[2], D * sizeof(real));
        std::memmove(p.v.data(), out[5], D * sizeof(real));
        p.U = out[3][0];
        H = out[4][0];
    }
};

struct Subtree {
    double log_weight = NEG_INF, accept_sum = 0.0;
    int64_t leaves = 0;
    bool turning = false, diverging = false;
};

struct Transition {
    Leaf& leaf;
    Uniforms& draws;
    double energy0;
    std::vector<double> rho, block_rho, scratch_sum;
    std::vector<real> block_v;
    Proposal sub_proposal;

    Transition(Leaf& leaf_, Uniforms& draws_, double energy0_, int max_depth_)
        : leaf(leaf_), draws(draws_), energy0(energy0_), rho(D),
          block_rho((max_depth_ + 1) * D), scratch_sum(D), block_v((max_depth_ + 1) * D) {}

    // 2^j leaves from p (which ends as the subtree's far end); the subtree's momentum sum in rho
    Subtree grow(Point& p, real eps, int j) {
        Subtree sub;
        std::fill(rho.begin(), rho.end(), 0.0);  // the momentum sum before the current leaf
        const uint64_t n_leaves = uint64_t(1) << j;
        for (uint64_t n = 0; n < n_leaves; ++n) {
            real H;
            leaf.step_from(p, eps, H);
            double delta = static_cast<double>(H) - energy0;
            if (std::isnan(delta)) delta = std::numeric_limits<double>::infinity();
            const double merged = logaddexp(sub.log_weight, -delta);
            sub.accept_sum += delta > 0 ? std::exp(-delta) : 1.0;
            sub.leaves += 1;
            const double u = draws.choice(j, n);
            if (merged > NEG_INF && u < std::exp(-delta - merged)) sub_proposal.take(p.z.data(), p.g.data(), p.U);
            sub.log_weight = merged;
            const int opening = n ? std::min(trailing(n, 0), j) : j;
            for (int k = 1; k <= opening; ++k) {
                std::memcpy(&block_v[k * D], p.v.data(), D * sizeof(real));
                std::memcpy(&block_rho[k * D], rho.data(), D * sizeof(double));
            }
            for (int64_t i = 0; i < D; ++i) rho[i] += p.r[i];
            if (delta > MAX_DELTA_H) { sub.diverging = true; break; }
            const int closing = trailing(n, 1);
            for (int k = 1; k <= closing && !sub.turning; ++k) {
                for (int64_t i = 0; i < D; ++i) scratch_sum[i] = rho[i] - block_rho[k * D + i];
                if (dot(&block_v[k * D], scratch_sum.data()) <= 0 || dot(p.v.data(), scratch_sum.data()) <= 0)
                    sub.turning = true;
            }
            if (sub.turning) break;
        }
        return sub;
    }
};

}  // namespace ppgen_native

namespace ppgen_native {

// One chain's transition (modes 0 and 2) or leapfrog step (mode 1); see kernel() below.
void one_chain(const real* z, const real* grad, const real* potential, const real* momentum,
               const real* inverse, const real* step_size, const double* uniforms, const int64_t* ext,
               uint64_t seed, int max_depth, int64_t mode, real* z_out, real* grad_out, real* potential_out,
               real* momentum_out, double* stats) {
    const size_t bytes = D * sizeof(real);
    Leaf leaf(ext, inverse);
    Point left;
    std::memcpy(left.z.data(), z, bytes);
    std::memcpy(left.g.data(), grad, bytes);
    left.U = potential[0];
    if (mode == 1) {
        std::memcpy(left.r.data(), momentum, bytes);
        real H;
        leaf.step_from(left, step_size[0], H);
        std::memcpy(z_out, left.z.data(), bytes);
        std::memcpy(grad_out, left.g.data(), bytes);
        std::memcpy(momentum_out, left.r.data(), bytes);
        potential_out[0] = left.U;
        stats[0] = H;
        return;
    }
    Uniforms draws{Rng(seed), mode == 2 ? uniforms : nullptr, max_depth};
    double kinetic = 0.0;
    for (int64_t i = 0; i < D; ++i) {
        left.r[i] = mode == 2 ? momentum[i]
                              : static_cast<real>(draws.rng.normal() / std::sqrt(static_cast<double>(inverse[i])));
        left.v[i] = inverse[i] * left.r[i];
        kinetic += static_cast<double>(left.v[i]) * left.r[i];
    }
    const double energy0 = static_cast<double>(left.U) + 0.5 * kinetic;
    Point right = left;
    Proposal proposal;
    proposal.take(z, grad, left.U);
    std::vector<double> rho(D);
    for (int64_t i = 0; i < D; ++i) rho[i] = left.r[i];
    Transition tree(leaf, draws, energy0, max_depth);
    double log_weight = 0.0, accept_sum = 0.0;
    int64_t leaves = 0, depth = 0;
    bool diverging = false;
    const real eps = step_size[0];
    for (int j = 0; j < max_depth; ++j) {
        const bool forward = draws.direction(j) < 0.5;
        Point& end = forward ? right : left;
        Subtree sub = tree.grow(end, forward ? eps : -eps, j);
        accept_sum += sub.accept_sum;
        leaves += sub.leaves;
        depth = j + 1;
        diverging = diverging || sub.diverging;
        if (sub.turning || sub.diverging) break;  // the subtree is rejected; `end` is not used again
        if (draws.merge(j) < std::exp(std::min(sub.log_weight - log_weight, 0.0)))
            proposal.take(tree.sub_proposal.z.data(), tree.sub_proposal.g.data(), tree.sub_proposal.U);
        log_weight = logaddexp(log_weight, sub.log_weight);
        for (int64_t i = 0; i < D; ++i) rho[i] += tree.rho[i];
        if (dot(left.v.data(), rho.data()) <= 0 || dot(right.v.data(), rho.data()) <= 0) break;
    }
    std::memcpy(z_out, proposal.z.data(), bytes);
    std::memcpy(grad_out, proposal.g.data(), bytes);
    potential_out[0] = proposal.U;
    stats[0] = accept_sum / std::max<int64_t>(leaves, 1);
    stats[1] = static_cast<double>(depth);
    stats[2] = diverging ? 1.0 : 0.0;
    stats[3] = energy0;
    stats[4] = static_cast<double>(leaves);
}

}  // namespace ppgen_native

// `chains` rows of (z, grad, potential, momentum, inverse, step size) and of the outputs,
// each row alone, on up to `threads` OpenMP threads (the leaf is reentrant: every row
// has its own scratch buffers).
// mode 0: one NUTS transition per row, momentum drawn here; row c's generator is seeded
//         with seed + c.
// mode 1: one leapfrog step from (z, momentum, grad): the new point in the outputs, its
//         H in stats[5c] (to check this leaf against the compiled one, and for warm-up).
// mode 2: mode 0 with the given momentum and `uniforms` replayed (see Uniforms).
// stats, 5 a row: accept, depth, diverging, energy, leapfrogs.
extern "C" void kernel(const PPGEN_REAL* z, const PPGEN_REAL* grad, const PPGEN_REAL* potential,
                       const PPGEN_REAL* momentum, const PPGEN_REAL* inverse, const PPGEN_REAL* step_size,
                       const double* uniforms, const int64_t* ext, int64_t seed, int64_t max_depth, int64_t mode,
                       int64_t chains, int64_t threads, PPGEN_REAL* z_out, PPGEN_REAL* grad_out,
                       PPGEN_REAL* potential_out, PPGEN_REAL* momentum_out, double* stats) {
    using ppgen_native::D;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (threads > 1 && chains > 1)
    for (int64_t c = 0; c < chains; ++c) {
        ppgen_native::one_chain(z + c * D, grad + c * D, potential + c, momentum + c * D, inverse + c * D,
                                step_size + c, uniforms, ext, static_cast<uint64_t>(seed + c),
                                static_cast<int>(max_depth), mode, z_out + c * D, grad_out + c * D,
                                potential_out + c, momentum_out + c * D, stats + 5 * c);
    }
}
