"""Every method against the closed-form posterior of the conjugate reference models."""

import math

import pyro.distributions
import pytest
import torch

import ppgen
from ppgen.inference import HMC, MAP, NUTS, SVI, Exact
from ppgen.models import BetaBernoulli, ConjugateNormal


def _data(seed=0, n=40):
    gen = torch.Generator().manual_seed(seed)
    return 1.0 + 2.0 * torch.randn(n, generator=gen, dtype=torch.float64)


def _truth(model, data):
    m_n, kappa_n, a_n, b_n = model.posterior_parameters(data)
    return {
        "mean": (float(m_n), math.sqrt(float(b_n / ((a_n - 1) * kappa_n)))),
        "variance": (float(b_n / (a_n - 1)), float(b_n / ((a_n - 1) * math.sqrt(a_n - 2)))),
    }


def test_exact_log_evidence_matches_brute_force_quadrature(float64):
    model, data = ConjugateNormal(prior_mean=0.5), _data(n=12)
    fit = ppgen.fit(model, data, Exact(num_samples=10))
    # Brute force: integrate p(x | mu, var) p(mu | var) p(var) on a fine grid.
    mus = torch.linspace(-6, 8, 1401)
    variances = torch.linspace(0.05, 40, 2000)
    mu, var = torch.meshgrid(mus, variances, indexing="ij")
    log_joint = (torch.distributions.Normal(mu[..., None], var[..., None].sqrt()).log_prob(data).sum(-1)
                 + torch.distributions.Normal(model.prior_mean, (var / model.prior_kappa).sqrt()).log_prob(mu)
                 + pyro.distributions.InverseGamma(model.prior_shape, model.prior_rate).log_prob(var))
    cell = (mus[1] - mus[0]) * (variances[1] - variances[0])
    brute = float(torch.logsumexp(log_joint.flatten(), 0) + cell.log())
    assert fit.log_evidence == pytest.approx(brute, abs=1e-3)  # grid error, not MC


def test_exact_draws_match_closed_form(float64):
    model, data = ConjugateNormal(), _data()
    fit = ppgen.fit(model, data, Exact(num_samples=20000), seed=1)
    truth = _truth(model, data)
    for site, (mean, sd) in truth.items():
        draws = fit.flat_posterior()[site]
        assert abs(float(draws.mean()) - mean) < 4 * sd / math.sqrt(draws.numel())
        assert float(draws.std()) == pytest.approx(sd, rel=0.05)  # ~5 sd of the sd estimate


@pytest.mark.parametrize("method", [NUTS(num_samples=600, warmup=300, chains=2),
                                    HMC(num_samples=600, warmup=300, chains=2, num_steps=8)])
def test_mcmc_means_within_four_mcse(float64, method):
    import arviz as az
    model, data = ConjugateNormal(), _data()
    fit = ppgen.fit(model, data, method, seed=2, progress=False)
    idata = fit.to_arviz(posterior_predictive=False, log_likelihood=False)
    truth = _truth(model, data)
    for site, (mean, _) in truth.items():
        mcse = float(az.mcse(idata, var_names=[site])[site])
        estimate = float(fit.flat_posterior()[site].mean())
        assert abs(estimate - mean) < 4 * mcse, (site, estimate, mean, mcse)
    assert int(fit.sample_stats["diverging"].sum()) == 0


def test_svi_normal_guide_means_within_two_percent_of_sd(float64):
    model, data = ConjugateNormal(), _data()
    fit = ppgen.fit(model, data, SVI(num_steps=3000, lr=0.02, lr_decay=0.05,
                                     num_posterior_samples=20000), seed=3, progress=False)
    truth = _truth(model, data)
    mean, sd = truth["mean"]
    # The guide mean of `mean` is estimated from 20000 draws: MC error sd/141 < 1%.
    assert abs(float(fit.flat_posterior()["mean"].mean()) - mean) < 0.02 * sd + 3 * sd / 141


def test_map_is_the_posterior_mode(float64):
    model, data = ConjugateNormal(), _data()
    fit = ppgen.fit(model, data, MAP(num_steps=3000, lr=0.02, lr_decay=0.05), seed=0, progress=False)
    m_n, kappa_n, a_n, b_n = model.posterior_parameters(data)
    # Joint mode of the NIG posterior: mu = m_n, var = b_n / (a_n + 1.5).
    assert float(fit.params["mean"]) == pytest.approx(float(m_n), abs=1e-3)
    assert float(fit.params["variance"]) == pytest.approx(float(b_n / (a_n + 1.5)), rel=1e-3)


def test_beta_bernoulli_exact_and_nuts(float64):
    model, data = BetaBernoulli.example()
    data = data.double()
    exact = ppgen.fit(model, data, Exact(num_samples=10))
    heads, n = float(data.sum()), data.numel()
    a, b = 2.0 + heads, 2.0 + n - heads
    evidence = (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
                - 2 * math.lgamma(2.0) + math.lgamma(4.0))
    assert exact.log_evidence == pytest.approx(evidence, abs=1e-10)
    import arviz as az
    fit = ppgen.fit(model, data, NUTS(num_samples=500, warmup=300, chains=2), seed=0, progress=False)
    mcse = float(az.mcse(fit.to_arviz(posterior_predictive=False, log_likelihood=False))["p"])
    assert abs(float(fit.flat_posterior()["p"].mean()) - a / (a + b)) < 4 * mcse


def test_exact_refuses_fixed_params_for_a_posterior_over_params():
    model, data = ppgen.models.BetaBernoulli.example()
    with pytest.raises(ppgen.MethodError, match="exact posterior is over its parameters"):
        ppgen.fit(model, data, ppgen.inference.Exact(params={"p": 0.3}), progress=False)
