"""Variational autoencoders: MLP, conditional and convolutional."""

from .base import DeepLatentModel
from .conv_vae import ConvVAE
from .vae import VAE, ConditionalVAE

__all__ = ["VAE", "ConditionalVAE", "ConvVAE", "DeepLatentModel"]
