"""Elementwise monotone maps with their log-derivatives, parametrised by raw tensors.

A flow layer (coupling or autoregressive) computes, for each transformed
coordinate, a vector of ``num_params`` unconstrained numbers from the
conditioning coordinates; one of these maps turns them into a monotone scalar
bijection and applies it. Both directions return the value and the elementwise
:math:`\\log |\\partial\\,\\mathrm{out} / \\partial\\,\\mathrm{in}|`. Raw
parameters equal to zero give the identity, so a layer whose last linear layer
starts at zero starts as the identity map.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def soft_clamp(raw, bound):
    """:math:`b \\tanh(r / b)`: the identity near zero, smoothly limited to ``(-b, b)``."""
    return bound * torch.tanh(raw / bound)


class Affine:
    """:math:`y = (x - \\mu)\\, e^{-s}` with ``params = (mu, raw_s)``, :math:`s` soft-clamped.

    Parameters
    ----------
    max_log_scale : float
        :math:`|s|` stays below this, so one layer scales by at most :math:`e^{\\pm s}`.
    """

    def __init__(self, max_log_scale=5.0):
        self.max_log_scale = float(max_log_scale)

    num_params = 2

    def _split(self, params):
        shift, raw = params.unbind(-1)
        return shift, soft_clamp(raw, self.max_log_scale)

    def forward(self, x, params):
        shift, log_scale = self._split(params)
        return (x - shift) * torch.exp(-log_scale), -log_scale

    def inverse(self, y, params):
        shift, log_scale = self._split(params)
        return y * torch.exp(log_scale) + shift, log_scale


class RationalQuadraticSpline:
    """A monotone rational-quadratic spline on ``[-bound, bound]``, the identity outside.

    Durkan et al. (2019), *Neural Spline Flows*: ``bins`` bins whose widths
    :math:`w_k` and heights :math:`h_k` are softmaxes of raw parameters (each at
    least ``min_bin`` of the interval), and derivatives :math:`\\delta_k > 0` at
    the ``bins - 1`` interior knots (softplus of raw parameters, at least
    ``min_derivative``); the derivative is 1 at both ends, so the map and its
    derivative are continuous where it meets the identity tails. In bin
    :math:`k`, with :math:`\\xi = (x - x_k) / w_k` and :math:`s_k = h_k / w_k`,

    .. math::
        y = y_k + \\frac{h_k\\,(s_k \\xi^2 + \\delta_k \\xi (1 - \\xi))}
                       {s_k + (\\delta_{k+1} + \\delta_k - 2 s_k)\\, \\xi (1 - \\xi)}.

    The inverse solves the quadratic in :math:`\\xi` in closed form.
    ``params`` are ``bins`` raw widths, ``bins`` raw heights, then ``bins - 1``
    raw derivatives.
    """

    def __init__(self, bins=8, bound=5.0, min_bin=1e-3, min_derivative=1e-3):
        if not (isinstance(bins, int) and bins >= 2):
            raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
        if not bound > 0:
            raise ValueError(f"bound must be positive, got {bound!r}")
        if not 0 < min_bin * bins < 1:
            raise ValueError(f"min_bin * bins must be in (0, 1), got {min_bin} * {bins}")
        self.bins, self.bound = bins, float(bound)
        self.min_bin, self.min_derivative = float(min_bin), float(min_derivative)
        # softplus(0 + offset) + min_derivative == 1: zero raw parameters give the identity.
        self._derivative_offset = math.log(math.expm1(1.0 - self.min_derivative))

    @property
    def num_params(self):
        return 3 * self.bins - 1

    def _bin_quantities(self, values, params, inverse):
        """Per element: the bin's size ``(w_k, h_k)``, right knot ``(x_{k+1}, y_{k+1})``
        and end slopes ``(delta_k, delta_{k+1})``.

        Parameters go first (``(P, *batch)``): reductions over a short last
        dimension are several times slower on CPU than over the first one.
        """
        K, bound = self.bins, self.bound
        raw = params.movedim(-1, 0)
        scaled = torch.softmax(raw[:2 * K].unflatten(0, (2, K)), dim=1)
        sizes = (2 * bound) * (self.min_bin + (1 - self.min_bin * K) * scaled)  # (2, K, ...)
        right = torch.cumsum(sizes, dim=1) - bound
        inner = self.min_derivative + F.softplus(raw[2 * K:] + self._derivative_offset)
        end = torch.ones_like(inner[:1])
        table = torch.cat([sizes.flatten(0, 1), right.flatten(0, 1), end, inner, end])
        knots = right[1 if inverse else 0, :-1]
        index = (values.unsqueeze(0) >= knots).sum(0, keepdim=True)
        offsets = torch.tensor([0, K, 2 * K, 3 * K, 4 * K, 4 * K + 1], device=index.device)
        offsets = offsets.view((6,) + (1,) * values.dim())
        return table.gather(0, index + offsets).unbind(0)

    def forward(self, x, params):
        inside = x.abs() < self.bound
        x_in = x.clamp(-self.bound, self.bound)
        w, h, x_right, y_right, d0, d1 = self._bin_quantities(x_in, params, inverse=False)
        slope = h / w
        xi = 1 - (x_right - x_in) / w
        mix = xi * (1 - xi)
        denominator = slope + (d0 + d1 - 2 * slope) * mix
        y = y_right - h + h * (slope * xi.square() + d0 * mix) / denominator
        numerator = d1 * xi.square() + 2 * slope * mix + d0 * (1 - xi).square()
        log_det = torch.log(slope.square() * numerator / denominator.square())
        return torch.where(inside, y, x), torch.where(inside, log_det, 0.0)

    def inverse(self, y, params):
        inside = y.abs() < self.bound
        y_in = y.clamp(-self.bound, self.bound)
        w, h, x_right, y_right, d0, d1 = self._bin_quantities(y_in, params, inverse=True)
        slope = h / w
        rise = y_in - (y_right - h)
        curvature = d0 + d1 - 2 * slope
        a = h * (slope - d0) + rise * curvature
        b = h * d0 - rise * curvature
        c = -slope * rise
        # The stable root of a xi^2 + b xi + c = 0 (b > 0 for a monotone spline).
        xi = (2 * c) / (-b - torch.sqrt((b.square() - 4 * a * c).clamp_min(0)))
        xi = xi.clamp(0, 1)
        x = x_right - w + xi * w
        mix = xi * (1 - xi)
        denominator = slope + curvature * mix
        numerator = d1 * xi.square() + 2 * slope * mix + d0 * (1 - xi).square()
        log_det = torch.log(denominator.square() / (slope.square() * numerator))
        return torch.where(inside, x, y), torch.where(inside, log_det, 0.0)
