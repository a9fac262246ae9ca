"""SVI's defaults land on the optimum, and a run that has not converged says so.

A Bayesian linear regression with known noise has a Gaussian posterior, which
``guide="mvn"`` can represent exactly: its fitted moments are compared with the
closed-form posterior's."""

import logging

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppgen
from ppgen.inference import SVI
from ppgen.inference.svi import step_size_factor, still_improving


def _regression(seed=0, n=50, d=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64) + torch.randn(n, generator=g, dtype=torch.float64)
    precision = torch.eye(d, dtype=torch.float64) / 100 + x.T @ x
    cov = torch.linalg.inv(precision)
    return x, y, cov @ x.T @ y, cov.diagonal().sqrt()


def regression(X, y=None):
    w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[1], dtype=X.dtype), 10.0).to_event(1))
    with pyro.plate("data", len(X)):
        pyro.sample("y", dist.Normal(X @ w, 1.0), obs=y)


def test_default_schedule_lands_on_a_gaussian_posterior(float64):
    x, y, mean, sd = _regression()
    fit = ppgen.fit(regression, {"X": x, "y": y}, SVI(num_steps=3000, guide="mvn"), seed=0, progress=False)
    q = fit.guide.get_posterior()
    assert float(((q.mean - mean).abs() / sd).max()) < 0.05
    assert float(((q.stddev - sd).abs() / sd).max()) < 0.05
    assert fit.extras["converged"] is True


def test_a_run_still_improving_is_flagged(float64, caplog):
    x, y, _, _ = _regression()
    with caplog.at_level(logging.WARNING, logger="ppgen"):
        fit = ppgen.fit(regression, {"X": x, "y": y}, SVI(num_steps=300, guide="mvn"), seed=0, progress=False)
    assert fit.extras["converged"] is False
    assert "still falling over the last quarter of the 300 steps" in caplog.text


def test_step_size_schedule():
    assert step_size_factor(0, 100, 50, 0.01) == step_size_factor(50, 100, 50, 0.01) == 1.0
    assert step_size_factor(75, 100, 50, 0.01) == pytest.approx(0.1)
    assert step_size_factor(100, 100, 50, 0.01) == pytest.approx(0.01)
    assert step_size_factor(80, 100, 50, 1.0) == 1.0


def test_convergence_check_separates_trend_from_noise():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(2000, generator=g, dtype=torch.float64).tolist()
    assert still_improving(noise) is None  # flat, noisy: converged
    falling = [v - 0.002 * i for i, v in enumerate(noise)]
    drop, se = still_improving(falling)
    assert drop == pytest.approx(0.002 * 500, rel=0.2) and drop > 3 * se
    assert still_improving([1.0, 0.5]) is None  # too short to judge
