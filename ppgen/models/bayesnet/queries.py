"""Exact queries and sampling of a Bayesian network at its point CPTs.

What lives here
---------------
:class:`BayesNetQueryMixin`, the public query methods of
:class:`~ppgen.models.bayesnet.BayesianNetwork`:

* :meth:`~BayesNetQueryMixin.query` and :meth:`~BayesNetQueryMixin.query_tensor`:
  posterior marginals or joints given evidence (sum-product elimination);
* :meth:`~BayesNetQueryMixin.map_query`: joint or marginal MAP assignments
  (max-product elimination with trace-back);
* :meth:`~BayesNetQueryMixin.log_prob` and
  :meth:`~BayesNetQueryMixin.log_likelihood`: per-row log evidence at the point
  CPTs or under a batch of CPT draws;
* :meth:`~BayesNetQueryMixin.sample` and :meth:`~BayesNetQueryMixin.replicate`:
  ancestral sampling, and exact posterior draws given evidence (forward
  filtering, backward sampling).

All of them run on the elimination plumbing of
:mod:`ppgen.models.bayesnet.engine`; one dict of evidence or many rows of it
(answered together) are accepted alike.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ...errors import DataError, ModelError
from .elimination import categorical

__all__ = ["BayesNetQueryMixin"]


class BayesNetQueryMixin:
    """Posterior queries, MAP, log-probabilities and sampling."""

    # ------------------------------------------------------------ queries
    def _query_ids(self, variables, what):
        names = [variables] if isinstance(variables, str) else list(variables)
        if not names:
            raise ModelError(f"{what}: no variables given")
        for name in names:
            self._name(name, what)
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ModelError(f"{what}: variable {dup!r} listed twice")
        return names, tuple(self._index[n] for n in names)

    def query(self, variables, evidence=None, joint=False):
        """Posterior marginals (or their joint) given evidence, by variable elimination.

        .. math::
            p(x_Q \\mid e) = \\frac{\\sum_{x_{\\setminus (Q \\cup E)}} \\prod_v
            \\theta_v[x_{\\mathrm{pa}(v)}, x_v]}{\\sum_{x_{\\setminus E}} \\prod_v
            \\theta_v[x_{\\mathrm{pa}(v)}, x_v]}\\bigg|_{x_E = e}

        Parameters
        ----------
        variables : str or list of str
        evidence : dict, DataFrame, array or tensor, optional
            A dict ``{variable: state name}`` (one evidence set), or ``R`` rows of
            evidence with missing values (a DataFrame of state names with
            ``None``/``NaN``, a dict of columns, or an integer array ``(R, V)``
            with ``-1``), answered in one vectorised computation.
        joint : bool
            The joint posterior of ``variables`` instead of each marginal.

        Returns
        -------
        One evidence set (a dict):
            ``joint=False``: ``{variable: pandas.Series}`` indexed by state names;
            ``joint=True``: a ``pandas.Series`` of probabilities indexed by a
            MultiIndex of the variables' states (a plain index for one variable).
        ``R`` rows of evidence:
            ``joint=False``: ``{variable: DataFrame (R, card)}``, one column per
            state (``.to_numpy()`` gives the array); ``joint=True``: one
            DataFrame ``(R, prod cards)`` with MultiIndex columns. The index is
            the evidence DataFrame's. A queried variable observed in a row gets
            a point mass there. Rows whose evidence has probability zero are NaN.

        Raises
        ------
        ModelError
            Unknown variables, a queried variable in dict evidence, or a query
            beyond the treewidth limit (``max_factor_size``).
        DataError
            Unknown states in the evidence.
        """
        import pandas as pd
        names, ids = self._query_ids(variables, "query")
        single, codes, index = self._evidence(evidence)
        if single:
            given = [self.variables[i] for i in ids if int(codes[0, i]) >= 0]
            if given:
                raise ModelError(f"query: {given} are both queried and given as evidence")
        tables = self._tables()
        if joint:
            values = self._marginal(ids, codes, single, tables).detach().cpu().numpy()
            self._check_possible(values, single, evidence)
            if single:
                if len(names) == 1:
                    labels = self._labels[names[0]]
                else:
                    labels = pd.MultiIndex.from_product([self.states[n] for n in names], names=names)
                return pd.Series(values.reshape(-1), index=labels, name="probability")
            columns = pd.MultiIndex.from_product([self.states[n] for n in names], names=names)
            return pd.DataFrame(values.reshape(values.shape[0], -1), index=index, columns=columns)
        out = {}
        for name, i in zip(names, ids):
            values = self._marginal((i,), codes, single, tables).detach().cpu().numpy()
            self._check_possible(values, single, evidence)
            if single:
                out[name] = pd.Series(values[0], index=self._labels[name], name=name)
            else:
                out[name] = pd.DataFrame(values, index=index, columns=self._labels[name])
        return out

    def query_tensor(self, variables, evidence=None):
        """The posterior joint of ``variables`` as a tensor ``(R, *cards)``, one row
        per evidence row (``R = 1`` for a dict); no pandas on the way out."""
        _, ids = self._query_ids(variables, "query")
        single, codes, _ = self._evidence(evidence)
        return self._marginal(ids, codes, single, self._tables())

    @staticmethod
    def _check_possible(values, single, evidence):
        if single and not np.isfinite(values).all():
            raise ModelError(f"the evidence {evidence!r} has probability zero under the network")

    def map_query(self, evidence=None, variables=None):
        """The most probable assignment given evidence (max-product elimination).

        With ``variables=None``: the joint MAP assignment of all variables not in
        the evidence, :math:`\\arg\\max_{x \\setminus e} p(x, e)`. With
        ``variables``: the *marginal* MAP of those variables,
        :math:`\\arg\\max_{x_Q} \\sum_{x \\setminus (Q \\cup e)} p(x, e)` (the
        others summed out first, then the maximum taken; pgmpy's convention).
        Of tied assignments one is returned.

        Returns
        -------
        dict ``{variable: state}`` for a dict of evidence; for ``R`` rows of
        evidence a DataFrame of state names (categorical columns), one row per
        evidence row, with a column per MAP variable (``variables=None``: every
        variable, the observed ones keeping their evidence, so the rows are
        completed; rows whose evidence is impossible are NaN).
        """
        import pandas as pd
        single, codes, index = self._evidence(evidence)
        tables = self._tables()
        num = len(self.variables)
        if variables is None:
            def make_plan(part, one):
                hard, soft = self._split(part, one)
                max_vars = tuple(i for i in range(num) if i not in hard)
                return self._plan((), hard, soft, max_vars=max_vars, prune=False)
        else:
            names, ids = self._query_ids(variables, "map_query")
            if single:
                given = [self.variables[i] for i in ids if int(codes[0, i]) >= 0]
                if given:
                    raise ModelError(f"map_query: {given} are both MAP variables and given as evidence")

            def make_plan(part, one):
                hard, soft = self._split(part, one, kept=ids)
                return self._plan((), hard, soft, max_vars=ids)

        def run(plan, part):
            def finish(result, rows, chunk):
                completed = chunk.clone()
                for v, values in plan.trace_back(result, {}, rows).items():
                    completed[:, v] = values
                return {"log_value": _log_value(result).expand(rows), "assignment": completed}

            return self._run(plan, part, tables, "map_query", finish)

        out = self._grouped(codes, single, make_plan, run)
        possible = out["log_value"] > -math.inf
        assignment = out["assignment"]
        shown = list(range(num)) if variables is None else list(ids)
        if single:
            if not bool(possible.all()):
                raise ModelError(f"the evidence {evidence!r} has probability zero under the network")
            row = assignment[0].tolist()
            return {self.variables[v]: self.states[self.variables[v]][row[v]] for v in shown
                    if variables is not None or int(codes[0, v]) < 0}
        columns = {}
        impossible = ~possible.cpu().numpy()
        for v in shown:
            name = self.variables[v]
            values = assignment[:, v].cpu().numpy().copy()
            values[impossible] = -1
            columns[name] = pd.Categorical.from_codes(values, categories=self.states[name])
        return pd.DataFrame(columns, index=index)

    def log_prob(self, data):
        """Per-row :math:`\\log p(e_r)` in nats at the point CPTs, missing values
        summed out, one vectorised computation over the rows (shape ``(N,)``)."""
        codes, _ = self._encode(data, "data")
        return self._log_evidence(codes, self._tables())

    def log_likelihood(self, data, params, **kwargs):
        """:math:`\\log p(x_i \\mid \\theta_s)` with missing values summed out, shape ``(S, N)``.

        ``params`` maps ``cpt_{v}`` to ``(S, *parent_cards, card)``. Complete rows
        are scored for all draws at once; rows with missing values by variable
        elimination, draw by draw.
        """
        codes = data if isinstance(data, torch.Tensor) and data.dtype == torch.long else self.check_data(data)
        draws = self._tables(params)
        num = draws[0].shape[0]
        complete = (codes >= 0).all(-1)
        out = torch.empty((num, codes.shape[0]), dtype=draws[0].dtype, device=draws[0].device)
        if bool(complete.any()):
            out[:, complete] = self._complete_log_prob(codes[complete], draws)
        if not bool(complete.all()):
            part = codes[~complete]
            for s in range(num):
                out[s, ~complete] = self._log_evidence(part, [t[s] for t in draws])
        return out

    # ------------------------------------------------------------ sampling
    def sample(self, n, params=None, evidence=None, *, generator=None):
        """``n`` rows drawn from the network (a LongTensor ``(n, V)`` of state indices).

        Without evidence, ancestral sampling (variables in topological order, all
        rows at once). With a dict of evidence, exact posterior draws: variable
        elimination over the ancestors of the evidence keeps each bucket, the
        eliminated variables are drawn in reverse order from their buckets given
        the ones drawn before (forward filtering, backward sampling), and the
        remaining variables forward from their CPTs. With ``R`` rows of evidence
        (``n`` must be ``R`` or None), one posterior draw per row (an imputation
        of its missing values). :meth:`to_frame` gives state names.

        Raises
        ------
        ModelError
            Evidence of probability zero, or buckets beyond ``max_factor_size``.
        """
        tables = self._tables(params)
        device = tables[0].device

        def uniforms(k):
            return torch.rand((k, 1), generator=generator, dtype=torch.float64).to(device)

        if evidence is None:
            if not (isinstance(n, int) and n > 0):
                raise DataError(f"n must be a positive integer, got {n!r}")
            return self._forward(tables, torch.full((n, len(self.variables)), -1, dtype=torch.long,
                                                    device=device), uniforms)
        single, codes, _ = self._evidence(evidence)
        if single:
            if not (isinstance(n, int) and n > 0):
                raise DataError(f"n must be a positive integer, got {n!r}")
        else:
            if n is not None and n != codes.shape[0]:
                raise DataError(f"sample: {codes.shape[0]} evidence rows give one draw each; "
                                f"got n={n!r} (pass n=None)")
            n = codes.shape[0]
        limit = self.max_factor_size

        def make_plan(part, one):
            return self._plan((), *self._split(part, one))

        def run(plan, part):
            plan.check(limit, self.variables, "sample")
            if plan.total_size > limit:
                raise ModelError(
                    f"sample: exact posterior sampling keeps every bucket of the elimination, "
                    f"{plan.total_size:,} entries in all, above max_factor_size={limit:,}; give "
                    "less evidence or raise max_factor_size")

            def finish(result, rows, chunk):
                if not bool((_log_value(result) > -math.inf).all()):
                    raise ModelError("sample: the evidence has probability zero under the network")
                count = n if single else rows
                local = {v: (chunk[0, v].expand(count) if single else chunk[:, v]) for v in plan.hard}
                plan.sample_back(result, local, count, uniforms)
                drawn = (chunk[:1].expand(count, -1) if single else chunk).clone()
                for v in plan.order:
                    drawn[:, v] = local[v]
                return drawn

            chunk_limit = max(1, limit * plan.max_size // max(plan.total_size, 1))
            return self._run(plan, part, tables, "sample", finish, keep_buckets=True, limit=chunk_limit)

        partial = self._grouped(codes, single, make_plan, run)
        return self._forward(tables, partial, uniforms)

    def _forward(self, tables, partial, uniforms):
        """Fill the ``-1`` entries of ``partial`` ``(n, V)`` by ancestral sampling.

        Exact for posterior draws too: the entries still missing are those of
        variables that are not ancestors of any evidence, whose conditional given
        everything drawn before them is their CPT row."""
        n = partial.shape[0]
        out = partial.clone()
        for v in self._order_ids:
            missing = out[:, v] < 0
            if not bool(missing.any()):
                continue
            table = tables[v]
            probs = (table[tuple(out[:, p] for p in self._parent_ids[v])] if self._parent_ids[v]
                     else table.expand(n, -1))
            out[:, v] = torch.where(missing, categorical(probs, uniforms(n)), out[:, v])
        return out

    def replicate(self, params, **kwargs):
        """One replicate of the data set at ``params``, with the data's missing
        entries kept missing (for posterior predictive checks)."""
        data = kwargs["data"]
        out = self.sample(data.shape[0], params=params)
        return torch.where(data >= 0, out, torch.full_like(out, -1))


def _log_value(result):
    """The log of an elimination's value: its table is kept scaled, with the scale's log
    apart (an impossible evidence shows as a scale of zero, not in the table)."""
    return result["table"].log() + result["log_scale"]
