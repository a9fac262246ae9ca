"""The random numbers of NUTS transitions, named by what they decide.

A transition of one chain uses: a standard normal :math:`\\eta` for its momentum
(:math:`r = M^{1/2}\\eta`); per doubling ``j`` a uniform for the direction (forward when
below 1/2) and one for the biased merge of the new subtree; per leaf ``n`` of subtree
``j`` a uniform for the progressive choice. :class:`Noise` holds them explicitly, so the
reference kernel (:mod:`.reference`) and every accelerator can be run on the same numbers.

Each path draws them from the run's ``torch.Generator`` in its own order; the one-chain
layout (:meth:`Noise.draw`) is the momentum, then one float64 block of
``2 * max_tree_depth`` coins (direction and merge of each depth, interleaved) followed by
the leaf choices of depths ``0..5``, then the choices of each deeper subtree as it is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

#: Subtrees up to this depth have their leaf choices in the transition's first draw.
FIRST_DRAW_DEPTH = 6


@dataclass(frozen=True)
class Noise:
    """The random numbers of one transition of one chain.

    ``momentum (1, D)`` standard normal; ``directions`` and ``merges`` one uniform per
    depth; ``choices`` the leaves' uniforms, leaf ``n`` of subtree ``j`` at ``2^j - 1 + n``.
    """

    momentum: torch.Tensor
    directions: Sequence[float]
    merges: Sequence[float]
    choices: Sequence[float]

    def leaf_choices(self, j: int) -> Sequence[float]:
        """The uniforms of the ``2^j`` leaves of subtree ``j``."""
        return self.choices[2 ** j - 1:2 ** (j + 1) - 1]

    @classmethod
    def from_uniforms(cls, momentum: torch.Tensor, uniforms: Sequence[float], max_tree_depth: int) -> Noise:
        """From the one-chain layout: coins interleaved per depth, then the leaf choices."""
        uniforms = list(map(float, uniforms))
        coins = uniforms[:2 * max_tree_depth]
        return cls(momentum, coins[0::2], coins[1::2], uniforms[2 * max_tree_depth:])

    @classmethod
    def draw(cls, generator: torch.Generator, like: torch.Tensor, max_tree_depth: int) -> Noise:
        """Every number a transition of depth up to ``max_tree_depth`` may use, drawn in the
        one-chain layout; ``like (1, D)`` gives the momentum's shape, dtype and device."""
        momentum = torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
        first = 2 * max_tree_depth + 2 ** min(max_tree_depth, FIRST_DRAW_DEPTH) - 1
        blocks = [torch.rand(first, generator=generator, dtype=torch.float64)]
        blocks += [torch.rand(2 ** j, generator=generator, dtype=torch.float64)
                   for j in range(FIRST_DRAW_DEPTH, max_tree_depth)]
        return cls.from_uniforms(momentum, torch.cat(blocks).tolist(), max_tree_depth)

    def uniforms(self) -> torch.Tensor:
        """The uniforms in the one-chain layout, as a float64 vector."""
        coins = [u for pair in zip(self.directions, self.merges) for u in pair]
        return torch.tensor(coins + list(self.choices), dtype=torch.float64)


class GeneratorDraws:
    """A batch of chains' numbers drawn from ``generator`` as the lockstep sampler asks for
    them: the momentum, then per depth the directions, the leaf choices and the merges."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def momentum(self, metric, like: torch.Tensor) -> torch.Tensor:
        return metric.momentum(like.shape, self.generator, like.dtype, like.device)

    def direction(self, j: int, like: torch.Tensor) -> torch.Tensor:
        return self._uniform((like.shape[0],), like)

    def merge(self, j: int, like: torch.Tensor) -> torch.Tensor:
        return self._uniform((like.shape[0],), like)

    def choices(self, j: int, like: torch.Tensor) -> torch.Tensor:
        """``(2^j, C)``."""
        return self._uniform((2 ** j, like.shape[0]), like)

    def _uniform(self, shape, like):
        return torch.rand(shape, generator=self.generator, dtype=like.dtype, device=like.device)


class ReplayedDraws:
    """The lockstep sampler's numbers taken from one :class:`Noise` per chain, for one
    transition: how the batched paths are checked against the reference kernel."""

    def __init__(self, noises: Sequence[Noise]):
        self.noises = noises

    def momentum(self, metric, like: torch.Tensor) -> torch.Tensor:
        return metric.momentum_from(torch.cat([noise.momentum for noise in self.noises]).to(like))

    def direction(self, j: int, like: torch.Tensor) -> torch.Tensor:
        return like.new_tensor([noise.directions[j] for noise in self.noises])

    def merge(self, j: int, like: torch.Tensor) -> torch.Tensor:
        return like.new_tensor([noise.merges[j] for noise in self.noises])

    def choices(self, j: int, like: torch.Tensor) -> torch.Tensor:
        return like.new_tensor([list(noise.leaf_choices(j)) for noise in self.noises]).T.contiguous()
