"""Two rewrites of a recorded graph before TorchInductor compiles it, for the shapes
Pyro models make.

Pyro broadcasts every distribution's parameters to the batch shape (``broadcast_all``,
``MixtureSameFamily`` expanding its mixture logits to every data point), so a
recorded log density computes ``log(sigma)`` a thousand times for two scales, or a
log-softmax over two mixture weights once per data point. And a mixture's
components sit in a small last dimension, ``(N, K)`` with ``K = 2``: Inductor's CPU
code vectorises the innermost dimension, so its loops run ``N`` times over
two-wide masked vectors and call the scalar ``exp`` and ``log`` there.

* :func:`compute_broadcasts_once`: an elementwise operation whose inputs are
  broadcasts is computed on the inputs' small shape and broadcast afterwards (the
  same numbers: elementwise arithmetic does not care where it runs); a reduction over
  a broadcast dimension becomes a multiplication (``sum``) or nothing
  (``amax``, ``amin``).
* :func:`split_small_last_dim`: an ``(..., K)`` tensor with ``K <= 4`` and many rows
  is carried as ``K`` tensors of shape ``(...)``, so the loops run along the rows;
  a reduction over the last dimension becomes ``K - 1`` elementwise operations.
  Where an operation this pass does not know needs the tensor, it is stacked back.

``benchmarks/bench_leaf.py`` times one fused leapfrog step with and without them.
:func:`simplify_for_inductor` applies both and
computes the nodes' metadata again, which Inductor reads; every caller checks its
compiled kernel against eager evaluation at probe points before using it.
"""

from __future__ import annotations

import copy
import logging
import math

import torch

log = logging.getLogger("ppgen")
aten = torch.ops.aten

_PASS_THROUGH = {aten.alias.default, aten.clone.default}
_COMBINE = {aten.sum.dim_IntList: aten.add.Tensor, aten.amax.default: aten.maximum.default,
            aten.amin.default: aten.minimum.default}


def simplify_for_inductor(graph, example):
    """``graph`` (a ``make_fx`` recording) rewritten in place by both passes, its nodes'
    metadata computed again for ``example``; ``graph`` as it was where a rewrite fails."""
    original = copy.deepcopy(graph)
    try:
        if unroll_short_cumsums(graph) + compute_broadcasts_once(graph) + split_small_last_dim(graph):
            _propagate(graph, example)
            graph.recompile()
        return graph
    except Exception as exc:  # noqa: BLE001 - an optimisation: the graph as recorded instead
        log.debug("graph rewrites skipped (%s: %s)", type(exc).__name__, exc)
        return original


def _propagate(graph, example):
    """Every node's ``meta["val"]`` (fake tensors), which the passes and Inductor read."""
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp  # (tenths of a second to import)

    with torch._subclasses.fake_tensor.FakeTensorMode(allow_non_fake_inputs=True) as mode:
        FakeTensorProp(graph, mode).propagate(*example)


def written_in_place(gm):
    """The nodes of ``gm`` an in-place operation may write into: its tensor arguments and
    every tensor those view. The rewrites leave them alone (a small copy would miss the
    write)."""
    written = set()
    for node in gm.graph.nodes:
        schema = getattr(node.target, "_schema", None)
        if node.op == "call_function" and schema is not None and schema.is_mutable:
            for arg in node.all_input_nodes:
                written.add(arg)
                while _is_view(arg):
                    arg = arg.args[0]
                    written.add(arg)
    return written


def _is_view(node):
    schema = getattr(node.target, "_schema", None) if node.op == "call_function" else None
    return (schema is not None and bool(schema.returns) and schema.returns[0].alias_info is not None
            and not schema.is_mutable and bool(node.args) and isinstance(node.args[0], torch.fx.Node))


def _shape(node):
    value = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _elementwise(node):
    target = node.target
    return (node.op == "call_function" and isinstance(target, torch._ops.OpOverload)
            and torch.Tag.pointwise in target.tags and torch.Tag.nondeterministic_seeded not in target.tags
            and not target._schema.is_mutable and len(target._schema.returns) == 1
            and not any(isinstance(v, torch.fx.Node) for v in node.kwargs.values()))


def _floating(reduction):
    """A reduction of floating-point numbers to their own dtype (a sum of booleans counts:
    its rewrite as additions would not)."""
    source = reduction.args[0]
    return (reduction.kwargs.get("dtype") is None and isinstance(source, torch.fx.Node)
            and "val" in source.meta and source.meta["val"].dtype.is_floating_point)


def _counting(reduction):
    """A running sum or product of integers or booleans to 64-bit integers (exact in any
    order, once the source is converted: ``add`` does not promote booleans)."""
    source = reduction.args[0]
    return ("val" in reduction.meta and reduction.meta["val"].dtype == torch.int64
            and isinstance(source, torch.fx.Node) and "val" in source.meta
            and not source.meta["val"].dtype.is_floating_point and not source.meta["val"].dtype.is_complex)


def _keepdim(node):
    return node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)


def _shaped(new, shape, like):
    """``new`` with shape-only metadata (``like``'s dtype, on the meta device): what the
    second pass reads before :func:`_propagate` computes the real thing."""
    if "val" not in new.meta:
        new.meta["val"] = torch.empty(shape, dtype=like.meta["val"].dtype, device="meta")
    return new


def _replace(graph, node, new):
    new.meta["val"] = node.meta["val"]
    node.replace_all_uses_with(new)


def compute_broadcasts_once(gm, least=64):
    """Rewrite ``gm.graph`` (a ``make_fx`` recording) in place; how many operations moved.
    Results of fewer than ``least`` elements stay as they are (nothing to gain, a buffer
    to lose). New nodes carry shape-only metadata; ``gm.recompile()`` before running it."""
    graph = gm.graph
    small = {}  # node -> (node of its small value, that value's shape, padded to the node's rank)

    def padded(node, rank):
        value, shape = small.get(node, (node, _shape(node)))
        if len(shape) < rank:
            shape = (1,) * (rank - len(shape)) + shape
            with graph.inserting_after(value):
                value = _shaped(graph.call_function(aten.view.default, (value, list(shape))), shape, node)
        return value, shape

    moved, written = 0, written_in_place(gm)
    for node in list(graph.nodes):
        shape = _shape(node)
        if node.op != "call_function" or shape is None or node in written:
            continue
        worth = math.prod(shape) >= least
        target, source = node.target, node.args[0] if node.args else None
        if target == aten.expand.default:
            value, small_shape = padded(source, len(shape))
            if math.prod(small_shape) < math.prod(shape):
                small[node] = (value, small_shape)
        elif target in _PASS_THROUGH and source in small:
            small[node] = small[source]
        elif target in (aten.unsqueeze.default, aten.squeeze.dims) and source in small:
            value, small_shape = small[source]
            if target == aten.unsqueeze.default:
                dim = node.args[1] % len(shape)
                new_shape = small_shape[:dim] + (1,) + small_shape[dim:]
            else:
                full = _shape(source)
                dims = {d % len(full) for d in node.args[1] if full[d % len(full)] == 1}
                new_shape = tuple(n for i, n in enumerate(small_shape) if i not in dims)
            with graph.inserting_after(node):
                small[node] = (_shaped(graph.call_function(aten.view.default, (value, list(new_shape))), new_shape,
                                       node), new_shape)
        elif worth and target in _COMBINE and source in small and _floating(node):
            full = _shape(source)
            value, small_shape = small[source]
            dims = sorted({d % len(full) for d in node.args[1]})
            real = [d for d in dims if small_shape[d] == full[d]]
            repeats = math.prod(full[d] for d in dims if small_shape[d] != full[d])
            with graph.inserting_before(node):
                reduced = graph.call_function(target, (value, real, True)) if real else value
                if target == aten.sum.dim_IntList and repeats != 1:
                    reduced = graph.call_function(aten.mul.Tensor, (reduced, repeats))
                reduced_shape = tuple(1 if i in dims else n for i, n in enumerate(small_shape))
                if not _keepdim(node):
                    reduced_shape = tuple(n for i, n in enumerate(reduced_shape) if i not in dims)
                    reduced = graph.call_function(aten.view.default, (reduced, list(reduced_shape)))
                _shaped(reduced, reduced_shape, node)
                expanded = graph.call_function(aten.expand.default, (reduced, list(shape)))
            _replace(graph, node, expanded)
            small[expanded] = (reduced, reduced_shape)
            moved += 1
        elif worth and _elementwise(node):
            inputs = [a for a in node.args if _shape(a) is not None]
            if not any(a in small for a in inputs):
                continue
            parts = {a: padded(a, len(shape)) for a in inputs}
            small_shape = tuple(max(p[1][i] for p in parts.values()) for i in range(len(shape)))
            if math.prod(small_shape) >= math.prod(shape):
                continue
            with graph.inserting_before(node):
                args = tuple(parts[a][0] if a in parts else a for a in node.args)
                value = _shaped(graph.call_function(target, args, dict(node.kwargs)), small_shape, node)
                expanded = graph.call_function(aten.expand.default, (value, list(shape)))
            _replace(graph, node, expanded)
            small[expanded] = (value, small_shape)
            moved += 1
    graph.eliminate_dead_code()
    return moved


def split_small_last_dim(gm, most=4, least_rows=64):
    """Rewrite ``gm.graph`` in place: elementwise results of shape ``(..., K)``,
    ``2 <= K <= most``, with at least ``least_rows`` rows, as ``K`` tensors; how many
    operations were split. ``gm.recompile()`` before running it."""
    graph = gm.graph
    parts, stacked = {}, {}

    def part(node, i):
        if node in parts:
            return parts[node][i]
        shape = _shape(node)
        if not shape:  # a 0-d tensor broadcasts as it is
            return node
        return graph.call_function(aten.select.int, (node, -1, i if shape[-1] > 1 else 0))

    def splittable(node, shape):
        if not (shape and 2 <= shape[-1] <= most and math.prod(shape[:-1]) >= least_rows):
            return False
        return all(_shape(a) is not None and (not _shape(a) or _shape(a)[-1] in (1, shape[-1]))
                   for a in node.all_input_nodes)

    count, written = 0, written_in_place(gm)
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        shape, target = _shape(node), node.target
        source = node.args[0] if node.args else None
        if node in written:  # as recorded, its split inputs stacked back
            shape, source = None, None
        if shape is not None and _elementwise(node) and splittable(node, shape):
            with graph.inserting_before(node):
                parts[node] = [graph.call_function(target, tuple(part(a, i) if isinstance(a, torch.fx.Node) else a
                                                                  for a in node.args), dict(node.kwargs))
                               for i in range(shape[-1])]
            count += 1
            continue
        if target == aten.expand.default and shape is not None and splittable(node, shape) and _shape(source):
            with graph.inserting_before(node):
                if source in parts or _shape(source)[-1] > 1:
                    parts[node] = [graph.call_function(aten.expand.default, (part(source, i), list(shape[:-1])))
                                   for i in range(shape[-1])]
                else:
                    one = graph.call_function(aten.expand.default, (part(source, 0), list(shape[:-1])))
                    parts[node] = [one] * shape[-1]
            continue
        if target == aten.alias.default and source in parts:
            parts[node] = parts[source]
            continue
        if target in _COMBINE and source in parts and _floating(node):
            rank = len(_shape(source))
            dims = sorted({d % rank for d in node.args[1]})
            if dims == [rank - 1]:
                with graph.inserting_before(node):
                    combined = parts[source][0]
                    for other in parts[source][1:]:
                        combined = graph.call_function(_COMBINE[target], (combined, other))
                    if _keepdim(node):
                        combined = graph.call_function(aten.unsqueeze.default, (combined, -1))
                _replace(graph, node, combined)
                continue
            if rank - 1 not in dims:
                with graph.inserting_before(node):
                    parts[node] = [graph.call_function(target, (p, dims, _keepdim(node))) for p in parts[source]]
                continue
        for split in [a for a in node.all_input_nodes if a in parts]:  # anything else: stack it back
            if split not in stacked:
                with graph.inserting_before(node):
                    stacked[split] = _stack(graph, parts[split])
            node.replace_input_with(split, stacked[split])
    output = next(n for n in graph.nodes if n.op == "output")
    for split in [a for a in output.all_input_nodes if a in parts]:
        if split not in stacked:
            with graph.inserting_before(output):
                stacked[split] = _stack(graph, parts[split])
        output.replace_input_with(split, stacked[split])
    graph.eliminate_dead_code()
    return count


#: Running operations unrolled by :func:`unroll_short_cumsums`, and their step.
_RUNNING = {aten.cumsum.default: aten.add.Tensor, aten.cumprod.default: aten.mul.Tensor}


def unroll_short_cumsums(gm, most=16):
    """Each ``cumsum`` or ``cumprod`` of floats (or of integers or booleans counted in 64-bit
    integers, as a Multinomial's log density does) over a dimension of at most ``most``
    elements (Pyro's ordered transform, e.g. a mixture's ordered means; the stick-breaking
    transform of a Dirichlet's simplex) rewritten as slices and running additions
    (products) joined by ``cat``: TorchInductor fuses those into its C++ kernels, where a
    CPU ``cumsum`` is a call back into ATen between kernels (which also keeps
    :mod:`ppgen.inference.mcmc.native` from replaying the leaf). The same operations in
    the same order; returns how many were rewritten."""
    graph, count = gm.graph, 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in _RUNNING or not (_floating(node) or _counting(node)):
            continue
        shape = _shape(node)
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if shape is None or not isinstance(dim, int) or not shape or not 0 < shape[dim] <= most:
            continue
        dim %= len(shape)
        with graph.inserting_before(node):
            source = node.args[0]
            if source.meta["val"].dtype != node.meta["val"].dtype:
                source = _shaped(graph.call_function(torch.ops.prims.convert_element_type.default,
                                                     (source, node.meta["val"].dtype)), shape, node)
            running, one = [], shape[:dim] + (1,) + shape[dim + 1:]
            for k in range(shape[dim]):
                piece = _shaped(graph.call_function(aten.slice.Tensor, (source, dim, k, k + 1)), one, node)
                running.append(piece if k == 0 else
                               _shaped(graph.call_function(_RUNNING[node.target], (running[-1], piece)), one, node))
            new = graph.call_function(aten.cat.default, (running, dim))
        _replace(graph, node, new)
        graph.erase_node(node)
        count += 1
    return count


def _stack(graph, parts):
    """``torch.stack(parts, -1)`` as the operations Inductor lowers (it decomposes ``stack``)."""
    columns = [graph.call_function(aten.unsqueeze.default, (p, -1)) for p in parts]
    return graph.call_function(aten.cat.default, (columns, -1))
