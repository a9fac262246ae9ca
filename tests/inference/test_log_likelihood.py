"""The pointwise log-likelihood of plain Pyro programs against hand computations, float64,
for every method: masks, pyro.markov chains, enumeration at one draw and many,
pyro.param programs (deterministic sites: tests/programs)."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import config_enumerate
from pyro.ops.indexing import Vindex

import ppgen
from ppgen.diagnostics import compare, loo
from ppgen.inference import MAP, NUTS, SVI

Y = torch.tensor([0.3, -1.0, 2.0, 1.5, 0.2, -0.4], dtype=torch.float64)
MASK = torch.tensor([True, False, True, True, False, True])


def with_obs_mask(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y, obs_mask=MASK)


def with_poutine_mask(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
    with pyro.plate("data", len(y)), pyro.poutine.mask(mask=MASK):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def markov_hmm(y):
    probs = pyro.sample("probs", dist.Dirichlet(torch.ones(2, 2)).to_event(1))
    locs = pyro.sample("locs", dist.Normal(0.0, 3.0).expand([2]).to_event(1))
    z = 0
    for t in pyro.markov(range(len(y))):
        z = pyro.sample(f"z_{t}", dist.Categorical(Vindex(probs)[..., z, :]), infer={"enumerate": "parallel"})
        pyro.sample(f"y_{t}", dist.Normal(Vindex(locs)[..., z], 1.0), obs=y[t])


@config_enumerate
def mixture(y):
    locs = pyro.sample("locs", dist.Normal(0.0, 3.0).expand([2]).to_event(1))
    with pyro.plate("data", len(y)):
        z = pyro.sample("z", dist.Categorical(torch.tensor([0.3, 0.7])))
        pyro.sample("y", dist.Normal(locs[z], 1.0), obs=y)


def with_params(y):
    mu = pyro.param("mu", torch.tensor(0.0))
    sigma = pyro.param("sigma", torch.tensor(1.0), constraint=dist.constraints.positive)
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)


METHODS = {"nuts": lambda: NUTS(num_samples=20, warmup=20, chains=2), "svi": lambda: SVI(num_steps=30),
           "map": lambda: MAP(num_steps=30)}


def _fit(model, method):
    return ppgen.fit(model, {"y": Y}, METHODS[method](), seed=0, progress=False)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("model,site", [(with_obs_mask, "y_observed"), (with_poutine_mask, "y")])
def test_masked_entries_are_not_scored(float64, model, site, method):
    fit = _fit(model, method)
    got = fit.log_likelihood()[site]
    mu = fit.posterior["mu"][..., None]
    expected = dist.Normal(mu, 1.0).log_prob(Y[MASK])  # the four observed entries only
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-10)
    idata = fit.to_arviz()
    assert idata.log_likelihood[site].shape[-1] == 4 and idata.observed_data[site].shape == (4,)
    assert torch.equal(torch.as_tensor(idata.observed_data[site].values), Y[MASK])
    assert idata.posterior_predictive[site].shape[-1] == 4


def _forward(probs, locs, y):
    """log p(y | probs, locs) by the forward algorithm, z_{-1} = 0."""
    alpha = torch.log(probs[0]) + dist.Normal(locs, 1.0).log_prob(y[0])
    for t in range(1, len(y)):
        alpha = torch.logsumexp(alpha[:, None] + torch.log(probs), 0) + dist.Normal(locs, 1.0).log_prob(y[t])
    return torch.logsumexp(alpha, 0)


@pytest.mark.parametrize("method", list(METHODS))
def test_markov_chain_scored_by_the_forward_algorithm(float64, method):
    fit = _fit(markov_hmm, method)
    got = fit.log_likelihood()["y_0"]  # the whole chain, scored jointly under its first site
    probs, locs = fit.posterior["probs"], fit.posterior["locs"]
    for c in range(got.shape[0]):
        for s in range(got.shape[1]):
            assert float(got[c, s]) == pytest.approx(float(_forward(probs[c, s], locs[c, s], Y)), abs=1e-6)
    assert fit.to_arviz().log_likelihood["y_0"].shape == got.shape


@pytest.mark.parametrize("method", list(METHODS))
def test_enumerated_mixture_at_any_number_of_draws(float64, method):
    fit = _fit(mixture, method)
    locs = fit.posterior["locs"][..., None, :]
    components = dist.Normal(locs, 1.0).log_prob(Y[:, None]) + torch.tensor([0.3, 0.7]).log()
    assert torch.allclose(fit.log_likelihood()["y"], components.logsumexp(-1), rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", ["svi", "map"])
def test_a_program_of_pyro_params_is_a_point_fit(float64, method):
    make = SVI if method == "svi" else MAP
    fit = ppgen.fit(with_params, {"y": Y}, make(num_steps=500, lr=0.05), seed=0, progress=False)
    mu, sigma = fit.params["mu"], fit.params["sigma"]
    assert float(mu) == pytest.approx(float(Y.mean()), abs=0.01)  # the maximum-likelihood point
    expected = dist.Normal(mu, sigma).log_prob(Y)
    assert torch.allclose(fit.log_likelihood()["y"][0, 0], expected, rtol=1e-12)
    assert fit.to_arviz().posterior["mu"].shape == (1, 1)


def test_nuts_on_pyro_params_says_why_not(float64):
    with pytest.raises(ppgen.errors.MethodError, match=r"pyro.param sites.*MAP\(\) or SVI\(\)"):
        _fit(with_params, "nuts")


def test_loo_and_compare_of_masked_programs(float64):
    a = ppgen.fit(with_obs_mask, {"y": Y}, NUTS(num_samples=100, warmup=100, chains=2), seed=0, progress=False)
    b = ppgen.fit(with_poutine_mask, {"y": Y}, NUTS(num_samples=100, warmup=100, chains=2), seed=1,
                  progress=False)
    result = loo(a)
    assert math.isfinite(result.elpd)
    table = compare({"obs_mask": a, "poutine.mask": b}, var_name=None)
    assert len(table) == 2
