"""GaussianMixture against exact answers and scikit-learn."""

import math

import pandas as pd
import pytest
import torch
from torch.autograd.functional import jacobian

import ppgen
from ppgen.inference import MAP, NUTS, SVI, Exact
from ppgen.models import GaussianMixture
from ppgen.models.transforms import PositiveDefiniteBijection


def _faithful(shared_data):
    return torch.tensor(pd.read_csv(shared_data / "tables" / "faithful.csv")[["eruptions", "waiting"]]
                        .to_numpy(), dtype=torch.float64)


@pytest.mark.peer
def test_map_reaches_sklearn_optimum_on_old_faithful(float64, shared_data):
    sklearn = pytest.importorskip("sklearn.mixture")
    x = _faithful(shared_data)
    reference = sklearn.GaussianMixture(2, covariance_type="full", tol=1e-12, max_iter=10000,
                                        reg_covar=0, random_state=0).fit(x.numpy())
    best = reference.score(x.numpy()) * x.shape[0]
    assert best == pytest.approx(-1130.26, abs=0.01)
    model = GaussianMixture(2, 2, covariance="full")
    fit = ppgen.fit(model, x, MAP(), seed=0)
    assert float(model.log_prob(x).sum()) == pytest.approx(best, abs=0.01)
    assert fit.losses[-1] <= fit.losses[0]


@pytest.mark.peer
@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_map_matches_sklearn_on_synthetic(float64, covariance):
    sklearn = pytest.importorskip("sklearn.mixture")
    gen = torch.Generator().manual_seed(1)
    centers = 6 * torch.randn(3, 4, generator=gen)
    z = torch.randint(3, (900,), generator=gen)
    x = centers[z] + torch.randn(900, 4, generator=gen) * torch.rand(3, 4, generator=gen)[z].add(0.3)
    reference = sklearn.GaussianMixture(3, covariance_type=covariance, tol=1e-12, max_iter=5000,
                                        reg_covar=0, n_init=3, random_state=0).fit(x.numpy())
    model = GaussianMixture(3, 4, covariance=covariance)
    ppgen.fit(model, x, MAP(n_init=3), seed=0)
    assert float(model.log_prob(x).sum()) == pytest.approx(reference.score(x.numpy()) * 900, abs=0.05)


def test_ecm_never_decreases_the_log_posterior(float64):
    model, x = GaussianMixture.example()
    result = model.double().fit_map(x.double(), max_iter=50, tol=0.0,
                                    generator=torch.Generator().manual_seed(0))
    losses = torch.tensor(result["loss"])
    assert bool((losses[1:] <= losses[:-1] + 1e-9).all())


def _overlapping(seed=0, n=150):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randint(2, (n,), generator=gen)
    centers = torch.tensor([[-1.0, 0.0], [1.0, 0.5]])
    return centers[z] + 0.9 * torch.randn(n, 2, generator=gen)


def test_exact_assignments_equal_closed_form_responsibilities(float64):
    model, x = GaussianMixture(2, 2), _overlapping()
    ppgen.fit(model, x, MAP(), seed=0)
    fit = ppgen.fit(model, x, Exact(num_samples=2000), seed=0)
    responsibilities = model.predict_proba(x)
    assert torch.allclose(fit.marginals["assignment"], responsibilities, atol=1e-10, rtol=0)
    assert torch.equal(fit.map_assignment["assignment"], model.predict(x))
    assert fit.log_evidence == pytest.approx(float(model.log_prob(x).sum()), abs=1e-9)
    # Exact posterior samples: each point's frequency within 5 binomial sds of its
    # marginal, where the marginal is not degenerate.
    freq = (fit.posterior["assignment"][0] == 1).double().mean(0)
    p = responsibilities[:, 1]
    moderate = (p > 0.05) & (p < 0.95)
    assert int(moderate.sum()) > 20
    z = (freq - p)[moderate] / (p * (1 - p) / 2000).sqrt()[moderate]
    assert float(z.abs().max()) < 5


def test_exact_needs_parameters_for_continuous_sites(float64):
    model, x = GaussianMixture.example()
    with pytest.raises(ppgen.MethodError, match="weights"):
        ppgen.fit(model, x, Exact(params={"locs": torch.zeros(2, 2)}))


def test_nuts_sums_out_assignments_without_divergences(float64):
    model, x = GaussianMixture.example()
    model, x = model.double(), x.double()
    ppgen.fit(model, x, MAP(), seed=0)
    fit = ppgen.fit(model, x, NUTS(num_samples=150, warmup=150, chains=2), seed=0, progress=False)
    assert int(fit.sample_stats["diverging"].sum()) == 0
    loglik = fit.log_likelihood()["obs"]
    assert loglik.shape == (2, 150, x.shape[0])
    draws = {k: v[0] for k, v in fit.posterior.items()}
    assert torch.allclose(loglik[0], model.log_likelihood(x, draws))
    loo = ppgen.diagnostics.loo(fit)
    assert math.isfinite(loo.elpd)


def test_svi_fits_with_enumerated_assignments(float64):
    model, x = GaussianMixture.example()
    model, x = model.double(), x.double()
    before = ppgen.fit(model, x, MAP(), seed=0)
    target = float(model.log_prob(x).sum())
    fresh = GaussianMixture(**model.get_config()).double()
    fit = ppgen.fit(fresh, x, MAP(solver="gradient", num_steps=800, lr=0.05, lr_decay=0.1),
                    seed=0, progress=False)
    assert fit.guide is not None and before.guide is None
    assert float(fresh.log_prob(x).sum()) == pytest.approx(target, abs=0.5)
    svi = ppgen.fit(fresh, x, SVI(num_steps=200, lr=0.02), seed=0, progress=False)
    assert svi.posterior["locs"].shape == (1, 1000, 2, 2)
    assert svi.posterior["precision"].shape == (1, 1000, 2, 2, 2)
    assert all(math.isfinite(v) for v in svi.losses)


def test_positive_definite_bijection_jacobian(float64):
    transform = PositiveDefiniteBijection()
    x = torch.randn(10)
    y = transform(x)
    assert torch.allclose(transform.inv(y), x)
    rows, cols = torch.tril_indices(4, 4)
    jac = jacobian(lambda v: transform(v)[rows, cols], x)
    assert float(transform.log_abs_det_jacobian(x, y)) == pytest.approx(float(torch.logdet(jac)), abs=1e-10)


def test_sample_and_predict_shapes():
    model, x = GaussianMixture.example()
    ppgen.fit(model, x, MAP(), seed=0)
    assert model.sample(7).shape == (7, 2)
    assert model.predict(x).shape == (x.shape[0],)
    with pytest.raises(ppgen.DataError, match="features"):
        model.log_prob(torch.zeros(5, 3))
    with pytest.raises(ppgen.ModelError, match="covariance"):
        GaussianMixture(2, 2, covariance="tied")
