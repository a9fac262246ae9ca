"""Normalizing flows: a stack of bijections on a standard normal base, as a module
and as a torch distribution.

.. math::
    z = f(x) = f_L \\circ \\dots \\circ f_1 (x), \\qquad
    \\log p(x \\mid c) = \\log N(f(x; c); 0, I)
        + \\sum_l \\log |\\det \\partial f_l / \\partial x_{l-1}|,

and sampling draws :math:`z \\sim N(0, I)` and returns :math:`f^{-1}(z)`.
:class:`Flow` holds the layers (``forward``: data to noise, ``inverse``: noise
to data); :class:`FlowDistribution` wraps a flow (and a context) as a Pyro
distribution with exact ``log_prob`` and reparametrised ``rsample``, so models
observe with it and guides sample from it. :func:`flow_layers` builds the
standard stacks (coupling or masked autoregressive layers, affine or spline,
with the coordinate order reversed between layers).
"""

from __future__ import annotations

import itertools
import math

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import nn

from .bijections import Coupling, Inverse, MaskedAutoregressive, Permutation
from .elementwise import Affine, RationalQuadraticSpline

STRUCTURES = ("coupling", "autoregressive")
TRANSFORMS = ("affine", "spline")


def flow_layers(dim, num_layers, *, structure="coupling", transform="affine", hidden=(64, 64),
                context_dim=0, activation="relu", bins=8, bound=5.0, inverse_autoregressive=False):
    """``num_layers`` flow layers with reversals of the coordinate order between them.

    Parameters
    ----------
    dim, num_layers : int
    structure : {"coupling", "autoregressive"}
    transform : {"affine", "spline"}
        Elementwise map: affine (RealNVP, MAF) or rational-quadratic spline
        with ``bins`` bins on ``[-bound, bound]`` (neural spline flows).
    hidden : sequence of int
        Widths of each conditioner network.
    context_dim : int
        Size of the conditioning vector (0: unconditional).
    activation : str
    inverse_autoregressive : bool
        Autoregressive layers turned around (Kingma et al. 2016): sampling is
        one pass and density evaluation ``dim`` passes; what a variational
        guide wants. Ignored for coupling layers (both directions are fast).
    """
    if structure not in STRUCTURES:
        raise ValueError(f"structure={structure!r}: choose one of {STRUCTURES}")
    if transform not in TRANSFORMS:
        raise ValueError(f"transform={transform!r}: choose one of {TRANSFORMS}")
    elementwise = Affine() if transform == "affine" else RationalQuadraticSpline(bins, bound)
    reverse = torch.arange(dim - 1, -1, -1)
    layers = []
    for i in range(num_layers):
        if i > 0 and dim > 1:
            layers.append(Permutation(reverse))
        if structure == "coupling":
            layers.append(Coupling(dim, elementwise, hidden, context_dim, activation))
        else:
            layer = MaskedAutoregressive(dim, elementwise, hidden, context_dim, activation)
            layers.append(Inverse(layer) if inverse_autoregressive else layer)
    return layers


def standard_normal_log_prob(z):
    """:math:`\\log N(z; 0, I)` summed over the last dimension."""
    return -0.5 * z.square().sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


class Flow(nn.Module):
    """A normalizing flow on ``R^dim``: ``layers`` applied in order map data to noise.

    Parameters
    ----------
    dim : int
    layers : sequence of :class:`~ppgen.nn.bijections.Bijection`
    context_dim : int
        Size of the context every layer receives (0: none).
    """

    def __init__(self, dim, layers, context_dim=0):
        super().__init__()
        self.dim, self.context_dim = int(dim), int(context_dim)
        self.layers = nn.ModuleList(layers)

    def _prototype(self):
        """A tensor with the flow's dtype and device (the first floating one found)."""
        for tensor in itertools.chain(self.parameters(), self.buffers()):
            if tensor.is_floating_point():
                return tensor
        return torch.empty(())

    def forward(self, x, context=None):
        """Data to noise: ``(z, log|det dz/dx|)``."""
        log_det = 0.0
        for layer in self.layers:
            x, step = layer(x, context)
            log_det = log_det + step
        return x, log_det

    def inverse(self, z, context=None):
        """Noise to data: ``(x, log|det dx/dz|)``."""
        log_det = 0.0
        for layer in reversed(self.layers):
            z, step = layer.inverse(z, context)
            log_det = log_det + step
        return z, log_det

    def log_prob(self, x, context=None):
        """:math:`\\log p(x \\mid c)` in nats, shape ``x.shape[:-1]`` (broadcast with the context)."""
        z, log_det = self.forward(x, context)
        return standard_normal_log_prob(z) + log_det

    def rsample_and_log_prob(self, shape, context=None):
        """Draws of shape ``shape + (dim,)`` and their log densities (differentiable)."""
        prototype = self._prototype()
        z = torch.randn(tuple(shape) + (self.dim,), dtype=prototype.dtype, device=prototype.device)
        x, log_det = self.inverse(z, context)
        return x, standard_normal_log_prob(z) - log_det


class FlowDistribution(TorchDistribution):
    """The density of a :class:`Flow` (at a context) as a Pyro distribution.

    ``batch_shape`` defaults to the context's leading shape (``()`` without
    one). ``log_prob`` of the tensor the last ``rsample`` returned reuses the
    density computed while sampling (no inverse pass, as a guide needs).
    """

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, flow, context=None, batch_shape=None, validate_args=False):
        self.flow, self.context = flow, context
        if batch_shape is None:
            batch_shape = context.shape[:-1] if context is not None else torch.Size()
        batch_shape = torch.Size(batch_shape)
        if context is not None and context.shape[:-1] != batch_shape:
            self.context = context.expand(batch_shape + context.shape[-1:])
        self._last = None
        super().__init__(batch_shape, torch.Size([flow.dim]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return FlowDistribution(self.flow, self.context, batch_shape)

    def rsample(self, sample_shape=()):
        x, log_prob = self.flow.rsample_and_log_prob(torch.Size(sample_shape) + self.batch_shape,
                                                     self.context)
        self._last = (x, log_prob)
        return x

    def sample(self, sample_shape=()):
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value):
        if self._last is not None and value is self._last[0]:
            return self._last[1]
        return self.flow.log_prob(value, self.context)
