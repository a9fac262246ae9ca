"""NUTS transitions as the engine runs them: one chain in Python scalars, or a batch in lockstep.

The algorithm is the reference kernel's (:func:`~.reference.nuts_transition`, built from
:mod:`.integrator`, :mod:`.termination` and :mod:`.proposal`); :class:`Sampler` runs it fast:

* one chain keeps its bookkeeping in Python floats and NumPy views of the momenta
  (:meth:`Sampler._transition_single`), with the reference's random numbers;
* several chains take their ``2^j`` leapfrog steps of depth ``j`` together, so the
  potential is evaluated once per step for the whole batch; a chain whose tree has
  stopped is frozen by masks until the deepest tree of the batch is done. Its random
  numbers come through a draws object (:mod:`.randomness`), which the tests replace by
  the reference's. On a compiled potential each leaf and all of its per-chain
  bookkeeping can be one TorchInductor kernel (:mod:`.lockstep`).

The accelerators that take over whole transitions, the C++ transition (:mod:`.native`)
and free-running chains (:mod:`.free_running`), are chosen in :mod:`.accelerate`. Tried and
not used for one chain (RESULTS.md, "Design measurements"): the whole transition as one
TorchInductor program (a ``while_loop`` over leaves); the generated loop allocates some
thirty buffers an iteration, and the allocator, not the arithmetic, sets the pace.

Everything here is functional: a :class:`Metric` and per-chain step sizes
(shape ``(C, 1)``) in, a new :class:`State` and per-chain statistics out.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .integrator import State, leaf
from .metric import Metric
from .proposal import acceptance, biased, energy_error, log_add_exp, progressive
from .randomness import FIRST_DRAW_DEPTH, GeneratorDraws
from .termination import MAX_DELTA_H, closing_levels, level_masks, opening_levels, turned

__all__ = ["Metric", "Sampler", "State"]


class Sampler:
    """NUTS transitions for the potential ``potential.value_and_grad``.

    Parameters
    ----------
    value_and_grad : callable
        ``u (C, D) -> (U (C,), grad (C, D))``.
    max_tree_depth : int
    generator : torch.Generator
        The one source of randomness (momenta, directions, proposals).
    fused_leaf : callable, optional
        ``(z, r, grad, rho, step, half_step, inverse) -> (z, r, grad, U, H, M^{-1} r, rho + r)``,
        one compiled leapfrog step for a diagonal metric (``Potential.leaf``); the same
        arithmetic in separate tensor operations otherwise.
    lockstep_kernel : callable, optional
        Several chains: one leaf and its bookkeeping compiled together
        (:func:`ppgen.inference.mcmc.lockstep.compile_lockstep`); the tensor bookkeeping of
        :meth:`_subtree` otherwise.
    native : NativeNUTS, optional
        A diagonal metric: every chain's whole transition in C++
        (:mod:`ppgen.inference.mcmc.native`), each chain alone.
    draws : optional
        Where several chains' transitions take their random numbers
        (:class:`~.randomness.GeneratorDraws` of ``generator`` unless given:
        :class:`~.randomness.ReplayedDraws` replays the reference kernel's).
    """

    def __init__(self, value_and_grad, max_tree_depth, generator, fused_leaf=None, lockstep_kernel=None,
                 native=None, draws=None):
        self.value_and_grad, self.max_tree_depth, self.generator = value_and_grad, max_tree_depth, generator
        self.fused_leaf, self.lockstep_kernel, self.native = fused_leaf, lockstep_kernel, native
        self.draws = draws
        self._steps, self._masks = None, {}

    def leaf(self, z, r, grad, rho, step, half_step, metric):
        """One leapfrog step and the new point's ``(z, r, grad, U, H, M^{-1} r, rho + r)``
        (:func:`~.integrator.leaf`, or the compiled leaf doing the same arithmetic)."""
        if self.fused_leaf is not None and not metric.dense:
            return self.fused_leaf(z, r, grad, rho, step, half_step, metric.inverse)
        return leaf(self.value_and_grad, z, r, grad, rho, step, half_step, metric.velocity)

    def leapfrog(self, z, r, grad, step, metric, half_step=None):
        step = step.expand(z.shape[0], 1).contiguous()
        half_step = 0.5 * step if half_step is None else half_step
        z, r, grad, potential = self.leaf(z, r, grad, r, step, half_step, metric)[:4]
        return z, r, grad, potential

    def transition(self, state, step_size, metric):
        """One NUTS transition of every chain; returns ``(state, stats)``."""
        z, grad, potential = state.z, state.grad, state.potential
        chains = z.shape[0]
        # The compiled leaf takes its inputs' layout on trust: dense (C, 1) step sizes.
        step_size = step_size.expand(chains, 1).contiguous()
        if self.native is not None and not metric.dense:
            return self.native.transition(state, step_size, metric)
        if chains == 1:
            return self._transition_single(state, step_size, metric)
        draws = self.draws if self.draws is not None else GeneratorDraws(self.generator)
        r = draws.momentum(metric, z)
        energy0 = potential + metric.kinetic(r)
        tree = {"left": (z, r, grad, potential), "right": (z, r, grad, potential),
                "proposal": (z, potential, grad), "log_weight": torch.zeros_like(potential), "rho": r}
        active = torch.ones(chains, dtype=torch.bool, device=z.device)
        depth = torch.zeros(chains, dtype=torch.long, device=z.device)
        diverging = torch.zeros_like(active)
        accept_sum = torch.zeros_like(potential)
        leaves = torch.zeros_like(potential)
        for j in range(self.max_tree_depth):
            forward = draws.direction(j, potential) < 0.5
            start = [torch.where(_col(forward, a), b, a) for a, b in zip(tree["left"], tree["right"])]
            sub = self._subtree(start, forward, j, energy0, step_size, metric, active, draws.choices(j, potential))
            accept_sum = accept_sum + sub["accept_sum"]
            leaves = leaves + sub["leaves"]
            depth = torch.where(active, j + 1, depth)
            diverging = diverging | (active & sub["diverging"])
            ok = active & ~sub["turning"] & ~sub["diverging"]
            take = ok & (draws.merge(j, potential).log() < sub["log_weight"] - tree["log_weight"])
            tree["proposal"] = tuple(torch.where(_col(take, new), new, old)
                                     for new, old in zip(sub["proposal"], tree["proposal"]))
            tree["log_weight"] = torch.where(ok, torch.logaddexp(tree["log_weight"], sub["log_weight"]),
                                             tree["log_weight"])
            right_grows, left_grows = ok & forward, ok & ~forward
            tree["right"] = tuple(torch.where(_col(right_grows, e), e, o) for e, o in zip(sub["end"], tree["right"]))
            tree["left"] = tuple(torch.where(_col(left_grows, e), e, o) for e, o in zip(sub["end"], tree["left"]))
            tree["rho"] = torch.where(ok.unsqueeze(-1), tree["rho"] + sub["rho"], tree["rho"])
            turning = turned(metric.velocity(tree["left"][1]), metric.velocity(tree["right"][1]), tree["rho"])
            active = ok & ~turning
            if not bool(active.any()):
                break
        new_z, new_potential, new_grad = tree["proposal"]
        stats = {"accept": accept_sum / leaves.clamp(min=1), "depth": depth, "diverging": diverging,
                 "energy": energy0, "leapfrogs": leaves}
        return State(new_z, new_potential, new_grad), stats

    def _subtree(self, start, forward, j, energy0, step_size, metric, active, uniforms):
        """``2^j`` leapfrog steps from ``start`` for every active chain, with the leaves'
        ``uniforms (2^j, C)``. Masks are applied only while some chain has stopped: the
        common case runs without them."""
        if self.lockstep_kernel is not None and not metric.dense:
            return self._subtree_compiled(start, forward, j, energy0, step_size, metric, active, uniforms)
        z, r, grad, potential = start
        chains = z.shape[0]
        step = torch.where(forward.unsqueeze(-1), step_size, -step_size)
        half_step = 0.5 * step
        alive = active.clone()
        everyone = bool(alive.all())
        turning = torch.zeros_like(alive)
        diverging = torch.zeros_like(alive)
        log_weight = torch.full_like(potential, -math.inf)
        proposal = (z, potential, grad)
        rho = torch.zeros_like(r)
        accept_sum = torch.zeros_like(potential)
        leaves = torch.zeros_like(potential)
        block_r = r.new_empty((j + 1,) + r.shape)
        block_rho = r.new_empty((j + 1,) + r.shape)
        for n in range(2 ** j):
            new = self.leaf(z, r, grad, r, step, half_step, metric)
            if everyone:
                z, r, grad, potential, energy = new[:5]
            else:
                column = alive.unsqueeze(-1)
                z, r, grad = (torch.where(column, a, b) for a, b in zip(new[:3], (z, r, grad)))
                potential, energy = torch.where(alive, new[3], potential), new[4]
            delta = torch.nan_to_num(energy - energy0, nan=math.inf)
            merged = torch.logaddexp(log_weight, -delta)
            take = uniforms[n] < torch.exp(-delta - merged)
            accept = torch.exp(-delta.clamp(min=0))
            if everyone:
                accept_sum, leaves, log_weight = accept_sum + accept, leaves + 1, merged
                rho_next = rho + r
            else:
                take = take & alive
                accept_sum, leaves = accept_sum + accept * alive, leaves + alive
                log_weight = torch.where(alive, merged, log_weight)
                rho_next = torch.where(column, rho + r, rho)
            if chains == 1:  # one Python branch is cheaper than three masked copies
                if bool(take):
                    proposal = (z, potential, grad)
            else:
                take_column = take.unsqueeze(-1)
                proposal = (torch.where(take_column, z, proposal[0]), torch.where(take, potential, proposal[1]),
                            torch.where(take_column, grad, proposal[2]))
            opening = opening_levels(n, j)
            if opening:
                block_r[1:opening + 1] = r
                block_rho[1:opening + 1] = rho
            rho = rho_next
            leaf_diverging = delta > MAX_DELTA_H
            stop = leaf_diverging
            closing = closing_levels(n)
            if closing:
                leaf_turning = turned(metric.velocity(block_r[1:closing + 1]), metric.velocity(r),
                                      rho - block_rho[1:closing + 1]).any(0)
                turning = turning | (alive & leaf_turning)
                stop = stop | leaf_turning
            diverging = diverging | (alive & leaf_diverging)
            alive = alive & ~stop
            remaining = int(alive.sum())
            if remaining == 0:
                break
            everyone = remaining == chains
        return {"end": (z, r, grad, potential), "proposal": proposal, "log_weight": log_weight,
                "rho": rho, "turning": turning, "diverging": diverging, "accept_sum": accept_sum,
                "leaves": leaves}

    def _subtree_compiled(self, start, forward, j, energy0, step_size, metric, active, uniforms):
        """:meth:`_subtree` with each leaf and its bookkeeping one compiled kernel
        (:mod:`ppgen.inference.mcmc.lockstep`); the same arithmetic and random draws."""

        z, r, grad, potential = start
        levels = self.max_tree_depth + 1
        step = torch.where(forward.unsqueeze(-1), step_size, -step_size)
        half_step = 0.5 * step
        zero, blocks = torch.zeros_like(potential), z.new_zeros((levels,) + tuple(z.shape))
        no = torch.zeros_like(active)
        carried = (z, r, grad, potential, torch.zeros_like(r), torch.full_like(potential, -math.inf),
                   z, potential, grad, zero, zero, blocks, blocks, active.clone(), no, no)
        if j not in self._masks:
            self._masks[j] = level_masks(j, levels, z.device)
        for n, (opening, closing) in enumerate(self._masks[j]):
            *carried, remaining = self.lockstep_kernel(*carried, step, half_step, metric.inverse, energy0,
                                                       uniforms[n], opening, closing)
            if int(remaining) == 0:
                break
        (z, r, grad, potential, rho, log_weight, proposal_z, proposal_potential, proposal_grad,
         accept_sum, leaves, _, _, _, turning, diverging) = carried
        return {"end": (z, r, grad, potential), "proposal": (proposal_z, proposal_potential, proposal_grad),
                "log_weight": log_weight, "rho": rho, "turning": turning, "diverging": diverging,
                "accept_sum": accept_sum, "leaves": leaves}

    # ------------------------------------------------------------ one chain, scalar bookkeeping
    def _transition_single(self, state, step_size, metric):
        """:meth:`transition` for one chain: the reference kernel's algorithm
        (:func:`~.reference.nuts_transition`) and random numbers (in
        :meth:`~.randomness.Noise.draw`'s layout, drawn as needed), with the bookkeeping in
        Python floats and NumPy views of the momenta: one tensor read and two small dot
        products per leaf instead of a dozen small tensor operations. Its statistics are
        Python scalars (``accept``, ``depth``, ``diverging``, ``energy``, ``leapfrogs``)."""
        z, grad, potential = state.z, state.grad, state.potential
        host = _numpy_view if z.device.type == "cpu" else _numpy_copy
        r = metric.momentum(z.shape, self.generator, z.dtype, z.device)
        velocity = metric.velocity(r)
        r_host, velocity_host = host(r), host(velocity)
        energy0 = float(potential) + 0.5 * float(velocity_host @ r_host)
        left = right = (z, r, grad, potential, velocity_host)
        proposal, log_weight, rho = (z, potential, grad), 0.0, r_host
        steps = self._signed_steps(step_size)
        leaf = self.fused_leaf if self.fused_leaf is not None and not metric.dense else \
            (lambda *args: self.leaf(*args[:-1], metric))
        # one draw of this transition's uniforms: directions, merge coins, in-subtree choices
        uniforms = torch.rand(2 * self.max_tree_depth + 2 ** min(self.max_tree_depth, FIRST_DRAW_DEPTH) - 1,
                              generator=self.generator, dtype=torch.float64).tolist()
        coins, spare = uniforms[:2 * self.max_tree_depth], uniforms[2 * self.max_tree_depth:]
        zero, zero_host = torch.zeros_like(r), np.zeros_like(r_host)
        depth, diverging, accept_sum, leaves = 0, False, 0.0, 0
        for j in range(self.max_tree_depth):
            forward = coins[2 * j] < 0.5
            if len(spare) < 2 ** j:
                spare = torch.rand(2 ** j, generator=self.generator, dtype=torch.float64).tolist()
            choices, spare = spare[:2 ** j], spare[2 ** j:]
            sub = self._subtree_single(leaf, right if forward else left, forward, j, energy0, steps,
                                       metric.inverse, host, zero, zero_host, choices)
            accept_sum, leaves, depth = accept_sum + sub["accept_sum"], leaves + sub["leaves"], j + 1
            diverging = diverging or sub["diverging"]
            if sub["turning"] or sub["diverging"]:
                break
            if biased(sub["log_weight"], log_weight, coins[2 * j + 1]):
                proposal = sub["proposal"]
            log_weight = log_add_exp(log_weight, sub["log_weight"])
            if forward:
                right = sub["end"]
            else:
                left = sub["end"]
            rho = rho + sub["rho"]
            if left[4] @ rho <= 0 or right[4] @ rho <= 0:
                break
        stats = {"accept": accept_sum / max(leaves, 1), "depth": depth, "diverging": diverging,
                 "energy": energy0, "leapfrogs": leaves}
        return State(*proposal), stats

    def _signed_steps(self, step_size):
        """``(step, -step, step / 2, -step / 2)`` as tensors, kept while the step size is the
        same tensor (after warm-up, every transition)."""
        if self._steps is None or self._steps[0] is not step_size:
            self._steps = (step_size, (step_size, -step_size, 0.5 * step_size, -0.5 * step_size))
        return self._steps[1]

    def _subtree_single(self, leaf, start, forward, j, energy0, steps, inverse, host, zero, zero_host, uniforms):
        """``2^j`` leaves from ``start``; momenta sums and velocities as NumPy vectors."""
        z, r, grad, potential, velocity = start
        step, half_step = (steps[0], steps[2]) if forward else (steps[1], steps[3])
        log_weight, proposal = -math.inf, (z, potential, grad)
        rho = zero_host  # the momentum sum before the current leaf
        accept_sum, leaves, turning, diverging = 0.0, 0, False, False
        block_velocity, block_rho = [None] * (j + 1), [None] * (j + 1)
        for n in range(2 ** j):
            # rho is summed on the host, so the leaf's running sum starts from zero each time
            z, r, grad, potential, energy, velocity_t, _ = leaf(z, r, grad, zero, step, half_step, inverse)
            velocity, rho_next = host(velocity_t), rho + host(r)
            delta = energy_error(float(energy), energy0)
            log_weight, take = progressive(log_weight, delta, uniforms[n])
            if take:
                proposal = (z, potential, grad)
            accept_sum += acceptance(delta)
            leaves += 1
            for k in range(1, opening_levels(n, j) + 1):
                block_velocity[k], block_rho[k] = velocity, rho
            rho = rho_next
            if delta > MAX_DELTA_H:
                diverging = True
                break
            for k in range(1, closing_levels(n) + 1):
                block_sum = rho - block_rho[k]
                if block_velocity[k] @ block_sum <= 0 or velocity @ block_sum <= 0:
                    turning = True
                    break
            if turning:
                break
        return {"end": (z, r, grad, potential, velocity), "proposal": proposal, "log_weight": log_weight,
                "rho": rho, "turning": turning, "diverging": diverging, "accept_sum": accept_sum,
                "leaves": leaves}


def _numpy_view(t):
    """A one-chain ``(1, D)`` CPU tensor's row as a NumPy vector (shared memory: the
    sampler's tensors are fresh outputs, never written in place)."""
    return t.numpy()[0]


def _numpy_copy(t):
    return t.cpu().numpy()[0]


def _col(mask, like):
    """``mask (C,)`` shaped to broadcast against ``like (C, ...)``."""
    return mask.reshape(mask.shape + (1,) * (like.dim() - 1))
