"""A fit as ArviZ data: ``to_arviz``.

The groups are built from the fit's own tensors (never ``az.from_pyro``):

``posterior``
    ``fit.posterior``, ``(chain, draw, *shape)``; SVI and MAP fits have one chain.
``sample_stats``
    the sampler's per-draw statistics under ArviZ's names (MCMC fits only).
``log_likelihood``
    ``fit.log_likelihood()``: :math:`\\log p(x_i \\mid \\theta_s)` per datum and
    draw, discrete latents summed out, what ``az.loo`` and ``az.compare`` need.
``posterior_predictive``
    ``fit.posterior_predictive()``: one replicate of the data per draw.
``observed_data``
    the data each observed site saw.

Each observed site's data dimensions are named ``f"{site}_dim_{i}"`` in all three
data-shaped groups, so ArviZ lines them up (LOO, predictive checks). A masked site
(``obs_mask``, ``poutine.mask``) shows the entries its mask observes, flattened, in all
three (the log-likelihood scores no others); a site masked out entirely, in none.

The fit is used by duck typing (``posterior``, ``sample_stats``,
``log_likelihood()``, ``posterior_predictive()``, ``data``, ``program``); this
module does not import :mod:`ppgen.inference`.
"""

from __future__ import annotations

import pyro.poutine as poutine
import torch

from ..errors import ModelError
from .arviz_io import SAMPLE_STATS_NAMES, from_dicts


def _numpy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    import numpy as np

    return np.asarray(value)


def _numpy_dict(values):
    return {name: _numpy(value) for name, value in values.items()}


def fit_name(fit):
    """A short description of a fit for messages: model and method."""
    program = getattr(fit, "program", None)
    generative = getattr(program, "generative", None)
    if generative is not None:
        model = type(generative).__name__
    else:
        model = getattr(getattr(program, "model", None), "__name__", "program")
    method = getattr(getattr(fit, "method", None), "name", "?")
    return f"{model} ({method})"


def observed_values(fit):
    """``{observed site: tensor}``: the data each observed site of the fit saw.

    For a ``GenerativeModel`` fit this is ``{model.observed_site: fit.data}``. For
    a plain Pyro program the model is run once (its sampled latents discarded,
    the random state restored) and the observed sites' values are read off the
    trace, so data passed under any keyword, or transformed inside the program,
    is reported as the site saw it.
    """
    program = fit.program
    generative = program.generative
    if generative is not None:
        return {generative.observed_site: fit.data}
    if not program.observed:
        return {}
    with torch.random.fork_rng(devices=[]), torch.no_grad(), poutine.block():
        trace = poutine.trace(program.model).get_trace(**program.kwargs)
    return {name: trace.nodes[name]["value"] for name in program.observed}


def observed_entries(program, values, lead=0):
    """``{site: value}`` with each masked site (``obs_mask``, ``poutine.mask``) cut to the
    entries its mask observes, flattened (after ``lead`` leading dimensions), as its
    pointwise log-likelihood is; a site masked out entirely is left out."""
    out = {}
    for name, value in values.items():
        info = program.observed.get(name) if program.generative is None else None
        if info is None or info.observed_entries is None:
            out[name] = value
        elif info.observed_entries.numel():
            value = torch.as_tensor(value)
            event = value.shape[lead + len(info.batch_shape):]
            flat = value.reshape(value.shape[:lead] + (-1,) + event)
            out[name] = flat.index_select(lead, info.observed_entries.to(flat.device))
    return out


def data_dims(observed):
    """``{site: [f"{site}_dim_0", ...]}``: the shared dimension names of each site."""
    return {name: [f"{name}_dim_{i}" for i in range(value.dim() if isinstance(value, torch.Tensor)
                                                    else _numpy(value).ndim)]
            for name, value in observed.items()}


def arviz_dicts(fit, *, posterior_predictive=True, log_likelihood=True):
    """The plain numpy dicts :func:`to_arviz` hands to :func:`from_dicts`.

    Returns
    -------
    dict
        Keyword arguments of :func:`ppgen.diagnostics.from_dicts`.
    """
    generative = fit.program.generative
    sites = getattr(generative, "global_sites", None)
    point_estimate = callable(sites) and not sites()
    if not fit.posterior and not point_estimate:
        raise ModelError(f"{fit_name(fit)}: the fit has no posterior draws to convert")
    # A family with no global latent sites (a VAE's or a flow's weights are a
    # point estimate) has no posterior group; its data groups have one draw.
    posterior = _numpy_dict(fit.posterior) or None
    stats = {SAMPLE_STATS_NAMES.get(name, name): _numpy(value)
             for name, value in (fit.sample_stats or {}).items()}
    observed = observed_entries(fit.program, observed_values(fit))
    out = {
        "posterior": posterior,
        "sample_stats": stats or None,
        "observed_data": _numpy_dict(observed) or None,
        "dims": data_dims(observed),
        "log_likelihood": None,
        "posterior_predictive": None,
    }
    if getattr(generative, "log_prob_kind", None) == "none":
        log_likelihood = False  # no density (an autoencoder, a GAN): nothing to score
    if log_likelihood:
        values = _numpy_dict(fit.log_likelihood())
        _check_pointwise(fit, values, out["observed_data"] or {})
        out["log_likelihood"] = values or None
    if posterior_predictive and observed:
        predictive = observed_entries(fit.program, fit.posterior_predictive(), lead=2)
        out["posterior_predictive"] = _numpy_dict(predictive) or None
    return out


def _check_pointwise(fit, log_likelihood, observed):
    """Each site's pointwise log-likelihood must have the shape of its data's
    batch (leading) dimensions; anything else would make LOO count wrong points."""
    for name, value in log_likelihood.items():
        batch = value.shape[2:]
        data = observed.get(name)
        if data is not None and tuple(data.shape[:len(batch)]) != tuple(batch):
            raise ModelError(
                f"{fit_name(fit)}: the pointwise log-likelihood of site {name!r} has shape "
                f"{tuple(batch)} per draw, which is not the batch shape of its data "
                f"{tuple(data.shape)}; it cannot be lined up with the data for LOO")


def to_arviz(fit, *, posterior_predictive=True, log_likelihood=True):
    """A fit as ArviZ data (``InferenceData``; a ``DataTree`` on ArviZ >= 1).

    Parameters
    ----------
    fit : ppgen.inference.Fit
        Any fit: MCMC, SVI, MAP or Exact, of a ``GenerativeModel`` or a plain
        Pyro program.
    posterior_predictive : bool
        Include one replicate of the data per posterior draw (costs one model
        run per draw).
    log_likelihood : bool
        Include the pointwise log-likelihood (needed by ``loo`` and ``compare``).

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
        Groups ``posterior``, ``sample_stats`` (MCMC), ``log_likelihood``,
        ``posterior_predictive`` and ``observed_data``; see the module docstring.

    Examples
    --------
    >>> idata = to_arviz(fit)                       # doctest: +SKIP
    >>> idata.log_likelihood["obs"].dims             # doctest: +SKIP
    ('chain', 'draw', 'obs_dim_0')
    """
    return from_dicts(**arviz_dicts(fit, posterior_predictive=posterior_predictive,
                                    log_likelihood=log_likelihood))
