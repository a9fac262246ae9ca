"""Variational methods: :class:`SVI` (the ELBO, or a family's own objective) and :class:`MAP`.

Both optimise with :func:`ppgen.inference.svi.run_svi` on the one training loop
(:mod:`ppgen.inference.training`), in one process or data-parallel over ranks
(:mod:`ppgen.inference.data_parallel`). The fit keeps draws
from the fitted guide as its posterior (MAP: the one point), the guide's point
estimate as ``params`` (written back into a ``GenerativeModel``), and in ``extras``
the held-out losses and the guide itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Union

import torch

from ..errors import MethodError
from ..model import GenerativeModel, SolvesMAP
from .data_parallel import DataParallel
from .method import Method, RunContext, check_positive_int, start_values, write_back
from .program import Program
from .result import Fit
from .svi import guide_draws, run_svi

GUIDES = ("normal", "mvn", "delta", "flow")
ELBOS = ("trace", "enum", "meanfield", "graph", "iwae", "renyi")


@dataclass(frozen=True)
class SVI(Method):
    """Stochastic variational inference on the ELBO.

    Parameters
    ----------
    num_steps : int
        Optimisation steps.
    guide : {"normal", "mvn", "delta", "flow"} or callable
        The autoguide when the model has no natural guide (AutoNormal,
        AutoMultivariateNormal, AutoDelta, or ppgen's normalizing-flow guide
        :class:`~ppgen.inference.guides.AutoFlow`), or a guide program.
    lr, lr_decay, decay_start : float
        Adam's learning rate: ``lr`` for the first ``decay_start`` of the steps, then
        decayed geometrically to ``lr * lr_decay`` at the last step (a final low-noise
        phase: the last iterate of constant-rate single-sample Adam scatters around the
        optimum; ``lr_decay=1`` keeps the rate constant). A run whose loss is still falling
        over its last quarter is logged as not converged (``fit.extras["converged"]``).
    clip_norm : float, optional
        Clip the gradient's global norm.
    elbo : {"trace", "enum", "meanfield", "graph", "iwae", "renyi"}, optional
        Default: the family's own training objective when it has one (a
        diffusion model's noise-prediction loss,
        :class:`~ppgen.inference.elbos.ModelObjective`), else ``"enum"``
        (TraceEnum_ELBO) when the model has enumerated discrete sites, else
        ``"trace"``. ``"iwae"`` and ``"renyi"`` are the
        per-datum importance-weighted bounds with ``num_particles`` samples per
        datum (:mod:`ppgen.inference.elbos`).
    num_particles : int
        Samples per ELBO estimate (vectorised); ``K`` of the IWAE/Renyi bounds.
    renyi_alpha : float
        The order of the Renyi bound (``elbo="renyi"``); 0 is IWAE, 1 the ELBO.
    batch_size : int, optional
        Minibatch size, drawn by the model's data plate (``subsample_size``).
    validation : float or data, optional
        Held-out data for early stopping: a fraction of the data (for
        ``GenerativeModel``) or data in the same form as the training data.
    patience, eval_every : int
        Stop after ``patience`` evaluations (every ``eval_every`` steps) without
        a lower held-out loss; the best parameters are kept.
    checkpoint : str, optional
        File written atomically every ``checkpoint_every`` steps and on Ctrl-C;
        a later run with the same settings resumes from it (``resume=True``).
    num_posterior_samples : int
        Draws from the fitted guide kept as the posterior.
    """

    num_steps: int = 1000
    guide: Union[str, Callable] = "normal"
    lr: float = 0.01
    lr_decay: float = 0.01
    decay_start: float = 0.5
    clip_norm: float | None = None
    elbo: str | None = None
    num_particles: int = 1
    renyi_alpha: float = 0.5
    batch_size: int | None = None
    validation: Any = None
    patience: int = 10
    eval_every: int = 50
    checkpoint: str | None = None
    checkpoint_every: int = 100
    resume: bool = True
    num_posterior_samples: int = 1000
    name: ClassVar[str] = "svi"
    options: ClassVar[dict[str, str]] = {"num_steps": "num_steps", "num_samples": "num_posterior_samples",
                                         "batch_size": "batch_size", "checkpoint": "checkpoint"}

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_positive_int(owner, num_steps=self.num_steps, num_particles=self.num_particles,
                            batch_size=self.batch_size, patience=self.patience,
                            eval_every=self.eval_every, checkpoint_every=self.checkpoint_every,
                            num_posterior_samples=self.num_posterior_samples)
        if not callable(self.guide) and self.guide not in GUIDES:
            raise MethodError(f"{owner}(guide={self.guide!r}): choose one of {GUIDES} or a callable")
        if self.elbo is not None and self.elbo not in ELBOS:
            raise MethodError(f"{owner}(elbo={self.elbo!r}): choose one of {ELBOS}")
        if self.elbo == "renyi" and self.renyi_alpha == 1:
            raise MethodError(f"{owner}(renyi_alpha=1) is the ordinary ELBO; use elbo='trace'")
        if not (self.lr > 0):
            raise MethodError(f"{owner}(lr={self.lr!r}) must be positive")
        if not (0 < self.lr_decay <= 1):
            raise MethodError(f"{owner}(lr_decay={self.lr_decay!r}) must be in (0, 1]")
        if not (0 <= self.decay_start < 1):
            raise MethodError(f"{owner}(decay_start={self.decay_start!r}) must be in [0, 1)")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise MethodError(f"{owner}(clip_norm={self.clip_norm!r}) must be positive")
        if isinstance(self.validation, float) and not 0 < self.validation < 1:
            raise MethodError(f"{owner}(validation={self.validation!r}) as a fraction must be in (0, 1)")

    def run(self, program: Program, context: RunContext) -> Fit:
        out = run_svi(program, self, seed=context.seed, progress=context.progress,
                      fingerprint=self.fingerprint(program, context.seed), validation_kwargs=context.validation,
                      init_values=start_values(program),
                      parallel=DataParallel(context.seed) if context.distributed else None)
        draws, log_q = guide_draws(program, out["guide"], self.num_posterior_samples)
        params = _guide_point(out["guide"], program, draws, self.name == "map")
        write_back(program, params)
        # log q of each draw: with the model's log p, the importance weights that judge the guide
        stats = {"log_q": log_q.unsqueeze(0)} if log_q is not None and self.name != "map" else {}
        return Fit(program=program, method=self, seed=context.seed,
                   posterior={k: v.unsqueeze(0) for k, v in draws.items()}, params=params, sample_stats=stats,
                   losses=out["losses"], timings={"fit": out["seconds"]},
                   extras={"val_losses": out["val_losses"], "guide": out["guide"], "converged": out["converged"]})


@dataclass(frozen=True)
class MAP(SVI):
    """Maximum a posteriori estimation.

    ``solver="auto"`` uses the model's closed-form or EM solver (``fit_map``)
    when it has one, else gradient ascent with a delta guide (``"gradient"``).
    ``max_iter``, ``tol`` and ``n_init`` (restarts) go to the EM solver; ``n_init=None``
    keeps the family's own default (HMMs: ten restarts, run as one batch, since Baum-Welch
    stops at local optima from a single start; one elsewhere).
    """

    guide: Union[str, Callable] = "delta"
    num_posterior_samples: int = 1
    solver: str = "auto"
    max_iter: int = 1000
    tol: float = 1e-10
    n_init: int | None = None
    name: ClassVar[str] = "map"
    options: ClassVar[dict[str, str]] = {"num_steps": "num_steps", "batch_size": "batch_size",
                                         "checkpoint": "checkpoint"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.solver not in ("auto", "em", "gradient"):
            raise MethodError(f"MAP(solver={self.solver!r}): choose 'auto', 'em' or 'gradient'")
        if self.guide != "delta":
            raise MethodError("MAP(guide=...) is always 'delta'; use SVI for other guides")
        check_positive_int("MAP", max_iter=self.max_iter, n_init=self.n_init)

    def solves_with(self, model: Any) -> bool:
        """Whether this MAP runs ``model``'s own solver rather than gradient ascent."""
        return self.solver != "gradient" and isinstance(model, SolvesMAP)

    def check_distributed(self, model: Any) -> None:
        if self.solves_with(model):
            raise MethodError(f"distributed=True: MAP(solver={self.solver!r}) runs {type(model).__name__}'s "
                              "EM solver, which is not data-parallel; use MAP(solver='gradient')")

    def prepare(self, model: GenerativeModel, kwargs: dict, context: RunContext) -> dict | None:
        # The EM solver seeds itself; solving before tracing gives the trace sane values.
        if not self.solves_with(model):
            return None
        restarts = {} if self.n_init is None else {"n_init": self.n_init}
        return model.fit_map(**kwargs, max_iter=self.max_iter, tol=self.tol, generator=context.generator,
                             **restarts)

    def run(self, program: Program, context: RunContext) -> Fit:
        solved = context.solved
        if solved is not None:
            params = program.generative.point_params()
            posterior = {k: v.detach().clone()[None, None] for k, v in params.items()}
            return Fit(program=program, method=self, seed=context.seed, posterior=posterior, params=params,
                       losses=solved["loss"], timings={"fit": solved["seconds"]},
                       extras={"converged": solved.get("converged")})
        if self.solver == "em":
            owner = type(program.generative).__name__ if program.generative is not None else "a plain program"
            raise MethodError(f"MAP(solver='em'): {owner} has no EM solver; use solver='gradient'")
        return super().run(program, context)


def _guide_point(guide: Any, program: Program, draws: dict, is_map: bool) -> dict:
    """The point estimate of a fitted guide: its median where it has one, else the draws' mean
    (MAP: the delta guide's one draw)."""
    if not is_map and hasattr(guide, "median"):
        try:
            with torch.no_grad():
                median = guide.median(**program.kwargs)
            return {k: v.detach() for k, v in median.items() if k in draws}
        except NotImplementedError:  # flow guides have no closed-form median
            pass
    return {k: v[0] if is_map else v.mean(0) for k, v in draws.items()}
