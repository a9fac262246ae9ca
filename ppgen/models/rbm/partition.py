"""Partition functions of restricted Boltzmann machines: exact enumeration and AIS.

Exact
    :func:`enumerate_logsumexp` computes :math:`\\log \\sum_{s \\in \\{0,1\\}^n} e^{f(s)}`
    over every binary state of one layer, in chunks of states (bounded memory), in
    the dtype of ``f`` (float64 for exactness), with a running log-sum-exp. An RBM
    sums its other layer out analytically inside ``f``, so ``n`` is the smaller
    layer and the cost is :math:`2^n` times a matrix-vector product.
Annealed importance sampling (Neal 2001; Salakhutdinov and Murray 2008)
    :func:`annealed_importance_sampling` moves ``num_runs`` independent particles
    from a tractable base distribution :math:`p_0` (independent visible units, the
    hidden layer switched off) to the RBM :math:`p_1` through the geometric path
    :math:`p_\\beta^*(v) \\propto p_0^*(v)^{1-\\beta} p_1^*(v)^{\\beta}`, one block-Gibbs
    sweep that leaves :math:`p_{\\beta_k}` invariant per temperature. Each run's
    importance weight is :math:`\\log w = \\sum_k \\log p^*_{\\beta_k}(v_{k-1}) -
    \\log p^*_{\\beta_{k-1}}(v_{k-1})`, and :math:`\\hat Z = Z_0 \\cdot \\mathrm{mean}(w)`
    is unbiased for :math:`Z`. The estimate :math:`\\log \\hat Z` (slightly biased
    low, by about half its variance) comes with its delta-method standard error
    :math:`\\mathrm{sd}(w) / (\\sqrt{M}\\, \\mathrm{mean}(w))`: a :class:`LogPartition`
    with ``exact=False``.

The annealing paths of the two RBM families are :class:`BernoulliPath` and
:class:`GaussianPath`; each knows the unnormalised log density along the path
and its Gibbs transition, nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

#: The paper's schedule: 500 temperatures in [0, 0.5), 4,000 in [0.5, 0.9), 10,000 in [0.9, 1].
PAPER_SCHEDULE = ((0.5, 500), (0.9, 4000), (1.0, 10000))


@dataclass(frozen=True)
class LogPartition:
    """:math:`\\log Z` in nats, exact or estimated.

    Attributes
    ----------
    value : float
        :math:`\\log Z` (exact), or :math:`\\log \\hat Z` (AIS estimate).
    stderr : float
        Delta-method standard error of ``value`` (0 when exact).
    exact : bool
    method : {"enumeration", "ais"}
    num_runs, num_betas : int
        AIS particles and temperatures (0 when exact).
    """

    value: float
    stderr: float
    exact: bool
    method: str
    num_runs: int = 0
    num_betas: int = 0

    def interval(self, k=3.0):
        """Salakhutdinov and Murray's :math:`\\log(\\hat Z \\pm k\\,\\hat\\sigma / \\sqrt M)`
        (lower end ``-inf`` when :math:`k` standard errors exceed :math:`\\hat Z`)."""
        spread = k * self.stderr
        lower = self.value + math.log1p(-spread) if spread < 1 else -math.inf
        return lower, self.value + math.log1p(spread)

    def __str__(self):
        if self.exact:
            return f"log Z = {self.value:.6f} nats (exact, enumeration)"
        return (f"log Z ~ {self.value:.4f} +- {self.stderr:.4f} nats (AIS estimate, "
                f"{self.num_runs} runs x {self.num_betas} temperatures)")


# --------------------------------------------------------------------- enumeration
def binary_states(num_units, start, stop, dtype=torch.float64, device=None):
    """The binary expansions (least significant unit first) of ``start .. stop-1``,
    shape ``(stop - start, num_units)``."""
    codes = torch.arange(start, stop, device=device)
    shifts = torch.arange(num_units, device=device)
    return ((codes.unsqueeze(-1) >> shifts) & 1).to(dtype)


def enumerate_logsumexp(score, num_units, *, chunk=4096, dtype=torch.float64, device=None):
    """:math:`\\log \\sum_s \\exp(\\mathrm{score}(s))` over all ``2**num_units`` binary
    states ``s``, scored ``chunk`` states at a time (``score`` maps ``(B, num_units)``
    to ``(B,)``). Differentiable when ``score`` is."""
    total = 2 ** num_units
    parts = []
    for start in range(0, total, chunk):
        states = binary_states(num_units, start, min(start + chunk, total), dtype, device)
        parts.append(torch.logsumexp(score(states), 0))
    return torch.logsumexp(torch.stack(parts), 0)


# --------------------------------------------------------------------- AIS
def ais_betas(num_betas, dtype=torch.float64, device=None):
    """``num_betas`` inverse temperatures from 0 to 1 (both included), spaced as in
    Salakhutdinov and Murray (2008): denser near 1, in the paper's proportions."""
    if num_betas < 2:
        raise ValueError(f"num_betas must be at least 2, got {num_betas}")
    total = sum(n for _, n in PAPER_SCHEDULE)
    pieces, low, used = [], 0.0, 0
    for i, (high, n) in enumerate(PAPER_SCHEDULE):
        count = num_betas - 1 - used if i == len(PAPER_SCHEDULE) - 1 else \
            max(1, round((num_betas - 1) * n / total))
        pieces.append(torch.linspace(low, high, count + 1, dtype=dtype, device=device)[:-1])
        low, used = high, used + count
    return torch.cat(pieces + [torch.ones(1, dtype=dtype, device=device)])


def annealed_importance_sampling(path, betas, num_runs, generator=None, progress=False):
    """AIS estimate of :math:`\\log Z_1` along ``path`` (a :class:`BernoulliPath` or
    :class:`GaussianPath`); returns a :class:`LogPartition` with ``exact=False``."""
    v = path.sample_base(num_runs, generator)
    log_w = torch.zeros(num_runs, dtype=v.dtype, device=v.device)
    # progress=None: a bar only on a terminal (tqdm's disable=None).
    steps = tqdm(range(1, len(betas)), desc="AIS", leave=False,
                 disable=None if progress is None else not progress)
    for k in steps:
        increment, v = path.advance(v, betas[k - 1], betas[k], generator, transition=k < len(betas) - 1)
        log_w += increment
    log_mean = torch.logsumexp(log_w, 0) - math.log(num_runs)
    relative = (log_w - log_mean).exp()  # w_m / mean(w)
    stderr = float(relative.std(unbiased=True) / math.sqrt(num_runs)) if num_runs > 1 else math.inf
    return LogPartition(value=float(path.base_log_partition() + log_mean), stderr=stderr,
                        exact=False, method="ais", num_runs=num_runs, num_betas=len(betas))


def bernoulli_draw(probs, generator=None):
    """0/1 draws (in ``probs``' dtype) with success probabilities ``probs``."""
    return torch.rand(probs.shape, generator=generator, dtype=probs.dtype, device=probs.device).lt_(probs)


def _bernoulli(logits, generator):
    return bernoulli_draw(torch.sigmoid(logits), generator)


class BernoulliPath:
    """The AIS path of a Bernoulli RBM (:math:`W` is ``(V, H)``):

    .. math::
        \\log p^*_\\beta(v) = ((1-\\beta) a_0 + \\beta a)^\\top v
        + \\sum_j \\mathrm{softplus}(\\beta (b_j + v^\\top W_{:,j})),

    so :math:`p^*_0(v) = 2^H e^{a_0^\\top v}` (base rate ``base_logits`` :math:`a_0`),
    :math:`\\log Z_0 = H \\log 2 + \\sum_i \\mathrm{softplus}(a_{0,i})`, and
    :math:`p^*_1` is the RBM's unnormalised marginal.
    """

    def __init__(self, weights, visible_bias, hidden_bias, base_logits):
        self.weights, self.visible_bias, self.hidden_bias = weights, visible_bias, hidden_bias
        self.base_logits = base_logits

    def base_log_partition(self):
        return self.weights.shape[1] * math.log(2.0) + F.softplus(self.base_logits).sum()

    def sample_base(self, num, generator):
        return _bernoulli(self.base_logits.expand(num, -1), generator)

    def advance(self, v, beta_from, beta_to, generator, transition=True):
        """``(log p*_to(v) - log p*_from(v), v')`` with ``v'`` one Gibbs sweep at ``beta_to``."""
        hidden = self.hidden_bias + v @ self.weights
        visible_term = (beta_to - beta_from) * (v @ (self.visible_bias - self.base_logits))
        increment = visible_term + (F.softplus(beta_to * hidden) - F.softplus(beta_from * hidden)).sum(-1)
        if not transition:
            return increment, v
        h = _bernoulli(beta_to * hidden, generator)
        logits = (1 - beta_to) * self.base_logits + beta_to * (self.visible_bias + h @ self.weights.T)
        return increment, _bernoulli(logits, generator)


class GaussianPath:
    """The AIS path of a Gaussian-Bernoulli RBM (scales :math:`\\sigma`, base means :math:`\\mu`):

    .. math::
        \\log p^*_\\beta(v) = -\\sum_i \\frac{(1-\\beta)(v_i-\\mu_i)^2 + \\beta (v_i-a_i)^2}{2\\sigma_i^2}
        + \\sum_j \\mathrm{softplus}(\\beta (b_j + (v/\\sigma)^\\top W_{:,j})),

    so :math:`p_0` is :math:`N(\\mu, \\mathrm{diag}\\,\\sigma^2)` and
    :math:`\\log Z_0 = H \\log 2 + \\sum_i \\log(\\sqrt{2\\pi}\\sigma_i)`.
    """

    def __init__(self, weights, visible_bias, hidden_bias, scale, base_mean):
        self.weights, self.visible_bias, self.hidden_bias = weights, visible_bias, hidden_bias
        self.scale, self.base_mean = scale, base_mean

    def base_log_partition(self):
        return (self.weights.shape[1] * math.log(2.0)
                + (self.scale.log() + 0.5 * math.log(2 * math.pi)).sum())

    def sample_base(self, num, generator):
        noise = torch.randn((num, self.base_mean.shape[0]), generator=generator,
                            dtype=self.base_mean.dtype, device=self.base_mean.device)
        return self.base_mean + self.scale * noise

    def advance(self, v, beta_from, beta_to, generator, transition=True):
        hidden = self.hidden_bias + (v / self.scale) @ self.weights
        var2 = 2 * self.scale ** 2
        quadratic = (((v - self.base_mean) ** 2 - (v - self.visible_bias) ** 2) / var2).sum(-1)
        increment = (beta_to - beta_from) * quadratic + \
            (F.softplus(beta_to * hidden) - F.softplus(beta_from * hidden)).sum(-1)
        if not transition:
            return increment, v
        h = _bernoulli(beta_to * hidden, generator)
        mean = ((1 - beta_to) * self.base_mean + beta_to * self.visible_bias
                + beta_to * self.scale * (h @ self.weights.T))
        noise = torch.randn(v.shape, generator=generator, dtype=v.dtype, device=v.device)
        return increment, mean + self.scale * noise
