"""Variable elimination over discrete factors with named axes, batched over evidence rows.

A discrete Bayesian network factorises the joint distribution of its variables as

.. math::
    p(x_1, \\dots, x_V) = \\prod_{v=1}^{V} p(x_v \\mid x_{\\mathrm{pa}(v)}),

one conditional probability table (CPT) per variable. Every query is a sum
(or a maximum) of this product over some variables with others fixed by evidence.
*Variable elimination* computes it without ever building the joint table: with
the factors :math:`\\{\\phi\\}` over named axes and an elimination order
:math:`\\sigma`, eliminating :math:`x_{\\sigma(i)}` replaces the factors that
mention it (its *bucket*) by one factor over the other variables of the bucket,

.. math::
    \\psi(x_S) = \\sum_{x_{\\sigma(i)}} \\prod_{\\phi \\ni x_{\\sigma(i)}} \\phi
    \\qquad (\\text{or } \\max_{x_{\\sigma(i)}} \\text{ for max-product}),

and what remains after the last step is the unnormalised answer over the query
variables. The cost is dominated by the largest bucket: the product of the
cardinalities of its variables. Over all orders the smallest largest bucket has
:math:`w + 1` variables, :math:`w` the *treewidth* of the network's moral graph
(with the evidence removed); finding the best order is NP-hard, so the order is
chosen greedily by *min-fill* (eliminate the variable whose elimination adds the
fewest new edges between its neighbours, ties broken by the smaller bucket).
Before elimination, *barren* variables (neither a query or evidence variable nor
an ancestor of one) are pruned: summing a CPT over its child gives 1.

Evidence comes in two kinds, both with a leading batch axis of ``R`` rows:

- *hard* evidence (a variable observed in every row) slices each CPT that
  mentions it at the observed index, per row, so the variable leaves the graph;
- *soft* evidence (a variable observed in some rows) multiplies in an indicator
  vector per row, :math:`\\lambda_r(x) = [x = e_r]`, all ones where the row is
  missing, so one computation answers rows with different missing values.

A :class:`Plan` is the symbolic part (pruning, order, the shape of every
intermediate factor); it depends only on the query variables and which
variables carry hard or soft evidence, and is cached by the caller. Before
anything runs, the plan knows the size of its largest intermediate factor; a
plan above the limit (``max_factor_size``) is refused with a
:class:`~ppgen.errors.ModelError` that names the bucket, rather than running
out of memory. Many rows are processed in chunks so that rows times the largest
factor stays under the limit.

Each intermediate factor is rescaled per row by its maximum, the logarithms of
the scales summed, so long products of small probabilities neither underflow
nor lose the log-normaliser (:math:`\\log p(e)` for rows of evidence).
Max-product keeps, for each eliminated variable, the argmax table over its
bucket's other variables; tracing these back in reverse order gives the MAP
assignment. Sum-product can keep each bucket's product instead: sampling every
variable in reverse order from its bucket, given the variables sampled before
it, draws exactly from the posterior (forward filtering, backward sampling).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ...errors import ModelError
from .elimination_backends import NUMPY, TORCH_DTYPE, TorchOps, contraction, rescale
from .ordering import ancestral_closure, min_fill_order

#: default limit on the number of entries of one intermediate factor (per batch of rows).
DEFAULT_MAX_FACTOR_SIZE = 2 ** 27
#: on the CPU, plans whose largest table (times the rows) is under this many entries run
#: in numpy, whose per-operation overhead is a fraction of torch's.
NUMPY_BELOW = 2 ** 16


class _Input:
    """How one factor enters a product over ``union`` axes: permute, then add axes."""

    __slots__ = ("slot", "perm", "index")

    def __init__(self, slot, axes, union):
        self.slot = slot
        pos = {u: i for i, u in enumerate(union)}
        ranked = sorted(range(len(axes)), key=lambda i: pos[axes[i]])
        self.perm = None if ranked == list(range(len(axes))) else (0,) + tuple(i + 1 for i in ranked)
        present = set(axes)
        self.index = (slice(None),) + tuple(slice(None) if u in present else None for u in union)
        if len(axes) == len(union):
            self.index = None

    def align(self, tensor, ops):
        if self.perm is not None:
            tensor = ops.permute(tensor, self.perm)
        return tensor if self.index is None else tensor[self.index]


class Step:
    """Eliminate ``var``: multiply the bucket's factors over ``union`` (``var`` last),
    reduce the last axis by ``reduce`` ("sum" or "max"), store the result in ``out``."""

    __slots__ = ("var", "union", "inputs", "reduce", "out", "size", "dim")

    def __init__(self, var, union, inputs, reduce, out, size, dim=None):
        self.var, self.union, self.inputs = var, union, inputs
        self.reduce, self.out, self.size = reduce, out, size
        # one input: reduce its own axis ``dim`` in place (the other axes keep their order)
        self.dim = dim


class Plan:
    """A compiled elimination schedule for one query pattern.

    Attributes
    ----------
    query : tuple of int
        Variables kept, in the order of the output's axes.
    hard, soft : tuple of int
        Variables with hard evidence (columns of ``hard_values``, in this order)
        and with soft evidence (entries of ``soft_values``, in this order).
    relevant : frozenset of int
        The variables left after pruning barren ones.
    order : tuple of int
        The elimination order.
    steps : list of Step
    max_size : int
        Entries of the largest intermediate factor for one row of evidence.
    total_size : int
        Entries of all buckets together (what sampling keeps), per row.
    width : int
        Variables in the largest bucket minus one (the induced width).
    dropped : frozenset
        With ``normalized``: the variables whose CPTs were cut off from the query by the
        hard evidence and left out (a constant per row; zero for impossible evidence).
    """

    def __init__(self, parents, cards, *, query=(), hard=(), soft=(), max_vars=(), prune=True,
                 normalized=False):
        self.cards = tuple(cards)
        self.query, self.hard, self.soft = tuple(query), tuple(hard), tuple(soft)
        self.max_vars = frozenset(max_vars)
        hard_set = set(self.hard)
        keep = set(self.query) | hard_set | set(self.soft) | self.max_vars
        relevant = ancestral_closure(parents, keep) if prune else set(range(len(parents)))
        # Initial factors: one CPT per relevant variable (hard axes sliced away), one
        # indicator per soft-evidence variable.
        hard_col = {v: i for i, v in enumerate(self.hard)}
        candidates = []  # (axes, ("cpt", var, perm, hard columns) | ("soft", position))
        for v in sorted(relevant):
            scope = tuple(parents[v]) + (v,)
            hard_axes = [i for i, a in enumerate(scope) if a in hard_set]
            rest = [i for i, a in enumerate(scope) if a not in hard_set]
            perm = tuple(hard_axes + rest)
            candidates.append((tuple(scope[i] for i in rest),
                               ("cpt", v, None if perm == tuple(range(len(scope))) else perm,
                                tuple(hard_col[scope[i]] for i in hard_axes))))
        for i, v in enumerate(self.soft):
            if v in relevant:
                candidates.append(((v,), ("soft", i)))
        self.dropped = frozenset()
        if normalized:
            # Factors not connected to a kept variable (once the hard evidence has cut
            # the graph) only scale each row by a constant: a normalised answer
            # does not need them.
            root = {}

            def find(a):
                while root.get(a, a) != a:
                    root[a] = root.get(root[a], root[a])
                    a = root[a]
                return a

            for axes, _ in candidates:
                for a in axes[1:]:
                    ra, rb = find(axes[0]), find(a)
                    if ra != rb:
                        root[ra] = rb
            wanted = {find(a) for a in set(self.query) | self.max_vars}
            keep = [bool(axes) and find(axes[0]) in wanted for axes, _ in candidates]
            # ... unless the evidence is impossible: a dropped CPT holding zeros may scale
            # a row by 0, which the caller checks (the CPTs left out, by variable)
            self.dropped = frozenset(src[1] for (_, src), k in zip(candidates, keep) if not k and src[0] == "cpt")
            candidates = [c for c, k in zip(candidates, keep) if k]
            relevant = {a for axes, _ in candidates for a in axes} | set(self.query)
        self.relevant = frozenset(relevant)
        self.cpt_slots = []  # (slot, var, permutation putting hard axes first, hard columns)
        self.soft_slots = []  # (slot, position in soft)
        slots = []
        for axes, src in candidates:
            if src[0] == "cpt":
                self.cpt_slots.append((len(slots),) + src[1:])
            else:
                self.soft_slots.append((len(slots), src[1]))
            slots.append(axes)
        self.num_initial = len(slots)
        eliminate = relevant - hard_set - set(self.query)
        sum_vars = eliminate - self.max_vars
        max_vars_left = eliminate & self.max_vars
        self.order = tuple(min_fill_order([set(s) for s in slots], [sum_vars, max_vars_left], cards))
        # Simulate the elimination.
        holders = {}
        active = set(range(len(slots)))
        for slot, axes in enumerate(slots):
            for a in axes:
                holders.setdefault(a, set()).add(slot)
        self.steps = []
        self.max_size, self.total_size, self.width = 1, 0, 0
        self._largest = None
        for v in self.order:
            bucket = sorted(holders.pop(v, ()))
            union = []
            for slot in bucket:
                for a in slots[slot]:
                    if a != v and a not in union:
                        union.append(a)
            union.append(v)
            union = tuple(union)
            size = math.prod(cards[a] for a in union)
            if size > self.max_size:
                self.max_size, self._largest = size, (v, union)
            self.total_size += size
            self.width = max(self.width, len(union) - 1)
            out = len(slots)
            slots.append(union[:-1])
            inputs = [_Input(slot, slots[slot], union) for slot in bucket]
            for slot in bucket:
                active.discard(slot)
                for a in slots[slot]:
                    if a != v:
                        holders[a].discard(slot)
            for a in union[:-1]:
                holders[a].add(out)
            active.add(out)
            dim = 1 + slots[bucket[0]].index(v) if len(bucket) == 1 else None
            self.steps.append(Step(v, union, inputs, "max" if v in self.max_vars else "sum", out, size, dim))
        self.final = [_Input(slot, slots[slot], self.query) for slot in sorted(active)]
        final_size = math.prod(cards[a] for a in self.query)
        if final_size > self.max_size:
            self.max_size, self._largest = final_size, (None, self.query)
        self.num_slots = len(slots)

    # ------------------------------------------------------------ limits
    def check(self, limit, names, what="query"):
        """Raise a :class:`ModelError` if one row's largest factor exceeds ``limit``."""
        if self.max_size <= limit:
            return
        var, union = self._largest
        listed = ", ".join(names[a] for a in union[:12]) + (", ..." if len(union) > 12 else "")
        where = (f"eliminating {names[var]!r} joins {len(union)} variables ({listed})"
                 if var is not None else f"the answer itself spans {len(union)} variables ({listed})")
        raise ModelError(
            f"{what}: exact inference needs an intermediate table of {self.max_size:,} entries: "
            f"{where}; the limit is max_factor_size={limit:,}. Exact inference costs "
            f"exponentially in the treewidth (here about {self.width} under the min-fill order); "
            "ask about fewer variables or give more evidence, use approximate inference "
            "(sampling), or raise max_factor_size if the memory is there")

    def chunk_rows(self, limit, rows):
        """Rows per chunk so that rows x largest factor stays under ``limit``."""
        return max(1, min(rows, limit // max(self.max_size, 1)))

    # ------------------------------------------------------------ running
    def initial_factors(self, tables, hard_values, soft_values, dtype, ops):
        factors = [None] * self.num_slots
        for slot, v, perm, cols in self.cpt_slots:
            table = ops.cast(tables[v], dtype)
            if perm is not None:
                table = ops.permute(table, perm)
            if cols:
                factors[slot] = table[tuple(hard_values[:, c] for c in cols)]
            else:
                factors[slot] = table[None]
        for slot, i in self.soft_slots:
            factors[slot] = ops.cast(soft_values[i], dtype)
        return factors

    def run(self, tables, hard_values=None, soft_values=None, *, keep_buckets=False, dtype=None,
            backend=None):
        """Run the plan on CPTs ``tables`` (indexed by variable id).

        Parameters
        ----------
        tables : sequence of tensors
            ``tables[v]`` has shape ``(*parent_cards, card_v)``.
        hard_values : LongTensor ``(R, len(hard))``, optional
        soft_values : list of tensors ``(R, card)``, optional
            Indicator (or likelihood) vectors of the soft-evidence variables.
        keep_buckets : bool
            Keep each step's bucket product (for backward sampling).
        backend : {"torch", "numpy"}, optional
            Where the arithmetic runs. ``"numpy"`` (CPU tensors only) has a
            fraction of torch's per-operation overhead, which is what small
            tables cost; default: numpy on the CPU when one row's largest table
            times the rows is small (under :data:`NUMPY_BELOW` entries), else torch.
            ``tables`` may then be given as numpy arrays already.

        Returns
        -------
        dict of tensors
            ``table``: ``(B, *query_cards)``, rescaled; ``log_scale``: ``(B,)``, so
            that the unnormalised answer is ``table * exp(log_scale)``; ``argmax``:
            ``{var: (B, *other bucket cards)}`` for max-eliminated variables;
            ``buckets``: ``{var: (B, *union_cards)}`` when ``keep_buckets``.
            ``B`` is ``R``, or 1 when nothing depends on the rows.
        """
        first = tables[next(iter(self.relevant))] if self.relevant else None
        if dtype is None:
            dtype = first.dtype if first is not None else torch.float64
        if isinstance(dtype, np.dtype):
            dtype = TORCH_DTYPE[dtype]
        rows_in = 1 if hard_values is None else hard_values.shape[0]
        if soft_values:
            rows_in = max(rows_in, soft_values[0].shape[0])
        if backend is None:
            on_cpu = first is None or isinstance(first, np.ndarray) or first.device.type == "cpu"
            backend = "numpy" if on_cpu and rows_in * self.max_size < NUMPY_BELOW else "torch"
        if backend == "numpy":
            ops = NUMPY
            hard_values = None if hard_values is None else ops.array(hard_values)
            soft_values = [ops.array(x) for x in soft_values or ()]
        else:
            ops = TorchOps(first.device if first is not None else "cpu")
        dtype_in = ops.dtype(dtype)
        fuse = backend == "torch"
        factors = self.initial_factors(tables, hard_values, soft_values, dtype_in, ops)
        # Rescale every few steps (every step below float64) so products of many
        # small probabilities cannot underflow; the log-scales add up.
        every = 4 if dtype == torch.float64 else 1
        scales = []
        argmax, buckets = {}, {}
        last = len(self.steps) - 1
        for i, step in enumerate(self.steps):
            if step.dim is not None and not keep_buckets:
                product, dim = factors[step.inputs[0].slot], step.dim
                factors[step.inputs[0].slot] = None
            else:
                terms = [inp.align(factors[inp.slot], ops) for inp in step.inputs]
                for inp in step.inputs:
                    factors[inp.slot] = None
                if fuse and step.reduce == "sum" and len(terms) > 1 and not keep_buckets:
                    # Multiply and sum out in one contraction (matrix products), never
                    # building the bucket's whole product table: what large batches
                    # need; small tables are quicker multiplied out (numpy backend).
                    factors[step.out] = ops.einsum(contraction(len(step.union), len(terms)), *terms)
                    rescale(factors, step.out, i, every, last, scales, ops)
                    continue
                product, dim = terms[0], -1
                for term in terms[1:]:
                    product = product * term
                if keep_buckets:
                    buckets[step.var] = product
            if step.reduce == "max":
                out, arg = ops.max(product, dim)
                argmax[step.var] = arg
            else:
                out = product.sum(dim)
            factors[step.out] = out
            rescale(factors, step.out, i, every, last, scales, ops)
        log_scale = None
        if scales:
            rows = max(x.shape[0] for x in scales)
            log_scale = ops.log(ops.stack([ops.expand(x, (rows,)) for x in scales])).sum(0)
        table = None
        constants = []
        for inp in self.final:
            term = factors[inp.slot]
            if term.ndim == 1:  # a per-row constant: add its log (a product could underflow)
                constants.append(term)
                continue
            term = inp.align(term, ops)
            table = term if table is None else table * term
        if constants:
            rows = max(x.shape[0] for x in constants)
            if log_scale is not None:
                rows = max(rows, log_scale.shape[0])
            extra = ops.log(ops.stack([ops.expand(x, (rows,)) for x in constants])).sum(0)
            log_scale = extra if log_scale is None else ops.expand(log_scale, (rows,)) + extra
        cards = tuple(self.cards[a] for a in self.query)
        if table is None:
            table = ops.ones((1,) + cards, dtype_in)
        else:
            table = ops.expand(table, (table.shape[0],) + cards)
        if log_scale is None:
            log_scale = ops.zeros((1,), dtype_in)
        rows = max(table.shape[0], log_scale.shape[0])
        result = {"table": ops.expand(table, (rows,) + table.shape[1:]),
                  "log_scale": ops.expand(log_scale, (rows,)), "argmax": argmax, "buckets": buckets}
        if ops is NUMPY:
            result = {k: ({n: torch.from_numpy(np.ascontiguousarray(x)) for n, x in v.items()}
                          if isinstance(v, dict) else torch.from_numpy(np.ascontiguousarray(v)))
                      for k, v in result.items()}
        return result

    def trace_back(self, result, assignment, rows):
        """Fill ``assignment`` (dict var -> LongTensor (rows,)) with the argmax of
        every max-eliminated variable, in reverse elimination order."""
        for step in reversed(self.steps):
            if step.reduce != "max":
                continue
            arg = result["argmax"][step.var]
            batch = (torch.arange(rows, device=arg.device) if arg.shape[0] > 1
                     else torch.zeros(rows, dtype=torch.long, device=arg.device))
            index = (batch,) + tuple(assignment[a] for a in step.union[:-1])
            assignment[step.var] = arg[index]
        return assignment

    def sample_back(self, result, assignment, num, uniforms):
        """Sample every eliminated variable from its bucket given the ones sampled
        before it (reverse elimination order): exact posterior draws.

        ``assignment`` holds LongTensors ``(num,)`` of the query variables, if any;
        ``uniforms(num)`` returns uniform draws of shape ``(num, 1)``.
        """
        for step in reversed(self.steps):
            bucket = result["buckets"][step.var]
            batch = (torch.arange(num, device=bucket.device) if bucket.shape[0] > 1
                     else torch.zeros(num, dtype=torch.long, device=bucket.device))
            index = (batch,) + tuple(assignment[a] for a in step.union[:-1])
            probs = bucket.expand((bucket.shape[0],) + tuple(self.cards[a] for a in step.union))[index]
            assignment[step.var] = categorical(probs, uniforms(num))
        return assignment


def categorical(weights, uniform):
    """Inverse-CDF draws from unnormalised rows ``weights (n, k)``; ``uniform (n, 1)``."""
    cdf = weights.cumsum(-1)
    target = uniform.to(cdf.dtype) * cdf[:, -1:]
    return (cdf <= target).sum(-1).clamp_(max=weights.shape[-1] - 1)
