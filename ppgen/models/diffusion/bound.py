"""The variational bound of a diffusion model, term by term, per datum.

.. math::
    -\\log p(x_0) \\le L_T + \\sum_{t=2}^T L_{t-1} + L_0, \\qquad
    L_T = \\mathrm{KL}(q(x_T \\mid x_0) \\,\\|\\, N(0, I)),

    L_{t-1} = E_{q(x_t \\mid x_0)}\\, \\mathrm{KL}(q(x_{t-1} \\mid x_t, x_0) \\,\\|\\, p_\\theta(x_{t-1} \\mid x_t)),
    \\qquad L_0 = -E_{q(x_1 \\mid x_0)} \\log p_\\theta(x_0 \\mid x_1).

:math:`L_T` and the Gaussian KLs are exact; the expectations over :math:`x_t` are
Monte Carlo, one draw of :math:`x_t \\sim q(x_t \\mid x_0)` per step and datum (the
mean of ``num_samples`` draws), so the sum is an unbiased estimate of the bound
(Ho et al. 2020, eq. 5). The network runs on several time steps at once, in passes of
about :data:`~ppgen.models.diffusion.PASS_ELEMENTS` tensor elements, so :math:`T = 1000`
on a few thousand points is one forward pass of the network per point and step.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from tqdm.auto import tqdm

from ...errors import ModelError
from .sampling import standard_normal
from .schedules import normal_kl

#: tensor elements per network pass
PASS_ELEMENTS = 2**18


@dataclasses.dataclass(frozen=True)
class Bound:
    """A diffusion model's variational bound, per datum, in nats.

    Attributes
    ----------
    prior, diffusion, decoder : tensor ``(N,)``
        :math:`L_T`, :math:`\\sum_{t=2}^T L_{t-1}` and :math:`L_0`.
    per_step : tensor ``(T + 1,)``
        The mean over data of :math:`L_0, L_1, \\dots, L_T` (where the bound is lost).
    dims : int
        Dimensions per datum.
    discrete : bool
        True with the discretized decoder: a bound on a log probability; else on a
        log density.
    """

    prior: torch.Tensor
    diffusion: torch.Tensor
    decoder: torch.Tensor
    per_step: torch.Tensor
    dims: int
    discrete: bool

    @property
    def log_prob(self):
        """The lower bound on :math:`\\log p(x_i)`, nats per datum."""
        return -(self.prior + self.diffusion + self.decoder)

    @property
    def bits_per_dim(self):
        """:math:`-\\mathcal{L}(x_i) / (D \\ln 2)` per datum."""
        return -self.log_prob / (self.dims * math.log(2.0))


def variational_bound(ddpm, x, labels=None, *, num_samples=1, seed=None, progress=False):
    """The :class:`Bound` of ``ddpm`` at checked data ``x`` ``(N, *event_shape)``.

    ``labels`` (a conditional model's, or None for the unconditional one);
    ``seed`` makes the draws reproducible (default: torch's global random state).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ModelError(f"num_samples must be a positive integer, got {num_samples!r}")
    noise = standard_normal(None if seed is None else torch.Generator().manual_seed(int(seed)))
    schedule, steps = ddpm.schedule, ddpm.timesteps
    dims = tuple(range(-len(ddpm.event_shape), 0))
    with torch.no_grad():
        z0 = ddpm.to_model_units(x)
        size = z0.shape[0]
        mean_t, var_t = schedule.marginal(z0, steps)
        prior = normal_kl(mean_t, var_t, torch.zeros_like(mean_t), torch.ones_like(var_t)).sum(dims)
        diffusion, decoder = torch.zeros_like(prior), torch.zeros_like(prior)
        per_step = torch.zeros(steps + 1, dtype=torch.float64, device=z0.device)
        per_step[steps] = prior.double().mean()
        rows = max(1, PASS_ELEMENTS // ddpm.data_dim)
        per_pass = max(1, rows // min(rows, size))
        passes = num_samples * math.ceil(size / rows) * (1 + math.ceil((steps - 1) / per_pass))
        bar = tqdm(total=passes, disable=not progress, desc="diffusion bound", leave=False)
        weight = 1.0 / num_samples
        for _ in range(num_samples):
            for start in range(0, size, rows):
                block = slice(start, start + rows)
                zb, lb = z0[block], None if labels is None else labels[block]
                x1 = schedule.noised(zb, 1, noise(zb))
                nll = -ddpm.decoder_distribution(*ddpm.reverse(x1, 1, lb)).log_prob(x[block])
                decoder[block] += weight * nll
                per_step[0] += weight * nll.double().sum() / size
                bar.update()
                for first in range(2, steps + 1, per_pass):
                    t = torch.arange(first, min(first + per_pass, steps + 1), device=z0.device)[:, None]
                    x0 = zb.expand((t.shape[0],) + zb.shape)
                    xt = schedule.noised(x0, t, noise(x0))
                    q_mean, q_var = schedule.posterior(x0, xt, t)
                    p_mean, p_std = ddpm.reverse(xt, t, lb)
                    kl = normal_kl(q_mean, q_var, p_mean, p_std ** 2).sum(dims)  # (steps in pass, rows)
                    diffusion[block] += weight * kl.sum(0)
                    per_step[t[:, 0] - 1] += weight * kl.double().sum(1) / size
                    bar.update()
        bar.close()
    return Bound(prior, diffusion, decoder, per_step, ddpm.data_dim, ddpm.decoder == "discretized")
