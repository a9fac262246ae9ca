"""One chain's NUTS transition in C++ (``ppgen.inference.mcmc.native``): the same
transitions as the reference kernel on the same random numbers, its own draws against an
exact posterior, and a clear refusal where the compiled leaf calls back into ATen."""

import logging

import arviz as az
import pyro
import pyro.distributions as dist
import pytest
import torch

import ppgen
from ppgen.inference import NUTS
from ppgen.inference.mcmc.fallback import Refused, attempt
from ppgen.inference.mcmc.integrator import State
from ppgen.inference.mcmc.metric import Metric
from ppgen.inference.mcmc.native import compile_native_nuts
from ppgen.inference.mcmc.potential import Potential
from ppgen.inference.mcmc.randomness import Noise
from ppgen.inference.mcmc.reference import nuts_transition
from ppgen.inference.program import Program

from .test_fast_nuts import eight_schools, logistic, logistic_data, schools_data
from .test_reference_kernel import assert_same


def _native(model, data, depth=6):
    potential = Potential(Program.build(model, data), 1, mode="compiled")
    assert potential.mode == "compiled", potential.reason
    native, why = attempt(lambda: compile_native_nuts(potential, depth, torch.Generator().manual_seed(0)))
    assert native is not None, why
    return potential, native


@pytest.mark.parametrize("model,data,step", [(eight_schools, schools_data, 0.35), (logistic, logistic_data, 0.12),
                                             (eight_schools, schools_data, 3.0)])
def test_native_transitions_equal_the_reference(float64, model, data, step):
    """Fed the reference kernel's random numbers (``Noise``), the C++ transition makes the
    reference's tree: the same proposal, depth, leaves and acceptance statistic (float64,
    to rounding: the reference sums momenta in its own order). The step of 3.0 diverges."""
    depth = 6
    potential, native = _native(model, data(), depth)
    z = potential.initial
    value, grad = potential.value_and_grad(z)
    state = State(z, value, grad)
    metric = Metric(torch.rand(z.shape, generator=torch.Generator().manual_seed(1)) + 0.5)
    step_size = z.new_full((1, 1), step)
    generator, depths, diverged = torch.Generator().manual_seed(0), set(), 0
    for _ in range(25):
        noise = Noise.draw(generator, z, depth)
        expected, expected_stats = nuts_transition(potential.value_and_grad, state, step, metric, depth, noise)
        got, stats = native.replay(state, step_size, metric, metric.momentum_from(noise.momentum), noise.uniforms())
        # (C++ sums momenta and dot products in its own order: equal to rounding in float64)
        assert_same(got, stats, expected, expected_stats, tol=1e-10)
        depths.add(stats["depth"])
        diverged += stats["diverging"]
        state = expected
    if step > 1:
        assert diverged > 0
    else:
        assert len(depths) > 1 and diverged == 0


def test_native_leaf_equals_the_compiled_leaf_row_by_row(float64):
    """The C++ leaf over three chains (rows, each through the one-chain kernels) equals the
    compiled one-chain leaf on each row, and its zero-length step gives U and its gradient."""
    potential, native = _native(eight_schools, schools_data())
    generator = torch.Generator().manual_seed(2)
    z = potential.initial + torch.randn((3, potential.dim), generator=generator)
    r, inverse = torch.randn(z.shape, generator=generator), torch.rand(z.shape, generator=generator) + 0.5
    step, rho = torch.tensor([[0.2], [0.05], [-0.3]]), torch.randn(z.shape, generator=generator)
    grad = torch.cat([potential.value_and_grad(z[c:c + 1])[1] for c in range(3)])
    native.threads = 2
    got = native.leaf(z, r, grad, rho, step, 0.5 * step, inverse)
    for c in range(3):
        row = slice(c, c + 1)
        expected = potential.leaf(z[row], r[row], grad[row], rho[row], step[row], 0.5 * step[row], inverse[row])
        for a, b in zip(got, expected):
            assert torch.allclose(a[row], b, rtol=1e-12, atol=1e-12)
    value, gradient = native.value_and_grad(z)
    for c in range(3):
        expected = potential.value_and_grad(z[c:c + 1])
        assert torch.allclose(value[c:c + 1], expected[0], rtol=1e-12)
        assert torch.allclose(gradient[c:c + 1], expected[1], rtol=1e-12, atol=1e-12)


def gamma_poisson(y):
    rate = pyro.sample("rate", dist.Gamma(2.0, 0.5))
    mean = pyro.sample("mean", dist.Normal(0.0, 3.0))
    with pyro.plate("rows", y.shape[0]):
        pyro.sample("y", dist.Poisson(rate), obs=y)
        pyro.sample("x", dist.Normal(mean, 2.0), obs=y - 3.0)


@pytest.mark.parametrize("chains", [1, 3])
def test_native_fit_draws_a_conjugate_posterior(caplog, chains):
    """``ppgen.fit`` on a compiled potential samples in C++ (its own random numbers:
    momentum by the polar method, uniforms from xoshiro256**; three chains on two threads,
    each its own generator) and matches the
    exact posterior, Gamma(2 + sum y, 0.5 + n) and a normal mean, within 4.5 Monte Carlo
    standard errors of the mean and of the standard deviation (float32)."""
    y = torch.tensor([3.0, 5.0, 2.0, 4.0, 6.0, 1.0, 3.0, 4.0])
    n = y.shape[0]
    exact = {"rate": ((2.0 + float(y.sum())) / (0.5 + n), (2.0 + float(y.sum())) ** 0.5 / (0.5 + n))}
    precision = 1 / 9.0 + n / 4.0
    exact["mean"] = (float((y - 3.0).sum()) / 4.0 / precision, precision ** -0.5)
    with caplog.at_level(logging.INFO, logger="ppgen"):
        fit = ppgen.fit(gamma_poisson, {"y": y}, NUTS(num_samples=1500, warmup=500, chains=chains,
                                                      potential="compiled"), seed=3, progress=False)
    assert f"NUTS transitions: C++ ({chains} chain" in caplog.text
    assert int(fit.sample_stats["diverging"].sum()) == 0
    assert fit.sample_stats["n_steps"].shape == (chains, 1500)
    idata = fit.to_arviz()
    for name, (mean, sd) in exact.items():
        draws = idata.posterior[name].values
        assert draws.shape == (chains, 1500)
        if chains > 1:  # the chains are independent: no two alike
            assert len({float(d[-1]) for d in draws}) == chains
        ess = float(az.ess(idata, var_names=[name])[name])
        assert abs(draws.mean() - mean) < 4.5 * sd / ess ** 0.5, name
        assert abs(draws.std() - sd) < 4.5 * sd / (2 * ess) ** 0.5, name


@pytest.mark.parametrize("chains", [1, 2])
def test_a_leaf_calling_aten_is_refused_and_sampled_in_python(caplog, chains):
    """A model whose compiled leaf calls an ATen kernel between TorchInductor's (here a
    Cholesky factor) keeps the Python transition, and says why; several chains are then
    batched through a potential built for them."""
    def model(y):
        a = pyro.sample("a", dist.LogNormal(0.0, 0.5))
        cov = torch.eye(3) + a[..., None, None] * torch.ones(3, 3)  # a batch of chains, if any
        with pyro.plate("rows", y.shape[0]):
            pyro.sample("y", dist.MultivariateNormal(torch.zeros(3), cov), obs=y)

    y = torch.tensor([[0.5, 1.0, -0.3], [1.2, 0.8, 0.9]])
    potential = Potential(Program.build(model, {"y": y}), 1, mode="compiled")
    assert potential.mode == "compiled", potential.reason
    with pytest.raises(Refused, match="more than C\\+\\+ kernels"):
        compile_native_nuts(potential, 10, torch.Generator().manual_seed(0))
    with caplog.at_level(logging.INFO, logger="ppgen"):
        fit = ppgen.fit(model, {"y": y}, NUTS(num_samples=200, warmup=200, chains=chains, potential="compiled"),
                        seed=0, progress=False)
    assert "NUTS transitions: Python (the compiled leaf calls more than C++ kernels" in caplog.text
    assert fit.posterior["a"].shape == (chains, 200)
    assert torch.isfinite(fit.posterior["a"]).all() and (fit.posterior["a"] > 0).all()
