"""Stochastic variational inference (and gradient MAP) for any Pyro program.

Parameters are gathered from the model and guide modules (module-local, see
DESIGN.md) and from Pyro's param store (``pyro.param`` in plain programs), and
optimised with ``torch.optim.Adam`` on their unconstrained values. The loop
saves atomic checkpoints (parameters, optimiser, RNG state, loss history) and
resumes from them; Ctrl-C writes one before it stops.

A ``GenerativeModel`` may keep training state of its own (a diffusion model's
moving average of its weights): the loop calls its ``after_step()`` after every
optimiser step, and checkpoints ``training_state()`` (a dict of tensors), which
``load_training_state(state)`` restores on resume.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import signal
import threading
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
from tqdm.auto import tqdm

from ..errors import MethodError
from .checkpoint import FORMAT, atomic_save, resume_from
from .elbos import ModelObjective, PerDatumRenyi, ReparamTrace_ELBO
from .guides import AutoFlow

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
    objective = getattr(program.generative, "training_objective", None)
    if method.elbo is None and callable(objective):
        return ModelObjective(objective)
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


def _rng_state():
    return {"torch": torch.get_rng_state()}


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])


def run_svi(program, method, *, seed, progress, fingerprint, validation_kwargs=None,
            init_values=None):
    """Optimise; return the guide, loss histories and timing."""
    guide = build_guide(program, method, init_values)
    elbo = choose_elbo(program, method)
    kwargs = program.kwargs
    if method.batch_size is not None:
        if not program.accepts("subsample_size"):
            raise MethodError("SVI(batch_size=...) needs a model with a subsample_size "
                              "argument; plain programs subsample in their own "
                              "pyro.plate(..., subsample_size=...)")
        kwargs = program.with_kwargs(subsample_size=method.batch_size)
    objective = Objective(program, guide, elbo, kwargs, method.batch_size)
    objective.loss(differentiable=False, capture=True)  # builds lazy parameters (autoguides, pyro.param)
    params = objective.params()
    optimizer = torch.optim.Adam(list(params.values()), lr=method.lr)
    gamma = method.lr_decay ** (1.0 / max(method.num_steps, 1))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    state = {"step": 0, "losses": [], "val_losses": [], "best_val": math.inf,
             "best_params": None, "bad_evals": 0, "stopped_early": False}

    generative = program.generative
    model_state = getattr(generative, "training_state", lambda: {})

    def snapshot():
        return {"format": FORMAT, "kind": "checkpoint", "fingerprint": fingerprint,
                "params": {k: v.detach().clone() for k, v in params.items()},
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": _rng_state(), "state": copy.deepcopy(state), "model_state": model_state()}

    if method.checkpoint and method.resume:
        saved = resume_from(method.checkpoint, fingerprint, params)
        if saved is not None:
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            _set_rng_state(saved["rng"])
            state = saved["state"]
            if saved.get("model_state"):
                generative.load_training_state(saved["model_state"])
            log.info("resumed SVI from %s at step %d", method.checkpoint, state["step"])

    start = time.perf_counter()
    interrupt = DeferredInterrupt() if method.checkpoint else contextlib.nullcontext()
    bar = tqdm(total=method.num_steps, initial=state["step"], disable=not progress,
               desc=type(method).__name__, leave=False)
    try:
        with interrupt:
            _loop(objective, optimizer, scheduler, params, state, method, bar, interrupt,
                  validation_kwargs, snapshot, getattr(generative, "after_step", None))
    except KeyboardInterrupt:
        if method.checkpoint:
            atomic_save(snapshot(), method.checkpoint)
            log.warning("interrupted at step %d; checkpoint saved to %s", state["step"],
                        method.checkpoint)
        raise
    finally:
        bar.close()
    if method.checkpoint:
        atomic_save(snapshot(), method.checkpoint)
    if state["best_params"] is not None:
        with torch.no_grad():
            for name, value in state["best_params"].items():
                params[name].copy_(value)
    return {"guide": guide, "losses": state["losses"], "val_losses": state["val_losses"],
            "stopped_early": state["stopped_early"], "elbo": type(elbo).__name__,
            "seconds": time.perf_counter() - start}


class DeferredInterrupt:
    """Holds Ctrl-C until the current step ends, so a checkpoint is never torn
    between a parameter update and its step count."""

    def __init__(self):
        self.pending = False

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.pending = True

    def check(self):
        if self.pending:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def _loop(objective, optimizer, scheduler, params, state, method, bar, interrupt,
          validation_kwargs, snapshot, after_step=None):
    check = getattr(interrupt, "check", lambda: None)
    while state["step"] < method.num_steps and not state["stopped_early"]:
        check()
        optimizer.zero_grad()
        loss = objective.loss(state=state)
        value = loss.item()
        if not math.isfinite(value):
            raise MethodError(f"SVI: the loss became {value} at step {state['step']}; "
                              "lower lr, set clip_norm, or check the model")
        loss.backward()
        if method.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(params.values()), method.clip_norm)
        optimizer.step()
        if method.lr_decay != 1.0:  # (a constant rate: nothing to step, a few us saved a step)
            scheduler.step()
        if after_step is not None:
            after_step()
        state["step"] += 1
        state["losses"].append(value)
        bar.update()
        if validation_kwargs is not None and state["step"] % method.eval_every == 0:
            evaluate_validation(objective, validation_kwargs, params, state, method)
        if method.checkpoint and state["step"] % method.checkpoint_every == 0:
            atomic_save(snapshot(), method.checkpoint)
    check()


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
    """``num_samples`` joint draws of the continuous latent sites from the guide.

    For a ``GenerativeModel`` only its global sites are drawn: per-datum latents
    (a VAE's codes) belong to the amortised guide, not to the posterior kept.
    """
    names = [s.name for s in program.continuous_sites]
    if program.generative is not None:
        names = [n for n in names if n in set(program.generative.global_sites())]
    if not names:
        return {}
    draws = {name: [] for name in names}
    with torch.no_grad(), poutine.block():
        try:
            with pyro.plate("_ppgen_draws", num_samples, dim=-(program.max_plate_nesting + 1)):
                trace = poutine.trace(guide).get_trace(**program.kwargs)
            return {n: trace.nodes[n]["value"].reshape((num_samples,) + program.latent[n].shape)
                    for n in names}
        except (RuntimeError, ValueError, KeyError, IndexError, NotImplementedError) as exc:
            log.debug("vectorised guide draws failed (%s); drawing one at a time", exc)
        for _ in range(num_samples):
            trace = poutine.trace(guide).get_trace(**program.kwargs)
            for n in names:
                draws[n].append(trace.nodes[n]["value"].reshape(program.latent[n].shape))
    return {n: torch.stack(v) for n, v in draws.items()}
