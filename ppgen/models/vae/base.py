"""What autoencoders and VAEs share: a code :math:`z`, a decoder, a likelihood head.

Every family here has the same generative half,

.. math::
    z_i \\sim p(z), \\qquad x_i \\mid z_i \\sim p(x \\mid \\eta(z_i, c_i)),

with a decoder network :math:`\\eta`, an optional condition :math:`c_i`, and a
head from :mod:`ppgen.models.vae.likelihoods`; they differ in :math:`p(z)` and
in the encoder (the guide). :class:`DeepLatentModel` holds the common part: data
checking (with conditions), the Pyro ``model`` and the plate shared with the
guide, decoding, sampling, reconstruction and latent interpolation.

The networks' weights are the fitted quantity: there are no global latent
sites (``global_sites() == ()``), so ``ppgen.fit`` writes nothing into
``self.point`` and ``state_dict`` saves the weights. ``initialize`` (called by
``ppgen.fit`` before the first fit only) redraws the weights from the fit's
seed, so ``fit(model, x, seed=s)`` is reproducible, and starts the decoder's
output bias at the data mean.

Conditional models take data as ``(x, context)``; ``data_kwargs`` hands the
conditions to ``model``, ``guide`` and ``log_likelihood`` as the keyword
``condition`` (a float ``(N, context_dim)`` tensor, labels one-hot), not
``context``: Pyro's handlers call a program as ``_context_wrap(context, fn,
*args, **kwargs)``, so a keyword named ``context`` collides with theirs.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from torch import nn

from ...data import as_tensor
from ...errors import DataError, ModelError
from ...model import GenerativeModel
from .likelihoods import make_likelihood


def positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ModelError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def widths(name, value):
    try:
        out = tuple(int(w) for w in value)
    except (TypeError, ValueError):
        raise ModelError(f"{name} must be a sequence of positive integers, got {value!r}") from None
    if any(w < 1 for w in out):
        raise ModelError(f"{name} must be a sequence of positive integers, got {value!r}")
    return out


class ConditionalData:
    """Data points ``x`` with their conditions ``context`` (labels or vectors).

    What :meth:`ConditionalVAE.example` returns; a ``(x, context)`` tuple or a
    dict ``{"x": ..., "context": ...}`` works everywhere too. It behaves enough
    like a tensor for generic code: ``shape`` and ``len`` (of ``x``), indexing
    and slicing (both parts), ``to``, ``cpu``, ``double``, ``float``.
    """

    __slots__ = ("x", "context")

    def __init__(self, x, context):
        self.x, self.context = torch.as_tensor(x), torch.as_tensor(context)

    shape = property(lambda self: self.x.shape)
    dtype = property(lambda self: self.x.dtype)
    device = property(lambda self: self.x.device)

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, index):
        if isinstance(index, int):
            if not -len(self) <= index < len(self):
                raise IndexError(f"index {index} out of range for {len(self)} data points")
            index = slice(index, index + 1 if index != -1 else None)
        return ConditionalData(self.x[index], self.context[index])

    def __array__(self, *args, **kwargs):
        raise TypeError("ConditionalData holds two arrays (x, context); use .x and .context")

    def to(self, *args, **kwargs):
        x = self.x.to(*args, **kwargs)
        context = self.context.to(*args, **kwargs) if self.context.is_floating_point() else self.context
        return ConditionalData(x, context.to(x.device))

    def cpu(self):
        return self.to("cpu")

    def double(self):
        return self.to(torch.float64)

    def float(self):
        return self.to(torch.float32)

    def is_floating_point(self):
        return self.x.is_floating_point()

    def __repr__(self):
        return f"ConditionalData(x={tuple(self.x.shape)}, context={tuple(self.context.shape)})"


class DeepLatentModel(GenerativeModel):
    """Base of the autoencoder and VAE families; see the module docstring.

    Subclasses build ``self.encoder`` and ``self.decoder`` and define
    :meth:`prior` (the code distribution of ``model``), :meth:`_guide_code`
    (the guide's code site), :meth:`codes` (one code per datum) and
    :meth:`_decoder_output`.
    """

    data_plate = "data"
    observed_site = "obs"
    latent_site = "z"

    def __init__(self, event_shape, latent_dim, likelihood="bernoulli", *, noise_scale=None,
                 min_noise_scale=1e-2, num_classes=None, context_dim=None):
        super().__init__()
        self.register_buffer("initialized", torch.tensor(False))
        self.event_shape = tuple(event_shape)
        self.latent_dim = positive_int("latent_dim", latent_dim)
        if num_classes is not None and context_dim is not None:
            raise ModelError("give num_classes (labels) or context_dim (condition vectors), not both")
        self.num_classes = None if num_classes is None else positive_int("num_classes", num_classes)
        given_dim = None if context_dim is None else positive_int("context_dim", context_dim)
        self.context_dim = self.num_classes or given_dim or 0
        if self.num_classes is not None:
            # p(label) for sample() without a context: the training frequencies (set by initialize)
            self.register_buffer("class_weights", torch.full((self.num_classes,), 1.0 / self.num_classes))
        self.likelihood = likelihood
        self.head = make_likelihood(likelihood, self.event_shape, noise_scale, min_noise_scale)
        #: the weight of the code site's log densities in the ELBO (a VAE's beta)
        self.latent_weight = 1.0

    # ------------------------------------------------------------ protocol
    def global_sites(self):
        return ()

    @property
    def data_dim(self):
        return math.prod(self.event_shape)

    def get_config(self):
        config = {"latent_dim": self.latent_dim, "likelihood": self.likelihood, **self.head.config()}
        if self.num_classes is not None:
            config["num_classes"] = self.num_classes
        elif self.context_dim:
            config["context_dim"] = self.context_dim
        return config

    def check_data(self, data, name="data"):
        x = as_tensor(data, name, dtype=self.dtype, device=self.device)
        x = self._to_layout(x.to(self.dtype), name)
        self.head.check(x, name)
        return x

    def _to_layout(self, x, name):
        """``x`` as ``(N, *event_shape)``; subclasses accept other layouts."""
        if x.dim() != 1 + len(self.event_shape) or tuple(x.shape[1:]) != self.event_shape:
            raise DataError(f"{name}: expected shape (N, {', '.join(map(str, self.event_shape))}), "
                            f"got {tuple(x.shape)}")
        return x

    def _split(self, data, name):
        """``(x, context)`` from the data forms a model accepts."""
        if isinstance(data, ConditionalData):
            x, context = data.x, data.context
        elif isinstance(data, dict):
            unknown = set(data) - {"x", "context"}
            if unknown or "x" not in data:
                raise DataError(f"{name}: a dict of data needs the keys 'x' and 'context', got {sorted(data)}")
            x, context = data["x"], data.get("context")
        elif isinstance(data, tuple):
            if len(data) != 2:
                raise DataError(f"{name}: give data as (x, context), got a tuple of {len(data)}")
            x, context = data
        else:
            x, context = data, None
        if self.context_dim and context is None:
            raise DataError(f"{name}: {type(self).__name__} needs conditions: give (x, context)")
        if not self.context_dim and context is not None:
            raise DataError(f"{name}: {type(self).__name__} takes no conditions; give x alone")
        return x, context

    def data_kwargs(self, data, name="data"):
        x, context = self._split(data, name)
        x = self.check_data(x, name)
        if not self.context_dim:
            return {"data": x}
        return {"data": x, "condition": self.check_context(context, x.shape[0], f"{name} context")}

    def check_context(self, context, n=None, name="context"):
        """Conditions as a float ``(n, context_dim)`` tensor.

        With ``num_classes``, integer labels (a scalar or ``(N,)``) become one-hot
        rows, and float ``(N, num_classes)`` rows are taken as given. A single
        label or vector is repeated ``n`` times.
        """
        if not self.context_dim:
            raise DataError(f"{name}: {type(self).__name__} takes no conditions")
        if context is None:
            raise DataError(f"{name}: {type(self).__name__} needs conditions (context=...)")
        c = as_tensor(context, name, device=self.device)
        if self.num_classes is not None and (not c.is_floating_point() or c.dim() <= 1):
            if c.dim() > 1:
                raise DataError(f"{name}: labels must be a scalar or a 1-D array of class indices, "
                                f"got shape {tuple(c.shape)}")
            labels = c.reshape(-1)
            bad = (labels < 0) | (labels >= self.num_classes) | (labels != labels.round())
            if bool(bad.any()):
                raise DataError(f"{name}: labels must be integers in [0, {self.num_classes}), "
                                f"got {labels[bad][0].item()!r}")
            c = nn.functional.one_hot(labels.long(), self.num_classes)
        c = c.to(self.dtype)
        if c.dim() <= 1:
            if self.context_dim == 1:
                c = c.reshape(-1, 1)
            elif c.numel() == self.context_dim:
                c = c.reshape(1, -1)
        if c.dim() != 2 or c.shape[1] != self.context_dim:
            raise DataError(f"{name}: expected shape (N, {self.context_dim}), got {tuple(c.shape)}")
        if n is not None and c.shape[0] != n:
            if c.shape[0] != 1:
                raise DataError(f"{name}: has {c.shape[0]} rows for {n} data points")
            c = c.expand(n, -1)
        return c

    def log_likelihood(self, data, params=None, condition=None, **kwargs):
        """``log_prob`` as one draw: shape ``(1, N)`` (the weights are a point estimate)."""
        return self._log_prob(data, condition, **kwargs)[None]

    def log_prob(self, data, **kwargs):
        kw = self.data_kwargs(data)
        return self._log_prob(kw["data"], kw.get("condition"), **kwargs)

    def _log_prob(self, x, context, **kwargs):
        raise NotImplementedError

    def replicate(self, params, **kwargs):
        return self.sample(kwargs["data"].shape[0], context=kwargs.get("condition"))

    # ------------------------------------------------------------ the Pyro program
    def prior(self, size):
        """The code distribution of ``model`` for ``size`` points (event shape ``(latent_dim,)``)."""
        raise NotImplementedError

    def _decoder_output(self, z, context):
        """The decoder's unconstrained output ``(..., *event_shape)`` for codes ``(..., latent_dim)``."""
        raise NotImplementedError

    def _guide_code(self, x, context):
        raise NotImplementedError

    def _join(self, features, context):
        if context is None:
            return features
        return torch.cat([features, context.expand(features.shape[:-1] + context.shape[-1:])], -1)

    def model(self, data=None, *, condition=None, n=None, subsample_size=None):
        """:math:`z_i \\sim p(z)`, :math:`x_i \\sim p(x \\mid \\eta(z_i, c_i))` in the plate ``"data"``."""
        if data is not None:
            size = data.shape[0]
        elif condition is not None:
            size = condition.shape[0]
        elif n is not None:
            size = int(n)
        else:
            raise ModelError(f"{type(self).__name__}.model: give data or n")
        with pyro.plate(self.data_plate, size, subsample_size=subsample_size, device=self.device) as idx:
            x = self._rows(data, idx, subsample_size)
            c = self._rows(condition, idx, subsample_size)
            with poutine.scale(scale=self.latent_weight):
                z = pyro.sample(self.latent_site, self.prior(idx.shape[0]))
            output = self._decoder_output(z, c)
            pyro.sample(self.observed_site, self.head.distribution(output).to_event(len(self.event_shape)), obs=x)
        return z

    def guide(self, data=None, *, condition=None, n=None, subsample_size=None):
        """The encoder's code for each datum of the same plate (its minibatch too)."""
        if data is None:
            return None  # nothing to encode: the model draws codes from p(z)
        with pyro.plate(self.data_plate, data.shape[0], subsample_size=subsample_size,
                        device=self.device) as idx:
            return self._guide_code(self._rows(data, idx, subsample_size),
                                    self._rows(condition, idx, subsample_size))

    def _rows(self, values, idx, subsample_size):
        """``values[idx]`` under a subsampled plate. The guide and then the model of one
        training step gather the same minibatch (the same ``idx``), so the gathers of the
        current ``idx`` are kept and reused (a large gather is a few per cent of a VAE step,
        ``benchmarks/bench_vae.py``)."""
        if values is None or subsample_size is None:
            return values
        memo = self.__dict__.setdefault("_rows_memo", {})
        if memo.get("idx") is not idx:
            memo.clear()
            memo["idx"] = idx
        hit = memo.get(id(values))
        if hit is not None and hit[0] is values:
            return hit[1]
        rows = values[idx]
        memo[id(values)] = (values, rows)
        return rows

    # ------------------------------------------------------------ using the model
    def decode(self, z, context=None, *, mean=True):
        """Decode codes ``z`` ``(n, latent_dim)``: the mean of :math:`p(x \\mid z)`, or
        with ``mean=False`` a draw from it. Shape ``(n, *event_shape)``."""
        z = as_tensor(z, "z", dtype=self.dtype, device=self.device, ndim=2, dim=self.latent_dim).to(self.dtype)
        c = self.check_context(context, z.shape[0]) if self.context_dim else None
        with torch.no_grad():
            output = self._decoder_output(z, c)
            return self.head.mean(output) if mean else self.head.distribution(output).sample()

    def sample(self, n, params=None, *, context=None, mean=False):
        """``n`` new data points: codes from :meth:`prior`, then a draw from
        :math:`p(x \\mid z)` (``mean=True``: its mean, a smoother picture).

        Conditional models take ``context`` (one label/vector, or ``n``); without
        it, labels are drawn with their training frequencies (condition vectors
        have no distribution here, so they must be given). Draws use torch's global random state (``ppgen.fit`` and
        ``Fit.sample`` seed it).
        """
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise DataError(f"n must be a positive integer, got {n!r}")
        if context is None and self.num_classes is not None:
            context = torch.multinomial(self.class_weights, int(n), replacement=True)
        c = self.check_context(context, int(n)) if self.context_dim or context is not None else None
        with torch.no_grad():
            z = self.prior(int(n)).sample()
        return self.decode(z, c, mean=mean)

    def codes(self, data):
        """One code per datum, ``(N, latent_dim)``."""
        raise NotImplementedError

    def reconstruct(self, data):
        """Decode each datum's code: the mean of :math:`p(x \\mid z = \\mathrm{code}(x))`,
        shaped like the ``x`` given."""
        x, _ = self._split(data, "data")
        kw = self.data_kwargs(data)
        out = self.decode(self.codes(data), kw.get("condition"))
        return out.reshape(tuple(x.shape) if hasattr(x, "shape") else np.shape(x))

    def interpolate(self, x1, x2, steps=8, context=None):
        """Decoded means along the straight line between the codes of two data points.

        ``x1``, ``x2`` are single data points; conditional models decode along
        the line with one ``context``. Returns ``(steps, *event_shape)``.
        """
        steps = positive_int("steps", steps)
        pair = torch.stack([as_tensor(x1, "x1").reshape(-1), as_tensor(x2, "x2").reshape(-1)])
        data = pair if not self.context_dim else (pair, self.check_context(context, 2))
        ends = self.codes(data)
        t = torch.linspace(0, 1, steps, dtype=self.dtype, device=self.device)[:, None]
        line = (1 - t) * ends[0] + t * ends[1]
        return self.decode(line, None if not self.context_dim else self.check_context(context, steps))

    # ------------------------------------------------------------ initialisation
    def initialize(self, data, generator=None, condition=None, **kwargs):
        """Before the first fit: weights from ``generator``, output bias at the data mean."""
        if bool(self.initialized):
            return
        kw = self.data_kwargs(data if condition is None else (data, condition))
        x, condition = kw["data"], kw.get("condition")
        if generator is not None:
            reset_weights(self, generator)
        bias = self.decoder.output_bias if hasattr(self.decoder, "output_bias") else self.decoder[-1].bias
        with torch.no_grad():
            bias.copy_(self.head.output_bias(x.mean(0)).reshape(bias.shape))
        self.head.initialize(x)
        if self.num_classes is not None and condition is not None:
            self.class_weights.copy_(condition.mean(0))
        self.initialized.fill_(True)


def reset_weights(module, generator):
    """Redraw every linear and convolution layer as torch does by default
    (uniform in :math:`\\pm 1/\\sqrt{\\text{fan-in}}`), from ``generator``."""
    layers = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)
    with torch.no_grad():
        for layer in module.modules():
            if not isinstance(layer, layers):
                continue
            weight = layer.weight
            fan_in = weight.shape[1] * math.prod(weight.shape[2:])
            bound = 1 / math.sqrt(fan_in)
            for tensor in (weight, layer.bias):
                if tensor is not None:
                    draw = torch.rand(tensor.shape, generator=generator, dtype=torch.float64)
                    tensor.copy_((2 * draw - 1) * bound)
