"""Contrastive divergence (CD-k) and persistent CD for energy-based models.

To be completed: see the RBM work of issue 4.
"""

from __future__ import annotations


def run_contrastive(program, method, *, seed, progress, fingerprint):
    """Train ``program.generative`` by CD; return ``{"losses": [...], "seconds": float}``."""
    raise NotImplementedError("ContrastiveDivergence is not implemented yet")
