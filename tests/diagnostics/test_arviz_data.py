"""ArviZ data as ArviZ users expect it, on ArviZ 0.23 and 1.x alike: dimensions named after
plates (and by concept in the families), coordinates, prior groups, log prior, constant
data, and LOO of variational fits corrected for their draws coming from the guide."""

import math
import warnings

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import config_enumerate

import ppgen
from ppgen.diagnostics import arviz_io, loo, psis_khat
from ppgen.diagnostics.psis import corrected_loo, pareto_smooth
from ppgen.errors import DataError, ModelError
from ppgen.inference import NUTS, SVI

Y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
SIGMA = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]
SCHOOLS = ["Choate", "Deerfield", "Phillips Andover", "Phillips Exeter", "Hotchkiss", "Lawrenceville",
           "St. Paul's", "Mt. Hermon"]


def eight_schools(sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        theta_trans = pyro.sample("theta_trans", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + tau * theta_trans)
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def centred_schools(sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", 8):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def _schools():
    return {"sigma": torch.tensor(SIGMA), "y": torch.tensor(Y)}


def _dims(idata):
    return {group: {name: tuple(value.dims) for name, value in idata[group].data_vars.items()}
            for group in arviz_io.group_names(idata) if group != "sample_stats"}


@pytest.fixture(scope="module")
def schools_fit():
    return ppgen.fit(eight_schools, _schools(), NUTS(num_samples=100, warmup=100, chains=2), seed=0,
                     progress=False)


# ------------------------------------------------------------------ dims from plates
def test_eight_schools_sites_share_the_plate_dimension_in_every_group(schools_fit):
    idata = schools_fit.to_arviz(prior=True, coords={"schools": SCHOOLS})
    dims = _dims(idata)
    for group in ("posterior", "prior"):
        assert dims[group]["theta"] == dims[group]["theta_trans"] == ("chain", "draw", "schools")
        assert dims[group]["mu"] == ("chain", "draw")
    for group in ("posterior_predictive", "prior_predictive", "log_likelihood"):
        assert dims[group]["obs"] == ("chain", "draw", "schools")
    assert dims["observed_data"]["obs"] == ("schools",)
    assert dims["constant_data"] == {"sigma": ("schools",)}
    np.testing.assert_array_equal(idata.constant_data["sigma"].values, SIGMA)
    assert list(idata.posterior["theta"].coords["schools"].values) == SCHOOLS
    # deterministic sites are posterior quantities, never data
    assert "theta" not in idata.log_likelihood and "theta" not in idata.observed_data
    assert idata.posterior_predictive["obs"].shape == (2, 100, 8)
    # prior: one chain, as many draws as the posterior has per chain, the fit's seed
    assert idata.prior["mu"].shape == (1, 100)
    again = schools_fit.to_arviz(prior=True)
    np.testing.assert_array_equal(again.prior["tau"].values, idata.prior["tau"].values)
    assert schools_fit.to_arviz(prior=7).prior_predictive["obs"].shape == (1, 7, 8)


def test_groups_are_a_superset_of_numpyros_converter_with_the_same_dims(schools_fit):
    jax = pytest.importorskip("jax")  # numpyro is in the dev extra: the suite runs this
    import numpyro
    import numpyro.distributions as ndist
    from numpyro.infer import MCMC, Predictive
    from numpyro.infer import NUTS as NumPyroNUTS

    def numpyro_schools(sigma, y=None):
        mu = numpyro.sample("mu", ndist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", ndist.HalfCauchy(5.0))
        with numpyro.plate("schools", 8):
            theta_trans = numpyro.sample("theta_trans", ndist.Normal(0.0, 1.0))
            theta = numpyro.deterministic("theta", mu + tau * theta_trans)
            numpyro.sample("obs", ndist.Normal(theta, sigma), obs=y)

    sigma, y = np.array(SIGMA), np.array(Y)
    mcmc = MCMC(NumPyroNUTS(numpyro_schools), num_warmup=50, num_samples=50, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), sigma, y=y)
    prior = Predictive(numpyro_schools, num_samples=50)(jax.random.PRNGKey(1), sigma)
    predictive = Predictive(numpyro_schools, mcmc.get_samples())(jax.random.PRNGKey(2), sigma)
    coords = {"schools": SCHOOLS}
    theirs = _dims(arviz_io._arviz().from_numpyro(mcmc, prior=prior, posterior_predictive=predictive,
                                                   coords=coords, constant_data={"sigma": sigma}))
    ours = _dims(schools_fit.to_arviz(prior=True, coords=coords))
    assert set(theirs) <= set(ours)
    for group, variables in theirs.items():
        for name, names in variables.items():
            # the same dims; where their converter leaves a dim unnamed (this NumPyro's
            # deterministic sites), ours carries the plate's name
            assert len(ours[group][name]) == len(names), (group, name)
            for mine, their in zip(ours[group][name], names):
                assert mine == their or their.startswith(f"{name}_dim_"), (group, name, mine, their)
    assert theirs["posterior"]["theta_trans"] == ours["posterior"]["theta_trans"] == ("chain", "draw", "schools")


def students_in_schools(y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    with pyro.plate("schools", 3, dim=-2):
        school = pyro.sample("school", dist.Normal(mu, 1.0))
        with pyro.plate("students", 4, dim=-1):
            pyro.sample("y", dist.Normal(school, 1.0), obs=y)


def test_nested_plates_name_one_dimension_each():
    y = torch.arange(12.0).reshape(3, 4) / 4
    fit = ppgen.fit(students_in_schools, {"y": y}, SVI(num_steps=5, num_posterior_samples=10), seed=0,
                    progress=False)
    dims = _dims(fit.to_arviz(prior=True))
    assert dims["observed_data"]["y"] == ("schools", "students")
    assert dims["log_likelihood"]["y"] == ("chain", "draw", "schools", "students")
    # the school effect is (3, 1): its unplated size-1 dimension keeps a site-named dim
    assert dims["posterior"]["school"] == ("chain", "draw", "schools", "school_dim_1")
    with pytest.raises(ModelError, match="dimension 'students' has 3 entries"):
        fit.to_arviz(dims={"school": ["students", "one"]})


@config_enumerate
def enumerated_mixture(x):
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    with pyro.plate("components", 2):
        locs = pyro.sample("locs", dist.Normal(0.0, 5.0))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z], 1.0), obs=x)


def test_an_enumerated_mixture_shows_no_enumeration_dimension():
    x = torch.cat([torch.randn(15, generator=torch.Generator().manual_seed(0)) - 2, torch.ones(15) * 2])
    fit = ppgen.fit(enumerated_mixture, {"x": x}, NUTS(num_samples=30, warmup=30, chains=1), seed=0,
                    progress=False)
    idata = fit.to_arviz(prior=True)
    dims = _dims(idata)
    assert dims["posterior"]["locs"] == dims["prior"]["locs"] == ("chain", "draw", "components")
    assert dims["posterior"]["weights"] == ("chain", "draw", "weights_dim_0")
    for group in ("log_likelihood", "posterior_predictive", "prior_predictive"):
        assert dims[group]["x"] == ("chain", "draw", "data")
    assert "z" not in idata.posterior  # summed out by NUTS; its prior draws are its own
    assert idata.prior["z"].dims == ("chain", "draw", "data")


def markov_hmm(y):
    transition = pyro.sample("transition", dist.Dirichlet(torch.ones(2, 2)).to_event(1))
    locs = pyro.sample("locs", dist.Normal(torch.tensor([-1.0, 1.0]), 1.0).to_event(1))
    state = 0
    for t in pyro.markov(range(len(y))):
        state = pyro.sample(f"state_{t}", dist.Categorical(transition[state]), infer={"enumerate": "parallel"})
        pyro.sample(f"y_{t}", dist.Normal(locs[state], 0.5), obs=y[t])


def test_a_markov_hmm_program_converts_with_prior_and_log_prior():
    y = torch.tensor([-1.0, -1.2, 0.9, 1.1, 1.0, -0.8])
    fit = ppgen.fit(markov_hmm, {"y": y}, SVI(num_steps=10, num_posterior_samples=20), seed=0, progress=False)
    idata = fit.to_arviz(prior=5)
    assert set(idata.log_prior.data_vars) == {"transition", "locs"}
    assert idata.log_prior["transition"].shape == (1, 20)
    assert idata.prior["locs"].shape == (1, 5, 2)
    assert idata.observed_data["y_3"].size == 1
    assert list(idata.log_likelihood.data_vars) == ["y_0"]  # the chain's sites scored jointly


# ------------------------------------------------------------------ coords, dims, errors
def test_dims_override_and_coords_are_checked(schools_fit):
    idata = schools_fit.to_arviz(dims={"theta": ["school"]}, coords={"school": SCHOOLS})
    assert idata.posterior["theta"].dims == ("chain", "draw", "school")
    assert idata.posterior["theta_trans"].dims == ("chain", "draw", "schools")
    with pytest.raises(DataError, match="coords\\['schools'\\] has 3 values"):
        schools_fit.to_arviz(coords={"schools": ["a", "b", "c"]})
    with pytest.raises(DataError, match="prior"):
        schools_fit.to_arviz(prior=-1)


def test_families_name_dimensions_by_concept_and_label_them_from_the_data(tmp_path):
    frame = ppgen.datasets.load("faithful")
    fit = ppgen.fit(ppgen.models.GaussianMixture(2, 2), frame, SVI(num_steps=20, num_posterior_samples=10),
                    seed=0, progress=False)
    idata = fit.to_arviz()
    assert idata.posterior["locs"].dims == ("chain", "draw", "component", "feature")
    assert idata.posterior["precision"].dims == ("chain", "draw", "component", "feature", "feature_bis")
    assert idata.observed_data["obs"].dims == ("observation", "feature")
    assert list(idata.posterior["locs"].coords["feature"].values) == list(frame.columns)
    loaded = ppgen.load(fit.save(tmp_path / "gmm.pt"))  # the labels are kept with the fit
    assert list(loaded.to_arviz().posterior["locs"].coords["feature"].values) == list(frame.columns)


def test_progress_follows_the_fit(capsys):
    def branching(y):  # control flow on a latent value: scored draw by draw, with a bar if shown
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        scale = 1.0 if float(mu) > 0 else 2.0
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu, scale), obs=y)

    fit = ppgen.fit(branching, {"y": torch.zeros(3)}, SVI(num_steps=2, num_posterior_samples=150), seed=0,
                    progress=False)
    capsys.readouterr()
    fit.to_arviz(posterior_predictive=False)
    assert "log-likelihood" not in capsys.readouterr().err


# ------------------------------------------------------------------ log prior, prior sensitivity
def test_log_prior_is_each_sites_prior_density_and_feeds_prior_sensitivity(schools_fit):
    idata = schools_fit.to_arviz(posterior_predictive=False)
    post = schools_fit.posterior
    by_hand = {"mu": dist.Normal(0.0, 5.0).log_prob(post["mu"]),
               "tau": dist.HalfCauchy(5.0).log_prob(post["tau"]),
               "theta_trans": dist.Normal(0.0, 1.0).log_prob(post["theta_trans"])}
    for name, value in by_hand.items():
        np.testing.assert_allclose(idata.log_prior[name].values, value.numpy(), rtol=1e-5, atol=1e-5)
    assert idata.log_prior["theta_trans"].dims == ("chain", "draw", "schools")
    # the same prior-sensitivity figures as on the same draws assembled by hand
    az = arviz_io._arviz()
    hand = arviz_io.from_dicts({k: v.numpy() for k, v in post.items()},
                               log_likelihood={"obs": schools_fit.log_likelihood()["obs"].numpy()},
                               log_prior={k: v.numpy() for k, v in by_hand.items()},
                               dims={"theta": ["schools"], "theta_trans": ["schools"], "obs": ["schools"]})
    if arviz_io.arviz_major() < 1:
        ours, theirs = az.psens(idata, component="prior"), az.psens(hand, component="prior")
        for name in ("mu", "tau", "theta"):
            np.testing.assert_allclose(ours[name].values, theirs[name].values, rtol=1e-5)
    else:
        ours, theirs = az.psense_summary(idata), az.psense_summary(hand)
        pd.testing.assert_frame_equal(ours, theirs, rtol=1e-5)


# ------------------------------------------------------------------ approximate posteriors
def _regression_data(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    y = 1.0 + 2.0 * x + torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


def regression(x, y=None):
    w = pyro.sample("w", dist.Normal(torch.zeros(2, dtype=x.dtype), 10.0).to_event(1))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(w[0] + w[1] * x, 1.0), obs=y)


def _exact_loo(x, y):
    """log p(y_i | y_-i) of the conjugate regression: Normal(x_i m_-i, 1 + x_i S_-i x_i)."""
    design = torch.stack([torch.ones_like(x), x], -1)
    out = []
    for i in range(len(x)):
        keep = torch.arange(len(x)) != i
        precision = torch.eye(2, dtype=x.dtype) / 100 + design[keep].T @ design[keep]
        cov = torch.linalg.inv(precision)
        mean = cov @ design[keep].T @ y[keep]
        var = 1 + design[i] @ cov @ design[i]
        out.append(float(dist.Normal(design[i] @ mean, var.sqrt()).log_prob(y[i])))
    return np.array(out)


def test_mvn_guide_on_a_gaussian_posterior_is_reliable_and_its_loo_exact(float64):
    x, y = _regression_data()
    fit = ppgen.fit(regression, {"x": x, "y": y}, SVI(num_steps=2000, guide="mvn", num_posterior_samples=4000),
                    seed=0, progress=False)
    diagnostic = psis_khat(fit)
    assert diagnostic.khat < 0.5 and diagnostic.ess > 1000
    result = loo(fit)
    exact = _exact_loo(x, y)
    assert result.elpd == pytest.approx(exact.sum(), abs=0.1) and result.estimator == "psis-loo (q-corrected)"
    assert "log_p" in fit.to_arviz().sample_stats and "log_q" in fit.to_arviz().sample_stats


def test_mean_field_on_centred_eight_schools_is_flagged():
    fit = ppgen.fit(centred_schools, _schools(), SVI(num_steps=1500, guide="normal", num_posterior_samples=2000),
                    seed=0, progress=False)
    assert psis_khat(fit).khat > 0.7
    with pytest.warns(UserWarning, match="guide='normal' \\(AutoNormal\\): Pareto k of p/q = .* > 0.7"):
        table = fit.summary()
    assert table.attrs["psis"].khat > 0.7


def test_psis_khat_refuses_fits_not_drawn_from_a_guide(schools_fit):
    with pytest.raises(ModelError, match="not drawn from a guide"):
        psis_khat(schools_fit)


def test_corrected_loo_with_exact_weights_is_plain_psis_loo():
    """With q = p the correction is a constant: the corrected LOO is the plain PSIS-LOO."""
    rng = np.random.default_rng(0)
    log_likelihood = rng.normal(size=(2000, 5)) - 1
    elpd, khat, _ = corrected_loo(log_likelihood, np.zeros(2000), np.zeros(2000))
    for i in range(5):
        weights, k = pareto_smooth(-log_likelihood[:, i])
        assert elpd[i] == pytest.approx(float(np.logaddexp.reduce(weights + log_likelihood[:, i])))
        assert khat[i] == pytest.approx(k)
    assert math.isfinite(elpd.sum())


def test_pareto_smoothing_agrees_with_arviz_on_light_tails():
    """ArviZ 0.23's ``psislw`` picks its tail one draw differently from ArviZ 1.x (whose
    recipe ppgen follows); on a light tail both give nearly the same k and weights."""
    rng = np.random.default_rng(3)
    ratios = rng.normal(size=4000) * 0.5
    ours, k = pareto_smooth(ratios)
    az = arviz_io._arviz()
    if arviz_io.arviz_major() < 1:
        theirs, their_k = az.psislw(ratios)
    else:
        from arviz_stats.base import array_stats

        theirs, their_k = array_stats.psislw(-ratios, r_eff=1.0)
    assert k == pytest.approx(float(their_k), abs=0.05 if arviz_io.arviz_major() < 1 else 1e-10)
    np.testing.assert_allclose(ours, theirs, atol=1e-2 if arviz_io.arviz_major() < 1 else 1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.exp(ours).sum() == pytest.approx(1.0)


def _figure_text():
    import matplotlib.pyplot as plt

    return " ".join(t.get_text() for number in plt.get_fignums() for ax in plt.figure(number).axes
                    for t in [*ax.texts, *ax.get_yticklabels(), ax.title])


def test_arviz_plots_take_a_ppgen_fit_with_its_coordinates(schools_fit):
    import matplotlib.pyplot as plt

    az = arviz_io._arviz()
    idata = schools_fit.to_arviz(prior=True, coords={"schools": SCHOOLS})
    plt.close("all")
    if arviz_io.arviz_major() < 1:
        az.plot_forest(idata, var_names=["theta"], coords={"schools": SCHOOLS[:3]})
    else:
        az.plot_forest(idata, var_names=["theta"], coords={"schools": SCHOOLS[:3]}, backend="matplotlib")
    labels = _figure_text()
    assert all(name in labels for name in SCHOOLS[:3]) and SCHOOLS[5] not in labels
    if arviz_io.arviz_major() < 1:
        az.plot_ppc(idata, num_pp_samples=20)
        az.plot_ppc(idata, group="prior", num_pp_samples=20)
    else:
        az.plot_ppc_dist(idata, num_samples=20, backend="matplotlib")
        az.plot_prior_posterior(idata, var_names=["mu", "tau"], backend="matplotlib")
    plt.close("all")


def test_a_bayesian_network_names_tables_by_its_variables_and_states():
    model, data = ppgen.registry.model_class("BayesianNetwork").example(seed=0)
    fit = ppgen.fit(model, data, SVI(num_steps=5, num_posterior_samples=10), seed=0, progress=False)
    idata = fit.to_arviz(posterior_predictive=False)
    child = next(v for v in model.variables if model.parents[v])
    table = idata.posterior[f"cpt_{child}"]
    assert table.dims == ("chain", "draw", *model.parents[child], child)
    assert list(table.coords[child].values) == list(model.states[child])
    assert list(idata.observed_data["obs"].coords["variable"].values) == list(model.variables)


def test_corrected_loo_is_arviz_1s_loo_approximate_posterior():
    """ppgen computes the corrected LOO itself on ArviZ 0.23; on ArviZ 1.x, where ArviZ has it,
    the two agree to rounding (so ``loo`` gives the same figure on both lines)."""
    rng = np.random.default_rng(5)
    log_likelihood = rng.normal(size=(1000, 6)) * 1.5 - 2
    log_q = rng.normal(size=1000)
    log_p = log_q + 0.7 * rng.standard_t(4, size=1000)
    elpd, khat, p = corrected_loo(log_likelihood, log_p, log_q)
    if arviz_io.arviz_major() < 1:
        data = arviz_io.from_dicts({"a": rng.normal(size=(1, 1000))}, log_likelihood={"y": log_likelihood[None]})
        result = arviz_io.approximate_loo(data, log_p[None], log_q[None])
        np.testing.assert_allclose(result["loo_i"].values, elpd)
        assert result["p_loo"] == pytest.approx(p.sum())
        return
    data = arviz_io.from_dicts({"a": rng.normal(size=(1, 1000))}, log_likelihood={"y": log_likelihood[None]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = arviz_io._arviz().loo_approximate_posterior(data, log_p[None], log_q[None], pointwise=True)
    np.testing.assert_allclose(np.asarray(theirs.elpd_i), elpd, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(theirs.pareto_k), khat, rtol=1e-12)
    assert theirs.p == pytest.approx(p.sum())


def test_a_map_fit_is_summarised_as_a_point(recwarn):
    from ppgen.inference import MAP

    fit = ppgen.fit(eight_schools, _schools(), MAP(num_steps=50), seed=0, progress=False)
    table = fit.summary()
    assert list(table.columns) == ["value"] and table.attrs["kind"] == "point estimate"
    assert table.loc["theta_trans[3]", "value"] == pytest.approx(float(fit.posterior["theta_trans"][0, 0, 3]))
    assert table.loc["mu", "value"] == pytest.approx(float(fit.params["mu"]))
    assert np.isfinite(table["value"]).all() and not recwarn.list


def test_too_few_guide_draws_are_named_not_smoothed(recwarn):
    fit = ppgen.fit(eight_schools, _schools(), SVI(num_steps=20, num_posterior_samples=10), seed=0, progress=False)
    assert "psis" not in fit.summary().attrs  # nothing to judge the guide with: no figure
    with pytest.raises(ModelError, match="at least 25 draws"):
        psis_khat(fit)
