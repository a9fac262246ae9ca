"""MADE: a feed-forward network whose outputs for coordinate i see only inputs before i.

Germain et al. (2015). Input coordinate :math:`i` (0-based) has degree
:math:`i + 1`, context inputs degree 0; hidden units get degrees cycling over
``1 .. D-1`` (``0 .. D-1`` with a context, so the first coordinate's outputs can
depend on it); a weight from a unit of degree :math:`a` to one of degree
:math:`b` is kept when :math:`b \\ge a` (hidden) or :math:`b > a` (output). The
outputs of coordinate :math:`i` therefore depend on :math:`x_{<i}` and the
context only: one pass gives every conditional's parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .networks import make_activation


class MaskedLinear(nn.Linear):
    """A linear layer with a fixed 0/1 mask on its weight."""

    def __init__(self, mask):
        out_features, in_features = mask.shape
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Autoregressive parameters ``(..., dim, params_per_dim)`` from ``x`` (and a context).

    Parameters
    ----------
    dim : int
        Number of autoregressive coordinates.
    params_per_dim : int
        Outputs per coordinate.
    hidden : sequence of int
        Hidden widths (at least one layer).
    context_dim : int
        Size of a context vector every output may depend on.
    activation : str
    zero_last : bool
        Start the output layer at zero (its outputs are then all zero).
    """

    def __init__(self, dim, params_per_dim, hidden=(64, 64), context_dim=0, activation="relu",
                 zero_last=True):
        super().__init__()
        if not hidden:
            raise ValueError("MADE needs at least one hidden layer")
        self.dim, self.params_per_dim, self.context_dim = dim, params_per_dim, context_dim
        in_degrees = torch.cat([torch.arange(1, dim + 1), torch.zeros(context_dim, dtype=torch.long)])
        low = 0 if context_dim else 1
        span = max(dim - low, 1)
        layers, previous = [], in_degrees
        for width in hidden:
            degrees = low + torch.arange(int(width)) % span
            layers.append(MaskedLinear(degrees[:, None] >= previous[None, :]))
            previous = degrees
        out_degrees = torch.arange(1, dim + 1).repeat_interleave(params_per_dim)
        self.output = MaskedLinear(out_degrees[:, None] > previous[None, :])
        if zero_last:
            nn.init.zeros_(self.output.weight)
            nn.init.zeros_(self.output.bias)
        self.hidden = nn.ModuleList(layers)
        self.activation = make_activation(activation)

    def forward(self, x, context=None):
        h = x if context is None else torch.cat([x, context], dim=-1)
        for layer in self.hidden:
            h = self.activation(layer(h))
        return self.output(h).unflatten(-1, (self.dim, self.params_per_dim))
