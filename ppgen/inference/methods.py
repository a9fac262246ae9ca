"""Inference methods as small configuration objects.

Each is a frozen dataclass: it only says *what* to run; the modules ``svi``,
``mcmc`` and ``exact`` say *how*. ``name`` is what ``GenerativeModel.methods``
lists and what the CLI accepts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from ..errors import MethodError

GUIDES = ("normal", "mvn", "delta", "flow")
ELBOS = ("trace", "enum", "meanfield", "graph", "iwae", "renyi")


def _check_positive_int(owner, **values):
    for key, value in values.items():
        if value is not None and not (isinstance(value, int) and value > 0):
            raise MethodError(f"{owner}({key}=...) must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class SVI:
    """Stochastic variational inference on the ELBO.

    Parameters
    ----------
    num_steps : int
        Optimisation steps.
    guide : {"normal", "mvn", "delta", "flow"} or callable
        The autoguide when the model has no natural guide (AutoNormal,
        AutoMultivariateNormal, AutoDelta, or ppgen's normalizing-flow guide
        :class:`~ppgen.inference.guides.AutoFlow`), or a guide program.
    lr, lr_decay : float
        Adam's learning rate, decayed geometrically to ``lr * lr_decay`` at the end.
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
    lr_decay: float = 1.0
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
    name = "svi"

    def __post_init__(self):
        owner = type(self).__name__
        _check_positive_int(owner, num_steps=self.num_steps, num_particles=self.num_particles,
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
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise MethodError(f"{owner}(clip_norm={self.clip_norm!r}) must be positive")
        if isinstance(self.validation, float) and not 0 < self.validation < 1:
            raise MethodError(f"{owner}(validation={self.validation!r}) as a fraction must be in (0, 1)")

    def config(self):
        """JSON-able settings (callables by name), for saving with a fit."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if callable(value):
                value = getattr(value, "__name__", type(value).__name__)
            elif not isinstance(value, (int, float, str, bool, type(None))):
                value = type(value).__name__
            out[field.name] = value
        return out


@dataclass(frozen=True)
class MAP(SVI):
    """Maximum a posteriori estimation.

    ``solver="auto"`` uses the model's closed-form or EM solver (``fit_map``)
    when it has one, else gradient ascent with a delta guide (``"gradient"``).
    ``max_iter``, ``tol`` and ``n_init`` (restarts) go to the EM solver.
    """

    guide: Union[str, Callable] = "delta"
    num_posterior_samples: int = 1
    solver: str = "auto"
    max_iter: int = 1000
    tol: float = 1e-10
    n_init: int = 1
    name = "map"

    def __post_init__(self):
        super().__post_init__()
        if self.solver not in ("auto", "em", "gradient"):
            raise MethodError(f"MAP(solver={self.solver!r}): choose 'auto', 'em' or 'gradient'")
        if self.guide != "delta":
            raise MethodError("MAP(guide=...) is always 'delta'; use SVI for other guides")
        _check_positive_int("MAP", max_iter=self.max_iter, n_init=self.n_init)


ENGINES = ("ppgen", "pyro")
POTENTIALS = ("auto", "compiled", "jit", "vectorized", "loop")
CHAIN_METHODS = ("auto", "vectorized", "parallel", "sequential")


@dataclass(frozen=True)
class NUTS:
    """The No-U-Turn sampler, discrete latents summed out.

    ``engine="ppgen"`` (default) runs every chain at once on a potential traced
    from the model (:mod:`ppgen.inference.fast_mcmc`): ``potential`` says how it
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
    :mod:`ppgen.inference.free_chains`; otherwise in lockstep); ``"parallel"`` runs each chain alone in its
    own worker process, at most one per CPU core
    (:mod:`ppgen.inference.mcmc_processes`); ``"sequential"`` runs them one after
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
    name = "nuts"

    def __post_init__(self):
        owner = type(self).__name__
        _check_positive_int(owner, num_samples=self.num_samples, chains=self.chains,
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

    config = SVI.config


@dataclass(frozen=True)
class HMC(NUTS):
    """Hamiltonian Monte Carlo with a fixed trajectory length."""

    step_size: float = 0.1
    num_steps: int = 10
    name = "hmc"


@dataclass(frozen=True)
class Exact:
    """Exact inference: enumeration of discrete latents, or a conjugate closed form.

    Continuous global sites are fixed at ``params`` (a dict of site values, or a
    ``Fit`` whose point estimate is used); for a ``GenerativeModel`` the default
    is its point parameters. ``num_samples`` exact posterior draws are kept.
    """

    params: Any = None
    num_samples: int = 1000
    name = "exact"

    def __post_init__(self):
        _check_positive_int("Exact", num_samples=self.num_samples)

    config = SVI.config


@dataclass(frozen=True)
class ContrastiveDivergence:
    """Training of energy-based models (RBMs) by contrastive divergence.

    Each update runs ``k`` block-Gibbs steps from the minibatch (CD-k) or from
    persistent chains (``persistent=True``, PCD; ``batch_size`` chains started at
    random data points), and moves the parameters by SGD with momentum along the
    CD estimate of the log-likelihood gradient.

    Parameters
    ----------
    k : int
        Gibbs sweeps per update.
    persistent : bool
        Persistent CD (Tieleman 2008) instead of CD-k.
    num_epochs, batch_size : int
        Passes over the shuffled data, and minibatch size (the last batch of an
        epoch may be smaller).
    lr, momentum : float
        SGD step size (on the mean gradient over the batch) and momentum.
    weight_decay : float
        L2 penalty on the weight matrices (parameters with two or more
        dimensions), not on the biases.
    checkpoint : str, optional
        File written atomically every ``checkpoint_every`` updates, at the end and
        on Ctrl-C; a later run with the same settings (``num_epochs`` may grow)
        resumes from it (``resume=True``) and gives the uninterrupted result.
    """

    k: int = 1
    persistent: bool = False
    num_epochs: int = 10
    batch_size: int = 100
    lr: float = 0.05
    momentum: float = 0.5
    weight_decay: float = 0.0
    checkpoint: str | None = None
    checkpoint_every: int = 500
    resume: bool = True
    name = "cd"

    def __post_init__(self):
        owner = "ContrastiveDivergence"
        _check_positive_int(owner, k=self.k, num_epochs=self.num_epochs,
                            batch_size=self.batch_size, checkpoint_every=self.checkpoint_every)
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise MethodError(f"{owner}(lr={self.lr!r}) must be a positive number")
        if not (isinstance(self.momentum, (int, float)) and 0 <= self.momentum < 1):
            raise MethodError(f"{owner}(momentum={self.momentum!r}) must be in [0, 1)")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0
                and math.isfinite(self.weight_decay)):
            raise MethodError(f"{owner}(weight_decay={self.weight_decay!r}) must be a non-negative number")

    config = SVI.config


ADVERSARIAL_LOSSES = ("nonsaturating", "wasserstein")


@dataclass(frozen=True)
class Adversarial:
    """Adversarial training of a GAN's generator against its discriminator.

    Each step takes ``discriminator_steps`` Adam steps on the discriminator, then
    one on the generator. With ``loss="nonsaturating"`` (Goodfellow et al. 2014)
    the discriminator minimises the logistic loss
    :math:`E[\\mathrm{softplus}(-D(x))] + E[\\mathrm{softplus}(D(G(z)))]` and the
    generator :math:`E[\\mathrm{softplus}(-D(G(z)))] = -E[\\log \\sigma(D(G(z)))]`.
    With ``loss="wasserstein"`` (WGAN-GP, Gulrajani et al. 2017) the critic
    minimises :math:`E[D(G(z))] - E[D(x)] + \\lambda E[(\\|\\nabla D(\\hat x)\\|_2 -
    1)^2]` at random interpolates :math:`\\hat x = \\epsilon x + (1 - \\epsilon) G(z)`,
    :math:`\\epsilon \\sim U(0, 1)` per discriminator input, and the generator
    :math:`-E[D(G(z))]`. With packing (the model's ``pack = m``) every expectation
    is over packed inputs of ``m`` samples, the interpolates and gradient norms too.

    Parameters
    ----------
    num_steps : int
        Generator updates (it may grow between runs that resume a checkpoint).
    batch_size : int
        Discriminator inputs per step, each of ``pack`` samples (as PacGAN): a
        step uses ``batch_size * pack`` data points and as many generated ones.
    loss : {"nonsaturating", "wasserstein"}
    gradient_penalty : float
        :math:`\\lambda` of WGAN-GP (``loss="wasserstein"`` only).
    discriminator_steps : int
        Discriminator updates per generator update (5 is usual for WGAN-GP).
    lr_generator, lr_discriminator : float
        Adam's step sizes; different ones give the two-timescale rule (TTUR,
        Heusel et al. 2017).
    lr_decay : float
        Both step sizes decay geometrically to ``lr * lr_decay`` at step
        ``num_steps`` (as ``SVI``'s); with ``lr_decay < 1`` the schedule depends on
        ``num_steps``, so a run extended from a checkpoint to more steps is not the
        longer uninterrupted run (one resumed to the same ``num_steps`` is).
    betas : (float, float)
        Adam's moment decays, shared by both players.
    checkpoint : str, optional
        File written atomically every ``checkpoint_every`` steps, at the end and
        on Ctrl-C; a later run with the same settings resumes from it
        (``resume=True``) and gives the uninterrupted result.
    """

    num_steps: int = 10000
    batch_size: int = 64
    loss: str = "nonsaturating"
    gradient_penalty: float = 10.0
    discriminator_steps: int = 1
    lr_generator: float = 2e-4
    lr_discriminator: float = 2e-4
    lr_decay: float = 1.0
    betas: Any = (0.5, 0.999)
    checkpoint: str | None = None
    checkpoint_every: int = 1000
    resume: bool = True
    name = "adversarial"

    def __post_init__(self):
        owner = "Adversarial"
        _check_positive_int(owner, num_steps=self.num_steps, batch_size=self.batch_size,
                            discriminator_steps=self.discriminator_steps,
                            checkpoint_every=self.checkpoint_every)
        if self.loss not in ADVERSARIAL_LOSSES:
            raise MethodError(f"{owner}(loss={self.loss!r}): choose one of {ADVERSARIAL_LOSSES}")
        for key in ("lr_generator", "lr_discriminator"):
            value = getattr(self, key)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise MethodError(f"{owner}({key}={value!r}) must be a positive number")
        if isinstance(self.lr_decay, bool) or not (isinstance(self.lr_decay, (int, float)) and 0 < self.lr_decay <= 1):
            raise MethodError(f"{owner}(lr_decay={self.lr_decay!r}) must be in (0, 1]")
        penalty = self.gradient_penalty
        if isinstance(penalty, bool) or not (isinstance(penalty, (int, float)) and penalty >= 0
                                             and math.isfinite(penalty)):
            raise MethodError(f"{owner}(gradient_penalty={penalty!r}) must be a non-negative number")
        try:
            betas = tuple(float(b) for b in self.betas)
        except (TypeError, ValueError):
            betas = ()
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise MethodError(f"{owner}(betas={self.betas!r}) must be two numbers in [0, 1)")
        object.__setattr__(self, "betas", betas)

    def config(self):
        return {**SVI.config(self), "betas": list(self.betas)}


METHODS = {cls.name: cls for cls in (SVI, MAP, NUTS, HMC, Exact, ContrastiveDivergence, Adversarial)}


def as_method(method):
    """A method object from an instance or a name such as ``"nuts"``."""
    if isinstance(method, str):
        if method.lower() not in METHODS:
            raise MethodError(f"method={method!r}: choose one of {sorted(METHODS)}")
        return METHODS[method.lower()]()
    if not isinstance(method, tuple(METHODS.values())):
        raise MethodError(
            f"method={method!r}: give one of ppgen.inference.{', '.join(c.__name__ for c in METHODS.values())}"
        )
    return method
