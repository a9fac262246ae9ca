"""The Pyro distribution of whole HMM sequences, hidden states summed out.

:class:`HMMSequences` is what the program of
:class:`~ppgen.models.hmm.base.HiddenMarkovModel` observes at the site ``"obs"``:
its ``log_prob`` is the model's forward algorithm, its ``sample`` the model's
simulator, so it holds no HMM logic of its own.
"""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints


class HMMSequences(TorchDistribution):
    """The marginal law of whole sequences under an HMM, states summed out.

    ``batch_shape`` is the parameters' batch shape followed by the number of
    sequences ``B``; ``event_shape`` is ``(T, *step_shape)``. ``log_prob`` is the
    forward algorithm (exact, differentiable, padding masked by ``lengths``);
    ``sample`` simulates the chain and the emissions.
    """

    arg_constraints = {}
    has_enumerate_support = False

    def __init__(self, hmm, params, lengths, length):
        transition = params["transition"]
        K = transition.shape[-1]
        lead = transition.shape[:-2]
        self.hmm, self.lengths, self.length = hmm, lengths, int(length)
        self.params = dict(params, initial=params["initial"].reshape(lead + (K,)))
        super().__init__(lead + lengths.shape, (self.length,) + hmm.step_shape, validate_args=False)

    @property
    def support(self):
        return constraints.independent(self.hmm.step_support, 1 + len(self.hmm.step_shape))

    def log_prob(self, value):
        return self.hmm._sequence_log_prob(value, self.lengths, self.params)

    def sample(self, sample_shape=()):
        if self.batch_shape != self.lengths.shape:
            raise NotImplementedError("HMMSequences.sample: batched parameters are not supported")
        n = int(torch.Size(sample_shape).numel())
        lengths = self.lengths.repeat(n)
        with torch.no_grad():
            x = self.hmm.sample(lengths.shape[0], self.length, params=self.params)
            x = self.hmm._fill_padding(x, lengths)
        return x.reshape(torch.Size(sample_shape) + self.lengths.shape + x.shape[1:])
