"""How an accelerator declines: :class:`Refused`, and :func:`attempt`, which turns any
failure of an accelerator into its absence, with the reason logged."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("ppgen")


class Refused(Exception):
    """An accelerator that does not apply to this run; the message says why."""


class Unsafe(Refused):
    """An accelerator that must not run: its compiled code could come from someone else."""


class ChainsApart(Refused):
    """Several chains whose potential is Pyro's own, chain by chain: batched, every chain would
    wait for the deepest tree, so with ``chain_method="auto"`` they run apart instead."""


def attempt(build: Callable[[], Any], refused: str = "NUTS: an accelerator not used ({})") -> tuple[Any, str]:
    """``(build(), "")``, or ``(None, why)`` where ``build`` raises :class:`Refused` or fails;
    ``refused`` with the reason in place of ``{}`` is logged (the run goes on without that
    accelerator): at INFO where the accelerator does not apply, at WARNING where its build
    failed or was unsafe (:class:`Unsafe`)."""
    level = logging.INFO
    try:
        return build(), ""
    except Unsafe as exc:
        why, level = str(exc), logging.WARNING
    except Refused as exc:
        why = str(exc)
    except Exception as exc:  # noqa: BLE001 - an accelerator failing must never fail the fit
        why, level = f"{type(exc).__name__}: {str(exc)[:200]}", logging.WARNING
    log.log(level, refused.format(why))
    return None, why
