"""Pointwise log-likelihood of posterior draws, discrete latents summed out exactly.

For a ``GenerativeModel`` this is the model's own ``log_likelihood`` (closed
form, vectorised over draws). For a plain Pyro program each draw's continuous
latents are fixed and the model is traced: an observed site that depends on no
enumerated site contributes its elementwise ``log_prob``; one that does gets
:math:`\\log \\sum_z p(z) p(x \\mid z)` per element of its plates, by Pyro's
tensor-variable-elimination contraction (the same one ``TraceEnum_ELBO`` uses),
so Markov chains and nested plates are handled exactly. Draws are scored in
chunks under a plate when the program vectorises (checked against two draws
scored one by one), else one at a time. Observed sites that share
enumerated latents are scored jointly under the first such site's name.
"""

from __future__ import annotations

import logging

import pyro
import pyro.ops.packed as packed
import pyro.poutine as poutine
import torch
from pyro.infer import TraceEnum_ELBO
from pyro.infer.traceenum_elbo import _compute_model_factors, _find_ordinal
from pyro.ops.contract import contract_to_tensor
from tqdm.auto import tqdm

log = logging.getLogger("ppgen")


def empty_guide(*args, **kwargs):
    pass


def _one_draw(model, kwargs, elbo, observed):
    model_trace, guide_trace = next(elbo._get_traces(model, empty_guide, (), kwargs))
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


def pointwise_log_likelihood(program, draws, vectorize=True, chunk=500):
    """``{observed site: (S, *batch_shape)}`` for ``S`` draws of the latent sites.

    Plain programs are scored for ``chunk`` draws at once under a plate over
    draws; a program that cannot be vectorised that way is scored draw by draw.
    """
    generative = program.generative
    if generative is not None:
        params = {k: v for k, v in draws.items() if k in generative.global_sites()}
        kwargs = {k: v for k, v in program.kwargs.items() if k != "subsample_size"}
        return {generative.observed_site: generative.log_likelihood(params=params, **kwargs)}
    names = [s.name for s in program.continuous_sites if s.name in draws]
    num = next(iter(draws.values())).shape[0] if draws else 1
    with torch.no_grad(), poutine.block():
        if vectorize and names:
            try:
                parts = [_vectorized(program, {n: draws[n][i:i + chunk] for n in names})
                         for i in range(0, num, chunk)]
                fast = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
                # A program whose tensors are not all in plates can broadcast the draws
                # plate against its data without failing: check two draws the slow way.
                check = _draw_by_draw(program, {n: draws[n][:2] for n in names}, names, min(2, num))
                if all(torch.allclose(fast[k][:2], v, rtol=1e-5, atol=1e-6) for k, v in check.items()):
                    return fast
                log.debug("vectorised log-likelihood disagrees with the draw-by-draw one")
            except (RuntimeError, ValueError, IndexError, NotImplementedError) as exc:
                log.debug("vectorised log-likelihood failed (%s); scoring draw by draw", exc)
        return _draw_by_draw(program, draws, names, num)


def _vectorized(program, draws):
    num = next(iter(draws.values())).shape[0]
    depth = program.max_plate_nesting
    values = {}
    for name, value in draws.items():
        site = program.latent[name]
        pad = (1,) * (depth - len(site.batch_shape))
        values[name] = value.reshape((num,) + pad + site.shape)
    model = poutine.condition(program.enumerated_model(), data=values)

    def batched(**kwargs):
        with pyro.plate("_ppgen_draws", num, dim=-depth - 1):
            return model(**kwargs)

    elbo = TraceEnum_ELBO(max_plate_nesting=depth + 1)
    if program.has_enumeration:
        scores = _one_draw(batched, program.kwargs, elbo, program.observed)
    else:
        trace = poutine.trace(batched).get_trace(**program.kwargs)
        scores = {n: trace.nodes[n]["fn"].log_prob(trace.nodes[n]["value"]) for n in program.observed}
    out = {}
    for name, value in scores.items():
        shape = program.observed[name].batch_shape
        out[name] = value.reshape((-1,) + shape).expand((num,) + shape)
    return out


def _draw_by_draw(program, draws, names, num):
    model = program.enumerated_model()
    elbo = TraceEnum_ELBO(max_plate_nesting=program.max_plate_nesting)
    per_draw = []
    for s in tqdm(range(num), desc="log-likelihood", leave=False, disable=num < 100):
        conditioned = poutine.condition(model, data={n: draws[n][s] for n in names})
        if program.has_enumeration:
            per_draw.append(_one_draw(conditioned, program.kwargs, elbo, program.observed))
        else:
            trace = poutine.trace(conditioned).get_trace(**program.kwargs)
            per_draw.append({n: trace.nodes[n]["fn"].log_prob(trace.nodes[n]["value"])
                             for n in program.observed})
    return {n: torch.stack([d[n] for d in per_draw]) for n in per_draw[0]}
