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
(:mod:`ppgen.models.hmm_algorithms`: a log-space parallel scan), so SVI, MAP and
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
"""

from __future__ import annotations

import math
import time

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from ..errors import DataError, ModelError
from ..model import GenerativeModel
from . import hmm_algorithms as algorithms
from . import (
    registry,
    transforms,  # noqa: F401  (registers biject_to(positive_definite) for Wishart)
)

#: Elements of the per-chunk ``(S, B, T, K, K)`` tensors when scoring many draws.
_CHUNK_ELEMENTS = 2**23


# --------------------------------------------------------------------------- data
class Sequences:
    """A batch of sequences of different lengths.

    Parameters
    ----------
    padded : Tensor ``(B, T, ...)``
        The sequences, padded at the end to the longest length ``T``.
    lengths : LongTensor ``(B,)``, optional
        Each sequence's length (default: all ``T``).

    It behaves enough like a tensor for generic code: ``shape``, ``len``,
    slicing and indexing (sequences), ``to``, ``cpu``, ``double``, ``float``,
    ``is_floating_point``. ``unpad()`` gives the list of sequences.
    """

    __slots__ = ("padded", "lengths")

    def __init__(self, padded, lengths=None):
        padded = torch.as_tensor(padded)
        if lengths is None:
            lengths = torch.full((padded.shape[0],), padded.shape[1], dtype=torch.long)
        self.padded = padded
        self.lengths = torch.as_tensor(lengths).to(device=padded.device)

    @property
    def shape(self):
        return self.padded.shape

    @property
    def dtype(self):
        return self.padded.dtype

    @property
    def device(self):
        return self.padded.device

    def __len__(self):
        return self.padded.shape[0]

    def __getitem__(self, index):
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        lengths = self.lengths[index]
        return Sequences(self.padded[index][:, :int(lengths.max())], lengths)

    def to(self, *args, **kwargs):
        padded = self.padded.to(*args, **kwargs)
        return Sequences(padded, self.lengths.to(padded.device))

    def cpu(self):
        return self.to("cpu")

    def double(self):
        return Sequences(self.padded.double(), self.lengths)

    def float(self):
        return Sequences(self.padded.float(), self.lengths)

    def is_floating_point(self):
        return self.padded.is_floating_point()

    def unpad(self):
        """The sequences as a list of tensors ``(T_i, ...)``."""
        return [x[:n] for x, n in zip(self.padded, self.lengths.tolist())]

    def __repr__(self):
        return (f"Sequences(n={len(self)}, max_length={self.shape[1]}, "
                f"step_shape={tuple(self.shape[2:])}, dtype={self.dtype})")


def _as_raw(value, name):
    """A tensor (any numeric dtype) from a tensor, array, list or pandas object."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if hasattr(value, "to_numpy") and callable(value.to_numpy):
        value = value.to_numpy(copy=True)
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name}: cannot be read as an array ({exc})") from None
    if array.dtype == object:
        raise DataError(f"{name}: holds non-numeric or ragged values; give a numeric array "
                        "per sequence, or a list of sequences")
    if array.dtype.kind not in "biuf":
        raise DataError(f"{name}: holds {array.dtype} values; give numbers")
    return torch.as_tensor(array if array.flags.writeable else array.copy())


def _first_bad(bad, name, what):
    """Raise a DataError naming the first (sequence, step) where ``bad`` holds."""
    if bool(bad.any()):
        b, t = bad.nonzero()[0].tolist()[:2]
        raise DataError(f"{name}: {what} (first at sequence {b}, step {t})")


def _safe_log(p):
    return p.clamp_min(torch.finfo(p.dtype).tiny).log()


def _floor_normalize(p):
    """Probabilities kept strictly positive (so MCMC/SVI can start from them)."""
    p = p.clamp_min(torch.finfo(p.dtype).tiny)
    return p / p.sum(-1, keepdim=True)


def _dirichlet1(shape, generator, dtype, device):
    """Dirichlet(1, ..., 1) draws: normalised Exp(1) variables."""
    u = algorithms.uniform(shape, dtype, device, generator).clamp_min(torch.finfo(dtype).tiny)
    e = -u.log()
    return e / e.sum(-1, keepdim=True)


def _kmeans(x, k, generator, iterations=50):
    """k-means++ seeding and Lloyd's iterations; returns ``(centers, labels)``."""
    n = x.shape[0]
    dtype, device = x.dtype, x.device
    first = int((algorithms.uniform((), dtype, device, generator) * n).long().clamp_max(n - 1))
    centers = x[first:first + 1]
    closest = (x - centers).pow(2).sum(-1)
    for _ in range(1, k):
        weights = closest if float(closest.sum()) > 0 else torch.ones_like(closest)
        cdf = (weights / weights.sum()).cumsum(0)
        u = algorithms.uniform((1,), dtype, device, generator)
        pick = int(torch.searchsorted(cdf, u * cdf[-1], right=True).clamp_max(n - 1))
        centers = torch.cat([centers, x[pick:pick + 1]])
        closest = torch.minimum(closest, (x - x[pick]).pow(2).sum(-1))
    labels = None
    for _ in range(iterations):
        new = torch.cdist(x, centers).argmin(-1)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        onehot = torch.nn.functional.one_hot(labels, k).to(dtype)
        counts = onehot.sum(0)
        centers = torch.where(counts[:, None] > 0, (onehot.T @ x) / counts.clamp_min(1)[:, None], centers)
    return centers, labels


def _positive(name, value):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ModelError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


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


# --------------------------------------------------------------------------- base
class HiddenMarkovModel(GenerativeModel):
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
    #: shape of one time step's observation: ``()`` or ``(D,)``.
    step_shape: tuple = ()
    step_support = constraints.real
    emission_sites: tuple = ()
    #: data are stored as integers (symbols) rather than in the model's float dtype.
    integer_data = False

    def __init__(self, n_states, *, initial_concentration=1.0, transition_concentration=1.0):
        super().__init__()
        if not (isinstance(n_states, int) and n_states >= 1):
            raise ModelError(f"n_states must be a positive integer, got {n_states!r}")
        self.n_states = n_states
        self.register_buffer("initial_concentration",
                             torch.tensor(_positive("initial_concentration", initial_concentration)))
        self.register_buffer("transition_concentration",
                             torch.tensor(_positive("transition_concentration", transition_concentration)))
        #: length of sequences drawn by ``sample(n)``: the longest sequence seen in
        #: ``initialize``/``fit_map`` (saved with the model), else 100.
        self.register_buffer("default_length", torch.tensor(100))

    def _base_config(self):
        return {"n_states": self.n_states,
                "initial_concentration": float(self.initial_concentration),
                "transition_concentration": float(self.transition_concentration)}

    def global_sites(self):
        return ("initial", "transition") + tuple(self.emission_sites)

    # ------------------------------------------------------------ data
    def pack(self, data, lengths=None, name="data"):
        """Checked ``(padded, lengths)`` tensors on the model's device.

        Parameters
        ----------
        data : list of arrays, array, dict or Sequences
            A list of sequences, each ``(T_i,)`` (scalar emissions) or ``(T_i, D)``;
            a padded array ``(B, T)`` / ``(B, T, D)`` (with ``lengths``), or one
            sequence ``(T,)`` / ``(T, D)``; ``{"sequences": ..., "lengths": ...}``;
            or a :class:`Sequences`.
        lengths : array of int, optional
            Lengths of the padded sequences; values past them are ignored.

        Returns
        -------
        padded : ``(B, T, *step_shape)``, the padding filled with a valid value
        lengths : LongTensor ``(B,)``
        """
        if isinstance(data, Sequences):
            if lengths is not None:
                raise DataError(f"{name}: a Sequences object carries its own lengths; do not pass lengths")
            return self._finish(data.padded, data.lengths, name)
        if isinstance(data, dict):
            unknown = sorted(set(data) - {"sequences", "lengths"})
            if unknown or "sequences" not in data:
                raise DataError(f"{name}: a dict of sequences needs the key 'sequences' (and optionally "
                                f"'lengths'); got keys {sorted(data)}")
            if lengths is not None and data.get("lengths") is not None:
                raise DataError(f"{name}: lengths given twice (argument and dict)")
            return self.pack(data["sequences"], data.get("lengths", lengths), name)
        seq_dims = 1 + len(self.step_shape)
        if isinstance(data, (list, tuple)):
            if len(data) == 0:
                raise DataError(f"{name}: is empty")
            first_dims = np.ndim(data[0])
            if (first_dims == seq_dims or (first_dims == 1 and self.step_shape == (1,))
                    or (first_dims == 2 and self.step_shape == () and np.shape(data[0])[-1] == 1)):
                return self._pack_list(data, lengths, name)
        raw = _as_raw(data, name)
        if self.step_shape == (1,) and raw.dim() in (1, 2) and (raw.dim() == 1 or raw.shape[-1] != 1):
            raw = raw.unsqueeze(-1)  # univariate vector emissions given without the feature axis
        if self.step_shape == () and raw.dim() == 2 and raw.shape[-1] == 1 and lengths is None:
            raw = raw[:, 0]  # one sequence as a column (hmmlearn's X of shape (T, 1), a one-column table)
        if raw.dim() == seq_dims:
            raw = raw.unsqueeze(0)
        if raw.dim() != seq_dims + 1:
            expected = "(B, T)" if not self.step_shape else f"(B, T, {self.step_shape[0]})"
            raise DataError(f"{name}: expected sequences of shape {expected} or one sequence, "
                            f"got shape {tuple(raw.shape)}")
        if raw.shape[0] == 0 or raw.shape[1] == 0:
            raise DataError(f"{name}: is empty (shape {tuple(raw.shape)})")
        if lengths is None:
            lengths = torch.full((raw.shape[0],), raw.shape[1], dtype=torch.long)
        return self._finish(raw, lengths, name)

    def _pack_list(self, data, lengths, name):
        seqs = []
        for i, item in enumerate(data):
            raw = _as_raw(item, f"{name}[{i}]")
            if self.step_shape == (1,) and raw.dim() == 1:
                raw = raw.unsqueeze(-1)
            if self.step_shape == () and raw.dim() == 2 and raw.shape[-1] == 1:
                raw = raw[:, 0]
            if raw.dim() != 1 + len(self.step_shape):
                raise DataError(f"{name}[{i}]: expected one sequence of shape "
                                f"{'(T,)' if not self.step_shape else f'(T, {self.step_shape[0]})'}, "
                                f"got shape {tuple(raw.shape)}")
            if raw.shape[0] == 0:
                raise DataError(f"{name}[{i}]: is an empty sequence")
            seqs.append(raw)
        implied = torch.tensor([len(s) for s in seqs])
        if lengths is not None and not torch.equal(torch.as_tensor(lengths).long().cpu(), implied):
            raise DataError(f"{name}: lengths {list(lengths)} disagree with the sequences' lengths "
                            f"{implied.tolist()}")
        kind = torch.promote_types(seqs[0].dtype, seqs[0].dtype)
        for s in seqs[1:]:
            kind = torch.promote_types(kind, s.dtype)
        device = seqs[0].device
        padded = torch.nn.utils.rnn.pad_sequence([s.to(device=device, dtype=kind) for s in seqs],
                                                 batch_first=True)
        return self._finish(padded, implied, name)

    def _finish(self, raw, lengths, name):
        B, T = raw.shape[:2]
        if tuple(raw.shape[2:]) != tuple(self.step_shape):
            what = "one value per step" if not self.step_shape else f"{self.step_shape[0]} features per step"
            raise DataError(f"{name}: expected {what}, got steps of shape {tuple(raw.shape[2:])}")
        lengths = self._check_lengths(lengths, B, T, name)
        raw = raw.to(self.device)
        lengths = lengths.to(self.device)
        mask = torch.arange(T, device=self.device) < lengths[:, None]
        values = raw
        if raw.is_floating_point():
            bad = ~torch.isfinite(raw)
            if self.step_shape:
                bad = bad.any(-1)
            _first_bad(bad & mask, name, "contains NaN or inf values; remove or impute them")
        self._check_values(values, mask, name)
        if self.integer_data:
            values = values.round().long() if values.is_floating_point() else values.long()
        else:
            values = values.to(self.dtype)
        fill = mask.reshape(mask.shape + (1,) * len(self.step_shape))
        values = torch.where(fill, values, torch.zeros((), dtype=values.dtype, device=values.device))
        return values, lengths

    @staticmethod
    def _check_lengths(lengths, B, T, name):
        raw = _as_raw(lengths, f"{name}: lengths")
        if raw.is_floating_point():
            if not bool(torch.isfinite(raw).all()) or not bool((raw == raw.round()).all()):
                raise DataError(f"{name}: lengths must be integers")
        raw = raw.long().cpu()
        if raw.shape != (B,):
            raise DataError(f"{name}: lengths must have one entry per sequence ({B}), got shape "
                            f"{tuple(raw.shape)}")
        if bool((raw < 1).any()) or bool((raw > T).any()):
            raise DataError(f"{name}: lengths must lie in 1..{T} (the padded length), got "
                            f"min {int(raw.min())}, max {int(raw.max())}")
        return raw

    def _check_values(self, values, mask, name):
        """Family-specific checks of the observed (unpadded) values."""

    def _integer_check(self, values, mask, name, what):
        if values.is_floating_point():
            _first_bad((values != values.round()) & mask, name, f"holds non-integer values; {what}")

    def check_data(self, data, name="data"):
        return self.pack(data, None, name)[0]

    def data_kwargs(self, data, name="data"):
        padded, lengths = self.pack(data, None, name)
        return {"data": padded, "lengths": lengths}

    def as_data(self, data, lengths=None):
        """The inverse of :meth:`data_kwargs`: the keyword tensors back as one data
        argument (a :class:`Sequences`) that every method here accepts."""
        return Sequences(data, lengths)

    def _fill_padding(self, x, lengths):
        T = x.shape[1]
        mask = torch.arange(T, device=x.device) < lengths.to(x.device)[:, None]
        mask = mask.reshape(mask.shape + (1,) * (x.dim() - 2))
        return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))

    @staticmethod
    def _mask(padded, lengths):
        return torch.arange(padded.shape[1], device=padded.device) < lengths.to(padded.device)[:, None]

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
        (:func:`~ppgen.models.hmm_algorithms.forward_log_prob`).

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
        chunk = max(1, _CHUNK_ELEMENTS // max(per_draw, 1))
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
        down-sweeps (:func:`~ppgen.models.hmm_algorithms.forward_backward`).

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
        (:func:`~ppgen.models.hmm_algorithms.viterbi`).

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
        (:func:`~ppgen.models.hmm_algorithms.sample_posterior`), vectorised over
        draws, sequences and steps.

        Returns
        -------
        LongTensor ``(num_samples, B, T)``, -1 at padded steps.
        """
        log_init, log_trans, log_emit, mask = self._unbatched_terms(sequences, lengths, params)
        return algorithms.sample_posterior(log_init, log_trans, log_emit, mask, num_samples, generator)

    def exact_posterior(self, data, lengths=None):
        """The exact state posterior at the point parameters (used by ``Exact()``).

        Returns ``(marginals, sampler, log_evidence)``: ``{"states": (B, T, K)}``
        smoothing marginals; ``sampler(k)`` gives ``k`` exact joint draws of the
        state paths ``"states"`` (``(k, B, T)``, -1 at padded steps) together with
        the (fixed) global parameters; and :math:`\\sum_b \\log p(x_b \\mid \\theta)`.
        """
        params = self.point_params()
        padded, lengths = self.pack(data, lengths)
        marginals = {"states": self.posterior_states(padded, lengths, params)}
        log_evidence = self._sequence_log_prob(padded, lengths, params).sum()

        def sampler(k):
            states = self.sample_states(padded, lengths, num_samples=k, params=params)
            fixed = {name: value.expand((k,) + value.shape) for name, value in params.items()}
            return {"states": states, **fixed}

        return marginals, sampler, log_evidence

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

    # ------------------------------------------------------------ MAP by Baum-Welch
    def _e_step(self, padded, mask, params):
        """Expected sufficient statistics for a batch of parameter sets (leading dim R):
        ``gamma`` (R, B, T, K), transition counts (R, K, K), log-likelihood (R,)."""
        log_init, log_trans, log_emit = self._log_terms(padded, params)
        gamma, xi, log_p = algorithms.expected_counts(log_init, log_trans, log_emit, mask)
        return gamma, xi, log_p.sum(-1)

    def _m_step(self, padded, mask, gamma, xi, params):
        """Closed-form MAP updates, batched over the leading restart dimension."""
        a0, aT = self.initial_concentration, self.transition_concentration
        initial = _floor_normalize((gamma[..., 0, :].sum(-2) + a0 - 1).clamp_min(0))
        counts = (xi + aT - 1).clamp_min(0)
        empty = counts.sum(-1, keepdim=True) <= 0
        transition = _floor_normalize(torch.where(empty, torch.ones_like(counts), counts))
        x, resp = padded[mask], gamma[:, mask]
        return {"initial": initial, "transition": transition, **self._emission_m_step(x, resp, params)}

    def _random_starts(self, padded, mask, generator, count):
        """``count`` random starting points, stacked along a leading dimension."""
        K, dtype, device = self.n_states, self.dtype, self.device
        x = padded[mask]
        starts = []
        for _ in range(count):
            starts.append({"initial": _dirichlet1((K,), generator, dtype, device),
                           "transition": _dirichlet1((K, K), generator, dtype, device),
                           **self._emission_start(x, generator)})
        return {name: torch.stack([start[name] for start in starts]) for name in starts[0]}

    def initialize(self, data, generator=None, lengths=None):
        """A random start (the first of ``fit_map``'s restarts): k-means on the
        emissions for Gaussian, Poisson and Bernoulli data, Dirichlet draws otherwise."""
        padded, lengths = self.pack(data, lengths)
        self.default_length.fill_(int(lengths.max()))
        start = self._random_starts(padded, self._mask(padded, lengths), generator, 1)
        self.set_params({name: value[0] for name, value in start.items()})

    def fit_map(self, data, *, lengths=None, max_iter=1000, tol=1e-10, n_init=1, generator=None):
        """MAP estimate by Baum-Welch EM, ``n_init`` random restarts, the best kept.

        E-step: forward-backward (:func:`~ppgen.models.hmm_algorithms.expected_counts`)
        gives the expected state occupancies :math:`\\gamma_t(k)` and transition
        counts :math:`\\sum_t \\xi_t(i, j)`; M-step: the closed-form maximisers of
        the expected complete-data log posterior (for the Gaussian, the means given
        the precisions and then the precisions given the means: an ECM step).
        Every iteration raises the log posterior; a restart stops when it changes by
        less than ``tol`` nats per observed step. The restarts run together, as one
        batch (so ten restarts cost far less than ten fits); the one with the
        highest log posterior is kept.

        Returns a dict: ``loss`` (negative log posterior per iteration of the best
        restart, nats), ``n_iter``, ``converged``, ``seconds``, and ``restarts`` (the
        final log-likelihood of every restart, nats).
        """
        start = time.perf_counter()
        padded, lengths = self.pack(data, lengths)
        mask = self._mask(padded, lengths)
        threshold = tol * int(lengths.sum())
        priors = self._priors()
        per_restart = padded.shape[0] * padded.shape[1] * self.n_states ** 2 * 8
        group = max(1, min(n_init, _CHUNK_ELEMENTS // max(per_restart, 1)))
        runs = []
        with torch.no_grad():
            for first in range(0, n_init, group):
                count = min(group, n_init - first)
                runs.extend(self._em(padded, mask, self._random_starts(padded, mask, generator, count),
                                     max_iter, threshold, priors))
        best = min(runs, key=lambda run: run["loss"][-1])
        self.default_length.fill_(int(lengths.max()))
        self.set_params(best["params"])
        return {"loss": best["loss"], "n_iter": len(best["loss"]), "converged": best["converged"],
                "seconds": time.perf_counter() - start, "restarts": [run["loglik"] for run in runs]}

    def _em(self, padded, mask, params, max_iter, threshold, priors):
        """Batched EM from the starting points ``params`` (leading dim R); each
        restart is frozen once converged."""
        R = params["transition"].shape[0]
        histories = [[] for _ in range(R)]
        logliks = [None] * R
        done = torch.zeros(R, dtype=torch.bool, device=self.device)
        for _ in range(max_iter):
            gamma, xi, loglik = self._e_step(padded, mask, params)
            objective = (loglik + self.log_prior(params, priors)).tolist()
            for r in range(R):
                if bool(done[r]):
                    continue
                histories[r].append(-objective[r])
                logliks[r] = float(loglik[r])
                if len(histories[r]) > 1 and abs(histories[r][-2] - histories[r][-1]) < threshold:
                    done[r] = True
            if bool(done.all()):
                break
            new = self._m_step(padded, mask, gamma, xi, params)
            params = {name: torch.where(done.reshape((R,) + (1,) * (value.dim() - 1)), params[name], value)
                      for name, value in new.items()}
        return [{"params": {name: value[r] for name, value in params.items()}, "loss": histories[r],
                 "converged": bool(done[r]), "loglik": logliks[r]} for r in range(R)]

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


# --------------------------------------------------------------------------- families
@registry.register
class CategoricalHMM(HiddenMarkovModel):
    """An HMM over symbols ``0..n_symbols-1``.

    Sites: ``initial`` (K,), ``transition`` (K, K), ``emission`` (K, V) rows ~
    :math:`\\mathrm{Dir}(a_e 1_V)`, ``obs``.
    """

    integer_data = True
    emission_sites = ("emission",)

    def __init__(self, n_states, n_symbols, *, emission_concentration=1.0, **kwargs):
        super().__init__(n_states, **kwargs)
        if not (isinstance(n_symbols, int) and n_symbols >= 1):
            raise ModelError(f"n_symbols must be a positive integer, got {n_symbols!r}")
        self.n_symbols = n_symbols
        self.step_support = constraints.integer_interval(0, n_symbols - 1)
        self.register_buffer("emission_concentration",
                             torch.tensor(_positive("emission_concentration", emission_concentration)))

    def get_config(self):
        return {**self._base_config(), "n_symbols": self.n_symbols,
                "emission_concentration": float(self.emission_concentration)}

    def _check_values(self, values, mask, name):
        self._integer_check(values, mask, name, f"symbols must be integers in 0..{self.n_symbols - 1}")
        _first_bad(((values < 0) | (values > self.n_symbols - 1)) & mask, name,
                   f"holds symbols outside 0..{self.n_symbols - 1}")

    def _emission_priors(self):
        return {"emission": dist.Dirichlet(self.emission_concentration.expand(self.n_symbols))}

    def _emission_log_prob(self, padded, params):
        log_e = params["emission"].log().transpose(-1, -2)  # (lead, V, K)
        return log_e[..., padded, :]

    def _sample_emissions(self, states, params, generator):
        cdf = params["emission"].cumsum(-1)[states]  # (n, T, V)
        u = algorithms.uniform(states.shape + (1,), cdf.dtype, cdf.device, generator)
        return torch.searchsorted(cdf, u * cdf[..., -1:], right=True).squeeze(-1).clamp_max(self.n_symbols - 1)

    def _emission_m_step(self, x, resp, params):
        counts = torch.zeros(resp.shape[:-2] + (self.n_states, self.n_symbols), dtype=resp.dtype,
                             device=resp.device)
        counts.index_add_(-1, x, resp.mT)  # (R, K, V): expected symbol counts per state
        counts = (counts + self.emission_concentration - 1).clamp_min(0)
        empty = counts.sum(-1, keepdim=True) <= 0
        return {"emission": _floor_normalize(torch.where(empty, params["emission"], counts))}

    def _emission_start(self, x, generator):
        freq = torch.bincount(x, minlength=self.n_symbols).to(self.dtype) / x.shape[0]
        noise = _dirichlet1((self.n_states, self.n_symbols), generator, self.dtype, self.device)
        return {"emission": _floor_normalize((freq + 1.0 / self.n_symbols) * noise)}

    @classmethod
    def example(cls, seed=0):
        model = cls(2, 4)
        params = {"initial": torch.tensor([0.7, 0.3]),
                  "transition": torch.tensor([[0.9, 0.1], [0.2, 0.8]]),
                  "emission": torch.tensor([[0.6, 0.3, 0.05, 0.05], [0.05, 0.1, 0.35, 0.5]])}
        return model, cls._example_data(model, params, seed)


@registry.register
class GaussianHMM(HiddenMarkovModel):
    """An HMM with Gaussian emissions in ``dim`` dimensions, diagonal or full precision.

    Sites: ``initial``, ``transition``, ``locs`` (K, D) ~ :math:`N(m_0, s_0^2)`,
    ``precision`` (K, D) ~ :math:`\\mathrm{Gamma}(\\nu_0/2, \\psi/2)` (diag) or
    (K, D, D) ~ :math:`\\mathrm{Wishart}(\\nu_0, \\psi^{-1} I)` (full), ``obs``.
    ``loc_mean``, ``loc_scale`` are :math:`m_0, s_0`; ``precision_df`` :math:`\\nu_0`
    (default ``dim + 1`` full, 2 diag); ``precision_rate`` :math:`\\psi`, a ridge on
    the covariances of MAP estimates.
    """

    emission_sites = ("locs", "precision")

    def __init__(self, n_states, dim, covariance="diag", *, loc_mean=0.0, loc_scale=100.0,
                 precision_df=None, precision_rate=1e-3, **kwargs):
        super().__init__(n_states, **kwargs)
        if not (isinstance(dim, int) and dim >= 1):
            raise ModelError(f"dim must be a positive integer, got {dim!r}")
        if covariance not in ("full", "diag"):
            raise ModelError(f"covariance must be 'full' or 'diag', got {covariance!r}")
        self.dim, self.covariance = dim, covariance
        self.step_shape = (dim,)
        default_df = dim + 1 if covariance == "full" else 2.0
        precision_df = float(default_df if precision_df is None else precision_df)
        minimum_df = dim - 1 if covariance == "full" else 0
        if precision_df <= minimum_df:
            raise ModelError(f"precision_df must exceed {minimum_df}, got {precision_df}")
        if not (isinstance(loc_mean, (int, float)) and math.isfinite(loc_mean)):
            raise ModelError(f"loc_mean must be a finite number, got {loc_mean!r}")
        self.register_buffer("loc_mean", torch.tensor(float(loc_mean)))
        self.register_buffer("loc_scale", torch.tensor(_positive("loc_scale", loc_scale)))
        self.register_buffer("precision_df", torch.tensor(precision_df))
        self.register_buffer("precision_rate", torch.tensor(_positive("precision_rate", precision_rate)))

    def get_config(self):
        return {**self._base_config(), "dim": self.dim, "covariance": self.covariance,
                "loc_mean": float(self.loc_mean), "loc_scale": float(self.loc_scale),
                "precision_df": float(self.precision_df), "precision_rate": float(self.precision_rate)}

    def _emission_priors(self):
        D = self.dim
        locs = dist.Normal(self.loc_mean, self.loc_scale).expand([D]).to_event(1)
        if self.covariance == "full":
            eye = torch.eye(D, dtype=self.dtype, device=self.device)
            precision = dist.Wishart(self.precision_df, scale_tril=eye * self.precision_rate.rsqrt())
        else:
            precision = dist.Gamma(self.precision_df / 2, self.precision_rate / 2).expand([D]).to_event(1)
        return {"locs": locs, "precision": precision}

    def _emission_log_prob(self, padded, params):
        locs, precision = params["locs"], params["precision"]  # (lead, K, D), (lead, K, D[, D])
        lead = locs.shape[:-2]
        B, T, D = padded.shape
        x = padded.reshape(B * T, D)
        diff = x.unsqueeze(-3) - locs.unsqueeze(-2)  # (lead, K, N, D)
        if self.covariance == "full":
            tril = torch.linalg.cholesky(precision)  # Lambda = L L^T
            half_logdet = tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (lead, K)
            maha = (diff @ tril).pow(2).sum(-1)  # ||L^T (x - mu)||^2, (lead, K, N)
        else:
            half_logdet = 0.5 * precision.log().sum(-1)
            maha = ((diff * diff) @ precision.unsqueeze(-1)).squeeze(-1)  # sum_d lambda_d (x_d - mu_d)^2
        log_p = half_logdet.unsqueeze(-1) - 0.5 * maha - 0.5 * D * math.log(2 * math.pi)
        return log_p.transpose(-1, -2).reshape(lead + (B, T, self.n_states))

    def _sample_emissions(self, states, params, generator):
        locs, precision = params["locs"], params["precision"]
        noise = torch.randn(states.shape + (self.dim,), dtype=locs.dtype, generator=generator,
                            device=generator.device if generator is not None else locs.device).to(locs.device)
        if self.covariance == "full":
            scale = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(precision)))
            return locs[states] + (scale[states] @ noise.unsqueeze(-1)).squeeze(-1)
        return locs[states] + noise * precision.rsqrt()[states]

    def _emission_m_step(self, x, resp, params):
        # Sufficient statistics about the data mean (shift-invariant, and no
        # cancellation when the data sit far from the origin).
        center = x.mean(0)
        xc = x - center
        counts = resp.sum(-2)  # (R, K)
        sums = resp.mT @ xc  # (R, K, D)
        prior_precision = self.loc_scale.pow(-2)
        prior_mean = self.loc_mean - center  # (D,)
        old = params["precision"]
        alive = counts > 1e-8
        if self.covariance == "full":
            eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
            system = counts[..., None, None] * old + prior_precision * eye
            rhs = (old @ sums.unsqueeze(-1)).squeeze(-1) + prior_precision * prior_mean
            locs = torch.linalg.solve(system, rhs)  # (R, K, D), centred
            outer = (xc.unsqueeze(-1) * xc.unsqueeze(-2)).reshape(x.shape[0], -1)
            second = (resp.mT @ outer).reshape(sums.shape + (self.dim,))  # sum_n r x x^T
            cross = locs.unsqueeze(-1) * sums.unsqueeze(-2)
            scatter = (second - cross - cross.mT
                       + counts[..., None, None] * locs.unsqueeze(-1) * locs.unsqueeze(-2))
            denom = (counts + self.precision_df - self.dim - 1).clamp_min(1e-12)
            covariance = (scatter + self.precision_rate * eye) / denom[..., None, None]
            covariance = 0.5 * (covariance + covariance.mT)
            precision = torch.cholesky_inverse(torch.linalg.cholesky(covariance))
            precision = 0.5 * (precision + precision.mT)
            precision = torch.where(alive[..., None, None], precision, old)
        else:
            locs = (old * sums + prior_precision * prior_mean) / (counts[..., None] * old + prior_precision)
            second = resp.mT @ xc.pow(2)  # (R, K, D)
            scatter = (second - 2 * locs * sums + counts[..., None] * locs.pow(2)).clamp_min(0)
            precision = (counts + self.precision_df - 2).clamp_min(0)[..., None] / (scatter + self.precision_rate)
            precision = torch.where(alive[..., None], precision.clamp_min(torch.finfo(x.dtype).tiny), old)
        locs = torch.where(alive[..., None], locs + center, params["locs"])
        return {"locs": locs, "precision": precision}

    def _emission_start(self, x, generator):
        centers, _ = _kmeans(x, self.n_states, generator)
        K, D = self.n_states, self.dim
        if self.covariance == "full":
            cov = torch.cov(x.T).reshape(D, D) if x.shape[0] > 1 else torch.eye(D, dtype=x.dtype)
            cov = cov + (1e-6 * cov.diagonal().mean() + 1e-12) * torch.eye(D, dtype=x.dtype, device=x.device)
            precision = torch.cholesky_inverse(torch.linalg.cholesky(cov)).expand(K, D, D).clone()
        else:
            var = x.var(0) if x.shape[0] > 1 else torch.ones(D, dtype=x.dtype, device=x.device)
            precision = (1 / (var + 1e-6 * var.mean() + 1e-12)).expand(K, D).clone()
        return {"locs": centers, "precision": precision}

    @classmethod
    def example(cls, seed=0):
        model = cls(2, 2, covariance="full", loc_scale=10.0)
        params = {"initial": torch.tensor([0.6, 0.4]),
                  "transition": torch.tensor([[0.9, 0.1], [0.2, 0.8]]),
                  "locs": torch.tensor([[-2.0, 0.0], [2.0, 1.0]]),
                  "precision": torch.eye(2).expand(2, 2, 2) / 0.6 ** 2}
        return model, cls._example_data(model, params, seed)


@registry.register
class PoissonHMM(HiddenMarkovModel):
    """An HMM over counts with Poisson emissions.

    Sites: ``initial``, ``transition``, ``rates`` (K,) ~
    :math:`\\mathrm{Gamma}(a_r, b_r)` (``rate_shape``, ``rate_rate``), ``obs``.
    """

    step_support = constraints.nonnegative_integer
    emission_sites = ("rates",)

    def __init__(self, n_states, *, rate_shape=1.0, rate_rate=1e-3, **kwargs):
        super().__init__(n_states, **kwargs)
        self.register_buffer("rate_shape", torch.tensor(_positive("rate_shape", rate_shape)))
        self.register_buffer("rate_rate", torch.tensor(_positive("rate_rate", rate_rate)))

    def get_config(self):
        return {**self._base_config(), "rate_shape": float(self.rate_shape),
                "rate_rate": float(self.rate_rate)}

    def _check_values(self, values, mask, name):
        self._integer_check(values, mask, name, "counts must be non-negative integers")
        _first_bad((values < 0) & mask, name, "holds negative counts")

    def _emission_priors(self):
        return {"rates": dist.Gamma(self.rate_shape, self.rate_rate)}

    def _emission_log_prob(self, padded, params):
        rates = params["rates"].unsqueeze(-2).unsqueeze(-2)  # (lead, 1, 1, K)
        x = padded.unsqueeze(-1)
        return x * rates.log() - rates - torch.lgamma(x + 1)

    def _sample_emissions(self, states, params, generator):
        rates = params["rates"][states]
        if generator is not None and generator.device != rates.device:
            return torch.poisson(rates.to(generator.device), generator=generator).to(rates.device)
        return torch.poisson(rates, generator=generator)

    def _emission_m_step(self, x, resp, params):
        counts = resp.sum(-2)
        rates = (resp.mT @ x + self.rate_shape - 1).clamp_min(0) / (counts + self.rate_rate)
        return {"rates": rates.clamp_min(torch.finfo(x.dtype).tiny)}

    def _emission_start(self, x, generator):
        centers, _ = _kmeans(x.unsqueeze(-1), self.n_states, generator)
        floor = 0.01 * (float(x.mean()) + 1.0)
        return {"rates": centers.squeeze(-1).clamp_min(floor)}

    @classmethod
    def example(cls, seed=0):
        model = cls(2)
        params = {"initial": torch.tensor([0.5, 0.5]),
                  "transition": torch.tensor([[0.85, 0.15], [0.25, 0.75]]),
                  "rates": torch.tensor([2.0, 9.0])}
        return model, cls._example_data(model, params, seed)


@registry.register
class BernoulliHMM(HiddenMarkovModel):
    """An HMM over binary vectors of ``dim`` bits (piano rolls, presence/absence).

    Sites: ``initial``, ``transition``, ``probs`` (K, D) ~
    :math:`\\mathrm{Beta}(a, b)` (``prob_concentration1``, ``prob_concentration0``), ``obs``.
    """

    step_support = constraints.boolean
    emission_sites = ("probs",)

    def __init__(self, n_states, dim, *, prob_concentration1=1.0, prob_concentration0=1.0, **kwargs):
        super().__init__(n_states, **kwargs)
        if not (isinstance(dim, int) and dim >= 1):
            raise ModelError(f"dim must be a positive integer, got {dim!r}")
        self.dim = dim
        self.step_shape = (dim,)
        self.register_buffer("prob_concentration1",
                             torch.tensor(_positive("prob_concentration1", prob_concentration1)))
        self.register_buffer("prob_concentration0",
                             torch.tensor(_positive("prob_concentration0", prob_concentration0)))

    def get_config(self):
        return {**self._base_config(), "dim": self.dim,
                "prob_concentration1": float(self.prob_concentration1),
                "prob_concentration0": float(self.prob_concentration0)}

    def _check_values(self, values, mask, name):
        bad = ((values != 0) & (values != 1)).any(-1)
        _first_bad(bad & mask, name, "holds values other than 0 and 1")

    def _emission_priors(self):
        beta = dist.Beta(self.prob_concentration1, self.prob_concentration0)
        return {"probs": beta.expand([self.dim]).to_event(1)}

    def _emission_log_prob(self, padded, params):
        probs = params["probs"]  # (lead, K, D)
        lead = probs.shape[:-2]
        B, T, D = padded.shape
        x = padded.reshape(B * T, D)
        log_p = x @ _safe_log(probs).mT + (1 - x) @ _safe_log(1 - probs).mT  # (lead, N, K)
        return log_p.reshape(lead + (B, T, self.n_states))

    def _sample_emissions(self, states, params, generator):
        probs = params["probs"][states]
        return (algorithms.uniform(probs.shape, probs.dtype, probs.device, generator) < probs).to(probs.dtype)

    def _emission_m_step(self, x, resp, params):
        counts = resp.sum(-2)
        a, b = self.prob_concentration1, self.prob_concentration0
        num = (resp.mT @ x + a - 1).clamp_min(0)
        den = (counts[..., None] + a + b - 2).clamp_min(0)
        probs = torch.where(den > 0, num / den.clamp_min(torch.finfo(x.dtype).tiny), params["probs"])
        eps = torch.finfo(x.dtype).eps
        return {"probs": probs.clamp(torch.finfo(x.dtype).tiny, 1 - eps)}

    def _emission_start(self, x, generator):
        centers, _ = _kmeans(x, self.n_states, generator)
        return {"probs": 0.9 * centers + 0.05}

    @classmethod
    def example(cls, seed=0):
        model = cls(2, 4)
        params = {"initial": torch.tensor([0.5, 0.5]),
                  "transition": torch.tensor([[0.9, 0.1], [0.15, 0.85]]),
                  "probs": torch.tensor([[0.9, 0.8, 0.1, 0.2], [0.1, 0.3, 0.85, 0.7]])}
        return model, cls._example_data(model, params, seed)


__all__ = ["HiddenMarkovModel", "CategoricalHMM", "GaussianHMM", "PoissonHMM", "BernoulliHMM",
           "HMMSequences", "Sequences"]
