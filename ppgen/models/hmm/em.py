"""MAP estimation of the HMM families by Baum-Welch EM.

:class:`BaumWelchMixin` is the part of
:class:`~ppgen.models.hmm.base.HiddenMarkovModel` that fits point parameters:
the batched E-step (forward-backward), the closed-form M-step for ``initial``
and ``transition`` (the families add their emissions' ``_emission_m_step``),
random starts (``_emission_start``), ``initialize`` and ``fit_map`` with its
restarts run together as one batch. The helpers ``floor_normalize``,
``dirichlet1`` and ``kmeans`` are shared with the families' M-steps and starts.
"""

from __future__ import annotations

import time

import torch

from . import algorithms

#: Elements of the per-chunk ``(S, B, T, K, K)`` tensors when scoring many draws.
CHUNK_ELEMENTS = 2**23
#: ``fit_map``'s restarts unless told: one start stops at a local optimum on the demo's
#: categorical data; ten, run as one batch, reach hmmlearn's best of ten (RESULTS.md).
DEFAULT_RESTARTS = 10


def floor_normalize(p):
    """Probabilities kept strictly positive (so MCMC/SVI can start from them)."""
    p = p.clamp_min(torch.finfo(p.dtype).tiny)
    return p / p.sum(-1, keepdim=True)


def dirichlet1(shape, generator, dtype, device):
    """Dirichlet(1, ..., 1) draws: normalised Exp(1) variables."""
    u = algorithms.uniform(shape, dtype, device, generator).clamp_min(torch.finfo(dtype).tiny)
    e = -u.log()
    return e / e.sum(-1, keepdim=True)


def kmeans(x, k, generator, iterations=50):
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


class BaumWelchMixin:
    """Baum-Welch EM with random restarts, mixed into
    :class:`~ppgen.models.hmm.base.HiddenMarkovModel`.

    Relies on the host's ``pack``, ``_mask``, ``_log_terms``, ``_priors``,
    ``log_prior``, ``set_params`` and the ``_emission_m_step`` and
    ``_emission_start`` hooks of the families.
    """

    def _e_step(self, padded, mask, params):
        """Expected sufficient statistics for a batch of parameter sets (leading dim R):
        ``gamma`` (R, B, T, K), transition counts (R, K, K), log-likelihood (R,)."""
        log_init, log_trans, log_emit = self._log_terms(padded, params)
        gamma, xi, log_p = algorithms.expected_counts(log_init, log_trans, log_emit, mask)
        return gamma, xi, log_p.sum(-1)

    def _m_step(self, padded, mask, gamma, xi, params):
        """Closed-form MAP updates, batched over the leading restart dimension."""
        a0, aT = self.initial_concentration, self.transition_concentration
        initial = floor_normalize((gamma[..., 0, :].sum(-2) + a0 - 1).clamp_min(0))
        counts = (xi + aT - 1).clamp_min(0)
        empty = counts.sum(-1, keepdim=True) <= 0
        transition = floor_normalize(torch.where(empty, torch.ones_like(counts), counts))
        x, resp = padded[mask], gamma[:, mask]
        return {"initial": initial, "transition": transition, **self._emission_m_step(x, resp, params)}

    def _random_starts(self, padded, mask, generator, count):
        """``count`` random starting points, stacked along a leading dimension."""
        K, dtype, device = self.n_states, self.dtype, self.device
        x = padded[mask]
        starts = []
        for _ in range(count):
            starts.append({"initial": dirichlet1((K,), generator, dtype, device),
                           "transition": dirichlet1((K, K), generator, dtype, device),
                           **self._emission_start(x, generator)})
        return {name: torch.stack([start[name] for start in starts]) for name in starts[0]}

    def initialize(self, data, generator=None, lengths=None, **kwargs):
        """A random start (the first of ``fit_map``'s restarts): k-means on the
        emissions for Gaussian, Poisson and Bernoulli data, Dirichlet draws otherwise."""
        padded, lengths = self.pack(data, lengths)
        self.default_length.fill_(int(lengths.max()))
        start = self._random_starts(padded, self._mask(padded, lengths), generator, 1)
        self.set_params({name: value[0] for name, value in start.items()})

    def fit_map(self, data, *, lengths=None, max_iter=1000, tol=1e-10, n_init=DEFAULT_RESTARTS, generator=None):
        """MAP estimate by Baum-Welch EM, ``n_init`` random restarts, the best kept.

        E-step: forward-backward (:func:`~ppgen.models.hmm.algorithms.expected_counts`)
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
        group = max(1, min(n_init, CHUNK_ELEMENTS // max(per_restart, 1)))
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
