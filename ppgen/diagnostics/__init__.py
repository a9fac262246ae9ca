"""Diagnostics: fits as ArviZ data, summaries, LOO model comparison, and plots.

:func:`to_arviz` builds ArviZ data from a fit through :func:`from_dicts`, the one
function that knows the installed ArviZ version. ``summary``, ``loo`` and
``compare`` wrap ArviZ's; the plots return matplotlib figures.

This package never imports :mod:`ppgen.inference` (the inference layer imports
it, lazily); fits are used by their attributes. ArviZ and pyplot are imported
only when a function needs them. For density models: ``dataset_log_likelihood``
(mean log-likelihood or IWAE bound with its standard error) and ``bits_per_dim``;
for image models: ``image_grid``, ``reconstruction_grid`` and ``latent_plot``.
Sample quality: ``mode_coverage`` (PacGAN's modes captured, high-quality share
and KL on the 2-D mixtures), ``mmd``, ``energy_distance``, ``sliced_wasserstein``
and ``frechet_distance`` (on data or on a shipped feature network's features).
"""

from .arviz_io import from_dicts
from .convert import to_arviz
from .density import LogLikelihood, bits_per_dim, dataset_log_likelihood
from .distances import energy_distance, median_bandwidth, mmd, sliced_wasserstein
from .features import frechet_distance, gaussian_frechet_distance, load_feature_network
from .images import image_grid, latent_plot, reconstruction_grid
from .plots import plot_loss, plot_ppc, plot_samples, plot_trace, save_figure
from .psis import ImportanceDiagnostic, psis_khat
from .quality import ModeCoverage, mode_coverage
from .summary import compare, loo, summary

__all__ = ["from_dicts", "to_arviz", "summary", "loo", "compare", "plot_loss", "plot_trace",
           "plot_samples", "plot_ppc", "save_figure", "dataset_log_likelihood", "LogLikelihood",
           "bits_per_dim", "image_grid", "reconstruction_grid", "latent_plot", "mode_coverage",
           "ModeCoverage",
           "psis_khat", "ImportanceDiagnostic", "mmd", "median_bandwidth", "energy_distance", "sliced_wasserstein",
           "frechet_distance", "gaussian_frechet_distance", "load_feature_network"]
