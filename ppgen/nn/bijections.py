"""Invertible layers for normalizing flows, each with its log-Jacobian determinant.

Every layer maps the last dimension of its input and broadcasts over the
leading ones. ``forward(x, context)`` and ``inverse(y, context)`` both return
``(value, log_det)``, where ``log_det`` is :math:`\\log|\\det \\partial\\,
\\mathrm{out} / \\partial\\, \\mathrm{in}|` of that direction, with the leading
shape of the input. In a density model ``forward`` runs from data to noise.

Layers: :class:`Coupling` (Dinh et al. 2017: half of the coordinates
parametrise an elementwise map of the other half; both directions are one
network pass), :class:`MaskedAutoregressive` (Papamakarios et al. 2017:
coordinate :math:`i` is mapped with parameters from :math:`x_{<i}`, one MADE
pass forward, ``dim`` passes back), :class:`Permutation`, :class:`Standardize`
(a fixed affine map, buffers), :class:`ElementwiseAffine` (a learnt one) and
:class:`Inverse`, which swaps the directions of a layer (a masked
autoregressive layer inverted is an inverse-autoregressive one, fast to sample).
"""

from __future__ import annotations

import torch
from torch import nn

from .made import MADE
from .networks import MLP


def _broadcast_context(x, context):
    """``x`` and ``context`` with the same leading shape (their broadcast)."""
    if context is None:
        return x, None
    shape = torch.broadcast_shapes(x.shape[:-1], context.shape[:-1])
    return x.expand(shape + x.shape[-1:]), context.expand(shape + context.shape[-1:])


class Bijection(nn.Module):
    """Base class: ``forward`` and ``inverse`` each return ``(value, log_det)``."""

    def forward(self, x, context=None):
        raise NotImplementedError

    def inverse(self, y, context=None):
        raise NotImplementedError


class Inverse(Bijection):
    """The inverse of ``bijection``: its ``forward`` is the wrapped layer's ``inverse``."""

    def __init__(self, bijection):
        super().__init__()
        self.bijection = bijection

    def forward(self, x, context=None):
        return self.bijection.inverse(x, context)

    def inverse(self, y, context=None):
        return self.bijection(y, context)


class Permutation(Bijection):
    """Reorders the coordinates: ``y = x[..., order]`` (log-determinant 0)."""

    def __init__(self, order):
        super().__init__()
        order = torch.as_tensor(order, dtype=torch.long)
        self.register_buffer("order", order)
        self.register_buffer("inverse_order", torch.argsort(order))

    def forward(self, x, context=None):
        return x[..., self.order], x.new_zeros(x.shape[:-1])

    def inverse(self, y, context=None):
        return y[..., self.inverse_order], y.new_zeros(y.shape[:-1])


class Standardize(Bijection):
    """The fixed map :math:`y = (x - m) / s` with buffers ``loc`` and ``scale``."""

    def __init__(self, dim):
        super().__init__()
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def set(self, loc, scale):
        """Set the map from data moments (``scale`` must be positive)."""
        self.loc.copy_(torch.as_tensor(loc, dtype=self.loc.dtype))
        self.scale.copy_(torch.as_tensor(scale, dtype=self.scale.dtype))

    def forward(self, x, context=None):
        log_det = -self.scale.log().sum()
        return (x - self.loc) / self.scale, log_det.expand(x.shape[:-1])

    def inverse(self, y, context=None):
        log_det = self.scale.log().sum()
        return y * self.scale + self.loc, log_det.expand(y.shape[:-1])


class ElementwiseAffine(Bijection):
    """The learnt map :math:`y = (x - \\mu) e^{-\\sigma}`, parameters ``loc`` and ``log_scale``."""

    def __init__(self, loc, log_scale):
        super().__init__()
        self.loc = nn.Parameter(torch.as_tensor(loc).clone())
        self.log_scale = nn.Parameter(torch.as_tensor(log_scale).clone().expand_as(self.loc).clone())

    def forward(self, x, context=None):
        return (x - self.loc) * torch.exp(-self.log_scale), (-self.log_scale.sum()).expand(x.shape[:-1])

    def inverse(self, y, context=None):
        return y * torch.exp(self.log_scale) + self.loc, self.log_scale.sum().expand(y.shape[:-1])


class _Unconditional(nn.Module):
    """Conditioner with nothing to condition on: learnt constants (zero at the start)."""

    def __init__(self, out_features):
        super().__init__()
        self.value = nn.Parameter(torch.zeros(out_features))

    def forward(self, x):
        return self.value.expand(x.shape[:-1] + self.value.shape)


class Coupling(Bijection):
    """Affine or spline coupling: the first ``split`` coordinates (and the context)
    parametrise ``transform`` applied to the others, which they do not see.

    Parameters
    ----------
    dim : int
    transform : :class:`~ppgen.nn.elementwise.Affine` or
        :class:`~ppgen.nn.elementwise.RationalQuadraticSpline`
    hidden : sequence of int
        Conditioner widths.
    context_dim : int
    activation : str
    split : int, optional
        Coordinates kept (default ``dim // 2``).
    """

    def __init__(self, dim, transform, hidden=(64, 64), context_dim=0, activation="relu", split=None):
        super().__init__()
        self.dim, self.transform, self.context_dim = dim, transform, context_dim
        self.split = dim // 2 if split is None else split
        n_in = self.split + context_dim
        n_out = (dim - self.split) * transform.num_params
        if n_in == 0:
            self.conditioner = _Unconditional(n_out)
        else:
            self.conditioner = MLP(n_in, n_out, hidden, activation)
            nn.init.zeros_(self.conditioner[-1].weight)
            nn.init.zeros_(self.conditioner[-1].bias)

    def _params(self, kept, context):
        inputs = kept if context is None else torch.cat([kept, context], dim=-1)
        return self.conditioner(inputs).unflatten(-1, (self.dim - self.split, self.transform.num_params))

    def _couple(self, x, context, direction):
        x, context = _broadcast_context(x, context)
        kept, changed = x[..., :self.split], x[..., self.split:]
        value, log_det = direction(changed, self._params(kept, context))
        return torch.cat([kept, value], dim=-1), log_det.sum(-1)

    def forward(self, x, context=None):
        return self._couple(x, context, self.transform.forward)

    def inverse(self, y, context=None):
        return self._couple(y, context, self.transform.inverse)


class MaskedAutoregressive(Bijection):
    """Masked autoregressive layer: :math:`y_i = \\tau(x_i; \\theta_i(x_{<i}, c))`.

    ``forward`` is one MADE pass; ``inverse`` needs ``dim`` sequential passes
    (each fixes one more coordinate). Parameters as :class:`Coupling`.
    """

    def __init__(self, dim, transform, hidden=(64, 64), context_dim=0, activation="relu"):
        super().__init__()
        self.dim, self.transform, self.context_dim = dim, transform, context_dim
        self.made = MADE(dim, transform.num_params, hidden, context_dim, activation)

    def forward(self, x, context=None):
        x, context = _broadcast_context(x, context)
        y, log_det = self.transform.forward(x, self.made(x, context))
        return y, log_det.sum(-1)

    def inverse(self, y, context=None):
        y, context = _broadcast_context(y, context)
        x = torch.zeros_like(y)
        for _ in range(self.dim):
            x, log_det = self.transform.inverse(y, self.made(x, context))
        return x, log_det.sum(-1)
