"""TorchInductor as ppgen's NUTS uses it: recorded graphs compiled into one C++ kernel,
called without TorchDynamo's or AOTAutograd's per-call wrappers.

ppgen records its graphs itself (``make_fx`` of a potential and its gradient, a
leapfrog step, a lockstep leaf), with Inductor's decompositions, so there are no
Python frames for TorchDynamo to guard and no autograd for AOTAutograd to
partition: what is left to Inductor is lowering and code generation.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("ppgen")


def inductor_decompositions():
    """The decomposition table ``make_fx`` records a graph for :func:`inductor_kernel` with."""
    from torch._inductor.decomposition import select_decomp_table

    return select_decomp_table()


def inductor_kernel(graph, example):
    """``graph`` (a ``make_fx`` recording with :func:`inductor_decompositions`) compiled
    by TorchInductor for inputs shaped and strided like ``example``: a function of those
    inputs returning a tuple, with ``.lean`` saying which way it was compiled.

    The lean way first: the graph handed to ``compile_fx_inner``, and its generated
    ``call`` used directly, without input
    shape and stride asserts; that skips TorchDynamo's frame hooks and AOTAutograd's
    runtime wrappers, which cost more than the kernel (eight schools' leaf: 7.5 us a
    call instead of 17). Its callers pass fresh contiguous tensors of the example's
    shapes (:meth:`Sampler.transition` checks once per transition). Where that path
    fails (it is Inductor's internal entry point), or the graph writes into one of its
    inputs, ``torch._inductor.compile``.

    A tracing context with a shape environment lets Inductor use its FX-graph cache
    (without one it bypasses it, "No shape env", and generates code anew each fit: ~0.8 s
    on eight schools). Data tensors are graph inputs passed to the kernel at run time,
    not baked into the cached code.
    """
    from torch import _inductor
    from torch._guards import TracingContext, tracing
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    try:
        from torch._inductor.compile_fx import compile_fx_inner

        if not _writes_inputs(graph):
            mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True)
            fake = [mode.from_tensor(t) for t in example]
            with tracing(TracingContext(mode)), _inductor.config.patch(size_asserts=False,
                                                                       alignment_asserts=False):
                call = compile_fx_inner(graph, fake).current_callable

            def kernel(*args):
                return tuple(call(list(args)))

            kernel.lean = True
            return kernel
        log.debug("NUTS potential: the recorded graph writes into an input; compiling it the usual way")
    except Exception as exc:  # noqa: BLE001 - any failure of the internal path: the public one
        log.debug("NUTS potential: Inductor's inner compile failed (%s); compiling it the usual way", exc)
    with tracing(TracingContext(FakeTensorMode(shape_env=ShapeEnv()))):
        compiled = _inductor.compile(graph, list(example))

    def kernel(*args):
        return tuple(compiled(*args))

    kernel.lean = False
    return kernel


def _writes_inputs(graph):
    """Whether an in-place operation of ``graph`` writes into one of its inputs (directly
    or through a view of it)."""

    def root(node):  # follow views back to the tensor they alias
        while node.op == "call_function":
            schema = getattr(node.target, "_schema", None)
            returns = schema.returns if schema is not None else ()
            if not (returns and returns[0].alias_info is not None and not schema.is_mutable and node.args):
                break
            node = node.args[0]
        return node

    for node in graph.graph.nodes:
        schema = getattr(node.target, "_schema", None)
        if node.op == "call_function" and schema is not None and schema.is_mutable:
            if any(root(arg).op == "placeholder" for arg in node.args if isinstance(arg, torch.fx.Node)):
                return True
    return False
