"""Held-out log-likelihood of a density model, and bits per dimension.

:func:`dataset_log_likelihood` averages a model's per-datum ``log_prob`` over a
data set, in batches, with the standard error of that mean across data points;
for a VAE that per-datum number is the IWAE bound with ``num_samples``
importance samples (Burda et al. 2016), for an exact family (flows, mixtures,
small RBMs) the log-likelihood itself. The result says which it is.
"""

from __future__ import annotations

import dataclasses
import inspect
import math

import torch

from ..errors import DataError, ModelError


@dataclasses.dataclass(frozen=True)
class LogLikelihood:
    """A data set's mean log-likelihood per datum, in nats.

    Attributes
    ----------
    mean, stderr : float
        The mean over data points and its standard error (sd / sqrt(n)).
    n : int
        Data points scored.
    kind : str
        ``"exact"``, ``"bound"`` (a lower bound, e.g. IWAE) or ``"estimate"``.
    num_samples : int or None
        Importance samples per datum, for bounds.
    """

    mean: float
    stderr: float
    n: int
    kind: str
    num_samples: int | None = None

    @property
    def nll(self):
        """The negative mean log-likelihood, nats per datum."""
        return -self.mean

    def bits_per_dim(self, dims):
        """The negative log-likelihood in bits per dimension."""
        return bits_per_dim(-self.mean, dims)

    def __str__(self):
        what = {"bound": f"IWAE bound, k={self.num_samples}", "exact": "exact"}.get(self.kind, self.kind)
        return f"{self.mean:.3f} +- {self.stderr:.3f} nats per datum ({what}, n={self.n})"


def bits_per_dim(nats_per_datum, dims):
    """Nats per datum as bits per dimension: :math:`\\mathrm{nats} / (D \\ln 2)`."""
    if not (isinstance(dims, int) and dims > 0):
        raise DataError(f"dims must be a positive integer, got {dims!r}")
    return float(nats_per_datum) / (dims * math.log(2.0))


def dataset_log_likelihood(model, data, num_samples=None, batch_size=500, *, seed=0, progress=False):
    """Mean per-datum ``model.log_prob`` over ``data`` with its standard error.

    Parameters
    ----------
    model : a ppgen model whose ``log_prob_kind`` is not ``"none"``
    data : tensor or array ``(N, ...)``
    num_samples : int, optional
        Importance samples per datum for bound families (VAE: ``log_prob(x,
        num_samples=k)``); ignored by exact ones.
    batch_size : int
        Data points per ``log_prob`` call (memory).
    seed : int
        Passed to models whose ``log_prob`` draws samples.

    Returns
    -------
    LogLikelihood
    """
    kind = getattr(model, "log_prob_kind", None)
    if kind == "none":
        raise ModelError(f"{type(model).__name__} defines no density (log_prob_kind='none')")
    if not (isinstance(batch_size, int) and batch_size > 0):
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    accepted = inspect.signature(model.log_prob).parameters
    extra = {}
    if num_samples is not None and "num_samples" in accepted:
        extra["num_samples"] = num_samples
    if "seed" in accepted:
        extra["seed"] = seed
    if "progress" in accepted:
        extra["progress"] = progress
    size = len(data)
    if size == 0:
        raise DataError("data: is empty")
    parts = []
    with torch.no_grad():
        for start in range(0, size, batch_size):
            parts.append(torch.as_tensor(model.log_prob(data[start:start + batch_size], **extra)).double().cpu())
    values = torch.cat(parts)
    if not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).nonzero()[0])
        raise ModelError(f"{type(model).__name__}.log_prob is not finite at data point {bad}")
    stderr = float(values.std(unbiased=True) / math.sqrt(size)) if size > 1 else float("nan")
    kind = "bound" if kind == "bound" else ("estimate" if kind == "estimate" else "exact")
    return LogLikelihood(float(values.mean()), stderr, size, kind,
                         extra.get("num_samples") if kind == "bound" else None)
