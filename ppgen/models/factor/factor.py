"""Linear-Gaussian latent factor models: probabilistic PCA and factor analysis.

Both explain ``D``-dimensional data by ``L < D`` latent factors,

.. math::
    x = \\mu + W z + \\varepsilon, \\quad z \\sim N(0, I_L), \\quad
    \\varepsilon \\sim N(0, \\Psi),

with :math:`\\Psi = \\sigma^2 I` for :class:`PPCA` and
:math:`\\Psi = \\mathrm{diag}(\\psi_1, \\dots, \\psi_D)` for
:class:`FactorAnalysis`. The latent ``z`` is integrated out in closed form,
:math:`x \\sim N(\\mu, W W^\\top + \\Psi)`, so ``log_prob`` is exact and the Pyro
program has only the global sites ``"loc"`` (:math:`\\mu`), ``"weight"``
(:math:`W`) and ``"noise"`` (the noise *standard deviations*).
"""

from __future__ import annotations

import logging
import math
import numbers

import pyro
import pyro.distributions as dist
import torch

from ...data import as_tensor, check_second_moments
from ...errors import ModelError
from ...model import GenerativeModel

log = logging.getLogger("ppgen")


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ModelError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _positive_float(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
        math.isfinite(value) and value > 0
    ):
        raise ModelError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


class _LinearGaussian(GenerativeModel):
    """Shared code of :class:`PPCA` and :class:`FactorAnalysis`.

    Subclasses define :meth:`_noise_prior` and :meth:`_noise_variances`.
    """

    methods = ("svi", "map", "nuts", "hmc")
    log_prob_kind = "exact"

    def __init__(self, latent_dim: int, dim: int | None = None, *, loc_scale: float = 10.0,
                 weight_scale: float = 1.0, noise_scale: float = 1.0) -> None:
        super().__init__()
        self.latent_dim = _positive_int("latent_dim", latent_dim)
        self.dim = None
        for name, value in [("loc_scale", loc_scale), ("weight_scale", weight_scale),
                            ("noise_scale", noise_scale)]:
            self.register_buffer(f"prior_{name}", torch.tensor(_positive_float(name, value)))
        if dim is not None:
            self._ensure_dim(dim)

    def _ensure_dim(self, dim):
        """Fix the data dimension ``D`` (once) and register the prior means."""
        if self.dim is not None:
            return
        dim = _positive_int("dim", dim)
        if self.latent_dim >= dim:
            raise ModelError(
                f"latent_dim must be smaller than dim, got latent_dim={self.latent_dim}, dim={dim}"
            )
        self.dim = dim
        if isinstance(self, FactorAnalysis) and (dim - self.latent_dim) ** 2 < dim + self.latent_dim:
            # Ledermann bound: more parameters than covariances, so W and Psi are not identified.
            log.warning("FactorAnalysis(latent_dim=%d) on %d features is not identified "
                        "((D - L)^2 < D + L); expect poor NUTS mixing", self.latent_dim, dim)
        like = self.prior_loc_scale
        self.register_buffer("prior_loc", like.new_zeros(dim))
        self.register_buffer("prior_weight", like.new_zeros(dim, self.latent_dim))

    # ------------------------------------------------------------ protocol
    def get_config(self):
        return {"latent_dim": self.latent_dim, "dim": self.dim,
                "loc_scale": float(self.prior_loc_scale),
                "weight_scale": float(self.prior_weight_scale),
                "noise_scale": float(self.prior_noise_scale)}

    def arviz_dims(self):
        return {**super().arviz_dims(), "loc": ["feature"], "weight": ["feature", "latent"], "noise": ["feature"]}

    def global_sites(self):
        return ("loc", "weight", "noise")

    def check_data(self, data, name="data"):
        """Return ``data`` as an ``(N, D)`` tensor; sets ``dim`` on first use."""
        data = check_second_moments(as_tensor(data, name, dtype=self.dtype, device=self.device, ndim=2,
                                              dim=self.dim), name)
        self._ensure_dim(data.shape[-1])
        return data

    def model(self, data=None, *, n=None, subsample_size=None):
        if data is not None:
            data = self.check_data(data)
        if self.dim is None:
            raise ModelError(f"{type(self).__name__}: dim is unknown; pass dim= or data")
        loc = pyro.sample("loc", dist.Normal(self.prior_loc, self.prior_loc_scale).to_event(1))
        weight = pyro.sample("weight", dist.Normal(self.prior_weight, self.prior_weight_scale)
                             .to_event(2))
        noise = pyro.sample("noise", self._noise_prior())
        obs_dist = dist.LowRankMultivariateNormal(loc, weight, self._noise_variances(noise))
        size = data.shape[0] if data is not None else (n or 1)
        with pyro.plate("data", size, subsample_size=subsample_size, device=self.device) as idx:
            obs = data[idx] if data is not None else None
            return pyro.sample("obs", obs_dist, obs=obs)

    def log_likelihood(self, data, params):
        """Per-datum :math:`\\log N(x_i; \\mu_s, W_s W_s^\\top + \\Psi_s)`, shape ``(S, N)``.

        ``params`` holds ``loc (S, D)``, ``weight (S, D, L)`` and ``noise``
        (``(S,)`` for PPCA, ``(S, D)`` for factor analysis).
        """
        data = self.check_data(data)
        params = self._as_params(params)
        variances = self._noise_variances(params["noise"])
        marginal = dist.LowRankMultivariateNormal(params["loc"].unsqueeze(-2),
                                                  params["weight"].unsqueeze(-3),
                                                  variances.unsqueeze(-2))
        return marginal.log_prob(data)

    def sample(self, n, params=None):
        """``n`` new points, shape ``(n, D)``, at the point (or given single-draw) params."""
        params = self._as_params(params if params is not None else self.point_params())
        loc, weight = params["loc"], params["weight"]
        like = {"dtype": loc.dtype, "device": loc.device}
        z = torch.randn(n, weight.shape[-1], **like)
        eps = torch.randn(n, loc.shape[-1], **like) * self._noise_variances(params["noise"]).sqrt()
        return loc + z @ weight.T + eps

    def initialize(self, data, generator=None):
        """Set the point params from the PCA of ``data`` (deterministic; ``generator`` unused).

        ``W = U_L (\\Lambda_L - \\sigma^2 I)^{1/2}`` with :math:`\\sigma^2` the mean
        discarded eigenvalue of the (1/N) sample covariance: the PPCA maximum
        likelihood solution (Tipping & Bishop, 1999).
        """
        data = self.check_data(data)
        x = data.double()
        loc = x.mean(0)
        centred = x - loc
        cov = centred.T @ centred / x.shape[0]
        eigvals, eigvecs = torch.linalg.eigh(cov)
        eigvals, eigvecs = eigvals.flip(0).clamp(min=0), eigvecs.flip(1)
        top = eigvecs[:, : self.latent_dim]
        top = top * torch.sign(top[top.abs().argmax(0), torch.arange(self.latent_dim)])
        sigma2 = eigvals[self.latent_dim:].mean().clamp(min=1e-6)
        weight = top * (eigvals[: self.latent_dim] - sigma2).clamp(min=0).sqrt()
        residual = (cov - weight @ weight.T).diagonal().clamp(min=1e-6)
        noise = self._initial_noise(sigma2, residual)
        self.set_params({k: v.to(dtype=self.dtype) for k, v in
                         {"loc": loc, "weight": weight, "noise": noise}.items()})
        return self

    # ------------------------------------------------------------ latents
    def posterior_latents(self, data, params=None):
        """The posterior :math:`p(z_i \\mid x_i)`: a MultivariateNormal, batch ``(N,)``, event ``(L,)``.

        With :math:`M = W^\\top \\Psi^{-1} W + I`: mean
        :math:`M^{-1} W^\\top \\Psi^{-1} (x - \\mu)`, covariance :math:`M^{-1}`.
        """
        data = self.check_data(data)
        params = self._as_params(params if params is not None else self.point_params())
        loc, weight = params["loc"], params["weight"]
        scaled = weight / self._noise_variances(params["noise"]).unsqueeze(-1)  # Psi^-1 W
        precision = weight.T @ scaled + torch.eye(self.latent_dim, dtype=loc.dtype, device=loc.device)
        covariance = torch.cholesky_inverse(torch.linalg.cholesky(precision))
        mean = (data - loc) @ scaled @ covariance
        scale_tril = torch.linalg.cholesky(covariance).expand(data.shape[0], -1, -1)
        return dist.MultivariateNormal(mean, scale_tril=scale_tril)

    def transform(self, data):
        """Posterior means of the latent coordinates, shape ``(N, L)`` (scikit-learn's name)."""
        return self.posterior_latents(data).mean

    @classmethod
    def example(cls, seed=0):
        """A model with ``dim=5, latent_dim=2`` and 200 points from a known one."""
        gen = torch.Generator().manual_seed(seed)
        dim, latent_dim, n = 5, 2, 200
        loc = torch.randn(dim, generator=gen)
        weight = 2.0 * torch.randn(dim, latent_dim, generator=gen)
        noise = 0.2 + 0.5 * torch.rand(dim, generator=gen)
        z = torch.randn(n, latent_dim, generator=gen)
        data = loc + z @ weight.T + noise * torch.randn(n, dim, generator=gen)
        return cls(latent_dim, dim), data.float()

    # ------------------------------------------------------------ helpers
    def _as_params(self, params):
        missing = [k for k in self.global_sites() if k not in params]
        if missing:
            raise ModelError(f"{type(self).__name__}: params lack the sites {missing}")
        return {k: torch.as_tensor(params[k], dtype=self.dtype, device=self.device)
                for k in self.global_sites()}


class PPCA(_LinearGaussian):
    """Probabilistic PCA: isotropic noise :math:`\\Psi = \\sigma^2 I` (Tipping & Bishop, 1999).

    Parameters
    ----------
    latent_dim : int
        Number of latent factors ``L``.
    dim : int, optional
        Data dimension ``D``; read from the data on first use when None.
    loc_scale, weight_scale, noise_scale : float
        Prior scales: ``loc ~ N(0, loc_scale)``, ``weight ~ N(0, weight_scale)``
        elementwise, the noise standard deviation ``sigma ~ HalfNormal(noise_scale)``.
    """

    def _noise_prior(self):
        return dist.HalfNormal(self.prior_noise_scale)

    def _noise_variances(self, noise):
        return (noise ** 2).unsqueeze(-1).expand(*noise.shape, self.dim)

    def _initial_noise(self, sigma2, residual):
        return sigma2.sqrt()


class FactorAnalysis(_LinearGaussian):
    """Factor analysis: per-feature noise :math:`\\Psi = \\mathrm{diag}(\\psi_1, \\dots, \\psi_D)`.

    Parameters
    ----------
    latent_dim : int
        Number of latent factors ``L``.
    dim : int, optional
        Data dimension ``D``; read from the data on first use when None.
    loc_scale, weight_scale, noise_scale : float
        Prior scales: ``loc ~ N(0, loc_scale)``, ``weight ~ N(0, weight_scale)``
        elementwise, each noise standard deviation ``sqrt(psi_d) ~ HalfNormal(noise_scale)``.
    """

    def _noise_prior(self):
        return dist.HalfNormal(self.prior_noise_scale).expand([self.dim]).to_event(1)

    def _noise_variances(self, noise):
        return noise ** 2

    def _initial_noise(self, sigma2, residual):
        return residual.sqrt()
