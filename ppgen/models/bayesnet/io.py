"""Validation and conversion for :class:`~ppgen.models.bayesnet.BayesianNetwork`.

What lives here
---------------
* Structure checks, as module-level functions: :func:`check_structure` (variable
  and state names, parents, acyclicity via :func:`find_cycle`, clashes with Pyro
  site names) and :func:`topological` (Kahn's order of the DAG).
* :class:`BayesNetIOMixin`, the methods of the network that validate CPTs
  (``_set_cpts``, ``_check_cpt``), convert to and from dicts and BIF files
  (:meth:`~BayesNetIOMixin.from_dict`, :meth:`~BayesNetIOMixin.to_dict`,
  :meth:`~BayesNetIOMixin.from_bif`, :meth:`~BayesNetIOMixin.to_bif`,
  :meth:`~BayesNetIOMixin.to_bifnetwork`) and encode data and evidence (state
  names or indices, ``-1``/``None``/``NaN`` missing) as LongTensors of state
  indices (:meth:`~BayesNetIOMixin.check_data`, :meth:`~BayesNetIOMixin.to_frame`).

The mixin relies on the attributes that ``BayesianNetwork.__init__`` sets
(``states``, ``parents``, ``variables``, ``atol``, ``_index``, ``_cards``,
``_state_index``) and on the point parameters of
:class:`~ppgen.model.GenerativeModel`.
"""

from __future__ import annotations

import heapq
import math
import numbers

import numpy as np
import torch

from ...errors import DataError, ModelError

__all__ = ["BayesNetIOMixin", "check_structure", "find_cycle", "topological"]


# ---------------------------------------------------------------- structure checks

def find_cycle(nodes, parents):
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



def topological(nodes, parents):
    """Kahn's order, ties kept in the given order of ``nodes``."""
    position = {v: i for i, v in enumerate(nodes)}
    indegree = {v: len(parents[v]) for v in nodes}
    children = {v: [] for v in nodes}
    for v in nodes:
        for p in parents[v]:
            children[p].append(v)
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


def check_structure(states, parents):
    """``(states, parents)`` checked and normalised (every variable gets a parent list).

    Raises
    ------
    ModelError
        Bad names, unknown or repeated parents, a cycle, or a clash with Pyro site names.
    """
    if not isinstance(states, dict) or not states:
        raise ModelError("states must be a non-empty dict {variable: [state names]}")
    checked = {}
    for v, names in states.items():
        if not isinstance(v, str) or not v or "." in v or not v.isprintable():
            raise ModelError(f"variable names must be non-empty printable strings without '.', got {v!r}")
        if isinstance(names, str) or not hasattr(names, "__iter__"):
            raise ModelError(f"variable {v!r}: states must be a list of names, got {names!r}")
        names = [str(s) for s in names]
        if not names:
            raise ModelError(f"variable {v!r} has no states")
        seen = set()
        for s in names:
            if not s or not s.isprintable():
                raise ModelError(f"variable {v!r}: state names must be non-empty printable text, got {s!r}")
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
    cycle = find_cycle(list(checked), full)
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


class BayesNetIOMixin:
    """CPT validation, dict/BIF conversion and data encoding of a Bayesian network."""

    # ------------------------------------------------------------ CPTs
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

    # ------------------------------------------------------------ dict and BIF
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
        """Read a ``.bif`` or ``.bif.gz`` file (see :func:`ppgen.models.bayesnet.bif.read_bif`).

        ``kwargs`` go to the constructor (``prior_concentration``, ``atol``, ...).
        """
        from .bif import read_bif

        net = read_bif(path)
        return cls(net.variables, net.parents, net.cpts, name=net.name, properties=net.properties,
                   network_properties=net.network_properties, **kwargs)

    def to_bifnetwork(self):
        """The network as a :class:`ppgen.models.bayesnet.bif.BIFNetwork`."""
        from .bif import BIFNetwork

        spec = self.to_dict()
        if spec["cpts"] is None:
            raise ModelError("to_bif: the network has no CPTs yet; fit it or give cpts")
        return BIFNetwork(name=self.name, variables=spec["states"], parents=spec["parents"],
                          cpts=spec["cpts"], properties={v: list(p) for v, p in self.properties.items()},
                          network_properties=list(self.network_properties))

    def to_bif(self, path):
        """Write the network as a BIF file (gzip-compressed when ``path`` ends in ``.gz``)."""
        from .bif_writer import write_bif

        write_bif(self.to_bifnetwork(), path)
        return path

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
        """One state's index. Names first: a whole number matches a state named by that
        number; it is read as a position only where the variable has no such names."""
        lookup = self._state_index[v]
        if isinstance(value, str) and value in lookup:
            return lookup[value]
        number = _whole(value)
        if number is not None:
            numbered = self._numbered[v]
            if numbered:
                if number in numbered:
                    return numbered[number]
                raise DataError(f"{what}: unknown state {value!r} of {v!r}; its states are {self.states[v]} "
                                "(numbers are read as state names where states are named by numbers)")
            if 0 <= number < len(lookup):
                return number
        elif str(value) in lookup:
            return lookup[str(value)]
        raise DataError(f"{what}: unknown state {value!r} of {v!r}; its states are {self.states[v]}")

    def _encode_column(self, v, column, what):
        """State indices (-1 missing) of one column of names or indices."""
        import pandas as pd
        card = len(self.states[v])
        series = column if isinstance(column, pd.Series) else pd.Series(column)
        if series.dtype.kind in "iuf" and not isinstance(series.dtype, pd.CategoricalDtype):
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
            numbered = self._numbered[v]
            missing = np.isnan(values) | ((values == -1) & (-1 not in numbered))
            filled = np.where(missing, 0, values)
            if not np.all(filled == np.round(filled)):
                raise DataError(f"{what}: column {v!r} holds non-integer numbers; give state names or indices")
            if numbered:  # names first: the states are named by numbers
                named = pd.Series(filled.astype(np.int64)).map(numbered)
                codes = named.to_numpy(dtype=np.float64, na_value=-2, copy=True)
                codes[missing] = -1
                if (codes == -2).any():
                    bad = pd.unique(values[codes == -2])[:5].tolist()
                    raise DataError(f"{what}: column {v!r} has the value{'s' if len(bad) > 1 else ''} "
                                    f"{', '.join(f'{b:g}' for b in bad)} that name no state; its states are "
                                    f"{self.states[v]} (numbers are read as state names where states are "
                                    "named by numbers)")
                return codes.astype(np.int64)
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
        if series.dtype != object:
            series = series.astype(object)
        fast = self._state_names[v].get_indexer(series).astype(np.int64)
        unmatched = np.flatnonzero(fast == -1)
        missing = np.zeros(len(fast), dtype=bool)
        missing[unmatched] = pd.isna(series.to_numpy()[unmatched])
        if len(unmatched) == int(missing.sum()):  # every name known (hashed in C) or missing: done
            return fast
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
        import pandas as pd
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
        dict of columns, or an integer array/tensor ``(N, V)`` of state positions in
        the network's variable order with ``-1`` (or NaN) for missing values.

        Numbers in a DataFrame, a dict or evidence are matched to state *names* first:
        for a variable whose states are named by whole numbers (``["1", "0"]``, as
        ``pd.read_csv`` gives integer columns), ``1`` means the state ``"1"``, and a
        number naming no state is an error. Only a variable with no such names reads
        a whole number as a state position (``0`` the first state). Arrays and tensors
        always hold positions.
        """
        return self._encode(data, name)[0]

    def to_frame(self, data):
        """State indices ``(N, V)`` (``-1`` missing) as a DataFrame of categorical
        columns of state names (categories in state order, NaN where missing)."""
        import pandas as pd
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


def _whole(value):
    """A whole number given as an int or an integral float (not a bool), else None."""
    if isinstance(value, (bool, np.bool_, str)):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return None
