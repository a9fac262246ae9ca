"""Contrastive divergence (CD-k) and persistent CD for energy-based models.

The model is used only through its parameters and the energy-based-model protocol,
:class:`ppgen.model.EnergyBased`: ``cd_step(v_data, v_start, k, generator) ->
(gradients, v_minus)``, where ``gradients`` is the CD estimate of the gradient of the
mean negative log-likelihood by parameter name and ``v_minus`` the negative samples
after ``k`` Gibbs sweeps (the persistent chains' next state), and ``cd_monitor(v,
generator)``, a per-datum training loss described by the model's ``cd_monitor_name``.

Each epoch visits the data in an order drawn from a generator seeded with ``seed``;
each minibatch gives one update of SGD with momentum (:math:`u \\leftarrow \\mu u + g
+ \\lambda W`, :math:`\\theta \\leftarrow \\theta - \\eta u`, weight decay
:math:`\\lambda` on matrices only), with negative samples ``k`` Gibbs sweeps from the
minibatch (CD-k) or from ``batch_size`` persistent chains started at random data
points (PCD). ``losses`` holds, for each epoch, the mean monitor over a random sample
of :data:`MONITOR_SIZE` training points at the epoch's end. Every random draw comes
from the one generator, so a run is reproducible, and a checkpoint (parameters,
momentum, chains, generator state, position within the epoch) resumes it exactly.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import MethodError
from ..model import EnergyBased
from .method import Method, RunContext, check_positive_int
from .program import Program
from .result import Fit
from .training import Checkpoints, train

log = logging.getLogger("ppgen")

#: training points the epoch-end monitor is averaged over (all of them when fewer).
MONITOR_SIZE = 1000


@dataclass(frozen=True)
class ContrastiveDivergence(Method):
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
    name: ClassVar[str] = "cd"
    options: ClassVar[dict[str, str]] = {"num_epochs": "num_epochs", "batch_size": "batch_size",
                                         "checkpoint": "checkpoint"}
    distributable: ClassVar[bool] = False

    def __post_init__(self) -> None:
        owner = "ContrastiveDivergence"
        check_positive_int(owner, k=self.k, num_epochs=self.num_epochs,
                            batch_size=self.batch_size, checkpoint_every=self.checkpoint_every)
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise MethodError(f"{owner}(lr={self.lr!r}) must be a positive number")
        if not (isinstance(self.momentum, (int, float)) and 0 <= self.momentum < 1):
            raise MethodError(f"{owner}(momentum={self.momentum!r}) must be in [0, 1)")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0
                and math.isfinite(self.weight_decay)):
            raise MethodError(f"{owner}(weight_decay={self.weight_decay!r}) must be a non-negative number")

    def run(self, program: Program, context: RunContext) -> Fit:
        # num_epochs is left out of the fingerprint (UNFINGERPRINTED): a run may be extended.
        out = run_contrastive(program, self, seed=context.seed, progress=context.progress,
                              fingerprint=self.fingerprint(program, context.seed))
        return Fit(program=program, method=self, seed=context.seed, posterior={}, losses=out["losses"],
                   timings={"fit": out["seconds"]})


def _check_protocol(model):
    if not isinstance(model, EnergyBased):
        owner = type(model).__name__ if model is not None else "a plain Pyro program"
        missing = [name for name in ("cd_step", "cd_monitor") if not callable(getattr(model, name, None))]
        raise MethodError(f"ContrastiveDivergence needs an energy-based model (ppgen.model.EnergyBased); "
                          f"{owner} lacks {', '.join(missing)}")


class _Momentum:
    """SGD with momentum and weight decay on matrices (as ``torch.optim.SGD``, without
    its import-time cost): plain tensors, so its state checkpoints as a dict."""

    def __init__(self, params, method):
        self.params, self.method = params, method
        self.velocity = {name: torch.zeros_like(p) for name, p in params.items()}

    def step(self, gradients):
        method = self.method
        with torch.no_grad():
            velocity = list(self.velocity.values())
            torch._foreach_mul_(velocity, method.momentum)
            torch._foreach_add_(velocity, [gradients[name] for name in self.velocity])
            if method.weight_decay:
                for name, param in self.params.items():
                    if param.dim() >= 2:
                        self.velocity[name].add_(param, alpha=method.weight_decay)
            torch._foreach_add_(list(self.params.values()), velocity, alpha=-method.lr)

    def state_dict(self):
        return {name: v.clone() for name, v in self.velocity.items()}

    def load_state_dict(self, state):
        for name, value in state.items():
            self.velocity[name].copy_(value)


def run_contrastive(program, method, *, seed, progress, fingerprint):
    """Train ``program.generative`` by CD; return ``{"losses": [...], "seconds": float}``."""
    model = program.generative
    _check_protocol(model)
    trainer = CDTrainer(model, program.kwargs["data"], method, seed)
    start = time.perf_counter()
    state = train(trainer, trainer.state, total=method.num_epochs * trainer.per_epoch, counter="update",
                  desc="ContrastiveDivergence", progress=progress,
                  checkpoints=Checkpoints(method.checkpoint, method.checkpoint_every, method.resume, fingerprint))
    return {"losses": list(state["losses"]), "seconds": time.perf_counter() - start,
            "updates": state["update"], "loss_name": getattr(model, "cd_monitor_name", "")}


class CDTrainer:
    """CD updates for :func:`~ppgen.inference.training.train`: one update per minibatch;
    after an epoch's last one, the training monitor on a random sample of the data."""

    def __init__(self, model, data, method, seed):
        self.model, self.data, self.method = model, data, method
        size = data.shape[0]
        self.batch = min(method.batch_size, size)
        self.per_epoch = -(-size // self.batch)
        self.params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self.optimizer = _Momentum(self.params, method)
        self.generator = torch.Generator(device=data.device).manual_seed(seed)
        self.state = {"update": 0, "epoch": 0, "position": 0, "order": None, "losses": [], "chains": None}

    def done(self, state):
        return state["epoch"] >= self.method.num_epochs

    def step(self, state, interrupt):
        model, data, method, generator = self.model, self.data, self.method, self.generator
        size = data.shape[0]
        if state["chains"] is None and method.persistent:
            state["chains"] = data[torch.randperm(size, generator=generator, device=data.device)[:self.batch]].clone()
        if state["order"] is None:
            state["order"] = torch.randperm(size, generator=generator, device=data.device)
        v_data = data.index_select(0, state["order"][state["position"]:state["position"] + self.batch])
        gradients, v_minus = model.cd_step(v_data, state["chains"] if method.persistent else None,
                                           method.k, generator)
        if method.persistent:
            state["chains"] = v_minus
        self.optimizer.step(gradients)
        state["update"] += 1
        state["position"] += v_data.shape[0]
        if state["position"] >= size:
            self._end_epoch(state)
        return interrupt.pending

    def _end_epoch(self, state):
        data, size = self.data, self.data.shape[0]
        sample = torch.randperm(size, generator=self.generator, device=data.device)[:MONITOR_SIZE]
        loss = float(self.model.cd_monitor(data.index_select(0, sample), self.generator).mean())
        if not (math.isfinite(loss) and all(bool(torch.isfinite(p).all()) for p in self.params.values())):
            _diverged(state, self.params)
        state["losses"].append(loss)
        state.update(epoch=state["epoch"] + 1, position=0, order=None)
        log.debug("CD epoch %d: %s %.6g", state["epoch"], getattr(self.model, "cd_monitor_name", "loss"),
                  state["losses"][-1])

    def tensors(self):
        return self.params

    def extra_state(self):
        return {"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state()}

    def load_extra_state(self, saved):
        self.optimizer.load_state_dict(saved["optimizer"])
        self.generator.set_state(saved["generator"])

    def flush(self, state):
        pass

    def postfix(self, state):
        return {"loss": f"{state['losses'][-1]:.4g}"} if state["position"] == 0 and state["losses"] else None


def _diverged(state, params):
    bad = [name for name, p in params.items() if not bool(torch.isfinite(p).all())]
    raise MethodError(f"ContrastiveDivergence: training diverged by update {state['update']} "
                      f"(non-finite {', '.join(bad) or 'training loss'}); lower lr or momentum, or "
                      "check the data's scale")
