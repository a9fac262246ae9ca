"""Plots of fits: training loss, traces, samples against data, predictive checks.

Every function returns a matplotlib ``Figure`` and never calls ``plt.show()``.
Figures ppgen draws itself are built with the object-oriented API
(``matplotlib.figure.Figure``), outside pyplot's figure manager, so no backend
is chosen or required and nothing is kept alive after the caller drops it;
ArviZ's own plots (trace, predictive check) come from pyplot.
:func:`save_figure` writes a PNG and closes the figure either way.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import DataError, ModelError
from . import arviz_io
from .convert import fit_name, to_arviz

#: Above this many training steps the loss curve's step axis is log-scaled.
LOG_STEPS_ABOVE = 1000


def new_axes(ax, figsize=(6.0, 4.0)):
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def plot_loss(fit, ax=None):
    """The training loss per step, with held-out losses as markers.

    Parameters
    ----------
    fit : ppgen.inference.Fit
        An SVI or MAP fit (``fit.losses`` non-empty).
    ax : matplotlib.axes.Axes, optional
        Draw here; default a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    losses = [float(v) for v in fit.losses]
    if not losses:
        raise ModelError(f"plot_loss: {fit_name(fit)} has no training losses "
                         "(only SVI and MAP fits record them)")
    fig, ax = new_axes(ax)
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, lw=1.0, label="training")
    if fit.val_losses:
        val_steps, val = zip(*fit.val_losses)
        ax.plot(val_steps, val, "o", ms=4, label="held-out")
        ax.legend()
    if len(losses) > LOG_STEPS_ABOVE:
        ax.set_xscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    ax.set_title(fit_name(fit))
    return fig


def plot_trace(fit, var_names=None):
    """ArviZ's trace plot (density and trace per chain) of the posterior.

    Parameters
    ----------
    fit : ppgen.inference.Fit
    var_names : list of str, optional
        Latent sites to show; default all.

    Returns
    -------
    matplotlib.figure.Figure
    """
    data = to_arviz(fit, posterior_predictive=False, log_likelihood=False)
    return arviz_io.trace_figure(data, var_names=var_names)


def _as_points(values, name):
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=float)
    if array.ndim == 0 or array.shape[0] == 0:
        raise DataError(f"{name}: expected an array of points, got shape {array.shape}")
    return array.reshape(array.shape[0], -1)


def plot_samples(samples, data, ax=None, dims=(0, 1)):
    """Model samples against the data.

    One-dimensional points are shown as overlaid density histograms on shared
    bins; points with two or more features as a scatter of features ``dims``
    (images and other arrays are flattened per point first).

    Parameters
    ----------
    samples, data : tensor or array-like, ``(n, ...)``
        Points drawn from the model (``fit.sample(n)``) and the observed points.
    ax : matplotlib.axes.Axes, optional
    dims : tuple of int
        The two features to scatter.

    Returns
    -------
    matplotlib.figure.Figure
    """
    samples, data = _as_points(samples, "samples"), _as_points(data, "data")
    if samples.shape[1] != data.shape[1]:
        raise DataError(f"samples have {samples.shape[1]} features per point but data have "
                        f"{data.shape[1]}")
    fig, ax = new_axes(ax)
    if data.shape[1] == 1:
        both = np.concatenate([samples[:, 0], data[:, 0]])
        bins = np.histogram_bin_edges(both, bins=int(np.clip(np.sqrt(both.size), 10, 60)))
        ax.hist(data[:, 0], bins=bins, density=True, alpha=0.5, label="data")
        ax.hist(samples[:, 0], bins=bins, density=True, alpha=0.5, label="model samples")
        ax.set_xlabel("x")
        ax.set_ylabel("density")
    else:
        i, j = dims
        for k in (i, j):
            if not (isinstance(k, (int, np.integer)) and -data.shape[1] <= k < data.shape[1]):
                raise DataError(f"dims={dims!r}: points have {data.shape[1]} features")
        ax.scatter(data[:, i], data[:, j], s=8, alpha=0.6, label="data")
        ax.scatter(samples[:, i], samples[:, j], s=8, alpha=0.6, marker="x", label="model samples")
        ax.set_xlabel(f"x[{i}]")
        ax.set_ylabel(f"x[{j}]")
    ax.legend()
    return fig


def plot_ppc(fit, ax=None, var_names=None):
    """ArviZ's posterior predictive check: replicated data against the data.

    Parameters
    ----------
    fit : ppgen.inference.Fit
    ax : matplotlib.axes.Axes, optional
        Draw here (one observed site only); default a new figure.
    var_names : list of str, optional
        Observed sites to show; default all.

    Returns
    -------
    matplotlib.figure.Figure
    """
    data = to_arviz(fit, log_likelihood=False)
    return arviz_io.ppc_figure(data, ax=ax, var_names=var_names)


def save_figure(fig, path, dpi=100):
    """Write ``fig`` to ``path`` as a PNG and close it.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : str or os.PathLike
        Parent folders are created.
    dpi : int

    Returns
    -------
    str
        The path written.
    """
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    try:
        fig.savefig(path, format="png", dpi=dpi)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path
