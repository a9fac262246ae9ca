"""Observation models ("likelihood heads") of the deep latent families.

A decoder maps a code :math:`z` to an unconstrained tensor :math:`\\eta(z)` with
the data's shape; a head turns it into :math:`p(x \\mid z)`, independent over
the elements of :math:`x`:

``"bernoulli"``
    :math:`x_d \\in \\{0, 1\\}`, :math:`p(x_d = 1 \\mid z) = \\sigma(\\eta_d)`.
``"continuous_bernoulli"``
    :math:`x_d \\in [0, 1]`, :math:`p(x_d \\mid z) = C(\\lambda_d)\\,
    \\lambda_d^{x_d} (1 - \\lambda_d)^{1 - x_d}` with :math:`\\lambda_d = \\sigma(\\eta_d)`
    and the normaliser :math:`C` (Loaiza-Ganem and Cunningham, 2019): a proper
    density for grey-level pixels, where a Bernoulli is not.
``"gaussian"``
    :math:`x_d \\in \\mathbb{R}`, :math:`x_d \\mid z \\sim N(\\eta_d, s_d^2)`. The
    noise scale is a learned *per-dimension* vector :math:`s` (floored at
    ``min_noise_scale`` so a constant pixel cannot drive the density to
    infinity), or a fixed number when ``noise_scale`` is given.

Each head also checks data against its support (:meth:`check`), and gives a
starting value for the decoder's output bias from the data mean.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from ...errors import DataError, ModelError

LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian")


def _logit(p):
    p = p.clamp(1e-3, 1 - 1e-3)
    return p.log() - (-p).log1p()


def _first_index(mask):
    return tuple(mask.nonzero()[0].tolist())


class BernoulliLikelihood(nn.Module):
    """Independent Bernoulli pixels with logits :math:`\\eta`."""

    name = "bernoulli"

    def distribution(self, output):
        return dist.Bernoulli(logits=output)

    def mean(self, output):
        return torch.sigmoid(output)

    def check(self, x, name):
        bad = (x != 0) & (x != 1)
        if bool(bad.any()):
            raise DataError(
                f"{name}: likelihood='bernoulli' needs 0/1 data, got {float(x[bad][0]):g} at index "
                f"{_first_index(bad)}; binarize the data or use likelihood='continuous_bernoulli' "
                "(values in [0, 1]) or 'gaussian'")

    def output_bias(self, data_mean):
        return _logit(data_mean)

    def initialize(self, data):
        """Nothing to set: the head has no parameters."""

    def config(self):
        return {}


class ContinuousBernoulliLikelihood(BernoulliLikelihood):
    """Independent continuous-Bernoulli values in [0, 1] with logits :math:`\\eta`."""

    name = "continuous_bernoulli"

    def distribution(self, output):
        return dist.ContinuousBernoulli(logits=output)

    def mean(self, output):
        return dist.ContinuousBernoulli(logits=output).mean

    def check(self, x, name):
        bad = (x < 0) | (x > 1)
        if bool(bad.any()):
            raise DataError(
                f"{name}: likelihood='continuous_bernoulli' needs values in [0, 1], got "
                f"{float(x[bad][0]):g} at index {_first_index(bad)}; rescale the data or use "
                "likelihood='gaussian'")


class GaussianLikelihood(nn.Module):
    """Independent Gaussian values with means :math:`\\eta` and scales :math:`s`.

    Parameters
    ----------
    event_shape : tuple of int
        The shape of one datum (the learned scale has this shape).
    noise_scale : float, optional
        A fixed noise standard deviation; ``None`` learns one per dimension.
    min_noise_scale : float
        Floor of the learned scale.
    """

    name = "gaussian"

    def __init__(self, event_shape, noise_scale=None, min_noise_scale=1e-2):
        super().__init__()
        if not (isinstance(min_noise_scale, (int, float)) and min_noise_scale > 0):
            raise ModelError(f"min_noise_scale must be a positive number, got {min_noise_scale!r}")
        self.min_noise_scale = float(min_noise_scale)
        self.event_shape = tuple(event_shape)
        self.fixed = noise_scale is not None
        if self.fixed:
            if isinstance(noise_scale, bool) or not isinstance(noise_scale, (int, float)) or not (
                    math.isfinite(noise_scale) and noise_scale > 0):
                raise ModelError(f"noise_scale must be None (learned) or a positive number, got {noise_scale!r}")
            # kept as a Python float, not a buffer, so a float64 model uses it unrounded
            self.noise_scale = float(noise_scale)
        else:
            self.noise_scale = None
            # softplus(0.5413) = 1: start at unit scale until initialize() sees data.
            self.raw_scale = nn.Parameter(torch.full(tuple(event_shape), 0.5413))

    def scale(self, like=None):
        """The noise standard deviations, shape ``event_shape`` (a fixed scale is
        made with the dtype and device of ``like``)."""
        if self.fixed:
            like = torch.empty(()) if like is None else like
            return like.new_full(self.event_shape, self.noise_scale)
        return softplus(self.raw_scale) + self.min_noise_scale

    def distribution(self, output):
        return dist.Normal(output, self.scale(output).expand(output.shape))

    def mean(self, output):
        return output

    def check(self, x, name):
        """Any finite value is in the support (finiteness is checked upstream)."""

    def output_bias(self, data_mean):
        return data_mean

    def initialize(self, data):
        """Start the learned scale at the data's per-dimension standard deviation."""
        if self.fixed:
            return
        std = data.std(0) if data.shape[0] > 1 else torch.ones_like(data[0])
        target = (std - self.min_noise_scale).clamp_min(1e-3)
        with torch.no_grad():
            self.raw_scale.copy_(target + torch.log(-torch.expm1(-target)))  # softplus inverse

    def config(self):
        return {"noise_scale": self.noise_scale, "min_noise_scale": self.min_noise_scale}


def make_likelihood(name, event_shape, noise_scale=None, min_noise_scale=1e-2):
    """The head called ``name`` (one of :data:`LIKELIHOODS`) for data of ``event_shape``."""
    if name == "bernoulli":
        head = BernoulliLikelihood()
    elif name == "continuous_bernoulli":
        head = ContinuousBernoulliLikelihood()
    elif name == "gaussian":
        return GaussianLikelihood(event_shape, noise_scale, min_noise_scale)
    else:
        raise ModelError(f"likelihood={name!r}: choose one of {LIKELIHOODS}")
    if noise_scale is not None:
        raise ModelError(f"noise_scale={noise_scale!r} applies to likelihood='gaussian' only, not {name!r}")
    return head
