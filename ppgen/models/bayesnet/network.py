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
layout of :class:`ppgen.models.bayesnet.bif.BIFNetwork`).

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
point CPTs and ppgen's own variable elimination (:mod:`ppgen.models.bayesnet.elimination`)
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

Module layout
-------------
:class:`BayesianNetwork` (here) holds the constructor, the point CPTs, the Pyro
program and the protocol methods of :class:`~ppgen.model.GenerativeModel`, and
how rows of evidence are grouped for inference. Its other methods come from
mixins in sibling modules:

* :mod:`ppgen.models.bayesnet.io`: structure and CPT validation, dict/BIF
  conversion, encoding of data and evidence;
* :mod:`ppgen.models.bayesnet.engine`: elimination plans and their chunked runs;
* :mod:`ppgen.models.bayesnet.queries`: queries, MAP, log-probabilities, sampling;
* :mod:`ppgen.models.bayesnet.learning`: conjugate posterior, initialisation, EM.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.ops.indexing import Vindex

from ...errors import ModelError
from ...model import GenerativeModel
from .elimination import DEFAULT_MAX_FACTOR_SIZE
from .engine import BayesNetEngineMixin
from .io import BayesNetIOMixin, check_structure, topological
from .learning import BayesNetLearningMixin
from .queries import BayesNetQueryMixin

__all__ = ["BayesianNetwork"]

#: a batch of rows whose shared plan costs more than this many table entries in all ...
_GROUP_ABOVE = 2 ** 22
#: ... is split into its patterns of missing values when a pattern's own plan (about a
#: millisecond of overhead, worth this many entries) times the patterns costs less.
#: (Both are read here at call time, so they can be tuned on this module.)
_PATTERN_COST = 2 ** 17


class BayesianNetwork(BayesNetIOMixin, BayesNetQueryMixin, BayesNetLearningMixin,
                      BayesNetEngineMixin, GenerativeModel):
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

    def __init__(self, states: Mapping[str, Sequence[str]], parents: Mapping[str, Sequence[str]] | None = None,
                 cpts: Mapping[str, Any] | None = None, *, prior_concentration: float = 1.0, name: str = "network",
                 atol: float = 1e-6, max_factor_size: int = DEFAULT_MAX_FACTOR_SIZE,
                 properties: Mapping[str, Any] | None = None, network_properties: Any = None) -> None:
        import pandas as pd
        super().__init__()
        self.states, self.parents = check_structure(states, parents or {})
        self.variables = list(self.states)
        self.order = topological(self.variables, self.parents)
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
        self._state_names = {v: pd.Index(self.states[v], dtype=object) for v in self.variables}
        # states named by whole numbers ("0", "1", ...): numbers in data match these names
        self._numbered = {v: {int(s): i for i, s in enumerate(self.states[v]) if _whole_number(s)}
                          for v in self.variables}
        self._plans = {}
        self._numpy_cache = None
        self._labels = {v: pd.Index(self.states[v], name=v) for v in self.variables}
        self.register_buffer("prior_concentration", torch.tensor(float(prior_concentration), dtype=torch.float64))
        if cpts is not None:
            self._set_cpts(cpts)

    # ------------------------------------------------------------ structure and configuration
    def cpt_shape(self, v):
        """The shape of ``v``'s CPT: ``(*parent_cards, card)``."""
        return tuple(len(self.states[p]) for p in self.parents[v]) + (len(self.states[v]),)

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

    def arviz_dims(self):
        """Each CPT over its parents' states and its own (dimensions named after the
        variables); the data over ``observation`` and ``variable``."""
        return {self.observed_site: ["observation", "variable"],
                **{f"cpt_{v}": [*self.parents[v], v] for v in self.variables}}

    def arviz_coords(self):
        return {"variable": list(self.variables), **{v: list(self.states[v]) for v in self.variables}}

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
        import pandas as pd
        v = self._name(variable, "cpt")
        table = self._named_tables()[v].detach().cpu().double().numpy()
        parents = self.parents[v]
        if parents:
            index = pd.MultiIndex.from_product([self.states[p] for p in parents], names=parents)
        else:
            index = pd.Index([""], name=None)
        return pd.DataFrame(table.reshape(-1, table.shape[-1]), index=index,
                            columns=pd.Index(self.states[v], name=v))

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

    # ------------------------------------------------------------ rows of evidence
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
        patterns, inverse = _missing_patterns(codes)
        if plan.max_size <= self.max_factor_size and patterns * _PATTERN_COST >= cost:
            return run(plan, codes)
        out = None
        for p in range(patterns):
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


def _missing_patterns(codes):
    """Number of distinct observed/missing patterns among the rows, and each row's
    pattern index. The masks are packed 62 columns to an int64 so the unique runs
    over a few integer columns, not one boolean column per variable."""
    mask = (codes >= 0).long()
    chunks = []
    for start in range(0, mask.shape[1], 62):
        block = mask[:, start:start + 62]
        weights = torch.ones(block.shape[1], dtype=torch.long, device=block.device).cumsum(0) - 1
        chunks.append((block << weights).sum(1))
    keys = torch.stack(chunks, 1)
    if keys.shape[1] == 1:
        unique, inverse = torch.unique(keys[:, 0], return_inverse=True)
    else:
        unique, inverse = torch.unique(keys, dim=0, return_inverse=True)
    return unique.shape[0], inverse


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


def _whole_number(name: str) -> bool:
    """Whether a state name reads as a whole number (``"0"``, ``"12"``, ``"-1"``)."""
    return name.lstrip("-+").isdigit() and name.strip() == name
