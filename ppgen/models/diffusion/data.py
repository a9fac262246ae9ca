"""How a :class:`~ppgen.models.diffusion.DDPM` reads data: layouts, labels, units.

Vectors are ``(N, D)``; images ``(N, C, H, W)`` or flat ``(N, C*H*W)``. With the
discretized decoder every value must be one of the ``levels`` values
:math:`k / (L - 1)` in [0, 1]. Conditional models take ``(x, labels)``, a dict
``{"x": ..., "labels": ...}`` (or ``"context"``) or a
:class:`~ppgen.models.vae.base.ConditionalData`; ``data_kwargs`` hands the labels
to the Pyro programs as the keyword ``condition`` (Pyro's handlers reserve
``context``). The model works in its own units, :math:`z = (x - m) / s`.
"""

from __future__ import annotations

import torch

from ...data import as_tensor, check_second_moments
from ...errors import DataError


class DiffusionData:
    """Data checking and unit conversion for :class:`~ppgen.models.diffusion.DDPM` (a mixin:
    it reads ``event_shape``, ``is_image``, ``data_dim``, ``decoder``, ``levels``,
    ``num_classes``, ``shift`` and ``scale``)."""

    def check_data(self, data, name="data"):
        """``data`` as a float tensor ``(N, *event_shape)`` (images may come flat), checked
        to lie on the ``levels`` grid in [0, 1] for the discretized decoder."""
        x = as_tensor(data, name, dtype=self.dtype, device=self.device)
        if not x.is_floating_point():
            x = x.to(self.dtype)
        check_second_moments(x, name)  # the noise-prediction loss squares the data
        if x.dim() == 1 and self.event_shape == (1,):
            x = x[:, None]
        if self.is_image and x.dim() == 2 and x.shape[1] == self.data_dim:
            x = x.reshape((-1,) + self.event_shape)
        if x.dim() != 1 + len(self.event_shape) or tuple(x.shape[1:]) != self.event_shape:
            want = ", ".join(map(str, self.event_shape))
            raise DataError(f"{name}: expected shape (N, {want}), got {tuple(x.shape)}")
        if self.decoder == "discretized":
            top = self.levels - 1
            off = (x < 0) | (x > 1) | ((x * top - torch.round(x * top)).abs() > 1e-3)
            if bool(off.any()):
                raise DataError(f"{name}: the discretized decoder needs values k/{top} in [0, 1] "
                                f"(levels={self.levels}); found {x[off][0].item()!r}")
        return x

    def check_labels(self, labels, n=None, name="labels"):
        """Class labels as a long tensor ``(n,)`` in ``[0, num_classes)`` (a single label is repeated)."""
        if not self.num_classes:
            raise DataError(f"{name}: this DDPM is unconditional (num_classes=0) and takes no labels")
        c = as_tensor(labels, name, device=self.device)
        if c.dim() == 0 and n is not None:
            c = c.expand(n)
        if c.dim() != 1:
            raise DataError(f"{name}: expected a 1-D array of class labels, got shape {tuple(c.shape)}")
        bad = (c < 0) | (c >= self.num_classes)
        if c.is_floating_point():
            bad = bad | (c != torch.round(c))
        if bool(bad.any()):
            raise DataError(f"{name}: labels must be integers in [0, {self.num_classes}), got {c[bad][0].item()!r}")
        if n is not None and c.shape[0] != n:
            raise DataError(f"{name}: has {c.shape[0]} labels for {n} data points")
        return c.long()

    def _split(self, data, condition, name):
        """``(x, labels)`` from ``x``, ``(x, labels)`` or ``{"x": ..., "context"/"labels": ...}``."""
        if isinstance(data, dict):
            keys = set(data) - {"x"}
            if "x" not in data or len(keys) > 1 or not keys <= {"context", "labels"}:
                raise DataError(f"{name}: a dict of data needs the keys 'x' and 'labels' (or 'context'), "
                                f"got {sorted(data)}")
            data, condition = data["x"], data.get("labels", data.get("context", condition))
        elif isinstance(data, tuple):
            if len(data) != 2:
                raise DataError(f"{name}: give (x, labels), got a tuple of {len(data)}")
            data, condition = data
        elif hasattr(data, "x") and hasattr(data, "context"):  # ppgen.models.vae.base.ConditionalData
            data, condition = data.x, data.context
        x = self.check_data(data, name)
        if condition is None:
            return x, None
        return x, self.check_labels(condition, x.shape[0], f"{name} labels")

    def data_kwargs(self, data, name="data"):
        # The keyword is "condition": Pyro's messengers take "context" themselves.
        x, labels = self._split(data, None, name)
        return {"data": x} if labels is None else {"data": x, "condition": labels}

    def analysis_kwargs(self, kwargs):
        """The data ``ppgen.fit`` traces the model on to learn its sites: the first two rows
        (the whole reverse chain on every datum would cost as much as sampling the data set)."""
        return {k: v[:2] if isinstance(v, torch.Tensor) and k in ("data", "condition") else v
                for k, v in kwargs.items()}

    def to_model_units(self, x):
        """Data to the model's units: :math:`(x - m) / s`."""
        return (x - self.shift) / self.scale

    def to_data_units(self, z):
        """Model units back to data (rounded to the nearest level for the discretized decoder)."""
        x = self.shift + self.scale * z
        if self.decoder == "discretized":
            top = self.levels - 1
            x = torch.round(x.clamp(0, 1) * top) / top
        return x
