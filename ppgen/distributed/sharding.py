"""Batched work over the rows of a large table, split across ranks and gathered in order.

:func:`map_rows` is the one primitive: with ``W`` ranks in the default (or a
given) ``torch.distributed`` process group, rank ``r`` takes the contiguous rows
``[b_r, b_{r+1})`` of an ``N``-row table, where the shares differ by at most one
row (:func:`shard_bounds`: the first ``N mod W`` ranks get ``floor(N / W) + 1``),
applies ``fn`` to its rows (in chunks of ``batch_size`` if given), and every rank
receives the concatenation of all ranks' results in the table's row order:

.. math::
    \\operatorname{map\\_rows}(f, X) = f(X_{[b_0, b_1)}) \\Vert f(X_{[b_1, b_2)}) \\Vert
    \\cdots \\Vert f(X_{[b_{W-1}, N)}),

which equals ``fn(X)`` whenever ``fn`` treats rows independently (a Bayesian
network's query per evidence row, an HMM's log-likelihood per sequence). Without
an initialised process group (or with one rank) it is ``fn`` on the whole table.

Results travel through ``all_gather_object`` (pickled, on CPU) and come back on
the device of the local result. With the NCCL backend, set each rank's CUDA
device (``torch.cuda.set_device``) before calling, as ``all_gather_object``
requires. If ``fn`` raises on any rank, every rank raises (no rank is left
waiting): the failing rank re-raises its exception, the others an exception of
the same class (a ppgen error or a built-in one; ``RuntimeError`` otherwise)
naming the rank.

:func:`query_rows` and :func:`log_prob_rows` are the two common uses; models
know nothing of this module.
"""

from __future__ import annotations

import builtins

import numpy as np
import torch
import torch.distributed as dist

from .. import errors
from ..errors import DataError

__all__ = ["rank_and_world", "shard_bounds", "shard_rows", "map_rows", "query_rows", "log_prob_rows",
           "gather_checked"]


def rank_and_world(group=None):
    """``(rank, world_size)`` in ``group``; ``(0, 1)`` when torch.distributed is not initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def shard_bounds(n, rank, world_size):
    """The contiguous share ``[start, stop)`` of ``n`` items that ``rank`` of ``world_size`` takes.

    Shares differ by at most one: the first ``n mod world_size`` ranks take
    ``floor(n / world_size) + 1`` items, the others ``floor(n / world_size)``
    (zero when ``n < world_size``).
    """
    base, extra = divmod(int(n), int(world_size))
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def _num_rows(table):
    if isinstance(table, (str, bytes)):
        raise DataError(f"table: expected rows (a tensor, array, DataFrame, list, or dict of columns), "
                        f"got {type(table).__name__}")
    if isinstance(table, dict):
        if not table:
            raise DataError("table: an empty dict has no rows")
        sizes = {key: _num_rows(value) for key, value in table.items()}
        if len(set(sizes.values())) != 1:
            raise DataError(f"table: the columns of a dict must have the same number of rows, got {sizes}")
        return next(iter(sizes.values()))
    if isinstance(table, (torch.Tensor, np.ndarray)) and table.ndim == 0:
        raise DataError("table: a 0-dimensional tensor or array has no rows")
    try:
        return len(table)
    except TypeError:
        raise DataError(f"table: {type(table).__name__} has no rows (no len()); pass a tensor, array, "
                        "DataFrame, list, or dict of columns") from None


def _take(table, start, stop):
    import pandas as pd
    if isinstance(table, dict):
        return {key: _take(value, start, stop) for key, value in table.items()}
    if isinstance(table, (pd.DataFrame, pd.Series)):
        return table.iloc[start:stop]
    return table[start:stop]


def shard_rows(table, *, group=None):
    """This rank's contiguous share of the rows of ``table`` (see :func:`shard_bounds`).

    ``table`` is a tensor or array (rows along the first axis), a DataFrame or
    Series, a list or tuple of rows, a dict of equally long columns (each split
    alike), or any object with ``len`` and slicing (an HMM ``Sequences``).
    """
    rank, world = rank_and_world(group)
    return _take(table, *shard_bounds(_num_rows(table), rank, world))


def _to(value, device):
    """Move tensors in a (nested) result to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_to(v, device) for v in value)
    return value


def _device(value):
    if isinstance(value, torch.Tensor):
        return value.device
    if isinstance(value, (dict, tuple)):
        for item in (value.values() if isinstance(value, dict) else value):
            found = _device(item)
            if found is not None:
                return found
    return None


def _pad(parts, value):
    shape = [max(p.shape[d] for p in parts) for d in range(1, parts[0].dim())]
    out = []
    for p in parts:
        widths = []
        for d in reversed(range(1, p.dim())):
            widths += [0, shape[d - 1] - p.shape[d]]
        out.append(torch.nn.functional.pad(p, widths, value=value) if any(widths) else p)
    return out


def _concat(parts, keep_index, pad):
    """Concatenate per-shard results along their first axis, recursing into dicts and tuples."""
    import pandas as pd
    first = parts[0]
    if isinstance(first, torch.Tensor):
        if any(p.dim() == 0 for p in parts):
            raise DataError("map_rows: fn returned a 0-dimensional tensor; it must return one result per row")
        if pad is not None and len({p.shape[1:] for p in parts}) > 1 and len({p.dim() for p in parts}) == 1:
            parts = _pad(parts, pad)
        try:
            return torch.cat(parts)
        except RuntimeError as exc:
            raise DataError(f"map_rows: the shards' results do not concatenate ({exc}); for ragged "
                            "outputs (padded sequences) pass pad=<fill value>") from None
    if isinstance(first, np.ndarray):
        if any(p.ndim == 0 for p in parts):
            raise DataError("map_rows: fn returned a 0-dimensional array; it must return one result per row")
        return np.concatenate(parts)
    if isinstance(first, (pd.DataFrame, pd.Series)):
        return pd.concat(parts, ignore_index=not keep_index)
    if isinstance(first, dict):
        keys = list(first)
        if any(list(p) != keys for p in parts):
            raise DataError(f"map_rows: fn returned dicts with different keys on different shards: "
                            f"{[list(p) for p in parts]}")
        return {k: _concat([p[k] for p in parts], keep_index, pad) for k in keys}
    if isinstance(first, tuple):
        return tuple(_concat(list(column), keep_index, pad) for column in zip(*parts))
    if isinstance(first, list):
        return [row for part in parts for row in part]
    raise DataError(f"map_rows: cannot concatenate results of type {type(first).__name__}; fn must return "
                    "a tensor, array, DataFrame, Series or list with one entry per row, or a dict or "
                    "tuple of those")


def _rebuild_error(rank, kind, message):
    """An exception of class ``kind`` (a ppgen error or a built-in) saying that ``rank`` failed."""
    cls = getattr(errors, kind, None) or getattr(builtins, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = RuntimeError
    return cls(f"rank {rank} failed with {kind}: {message}")


def gather_checked(compute, *, group=None):
    """Run ``compute()`` on every rank and all-gather the results, in rank order.

    If ``compute`` raises on some rank, every rank raises instead of leaving the
    others blocked in the collective: the failing rank its own exception, the
    others one of the same class naming the first failing rank.

    Returns
    -------
    list, the ``W`` ranks' results (``[compute()]`` without a process group).
    """
    rank, world = rank_and_world(group)
    if world == 1:
        return [compute()]
    failure = None
    try:
        payload = (True, compute())
    except Exception as exc:  # noqa: BLE001 - re-raised below, after the other ranks know
        failure = exc
        payload = (False, (type(exc).__name__, str(exc)))
    gathered = [None] * world
    dist.all_gather_object(gathered, payload, group=group)
    if failure is not None:
        raise failure
    for other, (ok, value) in enumerate(gathered):
        if not ok:
            raise _rebuild_error(other, *value)
    return [value for _, value in gathered]


def map_rows(fn, table, *, batch_size=None, pad=None, group=None):
    """Apply ``fn`` to the rows of ``table`` split across ranks; gather the results in row order.

    Parameters
    ----------
    fn : callable
        Takes a contiguous slice of ``table`` (of the same type) and returns one
        result per row: a tensor, array, DataFrame, Series or list, or a dict or
        tuple of those (``BayesianNetwork.query`` with rows of evidence returns a
        dict of DataFrames).
    table : tensor, array, DataFrame, Series, list, tuple, dict of columns, or ``Sequences``
        ``N`` rows (see :func:`shard_rows`).
    batch_size : int, optional
        Apply ``fn`` to at most this many rows at a time on each rank (bounds memory).
    pad : float, optional
        Right-pad tensor results whose trailing dimensions differ between shards
        or batches (per-step outputs of ragged sequences) with this value.
    group : torch.distributed ProcessGroup, optional
        The ranks that share the work (default: the whole world).

    Returns
    -------
    The concatenation, identical on every rank: tensors on the local result's
    device, DataFrames keeping the table's index when ``table`` is a DataFrame
    (and numbered ``0..N-1`` otherwise).

    Raises
    ------
    DataError
        An empty table, a table without rows, a bad ``batch_size``, or results
        that cannot be concatenated.
    """
    import pandas as pd
    if not callable(fn):
        raise DataError(f"map_rows: fn must be callable, got {type(fn).__name__}")
    if batch_size is not None and not (isinstance(batch_size, int) and batch_size > 0):
        raise DataError(f"map_rows: batch_size must be a positive integer, got {batch_size!r}")
    total = _num_rows(table)
    if total == 0:
        raise DataError("map_rows: table has no rows")
    keep_index = isinstance(table, (pd.DataFrame, pd.Series))
    rank, world = rank_and_world(group)
    start, stop = shard_bounds(total, rank, world)
    step = batch_size or max(stop - start, 1)

    def local():
        parts = [fn(_take(table, i, min(i + step, stop))) for i in range(start, stop, step)]
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else _concat(parts, keep_index, pad)

    if world == 1:
        return local()
    mine = None

    def compute():
        nonlocal mine
        mine = local()
        return _to(mine, "cpu")

    gathered = [part for part in gather_checked(compute, group=group) if part is not None]
    out = _concat(gathered, keep_index, pad)
    device = _device(mine) if mine is not None else (table.device if isinstance(table, torch.Tensor) else None)
    return _to(out, device) if device is not None and device.type != "cpu" else out


def query_rows(network, variables, evidence, *, joint=False, batch_size=None, group=None):
    """``network.query(variables, evidence=rows, joint=joint)`` over rows of evidence split across ranks.

    ``evidence``: a DataFrame of state names (``None``/``NaN`` missing), a dict
    of columns, or an integer array/tensor ``(R, V)`` with ``-1`` for missing;
    the result is what the single-process query returns for all ``R`` rows.
    """
    return map_rows(lambda rows: network.query(variables, evidence=rows, joint=joint), evidence,
                    batch_size=batch_size, group=group)


def log_prob_rows(model, data, lengths=None, *, batch_size=None, group=None, **kwargs):
    """Per-datum ``model.log_prob`` (nats) over rows split across ranks, in row order.

    For an HMM, ``data`` is anything ``model.log_prob`` accepts per sequence (a
    list of sequences, a ``Sequences``, or a padded array with ``lengths``):
    each rank scores its contiguous share of the sequences, so the result is the
    ``(B,)`` tensor of :math:`\\log p(x_b \\mid \\theta)` of the whole batch.
    """
    if lengths is not None:
        table = {"data": data, "lengths": lengths}
        fn = lambda rows: model.log_prob(rows["data"], rows["lengths"], **kwargs)  # noqa: E731
    else:
        table = data
        fn = lambda rows: model.log_prob(rows, **kwargs)  # noqa: E731
    return map_rows(fn, table, batch_size=batch_size, group=group)
