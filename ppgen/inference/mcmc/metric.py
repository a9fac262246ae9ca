"""The metric of Hamiltonian Monte Carlo: the inverse mass matrix :math:`M^{-1}`.

The kinetic energy of a momentum :math:`r` is :math:`K(r) = r^T M^{-1} r / 2`, its
velocity :math:`\\dot z = M^{-1} r`, and momenta are drawn as :math:`r = M^{1/2}\\eta`
for standard normal :math:`\\eta`. Every chain has its own metric (a leading chain
dimension): diagonal ``(C, D)`` or dense ``(C, D, D)``.
"""

from __future__ import annotations

import torch


class Metric:
    """The inverse mass matrix per chain: diagonal ``(C, D)`` or dense ``(C, D, D)``."""

    def __init__(self, inverse: torch.Tensor):
        self.inverse = inverse.contiguous()  # the compiled leaf reads it without stride checks
        self.dense = inverse.dim() == 3
        if self.dense:
            mass = torch.linalg.inv(inverse)
            self.mass_cholesky = torch.linalg.cholesky(0.5 * (mass + mass.transpose(-1, -2)))
        else:
            self.mass_sqrt = inverse.rsqrt()

    def velocity(self, r: torch.Tensor) -> torch.Tensor:
        """:math:`M^{-1} r`."""
        if self.dense:
            return (self.inverse @ r.unsqueeze(-1)).squeeze(-1)
        return self.inverse * r

    def kinetic(self, r: torch.Tensor) -> torch.Tensor:
        """:math:`r^T M^{-1} r / 2`."""
        return 0.5 * (self.velocity(r) * r).sum(-1)

    def momentum_from(self, noise: torch.Tensor) -> torch.Tensor:
        """The momentum :math:`M^{1/2}\\eta` of standard normal ``noise`` :math:`\\eta`."""
        if self.dense:
            return (self.mass_cholesky @ noise.unsqueeze(-1)).squeeze(-1)
        return noise * self.mass_sqrt

    def momentum(self, shape, generator, dtype, device) -> torch.Tensor:
        """A momentum drawn from :math:`N(0, M)` with ``generator``."""
        return self.momentum_from(torch.randn(shape, generator=generator, dtype=dtype, device=device))
