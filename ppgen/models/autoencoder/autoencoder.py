"""Autoencoders as the degenerate member of the VAE family: :class:`Autoencoder`,
:class:`DenoisingAutoencoder`.

The guide puts a point mass on the encoder's code, :math:`q(z_i \\mid x_i) =
\\delta(z_i - f(x_i))`, and the model's code site carries *no density*
(``mask(False)``), so the ELBO that ``ppgen.fit(ae, x, MAP(solver="gradient"))``
maximises is the reconstruction log-likelihood alone,

.. math::
    \\sum_i \\log p(x_i \\mid z_i = f(x_i)) \\qquad \\text{(Gaussian: } -\\tfrac{1}{2}
    \\sum_{i,d} (x_{id} - \\hat x_{id})^2 / s_d^2 - N \\sum_d \\log s_d + \\text{const)},

the classical autoencoder's loss (squared error for a fixed Gaussian scale,
cross-entropy for Bernoulli pixels). A denoising autoencoder (Vincent et al.,
2008) encodes a corrupted copy :math:`\\tilde x_i` and reconstructs the clean
:math:`x_i`: :math:`\\sum_i E_{\\tilde x_i}[\\log p(x_i \\mid z_i = f(\\tilde x_i))]`.

``log_prob_kind = "none"``: a point-mass encoder and a code without a prior
define no marginal :math:`p(x) = \\int p(x \\mid z) p(z)\\,dz`, so ``log_prob``
raises :class:`~ppgen.errors.ModelError` (use a VAE for a bound).
``reconstruction_log_prob`` gives the training objective per datum instead.

``sample`` decodes codes drawn from a Gaussian fitted to the codes of the
training data: its mean and covariance are tracked as running moments of the
encoded minibatches during training (like batch-norm statistics, momentum
``code_momentum``), or set exactly by :meth:`Autoencoder.fit_code_distribution`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch

from ...errors import ModelError
from ...nn import MLP
from ..vae.base import DeepLatentModel, positive_int, widths
from ..vae.vae import prototype_patterns


class Autoencoder(DeepLatentModel):
    """Deterministic autoencoder trained by reconstruction likelihood (MAP with a delta guide).

    Parameters
    ----------
    data_dim : int
    latent_dim : int
        Size of the code.
    hidden : sequence of int
        Hidden widths of the encoder; the decoder uses them reversed.
    likelihood : {"gaussian", "bernoulli", "continuous_bernoulli"}
        :math:`p(x \\mid z)`; Gaussian with a learned per-dimension scale by
        default (``noise_scale=c`` fixes it, giving a squared-error loss).
    activation : str
    noise_scale, min_noise_scale : float
        See :mod:`ppgen.models.vae.likelihoods`.
    code_momentum : float
        Weight of each training minibatch in the running code moments that
        :meth:`sample` draws from.
    """

    methods = ("map",)
    log_prob_kind = "none"

    def __init__(self, data_dim: int, latent_dim: int = 2, hidden: Sequence[int] = (256, 128),
                 likelihood: str = "gaussian", *, activation: str = "relu", noise_scale: float | None = None,
                 min_noise_scale: float = 1e-2, code_momentum: float = 0.02) -> None:
        super().__init__((positive_int("data_dim", data_dim),), latent_dim, likelihood, noise_scale=noise_scale,
                         min_noise_scale=min_noise_scale)
        if not (isinstance(code_momentum, numbers.Real) and 0 < code_momentum <= 1):
            raise ModelError(f"code_momentum must be in (0, 1], got {code_momentum!r}")
        self.code_momentum = float(code_momentum)
        self.hidden, self.activation = widths("hidden", hidden), activation
        try:
            self.encoder = MLP(self.data_dim, self.latent_dim, self.hidden, activation)
            self.decoder = MLP(self.latent_dim, self.data_dim, self.hidden[::-1], activation)
        except ValueError as exc:
            raise ModelError(str(exc)) from None
        self.register_buffer("code_mean", torch.zeros(self.latent_dim))
        self.register_buffer("code_second_moment", torch.eye(self.latent_dim))

    def get_config(self):
        return {"data_dim": self.data_dim, **super().get_config(), "hidden": list(self.hidden),
                "activation": self.activation, "code_momentum": self.code_momentum}

    # ------------------------------------------------------------ networks
    def _encode(self, x):
        return self.encoder(x.reshape(x.shape[:x.dim() - len(self.event_shape)] + (-1,)))

    def _decoder_output(self, z, context):
        return self.decoder(z).reshape(z.shape[:-1] + self.event_shape)

    def corrupt(self, x):
        """The encoder's training input: ``x`` itself (see :class:`DenoisingAutoencoder`)."""
        return x

    def prior(self, size):
        """The Gaussian fitted to the training codes, *masked*: it generates codes for
        :meth:`sample` but adds nothing to the training objective."""
        cov = self.code_second_moment - torch.outer(self.code_mean, self.code_mean)
        eye = torch.eye(self.latent_dim, dtype=cov.dtype, device=cov.device)
        jitter = 1e-6 * (cov.diagonal().mean().abs() + 1)
        scale_tril = torch.linalg.cholesky(0.5 * (cov + cov.T) + jitter * eye)
        return dist.MultivariateNormal(self.code_mean, scale_tril=scale_tril).expand([size]).mask(False)

    def _guide_code(self, x, context):
        code = self._encode(self.corrupt(x))
        if torch.is_grad_enabled():  # a training step: track the clean codes' moments
            with torch.no_grad():
                clean = code if type(self).corrupt is Autoencoder.corrupt else self._encode(x)
                self._track_codes(clean.reshape(-1, self.latent_dim), self.code_momentum)
        return pyro.sample(self.latent_site, dist.Delta(code, event_dim=1))

    def _track_codes(self, codes, momentum):
        with torch.no_grad():
            mean = codes.mean(0)
            second = codes.T @ codes / codes.shape[0]
            self.code_mean.lerp_(mean.to(self.code_mean.dtype), momentum)
            self.code_second_moment.lerp_(second.to(self.code_mean.dtype), momentum)

    # ------------------------------------------------------------ using the model
    def encode(self, data):
        """The codes :math:`f(x_i)`, ``(N, latent_dim)``."""
        x = self.data_kwargs(data)["data"]
        with torch.no_grad():
            return self._encode(x)

    codes = encode

    def fit_code_distribution(self, data):
        """Set the code Gaussian that :meth:`sample` draws from to the mean and
        covariance of the codes of ``data``; returns ``self``."""
        self._track_codes(self.encode(data), 1.0)
        return self

    def reconstruction_log_prob(self, data):
        """:math:`\\log p(x_i \\mid z_i = f(x_i))` per datum, in nats: the training
        objective (with clean inputs), not a density of :math:`x`."""
        x = self.data_kwargs(data)["data"]
        with torch.no_grad():
            output = self._decoder_output(self._encode(x), None)
            return self.head.distribution(output).to_event(len(self.event_shape)).log_prob(x)

    def _log_prob(self, x, context, **kwargs):
        raise ModelError(
            f"{type(self).__name__} has log_prob_kind='none': a point-mass encoder and a code without a "
            "prior define no density p(x), so there is no log-likelihood to report; use "
            "reconstruction_log_prob(x) for the training objective, or a VAE for a bound on log p(x)")

    def initialize(self, data, generator=None, **kwargs):
        fresh = not bool(self.initialized)
        super().initialize(data, generator, **kwargs)
        if fresh:
            self.fit_code_distribution(data)

    @classmethod
    def example(cls, seed=0):
        """Sixteen-pixel patterns around two prototypes, Gaussian likelihood; a 2-d code."""
        return cls(16, latent_dim=2, hidden=(16,)), prototype_patterns(seed)[0]


class DenoisingAutoencoder(Autoencoder):
    """Autoencoder that reconstructs clean data from a corrupted copy (Vincent et al., 2008).

    Parameters
    ----------
    corruption : {"gaussian", "mask"}
        Add :math:`N(0, \\text{noise_level}^2)` noise to every input value, or set
        each value to 0 with probability ``noise_level``.
    noise_level : float
        The noise standard deviation, or the masking probability (< 1).
    data_dim, latent_dim, hidden, likelihood, activation, noise_scale, min_noise_scale, code_momentum
        As for :class:`Autoencoder`.

    The corruption is drawn afresh in every training step (torch's global
    random state, which ``ppgen.fit`` seeds); ``encode``, ``reconstruct`` and
    ``sample`` use clean inputs.
    """

    CORRUPTIONS = ("gaussian", "mask")

    def __init__(self, data_dim: int, latent_dim: int = 2, hidden: Sequence[int] = (256, 128),
                 likelihood: str = "gaussian", *, corruption: str = "gaussian", noise_level: float = 0.2,
                 activation: str = "relu", noise_scale: float | None = None, min_noise_scale: float = 1e-2,
                 code_momentum: float = 0.02) -> None:
        super().__init__(data_dim, latent_dim, hidden, likelihood, activation=activation, noise_scale=noise_scale,
                         min_noise_scale=min_noise_scale, code_momentum=code_momentum)
        if corruption not in self.CORRUPTIONS:
            raise ModelError(f"corruption={corruption!r}: choose one of {self.CORRUPTIONS}")
        limit = 1 if corruption == "mask" else float("inf")
        if isinstance(noise_level, bool) or not isinstance(noise_level, numbers.Real) or not 0 < noise_level < limit:
            raise ModelError(f"noise_level must be in (0, {limit}) for corruption={corruption!r}, got {noise_level!r}")
        self.corruption, self.noise_level = corruption, float(noise_level)

    def get_config(self):
        return {**super().get_config(), "corruption": self.corruption, "noise_level": self.noise_level}

    def corrupt(self, x):
        """A corrupted copy of ``x``: Gaussian noise, or values zeroed at random."""
        if self.corruption == "gaussian":
            return x + self.noise_level * torch.randn_like(x)
        return x * (torch.rand_like(x) >= self.noise_level).to(x.dtype)
