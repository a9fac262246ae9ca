"""Hidden Markov models, Bayesian, with the hidden states summed out exactly.

.. math::
    \\pi \\sim \\mathrm{Dir}(a_\\pi 1_K), \\quad
    A_{k\\cdot} \\sim \\mathrm{Dir}(a_A 1_K), \\quad \\theta_k \\sim p_0(\\theta),

    z_0 \\sim \\mathrm{Cat}(\\pi), \\quad z_t \\mid z_{t-1} \\sim \\mathrm{Cat}(A_{z_{t-1} \\cdot}), \\quad
    x_t \\mid z_t \\sim p(x \\mid \\theta_{z_t}),

so that :math:`p(x, z \\mid \\theta) = \\pi_{z_0} e_0(z_0) \\prod_{t \\ge 1} A_{z_{t-1} z_t} e_t(z_t)`
with :math:`e_t(k) = p(x_t \\mid \\theta_k)`. :math:`\\pi` is the distribution of the
*first* hidden state, as in hmmlearn (Pyro's ``DiscreteHMM`` puts its initial
distribution one transition earlier).

Emissions: :class:`CategoricalHMM` (symbols; ``emission`` rows ~ Dirichlet),
:class:`GaussianHMM` (``locs`` ~ Normal, ``precision`` ~ Gamma per dimension or
Wishart), :class:`PoissonHMM` (``rates`` ~ Gamma), :class:`BernoulliHMM` (binary
vectors; ``probs`` ~ Beta). The default priors are nearly flat, so MAP is
maximum likelihood up to tiny ridges.

The Pyro program observes each whole sequence at the site ``"obs"`` through
:class:`HMMSequences`, a distribution whose ``log_prob`` is the forward algorithm
(:mod:`ppgen.models.hmm.algorithms`: a log-space parallel scan), so SVI, MAP and
NUTS sum the states out exactly and the program has no discrete sites.
:meth:`~HiddenMarkovModel.fit_map` (what ``ppgen.fit(..., MAP())`` runs) is
Baum-Welch EM with closed-form MAP M-steps and random restarts, the restarts run
together as one batch. Given parameters, the state posterior is exact:
:meth:`~HiddenMarkovModel.posterior_states` (forward-backward),
:meth:`~HiddenMarkovModel.viterbi`, exact posterior paths
(:meth:`~HiddenMarkovModel.sample_states`); ``ppgen.fit(model, data, Exact())``
(through :meth:`~HiddenMarkovModel.exact_posterior`) gives them at the model's
point parameters (fit it first, or ``set_params``): ``fit.marginals["states"]``
``(B, T, K)``, ``fit.log_evidence`` :math:`= \\sum_b \\log p(x_b \\mid \\theta)` and
exact joint draws of the state paths in ``fit.posterior["states"]``.

Data are batches of sequences of different lengths: a list of arrays ``(T_i,)``
or ``(T_i, D)``, a padded array with ``lengths``, a dict
``{"sequences": ..., "lengths": ...}`` or a :class:`Sequences`.

Layout
------
This module is the public entry point and re-exports everything:

- :mod:`ppgen.models.hmm.base`: :class:`HiddenMarkovModel`, the base class
  (configuration, priors, Pyro program, exact algorithms, simulation, hooks);
- :mod:`ppgen.models.hmm.families`: :class:`CategoricalHMM`, :class:`GaussianHMM`,
  :class:`PoissonHMM`, :class:`BernoulliHMM`;
- :mod:`ppgen.models.hmm.data`: :class:`Sequences` and the packing and
  validation of ragged data;
- :mod:`ppgen.models.hmm.distribution`: :class:`HMMSequences`;
- :mod:`ppgen.models.hmm.em`: Baum-Welch EM (``fit_map``, ``initialize``);
- :mod:`ppgen.models.hmm.algorithms` and :mod:`ppgen.models.hmm.scans`: the
  exact algorithms and the semiring scans they are built from.
"""

from __future__ import annotations

from .base import HiddenMarkovModel
from .data import Sequences
from .distribution import HMMSequences
from .families import BernoulliHMM, CategoricalHMM, GaussianHMM, PoissonHMM

__all__ = ["HiddenMarkovModel", "CategoricalHMM", "GaussianHMM", "PoissonHMM", "BernoulliHMM",
           "HMMSequences", "Sequences"]
