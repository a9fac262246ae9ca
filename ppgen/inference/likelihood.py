"""Pointwise log-likelihood (and log prior) of posterior draws, discrete latents summed out exactly.

For a ``GenerativeModel`` this is the model's own ``log_likelihood`` (closed
form, vectorised over draws). For a plain Pyro program each draw's continuous
latents are fixed and the model is traced as Pyro runs it, one draw:

* an observed site that depends on no enumerated site contributes its elementwise
  :math:`\\log p(x_i \\mid \\theta)`;
* observed sites that depend on enumerated sites get
  :math:`\\log \\sum_z p(z \\mid \\theta) p(x \\mid z, \\theta)` per element of their
  plates, by Pyro's tensor-variable-elimination contraction (the one
  ``TraceEnum_ELBO`` uses), so Markov chains and nested plates are handled exactly;
  sites that share enumerated latents are scored jointly, under the first one's name,
  and data sharing one drawn outside their plates give one joint term;
* a masked site (``obs_mask``, ``poutine.mask``) keeps only the entries its mask
  observes, flattened (:attr:`~ppgen.inference.program.SiteInfo.observed_entries`); a
  site masked out entirely has no pointwise log-likelihood. Scales
  (``poutine.scale``) are not applied: the log-likelihood is per datum.

Many draws are scored at once: one draw's scoring is recorded as a graph of tensor
operations and batched by vmap (:mod:`~ppgen.inference.recording`), checked against
Pyro's own scoring of the first two draws; where that fails, draw by draw.
"""

from __future__ import annotations

import logging

import pyro.ops.packed as packed
import pyro.poutine as poutine
import torch
from pyro.infer import TraceEnum_ELBO
from pyro.infer.traceenum_elbo import _compute_model_factors, _find_ordinal
from pyro.ops.contract import contract_to_tensor
from tqdm.auto import tqdm

from .recording import NotRecorded, batch, record

log = logging.getLogger("ppgen")


def empty_guide(*args, **kwargs):
    pass


def pointwise_log_likelihood(program, draws, vectorize=True, chunk=500, progress=True):
    """``{observed site: (S, *batch_shape)}`` for ``S`` draws of the latent sites (a masked
    site: ``(S, number of observed entries)``)."""
    generative = program.generative
    if generative is not None:
        params = {k: v for k, v in draws.items() if k in generative.global_sites()}
        kwargs = {k: v for k, v in program.kwargs.items() if k != "subsample_size"}
        return {generative.observed_site: generative.log_likelihood(params=params, **kwargs)}
    names = [s.name for s in program.continuous_sites if s.name in draws]
    names += [n for n in program.model_params if n in draws]
    return over_draws(_scorer(program, names), draws, names, "log-likelihood", vectorize, chunk, progress)


def pointwise_log_prior(program, draws, vectorize=True, chunk=500, progress=True):
    """``{latent site: (S, *batch_shape)}``: each latent site's log density under its prior
    at each of ``S`` draws, :math:`\\log p(\\theta_j \\mid \\mathrm{pa}(\\theta_j))` with its
    parents at the same draw, on the site's own (constrained) space: no Jacobian of the
    unconstrained parametrisation. Event dimensions are summed; masks apply, scales not."""
    names = [n for n in program.latent if n in draws]
    if not names:
        return {}
    names += [n for n in program.model_params if n in draws]

    def score(*values):
        values = dict(zip(names, values))
        model = program.with_params(poutine.condition(program.model, data=values), values)
        trace = poutine.trace(model).get_trace(**program.kwargs)
        return {n: trace.nodes[n]["fn"].log_prob(trace.nodes[n]["value"]) for n in names if n in program.latent}

    return over_draws(score, draws, names, "log-prior", vectorize, chunk, progress)


def over_draws(score, draws, names, label, vectorize=True, chunk=500, progress=True):
    """``score`` (the values of ``names`` at one draw -> ``{key: tensor}``) at every draw,
    stacked: batched through one recorded graph where that agrees with Pyro's own run at
    the first two draws, else draw by draw."""
    num = next(iter(draws.values())).shape[0] if draws else 1
    with torch.no_grad(), poutine.block():
        first = [score(*(draws[n][s] for n in names)) for s in range(min(2, num))]
        if vectorize and names and num > 2:
            try:
                return _batched(score, draws, names, num, chunk, first)
            except (NotRecorded, RuntimeError, ValueError, IndexError) as exc:
                log.debug("batched %s not used (%s); scoring draw by draw", label, exc)
        per_draw = first + [score(*(draws[n][s] for n in names))
                            for s in tqdm(range(len(first), num), desc=label, leave=False,
                                          disable=not progress or num < 100)]
    return {k: torch.stack([d[k] for d in per_draw]) for k in per_draw[0]}


def _scorer(program, names):
    """One draw's scoring, ``(value of each site in names) -> {site: log-likelihood}``."""
    model = program.enumerated_model()
    elbo = TraceEnum_ELBO(max_plate_nesting=program.max_plate_nesting)

    def score(*values):
        values = dict(zip(names, values))
        conditioned = program.with_params(poutine.condition(model, data=values), values)
        if program.has_enumeration:
            return _enumerated(program, conditioned, elbo)
        trace = poutine.trace(conditioned).get_trace(**program.kwargs)
        return {n: _observed_entries(program, n, trace.nodes[n]["fn"].log_prob(trace.nodes[n]["value"]))
                for n in program.scored_sites}

    return score


def _batched(score, draws, names, num, chunk, first):
    """Every draw scored through one recorded graph, batched by vmap, in chunks."""
    keys = list(first[0])
    graph = record(lambda *values: tuple(score(*values)[k] for k in keys), *(draws[n][0] for n in names))
    batched, _ = batch(graph, *(draws[n][:2] for n in names))
    parts = [batched(*(draws[n][i:i + chunk] for n in names)) for i in range(0, num, chunk)]
    out = {k: torch.cat([p[j] for p in parts]) for j, k in enumerate(keys)}
    for s, expected in enumerate(first):  # the recording against Pyro's own scoring
        for k, value in expected.items():
            if not torch.allclose(out[k][s], value, rtol=1e-6, atol=1e-8):
                raise ValueError(f"the recorded score of {k!r} disagrees with Pyro's at draw {s}")
    return out


def _observed_entries(program, name, log_prob):
    """``log_prob`` of site ``name`` at the entries its mask observes (all, unmasked)."""
    entries = program.observed[name].observed_entries
    if entries is None:
        return log_prob
    return log_prob.reshape(-1)[entries.to(log_prob.device)]


def _enumerated(program, conditioned, elbo):
    model_trace, guide_trace = next(elbo._get_traces(conditioned, empty_guide, (), program.kwargs))
    _, log_factors, _, sum_dims, _ = _compute_model_factors(model_trace, guide_trace)
    out, joint = {}, False
    for name in program.scored_sites:
        site = model_trace.nodes[name]
        if not set(site["packed"]["log_prob"]._pyro_dims) & sum_dims:
            out[name] = _observed_entries(program, name, site["fn"].log_prob(site["value"]))
            continue
        if joint:
            continue  # scored jointly with the first enumerated-dependent site
        joint = True
        try:
            value = contract_to_tensor(log_factors, sum_dims, target_ordinal=_find_ordinal(model_trace, site))
        except KeyError:
            # The site's data share an enumerated latent drawn outside their plates (one
            # change point for all years): no per-datum terms; one joint term for them all.
            value = contract_to_tensor(log_factors, sum_dims, target_ordinal=frozenset())
            out[name] = packed.unpack(value, model_trace.symbol_to_dim).reshape(())
            continue
        value = packed.unpack(value, model_trace.symbol_to_dim)
        # Keep the plate dimensions only: under enumeration the site's batch shape
        # also holds enumeration dimensions, which the contraction summed out.
        shape = program.observed[name].batch_shape
        value = value.expand(shape) if value.dim() <= len(shape) else value.reshape(shape)
        out[name] = _observed_entries(program, name, value)
    return out
