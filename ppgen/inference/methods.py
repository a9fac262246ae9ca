"""The inference methods, by name: :data:`METHODS` is the one list of them.

Each method is a frozen dataclass of settings with a ``run``
(:class:`~ppgen.inference.method.Method`): :class:`SVI` and :class:`MAP`
(:mod:`~ppgen.inference.variational`), :class:`NUTS` and :class:`HMC`
(:mod:`~ppgen.inference.sampling`), :class:`Exact` (:mod:`~ppgen.inference.exact`),
:class:`ContrastiveDivergence` (:mod:`~ppgen.inference.contrastive`) and
:class:`Adversarial`. A family's ``methods``, ``ppgen fit --method`` and the registry
table name methods from :data:`METHODS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import MethodError
from .adversarial import run_adversarial
from .contrastive import ContrastiveDivergence
from .data_parallel_gan import run_adversarial_data_parallel
from .exact import Exact
from .method import Method, RunContext, check_positive_int
from .program import Program
from .result import Fit
from .sampling import HMC, NUTS
from .variational import ELBOS, GUIDES, MAP, SVI

ADVERSARIAL_LOSSES = ("nonsaturating", "wasserstein")


@dataclass(frozen=True)
class Adversarial(Method):
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
    name: ClassVar[str] = "adversarial"
    options: ClassVar[dict[str, str]] = {"num_steps": "num_steps", "batch_size": "batch_size",
                                         "checkpoint": "checkpoint"}

    def __post_init__(self) -> None:
        owner = "Adversarial"
        check_positive_int(owner, num_steps=self.num_steps, batch_size=self.batch_size,
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

    def run(self, program: Program, context: RunContext) -> Fit:
        # num_steps is not fingerprinted (UNFINGERPRINTED): a run may be extended from its checkpoint.
        runner = run_adversarial_data_parallel if context.distributed else run_adversarial
        out = runner(program, self, seed=context.seed, progress=context.progress,
                     fingerprint=self.fingerprint(program))
        return Fit(program=program, method=self, seed=context.seed, posterior={}, losses=out["losses"],
                   timings={"fit": out["seconds"]}, extras={"discriminator_losses": out["discriminator_losses"]})


#: Every inference method, by name.
METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (SVI, MAP, NUTS, HMC, Exact, ContrastiveDivergence,
                                                              Adversarial)}


def as_method(method: Method | str) -> Method:
    """A method object from an instance or a name such as ``"nuts"``."""
    if isinstance(method, str):
        if method.lower() not in METHODS:
            raise MethodError(f"method={method!r}: choose one of {sorted(METHODS)}")
        return METHODS[method.lower()]()
    if not isinstance(method, Method):
        raise MethodError(
            f"method={method!r}: give one of ppgen.inference.{', '.join(c.__name__ for c in METHODS.values())}"
        )
    return method


__all__ = ["METHODS", "as_method", "Method", "SVI", "MAP", "NUTS", "HMC", "Exact", "ContrastiveDivergence",
           "Adversarial", "GUIDES", "ELBOS"]
