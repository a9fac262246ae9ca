"""``obs_mask``: NUTS samples only the missing entries (``ppgen.inference.mcmc.layout``).

Pyro splits ``y`` into ``y_observed`` and a latent ``y_unobserved`` whose entries at
observed positions have no density; sampled, they make every tree reach the maximum
depth. Here they are held at the data, and the posterior is checked against the closed
form of a Bayesian linear regression with known noise."""

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import ppgen
from ppgen.inference import NUTS
from ppgen.inference.mcmc.potential import Potential
from ppgen.inference.program import Program

PRIOR_SD, NOISE = 3.0, 0.5


def regression(x, y, observed):
    a = pyro.sample("a", dist.Normal(0.0, PRIOR_SD))
    b = pyro.sample("b", dist.Normal(0.0, PRIOR_SD))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(a + b * x, NOISE), obs=y, obs_mask=observed)


def _data():
    x = torch.linspace(-2.0, 2.0, 12, dtype=torch.float64)
    y = 1.0 - 0.7 * x + NOISE * torch.randn(12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    observed = torch.ones(12, dtype=torch.bool)
    observed[[1, 5, 9]] = False
    return {"x": x, "y": torch.where(observed, y, torch.zeros_like(y)), "observed": observed}


def _exact(values):
    """The posterior of (a, b) from the observed rows, and each missing y's mean and sd."""
    x, y, seen = values["x"], values["y"], values["observed"]
    design = torch.stack([torch.ones_like(x), x], -1)
    precision = torch.eye(2, dtype=x.dtype) / PRIOR_SD ** 2 + design[seen].T @ design[seen] / NOISE ** 2
    cov = torch.linalg.inv(precision)
    mean = cov @ design[seen].T @ y[seen] / NOISE ** 2
    missing = design[~seen]
    return mean, cov, missing @ mean, (NOISE ** 2 + (missing @ cov * missing).sum(-1)).sqrt()


def test_only_missing_entries_are_sampled(float64):
    values = _data()
    potential = Potential(Program.build(regression, values), 1, mode="vectorized")
    assert potential.dim == 2 + 3  # a, b and the three missing responses
    full = potential.unflatten(potential.initial)["y_unobserved"][0]
    seen = values["observed"]
    assert torch.equal(full[seen], values["y"][seen])  # held at the data


@pytest.mark.parametrize("potential", ["vectorized", "compiled"])
def test_posterior_equals_the_closed_form_and_trees_stay_short(float64, potential):
    values = _data()
    fit = ppgen.fit(regression, values, NUTS(num_samples=800, warmup=400, chains=2, potential=potential),
                    seed=1, progress=False)
    assert float(fit.sample_stats["tree_depth"].float().mean()) < 4  # Pyro's: 10, every transition
    mean, cov, y_mean, y_sd = _exact(values)
    seen = values["observed"]
    imputed = fit.posterior["y_unobserved"]
    assert torch.equal(imputed[..., seen], values["y"][seen].expand(imputed[..., seen].shape))
    draws = {"a": fit.posterior["a"].numpy(), "b": fit.posterior["b"].numpy()}
    for i in range(3):
        draws[f"y{i}"] = imputed[..., ~seen][..., i].numpy()
    expected = {"a": (mean[0], cov[0, 0].sqrt()), "b": (mean[1], cov[1, 1].sqrt())}
    expected.update({f"y{i}": (y_mean[i], y_sd[i]) for i in range(3)})
    for name, (m, sd) in expected.items():
        ess = float(az.ess(draws[name], method="bulk"))
        assert abs(np.mean(draws[name]) - float(m)) < 4 * float(sd) / ess ** 0.5, name
        assert abs(np.std(draws[name]) - float(sd)) < 4 * float(sd) / (2 * ess) ** 0.5, name
