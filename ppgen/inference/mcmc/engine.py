"""ppgen's own NUTS/HMC engine: every chain at once over a flat potential.

The model is traced once into a :class:`~ppgen.inference.mcmc.potential.Potential`, and
:func:`~ppgen.inference.mcmc.accelerate.accelerate` builds the accelerators that apply
(NUTS transitions in C++, free-running batched chains); then warm-up (Stan's windows,
:mod:`ppgen.inference.mcmc.adaptation`) and draws, on the accelerators or on the
reference sampler, :class:`~ppgen.inference.mcmc.nuts.Sampler`, whose batched chains
move in lockstep.

Draws come back per site in the constrained space, shaped ``(chains, draws, ...)``,
with per-draw statistics for ArviZ's ``sample_stats``: ``diverging``, ``tree_depth``,
``n_steps``, ``step_size``, ``acceptance_rate``, ``energy`` and ``lp``.

``NUTS(engine="pyro")`` keeps Pyro's own kernels (:mod:`ppgen.inference.mcmc.pyro_engine`).
"""
from __future__ import annotations

import logging
import time

import pyro
import torch
from pyro.infer.autoguide import init_to_median, init_to_value
from tqdm.auto import tqdm

from ...errors import MethodError
from ..program import init_to_unconstrained_uniform
from . import free_running
from .accelerate import accelerate
from .adaptation import DualAveraging, Welford, initial_step_size, windows
from .fallback import ChainsApart
from .integrator import State
from .metric import Metric
from .nuts import Sampler
from .reference import hmc_transition

log = logging.getLogger("ppgen")


def run_engine(program, method, *, seed, progress, init_values=None):
    """Run ``method.chains`` chains; return draws, statistics, seconds
    (``{"compile": building the potential and its accelerators, "sampling": the rest,
    "total": both}``) and the path taken (:func:`path_of`)."""
    start = time.perf_counter()
    pyro.set_rng_seed(seed)
    median = init_to_median(fallback=init_to_unconstrained_uniform)  # ImproperUniform: no median
    init = init_to_value(values=init_values, fallback=median) if init_values else median
    run = accelerate(program, method, seed, init)
    if run.potential.mode == "loop" and method.chains > 1 and method.chain_method == "auto":
        raise ChainsApart(run.potential.reason)
    built = time.perf_counter()
    draws, sample_stats = _sample(run.potential, method, run.start, run.generator, progress, free=run.free_step,
                                  lockstep=run.lockstep, native=run.native)
    return _finish(run, method, draws, sample_stats, start, built)


def _sample(potential, method, z, generator, progress, free=None, lockstep=None, native=None):
    """Warm-up and draws of ``z.shape[0]`` chains from ``z``: ``(C, S, D)`` draws and statistics."""
    value_and_grad = native.value_and_grad if native is not None else potential.value_and_grad
    value, grad = value_and_grad(z)
    bad = ~(torch.isfinite(value) & torch.isfinite(grad).all(-1))
    if bool(bad.any()):
        raise MethodError(f"{method.name.upper()}: the log density or its gradient is not finite at "
                          f"the starting point of chain(s) {bad.nonzero().flatten().tolist()}; check "
                          "the model's supports and priors, or give init values")
    state = State(z, value, grad)
    chains, dim = z.shape
    dense = method.dense_mass
    eye = torch.eye(dim, dtype=z.dtype, device=z.device)
    metric = Metric(eye.expand(chains, dim, dim).clone() if dense else torch.ones_like(z))
    fused = native.leaf if native is not None else potential.leaf if potential.mode in ("jit", "compiled") else None
    sampler = Sampler(value_and_grad, method.max_tree_depth, generator, fused_leaf=fused,
                      lockstep_kernel=lockstep, native=native)
    hmc_steps = method.num_steps if method.name == "hmc" else None
    step = z.new_full((chains, 1), float(getattr(method, "step_size", 1.0)))
    if method.warmup:
        step = initial_step_size(sampler, state, step, metric, generator)
    total = method.warmup + method.num_samples
    bar = tqdm(total=total, disable=not progress, desc=method.name.upper(), leave=False)
    try:
        if free is not None:
            return free_running.sample(free, sampler, state, step, metric, method, generator, bar)
        return _lockstep(sampler, state, step, metric, method, hmc_steps, bar)
    finally:
        bar.close()


def _lockstep(sampler, state, step, metric, method, hmc_steps, bar):
    """Every chain's transitions together (one chain: Python floats or C++), with Stan's warm-up."""
    z = state.z
    chains, dim = z.shape
    scalar = chains == 1  # one chain adapts in Python floats
    averaging = DualAveraging(float(step) if scalar else step, method.target_accept)
    slow = windows(method.warmup)
    welford = Welford(chains, dim, method.dense_mass, z.dtype, z.device)
    kept = {"z": [], "diverging": [], "tree_depth": [], "n_steps": [], "step_size": [],
            "acceptance_rate": [], "energy": [], "lp": []}
    for i in range(method.warmup + method.num_samples):
        state, stats = _transition(sampler, state, step, metric, hmc_steps)
        bar.update()
        if i < method.warmup:
            step = _step_tensor(averaging.update(stats["accept"]), z)
            if any(first <= i <= last for first, last in slow):
                welford.add(state.z)
            if any(i == last for _, last in slow):
                metric = Metric(welford.inverse_mass())
                welford = Welford(chains, dim, method.dense_mass, z.dtype, z.device)
                step = initial_step_size(sampler, state, step, metric, sampler.generator)
                averaging.restart(float(step) if scalar else step)
            if i == method.warmup - 1:
                step = _step_tensor(averaging.final(), z)
            continue
        kept["z"].append(state.z)
        kept["diverging"].append(stats["diverging"])
        kept["tree_depth"].append(stats["depth"])
        kept["n_steps"].append(stats["leapfrogs"])
        kept["step_size"].append(step.reshape(-1))
        kept["acceptance_rate"].append(stats["accept"])
        kept["energy"].append(stats["energy"])
        kept["lp"].append(-state.potential)
    draws = torch.stack(kept.pop("z"), 1)  # (C, S, D)
    sample_stats = {k: _stack(v, z) for k, v in kept.items()}
    if hmc_steps is not None:
        del sample_stats["tree_depth"]
    return draws, sample_stats


def _finish(run, method, draws, sample_stats, start, built):
    """The constrained draws, the statistics, the timings and the path taken (:func:`path_of`)."""
    potential = run.potential
    with torch.no_grad():
        posterior = potential.unflatten(draws)
    sample_stats["n_steps"] = sample_stats["n_steps"].long()
    divergences = int(sample_stats["diverging"].sum())
    if divergences:
        log.warning("%s: %d divergent transitions after warm-up; the posterior may be biased "
                    "(raise target_accept or reparameterise)", method.name.upper(), divergences)
    end = time.perf_counter()
    seconds = {"compile": built - start, "sampling": end - built, "total": end - start}
    return posterior, sample_stats, seconds, path_of(run)


def path_of(run):
    """Which path a run took: ``{"potential": mode, "reason": why a faster mode was refused,
    "transitions": "c++" | "free-running" | "compiled lockstep" | "reference"}``."""
    transitions = ("c++" if run.native is not None else "free-running" if run.free_step is not None
                   else "compiled lockstep" if run.lockstep is not None else "reference")
    return {"potential": run.potential.mode, "reason": run.potential.reason, "transitions": transitions}


def _step_tensor(step, like):
    """A step size as the ``(C, 1)`` tensor the sampler takes (one chain's adapts as a float)."""
    return step if torch.is_tensor(step) else like.new_full((1, 1), step)


def _stack(values, like):
    """Per-draw statistics ``(C, S)``: from ``(C,)`` tensors, or one chain's Python scalars."""
    if not values or torch.is_tensor(values[0]):
        return torch.stack(values, 1)
    dtype = like.dtype if isinstance(values[0], float) else None
    return torch.tensor(values, dtype=dtype, device=like.device).reshape(1, -1)


def _transition(sampler, state, step, metric, hmc_steps):
    if hmc_steps is None:
        return sampler.transition(state, step, metric)
    return _hmc_transition(sampler, state, step, metric, hmc_steps)


def _hmc_transition(sampler, state, step, metric, num_steps):
    """The reference HMC transition (:func:`~.reference.hmc_transition`) of every chain, on
    the sampler's leapfrog step and random numbers (momentum, then the acceptance draws)."""
    z, generator = state.z, sampler.generator
    noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    uniform = torch.rand(z.shape[:1], generator=generator, dtype=z.dtype, device=z.device)

    def step_fn(z, r, grad, step_size):
        return sampler.leapfrog(z, r, grad, step_size, metric)

    return hmc_transition(step_fn, state, step, metric, num_steps, noise, uniform)
