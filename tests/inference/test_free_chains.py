"""Free-running chains (``ppgen.inference.mcmc.free_running``): the driver's warm-up and
draws against an exact posterior, the compiled step against eager (the per-chain state
machine against the reference kernel: ``test_reference_kernel``)."""

from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppgen
from ppgen.inference import NUTS
from ppgen.inference.mcmc import accelerate
from ppgen.inference.mcmc import free_running as fc
from ppgen.inference.mcmc.integrator import State
from ppgen.inference.mcmc.metric import Metric
from ppgen.inference.mcmc.nuts import Sampler
from ppgen.inference.mcmc.potential import Potential
from ppgen.inference.program import Program

from .test_fast_nuts import eight_schools, schools_data


def test_concat_and_stack_equal_torchs():
    g = torch.Generator().manual_seed(0)
    parts = [torch.randn(3, k, 4, generator=g) for k in (2, 1, 5)]
    assert torch.equal(fc.concat(parts, 1), torch.cat(parts, 1))
    assert torch.equal(fc.concat(parts, -2), torch.cat(parts, -2))
    columns = [torch.randn(5, generator=g) for _ in range(4)]
    assert torch.equal(fc.stack(columns, 1), torch.stack(columns, 1))
    assert torch.equal(fc.stack(columns, 0), torch.stack(columns, 0))


def normal_mean(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 0.5))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    return scale


def _eager_kernel(potential, depth):
    return lambda *args: fc.free_step(potential._leaf_eager, *args, depth)


def test_driver_warms_up_and_samples_the_exact_posterior(float64):
    """The driver with an eager step: per-chain windowed warm-up reaches the target
    acceptance, and the draws match the conjugate posterior of ``mu`` and the prior of
    ``scale`` (a site the data do not touch) within Monte Carlo error."""
    y = torch.tensor([0.3, -0.4, 1.2, 0.8, 0.1, 0.6])
    chains, draws = 4, 400
    potential = Potential(Program.build(normal_mean, {"y": y}), chains, mode="vectorized")
    z = potential.initial
    value, grad = potential.value_and_grad(z)
    generator = torch.Generator().manual_seed(3)
    depth = 8
    sampler = Sampler(potential.value_and_grad, depth, generator)
    method = SimpleNamespace(warmup=300, num_samples=draws, target_accept=0.8, max_tree_depth=depth)
    metric = Metric(torch.ones_like(z))
    step = z.new_full((chains, 1), 1.0)
    u, stats = fc.sample(_eager_kernel(potential, depth), sampler, State(z, value, grad), step, metric, method,
                         generator)
    assert u.shape == (chains, draws, 2)
    assert stats["diverging"].dtype == torch.bool and stats["tree_depth"].dtype == torch.long
    assert set(stats) == set(fc.RECORD)
    # Stan's final step size is the averaged iterate, below the last ones: on this nearly
    # Gaussian posterior the acceptance ends above the 0.8 target (0.91 in lockstep, two seeds)
    assert 0.8 < float(stats["acceptance_rate"].mean()) < 0.96
    # every chain adapted its own step size and metric
    assert stats["step_size"][:, 0].unique().numel() == chains
    posterior = potential.unflatten(u)
    n = len(y)
    mean, sd = float(y.sum()) / (n + 1), (1.0 / (n + 1)) ** 0.5
    mu = posterior["mu"].reshape(-1)
    se = sd / (mu.numel() / 4) ** 0.5  # effective sample size taken as a quarter of the draws
    assert abs(float(mu.mean()) - mean) < 4 * se
    assert abs(float(mu.std()) - sd) < 0.1 * sd
    log_scale = posterior["scale"].reshape(-1).log()
    assert abs(float(log_scale.mean())) < 4 * 0.5 / (log_scale.numel() / 4) ** 0.5
    assert abs(float(log_scale.std()) - 0.5) < 0.05


def test_plan_lists_the_slow_windows():
    plan = fc.make_plan(1000, 500, 0.9, torch.zeros(1, dtype=torch.float64))
    assert plan[:3].tolist() == [1000, 1500, 0.9]
    bounds = plan[3:].view(-1, 2)
    used = bounds[bounds[:, 1] >= 0]
    assert used[0].tolist() == [75, 99] and used[-1, 1] == 949  # Stan's 75 / 25, 50, ... / 50


@pytest.mark.slow  # TorchInductor compiles for seconds
def test_compiled_free_step_matches_eager(float64):
    potential = Potential(Program.build(eight_schools, schools_data()), 3, mode="compiled")
    kernel = fc.compile_free_step(potential, 6)
    assert kernel is not None and kernel.lean
    for seed in (7, 8, 9):
        args = fc._probe_args(potential, 6, torch.Generator().manual_seed(seed))
        got = kernel(*args)
        with torch.enable_grad():
            expected = _eager_kernel(potential, 6)(*args)
        for a, b in zip(got, expected):
            assert torch.allclose(a, b.detach(), rtol=1e-10, atol=1e-10, equal_nan=True)


def test_fit_runs_free_chains_on_a_compiled_potential(float64, monkeypatch):
    """``ppgen.fit`` with several chains and a compiled potential samples by free-running
    chains (and the same fit with them switched off, in lockstep, agrees)."""
    used = []
    real = fc.sample
    monkeypatch.setattr(fc, "sample", lambda *a, **k: used.append(1) or real(*a, **k))
    y = torch.tensor([0.3, -0.4, 1.2, 0.8, 0.1, 0.6])
    method = NUTS(num_samples=300, warmup=200, chains=3, potential="compiled", chain_method="vectorized")
    fit = ppgen.fit(normal_mean, {"y": y}, method, seed=1, progress=False)
    assert used == [1]
    assert fit.posterior["mu"].shape == (3, 300)
    mean, sd = float(y.sum()) / 7, (1 / 7) ** 0.5
    assert abs(float(fit.posterior["mu"].mean()) - mean) < 4 * sd / (900 / 4) ** 0.5
    assert int(fit.sample_stats["diverging"].sum()) == 0
    monkeypatch.setattr(accelerate, "FREE_CHAINS", False)
    lockstep = ppgen.fit(normal_mean, {"y": y}, method, seed=1, progress=False)
    assert used == [1]
    assert abs(float(lockstep.posterior["mu"].mean()) - float(fit.posterior["mu"].mean())) < 4 * sd / 15
