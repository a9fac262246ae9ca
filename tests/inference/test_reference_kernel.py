"""The reference NUTS/HMC kernel (``ppgen.inference.mcmc.reference``): its draws against a
closed-form posterior, and every faster path of the engine against it on the same random
numbers (``Noise``): the one-chain sampler, the batched lockstep sampler with tensor,
graph and compiled bookkeeping, free-running chains, and the C++ transition (in
``test_native_nuts``); the compiled free-running step is checked against its eager form
(``test_free_chains``), which is checked here."""

import math

import pytest
import torch

from ppgen.inference.mcmc import free_running as fc
from ppgen.inference.mcmc.integrator import State
from ppgen.inference.mcmc.lockstep import CARRIED, compile_lockstep, lockstep_leaf
from ppgen.inference.mcmc.metric import Metric
from ppgen.inference.mcmc.nuts import Sampler
from ppgen.inference.mcmc.potential import Potential
from ppgen.inference.mcmc.randomness import Noise, ReplayedDraws
from ppgen.inference.mcmc.reference import hmc_transition, nuts_transition, plain_step
from ppgen.inference.program import Program

from .test_fast_nuts import eight_schools, logistic, logistic_data, schools_data

MODELS = [(eight_schools, schools_data, 0.35), (logistic, logistic_data, 0.12), (eight_schools, schools_data, 3.0)]
IDS = ["schools", "logistic", "schools-diverging"]


def gaussian(precision):
    """``U(z) = z^T P z / 2`` for rows ``z (C, D)``: a zero-mean Gaussian of covariance ``P^{-1}``."""
    def value_and_grad(z):
        grad = z @ precision
        return 0.5 * (grad * z).sum(-1), grad
    return value_and_grad


def assert_same(got, got_stats, expected, expected_stats, tol=1e-12):
    assert torch.allclose(got.z, expected.z, rtol=tol, atol=tol)
    assert torch.allclose(got.grad, expected.grad, rtol=tol, atol=tol)
    assert torch.allclose(torch.as_tensor(got.potential).reshape(-1), expected.potential.reshape(-1), rtol=tol)
    for key in ("depth", "diverging", "leapfrogs"):
        assert int(got_stats[key]) == int(expected_stats[key]), key
    assert float(got_stats["accept"]) == pytest.approx(expected_stats["accept"], rel=tol)
    assert float(got_stats["energy"]) == pytest.approx(expected_stats["energy"], rel=tol)


def one_chain(model, data):
    potential = Potential(Program.build(model, data()), 1, mode="vectorized")
    z = potential.initial
    value, grad = potential.value_and_grad(z)
    return potential, State(z, value, grad)


@pytest.mark.parametrize("dense", [False, True])
def test_reference_nuts_samples_a_correlated_gaussian(float64, dense):
    """Draws of the reference kernel have the target's means and covariance within Monte
    Carlo error (a 2-d Gaussian of correlation 0.9, a fixed step size)."""
    cov = torch.tensor([[1.0, 0.9], [0.9, 1.0]])
    value_and_grad = gaussian(torch.linalg.inv(cov))
    inverse = cov.unsqueeze(0) if dense else torch.ones(1, 2)
    metric, generator = Metric(inverse), torch.Generator().manual_seed(0)
    z = torch.tensor([[1.0, -1.0]])
    state = State(z, *value_and_grad(z))
    draws, depths = [], set()
    for _ in range(2000):
        state, stats = nuts_transition(value_and_grad, state, 0.4, metric, 8, Noise.draw(generator, z, 8))
        draws.append(state.z[0])
        depths.add(stats["depth"])
    x = torch.stack(draws)
    # the draws are nearly independent: 2000 of them give a standard error of ~0.025 on a mean
    # and ~0.03 on a covariance entry (sqrt((1 + rho^2) / n), sqrt(2 / n)); the bounds are ~4 of those
    assert (x.mean(0).abs() < 0.1).all()
    assert torch.allclose(torch.cov(x.T), cov, atol=0.12)
    assert len(depths) > 1 or dense  # the dense metric makes the target spherical: trees of one depth


def test_reference_hmc_samples_a_correlated_gaussian(float64):
    cov = torch.tensor([[1.0, 0.5], [0.5, 2.0]])
    value_and_grad = gaussian(torch.linalg.inv(cov))
    metric, generator = Metric(torch.ones(4, 2)), torch.Generator().manual_seed(1)
    z = torch.zeros(4, 2)
    state, step, draws = State(z, *value_and_grad(z)), torch.full((4, 1), 0.3), []
    for _ in range(1000):
        state, stats = hmc_transition(plain_step(value_and_grad, metric), state, step, metric, 7,
                                      torch.randn(z.shape, generator=generator), torch.rand(4, generator=generator))
        draws.append(state.z)
    x = torch.cat(draws)
    assert 0.8 < float(stats["accept"].mean()) <= 1.0
    # 4000 draws at an effective sample size of about 1000 (7 short steps, correlated): standard
    # errors ~0.045 on a mean and ~0.06 on the variance 2.0 (2 sqrt(2 / 1000)); bounds ~3-4 of those
    assert (x.mean(0).abs() < 0.15).all()
    assert torch.allclose(torch.cov(x.T), cov, atol=0.25)


@pytest.mark.parametrize("depth", [6, 8])
@pytest.mark.parametrize("model,data,step", MODELS, ids=IDS)
def test_one_chain_sampler_equals_the_reference(float64, model, data, step, depth):
    """``Sampler._transition_single`` draws the reference's numbers (``Noise.draw``'s
    layout, deeper subtrees drawn as they are built) and makes the same trees."""
    potential, state = one_chain(model, data)
    metric = Metric(torch.rand(state.z.shape, generator=torch.Generator().manual_seed(2)) + 0.5)
    sampler = Sampler(potential.value_and_grad, depth, None)
    step_size = state.z.new_full((1, 1), step)
    depths, diverged = set(), 0
    for i in range(25):
        sampler.generator = torch.Generator().manual_seed(i)
        got, stats = sampler.transition(state, step_size, metric)
        noise = Noise.draw(torch.Generator().manual_seed(i), state.z, depth)
        expected, expected_stats = nuts_transition(potential.value_and_grad, state, step, metric, depth, noise)
        assert_same(got, stats, expected, expected_stats)
        depths.add(stats["depth"])
        diverged += stats["diverging"]
        state = expected
    assert diverged > 0 if step > 1 else len(depths) > 1 and diverged == 0


def test_one_chain_sampler_with_a_dense_metric_equals_the_reference(float64):
    potential, state = one_chain(logistic, logistic_data)
    d = state.z.shape[1]
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(3))
    metric = Metric((a @ a.T / d + 0.5 * torch.eye(d)).unsqueeze(0))
    sampler = Sampler(potential.value_and_grad, 6, None)
    for i in range(10):
        sampler.generator = torch.Generator().manual_seed(i)
        got, stats = sampler.transition(state, state.z.new_full((1, 1), 0.1), metric)
        noise = Noise.draw(torch.Generator().manual_seed(i), state.z, 6)
        expected, expected_stats = nuts_transition(potential.value_and_grad, state, 0.1, metric, 6, noise)
        assert_same(got, stats, expected, expected_stats)
        state = expected


def _graph_kernel(potential):
    count = len(CARRIED)
    return lambda *args: lockstep_leaf(potential._leaf_eager, args[:count], *args[count:])


@pytest.mark.parametrize("bookkeeping", ["tensors", "graph",
                                         pytest.param("compiled", marks=pytest.mark.slow)])  # compiles for seconds
@pytest.mark.parametrize("model,data,step", MODELS[:2], ids=IDS[:2])
def test_lockstep_chains_equal_the_reference_chain_by_chain(float64, model, data, step, bookkeeping):
    """Three chains in lockstep with different step sizes (their trees stop at different
    leaves), fed one ``Noise`` per chain, make each chain's reference transition."""
    chains, depth = 3, 6
    mode = "compiled" if bookkeeping == "compiled" else "vectorized"
    potential = Potential(Program.build(model, data()), chains, mode=mode)
    single, _ = one_chain(model, data)
    kernel = {"tensors": None, "graph": _graph_kernel(potential)}.get(bookkeeping)
    if bookkeeping == "compiled":
        assert potential.mode == "compiled", potential.reason
        kernel = compile_lockstep(potential, depth + 1)
    sampler = Sampler(potential.value_and_grad, depth, None, lockstep_kernel=kernel)
    z = potential.initial
    state = State(z, *potential.value_and_grad(z))
    metric = Metric(torch.rand(z.shape, generator=torch.Generator().manual_seed(2)) + 0.5)
    steps = torch.tensor([0.5, 1.0, 2.0]) * step
    generator, depths = torch.Generator().manual_seed(4), set()
    for _ in range(15):
        noises = [Noise.draw(generator, z[:1], depth) for _ in range(chains)]
        sampler.draws = ReplayedDraws(noises)
        got, stats = sampler.transition(state, steps.unsqueeze(-1), metric)
        for c in range(chains):
            row = State(state.z[c:c + 1], state.potential[c:c + 1], state.grad[c:c + 1])
            expected, expected_stats = nuts_transition(single.value_and_grad, row, float(steps[c]),
                                                       Metric(metric.inverse[c:c + 1]), depth, noises[c])
            mine = State(got.z[c:c + 1], got.potential[c:c + 1], got.grad[c:c + 1])
            # (tensor bookkeeping sums momenta over rows and levels in another order than the
            # reference: the same tree, positions equal to rounding, not to the bit)
            assert_same(mine, {k: v[c] for k, v in stats.items()}, expected, expected_stats, tol=1e-10)
            depths.add(expected_stats["depth"])
        state = got
    assert len(depths) > 1


def free_transition(leaf, state, step, metric, depth, noise):
    """One transition of one chain by ``free_leaf``, each call fed the numbers of the leaf it
    builds: the subtree's direction at its first leaf, the leaf's choice, the subtree's merge."""
    r = metric.momentum_from(noise.momentum)
    V, B, S, energy0 = fc.start(state.z, state.potential, state.grad, r, metric.inverse, depth)
    calls = 0
    while S[0, fc.S_["done"]] == 0:
        j, n = int(S[0, fc.S_["depth_building"]]), int(S[0, fc.S_["leaf"]])
        u = state.z.new_tensor([[noise.directions[j], noise.leaf_choices(j)[n], noise.merges[j]]])
        V, B, S = fc.free_leaf(leaf, V, B, S, energy0, step, metric.inverse, u, depth)
        calls += 1
    s = S[0]
    stats = {"accept": float(s[fc.S_["accept_sum"]] / s[fc.S_["leaves"]]), "depth": int(s[fc.S_["depth"]]),
             "diverging": bool(s[fc.S_["diverging"]]), "leapfrogs": int(s[fc.S_["leaves"]]),
             "energy": float(energy0)}
    assert calls == stats["leapfrogs"]
    return State(V[:, fc.V_["proposal_z"]], S[:, fc.S_["proposal_potential"]], V[:, fc.V_["proposal_grad"]]), stats


@pytest.mark.parametrize("model,data,step", MODELS, ids=IDS)
def test_free_running_leaves_equal_the_reference(float64, model, data, step):
    depth = 7
    potential, state = one_chain(model, data)
    metric = Metric(torch.rand(state.z.shape, generator=torch.Generator().manual_seed(2)) + 0.5)
    step_size = state.z.new_full((1, 1), step)
    generator, depths = torch.Generator().manual_seed(5), set()
    for _ in range(25):
        noise = Noise.draw(generator, state.z, depth)
        got, stats = free_transition(potential._leaf_eager, state, step_size, metric, depth, noise)
        expected, expected_stats = nuts_transition(potential.value_and_grad, state, step, metric, depth, noise)
        assert_same(got, stats, expected, expected_stats)
        depths.add(stats["depth"])
        state = expected
    assert len(depths) > 1 or step > 1


def test_noise_layout_round_trips():
    noise = Noise.draw(torch.Generator().manual_seed(0), torch.zeros(1, 3), 8)
    assert len(noise.directions) == len(noise.merges) == 8 and len(noise.choices) == 2 ** 8 - 1
    assert len(noise.leaf_choices(7)) == 128
    again = Noise.from_uniforms(noise.momentum, noise.uniforms().tolist(), 8)
    assert again == noise
    assert all(0 <= u < 1 for u in noise.choices) and math.isfinite(float(noise.momentum.sum()))
