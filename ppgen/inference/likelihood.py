"""Pointwise log-likelihood of posterior draws, discrete latents summed out exactly.

For a ``GenerativeModel`` this is the model's own ``log_likelihood`` (closed
form, vectorised over draws). For a plain Pyro program each draw's continuous
latents are fixed and the model is traced: an observed site that depends on no
enumerated site contributes its elementwise ``log_prob``; one that does gets
:math:`\\log \\sum_z p(z) p(x \\mid z)` per element of its plates, by Pyro's
tensor-variable-elimination contraction (the same one ``TraceEnum_ELBO`` uses),
so Markov chains and nested plates are handled exactly. Observed sites that share
enumerated latents are scored jointly under the first such site's name.
"""

from __future__ import annotations

import pyro.ops.packed as packed
import pyro.poutine as poutine
import torch
from pyro.infer import TraceEnum_ELBO
from pyro.infer.traceenum_elbo import _compute_model_factors, _find_ordinal
from pyro.ops.contract import contract_to_tensor


def _empty_guide(*args, **kwargs):
    pass


def _one_draw(model, kwargs, elbo, observed):
    model_trace, guide_trace = next(elbo._get_traces(model, _empty_guide, (), kwargs))
    _, log_factors, _, sum_dims, _ = _compute_model_factors(model_trace, guide_trace)
    out, done = {}, set()
    for name in observed:
        site = model_trace.nodes[name]
        if not set(site["packed"]["log_prob"]._pyro_dims) & sum_dims:
            out[name] = site["fn"].log_prob(site["value"])
            continue
        if done:
            continue  # scored jointly with the first enumerated-dependent site
        ordinal = _find_ordinal(model_trace, site)
        value = contract_to_tensor(log_factors, sum_dims, target_ordinal=ordinal)
        value = packed.unpack(value, model_trace.symbol_to_dim)
        # Keep the plate dimensions only: under enumeration the site's batch shape
        # also holds enumeration dimensions, which the contraction summed out.
        batch = site["fn"].batch_shape
        depth = elbo.max_plate_nesting
        shape = batch[len(batch) - depth:] if depth else torch.Size()
        out[name] = value.expand(shape) if value.dim() <= len(shape) else value.reshape(shape)
        done.add(name)
    return out


def pointwise_log_likelihood(program, draws):
    """``{observed site: (S, *batch_shape)}`` for ``S`` draws of the latent sites."""
    generative = program.generative
    if generative is not None:
        params = {k: v for k, v in draws.items() if k in generative.global_sites()}
        data = program.kwargs["data"]
        return {generative.observed_site: generative.log_likelihood(data, params)}
    names = [s.name for s in program.continuous_sites if s.name in draws]
    num = next(iter(draws.values())).shape[0] if draws else 1
    model = program.enumerated_model()
    elbo = TraceEnum_ELBO(max_plate_nesting=program.max_plate_nesting)
    per_draw = []
    with torch.no_grad(), poutine.block():
        for s in range(num):
            conditioned = poutine.condition(model, data={n: draws[n][s] for n in names})
            if program.has_enumeration:
                per_draw.append(_one_draw(conditioned, program.kwargs, elbo, program.observed))
            else:
                trace = poutine.trace(conditioned).get_trace(**program.kwargs)
                per_draw.append({n: trace.nodes[n]["fn"].log_prob(trace.nodes[n]["value"])
                                 for n in program.observed})
    return {n: torch.stack([d[n] for d in per_draw]) for n in per_draw[0]}
