"""Conjugate reference models with closed-form posteriors."""

from .conjugate import BetaBernoulli, ConjugateNormal

__all__ = ["ConjugateNormal", "BetaBernoulli"]
