"""TorchInductor as ppgen's NUTS uses it: recorded graphs compiled into one C++ kernel,
called without TorchDynamo's or AOTAutograd's per-call wrappers.

ppgen records its graphs itself (``make_fx`` of a potential and its gradient, a
leapfrog step, a lockstep leaf), with Inductor's decompositions, so there are no
Python frames for TorchDynamo to guard and no autograd for AOTAutograd to
partition: what is left to Inductor is lowering and code generation.
"""

from __future__ import annotations

import contextlib
import logging
import types
import warnings

import torch

from .broadcasts import simplify_for_inductor, written_in_place
from .compile_cache import private_directory, use_private_cache
from .fallback import Refused

log = logging.getLogger("ppgen")


def inductor_decompositions():
    """The decomposition table ``make_fx`` records a graph for :func:`inductor_kernel` with."""
    from torch._inductor.decomposition import select_decomp_table

    return select_decomp_table()


def inductor_kernel(graph, example, check=False, lean=True):
    """``graph`` (a ``make_fx`` recording with :func:`inductor_decompositions`) compiled
    by TorchInductor for inputs shaped and strided like ``example``: a function of those
    inputs returning a tuple, with ``.lean`` saying which way it was compiled.

    The lean way first: the graph handed to ``compile_fx_inner``, and its generated
    ``call`` used directly, without input
    shape and stride asserts; that skips TorchDynamo's frame hooks and AOTAutograd's
    runtime wrappers, which cost more than a small model's kernel. Its callers pass fresh
    contiguous tensors of the example's shapes (:meth:`Sampler.transition` checks once per transition). Where that path
    fails (it is Inductor's internal entry point), or the graph writes into one of its
    inputs, ``torch._inductor.compile``. With ``check`` (a graph of floating-point
    outputs), also where the lean kernel's outputs at ``example`` disagree with the
    graph's: the lean way skips AOTAutograd's passes, and before graphs with in-place
    writes were made functional (:func:`_functional`) it miscompiled some (the gradient of
    a Dirichlet's stick-breaking transform, 0.4 off), which the public way compiled right;
    the check stays as the guard. ``lean=False`` goes the public way straight away
    (callers whose own probes catch a wrong lean kernel compile again so).

    Before compiling, :func:`~ppgen.inference.mcmc.broadcasts.simplify_for_inductor`
    rewrites the graph (broadcast work done once, small last dimensions split), and
    the lean kernel keeps its intermediate buffers from call to call
    (:func:`_reusing_buffers`).

    Compiled code is written to and loaded from the user's private cache only
    (:func:`~.compile_cache.use_private_cache`; :class:`~.fallback.Unsafe` otherwise).

    A tracing context with a shape environment lets Inductor use its FX-graph cache
    (without one it bypasses it, "No shape env", and generates code anew each fit: ~0.8 s
    on eight schools). Data tensors are graph inputs passed to the kernel at run time,
    not baked into the cached code.
    """
    from torch import _inductor
    from torch._guards import TracingContext, tracing
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    use_private_cache()  # before TorchInductor writes or loads any compiled code
    graph = simplify_for_inductor(_functional(graph, example), example)
    try:
        from torch._inductor.compile_fx import compile_fx_inner

        if lean and not _writes_inputs(graph):
            if check:  # before Inductor's passes rewrite the graph in place
                with torch.no_grad():
                    expected = graph(*example)
            mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True)
            fake = [mode.from_tensor(t) for t in example]
            with tracing(TracingContext(mode)), build_settings(), _inductor.config.patch(
                    size_asserts=False, alignment_asserts=False):
                # (on a copy: Inductor's passes rewrite the graph they are given, and a
                # rewritten graph is no input for the public way below)
                generated = compile_fx_inner(_copy(graph), fake).current_callable
                call = _reusing_buffers(generated)

            def kernel(*args):
                return tuple(call(list(args)))

            kernel.lean, kernel.generated = True, generated
            why = disagreement(expected, kernel(*example)) if check else ""
            if not why:
                return kernel
            log.debug("NUTS potential: the lean kernel disagrees with its graph (%s); compiling it the usual way",
                      why)
        elif lean:
            log.debug("NUTS potential: the recorded graph writes into an input; compiling it the usual way")
    except Exception as exc:  # noqa: BLE001 - any failure of the internal path: the public one
        log.debug("NUTS potential: Inductor's inner compile failed (%s); compiling it the usual way", exc)
    with tracing(TracingContext(FakeTensorMode(shape_env=ShapeEnv()))), build_settings(trust_cpu=False):
        compiled = _inductor.compile(graph, list(example))

    def kernel(*args):
        return tuple(compiled(*args))

    kernel.lean = False
    return kernel


@contextlib.contextmanager
def build_settings(trust_cpu: bool = True):
    """TorchInductor's settings for ppgen's compiles, as a context.

    Precompiled headers in the user's private cache: Inductor keeps them in the shared
    ``<tmp>/torchinductor_<user>`` whatever ``TORCHINDUCTOR_CACHE_DIR`` says, where another
    local user could plant one for the compiler to use (:mod:`.compile_cache`); where its
    module does not name that folder as expected, precompiled headers are off.

    With ``trust_cpu``, unless the user decided (``TORCHINDUCTOR_VEC_ISA_OK``), the vector
    instructions the CPU reports (``/proc/cpuinfo``) are taken as usable. Otherwise Inductor
    proves each instruction set in every process by compiling a probe and loading it in a
    fresh Python subprocess: 1.5 s of a warm fit, 8 s of a cold one. Where the compiler
    lacks what the CPU has, the lean compile fails and :func:`inductor_kernel` compiles
    again the public way, without trusting, which probes as usual.
    """
    from torch._inductor import codecache, config

    changes = {}
    if trust_cpu and config.cpp.vec_isa_ok is None:
        changes["cpp.vec_isa_ok"] = True
    headers = getattr(codecache, "_HEADER_DIR", None), getattr(codecache, "_HEADER_LOCK_DIR", None)
    movable = all(isinstance(h, str) for h in headers) and hasattr(codecache._precompile_header, "cache_clear")
    if not movable:
        changes["cpp_cache_precompile_headers"] = False
    with config.patch(changes):
        if not movable:
            yield
            return
        folder = private_directory(use_private_cache() / "precompiled_headers")
        codecache._precompile_header.cache_clear()  # (paths under the old folder)
        codecache._HEADER_DIR, codecache._HEADER_LOCK_DIR = str(folder), str(folder / "locks")
        try:
            yield
        finally:
            codecache._HEADER_DIR, codecache._HEADER_LOCK_DIR = headers
            codecache._precompile_header.cache_clear()


def probed_inductor_kernel(function, example, agrees):
    """``function`` recorded (``make_fx`` with :func:`inductor_decompositions`) and compiled
    by :func:`inductor_kernel`, whose result ``agrees(kernel)`` must accept: the lean way
    first, the public way where the lean kernel fails the caller's probes; None where
    neither agrees. Recording or compiling errors propagate."""
    from torch.fx.experimental.proxy_tensor import make_fx

    for lean in (True, False):
        graph = make_fx(function, decomposition_table=inductor_decompositions())(*example)
        kernel = inductor_kernel(graph, example, lean=lean)  # (Inductor may rewrite graph: record anew)
        if agrees(kernel):
            return kernel
        if not kernel.lean:
            break
    return None


def compiled_and_checked(eager, probe, close, seeds=(1, 2)):
    """``eager`` compiled by TorchInductor (:func:`probed_inductor_kernel`, recorded at
    ``probe(0)``) and accepted only where its outputs at ``probe(seed)``, for each of
    ``seeds``, are ``close(got, expected)`` to eager evaluation; raises :class:`Refused`
    otherwise. ``probe(seed)`` gives the arguments, drawn from a generator seeded with it."""
    def agrees(kernel):
        for seed in seeds:
            args = probe(seed)
            with torch.no_grad():
                got = kernel(*args)
            with torch.enable_grad():
                expected = eager(*args)
            if not all(close(a, b.detach()) for a, b in zip(got, expected)):
                return False
        return True

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kernel = probed_inductor_kernel(eager, probe(0), agrees)
    if kernel is None:
        raise Refused("the compiled kernel disagrees with eager evaluation at probe points")
    return kernel


def disagreement(expected, got):
    """``""`` if a kernel's floating-point outputs ``got`` equal its graph's ``expected``
    (to 1e-9 in float64, 1e-3 in float32, relative to the largest output), else how not."""
    for i, (e, g) in enumerate(zip(expected, got)):
        if e.shape != g.shape:
            return f"output {i}: shape {tuple(g.shape)}, not {tuple(e.shape)}"
        tol = 1e-9 if e.dtype == torch.float64 else 1e-3
        scale = 1.0 + float(e.nan_to_num(0.0, 0.0, 0.0).abs().max()) if e.numel() else 1.0
        if not torch.isclose(g, e, rtol=tol, atol=tol * scale, equal_nan=True).all():
            return f"output {i}: max |difference| {float((g - e).abs().nan_to_num(0.0).max()):.3g}"
    return ""


def _functional(graph, example):
    """``graph`` with its in-place operations (``x[mask] = v`` in a transform's code) made
    functional, as AOTAutograd does on the public way: Inductor's inner compile assumes
    a functional graph and miscompiles some writes otherwise (the gradient of a
    Dirichlet's stick-breaking, an LKJ factor's: off by 0.4 to 5)."""
    if not any(isinstance(n.target, torch._ops.OpOverload) and n.target._schema.is_mutable
               for n in graph.graph.nodes):
        return graph
    from torch.fx.experimental.proxy_tensor import make_fx

    return make_fx(torch.func.functionalize(graph, remove="mutations"),
                   decomposition_table=inductor_decompositions())(*example)


def _copy(graph):
    """A copy of the ``GraphModule`` ``graph`` with its own nodes (the attributes shared)."""
    import copy

    return torch.fx.GraphModule(graph, copy.deepcopy(graph.graph))


def _writes_inputs(graph):
    """Whether an in-place operation of ``graph`` writes into one of its inputs (directly
    or through a view of it)."""
    return any(node.op == "placeholder" for node in written_in_place(graph))


def _reusing_buffers(call):
    """Inductor's generated ``call`` with its intermediate buffers allocated once.

    The generated wrapper is straight-line Python that allocates every buffer
    (``empty_strided_cpu``) and view (``reinterpret_tensor``) anew on each call, in the
    same order with the same (constant) sizes: for a small model that costs more than
    the arithmetic (low_dim_gauss_mix's leaf allocates 35 buffers and 18 views a
    call; ``benchmarks/bench_leaf.py`` times it with and without reuse). Here
    the first call records them; later calls get the same tensors back, except those
    whose memory a call returns (fresh each time, since the caller keeps them).
    Inductor never reads a buffer it has not written in the same call (its buffers are
    uninitialised), so reusing the memory changes no number. The function runs on a
    private copy of the module's globals; a sequence that does not match the recording
    (another size at the same position) allocates normally.
    Not for two threads at once: one kernel belongs to one sampler.
    """
    names = getattr(call, "__func__", call).__globals__
    if "empty_strided_cpu" not in names or "reinterpret_tensor" not in names:
        return call
    allocate, view = names["empty_strided_cpu"], names["reinterpret_tensor"]
    buffers, views = [], []  # (size, stride, dtype, tensor or None for fresh), (base, args, view or None)
    position = [0, 0]
    recording = [True]

    def empty_strided(size, stride, dtype):
        i = position[0]
        position[0] = i + 1
        if recording[0]:
            tensor = allocate(size, stride, dtype)
            buffers.append((size, stride, dtype, tensor))
            return tensor
        if i < len(buffers):
            known_size, known_stride, known_dtype, tensor = buffers[i]
            if tensor is not None and known_size is size and known_stride is stride and known_dtype is dtype:
                return tensor
        return allocate(size, stride, dtype)

    def reinterpret(base, size, stride, offset):
        i = position[1]
        position[1] = i + 1
        if recording[0]:
            result = view(base, size, stride, offset)
            views.append((base, (size, stride, offset), result))
            return result
        if i < len(views):
            known_base, known_args, result = views[i]
            if result is not None and known_base is base and known_args == (size, stride, offset):
                return result
        return view(base, size, stride, offset)

    run = with_globals(call, {"empty_strided_cpu": empty_strided, "reinterpret_tensor": reinterpret})

    def reusing(args):
        position[0] = position[1] = 0
        if not recording[0]:
            return run(args)
        buffers.clear()
        views.clear()
        out = run(args)
        returned = {t.untyped_storage().data_ptr() for t in out if isinstance(t, torch.Tensor)}
        kept = []
        for k, (size, stride, dtype, tensor) in enumerate(buffers):
            fresh = tensor.untyped_storage().data_ptr() in returned
            buffers[k] = (size, stride, dtype, None if fresh else tensor)
            if not fresh:
                kept.append(tensor)
        for k, (base, view_args, result) in enumerate(views):
            if result.untyped_storage().data_ptr() in returned or not any(base is t for t in kept):
                views[k] = (base, view_args, None)
        recording[0] = False
        return out

    return reusing


def with_globals(call, overrides):
    """Inductor's generated ``call`` (a function or bound method) running on a private copy
    of its module's globals with ``overrides`` in it; the module itself is untouched."""
    owner, function = getattr(call, "__self__", None), getattr(call, "__func__", call)
    private = dict(function.__globals__, **overrides)
    copy = types.FunctionType(function.__code__, private, function.__name__, function.__defaults__,
                              function.__closure__)
    return types.MethodType(copy, owner) if owner is not None else copy
