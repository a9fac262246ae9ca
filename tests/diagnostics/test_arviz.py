"""ArviZ conversion, summaries, LOO and comparison on real fits.

The fits come from ``conftest.py`` (one per session). Every log-likelihood
group is checked against an independent computation of
:math:`\\log p(x_i \\mid \\theta_s)`.
"""

import ast
import pathlib
import types

import arviz as az
import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch

import ppgen
from ppgen.diagnostics import arviz_io, compare, from_dicts, loo, summary, to_arviz
from ppgen.diagnostics.elpd import from_loo
from ppgen.errors import ModelError
from ppgen.inference import SVI, Exact
from ppgen.models import ConjugateNormal, GaussianMixture

STATS = {"diverging", "tree_depth", "n_steps", "step_size", "acceptance_rate", "energy", "lp"}


def _np(t):
    return t.detach().cpu().numpy()


def _conjugate_log_likelihood(fit, data):
    mean, variance = fit.posterior["mean"], fit.posterior["variance"]
    return dist.Normal(mean[..., None], variance.sqrt()[..., None]).log_prob(data)


# ------------------------------------------------------------------ from_dicts
def test_from_dicts_builds_every_group_with_shared_dims():
    rng = np.random.default_rng(0)
    idata = from_dicts(
        {"mu": rng.normal(size=(2, 5)), "theta": rng.normal(size=(2, 5, 3))},
        sample_stats={"diverging": np.zeros((2, 5), dtype=int), "energy": rng.normal(size=(2, 5))},
        log_likelihood={"y": rng.normal(size=(2, 5, 4))},
        posterior_predictive={"y": rng.normal(size=(2, 5, 4))},
        observed_data={"y": rng.normal(size=4)},
        dims={"y": ["y_dim_0"]},
    )
    assert set(arviz_io.group_names(idata)) == {"posterior", "sample_stats", "log_likelihood",
                                                "posterior_predictive", "observed_data"}
    assert idata.posterior["theta"].shape == (2, 5, 3)
    assert idata.sample_stats["diverging"].dtype == bool
    for group in ("log_likelihood", "posterior_predictive"):
        assert idata[group]["y"].dims == ("chain", "draw", "y_dim_0")
    assert idata.observed_data["y"].dims == ("y_dim_0",)


def test_from_dicts_leaves_out_empty_groups():
    idata = from_dicts({"mu": np.zeros((1, 3))}, sample_stats={}, log_likelihood=None)
    assert arviz_io.group_names(idata) == ["posterior"]


def test_arviz_major_parses_versions(monkeypatch):
    arviz_io.arviz_major.cache_clear()
    try:
        monkeypatch.setattr(az, "__version__", "1.0.0rc1")
        assert arviz_io.arviz_major() == 1
        arviz_io.arviz_major.cache_clear()
        monkeypatch.setattr(az, "__version__", "0.23.4")
        assert arviz_io.arviz_major() == 0
    finally:
        arviz_io.arviz_major.cache_clear()


def test_diagnostics_never_imports_inference():
    package = pathlib.Path(ppgen.diagnostics.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any("inference" in n for n in names), f"{path.name} imports {names}"


# ------------------------------------------------------------------ NUTS, GenerativeModel
def test_nuts_groups_and_shapes(normal_nuts):
    idata = to_arviz(normal_nuts)
    assert set(arviz_io.group_names(idata)) == {"posterior", "sample_stats", "log_likelihood", "log_prior",
                                                "posterior_predictive", "observed_data"}
    assert idata.posterior["mean"].shape == (2, 200)
    assert idata.posterior["variance"].shape == (2, 200)
    assert idata.log_likelihood["obs"].dims == ("chain", "draw", "observation")
    assert idata.log_likelihood["obs"].shape == (2, 200, 50)
    assert idata.posterior_predictive["obs"].dims == ("chain", "draw", "observation")
    assert idata.posterior_predictive["obs"].shape == (2, 200, 50)
    np.testing.assert_array_equal(idata.observed_data["obs"].values, _np(normal_nuts.data))


def test_nuts_log_likelihood_is_the_normal_density(normal_nuts):
    idata = to_arviz(normal_nuts, posterior_predictive=False)
    expected = _conjugate_log_likelihood(normal_nuts, normal_nuts.data)
    np.testing.assert_allclose(idata.log_likelihood["obs"].values, _np(expected), rtol=1e-5, atol=1e-5)


def test_nuts_sample_stats(normal_nuts):
    stats = to_arviz(normal_nuts, posterior_predictive=False, log_likelihood=False).sample_stats
    assert set(stats.data_vars) == STATS
    assert stats["diverging"].dtype == bool
    for name in STATS:
        assert stats[name].dims == ("chain", "draw")
        np.testing.assert_array_equal(stats[name].values, _np(normal_nuts.sample_stats[name]))
    assert np.isfinite(stats["energy"].values).all()


def test_energy_feeds_arviz_bfmi(normal_nuts):
    idata = to_arviz(normal_nuts, posterior_predictive=False, log_likelihood=False)
    bfmi = np.asarray(az.bfmi(idata) if arviz_io.arviz_major() < 1 else az.bfmi(idata)["energy"])  # 1.x: a Dataset
    assert bfmi.shape == (2,) and np.all(bfmi > 0.3)


def test_loo_runs(normal_nuts):
    result = loo(normal_nuts)  # ppgen's fields, whichever ArviZ is installed
    assert np.isfinite(result.elpd) and result.estimator == "psis-loo"
    assert result.pointwise.shape == (50,) and result.pareto_k.shape == (50,)
    assert result["elpd_loo"] == result.elpd and result.loo_i is result.pointwise  # ArviZ 0.x's names
    assert result.se == pytest.approx(float(np.sqrt(50 * result.pointwise.var())))
    # and ArviZ's own loo on the converted data agrees
    direct = az.loo(to_arviz(normal_nuts, posterior_predictive=False), pointwise=True)
    assert from_loo(direct).elpd == pytest.approx(result.elpd)
    # the pointwise log predictive densities are those of the closed-form likelihood
    ll = _conjugate_log_likelihood(normal_nuts, normal_nuts.data).reshape(-1, 50)
    lpd = float((ll.double().logsumexp(0) - np.log(ll.shape[0])).sum())
    assert result["elpd_loo"] == pytest.approx(lpd, abs=5.0)
    assert result["elpd_loo"] < lpd


def test_summary_table(normal_nuts):
    table = summary(normal_nuts)
    assert isinstance(table, pd.DataFrame)
    assert set(table.index) == {"mean", "variance"}
    assert {"mean", "sd", "r_hat", "ess_bulk"} <= set(table.columns)
    assert table.loc["mean", "mean"] == pytest.approx(float(normal_nuts.posterior["mean"].mean()), abs=1e-2)
    assert normal_nuts.summary(var_names=["mean"]).shape[0] == 1  # Fit.summary delegates here


# ------------------------------------------------------------------ SVI
def test_svi_groups(normal_svi):
    idata = normal_svi.to_arviz()  # Fit.to_arviz delegates to ppgen.diagnostics
    assert set(idata.sample_stats.data_vars) == {"log_p", "log_q"}  # the guide's and the model's densities
    assert idata.posterior["mean"].shape == (1, 1000)
    assert idata.log_likelihood["obs"].shape == (1, 1000, 50)
    assert idata.posterior_predictive["obs"].shape == (1, 1000, 50)
    expected = _conjugate_log_likelihood(normal_svi, normal_svi.data)
    np.testing.assert_allclose(idata.log_likelihood["obs"].values, _np(expected), rtol=1e-5, atol=1e-5)


def test_compare_ranks_both(normal_nuts, normal_svi):
    table = compare({"nuts": normal_nuts, "svi": normal_svi})
    assert isinstance(table, pd.DataFrame)
    assert set(table.index) == {"nuts", "svi"}
    assert sorted(table["rank"]) == [0, 1]
    assert {"rank", "elpd", "se", "elpd_diff", "dse", "p", "weight", "estimator", "warning"} <= set(table.columns)
    assert np.isfinite(table["elpd"]).all() and table["weight"].sum() == pytest.approx(1.0)
    assert table.loc["nuts", "elpd"] == pytest.approx(loo(normal_nuts).elpd)


def test_compare_rejects_different_data(normal_nuts):
    model, data = ConjugateNormal.example()
    short = ppgen.fit(model, data[:40], SVI(num_steps=20, num_posterior_samples=50), progress=False)
    with pytest.raises(ModelError, match="'short'.*\\(40,\\)"):
        compare({"nuts": normal_nuts, "short": short})


def test_compare_and_loo_reject_a_fit_without_log_likelihood(normal_nuts):
    def prior_only():
        pyro.sample("a", dist.Normal(0.0, 1.0))

    fit = ppgen.fit(prior_only, {}, SVI(num_steps=5, num_posterior_samples=20), progress=False)
    with pytest.raises(ModelError, match="'prior'.*no log_likelihood"):
        compare({"nuts": normal_nuts, "prior": fit})
    with pytest.raises(ModelError, match="prior_only.*no log_likelihood"):
        loo(fit)
    with pytest.raises(ModelError, match="at least two"):
        compare({"nuts": normal_nuts})


# ------------------------------------------------------------------ Exact
def test_exact_conjugate_fit_converts():
    model, data = ConjugateNormal.example()
    fit = ppgen.fit(model, data, Exact(num_samples=200), progress=False)
    idata = to_arviz(fit, posterior_predictive=False)
    assert idata.posterior["mean"].shape == (1, 200)
    expected = _conjugate_log_likelihood(fit, data)
    np.testing.assert_allclose(idata.log_likelihood["obs"].values, _np(expected), rtol=1e-5, atol=1e-5)


def test_exact_discrete_posterior_draws_are_integers(mixture):
    params = {"weights": torch.tensor([0.4, 0.6]), "locs": torch.tensor([-2.0, 2.0])}
    fit = ppgen.fit(mixture.program, {"x": mixture.data}, Exact(params=params, num_samples=30),
                    progress=False)
    idata = to_arviz(fit, posterior_predictive=False, log_likelihood=False)
    assert idata.posterior["z"].shape == (1, 30, 60)
    assert np.issubdtype(idata.posterior["z"].dtype, np.integer)
    np.testing.assert_array_equal(idata.observed_data["x"].values, _np(mixture.data))


# ------------------------------------------------------------------ plain programs
def test_eight_schools_plain_program(schools_nuts, schools):
    idata = to_arviz(schools_nuts)
    post = schools_nuts.posterior
    assert idata.posterior["theta_tilde"].shape == (2, 100, 8)
    assert idata.posterior["tau"].shape == (2, 100)
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "schools")
    assert idata.posterior_predictive["y"].shape == (2, 100, 8)
    assert idata.sample_stats["diverging"].shape == (2, 100)
    y, sigma = torch.tensor(schools.data["y"]), torch.tensor(schools.data["sigma"])
    theta = post["mu"][..., None] + post["tau"][..., None] * post["theta_tilde"]
    expected = dist.Normal(theta, sigma).log_prob(y)
    np.testing.assert_allclose(idata.log_likelihood["y"].values, _np(expected), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(idata.observed_data["y"].values, _np(y))
    assert np.isfinite(loo(schools_nuts).elpd)


def test_observed_data_of_a_plain_program_leaves_the_rng_alone(schools_nuts):
    before = torch.get_rng_state()
    to_arviz(schools_nuts, posterior_predictive=False, log_likelihood=False)
    assert torch.equal(before, torch.get_rng_state())


def test_gaussian_mixture_log_likelihood_sums_out_assignments(gmm_nuts):
    model, data = gmm_nuts.model, gmm_nuts.data
    idata = to_arviz(gmm_nuts, posterior_predictive=False)
    got = idata.log_likelihood["obs"].values
    assert got.shape == (1, 100, 120)
    assert idata.observed_data["obs"].dims == ("observation", "feature")
    draws = gmm_nuts.flat_posterior()
    np.testing.assert_allclose(got[0], _np(model.log_likelihood(data, draws)), rtol=1e-5, atol=1e-5)
    # independently: log sum_k w_k N(x_i; mu_k, Lambda_k^-1)
    comp = dist.MultivariateNormal(draws["locs"][:, None], precision_matrix=draws["precision"][:, None])
    joint = draws["weights"].log()[:, None, :] + comp.log_prob(data[None, :, None, :])
    np.testing.assert_allclose(got[0], _np(joint.logsumexp(-1)), rtol=1e-4, atol=1e-4)


def _mixture_log_likelihood(fit, mixture):
    """log sum_z w_z N(x_i; loc_z, scale_z), by hand, (chains, draws, N)."""
    w, locs = fit.posterior["weights"], fit.posterior["locs"]
    comp = dist.Normal(locs[..., None, :], mixture.scales).log_prob(mixture.data[:, None])
    return (w.log()[..., None, :] + comp).logsumexp(-1)


def test_plain_mixture_pointwise_log_likelihood_sums_out_z(mixture_nuts, mixture):
    # Fit.log_likelihood() of a plain program with an enumerated latent: one value per datum.
    got = mixture_nuts.log_likelihood()["x"]
    expected = _mixture_log_likelihood(mixture_nuts, mixture)
    assert tuple(got.shape) == tuple(expected.shape) == (1, 50, 60)
    np.testing.assert_allclose(_np(got), _np(expected), rtol=1e-5, atol=1e-5)


def test_plain_mixture_to_arviz_log_likelihood_group(mixture_nuts, mixture):
    idata = to_arviz(mixture_nuts, posterior_predictive=False)
    ll = idata.log_likelihood["x"]
    assert ll.dims == ("chain", "draw", "data")
    np.testing.assert_allclose(ll.values, _np(_mixture_log_likelihood(mixture_nuts, mixture)), rtol=1e-5, atol=1e-5)


def test_a_mis_shaped_log_likelihood_is_refused():
    fake = types.SimpleNamespace(
        posterior={"mu": torch.zeros(1, 4)}, sample_stats={},
        log_likelihood=lambda: {"y": torch.zeros(1, 4, 2, 3)},
        posterior_predictive=lambda: {"y": torch.zeros(1, 4, 3)},
        data=torch.zeros(3),
        program=types.SimpleNamespace(generative=types.SimpleNamespace(observed_site="y"),
                                      model=None, observed={}, latent={}, deterministic={}, kwargs={}),
        method=types.SimpleNamespace(name="nuts"))
    with pytest.raises(ModelError, match="'y' has shape \\(2, 3\\)"):
        to_arviz(fake)


def test_gaussian_mixture_svi_and_nuts_compare(gmm_nuts):
    model, data = GaussianMixture.example()
    svi = ppgen.fit(model, data, SVI(num_steps=50, lr=0.05, num_posterior_samples=100), progress=False)
    table = compare({"nuts": gmm_nuts, "svi": svi})
    assert set(table.index) == {"nuts", "svi"}
