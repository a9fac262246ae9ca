"""The forward process of a diffusion model and the closed forms its bound needs.

With noise levels :math:`\\beta_1, \\dots, \\beta_T`, :math:`\\alpha_t = 1 - \\beta_t` and
:math:`\\bar\\alpha_t = \\prod_{s \\le t} \\alpha_s` (Ho et al. 2020):

.. math::
    q(x_t \\mid x_{t-1}) = N(\\sqrt{\\alpha_t}\\, x_{t-1}, \\beta_t I), \\qquad
    q(x_t \\mid x_0) = N(\\sqrt{\\bar\\alpha_t}\\, x_0, (1 - \\bar\\alpha_t) I),

    q(x_{t-1} \\mid x_t, x_0) = N(c_1(t)\\, x_0 + c_2(t)\\, x_t, \\tilde\\beta_t I), \\quad
    c_1 = \\frac{\\sqrt{\\bar\\alpha_{t-1}}\\beta_t}{1 - \\bar\\alpha_t}, \\;
    c_2 = \\frac{\\sqrt{\\alpha_t}(1 - \\bar\\alpha_{t-1})}{1 - \\bar\\alpha_t}, \\;
    \\tilde\\beta_t = \\frac{1 - \\bar\\alpha_{t-1}}{1 - \\bar\\alpha_t} \\beta_t.

:class:`Schedule` keeps every such coefficient as a buffer indexed by
:math:`t = 0, \\dots, T` (entry 0 is :math:`\\beta_0 = 0`, :math:`\\bar\\alpha_0 = 1`),
so ``.to()`` and ``.double()`` move them with the model (left out of ``state_dict``:
the configuration rebuilds them). The schedules are computed
in float64 and stored in the default dtype.

Schedules (``schedule=``):

* ``"linear"``: Ho et al.'s :math:`\\beta_t` evenly spaced from :math:`10^{-4}` to
  0.02 for :math:`T = 1000`; for other :math:`T` both ends are multiplied by
  :math:`1000 / T` as in Nichol & Dhariwal's code, so the process ends near the
  same :math:`\\bar\\alpha_T`. For :math:`T < 50` that makes the last betas 0.4
  and more (above 1 for :math:`T < 20`), so betas are clipped at 0.999 like the
  cosine schedule's; use ``"cosine"`` for short chains.
* ``"cosine"``: Nichol & Dhariwal (2021), :math:`\\bar\\alpha(t) \\propto
  \\cos^2\\!\\big(\\frac{t/T + s}{1 + s}\\frac{\\pi}{2}\\big)` with :math:`s = 0.008` and
  :math:`\\beta_t = \\min(1 - \\bar\\alpha(t)/\\bar\\alpha(t-1), 0.999)`.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import nn

SCHEDULES = ("linear", "cosine")
VARIANCES = ("beta", "posterior")
#: the largest beta of either schedule (Nichol & Dhariwal's clip)
MAX_BETA = 0.999


def linear_betas(timesteps):
    """Ho et al.'s linear betas, scaled by ``1000 / timesteps`` (float64, shape ``(T,)``)."""
    scale = 1000.0 / timesteps
    betas = torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
    return betas.clamp(max=MAX_BETA)


def cosine_betas(timesteps, offset=0.008):
    """Nichol & Dhariwal's cosine betas (float64, shape ``(T,)``)."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    alpha_bar = torch.cos((steps + offset) / (1 + offset) * math.pi / 2) ** 2
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=MAX_BETA)


def make_betas(schedule, timesteps):
    """The betas of the named schedule."""
    if schedule == "linear":
        return linear_betas(timesteps)
    if schedule == "cosine":
        return cosine_betas(timesteps)
    raise ValueError(f"schedule={schedule!r}: choose one of {SCHEDULES}")


class Schedule(nn.Module):
    """The coefficients of the forward process and of the reverse kernels.

    Parameters
    ----------
    betas : tensor ``(T,)``
        :math:`\\beta_1, \\dots, \\beta_T` in (0, 1).
    variance : {"beta", "posterior"}
        The reverse kernels' variance :math:`\\sigma_t^2` (Ho et al.'s two
        choices): :math:`\\beta_t` or :math:`\\tilde\\beta_t`. For the decoder
        :math:`p(x_0 \\mid x_1)` it is :math:`\\beta_1` or, since
        :math:`\\tilde\\beta_1 = 0`, :math:`\\tilde\\beta_2` (Ho et al.'s clip).
    """

    def __init__(self, betas, variance="beta"):
        super().__init__()
        if variance not in VARIANCES:
            raise ValueError(f"variance={variance!r}: choose one of {VARIANCES}")
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1 or betas.numel() < 2 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must be a 1-D sequence of at least 2 values in (0, 1)")
        self.timesteps = betas.numel()
        beta = torch.cat([betas.new_zeros(1), betas])  # index t = 0..T
        alpha = 1 - beta
        alpha_bar = torch.cumprod(alpha, 0)
        prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
        one_minus = (1 - alpha_bar).clamp(min=1e-300)  # only entry 0 is clamped
        post_var = torch.where(beta > 0, beta * (1 - prev) / one_minus, torch.zeros_like(beta))
        coef_x0 = torch.where(beta > 0, prev.sqrt() * beta / one_minus, torch.ones_like(beta))
        coef_xt = torch.where(beta > 0, alpha.sqrt() * (1 - prev) / one_minus, torch.zeros_like(beta))
        reverse_var = (beta if variance == "beta" else post_var).clone()
        if variance == "posterior":
            reverse_var[1] = post_var[2]
        reverse_var[0] = 1.0  # unused: there is no kernel into t = -1
        dtype = torch.get_default_dtype()
        for name, value in {"betas": beta, "alphas": alpha, "alpha_bar": alpha_bar, "alpha_bar_prev": prev,
                            "sqrt_alpha_bar": alpha_bar.sqrt(), "sqrt_one_minus_alpha_bar": (1 - alpha_bar).sqrt(),
                            "posterior_variance": post_var, "posterior_coef_x0": coef_x0,
                            "posterior_coef_xt": coef_xt, "reverse_variance": reverse_var,
                            "reverse_std": reverse_var.sqrt(),
                            "steps": torch.arange(self.timesteps + 1, dtype=torch.float64)}.items():
            # Not in state_dict: they follow from the configuration, which rebuilds them on load.
            self.register_buffer(name, value.to(dtype), persistent=False)
        self.variance = variance

    # ------------------------------------------------------------ helpers
    @staticmethod
    def at(values, t, like):
        """``values[t]`` shaped to broadcast against ``like`` (``t`` an int or a tensor of
        ``like``'s leading batch shape)."""
        picked = values[t]
        return picked.reshape(picked.shape + (1,) * (like.dim() - picked.dim()))

    def marginal(self, x0, t):
        """Mean and variance of :math:`q(x_t \\mid x_0)`."""
        return self.at(self.sqrt_alpha_bar, t, x0) * x0, self.at(1 - self.alpha_bar, t, x0)

    def noised(self, x0, t, noise):
        """:math:`x_t = \\sqrt{\\bar\\alpha_t} x_0 + \\sqrt{1 - \\bar\\alpha_t}\\, \\epsilon`."""
        return self.at(self.sqrt_alpha_bar, t, x0) * x0 + self.at(self.sqrt_one_minus_alpha_bar, t, x0) * noise

    def posterior(self, x0, xt, t):
        """Mean and variance of :math:`q(x_{t-1} \\mid x_t, x_0)` (``t >= 1``)."""
        mean = self.at(self.posterior_coef_x0, t, xt) * x0 + self.at(self.posterior_coef_xt, t, xt) * xt
        return mean, self.at(self.posterior_variance, t, xt)

    def predict_x0(self, xt, t, eps):
        """The :math:`x_0` for which ``xt`` is ``x0`` noised by ``eps``."""
        return (xt - self.at(self.sqrt_one_minus_alpha_bar, t, xt) * eps) / self.at(self.sqrt_alpha_bar, t, xt)

    def predict_eps(self, xt, t, x0):
        """The noise that takes ``x0`` to ``xt`` (inverse of :meth:`predict_x0`)."""
        return (xt - self.at(self.sqrt_alpha_bar, t, xt) * x0) / self.at(self.sqrt_one_minus_alpha_bar, t, xt)


def normal_kl(mean_q, var_q, mean_p, var_p):
    """Elementwise :math:`\\mathrm{KL}(N(m_q, v_q) \\,\\|\\, N(m_p, v_p))` in nats."""
    return 0.5 * (torch.log(var_p / var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1)


def _log_ndtr_difference(upper, lower):
    """:math:`\\log(\\Phi(u) - \\Phi(l))` for :math:`u > l`, stable in both tails."""
    # Reflect to the left tail, where log_ndtr keeps its accuracy.
    flip = lower > 0
    a = torch.where(flip, -lower, upper)
    b = torch.where(flip, -upper, lower)
    log_a, log_b = torch.special.log_ndtr(a), torch.special.log_ndtr(b)
    return log_a + torch.log1p(-torch.exp(log_b - log_a).clamp(max=1 - 1e-12))


class DiscretizedNormal(TorchDistribution):
    """A normal distribution binned onto ``levels`` equally spaced values in [0, 1].

    Ho et al.'s decoder for discrete data: the value :math:`k/(L-1)` gets the
    normal mass of :math:`[k/(L-1) - h, k/(L-1) + h]`, :math:`h = 1/(2(L-1))`,
    with the end bins extended to :math:`\\mp\\infty`, so the masses sum to one
    and ``log_prob`` is a log probability, not a density. ``sample`` rounds a
    normal draw to the nearest level (clamped into [0, 1]), which has exactly
    these masses.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.unit_interval
    has_rsample = False

    def __init__(self, loc, scale, levels, validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(torch.as_tensor(loc), torch.as_tensor(scale))
        self.levels = int(levels)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return DiscretizedNormal(self.loc.expand(batch_shape), self.scale.expand(batch_shape), self.levels)

    @property
    def mean(self):
        return self.loc

    @property
    def mode(self):
        """The most probable level: the one nearest the mean."""
        return self.round(self.loc)

    def round(self, x):
        """``x`` rounded to the nearest level in [0, 1]."""
        top = self.levels - 1
        return torch.round(x.clamp(0, 1) * top) / top

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            draw = self.loc.expand(shape) + self.scale.expand(shape) * torch.randn(
                shape, dtype=self.loc.dtype, device=self.loc.device)
            return self.round(draw)

    def log_prob(self, value):
        half = 0.5 / (self.levels - 1)
        upper = (value + half - self.loc) / self.scale
        lower = (value - half - self.loc) / self.scale
        # Edge bins reach to -inf / +inf (a finite stand-in keeps the formulas NaN-free).
        lower = torch.where(value < half, torch.full_like(lower, -1e4), lower)
        upper = torch.where(value > 1 - half, torch.full_like(upper, 1e4), upper)
        return _log_ndtr_difference(upper, lower)
