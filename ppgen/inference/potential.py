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
  gradient recorded once into a TorchScript graph of tensor operations, so the
  handlers do not run again; the graph is checked against the eager function at
  the start and at a second point, and refused (with a logged reason) when
  tracing warned that a tensor became a Python value (data-dependent control
  flow) or the two disagree;
* ``"loop"``: Pyro's own potential, chain by chain: the fallback for models that
  cannot be vectorised over chains (enumerated discrete sites, supports that
  change with the parameters, programs that break under an extra plate).

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

log = logging.getLogger("ppgen")

MODES = ("jit", "vectorized", "loop")
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
    mode : {"auto", "jit", "vectorized", "loop"}
        ``"auto"`` tries ``"jit"``, then ``"vectorized"``, then ``"loop"``.
    init_strategy : callable
        Pyro's initialisation strategy for the starting points.
    """

    def __init__(self, program, chains, mode="auto", init_strategy=None):
        self.program, self.chains = program, chains
        self.model = program.enumerated_model()
        self.nesting = program.max_plate_nesting
        kwargs = {} if init_strategy is None else {"init_strategy": init_strategy}
        init, self._pyro_potential, transforms, _ = initialize_model(
            self.model, model_kwargs=program.kwargs, max_plate_nesting=self.nesting,
            num_chains=chains, **kwargs)
        self.sites = _layout(program, init, transforms, chains)
        self.dim = self.sites[-1].stop if self.sites else 0
        self.initial = self.flatten(init)
        self.mode, self.reason = self._choose(mode)
        log.info("NUTS potential: %s%s", self.mode, f" ({self.reason})" if self.reason else "")

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
            if self.mode == "jit":
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
    def _choose(self, mode):
        if mode not in ("auto",) + MODES:
            raise ValueError(f"mode={mode!r}: choose 'auto' or one of {MODES}")
        if mode == "loop":
            return "loop", ""
        reason = self._cannot_vectorize()
        if reason:
            if mode != "auto":
                raise ValueError(f"potential mode {mode!r} does not apply: {reason}")
            return "loop", reason
        if mode == "vectorized":
            self._fn = self._vectorized
            return "vectorized", ""
        self._fn = self._vectorized
        compiled, why = self._compile()
        if compiled is not None:
            self._compiled = compiled
            return "jit", ""
        if mode == "jit":
            raise ValueError(f"potential mode 'jit' does not apply: {why}")
        return "vectorized", why

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

    def _compile(self):
        """The log joint and its gradient as one graph of tensor operations.

        ``torch.func`` differentiates the batched log joint and ``make_fx`` records
        forward and backward operations together (the handlers run once, here);
        ``torch.jit.trace`` and ``freeze`` turn that into a TorchScript graph with
        the data-only operations folded. Measured on eight schools (one chain):
        about 3x faster than running the handlers, 2x faster than tracing the
        forward pass alone (benchmarks/RESULTS.md, "bench_nuts").
        """
        from torch.fx.experimental.proxy_tensor import make_fx

        def log_joint_and_grad(u):
            grad, log_joint = torch.func.grad_and_value(
                lambda v: (lambda lj: (lj.sum(), lj))(self._vectorized(v)), has_aux=True)(u)
            return log_joint[1], grad

        probe = self.initial + 0.1 * torch.randn(self.initial.shape, dtype=self.initial.dtype,
                                                 generator=torch.Generator().manual_seed(1)).to(self.initial.device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                # jit.trace warns where a tensor becomes a Python value: a branch on a latent.
                torch.jit.trace(self._vectorized, (self.initial,), check_trace=False)
            except Exception as exc:  # tracing fails in many ways, all of which mean "don't"
                return None, f"tracing failed ({type(exc).__name__}: {str(exc)[:120]})"
        dynamic = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)
                   and "Python" in str(w.message)]
        if dynamic:
            return None, f"data-dependent control flow ({str(dynamic[0].message)[:120]})"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                graph = make_fx(log_joint_and_grad)(self.initial)
                with torch.no_grad():
                    compiled = torch.jit.freeze(torch.jit.trace(graph, (self.initial,), check_trace=False).eval())
            except Exception as exc:
                if "_local_scalar_dense" in str(exc):
                    return None, "data-dependent control flow or indexing (a tensor read as a Python value)"
                return None, f"tracing failed ({type(exc).__name__}: {str(exc)[:120]})"
        for point in (self.initial, probe):
            with torch.no_grad():
                got = compiled(point)
            point = point.detach().requires_grad_(True)
            with torch.enable_grad():
                expected = self._vectorized(point)
                (grad,) = torch.autograd.grad(expected.sum(), point)
            if not (torch.allclose(expected.detach(), got[0], rtol=1e-6, atol=1e-8, equal_nan=True)
                    and torch.allclose(grad, got[1], rtol=1e-6, atol=1e-8, equal_nan=True)):
                return None, "the traced potential disagrees with the model away from the trace point"
        return compiled, ""


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
