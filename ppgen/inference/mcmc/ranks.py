"""NUTS and HMC chains spread over the ranks of a ``torch.distributed`` process group.

``method.chains`` is the total number of chains. With ``W`` ranks, rank ``r``
runs the contiguous chains ``[c_r, c_{r+1})``, the shares differing by at most
one (the first ``C mod W`` ranks run ``floor(C / W) + 1``); every rank then
all-gathers the draws and statistics (on CPU, in rank order) and returns the
same full result as :func:`ppgen.inference.mcmc.run_mcmc`: posterior tensors
``(C, S, ...)`` and statistics ``(C, S)`` with the chains in global order.

Seeds
-----
* ``engine="pyro"``: chain ``c`` always runs with seed ``seed + c`` (as
  :func:`~ppgen.inference.mcmc.run_mcmc` does), so the draws are the
  single-process draws, whatever the number of ranks.
* ``engine="ppgen"`` (default): a rank runs its chains in lockstep, one
  generator for all of them, seeded ``seed + c_r``; the draws are reproducible
  for a given number of ranks but change with it (with one chain per rank,
  chain ``c`` is the one-chain run with seed ``seed + c``). ``per_chain=True``
  runs each chain alone with seed ``seed + c`` instead: split-invariant draws,
  at the cost of the lockstep batching.

Without an initialised process group, or with one rank, this is ``run_mcmc``.
"""

from __future__ import annotations

import dataclasses

import torch

from ...distributed.sharding import gather_checked, rank_and_world, shard_bounds
from ...errors import MethodError
from .sample import run_mcmc


def _run_share(program, method, start, stop, *, seed, progress, init_values, per_chain):
    """Chains ``[start, stop)`` on this rank: ``(posterior, stats, timings, path)``, as ``run_mcmc`` gives."""
    if per_chain and method.engine == "ppgen":
        one = dataclasses.replace(method, chains=1)
        runs = [run_mcmc(program, one, seed=seed + c, progress=progress, init_values=init_values)
                for c in range(start, stop)]
        posterior = {k: torch.cat([r[0][k] for r in runs]) for k in runs[0][0]}
        stats = {k: torch.cat([r[1][k] for r in runs]) for k in runs[0][1]}
        return posterior, stats, {k: sum(r[2][k] for r in runs) for k in runs[0][2]}, runs[0][3]
    share = dataclasses.replace(method, chains=stop - start)
    return run_mcmc(program, share, seed=seed + start, progress=progress, init_values=init_values)


def run_mcmc_over_ranks(program, method, *, seed, progress, init_values=None, per_chain=False, group=None):
    """Run ``method.chains`` chains split over the ranks; gather them on every rank.

    Parameters
    ----------
    program : Program
    method : NUTS or HMC; ``method.chains`` counts the chains of all ranks.
    seed : int, the same on every rank (checked).
    progress : bool; only rank 0 shows a progress bar.
    init_values : dict, optional; every chain's starting point.
    per_chain : bool
        ``engine="ppgen"``: run each chain alone with seed ``seed + c`` so the
        draws do not depend on the number of ranks (``engine="pyro"`` always does).
    group : torch.distributed ProcessGroup, optional (default: the whole world)

    Returns
    -------
    posterior : dict of tensors ``(chains, draws, ...)``, on the local result's device
    stats : dict of ``(chains, draws)`` tensors
    timings : dict, the slowest rank's, as ``run_mcmc`` gives them
    path : dict, this rank's path (:func:`~.engine.path_of`)

    Raises
    ------
    MethodError
        Fewer chains than ranks, or ranks that disagree on the seed or the method.
        An error on one rank (a non-finite starting point, say) is raised on every rank.
    """
    rank, world = rank_and_world(group)
    if world == 1:
        return run_mcmc(program, method, seed=seed, progress=progress, init_values=init_values)
    if method.chains < world:
        raise MethodError(f"{type(method).__name__}(chains={method.chains}): fewer chains than the "
                          f"{world} ranks; give chains >= {world} so that every rank runs at least one")
    setting = (seed, sorted(method.config().items()), bool(per_chain))
    settings = gather_checked(lambda: setting, group=group)
    if any(s != setting for s in settings):
        differing = [r for r, s in enumerate(settings) if s != settings[0]]
        raise MethodError(f"run_mcmc_over_ranks: ranks {differing} have a different seed or method setting "
                          f"than rank 0 (rank 0: seed={settings[0][0]}, {dict(settings[0][1])}); every rank "
                          "must call with the same ones")
    start, stop = shard_bounds(method.chains, rank, world)
    local = {}

    def compute():
        posterior, stats, timings, path = _run_share(program, method, start, stop, seed=seed,
                                                     progress=progress and rank == 0,
                                                     init_values=init_values, per_chain=per_chain)
        local.update(posterior=posterior, stats=stats, path=path)
        return ({k: v.detach().cpu() for k, v in posterior.items()},
                {k: v.detach().cpu() for k, v in stats.items()}, {k: float(v) for k, v in timings.items()})

    parts = gather_checked(compute, group=group)
    # Every rank returns the whole result, each tensor where the local run left its own.
    posterior = {k: torch.cat([p[0][k] for p in parts]).to(v.device) for k, v in local["posterior"].items()}
    stats = {k: torch.cat([p[1][k] for p in parts]).to(v.device) for k, v in local["stats"].items()}
    return posterior, stats, max((p[2] for p in parts), key=lambda t: t["total"]), local["path"]
