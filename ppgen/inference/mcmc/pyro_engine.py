"""NUTS and HMC on Pyro's own kernels (``engine="pyro"``), with per-draw statistics.

Discrete latents are summed out (the model runs with them
enumerated) and chains run one after another with seeds ``seed + c``; each draw records divergence,
tree depth, step size, acceptance and the Hamiltonian at the start of the
transition, for ArviZ's ``sample_stats``.
"""

from __future__ import annotations

import time

import pyro
import pyro.infer.mcmc as pyro_mcmc
import torch
from pyro.infer.autoguide import init_to_median, init_to_value

from ..program import init_to_unconstrained_uniform


class _Recorder:
    """Mixed into Pyro's kernels: keeps the statistics of the latest transition."""

    def _reset_stats(self):
        self.last_depth, self.last_diverging, self.last_energy = 0, False, float("nan")

    def _sample_r(self, name):
        r, r_unscaled = super()._sample_r(name)
        potential = self._fetch_from_cache()[1]
        if potential is not None:
            self.last_energy = float(self._kinetic_energy(r_unscaled) + potential)
        return r, r_unscaled

    def sample(self, params):
        self._reset_stats()
        before = (self._mean_accept_prob, self._t)
        divergences = len(self._divergences)
        params = super().sample(params)
        n = self._t - self._warmup_steps if self._t > self._warmup_steps else self._t
        # _mean_accept_prob is a running mean over n transitions: undo one update.
        self.last_accept = before[0] + n * (self._mean_accept_prob - before[0])
        self.last_diverging = self.last_diverging or len(self._divergences) > divergences
        return params


class _NUTS(_Recorder, pyro_mcmc.NUTS):
    def _build_tree(self, z, r, z_grads, log_slice, direction, tree_depth, energy_current):
        tree = super()._build_tree(z, r, z_grads, log_slice, direction, tree_depth, energy_current)
        self.last_depth = max(self.last_depth, tree_depth + 1)
        self.last_diverging = self.last_diverging or bool(tree.diverging)
        return tree


class _HMC(_Recorder, pyro_mcmc.HMC):
    pass


def run_pyro_kernels(program, method, *, seed, progress, init_values=None):
    """Run ``method.chains`` chains of Pyro's NUTS or HMC, one after another with seeds
    ``seed + c``; return draws ``(chains, draws, ...)``, statistics and timings."""
    model = program.enumerated_model()
    median = init_to_median(fallback=init_to_unconstrained_uniform)  # ImproperUniform: no median
    init = init_to_value(values=init_values, fallback=median) if init_values else median
    names = [s.name for s in program.continuous_sites]
    draws = {name: [] for name in names}
    stats = {k: [] for k in ("diverging", "tree_depth", "step_size", "acceptance_rate", "energy")}
    start = time.perf_counter()
    for chain in range(method.chains):
        pyro.set_rng_seed(seed + chain)
        common = dict(model=model, max_plate_nesting=program.max_plate_nesting,
                      jit_compile=method.jit_compile, ignore_jit_warnings=True,
                      target_accept_prob=method.target_accept,
                      full_mass=method.dense_mass, init_strategy=init)
        if method.name == "hmc":
            kernel = _HMC(step_size=method.step_size, num_steps=method.num_steps, **common)
        else:
            kernel = _NUTS(max_tree_depth=method.max_tree_depth, **common)
        chain_stats = {k: [] for k in stats}

        def hook(kernel, params, stage, i, chain_stats=chain_stats):
            if stage.startswith("Sample"):
                chain_stats["diverging"].append(kernel.last_diverging)
                chain_stats["tree_depth"].append(kernel.last_depth)
                chain_stats["step_size"].append(float(kernel.step_size))
                chain_stats["acceptance_rate"].append(float(kernel.last_accept))
                chain_stats["energy"].append(kernel.last_energy)

        runner = pyro_mcmc.MCMC(kernel, num_samples=method.num_samples,
                                warmup_steps=method.warmup, num_chains=1, hook_fn=hook,
                                disable_progbar=not progress)
        runner.run(**program.kwargs)
        samples = runner.get_samples()
        for name in names:
            draws[name].append(samples[name].reshape((method.num_samples,) + program.latent[name].shape))
        for key in stats:
            stats[key].append(chain_stats[key])
    posterior = {name: torch.stack(values) for name, values in draws.items()}
    sample_stats = {k: torch.tensor(v) for k, v in stats.items()}
    if method.name == "hmc":
        del sample_stats["tree_depth"]
    total = time.perf_counter() - start
    return posterior, sample_stats, {"sampling": total, "total": total}
