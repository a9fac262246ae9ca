"""A variational autoencoder for images: :class:`ConvVAE`.

The same model and guide as :class:`~ppgen.models.vae.VAE` (see there for the
ELBO, :math:`\\beta` and the IWAE ``log_prob``), with the MLPs replaced by the
convolutional networks of :mod:`ppgen.nn.conv`: the encoder maps an image
``(C, H, W)`` to :math:`(\\mu, \\sigma)`, the decoder a code back to per-pixel
likelihood parameters.

Data are images ``(N, C, H, W)``; ``(N, H, W)`` (one channel) and flattened
``(N, C*H*W)`` rows are accepted and read in that order. Everything the model
returns (``sample``, ``decode``, ``interpolate``) is ``(n, C, H, W)``;
``reconstruct`` keeps the layout it was given.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...errors import DataError, ModelError
from ...nn.conv import ConvDecoder, ConvEncoder
from .base import DeepLatentModel, widths
from .vae import VAE


class ConvVAE(VAE):
    """Variational autoencoder with convolutional encoder and decoder, for images.

    Parameters
    ----------
    image_shape : (C, H, W)
        E.g. ``(1, 8, 8)`` for the embedded digits, ``(1, 28, 28)`` for MNIST.
    latent_dim : int
    channels : sequence of int
        Feature maps of the encoder's stride-2 convolutions (each halves the
        image); the decoder mirrors them.
    likelihood, beta, activation, noise_scale, min_noise_scale
        As for :class:`~ppgen.models.vae.VAE`.
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 16,
                 channels: Sequence[int] = (32, 64), likelihood: str = "bernoulli", beta: float = 1.0, *,
                 activation: str = "relu", noise_scale: float | None = None, min_noise_scale: float = 1e-2) -> None:
        try:
            image_shape = tuple(int(s) for s in image_shape)
        except (TypeError, ValueError):
            raise ModelError(f"image_shape must be (channels, height, width), got {image_shape!r}") from None
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ModelError(f"image_shape must be (channels, height, width) of positive sizes, got {image_shape}")
        channels = widths("channels", channels)
        if not channels:
            raise ModelError("channels must name at least one convolution")
        self._setup(image_shape, latent_dim, likelihood, beta, activation,
                    dict(noise_scale=noise_scale, min_noise_scale=min_noise_scale), channels=channels)

    def _build_networks(self):
        try:
            self.encoder = ConvEncoder(self.event_shape, 2 * self.latent_dim, self.channels, self.context_dim,
                                       self.activation)
            self.decoder = ConvDecoder(self.latent_dim + self.context_dim, self.event_shape, self.channels,
                                       self.activation)
        except ValueError as exc:
            raise ModelError(str(exc)) from None

    def get_config(self):
        return {"image_shape": list(self.event_shape), **DeepLatentModel.get_config(self),
                "channels": list(self.channels), "beta": self.beta, "activation": self.activation}

    def _to_layout(self, x, name):
        c, h, w = self.event_shape
        if x.dim() == 2 and x.shape[1] == c * h * w:
            return x.reshape(-1, c, h, w)
        if x.dim() == 3 and c == 1 and tuple(x.shape[1:]) == (h, w):
            return x.unsqueeze(1)
        if x.dim() == 4 and tuple(x.shape[1:]) == (c, h, w):
            return x
        raise DataError(f"{name}: expected images of shape (N, {c}, {h}, {w})"
                        f"{f', (N, {h}, {w})' if c == 1 else ''} or (N, {c * h * w}), got {tuple(x.shape)}")

    def _encoder_output(self, x, context):
        return self.encoder(x, context)

    def _decoder_output(self, z, context):
        return self.decoder(self._join(z, context))

    @classmethod
    def example(cls, seed=0):
        """Sixty-four 8x8 images: a bright bar, horizontal or vertical, with 10% of pixels flipped."""
        generator = torch.Generator().manual_seed(seed)
        bars = torch.zeros(2, 8, 8)
        bars[0, 3:5, :] = 1
        bars[1, :, 3:5] = 1
        labels = torch.randint(2, (64,), generator=generator)
        flips = torch.rand(64, 8, 8, generator=generator) < 0.1
        images = (bars[labels] + flips).remainder(2).unsqueeze(1)
        return cls((1, 8, 8), latent_dim=2, channels=(4, 8)), images
