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

Layout
------
The semirings, the generic scans and :func:`transfer_matrices` live in
:mod:`ppgen.models.hmm.scans` and are re-exported here; this module holds the
HMM algorithms built on them.
"""

from __future__ import annotations

import torch

from .scans import (
    BROADCAST_LIMIT,
    LogSemiring,
    MaxSemiring,
    ScaledSemiring,
    compose,
    downsweep_backward,
    downsweep_forward,
    log_identity,
    logmatmulexp,
    maxplus,
    prefix_scan,
    transfer_matrices,
    tree_reduce,
    upsweep,
)

__all__ = ["BROADCAST_LIMIT", "compose", "downsweep_backward", "downsweep_forward", "expected_counts",
           "forward_backward", "forward_log_prob", "log_identity", "logmatmulexp", "LogSemiring", "maxplus",
           "MaxSemiring", "prefix_scan", "sample_chain", "sample_posterior", "ScaledSemiring",
           "transfer_matrices", "tree_reduce", "uniform", "upsweep", "viterbi"]


def _certified(run, k):
    """``run(semiring)`` in :class:`ScaledSemiring` if it certifies its result,
    else again in the exact :class:`LogSemiring`."""
    fast = ScaledSemiring(k)
    out = run(fast)
    return out if fast.certified() else run(LogSemiring())


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
