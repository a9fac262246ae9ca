"""NUTS through ``ppgen.fit`` against posteriordb's reference draws.

For every scalar component of every reference parameter, with our draws
:math:`x` (``C`` chains) and the reference's :math:`r` (10 chains x 1000, Stan):

.. math::

    z_{mean} = \\frac{\\bar x - \\bar r}{\\sqrt{\\mathrm{mcse}(\\bar x)^2 + \\mathrm{mcse}(\\bar r)^2}},
    \\qquad
    z_{sd} = \\frac{s_x - s_r}{\\sqrt{\\mathrm{mcse}(s_x)^2 + \\mathrm{mcse}(s_r)^2}},

each MCSE by ArviZ's formulas from ArviZ's effective sample size of the chains
(so autocorrelation counts; :func:`mcse_mean`, :func:`mcse_sd`). Both estimates carry
independent Monte Carlo error, so the standard error of their difference is the
two MCSEs in quadrature. The test asks :math:`|z| \\le 4`: over the 100
comparisons of the seven posteriors, a correct sampler (z close to standard
normal) exceeds 4 with probability about 100 x 6.3e-5 = 0.6% (the seeds are fixed,
so a pass stays a pass), while a bias of a fraction of a posterior sd shows.
Float64 throughout. Only eight schools runs in CI; the others are ``slow``
(tens of seconds to minutes each on a shared 2-core machine).
"""

import math

import arviz as az
import numpy as np
import pytest

import ppgen
from ppgen.datasets import load_posteriordb
from ppgen.inference import NUTS

from . import programs

Z_MAX = 4.0


def _case(name, program=None, chains=2, draws=500, slow=False, **options):
    program = program or programs.PROGRAMS[name][0]
    method = NUTS(num_samples=draws, warmup=draws, chains=chains, **options)
    return pytest.param(name, program, method, id=program.__name__, marks=[pytest.mark.slow] if slow else [])


CASES = [
    _case("eight_schools-eight_schools_noncentered"),
    _case("arK-arK", slow=True),
    _case("kidiq-kidscore_momiq", dense_mass=True, slow=True),
    _case("sblrc-blr", dense_mass=True, slow=True),
    _case("low_dim_gauss_mix-low_dim_gauss_mix", slow=True),
    # Stan's reference run needed adapt_delta 0.99 to avoid divergences (draws/info).
    _case("gp_pois_regr-gp_pois_regr", slow=True, target_accept=0.95),
    # The states summed out by Pyro's forward algorithm in one site: the same density as
    # the enumerated program (test_programs.py), a hundred times faster per gradient.
    _case("hmm_example-hmm_example", programs.hmm_example_marginal, slow=True, dense_mass=True),
]


def _ess(x):
    return float(np.asarray(az.ess(x, method="mean")).reshape(()))


def mcse_mean(x):
    """Monte Carlo standard error of the mean of draws ``x`` (chains, draws): :math:`s / \\sqrt{ESS}`."""
    return float(np.std(x, ddof=1)) / math.sqrt(_ess(x))


def mcse_sd(x):
    """Monte Carlo standard error of the sd of draws ``x`` (chains, draws), by the delta method:
    :math:`\\sqrt{\\mathrm{Var}(d) / \\mathrm{ESS}(d)} / (2 s)` with :math:`d = (x - \\bar x)^2`.

    These are ArviZ's formulas, written out because ``az.mcse`` on one component
    fails under numba with numpy >= 2.3 (a size-1 array passed to ``float``).
    """
    squared = (x - x.mean()) ** 2
    return math.sqrt(squared.var() / _ess(squared)) / (2 * x.std())


def z_scores(idata, reference):
    """Rows ``(component, statistic, ours, reference, standard error, z)``."""
    rows = []
    for var, ref in reference.items():
        ours = np.asarray(idata.posterior[var])
        assert ours.shape[2:] == ref.shape[2:], var
        for index in np.ndindex(ref.shape[2:]):
            x, r = ours[(Ellipsis,) + index], ref[(Ellipsis,) + index]
            component = var + (f"[{','.join(str(i + 1) for i in index)}]" if index else "")
            for stat, estimate, mcse in (("mean", np.mean, mcse_mean), ("sd", lambda a: np.std(a, ddof=1), mcse_sd)):
                se = math.hypot(mcse(x), mcse(r))
                rows.append((component, stat, float(estimate(x)), float(estimate(r)), se,
                             float(estimate(x) - estimate(r)) / se))
    return rows


def _report(rows):
    return "\n".join(f"{c:>10} {s:>4}: ours {x:.5g} ref {r:.5g} se {se:.2g} z {z:+.2f}"
                     for c, s, x, r, se, z in sorted(rows, key=lambda row: -abs(row[-1])))


@pytest.mark.parametrize("name, program, method", CASES)
def test_nuts_matches_reference(float64, posteriordb_root, name, program, method, record_property):
    reference = load_posteriordb(name, posteriordb_root).reference
    fit = ppgen.fit(program, programs.data(name, posteriordb_root), method, seed=1, progress=False)
    rows = z_scores(fit.to_arviz(posterior_predictive=False, log_likelihood=False), reference)
    worst = max(abs(row[-1]) for row in rows)
    record_property("worst_abs_z", worst)
    worst_three = "\n".join(_report(rows).splitlines()[:3])
    print(f"{name}: worst |z| = {worst:.2f} over {len(rows)} comparisons, "
          f"{int(fit.sample_stats['diverging'].sum())} divergences, {fit.timings['sampling']:.1f} s "
          f"sampling\n{worst_three}")
    assert worst <= Z_MAX, f"{name}: posterior differs from posteriordb's reference\n{_report(rows)}"


def test_centered_eight_schools_shows_its_divergences(float64, posteriordb_root):
    """The centred parameterisation's funnel defeats NUTS at the default target_accept (0.8):
    the sampler must report divergent transitions, in the fit and in ArviZ's sample_stats."""
    data = programs.data("eight_schools-eight_schools_noncentered", posteriordb_root)
    fit = ppgen.fit(programs.eight_schools_centered, data, NUTS(num_samples=300, warmup=300, chains=2),
                    seed=0, progress=False)
    divergences = int(fit.sample_stats["diverging"].sum())
    assert divergences > 0
    idata = fit.to_arviz(posterior_predictive=False, log_likelihood=False)
    assert int(idata.sample_stats["diverging"].sum()) == divergences


def _hmm_importance_sampling(y, draws=200_000, seed=0):
    """Posterior means and sds of hmm_example on data ``y`` by self-normalised importance
    sampling from the (proper) prior, the likelihood by the forward algorithm; with their
    standard errors (delta method on the weighted sums)."""
    rng = np.random.default_rng(seed)
    mu = np.stack([rng.normal(3, 1, 4 * draws), rng.normal(10, 1, 4 * draws)], -1)
    mu = mu[(mu[:, 0] > 0) & (mu[:, 0] < mu[:, 1])][:draws]  # the positive-ordered restriction, exactly
    theta1, theta2 = rng.dirichlet([1, 1], draws), rng.dirichlet([1, 1], draws)
    log_trans = np.log(np.stack([theta1, theta2], 1))  # (draws, from, to)
    emission = -0.5 * (y[:, None, None] - mu[None]) ** 2 - 0.5 * math.log(2 * math.pi)  # (T, draws, K)
    alpha = math.log(0.5) + emission[0]
    for t in range(1, len(y)):
        alpha = np.logaddexp(alpha[:, 0, None] + log_trans[:, 0], alpha[:, 1, None] + log_trans[:, 1]) + emission[t]
    log_w = np.logaddexp(alpha[:, 0], alpha[:, 1])
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    out = {}
    for name, x in (("theta1", theta1), ("theta2", theta2), ("mu", mu)):
        mean = w @ x
        dev = x - mean
        var = w @ dev**2
        se_mean = np.sqrt(w**2 @ dev**2)
        se_sd = np.sqrt(w**2 @ (dev**2 - var) ** 2) / (2 * np.sqrt(var))
        out[name] = (mean, np.sqrt(var), se_mean, se_sd)
    return out


@pytest.mark.slow
def test_enumerated_hmm_nuts_matches_importance_sampling(float64, posteriordb_root):
    """ppgen's NUTS on the ``pyro.markov`` program, the states summed out by enumeration, on
    the first four observations (Pyro's enumeration costs tens of ms per gradient even so),
    against importance sampling of the same posterior: |z| <= 4 as above, the importance
    sampler's standard error in place of the reference's MCSE."""
    data = programs.data("hmm_example-hmm_example", posteriordb_root)
    data = dict(data, N=4, y=data["y"][:4])
    fit = ppgen.fit(programs.hmm_example, data, NUTS(num_samples=300, warmup=200, chains=2, dense_mass=True),
                    seed=2, progress=False)
    assert set(fit.posterior) == {"theta1", "theta2", "mu"}  # the states are summed out, not sampled
    truth = _hmm_importance_sampling(data["y"].numpy())
    rows = []
    for name, (mean, sd, se_mean, se_sd) in truth.items():
        draws = fit.posterior[name].numpy()
        for k in range(2):
            x = draws[..., k]
            rows.append((f"{name}[{k + 1}]", "mean", x.mean(), mean[k], se_mean[k],
                         (x.mean() - mean[k]) / math.hypot(mcse_mean(x), se_mean[k])))
            rows.append((f"{name}[{k + 1}]", "sd", x.std(ddof=1), sd[k], se_sd[k],
                         (x.std(ddof=1) - sd[k]) / math.hypot(mcse_sd(x), se_sd[k])))
    print(f"enumerated hmm_example (N=4): {fit.timings['sampling']:.1f} s sampling\n{_report(rows)}")
    assert max(abs(row[-1]) for row in rows) <= Z_MAX, _report(rows)
