"""The corpus of user programs (:mod:`.corpus`) through NUTS, SVI and MAP to ArviZ, LOO and
compare: the engine path each takes (a silent fall to the slow path fails), the pointwise
log-likelihood against Pyro's own enumerated joint density, and NUTS against Pyro's NUTS
(``references.json``, from :mod:`.make_references`; means within 4 Monte Carlo standard
errors, the two runs' errors combined)."""

import json
import math
from pathlib import Path

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import TraceEnum_ELBO

import ppgen
from ppgen.diagnostics import arviz_io, compare, loo
from ppgen.diagnostics.summary import without_numba
from ppgen.errors import ModelError
from ppgen.inference import MAP, NUTS, SVI, Exact
from ppgen.inference.program import Program

from .corpus import PROGRAMS, data
from .make_references import SAME_POSTERIOR, canonical

REFERENCES = json.loads(Path(__file__).with_name("references.json").read_text())
SCALES = {"scaled_likelihood": 0.5}  # the poutine.scale of that corpus program
SAMPLED = [n for n, p in PROGRAMS.items() if "params" not in p[2]]


@pytest.fixture(scope="module")
def nuts_fits():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    fits = {}
    yield fits
    torch.set_default_dtype(before)


def _nuts(fits, name, **settings):
    if name not in fits:
        torch.set_default_dtype(torch.float64)
        method = NUTS(num_samples=settings.get("draws", 300), warmup=300, chains=2, target_accept=0.9)
        fits[name] = ppgen.fit(PROGRAMS[name][0], data(name), method, seed=0, progress=False)
    return fits[name]


@pytest.mark.parametrize("name", SAMPLED)
def test_nuts_takes_the_recorded_path(nuts_fits, name):
    fit = _nuts(nuts_fits, name)
    assert fit.path["potential"] == "jit", fit.path["reason"]  # Pyro's potential recorded: no fallback
    assert fit.path["chains"] == "vectorized"


@pytest.mark.parametrize("name", sorted(n for n in SAMPLED if SAME_POSTERIOR.get(n, n) in REFERENCES))
def test_nuts_agrees_with_pyros(nuts_fits, name):
    fit = _nuts(nuts_fits, name)
    with without_numba():
        import arviz as az

        for site, reference in REFERENCES[SAME_POSTERIOR.get(name, name)]["sites"].items():
            draws = np.asarray(canonical(name, fit.posterior)[site]).reshape(2, fit.num_draws, -1)
            mean = draws.mean((0, 1))
            ess = np.array([float(az.ess(draws[..., i], method="bulk")) for i in range(draws.shape[-1])])
            mcse = draws.std((0, 1)) / np.sqrt(ess)
            error = np.sqrt(mcse ** 2 + np.array(reference["mcse"]) ** 2)
            fixed = error == 0  # entries fixed by the model (an LKJ Cholesky factor's first entry)
            np.testing.assert_allclose(mean[fixed], np.array(reference["mean"])[fixed], atol=1e-6)
            z = np.abs(mean - np.array(reference["mean"]))[~fixed] / error[~fixed]
            assert (z < 4).all(), (site, z.max())


def _log_likelihood_by_elbo(program, values):
    """log p(y | theta) = log p(y, theta) - log p(theta): TraceEnum_ELBO's joint density (the
    discrete sites summed out) minus the latent sites' own log densities."""
    model = poutine.condition(program.enumerated_model(), data=values)
    elbo = TraceEnum_ELBO(max_plate_nesting=program.max_plate_nesting)
    joint = -elbo.loss(model, lambda **kwargs: None, **program.kwargs)
    trace = poutine.trace(poutine.condition(program.model, data=values)).get_trace(**program.kwargs)
    # each latent's density under its mask, as the joint counts it (obs_mask's y_unobserved)
    sites = [trace.nodes[n] for n in values]
    prior = sum(scale_and_mask(s["fn"].log_prob(s["value"]), mask=s["mask"]).sum() for s in sites)
    return joint - prior


@pytest.mark.parametrize("name", SAMPLED)
def test_log_likelihood_sums_to_pyros_joint(nuts_fits, name):
    # Pointwise log-likelihoods are per datum, unscaled; Pyro's joint carries poutine.scale.
    scale = SCALES.get(name, 1.0)
    fit = _nuts(nuts_fits, name)
    values = fit.log_likelihood()
    program = Program.build(PROGRAMS[name][0], data(name))
    for c, s in [(0, 0), (1, 17)]:
        draw = {k: v[c, s] for k, v in fit.posterior.items() if k in program.latent}
        total = scale * sum(float(v[c, s].sum()) for v in values.values())
        assert total == pytest.approx(float(_log_likelihood_by_elbo(program, draw)), abs=1e-6)


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_every_method_reaches_arviz_loo_and_compare(name, float64):
    pyro.clear_param_store()
    fits = {"svi": ppgen.fit(PROGRAMS[name][0], data(name), SVI(num_steps=100), seed=0, progress=False)}
    fits["map"] = ppgen.fit(PROGRAMS[name][0], data(name), MAP(num_steps=100), seed=0, progress=False)
    if "enumerated" in PROGRAMS[name][2]:  # Exact applies: the discrete sites given the MAP point
        fits["exact"] = ppgen.fit(PROGRAMS[name][0], data(name), Exact(params=fits["map"], num_samples=40),
                                  seed=0, progress=False)
        assert fits["exact"].posterior_predictive()  # the discrete draws replayed through the model
    for fit in fits.values():
        idata = fit.to_arviz()
        assert {"log_likelihood", "posterior_predictive"} <= set(arviz_io.group_names(idata))
    single = len(fits["svi"].log_likelihood()) == 1
    if single and fits["svi"].num_draws > 1:
        assert math.isfinite(loo(fits["svi"]).elpd)
    elif single:
        with pytest.raises(ModelError, match="point estimate"):
            loo(fits["svi"])
    heldout = data(name)
    table = compare(fits, heldout=heldout, var_name=None) if len(fits["svi"].log_likelihood()) == 1 else None
    if table is not None:
        assert set(table["estimator"]) == {"held-out"} and np.isfinite(table["elpd"]).all()


def test_deterministic_sites_stay_out_of_the_predictive_shape(float64):
    """The README's eight schools with ``pyro.deterministic`` in the plate: one replicate of the
    eight observations per draw, not the deterministic vector broadcast against the plate."""
    fit = ppgen.fit(PROGRAMS["with_deterministic"][0], data("with_deterministic"), SVI(num_steps=20,
                    num_posterior_samples=7), seed=0, progress=False)
    assert fit.posterior_predictive()["obs"].shape == (1, 7, 8)
