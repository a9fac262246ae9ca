"""Pareto-smoothed importance sampling, and what it says about an approximate posterior.

Draws :math:`\\theta_s \\sim q` weighted by :math:`r_s = p(\\theta_s, y) / q(\\theta_s)`
estimate expectations under the posterior; the largest weights follow a generalized
Pareto tail whose shape :math:`\\hat k` says how far to trust them (Vehtari et al.
2024): below 0.5 the estimate converges fast, up to 0.7 usably, above 0.7 not at all
for any practical number of draws. For a variational fit this :math:`\\hat k` is the
diagnostic of the guide itself (Yao et al. 2018).

Leave-one-out from draws of :math:`q` corrects each datum's ratios by the same weights
(Magnusson et al. 2019):
:math:`\\log r^{(i)}_s = \\log p(\\theta_s, y) - \\log q(\\theta_s) - \\log p(y_i \\mid
\\theta_s)`, Pareto-smoothed per datum.

The smoothing follows ArviZ 1.x (``arviz_stats``) step by step, so the figures agree
with ``loo_approximate_posterior`` there and are the same on ArviZ 0.23, which lacks it:
tail length :math:`\\lfloor 3\\sqrt{S / r_\\mathrm{eff}}\\rfloor` (:math:`S/5` for
small :math:`S`), the tail fitted by Zhang and Stephens' (2009) empirical-Bayes
estimate with a weak prior pulling :math:`\\hat k` towards 0.5, and replaced by the
fitted quantiles, capped at the largest raw weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from ..errors import ModelError

#: :math:`\hat k` above this: the importance weights (so the guide) are not to be trusted
KHAT_THRESHOLD = 0.7


def _generalized_pareto_fit(x):
    """Shape and scale of a generalized Pareto distribution fitted to sorted positive
    exceedances ``x`` (Zhang and Stephens 2009, with a weak prior on the shape at 0.5)."""
    n = x.size
    quartile = x[int(n / 4 + 0.5) - 1]
    if quartile <= x[0]:
        return math.nan, math.nan
    grid = 30 + int(math.sqrt(n))
    theta = 1 / x[-1] + (1 - np.sqrt(grid / (np.arange(1, grid + 1) - 0.5))) / (3 * quartile)
    shape = np.log1p(-theta[:, None] * x).mean(axis=1)
    profile = n * (np.log(-theta / shape) - shape - 1)
    weight = np.exp(profile - logsumexp(profile))
    keep = weight >= 10 * np.finfo(float).eps
    theta, weight = theta[keep], weight[keep] / weight[keep].sum()
    theta_hat = float((theta * weight).sum())
    k = float(np.log1p(-theta_hat * x).mean())
    sigma = -k / theta_hat
    k = (n * k + 10 * 0.5) / (n + 10)
    return (math.inf, math.nan) if math.isnan(k) else (k, sigma)


def pareto_smooth(log_ratios, r_eff: float = 1.0):
    """Pareto-smoothed, normalised log weights of ``log_ratios`` (1-D), and :math:`\\hat k`.

    Returns
    -------
    (ndarray, float)
        Log weights summing (exponentiated) to one, and the tail shape :math:`\\hat k`.
    """
    log_ratios = np.asarray(log_ratios, dtype=float).reshape(-1)
    n = log_ratios.size
    tail = int(math.floor(3 * math.sqrt(n / r_eff))) if n * r_eff > 225 else int(math.floor(n / 5))
    if tail < 5:
        raise ModelError(f"Pareto smoothing needs at least 25 draws, got {n}; draw more "
                         "(SVI(num_posterior_samples=...))")
    x = log_ratios - log_ratios.max()
    order = np.argsort(x)
    tail_ids = order[n - tail:]
    cutoff = x[order[n - tail - 1]]
    tail_values = x[tail_ids]
    k, sigma = _generalized_pareto_fit(np.exp(tail_values) - math.exp(cutoff))
    if math.isfinite(k):
        probs = (np.arange(tail) + 0.5) / tail
        quantiles = (-sigma * np.log1p(-probs) if k == 0 else sigma * np.expm1(-k * np.log1p(-probs)) / k)
        smoothed = np.log(math.exp(cutoff) + quantiles)
        x[tail_ids] = np.minimum(smoothed, tail_values.max())
    return x - logsumexp(x), k


@dataclass
class ImportanceDiagnostic:
    """The Pareto :math:`\\hat k` of a fit's importance weights :math:`p / q` and their
    effective sample size :math:`1 / \\sum_s \\tilde w_s^2` (smoothed, normalised)."""

    khat: float
    ess: float
    num_draws: int

    @property
    def reliable(self) -> bool:
        return self.khat <= KHAT_THRESHOLD

    def __str__(self):
        verdict = "reliable" if self.khat <= 0.5 else "usable" if self.reliable else "unreliable"
        return (f"Pareto k = {self.khat:.2f} ({verdict}), importance ESS = {self.ess:.0f} of "
                f"{self.num_draws} draws")


def importance_diagnostic(log_p, log_q) -> ImportanceDiagnostic:
    """:class:`ImportanceDiagnostic` of draws from ``q`` with log densities ``log_q``
    targeting ``p`` (``log_p`` up to a constant)."""
    log_ratios = np.asarray(log_p, dtype=float).reshape(-1) - np.asarray(log_q, dtype=float).reshape(-1)
    log_weights, k = pareto_smooth(log_ratios)
    return ImportanceDiagnostic(float(k), float(1 / np.exp(2 * log_weights).sum()), log_ratios.size)


def corrected_loo(log_likelihood, log_p, log_q):
    """PSIS-LOO from draws of an approximation ``q`` (Magnusson et al. 2019).

    Parameters
    ----------
    log_likelihood : ndarray, ``(S, n)``
        :math:`\\log p(y_i \\mid \\theta_s)`.
    log_p, log_q : ndarray, ``(S,)``
        The model's log joint density and the approximation's log density at each draw.

    Returns
    -------
    (ndarray, ndarray, ndarray)
        Per datum: the LOO log predictive density, :math:`\\hat k`, and the effective
        number of parameters (the plain log predictive density under ``q`` minus the
        first, as ArviZ 1.x reports it).
    """
    log_likelihood = np.asarray(log_likelihood, dtype=float)
    num = log_likelihood.shape[0]
    correction = np.asarray(log_p, dtype=float).reshape(-1) - np.asarray(log_q, dtype=float).reshape(-1)
    correction -= correction.max()
    elpd, khat, p = (np.empty(log_likelihood.shape[1]) for _ in range(3))
    for i in range(log_likelihood.shape[1]):
        ratios = correction - log_likelihood[:, i]
        log_weights, khat[i] = pareto_smooth(ratios - ratios.max())
        elpd[i] = logsumexp(log_weights + log_likelihood[:, i])
        p[i] = logsumexp(log_likelihood[:, i]) - math.log(num) - elpd[i]
    return elpd, khat, p


def drawn_from_guide(fit) -> bool:
    """Whether the fit's draws come from a guide (SVI: it kept their ``log_q``)."""
    return "log_q" in (fit.sample_stats or {})


def approximation_densities(fit):
    """``(log_p, log_q)`` of a fit drawn from a guide, each ``(chain, draw)`` numpy, or None
    for a fit that was not (MCMC draws, a MAP point)."""
    if not drawn_from_guide(fit):
        return None
    log_q = fit.sample_stats["log_q"]
    log_p = fit.log_joint()
    return np.asarray(log_p.detach().cpu().double()), np.asarray(log_q.detach().cpu().double())


def psis_khat(fit) -> ImportanceDiagnostic:
    """How well a variational fit's guide approximates the posterior: the Pareto
    :math:`\\hat k` of the importance weights :math:`p(\\theta_s, y) / q(\\theta_s)` of its
    draws, with their effective sample size (Yao et al. 2018).

    Below 0.5 the guide is close enough that importance-weighted estimates are reliable;
    up to 0.7 usable; above 0.7 the guide misses mass the posterior has, and its draws
    (and LOO from them) should not be trusted as posterior draws.

    Parameters
    ----------
    fit : ppgen.inference.Fit
        A fit drawn from a guide (SVI).

    Returns
    -------
    ImportanceDiagnostic
        ``khat``, ``ess``, ``num_draws``, ``reliable``.
    """
    densities = approximation_densities(fit)
    if densities is None:
        raise ModelError(f"psis_khat: the fit ({fit.method.name}) was not drawn from a guide; the Pareto k of "
                         "p/q judges variational fits (SVI)")
    return importance_diagnostic(*densities)


def guide_name(fit) -> str:
    """The guide of a variational fit as the user chose it (``guide="normal"``, a function's name)."""
    guide = getattr(fit.method, "guide", None)
    if isinstance(guide, str):
        fitted = type(fit.guide).__name__ if fit.guide is not None else None
        return f"guide={guide!r}" + (f" ({fitted})" if fitted else "")
    return f"guide {getattr(guide, '__name__', type(guide).__name__)}"
