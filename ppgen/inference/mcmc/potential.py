"""A Pyro program as a potential over one flat unconstrained vector, for many chains.

HMC and NUTS need :math:`U(u) = -\\log p(x, T(u)) - \\log|\\det J_T(u)|` and its
gradient at every leapfrog step, where :math:`T` maps the unconstrained vector
:math:`u \\in R^D` to the model's latent sites (Pyro's ``biject_to`` of each
site's support). Pyro evaluates it by running the model under its effect
handlers every time, for one chain. :class:`Potential` records Pyro's own one-chain
potential and its gradient once (:mod:`ppgen.inference.recording`: enumerated
discrete sites summed out, ``pyro.markov``, masks, scales, vector sites without
plates, all as Pyro computes them) and evaluates the recording for a batch of ``C``
chains, ``u`` of shape ``(C, D)``, batched by ``torch.func.vmap``:

* ``"vectorized"``: the recorded graph, run operation by operation;
* ``"jit"`` (the default for short runs): the graph (and a fused leapfrog leaf:
  momentum half-step, position step, potential and gradient, half-step,
  Hamiltonian) frozen by TorchScript;
* ``"compiled"``: the fused leaf compiled by TorchInductor into one C++ kernel
  (:func:`inductor_kernel`: no TorchDynamo guards or wrappers per call; the
  potential alone is that leaf with a zero step; the graph first rewritten by
  :mod:`ppgen.inference.mcmc.broadcasts`, broadcast work done once and a mixture's small
  component dimension split so the loops vectorise along the data): seconds to
  build, and a leapfrog step many times faster than ``"jit"``'s (``benchmarks/bench_leaf.py``);
  ``"auto"`` picks it only for long runs (``compile_hint``), and neither for a graph of
  more than :data:`COMPILE_MAX_OPERATIONS`;
* ``"loop"``: Pyro's own potential, chain by chain: the fallback where recording
  fails (a Python branch on a latent's value).

A recorded graph is only used once it agrees with Pyro's own potential (values and
gradients, to ~1e-10 relative in float64, 2e-5 in float32) at the initial point and
at six antithetic random probes around it (offsets of scale 0.1, 1 and 3 in
unconstrained units, each with both signs); otherwise the next mode is used and the
reason logged. Recording itself refuses any tensor computed from the latents being
read as a Python value (``bool(x > 0)``, ``x.item()``, data-dependent indexing);
Python values read from the *data* (shape checks, ``int(counts.sum())``) are
constants and fine. Residual risk: a branch the recorder cannot see and that no probe
crosses (state outside the tensors, e.g. a Python counter) would make the graph
silently follow the initial point's branch; argument validation is switched off
while recording (checks do not change values, only raise).

The mode actually used, and why a faster one was refused, is in ``.mode`` and
``.reason``.
"""

from __future__ import annotations

import logging
import warnings

import torch
from pyro.infer.mcmc.util import initialize_model

from ..recording import NotRecorded, batch, record
from .compile_cache import use_private_cache
from .fallback import Unsafe
from .inductor import inductor_decompositions, inductor_kernel
from .integrator import diagonal, leaf
from .layout import lay_out

log = logging.getLogger("ppgen")

MODES = ("compiled", "jit", "vectorized", "loop")

#: ``"auto"`` compiles a recorded graph of at most this many operations; a larger one (Pyro's
#: enumeration of a long ``pyro.markov`` chain, unrolled step by step) runs as recorded: its
#: TorchScript build takes over a minute at 15,000 operations, TorchInductor's far longer.
COMPILE_MAX_OPERATIONS = 4000


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
    build : bool
        Record and compile now; ``False`` stops after the layout and the starting point
        (the potential is then Pyro's own, ``"loop"``), for the caller to :meth:`adopt` a
        kernel built before, or :meth:`build`.
    """

    def __init__(self, program, chains, mode="auto", init_strategy=None, compile_hint=False, build=True):
        if mode not in ("auto",) + MODES:
            raise ValueError(f"mode={mode!r}: choose 'auto' or one of {MODES}")
        self.program, self.chains = program, chains
        self._leaf, self._one_chain, self._backends = None, None, []
        self._asked, self._hint = mode, compile_hint
        self.mode, self.reason = "loop", "not built yet"
        self.model = program.enumerated_model()
        self.nesting = program.max_plate_nesting
        self._init_kwargs = {} if init_strategy is None else {"init_strategy": init_strategy}
        init, self._pyro_potential, transforms, _ = initialize_model(
            self.model, model_kwargs=program.kwargs, max_plate_nesting=self.nesting,
            num_chains=chains, **self._init_kwargs)
        self.sites = lay_out(program, init, transforms, chains)
        self.dim = self.sites[-1].stop if self.sites else 0
        self.initial = self.flatten(init)
        if build:
            self.build()

    @property
    def may_compile(self):
        """Whether :meth:`build` would try TorchInductor (the mode asked for, or ``"auto"``
        in a long run), before anything is recorded."""
        return self._asked == "compiled" or (self._asked == "auto" and self._hint)

    def build(self):
        """Record Pyro's potential and compile it with the first backend that applies and
        passes the checks (else the recording runs as it is, ``"vectorized"``, or Pyro's
        own potential where nothing is recorded, ``"loop"``)."""
        self.mode, self.reason = self._choose(self._asked, self._hint)
        reasons = [self.reason] if self.reason else []
        for backend in self._backends:
            why = self._compile(backend)
            if not why:
                self.mode = backend
                break
            reasons.append(f"{backend}: {why}")
            if self._explicit:
                raise ValueError(f"potential mode {backend!r} does not apply: {why}")
        self._backends = []
        self.reason = "; ".join(reasons)
        log.info("NUTS potential: %s%s", self.mode, f" ({self.reason})" if self.reason else "")

    def adopt(self, log_joint_and_grad, leaf):
        """Use a kernel built by an earlier process as the compiled graph and leaf, once it
        agrees with Pyro's potential at the probe points as a fresh compile must
        (:func:`agrees_with_pyro`); ``""``, else why not (nothing changes then)."""
        why = agrees_with_pyro(self, log_joint_and_grad)
        if not why:
            self._compiled, self._leaf, self.mode, self.reason, self._backends = \
                log_joint_and_grad, leaf, "compiled", "", []
            log.info("NUTS potential: compiled (kept from an earlier run)")
        return why

    def starting_points(self, chains):
        """``(chains, D)`` starting points drawn as :attr:`initial` was (Pyro's
        ``initialize_model`` with the same strategy, from Pyro's random state now)."""
        init = initialize_model(self.model, model_kwargs=self.program.kwargs, max_plate_nesting=self.nesting,
                                num_chains=chains, **self._init_kwargs)[0]
        return torch.cat([s.sampled(init[s.name].reshape(chains, -1)) for s in self.sites], -1).detach()

    # ------------------------------------------------------------ layout
    def flatten(self, values):
        """``{site: (C, *unconstrained shape)}`` -> ``(C, D)``."""
        return torch.cat([s.sampled(values[s.name].reshape(self.chains, -1)) for s in self.sites], -1).detach()

    def unflatten(self, u):
        """``(..., D)`` unconstrained -> ``{site: (..., *constrained shape)}``."""
        lead = u.shape[:-1]
        out = {}
        for site in self.sites:
            piece = site.full(u[..., site.start:site.stop])
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
        if self._one_chain is None:  # not recorded (yet): Pyro's own, chain by chain
            value, grad = self._loop(u)
            return -value, -grad
        if self.chains == 1:  # Pyro's operations as they are: one chain's potential bit for bit
            value, grad = self._one_chain(u[0])
            return value.unsqueeze(0), grad.unsqueeze(0)
        return self._batched(u)

    def _record(self):
        """Record Pyro's own one-chain potential and its gradient (enumeration,
        ``pyro.markov``, masks and scales included; :mod:`~ppgen.inference.recording`),
        ``(D,) -> ((), (D,))``, batched over chains; ``""`` on success, else why not."""
        if not self.sites:
            return "no continuous latent sites"
        sites, potential = self.sites, self._pyro_potential

        def log_joint_and_grad(u):
            # Autograd as in eager evaluation (not torch.func's transforms, which decompose
            # some operations): the graph holds the very operations Pyro's potential runs.
            u = u.detach().requires_grad_(True)
            with torch.enable_grad():
                value = -potential({s.name: s.full(u[s.start:s.stop]) for s in sites})
                (grad,) = torch.autograd.grad(value, u)
            return value.detach(), grad

        try:
            self._one_chain = record(log_joint_and_grad, self.initial[0])
        except NotRecorded as exc:
            return str(exc)
        if self.chains > 1:
            self._batched, how = batch(self._one_chain, self.initial)
            if how == "loop":
                log.info("NUTS potential: vmap cannot batch the recorded graph; chains evaluated one by one")
        return agrees_with_pyro(self, self._log_joint_and_grad)

    def _loop(self, u, grad=True, tolerant=False):
        values, grads = [], []
        for c in range(u.shape[0]):
            params = {}
            for site in self.sites:
                params[site.name] = site.full(u[c, site.start:site.stop])
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
                grads.append(torch.cat([s.sampled((g if g is not None else torch.zeros_like(params[s.name]))
                                                  .reshape(-1)) for g, s in zip(pieces, self.sites)]))
            else:
                with torch.no_grad():
                    value = self._pyro_potential(params)
            values.append(value.detach().reshape(()))
        value = torch.stack(values)
        return value, (torch.stack(grads) if grad else None)

    # ------------------------------------------------------------ choosing a mode
    def _choose(self, mode, compile_hint):
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
        self._explicit = mode != "auto"
        self._backends = [mode] if mode != "auto" else (["compiled", "jit"] if compile_hint else ["jit"])
        return "vectorized", ""

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
        if backend == "compiled":
            try:  # before TorchInductor writes anything
                use_private_cache()
            except Unsafe as exc:
                log.warning("NUTS potential: not compiled: %s", exc)
                return str(exc)
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
                return f"tracing failed ({type(exc).__name__}: {str(exc)[:120]})"
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


def close_enough(a, b, tol):
    return bool(torch.allclose(a, b, rtol=tol, atol=tol * (1 + float(b.abs().max())), equal_nan=True))
