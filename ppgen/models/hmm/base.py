"""The base class of the HMM families: priors, the Pyro program, exact inference.

:class:`HiddenMarkovModel` holds the constructor and configuration, the priors
on ``initial`` and ``transition`` and the Pyro program (observing
:class:`~ppgen.models.hmm.distribution.HMMSequences`), the exact algorithms at
given parameters (``log_prob``, ``log_likelihood``, ``posterior_states``,
``viterbi``, ``sample_states``, ``exact_posterior``), simulation and the hooks the
emission families override. Data packing comes from
:class:`~ppgen.models.hmm.data.SequenceDataMixin`, Baum-Welch from
:class:`~ppgen.models.hmm.em.BaumWelchMixin`. See :mod:`ppgen.models.hmm` for the model.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from ...errors import DataError, ModelError
from ...model import GenerativeModel
from .. import transforms  # noqa: F401  (registers biject_to(positive_definite) for Wishart)
from . import algorithms
from .data import SequenceDataMixin, Sequences
from .distribution import HMMSequences
from .em import CHUNK_ELEMENTS, BaumWelchMixin


def positive_number(name, value):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ModelError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


class HiddenMarkovModel(SequenceDataMixin, BaumWelchMixin, GenerativeModel):
    """Base class of the HMM families: priors on ``initial`` and ``transition``,
    data packing, the exact algorithms, the Pyro program and Baum-Welch.

    Parameters
    ----------
    n_states : int
        :math:`K`, the number of hidden states.
    initial_concentration, transition_concentration : float
        :math:`a_\\pi`, :math:`a_A`: symmetric Dirichlet concentrations of the
        first state's distribution and of each transition row (1: flat; use
        values >= 1 for MAP).

    Throughout, ``sequences`` (with optional ``lengths``) is any data form
    :meth:`pack` accepts, ``params`` a dict of site values (default: the point
    parameters), ``B`` the number of sequences and ``T`` the longest length.
    Subclasses define the emission model: ``step_shape``, ``step_support``,
    ``emission_sites`` and the ``_emission_*`` hooks.
    """

    methods = ("svi", "map", "nuts", "hmc", "exact")
    log_prob_kind = "exact"
    sequential = True
    #: shape of one time step's observation: ``()`` or ``(D,)``.
    step_shape: tuple = ()
    step_support = constraints.real
    emission_sites: tuple = ()
    emission_dims: dict = {}  # the emission sites' dimension names for ArviZ, by concept
    #: data are stored as integers (symbols) rather than in the model's float dtype.
    integer_data = False

    def __init__(self, n_states: int, *, initial_concentration: float = 1.0,
                 transition_concentration: float = 1.0) -> None:
        super().__init__()
        if not (isinstance(n_states, int) and n_states >= 1):
            raise ModelError(f"n_states must be a positive integer, got {n_states!r}")
        self.n_states = n_states
        self.register_buffer("initial_concentration",
                             torch.tensor(positive_number("initial_concentration", initial_concentration)))
        self.register_buffer("transition_concentration",
                             torch.tensor(positive_number("transition_concentration", transition_concentration)))
        #: length of sequences drawn by ``sample(n)``: the longest sequence seen in
        #: ``initialize``/``fit_map`` (saved with the model), else 100.
        self.register_buffer("default_length", torch.tensor(100))

    def _base_config(self):
        return {"n_states": self.n_states,
                "initial_concentration": float(self.initial_concentration),
                "transition_concentration": float(self.transition_concentration)}

    def arviz_dims(self):
        """``state`` and ``next_state`` for the chain's parameters, ``sequence``, ``time`` and
        ``feature`` for the data; each family names its emission parameters."""
        return {self.observed_site: ["sequence", "time", "feature"], "initial": ["state"],
                "transition": ["state", "next_state"], **self.emission_dims}

    def global_sites(self):
        return ("initial", "transition") + tuple(self.emission_sites)

    # ------------------------------------------------------------ priors and program
    def _priors(self):
        K = self.n_states
        return {"initial": dist.Dirichlet(self.initial_concentration.expand(K)),
                "transition": dist.Dirichlet(self.transition_concentration.expand(K)),
                **self._emission_priors()}

    def log_prior(self, params, priors=None):
        """:math:`\\log p(\\theta)`, summed over states (batched over leading dims)."""
        priors = priors or self._priors()
        total = priors["initial"].log_prob(params["initial"])
        for name in ("transition",) + tuple(self.emission_sites):
            total = total + priors[name].log_prob(params[name]).sum(-1)
        return total

    def model(self, data=None, lengths=None, *, n=None, subsample_size=None):
        """The Pyro program: global sites, then every sequence with its states summed out.

        Sites: ``initial`` (K,), ``transition`` (K, K) and the emission sites in
        ``pyro.plate("states", K)``, and ``obs`` (an :class:`HMMSequences`, one
        event per sequence) in ``pyro.plate("data", B)``.
        """
        priors = self._priors()
        initial = pyro.sample("initial", priors["initial"])
        with pyro.plate("states", self.n_states):
            params = {name: pyro.sample(name, priors[name])
                      for name in ("transition",) + tuple(self.emission_sites)}
        params["initial"] = initial
        if data is not None:
            size, length = data.shape[0], data.shape[1]
            if lengths is None:
                lengths = torch.full((size,), length, dtype=torch.long, device=data.device)
        else:
            if lengths is None:
                lengths = torch.full((n or 1,), int(self.default_length), dtype=torch.long,
                                     device=self.device)
            size, length = lengths.shape[0], int(lengths.max())
        with pyro.plate("data", size, subsample_size=subsample_size) as idx:
            obs = data[idx] if data is not None else None
            return pyro.sample("obs", HMMSequences(self, params, lengths[idx], length), obs=obs)

    # ------------------------------------------------------------ the exact algorithms
    def _log_terms(self, padded, params):
        """``log pi`` (lead, 1, K), ``log A`` (lead, 1, K, K), ``log e`` (lead, B, T, K)."""
        log_emit = self._emission_log_prob(padded, params)
        return (params["initial"].log().unsqueeze(-2), params["transition"].log().unsqueeze(-3), log_emit)

    def _sequence_log_prob(self, padded, lengths, params):
        log_init, log_trans, log_emit = self._log_terms(padded, params)
        return algorithms.forward_log_prob(log_init, log_trans, log_emit, self._mask(padded, lengths))

    def _point(self, params):
        return params if params is not None else self.point_params()

    def log_prob(self, sequences, lengths=None, params=None):
        """Log-likelihood of each sequence, the states summed out.

        :math:`\\log p(x_b \\mid \\theta) = \\log \\sum_j \\alpha_{L_b - 1}(j)` by the forward
        recursion :math:`\\alpha_t(j) = \\log \\sum_i \\exp(\\alpha_{t-1}(i) + \\log A_{ij}) + \\log e_t(j)`,
        evaluated as a balanced tree of semiring matrix products
        (:func:`~ppgen.models.hmm.algorithms.forward_log_prob`).

        Returns
        -------
        Tensor ``(B,)``, nats.
        """
        padded, lengths = self.pack(sequences, lengths)
        return self._sequence_log_prob(padded, lengths, self._point(params))

    def log_likelihood(self, data, params, lengths=None):
        """Per-sequence log-likelihood for ``S`` parameter draws (ArviZ, LOO).

        Parameters
        ----------
        data, lengths : sequences (as for :meth:`pack`)
        params : dict of tensors with a leading draw dimension ``S``

        Returns
        -------
        Tensor ``(S, B)``: :math:`\\log p(x_b \\mid \\theta_s)`, nats.
        """
        padded, lengths = self.pack(data, lengths)
        S = params["transition"].shape[0]
        per_draw = padded.shape[0] * padded.shape[1] * self.n_states ** 3
        chunk = max(1, CHUNK_ELEMENTS // max(per_draw, 1))
        with torch.no_grad():
            parts = [self._sequence_log_prob(padded, lengths, {k: v[i:i + chunk] for k, v in params.items()
                                                               if k in self.global_sites()})
                     for i in range(0, S, chunk)]
        return torch.cat(parts)

    def _unbatched_terms(self, sequences, lengths, params):
        padded, lengths = self.pack(sequences, lengths)
        params = self._point(params)
        log_init, log_trans, log_emit = self._log_terms(padded, params)
        return log_init, log_trans.squeeze(-3), log_emit, self._mask(padded, lengths)

    def posterior_states(self, sequences, lengths=None, params=None):
        """Smoothing marginals by forward-backward.

        :math:`\\gamma_t(k) = p(z_t = k \\mid x) = \\exp(\\alpha_t(k) + \\beta_t(k) - \\log p(x))`,
        with the forward and backward messages from one up-sweep and two
        down-sweeps (:func:`~ppgen.models.hmm.algorithms.forward_backward`).

        Returns
        -------
        Tensor ``(B, T, K)``; rows sum to one, padded steps hold 0.
        """
        log_init, log_trans, log_emit, mask = self._unbatched_terms(sequences, lengths, params)
        log_alpha, log_beta, log_p = algorithms.forward_backward(log_init, log_trans, log_emit, mask)
        gamma = (log_alpha + log_beta - log_p[..., None, None]).exp()
        return gamma * mask[..., None]

    predict_proba = posterior_states

    def viterbi(self, sequences, lengths=None, params=None, return_log_prob=False):
        """The most probable state paths :math:`\\arg\\max_z p(z \\mid x)`.

        :math:`\\delta_t(k) = \\max_i \\delta_{t-1}(i) + \\log A_{ik} + \\log e_t(k)` as a
        :math:`(\\max, +)` scan, then the back-pointers composed by a parallel scan
        (:func:`~ppgen.models.hmm.algorithms.viterbi`).

        Returns
        -------
        paths : LongTensor ``(B, T)``, -1 at padded steps
        log_prob : Tensor ``(B,)``, :math:`\\max_z \\log p(x, z)` in nats (with ``return_log_prob``)
        """
        log_init, log_trans, log_emit, mask = self._unbatched_terms(sequences, lengths, params)
        states, best = algorithms.viterbi(log_init, log_trans, log_emit, mask)
        return (states, best) if return_log_prob else states

    predict = viterbi

    def sample_states(self, sequences, lengths=None, num_samples=1, params=None, generator=None):
        """Exact draws of whole state paths from :math:`p(z \\mid x)`.

        Forward filtering, backward sampling
        (:func:`~ppgen.models.hmm.algorithms.sample_posterior`), vectorised over
        draws, sequences and steps.

        Returns
        -------
        LongTensor ``(num_samples, B, T)``, -1 at padded steps.
        """
        log_init, log_trans, log_emit, mask = self._unbatched_terms(sequences, lengths, params)
        return algorithms.sample_posterior(log_init, log_trans, log_emit, mask, num_samples, generator)

    def exact_posterior(self, data, lengths=None, params=None):
        """The exact state posterior given the parameters (used by ``Exact()``).

        ``params`` (site name -> value, any subset of :meth:`global_sites`)
        default to the point parameters. Returns ``(marginals, sampler,
        log_evidence, map_assignment)``: ``{"states": (B, T, K)}`` smoothing
        marginals; ``sampler(k)`` gives ``k`` exact joint draws of the state
        paths ``"states"`` (``(k, B, T)``, -1 at padded steps) together with the
        (fixed) global parameters; :math:`\\sum_b \\log p(x_b \\mid \\theta)`; and
        ``{"states": Viterbi paths (B, T)}``.
        """
        params = self._complete_params(params)
        padded, lengths = self.pack(data, lengths)
        marginals = {"states": self.posterior_states(padded, lengths, params)}
        log_evidence = self._sequence_log_prob(padded, lengths, params).sum()
        map_assignment = {"states": self.viterbi(padded, lengths, params)}

        def sampler(k):
            states = self.sample_states(padded, lengths, num_samples=k, params=params)
            fixed = {name: value.expand((k,) + value.shape) for name, value in params.items()}
            return {"states": states, **fixed}

        return marginals, sampler, log_evidence, map_assignment

    def _complete_params(self, params):
        """``params`` checked by name and shape, missing sites from the point parameters."""
        point = self.point_params()
        if not params:
            return point
        unknown = sorted(set(params) - set(point))
        if unknown:
            raise ModelError(f"params: unknown site(s) {unknown}; {type(self).__name__} has {sorted(point)}")
        out = dict(point)
        for name, value in params.items():
            value = torch.as_tensor(value, dtype=point[name].dtype, device=point[name].device)
            if value.shape != point[name].shape:
                raise ModelError(f"params[{name!r}]: shape {tuple(value.shape)}, expected "
                                 f"{tuple(point[name].shape)}")
            out[name] = value
        return out

    # ------------------------------------------------------------ simulation
    def sample(self, n, length=None, params=None, *, return_states=False, generator=None):
        """Simulate ``n`` sequences from the HMM.

        Parameters
        ----------
        n : int
        length : int, optional
            Steps per sequence; default ``default_length`` (the longest
            training sequence, else 100).
        params : dict, optional
            Site values; default the point parameters.
        return_states : bool
            Also return the hidden states.
        generator : torch.Generator, optional

        Returns
        -------
        x : Tensor ``(n, length, *step_shape)`` (integers for symbols, else floats)
        states : LongTensor ``(n, length)`` (with ``return_states``)
        """
        if not (isinstance(n, int) and n > 0):
            raise DataError(f"n must be a positive integer, got {n!r}")
        length = int(self.default_length) if length is None else length
        if not (isinstance(length, int) and length > 0):
            raise DataError(f"length must be a positive integer, got {length!r}")
        params = self._point(params)
        with torch.no_grad():
            states = algorithms.sample_chain(params["initial"], params["transition"], n, length, generator)
            x = self._sample_emissions(states, params, generator)
        return (x, states) if return_states else x

    def replicate(self, params, data=None, lengths=None, **kwargs):
        """One replicate data set at ``params``: as many sequences as ``data``
        (the padded tensor), with the same ``lengths``, padded alike.

        Returns
        -------
        Tensor shaped like ``data``.
        """
        B, T = data.shape[:2]
        lengths = torch.full((B,), T, dtype=torch.long) if lengths is None else lengths
        return self._fill_padding(self.sample(B, T, params=params), lengths)

    # ------------------------------------------------------------ to override
    def _emission_priors(self):
        raise NotImplementedError

    def _emission_log_prob(self, padded, params):
        """``log p(x_t | z_t = k)`` for batched params: ``(lead, B, T, K)``."""
        raise NotImplementedError

    def _sample_emissions(self, states, params, generator):
        raise NotImplementedError

    def _emission_m_step(self, x, resp, params):
        """MAP emission parameters from observed steps ``x`` (N, ...) and
        responsibilities ``resp`` (N, K)."""
        raise NotImplementedError

    def _emission_start(self, x, generator):
        raise NotImplementedError

    @classmethod
    def _example_data(cls, model, params, seed, n=20, low=10, high=40):
        gen = torch.Generator().manual_seed(seed)
        lengths = torch.randint(low, high + 1, (n,), generator=gen)
        x = model.sample(n, int(lengths.max()), params=params, generator=gen)
        return Sequences(model._fill_padding(x, lengths), lengths)
