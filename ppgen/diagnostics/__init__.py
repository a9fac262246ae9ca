"""Diagnostics: fits as ArviZ data, summaries, LOO model comparison, and plots.

:func:`to_arviz` builds ArviZ data from a fit through :func:`from_dicts`, the one
function that knows the installed ArviZ version. ``summary``, ``loo`` and
``compare`` wrap ArviZ's; the plots return matplotlib figures.

This package never imports :mod:`ppgen.inference` (the inference layer imports
it, lazily); fits are used by their attributes. ArviZ and pyplot are imported
only when a function needs them.
"""

from .arviz_io import from_dicts
from .convert import to_arviz
from .plots import plot_loss, plot_ppc, plot_samples, plot_trace, save_figure
from .summary import compare, loo, summary

__all__ = ["from_dicts", "to_arviz", "summary", "loo", "compare", "plot_loss", "plot_trace",
           "plot_samples", "plot_ppc", "save_figure"]
