"""Normalizing flows as density models."""

from .flows import MAF, NeuralSplineFlow, NormalizingFlow, RealNVP

__all__ = ["RealNVP", "MAF", "NeuralSplineFlow", "NormalizingFlow"]
