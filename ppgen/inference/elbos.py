"""Importance-weighted bounds with one weight per datum: IWAE and Renyi.

Pyro's ``RenyiELBO`` weights a whole trace at once: with a plate of ``B`` data
points it bounds :math:`\\log p(x_1, \\dots, x_B)` through
:math:`\\log \\frac1K \\sum_k \\prod_i w_{ik}`, a bound that loosens with ``B``.
A VAE's bound is per datum (Burda et al. 2016; Li and Turner 2016):

.. math::

    \\mathcal{L}_\\alpha = \\sum_i \\frac{1}{1-\\alpha}
        \\log \\frac1K \\sum_{k=1}^K w_{ik}^{1-\\alpha}, \\qquad
    \\log w_{ik} = \\log p(x_i, z_{ik}) - \\log q(z_{ik} \\mid x_i),

with :math:`\\alpha = 0` the IWAE bound. Every latent site must lie inside the
data plate (local latents, as in an amortised guide); a program without that
plate is one datum. Under a subsampled plate the per-datum bounds are scaled by
``N / B``; any other scale on a site (a ``beta`` on the KL term) weights that
site's log-density inside :math:`\\log w`. Gradients are reparameterised.
"""

from __future__ import annotations

import math

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import prune_subsample_sites

from ..errors import MethodError


class PerDatumRenyi:
    """The per-datum Renyi bound of order ``alpha`` (IWAE for ``alpha = 0``).

    Parameters
    ----------
    alpha : float, not 1
    num_particles : int
        ``K``, samples per datum (vectorised).
    max_plate_nesting : int
    data_plate : str, optional
        The plate whose elements are the data points; None: the whole program
        is one datum.
    """

    def __init__(self, alpha=0.0, num_particles=2, max_plate_nesting=1, data_plate=None):
        if alpha == 1:
            raise MethodError("renyi_alpha=1 is the ordinary ELBO; use elbo='trace'")
        self.alpha, self.num_particles = float(alpha), int(num_particles)
        self.max_plate_nesting, self.data_plate = max_plate_nesting, data_plate

    def _traces(self, model, guide, kwargs):
        particles = pyro.plate("_ppgen_particles", self.num_particles, dim=-self.max_plate_nesting - 1)
        with particles:
            guide_trace = poutine.trace(guide).get_trace(**kwargs)
        with particles:
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(**kwargs)
        return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)

    def _site_weights(self, site, sign, weights):
        fn, value = site["fn"], site["value"]
        log_prob = fn.log_prob(value)
        if site["mask"] is not None:
            log_prob = log_prob * site["mask"]
        frames = [f for f in site["cond_indep_stack"] if f.vectorized and f.name != "_ppgen_particles"]
        data = [f for f in frames if f.name == self.data_plate]
        plate_scale = 1.0
        if data:
            frame = data[0]
            plate_scale = frame.size / log_prob.shape[frame.dim] if log_prob.dim() >= -frame.dim else 1.0
        elif self.data_plate is not None and not site["is_observed"]:
            raise MethodError(f"SVI(elbo='iwae'/'renyi'): latent site {site['name']!r} is outside the "
                              f"data plate {self.data_plate!r}; per-datum importance weights need "
                              "local latents only (use elbo='trace' for global sites)")
        log_prob = log_prob * (site["scale"] / plate_scale)
        # Sum every dimension but the particles' and the data plate's.
        depth = self.max_plate_nesting + 1
        log_prob = log_prob.reshape((1,) * max(depth - log_prob.dim(), 0) + log_prob.shape)
        keep = {log_prob.dim() - depth}
        if data:
            keep.add(log_prob.dim() + data[0].dim)
        dims = [d for d in range(log_prob.dim()) if d not in keep]
        summed = log_prob.sum(dims, keepdim=True) if dims else log_prob  # sum([]) would sum all
        summed = summed.reshape(summed.shape[0], -1)  # (K or 1, B or 1)
        weights.append((sign * summed, plate_scale))

    def differentiable_loss(self, model, guide, **kwargs):
        model_trace, guide_trace = self._traces(model, guide, kwargs)
        weights = []
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                self._site_weights(site, 1.0, weights)
        for site in guide_trace.nodes.values():
            if site["type"] == "sample" and not site["is_observed"]:
                if not site["fn"].has_rsample:
                    raise MethodError(f"SVI(elbo='iwae'/'renyi'): guide site {site['name']!r} is not "
                                      "reparameterisable")
                self._site_weights(site, -1.0, weights)
        log_w = sum(w for w, _ in weights)
        log_w = log_w.expand(self.num_particles, log_w.shape[1])
        scale = max(s for _, s in weights)
        one_minus = 1.0 - self.alpha
        bound = (torch.logsumexp(one_minus * log_w, 0) - math.log(self.num_particles)) / one_minus
        return -scale * bound.sum()

    def loss(self, model, guide, **kwargs):
        with torch.no_grad():
            return self.differentiable_loss(model, guide, **kwargs).item()


class ModelObjective:
    """A family's own training loss in place of an ELBO.

    Some families train on a surrogate of their bound: a diffusion model on the
    noise-prediction loss, a reweighting of its variational bound (Ho et al.
    2020). Such a family defines ``training_objective(data=..., subsample_size=...)``,
    a Pyro program that opens the model's data plate (so minibatches are drawn the
    same way as for the ELBO) and returns the scalar loss to minimise, summed over
    the data set like a negative ELBO. ``SVI`` uses it when ``elbo`` is not given;
    ``elbo="trace"`` still optimises the true bound on the model/guide pair.
    """

    def __init__(self, program):
        self.program = program

    def differentiable_loss(self, model, guide, **kwargs):
        # ``model`` is ``self.program``, possibly wrapped to fix the minibatch.
        return model(**kwargs)

    def loss(self, model, guide, **kwargs):
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, **kwargs))


class ReparamTrace_ELBO:
    """Pyro's ``Trace_ELBO`` with one particle for a guide whose every latent site is
    reparameterised: :math:`-(\\log p(x, z) - \\log q(z))` at one draw :math:`z \\sim q`,
    the same number and the same gradient (the score-function terms of ``Trace_ELBO``'s
    surrogate are zero for such sites), without its per-step copies of both traces
    (``prune_subsample_sites``), score parts and ``item`` synchronisation: the part of a
    VAE's training step spent outside the network (``benchmarks/bench_vae.py``).

    A guide with a site that cannot be reparameterised makes every later call use
    ``fallback`` (a ``Trace_ELBO``), decided on the first trace that shows it.
    """

    def __init__(self, fallback):
        self.fallback, self.reparameterised = fallback, True

    def differentiable_loss(self, model, guide, *args, **kwargs):
        if not self.reparameterised:
            return self.fallback.differentiable_loss(model, guide, *args, **kwargs)
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        latent = [site for site in guide_trace.nodes.values() if _is_latent(site)]
        if not all(getattr(site["fn"], "has_rsample", False) for site in latent):
            self.reparameterised = False
            return self.fallback.differentiable_loss(model, guide, *args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        model_sites = [site for site in model_trace.nodes.values()
                       if site["type"] == "sample" and not _is_subsample(site)]
        return _log_density(latent) - _log_density(model_sites)

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))


def _is_subsample(site):
    return type(site["fn"]).__name__ == "_Subsample"


def _is_latent(site):
    return site["type"] == "sample" and not site["is_observed"] and not _is_subsample(site)


def _log_density(sites):
    total = 0.0
    for site in sites:
        log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
        total = total + scale_and_mask(log_p, site["scale"], site["mask"]).sum()
    return total
