"""An exponential moving average of a network's weights (Polyak averaging).

After optimiser step :math:`n` (counting from 0) the average moves towards the
trained weights :math:`\\theta_n`,

.. math::
    \\bar\\theta \\leftarrow d_n \\bar\\theta + (1 - d_n)\\, \\theta_n, \\qquad
    d_n = \\min\\Big(d, \\frac{1 + n}{10 + n}\\Big),

so it starts at the initial weights and, with the warm-up factor of TensorFlow's
``ExponentialMovingAverage(num_updates=...)`` (also diffusers' ``EMAModel``), averages
over roughly the last :math:`\\min(n / 9, 1 / (1 - d))` steps: a short run is not
dragged back to its initialisation. Ho et al. (2020) sample from such an average of
their denoiser (:math:`d = 0.9999`). Buffers (batch-norm statistics; the denoisers
here have none) are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage(nn.Module):
    """The moving average of ``module``'s parameters.

    Parameters
    ----------
    module : nn.Module
        The trained network; :attr:`average` is a frozen copy of it.
    decay : float
        :math:`d` in [0, 1).

    The average and its update count are in ``state_dict`` (saved fits keep them)
    and in :meth:`state` / :meth:`load_state` (training checkpoints).
    """

    def __init__(self, module, decay):
        super().__init__()
        decay = float(decay)
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        self.decay = decay
        self.average = copy.deepcopy(module).requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def current_decay(self):
        """:math:`d_n` for the next update."""
        n = int(self.updates)
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def reset(self, module):
        """Start again from ``module``'s weights (no updates yet)."""
        self.average.load_state_dict(module.state_dict())
        self.updates.zero_()

    @torch.no_grad()
    def update(self, module):
        """One step of the average towards ``module``'s current weights."""
        weight = 1.0 - self.current_decay()
        torch._foreach_lerp_(list(self.average.parameters()), [p.detach() for p in module.parameters()], weight)
        for mine, theirs in zip(self.average.buffers(), module.buffers()):
            mine.copy_(theirs)
        self.updates += 1

    def state(self):
        """A copy of the average and its count (tensors only), for checkpoints."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def load_state(self, state):
        self.load_state_dict(state)
