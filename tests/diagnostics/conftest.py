"""Shared fits for the diagnostics tests: each is fit once per test session.

Test modules cannot import this file (``--import-mode=importlib``), so the
programs and their data are also handed out as fixtures.
"""

import types

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppgen
from ppgen.inference import NUTS, SVI
from ppgen.models import ConjugateNormal, GaussianMixture

EIGHT_SCHOOLS = {"J": 8, "sigma": [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0],
                 "y": [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]}
MIXTURE_SCALES = torch.tensor([0.5, 1.0])


def eight_schools(J, sigma, y=None):
    """Eight schools, non-centred."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", J):
        theta_tilde = pyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = mu + tau * theta_tilde
        return pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def two_component_mixture(x):
    """A plain-program mixture with a discrete assignment per datum, fixed scales."""
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    locs = pyro.sample("locs", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        return pyro.sample("x", dist.Normal(locs[z], MIXTURE_SCALES[z]), obs=x)


def mixture_data():
    gen = torch.Generator().manual_seed(1)
    z = torch.rand(60, generator=gen) < 0.4
    return torch.where(z, -2.0 + 0.5 * torch.randn(60, generator=gen),
                       2.0 + 1.0 * torch.randn(60, generator=gen))


@pytest.fixture(scope="session")
def normal_nuts():
    model, data = ConjugateNormal.example()
    return ppgen.fit(model, data, NUTS(num_samples=200, warmup=200, chains=2), progress=False)


@pytest.fixture(scope="session")
def normal_svi():
    model, data = ConjugateNormal.example()
    return ppgen.fit(model, data, SVI(num_steps=300, lr=0.05), progress=False)


@pytest.fixture(scope="session")
def schools_nuts():
    return ppgen.fit(eight_schools, dict(EIGHT_SCHOOLS), NUTS(num_samples=100, warmup=100, chains=2),
                     progress=False)


@pytest.fixture(scope="session")
def gmm_nuts():
    model, data = GaussianMixture.example()
    return ppgen.fit(model, data, NUTS(num_samples=100, warmup=100, chains=1), progress=False)


@pytest.fixture(scope="session")
def mixture_nuts():
    return ppgen.fit(two_component_mixture, {"x": mixture_data()},
                     NUTS(num_samples=50, warmup=50, chains=1), progress=False)


@pytest.fixture(scope="session")
def schools():
    """The eight-schools program and its data."""
    return types.SimpleNamespace(program=eight_schools, data=dict(EIGHT_SCHOOLS))


@pytest.fixture(scope="session")
def mixture():
    """The plain-program two-component mixture, its data and its fixed scales."""
    return types.SimpleNamespace(program=two_component_mixture, data=mixture_data(),
                                 scales=MIXTURE_SCALES)
