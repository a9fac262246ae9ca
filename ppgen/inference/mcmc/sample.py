"""The chains of one process: ppgen's engine, or Pyro's kernels."""

from __future__ import annotations

from ...errors import MethodError
from .engine import run_engine
from .pyro_engine import run_pyro_kernels


def run_mcmc(program, method, *, seed, progress, init_values=None):
    """Run ``method.chains`` chains here; return draws ``(chains, draws, ...)``, statistics,
    timings in seconds: ``{"sampling": s, "total": s}``, and with ppgen's engine ``"compile"``,
    the potential's build (``"sampling"`` is then the rest), and the path taken
    (:func:`~.engine.path_of`; Pyro's kernels: ``"pyro"``)."""
    if not program.continuous_sites and program.model_params:
        raise MethodError(f"{method.name.upper()}: the model's unknowns {sorted(program.model_params)} are "
                          "pyro.param sites, which have no prior to sample from; fit a point estimate with "
                          "MAP() or SVI(), or give them priors with pyro.sample")
    if not program.continuous_sites:
        raise MethodError(f"{method.name.upper()}: the model has no continuous latent sites "
                          "to sample; use Exact() for purely discrete models")
    if method.engine == "ppgen":
        return run_engine(program, method, seed=seed, progress=progress, init_values=init_values)
    posterior, stats, timings = run_pyro_kernels(program, method, seed=seed, progress=progress,
                                                 init_values=init_values)
    return posterior, stats, timings, {"potential": "pyro", "reason": "", "transitions": "pyro"}
