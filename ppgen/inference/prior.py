"""The program run forwards: draws of its prior and of its data.

:func:`prior_draws` gives ArviZ's ``prior`` and ``prior_predictive`` groups: each draw
runs the model with every observed site drawn afresh (:class:`ReplicateObserved`), so the
latent sites come from :math:`p(\\theta)` and the observed sites from
:math:`p(y \\mid \\theta)` at the same draw. A family's latent sites are its global
sites, and its data are drawn by its own :meth:`~ppgen.model.GenerativeModel.replicate`.
"""

from __future__ import annotations

import pyro.poutine as poutine
import torch
from pyro.poutine.uncondition_messenger import UnconditionMessenger

from ..errors import ModelError


class ReplicateObserved(UnconditionMessenger):
    """Pyro's ``uncondition``, which draws every observed site afresh, except the
    ``pyro.deterministic`` sites (observed ``Delta`` sites): drawn, a deterministic vector
    inside a plate would come back broadcast against the plate."""

    def _process_message(self, msg):
        if not msg["infer"].get("_deterministic"):
            super()._process_message(msg)


def prior_draws(program, num: int, seed: int, params: dict | None = None) -> tuple[dict, dict]:
    """``num`` joint draws of the program's prior and data.

    Parameters
    ----------
    program : Program
    num : int
        Number of draws.
    seed : int
        Seeds torch's generator for the draws (restored after).
    params : dict, optional
        Fitted values of a plain program's own ``pyro.param`` sites (they have no prior).

    Returns
    -------
    (dict, dict)
        ``{latent or deterministic site: (num, *shape)}`` and ``{observed site: (num, *shape)}``.
    """
    generative = program.generative
    if generative is not None and not generative.global_sites():
        raise ModelError(f"{type(generative).__name__} has no prior to draw from: its fitted weights are "
                         "a point estimate, not latent sites")
    latent = [*program.latent, *program.deterministic]
    if generative is not None:
        latent = [n for n in latent if n in set(generative.global_sites())]
    draws = {n: [] for n in latent}
    data = {n: [] for n in ([generative.observed_site] if generative is not None else program.observed)}
    model = program.model if generative is not None else ReplicateObserved()(program.model)
    model = program.with_params(model, params or {})
    with torch.random.fork_rng(devices=[]), torch.no_grad(), poutine.block():
        torch.manual_seed(seed)
        for _ in range(num):
            trace = poutine.trace(model).get_trace(**program.kwargs)
            for name in draws:
                draws[name].append(trace.nodes[name]["value"])
            if generative is not None:
                values = {n: trace.nodes[n]["value"] for n in generative.global_sites()}
                data[generative.observed_site].append(generative.replicate(values, **program.kwargs))
            else:
                for name in data:
                    data[name].append(trace.nodes[name]["value"])
    stack = lambda values: {k: torch.stack(v) for k, v in values.items() if v}  # noqa: E731
    return stack(draws), stack(data)
