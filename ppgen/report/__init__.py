"""The demo report (``ppgen demo``): every registered family fitted with each of its
methods on embedded data, side by side; see :func:`run_demo`.

``recipes`` says what each family is fitted on and how, ``demo`` runs the fits
(in worker processes) and their plots, ``markdown`` writes the report's text.
"""

from .demo import DemoResult, default_jobs, point_log_likelihood, quiet, run_demo
from .recipes import SETTINGS

__all__ = ["run_demo", "DemoResult", "default_jobs", "point_log_likelihood", "quiet", "SETTINGS"]
