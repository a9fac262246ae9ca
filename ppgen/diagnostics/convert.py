"""A fit as ArviZ data: ``to_arviz``.

The groups are built from the fit's own tensors (never ``az.from_pyro``), named as
ArviZ's own converters name them:

``posterior``
    ``fit.posterior``, ``(chain, draw, *shape)``, with the ``pyro.deterministic`` sites;
    SVI and MAP fits have one chain.
``sample_stats``
    the sampler's per-draw statistics under ArviZ's names (MCMC); for a fit drawn from a
    guide (SVI), ``log_p`` (the model's log joint density) and ``log_q`` (the guide's) of
    each draw, which :func:`~ppgen.diagnostics.psis_khat` and the corrected LOO use.
``log_likelihood``
    ``fit.log_likelihood()``: :math:`\\log p(x_i \\mid \\theta_s)` per datum and
    draw, discrete latents summed out, what ``az.loo`` and ``az.compare`` need.
``log_prior``
    ``fit.log_prior()``: each latent site's prior log density at each draw (for ArviZ's
    prior-sensitivity checks, ``psense_summary`` / ``psens``).
``posterior_predictive``, ``prior``, ``prior_predictive``
    one replicate of the data per posterior draw (with the deterministic sites, as
    Predictive gives them); with ``prior=...``, draws of the latent sites and of the
    data from the program's prior.
``observed_data``, ``constant_data``
    the data each observed site saw, and the program's other tensor inputs by keyword.

Dimensions are named after the plates that hold them, the same name in every group, so
the sites of one plate share a dimension and its coordinate; event dimensions and batch
dimensions outside any plate are ``f"{site}_dim_{i}"``. A family names its dimensions by
concept (``GenerativeModel.arviz_dims``) and labels them from its data
(``arviz_coords``). A masked site (``obs_mask``, ``poutine.mask``) shows the entries its
mask observes, flattened, in the data-shaped groups (the log-likelihood scores no
others); a site masked out entirely, in none.

The fit is used by duck typing (``posterior``, ``sample_stats``, ``log_likelihood()``,
``log_prior()``, ``log_joint()``, ``prior()``, ``posterior_predictive()``, ``data``,
``program``); this module does not import :mod:`ppgen.inference`.
"""

from __future__ import annotations

import pyro.poutine as poutine
import torch

from ..errors import DataError, ModelError
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


def site_dims(fit):
    """``{site: [dimension name, ...]}`` for every site of the fit: plate names where a plate
    holds the dimension, else ``f"{site}_dim_{i}"``; a family's concept names over those."""
    program = fit.program
    dims = {}
    for group in (program.latent, program.deterministic, program.observed):
        for name, info in group.items():
            names = [plate or f"{name}_dim_{i}" for i, plate in enumerate(info.dims)]
            if info.observed_entries is not None:  # flattened to the observed entries
                event = len(info.shape) - len(info.batch_shape)
                names = [f"{name}_dim_{i}" for i in range(1 + event)]
            dims[name] = names
    family = getattr(program.generative, "arviz_dims", None)
    if family is not None:
        dims.update({k: list(v) for k, v in family().items()})
    return dims


def constant_data(fit, observed, dims):
    """``({keyword: value}, {keyword: dims})``: the program's tensor inputs that no observed
    site saw, each leading dimension named as the site whose shape it lines up with names it."""
    program = fit.program
    skip = {"data"} if program.generative is not None else set()
    out, out_dims = {}, {}
    for key, value in program.kwargs.items():
        if key in skip or not isinstance(value, torch.Tensor) or any(
                value is seen or (isinstance(seen, torch.Tensor) and seen.shape == value.shape
                                  and bool(torch.equal(seen, value))) for seen in observed.values()):
            continue
        out[key] = value
        out_dims[key] = _lined_up(key, tuple(value.shape), fit, dims)
    return out, out_dims


def _lined_up(key, shape, fit, dims):
    """Names for an input of ``shape``: the longest run of leading plate dimensions of any
    site whose shape starts as this one does."""
    program = fit.program
    best = []
    for group in (program.observed, program.latent, program.deterministic):
        for name, info in group.items():
            names = []
            for i, size in enumerate(shape):
                if i >= len(info.shape) or info.shape[i] != size or info.dims[i] is None \
                        or info.observed_entries is not None:
                    break
                names.append(dims[name][i])
            best = names if len(names) > len(best) else best
    return best + [f"{key}_dim_{i}" for i in range(len(best), len(shape))]


def arviz_dicts(fit, *, posterior_predictive=True, log_likelihood=True, log_prior=True, prior=False,
                coords=None, dims=None):
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
    seen = observed_values(fit)
    observed = observed_entries(fit.program, seen)
    all_dims = site_dims(fit)
    constants, constant_dims = constant_data(fit, seen, all_dims)
    all_dims.update(constant_dims)
    all_dims.update({k: list(v) for k, v in (dims or {}).items()})
    out = {
        "posterior": posterior,
        "sample_stats": stats or None,
        "observed_data": _numpy_dict(observed) or None,
        "constant_data": _numpy_dict(constants) or None,
        "dims": all_dims,
        "coords": {**_family_coords(fit), **(coords or {})},
    }
    if getattr(generative, "log_prob_kind", None) == "none":
        log_likelihood = False  # no density (an autoencoder, a GAN): nothing to score
    if log_likelihood:
        values = _numpy_dict(fit.log_likelihood())
        _check_pointwise(fit, values, out["observed_data"] or {})
        out["log_likelihood"] = values or None
    if "log_q" in stats and log_likelihood:
        out["sample_stats"]["log_p"] = _numpy(fit.log_joint())
    if log_prior and fit.posterior:
        out["log_prior"] = _numpy_dict(fit.log_prior()) or None
    if posterior_predictive and observed:
        predictive = observed_entries(fit.program, fit.posterior_predictive(), lead=2)
        # the deterministic sites too, as Pyro's and NumPyro's Predictive return them
        predictive.update({k: v for k, v in fit.posterior.items() if k in fit.program.deterministic})
        out["posterior_predictive"] = _numpy_dict(predictive) or None
    if prior is not False and prior is not None:
        if not (prior is True or (isinstance(prior, int) and prior > 0)):
            raise DataError(f"to_arviz: prior={prior!r} must be True or a positive number of draws")
        latent, data = fit.prior(None if prior is True else prior)
        out["prior"] = _numpy_dict(latent) or None
        out["prior_predictive"] = _numpy_dict(observed_entries(fit.program, data, lead=2)) or None
    _check_sizes(fit, out)
    return out


def _family_coords(fit):
    family = getattr(fit.program.generative, "arviz_coords", None)
    return dict(family()) if family is not None else {}


def _check_sizes(fit, out):
    """Every dimension one size in every group, and its coordinates that long: a clear error
    naming the dimension rather than xarray's."""
    sizes = {}
    for group in ("posterior", "log_likelihood", "log_prior", "posterior_predictive", "prior",
                  "prior_predictive", "observed_data", "constant_data"):
        lead = 0 if group in ("observed_data", "constant_data") else 2
        for name, value in (out.get(group) or {}).items():
            for dim, size in zip(out["dims"].get(name, []), value.shape[lead:]):
                first = sizes.setdefault(dim, (size, name, group))
                if first[0] != size:
                    raise ModelError(f"{fit_name(fit)}: dimension {dim!r} has {first[0]} entries in "
                                     f"{first[2]} {first[1]!r} but {size} in {group} {name!r}; name them "
                                     "apart with to_arviz(dims={...})")
    for dim, values in out["coords"].items():
        if dim in sizes and len(values) != sizes[dim][0]:
            raise DataError(f"to_arviz: coords[{dim!r}] has {len(values)} values but dimension {dim!r} "
                            f"has {sizes[dim][0]} entries ({sizes[dim][2]} {sizes[dim][1]!r})")


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


def to_arviz(fit, *, posterior_predictive=True, log_likelihood=True, log_prior=True, prior=False,
             coords=None, dims=None):
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
    log_prior : bool
        Include each latent site's prior log density at each draw (ArviZ's prior
        sensitivity checks need it).
    prior : bool or int
        Add ``prior`` and ``prior_predictive`` groups: one chain of draws from the
        program's prior (as many as the posterior has per chain, or this many), seeded
        by the fit's seed.
    coords : dict of str to array-like, optional
        Coordinate values by dimension name (ArviZ's ``coords``), over a family's own.
    dims : dict of str to list of str, optional
        Dimension names for a site or input, over the plate names (ArviZ's ``dims``).

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
        The groups of the module docstring.

    Examples
    --------
    >>> idata = to_arviz(fit, coords={"schools": names}, prior=True)   # doctest: +SKIP
    >>> idata.posterior["theta"].dims                                   # doctest: +SKIP
    ('chain', 'draw', 'schools')
    """
    return from_dicts(**arviz_dicts(fit, posterior_predictive=posterior_predictive,
                                    log_likelihood=log_likelihood, log_prior=log_prior, prior=prior,
                                    coords=coords, dims=dims))
