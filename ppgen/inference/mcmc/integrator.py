"""The leapfrog integrator of Hamilton's equations, and the point it moves.

One step of length :math:`\\epsilon` from :math:`(z, r)` with potential :math:`U`
(velocity Verlet): :math:`r \\leftarrow r - \\tfrac{\\epsilon}{2}\\nabla U(z)`,
:math:`z \\leftarrow z + \\epsilon M^{-1} r`, :math:`r \\leftarrow r -
\\tfrac{\\epsilon}{2}\\nabla U(z)`. It is reversible and volume preserving, so the
Hamiltonian :math:`H = U(z) + r^T M^{-1} r / 2` it changes only by its error is a valid
Metropolis correction. Every path of the sampler, compiled or not, takes its steps here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor


@dataclass
class State:
    """Chains' positions and what the sampler keeps of them."""

    z: Tensor  # (C, D) unconstrained position
    potential: Tensor  # (C,) U(z), the negative log joint
    grad: Tensor  # (C, D) its gradient


def leapfrog(value_and_grad: Callable, z: Tensor, r: Tensor, grad: Tensor, step: Tensor, half_step: Tensor,
             velocity: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One leapfrog step of signed length ``step (C, 1)`` (``half_step`` its half); returns
    ``(z, r, grad, U)`` at the new point. ``value_and_grad``: ``z -> (U (C,), grad (C, D))``;
    ``velocity``: ``r -> M^{-1} r``."""
    r = r - half_step * grad
    z = z + step * velocity(r)
    potential, grad = value_and_grad(z)
    r = r - half_step * grad
    return z, r, grad, potential


def leaf(value_and_grad: Callable, z: Tensor, r: Tensor, grad: Tensor, rho: Tensor, step: Tensor,
         half_step: Tensor, velocity: Callable[[Tensor], Tensor]) -> tuple[Tensor, ...]:
    """A leapfrog step and what NUTS reads of the new point:
    ``(z, r, grad, U, H, M^{-1} r, rho + r)`` with ``rho`` a running momentum sum."""
    z, r, grad, potential = leapfrog(value_and_grad, z, r, grad, step, half_step, velocity)
    v = velocity(r)
    return z, r, grad, potential, potential + 0.5 * (v * r).sum(-1), v, rho + r


def diagonal(inverse: Tensor) -> Callable[[Tensor], Tensor]:
    """The velocity map of a diagonal inverse metric ``inverse (C, D)``."""
    return lambda r: inverse * r
