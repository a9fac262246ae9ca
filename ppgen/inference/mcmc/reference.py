"""The reference NUTS and HMC transitions: the algorithm written plainly, from its parts.

NUTS (Hoffman and Gelman 2014, in the multinomial form of Betancourt 2017 that Stan
uses), one chain: draw a momentum :math:`r \\sim N(0, M)`; then, for depth
:math:`j = 0, 1, \\dots`, pick a direction and grow the trajectory by a subtree of
:math:`2^j` leapfrog steps (:mod:`.integrator`) from its end on that side. The subtree
stops early on a divergence or a U-turn of one of its binary blocks
(:mod:`.termination`) and is then discarded; otherwise its proposal may replace the
trajectory's (:mod:`.proposal`), and the trajectory stops when it has turned as a whole
or reached ``max_tree_depth``. The random numbers are explicit (:class:`.randomness.Noise`).

This is the definition the faster paths are tested against, on the same random numbers
(``tests/inference/test_reference_kernel.py``): the sampler's one-chain and lockstep
transitions (:mod:`.nuts`), the compiled lockstep leaf (:mod:`.lockstep`), free-running
chains (:mod:`.free_running`) and the C++ transition (:mod:`.native`). It is slow (a
dozen tensor operations a leaf) and runs no chain of a real fit; HMC's
:func:`hmc_transition` does, for every chain at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .integrator import State, leaf, leapfrog
from .metric import Metric
from .proposal import acceptance, biased, energy_error, log_add_exp, progressive
from .randomness import Noise
from .termination import MAX_DELTA_H, closing_levels, opening_levels, turned


@dataclass
class Point:
    """A point of the trajectory: position, momentum, gradient, potential and velocity."""

    z: Tensor
    r: Tensor
    grad: Tensor
    potential: Tensor
    velocity: Tensor


@dataclass
class Subtree:
    end: Point
    proposal: State
    log_weight: float
    rho: Tensor
    turning: bool
    diverging: bool
    accept_sum: float
    leaves: int


def nuts_transition(value_and_grad: Callable, state: State, step_size: float, metric: Metric,
                    max_tree_depth: int, noise: Noise) -> tuple[State, dict]:
    """One NUTS transition of one chain from ``state`` (``(1, D)`` tensors).

    Returns the new state and ``{"accept", "depth", "diverging", "energy", "leapfrogs"}``
    (the mean acceptance statistic over the leaves, the doublings made, whether a leaf
    diverged, :math:`H_0`, the number of leapfrog steps)."""
    r = metric.momentum_from(noise.momentum)
    start = Point(state.z, r, state.grad, state.potential, metric.velocity(r))
    energy0 = float(state.potential) + float(metric.kinetic(r))
    left = right = start
    proposal, log_weight, rho = state, 0.0, r
    depth, diverging, accept_sum, leaves = 0, False, 0.0, 0
    for j in range(max_tree_depth):
        forward = noise.directions[j] < 0.5
        step = step_size if forward else -step_size
        sub = build_subtree(value_and_grad, right if forward else left, step, j, energy0, metric,
                            noise.leaf_choices(j))
        depth, accept_sum, leaves = j + 1, accept_sum + sub.accept_sum, leaves + sub.leaves
        diverging = diverging or sub.diverging
        if sub.turning or sub.diverging:
            break  # the subtree is discarded
        if biased(sub.log_weight, log_weight, noise.merges[j]):
            proposal = sub.proposal
        log_weight = log_add_exp(log_weight, sub.log_weight)
        if forward:
            right = sub.end
        else:
            left = sub.end
        rho = rho + sub.rho
        if bool(turned(left.velocity, right.velocity, rho)):
            break
    stats = {"accept": accept_sum / max(leaves, 1), "depth": depth, "diverging": diverging,
             "energy": energy0, "leapfrogs": leaves}
    return proposal, stats


def build_subtree(value_and_grad: Callable, start: Point, step: float, j: int, energy0: float, metric: Metric,
                  choices) -> Subtree:
    """``2^j`` leapfrog steps of signed length ``step`` from ``start``, with progressive
    multinomial sampling of the proposal and the U-turn check of every binary block."""
    step_t = start.z.new_full((1, 1), step)
    half_t = start.z.new_full((1, 1), 0.5 * step)
    point, proposal = start, State(start.z, start.potential, start.grad)
    log_weight, rho = -math.inf, torch.zeros_like(start.r)  # rho: the momenta before this leaf
    accept_sum, leaves, turning, diverging = 0.0, 0, False, False
    blocks: dict[int, tuple[Tensor, Tensor]] = {}  # level -> (velocity at its first leaf, rho before it)
    for n in range(2 ** j):
        z, r, grad, potential, energy, velocity, _ = leaf(value_and_grad, point.z, point.r, point.grad, rho, step_t,
                                                          half_t, metric.velocity)
        point = Point(z, r, grad, potential, velocity)
        delta = energy_error(float(energy), energy0)
        log_weight, take = progressive(log_weight, delta, choices[n])
        if take:
            proposal = State(z, potential, grad)
        accept_sum, leaves = accept_sum + acceptance(delta), leaves + 1
        for level in range(1, opening_levels(n, j) + 1):
            blocks[level] = (velocity, rho)
        rho = rho + r
        if delta > MAX_DELTA_H:
            diverging = True
            break
        if any(bool(turned(blocks[level][0], velocity, rho - blocks[level][1]))
               for level in range(1, closing_levels(n) + 1)):
            turning = True
            break
    return Subtree(point, proposal, log_weight, rho, turning, diverging, accept_sum, leaves)


def hmc_transition(step_fn: Callable, state: State, step_size: Tensor, metric: Metric, num_steps: int,
                   momentum_noise: Tensor, uniform: Tensor) -> tuple[State, dict]:
    """Fixed-length HMC with a Metropolis correction, every chain at once.

    ``step_fn(z, r, grad, step) -> (z, r, grad, U)`` is one leapfrog step
    (:func:`.integrator.leapfrog`, or the compiled leaf doing the same arithmetic);
    ``momentum_noise (C, D)`` standard normal, ``uniform (C,)`` the acceptance draws."""
    z, grad, potential = state.z, state.grad, state.potential
    r = metric.momentum_from(momentum_noise)
    energy0 = potential + metric.kinetic(r)
    new_z, new_r, new_grad, new_potential = z, r, grad, potential
    for _ in range(num_steps):
        new_z, new_r, new_grad, new_potential = step_fn(new_z, new_r, new_grad, step_size)
    delta = new_potential + metric.kinetic(new_r) - energy0
    delta = torch.where(torch.isnan(delta), math.inf, delta)
    accept_prob = torch.exp(-delta.clamp(min=0))
    take = uniform < accept_prob
    column = take.unsqueeze(-1)
    new_state = State(torch.where(column, new_z, z), torch.where(take, new_potential, potential),
                      torch.where(column, new_grad, grad))
    stats = {"accept": accept_prob, "depth": torch.zeros_like(take, dtype=torch.long),
             "diverging": delta > MAX_DELTA_H, "energy": energy0,
             "leapfrogs": torch.full_like(accept_prob, float(num_steps))}
    return new_state, stats


def plain_step(value_and_grad: Callable, metric: Metric) -> Callable:
    """:func:`hmc_transition`'s ``step_fn`` from the integrator itself."""
    def step_fn(z, r, grad, step):
        return leapfrog(value_and_grad, z, r, grad, step, 0.5 * step, metric.velocity)
    return step_fn
