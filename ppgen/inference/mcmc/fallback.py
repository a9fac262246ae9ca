"""How an accelerator declines: :class:`Refused`, and :func:`attempt`, which turns any
failure of an accelerator into its absence, with the reason logged."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("ppgen")


class Refused(Exception):
    """An accelerator that does not apply to this run; the message says why."""


def attempt(build: Callable[[], Any], refused: str = "NUTS: an accelerator not used ({})") -> tuple[Any, str]:
    """``(build(), "")``, or ``(None, why)`` where ``build`` raises :class:`Refused` or fails;
    ``refused`` with the reason in place of ``{}`` is logged at INFO (the run goes on without
    that accelerator)."""
    try:
        return build(), ""
    except Refused as exc:
        why = str(exc)
    except Exception as exc:  # noqa: BLE001 - an accelerator failing must never fail the fit
        why = f"{type(exc).__name__}: {str(exc)[:200]}"
    log.info(refused.format(why))
    return None, why
