"""Variational autoencoders (Kingma and Welling, 2014): :class:`VAE` and :class:`ConditionalVAE`.

The model and the guide are

.. math::
    p(z_i) = N(0, I_L), \\qquad p(x_i \\mid z_i) = \\prod_d p(x_{id} \\mid \\eta_d(z_i)),
    \\qquad q(z_i \\mid x_i) = N(\\mu(x_i), \\mathrm{diag}\\, \\sigma^2(x_i)),

with MLP decoder :math:`\\eta` and MLP encoder :math:`(\\mu, \\sigma)` (the guide is
*amortized*: one network gives every datum's posterior). Training maximises the
ELBO :math:`E_q[\\log p(x \\mid z)] - \\beta\\, \\mathrm{KL}(q(z \\mid x) \\,\\|\\, p(z))`
by SVI (``ppgen.fit(vae, x, SVI(...))``); :math:`\\beta` scales the code site's log
densities in both model and guide (``poutine.scale``), :math:`\\beta = 1` being the
ordinary ELBO. A conditional VAE feeds a condition :math:`c_i` (a one-hot label or a
vector) to both networks: :math:`q(z \\mid x, c)`, :math:`p(x \\mid z, c)`.

``log_prob`` is not :math:`\\log p(x)`, which has no closed form, but the
importance-weighted bound (IWAE, Burda et al. 2016) with :math:`k` samples
:math:`z_j \\sim q(z \\mid x)`,

.. math::
    \\mathcal{L}_k(x) = \\log \\frac1k \\sum_{j=1}^k \\frac{p(x, z_j)}{q(z_j \\mid x)}
    \\;\\le\\; \\log p(x) \\quad\\text{in expectation},

which rises with :math:`k` to :math:`\\log p(x)`; ``log_prob_kind = "bound"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from torch.nn.functional import softplus
from tqdm.auto import tqdm

from ...errors import ModelError
from ...nn import MLP
from .base import ConditionalData, DeepLatentModel, positive_int, widths

#: floor of the encoder's standard deviations
MIN_SCALE = 1e-5
#: tensor elements (particles x points x data dimensions) per IWAE pass
IWAE_BUDGET = 2**22


class VAE(DeepLatentModel):
    """Variational autoencoder with MLP encoder and decoder.

    Parameters
    ----------
    data_dim : int
        Features per datum (flattened images: ``H * W``).
    latent_dim : int
        Size of the code :math:`z`.
    hidden : sequence of int
        Hidden widths of the encoder; the decoder uses them reversed. ``()``
        makes both linear.
    likelihood : {"bernoulli", "continuous_bernoulli", "gaussian"}
        :math:`p(x \\mid z)`; see :mod:`ppgen.models.vae.likelihoods`. Bernoulli
        needs 0/1 data, continuous Bernoulli values in [0, 1].
    beta : float
        Weight of the KL term in the training objective (:math:`\\beta`-VAE).
        ``log_prob`` and :meth:`elbo` always bound the :math:`\\beta = 1` model.
    activation : str
        Between hidden layers.
    noise_scale : float, optional
        Gaussian likelihood only: a fixed noise standard deviation; by default
        one is learned per dimension (floored at ``min_noise_scale``).
    num_classes, context_dim : int, optional
        Conditioning (see :class:`ConditionalVAE`).

    Examples
    --------
    >>> x = ppgen.datasets.load("digits", binarize=0.5)                  # doctest: +SKIP
    >>> vae = VAE(64, latent_dim=4)                                       # doctest: +SKIP
    >>> fit = ppgen.fit(vae, x, SVI(num_steps=3000, batch_size=100, lr=1e-3))  # doctest: +SKIP
    >>> vae.log_prob(x, num_samples=500).mean()     # IWAE bound, nats per image  # doctest: +SKIP
    """

    methods = ("svi",)
    log_prob_kind = "bound"

    def __init__(self, data_dim: int, latent_dim: int = 2, hidden: Sequence[int] = (256, 128),
                 likelihood: str = "bernoulli", beta: float = 1.0, *, activation: str = "relu",
                 noise_scale: float | None = None, min_noise_scale: float = 1e-2, num_classes: int | None = None,
                 context_dim: int | None = None) -> None:
        self._setup((positive_int("data_dim", data_dim),), latent_dim, likelihood, beta, activation,
                    dict(noise_scale=noise_scale, min_noise_scale=min_noise_scale, num_classes=num_classes,
                         context_dim=context_dim), hidden=widths("hidden", hidden))

    def _setup(self, event_shape, latent_dim, likelihood, beta, activation, options, **networks):
        """The constructor's common part; ``networks`` are the settings :meth:`_build_networks` reads."""
        DeepLatentModel.__init__(self, event_shape, latent_dim, likelihood, **options)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta > 0):
            raise ModelError(f"beta must be a positive number, got {beta!r}")
        self.beta = self.latent_weight = float(beta)
        self.activation = activation
        for key, value in networks.items():
            setattr(self, key, value)
        self.register_buffer("prior_loc", torch.zeros(self.latent_dim))
        self.register_buffer("prior_scale", torch.ones(self.latent_dim))
        self._build_networks()

    def _build_networks(self):
        try:
            self.encoder = MLP(self.data_dim + self.context_dim, 2 * self.latent_dim, self.hidden, self.activation)
            self.decoder = MLP(self.latent_dim + self.context_dim, self.data_dim, self.hidden[::-1], self.activation)
        except ValueError as exc:
            raise ModelError(str(exc)) from None

    def get_config(self):
        return {"data_dim": self.data_dim, **super().get_config(), "hidden": list(self.hidden),
                "beta": self.beta, "activation": self.activation}

    # ------------------------------------------------------------ networks
    def _encoder_output(self, x, context):
        flat = x.reshape(x.shape[:x.dim() - len(self.event_shape)] + (-1,))
        return self.encoder(self._join(flat, context))

    def _decoder_output(self, z, context):
        return self.decoder(self._join(z, context)).reshape(z.shape[:-1] + self.event_shape)

    def _posterior(self, x, context):
        loc, raw = self._encoder_output(x, context).split(self.latent_dim, -1)
        return loc, softplus(raw) + MIN_SCALE

    def prior(self, size):
        """:math:`N(0, I_L)` for ``size`` codes."""
        return dist.Normal(self.prior_loc, self.prior_scale).expand([size, self.latent_dim]).to_event(1)

    def _guide_code(self, x, context):
        loc, scale = self._posterior(x, context)
        with poutine.scale(scale=self.beta):
            return pyro.sample(self.latent_site, dist.Normal(loc, scale).to_event(1))

    # ------------------------------------------------------------ using the model
    def encode(self, data):
        """The approximate posterior :math:`q(z \\mid x)`: ``(mean, scale)``, each ``(N, latent_dim)``."""
        kw = self.data_kwargs(data)
        with torch.no_grad():
            return self._posterior(kw["data"], kw.get("condition"))

    def codes(self, data):
        """The posterior means :math:`\\mu(x)`, ``(N, latent_dim)``."""
        return self.encode(data)[0]

    def log_prob(self, data, num_samples=100, *, seed=0, progress=False):
        """The IWAE bound :math:`\\mathcal{L}_k(x_i)` per datum, in nats (a lower bound on
        :math:`\\log p(x_i)` in expectation, tighter for larger ``num_samples`` = :math:`k`).

        The draws come from a generator seeded with ``seed``, so the same call
        gives the same numbers. Data are scored in batches.
        """
        return super().log_prob(data, num_samples=num_samples, seed=seed, progress=progress)

    def _log_prob(self, x, context, num_samples=100, seed=0, progress=False):
        k = positive_int("num_samples", num_samples)
        generator = torch.Generator().manual_seed(int(seed))
        per_pass = max(1, IWAE_BUDGET // (k * self.data_dim))
        particles = max(1, IWAE_BUDGET // (self.data_dim * min(per_pass, x.shape[0])))
        out = []
        with torch.no_grad():
            for start in tqdm(range(0, x.shape[0], per_pass), disable=not progress, desc="IWAE", leave=False):
                xb = x[start:start + per_pass]
                cb = None if context is None else context[start:start + per_pass]
                loc, scale = self._posterior(xb, cb)
                weights = []
                for first in range(0, k, particles):
                    shape = (min(particles, k - first),) + loc.shape
                    eps = torch.randn(shape, generator=generator, dtype=loc.dtype).to(loc.device)
                    weights.append(self._log_weights(xb, cb, loc, scale, loc + scale * eps))
                out.append(torch.cat(weights).logsumexp(0) - math.log(k))
        return torch.cat(out)

    def _log_weights(self, x, context, loc, scale, z):
        """:math:`\\log p(x, z) - \\log q(z \\mid x)` for codes ``z`` ``(S, B, L)``."""
        log_lik = self.head.distribution(self._decoder_output(z, context)).to_event(len(self.event_shape)).log_prob(x)
        log_prior = self.prior(x.shape[0]).log_prob(z)
        log_q = dist.Normal(loc, scale).to_event(1).log_prob(z)
        return log_lik + log_prior - log_q

    def elbo(self, data, num_samples=1, *, seed=0):
        """The :math:`\\beta = 1` ELBO per datum in nats, with the KL term in closed form:
        :math:`\\frac1k \\sum_j \\log p(x \\mid z_j) - \\mathrm{KL}(q(z \\mid x) \\,\\|\\, N(0, I))`,
        :math:`z_j = \\mu + \\sigma \\varepsilon_j` with :math:`\\varepsilon_j` from a generator seeded
        with ``seed``."""
        k = positive_int("num_samples", num_samples)
        kw = self.data_kwargs(data)
        x, context = kw["data"], kw.get("condition")
        generator = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            loc, scale = self._posterior(x, context)
            eps = torch.randn((k,) + loc.shape, generator=generator, dtype=loc.dtype).to(loc.device)
            output = self._decoder_output(loc + scale * eps, context)
            log_lik = self.head.distribution(output).to_event(len(self.event_shape)).log_prob(x).mean(0)
            kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1 - 2 * scale.log()).sum(-1)
        return log_lik - kl

    # ------------------------------------------------------------ example
    @classmethod
    def example(cls, seed=0):
        """Sixteen-pixel binary patterns around two prototypes; a 2-d code, one hidden layer."""
        return cls(16, latent_dim=2, hidden=(16,)), prototype_patterns(seed)[0]


def prototype_patterns(seed, n=64):
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.tensor([[1.0] * 8 + [0.0] * 8, [0.0, 1.0] * 8])
    labels = torch.randint(2, (n,), generator=generator)
    flips = torch.rand(n, 16, generator=generator) < 0.1
    return (prototypes[labels] + flips).remainder(2), labels


class ConditionalVAE(VAE):
    """Conditional VAE: a label or condition vector enters both encoder and decoder.

    :math:`q(z \\mid x, c) = N(\\mu(x, c), \\mathrm{diag}\\,\\sigma^2(x, c))`,
    :math:`p(x \\mid z, c)`, :math:`p(z) = N(0, I)`. Data are ``(x, context)`` (a tuple,
    a dict ``{"x", "context"}`` or a :class:`~ppgen.models.vae.base.ConditionalData`);
    with ``num_classes`` the context is integer labels (one-hot inside), with
    ``context_dim`` real vectors. ``sample(n, context=...)`` draws for given conditions.

    Parameters
    ----------
    data_dim : int
    num_classes : int, optional
        Labels ``0 .. num_classes - 1`` as conditions.
    context_dim : int, optional
        Or real condition vectors of this size.
    latent_dim, hidden, likelihood, beta, activation, noise_scale, min_noise_scale
        As for :class:`VAE`.
    """

    def __init__(self, data_dim: int, num_classes: int | None = None, context_dim: int | None = None,
                 latent_dim: int = 2, hidden: Sequence[int] = (256, 128), likelihood: str = "bernoulli",
                 beta: float = 1.0, *, activation: str = "relu", noise_scale: float | None = None,
                 min_noise_scale: float = 1e-2) -> None:
        if num_classes is None and context_dim is None:
            raise ModelError("ConditionalVAE needs num_classes (labels) or context_dim (condition vectors)")
        super().__init__(data_dim, latent_dim, hidden, likelihood, beta, activation=activation,
                         noise_scale=noise_scale, min_noise_scale=min_noise_scale, num_classes=num_classes,
                         context_dim=context_dim)

    @classmethod
    def example(cls, seed=0):
        """The :class:`VAE` example's patterns with their prototype as the label."""
        x, labels = prototype_patterns(seed)
        return cls(16, num_classes=2, latent_dim=2, hidden=(16,)), ConditionalData(x, labels)
