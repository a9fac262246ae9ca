"""Bayesian Gaussian mixtures, assignments summed out."""

from .gaussian_mixture import GaussianMixture

__all__ = ["GaussianMixture"]
