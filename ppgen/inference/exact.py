"""Exact inference: enumeration of discrete latents, or a conjugate closed form.

For a model whose latents are all discrete once its continuous global sites are
fixed, variable elimination (Pyro's ``TraceEnum_ELBO`` contraction, with an
empty guide the ELBO *is* the log evidence) gives

- the log evidence :math:`\\log p(x)`,
- the posterior marginal of every discrete site, as probability tables over the
  site's support (last dimension),
- the joint MAP assignment (max-product, ``infer_discrete(temperature=0)``),
- exact joint posterior samples (forward-filter backward-sample,
  ``infer_discrete(temperature=1)``), vectorised over draws.

Models with a closed-form posterior (:class:`~ppgen.model.ExactPosterior`) use it instead.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import TraceEnum_ELBO, infer_discrete

from ..errors import MethodError
from ..model import ExactPosterior
from .likelihood import empty_guide
from .method import Method, RunContext, check_positive_int, start_values
from .program import Program
from .result import Fit


@dataclass(frozen=True)
class Exact(Method):
    """Exact inference: enumeration of discrete latents, or a conjugate closed form.

    Continuous global sites are fixed at ``params`` (a dict of site values, or a
    ``Fit`` whose point estimate is used); for a ``GenerativeModel`` the default
    is its point parameters. ``num_samples`` exact posterior draws are kept. The
    fit's ``extras`` hold ``log_evidence``, ``marginals`` and ``map_assignment``.
    """

    params: Any = None
    num_samples: int = 1000
    name: ClassVar[str] = "exact"
    options: ClassVar[dict[str, str]] = {"num_samples": "num_samples"}
    distributable: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_positive_int("Exact", num_samples=self.num_samples)

    def run(self, program: Program, context: RunContext) -> Fit:
        fixed = self.params
        if isinstance(fixed, Fit):
            fixed = fixed.params
        generative = program.generative
        if fixed is None and generative is not None and not isinstance(generative, ExactPosterior):
            fixed = start_values(program)
        out = run_exact(program, self, params=fixed)
        return Fit(program=program, method=self, seed=context.seed, posterior=out["posterior"],
                   params=out.get("params", dict(fixed or {})), timings={"exact": out["seconds"]},
                   extras={k: out[k] for k in ("log_evidence", "marginals", "map_assignment")})


def _support_table(fn, marginal):
    """Probabilities of each support value, support as the last dimension."""
    support = fn.enumerate_support(expand=False)  # (V, 1, ..., 1) + event shape
    support = support.reshape((support.shape[0],) + (1,) * len(marginal.batch_shape)
                              + tuple(fn.event_shape))
    log_p = marginal.log_prob(support)  # (V,) + batch
    return log_p.exp().movedim(0, -1)


def run_exact(program, method, *, params):
    start = time.perf_counter()
    generative = program.generative
    if isinstance(generative, ExactPosterior):
        return _closed_form(generative, program, method, params, start)
    params = dict(params or {})
    unknown = sorted(set(params) - set(program.latent))
    if unknown:
        raise MethodError(f"Exact(params=...): {unknown} are not latent sites of the model "
                          f"(latent sites: {sorted(program.latent)})")
    free = [s.name for s in program.continuous_sites if s.name not in params]
    if free:
        raise MethodError(
            f"Exact: continuous latent sites {free} cannot be enumerated; fix them with "
            "Exact(params={...}) or Exact(params=a_fit), or use NUTS/SVI")
    discrete = [s.name for s in program.discrete_sites]
    if not discrete:
        raise MethodError("Exact: the model has no discrete latent sites to enumerate")
    model = poutine.condition(program.enumerated_model(), data=params)
    kwargs = program.kwargs
    depth = program.max_plate_nesting
    elbo = TraceEnum_ELBO(max_plate_nesting=depth)
    with torch.no_grad():
        # The fixed sites are observed in the conditioned model: take their prior out.
        fns = poutine.trace(model).get_trace(**kwargs).nodes
        fixed_prior = sum(float(fns[name]["fn"].log_prob(fns[name]["value"]).sum()) for name in params)
        log_evidence = -elbo.loss(model, empty_guide, **kwargs) - fixed_prior
        marginal_dists = elbo.compute_marginals(model, empty_guide, **kwargs)
        marginals = {name: _support_table(fns[name]["fn"], marginal_dists[name])
                     for name in discrete}
        map_trace = poutine.trace(infer_discrete(model, first_available_dim=-depth - 1,
                                                 temperature=0)).get_trace(**kwargs)
        map_assignment = {name: map_trace.nodes[name]["value"] for name in discrete}
        draws = _posterior_samples(model, kwargs, depth, discrete, program, method.num_samples)
    for name, value in params.items():
        draws[name] = torch.as_tensor(value).expand((method.num_samples,) + tuple(torch.as_tensor(value).shape))
    return {"log_evidence": log_evidence, "marginals": marginals,
            "map_assignment": map_assignment,
            "posterior": {k: v.unsqueeze(0) for k, v in draws.items()},
            "seconds": time.perf_counter() - start}


def _closed_form(generative, program, method, params, start):
    """A model's own exact posterior: ``(marginals, sampler, log_evidence[, map_assignment])``.

    A model whose exact posterior is conditional on its parameters (an HMM's
    states) takes ``params``; one whose posterior is over the parameters
    themselves (conjugate models) cannot be given any.
    """
    takes_params = "params" in inspect.signature(generative.exact_posterior).parameters
    if params and not takes_params:
        raise MethodError(f"Exact(params=...): {type(generative).__name__}'s exact posterior is over "
                          "its parameters, which cannot also be fixed; use Exact()")
    extra = {"params": params or None} if takes_params else {}
    marginals, sampler, log_evidence, *rest = generative.exact_posterior(**program.kwargs, **extra)
    draws = {k: v.unsqueeze(0) for k, v in sampler(method.num_samples).items()}
    used = {}
    if takes_params:
        used = {k: v[0, 0] for k, v in draws.items() if k in set(generative.global_sites())}
    return {"log_evidence": float(log_evidence), "marginals": marginals,
            "map_assignment": rest[0] if rest else {}, "posterior": draws, "params": used,
            "seconds": time.perf_counter() - start}


def _posterior_samples(model, kwargs, depth, names, program, num_samples):
    def batched(**kw):
        with pyro.plate("_ppgen_samples", num_samples, dim=-depth - 1):
            return model(**kw)

    sampler = infer_discrete(batched, first_available_dim=-depth - 2, temperature=1)
    trace = poutine.trace(sampler).get_trace(**kwargs)
    return {n: trace.nodes[n]["value"].reshape((num_samples,) + program.latent[n].shape)
            for n in names}
