"""Semirings and parallel scans: the building blocks of :mod:`ppgen.models.hmm.algorithms`.

The semirings whose products the scans combine: :class:`LogSemiring` (exact,
:func:`logmatmulexp`), :class:`MaxSemiring` (Viterbi, :func:`maxplus`) and
:class:`ScaledSemiring` (rescaled matrix products that certify their accuracy);
the generic scans over tuples of tensors, time first: :func:`upsweep` (the
product tree), :func:`downsweep_forward` and :func:`downsweep_backward` (all
prefix and suffix messages), and over tensors :func:`prefix_scan` and
:func:`tree_reduce`; and :func:`transfer_matrices`, the per-step matrices the
semirings lift. The notation and the method are described in
:mod:`ppgen.models.hmm.algorithms`, which re-exports every name here.
"""

from __future__ import annotations

import torch

#: Largest number of elements of the ``(..., K, K, K)`` temporary that an exact
#: log-semiring product builds at once; beyond it the contraction loops over the inner index.
BROADCAST_LIMIT = 2**24


def log_identity(k, dtype=None, device=None):
    """The identity of the log/max semirings: 0 on the diagonal, -inf elsewhere."""
    eye = torch.full((k, k), -float("inf"), dtype=dtype, device=device)
    return eye.fill_diagonal_(0.0)


def logmatmulexp(a, b):
    """:math:`\\log(\\exp(a) \\exp(b))` for batched matrices, exactly in log space
    (a ``logsumexp`` over the inner index, whatever the dynamic range)."""
    k = a.shape[-1]
    size = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]).numel() * a.shape[-2] * k * b.shape[-1]
    if size <= BROADCAST_LIMIT:
        return (a.unsqueeze(-1) + b.unsqueeze(-3)).logsumexp(-2)
    out = a[..., :, :1] + b[..., :1, :]
    for j in range(1, k):
        out = torch.logaddexp(out, a[..., :, j:j + 1] + b[..., j:j + 1, :])
    return out


def maxplus(a, b):
    """The :math:`(\\max, +)` product: ``out[i, k] = max_j a[i, j] + b[j, k]``
    (a running maximum over ``j``: faster than a ``(K, K, K)`` temporary, and
    memory-light)."""
    out = a[..., :, :1] + b[..., :1, :]
    for j in range(1, a.shape[-1]):
        out = torch.maximum(out, a[..., :, j:j + 1] + b[..., j:j + 1, :])
    return out


def compose(first, then):
    """Composition of maps stored as index tables: ``out[k] = first[then[k]]``."""
    return torch.gather(first, -1, then)


# ----------------------------------------------------------------- semirings
class LogSemiring:
    """Matrices (and row/column vectors) of log-probabilities under
    :func:`logmatmulexp`: exact whatever the dynamic range. An element is a
    1-tuple holding the log matrix."""

    def lift(self, *ms):
        return tuple((m,) for m in ms)

    def lift_transfers(self, log_trans, log_emit, mask, batch):
        """The transfer matrices of a sum over paths, time first, on ``batch``."""
        transfers = transfer_matrices(log_trans, log_emit, mask, "transition")
        return self.lift(transfers.expand(batch + transfers.shape[-3:]).movedim(-3, 0))[0]

    def combine(self, a, b):
        return (logmatmulexp(a[0], b[0]),)

    def lower(self, x):
        return x[0]

    def certified(self):
        return True


class MaxSemiring(LogSemiring):
    """The :math:`(\\max, +)` semiring of Viterbi."""

    def combine(self, a, b):
        return (maxplus(a[0], b[0]),)


class ScaledSemiring:
    """The log semiring computed with matrix products: an element
    :math:`M = s + \\log Q` is held as ``(Q, s, m)`` with :math:`\\max Q = 1`, so a
    product is one ``matmul`` and a rescaling. Work is in float64.

    It is exact to rounding as long as nothing underflows, and it *certifies*
    that (:meth:`certified`):

    - a product whose every entry is at least :math:`K\\,\\mathrm{tiny}/\\epsilon` is
      accurate (any term that underflowed was below :math:`\\epsilon / K` of its
      sum). When the lifted transfer matrices have no smaller entry (all
      transition and emission probabilities positive, the usual case) that is
      the test, on every product; a vector's zeros or tiny entries do not matter
      (a vector-matrix product's entries are at least the matrix's);
    - otherwise each element carries :math:`m`, its smallest non-zero entry, and
      a product with :math:`m_a m_b \\geq K\\,\\mathrm{tiny}/\\epsilon` has every non-zero
      term a normal number, so its zero entries are structural.
    """

    def __init__(self, k):
        finfo = torch.finfo(torch.float64)
        self.threshold = k * finfo.tiny / finfo.eps
        self.flags = []
        self.zero_free = True

    def lift(self, *ms, vectors=True):
        """Lift log vectors (or, with ``vectors=False``, the transfer matrices),
        with their smallest non-zero entries. A vector's zeros or tiny entries
        never stop a product from being certified (a vector-matrix product's
        entries are at least the matrix's), so only matrices decide
        :attr:`zero_free`; lift the vectors of a computation first."""
        out = []
        for m in ms:
            m = m.to(torch.float64)
            shift = m.detach().amax((-2, -1))
            shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
            centred = m - shift[..., None, None]
            q = centred.exp()
            if not vectors:
                self.zero_free = self.zero_free and bool((q.detach() >= self.threshold).all())
            low = torch.where(torch.isfinite(centred), centred, torch.zeros_like(centred)).detach()
            out.append((q, shift, low.amin((-2, -1)).exp()))
        return tuple(out)

    def lift_transfers(self, log_trans, log_emit, mask, batch):
        """:math:`Q_t = A \\operatorname{diag}(e_t / \\max_j e_t(j))` built directly
        in probability space (one ``exp`` per state and step, not per matrix entry)
        when every entry is safely positive; else from the log matrices."""
        trans = log_trans.to(torch.float64).exp()  # (..., K, K)
        emit = log_emit[..., 1:, :].to(torch.float64)  # (..., T-1, K)
        shift = emit.detach().amax(-1)
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        emit = (emit - shift[..., None]).exp()
        partial = mask is not None and not bool(mask[..., 1:].all())
        valid = torch.where(mask[..., 1:, None], emit, 1.0) if partial else emit
        smallest = trans.detach().amin() * valid.detach().amin()
        if not (self.zero_free and bool(smallest >= self.threshold)):
            self.zero_free = False
            transfers = transfer_matrices(log_trans, log_emit, mask, "transition")
            return self.lift(transfers.expand(batch + transfers.shape[-3:]).movedim(-3, 0), vectors=False)[0]
        if partial:
            keep = mask[..., 1:]
            emit = torch.where(keep[..., None], emit, torch.ones_like(emit))
            shift = torch.where(keep, shift, torch.zeros_like(shift))
        # Built time-first and contiguous, so that the strided halves of every
        # level feed batched matrix products without copies.
        emit = emit.expand(batch + emit.shape[-2:]).movedim(-2, 0)  # (T-1, ..., K)
        shift = shift.expand(batch + shift.shape[-1:]).movedim(-1, 0)
        q = trans.expand(batch + trans.shape[-2:]).unsqueeze(0) * emit.unsqueeze(-2)  # (T-1, ..., K, K)
        return q, shift, None

    def combine(self, a, b):
        c = a[0] @ b[0]
        if self.zero_free:
            low, peak = c.detach().flatten(-2).aminmax(dim=-1)
            self.flags.append((low >= self.threshold).all())
            return c / peak[..., None, None], a[1] + b[1] + peak.log(), None
        peak = c.detach().amax((-2, -1))
        peak = torch.where(peak > 0, peak, torch.ones_like(peak))
        q = c / peak[..., None, None]
        smallest = torch.where(q > 0, q, torch.ones_like(q)).detach().amin((-2, -1))
        self.flags.append((a[2] * b[2] >= self.threshold).all())
        return q, a[1] + b[1] + peak.log(), smallest

    def lower(self, x):
        return x[0].log() + x[1][..., None, None]

    def certified(self):
        return bool(torch.stack(self.flags).all()) if self.flags else True


# ----------------------------------------------------------------- scans
# Elements are tuples of tensors whose first dimension is time.
# A part may be None (a semiring's unused slot).
def _take(x, index):
    return tuple(None if t is None else t[index] for t in x)


def _cat(parts):
    return tuple(None if any(t is None for t in ts) else torch.cat(ts) for ts in zip(*parts))


def _interleave(even, odd):
    """``even[0], odd[0], even[1], odd[1], ...`` for equally long sequences."""
    return tuple(None if e is None or o is None else torch.stack([e, o], 1).reshape((2 * e.shape[0],) + e.shape[1:])
                 for e, o in zip(even, odd))


def upsweep(x, combine):
    """The levels of the product tree: ``levels[0] = x``, and each next level the
    pairwise products of the previous one (an odd last element carried up),
    down to a single element, the product of everything."""
    levels = [x]
    while levels[-1][0].shape[0] > 1:
        cur = levels[-1]
        n = cur[0].shape[0]
        paired = combine(_take(cur, slice(0, n - 1, 2)), _take(cur, slice(1, None, 2)))
        levels.append(_cat([paired, _take(cur, slice(n - 1, None))]) if n % 2 else paired)
    return levels


def downsweep_forward(levels, start, combine):
    """All prefix messages ``start (x) x_0 (x) ... (x) x_t``, ``t = 0..n-1``.

    Going down the tree, the message at the end of a left child is the message
    into its parent times the child's product, and a right child ends where its
    parent does: one batched product per level.
    """
    ends = combine(start, levels[-1])
    for cur in reversed(levels[:-1]):
        n = cur[0].shape[0]
        pairs = n // 2
        into = _cat([start, _take(ends, slice(0, pairs - 1))])  # messages into the parents
        left = combine(into, _take(cur, slice(0, 2 * pairs, 2)))
        new = _interleave(left, _take(ends, slice(0, pairs)))
        ends = _cat([new, _take(ends, slice(pairs, None))]) if n % 2 else new
    return ends


def downsweep_backward(levels, end, combine):
    """All suffix messages ``x_t (x) ... (x) x_{n-1} (x) end``, ``t = 0..n-1``."""
    starts = combine(levels[-1], end)
    for cur in reversed(levels[:-1]):
        n = cur[0].shape[0]
        pairs = n // 2
        after = _take(_cat([_take(starts, slice(1, None)), end]), slice(0, pairs))
        right = combine(_take(cur, slice(1, 2 * pairs, 2)), after)
        new = _interleave(_take(starts, slice(0, pairs)), right)
        starts = _cat([new, _take(starts, slice(pairs, None))]) if n % 2 else new
    return starts


def _scan(x, combine):
    n = x.shape[0]
    if n == 1:
        return x
    pairs = _scan(combine(x[0:n - 1:2], x[1::2]), combine)  # pairs[i] = x_0 ... x_{2i+1}
    evens = torch.cat([x[:1], combine(pairs[:(n - 1) // 2], x[2::2])])  # x_0 ... x_{2i}
    out = torch.stack([evens[:n // 2], pairs], 1).reshape((2 * (n // 2),) + x.shape[1:])
    return torch.cat([out, evens[-1:]]) if n % 2 else out


def prefix_scan(x, combine, dim=-3):
    """Inclusive scan :math:`y_t = x_0 \\circ \\cdots \\circ x_t` of a tensor along ``dim``
    (recursive doubling: combine neighbours, scan the pairs, fill in the gaps;
    fewer than :math:`2n` combinations in :math:`2 \\lceil \\log_2 n \\rceil` rounds).
    ``combine`` must be associative, not necessarily commutative."""
    return _scan(x.movedim(dim, 0), combine).movedim(0, dim)


def tree_reduce(x, combine, dim=-3):
    """:math:`x_0 \\circ x_1 \\circ \\cdots \\circ x_{n-1}` of a tensor along ``dim``,
    pairwise in :math:`\\lceil \\log_2 n \\rceil` rounds."""
    return upsweep((x.movedim(dim, 0),), lambda a, b: (combine(a[0], b[0]),))[-1][0][0]


# ----------------------------------------------------------------- transfer matrices
def transfer_matrices(log_trans, log_emit, mask=None, padding="identity"):
    """:math:`M_t[i, j] = \\log A_{ij} + \\log e_t(j)` for ``t = 1..T-1``, shape
    ``(..., T - 1, K, K)``, with padded steps (``mask`` False) replaced by the
    max-plus identity (``padding="identity"``) or by :math:`\\log A`
    (``padding="transition"``, for sums over paths; see the module docstring).

    Parameters
    ----------
    log_trans : (..., K, K)
        Batch dimensions aligned with ``log_emit``'s without its time dimension.
    log_emit : (..., T, K)
    mask : (..., T) bool, optional
    """
    out = log_trans.unsqueeze(-3) + log_emit[..., 1:, None, :]
    if mask is not None and not bool(mask[..., 1:].all()):
        if padding == "identity":
            pad = log_identity(log_emit.shape[-1], log_emit.dtype, log_emit.device)
        else:
            pad = log_trans.unsqueeze(-3)
        out = torch.where(mask[..., 1:, None, None], out, pad)
    return out
