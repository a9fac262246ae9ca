"""Data-parallel adversarial training: :func:`~ppgen.inference.adversarial.run_adversarial` over ranks.

A step of the single-process loop uses ``n`` discriminator inputs (``batch_size``,
each of ``pack`` samples): ``n`` packs of real data from the epoch's
permutation, ``n * pack`` codes :math:`z \\sim N(0, I)`, and for WGAN-GP ``n``
interpolation weights, all drawn from one generator seeded with ``seed``. With
``W`` ranks every rank draws exactly those (the same generator, the same
calls, so the same values) and keeps its chunk: rank ``r`` the ``r``-th of ``W``
consecutive chunks of ``c_r`` packs, :math:`\\sum_r c_r = n`. Both losses are
means over discriminator inputs, so the weighted sum of the ranks' gradients

.. math::
    \\sum_r \\frac{c_r}{n} \\nabla \\Big(\\frac{1}{c_r} \\sum_{j \\in C_r} \\ell_j\\Big)
        = \\nabla \\frac1n \\sum_{j=1}^{n} \\ell_j

is the single-process gradient, taken with one all-reduce per discriminator
step and one per generator step. A ``W``-rank run therefore equals the
one-process run with the same ``seed`` to float rounding, for networks without
batch normalisation; with it, each rank normalises over its own chunk (as
DistributedDataParallel without SyncBatchNorm) and the running statistics of
rank 0 are the ones kept (broadcast before every checkpoint and at the end).

No per-rank randomness is used, so the checkpoint is the single-process one:
rank 0 writes it, every rank resumes from it, on any number of ranks.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time

import torch
from tqdm.auto import tqdm

from .. import distributed as group
from ..errors import MethodError
from .adversarial import Batches, check_adversarial_pair, discriminator_loss, flush_losses, generator_loss
from .checkpoint import FORMAT, atomic_save, resume_from
from .data_parallel import AgreedInterrupt, check_same_checkpoint, check_same_data, shard_sizes
from .svi import DeferredInterrupt

log = logging.getLogger("ppgen")


class _ShardedBatches(Batches):
    """The single-process minibatches (same permutations), of which this rank keeps rows ``[lo, hi)``."""

    def __init__(self, data, rows, generator, state, lo, hi):
        super().__init__(data, rows, generator, state)
        self.lo, self.hi = lo, hi

    def window(self, start):
        return slice(start + self.lo, start + self.hi)


def run_adversarial_data_parallel(program, method, *, seed, progress, fingerprint):
    """Data-parallel :func:`~ppgen.inference.adversarial.run_adversarial`: same arguments, same return."""
    model = program.generative
    check_adversarial_pair(model)
    data = program.kwargs["data"]
    check_same_data(data)
    if data.shape[0] < model.pack:
        raise MethodError(f"Adversarial: {data.shape[0]} data points cannot fill one discriminator input of "
                          f"pack={model.pack} samples")
    rows = min(method.batch_size, data.shape[0] // model.pack) * model.pack
    inputs, rank, world = rows // model.pack, group.rank(), group.world_size()
    if inputs < world:
        raise MethodError(f"Adversarial(batch_size={method.batch_size}): {inputs} discriminator inputs per step "
                          f"cannot be shared by {world} ranks")
    sizes = shard_sizes(inputs, world)
    first, count = sum(sizes[:rank]), sizes[rank]
    g_params, d_params = model.generator_parameters(), model.discriminator_parameters()
    for player, params in (("generator", g_params), ("discriminator", d_params)):
        if not params:
            raise MethodError(f"Adversarial: the {player} has no trainable parameters")
    tensors = model.state_dict()  # views of the weights and batch-norm statistics
    group.broadcast_([t for t in tensors.values() if t.is_floating_point()])
    opt_g = torch.optim.Adam(g_params, lr=method.lr_generator, betas=method.betas)
    opt_d = torch.optim.Adam(d_params, lr=method.lr_discriminator, betas=method.betas)
    generator = torch.Generator(device=data.device).manual_seed(seed)
    state = {"step": 0, "position": 0, "order": None, "losses": [], "discriminator_losses": []}
    pending = []

    def save():
        flush_losses(pending, state)
        group.broadcast_([t for t in tensors.values() if t.is_floating_point()])  # rank 0's batch-norm statistics
        if group.is_main():
            atomic_save({"format": FORMAT, "kind": "checkpoint", "fingerprint": fingerprint,
                         "params": {k: v.detach().clone() for k, v in tensors.items()},
                         "optimizer": {"generator": opt_g.state_dict(), "discriminator": opt_d.state_dict()},
                         "generator": generator.get_state(), "state": copy.deepcopy(state)}, method.checkpoint)
        group.barrier()

    if method.checkpoint and method.resume:
        saved = resume_from(method.checkpoint, fingerprint, tensors)
        check_same_checkpoint(method.checkpoint, saved)
        if saved is not None:
            opt_g.load_state_dict(saved["optimizer"]["generator"])
            opt_d.load_state_dict(saved["optimizer"]["discriminator"])
            generator.set_state(saved["generator"])
            state = saved["state"]
            if group.is_main():
                log.info("resumed Adversarial on %d ranks from %s at step %d", world, method.checkpoint,
                         state["step"])
    batches = _ShardedBatches(data, rows, generator, state, first * model.pack, (first + count) * model.pack)
    model.train()
    start = time.perf_counter()
    interrupt = DeferredInterrupt() if method.checkpoint else contextlib.nullcontext()
    bar = tqdm(total=method.num_steps, initial=min(state["step"], method.num_steps),
               disable=not (progress and group.is_main()), desc=f"Adversarial x{world}", leave=False)
    try:
        with interrupt:
            _loop(model, batches, (g_params, d_params, opt_g, opt_d), generator, state, pending, method, bar,
                  interrupt, save, (first, count, inputs))
    except AgreedInterrupt:
        if method.checkpoint:
            save()
            if group.is_main():
                log.warning("interrupted at step %d; checkpoint saved to %s", state["step"], method.checkpoint)
        raise
    finally:
        bar.close()
    flush_losses(pending, state)
    if method.checkpoint:
        save()
    else:
        group.broadcast_([t for t in tensors.values() if t.is_floating_point()])
    return {"losses": list(state["losses"]), "discriminator_losses": list(state["discriminator_losses"]),
            "seconds": time.perf_counter() - start, "steps": state["step"], "world_size": world}


def _loop(model, batches, optim, generator, state, pending, method, bar, interrupt, save, share):
    g_params, d_params, opt_g, opt_d = optim
    first, count, inputs = share
    weight = count / inputs
    lo, hi = first * model.pack, (first + count) * model.pack
    data = batches.data
    shape, options = (batches.rows, model.latent_dim), {"generator": generator, "device": data.device,
                                                        "dtype": data.dtype}
    penalty = method.loss == "wasserstein" and bool(method.gradient_penalty)
    decay = ([(opt_g, method.lr_generator), (opt_d, method.lr_discriminator)]
             if method.lr_decay != 1 else [])
    while state["step"] < method.num_steps:
        for opt, lr in decay:
            opt.param_groups[0]["lr"] = lr * method.lr_decay ** (state["step"] / method.num_steps)
        for k in range(method.discriminator_steps):
            real = batches.next()
            z = torch.randn(shape, **options)[lo:hi]  # all ranks draw the union's codes, keep their chunk
            if k == method.discriminator_steps - 1:
                fake = model.generate(z)  # kept with its graph for the generator's step
            else:
                with torch.no_grad():
                    fake = model.generate(z)
            weights = None
            if penalty:  # drawn for the union, as the one-process loop does
                union = torch.rand(inputs, generator=generator, device=data.device, dtype=data.dtype)
                weights = union[first:first + count]
            d_loss = discriminator_loss(model, real, fake.detach(), method, weights=weights)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            d_total, = group.reduce_gradients(d_params, weight, extras=(d_loss,))
            opt_d.step()
        g_loss = generator_loss(model, fake, method)
        grads = torch.autograd.grad(g_loss, g_params, allow_unused=True)
        for param, grad in zip(g_params, grads):
            param.grad = grad
        flag = float(getattr(interrupt, "pending", False))
        g_total, flag = group.reduce_gradients(g_params, weight, extras=(g_loss, flag))
        opt_g.step()
        pending.append(torch.stack([g_total, d_total]))
        state["step"] += 1
        bar.update()
        if len(pending) >= 100:
            flush_losses(pending, state)
            bar.set_postfix(generator=f"{state['losses'][-1]:.4g}",
                            discriminator=f"{state['discriminator_losses'][-1]:.4g}")
        if method.checkpoint and state["step"] % method.checkpoint_every == 0:
            save()
        if method.checkpoint and float(flag) > 0:
            raise AgreedInterrupt
