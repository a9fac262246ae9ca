"""Autoencoders: the point-mass-encoder end of the VAE family."""

from .autoencoder import Autoencoder, DenoisingAutoencoder

__all__ = ["Autoencoder", "DenoisingAutoencoder"]
