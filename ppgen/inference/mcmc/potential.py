"""A Pyro program as a potential over one flat unconstrained vector, for many chains.

HMC and NUTS need :math:`U(u) = -\\log p(x, T(u)) - \\log|\\det J_T(u)|` and its
gradient at every leapfrog step, where :math:`T` maps the unconstrained vector
:math:`u \\in R^D` to the model's latent sites (Pyro's ``biject_to`` of each
site's support). Pyro evaluates it by running the model under its effect
handlers (substitute, trace, log-density bookkeeping) every time, for one chain.
:class:`Potential` evaluates it for a batch of ``C`` chains at once, ``u`` of shape
``(C, D)``:

* ``"vectorized"``: the model runs once per evaluation inside an extra plate over
  chains (``dim = -(max_plate_nesting + 1)``), every site's log-density summed over
  all but the chain dimension;
* ``"jit"`` (the default where it applies): that batched function and its
  gradient recorded once by ``make_fx`` into a graph of tensor operations and
  frozen by TorchScript, so the handlers do not run again; also a fused leapfrog
  leaf (momentum half-step, position step, potential and gradient, half-step,
  Hamiltonian) as one graph;
* ``"compiled"``: the fused leaf compiled by TorchInductor into one C++ kernel
  (:func:`inductor_kernel`: no TorchDynamo guards or wrappers per call; the
  potential alone is that leaf with a zero step; the graph first rewritten by
  :mod:`ppgen.inference.mcmc.broadcasts`, broadcast work done once and a mixture's small
  component dimension split so the loops vectorise along the data): seconds to
  build, and a leapfrog step many times faster than ``"jit"``'s (``benchmarks/bench_leaf.py``);
  ``"auto"`` picks it only for long runs (``compile_hint``);
* ``"loop"``: Pyro's own potential, chain by chain: the fallback for models that
  cannot be vectorised over chains (enumerated discrete sites, supports that
  change with the parameters, programs that break under an extra plate).

A recorded graph is only used once it agrees with eager evaluation of the model
(values and gradients, to ~1e-10 relative in float64, 2e-5 in float32) at the
initial point and at six antithetic random probes around it (offsets of scale
0.1, 1 and 3 in unconstrained units, each with both signs); otherwise, or when
recording raises, the next mode is used and the reason logged. Recording itself
refuses any tensor computed from the latents being read as a Python value
(``make_fx`` raises on ``bool(x > 0)``, ``x.item()``, data-dependent indexing),
which catches most data-dependent control flow; Python values read from the
*data* (shape checks, ``int(counts.sum())``) are constants and fine. Residual
risk: a branch the recorder cannot see and that no probe crosses (state outside
the tensors, e.g. a Python counter or a value read through ``.tolist()``/numpy
that only changes far from the starting point) would make the graph silently
follow the initial point's branch; argument validation is switched off while
recording (checks do not change values, only raise).

The mode actually used, and why a faster one was refused, is in ``.mode`` and
``.reason``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import pyro
import torch
from pyro.infer.mcmc.util import initialize_model

from .fallback import Unsafe
from .inductor import inductor_decompositions, inductor_kernel
from .integrator import diagonal, leaf

log = logging.getLogger("ppgen")

MODES = ("compiled", "jit", "vectorized", "loop")

#: ``"auto"`` compiles a recorded graph of at most this many operations; a larger one (Pyro's
#: enumeration of a long ``pyro.markov`` chain, unrolled step by step) runs as recorded: its
#: TorchScript build takes over a minute at 15,000 operations, TorchInductor's far longer.
COMPILE_MAX_OPERATIONS = 4000


@dataclass
class FlatSite:
    """Where one latent site lives in the flat vector, and how to map it back."""

    name: str
    start: int
    stop: int
    unconstrained_shape: tuple  # one chain's unconstrained value
    shape: tuple  # one chain's constrained value
    batch_shape: tuple
    to_constrained: object  # a torch Transform, unconstrained -> constrained


class Potential:
    """The potential energy of ``program`` over flat unconstrained vectors.

    Parameters
    ----------
    program : Program
    chains : int
    mode : {"auto", "compiled", "jit", "vectorized", "loop"}
        ``"auto"`` tries ``"compiled"`` (only with ``compile_hint``), ``"jit"``, then
        ``"vectorized"``, then ``"loop"``.
    init_strategy : callable
        Pyro's initialisation strategy for the starting points.
    compile_hint : bool
        The run is long enough for TorchInductor's compile time (seconds) to pay off.
    """

    def __init__(self, program, chains, mode="auto", init_strategy=None, compile_hint=False):
        self.program, self.chains = program, chains
        self._leaf, self._batched = None, True
        self.model = program.enumerated_model()
        self.nesting = program.max_plate_nesting
        self._init_kwargs = {} if init_strategy is None else {"init_strategy": init_strategy}
        init, self._pyro_potential, transforms, _ = initialize_model(
            self.model, model_kwargs=program.kwargs, max_plate_nesting=self.nesting,
            num_chains=chains, **self._init_kwargs)
        self.sites = _layout(program, init, transforms, chains)
        self.dim = self.sites[-1].stop if self.sites else 0
        self.initial = self.flatten(init)
        self.mode, self.reason = self._choose(mode, compile_hint)
        log.info("NUTS potential: %s%s", self.mode, f" ({self.reason})" if self.reason else "")

    def starting_points(self, chains):
        """``(chains, D)`` starting points drawn as :attr:`initial` was (Pyro's
        ``initialize_model`` with the same strategy, from Pyro's random state now)."""
        init = initialize_model(self.model, model_kwargs=self.program.kwargs, max_plate_nesting=self.nesting,
                                num_chains=chains, **self._init_kwargs)[0]
        return torch.cat([init[s.name].reshape(chains, -1) for s in self.sites], -1).detach()

    # ------------------------------------------------------------ layout
    def flatten(self, values):
        """``{site: (C, *unconstrained shape)}`` -> ``(C, D)``."""
        return torch.cat([values[s.name].reshape(self.chains, -1) for s in self.sites], -1).detach()

    def unflatten(self, u):
        """``(..., D)`` unconstrained -> ``{site: (..., *constrained shape)}``."""
        lead = u.shape[:-1]
        out = {}
        for site in self.sites:
            piece = u[..., site.start:site.stop].reshape(lead + site.unconstrained_shape)
            out[site.name] = site.to_constrained(piece).reshape(lead + site.shape)
        return out

    # ------------------------------------------------------------ evaluation
    def value_and_grad(self, u):
        """``U(u)`` of shape ``(C,)`` and its gradient ``(C, D)``; non-finite values stay so."""
        try:
            if self.mode == "loop":
                return self._loop(u)
            evaluate = self._compiled if self.mode in ("jit", "compiled") else self._log_joint_and_grad
            with torch.no_grad():
                log_joint, grad = evaluate(u.detach())
            return -log_joint, -grad
        except (RuntimeError, ValueError):
            # A point where the model cannot be evaluated (a failed Cholesky far out in a
            # tail): infinite energy for that chain, which the sampler treats as divergent.
            return self._loop(u.detach(), tolerant=True)

    def log_joint(self, u):
        """``log p(x, T(u)) + log|det J|`` for ``u`` of shape ``(C, D)``, without gradient."""
        if self.mode == "loop":
            return -self._loop(u, grad=False)[0]
        with torch.no_grad():
            return self._vectorized(u)

    def _vectorized(self, u):
        """The log joint of every chain, ``(C, D) -> (C,)``."""
        return self._log_joint_and_grad(u)[0]

    def _log_joint_and_grad(self, u):
        """The log joint of every chain and its gradient, ``(C, D) -> (C,), (C, D)``: the
        recorded one-chain graph, batched over several chains by ``torch.func.vmap``."""
        if self.chains == 1:  # Pyro's operations as they are: one chain's potential bit for bit
            value, grad = self._one_chain(u[0])
            return value.unsqueeze(0), grad.unsqueeze(0)
        if not self._batched:
            values, grads = zip(*(self._one_chain(u[c]) for c in range(self.chains)))
            return torch.stack(values), torch.stack(grads)
        return torch.func.vmap(self._one_chain)(u)

    def _record(self):
        """Record Pyro's own one-chain potential (enumeration, ``pyro.markov``, masks and
        scales included) as a graph of tensor operations, ``(D,) -> ()``; ``""`` on
        success, else why not. The model's handlers run once, here."""
        from torch.fx.experimental.proxy_tensor import make_fx

        if not self.sites:
            return "no continuous latent sites"
        sites, potential = self.sites, self._pyro_potential

        def log_joint_and_grad(u):
            # Autograd as in eager evaluation (not torch.func's transforms, which decompose
            # some operations): the graph holds the very operations Pyro's potential runs.
            u = u.detach().requires_grad_(True)
            with torch.enable_grad():
                value = -potential({s.name: u[s.start:s.stop].reshape(s.unconstrained_shape) for s in sites})
                (grad,) = torch.autograd.grad(value, u)
            return value.detach(), grad

        # Argument checks would read tensors as Python booleans (and cost time).
        with warnings.catch_warnings(), pyro.validation_enabled(False):
            warnings.simplefilter("ignore")
            try:
                try:
                    self._one_chain = make_fx(log_joint_and_grad)(self.initial[0])
                except RuntimeError as exc:
                    if "_local_scalar_dense" not in str(exc):
                        raise
                    # A tensor read as a Python value: from the data (``int(counts.sum())``)
                    # it is a constant; from a latent, a branch no single recording follows.
                    self._one_chain = _without_value_reads(make_fx(
                        log_joint_and_grad, _error_on_data_dependent_ops=False)(self.initial[0]))
            except Exception as exc:  # recording fails in many ways, all of which mean "don't"
                return _why_not_recorded(exc)
            why = self._batches() if self.chains > 1 else ""
        return why or agrees_with_pyro(self, self._log_joint_and_grad)

    def _batches(self):
        """Make sure the recorded graph runs over several chains: batched by vmap, or failing
        that chain by chain (``""``; or why neither works).

        vmap refuses an in-place update of a tensor the model made (``x[0] = mu``) and an
        update through a boolean mask (``logits[mask] = 0``, as ``Multinomial`` does): the
        graph is then made functional and such updates become ``where``; only then, since
        that decomposes some fused operations (a few ulps)."""
        from torch.fx.experimental.proxy_tensor import make_fx

        attempts = [lambda: None, lambda: setattr(self, "_one_chain", _masked_updates_as_where(
            make_fx(torch.func.functionalize(self._one_chain))(self.initial[0])))]
        for change in attempts:
            try:
                change()
                with torch.no_grad():
                    self._vectorized(self.initial)
                return ""
            except Exception as exc:  # noqa: BLE001 - vmap refuses in several ways
                why = f"{type(exc).__name__}: {str(exc)[:120]}"
        self._batched = False
        log.info("NUTS potential: chains evaluated one by one through the recorded graph (vmap: %s)", why)
        return ""

    def _loop(self, u, grad=True, tolerant=False):
        values, grads = [], []
        for c in range(u.shape[0]):
            params = {}
            for site in self.sites:
                params[site.name] = u[c, site.start:site.stop].reshape(site.unconstrained_shape)
            if tolerant:
                try:
                    value, gradient = self._loop(u[c:c + 1])
                except (RuntimeError, ValueError):
                    value, gradient = u.new_full((1,), torch.inf), torch.zeros_like(u[c:c + 1])
                values.append(value[0])
                grads.append(gradient[0])
                continue
            if grad:
                params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
                with torch.enable_grad():
                    value = self._pyro_potential(params)
                    pieces = torch.autograd.grad(value, [params[s.name] for s in self.sites],
                                                 allow_unused=True)
                grads.append(torch.cat([(g if g is not None else torch.zeros_like(params[s.name]))
                                        .reshape(-1) for g, s in zip(pieces, self.sites)]))
            else:
                with torch.no_grad():
                    value = self._pyro_potential(params)
            values.append(value.detach().reshape(()))
        value = torch.stack(values)
        return value, (torch.stack(grads) if grad else None)

    # ------------------------------------------------------------ choosing a mode
    def _choose(self, mode, compile_hint):
        if mode not in ("auto",) + MODES:
            raise ValueError(f"mode={mode!r}: choose 'auto' or one of {MODES}")
        if mode == "loop":
            return "loop", ""
        reason = self._record()
        if reason:
            if mode != "auto":
                raise ValueError(f"potential mode {mode!r} does not apply: {reason}")
            return "loop", reason
        if mode == "vectorized":
            return "vectorized", ""
        size = len(self._one_chain.graph.nodes)
        if mode == "auto" and size > COMPILE_MAX_OPERATIONS:
            return "vectorized", (f"a graph of {size} operations (an enumerated chain unrolled): compiling it "
                                  "would take minutes")
        backends = [mode] if mode != "auto" else (["compiled", "jit"] if compile_hint else ["jit"])
        reasons = []
        for backend in backends:
            why = self._compile(backend)
            if not why:
                return backend, "; ".join(reasons)
            reasons.append(f"{backend}: {why}")
            if mode != "auto":
                raise ValueError(f"potential mode {mode!r} does not apply: {why}")
        return "vectorized", "; ".join(reasons)

    def _leaf_eager(self, z, r, grad, rho, step, half_step, inverse):
        """One leapfrog step with a diagonal metric, and what NUTS needs of the new point:
        ``(z, r, grad, U, H = U + r^T M^{-1} r / 2, M^{-1} r, rho + r)`` (:func:`~.integrator.leaf`)."""
        return leaf(self._potential_and_grad, z, r, grad, rho, step, half_step, diagonal(inverse))

    def _potential_and_grad(self, u):
        log_joint, grad = self._log_joint_and_grad(u)
        return -log_joint, -grad

    def _compile(self, backend):
        """Record the log joint and its gradient (and the fused leapfrog leaf) as graphs of
        tensor operations, compile them with ``backend`` and check them against eager
        evaluation; ``""`` on success, else why not.

        ``make_fx`` records the batched log joint and its gradient by autograd,
        forward and backward operations together (the handlers run once, here). ``"jit"``:
        ``torch.jit.trace`` + ``freeze`` (fast to build). ``"compiled"``: TorchInductor
        on the leaf's graph, one C++ kernel, seconds to build (far longer with a cold
        FX-graph cache), a call many times cheaper than the TorchScript graph's.

        Tried and not used (RESULTS.md, "Design measurements"): K leapfrog steps
        unrolled into one kernel, with the NUTS block checks applied afterwards; a K-step
        call cost about K times one step, and compiling grows with K.
        """
        from torch.fx.experimental.proxy_tensor import make_fx

        c, z = self.chains, self.initial
        leaf_args = (z, torch.zeros_like(z), torch.zeros_like(z), torch.zeros_like(z),
                     z.new_full((c, 1), 0.1), z.new_full((c, 1), 0.05), torch.ones_like(z))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                # (plain functions: make_fx counts a bound method's ``self`` as an input)
                graph = make_fx(lambda u: self._log_joint_and_grad(u))(z) if backend == "jit" else None
                # Inductor's kernel is recorded straight into its decomposed operations
                decompositions = inductor_decompositions() if backend == "compiled" else None
                leaf = make_fx(lambda z, r, g, rho, step, half, inverse: self._leaf_eager(
                    z, r, g, rho, step, half, inverse), decomposition_table=decompositions)(*leaf_args)
            except Exception as exc:  # tracing fails in many ways, all of which mean "don't"
                return _why_not_recorded(exc)
            try:
                if backend == "jit":
                    with torch.no_grad():
                        graph = torch.jit.freeze(torch.jit.trace(graph, (z,), check_trace=False).eval())
                        leaf = torch.jit.freeze(torch.jit.trace(leaf, leaf_args, check_trace=False).eval())
                else:
                    leaf = inductor_kernel(leaf, leaf_args, check=True)
                    zero, one, no_step = torch.zeros_like(z), torch.ones_like(z), leaf_args[4] * 0

                    def graph(u):  # a step of length 0 from u with zero momentum: U(u), grad U(u)
                        out = leaf(u.contiguous(), zero, zero, zero, no_step, no_step, one)
                        return -out[3], -out[2]
                why = _verify(self, graph, leaf, leaf_args)
            except Unsafe as exc:
                log.warning("NUTS potential: not compiled: %s", exc)
                return str(exc)
            except Exception as exc:
                log.warning("NUTS potential: compiling with %s failed (%s: %s)", backend, type(exc).__name__,
                            str(exc)[:200])
                return f"compiling failed ({type(exc).__name__}: {str(exc)[:120]})"
        if not why:
            self._compiled, self._leaf = graph, leaf
        return why

    def leaf(self, z, r, grad, rho, step, half_step, inverse):
        """The fused leapfrog leaf (see :meth:`_leaf_eager`) for a diagonal metric
        ``inverse (C, D)``; ``None`` where this potential has no compiled one. A point where
        the compiled graph raises (a failed Cholesky) goes through the tolerant eager path."""
        if self._leaf is None:
            return None
        try:
            return self._leaf(z, r, grad, rho, step, half_step, inverse)
        except (RuntimeError, ValueError, AssertionError):
            return leaf(lambda u: self._loop(u, tolerant=True), z, r, grad, rho, step, half_step, diagonal(inverse))


#: Probe points around the initial point: offsets of these scales (unconstrained units),
#: each with both signs, so a Python branch on a latent's sign near the start is crossed.
PROBE_SCALES = (0.1, 1.0, 3.0)


def _verify(potential, graph, leaf, leaf_args):
    """``""`` if the compiled ``graph`` (log joint and gradient) agrees with Pyro's own
    potential (:func:`agrees_with_pyro`) and ``leaf`` with the same step done eagerly,
    else why not."""
    why = agrees_with_pyro(potential, graph)
    if why:
        return why
    tol = 1e-10 if potential.initial.dtype == torch.float64 else 2e-5
    with torch.no_grad():  # the fused leaf against the same arithmetic done eagerly
        got = leaf(*leaf_args)
    with torch.enable_grad():
        expected = potential._leaf_eager(*leaf_args)
    for a, b in zip(got, expected):
        if not close_enough(a, b.detach(), tol):
            return "the compiled leapfrog step disagrees with eager evaluation"
    return ""


def agrees_with_pyro(potential, graph):
    """``""`` if ``graph`` (``(C, D) -> (log joint (C,), gradient (C, D))``) agrees with Pyro's
    own potential at the initial point and at antithetic random probes around it (values and
    gradients, to a few ulps of the working precision), else why not."""
    z = potential.initial
    tol = 1e-10 if z.dtype == torch.float64 else 2e-5
    noise = torch.randn((len(PROBE_SCALES),) + tuple(z.shape), dtype=z.dtype,
                        generator=torch.Generator().manual_seed(1)).to(z.device)
    points = [z] + [z + sign * scale * e for scale, e in zip(PROBE_SCALES, noise) for sign in (1, -1)]
    rows = sorted({0, z.shape[0] - 1})  # the graph is one function batched: two rows suffice
    for k, point in enumerate(points):
        point = point.detach()
        try:
            with torch.no_grad():
                got = graph(point)
            potential_value, potential_grad = potential._loop(point[rows])  # Pyro's own, chain by chain
        except (RuntimeError, ValueError):
            if k == 0:
                raise
            continue  # the model cannot be evaluated there (a failed Cholesky): no evidence
        expected, grad = -potential_value, -potential_grad
        if not torch.isfinite(expected).all() and k:
            continue  # a probe outside the model's reach (eager fails there too): uninformative
        if not (close_enough(got[0][rows], expected, tol) and close_enough(got[1][rows], grad, tol)):
            where = "the initial point" if k == 0 else f"probe {k} (offset scale {PROBE_SCALES[(k - 1) // 2]})"
            return (f"data-dependent control flow: the traced potential disagrees with the model at {where} "
                    f"(max |difference| {float((got[0][rows] - expected).abs().max()):.3g} in value, "
                    f"{float((got[1][rows] - grad).abs().max()):.3g} in gradient)")
    return ""


def _masked_updates_as_where(graph):
    """``graph`` (functional) with every update through a boolean mask of the tensor's own
    shape, ``index_put(x, [mask], v)``, written as ``where(mask, v, x)``, which vmap batches."""
    for node in list(graph.graph.nodes):
        if node.target is not torch.ops.aten.index_put.default or len(node.args) > 3 and node.args[3]:
            continue
        x, indices, values = node.args[:3]
        mask = indices[0] if len(indices) == 1 else None
        mask_val, x_val = getattr(mask, "meta", {}).get("val"), x.meta.get("val")
        if mask_val is None or x_val is None or mask_val.dtype != torch.bool or mask_val.shape != x_val.shape:
            continue
        with graph.graph.inserting_before(node):
            node.replace_all_uses_with(graph.graph.call_function(torch.ops.aten.where.self, (mask, values, x)))
        graph.graph.erase_node(node)
    graph.recompile()
    return graph


def _without_value_reads(graph):
    """``graph`` without its reads of tensors as Python values, whose values the recording
    wrote into the operations that used them (vmap cannot batch such a read): safe where
    the tensor read comes from the data alone; a read of anything computed from the latents
    raises (a ``_local_scalar_dense`` error, as strict recording does)."""
    from_latents = set()
    for node in graph.graph.nodes:
        if node.op == "placeholder" or any(arg in from_latents for arg in node.all_input_nodes):
            from_latents.add(node)
    for node in list(graph.graph.nodes):
        if node.target is torch.ops.aten._local_scalar_dense.default:
            if node in from_latents or node.users:
                raise RuntimeError("_local_scalar_dense: a value computed from the latents read as a Python value")
            graph.graph.erase_node(node)
    graph.recompile()
    return graph


def _why_not_recorded(exc):
    if "_local_scalar_dense" in str(exc):
        return "data-dependent control flow or indexing (a tensor read as a Python value)"
    return f"recording failed ({type(exc).__name__}: {str(exc)[:120]})"


def close_enough(a, b, tol):
    return bool(torch.allclose(a, b, rtol=tol, atol=tol * (1 + float(b.abs().max())), equal_nan=True))


def _layout(program, init, transforms, chains):
    sites, start = [], 0
    for info in program.continuous_sites:
        if info.name not in init:
            continue
        unconstrained = tuple(init[info.name].shape[1:]) if chains > 1 else tuple(init[info.name].shape)
        size = 1
        for n in unconstrained:
            size *= n
        sites.append(FlatSite(info.name, start, start + size, unconstrained, info.shape,
                              info.batch_shape, transforms[info.name].inv))
        start += size
    if chains == 1:
        for name in list(init):
            init[name] = init[name].unsqueeze(0)
    return sites
