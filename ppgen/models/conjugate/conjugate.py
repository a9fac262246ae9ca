"""Conjugate reference models whose posterior is known in closed form.

Every inference method is tested against these: the closed form is the truth.

``ConjugateNormal``: Normal data with unknown mean and variance under the
Normal-Inverse-Gamma prior

.. math::
    \\sigma^2 \\sim \\mathrm{InvGamma}(a_0, b_0), \\quad
    \\mu \\mid \\sigma^2 \\sim N(m_0, \\sigma^2 / \\kappa_0), \\quad
    x_i \\sim N(\\mu, \\sigma^2),

whose posterior is NIG with :math:`\\kappa_n = \\kappa_0 + n`,
:math:`m_n = (\\kappa_0 m_0 + n \\bar x) / \\kappa_n`, :math:`a_n = a_0 + n/2`,
:math:`b_n = b_0 + \\tfrac12 \\sum (x_i - \\bar x)^2 + \\kappa_0 n (\\bar x - m_0)^2 / (2 \\kappa_n)`.

``BetaBernoulli``: :math:`p \\sim \\mathrm{Beta}(\\alpha, \\beta)`,
:math:`x_i \\sim \\mathrm{Bernoulli}(p)`, posterior
:math:`\\mathrm{Beta}(\\alpha + \\sum x, \\beta + n - \\sum x)`.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from ...data import as_tensor
from ...errors import DataError, ModelError
from ...model import GenerativeModel


def _positive(name, value):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ModelError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


class ConjugateNormal(GenerativeModel):
    """Normal data, unknown mean and variance, Normal-Inverse-Gamma prior.

    Sites: ``"variance"`` (:math:`\\sigma^2`), ``"mean"`` (:math:`\\mu`), ``"obs"``.
    """

    methods = ("svi", "map", "nuts", "hmc", "exact")

    def __init__(self, prior_mean: float = 0.0, prior_kappa: float = 1.0, prior_shape: float = 2.0,
                 prior_rate: float = 2.0) -> None:
        super().__init__()
        if not (isinstance(prior_mean, (int, float)) and math.isfinite(prior_mean)):
            raise ModelError(f"prior_mean must be a finite number, got {prior_mean!r}")
        self.register_buffer("prior_mean", torch.tensor(float(prior_mean)))
        for name, value in [("prior_kappa", prior_kappa), ("prior_shape", prior_shape),
                            ("prior_rate", prior_rate)]:
            self.register_buffer(name, torch.tensor(_positive(name, value)))
        self.point.set("mean", self.prior_mean)
        self.point.set("variance", self.prior_rate / (self.prior_shape + 1))  # prior mode

    def get_config(self):
        return {k: float(getattr(self, k)) for k in
                ("prior_mean", "prior_kappa", "prior_shape", "prior_rate")}

    def check_data(self, data, name="data"):
        data = as_tensor(data, name, dtype=self.dtype, device=self.device)
        if data.dim() == 2 and data.shape[-1] == 1:
            data = data.squeeze(-1)
        if data.dim() != 1:
            raise DataError(f"{name}: expected a 1-D array of numbers, got shape {tuple(data.shape)}")
        return data

    def model(self, data=None, *, n=None, subsample_size=None):
        variance = pyro.sample("variance", dist.InverseGamma(self.prior_shape, self.prior_rate))
        mean = pyro.sample("mean", dist.Normal(self.prior_mean, (variance / self.prior_kappa).sqrt()))
        size = data.shape[0] if data is not None else (n or 1)
        with pyro.plate("data", size, subsample_size=subsample_size) as idx:
            obs = data[idx] if data is not None else None
            return pyro.sample("obs", dist.Normal(mean, variance.sqrt()), obs=obs)

    def log_likelihood(self, data, params):
        mean = params["mean"].unsqueeze(-1)
        scale = params["variance"].sqrt().unsqueeze(-1)
        return dist.Normal(mean, scale).log_prob(data)

    def sample(self, n, params=None):
        params = params or self.point_params()
        return dist.Normal(params["mean"], params["variance"].sqrt()).sample((n,))

    def posterior_parameters(self, data):
        """The NIG posterior ``(m_n, kappa_n, a_n, b_n)``."""
        data = self.check_data(data)
        n = data.shape[0]
        xbar = data.mean()
        kappa_n = self.prior_kappa + n
        m_n = (self.prior_kappa * self.prior_mean + n * xbar) / kappa_n
        a_n = self.prior_shape + n / 2
        b_n = (self.prior_rate + 0.5 * ((data - xbar) ** 2).sum()
               + self.prior_kappa * n * (xbar - self.prior_mean) ** 2 / (2 * kappa_n))
        return m_n, kappa_n, a_n, b_n

    def exact_posterior(self, data):
        """Closed-form posterior marginals by site, and the log evidence in nats.

        Returns ``(marginals, joint_sampler, log_evidence)``: marginals are
        distributions (Student-t for the mean, inverse gamma for the variance);
        ``joint_sampler(k)`` draws ``k`` joint posterior samples.
        """
        m_n, kappa_n, a_n, b_n = self.posterior_parameters(data)
        n = self.check_data(data).shape[0]
        marginals = {
            "variance": dist.InverseGamma(a_n, b_n),
            "mean": dist.StudentT(2 * a_n, m_n, (b_n / (a_n * kappa_n)).sqrt()),
        }

        def joint_sampler(k):
            variance = dist.InverseGamma(a_n, b_n).sample((k,))
            return {"variance": variance,
                    "mean": dist.Normal(m_n, (variance / kappa_n).sqrt()).sample()}

        log_evidence = (torch.lgamma(a_n) - torch.lgamma(self.prior_shape)
                        + self.prior_shape * self.prior_rate.log() - a_n * b_n.log()
                        + 0.5 * (self.prior_kappa.log() - kappa_n.log())
                        - 0.5 * n * math.log(2 * math.pi))
        return marginals, joint_sampler, log_evidence

    @classmethod
    def example(cls, seed=0):
        gen = torch.Generator().manual_seed(seed)
        return cls(), 1.5 + 2.0 * torch.randn(50, generator=gen)


class BetaBernoulli(GenerativeModel):
    """Coin flips with a Beta prior on the success probability (site ``"p"``)."""

    methods = ("svi", "map", "nuts", "hmc", "exact")

    def __init__(self, alpha: float = 1.0, beta: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("alpha", torch.tensor(_positive("alpha", alpha)))
        self.register_buffer("beta", torch.tensor(_positive("beta", beta)))
        self.point.set("p", self.alpha / (self.alpha + self.beta))

    def get_config(self):
        return {"alpha": float(self.alpha), "beta": float(self.beta)}

    def check_data(self, data, name="data"):
        data = as_tensor(data, name, dtype=self.dtype, device=self.device)
        if data.dim() == 2 and data.shape[-1] == 1:
            data = data.squeeze(-1)
        if data.dim() != 1:
            raise DataError(f"{name}: expected a 1-D array of 0/1 values, got shape {tuple(data.shape)}")
        if not bool(((data == 0) | (data == 1)).all()):
            raise DataError(f"{name}: Bernoulli data must be 0 or 1")
        return data.to(self.dtype)

    def model(self, data=None, *, n=None, subsample_size=None):
        p = pyro.sample("p", dist.Beta(self.alpha, self.beta))
        size = data.shape[0] if data is not None else (n or 1)
        with pyro.plate("data", size, subsample_size=subsample_size) as idx:
            obs = data[idx] if data is not None else None
            return pyro.sample("obs", dist.Bernoulli(p), obs=obs)

    def log_likelihood(self, data, params):
        return dist.Bernoulli(params["p"].unsqueeze(-1)).log_prob(data)

    def sample(self, n, params=None):
        params = params or self.point_params()
        return dist.Bernoulli(params["p"]).sample((n,))

    def exact_posterior(self, data):
        data = self.check_data(data)
        heads, n = data.sum(), data.shape[0]
        post = dist.Beta(self.alpha + heads, self.beta + n - heads)
        log_evidence = (torch.lgamma(self.alpha + heads) + torch.lgamma(self.beta + n - heads)
                        - torch.lgamma(self.alpha + self.beta + n)
                        - torch.lgamma(self.alpha) - torch.lgamma(self.beta)
                        + torch.lgamma(self.alpha + self.beta))
        return {"p": post}, lambda k: {"p": post.sample((k,))}, log_evidence

    @classmethod
    def example(cls, seed=0):
        gen = torch.Generator().manual_seed(seed)
        return cls(2.0, 2.0), (torch.rand(40, generator=gen) < 0.3).to(torch.get_default_dtype())
