"""ppgen's own NUTS/HMC engine: every chain at once over a flat potential.

The model is traced once into a :class:`~ppgen.inference.mcmc.potential.Potential`
(batched over chains and compiled by ``torch.jit.trace`` or TorchInductor where that
is safe), then :class:`~ppgen.inference.mcmc.nuts.Sampler` moves all chains in lockstep,
with Stan's warm-up (:mod:`ppgen.inference.mcmc.adaptation`).

* NUTS with a diagonal metric on a compiled potential (a long run on the CPU): every
  transition in C++ (:mod:`ppgen.inference.mcmc.native`) on the one-chain kernels;
  several chains (``chain_method="auto"``) each alone, on OpenMP threads, adapted
  together here between transitions. Where the compiled leaf calls more than C++
  kernels, the Python paths below, with the reason logged.
* Several NUTS chains batched through the potential (``chain_method="vectorized"``,
  or where C++ does not apply) on a compiled potential run free
  (:mod:`ppgen.inference.mcmc.free_running`: each chain its own trees and warm-up, none
  waiting for another's longest tree; ``FREE_CHAINS = False`` keeps them in
  lockstep).

Draws come back per site in the constrained space, shaped ``(chains, draws, ...)``,
with per-draw statistics for ArviZ's ``sample_stats``: ``diverging``, ``tree_depth``,
``n_steps``, ``step_size``, ``acceptance_rate``, ``energy`` and ``lp``.

``NUTS(engine="pyro")`` keeps Pyro's own kernels (:mod:`ppgen.inference.mcmc`).
"""
from __future__ import annotations

import logging
import math
import os
import time

import pyro
import torch
from pyro.infer.autoguide import init_to_median, init_to_value
from tqdm.auto import tqdm

from ...errors import MethodError
from ..program import init_to_unconstrained_uniform
from . import free_running
from .adaptation import DualAveraging, Welford, initial_step_size, windows
from .free_running import compile_free_step
from .lockstep import compile_lockstep
from .native import compile_native_nuts
from .nuts import Metric, Sampler, State
from .potential import Potential

log = logging.getLogger("ppgen")


#: Runs of at least this many transitions (warm-up + draws) let ``potential="auto"`` compile
#: with TorchInductor: seconds to build (less from its on-disk cache), then several times
#: faster leapfrog steps; shorter runs (tests, quick looks) use the TorchScript graph.
COMPILE_MIN_ITERATIONS = 1000

#: Several NUTS chains on a compiled potential run free (:mod:`ppgen.inference.mcmc.free_running`).
FREE_CHAINS = True

#: One NUTS chain on a compiled potential runs its transitions in C++ where the leaf allows
#: (:mod:`ppgen.inference.mcmc.native`); ``False`` keeps them in Python.
NATIVE_NUTS = True


def run_engine(program, method, *, seed, progress, init_values=None):
    """Run ``method.chains`` chains; return draws, statistics, seconds
    (``{"compile": building the potential, "sampling": the rest, "total": both}``) and
    ``{"potential": mode, "reason": why a faster mode was refused}``."""
    start = time.perf_counter()
    pyro.set_rng_seed(seed)
    median = init_to_median(fallback=init_to_unconstrained_uniform)  # ImproperUniform: no median
    init = init_to_value(values=init_values, fallback=median) if init_values else median
    long_run = method.warmup + method.num_samples >= COMPILE_MIN_ITERATIONS
    chains = method.chains
    in_cpp = _in_cpp(program, method, long_run)
    potential = Potential(program, 1 if in_cpp else chains, mode=method.potential, init_strategy=init,
                          compile_hint=long_run)
    generator = torch.Generator(device=potential.initial.device).manual_seed(seed)
    native = None
    if in_cpp and potential.mode == "compiled":
        native, why = compile_native_nuts(potential, method.max_tree_depth, generator)
        log.info("NUTS transitions: %s", f"C++ ({chains} chain{'s' * (chains > 1)})" if native else
                 f"Python ({why})")
    if native is None and potential.chains != chains:  # several chains, not in C++: batch them
        pyro.set_rng_seed(seed)
        potential = Potential(program, chains, mode=method.potential, init_strategy=init, compile_hint=long_run)
        generator.manual_seed(seed)
    z = potential.initial
    if native is not None and chains > 1:
        z = potential.starting_points(chains)
        native.threads = min(chains, os.cpu_count() or 1) if native.thread_safe else 1
    # several chains on a compiled potential: each leaf's bookkeeping compiled with it, the
    # chains free-running (NUTS) or in lockstep (HMC, or where the free-running leaf fails)
    batched = potential.chains > 1
    free = None if not batched or method.dense_mass or method.name == "hmc" or not FREE_CHAINS else \
        compile_free_step(potential, method.max_tree_depth)
    lockstep = None if not batched or method.dense_mass or free is not None else \
        compile_lockstep(potential, method.max_tree_depth + 1)
    built = time.perf_counter()
    draws, sample_stats = _sample(potential, method, z, generator, progress, free=free, lockstep=lockstep,
                                  native=native)
    return _finish(potential, method, draws, sample_stats, start, built)


def _in_cpp(program, method, long_run):
    """Whether to try NUTS transitions in C++ (:mod:`ppgen.inference.mcmc.native`) over a
    compiled one-chain potential: a diagonal metric on the CPU, one chain, or several with
    ``chain_method="auto"`` (``"vectorized"`` batches them through the potential), in a run
    long enough to compile: each chain's C++ transitions cost less than its share of a
    batched leaf called from Python, and the chains spread over the cores
    (``benchmarks/bench_nuts.py`` compares the two)."""
    on_cpu = all(t.device.type == "cpu" for t in program.kwargs.values() if torch.is_tensor(t))
    wanted = method.potential == "compiled" or (method.potential == "auto" and long_run)
    return (NATIVE_NUTS and method.name == "nuts" and not method.dense_mass and on_cpu and wanted
            and (method.chains == 1 or method.chain_method == "auto"))


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


def _finish(potential, method, draws, sample_stats, start, built):
    """The constrained draws, the statistics, the timings and the potential's mode."""
    with torch.no_grad():
        posterior = potential.unflatten(draws)
    sample_stats["n_steps"] = sample_stats["n_steps"].long()
    divergences = int(sample_stats["diverging"].sum())
    if divergences:
        log.warning("%s: %d divergent transitions after warm-up; the posterior may be biased "
                    "(raise target_accept or reparameterise)", method.name.upper(), divergences)
    end = time.perf_counter()
    seconds = {"compile": built - start, "sampling": end - built, "total": end - start}
    return posterior, sample_stats, seconds, {"potential": potential.mode, "reason": potential.reason}


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
    """Fixed-length HMC with a Metropolis correction, every chain at once."""
    z, grad, potential = state.z, state.grad, state.potential
    r = metric.momentum(z.shape, sampler.generator, z.dtype, z.device)
    energy0 = potential + metric.kinetic(r)
    new_z, new_r, new_grad, new_potential = z, r, grad, potential
    for _ in range(num_steps):
        new_z, new_r, new_grad, new_potential = sampler.leapfrog(new_z, new_r, new_grad, step, metric)
    delta = new_potential + metric.kinetic(new_r) - energy0
    delta = torch.where(torch.isnan(delta), math.inf, delta)
    accept_prob = torch.exp(-delta.clamp(min=0))
    uniform = torch.rand(accept_prob.shape, generator=sampler.generator, dtype=z.dtype, device=z.device)
    take = uniform < accept_prob
    column = take.unsqueeze(-1)
    new_state = State(torch.where(column, new_z, z), torch.where(take, new_potential, potential),
                      torch.where(column, new_grad, grad))
    stats = {"accept": accept_prob, "depth": torch.zeros_like(take, dtype=torch.long),
             "diverging": delta > 1000, "energy": energy0,
             "leapfrogs": torch.full_like(accept_prob, float(num_steps))}
    return new_state, stats
