"""ppgen's NUTS engine: the traced potential against Pyro's, and the sampler against exact answers."""

import logging
import math

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import ppgen
from ppgen.diagnostics.summary import without_numba
from ppgen.inference import HMC, NUTS
from ppgen.inference.adaptation import Welford, windows
from ppgen.inference.potential import Potential
from ppgen.inference.program import Program

Y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
SIGMA = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]


def eight_schools(J, sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", J):
        theta_tilde = pyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * theta_tilde, sigma), obs=y)


def simplex_model(counts):
    probs = pyro.sample("probs", dist.Dirichlet(torch.ones(3)))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    pyro.sample("counts", dist.Multinomial(int(counts.sum()), probs), obs=counts)
    with pyro.plate("rows", 4):
        pyro.sample("y", dist.Normal(0.0, scale), obs=torch.tensor([0.5, -1.0, 2.0, 0.1]))


def _schools():
    return {"J": 8, "sigma": torch.tensor(SIGMA), "y": torch.tensor(Y)}


# Multinomial.log_prob indexes with a data-dependent mask, which a single trace cannot
# record: "auto" must fall back to the vectorised eager potential there.
@pytest.mark.parametrize("model,data,modes", [
    (eight_schools, _schools, ("jit", "vectorized", "auto")),
    (simplex_model, lambda: {"counts": torch.tensor([3.0, 5.0, 1.0])}, ("vectorized", "auto"))])
@pytest.mark.parametrize("chains", [1, 3])
def test_potential_equals_pyros_bit_for_bit(float64, model, data, modes, chains):
    program = Program.build(model, data())
    loop = Potential(program, chains, mode="loop")  # Pyro's own potential_fn, chain by chain
    u = loop.initial + torch.randn(loop.initial.shape, generator=torch.Generator().manual_seed(3))
    expected_value, expected_grad = loop.value_and_grad(u)
    for mode in modes:
        potential = Potential(program, chains, mode=mode)
        assert potential.mode == (modes[0] if mode == "auto" else mode)
        value, grad = potential.value_and_grad(u)
        if chains == 1:
            assert torch.equal(value, expected_value), mode
            assert torch.equal(grad, expected_grad), mode
        else:
            # Batched kernels may reduce in another order than one chain's: a few ulps.
            assert torch.allclose(value, expected_value, rtol=1e-13, atol=0), mode
            assert torch.allclose(grad, expected_grad, rtol=1e-13, atol=1e-13), mode


def test_unflatten_maps_to_the_supports(float64):
    program = Program.build(simplex_model, {"counts": torch.tensor([3.0, 5.0, 1.0])})
    potential = Potential(program, 2)
    values = potential.unflatten(torch.randn(5, 2, potential.dim, generator=torch.Generator().manual_seed(0)))
    assert values["probs"].shape == (5, 2, 3) and values["scale"].shape == (5, 2)
    assert torch.allclose(values["probs"].sum(-1), torch.ones(5, 2))
    assert bool((values["scale"] > 0).all())


def _mcse_check(draws, mean, var):
    """Mean within 4.5 Monte Carlo standard errors (ArviZ's mcse from the chains' ESS: a
    z-test per coordinate, 4.5 sd so that a dozen coordinates rarely fail by chance),
    variance within 4.5 of its MCSE too."""
    data = az.convert_to_dataset({"x": draws})
    with without_numba():
        mcse_mean = az.mcse(data, method="mean")["x"].values
        mcse_sd = az.mcse(data, method="sd")["x"].values
    flat = draws.reshape(-1, draws.shape[-1])
    assert np.all(np.abs(flat.mean(0) - mean) < 4.5 * mcse_mean), (flat.mean(0), mean, mcse_mean)
    assert np.all(np.abs(flat.std(0) - np.sqrt(var)) < 4.5 * mcse_sd), (flat.std(0), np.sqrt(var), mcse_sd)


@pytest.mark.parametrize("dense", [False, True])
def test_nuts_recovers_a_correlated_gaussian(float64, dense):
    mean = torch.tensor([1.0, -2.0, 0.5])
    cov = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 0.01]])

    def model():
        pyro.sample("x", dist.MultivariateNormal(mean, cov))

    fit = ppgen.fit(model, {}, NUTS(num_samples=400, warmup=300, chains=4, dense_mass=dense),
                    progress=False, seed=1)
    draws = fit.posterior["x"].numpy()
    assert draws.shape == (4, 400, 3)
    _mcse_check(draws, mean.numpy(), cov.diagonal().numpy())
    assert int(fit.sample_stats["diverging"].sum()) == 0
    assert fit.sample_stats["tree_depth"].shape == (4, 400)
    if dense:  # a dense metric whitens the target: short trees
        assert float(fit.sample_stats["n_steps"].float().mean()) < 6


def test_hmc_recovers_a_gaussian(float64):
    def model():
        pyro.sample("x", dist.Normal(torch.tensor([3.0, -1.0]), torch.tensor([2.0, 0.5])).to_event(1))

    fit = ppgen.fit(model, {}, HMC(num_samples=800, warmup=300, chains=2, num_steps=8),
                    progress=False, seed=0)
    _mcse_check(fit.posterior["x"].numpy(), np.array([3.0, -1.0]), np.array([4.0, 0.25]))
    assert "tree_depth" not in fit.sample_stats


def test_enumerated_discrete_sites_are_summed_out_exactly(float64, caplog):
    """x ~ N(0, 1), z ~ Bernoulli(0.3), y ~ N(x + 2z, 1): the posterior of x is a two-component
    mixture of Gaussians in closed form."""
    y = 1.5

    def model(y):
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        z = pyro.sample("z", dist.Bernoulli(0.3))
        pyro.sample("y", dist.Normal(x + 2 * z, 1.0), obs=y)

    with caplog.at_level(logging.INFO, logger="ppgen"):
        fit = ppgen.fit(model, {"y": torch.tensor(y)}, NUTS(num_samples=500, warmup=200, chains=2),
                        progress=False, seed=0)
    assert "loop" in caplog.text and "enumeration" in caplog.text
    # Component z: x | y, z ~ N((y - 2z) / 2, 1/2), weight 0.3^z 0.7^(1-z) N(y; 2z, 2).
    weights = np.array([0.7 * math.exp(-(y ** 2) / 4), 0.3 * math.exp(-((y - 2) ** 2) / 4)])
    weights /= weights.sum()
    means = np.array([y / 2, (y - 2) / 2])
    mean = (weights * means).sum()
    var = (weights * (0.5 + means ** 2)).sum() - mean ** 2
    draws = fit.posterior["x"].numpy()[..., None]
    _mcse_check(draws, np.array([mean]), np.array([var]))


def test_dynamic_control_flow_falls_back_with_a_reason(float64, caplog):
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        scale = 1.0 if x > 0 else 2.0  # a Python branch on a latent value: no single trace
        pyro.sample("y", dist.Normal(x, scale), obs=torch.tensor(0.3))

    with caplog.at_level(logging.INFO, logger="ppgen"):
        fit = ppgen.fit(model, {}, NUTS(num_samples=300, warmup=200, chains=1), progress=False, seed=0)
    assert "control flow" in caplog.text
    assert fit.posterior["x"].shape == (1, 300)
    with pytest.raises(ValueError, match="control flow"):
        Potential(Program.build(model, {}), 1, mode="jit")


@pytest.mark.slow  # Pyro's engine takes about a minute here
def test_engines_agree_on_eight_schools():
    """ppgen's engine and Pyro's NUTS sample the same posterior: posterior means of mu and tau
    agree within 4.5 combined Monte Carlo standard errors."""
    method = dict(num_samples=500, warmup=300, chains=2)
    fast = ppgen.fit(eight_schools, _schools(), NUTS(**method), progress=False, seed=0)
    slow = ppgen.fit(eight_schools, _schools(), NUTS(engine="pyro", **method), progress=False, seed=0)
    for name in ("mu", "tau"):
        a, b = fast.posterior[name].numpy(), slow.posterior[name].numpy()
        se = math.hypot(float(az.mcse(a, method="mean")), float(az.mcse(b, method="mean")))
        assert abs(a.mean() - b.mean()) < 4.5 * se, name


def test_chains_are_vectorized_and_reported(float64):
    fit = ppgen.fit(eight_schools, _schools(), NUTS(num_samples=50, warmup=50, chains=5),
                    progress=False, seed=2)
    assert fit.posterior["theta_tilde"].shape == (5, 50, 8)
    idata = fit.to_arviz()
    stats = idata.sample_stats
    assert stats["diverging"].shape == (5, 50) and stats["lp"].shape == (5, 50)
    assert bool(torch.isfinite(fit.sample_stats["energy"]).all())
    # chains start apart (Pyro's init strategy, one point per chain) and adapt on their own
    assert len(set(fit.sample_stats["step_size"][:, 0].tolist())) == 5


def test_same_seed_same_draws():
    method = NUTS(num_samples=30, warmup=30, chains=2)
    a = ppgen.fit(eight_schools, _schools(), method, progress=False, seed=4)
    b = ppgen.fit(eight_schools, _schools(), method, progress=False, seed=4)
    assert torch.equal(a.posterior["mu"], b.posterior["mu"])


def test_stan_warmup_windows():
    assert windows(1000) == [(75, 99), (100, 149), (150, 249), (250, 449), (450, 949)]
    assert windows(150) == [(75, 99)]
    assert windows(100) == [(15, 89)]  # short warm-up: 15% / 75% / 10%
    assert windows(10) == []


def test_welford_matches_numpy(float64):
    draws = torch.randn(40, 2, 3, generator=torch.Generator().manual_seed(0))
    for dense in (False, True):
        welford = Welford(2, 3, dense, torch.float64, "cpu")
        for row in draws:
            welford.add(row)
        n = 40
        for c in range(2):
            cov = np.cov(draws[:, c].numpy(), rowvar=False)
            target = n / (n + 5) * cov + 1e-3 * 5 / (n + 5) * np.eye(3)
            got = welford.inverse_mass()[c].numpy()
            np.testing.assert_allclose(got, target if dense else np.diag(target), rtol=1e-10)


def test_bad_engine_options_are_named():
    with pytest.raises(ppgen.MethodError, match="engine"):
        NUTS(engine="stan")
    with pytest.raises(ppgen.MethodError, match="potential"):
        NUTS(potential="compiled")
