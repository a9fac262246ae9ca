"""Learning the CPTs of a Bayesian network from data.

What lives here
---------------
:class:`BayesNetLearningMixin`, the network's learning methods:

* :meth:`~BayesNetLearningMixin.exact_posterior`: the conjugate posterior of
  every CPT row (a Dirichlet per parent configuration) and the
  Dirichlet-multinomial marginal likelihood, for complete data
  (``ppgen.fit(..., Exact())``);
* :meth:`~BayesNetLearningMixin.initialize`: point CPTs from smoothed counts;
* :meth:`~BayesNetLearningMixin.expected_counts` and
  :meth:`~BayesNetLearningMixin.fit_map`: expected family counts with missing
  values summed out by elimination, and MAP CPTs by EM (``ppgen.fit(..., MAP())``).
"""

from __future__ import annotations

import math
import time

import pyro.distributions as dist
import torch

from ...errors import MethodError

__all__ = ["BayesNetLearningMixin"]


class BayesNetLearningMixin:
    """Counts, the conjugate posterior, initialisation and EM."""

    def _counts(self, codes, v):
        """Counts ``(*parent_cards, card)`` of the rows whose family of ``v`` is observed."""
        family = self._parent_ids[v] + (v,)
        shape = tuple(self._cards[a] for a in family)
        flat = torch.zeros(codes.shape[0], dtype=torch.long, device=codes.device)
        for a in family:
            flat = flat * self._cards[a] + codes[:, a]
        mask = (codes[:, list(family)] >= 0).all(-1)
        counts = torch.bincount(flat[mask], minlength=math.prod(shape))
        return counts.reshape(shape).to(torch.float64)

    def exact_posterior(self, data, **kwargs):
        """The conjugate posterior of every CPT row given complete data.

        Returns ``(marginals, joint_sampler, log_evidence)``: ``marginals[f"cpt_{v}"]``
        is ``Dirichlet(alpha + counts)`` with batch shape ``parent_cards``;
        ``joint_sampler(k)`` draws ``{site: (k, *parent_cards, card)}``;
        ``log_evidence`` is :math:`\\log p(D)` in nats (Dirichlet-multinomial).

        Raises
        ------
        MethodError
            The data have missing values: the posterior is then a mixture with
            exponentially many components; use MAP, SVI or NUTS.
        """
        codes = data if isinstance(data, torch.Tensor) and data.dtype == torch.long else self.check_data(data)
        missing = int((codes < 0).sum())
        if missing:
            raise MethodError(f"Exact: the data have {missing} missing values, so the CPT posterior "
                              "has no closed form; use MAP (EM), SVI or NUTS, which sum the missing "
                              "values out exactly")
        alpha = self.prior_concentration.to(torch.float64)
        marginals, log_evidence = {}, torch.zeros((), dtype=torch.float64, device=alpha.device)
        for v in self.variables:
            counts = self._counts(codes, self._index[v]).to(alpha.device)
            post = alpha + counts
            k = counts.shape[-1]
            log_evidence = log_evidence + (
                torch.lgamma(k * alpha) - torch.lgamma(post.sum(-1))
                + (torch.lgamma(post) - torch.lgamma(alpha)).sum(-1)).sum()
            marginals[f"cpt_{v}"] = dist.Dirichlet(post)

        def joint_sampler(k):
            return {site: d.sample((k,)) for site, d in marginals.items()}

        return marginals, joint_sampler, log_evidence

    def initialize(self, data, generator=None, **kwargs):
        """Point CPTs from smoothed counts: :math:`(n_{v,c,k} + \\alpha) / (n_{v,c} + K_v \\alpha)`,
        counting for each variable the rows where it and its parents are observed."""
        codes = data if isinstance(data, torch.Tensor) and data.dtype == torch.long else self.check_data(data)
        alpha = float(self.prior_concentration)
        for v in self.variables:
            counts = self._counts(codes, self._index[v]) + alpha
            self.point.set(f"cpt_{v}", (counts / counts.sum(-1, keepdim=True)).to(self.device))

    def _log_prior(self, tables):
        alpha = self.prior_concentration.to(torch.float64)
        total = torch.zeros((), dtype=torch.float64)
        for table in tables:
            prior = dist.Dirichlet(alpha.expand(table.shape), validate_args=False)
            total = total + prior.log_prob(table.double().clamp_min(0)).sum().cpu()
        return total

    def expected_counts(self, data, params=None):
        """Expected family counts :math:`E[n_{v,c,k} \\mid D, \\theta]` (missing values
        summed out by elimination): ``{variable: (*parent_cards, card)}``."""
        codes = data if isinstance(data, torch.Tensor) and data.dtype == torch.long else self.check_data(data)
        tables = self._tables(params)
        out = {}
        for v in self.variables:
            i = self._index[v]
            family = self._parent_ids[i] + (i,)
            counts = self._counts(codes, i).to(tables[i].dtype).to(tables[i].device)
            incomplete = (codes[:, list(family)] < 0).any(-1)
            if bool(incomplete.any()):
                part = codes[incomplete]
                posterior = self._marginal(family, part, False, tables, "expected_counts")
                counts = counts + torch.nan_to_num(posterior, nan=0.0).sum(0)
            out[v] = counts
        return out

    def fit_map(self, data, *, max_iter=200, tol=1e-10, n_init=1, generator=None, **kwargs):
        """MAP CPTs by expectation-maximisation, missing values summed out exactly.

        E-step: expected family counts by variable elimination; M-step:
        :math:`\\theta_v[c, k] \\propto \\max(E[n_{v,c,k}] + \\alpha - 1, 0)` (uniform
        for a row with nothing to go on). Each iteration raises the log posterior;
        stops when it changes by less than ``tol`` per row. ``n_init`` restarts
        (the first from :meth:`initialize`, the others perturbed with ``generator``);
        the best is kept. Sets the point CPTs; returns ``{"loss": negative log
        posterior per iteration (nats), "n_iter", "converged", "seconds"}``.
        """

        start = time.perf_counter()
        codes = data if isinstance(data, torch.Tensor) and data.dtype == torch.long else self.check_data(data)
        alpha = float(self.prior_concentration)
        rows = codes.shape[0]
        best = None
        for restart in range(n_init):
            self.initialize(codes)
            params = {f"cpt_{v}": t for v, t in zip(self.variables, self._tables())}
            if restart:
                for site, table in params.items():
                    noise = -torch.rand(table.shape, generator=generator, dtype=torch.float64).log()
                    table = table * noise.to(table.device)
                    params[site] = table / table.sum(-1, keepdim=True)
            history, converged = [], False
            for _ in range(max_iter):
                tables = self._tables(params)
                loglik = float(self._log_evidence(codes, tables).sum())
                history.append(-(loglik + float(self._log_prior(tables))))
                if len(history) > 1 and abs(history[-2] - history[-1]) < tol * rows:
                    converged = True
                    break
                counts = self.expected_counts(codes, params)
                for v in self.variables:
                    table = (counts[v] + alpha - 1).clamp_min(0)
                    total = table.sum(-1, keepdim=True)
                    uniform = torch.full_like(table, 1.0 / table.shape[-1])
                    params[f"cpt_{v}"] = torch.where(total > 0, table / total.clamp_min(1e-300), uniform)
            if best is None or history[-1] < best[1][-1]:
                best = (params, history, converged)
        params, history, converged = best
        self.set_params(params)
        return {"loss": history, "n_iter": len(history), "converged": converged,
                "seconds": time.perf_counter() - start}
