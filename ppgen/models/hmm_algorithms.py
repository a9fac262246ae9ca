"""Exact inference for hidden Markov models: log-space parallel scans.

Notation
--------
A sequence :math:`x_0, \\dots, x_{T-1}` with hidden states :math:`z_t \\in \\{0, \\dots, K-1\\}`
has the joint density

.. math::
    p(x, z) = \\pi_{z_0}\\, e_0(z_0) \\prod_{t=1}^{T-1} A_{z_{t-1} z_t}\\, e_t(z_t),
    \\qquad e_t(k) = p(x_t \\mid z_t = k),

where :math:`\\pi` is the distribution of the *first* hidden state (hmmlearn's
convention; Pyro's ``DiscreteHMM`` applies one transition to its initial
distribution before the first observation, so its ``initial_logits`` correspond
to our :math:`\\pi = \\mathrm{softmax}(\\text{initial\\_logits})\\, A`).

The semiring view
-----------------
With the *transfer matrices* :math:`M_t[i, j] = \\log A_{ij} + \\log e_t(j)`
(:math:`t \\geq 1`) and :math:`\\alpha_0(j) = \\log \\pi_j + \\log e_0(j)`, the forward
recursion

.. math:: \\alpha_t(j) = \\log \\sum_i \\exp\\big(\\alpha_{t-1}(i) + M_t[i, j]\\big)

is a vector-matrix product in the :math:`(\\mathrm{logsumexp}, +)` semiring,
:math:`\\alpha_t = \\alpha_0 \\otimes M_1 \\otimes \\cdots \\otimes M_t`, and
:math:`\\log p(x) = \\mathrm{logsumexp}_j\\, \\alpha_{T-1}(j)`. The backward messages
:math:`\\beta_t(i) = \\log p(x_{t+1:} \\mid z_t = i)` are
:math:`M_{t+1} \\otimes \\cdots \\otimes M_{T-1} \\otimes 0`, and the smoothing
marginals :math:`\\log p(z_t = k \\mid x) = \\alpha_t(k) + \\beta_t(k) - \\log p(x)`.

Parallel scan
-------------
Because :math:`\\otimes` is associative the products need not be formed left to
right. The *up-sweep* (:func:`upsweep`) multiplies neighbours pairwise, level
after level, into a balanced tree of block products (:math:`\\lceil \\log_2 T \\rceil`
levels, :math:`T - 1` matrix products in all, each level one batched call);
its root gives :math:`\\log p(x)` (:func:`forward_log_prob`). The *down-sweeps*
(Blelloch's work-efficient scan) walk back down the tree carrying the message
into (or out of) every block, which yields all :math:`\\alpha_t` (or all
:math:`\\beta_t`) with :math:`T - 1` vector-matrix products. Everything is batched
over sequences and over parameter draws; the sequential depth is
:math:`O(\\log T)` instead of :math:`O(T)`.

The products run in :class:`ScaledSemiring` (matrix products of rescaled
probabilities, several times faster than a ``logsumexp`` over ``(K, K, K)``
temporaries), which certifies that no underflow spoilt the result; when it
cannot certify it (dynamic ranges beyond about 330 nats inside one block, e.g.
zero transitions next to extreme emissions) the computation is redone in the
exact :class:`LogSemiring`.

Viterbi is the forward down-sweep in the :math:`(\\max, +)` semiring
(:class:`MaxSemiring`). Its backtracking, :math:`z_t = \\psi_{t+1}(z_{t+1})` with
back-pointers :math:`\\psi_t(k) = \\arg\\max_i \\delta_{t-1}(i) + M_t[i, k]`, is a
composition of maps :math:`\\{0..K-1\\} \\to \\{0..K-1\\}`, associative too, so it
is a parallel scan of ``gather`` operations (:func:`prefix_scan`). Exact
posterior sampling (forward filtering, backward sampling) and forward
simulation of the chain compose *random* maps in the same way.

Ragged batches
--------------
Sequences of different lengths are padded to a common ``T``. In the sum
semiring a padded step's transfer matrix is :math:`\\log A` alone: the rows of
:math:`A` sum to one, so the padding only carries the chain on (without
emissions) and changes no total, nor, on the simplex, any gradient. In the max
semiring it is the identity (0 on the diagonal, :math:`-\\infty` elsewhere), so
paths and scores run through it unchanged. Results are exact, not approximations.
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


def _certified(run, k):
    """``run(semiring)`` in :class:`ScaledSemiring` if it certifies its result,
    else again in the exact :class:`LogSemiring`."""
    fast = ScaledSemiring(k)
    out = run(fast)
    return out if fast.certified() else run(LogSemiring())


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


# ----------------------------------------------------------------- HMM algorithms
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


def _start(log_init, log_trans, log_emit):
    """``alpha0`` as a row vector ``(1, ..., 1, K)`` on the common batch shape, and
    that batch shape."""
    alpha0 = log_init + log_emit[..., 0, :]
    batch = torch.broadcast_shapes(alpha0.shape[:-1], log_trans.shape[:-2], log_emit.shape[:-2])
    return alpha0.expand(batch + alpha0.shape[-1:]).unsqueeze(-2).unsqueeze(0), batch


def forward_log_prob(log_init, log_trans, log_emit, mask=None):
    """:math:`\\log p(x)` per sequence by the forward algorithm, as a tree reduction
    (the up-sweep): :math:`\\mathrm{logsumexp}_j (\\alpha_0 \\otimes M_1 \\otimes \\cdots
    \\otimes M_{T-1})_j`.

    Parameters
    ----------
    log_init : (..., K)
        :math:`\\log \\pi`, the first state's distribution.
    log_trans : (..., K, K)
        :math:`\\log A`, rows indexed by the previous state; batch dimensions
        aligned with ``log_emit``'s without its time dimension.
    log_emit : (..., T, K)
        :math:`\\log e_t(k)`; padded positions are ignored where ``mask`` is False.
    mask : (..., T) bool, optional
        True at observed positions (a prefix of each sequence).

    Returns
    -------
    Tensor ``(...)``, nats, in ``log_emit``'s dtype; differentiable in every argument.
    """
    if log_emit.shape[-2] == 1:
        return (log_init + log_emit[..., 0, :]).logsumexp(-1)
    start, batch = _start(log_init, log_trans, log_emit)

    def run(semiring):
        (first,) = semiring.lift(start)
        matrices = semiring.lift_transfers(log_trans, log_emit, mask, batch)
        top = upsweep(matrices, semiring.combine)[-1]
        return semiring.lower(semiring.combine(first, top))[0]

    alpha_last = _certified(run, log_emit.shape[-1])  # (..., 1, K): alpha_0 (x) M_1 ... M_{T-1}
    return alpha_last[..., 0, :].logsumexp(-1).to(log_emit.dtype)


def forward_backward(log_init, log_trans, log_emit, mask=None):
    """Forward and backward messages: one up-sweep and two down-sweeps.

    Returns
    -------
    log_alpha : (..., T, K)
        :math:`\\log p(x_{0:t}, z_t = k)`; through the padding it is carried on
        by the transition matrix alone, which keeps its total, :math:`\\log p(x)`.
    log_beta : (..., T, K)
        :math:`\\log p(x_{t+1:L} \\mid z_t = k)` (zero at and beyond the last step).
    log_prob : (...)
        :math:`\\log p(x)`.

    The smoothing marginals are ``exp(log_alpha + log_beta - log_prob[..., None, None])``.
    """
    dtype = log_emit.dtype
    T, k = log_emit.shape[-2:]
    if T == 1:
        log_alpha = log_init + log_emit
        return log_alpha, torch.zeros_like(log_alpha), log_alpha[..., 0, :].logsumexp(-1)
    start, batch = _start(log_init, log_trans, log_emit)
    end = torch.zeros(start.shape[:-2] + (k, 1), dtype=start.dtype, device=start.device)

    def run(semiring):
        first, last = semiring.lift(start, end)
        matrices = semiring.lift_transfers(log_trans, log_emit, mask, batch)
        levels = upsweep(matrices, semiring.combine)
        alphas = downsweep_forward(levels, first, semiring.combine)
        betas = downsweep_backward(levels, last, semiring.combine)
        return semiring.lower(alphas), semiring.lower(betas)

    alphas, betas = _certified(run, k)
    log_alpha = torch.cat([start, alphas.to(dtype)])[..., 0, :].movedim(0, -2)
    log_beta = torch.cat([betas.to(dtype), end])[..., 0].movedim(0, -2)
    return log_alpha, log_beta, log_alpha[..., -1, :].logsumexp(-1)


def expected_counts(log_init, log_trans, log_emit, mask=None):
    """The E-step of Baum-Welch from the forward and backward messages.

    Parameters
    ----------
    log_init : (..., 1, K), log_trans : (..., 1, K, K), log_emit : (..., B, T, K), mask : (B, T)

    Returns
    -------
    gamma : (..., B, T, K)
        :math:`p(z_t = k \\mid x)`, 0 at padded steps.
    transitions : (..., K, K)
        :math:`\\sum_{b, t} p(z_{t-1} = i, z_t = j \\mid x_b)`, with
        :math:`\\xi_t(i, j) = \\exp(\\alpha_{t-1}(i) + \\log A_{ij} + \\log e_t(j) + \\beta_t(j) - \\log p(x))`.
    log_prob : (..., B)
    """
    log_alpha, log_beta, log_prob = forward_backward(log_init, log_trans, log_emit, mask)
    norm = log_prob[..., None, None]
    gamma = (log_alpha + log_beta - norm).exp()
    if mask is not None:
        gamma = gamma * mask[..., None]
    if log_emit.shape[-2] == 1:
        counts = torch.zeros(gamma.shape[:-3] + log_trans.shape[-2:], dtype=gamma.dtype, device=gamma.device)
        return gamma, counts, log_prob
    # xi_t(i, j) = alphahat_{t-1}(i) A_ij w_t(j) with alphahat = exp(alpha - max alpha) <= 1 and
    # w_t(j) = exp(log e_t(j) + beta_t(j) + max alpha_{t-1} - log p); w_t(j) <= 1 / A_{i* j}, so it
    # overflows only if some transition is below 1e-300: then take the (T, K, K) log route.
    peak = log_alpha[..., :-1, :].amax(-1, keepdim=True)
    left = (log_alpha[..., :-1, :] - peak).exp()
    exponent = log_emit[..., 1:, :] + log_beta[..., 1:, :] + peak - norm
    if mask is not None:
        exponent = exponent.masked_fill(~mask[..., 1:, None], -float("inf"))
    if bool(exponent.max() < 690):
        right = exponent.exp()
        counts = left.flatten(-3, -2).mT @ right.flatten(-3, -2)  # sum over sequences and steps
        return gamma, counts * log_trans.exp().squeeze(-3), log_prob
    log_xi = (log_alpha[..., :-1, :, None] + log_trans.unsqueeze(-3)
              + (log_emit[..., 1:, :] + log_beta[..., 1:, :] - norm).unsqueeze(-2))
    xi = log_xi.exp()
    if mask is not None:
        xi = xi * mask[..., 1:, None, None]
    return gamma, xi.sum((-4, -3)), log_prob


def _follow(pointers, last):
    """States from back-pointers: ``z_{T-1} = last``, ``z_t = pointers[t][z_{t+1}]``.

    ``pointers`` is ``(..., T - 1, K)``; the suffix compositions are a parallel
    scan of ``gather``s.
    """
    maps = prefix_scan(pointers.flip(-2), lambda acc, new: compose(new, acc), dim=-2).flip(-2)
    earlier = torch.gather(maps, -1, last[..., None, None].expand(maps.shape[:-1] + (1,)))
    return torch.cat([earlier.squeeze(-1), last.unsqueeze(-1)], -1)


def viterbi(log_init, log_trans, log_emit, mask=None):
    """The most probable state path: a :math:`(\\max, +)` up-sweep and forward
    down-sweep for :math:`\\delta_t(k) = \\max_{z_{0:t-1}} \\log p(x_{0:t}, z_{0:t-1}, z_t = k)`,
    then the back-pointers followed by a parallel scan.

    Returns
    -------
    states : LongTensor (..., T)
        The MAP path; positions where ``mask`` is False hold -1.
    log_prob : (...)
        :math:`\\max_z \\log p(x, z)`, nats.
    """
    T = log_emit.shape[-2]
    if T == 1:
        best, states = (log_init + log_emit[..., 0, :]).max(-1)
        return states.unsqueeze(-1), best
    start, batch = _start(log_init, log_trans, log_emit)
    transfers = transfer_matrices(log_trans, log_emit, mask, "identity")
    transfers = transfers.expand(batch + transfers.shape[-3:]).movedim(-3, 0)
    semiring = MaxSemiring()
    first, matrices = semiring.lift(start, transfers)
    levels = upsweep(matrices, semiring.combine)
    ends = downsweep_forward(levels, first, semiring.combine)[0]
    delta = torch.cat([start, ends])[..., 0, :]  # (T, ..., K)
    # psi_t(k) = argmax_i delta_{t-1}(i) + M_t[i, k]; the identity map in the padding.
    pointers = (delta[:-1, ..., None, :] + transfers.mT).argmax(-1).movedim(0, -2)  # (..., T-1, K)
    best, last = delta[-1].max(-1)
    states = _follow(pointers, last)
    if mask is not None:
        states = states.masked_fill(~mask.expand(states.shape), -1)
    return states, best


def uniform(shape, dtype, device, generator=None):
    """Uniforms on ``device``, drawn from ``generator`` (on its own device) when given."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, dtype=dtype, generator=generator, device=where).to(device)


def _gumbel(shape, dtype, device, generator):
    finfo = torch.finfo(dtype)
    u = uniform(shape, dtype, device, generator).clamp(finfo.tiny, 1 - finfo.eps)
    return -torch.log(-torch.log(u))


def sample_posterior(log_init, log_trans, log_emit, mask=None, num_samples=1, generator=None):
    """Exact draws from :math:`p(z \\mid x)`: forward filtering, backward sampling.

    (Through the padding the filter runs on as an emission-free continuation of
    the chain, which the backward pass samples first and the mask then hides;
    the draws of the observed steps are exact.)

    The backward pass draws, for every step and every possible next state at
    once, :math:`z_{t-1} \\mid z_t = k` with probability
    :math:`\\propto \\exp(\\alpha_{t-1}(i) + M_t[i, k])` (Gumbel-max), then follows the
    random pointers by a parallel scan.

    Returns
    -------
    LongTensor ``(num_samples, ..., T)``, -1 where ``mask`` is False.
    """
    log_alpha, _, _ = forward_backward(log_init, log_trans, log_emit, mask)
    T = log_emit.shape[-2]
    shape = (num_samples,) + log_alpha.shape
    dtype, device = log_alpha.dtype, log_alpha.device
    last = (log_alpha[..., -1, :] + _gumbel(shape[:-2] + shape[-1:], dtype, device, generator)).argmax(-1)
    if T == 1:
        states = last.unsqueeze(-1)
    else:
        transfers = transfer_matrices(log_trans, log_emit, mask, "transition")
        scores = log_alpha[..., :-1, :, None] + transfers  # (..., T-1, K_prev, K_next)
        noise = _gumbel((num_samples,) + scores.shape, dtype, device, generator)
        pointers = (scores + noise).argmax(-2)
        states = _follow(pointers, last)
    if mask is not None:
        states = states.masked_fill(~mask.expand(states.shape), -1)
    return states


def sample_chain(init, trans, num, length, generator=None):
    """``num`` state paths of ``length`` steps from the Markov chain ``(init, trans)``.

    Every step's transition is drawn for every possible previous state at once
    (inverse-CDF on one uniform per step and state), and the random maps are
    composed by a parallel prefix scan.

    Parameters
    ----------
    init : (K,)
    trans : (K, K)

    Returns
    -------
    LongTensor ``(num, length)``.
    """
    K = init.shape[-1]
    u0 = uniform((num, 1), init.dtype, init.device, generator)
    cdf0 = init.cumsum(-1)
    first = torch.searchsorted(cdf0.expand(num, K).contiguous(), u0 * cdf0[-1], right=True)
    first = first.clamp_max(K - 1).squeeze(-1)
    if length == 1:
        return first.unsqueeze(-1)
    cdf = trans.cumsum(-1)  # (K_prev, K_next)
    u = uniform((num, length - 1, K), init.dtype, init.device, generator)
    cdf_b = cdf.expand(num, length - 1, K, K).contiguous()
    # steps[n, t, k]: the state at t + 1 after state k at t.
    steps = torch.searchsorted(cdf_b, (u * cdf[:, -1]).unsqueeze(-1), right=True)
    steps = steps.squeeze(-1).clamp_max(K - 1)
    maps = prefix_scan(steps, lambda acc, new: compose(new, acc), dim=-2)  # state at t+1 given z_0
    later = torch.gather(maps, -1, first[:, None, None].expand(num, length - 1, 1)).squeeze(-1)
    return torch.cat([first.unsqueeze(-1), later], -1)
