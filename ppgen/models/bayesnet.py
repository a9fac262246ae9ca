"""Discrete Bayesian networks: exact queries, sampling, and learning their tables.

A Bayesian network over discrete variables :math:`x_1, \\dots, x_V` with a
directed acyclic graph (DAG) and one conditional probability table (CPT) per
variable factorises the joint distribution as

.. math::
    p(x \\mid \\theta) = \\prod_{v=1}^{V} \\theta_{v}[x_{\\mathrm{pa}(v)}, x_v],
    \\qquad \\theta_v[c, \\cdot\\,] \\in \\Delta^{K_v - 1},

where :math:`\\theta_v[c, k] = p(x_v = k \\mid x_{\\mathrm{pa}(v)} = c)`. A CPT is
stored as an array of shape ``(*parent_cards, card)``: one axis per parent, in
the order of ``parents[v]``, and the variable's own states on the last axis (the
layout of :class:`ppgen.datasets.bif.BIFNetwork`).

As a Bayesian model each row :math:`\\theta_v[c]` of each CPT has an independent
Dirichlet prior, :math:`\\theta_v[c] \\sim \\mathrm{Dir}(\\alpha \\mathbf 1)`
(:math:`\\alpha` = ``prior_concentration``), and the rows of the data are
independent draws from the network. With complete data the posterior is again
a product of Dirichlets, :math:`\\mathrm{Dir}(\\alpha + n_{v,c})` with
:math:`n_{v,c,k}` the number of rows with :math:`x_{\\mathrm{pa}(v)} = c,
x_v = k`, and the marginal likelihood is

.. math::
    p(D) = \\prod_{v, c} \\frac{\\Gamma(K_v \\alpha)}{\\Gamma(K_v \\alpha + n_{v,c})}
    \\prod_k \\frac{\\Gamma(\\alpha + n_{v,c,k})}{\\Gamma(\\alpha)}

(Dirichlet-multinomial), which :meth:`BayesianNetwork.exact_posterior` returns
and ``ppgen.fit(..., Exact())`` uses. With missing values the posterior is a
mixture with exponentially many components; MAP (by EM,
:meth:`BayesianNetwork.fit_map`), SVI and NUTS then sum the missing values out
exactly (by elimination, or by Pyro's enumeration in the model program).

Queries (:meth:`~BayesianNetwork.query`, :meth:`~BayesianNetwork.map_query`,
:meth:`~BayesianNetwork.log_prob`, sampling given evidence) use the network's
point CPTs and ppgen's own variable elimination (:mod:`ppgen.models.elimination`)
rather than Pyro's enumeration: a torch tensor has at most 64 dimensions, and
networks have hundreds of variables. Their cost is exponential in the treewidth
of the moral graph (with the evidence removed) and linear in everything else;
a query whose largest intermediate table would exceed ``max_factor_size``
entries (default :math:`2^{27}`, 1 GiB of float64) is refused with a
:class:`~ppgen.errors.ModelError` before any memory is allocated.

Many rows of evidence (a DataFrame or array with missing values) are answered
together: one elimination over all rows, the variables observed in only some
rows entering as per-row indicator vectors; or, when that shared computation
is expensive (networks with many states) or over the limit and the rows fall
into few patterns of missing values, one elimination per pattern with its
observed variables sliced out.

Data are integer arrays ``(N, V)`` of state indices in the network's variable
order with ``-1`` for a missing value, or pandas DataFrames (or dicts of
columns) of state names with ``None``/``NaN`` for missing values.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.ops.indexing import Vindex

from ..errors import DataError, MethodError, ModelError
from ..model import GenerativeModel
from .elimination import DEFAULT_MAX_FACTOR_SIZE, NUMPY_BELOW, Plan, categorical

__all__ = ["BayesianNetwork"]

_PLAN_CACHE_SIZE = 4096
#: a batch of rows whose shared plan costs more than this many table entries in all ...
_GROUP_ABOVE = 2 ** 22
#: ... is split into its patterns of missing values when a pattern's own plan (about a
#: millisecond of overhead, worth this many entries) times the patterns costs less.
_PATTERN_COST = 2 ** 17


# ---------------------------------------------------------------- structure checks

def _find_cycle(nodes, parents):
    """A cycle ``[a, b, ..., a]`` along parent -> child edges, or None."""
    children = {v: [] for v in nodes}
    for v in nodes:
        for p in parents[v]:
            children[p].append(v)
    state = {v: 0 for v in nodes}  # 0 new, 1 on the stack, 2 done
    for root in nodes:
        if state[root]:
            continue
        path, iters = [root], [iter(children[root])]
        state[root] = 1
        while iters:
            child = next(iters[-1], None)
            if child is None:
                state[path.pop()] = 2
                iters.pop()
            elif state[child] == 1:
                return path[path.index(child):] + [child]
            elif state[child] == 0:
                state[child] = 1
                path.append(child)
                iters.append(iter(children[child]))
    return None


def _topological(nodes, parents):
    """Kahn's order, ties kept in the given order of ``nodes``."""
    position = {v: i for i, v in enumerate(nodes)}
    indegree = {v: len(parents[v]) for v in nodes}
    children = {v: [] for v in nodes}
    for v in nodes:
        for p in parents[v]:
            children[p].append(v)
    import heapq
    ready = [position[v] for v in nodes if indegree[v] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        v = nodes[heapq.heappop(ready)]
        order.append(v)
        for c in children[v]:
            indegree[c] -= 1
            if indegree[c] == 0:
                heapq.heappush(ready, position[c])
    return order


def _config_text(parent_names, states, index):
    return ", ".join(f"{p}={states[p][i]}" for p, i in zip(parent_names, index))


class BayesianNetwork(GenerativeModel):
    """A discrete Bayesian network with Dirichlet priors on its CPT rows.

    Parameters
    ----------
    states : dict of str to list of str
        Each variable's state names; the dict's order is the variable order of
        data columns.
    parents : dict of str to list of str
        Each variable's parents (variables absent from the dict have none). The
        order of a variable's parents is the order of its CPT's leading axes.
    cpts : dict of str to array-like, optional
        Each variable's CPT, shape ``(*[len(states[p]) for p in parents[v]],
        len(states[v]))``, rows summing to 1. ``None`` builds the structure only;
        ``ppgen.fit`` (or :meth:`initialize`) then sets the tables from data.
    prior_concentration : float
        :math:`\\alpha` of the symmetric Dirichlet prior on every CPT row.
    name : str
        The network's name (kept in BIF files).
    atol : float
        Tolerance on CPT row sums.
    max_factor_size : int
        The largest intermediate table exact inference may build (entries per
        evidence row); beyond it queries raise a :class:`ModelError` naming the
        treewidth limit. Batches of rows are split into chunks under it.
    properties, network_properties : optional
        BIF ``property`` strings per variable and of the network, kept so that
        :meth:`from_bif` / :meth:`to_bif` round trips are lossless.

    Notes
    -----
    Pyro sites: ``cpt_{v}`` (the CPT of ``v``, a Dirichlet per parent
    configuration, event shape ``(*parent_cards, card)``), and one categorical
    site per variable, named after it, in the plate ``"data"``. The point
    parameters (``self.point``, float64 buffers) are the CPTs under the same
    site names.

    Barren-variable pruning takes the rows of each CPT to sum to one, so answers
    are exact up to ``atol`` relative to a brute-force sum over the unnormalised
    tables (BIF files round probabilities to a few digits).
    """

    methods = ("svi", "map", "nuts", "hmc", "exact")
    log_prob_kind = "exact"
    observed_site = "obs"
    data_plate = "data"

    def __init__(self, states, parents=None, cpts=None, *, prior_concentration=1.0,
                 name="network", atol=1e-6, max_factor_size=DEFAULT_MAX_FACTOR_SIZE,
                 properties=None, network_properties=None):
        super().__init__()
        self.states, self.parents = self._check_structure(states, parents or {})
        self.variables = list(self.states)
        self.order = _topological(self.variables, self.parents)
        if not (isinstance(prior_concentration, numbers.Real) and math.isfinite(prior_concentration)
                and prior_concentration > 0):
            raise ModelError(f"prior_concentration must be a positive finite number, got {prior_concentration!r}")
        if not (isinstance(atol, numbers.Real) and atol >= 0):
            raise ModelError(f"atol must be a non-negative number, got {atol!r}")
        if not (isinstance(max_factor_size, numbers.Integral) and max_factor_size > 0):
            raise ModelError(f"max_factor_size must be a positive integer, got {max_factor_size!r}")
        self.name, self.atol = str(name), float(atol)
        self.max_factor_size = int(max_factor_size)
        self.properties = {v: list((properties or {}).get(v, [])) for v in self.variables}
        unknown = sorted(set(properties or {}) - set(self.states))
        if unknown:
            raise ModelError(f"properties given for unknown variables {unknown}")
        self.network_properties = list(network_properties or [])
        self._index = {v: i for i, v in enumerate(self.variables)}
        self._cards = tuple(len(self.states[v]) for v in self.variables)
        self._parent_ids = tuple(tuple(self._index[p] for p in self.parents[v]) for v in self.variables)
        self._order_ids = tuple(self._index[v] for v in self.order)
        self._state_index = {v: {s: i for i, s in enumerate(self.states[v])} for v in self.variables}
        self._plans = {}
        self._numpy_cache = None
        self._labels = {v: pd.Index(self.states[v], name=v) for v in self.variables}
        self.register_buffer("prior_concentration", torch.tensor(float(prior_concentration), dtype=torch.float64))
        if cpts is not None:
            self._set_cpts(cpts)

    # ------------------------------------------------------------ construction
    @staticmethod
    def _check_structure(states, parents):
        if not isinstance(states, dict) or not states:
            raise ModelError("states must be a non-empty dict {variable: [state names]}")
        checked = {}
        for v, names in states.items():
            if not isinstance(v, str) or not v or "." in v:
                raise ModelError(f"variable names must be non-empty strings without '.', got {v!r}")
            if isinstance(names, str) or not hasattr(names, "__iter__"):
                raise ModelError(f"variable {v!r}: states must be a list of names, got {names!r}")
            names = [str(s) for s in names]
            if not names:
                raise ModelError(f"variable {v!r} has no states")
            seen = set()
            for s in names:
                if s in seen:
                    raise ModelError(f"variable {v!r} has the duplicate state {s!r}")
                seen.add(s)
            checked[v] = names
        if not isinstance(parents, dict):
            raise ModelError("parents must be a dict {variable: [parent names]}")
        for v in parents:
            if v not in checked:
                raise ModelError(f"parents given for the unknown variable {v!r}")
        full = {}
        for v in checked:
            given = parents.get(v) or []
            if isinstance(given, str):
                given = [given]
            given = list(given)
            for p in given:
                if p not in checked:
                    raise ModelError(f"variable {v!r} has the unknown parent {p!r}")
            if len(set(given)) != len(given):
                dup = next(p for p in given if given.count(p) > 1)
                raise ModelError(f"variable {v!r} lists the parent {dup!r} twice")
            full[v] = given
        cycle = _find_cycle(list(checked), full)
        if cycle is not None:
            raise ModelError("the graph has a cycle " + " -> ".join(cycle))
        sites = {}
        for v in checked:
            for site in (v, f"cpt_{v}", f"{v}_observed", f"{v}_unobserved"):
                sites.setdefault(site, []).append(v)
        clash = sorted(s for s, owners in sites.items() if len(owners) > 1 or s == "data")
        if clash:
            raise ModelError(f"variable names clash with Pyro site names: {clash} "
                             "(a variable 'X' uses the sites 'X', 'cpt_X', 'X_observed', "
                             "'X_unobserved'; 'data' is the plate)")
        return checked, full

    def cpt_shape(self, v):
        """The shape of ``v``'s CPT: ``(*parent_cards, card)``."""
        return tuple(len(self.states[p]) for p in self.parents[v]) + (len(self.states[v]),)

    def _set_cpts(self, cpts):
        if not isinstance(cpts, dict):
            raise ModelError("cpts must be a dict {variable: array}")
        unknown = sorted(set(cpts) - set(self.states))
        if unknown:
            raise ModelError(f"cpts given for unknown variables {unknown}")
        missing = [v for v in self.variables if v not in cpts]
        if missing:
            raise ModelError(f"no CPT for the variables {missing}")
        for v in self.variables:
            table = self._check_cpt(v, cpts[v])
            self.point.set(f"cpt_{v}", torch.as_tensor(table, dtype=torch.float64))

    def _check_cpt(self, v, value):
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().double().numpy()
        try:
            table = np.array(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"CPT of {v!r} is not an array of numbers ({exc})") from None
        shape = self.cpt_shape(v)
        if table.shape != shape:
            axes = ", ".join(f"{p}: {len(self.states[p])}" for p in self.parents[v])
            raise ModelError(
                f"CPT of {v!r} has shape {table.shape}, expected {shape} "
                f"(one axis per parent{' (' + axes + ')' if axes else ''}, then {v!r}'s "
                f"{len(self.states[v])} states last)")
        rows = table.reshape(-1, shape[-1])
        configs = list(np.ndindex(*shape[:-1])) if shape[:-1] else [()]
        bad = ~np.isfinite(rows).all(-1)
        if bad.any():
            i = int(np.argmax(bad))
            raise ModelError(f"CPT of {v!r} has a non-finite entry in the row "
                             f"({_config_text(self.parents[v], self.states, configs[i])}): {rows[i].tolist()}")
        bad = (rows < 0).any(-1)
        if bad.any():
            i = int(np.argmax(bad))
            raise ModelError(f"CPT of {v!r} has a negative entry in the row "
                             f"({_config_text(self.parents[v], self.states, configs[i])}): {rows[i].tolist()}")
        sums = rows.sum(-1)
        bad = np.abs(sums - 1) > self.atol
        if bad.any():
            i = int(np.argmax(bad))
            where = _config_text(self.parents[v], self.states, configs[i])
            raise ModelError(f"CPT of {v!r}: the row ({where or 'no parents'}) sums to {float(sums[i]):.10g}, "
                             f"not 1 (within atol={self.atol:g})")
        return table

    @classmethod
    def from_dict(cls, spec, **kwargs):
        """Build from ``{"states", "parents", "cpts", ...}`` (what :meth:`to_dict` gives)."""
        spec = dict(spec)
        spec.update(kwargs)
        return cls(**spec)

    def to_dict(self):
        """``{"name", "states", "parents", "cpts"}`` with CPTs as float64 numpy arrays."""
        return {"name": self.name, "states": {v: list(s) for v, s in self.states.items()},
                "parents": {v: list(p) for v, p in self.parents.items()},
                "cpts": ({v: t.detach().cpu().double().numpy() for v, t in self._named_tables().items()}
                         if self.point.as_dict() else None)}

    @classmethod
    def from_bif(cls, path, **kwargs):
        """Read a ``.bif`` or ``.bif.gz`` file (see :func:`ppgen.datasets.bif.read_bif`).

        ``kwargs`` go to the constructor (``prior_concentration``, ``atol``, ...).
        """
        from ..datasets.bif import read_bif

        net = read_bif(path)
        return cls(net.variables, net.parents, net.cpts, name=net.name, properties=net.properties,
                   network_properties=net.network_properties, **kwargs)

    def to_bifnetwork(self):
        """The network as a :class:`ppgen.datasets.bif.BIFNetwork`."""
        from ..datasets.bif import BIFNetwork

        spec = self.to_dict()
        if spec["cpts"] is None:
            raise ModelError("to_bif: the network has no CPTs yet; fit it or give cpts")
        return BIFNetwork(name=self.name, variables=spec["states"], parents=spec["parents"],
                          cpts=spec["cpts"], properties={v: list(p) for v, p in self.properties.items()},
                          network_properties=list(self.network_properties))

    def to_bif(self, path):
        """Write the network as a BIF file (gzip-compressed when ``path`` ends in ``.gz``)."""
        from ..datasets.bif import write_bif

        write_bif(self.to_bifnetwork(), path)
        return path

    def get_config(self):
        spec = self.to_dict()
        cpts = spec["cpts"]
        return {"states": spec["states"], "parents": spec["parents"],
                "cpts": None if cpts is None else {v: t.tolist() for v, t in cpts.items()},
                "prior_concentration": float(self.prior_concentration), "name": self.name,
                "atol": self.atol, "max_factor_size": self.max_factor_size,
                "properties": {v: list(p) for v, p in self.properties.items() if p},
                "network_properties": list(self.network_properties)}

    def extra_repr(self):
        edges = sum(len(p) for p in self.parents.values())
        return f"name={self.name!r}, variables={len(self.variables)}, edges={edges}"

    def global_sites(self):
        return tuple(f"cpt_{v}" for v in self.variables)

    # ------------------------------------------------------------ tables
    def _named_tables(self, params=None):
        if params is None:
            params = self.point_params()
        return {v: params[f"cpt_{v}"] for v in self.variables}

    def _tables(self, params=None):
        if params is None:
            buffers = self.point._buffers
            try:
                return [buffers[f"cpt_{v}"] for v in self.variables]
            except KeyError:
                self.point_params()  # raises the "no point parameters yet" error
                raise
        missing = [v for v in self.variables if f"cpt_{v}" not in params]
        if missing:
            raise ModelError(f"params: no CPT for {missing} (sites {[f'cpt_{v}' for v in missing]})")
        return [torch.as_tensor(params[f"cpt_{v}"]) for v in self.variables]

    @property
    def cpts(self):
        """``{variable: CPT tensor}`` at the point estimate."""
        return self._named_tables()

    def cpt(self, variable):
        """``variable``'s CPT as a DataFrame: one row per parent configuration
        (a MultiIndex of parent states), one column per state."""
        v = self._name(variable, "cpt")
        table = self._named_tables()[v].detach().cpu().double().numpy()
        parents = self.parents[v]
        if parents:
            index = pd.MultiIndex.from_product([self.states[p] for p in parents], names=parents)
        else:
            index = pd.Index([""], name=None)
        return pd.DataFrame(table.reshape(-1, table.shape[-1]), index=index,
                            columns=pd.Index(self.states[v], name=v))

    # ------------------------------------------------------------ data
    def _name(self, name, what):
        if name not in self._index:
            raise ModelError(f"{what}: unknown variable {name!r}; the network has "
                             f"{self._listing(self.variables)}")
        return name

    @staticmethod
    def _listing(names, limit=12):
        names = list(names)
        shown = ", ".join(map(repr, names[:limit]))
        return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)} variables)"

    def _state(self, v, value, what):
        lookup = self._state_index[v]
        if isinstance(value, str) and value in lookup:
            return lookup[value]
        if not isinstance(value, (str, bool, np.bool_)) and isinstance(value, numbers.Integral):
            if 0 <= int(value) < len(lookup):
                return int(value)
        elif str(value) in lookup:
            return lookup[str(value)]
        raise DataError(f"{what}: unknown state {value!r} of {v!r}; its states are {self.states[v]}")

    def _encode_column(self, v, column, what):
        """State indices (-1 missing) of one column of names or indices."""
        card = len(self.states[v])
        series = column if isinstance(column, pd.Series) else pd.Series(column)
        if series.dtype.kind in "iuf" and not isinstance(series.dtype, pd.CategoricalDtype):
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
            missing = np.isnan(values) | (values == -1)
            filled = np.where(missing, 0, values)
            if not np.all(filled == np.round(filled)):
                raise DataError(f"{what}: column {v!r} holds non-integer numbers; give state names or indices")
            bad = ~missing & ((filled < 0) | (filled >= card))
            if bad.any():
                raise DataError(f"{what}: column {v!r} has the state index {values[bad][0]!r} outside "
                                f"0..{card - 1} (-1 or NaN for missing); its states are {self.states[v]}")
            return np.where(missing, -1, filled).astype(np.int64)
        lookup = self._state_index[v]
        if isinstance(series.dtype, pd.CategoricalDtype):
            cat_codes = series.cat.codes.to_numpy().astype(np.int64)
            translate = np.array([lookup.get(c, lookup.get(str(c), -2)) for c in series.cat.categories] + [-1],
                                 dtype=np.int64)
            codes = translate[cat_codes]
            if (codes == -2).any():
                bad = pd.unique(series[codes == -2].astype(object))[:5].tolist()
                raise DataError(f"{what}: unknown state{'s' if len(bad) > 1 else ''} "
                                f"{', '.join(map(repr, bad))} of {v!r}; its states are {self.states[v]}")
            return codes
        series = series.astype(object)
        missing = series.isna().to_numpy()
        codes = series.map(lookup)
        unknown = codes.isna().to_numpy() & ~missing
        if unknown.any():  # booleans and other objects: try their text
            retry = series[unknown].astype(str).map(lookup)
            codes[unknown] = retry
            unknown = codes.isna().to_numpy() & ~missing
        if unknown.any():
            bad = pd.unique(series[unknown])[:5].tolist()
            raise DataError(f"{what}: unknown state{'s' if len(bad) > 1 else ''} "
                            f"{', '.join(map(repr, bad))} of {v!r}; its states are {self.states[v]}")
        return codes.fillna(-1).to_numpy(dtype=np.int64)

    def _encode_frame(self, frame, what):
        unknown = [c for c in frame.columns if c not in self._index]
        if unknown:
            raise DataError(f"{what}: unknown variable{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(map(repr, unknown))}; the network has {self._listing(self.variables)}")
        codes = np.full((len(frame), len(self.variables)), -1, dtype=np.int64)
        for c in frame.columns:
            codes[:, self._index[c]] = self._encode_column(c, frame[c], what)
        return codes

    def _encode(self, data, what="data"):
        """``(codes LongTensor (R, V), index or None)`` for data in any accepted form."""
        index = None
        if isinstance(data, pd.Series):
            data = data.to_frame().T if data.index.isin(self.variables).all() else data.to_frame()
        if isinstance(data, dict):
            data = pd.DataFrame({k: (v if np.ndim(v) else [v]) for k, v in data.items()})
        if isinstance(data, (list, tuple)) and data and isinstance(data[0], dict):
            data = pd.DataFrame(list(data))
        if isinstance(data, pd.DataFrame):
            if data.shape[0] == 0:
                raise DataError(f"{what}: is empty")
            index = data.index
            codes = torch.as_tensor(self._encode_frame(data, what))
        else:
            if isinstance(data, torch.Tensor):
                tensor = data.detach()
                if tensor.is_floating_point():
                    tensor = tensor.cpu().numpy()
            else:
                tensor = np.asarray(data)
            if isinstance(tensor, np.ndarray):
                if tensor.ndim == 1:
                    tensor = tensor[None, :]
                if tensor.ndim != 2 or tensor.shape[1] != len(self.variables):
                    raise DataError(f"{what}: expected an array of shape (N, {len(self.variables)}) "
                                    f"(columns {self._listing(self.variables)}), got {tensor.shape}")
                if tensor.dtype.kind in "OUS":
                    frame = pd.DataFrame(tensor, columns=self.variables)
                    codes = torch.as_tensor(self._encode_frame(frame, what))
                else:
                    frame = pd.DataFrame(tensor.astype(np.float64) if tensor.dtype.kind == "f" else tensor,
                                         columns=self.variables)
                    codes = torch.as_tensor(self._encode_frame(frame, what))
            else:
                if tensor.dim() == 1:
                    tensor = tensor.unsqueeze(0)
                if tensor.dim() != 2 or tensor.shape[1] != len(self.variables):
                    raise DataError(f"{what}: expected a tensor of shape (N, {len(self.variables)}), "
                                    f"got {tuple(tensor.shape)}")
                if tensor.dtype == torch.bool or tensor.is_complex():
                    raise DataError(f"{what}: expected integer state indices, got {tensor.dtype}")
                codes = tensor.long()
                cards = torch.tensor(self._cards, device=codes.device)
                bad = (codes < -1) | (codes >= cards)
                if bool(bad.any()):
                    r, c = bad.nonzero()[0].tolist()
                    v = self.variables[c]
                    raise DataError(f"{what}: state index {int(codes[r, c])} of {v!r} (row {r}) outside "
                                    f"0..{self._cards[c] - 1} (-1 for missing); its states are {self.states[v]}")
            if codes.shape[0] == 0:
                raise DataError(f"{what}: is empty")
        return codes.to(self.device), index

    def check_data(self, data, name="data"):
        """Data as a LongTensor ``(N, V)`` of state indices, ``-1`` where missing.

        Accepts a DataFrame of state names (columns may be a subset of the
        variables; the others are missing; ``None``/``NaN`` are missing), a
        dict of columns, or an integer array/tensor ``(N, V)`` in the network's
        variable order with ``-1`` (or NaN) for missing values.
        """
        return self._encode(data, name)[0]

    def to_frame(self, data):
        """State indices ``(N, V)`` (``-1`` missing) as a DataFrame of categorical
        columns of state names (categories in state order, NaN where missing)."""
        codes = self.check_data(data).cpu().numpy()
        return pd.DataFrame({v: pd.Categorical.from_codes(codes[:, j], categories=self.states[v])
                             for j, v in enumerate(self.variables)})

    def _evidence(self, evidence, what="evidence"):
        """Evidence as ``(single, codes (R, V), index)``; ``single`` for a dict of states."""
        if evidence is None:
            return True, torch.full((1, len(self.variables)), -1, dtype=torch.long, device=self.device), None
        if isinstance(evidence, dict) and all(np.ndim(x) == 0 for x in evidence.values()):
            codes = torch.full((1, len(self.variables)), -1, dtype=torch.long)
            for name, value in evidence.items():
                v = self._name(name, what)
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    continue
                codes[0, self._index[v]] = self._state(v, value, what)
            return True, codes.to(self.device), None
        codes, index = self._encode(evidence, what)
        return False, codes, index

    # ------------------------------------------------------------ the Pyro program
    def _cpt_prior(self, v):
        shape = self.cpt_shape(v)
        prior = dist.Dirichlet(self.prior_concentration.expand(shape))
        return prior.to_event(len(shape) - 1) if len(shape) > 1 else prior

    def model(self, data=None, *, n=None, subsample_size=None):
        """The generative program: CPT rows from their Dirichlet priors, then each
        row of data from the network, variables in topological order.

        ``data`` is a LongTensor ``(N, V)`` (``-1`` missing, see :meth:`check_data`).
        Observed entries are conditioned on (``obs``); a variable missing in some
        rows is split as Pyro's ``obs_mask`` splits it, into ``{v}_observed`` and
        the latent ``{v}_unobserved`` (see :func:`_masked_observe`); one missing
        in every row is a latent site ``{v}``. Every latent categorical site
        is marked for parallel enumeration. Returns the ``(N, V)`` values.
        """
        tables = {v: pyro.sample(f"cpt_{v}", self._cpt_prior(v)) for v in self.order}
        size = data.shape[0] if data is not None else (n or 1)
        if data is not None:
            observed = data >= 0
            some = observed.any(0).tolist()
            every = observed.all(0).tolist()
        with pyro.plate(self.data_plate, size, subsample_size=subsample_size, dim=-1) as idx:
            batch = data[idx] if data is not None else None
            values = {}
            for v in self.order:
                j = self._index[v]
                index = (Ellipsis,) + tuple(values[p] for p in self.parents[v]) + (slice(None),)
                fn = dist.Categorical(Vindex(tables[v])[index])
                enum = {"enumerate": "parallel"}
                if batch is None or not some[j]:
                    values[v] = pyro.sample(v, fn, infer=enum)
                elif every[j]:
                    values[v] = pyro.sample(v, fn, obs=batch[:, j])
                else:
                    values[v] = _masked_observe(v, fn, batch[:, j])
            out = [values[v] for v in self.variables]
            return torch.stack(torch.broadcast_tensors(*out), -1)

    # ------------------------------------------------------------ inference engine
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
        small plans run in numpy, see :data:`ppgen.models.elimination.NUMPY_BELOW`."""
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

    def _grouped(self, codes, single, make_plan, run):
        """Answer the rows of ``codes`` with ``run(plan, rows)``.

        One plan serves all rows (variables observed in some rows only enter as
        indicator vectors), unless that plan is over the size limit or costly
        (above :data:`_GROUP_ABOVE` entries in all) and the rows fall into few
        patterns of missing values: then each pattern gets its own plan, with
        its observed variables as hard evidence (sliced out of the graph), which
        is far cheaper on networks with many states. Results are put back in
        row order.
        """
        plan = make_plan(codes, single)
        rows = codes.shape[0]
        cost = plan.total_size * rows
        if single or rows == 1 or (plan.max_size <= self.max_factor_size and cost <= _GROUP_ABOVE):
            return run(plan, codes)
        patterns, inverse = torch.unique(codes >= 0, dim=0, return_inverse=True)
        if plan.max_size <= self.max_factor_size and patterns.shape[0] * _PATTERN_COST >= cost:
            return run(plan, codes)
        out = None
        for p in range(patterns.shape[0]):
            index = (inverse == p).nonzero().squeeze(1)
            part = codes[index]
            value = run(make_plan(part, False), part)
            if out is None:
                out = ({k: v.new_empty((rows,) + v.shape[1:]) for k, v in value.items()}
                       if isinstance(value, dict) else value.new_empty((rows,) + value.shape[1:]))
            if isinstance(value, dict):
                for k, v in value.items():
                    out[k][index] = v
            else:
                out[index] = value
        return out

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
            return table / total

        return self._grouped(codes, single, make_plan,
                             lambda plan, part: self._run(plan, part, tables, what, finish))

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
                return {"value": result["table"].expand(rows), "assignment": completed}

            return self._run(plan, part, tables, "map_query", finish)

        out = self._grouped(codes, single, make_plan, run)
        possible = out["value"] > 0
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
                if not bool((result["table"] > 0).all()):
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

    # ------------------------------------------------------------ learning
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
        import time

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

    # ------------------------------------------------------------ the example
    @classmethod
    def asia(cls, **kwargs):
        """The 8-variable "asia" (chest clinic) network of Lauritzen & Spiegelhalter (1988),
        as in the bnlearn repository's ``asia.bif``; states ``yes``/``no``."""
        yn = ["yes", "no"]
        names = ["asia", "tub", "smoke", "lung", "bronc", "either", "xray", "dysp"]
        parents = {"tub": ["asia"], "lung": ["smoke"], "bronc": ["smoke"],
                   "either": ["lung", "tub"], "xray": ["either"], "dysp": ["bronc", "either"]}
        cpts = {
            "asia": [0.01, 0.99],
            "tub": [[0.05, 0.95], [0.01, 0.99]],
            "smoke": [0.5, 0.5],
            "lung": [[0.1, 0.9], [0.01, 0.99]],
            "bronc": [[0.6, 0.4], [0.3, 0.7]],
            # either = lung OR tub (deterministic)
            "either": [[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]],
            "xray": [[0.98, 0.02], [0.05, 0.95]],
            "dysp": [[[0.9, 0.1], [0.8, 0.2]], [[0.7, 0.3], [0.1, 0.9]]],
        }
        kwargs.setdefault("name", "asia")
        return cls({v: yn for v in names}, parents, cpts, **kwargs)

    @classmethod
    def example(cls, seed=0, missing=0.0):
        """The asia network and 300 rows drawn from it, a ``missing`` share of
        entries hidden (-1). Complete by default, so every method (``Exact``'s
        conjugate posterior included) applies."""
        model = cls.asia()
        gen = torch.Generator().manual_seed(seed)
        data = model.sample(300, generator=gen)
        hide = torch.rand(data.shape, generator=gen) < missing
        return model, torch.where(hide, torch.full_like(data, -1), data)


def _masked_observe(name, fn, column):
    """Pyro's ``obs_mask`` semantics for a column with missing values (``-1``).

    The observed entries go to the site ``{name}_observed`` (masked to them), the
    missing ones to the enumerated latent site ``{name}_unobserved`` (masked to
    them), and the value is the one or the other per row. This is what
    ``pyro.sample(name, fn, obs=..., obs_mask=...)`` does, less the
    ``pyro.deterministic`` record it adds under ``name``, whose float32 log-density
    breaks enumeration of float64 models, and with the ``infer`` marking that
    ``pyro.sample`` drops when given ``obs_mask``.
    """
    mask = column >= 0
    with poutine.mask(mask=mask):
        observed = pyro.sample(f"{name}_observed", fn, obs=column.clamp(min=0))
    with poutine.mask(mask=~mask):
        latent = pyro.sample(f"{name}_unobserved", fn, infer={"enumerate": "parallel"})
    return torch.where(mask, observed, latent)
