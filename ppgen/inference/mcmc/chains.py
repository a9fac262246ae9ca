"""How the chains of a NUTS or HMC run are run: the one switch.

:func:`chain_method` resolves ``chain_method="auto"``; :func:`run_chains` obeys it:

- ``"vectorized"``: all chains in this process (:func:`~ppgen.inference.mcmc.sample.run_mcmc`),
  each on a C++ thread where the engine's C++ transitions apply, else batched through the
  potential;
- ``"parallel"``: each chain alone in a worker process (:mod:`~ppgen.inference.mcmc.processes`);
- ``"sequential"``: each chain alone, one after another here;
- over the ranks of a ``torch.distributed`` group (:mod:`~ppgen.inference.mcmc.ranks`).
"""

from __future__ import annotations

import logging
import os

from .fallback import ChainsApart
from .processes import run_chains_alone
from .ranks import run_mcmc_over_ranks
from .sample import run_mcmc

log = logging.getLogger("ppgen")


def chain_method(program, method):
    """The chain method ``method.chain_method="auto"`` resolves to for ``program``."""
    if method.chain_method != "auto":
        return method.chain_method
    if method.engine != "ppgen":
        return "sequential"
    if method.chains == 1 or method.potential != "loop":
        return "vectorized"
    return _apart()


def _apart():
    """How chains on Pyro's own potential run: lockstep chains would wait for the deepest
    tree, slower than one after another, far slower than worker processes
    (bench_chain_methods.py)."""
    return "parallel" if (os.cpu_count() or 1) > 1 else "sequential"


def run_chains(program, method, *, seed, progress, init_values=None, distributed=False):
    """Run ``method.chains`` chains as :func:`chain_method` says (over the ranks when
    ``distributed``); return draws ``(chains, draws, ...)``, statistics, timings and the path
    taken (:func:`~.engine.path_of` and ``"chains"``, the chain method)."""
    common = dict(seed=seed, progress=progress, init_values=init_values)
    if distributed:
        *result, path = run_mcmc_over_ranks(program, method, **common)
        return (*result, {**path, "chains": "ranks"})
    resolved = chain_method(program, method)
    # ppgen's engine runs one chain alone for "sequential"; Pyro's kernels always do
    alone = resolved == "parallel" or (resolved == "sequential" and method.engine == "ppgen")
    if alone and method.chains > 1:
        *result, path = run_chains_alone(program, method, parallel=resolved == "parallel", **common)
    else:
        try:
            *result, path = run_mcmc(program, method, **common)
        except ChainsApart as why:
            resolved = _apart()
            log.info("%s: the potential is Pyro's own, chain by chain (%s); running the %d chains %s",
                     method.name.upper(), why, method.chains, "in worker processes" if resolved == "parallel"
                     else "one after another")
            *result, path = run_chains_alone(program, method, parallel=resolved == "parallel", **common)
    return (*result, {**path, "chains": resolved})
