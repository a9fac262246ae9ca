"""When a NUTS trajectory stops: the generalised U-turn criterion and divergence.

A (sub)trajectory with end velocities :math:`v^- = M^{-1} r^-`, :math:`v^+ = M^{-1} r^+`
and momentum sum :math:`\\rho` (every point's momentum, ends included) has turned when
:math:`v^- \\cdot \\rho \\le 0` or :math:`v^+ \\cdot \\rho \\le 0` (Betancourt 2017).
NUTS checks the whole trajectory after each doubling and, inside a new subtree of
:math:`2^j` leaves, every binary block: the block of level :math:`k` (``2^k`` leaves)
that starts at leaf :math:`n` with :math:`n \\bmod 2^k = 0` is checked at its last leaf.
Walking the leaves in order, only the start of each open block is kept (velocity and the
momentum sum before it): ``O(max_tree_depth)`` memory, the iterative form of the
recursion. A leaf with :math:`H - H_0 >` :data:`MAX_DELTA_H` diverges (Stan's threshold).
"""

from __future__ import annotations

import torch

#: Stan's threshold on the energy error that marks a divergent transition.
MAX_DELTA_H = 1000.0


def turned(v_minus: torch.Tensor, v_plus: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """The U-turn criterion fails (a trailing dimension of vectors; leading ones broadcast)."""
    return ((v_minus * rho).sum(-1) <= 0) | ((v_plus * rho).sum(-1) <= 0)


def trailing_bits(n: int, bit: int) -> int:
    """How many of ``n``'s lowest bits equal ``bit`` in a row."""
    count = 0
    while (n & 1) == bit and count < 64:
        n >>= 1
        count += 1
    return count


def opening_levels(n: int, j: int) -> int:
    """The blocks that start at leaf ``n`` of a depth-``j`` subtree: levels ``1..`` this."""
    return min(trailing_bits(n, 0), j) if n else j


def closing_levels(n: int) -> int:
    """The blocks that end at leaf ``n``: levels ``1..`` this."""
    return trailing_bits(n, 1)


def level_masks(j: int, levels: int, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``[(opening, closing)]`` for the ``2^j`` leaves of a depth-``j`` subtree: boolean
    ``(levels,)`` masks of the blocks (levels ``1..j``) that open or close at each leaf."""
    masks = []
    for n in range(2 ** j):
        opening = torch.zeros(levels, dtype=torch.bool)
        closing = torch.zeros(levels, dtype=torch.bool)
        opening[1:opening_levels(n, j) + 1] = True
        closing[1:closing_levels(n) + 1] = True
        masks.append((opening.to(device), closing.to(device)))
    return masks
