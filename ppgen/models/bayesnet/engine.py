"""The bridge from a Bayesian network to :mod:`ppgen.models.bayesnet.elimination`.

What lives here
---------------
:class:`BayesNetEngineMixin`, the network's private inference plumbing that the
queries (:mod:`ppgen.models.bayesnet.queries`) and learning
(:mod:`ppgen.models.bayesnet.learning`) build on:

* ``_plan``: elimination :class:`~ppgen.models.bayesnet.elimination.Plan` objects, cached
  per (query, evidence, max variables) signature;
* ``_split``: which evidence variables are hard (observed in every row, sliced
  out of the graph) and which soft (per-row indicator vectors);
* ``_run``: one plan over many rows of evidence, in chunks under
  ``max_factor_size``, in numpy for small plans on the CPU, else in torch;
* ``_marginal``, ``_log_evidence``, ``_complete_log_prob``: posterior tables and
  per-row log evidence.

How rows are grouped by their pattern of missing values (``_grouped``) is
decided in :mod:`ppgen.models.bayesnet`, next to its thresholds.
"""

from __future__ import annotations

import math

import torch

from .elimination import NUMPY_BELOW, Plan

__all__ = ["BayesNetEngineMixin"]

_PLAN_CACHE_SIZE = 4096


class BayesNetEngineMixin:
    """Elimination plans, chunked runs, posterior tables and log evidence."""

    def _plan(self, query=(), hard=(), soft=(), max_vars=(), prune=True, normalized=False):
        key = (tuple(query), tuple(hard), tuple(soft), frozenset(max_vars), prune, normalized)
        plan = self._plans.get(key)
        if plan is None:
            plan = Plan(self._parent_ids, self._cards, query=query, hard=hard, soft=soft,
                        max_vars=max_vars, prune=prune, normalized=normalized)
            if len(self._plans) >= _PLAN_CACHE_SIZE:
                self._plans.pop(next(iter(self._plans)))
            self._plans[key] = plan
        return plan

    def _split(self, codes, single, kept=()):
        """Hard and soft evidence variables of ``codes``; ``kept`` variables (queried)
        are never hard: where observed they enter as indicators."""
        if single:
            row = codes[0].tolist()
            observed = [i for i, c in enumerate(row) if c >= 0]
            kept = set(kept)
            return (tuple(i for i in observed if i not in kept), tuple(i for i in observed if i in kept))
        obs = codes >= 0
        every = obs.all(0).tolist()
        some = obs.any(0).tolist()
        kept = set(kept)
        hard = tuple(i for i in range(len(every)) if every[i] and i not in kept)
        soft = tuple(i for i in range(len(every)) if some[i] and (not every[i] or i in kept))
        return hard, soft

    def _numpy_tables(self, tables):
        """Numpy views of CPU ``tables`` (cached while the tensors are unchanged):
        small plans run in numpy, see :data:`ppgen.models.bayesnet.elimination.NUMPY_BELOW`."""
        key = tuple((id(t), t._version) for t in tables)
        cached = self._numpy_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        arrays = [t.detach().numpy() for t in tables]
        self._numpy_cache = (key, arrays, tables)  # holding the tensors keeps their ids unique
        return arrays

    def _indicators(self, codes, soft, dtype):
        out = []
        for v in soft:
            column = codes[:, v]
            onehot = torch.nn.functional.one_hot(column.clamp(min=0), self._cards[v]).to(dtype)
            out.append(torch.where((column >= 0).unsqueeze(-1), onehot, torch.ones_like(onehot)))
        return out

    def _run(self, plan, codes, tables, what, finish, *, keep_buckets=False, limit=None):
        """Run ``plan`` over the rows of ``codes`` in chunks; ``finish(result, rows, part)``
        turns each chunk's result into a tensor with rows first; chunks are concatenated."""
        limit = self.max_factor_size if limit is None else limit
        plan.check(limit, self.variables, what)
        rows = codes.shape[0]
        chunk = plan.chunk_rows(limit, rows)
        dtype = tables[0].dtype if tables[0].is_floating_point() else torch.float64
        small = tables[0].device.type == "cpu" and min(chunk, rows) * plan.max_size < NUMPY_BELOW
        backend = "numpy" if small else "torch"
        if small:
            tables = self._numpy_tables(tables)
        outputs = []
        for start in range(0, rows, chunk):
            part = codes[start:start + chunk]
            hard_values = part[:, list(plan.hard)] if plan.hard else None
            soft_values = self._indicators(part, plan.soft, dtype)
            result = plan.run(tables, hard_values, soft_values, keep_buckets=keep_buckets, dtype=dtype,
                              backend=backend)
            outputs.append(finish(result, part.shape[0], part))
        if len(outputs) == 1:
            return outputs[0]
        if isinstance(outputs[0], dict):
            return {k: torch.cat([o[k] for o in outputs]) for k in outputs[0]}
        return torch.cat(outputs)

    def _marginal(self, query_ids, codes, single, tables, what="query"):
        """Posterior table ``(R, *cards)`` of ``query_ids`` given each row of ``codes``."""

        def make_plan(part, one):
            hard, soft = self._split(part, one, kept=query_ids)
            return self._plan(query_ids, hard, soft, normalized=True)

        def finish(result, rows, part):
            table = result["table"]
            if table.shape[0] != rows:
                table = table.expand((rows,) + table.shape[1:])
            total = table.reshape(rows, -1).sum(-1).reshape((rows,) + (1,) * len(query_ids))
            # the table is kept scaled; an impossible evidence shows as a zero scale: NaN rows
            impossible = (result["log_scale"] == -math.inf).expand(rows)
            return torch.where(impossible.reshape((rows,) + (1,) * len(query_ids)), math.nan, table / total)

        def run(plan, part):
            table = self._run(plan, part, tables, what, finish)
            # A normalised answer leaves out the factors the evidence cut off from the query;
            # where they hold zeros, they may make the evidence impossible: check it.
            if any(bool((tables[v] == 0).any()) for v in plan.dropped):
                impossible = self._log_evidence(part, tables) == -math.inf
                table = torch.where(impossible.reshape((-1,) + (1,) * (table.dim() - 1)), math.nan, table)
            return table

        return self._grouped(codes, single, make_plan, run)

    def _log_evidence(self, codes, tables, single=False):
        """``log p(e_r)`` per row, missing values summed out (elimination for rows
        with missing values, a direct product of CPT entries for complete rows)."""
        rows = codes.shape[0]
        complete = (codes >= 0).all(-1)
        out = torch.empty(rows, dtype=tables[0].dtype, device=codes.device)
        if bool(complete.any()):
            out[complete] = self._complete_log_prob(codes[complete], [t.unsqueeze(0) for t in tables])[0]
        if not bool(complete.all()):
            part = codes[~complete]

            def make_plan(sub, one):
                return self._plan((), *self._split(sub, one))

            def finish(result, n, chunk):
                return (result["table"].log() + result["log_scale"]).expand(n)

            out[~complete] = self._grouped(part, single and rows == 1, make_plan,
                                           lambda plan, sub: self._run(plan, sub, tables, "log_prob", finish))
        return out

    def _complete_log_prob(self, codes, tables):
        """``(S, N)`` log-probabilities of complete rows under ``S`` sets of CPTs
        (``tables[v]`` of shape ``(S, *parent_cards, card)``)."""
        total = 0
        for v in range(len(self.variables)):
            table = tables[v]
            flat = codes[:, v]
            stride = self._cards[v]
            for p in reversed(self._parent_ids[v]):
                flat = flat + codes[:, p] * stride
                stride *= self._cards[p]
            total = total + table.reshape(table.shape[0], -1)[:, flat].log()
        return total
