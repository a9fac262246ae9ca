"""The one training loop: SVI and gradient MAP, Adversarial and ContrastiveDivergence run it.

A method hands :func:`train` a :class:`Trainer` (one update of its parameters, and
what a checkpoint must hold besides them) and a state dict (the step counter, the
losses, the position in the data: everything the method's updates read and write
that is not a tensor of the model). The loop owns the rest:

- the progress bar;
- Ctrl-C, held until the current update ends (:class:`DeferredInterrupt`), so a
  checkpoint never falls between a parameter update and its step count;
- atomic checkpoints every ``checkpoint_every`` updates, at the end and on Ctrl-C,
  and resuming from them, so that a resumed run equals the uninterrupted one (the
  fingerprint refuses a checkpoint of another run).

Data-parallel training (:mod:`ppgen.inference.data_parallel`) runs the same loop:
its trainers all-reduce their gradients inside the update, carry the interrupt flag
in that all-reduce so every rank stops after the same update, and write their
checkpoints from rank 0 (:class:`Ranks`).
"""

from __future__ import annotations

import copy
import logging
import signal
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from .checkpoint import FORMAT, atomic_save, resume_from

log = logging.getLogger("ppgen")


class Trainer(Protocol):
    """One method's updates, as the training loop drives them."""

    def done(self, state: dict) -> bool:
        """Whether training has finished."""

    def step(self, state: dict, interrupt: DeferredInterrupt) -> bool:
        """One update, advancing ``state``; return whether to stop now: whether Ctrl-C came
        (``interrupt.pending``, read as late as the update allows), over ranks whether it
        came to any rank."""

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint holds by name, restored in place on resume."""

    def extra_state(self) -> dict[str, Any]:
        """What else a checkpoint holds (optimisers, random-number generators)."""

    def load_extra_state(self, saved: dict[str, Any]) -> None:
        """Restore :meth:`extra_state` from a checkpoint ``saved``."""

    def flush(self, state: dict) -> None:
        """Bring ``state`` up to date (losses recorded on the device) before it is saved or returned."""

    def postfix(self, state: dict) -> dict[str, str] | None:
        """What the progress bar shows after the latest update (None: leave it)."""


class OneProcess:
    """Training in this process alone: it writes the checkpoints and shows the progress bar."""

    main = True

    def save(self, payload: dict, path: str) -> None:
        atomic_save(payload, path)

    def check_resumed(self, path: str, saved: dict | None) -> None:
        """Hook for ranks that must agree on the checkpoint they resumed from."""


class DeferredInterrupt:
    """Holds Ctrl-C until the current update ends (``pending`` says one came)."""

    def __init__(self, active: bool = True) -> None:
        self.active, self.pending = active, False
        self.previous: Any = None

    def __enter__(self) -> DeferredInterrupt:
        if self.active and threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.pending = True

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


@dataclass(frozen=True)
class Checkpoints:
    """Where and how often to checkpoint: ``path`` (None: never), every ``every`` updates;
    ``resume`` from an existing file of the same run (``fingerprint``)."""

    path: str | None
    every: int
    resume: bool
    fingerprint: str


def train(trainer: Trainer, state: dict, *, checkpoints: Checkpoints, total: int, counter: str, desc: str,
          progress: bool, ranks: OneProcess | None = None) -> dict:
    """Run ``trainer`` until it is done; return the final ``state``.

    ``state[counter]`` counts the updates (the progress bar's position out of
    ``total``). On resume, ``state`` is replaced by the checkpoint's.
    """
    ranks = ranks or OneProcess()
    path = checkpoints.path

    def save() -> None:
        assert path is not None
        trainer.flush(state)
        ranks.save({"format": FORMAT, "kind": "checkpoint", "fingerprint": checkpoints.fingerprint,
                    "params": {k: v.detach().clone() for k, v in trainer.tensors().items()},
                    "state": copy.deepcopy(state), **trainer.extra_state()}, path)

    if path and checkpoints.resume:
        saved = resume_from(path, checkpoints.fingerprint, trainer.tensors())
        ranks.check_resumed(path, saved)
        if saved is not None:
            state = saved["state"]
            trainer.load_extra_state(saved)
            if ranks.main:
                log.info("resumed %s from %s at %s %d", desc, path, counter, state[counter])
    bar = tqdm(total=total, initial=min(state[counter], total), disable=not (progress and ranks.main),
               desc=desc, leave=False)
    try:
        with DeferredInterrupt(active=bool(path)) as interrupt:
            while not trainer.done(state):
                stop = trainer.step(state, interrupt)
                bar.update()
                shown = trainer.postfix(state)
                if shown:
                    bar.set_postfix(shown)
                if path and state[counter] % checkpoints.every == 0:
                    save()
                if stop:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        if path:
            save()
            if ranks.main:
                log.warning("interrupted at %s %d; checkpoint saved to %s", counter, state[counter], path)
        raise
    finally:
        bar.close()
    trainer.flush(state)
    if path:
        save()
    return state
