"""The machinery both RBM families share (:mod:`ppgen.models.rbm` has the families).

An RBM is an undirected model of visible units :math:`v \\in \\mathbb{R}^V` and binary
hidden units :math:`h \\in \\{0, 1\\}^H` with weights :math:`W` (``(V, H)``), visible
biases :math:`a` and hidden biases :math:`b`: :math:`p(v, h) = e^{-E(v, h)} / Z` and
:math:`p(v) = e^{-F(v)} / Z`, where the free energy :math:`F` sums the hidden layer out.
Both conditionals factorise, so block Gibbs sampling alternates :math:`h \\mid v` and
:math:`v \\mid h`. :math:`\\log Z` is exact by enumerating the smaller binary layer
(:mod:`.rbm_partition`) up to ``exact_limit`` units, and an annealed-importance-sampling
estimate with its standard error above.

**The energy-based-model protocol.** :class:`ppgen.inference.ContrastiveDivergence`
trains any ``GenerativeModel`` that offers, besides ``named_parameters()``,

``cd_step(v_data, v_start, k, generator)``
    ``k`` block-Gibbs sweeps from ``v_start`` (or from ``v_data`` when ``v_start`` is
    None) to negative samples :math:`v^-`; returns ``(gradients, v_minus)``:
    ``{parameter name: gradient}`` of :math:`\\overline{F(v_{data})} - \\overline{F(v^-)}`
    (the CD estimate of the gradient of the mean negative log-likelihood) and the chains'
    new state (kept between updates by persistent CD);
``cd_monitor(v, generator)``
    a per-datum training loss, described by the class attribute ``cd_monitor_name``
    (reported once an epoch on a sample of the training data).

**As a Pyro program.** The RBM has no directed factorisation, so :meth:`RBMBase.model`
observes each datum at site ``"obs"`` with an :class:`RBMMarginal` distribution whose
``log_prob`` is :math:`-F(v) - \\log Z` and whose ``sample`` runs Gibbs chains. There are
no global latent sites: the weights are the point estimate (``global_sites() == ()``).
"""

from __future__ import annotations

import logging

import pyro
import torch
from pyro.distributions import TorchDistribution
from torch import nn

from ...data import as_tensor
from ...errors import DataError, ModelError
from ...model import GenerativeModel
from .partition import (
    LogPartition,
    ais_betas,
    annealed_importance_sampling,
    bernoulli_draw,
    enumerate_logsumexp,
)

log = logging.getLogger("ppgen")

#: The largest layer ``log_partition(method="exact")`` enumerates on request (2^32 states).
MAX_ENUMERATED = 32
#: Differentiable enumeration (``MAP``) keeps every chunk's graph: at most this many elements.
MAX_DIFFERENTIABLE = 2 ** 24


def _same_tensors(first, second):
    return len(first) == len(second) and all(
        a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)
        for a, b in zip(first, second))


class _LogProbKind:
    """``log_prob_kind``: ``"exact"`` on the class (the registry's entry: exact up to
    ``exact_limit`` units in the enumerated layer, the default use); on an instance,
    ``"exact"`` or ``"estimate"`` (AIS) for that instance's size."""

    def __get__(self, instance, owner):
        if instance is None:
            return "exact"
        return "exact" if instance.log_prob_is_exact else "estimate"


class RBMMarginal(TorchDistribution):
    """The RBM's marginal :math:`p(v)` as a Pyro distribution over ``(V,)`` events.

    ``log_prob`` is :math:`-F(v) - \\log Z`: differentiable in the weights (exact
    enumeration) while gradients are being taken, otherwise with the model's cached
    :math:`\\log Z`. ``sample`` draws by Gibbs sampling (:meth:`RBMBase.sample`).
    """

    arg_constraints: dict = {}

    def __init__(self, rbm, batch_shape=()):
        self.rbm = rbm
        super().__init__(batch_shape=torch.Size(batch_shape), event_shape=torch.Size([rbm.n_visible]),
                         validate_args=False)

    @property
    def support(self):
        return self.rbm.support

    def expand(self, batch_shape, _instance=None):
        return RBMMarginal(self.rbm, batch_shape)

    def log_prob(self, value):
        rbm = self.rbm
        if torch.is_grad_enabled() and rbm.weights.requires_grad:
            return -rbm.free_energy(value) - rbm.differentiable_log_partition()
        with torch.no_grad():
            return -rbm.free_energy(value) - rbm.log_partition().value

    def sample(self, sample_shape=()):
        shape = torch.Size(sample_shape) + self.batch_shape
        return self.rbm.sample(max(shape.numel(), 1)).reshape(shape + self.event_shape)


class RBMBase(GenerativeModel):
    """What both RBM families share: parameters, Gibbs sampling, log Z, the Pyro program."""

    methods = ("cd", "map")
    log_prob_kind = _LogProbKind()
    cd_monitor_name = ""

    def __init__(self, n_visible: int, n_hidden: int, *, exact_limit: int = 20, init_scale: float = 0.01,
                 ais_runs: int = 100, ais_betas: int = 14500, ais_seed: int = 0, burn_in: int = 1000) -> None:
        super().__init__()
        for name, value, low in [("n_visible", n_visible, 1), ("n_hidden", n_hidden, 1),
                                 ("exact_limit", exact_limit, 0), ("ais_runs", ais_runs, 2),
                                 ("ais_betas", ais_betas, 2), ("burn_in", burn_in, 0)]:
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
                raise ModelError(f"{name} must be an integer >= {low}, got {value!r}")
        if exact_limit > MAX_ENUMERATED:
            raise ModelError(f"exact_limit={exact_limit}: enumeration past {MAX_ENUMERATED} units "
                             "(2^32 states) is out of reach; AIS takes over above the limit")
        if not (isinstance(init_scale, (int, float)) and init_scale > 0):
            raise ModelError(f"init_scale must be a positive number, got {init_scale!r}")
        self.n_visible, self.n_hidden, self.exact_limit = n_visible, n_hidden, exact_limit
        self.init_scale, self.ais_runs, self.ais_betas = float(init_scale), ais_runs, ais_betas
        self.ais_seed, self.burn_in = int(ais_seed), burn_in
        self.weights = nn.Parameter(self.init_scale * torch.randn(n_visible, n_hidden))
        self.visible_bias = nn.Parameter(torch.zeros(n_visible))
        self.hidden_bias = nn.Parameter(torch.zeros(n_hidden))
        # False until initialize() or set_weights(): fit() then draws the weights from its seed.
        self.register_buffer("initialized", torch.tensor(False))
        self._log_z_cache = None

    def _common_config(self):
        return {"n_visible": self.n_visible, "n_hidden": self.n_hidden, "exact_limit": self.exact_limit,
                "init_scale": self.init_scale, "ais_runs": self.ais_runs, "ais_betas": self.ais_betas,
                "ais_seed": self.ais_seed, "burn_in": self.burn_in}

    @property
    def dtype(self):
        return self.weights.dtype

    @property
    def device(self):
        return self.weights.device

    def global_sites(self):
        return ()

    def set_weights(self, weights, visible_bias, hidden_bias):
        """Set :math:`W` ``(V, H)``, :math:`a` ``(V,)`` and :math:`b` ``(H,)`` (e.g. another
        library's trained RBM); ``fit`` then continues from them."""
        for name, value, shape in [("weights", weights, (self.n_visible, self.n_hidden)),
                                   ("visible_bias", visible_bias, (self.n_visible,)),
                                   ("hidden_bias", hidden_bias, (self.n_hidden,))]:
            tensor = as_tensor(value, name, dtype=self.dtype, device=self.device)
            if tuple(tensor.shape) != shape:
                raise ModelError(f"set_weights: {name} must have shape {shape}, got {tuple(tensor.shape)}")
            with torch.no_grad():
                getattr(self, name).copy_(tensor)
        self.initialized.fill_(True)

    # ------------------------------------------------------------ conditionals
    def hidden_logits(self, v):
        """Logits of :math:`p(h_j = 1 \\mid v)`, shape ``(N, H)``."""
        raise NotImplementedError

    def sample_hidden(self, v, generator=None):
        return bernoulli_draw(torch.sigmoid(self.hidden_logits(v)), generator)

    def sample_visible(self, h, generator=None):
        """One draw of :math:`v \\sim p(v \\mid h)`."""
        raise NotImplementedError

    def visible_mean(self, h):
        """:math:`E[v \\mid h]`."""
        raise NotImplementedError

    def gibbs_step(self, v, generator=None):
        """One block-Gibbs sweep :math:`v \\to h \\sim p(h \\mid v) \\to v' \\sim p(v \\mid h)`."""
        with torch.no_grad():
            return self.sample_visible(self.sample_hidden(v, generator), generator)

    def sample_base(self, n, generator=None):
        """``n`` draws of the independent base distribution (AIS's start, Gibbs chains' start)."""
        return self._ais_path(self.dtype).sample_base(n, generator)

    def sample(self, n, params=None, *, burn_in=None, generator=None, mean=False):
        """``n`` draws by Gibbs sampling: ``n`` independent chains started from the
        base distribution, each run ``burn_in`` sweeps (default: the model's
        ``burn_in``) and its last state kept. ``mean=True`` returns
        :math:`E[v \\mid h]` of the last sweep instead (smoother images). ``params`` is
        ignored (the weights are the point estimate)."""
        if not (isinstance(n, int) and n > 0):
            raise DataError(f"n must be a positive integer, got {n!r}")
        steps = self.burn_in if burn_in is None else burn_in
        with torch.no_grad():
            v = self.sample_base(n, generator)
            for _ in range(max(steps - 1, 0)):
                v = self.gibbs_step(v, generator)
            if steps == 0:
                return v
            h = self.sample_hidden(v, generator)
            return self.visible_mean(h) if mean else self.sample_visible(h, generator)

    # ------------------------------------------------------------ densities
    def free_energy(self, v):
        """:math:`F(v) = -\\log \\sum_h e^{-E(v, h)}`, shape ``(N,)``."""
        raise NotImplementedError

    def _enumeration(self, weights, visible_bias, hidden_bias):
        """``(score, num_units, constant)``: :math:`\\log Z = \\mathrm{constant} +
        \\log \\sum_s e^{\\mathrm{score}(s)}` over the enumerated layer."""
        raise NotImplementedError

    def _ais_path(self, dtype):
        raise NotImplementedError

    def _enumerated_units(self):
        return self.n_hidden

    @property
    def log_prob_is_exact(self):
        """True when :meth:`log_prob` uses the exact :math:`\\log Z` (enumeration)."""
        return self._enumerated_units() <= self.exact_limit

    def _state_snapshot(self):
        return [t.detach().clone() for t in self.state_dict().values() if t.is_floating_point()]

    def log_partition(self, method="auto", *, num_runs=None, num_betas=None, seed=None, progress=None):
        """:math:`\\log Z` as a :class:`LogPartition` (value, standard error, exact or not).

        Parameters
        ----------
        method : {"auto", "exact", "ais"}
            ``"auto"``: enumeration up to ``exact_limit`` units in the enumerated
            layer, AIS above.
        num_runs, num_betas, seed : AIS particles, temperatures and seed (default:
            the model's ``ais_runs``, ``ais_betas``, ``ais_seed``).
        progress : bool, optional
            AIS progress bar (default: only on a terminal).

        The result is cached until the weights (or base rate) change.
        """
        if method not in ("auto", "exact", "ais"):
            raise ModelError(f"log_partition(method={method!r}): choose 'auto', 'exact' or 'ais'")
        if method == "auto":
            method = "exact" if self.log_prob_is_exact else "ais"
        units = self._enumerated_units()
        if method == "exact" and units > MAX_ENUMERATED:
            raise ModelError(f"log_partition(method='exact'): {units} units to enumerate is out of "
                             f"reach (at most {MAX_ENUMERATED}); use method='ais'")
        settings = (method, num_runs or self.ais_runs, num_betas or self.ais_betas,
                    self.ais_seed if seed is None else int(seed))
        snapshot = self._state_snapshot()
        cache = self._log_z_cache
        if cache is not None and cache[0] == settings and _same_tensors(cache[1], snapshot):
            return cache[2]
        with torch.no_grad():
            if method == "exact":
                result = self._exact_log_partition()
            else:
                result = self._ais_log_partition(*settings[1:], progress=progress)
        self._log_z_cache = (settings, snapshot, result)
        return result

    def _exact_log_partition(self):
        double = torch.float64
        score, units, constant = self._enumeration(self.weights.to(double), self.visible_bias.to(double),
                                                   self.hidden_bias.to(double))
        other = self.n_visible + self.n_hidden - units
        value = enumerate_logsumexp(score, units, chunk=max(64, 2 ** 22 // max(other, 1)),
                                    device=self.device) + constant
        return LogPartition(value=float(value), stderr=0.0, exact=True, method="enumeration")

    def _ais_log_partition(self, num_runs, num_betas, seed, progress=None):
        log.info("%s: estimating log Z by AIS (%d runs x %d temperatures)", type(self).__name__,
                 num_runs, num_betas)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        betas = ais_betas(num_betas, device=self.device).tolist()
        return annealed_importance_sampling(self._ais_path(torch.float64), betas, num_runs, generator,
                                            progress=progress)

    def _check_differentiable(self):
        units = self._enumerated_units()
        other = self.n_visible + self.n_hidden - units
        if units > self.exact_limit or 2 ** units * other > MAX_DIFFERENTIABLE:
            raise ModelError(
                f"{type(self).__name__}: exact maximum likelihood (MAP) enumerates 2^{units} states "
                f"of {other} units with gradients, beyond its limit (exact_limit={self.exact_limit}, "
                f"{MAX_DIFFERENTIABLE} elements); train with ContrastiveDivergence")

    def differentiable_log_partition(self):
        """Exact :math:`\\log Z` with gradients (for maximum likelihood by ``MAP``)."""
        self._check_differentiable()
        score, units, constant = self._enumeration(self.weights, self.visible_bias, self.hidden_bias)
        return enumerate_logsumexp(score, units, dtype=self.dtype, device=self.device) + constant

    def log_prob(self, data):
        """:math:`\\log p(v) = -F(v) - \\log Z` per datum, nats (densities for real data).

        Exact when :attr:`log_prob_is_exact`; otherwise :math:`\\log Z` is the AIS
        estimate of :meth:`log_partition`, whose ``stderr`` is then the standard error
        of every value returned (one shared offset).
        """
        data = self.check_data(data)
        with torch.no_grad():
            return -self.free_energy(data) - self.log_partition().value

    def log_likelihood(self, data, params=None, **kwargs):
        return self.log_prob(data).unsqueeze(0)

    # ------------------------------------------------------------ the Pyro program
    def model(self, data=None, *, n=None, subsample_size=None):
        if data is not None and torch.is_grad_enabled() and self.weights.requires_grad:
            self._check_differentiable()  # here, not in log_prob, where Pyro would rewrap the error
        size = data.shape[0] if data is not None else (n or 1)
        with pyro.plate("data", size, subsample_size=subsample_size) as idx:
            # without subsampling idx is arange(size): skip the copy of the whole data set
            whole = data is None or (subsample_size is None and len(idx) == data.shape[0])
            obs = data if whole else data[idx]
            return pyro.sample("obs", RBMMarginal(self, (len(idx),)), obs=obs)

    # ------------------------------------------------------------ CD protocol
    def cd_step(self, v_data, v_start=None, k=1, generator=None):
        """One contrastive-divergence estimate (see the module docstring); the hidden
        statistics are Rao-Blackwellised (:math:`p(h \\mid v)`, not samples)."""
        with torch.no_grad():
            p_data = torch.sigmoid(self.hidden_logits(v_data))
            v, p = (v_data, p_data) if v_start is None else (v_start, torch.sigmoid(self.hidden_logits(v_start)))
            for _ in range(k):
                h = bernoulli_draw(p, generator)
                v = self.sample_visible(h, generator)
                p = torch.sigmoid(self.hidden_logits(v))
            positive, negative = self.free_energy_gradients(v_data, p_data), self.free_energy_gradients(v, p)
            return {name: positive[name] - negative[name] for name in positive}, v

    def free_energy_gradients(self, v, hidden_probs):
        """Batch means of :math:`\\partial F(v) / \\partial \\theta` by parameter name, given
        ``hidden_probs`` :math:`= p(h = 1 \\mid v)`."""
        raise NotImplementedError

    def cd_monitor(self, v, generator=None):
        """The per-datum training loss reported by CD (``cd_monitor_name``)."""
        raise NotImplementedError

    def _initial_weights(self, generator):
        noise = torch.randn(self.n_visible, self.n_hidden, generator=generator, dtype=self.dtype)
        return self.init_scale * noise.to(self.device)
