"""Sampling methods: :class:`NUTS` and :class:`HMC` (the samplers live in :mod:`ppgen.inference.mcmc`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from ..errors import MethodError
from .mcmc.chains import run_chains
from .method import Method, RunContext, check_positive_int, posterior_mean, start_values, write_back
from .program import Program
from .result import Fit

ENGINES = ("ppgen", "pyro")
POTENTIALS = ("auto", "compiled", "jit", "vectorized", "loop")
CHAIN_METHODS = ("auto", "vectorized", "parallel", "sequential")


@dataclass(frozen=True)
class NUTS(Method):
    """The No-U-Turn sampler, discrete latents summed out.

    ``engine="ppgen"`` (default) runs every chain at once on a potential traced
    from the model (:mod:`ppgen.inference.mcmc.engine`): ``potential`` says how it
    is evaluated (``"auto"``: recorded and compiled where that is checked safe, by
    TorchInductor for runs of 1000+ iterations (``"compiled"``), else TorchScript
    (``"jit"``); else vectorised over chains; else Pyro's own chain by chain;
    ``fit.timings["compile"]`` is the build time). ``engine="pyro"``
    runs Pyro's kernels, chains one after another with seeds ``seed + c``
    (``jit_compile`` applies there). Either way, warm-up adapts the step size
    (towards ``target_accept``) and a diagonal or dense (``dense_mass``) mass
    matrix in Stan's windows, and every chain starts from the model's point
    parameters when it has them.

    ``chain_method`` (NumPyro's names): ``"vectorized"`` moves all chains together
    in one process (``engine="ppgen"``; NUTS on a compiled potential with a diagonal
    metric: each chain free-running, one compiled step a leaf for all chains,
    :mod:`ppgen.inference.mcmc.free_running`; otherwise in lockstep); ``"parallel"`` runs each chain alone in its
    own worker process, at most one per CPU core
    (:mod:`ppgen.inference.mcmc.processes`); ``"sequential"`` runs them one after
    another here. The last two give chain ``c`` the seed ``seed + c``, so their draws
    are the same. ``"auto"``: where the potential cannot be vectorised over chains
    (enumerated discrete sites, ``potential="loop"``), ``"parallel"`` with several
    cores and ``"sequential"`` with one; else ``"vectorized"`` (``engine="pyro"``:
    ``"sequential"``).
    """

    num_samples: int = 1000
    warmup: int = 1000
    chains: int = 2
    target_accept: float = 0.8
    max_tree_depth: int = 10
    dense_mass: bool = False
    jit_compile: bool = False
    engine: str = "ppgen"
    potential: str = "auto"
    chain_method: str = "auto"
    name: ClassVar[str] = "nuts"
    options: ClassVar[dict[str, str]] = {"num_samples": "num_samples", "warmup": "warmup", "chains": "chains"}

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_positive_int(owner, num_samples=self.num_samples, chains=self.chains,
                            max_tree_depth=self.max_tree_depth)
        if not (isinstance(self.warmup, int) and self.warmup >= 0):
            raise MethodError(f"{owner}(warmup={self.warmup!r}) must be a non-negative integer")
        if not 0 < self.target_accept < 1:
            raise MethodError(f"{owner}(target_accept={self.target_accept!r}) must be in (0, 1)")
        if self.engine not in ENGINES:
            raise MethodError(f"{owner}(engine={self.engine!r}): choose one of {ENGINES}")
        if self.potential not in POTENTIALS:
            raise MethodError(f"{owner}(potential={self.potential!r}): choose one of {POTENTIALS}")
        if self.chain_method not in CHAIN_METHODS:
            raise MethodError(f"{owner}(chain_method={self.chain_method!r}): choose one of {CHAIN_METHODS}")
        if self.chain_method == "vectorized" and self.engine != "ppgen":
            raise MethodError(f"{owner}(chain_method='vectorized') needs engine='ppgen': Pyro's kernels "
                              "run one chain at a time")

    def run(self, program: Program, context: RunContext) -> Fit:
        posterior, stats, timings, path = run_chains(program, self, seed=context.seed, progress=context.progress,
                                                     init_values=start_values(program),
                                                     distributed=context.distributed)
        params = posterior_mean(posterior)
        write_back(program, params)
        return Fit(program=program, method=self, seed=context.seed, posterior=posterior, params=params,
                   sample_stats=stats, timings=timings, extras={"path": path})


@dataclass(frozen=True)
class HMC(NUTS):
    """Hamiltonian Monte Carlo with a fixed trajectory length."""

    step_size: float = 0.1
    num_steps: int = 10
    name: ClassVar[str] = "hmc"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("HMC", num_steps=self.num_steps)
        step = self.step_size
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step < math.inf:
            raise MethodError(f"HMC(step_size={step!r}) must be a positive finite number (the initial "
                              "step size; warm-up adapts it)")

