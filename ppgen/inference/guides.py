"""A normalizing-flow guide for the continuous latents of any Pyro program.

:class:`AutoFlow` is what ``SVI(guide="flow")`` builds. Like Pyro's
``AutoContinuous`` guides it packs every continuous latent site into one
unconstrained vector :math:`\\zeta \\in R^D`; its variational family is

.. math::
    u \\sim N(0, I_D), \\quad v = g(u), \\quad \\zeta = m + e^{\\sigma} \\odot v, \\quad
    \\theta_i = T_i(\\zeta_i),

where :math:`g` is a stack of flow layers from :mod:`ppgen.nn` (inverse
autoregressive rational-quadratic splines by default: sampling and the density
of a sample are one pass each), :math:`m, \\sigma` are learnt, and :math:`T_i` is
``biject_to`` of site :math:`i`'s support, whose log-Jacobian enters
:math:`\\log q`. The flow layers start as the identity, so the guide starts as
``AutoNormal`` does: :math:`N(m_0, s_0^2 I)` at the model's initial values
:math:`m_0` with ``init_scale`` :math:`s_0`.
"""

from __future__ import annotations

import math

import torch
from pyro.infer.autoguide import AutoContinuous, init_to_median

from ..errors import MethodError
from ..nn.bijections import ElementwiseAffine
from ..nn.elementwise import RationalQuadraticSpline
from ..nn.flows import STRUCTURES, TRANSFORMS, Flow, FlowDistribution, flow_layers


class AutoFlow(AutoContinuous):
    """Flow-based variational posterior over all continuous latent sites.

    Parameters
    ----------
    model : callable
        The Pyro program (discrete sites must be enumerated out or blocked).
    num_layers : int
        Flow layers.
    hidden : sequence of int, optional
        Conditioner widths; default two layers of ``min(max(32, 4 D), 256)``.
    transform : {"spline", "affine"}
    structure : {"autoregressive", "coupling"}
        Autoregressive layers are used in the inverse-autoregressive direction.
    bins : int
        Spline bins on ``[-bound, bound]`` (in the units of :math:`v`).
    bound : float
    init_loc_fn : callable
        Pyro's per-site initialisation (``init_to_median`` by default).
    init_scale : float
        :math:`s_0`, the initial scale of every unconstrained coordinate.
    """

    def __init__(self, model, *, num_layers=3, hidden=None, transform="spline",
                 structure="autoregressive", bins=8, bound=5.0, init_loc_fn=init_to_median,
                 init_scale=0.1):
        if not (isinstance(num_layers, int) and num_layers >= 1):
            raise MethodError(f"AutoFlow(num_layers={num_layers!r}) must be a positive integer")
        if transform not in TRANSFORMS:
            raise MethodError(f"AutoFlow(transform={transform!r}): choose one of {TRANSFORMS}")
        if structure not in STRUCTURES:
            raise MethodError(f"AutoFlow(structure={structure!r}): choose one of {STRUCTURES}")
        if not (init_scale > 0 and math.isfinite(init_scale)):
            raise MethodError(f"AutoFlow(init_scale={init_scale!r}) must be positive")
        try:
            RationalQuadraticSpline(bins, bound)
        except (TypeError, ValueError) as exc:
            raise MethodError(f"AutoFlow: {exc}") from None
        super().__init__(model, init_loc_fn=init_loc_fn)
        self.options = {"num_layers": num_layers, "hidden": hidden, "transform": transform,
                        "structure": structure, "bins": bins, "bound": bound}
        self.init_scale = float(init_scale)
        self.flow = None

    def _setup_prototype(self, *args, **kwargs):
        super()._setup_prototype(*args, **kwargs)
        dim = self.latent_dim
        options = dict(self.options)
        hidden = options.pop("hidden")
        if hidden is None:
            width = min(max(32, 4 * dim), 256)
            hidden = (width, width)
        loc = self._init_loc().detach()
        affine = ElementwiseAffine(loc, torch.full_like(loc, math.log(self.init_scale)))
        layers = flow_layers(dim, options.pop("num_layers"), hidden=tuple(hidden),
                             inverse_autoregressive=True, **options)
        # Data-to-noise order: the affine layer meets the latent vector first.
        self.flow = Flow(dim, [affine, *layers]).to(device=loc.device, dtype=loc.dtype)

    def get_posterior(self, *args, **kwargs):
        """:math:`q(\\zeta)` as a distribution over the packed unconstrained vector."""
        # Not self.flow: PyroModule.__getattr__ would announce every weight as a
        # param site on each call (~1 ms a step); the optimiser finds them anyway.
        return FlowDistribution(self._modules["flow"])
