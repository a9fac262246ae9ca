"""A bijection onto positive-definite matrices, so Wishart sites work in NUTS/SVI.

torch registers ``transform_to(positive_definite)`` but no ``biject_to``: its
transform maps a full ``D x D`` matrix and ignores the upper triangle, which
would leave flat directions in an MCMC potential. :class:`PositiveDefiniteBijection`
maps the ``D (D + 1) / 2`` free entries of a Cholesky factor ``L`` (log-diagonal)
to :math:`\\Lambda = L L^\\top`, with

.. math:: \\log |J| = D \\log 2 + \\sum_{i=1}^{D} (D - i + 2) \\log L_{ii},

the ``(D - i + 1)`` from :math:`L \\mapsto L L^\\top` and the ``1`` from the exp
on the diagonal. Importing :mod:`ppgen.models` registers it with ``biject_to``.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import biject_to, constraints
from torch.distributions.transforms import Transform


def _dim_from_vector_length(k):
    d = int(round((math.sqrt(8 * k + 1) - 1) / 2))
    if d * (d + 1) // 2 != k:
        raise ValueError(f"a vector of length {k} is not a lower triangle")
    return d


class PositiveDefiniteBijection(Transform):
    domain = constraints.real_vector
    codomain = constraints.positive_definite
    bijective = True

    def __eq__(self, other):
        return isinstance(other, PositiveDefiniteBijection)

    def _cholesky(self, x):
        d = _dim_from_vector_length(x.shape[-1])
        rows, cols = torch.tril_indices(d, d, device=x.device)
        diag = rows == cols
        entries = torch.where(diag, x.exp(), x)
        tril = x.new_zeros(x.shape[:-1] + (d, d))
        tril[..., rows, cols] = entries
        return tril

    def _call(self, x):
        tril = self._cholesky(x)
        return tril @ tril.transpose(-1, -2)

    def _inverse(self, y):
        tril = torch.linalg.cholesky(y)
        d = y.shape[-1]
        rows, cols = torch.tril_indices(d, d, device=y.device)
        entries = tril[..., rows, cols]
        return torch.where(rows == cols, entries.log(), entries)

    def log_abs_det_jacobian(self, x, y):
        d = _dim_from_vector_length(x.shape[-1])
        rows, cols = torch.tril_indices(d, d, device=x.device)
        log_diag = x[..., rows == cols]  # log L_ii, i = 1..D
        powers = torch.arange(d + 1, 1, -1, dtype=x.dtype, device=x.device)
        return d * math.log(2.0) + (powers * log_diag).sum(-1)

    def forward_shape(self, shape):
        d = _dim_from_vector_length(shape[-1])
        return shape[:-1] + (d, d)

    def inverse_shape(self, shape):
        d = shape[-1]
        return shape[:-2] + (d * (d + 1) // 2,)


@biject_to.register(constraints.positive_definite)
def _biject_to_positive_definite(constraint):
    return PositiveDefiniteBijection()
