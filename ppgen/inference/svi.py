"""Stochastic variational inference (and gradient MAP) for any Pyro program.

Parameters are gathered from the model and guide modules (module-local, see
DESIGN.md) and from Pyro's param store (``pyro.param`` in plain programs), and
optimised with ``torch.optim.Adam`` on their unconstrained values, by the training
loop of :mod:`ppgen.inference.training` (checkpoints hold the parameters, the
optimiser, the RNG state and the loss history). Data-parallel training hands
:func:`run_svi` a ``parallel`` helper (:mod:`ppgen.inference.data_parallel`) that
shards the minibatches and all-reduces the gradients inside the same update.

A ``GenerativeModel`` with training state of its own (:class:`ppgen.model.TrainingState`,
a diffusion model's moving average of its weights) has its ``after_step()`` called
after every optimiser step, and its ``training_state()`` checkpointed.
"""

from __future__ import annotations

import logging
import math
import time

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import (
    AutoDelta,
    AutoMultivariateNormal,
    AutoNormal,
    init_to_median,
    init_to_value,
)

from ..errors import MethodError
from ..model import OwnObjective, TrainingState
from .elbos import ModelObjective, PerDatumRenyi, ReparamTrace_ELBO
from .guides import AutoFlow
from .training import Checkpoints, train

log = logging.getLogger("ppgen")

AUTOGUIDES = {"normal": AutoNormal, "mvn": AutoMultivariateNormal, "delta": AutoDelta,
              "flow": AutoFlow}


def build_guide(program, method, init_values=None):
    """The guide: the user's, the model's own, or an autoguide over the latents."""
    if program.guide is not None:
        return program.guide
    if callable(method.guide):
        return method.guide
    if not program.continuous_sites:
        return lambda *args, **kwargs: None
    from .program import init_to_unconstrained_uniform  # ImproperUniform sites have no median

    init = init_to_median(fallback=init_to_unconstrained_uniform)
    if init_values:
        init = init_to_value(values=init_values, fallback=init)
    model = poutine.block(program.enumerated_model(),
                          hide=[s.name for s in program.discrete_sites])
    return AUTOGUIDES[method.guide](model, init_loc_fn=init)


def choose_elbo(program, method):
    if method.elbo is None and isinstance(program.generative, OwnObjective):
        return ModelObjective(program.generative.training_objective)
    name = method.elbo or ("enum" if program.has_enumeration else "trace")
    kwargs = {"num_particles": method.num_particles,
              "vectorize_particles": method.num_particles > 1}
    if name == "enum":
        return TraceEnum_ELBO(max_plate_nesting=program.max_plate_nesting, **kwargs)
    if name in ("iwae", "renyi"):
        if program.has_enumeration:
            raise MethodError(f"SVI(elbo={name!r}) cannot sum out discrete sites; use elbo='enum'")
        generative = program.generative
        return PerDatumRenyi(alpha=0.0 if name == "iwae" else method.renyi_alpha,
                             num_particles=method.num_particles,
                             max_plate_nesting=max(program.max_plate_nesting, 1),
                             data_plate=generative.data_plate if generative is not None else None)
    if program.has_enumeration and program.guide is None and not callable(method.guide):
        raise MethodError(f"SVI(elbo={name!r}) cannot sum out the discrete sites "
                          f"{[s.name for s in program.discrete_sites]}; use elbo='enum'")
    elbo = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO,
            "graph": TraceGraph_ELBO}[name](max_plate_nesting=program.max_plate_nesting, **kwargs)
    if name == "trace" and method.num_particles == 1 and program.generative is not None \
            and not program.has_enumeration:
        # a ppgen model (its data checked on the way in, Pyro's validation off in the loop)
        return ReparamTrace_ELBO(fallback=elbo)
    return elbo


class Objective:
    """The loss and the parameters it depends on, by stable name.

    For a ``GenerativeModel`` fitted in minibatches the batches are drawn here,
    a fresh permutation of the data per epoch (every datum once per epoch, as
    in a plain PyTorch loop), and handed to the model's and guide's data plate
    by conditioning its subsample site; its position is part of the loop state,
    so a resumed run draws the same batches. Pyro's argument validation is off
    in the loop for ``GenerativeModel``s: they check their data on the way in,
    and a loss that goes bad stops the loop anyway.
    """

    def __init__(self, program, guide, elbo, kwargs, batch_size=None):
        self.model = elbo.program if isinstance(elbo, ModelObjective) else program.enumerated_model()
        self.modules = {"model": program.generative, "guide": guide}
        self.guide, self.elbo, self.kwargs = guide, elbo, kwargs
        generative = program.generative
        self.validate = generative is None
        self.plate = generative.data_plate if generative is not None and batch_size else None
        self.batch_size = batch_size
        self.size = len(program.kwargs["data"]) if self.plate else None
        if self.size is not None and batch_size > self.size:
            raise MethodError(f"batch_size={batch_size} is larger than the data ({self.size} rows); "
                              f"use at most {self.size}, or None for full batches")
        self.store_params = {}

    def _batch(self, state):
        """The next minibatch's indices; a new permutation when the epoch is used up."""
        batches = state.setdefault("batches", {"order": None, "cursor": 0})
        if batches["order"] is None or batches["cursor"] + self.batch_size > self.size:
            batches["order"], batches["cursor"] = torch.randperm(self.size), 0
        start = batches["cursor"]
        batches["cursor"] = start + self.batch_size
        return batches["order"][start:start + self.batch_size]

    def loss(self, kwargs=None, differentiable=True, state=None, capture=False):
        compute = self.elbo.differentiable_loss if differentiable else self.elbo.loss
        model, guide = self.model, self.guide
        if self.plate is not None and kwargs is None and state is not None:
            idx = self._batch(state).to(self.kwargs["data"].device)
            model = poutine.condition(model, data={self.plate: idx})
            guide = poutine.condition(guide, data={self.plate: idx})
        with pyro.validation_enabled(self.validate):
            if not capture:
                return compute(model, guide, **(kwargs or self.kwargs))
            with poutine.trace(param_only=True) as trace:
                loss = compute(model, guide, **(kwargs or self.kwargs))
        # Param-store values carry .unconstrained(); module parameters are themselves leaves.
        self.store_params = {name: getattr(site["value"], "unconstrained", lambda v=site["value"]: v)()
                             for name, site in trace.trace.nodes.items()}
        return loss

    def where_not_finite(self, params):
        """Which sites and parameters are not finite now: ``" at ..."``, or ``""`` if none
        is found (the guide's draws and the model's densities at them, one pass)."""
        sites = []
        try:
            with pyro.validation_enabled(False), torch.no_grad():
                guide_trace = poutine.trace(self.guide).get_trace(**self.kwargs)
                model_trace = poutine.trace(poutine.replay(self.model, trace=guide_trace)).get_trace(**self.kwargs)
            for role, trace in (("guide", guide_trace), ("model", model_trace)):
                for name, site in trace.nodes.items():
                    if site["type"] != "sample" or name in sites:
                        continue
                    value = site["value"]
                    if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                        sites.append(f"{role} site {name!r} (its value)")
                    elif not bool(torch.isfinite(site["fn"].log_prob(value)).all()):
                        sites.append(f"{role} site {name!r} (its log density)")
        except Exception:  # noqa: BLE001 - a diagnosis that fails must not hide the error it explains
            pass
        bad = [name for name, value in params.items() if not bool(torch.isfinite(value).all())]
        parts = ([f"not finite at {', '.join(sites[:4])}"] if sites else []) + \
            ([f"parameters not finite: {', '.join(bad[:4])}"] if bad else [])
        return f" ({'; '.join(parts)})" if parts else ""

    def params(self):
        named = {}
        for prefix, module in self.modules.items():
            if isinstance(module, torch.nn.Module):
                for name, param in module.named_parameters():
                    named[f"{prefix}.{name}"] = param
        for name, param in getattr(self, "store_params", {}).items():
            named[f"param_store.{name}"] = param
        unique, seen = {}, set()
        for key, value in named.items():
            if value.requires_grad and id(value) not in seen:
                seen.add(id(value))
                unique[key] = value
        return unique


def run_svi(program, method, *, seed, progress, fingerprint, validation_kwargs=None, init_values=None,
            parallel=None):
    """Optimise; return the guide, loss histories and timing.

    ``parallel`` (data-parallel training, :class:`~ppgen.inference.data_parallel.DataParallel`)
    shards each minibatch over the ranks and all-reduces the gradients.
    """
    if parallel is not None:
        parallel.check(program, method)
    guide = build_guide(program, method, init_values)
    elbo = choose_elbo(program, method)
    kwargs = program.kwargs
    if method.batch_size is not None:
        if not program.accepts("subsample_size"):
            raise MethodError("SVI(batch_size=...) needs a model with a subsample_size "
                              "argument; plain programs subsample in their own "
                              "pyro.plate(..., subsample_size=...)")
        kwargs = program.with_kwargs(subsample_size=method.batch_size)
    if parallel is None:
        objective = Objective(program, guide, elbo, kwargs, method.batch_size)
        objective.loss(differentiable=False, capture=True)  # builds lazy parameters (autoguides, pyro.param)
    else:
        objective = parallel.objective(program, guide, elbo, method)
    params = objective.params()
    trainer = SVITrainer(objective, params, method, program.generative, validation_kwargs, parallel)
    state = {"step": 0, "losses": [], "val_losses": [], "best_val": math.inf,
             "best_params": None, "bad_evals": 0, "stopped_early": False}
    start = time.perf_counter()
    desc = type(method).__name__ + (f" x{parallel.world}" if parallel is not None else "")
    state = train(trainer, state, checkpoints=Checkpoints(method.checkpoint, method.checkpoint_every,
                                                          method.resume, fingerprint),
                  total=method.num_steps, counter="step", desc=desc, progress=progress,
                  ranks=parallel.ranks if parallel is not None else None)
    if state["best_params"] is not None:
        with torch.no_grad():
            for name, value in state["best_params"].items():
                params[name].copy_(value)
    if parallel is not None:
        parallel.agree_on_randomness(program.kwargs["data"].device)  # the guide draws that follow agree
    improving = None if state["stopped_early"] else still_improving(state["losses"])
    if improving is not None:
        log.warning("%s: the loss was still falling over the last quarter of the %d steps (by %.3g, %.1f standard "
                    "errors): the fit has not converged; raise num_steps", desc, len(state["losses"]),
                    improving[0], improving[0] / max(improving[1], 1e-300))
    return {"guide": guide, "losses": state["losses"], "val_losses": state["val_losses"],
            "stopped_early": state["stopped_early"], "elbo": type(elbo).__name__,
            "converged": improving is None, "seconds": time.perf_counter() - start}


def step_size_factor(step, num_steps, start, decay):
    """The step size at ``step`` over ``lr``: 1 until ``start``, then geometric down to
    ``decay`` at ``num_steps``. A final phase of shrinking steps lets the noisy iterates of
    single-sample Adam settle on the optimum (benchmarks/RESULTS.md, "SVI's default")."""
    if step <= start or decay == 1:
        return 1.0
    return decay ** (min(step - start, num_steps - start) / max(num_steps - start, 1))


def still_improving(losses, window=0.25):
    """``(improvement, standard error)`` of the mean loss over the last ``window`` of the
    steps against the ``window`` before it, when the loss is still falling there by more
    than three standard errors and by more than 0.05 (nats: a change that moves a posterior's
    moments) or one part in 10^4 of the loss; else None (converged, or too short)."""
    n = int(len(losses) * window)
    if n < 5:
        return None
    last, before = torch.tensor(losses[-n:], dtype=torch.float64), torch.tensor(losses[-2 * n:-n], dtype=torch.float64)
    drop = float(before.mean() - last.mean())
    se = float((before.var() / n + last.var() / n).sqrt())
    if drop > 3 * se and drop > max(0.05, 1e-4 * abs(float(last.mean()))):
        return drop, se
    return None


class SVITrainer:
    """Adam steps on the objective, for :func:`~ppgen.inference.training.train`: one
    update is one step, with the held-out loss every ``eval_every`` steps (early
    stopping keeps the best parameters)."""

    def __init__(self, objective, params, method, generative, validation_kwargs, parallel=None):
        self.objective, self.params, self.method = objective, params, method
        self.values = list(params.values())
        self.optimizer = torch.optim.Adam(self.values, lr=method.lr)
        start = int(method.decay_start * method.num_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: step_size_factor(step, method.num_steps, start, method.lr_decay))
        self.own_state = generative if isinstance(generative, TrainingState) else None
        self.validation_kwargs, self.parallel = validation_kwargs, parallel
        self.held_out = parallel.held_out(objective) if parallel is not None else objective

    def done(self, state):
        return state["step"] >= self.method.num_steps or state["stopped_early"]

    def step(self, state, interrupt):
        method = self.method
        self.optimizer.zero_grad()
        loss = self.objective.loss(state=state)
        if self.parallel is None:
            value, stop = loss.item(), False
        else:
            loss.backward()
            value, stop = self.parallel.reduce(self.values, self.objective.weight, loss, interrupt.pending)
        if not math.isfinite(value):
            where = f" (summed over {self.parallel.world} ranks)" if self.parallel is not None else ""
            culprit = self.objective.where_not_finite(self.params) if self.parallel is None else ""
            raise MethodError(f"SVI: the loss became {value} at step {state['step']}{where}{culprit}; "
                              "lower lr, set clip_norm, or check the model")
        if self.parallel is None:
            loss.backward()
        if method.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.values, method.clip_norm)
        self.optimizer.step()
        if method.lr_decay != 1.0:  # (a constant rate: nothing to step, a few us saved a step)
            self.scheduler.step()
        if self.own_state is not None:  # the same parameters on every rank: the same update
            self.own_state.after_step()
        state["step"] += 1
        state["losses"].append(value)
        if self.validation_kwargs is not None and state["step"] % method.eval_every == 0:
            evaluate_validation(self.held_out, self.validation_kwargs, self.params, state, method)
        return stop or (self.parallel is None and interrupt.pending)

    def tensors(self):
        return self.params

    def extra_state(self):
        rng = {"rng": {"torch": torch.get_rng_state()}} if self.parallel is None else self.parallel.rng_state()
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), **rng,
                "model_state": self.own_state.training_state() if self.own_state is not None else {}}

    def load_extra_state(self, saved):
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if self.parallel is None:
            torch.set_rng_state(saved["rng"]["torch"])
        else:
            self.parallel.restore_rng(saved)
        if saved.get("model_state") and self.own_state is not None:
            self.own_state.load_training_state(saved["model_state"])

    def flush(self, state):
        pass

    def postfix(self, state):
        return None


def evaluate_validation(objective, validation_kwargs, params, state, method):
    with torch.no_grad():
        val = float(objective.loss(validation_kwargs, differentiable=False))
    state["val_losses"].append((state["step"], val))
    if val < state["best_val"]:
        state["best_val"], state["bad_evals"] = val, 0
        state["best_params"] = {k: v.detach().clone() for k, v in params.items()}
    else:
        state["bad_evals"] += 1
        if state["bad_evals"] >= method.patience:
            state["stopped_early"] = True
            log.info("early stop at step %d (best held-out loss %.4f)", state["step"],
                     state["best_val"])


def guide_draws(program, guide, num_samples):
    """``num_samples`` joint draws of the continuous latent sites from the guide, and the
    fitted values of a plain program's own ``pyro.param`` sites; with the guide's log
    density :math:`\\log q(\\theta_s)` of each draw (``(num_samples,)``; None where there is
    nothing drawn).

    For a ``GenerativeModel`` only its global sites are drawn: per-datum latents
    (a VAE's codes) belong to the amortised guide, not to the posterior kept.
    """
    names = [s.name for s in program.continuous_sites]
    if program.generative is not None:
        names = [n for n in names if n in set(program.generative.global_sites())]
    draws, log_q = _latent_draws(program, guide, num_samples, names) if names else ({}, None)
    draws = {k: v.detach() for k, v in draws.items()}
    # A plain program's own pyro.param sites: the fitted point, the same in every draw
    # (a program with no latent sites: one draw, the point).
    count = num_samples if draws else 1
    for name in program.model_params:
        value = pyro.param(name).detach()
        draws[name] = value.expand((count,) + value.shape).clone()
    return draws, log_q


def _guide_log_density(trace, draw_dim=None):
    """:math:`\\log q` of the values a guide trace drew, summed over every site and every
    dimension but the draws' (``draw_dim``, counted from the right of each site's batch)."""
    total = 0.0
    for site in trace.nodes.values():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        log_prob = site["fn"].log_prob(site["value"])
        if draw_dim is None:
            total = total + log_prob.sum()
            continue
        axis = log_prob.dim() - draw_dim
        total = total + (log_prob.sum([d for d in range(log_prob.dim()) if d != axis]) if axis >= 0
                         else log_prob.sum())
    return total


def _latent_draws(program, guide, num_samples, names):
    draws = {name: [] for name in names}
    with torch.no_grad(), poutine.block():
        try:
            nesting = program.max_plate_nesting + 1
            with pyro.plate("_ppgen_draws", num_samples, dim=-nesting):
                trace = poutine.trace(guide).get_trace(**program.kwargs)
            values = {n: trace.nodes[n]["value"].reshape((num_samples,) + program.latent[n].shape) for n in names}
            log_q = torch.as_tensor(_guide_log_density(trace, nesting)).expand(num_samples).clone()
            return values, log_q
        except (RuntimeError, ValueError, KeyError, IndexError, NotImplementedError) as exc:
            log.debug("vectorised guide draws failed (%s); drawing one at a time", exc)
        log_q = []
        for _ in range(num_samples):
            trace = poutine.trace(guide).get_trace(**program.kwargs)
            for n in names:
                draws[n].append(trace.nodes[n]["value"].reshape(program.latent[n].shape))
            log_q.append(_guide_log_density(trace))
    return {n: torch.stack(v) for n, v in draws.items()}, torch.stack([torch.as_tensor(v) for v in log_q])
