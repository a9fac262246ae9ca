"""Posterior summaries and model comparison through ArviZ: ``summary``, ``loo``, ``compare``."""

from __future__ import annotations

import contextlib
import logging
import warnings

from ..errors import MethodError, ModelError
from . import arviz_io, elpd, psis
from .convert import fit_name, to_arviz

log = logging.getLogger("ppgen")


def summary(fit, **kwargs):
    """ArviZ's summary table of a fit's posterior.

    Parameters
    ----------
    fit : ppgen.inference.Fit
    **kwargs
        Passed to ``arviz.summary`` (``var_names``, ``hdi_prob``, ``kind``, ...).

    Returns
    -------
    pandas.DataFrame
        One row per scalar posterior quantity: mean, sd, HDI, MCSE, ESS, R-hat; for a point
        estimate (one draw: MAP) its value alone (:func:`point_summary`). For a fit
        drawn from a guide (SVI), ``attrs["psis"]`` holds :func:`~ppgen.diagnostics.psis_khat`
        of the guide, logged, and a warning naming the guide is given when its Pareto
        :math:`\\hat k` exceeds 0.7 (the draws are then not to be trusted as posterior draws).
    """
    import arviz as az

    if not fit.posterior:
        model = type(fit.program.generative).__name__ if fit.program.generative is not None else "the program"
        raise MethodError(f"summary: {model} fitted by {fit.method.name} has no posterior draws to summarise "
                          "(its fit is a point estimate of its weights); see fit.losses, fit.params and "
                          "model.log_prob")
    if fit.num_chains * fit.num_draws == 1:
        return point_summary(fit)
    with without_numba():
        table = az.summary(to_arviz(fit, posterior_predictive=False, log_likelihood=False, log_prior=False),
                           **kwargs)
    if psis.drawn_from_guide(fit) and fit.num_draws >= 25:
        diagnostic = table.attrs["psis"] = psis.psis_khat(fit)
        log.info("%s, %s: %s", fit_name(fit), psis.guide_name(fit), diagnostic)
        if not diagnostic.reliable:
            warnings.warn(f"{fit_name(fit)}, {psis.guide_name(fit)}: Pareto k of p/q = {diagnostic.khat:.2f} > "
                          f"{psis.KHAT_THRESHOLD} (importance ESS {diagnostic.ess:.0f} of {diagnostic.num_draws}): "
                          "the guide is a poor approximation of this posterior and its draws are not posterior "
                          "draws; try guide='mvn' or 'flow', or NUTS", UserWarning, stacklevel=2)
    return table


def point_summary(fit):
    """A point estimate (MAP, one draw) summarised as the point it is: one row per scalar,
    labelled as ArviZ labels them (``theta[0]``, ``locs[1, 0]``), one column ``value``; no
    spread, ESS or R-hat, which one draw does not have."""
    import numpy as np
    import pandas as pd

    rows = {}
    for name, value in fit.posterior.items():
        array = value.detach().cpu().numpy().reshape(value.shape[2:])
        if array.ndim == 0:
            rows[name] = float(array)
            continue
        for index in np.ndindex(array.shape):
            rows[f"{name}[{', '.join(map(str, index))}]"] = float(array[index])
    table = pd.DataFrame({"value": pd.Series(rows, dtype=float)})
    table.attrs["kind"] = "point estimate"
    return table


@contextlib.contextmanager
def without_numba():
    """ArviZ 0.23's numba path of the MCSE of the sd calls ``float`` on a length-1
    array, an error under NumPy >= 2.4; its plain NumPy path is correct. So ArviZ's
    numba use is switched off for the call and restored after (no-op on ArviZ 1.x)."""
    import arviz as az

    numba = getattr(az, "Numba", None)
    if numba is None or not numba.numba_flag:
        yield
        return
    numba.disable_numba()
    try:
        yield
    finally:
        numba.enable_numba()


def _log_likelihood_data(fit, label, var_name=None, convert=True):
    """``(ArviZ data or None, {site: pointwise shape})`` of a fit, or a ModelError."""
    values = fit.log_likelihood() if fit.posterior else {}
    if not values:
        raise ModelError(f"{label}: the fit has no log_likelihood group (no observed sites or no "
                         "posterior draws), so LOO cannot be computed")
    if var_name is not None and var_name not in values:
        raise ModelError(f"{label}: var_name={var_name!r} is not an observed site with a "
                         f"log-likelihood; it has {sorted(values)}")
    if var_name is None and len(values) > 1:
        raise ModelError(f"{label}: the fit has several observed sites {sorted(values)}; "
                         "choose one with var_name=...")
    shapes = {k: tuple(v.shape[2:]) for k, v in values.items() if var_name in (None, k)}
    return (to_arviz(fit, posterior_predictive=False, log_prior=False) if convert else None), shapes


def loo(fit, var_name=None):
    """Pareto-smoothed importance-sampling leave-one-out cross-validation (PSIS-LOO).

    Parameters
    ----------
    fit : ppgen.inference.Fit
    var_name : str, optional
        The observed site to score, needed when the model has several.

    Returns
    -------
    ppgen.diagnostics.elpd.Elpd
        ``elpd`` (nats), ``se``, ``p``, ``pointwise`` and ``pareto_k`` per datum,
        ``warning``, ``n_samples``; the same fields on ArviZ 0.23 and 1.x (ArviZ 0.x's
        ``elpd_loo``/``p_loo``/``loo_i`` read as these), ArviZ's own result in ``arviz``.
        For a fit drawn from a guide (SVI), corrected for the draws coming from the guide
        rather than the posterior (Magnusson et al. 2019;
        :func:`~ppgen.diagnostics.psis.corrected_loo`), the same figure on both lines.

    Raises
    ------
    ModelError
        The fit has no pointwise log-likelihood, or several observed sites and
        no ``var_name``.
    """
    import arviz as az

    if not elpd.has_draws(fit):
        raise ModelError(f"{fit_name(fit)}: PSIS-LOO needs posterior draws and this fit is a point estimate "
                         "(one draw); compare it by K-fold cross-validation or held-out data: "
                         "compare(fits, folds=...) or compare(fits, heldout=...)")
    data, _ = _log_likelihood_data(fit, fit_name(fit), var_name)
    densities = psis.approximation_densities(fit)
    if densities is not None:
        return elpd.from_loo(arviz_io.approximate_loo(data, *densities, var_name=var_name), APPROXIMATE)
    return elpd.from_loo(az.loo(data, pointwise=True, var_name=var_name))


#: the estimator's name for LOO from draws of a guide, weighted by p/q
APPROXIMATE = "psis-loo (q-corrected)"


def compare(fits, ic="loo", var_name=None, *, heldout=None, folds=5, seed=0):
    """Rank fits of the same data by expected log predictive density, any families and methods.

    Where every fit has posterior draws, this is a PSIS-LOO comparison (draws from a guide
    weighted by p/q, :func:`loo`). Where some
    are point estimates (MAP, neural families), which PSIS-LOO cannot score, each fit is
    scored by the estimator it admits (:mod:`ppgen.diagnostics.elpd`): PSIS-LOO with
    draws, K-fold cross-validation (``folds`` refits of the model on the other folds)
    without; with ``heldout`` data, every fit by its log density of those.

    Parameters
    ----------
    fits : dict of str to ppgen.inference.Fit
        Two or more fits, by the names to show in the table.
    ic : {"loo", "waic"}
        The information criterion where every fit has draws (ArviZ >= 1: ``"loo"`` only).
    var_name : str, optional
        The observed site to score, needed when the models have several.
    heldout : data, optional
        Data none of the fits saw, in the form each was fitted to.
    folds, seed : int
        K-fold's number of folds and the seed of its random split.

    Returns
    -------
    pandas.DataFrame
        Best model first, indexed by name, the same columns on ArviZ 0.23 and 1.x
        (:func:`~.elpd.table`): ``rank`` (0 best), ``elpd``, ``se``, ``elpd_diff`` (from the
        best), ``dse`` (its standard error, from the paired pointwise differences), ``p``,
        ``estimator``, ``warning``; where every fit has draws also ArviZ's stacking
        ``weight``. (``ic="waic"``, ArviZ 0.x only: ArviZ's table, ``elpd``/``p`` renamed.)

    Raises
    ------
    ModelError
        A fit has nothing to score, or the fits saw data of different shapes.
    """
    if not isinstance(fits, dict) or len(fits) < 2:
        raise ModelError(f"compare: give a dict of at least two named fits, got {fits!r}")
    if heldout is not None or not all(elpd.has_draws(fit) for fit in fits.values()):
        if ic != "loo":
            raise ModelError(f"compare: ic={ic!r} applies to fits with draws only; point estimates are "
                             "compared by PSIS-LOO, K-fold or held-out log density (ic='loo')")
        estimates = {}
        for name, fit in fits.items():
            label = f"fit {name!r}"
            if heldout is not None:
                estimates[name] = elpd.held_out(fit, label, heldout, var_name)
            elif elpd.has_draws(fit):
                try:
                    estimates[name] = loo(fit, var_name)
                except ModelError:
                    raise
                except (IndexError, ValueError) as exc:  # ArviZ's own failures, named
                    raise ModelError(f"{label}: PSIS-LOO failed ({type(exc).__name__}: {exc})") from None
            else:
                estimates[name] = elpd.k_fold(fit, label, folds, seed, var_name)
        return elpd.table(estimates)
    shapes = {}
    for name, fit in fits.items():
        _, site_shapes = _log_likelihood_data(fit, f"fit {name!r}", var_name, convert=False)
        shapes[name] = sorted(site_shapes.values())
    first = next(iter(shapes))
    for name, shape in shapes.items():
        if shape != shapes[first]:
            raise ModelError(f"compare: fit {name!r} saw observed data of shape "
                             f"{_show(shape)} but fit {first!r} saw {_show(shapes[first])}; "
                             "models can only be compared on the same data")
    if ic != "loo":
        if any(psis.drawn_from_guide(fit) for fit in fits.values()):
            raise ModelError(f"compare: ic={ic!r} cannot correct for draws from a guide; compare SVI fits "
                             "with ic='loo' (PSIS-LOO with the approximate-posterior correction)")
        datasets = {name: _log_likelihood_data(fit, f"fit {name!r}", var_name)[0] for name, fit in fits.items()}
        return _renamed(arviz_io.compare(datasets, ic=ic), ic)
    estimates = {name: loo(fit, var_name) for name, fit in fits.items()}
    table = elpd.table(estimates)
    # ArviZ's stacking weights, from the same per-fit results
    weights = arviz_io.compare({name: e.arviz for name, e in estimates.items()})["weight"]
    table.insert(table.columns.get_loc("p") + 1, "weight", [float(weights[name]) for name in table.index])
    return table


def _renamed(table, ic):
    """ArviZ 0.x's WAIC table under ppgen's column names (``elpd``, ``p``)."""
    table = table.rename(columns={f"elpd_{ic}": "elpd", f"p_{ic}": "p"})
    table["estimator"] = ic
    return table


def _show(shapes):
    return ", ".join(str(s) for s in shapes)
