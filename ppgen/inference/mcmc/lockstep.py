"""One leaf of a NUTS subtree for a batch of chains, bookkeeping included, as one graph.

:meth:`ppgen.inference.mcmc.nuts.Sampler._subtree` moves ``C`` chains in lockstep; per
leaf it takes a leapfrog step and then updates, chain by chain under masks, the
multinomial weights and proposal, the acceptance statistic, the momentum sums of
the open binary blocks and the U-turn checks of the blocks that close. In eager
PyTorch that is some thirty small tensor operations a leaf, each a few
microseconds of dispatch, several times the cost of the leapfrog step itself.
:func:`lockstep_leaf` writes all of it in tensor operations of fixed shapes (the
open and closing blocks as masks over the tree's levels), so that
:class:`~ppgen.inference.mcmc.potential.Potential` records it with the fused leapfrog
step and TorchInductor compiles it into one kernel: one call and one read of the
number of chains still running, per leaf.

The arithmetic is the sampler's, for a diagonal metric. For chain ``c`` at leaf
``n`` with :math:`\\delta = H_n - H_0` (non-finite: :math:`+\\infty`): the weight
:math:`w \\leftarrow \\log(e^{w} + e^{-\\delta})`; the leaf replaces the proposal
when the leaf's uniform is below :math:`e^{-\\delta - w}`; the acceptance sum
grows by :math:`\\min(1, e^{-\\delta})`; a block of levels ``l`` that opens here
records the leaf's velocity :math:`M^{-1} r` and the momentum sum before it; a
block that closes here made a U-turn when :math:`v^- \\cdot \\rho \\le 0` or
:math:`v^+ \\cdot \\rho \\le 0` for its momentum sum :math:`\\rho`; a chain stops
on a U-turn or when :math:`\\delta > 1000` (divergent). Stopped chains keep their
state (every update is masked by ``alive``).
"""

from __future__ import annotations

import math

import torch

from .fallback import Refused
from .inductor import compiled_and_checked
from .potential import close_enough
from .termination import MAX_DELTA_H

#: The names of :func:`lockstep_leaf`'s carried state, in order (inputs and outputs).
CARRIED = ("z", "r", "grad", "potential", "rho", "log_weight", "proposal_z", "proposal_potential",
           "proposal_grad", "accept_sum", "leaves", "block_velocity", "block_rho", "alive", "turning",
           "diverging")


def lockstep_leaf(leaf, carried, step, half_step, inverse, energy0, uniform, opening, closing):
    """One leaf for every chain.

    Parameters
    ----------
    leaf : callable
        The fused leapfrog step ``(z, r, grad, rho, step, half_step, inverse) ->
        (z, r, grad, U, H, M^{-1} r, rho + r)``.
    carried : tuple of tensors, in :data:`CARRIED` order
        ``z, r, grad (C, D)``, ``potential (C,)``, ``rho (C, D)`` (the subtree's momentum
        sum), ``log_weight (C,)``, the proposal ``(C, D), (C,), (C, D)``, ``accept_sum,
        leaves (C,)``, ``block_velocity, block_rho (L, C, D)`` over the tree's levels,
        ``alive, turning, diverging (C,)`` booleans.
    step, half_step : ``(C, 1)`` signed step sizes; ``inverse (C, D)``: the diagonal metric.
    energy0 : ``(C,)``; uniform : ``(C,)``, this leaf's draw.
    opening, closing : ``(L,)`` booleans: the levels whose block opens, or closes, at this leaf.

    Returns
    -------
    tuple
        The new ``carried`` followed by the number of chains still running (a 0-d tensor).
    """
    (z, r, grad, potential, rho, log_weight, proposal_z, proposal_potential, proposal_grad, accept_sum,
     leaves, block_velocity, block_rho, alive, turning, diverging) = carried
    new_z, new_r, new_grad, new_potential, energy, velocity, _ = leaf(z, r, grad, rho, step, half_step, inverse)
    column = alive.unsqueeze(-1)
    z, r, grad = torch.where(column, new_z, z), torch.where(column, new_r, r), torch.where(column, new_grad, grad)
    potential = torch.where(alive, new_potential, potential)

    delta = energy - energy0
    delta = torch.where(torch.isnan(delta), torch.full_like(delta, math.inf), delta)
    merged = torch.logaddexp(log_weight, -delta)
    take = alive & (uniform < torch.exp(-delta - merged))
    zero = torch.zeros_like(delta)
    accept_sum = accept_sum + torch.where(alive, torch.exp(-delta.clamp(min=0)), zero)
    leaves = leaves + alive.to(leaves.dtype)
    log_weight = torch.where(alive, merged, log_weight)
    take_column = take.unsqueeze(-1)
    proposal_z = torch.where(take_column, z, proposal_z)
    proposal_potential = torch.where(take, potential, proposal_potential)
    proposal_grad = torch.where(take_column, grad, proposal_grad)

    levels = opening.reshape(-1, 1, 1)
    block_velocity = torch.where(levels, velocity.unsqueeze(0), block_velocity)
    block_rho = torch.where(levels, rho.unsqueeze(0), block_rho)  # the sum before this leaf
    rho = torch.where(column, rho + r, rho)
    block_sum = rho.unsqueeze(0) - block_rho
    turned = ((block_velocity * block_sum).sum(-1) <= 0) | ((velocity.unsqueeze(0) * block_sum).sum(-1) <= 0)
    leaf_turning = (turned & closing.reshape(-1, 1)).any(0)
    leaf_diverging = delta > MAX_DELTA_H
    turning = turning | (alive & leaf_turning)
    diverging = diverging | (alive & leaf_diverging)
    alive = alive & ~(leaf_turning | leaf_diverging)
    return (z, r, grad, potential, rho, log_weight, proposal_z, proposal_potential, proposal_grad,
            accept_sum, leaves, block_velocity, block_rho, alive, turning, diverging, alive.sum())


def compile_lockstep(potential, levels):
    """:func:`lockstep_leaf` for ``potential``'s chains and a tree of ``levels`` levels,
    compiled by TorchInductor with the fused leapfrog step
    (a function of the flat arguments ``(*carried, step, half_step, inverse, energy0,
    uniform, opening, closing)``), checked against eager evaluation at probe points;
    raises :class:`~.fallback.Refused` unless the potential is compiled with several chains
    and the kernel agrees."""
    if potential.mode != "compiled" or potential.chains < 2:
        raise Refused("needs a compiled potential over several chains")
    count = len(CARRIED)

    def eager(*args):
        return lockstep_leaf(potential._leaf_eager, args[:count], *args[count:])

    def probe(seed):
        carried, rest = _probe_args(potential, levels, torch.Generator().manual_seed(seed))
        return carried + rest

    tol = 1e-10 if potential.initial.dtype == torch.float64 else 2e-5
    return compiled_and_checked(eager, probe, lambda a, b: close_enough(a, b, tol) if a.is_floating_point()
                                else torch.equal(a, b))


def _probe_args(potential, levels, generator):
    """Random ``(carried, rest)`` arguments of :func:`lockstep_leaf`
    around the initial point: an example to record and compile with, and probes to check."""
    z = potential.initial
    c, d = z.shape
    like = lambda *shape: torch.randn(shape, generator=generator, dtype=z.dtype).to(z.device)  # noqa: E731
    coin = lambda *shape: torch.rand(shape, generator=generator).to(z.device) < 0.7  # noqa: E731
    u = z + 0.1 * like(c, d)
    with torch.no_grad():
        log_joint = potential._vectorized(u) if potential.mode != "loop" else -potential._loop(u, grad=False)[0]
    carried = (u, like(c, d), like(c, d), -log_joint, like(c, d), like(c), like(c, d), like(c), like(c, d),
               like(c).abs(), like(c).abs().round(), like(levels, c, d), like(levels, c, d), coin(c),
               ~coin(c) & coin(c), ~coin(c) & coin(c))
    step = 0.05 * torch.rand((c, 1), generator=generator, dtype=z.dtype).to(z.device) + 0.01
    rest = (step, 0.5 * step, torch.rand((c, d), generator=generator, dtype=z.dtype).to(z.device) + 0.5,
            -log_joint + 0.5 * d, torch.rand((c,), generator=generator, dtype=z.dtype).to(z.device),
            coin(levels), coin(levels))
    return carried, rest
