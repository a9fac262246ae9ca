"""The three posteriors of ``bench_nuts.py``, written once for each library.

* ``eight_schools``: eight schools, noncentred (J = 8).
  :math:`\\mu \\sim N(0, 5)`, :math:`\\tau \\sim C^+(0, 5)`,
  :math:`\\tilde\\theta_j \\sim N(0, 1)`, :math:`y_j \\sim N(\\mu + \\tau\\tilde\\theta_j, \\sigma_j)`.
* ``logistic``: logistic regression on simulated data, N = 1000 rows, D = 25
  features. :math:`w_d \\sim N(0, 1)`, :math:`b \\sim N(0, 1)`,
  :math:`y_n \\sim \\mathrm{Bernoulli}(\\mathrm{logit}^{-1}(x_n^\\top w + b))`.
  The data come from NumPy's ``default_rng(20240)``: :math:`x_{nd} \\sim N(0, 1)`,
  true :math:`w_d \\sim N(0, 0.5^2)`, true :math:`b = 0.5`; every library gets the same arrays.
* ``gauss_mix``: posteriordb's ``low_dim_gauss_mix`` (N = 1000), its Stan model
  line by line: :math:`\\mu` an ordered pair with :math:`N(0, 2)` on each
  coordinate (that density restricted to :math:`\\mu_1 < \\mu_2`),
  :math:`\\sigma_k \\sim N^+(0, 2)`, :math:`\\theta \\sim \\mathrm{Beta}(5, 5)`,
  :math:`y_n \\sim \\theta N(\\mu_1, \\sigma_1) + (1 - \\theta) N(\\mu_2, \\sigma_2)`.
  The data are read from the posteriordb zip.

Every library samples the same unconstrained space: log for the positive
scales, logit for :math:`\\theta`, and Stan's ordered transform
(:math:`\\mu_1, \\mu_1 + e^{u_2}`) for :math:`\\mu`.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass

import numpy as np
from _common import SHARED_DATA

POSTERIORDB = SHARED_DATA / "posteriordb"
MEANS = POSTERIORDB / "reference_posteriors/summary_statistics/mean_value/mean_value"
Y_SCHOOLS = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
SIGMA_SCHOOLS = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]
ROWS, FEATURES, DATA_SEED = 1000, 25, 20240


@dataclass(frozen=True)
class Problem:
    """A posterior: its latent sites, two scalars whose means are printed, and a
    posteriordb reference of means (file name, and the reference's names of the two)."""

    key: str
    title: str
    sites: tuple
    shown: tuple  # ((site, index or None), ...), index into the site's flattened value
    reference: str | None = None
    reference_names: tuple = ()

    def label(self, i):
        site, index = self.shown[i]
        return site if index is None else f"{site}[{index}]"


PROBLEMS = {
    "eight_schools": Problem("eight_schools", "eight schools, noncentred (J=8)",
                             ("mu", "tau", "theta_tilde"), (("mu", None), ("tau", None)),
                             "eight_schools-eight_schools_noncentered.json", ("mu", "tau")),
    "logistic": Problem("logistic", f"logistic regression ({ROWS} rows x {FEATURES} features, simulated)",
                        ("w", "b"), (("b", None), ("w", 0))),
    "gauss_mix": Problem("gauss_mix", "low_dim_gauss_mix (posteriordb, N=1000)",
                         ("mu", "sigma", "theta"), (("mu", 0), ("theta", None)),
                         "low_dim_gauss_mix-low_dim_gauss_mix.json", ("mu[1]", "theta")),
}


def reference_means(problem):
    """``[(mean, mcse)]`` for the problem's two shown scalars, or None."""
    path = MEANS / problem.reference if problem.reference else None
    if path is None or not path.exists():
        return None
    ref = json.loads(path.read_text())
    means = dict(zip(ref["names"], ref["mean_value"]))
    mcse = dict(zip(ref["names"], ref["mcse_mean"]))
    return [(means[n], mcse[n]) for n in problem.reference_names]


# ---------------------------------------------------------------- data (NumPy, float32)
def numpy_data(key):
    """The problem's data as keyword arguments of its models (float32 arrays, ints)."""
    if key == "eight_schools":
        return {"J": 8, "sigma": np.array(SIGMA_SCHOOLS, np.float32), "y": np.array(Y_SCHOOLS, np.float32)}
    if key == "logistic":
        rng = np.random.default_rng(DATA_SEED)
        X = rng.standard_normal((ROWS, FEATURES))
        w = 0.5 * rng.standard_normal(FEATURES)
        y = (rng.random(ROWS) < 1 / (1 + np.exp(-(X @ w + 0.5)))).astype(np.float32)
        return {"X": X.astype(np.float32), "y": y}
    if key == "gauss_mix":
        with zipfile.ZipFile(POSTERIORDB / "data/data/low_dim_gauss_mix.json.zip") as z:
            data = json.loads(z.read("low_dim_gauss_mix.json"))
        return {"N": int(data["N"]), "y": np.array(data["y"], np.float32)}
    raise ValueError(f"problem {key!r}: choose one of {sorted(PROBLEMS)}")


def torch_data(key):
    import torch

    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in numpy_data(key).items()}


# ---------------------------------------------------------------- Pyro (ppgen and plain Pyro)
def _ordered_normal_class():
    import pyro.distributions as dist
    import torch
    from pyro.distributions import constraints

    class OrderedNormal(dist.TorchDistribution):
        """``size`` iid :math:`N(loc, scale)` sorted: density :math:`size! \\prod_i N(x_i)`
        on :math:`x_1 < \\dots < x_{size}` (Stan's ``ordered`` with a normal prior)."""

        support = constraints.ordered_vector
        arg_constraints = {}

        def __init__(self, loc, scale, size):
            self.loc, self.scale = float(loc), float(scale)
            self.log_norm = math.lgamma(size + 1) - size * (math.log(self.scale) + 0.5 * math.log(2 * math.pi))
            super().__init__(torch.Size(), torch.Size([size]), validate_args=False)

        def sample(self, sample_shape=()):
            draws = self.loc + self.scale * torch.randn(torch.Size(sample_shape) + self.event_shape)
            return draws.sort(-1).values

        def log_prob(self, value):
            return self.log_norm - 0.5 * (((value - self.loc) / self.scale) ** 2).sum(-1)

    return OrderedNormal


def pyro_model(key):
    import pyro
    import pyro.distributions as dist
    import torch

    def eight_schools(J, sigma, y=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(5.0))
        with pyro.plate("schools", J):
            theta_tilde = pyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
            pyro.sample("obs", dist.Normal(mu + tau * theta_tilde, sigma), obs=y)

    def logistic(X, y=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[-1]]).to_event(1))
        b = pyro.sample("b", dist.Normal(0.0, 1.0))
        with pyro.plate("rows", X.shape[0]):
            # (X * w).sum(-1), not X @ w: w may carry leading batch dimensions (chains).
            pyro.sample("y", dist.Bernoulli(logits=(X * w).sum(-1) + b), obs=y)

    ordered_normal = _ordered_normal_class()

    def gauss_mix(N, y=None):
        mu = pyro.sample("mu", ordered_normal(0.0, 2.0, 2))
        sigma = pyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
        theta = pyro.sample("theta", dist.Beta(5.0, 5.0))
        with pyro.plate("data", N):
            weights = dist.Categorical(probs=torch.stack([theta, 1 - theta], -1))
            pyro.sample("y", dist.MixtureSameFamily(weights, dist.Normal(mu, sigma)), obs=y)

    return {"eight_schools": eight_schools, "logistic": logistic, "gauss_mix": gauss_mix}[key]


# ---------------------------------------------------------------- NumPyro
def numpyro_model(key):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    def eight_schools(J, sigma, y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        with numpyro.plate("schools", J):
            theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
            numpyro.sample("obs", dist.Normal(mu + tau * theta_tilde, sigma), obs=y)

    def logistic(X, y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[-1]]).to_event(1))
        b = numpyro.sample("b", dist.Normal(0.0, 1.0))
        with numpyro.plate("rows", X.shape[0]):
            numpyro.sample("y", dist.Bernoulli(logits=X @ w + b), obs=y)

    def gauss_mix(N, y=None):
        mu = numpyro.sample("mu", dist.ImproperUniform(constraints.ordered_vector, (), (2,)))
        numpyro.factor("mu_prior", dist.Normal(0.0, 2.0).log_prob(mu).sum(-1))
        sigma = numpyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
        theta = numpyro.sample("theta", dist.Beta(5.0, 5.0))
        with numpyro.plate("data", N):
            weights = dist.Categorical(probs=jnp.stack([theta, 1 - theta], -1))
            numpyro.sample("y", dist.MixtureSameFamily(weights, dist.Normal(mu, sigma)), obs=y)

    return {"eight_schools": eight_schools, "logistic": logistic, "gauss_mix": gauss_mix}[key]


# ---------------------------------------------------------------- PyMC
def pymc_model(key, data):
    """The PyMC model (a ``pm.Model``) with ``data`` (from :func:`numpy_data`) observed."""
    import pymc as pm

    with pm.Model() as model:
        if key == "eight_schools":
            mu = pm.Normal("mu", 0.0, 5.0)
            tau = pm.HalfCauchy("tau", 5.0)
            theta_tilde = pm.Normal("theta_tilde", 0.0, 1.0, shape=data["J"])
            pm.Normal("obs", mu + tau * theta_tilde, data["sigma"], observed=data["y"])
        elif key == "logistic":
            w = pm.Normal("w", 0.0, 1.0, shape=data["X"].shape[1])
            b = pm.Normal("b", 0.0, 1.0)
            pm.Bernoulli("y", logit_p=pm.math.dot(data["X"], w) + b, observed=data["y"])
        elif key == "gauss_mix":
            mu = pm.Normal("mu", 0.0, 2.0, shape=2, transform=pm.distributions.transforms.ordered,
                           initval=np.array([-1.0, 1.0]))
            sigma = pm.HalfNormal("sigma", 2.0, shape=2)
            theta = pm.Beta("theta", 5.0, 5.0)
            pm.NormalMixture("y", w=pm.math.stack([theta, 1 - theta]), mu=mu, sigma=sigma,
                             observed=data["y"])
        else:
            raise ValueError(f"problem {key!r}: choose one of {sorted(PROBLEMS)}")
    return model
