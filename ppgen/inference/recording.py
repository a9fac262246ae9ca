"""A Pyro computation recorded once as a graph of tensor operations, then batched.

Running a model under Pyro's effect handlers costs Python time at every call. What a
fixed computation of one draw does (Pyro's one-chain potential, an observed site's
log-likelihood at one draw of the latents) is the same sequence of tensor operations
every time, so :func:`record` runs it once under ``make_fx`` and keeps those
operations (work on the data alone done once, :func:`_constants_folded`); :func:`batch`
then evaluates the graph for many draws at once with
``torch.func.vmap`` (which Pyro's handlers themselves do not survive: enumeration
reads ``.data``). What the handlers compute is kept whole: enumeration and its
contractions, ``pyro.markov``, masks, scales, vector sites without plates.

Recording refuses a latent read as a Python value (``bool(x > 0)``, ``x.item()``): a
branch no single recording follows. A tensor computed from the data alone and read as
a Python value (``int(counts.sum())``) is a constant, and is kept as one. Callers check
the graph against Pyro at a few points before they rely on it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pyro
import torch

aten = torch.ops.aten


class NotRecorded(Exception):
    """The computation cannot be recorded as one graph; the message says why."""


def record(fn: Callable, *example: torch.Tensor) -> torch.fx.GraphModule:
    """``fn``'s tensor operations at ``example``, as a graph of ``len(example)`` inputs.

    Raises
    ------
    NotRecorded
        A latent read as a Python value (data-dependent control flow), or any other
        failure of the recording.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    # Argument checks would read tensors as Python booleans (and cost time).
    with warnings.catch_warnings(), pyro.validation_enabled(False):
        warnings.simplefilter("ignore")
        try:
            try:
                return _constants_folded(make_fx(fn)(*example))
            except RuntimeError as exc:
                if "_local_scalar_dense" not in str(exc):
                    raise
                # A tensor read as a Python value: from the data (``int(counts.sum())``)
                # a constant; from a latent, a branch no single recording follows.
                graph = make_fx(fn, _error_on_data_dependent_ops=False)(*example)
                return _constants_folded(_without_value_reads(graph))
        except Exception as exc:  # recording fails in many ways, all of which mean "not recorded"
            if "_local_scalar_dense" in str(exc):
                raise NotRecorded("data-dependent control flow or indexing (a latent read as a Python value)") from None
            raise NotRecorded(f"recording failed ({type(exc).__name__}: {str(exc)[:120]})") from None


def batch(graph: torch.fx.GraphModule, *example: torch.Tensor) -> tuple[Callable, str]:
    """``(batched, how)``: ``graph`` over a leading batch dimension of each input, and how
    (``"vmap"`` or ``"loop"``). ``example`` holds batched inputs to check it with.

    vmap refuses an in-place update of a tensor the program made (``x[0] = mu``) and an
    update through a boolean mask (``logits[mask] = 0``, as ``Multinomial`` does): the
    graph is then made functional and such updates become ``where`` (only then, since
    that decomposes some fused operations: a few ulps). Where vmap still refuses, the
    graph runs once per row.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    one = tuple(x[0] for x in example)
    candidates = [lambda: graph,
                  lambda: _masked_updates_as_where(make_fx(torch.func.functionalize(graph))(*one))]
    for candidate in candidates:
        try:
            batched = torch.func.vmap(candidate())
            with torch.no_grad():
                batched(*example)
            return batched, "vmap"
        except Exception:  # noqa: BLE001 - vmap refuses in several ways
            continue
    return _row_by_row(graph), "loop"


def _row_by_row(graph):
    def batched(*inputs):
        rows = [graph(*(x[i] for x in inputs)) for i in range(inputs[0].shape[0])]
        if isinstance(rows[0], torch.Tensor):
            return torch.stack(rows)
        return type(rows[0])(torch.stack(parts) for parts in zip(*rows))
    return batched


def _masked_updates_as_where(graph):
    """``graph`` (functional) with every update through a boolean mask of the tensor's own
    shape, ``index_put(x, [mask], v)``, written as ``where(mask, v, x)``, which vmap batches."""
    for node in list(graph.graph.nodes):
        if node.target is not aten.index_put.default or (len(node.args) > 3 and node.args[3]):
            continue
        x, indices, values = node.args[:3]
        mask = indices[0] if len(indices) == 1 else None
        mask_val, x_val = getattr(mask, "meta", {}).get("val"), x.meta.get("val")
        if mask_val is None or x_val is None or mask_val.dtype != torch.bool or mask_val.shape != x_val.shape:
            continue
        with graph.graph.inserting_before(node):
            node.replace_all_uses_with(graph.graph.call_function(aten.where.self, (mask, values, x)))
        graph.graph.erase_node(node)
    graph.recompile()
    return graph


def _constants_folded(graph):
    """``graph`` with every operation that reads no input done once, its result kept as a
    constant: work on the data alone (a mask's ``nonzero``, whose output shape depends on
    values, which neither vmap nor TorchInductor handles) leaves the graph. Operations
    that write into a tensor or draw random numbers are left in place."""
    value = {}
    for node in graph.graph.nodes:
        if node.op == "get_attr":
            value[node] = _attribute(graph, node.target)
        elif (node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
              and not node.target._schema.is_mutable and torch.Tag.nondeterministic_seeded not in node.target.tags
              and all(arg in value for arg in node.all_input_nodes)):
            args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), lambda n: value[n])
            value[node] = node.target(*args, **kwargs)
    count = 0
    for node in list(graph.graph.nodes):
        if node.op != "call_function" or node not in value or not isinstance(value[node], torch.Tensor):
            continue
        if all(user in value for user in node.users):
            continue  # used by constants only: folded with them
        name = f"_folded_constant_{count}"
        count += 1
        graph.register_buffer(name, value[node])
        with graph.graph.inserting_before(node):
            node.replace_all_uses_with(graph.graph.get_attr(name))
    count += _masks_as_positions(graph)
    if count:
        graph.graph.eliminate_dead_code()
        graph.recompile()
    return graph


def _masks_as_positions(graph):
    """Indexing through a constant boolean mask (``x[mask]``, ``x[mask] = v``) rewritten
    as indexing by the mask's positions: the same values, without the ``nonzero`` that
    TorchInductor's decompositions would otherwise put in the graph. Returns how many."""
    count = 0
    for node in graph.graph.nodes:
        if node.target not in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default):
            continue
        indices = node.args[1]
        if not any(isinstance(i, torch.fx.Node) and i.op == "get_attr"
                   and _attribute(graph, i.target).dtype == torch.bool for i in indices):
            continue
        positions = []
        for index in indices:
            mask = _attribute(graph, index.target) if isinstance(index, torch.fx.Node) and index.op == "get_attr" \
                else None
            if mask is None or mask.dtype != torch.bool:
                positions.append(index)
                continue
            for part in mask.nonzero(as_tuple=True):
                name = f"_mask_positions_{len(list(graph.named_buffers()))}"
                graph.register_buffer(name, part)
                with graph.graph.inserting_before(node):
                    positions.append(graph.graph.get_attr(name))
        node.args = (node.args[0], positions) + tuple(node.args[2:])
        count += 1
    return count


def _attribute(graph, target):
    for part in target.split("."):
        graph = getattr(graph, part)
    return graph


def _without_value_reads(graph):
    """``graph`` without its reads of tensors as Python values, whose values the recording
    wrote into the operations that used them (vmap cannot batch such a read): safe where
    the tensor read comes from the data alone; a read of anything computed from the inputs
    raises (a ``_local_scalar_dense`` error, as strict recording does)."""
    from_inputs = set()
    for node in graph.graph.nodes:
        if node.op == "placeholder" or any(arg in from_inputs for arg in node.all_input_nodes):
            from_inputs.add(node)
    for node in list(graph.graph.nodes):
        if node.target is aten._local_scalar_dense.default:
            if node in from_inputs or node.users:
                raise RuntimeError("_local_scalar_dense: a value computed from the latents read as a Python value")
            graph.graph.erase_node(node)
    graph.recompile()
    return graph
