"""Where each continuous latent site lives in the flat unconstrained vector NUTS moves.

Every latent site is a slice ``[start, stop)`` of the vector, reshaped to its
unconstrained shape and mapped to its support by its transform. One kind of site
holds entries that are not unknowns at all: Pyro's ``obs_mask`` splits a site ``y`` into
``y_observed`` (the data, masked to the observed entries) and a latent ``y_unobserved``
masked to the *missing* entries, joined by ``where``. ``y_unobserved``'s entries at
observed positions have no density and change nothing, so a sampler that moves them
wanders a flat direction for ever (Pyro's and NumPyro's NUTS hit the maximum tree depth
at every transition). Here only the missing entries are in the vector; the others are
held at the observed values (:attr:`~ppgen.inference.program.SiteInfo.missing_entries`),
which is exact: the potential and the other sites' posterior are unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class FlatSite:
    """Where one latent site lives in the flat vector, and how to map it back.

    ``free``: where only some entries are sampled, their flat indices into the site's
    unconstrained value; ``held`` the (unconstrained) values of the other entries, and
    ``order`` the permutation that interleaves ``[sampled, held]`` back into place.
    """

    name: str
    start: int
    stop: int
    unconstrained_shape: tuple  # one chain's unconstrained value
    shape: tuple  # one chain's constrained value
    to_constrained: object  # a torch Transform, unconstrained -> constrained
    free: torch.Tensor | None = None
    held: torch.Tensor | None = None
    order: torch.Tensor | None = None

    def full(self, piece: torch.Tensor) -> torch.Tensor:
        """``(..., stop - start)`` sampled entries -> ``(..., *unconstrained_shape)``."""
        lead = piece.shape[:-1]
        if self.free is not None:
            held = self.held.to(piece).expand(lead + self.held.shape)
            piece = torch.cat([piece, held], -1).index_select(-1, self.order.to(piece.device))
        return piece.reshape(lead + self.unconstrained_shape)

    def sampled(self, flat: torch.Tensor) -> torch.Tensor:
        """``(..., numel)`` a whole unconstrained value, flattened -> ``(..., stop - start)``."""
        return flat if self.free is None else flat.index_select(-1, self.free.to(flat.device))


def lay_out(program, init: dict, transforms: dict, chains: int) -> list[FlatSite]:
    """The flat layout of ``program``'s continuous latent sites, from Pyro's
    ``initialize_model`` starting values ``init`` (given a leading chain dimension here when
    ``chains == 1``) and ``transforms`` (constrained -> unconstrained)."""
    sites, start = [], 0
    for info in program.continuous_sites:
        if info.name not in init:
            continue
        unconstrained = tuple(init[info.name].shape[1:]) if chains > 1 else tuple(init[info.name].shape)
        numel = math.prod(unconstrained)
        site = FlatSite(info.name, start, start + numel, unconstrained, info.shape, transforms[info.name].inv)
        missing = getattr(info, "missing_entries", None)
        if missing is not None and unconstrained == tuple(info.shape) and missing.numel() < numel:
            like = init[info.name]
            observed = torch.ones(numel, dtype=torch.bool)
            observed[missing] = False
            held = transforms[info.name](info.filled.to(like.dtype).to(like.device)).reshape(-1)[observed]
            site.free, site.held = missing, held.detach()
            site.order = torch.argsort(torch.cat([missing, observed.nonzero().squeeze(-1)]))
            site.stop = start + missing.numel()
        sites.append(site)
        start = site.stop
    if chains == 1:
        for name in list(init):
            init[name] = init[name].unsqueeze(0)
    return sites
