"""How NUTS picks its next state from a trajectory: multinomial sampling (Stan's scheme).

Each point of the trajectory has weight :math:`e^{-\\delta}` with :math:`\\delta = H - H_0`
(a non-finite :math:`\\delta` counts as :math:`+\\infty`: weight 0). Within a subtree the
choice is *progressive*: leaf :math:`n` replaces the subtree's proposal with probability
:math:`w_n / \\sum_{m \\le n} w_m`, which leaves the proposal distributed as the weights.
A finished subtree replaces the trajectory's proposal with probability
:math:`\\min(1, W_{sub} / W_{old})` (*biased* towards the new subtree, which improves
mixing and keeps the transition reversible). Log weights throughout; these are the
scalar forms the reference kernel uses, each the same test the batched paths make.
"""

from __future__ import annotations

import math


def log_add_exp(a: float, b: float) -> float:
    """:math:`\\log(e^a + e^b)` with :math:`-\\infty` as the empty sum."""
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def energy_error(energy: float, energy0: float) -> float:
    """:math:`\\delta = H - H_0`, :math:`+\\infty` where it is not a number."""
    delta = energy - energy0
    return math.inf if delta != delta else delta


def progressive(log_weight: float, delta: float, uniform: float) -> tuple[float, bool]:
    """A leaf of error ``delta`` joins a subtree of total log weight ``log_weight``: the new
    total and whether the leaf becomes the subtree's proposal (``uniform`` in [0, 1))."""
    merged = log_add_exp(log_weight, -delta)
    return merged, merged > -math.inf and uniform < math.exp(-delta - merged)


def biased(sub_log_weight: float, log_weight: float, uniform: float) -> bool:
    """Whether a finished subtree's proposal replaces the trajectory's."""
    return uniform < math.exp(min(sub_log_weight - log_weight, 0.0))


def acceptance(delta: float) -> float:
    """The leaf's Metropolis acceptance statistic :math:`\\min(1, e^{-\\delta})`, whose mean
    over the trajectory the step-size adaptation targets."""
    return math.exp(-delta) if delta > 0 else 1.0
