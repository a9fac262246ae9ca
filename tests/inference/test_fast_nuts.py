"""ppgen's NUTS engine: the traced potential against Pyro's, and the sampler against exact answers."""

import logging
import math

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import config_enumerate

import ppgen
from ppgen.diagnostics.summary import without_numba
from ppgen.inference import HMC, NUTS
from ppgen.inference.mcmc.adaptation import Welford, windows
from ppgen.inference.mcmc.potential import Potential
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


def logistic(X, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[-1]]).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    with pyro.plate("rows", X.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=(X * w).sum(-1) + b), obs=y)


def gauss_mix(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 2.0).expand([2]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
    theta = pyro.sample("theta", dist.Beta(5.0, 5.0))
    with pyro.plate("data", y.shape[0]):
        weights = dist.Categorical(probs=torch.stack([theta, 1 - theta], -1))
        pyro.sample("y", dist.MixtureSameFamily(weights, dist.Normal(mu, sigma)), obs=y)


def unplated_schools(J, sigma, y=None):
    """Eight schools as Pyro's own example writes it: vector sites, no plate."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    theta = pyro.sample("theta", dist.Normal(mu * torch.ones(J), tau))
    pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


@config_enumerate
def enumerated_mixture(y):
    """A mixture as Pyro's GMM tutorial writes it: enumerated assignments, ``locs[z]``."""
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    locs = pyro.sample("locs", dist.Normal(0.0, 3.0).expand([2]).to_event(1))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", y.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("y", dist.Normal(locs[z], scale), obs=y)


def schools_data():
    return {"J": 8, "sigma": torch.tensor(SIGMA), "y": torch.tensor(Y)}


def logistic_data():
    X = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
    return {"X": X, "y": (X[:, 0] > 0).to(X.dtype)}


def _mixture():
    return {"y": torch.cat([torch.randn(20, generator=torch.Generator().manual_seed(0)) - 2, torch.ones(10)])}


# The simplex model reads a Python value from its data (``int(counts.sum())``): recorded as
# a constant. Bernoulli's and MixtureSameFamily's shape checks read shapes only.
@pytest.mark.parametrize("model,data,modes", [
    (eight_schools, schools_data, ("jit", "vectorized", "auto")),
    (unplated_schools, schools_data, ("jit", "vectorized", "auto")),
    (enumerated_mixture, _mixture, ("jit", "vectorized", "auto")),
    (logistic, logistic_data, ("jit", "auto")),
    (gauss_mix, _mixture, ("jit", "auto")),
    (simplex_model, lambda: {"counts": torch.tensor([3.0, 5.0, 1.0])}, ("jit", "vectorized", "auto"))])
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


@pytest.mark.slow  # TorchInductor compiles for seconds (less with its on-disk cache)
@pytest.mark.parametrize("model,data", [(eight_schools, schools_data), (gauss_mix, _mixture)])
def test_inductor_potential_and_leaf_agree_with_pyros(float64, model, data):
    """The compiled (TorchInductor) potential against Pyro's own, and its fused leapfrog leaf
    against the same step done with Pyro's potential: equal to 1e-12 relative in float64
    (Inductor may fuse and reorder a reduction, so a few ulps, not bit for bit)."""
    program = Program.build(model, data())
    loop = Potential(program, 2, mode="loop")
    compiled = Potential(program, 2, mode="compiled")
    u = loop.initial + torch.randn(loop.initial.shape, generator=torch.Generator().manual_seed(3))
    expected, got = loop.value_and_grad(u), compiled.value_and_grad(u)
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    r, step, inverse = torch.randn_like(u), torch.full((2, 1), 0.1), torch.rand_like(u) + 0.5
    z, r_new, grad, value, energy, velocity, rho = compiled.leaf(u, r, expected[1], r, step, 0.5 * step, inverse)
    r_half = r - 0.05 * expected[1]
    assert torch.allclose(z, u + 0.1 * inverse * r_half, rtol=1e-14)
    value_at, grad_at = loop.value_and_grad(z)
    assert torch.allclose(value, value_at, rtol=1e-12) and torch.allclose(grad, grad_at, rtol=1e-12, atol=1e-12)
    assert torch.allclose(r_new, r_half - 0.05 * grad_at, rtol=1e-12, atol=1e-12)
    assert torch.allclose(energy, value_at + 0.5 * (inverse * r_new * r_new).sum(-1), rtol=1e-12)
    assert torch.allclose(velocity, inverse * r_new) and torch.allclose(rho, r + r_new)


def test_probes_refuse_a_graph_wrong_away_from_the_start(float64, caplog):
    """A recorded potential that followed the initial point's branch of a data-dependent
    condition is right at the start and wrong beyond it: the probes must see that."""
    from ppgen.inference.mcmc.potential import _verify

    potential = Potential(Program.build(eight_schools, schools_data()), 1, mode="vectorized")
    start = potential.initial.clone()

    exact = potential._log_joint_and_grad

    def frozen_branch(u):  # e.g. `scale = 1.0 if tau < t0 else 1.01` traced at the start
        value, grad = exact(u)
        far = (u - start).abs().max() > 0.5
        return (value * 1.01, grad * 1.01) if far else (value, grad)

    args = (start, start * 0, start * 0, start * 0, start.new_full((1, 1), 0.1),
            start.new_full((1, 1), 0.05), torch.ones_like(start))
    assert _verify(potential, exact, potential._leaf_eager, args) == ""
    why = _verify(potential, frozen_branch, potential._leaf_eager, args)
    assert "control flow" in why and "probe" in why


def branching(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    scale = 1.0 if float(mu) < 0.5 else 2.0  # a Python branch on a latent's value
    pyro.sample("y", dist.Normal(mu, scale), obs=y)


def test_a_branch_on_a_latent_is_not_recorded(float64):
    """Reading a latent as a Python value records the branch taken at the start: the probes
    see the graph go wrong across the branch, and Pyro's own potential is used instead."""
    pyro.set_rng_seed(0)
    potential = Potential(Program.build(branching, {"y": torch.tensor([0.1, 0.3])}), 2)
    assert potential.mode == "loop" and "control flow" in potential.reason


def test_improper_uniform_programs_fit_with_nuts_and_svi(float64):
    """Flat priors on mu and on s > 0, y_i ~ N(mu, s): the posterior of mu is symmetric
    about the sample mean. ImproperUniform cannot be drawn, so ppgen's analysis and
    initialisation must place such sites without sampling them."""
    from pyro.distributions import constraints

    def model(y):
        mu = pyro.sample("mu", dist.ImproperUniform(constraints.real, (), ()))
        s = pyro.sample("s", dist.ImproperUniform(constraints.positive, (), ()))
        with pyro.plate("n", y.shape[0]):
            pyro.sample("y", dist.Normal(mu, s), obs=y)

    y = torch.randn(30, generator=torch.Generator().manual_seed(0)) + 3.0
    program = Program.build(model, {"y": y})
    assert set(program.latent) == {"mu", "s"} and not program.discrete_sites
    fit = ppgen.fit(model, {"y": y}, NUTS(num_samples=300, warmup=200, chains=2), progress=False, seed=0)
    draws = fit.posterior["mu"].numpy()
    with without_numba():
        mcse = float(az.mcse(draws, method="mean"))
    assert abs(draws.mean() - float(y.mean())) < 4.5 * mcse
    svi = ppgen.fit(model, {"y": y}, ppgen.inference.SVI(num_steps=300), progress=False, seed=0)
    assert math.isfinite(svi.losses[-1]) and svi.losses[-1] < svi.losses[0]


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


@pytest.mark.parametrize("dense,chains", [(False, 4), (True, 4), (False, 1)])
def test_nuts_recovers_a_correlated_gaussian(float64, dense, chains):
    """Four chains take the batched, masked transitions; one chain the scalar path."""
    mean = torch.tensor([1.0, -2.0, 0.5])
    cov = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 0.01]])

    def model():
        pyro.sample("x", dist.MultivariateNormal(mean, cov))

    fit = ppgen.fit(model, {}, NUTS(num_samples=400 * 4 // chains, warmup=300, chains=chains, dense_mass=dense),
                    progress=False, seed=1)
    draws = fit.posterior["x"].numpy()
    assert draws.shape == (chains, 1600 // chains, 3)
    _mcse_check(draws, mean.numpy(), cov.diagonal().numpy())
    assert int(fit.sample_stats["diverging"].sum()) == 0
    assert fit.sample_stats["tree_depth"].shape == (chains, 1600 // chains)
    assert set(fit.timings) == {"compile", "sampling", "total"}
    assert fit.timings["total"] == pytest.approx(fit.timings["compile"] + fit.timings["sampling"])
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
    # Pyro's enumerated potential recorded once, both chains batched through it
    assert fit.path == {"potential": "jit", "reason": "", "transitions": "reference", "chains": "vectorized"}
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
    fast = ppgen.fit(eight_schools, schools_data(), NUTS(**method), progress=False, seed=0)
    slow = ppgen.fit(eight_schools, schools_data(), NUTS(engine="pyro", **method), progress=False, seed=0)
    for name in ("mu", "tau"):
        a, b = fast.posterior[name].numpy(), slow.posterior[name].numpy()
        se = math.hypot(float(az.mcse(a, method="mean")), float(az.mcse(b, method="mean")))
        assert abs(a.mean() - b.mean()) < 4.5 * se, name


def test_chains_are_vectorized_and_reported(float64):
    fit = ppgen.fit(eight_schools, schools_data(), NUTS(num_samples=50, warmup=50, chains=5),
                    progress=False, seed=2)
    assert fit.posterior["theta_tilde"].shape == (5, 50, 8)
    idata = fit.to_arviz()
    stats = idata.sample_stats
    assert stats["diverging"].shape == (5, 50) and stats["lp"].shape == (5, 50)
    assert bool(torch.isfinite(fit.sample_stats["energy"]).all())
    # chains start apart (Pyro's init strategy, one point per chain) and adapt on their own
    assert len(set(fit.sample_stats["step_size"][:, 0].tolist())) == 5


@pytest.mark.parametrize("chains", [1, 2])
def test_same_seed_same_draws(chains):
    method = NUTS(num_samples=30, warmup=30, chains=chains)
    a = ppgen.fit(eight_schools, schools_data(), method, progress=False, seed=4)
    b = ppgen.fit(eight_schools, schools_data(), method, progress=False, seed=4)
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
        NUTS(potential="inductor")


def test_inductor_kernel_lean_path_and_input_writes(float64):
    """The lean Inductor path (no per-call wrappers) computes what the graph computes; a
    graph that writes into its input is compiled the usual way instead."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from ppgen.inference.mcmc.inductor import _writes_inputs, inductor_decompositions, inductor_kernel

    def pure(x, y):
        return (x * y).exp().sum(-1), x - y

    def writes(x, y):
        x.mul_(2.0)
        return x + y,

    x, y = torch.randn(1, 5), torch.randn(1, 5)
    graph = make_fx(pure, decomposition_table=inductor_decompositions())(x, y)
    assert not _writes_inputs(graph)
    kernel = inductor_kernel(graph, (x, y))
    assert kernel.lean
    for got, expected in zip(kernel(x, y), pure(x, y)):
        assert torch.allclose(got, expected, rtol=1e-12)
    writer = make_fx(writes)(x.clone(), y)
    assert _writes_inputs(writer)
    assert not inductor_kernel(writer, (x.clone(), y)).lean
