"""Data of the HMM families: ragged batches of sequences.

:class:`Sequences` is the container of a padded batch and its lengths;
:class:`SequenceDataMixin` is the part of
:class:`~ppgen.models.hmm.base.HiddenMarkovModel` that reads every accepted data
form (lists of arrays, padded arrays with ``lengths``, dicts, :class:`Sequences`)
into checked ``(padded, lengths)`` tensors, and masks or fills the padding.
``_as_raw`` and ``first_bad`` are the validation helpers the families share.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import DataError


# --------------------------------------------------------------------------- data
class Sequences:
    """A batch of sequences of different lengths.

    Parameters
    ----------
    padded : Tensor ``(B, T, ...)``
        The sequences, padded at the end to the longest length ``T``.
    lengths : LongTensor ``(B,)``, optional
        Each sequence's length (default: all ``T``).

    It behaves enough like a tensor for generic code: ``shape``, ``len``,
    slicing and indexing (sequences), ``to``, ``cpu``, ``double``, ``float``,
    ``is_floating_point``. ``unpad()`` gives the list of sequences.
    """

    __slots__ = ("padded", "lengths")

    def __init__(self, padded, lengths=None):
        padded = torch.as_tensor(padded)
        if lengths is None:
            lengths = torch.full((padded.shape[0],), padded.shape[1], dtype=torch.long)
        self.padded = padded
        self.lengths = torch.as_tensor(lengths).to(device=padded.device)

    @property
    def shape(self):
        return self.padded.shape

    @property
    def dtype(self):
        return self.padded.dtype

    @property
    def device(self):
        return self.padded.device

    def __len__(self):
        return self.padded.shape[0]

    def __getitem__(self, index):
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        lengths = self.lengths[index]
        return Sequences(self.padded[index][:, :int(lengths.max())], lengths)

    def to(self, *args, **kwargs):
        padded = self.padded.to(*args, **kwargs)
        return Sequences(padded, self.lengths.to(padded.device))

    def cpu(self):
        return self.to("cpu")

    def double(self):
        return Sequences(self.padded.double(), self.lengths)

    def float(self):
        return Sequences(self.padded.float(), self.lengths)

    def is_floating_point(self):
        return self.padded.is_floating_point()

    def unpad(self):
        """The sequences as a list of tensors ``(T_i, ...)``."""
        return [x[:n] for x, n in zip(self.padded, self.lengths.tolist())]

    def __repr__(self):
        return (f"Sequences(n={len(self)}, max_length={self.shape[1]}, "
                f"step_shape={tuple(self.shape[2:])}, dtype={self.dtype})")


def _as_raw(value, name):
    """A tensor (any numeric dtype) from a tensor, array, list or pandas object."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if hasattr(value, "to_numpy") and callable(value.to_numpy):
        value = value.to_numpy(copy=True)
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name}: cannot be read as an array ({exc})") from None
    if array.dtype == object:
        raise DataError(f"{name}: holds non-numeric or ragged values; give a numeric array "
                        "per sequence, or a list of sequences")
    if array.dtype.kind not in "biuf":
        raise DataError(f"{name}: holds {array.dtype} values; give numbers")
    return torch.as_tensor(array if array.flags.writeable else array.copy())


def first_bad(bad, name, what):
    """Raise a DataError naming the first (sequence, step) where ``bad`` holds."""
    if bool(bad.any()):
        b, t = bad.nonzero()[0].tolist()[:2]
        raise DataError(f"{name}: {what} (first at sequence {b}, step {t})")


class SequenceDataMixin:
    """Packing and validation of ragged sequence data, mixed into
    :class:`~ppgen.models.hmm.base.HiddenMarkovModel`.

    Relies on the host's ``step_shape``, ``integer_data``, ``dtype`` and ``device``;
    families refine :meth:`_check_values`.
    """

    def pack(self, data, lengths=None, name="data"):
        """Checked ``(padded, lengths)`` tensors on the model's device.

        Parameters
        ----------
        data : list of arrays, array, dict or Sequences
            A list of sequences, each ``(T_i,)`` (scalar emissions) or ``(T_i, D)``;
            a padded array ``(B, T)`` / ``(B, T, D)`` (with ``lengths``), or one
            sequence ``(T,)`` / ``(T, D)``; ``{"sequences": ..., "lengths": ...}``;
            or a :class:`Sequences`.
        lengths : array of int, optional
            Lengths of the padded sequences; values past them are ignored.

        Returns
        -------
        padded : ``(B, T, *step_shape)``, the padding filled with a valid value
        lengths : LongTensor ``(B,)``
        """
        if isinstance(data, Sequences):
            if lengths is not None:
                raise DataError(f"{name}: a Sequences object carries its own lengths; do not pass lengths")
            return self._finish(data.padded, data.lengths, name)
        if isinstance(data, dict):
            unknown = sorted(set(data) - {"sequences", "lengths"})
            if unknown or "sequences" not in data:
                raise DataError(f"{name}: a dict of sequences needs the key 'sequences' (and optionally "
                                f"'lengths'); got keys {sorted(data)}")
            if lengths is not None and data.get("lengths") is not None:
                raise DataError(f"{name}: lengths given twice (argument and dict)")
            return self.pack(data["sequences"], data.get("lengths", lengths), name)
        seq_dims = 1 + len(self.step_shape)
        if isinstance(data, (list, tuple)):
            if len(data) == 0:
                raise DataError(f"{name}: is empty")
            first_dims = np.ndim(data[0])
            if (first_dims == seq_dims or (first_dims == 1 and self.step_shape == (1,))
                    or (first_dims == 2 and self.step_shape == () and np.shape(data[0])[-1] == 1)):
                return self._pack_list(data, lengths, name)
        raw = _as_raw(data, name)
        if self.step_shape == (1,) and raw.dim() in (1, 2) and (raw.dim() == 1 or raw.shape[-1] != 1):
            raw = raw.unsqueeze(-1)  # univariate vector emissions given without the feature axis
        if self.step_shape == () and raw.dim() == 2 and raw.shape[-1] == 1 and lengths is None:
            raw = raw[:, 0]  # one sequence as a column (hmmlearn's X of shape (T, 1), a one-column table)
        if raw.dim() == seq_dims:
            raw = raw.unsqueeze(0)
        if raw.dim() != seq_dims + 1:
            expected = "(B, T)" if not self.step_shape else f"(B, T, {self.step_shape[0]})"
            raise DataError(f"{name}: expected sequences of shape {expected} or one sequence, "
                            f"got shape {tuple(raw.shape)}")
        if raw.shape[0] == 0 or raw.shape[1] == 0:
            raise DataError(f"{name}: is empty (shape {tuple(raw.shape)})")
        if lengths is None:
            lengths = torch.full((raw.shape[0],), raw.shape[1], dtype=torch.long)
        return self._finish(raw, lengths, name)

    def _pack_list(self, data, lengths, name):
        seqs = []
        for i, item in enumerate(data):
            raw = _as_raw(item, f"{name}[{i}]")
            if self.step_shape == (1,) and raw.dim() == 1:
                raw = raw.unsqueeze(-1)
            if self.step_shape == () and raw.dim() == 2 and raw.shape[-1] == 1:
                raw = raw[:, 0]
            if raw.dim() != 1 + len(self.step_shape):
                raise DataError(f"{name}[{i}]: expected one sequence of shape "
                                f"{'(T,)' if not self.step_shape else f'(T, {self.step_shape[0]})'}, "
                                f"got shape {tuple(raw.shape)}")
            if raw.shape[0] == 0:
                raise DataError(f"{name}[{i}]: is an empty sequence")
            seqs.append(raw)
        implied = torch.tensor([len(s) for s in seqs])
        if lengths is not None and not torch.equal(torch.as_tensor(lengths).long().cpu(), implied):
            raise DataError(f"{name}: lengths {list(lengths)} disagree with the sequences' lengths "
                            f"{implied.tolist()}")
        kind = torch.promote_types(seqs[0].dtype, seqs[0].dtype)
        for s in seqs[1:]:
            kind = torch.promote_types(kind, s.dtype)
        device = seqs[0].device
        padded = torch.nn.utils.rnn.pad_sequence([s.to(device=device, dtype=kind) for s in seqs],
                                                 batch_first=True)
        return self._finish(padded, implied, name)

    def _finish(self, raw, lengths, name):
        B, T = raw.shape[:2]
        if tuple(raw.shape[2:]) != tuple(self.step_shape):
            what = "one value per step" if not self.step_shape else f"{self.step_shape[0]} features per step"
            raise DataError(f"{name}: expected {what}, got steps of shape {tuple(raw.shape[2:])}")
        lengths = self._check_lengths(lengths, B, T, name)
        raw = raw.to(self.device)
        lengths = lengths.to(self.device)
        mask = torch.arange(T, device=self.device) < lengths[:, None]
        values = raw
        if raw.is_floating_point():
            bad = ~torch.isfinite(raw)
            if self.step_shape:
                bad = bad.any(-1)
            first_bad(bad & mask, name, "contains NaN or inf values; remove or impute them")
        self._check_values(values, mask, name)
        if self.integer_data:
            values = values.round().long() if values.is_floating_point() else values.long()
        else:
            values = values.to(self.dtype)
        fill = mask.reshape(mask.shape + (1,) * len(self.step_shape))
        values = torch.where(fill, values, torch.zeros((), dtype=values.dtype, device=values.device))
        return values, lengths

    @staticmethod
    def _check_lengths(lengths, B, T, name):
        raw = _as_raw(lengths, f"{name}: lengths")
        if raw.is_floating_point():
            if not bool(torch.isfinite(raw).all()) or not bool((raw == raw.round()).all()):
                raise DataError(f"{name}: lengths must be integers")
        raw = raw.long().cpu()
        if raw.shape != (B,):
            raise DataError(f"{name}: lengths must have one entry per sequence ({B}), got shape "
                            f"{tuple(raw.shape)}")
        if bool((raw < 1).any()) or bool((raw > T).any()):
            raise DataError(f"{name}: lengths must lie in 1..{T} (the padded length), got "
                            f"min {int(raw.min())}, max {int(raw.max())}")
        return raw

    def _check_values(self, values, mask, name):
        """Family-specific checks of the observed (unpadded) values."""

    def _integer_check(self, values, mask, name, what):
        if values.is_floating_point():
            first_bad((values != values.round()) & mask, name, f"holds non-integer values; {what}")

    def check_data(self, data, name="data"):
        return self.pack(data, None, name)[0]

    def data_kwargs(self, data, name="data"):
        padded, lengths = self.pack(data, None, name)
        return {"data": padded, "lengths": lengths}

    def as_data(self, data, lengths=None):
        """The inverse of :meth:`data_kwargs`: the keyword tensors back as one data
        argument (a :class:`Sequences`) that every method here accepts."""
        return Sequences(data, lengths)

    def _fill_padding(self, x, lengths):
        T = x.shape[1]
        mask = torch.arange(T, device=x.device) < lengths.to(x.device)[:, None]
        mask = mask.reshape(mask.shape + (1,) * (x.dim() - 2))
        return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))

    @staticmethod
    def _mask(padded, lengths):
        return torch.arange(padded.shape[1], device=padded.device) < lengths.to(padded.device)[:, None]
