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
import pyro.poutine as poutine
import torch
from pyro.infer.mcmc.util import initialize_model

from .fallback import Unsafe
from .inductor import inductor_decompositions, inductor_kernel
from .integrator import diagonal, leaf

log = logging.getLogger("ppgen")

MODES = ("compiled", "jit", "vectorized", "loop")
CHAIN_PLATE = "_ppgen_chains"


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
        self._leaf = None
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
            if self.mode in ("jit", "compiled"):
                log_joint, grad = self._compiled(u.detach())
                return -log_joint, -grad
            u = u.detach().requires_grad_(True)
            with torch.enable_grad():
                log_joint = self._fn(u)
                (grad,) = torch.autograd.grad(log_joint.sum(), u)
            return -log_joint.detach(), -grad
        except (RuntimeError, ValueError):
            # A point where the model cannot be evaluated (a failed Cholesky far out in a
            # tail): infinite energy for that chain, which the sampler treats as divergent.
            return self._loop(u.detach(), tolerant=True)

    def log_joint(self, u):
        """``log p(x, T(u)) + log|det J|`` for ``u`` of shape ``(C, D)``, without gradient."""
        if self.mode == "loop":
            return -self._loop(u, grad=False)[0]
        with torch.no_grad():
            return self._fn(u)

    def _vectorized(self, u):
        chains = self.chains  # a Python int: u.shape[0] would be a traced value under jit
        values, log_dets = {}, []
        for site in self.sites:
            piece = u[:, site.start:site.stop].reshape((chains,) + site.unconstrained_shape)
            value = site.to_constrained(piece)
            jacobian = site.to_constrained.log_abs_det_jacobian(piece, value)
            log_dets.append(jacobian.reshape(chains, -1).sum(-1))
            pad = (1,) * (self.nesting - len(site.batch_shape))
            values[site.name] = value.reshape((chains,) + pad + site.shape)
        # Argument checks would turn tensors into Python booleans (and cost time).
        with pyro.validation_enabled(False), pyro.plate(CHAIN_PLATE, chains, dim=-(self.nesting + 1)):
            trace = poutine.trace(poutine.condition(self.model, data=values)).get_trace(
                **self.program.kwargs)
        total = 0.0
        for node in trace.nodes.values():
            if node["type"] != "sample" or type(node["fn"]).__name__ == "_Subsample":
                continue
            with pyro.validation_enabled(False):  # a distribution made inside log_prob checks too
                log_prob = node["fn"].log_prob(node["value"])
            if node["mask"] is not None:
                log_prob = log_prob * node["mask"]
            log_prob = log_prob * node["scale"]
            total = total + _per_chain(log_prob, chains, self.nesting)
        # Site densities first, then the Jacobians, as Pyro adds them: the same
        # rounding, so one chain's potential equals Pyro's bit for bit.
        for jacobian in log_dets:
            total = total + jacobian
        return total

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
        reason = self._cannot_vectorize()
        if reason:
            if mode != "auto":
                raise ValueError(f"potential mode {mode!r} does not apply: {reason}")
            return "loop", reason
        self._fn = self._vectorized
        if mode == "vectorized":
            return "vectorized", ""
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

    def _cannot_vectorize(self):
        if self.program.has_enumeration:
            return "discrete sites are summed out by Pyro's enumeration, chain by chain"
        if not self.sites:
            return "no continuous latent sites"
        try:
            with torch.no_grad():
                batched = self._vectorized(self.initial)
                single = -self._loop(self.initial, grad=False)[0]
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            return f"the model does not run under an extra plate over chains ({type(exc).__name__}: {exc})"
        if not torch.allclose(batched, single, rtol=1e-5, atol=1e-5 * (1 + single.abs().max())):
            return "the model's log density differs under an extra plate over chains (a site ignores plates)"
        return ""

    def _log_joint_and_grad(self, u):
        # Autograd as in eager evaluation (not torch.func, whose transforms decompose some
        # operations): make_fx records the very operations value_and_grad runs, so the
        # graph's numbers equal Pyro's bit for bit where the compiler keeps them apart.
        u = u.detach().requires_grad_(True)
        with torch.enable_grad():
            log_joint = self._vectorized(u)
            (grad,) = torch.autograd.grad(log_joint.sum(), u)
        return log_joint.detach(), grad

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
                if "_local_scalar_dense" in str(exc):
                    return "data-dependent control flow or indexing (a tensor read as a Python value)"
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
    """``""`` if the compiled ``graph`` (log joint and gradient) and ``leaf`` agree with eager
    evaluation of the model at the initial point and at antithetic random probes around it
    (values and gradients, to a few ulps of the working precision), else why not."""
    z = potential.initial
    tol = 1e-10 if z.dtype == torch.float64 else 2e-5
    noise = torch.randn((len(PROBE_SCALES),) + tuple(z.shape), dtype=z.dtype,
                        generator=torch.Generator().manual_seed(1)).to(z.device)
    points = [z] + [z + sign * scale * e for scale, e in zip(PROBE_SCALES, noise) for sign in (1, -1)]
    for k, point in enumerate(points):
        point = point.detach().requires_grad_(True)
        try:
            with torch.no_grad():
                got = graph(point.detach())
            with torch.enable_grad():
                expected = potential._vectorized(point)
                (grad,) = torch.autograd.grad(expected.sum(), point)
        except (RuntimeError, ValueError):
            if k == 0:
                raise
            continue  # the model cannot be evaluated there (a failed Cholesky): no evidence
        expected = expected.detach()
        if not torch.isfinite(expected).all() and k:
            continue  # a probe outside the model's reach (eager fails there too): uninformative
        if not (close_enough(got[0], expected, tol) and close_enough(got[1], grad, tol)):
            where = "the initial point" if k == 0 else f"probe {k} (offset scale {PROBE_SCALES[(k - 1) // 2]})"
            return (f"data-dependent control flow: the traced potential disagrees with the model at {where} "
                    f"(max |difference| {float((got[0] - expected).abs().max()):.3g} in value, "
                    f"{float((got[1] - grad).abs().max()):.3g} in gradient)")
    with torch.no_grad():  # the fused leaf against the same arithmetic done eagerly
        got = leaf(*leaf_args)
    with torch.enable_grad():
        expected = potential._leaf_eager(*leaf_args)
    for a, b in zip(got, expected):
        if not close_enough(a, b.detach(), tol):
            return "the compiled leapfrog step disagrees with eager evaluation"
    return ""


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


def _per_chain(log_prob, chains, nesting):
    """Sum a site's log-density over everything but the chain dimension (sites run
    inside the chain plate, so their log-densities carry it, of size 1 or ``chains``)."""
    depth = nesting + 1
    if log_prob.dim() < depth:
        return log_prob.sum().expand(chains)
    chain_dim = log_prob.dim() - depth
    dims = [d for d in range(log_prob.dim()) if d != chain_dim]
    return (log_prob.sum(dims) if dims else log_prob).expand(chains)
