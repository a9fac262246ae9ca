"""Free-running chains: every chain runs its own NUTS transitions, none waits.

In lockstep (:meth:`ppgen.inference.mcmc.nuts.Sampler.transition`) all chains start a
transition together and the batch takes as many leapfrog steps as its longest
tree, so a chain whose tree stops early idles under a mask: with many chains the
batch takes several times the leaves a chain needs (RESULTS.md). Here each chain
carries its own place in its own tree, a small state machine over
``(depth j, leaf n, direction)``, and :func:`free_leaf` advances every chain by one
leaf per call; a chain whose transition ends is handed its next transition (new
momentum, adapted step size) by :func:`sample` before the next call, so every
call does useful work for nearly every chain.

A transition is the same multinomial NUTS as the lockstep sampler's (Stan's
scheme: progressive sampling within a subtree, biased towards the new subtree
when merging, the generalised U-turn criterion on every binary block, divergence
at :math:`H - H_0 > 1000`). Only the order of the random draws differs: each call
draws three uniforms per chain (the direction of a subtree starting at this
leaf, the leaf's in-subtree choice, the merge of a subtree ending at it).

State per chain, packed so the compiled call has few inputs and outputs:
``V (C, 15, D)``, the vectors (tree ends, current point, proposals, momentum
sums), ``B (C, 2L, D)``, the ``L = max_tree_depth + 1`` block velocities then
block momentum sums, and ``S (C, 13)``, the scalars, in the row and column
orders named below.
"""

from __future__ import annotations

import math

import torch

from .adaptation import (
    dual_averaging_start,
    dual_averaging_update,
    initial_step_size,
    regularised_variance,
    welford_update,
    windows,
)
from .fallback import Refused
from .inductor import compiled_and_checked
from .integrator import State
from .metric import Metric
from .potential import close_enough
from .termination import MAX_DELTA_H

#: The rows of ``V`` before the block rows: tree ends (left, right), the current leaf, the
#: transition's proposal, the tree's momentum sum, the subtree's proposal and momentum sum.
VECTORS = ("left_z", "left_r", "left_grad", "right_z", "right_r", "right_grad", "z", "r", "grad",
           "proposal_z", "proposal_grad", "rho", "sub_z", "sub_grad", "sub_rho")
#: The columns of ``S``.
SCALARS = ("depth_building", "leaf", "forward", "done", "potential", "proposal_potential",
           "log_weight", "sub_potential", "sub_log_weight", "accept_sum", "leaves", "depth", "diverging")
V_ = {name: i for i, name in enumerate(VECTORS)}
S_ = {name: i for i, name in enumerate(SCALARS)}


def free_leaf(leaf, V, B, S, energy0, step, inverse, uniforms, max_tree_depth):
    """One leaf for every chain still in a transition (``done == 0``); returns ``(V, B, S)``.

    ``leaf`` is the fused leapfrog step ``(z, r, grad, rho, step, half_step, inverse) ->
    (z, r, grad, U, H, M^{-1} r, rho + r)``; ``energy0 (C,)`` the transition's starting
    energy, ``step (C, 1)``, ``inverse (C, D)`` the diagonal metric, ``uniforms (C, 3)``.
    """
    vectors, B, scalars = _leaf_parts(leaf, V, B, S, energy0, step, inverse, uniforms, max_tree_depth)
    return stack(vectors, 1), B, stack(scalars, 1)


def _leaf_parts(leaf, V, B, S, energy0, step, inverse, uniforms, max_tree_depth):
    """:func:`free_leaf`'s new rows of ``V`` and columns of ``S`` unstacked, and ``B``."""
    levels = max_tree_depth + 1
    col = lambda m: m.unsqueeze(-1)  # noqa: E731
    v = lambda name: V[:, V_[name]]  # noqa: E731
    s = lambda name: S[:, S_[name]]  # noqa: E731
    j, n, alive = s("depth_building"), s("leaf"), s("done") == 0
    starting = n == 0
    forward = torch.where(starting, uniforms[:, 0] < 0.5, s("forward") > 0)
    ahead = col(forward)
    begin = col(starting)
    # a subtree starts from the end of the tree it extends
    z = torch.where(begin, torch.where(ahead, v("right_z"), v("left_z")), v("z"))
    r = torch.where(begin, torch.where(ahead, v("right_r"), v("left_r")), v("r"))
    grad = torch.where(begin, torch.where(ahead, v("right_grad"), v("left_grad")), v("grad"))
    sub_log_weight = torch.where(starting, -math.inf, s("sub_log_weight"))
    sub_rho = torch.where(begin, 0.0, v("sub_rho"))
    signed = torch.where(ahead, step, -step)
    new_z, new_r, new_grad, new_potential, energy, velocity, _ = leaf(z, r, grad, sub_rho, signed,
                                                                      0.5 * signed, inverse)
    delta = energy - energy0
    delta = torch.where(torch.isnan(delta), math.inf, delta)
    merged = torch.logaddexp(sub_log_weight, -delta)
    take = col(alive & (uniforms[:, 1] < torch.exp(-delta - merged)))
    sub_z = torch.where(take, new_z, v("sub_z"))
    sub_grad = torch.where(take, new_grad, v("sub_grad"))
    sub_potential = torch.where(take.squeeze(-1), new_potential, s("sub_potential"))
    accept_sum = s("accept_sum") + torch.where(alive, torch.exp(-delta.clamp(min=0)), 0.0)
    leaves = s("leaves") + alive.to(S.dtype)

    # binary blocks of the subtree: level k (1..j) opens at leaves n with n % 2^k == 0 and
    # closes at leaves with (n + 1) % 2^k == 0
    k = torch.arange(levels, dtype=S.dtype, device=S.device)
    size = 2.0 ** k
    in_tree = (k >= 1) & (k <= col(j))
    opening = in_tree & (torch.remainder(col(n), size) == 0) & col(alive)
    closing = in_tree & (torch.remainder(col(n) + 1, size) == 0)
    block_velocity = torch.where(col(opening), velocity.unsqueeze(1), B[:, :levels])
    block_rho = torch.where(col(opening), sub_rho.unsqueeze(1), B[:, levels:])
    sub_rho_next = sub_rho + new_r
    block_sum = sub_rho_next.unsqueeze(1) - block_rho
    turned = ((block_velocity * block_sum).sum(-1) <= 0) | ((velocity.unsqueeze(1) * block_sum).sum(-1) <= 0)
    diverging = alive & (delta > MAX_DELTA_H)
    turning = alive & ~diverging & (closing & turned).any(-1)

    live = col(alive)
    z, r, grad = torch.where(live, new_z, z), torch.where(live, new_r, r), torch.where(live, new_grad, grad)
    potential = torch.where(alive, new_potential, s("potential"))
    sub_log_weight = torch.where(alive, merged, sub_log_weight)
    sub_rho = torch.where(live, sub_rho_next, sub_rho)
    subtree_ends = alive & (diverging | turning | (n == torch.exp2(j) - 1))
    ok = subtree_ends & ~diverging & ~turning
    log_weight = s("log_weight")
    accept = col(ok & (uniforms[:, 2] < torch.exp((sub_log_weight - log_weight).clamp(max=0))))
    proposal_z = torch.where(accept, sub_z, v("proposal_z"))
    proposal_grad = torch.where(accept, sub_grad, v("proposal_grad"))
    proposal_potential = torch.where(accept.squeeze(-1), sub_potential, s("proposal_potential"))
    log_weight = torch.where(ok, torch.logaddexp(log_weight, sub_log_weight), log_weight)
    grows_right, grows_left = col(ok & forward), col(ok & ~forward)
    right_z, right_r, right_grad = (torch.where(grows_right, new, v(f"right_{name}"))
                                    for new, name in ((z, "z"), (r, "r"), (grad, "grad")))
    left_z, left_r, left_grad = (torch.where(grows_left, new, v(f"left_{name}"))
                                 for new, name in ((z, "z"), (r, "r"), (grad, "grad")))
    rho = torch.where(col(ok), v("rho") + sub_rho, v("rho"))
    tree_turned = ((inverse * left_r * rho).sum(-1) <= 0) | ((inverse * right_r * rho).sum(-1) <= 0)
    finished = subtree_ends & (~ok | tree_turned | (j + 1 >= max_tree_depth))
    vectors = [left_z, left_r, left_grad, right_z, right_r, right_grad, z, r, grad, proposal_z, proposal_grad,
               rho, sub_z, sub_grad, sub_rho]
    scalars = [torch.where(subtree_ends, j + 1, j), torch.where(subtree_ends, 0.0, torch.where(alive, n + 1, n)),
               forward.to(S.dtype), torch.where(finished, 1.0, s("done")), potential, proposal_potential,
               log_weight, sub_potential, sub_log_weight, accept_sum, leaves,
               torch.where(subtree_ends, j + 1, s("depth")), torch.where(diverging, 1.0, s("diverging"))]
    return vectors, concat([block_velocity, block_rho], 1), scalars


def concat(parts, dim):
    """``torch.cat(parts, dim)`` written as one elementwise selection: TorchInductor then
    computes it in one kernel, where its own concatenation makes a view of the output per
    part, at a Python call each (most of this module's state is concatenated)."""
    dim = dim % parts[0].dim()
    sizes = [part.shape[dim] for part in parts]
    index = torch.arange(sum(sizes), device=parts[0].device)
    shape = [1] * parts[0].dim()
    shape[dim] = -1
    out, offset = None, sum(sizes)
    for part, size in zip(reversed(parts), reversed(sizes)):
        offset -= size
        picked = part.index_select(dim, (index - offset).clamp(0, size - 1))
        out = picked if out is None else torch.where((index < offset + size).reshape(shape), picked, out)
    return out


def stack(parts, dim):
    """``torch.stack`` as :func:`concat`."""
    return concat([part.unsqueeze(dim) for part in parts], dim)


def start(z, potential, grad, r, inverse, max_tree_depth):
    """``(V, B, S, energy0)`` of transitions starting at ``(z, potential, grad)`` with momentum ``r``."""
    vectors, scalars, energy0 = _start_parts(z, potential, grad, r, inverse)
    B = z.new_zeros(z.shape[0], 2 * (max_tree_depth + 1), z.shape[1])
    return stack(vectors, 1), B, stack(scalars, 1), energy0


def _start_parts(z, potential, grad, r, inverse):
    """:func:`start`'s rows of ``V`` and columns of ``S``, unstacked, and ``energy0``."""
    energy0 = potential + 0.5 * (inverse * r * r).sum(-1)
    zero = torch.zeros_like(z)
    vectors = [z, r, grad, z, r, grad, z, r, grad, z, grad, r, z, grad, zero]
    nothing = torch.zeros_like(potential)
    columns = {name: nothing for name in SCALARS}
    columns.update(potential=potential, proposal_potential=potential, sub_potential=potential,
                   sub_log_weight=nothing - math.inf)
    return vectors, [columns[name] for name in SCALARS], energy0


def compile_free_step(potential, max_tree_depth):
    """:func:`free_step` for ``potential``'s chains compiled by TorchInductor with the
    fused leapfrog step: ``(V, B, S, A, W, energy0, step, inverse, uniforms, noise, plan) ->
    (V, B, S, A, W, energy0, step, R, summary)``, checked against eager evaluation at probe
    points; raises :class:`~.fallback.Refused` unless the potential is compiled with several
    chains and the kernel agrees."""
    if potential.mode != "compiled" or potential.chains < 2:
        raise Refused("needs a compiled potential over several chains")

    def eager(*args):
        return free_step(potential._leaf_eager, *args, max_tree_depth)

    tol = 1e-10 if potential.initial.dtype == torch.float64 else 2e-5
    return compiled_and_checked(
        eager, lambda seed: _probe_args(potential, max_tree_depth, torch.Generator().manual_seed(seed)),
        lambda got, expected: close_enough(got, expected, tol))


def _probe_args(potential, max_tree_depth, generator):
    """Arguments of :func:`free_step` around the initial point, chains at random places in
    their trees and their warm-ups: an example to compile with, and probes to check it."""
    z = potential.initial
    c, d = z.shape
    like = lambda *shape: torch.randn(shape, generator=generator, dtype=z.dtype).to(z.device)  # noqa: E731
    uniform = lambda *shape: torch.rand(shape, generator=generator, dtype=z.dtype).to(z.device)  # noqa: E731
    u = z + 0.1 * like(c, d)
    with torch.no_grad():
        log_joint = potential._vectorized(u)
    inverse = uniform(c, d) + 0.5
    V, B, S, energy0 = start(u, -log_joint, like(c, d), like(c, d), inverse, max_tree_depth)
    V, B = V + 0.1 * like(*V.shape), like(*B.shape)
    j = torch.floor(uniform(c) * max_tree_depth)
    n = torch.floor(uniform(c) * torch.exp2(j))
    S = S.clone()
    S[:, S_["depth_building"]], S[:, S_["leaf"]] = j, n
    S[:, S_["forward"]] = (uniform(c) < 0.5).to(S)
    S[:, S_["done"]] = torch.floor(uniform(c) * 2.5)
    S[:, S_["sub_log_weight"]] = torch.where(n > 0, like(c), -math.inf)
    step = 0.05 * uniform(c, 1) + 0.01
    A = torch.stack([torch.floor(uniform(c) * 300), torch.floor(uniform(c) * 50), like(c), like(c), like(c),
                     0.1 * like(c), torch.floor(uniform(c) * 30)], 1)
    W = torch.stack([like(c, d), uniform(c, d) * 10], 1)
    plan = make_plan(150, 150, 0.8, z)
    return (V.contiguous(), B, S.contiguous(), A, W, energy0, step, inverse, uniform(c, 3), like(c, d), plan)


#: The columns of ``A``, each chain's warm-up state: transitions done, dual averaging, Welford count.
ADAPTATION = ("count", "t", "mu", "log_step", "log_step_bar", "h_bar", "welford_n")
A_ = {name: i for i, name in enumerate(ADAPTATION)}
#: The statistics recorded with each transition's draw (after the draw in ``R``), then its place.
RECORD = ("lp", "acceptance_rate", "tree_depth", "diverging", "n_steps", "energy", "step_size")
#: Room for the slow windows in ``plan``: windows double, so 16 cover any warm-up.
MAX_WINDOWS = 16


def free_step(leaf, V, B, S, A, W, energy0, step, inverse, uniforms, noise, plan, max_tree_depth):
    """:func:`free_leaf` for every chain, then, for each chain whose transition ended at
    this leaf: its warm-up update (Stan's dual averaging of the step size, Welford sums of
    the draws in a slow window) and its next transition, started from the new draw with
    momentum ``noise * M^{1/2}``. A chain whose draw ends a slow window is held (``done``
    = 2) for :func:`sample` to re-estimate its metric; so is a chain with no transitions
    left.

    ``A (C, len(ADAPTATION))`` and ``W (C, 2, D)`` (Welford mean and sum of squares) are
    the warm-up state; ``plan`` is ``[warmup, total, target_accept, first_0, last_0, ...]``
    (slow windows, padded with -1). Returns ``(V, B, S, A, W, energy0, step, R, summary)``:
    ``R (C, D + 8)`` each chain's ended transition (draw, :data:`RECORD`, index among the
    kept draws or -1) and ``summary``: whether some draw is kept, some chain held, every
    chain done.
    """
    vectors, B, scalars = _leaf_parts(leaf, V, B, S, energy0, step, inverse, uniforms, max_tree_depth)
    col = lambda m: m.unsqueeze(-1)  # noqa: E731
    a = lambda name: A[:, A_[name]]  # noqa: E731
    s = lambda name: scalars[S_[name]]  # noqa: E731
    warmup, total, target = plan[0], plan[1], plan[2]
    first, last = plan[3::2], plan[4::2]
    ended = s("done") == 1
    i = a("count")
    proposal_z, proposal_grad = vectors[V_["proposal_z"]], vectors[V_["proposal_grad"]]
    proposal_potential = s("proposal_potential")
    accept = s("accept_sum") / s("leaves").clamp(min=1)

    adapting = ended & (i < warmup)
    t = a("t") + adapting.to(A.dtype)
    updated = dual_averaging_update(t.clamp(min=1), a("mu"), a("h_bar"), a("log_step_bar"), accept, target)
    h_bar, log_step, log_step_bar = (torch.where(adapting, new, a(name)) for new, name in
                                     zip(updated, ("h_bar", "log_step", "log_step_bar")))
    new_step = torch.where(col(adapting), col(log_step.exp()), step)
    new_step = torch.where(col(adapting & (i == warmup - 1)), col(log_step_bar.exp()), new_step)

    windows_ok = last >= 0
    in_window = ((col(i) >= first) & (col(i) <= last) & windows_ok).any(-1)
    collect = adapting & in_window
    n = a("welford_n") + collect.to(A.dtype)
    updated = welford_update(col(n.clamp(min=1)), W[:, 0], W[:, 1], proposal_z)
    mean, m2 = (torch.where(col(collect), new, old) for new, old in zip(updated, (W[:, 0], W[:, 1])))
    hold = adapting & ((col(i) == last) & windows_ok).any(-1)

    count = i + ended.to(A.dtype)
    kept = ended & (i >= warmup)
    record = stack([-proposal_potential, accept, s("depth"), s("diverging"), s("leaves"), energy0, step[:, 0],
                    torch.where(kept, i - warmup, -1.0)], 1)
    R = concat([proposal_z, record], 1)

    going_on = ended & ~hold & (count < total)
    fresh_vectors, fresh_scalars, new_energy0 = _start_parts(proposal_z, proposal_potential, proposal_grad,
                                                              noise * inverse.rsqrt(), inverse)
    V = stack([torch.where(col(going_on), new, old) for new, old in zip(fresh_vectors, vectors)], 1)
    B = torch.where(going_on.reshape(-1, 1, 1), 0.0, B)
    scalars = [torch.where(going_on, new, old) for new, old in zip(fresh_scalars, scalars)]
    scalars[S_["done"]] = torch.where(ended & ~going_on, 2.0, scalars[S_["done"]])
    S = stack(scalars, 1)
    energy0 = torch.where(going_on, new_energy0, energy0)
    A = stack([count, t, a("mu"), log_step, log_step_bar, h_bar, n], 1)
    summary = stack([kept.any().to(A.dtype), hold.any().to(A.dtype), (count >= total).all().to(A.dtype)], 0)
    return V, B, S, A, stack([mean, m2], 1), energy0, new_step, R, summary


def sample(kernel, sampler, state, step, metric, method, generator, bar=None):
    """``method.warmup + method.num_samples`` NUTS transitions of every chain, each chain
    free-running on the compiled :func:`free_step` ``kernel``, with Stan's warm-up per
    chain at that chain's own iteration count (as in
    :func:`~ppgen.inference.mcmc.engine.run_engine`). Returns the kept draws ``(C, S, D)``
    and the per-draw statistics ``{name: (C, S)}``."""
    z = state.z
    chains, dim = z.shape
    plan = make_plan(method.warmup, method.num_samples, method.target_accept, z)
    total = method.warmup + method.num_samples
    A = _adaptation_start(step, torch.zeros(chains, len(ADAPTATION), dtype=z.dtype, device=z.device),
                          torch.ones(chains, dtype=torch.bool, device=z.device))
    W = z.new_zeros(chains, 2, dim)
    inverse = metric.inverse
    r = metric.momentum(z.shape, generator, z.dtype, z.device)
    V, B, S, energy0 = start(z, state.potential, state.grad, r, inverse, method.max_tree_depth)
    records = z.new_empty(chains, method.num_samples, dim + len(RECORD))
    calls = 0
    while True:
        uniforms = torch.rand((chains, 3), generator=generator, dtype=z.dtype, device=z.device)
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        V, B, S, A, W, energy0, step, R, summary = kernel(V, B, S, A, W, energy0, step, inverse, uniforms, noise,
                                                          plan)
        some_kept, some_held, complete = summary.tolist()
        if some_kept:
            rows = (R[:, -1] >= 0).nonzero().squeeze(-1)
            records[rows, R[rows, -1].long()] = R[rows, :-1]
        if some_held:
            V, B, S, A, W, energy0, step, inverse, metric = _new_metric(
                sampler, generator, V, B, S, A, W, energy0, step, inverse, total, method.max_tree_depth)
        calls += 1
        if bar is not None and calls % 64 == 0:
            bar.update(int(A[:, A_["count"]].min()) - bar.n)
        if complete:
            break
    draws = records[..., :dim].contiguous()
    stats = {name: records[..., dim + k].contiguous() for k, name in enumerate(RECORD)}
    stats["diverging"] = stats["diverging"] > 0
    stats["tree_depth"] = stats["tree_depth"].long()
    return draws, stats


def make_plan(warmup, num_samples, target_accept, like):
    """:func:`free_step`'s ``plan``: warm-up length, transitions, target, slow windows."""
    slow = windows(warmup)
    if len(slow) > MAX_WINDOWS:
        raise ValueError(f"warmup={warmup}: more than {MAX_WINDOWS} adaptation windows")
    bounds = [b for window in slow for b in window] + [-1.0] * (2 * (MAX_WINDOWS - len(slow)))
    return like.new_tensor([warmup, warmup + num_samples, target_accept] + bounds)


def _adaptation_start(step, A, rows):
    """``A`` with the dual averaging of the chains in ``rows`` restarted at ``step (C, 1)``."""
    fresh = A.clone()
    fresh[:, A_["t"]] = 0.0
    for name, value in zip(("mu", "log_step", "log_step_bar", "h_bar"), dual_averaging_start(step[:, 0])):
        fresh[:, A_[name]] = value
    return torch.where(rows.unsqueeze(-1), fresh, A).contiguous()


def _new_metric(sampler, generator, V, B, S, A, W, energy0, step, inverse, total, max_tree_depth):
    """The chains held at the end of a slow window: their metric from the window's draws
    (Stan's regularised variances), a fresh step size by Stan's heuristic, restarted dual
    averaging and Welford sums, and their next transition."""
    held = (S[:, S_["done"]] == 2) & (A[:, A_["count"]] < total)
    rows = held.unsqueeze(-1)
    estimate = regularised_variance(W[:, 1], A[:, A_["welford_n"]].unsqueeze(-1))
    inverse = torch.where(rows, estimate, inverse).contiguous()
    metric = Metric(inverse)
    # contiguous copies: the compiled leaf (step-size search) reads its inputs as dense
    proposal = State(V[:, V_["proposal_z"]].contiguous(), S[:, S_["proposal_potential"]].contiguous(),
                     V[:, V_["proposal_grad"]].contiguous())
    step = torch.where(rows, initial_step_size(sampler, proposal, step, metric, generator), step).contiguous()
    A = _adaptation_start(step, A, held)
    A[:, A_["welford_n"]] = torch.where(held, 0.0, A[:, A_["welford_n"]])
    W = torch.where(held.reshape(-1, 1, 1), 0.0, W).contiguous()
    r = metric.momentum(proposal.z.shape, generator, proposal.z.dtype, proposal.z.device)
    new_V, new_B, new_S, new_energy0 = start(proposal.z, proposal.potential, proposal.grad, r, inverse,
                                             max_tree_depth)
    V = torch.where(held.reshape(-1, 1, 1), new_V, V).contiguous()
    B = torch.where(held.reshape(-1, 1, 1), new_B, B).contiguous()
    S = torch.where(rows, new_S, S).contiguous()
    energy0 = torch.where(held, new_energy0, energy0).contiguous()
    return V, B, S, A, W, energy0, step, inverse, metric
