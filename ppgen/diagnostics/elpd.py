"""Expected log predictive density of a fit, by the estimator it admits.

:math:`\\mathrm{elpd} = \\sum_i \\log p(\\tilde x_i \\mid x)`, the log density a fit gives new
data, summed over data points, estimated per point and summed, with standard error
:math:`\\sqrt{n \\operatorname{Var}_i(\\mathrm{elpd}_i)}`:

* ``"psis-loo"``: Pareto-smoothed importance-sampling leave-one-out (ArviZ), for a fit
  with posterior draws; ``warning`` where a Pareto :math:`\\hat k` exceeds 0.7;
* ``"k-fold"``: K-fold cross-validation, for a point estimate (MAP, a neural family),
  where leaving one out by importance sampling is meaningless: the fit's model refitted
  (same family, settings, method and seed) on :math:`K - 1` folds of the data rows, each
  held-out row scored by the refit's ``log_prob``;
* ``"held-out"``: the fit's ``log_prob`` of data it did not see.

The fit is used by duck typing (``posterior``, ``num_chains``, ``num_draws``, ``data``,
``refit``, ``log_prob``); this module does not import :mod:`ppgen.inference`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ModelError


@dataclass
class Elpd:
    """One fit's estimate, with the same fields whichever ArviZ is installed.

    Attributes
    ----------
    estimator : str
        ``"psis-loo"``, ``"psis-loo (q-corrected)"``, ``"k-fold (K=...)"``, ``"held-out"``.
    pointwise : ndarray
        Per-datum estimates, nats.
    p : float
        Effective number of parameters (PSIS-LOO), else NaN.
    warning : bool
        A Pareto :math:`\\hat k` above ArviZ's threshold for this number of draws.
    pareto_k : ndarray or None
        Per-datum Pareto :math:`\\hat k` (PSIS-LOO).
    n_samples : int or None
        Draws used.
    arviz : object
        ArviZ's own result (``ELPDData``), for ArviZ's functions (``plot_khat``, ``compare``).
    elpd, se : float
        :math:`\\sum_i` of the pointwise values and its standard error. ArviZ 0.x's names
        (``elpd_loo``, ``p_loo``, ``loo_i``) are read as these, by key or attribute.
    """

    estimator: str
    pointwise: np.ndarray
    p: float = math.nan  # effective number of parameters (PSIS-LOO)
    warning: bool = False
    pareto_k: np.ndarray | None = None
    n_samples: int | None = None
    arviz: object = None

    ALIASES = {"elpd_loo": "elpd", "p_loo": "p", "loo_i": "pointwise", "elpd_i": "pointwise"}

    @property
    def elpd(self) -> float:
        return float(self.pointwise.sum())

    @property
    def se(self) -> float:
        return float(math.sqrt(self.pointwise.size * self.pointwise.var()))

    @property
    def n_data_points(self) -> int:
        return int(self.pointwise.size)

    def __getitem__(self, key):
        return getattr(self, self.ALIASES.get(key, key))

    def __getattr__(self, name):
        if name in Elpd.ALIASES:
            return getattr(self, Elpd.ALIASES[name])
        raise AttributeError(name)

    def __str__(self):
        k = "" if self.pareto_k is None else f", Pareto k > 0.7: {int((self.pareto_k > 0.7).sum())}"
        return (f"{self.estimator}: elpd {self.elpd:.2f} (se {self.se:.2f}), p {self.p:.2f}, "
                f"{self.n_data_points} data points{k}")


def has_draws(fit) -> bool:
    """Whether the fit has posterior draws to leave one out with (not a point estimate)."""
    return bool(fit.posterior) and fit.num_chains * fit.num_draws > 1


def from_loo(result, estimator="psis-loo") -> Elpd:
    """An ArviZ PSIS-LOO result (``loo(..., pointwise=True)``, either ArviZ line) as an :class:`Elpd`."""
    pointwise = getattr(result, "loo_i", None)
    if pointwise is None:
        pointwise = result.elpd_i  # ArviZ >= 1
    p = getattr(result, "p_loo", None)
    return Elpd(estimator, np.asarray(pointwise, dtype=float).reshape(-1),
                float(p if p is not None else getattr(result, "p", math.nan)), bool(result.warning),
                np.asarray(result.pareto_k, dtype=float).reshape(-1), int(result.n_samples), result)


def k_fold(fit, label, folds=5, seed=0, var_name=None) -> Elpd:
    data = fit.data
    if not isinstance(data, (torch.Tensor, list, tuple)) or getattr(fit.program, "generative", None) is None:
        raise ModelError(f"{label}: a point estimate of a plain Pyro program cannot be cross-validated by "
                         "splitting its data automatically; give held-out data: compare(..., heldout=...)")
    n = len(data)
    if not (isinstance(folds, int) and 2 <= folds <= n):
        raise ModelError(f"compare: folds={folds!r} must be an integer from 2 to the {n} data rows")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    pointwise = np.empty(n)
    for k in range(folds):
        test = order[k::folds]
        held = set(test.tolist())
        train = torch.tensor([i for i in range(n) if i not in held])
        refit = fit.refit(_rows(data, train))
        pointwise[test.numpy()] = _per_point(refit.log_prob(_rows(data, test)), label, var_name)
    return Elpd(f"k-fold (K={folds})", pointwise)


def held_out(fit, label, data, var_name=None) -> Elpd:
    return Elpd("held-out", _per_point(fit.log_prob(data), label, var_name))


def _rows(data, index):
    return data[index] if isinstance(data, torch.Tensor) else [data[i] for i in index.tolist()]


def _per_point(values, label, var_name):
    """Per-datum log densities from ``log_prob`` (a tensor, or a dict of sites)."""
    if isinstance(values, dict):
        if var_name is None and len(values) != 1:
            raise ModelError(f"{label}: several observed sites {sorted(values)}; choose one with var_name=...")
        values = values[var_name if var_name is not None else next(iter(values))]
    return torch.as_tensor(values).detach().double().reshape(-1).cpu().numpy()


def table(estimates: dict):
    """A comparison table (pandas), best first: ``rank``, ``elpd``, ``se``, ``elpd_diff``
    (from the best), ``dse`` (its standard error, from the paired pointwise differences),
    ``p``, ``estimator``, ``warning``."""
    import pandas as pd

    sizes = {name: e.pointwise.size for name, e in estimates.items()}
    if len(set(sizes.values())) > 1:
        raise ModelError(f"compare: the fits scored different numbers of data points {sizes}; models can "
                         "only be compared on the same data")
    order = sorted(estimates, key=lambda name: -estimates[name].elpd)
    best = estimates[order[0]].pointwise
    rows = []
    for rank, name in enumerate(order):
        e = estimates[name]
        diff = best - e.pointwise
        rows.append({"rank": rank, "elpd": e.elpd, "se": e.se, "elpd_diff": float(diff.sum()),
                     "dse": float(math.sqrt(diff.size * diff.var())), "p": e.p, "estimator": e.estimator,
                     "warning": e.warning})
    return pd.DataFrame(rows, index=order)
