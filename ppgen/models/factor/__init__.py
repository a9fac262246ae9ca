"""Linear-Gaussian factor models: probabilistic PCA and factor analysis."""

from .factor import PPCA, FactorAnalysis

__all__ = ["PPCA", "FactorAnalysis"]
