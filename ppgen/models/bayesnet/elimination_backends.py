"""The array backends of the variable-elimination engine.

:mod:`ppgen.models.bayesnet.elimination` runs small plans in numpy (far less per-operation
overhead) and large ones in torch (any device); these two adapters hold the few
operations whose spelling differs between the libraries.
"""

from __future__ import annotations

import numpy as np
import torch


class TorchOps:
    """The few operations that differ between torch and numpy."""

    def __init__(self, device="cpu"):
        self.device = device

    @staticmethod
    def dtype(dtype):
        return dtype

    @staticmethod
    def cast(x, dtype):
        return x if x.dtype == dtype else x.to(dtype)

    @staticmethod
    def permute(x, perm):
        return x.permute(perm)

    @staticmethod
    def max(x, dim):
        return x.max(dim)

    @staticmethod
    def amax(x):
        return x.amax(-1)

    @staticmethod
    def einsum(spec, *xs):
        return torch.einsum(spec, *xs)

    @staticmethod
    def positive(x):
        return torch.where(x > 0, x, torch.ones_like(x))

    @staticmethod
    def log(x):
        return x.log()

    @staticmethod
    def exp(x):
        return x.exp()

    @staticmethod
    def stack(xs):
        return torch.stack(xs)

    @staticmethod
    def expand(x, shape):
        return x.expand(shape)

    def ones(self, shape, dtype):
        return torch.ones(shape, dtype=dtype, device=self.device)

    def zeros(self, shape, dtype):
        return torch.zeros(shape, dtype=dtype, device=self.device)


class _NumpyOps:
    @staticmethod
    def array(x):
        return x if isinstance(x, np.ndarray) else x.detach().numpy()

    @staticmethod
    def dtype(dtype):
        return _NUMPY_DTYPE[dtype]

    @staticmethod
    def cast(x, dtype):
        if not isinstance(x, np.ndarray):
            x = x.detach().numpy()
        return x if x.dtype == dtype else x.astype(dtype)

    @staticmethod
    def permute(x, perm):
        return x.transpose(perm)

    @staticmethod
    def max(x, dim):
        arg = x.argmax(dim)
        return np.take_along_axis(x, np.expand_dims(arg, dim), dim).squeeze(dim), arg

    @staticmethod
    def amax(x):
        return x.max(-1)

    @staticmethod
    def positive(x):
        return np.where(x > 0, x, 1.0).astype(x.dtype, copy=False)

    @staticmethod
    def log(x):
        with np.errstate(divide="ignore"):
            return np.log(x)

    @staticmethod
    def exp(x):
        return np.exp(x)

    @staticmethod
    def stack(xs):
        return np.stack(xs)

    @staticmethod
    def expand(x, shape):
        return x if x.shape == tuple(shape) else np.broadcast_to(x, shape)

    @staticmethod
    def ones(shape, dtype):
        return np.ones(shape, dtype=dtype)

    @staticmethod
    def zeros(shape, dtype):
        return np.zeros(shape, dtype=dtype)


NUMPY = _NumpyOps()
_NUMPY_DTYPE = {torch.float64: np.float64, torch.float32: np.float32, torch.float16: np.float16}
TORCH_DTYPE = {np.dtype(v): k for k, v in _NUMPY_DTYPE.items()}


def contraction(width, count):
    """The einsum that multiplies ``count`` factors laid out as ``(rows, *union)`` and
    sums the last union axis: ``"Zab,Zab->Za"`` for a union of two."""
    letters = "Z" + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXY"[:width]
    return ",".join([letters] * count) + "->" + letters[:-1]


def rescale(factors, slot, i, every, last, scales, ops):
    """Every ``every`` steps (and at the last), divide a factor by its per-row peak and
    keep the peak, so products of many small probabilities cannot underflow."""
    if i % every == every - 1 or i == last:
        out = factors[slot]
        scale = ops.positive(ops.amax(out.reshape(out.shape[0], -1)))
        factors[slot] = out / scale.reshape((-1,) + (1,) * (out.ndim - 1))
        scales.append(scale)
