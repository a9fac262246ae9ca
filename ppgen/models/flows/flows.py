"""Normalizing flows as density models: RealNVP, MAF and neural spline flows.

A flow is an invertible map :math:`f` from data to standard normal noise,

.. math::
    x = f^{-1}(z),\\quad z \\sim N(0, I_D), \\qquad
    \\log p(x \\mid c) = \\log N(f(x; c); 0, I_D) + \\log|\\det J_f(x; c)|,

so ``log_prob`` is exact and ``sample`` is one draw of noise pushed through
:math:`f^{-1}`. :math:`f` starts with a fixed standardisation
:math:`(x - m) / s` (set from the data by :meth:`initialize`, saved with the
weights), then ``num_layers`` learnt layers with the coordinate order reversed
between them:

* :class:`RealNVP`: affine coupling (Dinh et al. 2017);
* :class:`MAF`: masked affine autoregressive layers (Papamakarios et al. 2017);
  one pass to evaluate, ``dim`` passes to sample;
* :class:`NeuralSplineFlow`: rational-quadratic splines (Durkan et al. 2019),
  autoregressive (default) or coupling.

With ``context_dim > 0`` every layer also sees a context vector :math:`c`
(standardised the same way): a conditional density :math:`p(x \\mid c)`; data are
then ``(x, context)`` pairs (or a dict with keys ``x`` and ``context``;
``model()`` takes the rows as ``condition=``). The model has no latent sites: ``model()``
observes ``obs`` under the data plate with the flow's density, the network
weights are the point estimate, and ``MAP`` (or ``SVI``, whose ELBO without
latents *is* the log-likelihood) is maximum likelihood, minibatched with
``batch_size``.

NUTS is not offered: a posterior over network weights is multimodal by
construction (hidden units permute freely), has thousands of dimensions even
for a small flow, and gradients cost a full pass over the data, so a sampler
would neither mix nor finish; use an ensemble of MAP fits to gauge weight
uncertainty instead.

Why ppgen's own layers (:mod:`ppgen.nn`) and not Pyro's transforms or zuko:
a training step of a spline flow is faster with them, and all three match the
brute-force change of variables to rounding; trained through ``ppgen.fit`` on
2-D densities they end closer to the true entropy than zuko's NSF, in less time
(``benchmarks/bench_flows.py``, RESULTS.md). So zuko stays an optional peer, not a
dependency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro
import torch

from ...data import as_tensor
from ...errors import DataError, ModelError
from ...model import GenerativeModel
from ...nn.bijections import Standardize
from ...nn.flows import Flow, FlowDistribution, flow_layers
from ..synthetic import two_moons

#: Rows per chunk when scoring many points without gradients.
CHUNK = 65536


def _positive_int(name, value, minimum=1):
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise ModelError(f"{name} must be an integer >= {minimum}, got {value!r}")


class NormalizingFlow(GenerativeModel):
    """Shared machinery of the flow families (not registered itself).

    Parameters
    ----------
    dim : int
        Data dimension :math:`D`.
    num_layers : int
        Learnt flow layers.
    hidden : sequence of int
        Hidden widths of each layer's conditioner network.
    context_dim : int
        Size of the conditioning vector; 0 for an unconditional density.
    activation : str
        Hidden activation (see :func:`ppgen.nn.make_activation`).
    """

    log_prob_kind = "exact"
    methods = ("map", "svi")
    structure, transform = "coupling", "affine"

    def __init__(self, dim: int, num_layers: int = 4, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
                 activation: str = "relu", **layer_options: Any) -> None:
        super().__init__()
        _positive_int("dim", dim)
        _positive_int("num_layers", num_layers)
        _positive_int("context_dim", context_dim, minimum=0)
        hidden = tuple(hidden) if isinstance(hidden, (list, tuple)) else ()
        if not hidden or not all(isinstance(h, int) and h > 0 for h in hidden):
            raise ModelError(f"hidden must be a non-empty sequence of positive integers, got {hidden!r}")
        self.dim, self.num_layers, self.hidden = dim, num_layers, hidden
        self.context_dim, self.activation = context_dim, activation
        try:
            options = {"structure": self.structure, "transform": self.transform, **layer_options}
            layers = flow_layers(dim, num_layers, hidden=hidden, context_dim=context_dim,
                                 activation=activation, **options)
        except ValueError as exc:
            raise ModelError(f"{type(self).__name__}: {exc}") from None
        self.flow = Flow(dim, [Standardize(dim), *layers], context_dim)
        self.context_standardize = Standardize(context_dim) if context_dim else None
        self.register_buffer("initialized", torch.tensor(False))

    def get_config(self):
        return {"dim": self.dim, "num_layers": self.num_layers, "hidden": list(self.hidden),
                "context_dim": self.context_dim, "activation": self.activation}

    def global_sites(self):
        return ()

    @property
    def conditional(self):
        return self.context_dim > 0

    # ------------------------------------------------------------ data
    def check_data(self, data, name="data"):
        return as_tensor(data, name, dtype=self.dtype, device=self.device, ndim=2, dim=self.dim)

    def check_context(self, context, rows=None, name="context"):
        """``context`` as a checked ``(N, context_dim)`` tensor (``rows`` = required N)."""
        if not self.conditional:
            if context is not None:
                raise DataError(f"{name}: {type(self).__name__} was built with context_dim=0 "
                                "(an unconditional flow) and takes no context")
            return None
        if context is None:
            raise DataError(f"{name}: required; this flow is conditional (context_dim={self.context_dim})")
        context = as_tensor(context, name, dtype=self.dtype, device=self.device, ndim=2,
                            dim=self.context_dim)
        if rows is not None and context.shape[0] != rows:
            raise DataError(f"{name}: has {context.shape[0]} rows but the data have {rows}")
        return context

    def _split(self, data, context, name):
        """``(x, context)`` from ``data`` given as x, ``(x, context)`` or ``{"x", "context"}``."""
        if isinstance(data, dict):
            unknown = set(data) - {"x", "context"}
            if unknown or "x" not in data:
                raise DataError(f"{name}: a dict of data needs the keys 'x' and 'context', got {sorted(data)}")
            data, context = data["x"], data.get("context", context)
        elif isinstance(data, tuple):
            if len(data) != 2:
                raise DataError(f"{name}: give (x, context), got a tuple of {len(data)}")
            data, context = data
        x = self.check_data(data, name)
        return x, self.check_context(context, x.shape[0])

    def data_kwargs(self, data, name="data"):
        # The keyword is "condition": Pyro's messengers take "context" themselves.
        x, context = self._split(data, None, name)
        return {"data": x} if context is None else {"data": x, "condition": context}

    def initialize(self, data, generator=None, condition=None, **kwargs):
        """Fix the standardisation from the data's (and conditions') mean and sd
        (first call only: later fits continue training the same function)."""
        if bool(self.initialized):
            return
        x = self.check_data(data)
        self.flow.layers[0].set(*_moments(x))
        if self.conditional:
            self.context_standardize.set(*_moments(self.check_context(condition, x.shape[0])))
        self.initialized.fill_(True)

    # ------------------------------------------------------------ densities
    def _scaled_context(self, context):
        return None if context is None else self.context_standardize(context)[0]

    def distribution(self, context=None, batch_shape=None):
        """The flow's density (at checked ``context`` rows) as a Pyro distribution."""
        return FlowDistribution(self.flow, self._scaled_context(context), batch_shape)

    def model(self, data=None, *, condition=None, n=None, subsample_size=None):
        if data is not None:
            size = data.shape[0]
        elif condition is not None:
            size = condition.shape[0]
        else:
            size = n or 1
        with pyro.plate("data", size, subsample_size=subsample_size) as idx:
            batch = data[idx] if data is not None else None
            rows = condition[idx] if condition is not None else None
            return pyro.sample("obs", self.distribution(rows, (idx.shape[0],)), obs=batch)

    def log_prob(self, data, context=None):
        """Per-datum :math:`\\log p(x_i \\mid c_i)` in nats (differentiable)."""
        x, context = self._split(data, context, "data")
        return self.flow.log_prob(x, self._scaled_context(context))

    def log_likelihood(self, data, params=None, condition=None):
        """``(1, N)``: the log density of each datum (the weights are the one draw)."""
        with torch.no_grad():
            parts = [self.flow.log_prob(data[i:i + CHUNK], self._scaled_context(
                None if condition is None else condition[i:i + CHUNK])) for i in range(0, data.shape[0], CHUNK)]
        return torch.cat(parts)[None]

    def sample(self, n, params=None, context=None):
        """``n`` draws, shape ``(n, dim)``; a conditional flow needs ``context``: one
        row (``(context_dim,)``: all draws at it) or ``n`` rows (one draw each)."""
        if not (isinstance(n, int) and n > 0):
            raise DataError(f"n must be a positive integer, got {n!r}")
        if context is not None and self.conditional:
            context = torch.as_tensor(context)
            if context.dim() == 1:
                context = context.expand(n, -1)
        context = self.check_context(context, n)
        with torch.no_grad():
            return self.distribution(context, (n,)).sample()

    def replicate(self, params, data, condition=None, **kwargs):
        return self.sample(data.shape[0], context=condition)

    # ------------------------------------------------------------ the map itself
    def forward(self, x, context=None):
        """Data to noise, :math:`z = f(x; c)`: shape ``(N, dim)``."""
        x, context = self._split(x, context, "x")
        return self.flow(x, self._scaled_context(context))[0]

    def inverse(self, z, context=None):
        """Noise to data, :math:`x = f^{-1}(z; c)`: shape ``(N, dim)``."""
        z = as_tensor(z, "z", dtype=self.dtype, device=self.device, ndim=2, dim=self.dim)
        context = self.check_context(context, z.shape[0])
        return self.flow.inverse(z, self._scaled_context(context))[0]

    @classmethod
    def example(cls, seed=0):
        """A small flow and 512 points of two moons (noise sd 0.1)."""
        data = two_moons(512, generator=torch.Generator().manual_seed(seed))
        return cls(2, num_layers=2, hidden=(16, 16)), data


def _moments(values):
    loc = values.mean(0)
    scale = values.std(0) if values.shape[0] > 1 else torch.ones_like(loc)
    return loc, torch.where(scale > 0, scale, torch.ones_like(scale))


class RealNVP(NormalizingFlow):
    """RealNVP: affine coupling layers on a standard normal base.

    Each layer keeps the first half of the (reordered) coordinates and maps the
    rest by :math:`x_b \\mapsto (x_b - \\mu(x_a, c)) e^{-\\sigma(x_a, c)}`;
    sampling and evaluation are one pass each. Parameters as
    :class:`NormalizingFlow`.
    """

    structure, transform = "coupling", "affine"


class MAF(NormalizingFlow):
    """Masked autoregressive flow (MAF): affine autoregressive layers on a standard normal base.

    Each layer's shift and log-scale for coordinate :math:`i` come from a MADE
    network of :math:`x_{<i}` (and the context).

    ``log_prob`` is one pass per layer; ``sample`` is ``dim`` passes per layer.
    Parameters as :class:`NormalizingFlow`.
    """

    structure, transform = "autoregressive", "affine"


class NeuralSplineFlow(NormalizingFlow):
    """Neural spline flow: monotone rational-quadratic spline layers on a standard normal base.

    Parameters
    ----------
    dim, num_layers, hidden, context_dim, activation
        As :class:`NormalizingFlow`.
    bins : int
        Spline bins on ``[-bound, bound]`` (in standardised units; the map is
        the identity outside).
    bound : float
    structure : {"autoregressive", "coupling"}
        Autoregressive layers (as zuko's ``NSF``) see all earlier coordinates
        but sample in ``dim`` passes; coupling layers sample in one.
    """

    transform = "spline"

    def __init__(self, dim: int, num_layers: int = 4, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
                 activation: str = "relu", bins: int = 8, bound: float = 5.0,
                 structure: str = "autoregressive") -> None:
        _positive_int("bins", bins, minimum=2)
        if not (isinstance(bound, (int, float)) and math.isfinite(bound) and bound > 0):
            raise ModelError(f"bound must be a positive number, got {bound!r}")
        if structure not in ("autoregressive", "coupling"):
            raise ModelError(f"structure must be 'autoregressive' or 'coupling', got {structure!r}")
        super().__init__(dim, num_layers, hidden, context_dim, activation, structure=structure,
                         bins=bins, bound=float(bound))
        self.bins, self.bound, self.structure = bins, float(bound), structure

    def get_config(self):
        return {**super().get_config(), "bins": self.bins, "bound": self.bound, "structure": self.structure}
