"""The one place that knows which ArviZ is installed.

ArviZ 0.x builds an ``InferenceData`` with ``arviz.from_dict(posterior=...,
sample_stats=..., ...)``; ArviZ 1.x (Python 3.12+) builds an xarray
``DataTree`` with ``arviz_base.from_dict({"posterior": ..., ...})``, and renames
a few functions (``compare`` lost ``ic``; the trace and predictive-check plots
became ``plot_trace_dist`` and ``plot_ppc_dist`` returning a
``PlotCollection``). Every ArviZ call whose spelling differs between the two
goes through this module; everything else in :mod:`ppgen.diagnostics` calls
ArviZ functions whose names and meaning are the same in both.

ArviZ is imported lazily, so ``import ppgen`` stays fast and quiet.
"""

from __future__ import annotations

import functools
import re

#: ppgen's sampler statistics and ArviZ's names for them (ArviZ's converters
#: for Stan, PyMC and NumPyro use these names; ``plot_energy``, ``bfmi`` and the
#: divergence markers of ``plot_trace`` and ``plot_pair`` look them up).
SAMPLE_STATS_NAMES = {
    "diverging": "diverging",
    "tree_depth": "tree_depth",
    "step_size": "step_size",
    "acceptance_rate": "acceptance_rate",
    "energy": "energy",
    "log_p": "log_p",
    "log_q": "log_q",
}


def _arviz():
    import arviz

    return arviz


@functools.lru_cache(maxsize=1)
def arviz_major():
    """The installed ArviZ major version, as an int (``0`` for 0.23.4).

    Parsed without ``packaging``: the leading run of digits of ``__version__``.
    """
    match = re.match(r"\s*(\d+)", str(getattr(_arviz(), "__version__", "0")))
    return int(match.group(1)) if match else 0


def _clean(group):
    """Drop empty groups; ``None`` stays ``None``."""
    return dict(group) if group else None


#: ArviZ's groups in the order they are written; the last two have no chain or draw dimensions.
GROUPS = ("posterior", "sample_stats", "log_likelihood", "log_prior", "posterior_predictive", "prior",
          "prior_predictive", "observed_data", "constant_data")
WITHOUT_DRAWS = ("observed_data", "constant_data")


def from_dicts(posterior, *, sample_stats=None, log_likelihood=None, log_prior=None, posterior_predictive=None,
               prior=None, prior_predictive=None, observed_data=None, constant_data=None, dims=None,
               coords=None):
    """ArviZ data from plain dicts of numpy arrays.

    Parameters
    ----------
    posterior : dict of str to ndarray, or None
        Draws shaped ``(chain, draw, *shape)``; None or empty for a model
        with no global latent sites (a neural network's point estimate).
    sample_stats, log_likelihood, log_prior, posterior_predictive, prior, prior_predictive : dict, optional
        Also ``(chain, draw, *shape)``. ``sample_stats`` keys use ArviZ's names
        (``diverging``, ``tree_depth``, ``step_size``, ``acceptance_rate``,
        ``energy``, ``log_p``, ``log_q``); ``diverging`` is stored as booleans.
    observed_data, constant_data : dict of str to ndarray, optional
        The data and the program's other inputs, without chain and draw dimensions.
    dims : dict of str to list of str, optional
        Dimension names (after chain and draw) for each variable, shared by every
        group that holds the variable. A variable with fewer dimensions than listed
        (a site's log-likelihood or log prior has its batch dimensions only) takes the
        leading ones; one with more gets ``f"{name}_dim_{i}"`` for the rest.
    coords : dict of str to array-like, optional
        Coordinate values by dimension name.

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
        ``InferenceData`` on ArviZ < 1, ``DataTree`` on ArviZ >= 1.
    """
    stats = _clean(sample_stats)
    if stats and "diverging" in stats:
        stats["diverging"] = stats["diverging"].astype(bool)
    given = {"posterior": posterior, "sample_stats": stats, "log_likelihood": log_likelihood,
             "log_prior": log_prior, "posterior_predictive": posterior_predictive, "prior": prior,
             "prior_predictive": prior_predictive, "observed_data": observed_data, "constant_data": constant_data}
    groups = {name: _clean(given[name]) for name in GROUPS if _clean(given[name])}
    dims = dims or {}
    datasets = {}
    for name, group in groups.items():
        lead = 0 if name in WITHOUT_DRAWS else 2
        group_dims = {var: _variable_dims(var, value.ndim - lead, dims.get(var)) for var, value in group.items()}
        used = {d for names in group_dims.values() for d in names}
        group_coords = {d: v for d, v in (coords or {}).items() if d in used}
        datasets[name] = _dataset(group, group_dims, group_coords, lead)
    if arviz_major() < 1:
        return _arviz().InferenceData(**datasets)
    import xarray

    return xarray.DataTree.from_dict(datasets)


def group_names(data):
    """The names of the groups of ArviZ data (``InferenceData.groups()`` on ArviZ 0.x, the
    children of the ``DataTree`` on 1.x)."""
    if arviz_major() < 1:
        return list(data.groups())
    return list(data.children)


def _variable_dims(name, rank, listed):
    listed = list(listed or [])[:rank]
    return listed + [f"{name}_dim_{i}" for i in range(len(listed), rank)]


def _dataset(group, dims, coords, lead):
    """One group as an xarray Dataset, through the installed ArviZ's own converter."""
    if arviz_major() < 1:
        return _arviz().dict_to_dataset(group, coords=coords, dims=dims, default_dims=None if lead else [])
    import arviz_base

    return arviz_base.dict_to_dataset(group, coords=coords, dims=dims, sample_dims=None if lead else [])


def compare(datasets, ic="loo"):
    """``arviz.compare`` on a dict of name to ArviZ data; a pandas DataFrame."""
    az = _arviz()
    if arviz_major() < 1:
        return az.compare(datasets, ic=ic)
    if ic != "loo":
        raise ValueError(f"ic={ic!r}: ArviZ >= 1 compares models by LOO only; use ic='loo'")
    return az.compare(datasets)


def approximate_loo(data, log_p, log_q, var_name=None):
    """PSIS-LOO of draws from an approximation ``q`` (Magnusson et al. 2019): ArviZ 1.x's
    ``loo_approximate_posterior``; on ArviZ 0.23, which lacks it, the same computation
    (:func:`~ppgen.diagnostics.psis.corrected_loo`) as ArviZ 0.23's ``ELPDData``.

    Parameters
    ----------
    data : ArviZ data with a ``log_likelihood`` group (one chain of the draws of ``q``)
    log_p, log_q : ndarray ``(chain, draw)``
        The model's log joint density and the approximation's at each draw.
    var_name : str, optional
        The log-likelihood variable (needed with several).
    """
    az = _arviz()
    if arviz_major() >= 1:
        return az.loo_approximate_posterior(data, log_p, log_q, pointwise=True, var_name=var_name)
    import numpy as np
    import xarray as xr
    from arviz.stats.stats_utils import ELPDData

    from .psis import corrected_loo

    group = data.log_likelihood
    values = group[var_name if var_name is not None else list(group.data_vars)[0]]
    num = values.sizes["chain"] * values.sizes["draw"]
    points = values.stack(__sample__=("chain", "draw")).transpose("__sample__", ...)
    pointwise_dims = points.dims[1:]
    flat = points.values.reshape(num, -1)
    elpd, khat, p = corrected_loo(flat, log_p, log_q)
    shape = points.shape[1:]
    coords = {d: values.coords[d] for d in pointwise_dims if d in values.coords}
    loo_i = xr.DataArray(elpd.reshape(shape), dims=pointwise_dims, coords=coords)
    pareto_k = xr.DataArray(khat.reshape(shape), dims=pointwise_dims, coords=coords)
    good_k = min(1 - 1 / np.log10(num), 0.7)
    return ELPDData(data=[float(elpd.sum()), float(np.sqrt(elpd.size * elpd.var())), float(p.sum()), num,
                          elpd.size, bool((khat > good_k).any()), loo_i, pareto_k, "log", good_k],
                    index=["elpd_loo", "se", "p_loo", "n_samples", "n_data_points", "warning", "loo_i",
                           "pareto_k", "scale", "good_k"])


def _figure_of(result):
    """The matplotlib Figure behind what an ArviZ plot returned."""
    import numpy as np

    if hasattr(result, "figure") and not isinstance(result, np.ndarray):
        return result.figure  # a single Axes
    if isinstance(result, np.ndarray):
        return result.ravel()[0].figure
    viz = getattr(result, "viz", None)  # ArviZ 1.x PlotCollection
    if viz is not None:
        for key in ("figure", "chart"):
            if key in viz:
                return viz[key].item()
    raise TypeError(f"cannot find the figure of an ArviZ plot result ({type(result).__name__})")


def trace_figure(data, var_names=None):
    """ArviZ's trace plot of ``data``'s posterior; returns the Figure."""
    az = _arviz()
    if arviz_major() < 1:
        figure = _figure_of(az.plot_trace(data, var_names=var_names))
        figure.set_layout_engine("constrained")  # titles and ticks otherwise overlap
        return figure
    return _figure_of(az.plot_trace_dist(data, var_names=var_names, backend="matplotlib"))


def ppc_figure(data, ax=None, var_names=None):
    """ArviZ's posterior predictive check plot; returns the Figure."""
    az = _arviz()
    if arviz_major() < 1:
        return _figure_of(az.plot_ppc(data, ax=ax, var_names=var_names))
    if ax is not None:
        raise ValueError("plot_ppc(ax=...) is not supported with ArviZ >= 1, which lays out "
                         "its own figure; leave ax=None")
    return _figure_of(az.plot_ppc_dist(data, var_names=var_names, backend="matplotlib"))
