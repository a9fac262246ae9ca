"""What every inference method is: frozen settings, a name, and a ``run``.

A method is a frozen dataclass of settings (what to run). :func:`ppgen.fit` checks
the model and the data, builds the :class:`~ppgen.inference.program.Program`, and
hands it to :meth:`Method.run` with a :class:`RunContext`; the method does the rest
and returns the one result type, a :class:`~ppgen.inference.result.Fit`. The list
of methods, by name, is :data:`ppgen.inference.methods.METHODS`; the model
families' ``methods``, the command line and the registry table all read it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch.distributions import biject_to

from ..errors import MethodError

if TYPE_CHECKING:
    from ..model import GenerativeModel
    from .program import Program
    from .result import Fit

#: Settings that do not change what a run computes, so a checkpoint resumes across them.
UNFINGERPRINTED = ("num_steps", "num_epochs", "checkpoint", "checkpoint_every", "resume")


@dataclass
class RunContext:
    """What :func:`ppgen.fit` hands a method besides the program.

    Attributes
    ----------
    seed : int
        The fit's seed (the same seed gives the same result on the same device).
    generator : torch.Generator
        Seeded with ``seed``; what ``fit`` itself drew from it (a validation split)
        is already drawn.
    progress : bool
        Show progress bars.
    distributed : bool
        Run over the ranks of a ``torch.distributed`` group.
    validation : dict, optional
        Held-out keyword arguments of the program (early stopping).
    solved : dict, optional
        What :meth:`Method.prepare` returned (MAP's EM solution).
    """

    seed: int
    generator: torch.Generator
    progress: bool = True
    distributed: bool = False
    validation: dict | None = None
    solved: dict | None = None


class Method:
    """Base of the inference methods (each a frozen dataclass of its settings)."""

    #: the method's name, as families list it in ``GenerativeModel.methods``.
    name: ClassVar[str] = ""
    #: the settings ``ppgen fit`` sets from its options: option (``"num_steps"`` for
    #: ``--num-steps``) -> field.
    options: ClassVar[dict[str, str]] = {}
    #: runs over the ranks of a process group (``fit(..., distributed=True)``).
    distributable: ClassVar[bool] = True

    def config(self) -> dict[str, Any]:
        """JSON-able settings (callables by name), for saving with a fit."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if callable(value):
                value = getattr(value, "__name__", type(value).__name__)
            elif isinstance(value, tuple):
                value = list(value)
            elif not isinstance(value, (int, float, str, bool, type(None))):
                value = type(value).__name__
            out[field.name] = value
        return out

    def check_distributed(self, model: Any) -> None:
        """Raise a MethodError unless this method can fit ``model`` over the ranks of a process group."""
        if not self.distributable:
            raise MethodError(f"distributed=True: {type(self).__name__} is not supported across processes; "
                              "run it in one process (distributed=False)")

    def prepare(self, model: GenerativeModel, kwargs: dict, context: RunContext) -> dict | None:
        """Work on the model before its program is traced (default: none); what it
        returns reaches :meth:`run` as ``context.solved``."""
        return None

    def run(self, program: Program, context: RunContext) -> Fit:
        """Fit ``program``; return the :class:`~ppgen.inference.result.Fit`."""
        raise NotImplementedError(f"{type(self).__name__} must define run()")

    def fingerprint(self, program: Program, seed: int) -> str:
        """A short hash of what the run computes (model, its configuration, the settings
        that matter, the data's shapes, the seed): a checkpoint resumes only the same run,
        so replicate runs with different seeds never resume one another."""
        generative = program.generative
        config = self.config()
        # The length of a run is not part of it (a finished run can be extended), unless its
        # step size decays towards its last step: then the schedule itself depends on it.
        unfingerprinted = [k for k in UNFINGERPRINTED if not (k == "num_steps" and config.get("lr_decay", 1) != 1)]
        described = {
            "model": (type(generative).__name__ if generative is not None
                      else getattr(program.model, "__qualname__", "program")),
            "config": generative.get_config() if generative is not None else None,
            "method": {k: v for k, v in config.items() if k not in unfingerprinted},
            "data": {k: list(v.shape) for k, v in program.kwargs.items() if isinstance(v, torch.Tensor)},
            "seed": seed,
        }
        return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_positive_int(owner: str, **values: Any) -> None:
    """Raise a MethodError naming the first setting that is not a positive integer (None passes)."""
    for key, value in values.items():
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise MethodError(f"{owner}({key}=...) must be a positive integer, got {value!r}")


def start_values(program: Program) -> dict | None:
    """The model's point estimate as start values of its latent sites, or None.

    A point estimate on the boundary (a CPT's exact zeros) has no finite
    unconstrained image: such a site is left to the default initialisation.
    """
    generative = program.generative
    if generative is None or not generative.point.as_dict():
        return None
    values = {}
    for name, value in generative.point_params().items():
        site = program.latent.get(name)
        if site is not None and bool(torch.isfinite(biject_to(site.support).inv(value)).all()):
            values[name] = value
    return values or None


def write_back(program: Program, params: dict) -> None:
    """Set a ``GenerativeModel``'s point parameters to a fit's estimate of its global sites."""
    generative = program.generative
    if generative is not None:
        sites = set(generative.global_sites())
        generative.set_params({k: v for k, v in params.items() if k in sites})


def posterior_mean(posterior: dict) -> dict:
    """The mean over chains and draws of ``(chains, draws, ...)`` tensors."""
    return {k: v.reshape((-1,) + v.shape[2:]).mean(0) for k, v in posterior.items()}
