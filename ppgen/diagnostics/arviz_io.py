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


def from_dicts(posterior, *, sample_stats=None, log_likelihood=None, posterior_predictive=None,
               observed_data=None, dims=None, coords=None):
    """ArviZ data from plain dicts of numpy arrays.

    Parameters
    ----------
    posterior : dict of str to ndarray, or None
        Draws shaped ``(chain, draw, *shape)``; None or empty for a model
        with no global latent sites (a neural network's point estimate).
    sample_stats, log_likelihood, posterior_predictive : dict of str to ndarray, optional
        Also ``(chain, draw, *shape)``. ``sample_stats`` keys use ArviZ's names
        (``diverging``, ``tree_depth``, ``step_size``, ``acceptance_rate``,
        ``energy``); ``diverging`` is stored as booleans.
    observed_data : dict of str to ndarray, optional
        The data, without chain and draw dimensions.
    dims : dict of str to list of str, optional
        Dimension names (after chain and draw) for each variable, shared by
        every group that holds the variable; a ``log_likelihood`` variable with
        fewer dimensions than listed takes the leading ones.
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
    groups = {
        "posterior": _clean(posterior),
        "sample_stats": stats,
        "log_likelihood": _clean(log_likelihood),
        "posterior_predictive": _clean(posterior_predictive),
        "observed_data": _clean(observed_data),
    }
    if arviz_major() < 1:
        return _arviz().from_dict(**groups, dims=dims, coords=coords)
    import arviz_base

    present = {name: group for name, group in groups.items() if group is not None}
    return arviz_base.from_dict(present, dims=dims, coords=coords)


def compare(datasets, ic="loo"):
    """``arviz.compare`` on a dict of name to ArviZ data; a pandas DataFrame."""
    az = _arviz()
    if arviz_major() < 1:
        return az.compare(datasets, ic=ic)
    if ic != "loo":
        raise ValueError(f"ic={ic!r}: ArviZ >= 1 compares models by LOO only; use ic='loo'")
    return az.compare(datasets)


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
