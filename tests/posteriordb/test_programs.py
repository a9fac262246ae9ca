"""The Pyro programs are the Stan models: same parameters, same density up to a constant.

Each program's log joint (constrained space, no Jacobian) is compared with the
Stan model's ``target`` written out again below with scipy, loop for loop as in
the Stan code, at three reference draws: the difference must be the same
constant at all three (Stan drops nothing here, Pyro and Stan differ only by
normalising constants of truncated priors). The HMM's log density, with the
states summed out by Pyro's enumeration in the potential NUTS uses, is checked
against a hand-written forward algorithm.
"""

import math
import re

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer.mcmc.util import initialize_model
from scipy import stats
from scipy.special import logsumexp

from ppgen.datasets import load_posteriordb

from . import programs

CASES = [pytest.param(name, program, id=program.__name__) for name, (program, _) in programs.PROGRAMS.items()]
CASES.append(pytest.param("hmm_example-hmm_example", programs.hmm_example_marginal, id="hmm_example_marginal"))
DRAWS = [(0, 0), (3, 500), (9, 999)]  # (chain, draw) of the reference


def _stan_parameters(code):
    """Names declared in the Stan program's ``parameters`` block."""
    body = re.search(r"^parameters\s*\{(.*?)\}", code, re.S | re.M).group(1)
    body = re.sub(r"//[^\n]*", "", body)
    return {re.search(r"(\w+)\s*$", s).group(1) for s in body.split(";") if s.strip()}


def _gp_cholesky(x, rho, alpha):
    cov = alpha**2 * np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / rho**2) + 1e-10 * np.eye(len(x))
    return np.linalg.cholesky(cov)


def _site_values(name, draw, data):
    """The program's sample-site values at one reference draw (numpy, constrained)."""
    values = dict(draw)
    if name.startswith("eight_schools"):
        values["theta_trans"] = (values.pop("theta") - values["mu"]) / values["tau"]
    elif name.startswith("gp_pois_regr"):
        cholesky = _gp_cholesky(data["x"].numpy(), values["rho"], values["alpha"])
        values["f_tilde"] = np.linalg.solve(cholesky, values.pop("f"))
    return values


# ---------------------------------------------------------------- Stan's target, from the .stan files
def _stan_target(name, v, d):
    d = {k: (x.numpy() if isinstance(x, torch.Tensor) else x) for k, x in d.items()}
    norm = stats.norm.logpdf
    if name.startswith("eight_schools"):
        theta = v["theta_trans"] * v["tau"] + v["mu"]
        return (norm(v["theta_trans"]).sum() + norm(d["y"], theta, d["sigma"]).sum()
                + norm(v["mu"], 0, 5) + stats.cauchy.logpdf(v["tau"], 0, 5))
    if name.startswith("low_dim_gauss_mix"):
        target = norm(v["sigma"], 0, 2).sum() + norm(v["mu"], 0, 2).sum() + stats.beta.logpdf(v["theta"], 5, 5)
        for y in d["y"]:
            target += np.logaddexp(math.log(v["theta"]) + norm(y, v["mu"][0], v["sigma"][0]),
                                   math.log(1 - v["theta"]) + norm(y, v["mu"][1], v["sigma"][1]))
        return target
    if name.startswith("gp_pois_regr"):
        f = _gp_cholesky(d["x"], v["rho"], v["alpha"]) @ v["f_tilde"]
        return (stats.gamma.logpdf(v["rho"], 25, scale=1 / 4) + norm(v["alpha"], 0, 2)
                + norm(v["f_tilde"]).sum() + stats.poisson.logpmf(d["k"], np.exp(f)).sum())
    if name.startswith("kidiq"):
        loc = v["beta"][0] + v["beta"][1] * d["mom_iq"]
        return stats.cauchy.logpdf(v["sigma"], 0, 2.5) + norm(d["kid_score"], loc, v["sigma"]).sum()
    if name.startswith("sblrc"):
        return (norm(v["beta"], 0, 10).sum() + norm(v["sigma"], 0, 10)
                + norm(d["y"], d["X"] @ v["beta"], v["sigma"]).sum())
    if name.startswith("arK"):
        target = norm(v["alpha"], 0, 10) + norm(v["beta"], 0, 10).sum() + stats.cauchy.logpdf(v["sigma"], 0, 2.5)
        y, K = d["y"], d["K"]
        for t in range(K, d["T"]):  # Stan's t = K + 1 .. T, 0-based
            mu = v["alpha"]
            for k in range(1, K + 1):
                mu = mu + v["beta"][k - 1] * y[t - k]
            target += norm(y[t], mu, v["sigma"])
        return target
    if name.startswith("hmm_example"):
        return _stan_hmm_target(v, d)
    raise KeyError(name)


def _stan_hmm_target(v, d):
    """hmm_example.stan's forward algorithm, transcribed (no initial-state term)."""
    theta = np.stack([v["theta1"], v["theta2"]])
    mu, y, K = v["mu"], d["y"], d["K"]
    gamma = np.array([stats.norm.logpdf(y[0], mu[k], 1) for k in range(K)])
    for t in range(1, d["N"]):
        gamma = np.array([logsumexp([gamma[j] + math.log(theta[j, k]) + stats.norm.logpdf(y[t], mu[k], 1)
                                     for j in range(K)]) for k in range(K)])
    return stats.norm.logpdf(mu[0], 3, 1) + stats.norm.logpdf(mu[1], 10, 1) + logsumexp(gamma)


def _pyro_log_joint(program, values, data):
    conditioned = poutine.condition(program, data={k: torch.as_tensor(x) for k, x in values.items()})
    return float(poutine.trace(conditioned).get_trace(**data).log_prob_sum())


def _trace(program, data):
    with torch.no_grad():
        return poutine.trace(program).get_trace(**data)


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("name, program", CASES)
def test_sites_are_the_stan_parameters(float64, posteriordb_root, name, program):
    posterior = load_posteriordb(name, posteriordb_root)
    trace = _trace(program, programs.data(name, posteriordb_root))
    latent, deterministic = set(), set()
    for site in trace.nodes.values():
        if site["type"] != "sample" or type(site["fn"]).__name__ == "_Subsample":
            continue
        if site["infer"].get("_deterministic"):
            deterministic.add(site["name"])
        elif not site["is_observed"] and not site["infer"].get("enumerate"):
            latent.add(site["name"])
    assert latent == _stan_parameters(posterior.stan_code)
    # Transformed parameters the reference reports are deterministic sites.
    assert set(posterior.reference) <= latent | deterministic
    assert deterministic <= set(posterior.reference)


@pytest.mark.parametrize("name, program", CASES)
def test_log_joint_is_stan_target_up_to_a_constant(float64, posteriordb_root, name, program):
    posterior = load_posteriordb(name, posteriordb_root)
    data = programs.data(name, posteriordb_root)
    enumerated = _enumerated_density(program, data) if program is programs.hmm_example else None
    differences = []
    for chain, i in DRAWS:
        values = _site_values(name, {k: v[chain, i] for k, v in posterior.reference.items()}, data)
        ours = enumerated(values) if enumerated else _pyro_log_joint(program, values, data)
        assert math.isfinite(ours)
        differences.append(ours - _stan_target(name, values, data))
    # Float64 sums of ~10^3 terms of size ~10^3: agreement to 1e-8 is rounding, a wrong term is >> 1e-3.
    assert max(differences) - min(differences) < 1e-8, differences


def test_deterministic_sites_reproduce_the_reference(float64, posteriordb_root):
    """theta and f, recomputed from the sampled sites, are the reference's transformed parameters."""
    for name, site in [("eight_schools-eight_schools_noncentered", "theta"), ("gp_pois_regr-gp_pois_regr", "f")]:
        posterior = load_posteriordb(name, posteriordb_root)
        program, _ = programs.PROGRAMS[name]
        data = programs.data(name, posteriordb_root)
        draw = {k: v[2, 17] for k, v in posterior.reference.items()}
        values = {k: torch.as_tensor(x) for k, x in _site_values(name, draw, data).items() if k != site}
        trace = _trace(poutine.condition(program, data=values), data)
        np.testing.assert_allclose(trace.nodes[site]["value"].numpy(), draw[site], rtol=1e-6, atol=1e-8)


def _enumerated_density(program, data):
    """``values -> log p(y, params)`` with the states summed out, through the potential
    Pyro's NUTS uses: -U(u) minus the log-Jacobian of the unconstraining map."""
    _, potential_fn, transforms, _ = initialize_model(program, model_kwargs=data, max_plate_nesting=0)

    def log_joint(values):
        unconstrained, log_jacobian = {}, 0.0
        for site, value in values.items():
            value = torch.as_tensor(value)
            unconstrained[site] = transforms[site](value)
            log_jacobian += float(transforms[site].inv.log_abs_det_jacobian(unconstrained[site], value).sum())
        with torch.no_grad():
            return -float(potential_fn(unconstrained)) - log_jacobian

    return log_joint


def test_hmm_enumeration_equals_forward_algorithm(float64, posteriordb_root):
    name = "hmm_example-hmm_example"
    data = programs.data(name, posteriordb_root)
    rng = np.random.default_rng(0)
    # Points off the posterior too, where a wrong transition orientation shows most.
    points = [{"theta1": np.array([0.7, 0.3]), "theta2": np.array([0.1, 0.9]), "mu": np.array([3.0, 9.0])},
              {"theta1": np.array([0.2, 0.8]), "theta2": np.array([0.6, 0.4]), "mu": np.array([1.0, 5.0])}]
    points += [{"theta1": rng.dirichlet([1, 1]), "theta2": rng.dirichlet([1, 1]),
                "mu": np.sort(rng.uniform(0.5, 12, 2))} for _ in range(2)]
    log_joint = _enumerated_density(programs.hmm_example, data)
    for point in points:
        forward = _stan_hmm_target(point, data | {"y": data["y"].numpy()})
        # Stan's recursion starts from gamma_1 = log p(y_1 | z_1) with no log(1/K) for z_1.
        assert log_joint(point) == pytest.approx(forward - math.log(2), abs=1e-9)
        marginal = _pyro_log_joint(programs.hmm_example_marginal, point, data)
        assert marginal == pytest.approx(forward - math.log(2), abs=1e-9)


def test_hmm_refuses_other_state_counts(float64, posteriordb_root):
    data = programs.data("hmm_example-hmm_example", posteriordb_root)
    with pytest.raises(ValueError, match="K=3"):
        programs.hmm_example(**(data | {"K": 3}))


def test_restricted_prior_is_base_density_on_the_support(float64):
    base = pyro.distributions.Normal(torch.zeros(2), 2 * torch.ones(2)).to_event(1)
    prior = programs.Restricted(pyro.distributions.constraints.ordered_vector, (2,), base)
    value = torch.tensor([-1.0, 0.5])
    assert float(prior.log_prob(value)) == pytest.approx(float(base.log_prob(value)), abs=1e-12)
    placeholder = prior.sample((50,))
    assert bool((placeholder[:, 1] > placeholder[:, 0]).all())
    flat = programs.Restricted(pyro.distributions.constraints.real_vector, (2,)).expand((3,))
    assert flat.batch_shape == (3,) and flat.log_prob(torch.ones(3, 2)).tolist() == [0.0, 0.0, 0.0]
