"""Restricted Boltzmann machines and their partition functions."""

from .rbm import BernoulliRBM, GaussianBernoulliRBM, LogPartition, RBMMarginal

__all__ = ["BernoulliRBM", "GaussianBernoulliRBM", "LogPartition", "RBMMarginal"]
