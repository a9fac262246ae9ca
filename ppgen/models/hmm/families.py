"""The HMM families: the emission models on top of :class:`HiddenMarkovModel`.

:class:`CategoricalHMM` (symbols), :class:`GaussianHMM` (diagonal or full
precision), :class:`PoissonHMM` (counts) and :class:`BernoulliHMM` (binary
vectors), each registered in :mod:`ppgen.registry`. Each defines its
emission sites and priors, data checks, emission log-density, sampler, MAP
M-step, random start and an ``example``.
"""

from __future__ import annotations

import math
from typing import Any

import pyro.distributions as dist
import torch
from torch.distributions import constraints

from ... import registry
from ...data import check_second_moments
from ...errors import ModelError
from . import algorithms
from .base import HiddenMarkovModel, positive_number
from .data import first_bad
from .em import dirichlet1, floor_normalize, kmeans


def _safe_log(p):
    return p.clamp_min(torch.finfo(p.dtype).tiny).log()


@registry.register
class CategoricalHMM(HiddenMarkovModel):
    """An HMM over symbols ``0..n_symbols-1``.

    Sites: ``initial`` (K,), ``transition`` (K, K), ``emission`` (K, V) rows ~
    :math:`\\mathrm{Dir}(a_e 1_V)`, ``obs``.
    """

    integer_data = True
    emission_sites = ("emission",)
    emission_dims = {"emission": ["state", "symbol"]}

    def __init__(self, n_states: int, n_symbols: int, *, emission_concentration: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(n_states, **kwargs)
        if not (isinstance(n_symbols, int) and n_symbols >= 1):
            raise ModelError(f"n_symbols must be a positive integer, got {n_symbols!r}")
        self.n_symbols = n_symbols
        self.step_support = constraints.integer_interval(0, n_symbols - 1)
        self.register_buffer("emission_concentration",
                             torch.tensor(positive_number("emission_concentration", emission_concentration)))

    def get_config(self):
        return {**self._base_config(), "n_symbols": self.n_symbols,
                "emission_concentration": float(self.emission_concentration)}

    def _check_values(self, values, mask, name):
        self._integer_check(values, mask, name, f"symbols must be integers in 0..{self.n_symbols - 1}")
        first_bad(((values < 0) | (values > self.n_symbols - 1)) & mask, name,
                   f"holds symbols outside 0..{self.n_symbols - 1}")

    def _emission_priors(self):
        return {"emission": dist.Dirichlet(self.emission_concentration.expand(self.n_symbols))}

    def _emission_log_prob(self, padded, params):
        log_e = params["emission"].log().transpose(-1, -2)  # (lead, V, K)
        return log_e[..., padded, :]

    def _sample_emissions(self, states, params, generator):
        cdf = params["emission"].cumsum(-1)[states]  # (n, T, V)
        u = algorithms.uniform(states.shape + (1,), cdf.dtype, cdf.device, generator)
        return torch.searchsorted(cdf, u * cdf[..., -1:], right=True).squeeze(-1).clamp_max(self.n_symbols - 1)

    def _emission_m_step(self, x, resp, params):
        counts = torch.zeros(resp.shape[:-2] + (self.n_states, self.n_symbols), dtype=resp.dtype,
                             device=resp.device)
        counts.index_add_(-1, x, resp.mT)  # (R, K, V): expected symbol counts per state
        counts = (counts + self.emission_concentration - 1).clamp_min(0)
        empty = counts.sum(-1, keepdim=True) <= 0
        return {"emission": floor_normalize(torch.where(empty, params["emission"], counts))}

    def _emission_start(self, x, generator):
        freq = torch.bincount(x, minlength=self.n_symbols).to(self.dtype) / x.shape[0]
        noise = dirichlet1((self.n_states, self.n_symbols), generator, self.dtype, self.device)
        return {"emission": floor_normalize((freq + 1.0 / self.n_symbols) * noise)}

    @classmethod
    def example(cls, seed=0):
        model = cls(2, 4)
        params = {"initial": torch.tensor([0.7, 0.3]),
                  "transition": torch.tensor([[0.9, 0.1], [0.2, 0.8]]),
                  "emission": torch.tensor([[0.6, 0.3, 0.05, 0.05], [0.05, 0.1, 0.35, 0.5]])}
        return model, cls._example_data(model, params, seed)


@registry.register
class GaussianHMM(HiddenMarkovModel):
    """An HMM with Gaussian emissions in ``dim`` dimensions, diagonal or full precision.

    Sites: ``initial``, ``transition``, ``locs`` (K, D) ~ :math:`N(m_0, s_0^2)`,
    ``precision`` (K, D) ~ :math:`\\mathrm{Gamma}(\\nu_0/2, \\psi/2)` (diag) or
    (K, D, D) ~ :math:`\\mathrm{Wishart}(\\nu_0, \\psi^{-1} I)` (full), ``obs``.
    ``loc_mean``, ``loc_scale`` are :math:`m_0, s_0`; ``precision_df`` :math:`\\nu_0`
    (default ``dim + 1`` full, 2 diag); ``precision_rate`` :math:`\\psi`, a ridge on
    the covariances of MAP estimates.
    """

    emission_sites = ("locs", "precision")
    emission_dims = {"locs": ["state", "feature"], "precision": ["state", "feature", "feature_bis"]}

    def __init__(self, n_states: int, dim: int, covariance: str = "diag", *, loc_mean: float = 0.0,
                 loc_scale: float = 100.0, precision_df: float | None = None, precision_rate: float = 1e-3,
                 **kwargs: Any) -> None:
        super().__init__(n_states, **kwargs)
        if not (isinstance(dim, int) and dim >= 1):
            raise ModelError(f"dim must be a positive integer, got {dim!r}")
        if covariance not in ("full", "diag"):
            raise ModelError(f"covariance must be 'full' or 'diag', got {covariance!r}")
        self.dim, self.covariance = dim, covariance
        self.step_shape = (dim,)
        default_df = dim + 1 if covariance == "full" else 2.0
        precision_df = float(default_df if precision_df is None else precision_df)
        minimum_df = dim - 1 if covariance == "full" else 0
        if precision_df <= minimum_df:
            raise ModelError(f"precision_df must exceed {minimum_df}, got {precision_df}")
        if not (isinstance(loc_mean, (int, float)) and math.isfinite(loc_mean)):
            raise ModelError(f"loc_mean must be a finite number, got {loc_mean!r}")
        self.register_buffer("loc_mean", torch.tensor(float(loc_mean)))
        self.register_buffer("loc_scale", torch.tensor(positive_number("loc_scale", loc_scale)))
        self.register_buffer("precision_df", torch.tensor(precision_df))
        self.register_buffer("precision_rate", torch.tensor(positive_number("precision_rate", precision_rate)))

    def _check_values(self, values, mask, name):
        check_second_moments(values[mask], name)

    def get_config(self):
        return {**self._base_config(), "dim": self.dim, "covariance": self.covariance,
                "loc_mean": float(self.loc_mean), "loc_scale": float(self.loc_scale),
                "precision_df": float(self.precision_df), "precision_rate": float(self.precision_rate)}

    def _emission_priors(self):
        D = self.dim
        locs = dist.Normal(self.loc_mean, self.loc_scale).expand([D]).to_event(1)
        if self.covariance == "full":
            eye = torch.eye(D, dtype=self.dtype, device=self.device)
            precision = dist.Wishart(self.precision_df, scale_tril=eye * self.precision_rate.rsqrt())
        else:
            precision = dist.Gamma(self.precision_df / 2, self.precision_rate / 2).expand([D]).to_event(1)
        return {"locs": locs, "precision": precision}

    def _emission_log_prob(self, padded, params):
        locs, precision = params["locs"], params["precision"]  # (lead, K, D), (lead, K, D[, D])
        lead = locs.shape[:-2]
        B, T, D = padded.shape
        x = padded.reshape(B * T, D)
        diff = x.unsqueeze(-3) - locs.unsqueeze(-2)  # (lead, K, N, D)
        if self.covariance == "full":
            tril = torch.linalg.cholesky(precision)  # Lambda = L L^T
            half_logdet = tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (lead, K)
            maha = (diff @ tril).pow(2).sum(-1)  # ||L^T (x - mu)||^2, (lead, K, N)
        else:
            half_logdet = 0.5 * precision.log().sum(-1)
            maha = ((diff * diff) @ precision.unsqueeze(-1)).squeeze(-1)  # sum_d lambda_d (x_d - mu_d)^2
        log_p = half_logdet.unsqueeze(-1) - 0.5 * maha - 0.5 * D * math.log(2 * math.pi)
        return log_p.transpose(-1, -2).reshape(lead + (B, T, self.n_states))

    def _sample_emissions(self, states, params, generator):
        locs, precision = params["locs"], params["precision"]
        noise = torch.randn(states.shape + (self.dim,), dtype=locs.dtype, generator=generator,
                            device=generator.device if generator is not None else locs.device).to(locs.device)
        if self.covariance == "full":
            scale = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(precision)))
            return locs[states] + (scale[states] @ noise.unsqueeze(-1)).squeeze(-1)
        return locs[states] + noise * precision.rsqrt()[states]

    def _emission_m_step(self, x, resp, params):
        # Sufficient statistics about the data mean (shift-invariant, and no
        # cancellation when the data sit far from the origin).
        center = x.mean(0)
        xc = x - center
        counts = resp.sum(-2)  # (R, K)
        sums = resp.mT @ xc  # (R, K, D)
        prior_precision = self.loc_scale.pow(-2)
        prior_mean = self.loc_mean - center  # (D,)
        old = params["precision"]
        alive = counts > 1e-8
        if self.covariance == "full":
            eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
            system = counts[..., None, None] * old + prior_precision * eye
            rhs = (old @ sums.unsqueeze(-1)).squeeze(-1) + prior_precision * prior_mean
            locs = torch.linalg.solve(system, rhs)  # (R, K, D), centred
            outer = (xc.unsqueeze(-1) * xc.unsqueeze(-2)).reshape(x.shape[0], -1)
            second = (resp.mT @ outer).reshape(sums.shape + (self.dim,))  # sum_n r x x^T
            cross = locs.unsqueeze(-1) * sums.unsqueeze(-2)
            scatter = (second - cross - cross.mT
                       + counts[..., None, None] * locs.unsqueeze(-1) * locs.unsqueeze(-2))
            denom = (counts + self.precision_df - self.dim - 1).clamp_min(1e-12)
            covariance = (scatter + self.precision_rate * eye) / denom[..., None, None]
            covariance = 0.5 * (covariance + covariance.mT)
            precision = torch.cholesky_inverse(torch.linalg.cholesky(covariance))
            precision = 0.5 * (precision + precision.mT)
            precision = torch.where(alive[..., None, None], precision, old)
        else:
            locs = (old * sums + prior_precision * prior_mean) / (counts[..., None] * old + prior_precision)
            second = resp.mT @ xc.pow(2)  # (R, K, D)
            scatter = (second - 2 * locs * sums + counts[..., None] * locs.pow(2)).clamp_min(0)
            precision = (counts + self.precision_df - 2).clamp_min(0)[..., None] / (scatter + self.precision_rate)
            precision = torch.where(alive[..., None], precision.clamp_min(torch.finfo(x.dtype).tiny), old)
        locs = torch.where(alive[..., None], locs + center, params["locs"])
        return {"locs": locs, "precision": precision}

    def _emission_start(self, x, generator):
        centers, _ = kmeans(x, self.n_states, generator)
        K, D = self.n_states, self.dim
        if self.covariance == "full":
            cov = torch.cov(x.T).reshape(D, D) if x.shape[0] > 1 else torch.eye(D, dtype=x.dtype)
            cov = cov + (1e-6 * cov.diagonal().mean() + 1e-12) * torch.eye(D, dtype=x.dtype, device=x.device)
            precision = torch.cholesky_inverse(torch.linalg.cholesky(cov)).expand(K, D, D).clone()
        else:
            var = x.var(0) if x.shape[0] > 1 else torch.ones(D, dtype=x.dtype, device=x.device)
            precision = (1 / (var + 1e-6 * var.mean() + 1e-12)).expand(K, D).clone()
        return {"locs": centers, "precision": precision}

    @classmethod
    def example(cls, seed=0):
        model = cls(2, 2, covariance="full", loc_scale=10.0)
        params = {"initial": torch.tensor([0.6, 0.4]),
                  "transition": torch.tensor([[0.9, 0.1], [0.2, 0.8]]),
                  "locs": torch.tensor([[-2.0, 0.0], [2.0, 1.0]]),
                  "precision": torch.eye(2).expand(2, 2, 2) / 0.6 ** 2}
        return model, cls._example_data(model, params, seed)


@registry.register
class PoissonHMM(HiddenMarkovModel):
    """An HMM over counts with Poisson emissions.

    Sites: ``initial``, ``transition``, ``rates`` (K,) ~
    :math:`\\mathrm{Gamma}(a_r, b_r)` (``rate_shape``, ``rate_rate``), ``obs``.
    """

    step_support = constraints.nonnegative_integer
    emission_sites = ("rates",)
    emission_dims = {"rates": ["state"]}

    def __init__(self, n_states: int, *, rate_shape: float = 1.0, rate_rate: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(n_states, **kwargs)
        self.register_buffer("rate_shape", torch.tensor(positive_number("rate_shape", rate_shape)))
        self.register_buffer("rate_rate", torch.tensor(positive_number("rate_rate", rate_rate)))

    def get_config(self):
        return {**self._base_config(), "rate_shape": float(self.rate_shape),
                "rate_rate": float(self.rate_rate)}

    def _check_values(self, values, mask, name):
        self._integer_check(values, mask, name, "counts must be non-negative integers")
        first_bad((values < 0) & mask, name, "holds negative counts")

    def _emission_priors(self):
        return {"rates": dist.Gamma(self.rate_shape, self.rate_rate)}

    def _emission_log_prob(self, padded, params):
        rates = params["rates"].unsqueeze(-2).unsqueeze(-2)  # (lead, 1, 1, K)
        x = padded.unsqueeze(-1)
        return x * rates.log() - rates - torch.lgamma(x + 1)

    def _sample_emissions(self, states, params, generator):
        rates = params["rates"][states]
        if generator is not None and generator.device != rates.device:
            return torch.poisson(rates.to(generator.device), generator=generator).to(rates.device)
        return torch.poisson(rates, generator=generator)

    def _emission_m_step(self, x, resp, params):
        counts = resp.sum(-2)
        rates = (resp.mT @ x + self.rate_shape - 1).clamp_min(0) / (counts + self.rate_rate)
        return {"rates": rates.clamp_min(torch.finfo(x.dtype).tiny)}

    def _emission_start(self, x, generator):
        centers, _ = kmeans(x.unsqueeze(-1), self.n_states, generator)
        floor = 0.01 * (float(x.mean()) + 1.0)
        return {"rates": centers.squeeze(-1).clamp_min(floor)}

    @classmethod
    def example(cls, seed=0):
        model = cls(2)
        params = {"initial": torch.tensor([0.5, 0.5]),
                  "transition": torch.tensor([[0.85, 0.15], [0.25, 0.75]]),
                  "rates": torch.tensor([2.0, 9.0])}
        return model, cls._example_data(model, params, seed)


@registry.register
class BernoulliHMM(HiddenMarkovModel):
    """An HMM over binary vectors of ``dim`` bits (piano rolls, presence/absence).

    Sites: ``initial``, ``transition``, ``probs`` (K, D) ~
    :math:`\\mathrm{Beta}(a, b)` (``prob_concentration1``, ``prob_concentration0``), ``obs``.
    """

    step_support = constraints.boolean
    emission_sites = ("probs",)
    emission_dims = {"probs": ["state", "feature"]}

    def __init__(self, n_states: int, dim: int, *, prob_concentration1: float = 1.0,
                 prob_concentration0: float = 1.0, **kwargs: Any) -> None:
        super().__init__(n_states, **kwargs)
        if not (isinstance(dim, int) and dim >= 1):
            raise ModelError(f"dim must be a positive integer, got {dim!r}")
        self.dim = dim
        self.step_shape = (dim,)
        self.register_buffer("prob_concentration1",
                             torch.tensor(positive_number("prob_concentration1", prob_concentration1)))
        self.register_buffer("prob_concentration0",
                             torch.tensor(positive_number("prob_concentration0", prob_concentration0)))

    def get_config(self):
        return {**self._base_config(), "dim": self.dim,
                "prob_concentration1": float(self.prob_concentration1),
                "prob_concentration0": float(self.prob_concentration0)}

    def _check_values(self, values, mask, name):
        bad = ((values != 0) & (values != 1)).any(-1)
        first_bad(bad & mask, name, "holds values other than 0 and 1")

    def _emission_priors(self):
        beta = dist.Beta(self.prob_concentration1, self.prob_concentration0)
        return {"probs": beta.expand([self.dim]).to_event(1)}

    def _emission_log_prob(self, padded, params):
        probs = params["probs"]  # (lead, K, D)
        lead = probs.shape[:-2]
        B, T, D = padded.shape
        x = padded.reshape(B * T, D)
        log_p = x @ _safe_log(probs).mT + (1 - x) @ _safe_log(1 - probs).mT  # (lead, N, K)
        return log_p.reshape(lead + (B, T, self.n_states))

    def _sample_emissions(self, states, params, generator):
        probs = params["probs"][states]
        return (algorithms.uniform(probs.shape, probs.dtype, probs.device, generator) < probs).to(probs.dtype)

    def _emission_m_step(self, x, resp, params):
        counts = resp.sum(-2)
        a, b = self.prob_concentration1, self.prob_concentration0
        num = (resp.mT @ x + a - 1).clamp_min(0)
        den = (counts[..., None] + a + b - 2).clamp_min(0)
        probs = torch.where(den > 0, num / den.clamp_min(torch.finfo(x.dtype).tiny), params["probs"])
        eps = torch.finfo(x.dtype).eps
        return {"probs": probs.clamp(torch.finfo(x.dtype).tiny, 1 - eps)}

    def _emission_start(self, x, generator):
        centers, _ = kmeans(x, self.n_states, generator)
        return {"probs": 0.9 * centers + 0.05}

    @classmethod
    def example(cls, seed=0):
        model = cls(2, 4)
        params = {"initial": torch.tensor([0.5, 0.5]),
                  "transition": torch.tensor([[0.9, 0.1], [0.15, 0.85]]),
                  "probs": torch.tensor([[0.9, 0.8, 0.1, 0.2], [0.1, 0.3, 0.85, 0.7]])}
        return model, cls._example_data(model, params, seed)
