"""Turning user data (tensor, numpy, pandas, list, dict) into checked tensors.

Every entry point funnels data through :func:`as_tensor` or :func:`as_kwargs`, so
NaN, inf and shape problems surface as a :class:`ppgen.errors.DataError` that
names the argument, never as a deep torch traceback or a silent wrong answer.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from .errors import DataError


def _to_numpy_or_tensor(value, name):
    if isinstance(value, torch.Tensor):
        return value
    if hasattr(value, "to_numpy") and callable(value.to_numpy):  # pandas
        value = value.to_numpy(copy=True)  # pandas 3 hands out read-only views
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name}: cannot be read as an array ({exc})") from None
    if array.dtype == object:
        raise DataError(
            f"{name}: holds non-numeric or ragged values; give a numeric array"
        )
    if array.dtype.kind in "US":
        raise DataError(f"{name}: holds strings; give numbers")
    return array


def as_tensor(value, name="data", *, dtype=None, device=None, ndim=None, dim=None):
    """Return ``value`` as a finite tensor, or raise a :class:`DataError`.

    Parameters
    ----------
    value : tensor, array-like, pandas DataFrame or Series
    name : str
        The argument name used in error messages.
    dtype : torch.dtype, optional
        Floating data are cast to it; integer and boolean data too where it is a
        floating type (they keep their type otherwise).
    device : torch.device or str, optional
    ndim : int, optional
        Required number of dimensions. A 1-D array given where ``ndim=2`` is
        expected is read as one column.
    dim : int, optional
        Required size of the last dimension (the number of features).
    """
    value = _to_numpy_or_tensor(value, name)
    source = value  # before any cast: a finite value the cast makes infinite is an overflow
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" or dtype is not None and value.dtype.kind in "iub" and dtype.is_floating_point:
            tensor = torch.as_tensor(value, dtype=dtype or torch.get_default_dtype())
        else:
            tensor = torch.as_tensor(value)
    else:
        tensor = value
        integral = not (tensor.is_floating_point() or tensor.is_complex())
        if dtype is not None and tensor.dtype != dtype and (tensor.is_floating_point()
                                                            or integral and dtype.is_floating_point):
            tensor = tensor.to(dtype)
    if device is not None:
        tensor = tensor.to(device)
    if tensor.is_floating_point() or tensor.is_complex():
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            bad = (~finite).nonzero()[0].tolist()
            original = source[tuple(bad)]
            original = original.item() if hasattr(original, "item") else original
            if isinstance(original, (int, float)) and math.isfinite(original):
                raise DataError(f"{name}: the value {original:.6g} at index {tuple(bad)} overflows "
                                f"{str(tensor.dtype).replace('torch.', '')} (at most "
                                f"{torch.finfo(tensor.dtype).max:.3g}); rescale the data or fit in float64 "
                                "(dtype=torch.float64)")
            kind = "NaN" if bool(torch.isnan(tensor).any()) else "inf"
            raise DataError(
                f"{name}: contains {kind} values (first at index {tuple(bad)}); "
                "remove or impute them before fitting"
            )
    if ndim is not None:
        if ndim == 2 and tensor.dim() == 1 and dim in (None, 1):
            tensor = tensor.unsqueeze(-1)
        if tensor.dim() != ndim:
            raise DataError(
                f"{name}: expected {ndim} dimensions, got shape {tuple(tensor.shape)}"
            )
    if dim is not None and (tensor.dim() == 0 or tensor.shape[-1] != dim):
        raise DataError(
            f"{name}: expected {dim} features in the last dimension, "
            f"got shape {tuple(tensor.shape)}"
        )
    if tensor.dim() > 0 and tensor.shape[0] == 0:
        raise DataError(f"{name}: is empty")
    # Row-major, so that minibatches (rows picked by index) are contiguous copies:
    # a column-major array (numpy's Fortran order) makes every row gather ~20x slower.
    return tensor.contiguous()


def as_kwargs(data, *, dtype=None, device=None):
    """Check a plain Pyro program's keyword arguments.

    Array-like values become checked tensors; ``None``, strings, Python
    scalars and anything else pass through unchanged.
    """
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DataError(
            "data: a plain Pyro program takes its data as a dict of keyword "
            f"arguments, got {type(data).__name__}"
        )
    out = {}
    for key, value in data.items():
        if isinstance(value, (torch.Tensor, np.ndarray, list, tuple)) or hasattr(
            value, "to_numpy"
        ):
            out[key] = as_tensor(value, f"data[{key!r}]", dtype=dtype, device=device)
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            if not np.isfinite(value):
                raise DataError(f"data[{key!r}]: is {value}; give a finite number")
            out[key] = value
        else:
            out[key] = value
    return out


def check_second_moments(tensor: torch.Tensor, name: str = "data") -> torch.Tensor:
    """Refuse floating data whose sums of squares overflow their dtype (a Gaussian's
    covariance would be infinite): a :class:`DataError` naming the largest value."""
    if tensor.is_floating_point() and tensor.numel():
        largest = float(tensor.detach().abs().max())
        limit = torch.finfo(tensor.dtype).max
        if largest > 0 and math.log(largest) * 2 + math.log(tensor.shape[0]) >= math.log(limit):
            raise DataError(f"{name}: values up to {largest:.3g} overflow {str(tensor.dtype).replace('torch.', '')} "
                            "in their sums of squares; standardise the data, or fit in float64 "
                            "(dtype=torch.float64)")
    return tensor
