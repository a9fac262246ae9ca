"""Data-parallel SVI and gradient MAP over the ranks of a ``torch.distributed`` group.

``ppgen.fit(model, data, SVI(batch_size=B), distributed=True)`` run by ``W``
processes (``torchrun --nproc-per-node W``) trains one model: every rank holds
the whole data set and the same parameters, and at each step takes its own
shard of the step's minibatch.

Sharding
    The minibatches are those of the single-process loop: each epoch a random
    permutation of the ``N`` data points, drawn by rank 0 from its seeded
    stream and broadcast (one collective per epoch), cut into consecutive
    batches of ``B``. ``batch_size`` is the *global* batch: rank ``r`` takes the
    ``r``-th of ``W`` consecutive chunks of each batch, ``b_r`` points
    (:math:`\\lceil B/W \\rceil` or :math:`\\lfloor B/W \\rfloor`), through the
    model's data plate with ``subsample_size = b_r``. Without ``batch_size``
    every step uses the whole data set, rank ``r`` the ``r``-th chunk of it.
Gradients
    Under the subsampled plate rank ``r``'s loss is the unbiased estimate
    :math:`L_r = -\\log p(\\theta) + \\frac{N}{b_r} \\sum_{i \\in S_r} \\ell_i(\\theta)`
    of the whole negative ELBO (global terms once, local terms scaled). The ranks
    sum :math:`\\frac{b_r}{B} \\nabla L_r` in one all-reduce per step:

    .. math::
        \\sum_r \\frac{b_r}{B} \\nabla L_r = -\\nabla \\log p(\\theta)
            + \\frac{N}{B} \\sum_{i \\in S_1 \\cup \\dots \\cup S_W} \\nabla \\ell_i(\\theta),

    the single-process gradient on the union batch, so every rank takes the same
    Adam step (the loss recorded is :math:`\\sum_r \\frac{b_r}{B} L_r`, the union
    batch's). With a deterministic objective (MAP) a ``W``-rank run equals the
    one-process run with the same ``seed`` and ``batch_size`` to float rounding.
Seeds
    Every rank starts from ``seed`` (the parameters are also broadcast from rank
    0), so initialisation is identical. Then rank 0 keeps the stream of the
    single-process run and rank ``r > 0`` is reseeded from ``(seed, r)``: the
    Monte Carlo draws (a VAE's codes, a diffusion model's noise) of different
    ranks are independent.
Checkpoints
    Every ``checkpoint_every`` steps all ranks gather their RNG states and rank 0
    alone writes the checkpoint (atomically), then all wait at a barrier. Every
    rank resumes from the same file, its own RNG state included, so an
    interrupted run resumed on as many ranks equals the uninterrupted one; the
    file is also a valid single-process checkpoint and vice versa (with a
    different number of ranks the data order continues and the ranks' Monte
    Carlo streams restart from ``(seed, rank, step)``). Ctrl-C on any rank stops
    all of them after the same step (the flag rides in the gradient
    all-reduce), with a checkpoint.

Only rank 0 shows progress bars and logs; the returned losses, parameters and
guide draws are the same on every rank.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import time

import pyro
import torch
from tqdm.auto import tqdm

from .. import distributed as group
from ..errors import CheckpointError, DataError, MethodError
from .checkpoint import FORMAT, atomic_save, resume_from
from .svi import DeferredInterrupt, Objective, build_guide, choose_elbo, evaluate_validation

log = logging.getLogger("ppgen")


class AgreedInterrupt(KeyboardInterrupt):
    """Ctrl-C seen by some rank, acted on by all ranks after the same step."""


def rank_seed(seed, rank, *salt):
    """A seed for rank ``rank``'s own stream, from the shared ``seed`` (and ``salt``)."""
    text = ":".join(str(v) for v in (seed, rank, *salt))
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)  # < 2**32, as numpy wants


def shard_sizes(batch, world):
    """Points of a batch of ``batch`` each of ``world`` ranks takes: consecutive chunks, sizes differing by one."""
    return [len(chunk) for chunk in torch.arange(batch).tensor_split(world)]


def sync_rng(device=None):
    """Give every rank rank 0's RNG state (torch's, and CUDA's on a CUDA ``device``)."""
    state = torch.get_rng_state()
    group.broadcast_([state])
    torch.set_rng_state(state)
    if device is not None and torch.device(device).type == "cuda":
        cuda = torch.cuda.get_rng_state()
        group.broadcast_([cuda])
        torch.cuda.set_rng_state(cuda)


class _ShardedObjective(Objective):
    """:class:`~ppgen.inference.svi.Objective` drawing this rank's chunk of each global batch."""

    def __init__(self, program, guide, elbo, kwargs, batch, full):
        rank, world = group.rank(), group.world_size()
        sizes = shard_sizes(batch, world)
        super().__init__(program, guide, elbo, kwargs, sizes[rank])
        self.global_batch, self.full = batch, full
        self.offset = sum(sizes[:rank])
        self.weight = sizes[rank] / batch

    def _batch(self, state):
        lo, hi = self.offset, self.offset + self.batch_size
        if self.full:
            return torch.arange(lo, hi)
        batches = state.setdefault("batches", {"order": None, "cursor": 0})
        if batches["order"] is None or batches["cursor"] + self.global_batch > self.size:
            # rank 0 draws where the single-process loop draws; the others receive it
            order = torch.randperm(self.size) if group.is_main() else torch.empty(self.size, dtype=torch.long)
            group.broadcast_([order])
            batches["order"], batches["cursor"] = order, 0
        start = batches["cursor"]
        batches["cursor"] = start + self.global_batch
        return batches["order"][start + lo:start + hi]


class _Averaged:
    """An objective whose held-out loss is the mean over the ranks (so early stopping agrees)."""

    def __init__(self, objective):
        self.objective = objective

    def loss(self, kwargs, differentiable=False):
        value = torch.tensor([float(self.objective.loss(kwargs, differentiable=differentiable))],
                             dtype=torch.float64)
        group.all_reduce_([value])
        return float(value) / group.world_size()


def check_same_checkpoint(path, saved):
    """Raise a CheckpointError on every rank unless all ranks resumed from the same checkpoint
    (or all found none): on several machines the file must be on storage they all see."""
    step = -1 if saved is None else saved["state"]["step"]
    seen = [int(s) for s in group.all_gather(torch.tensor([step], dtype=torch.long))]
    if len(set(seen)) > 1:
        found = ", ".join(f"rank {r}: {'none' if s < 0 else f'step {s}'}" for r, s in enumerate(seen))
        raise CheckpointError(f"{path}: the ranks found different checkpoints ({found}); put it on a file "
                              "system every machine sees")


def check_same_data(data):
    """Raise a DataError on every rank unless all ranks hold the same data (by size, and the sum of
    about a thousand evenly spaced rows): each rank must be given the whole data set, not its part."""
    rows = data.reshape(data.shape[0], -1)
    rows = rows[::max(1, rows.shape[0] // 1024)]  # about a thousand rows: cheap for any data set
    summary = torch.tensor([float(data.shape[0]), float(torch.nan_to_num(rows.double()).sum())], dtype=torch.float64)
    seen = group.all_gather(summary)
    if any(not torch.equal(s, seen[0]) for s in seen):
        sizes = ", ".join(f"rank {r}: {int(s[0])} rows, sum {float(s[1]):.6g}" for r, s in enumerate(seen))
        raise DataError(f"distributed=True: the ranks were given different data ({sizes}); give every "
                        "process the whole data set, the ranks shard each minibatch themselves")


def _check(program, method):
    if program.generative is None or not program.accepts("subsample_size"):
        raise MethodError("distributed=True: data-parallel SVI/MAP shards the data through a ppgen "
                          "GenerativeModel's data plate (subsample_size); a plain Pyro program cannot be sharded")
    check_same_data(program.kwargs["data"])
    size = program.kwargs["data"].shape[0]
    batch = method.batch_size or size
    world = group.world_size()
    if batch > size:
        raise MethodError(f"{type(method).__name__}(batch_size={batch}) is larger than the {size} data points")
    if batch < world:
        raise MethodError(f"{type(method).__name__}(batch_size={batch}) is smaller than the {world} ranks: "
                          "every rank needs at least one data point per step")
    return batch


def run_svi_data_parallel(program, method, *, seed, progress, fingerprint, validation_kwargs=None,
                          init_values=None):
    """Data-parallel :func:`~ppgen.inference.svi.run_svi`: same arguments, same return."""
    batch = _check(program, method)
    rank, world = group.rank(), group.world_size()
    guide = build_guide(program, method, init_values)
    elbo = choose_elbo(program, method)
    local = shard_sizes(batch, world)[rank]
    objective = _ShardedObjective(program, guide, elbo, program.with_kwargs(subsample_size=local), batch,
                                  full=method.batch_size is None)
    # Build the lazy parameters as the single-process run does (same draws from the same stream).
    first = program.with_kwargs(subsample_size=method.batch_size) if method.batch_size else program.kwargs
    objective.loss(first, differentiable=False, capture=True)
    params = objective.params()
    group.broadcast_(list(params.values()))
    if rank:
        pyro.set_rng_seed(rank_seed(seed, rank))
    optimizer = torch.optim.Adam(list(params.values()), lr=method.lr)
    gamma = method.lr_decay ** (1.0 / max(method.num_steps, 1))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    state = {"step": 0, "losses": [], "val_losses": [], "best_val": math.inf,
             "best_params": None, "bad_evals": 0, "stopped_early": False}
    generative = program.generative  # its own training state (a weight average) is checkpointed too
    model_state = getattr(generative, "training_state", dict)

    def save():
        rng = group.all_gather(torch.get_rng_state())  # collective: every rank calls save()
        if group.is_main():
            atomic_save({"format": FORMAT, "kind": "checkpoint", "fingerprint": fingerprint,
                         "params": {k: v.detach().clone() for k, v in params.items()},
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "rng": {"torch": rng[0]}, "rank_rng": rng, "world_size": world,
                         "state": copy.deepcopy(state), "model_state": model_state()}, method.checkpoint)
        group.barrier()

    if method.checkpoint and method.resume:
        saved = resume_from(method.checkpoint, fingerprint, params)
        check_same_checkpoint(method.checkpoint, saved)
        if saved is not None:
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            state = saved["state"]
            restore_rng(saved, seed, state["step"])
            if saved.get("model_state"):
                generative.load_training_state(saved["model_state"])
            if group.is_main():
                log.info("resumed SVI on %d ranks from %s at step %d", world, method.checkpoint, state["step"])

    start = time.perf_counter()
    interrupt = DeferredInterrupt() if method.checkpoint else contextlib.nullcontext()
    bar = tqdm(total=method.num_steps, initial=state["step"], disable=not (progress and group.is_main()),
               desc=f"{type(method).__name__} x{world}", leave=False)
    try:
        with interrupt:
            _loop(objective, optimizer, scheduler, params, state, method, bar, interrupt, validation_kwargs, save,
                  getattr(generative, "after_step", None))
    except AgreedInterrupt:
        if method.checkpoint:
            save()
            if group.is_main():
                log.warning("interrupted at step %d; checkpoint saved to %s", state["step"], method.checkpoint)
        raise
    finally:
        bar.close()
    if method.checkpoint:
        save()
    if state["best_params"] is not None:
        with torch.no_grad():
            for name, value in state["best_params"].items():
                params[name].copy_(value)
    sync_rng(program.kwargs["data"].device)  # the guide draws that follow agree on every rank
    return {"guide": guide, "losses": state["losses"], "val_losses": state["val_losses"],
            "stopped_early": state["stopped_early"], "elbo": type(elbo).__name__,
            "seconds": time.perf_counter() - start, "world_size": world}


def restore_rng(saved, seed, step):
    """This rank's RNG state from a checkpoint: its own when the file has one for it
    (same number of ranks), else rank 0's stream and fresh streams ``(seed, rank, step)``."""
    rank, world = group.rank(), group.world_size()
    states = saved.get("rank_rng")
    if states is not None and len(states) == world:
        torch.set_rng_state(states[rank])
        return
    if rank == 0:
        torch.set_rng_state(saved["rng"]["torch"])
    else:
        pyro.set_rng_seed(rank_seed(seed, rank, step))
    if group.is_main() and world > 1:
        log.warning("checkpoint written by %s rank(s), resumed on %d: the data order continues, "
                    "the other ranks' Monte Carlo streams restart", len(states) if states else 1, world)


def _loop(objective, optimizer, scheduler, params, state, method, bar, interrupt, validation_kwargs, save,
          after_step=None):
    values = list(params.values())
    averaged = _Averaged(objective)
    while state["step"] < method.num_steps and not state["stopped_early"]:
        optimizer.zero_grad(set_to_none=True)
        loss = objective.loss(state=state)
        loss.backward()
        pending = float(getattr(interrupt, "pending", False))
        total, flag = group.reduce_gradients(values, objective.weight, extras=(loss.detach(), pending))
        total = float(total)
        if not math.isfinite(total):
            raise MethodError(f"SVI: the loss became {total} at step {state['step']} (summed over "
                              f"{group.world_size()} ranks); lower lr, set clip_norm, or check the model")
        if method.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(values, method.clip_norm)
        optimizer.step()
        scheduler.step()
        if after_step is not None:  # identical parameters on every rank: identical updates
            after_step()
        state["step"] += 1
        state["losses"].append(total)
        bar.update()
        if validation_kwargs is not None and state["step"] % method.eval_every == 0:
            evaluate_validation(averaged, validation_kwargs, params, state, method)
        if method.checkpoint and state["step"] % method.checkpoint_every == 0:
            save()
        if flag > 0:
            raise AgreedInterrupt


def setup(device):
    """Join the process group for ``fit(..., distributed=True)``; return the device this rank fits on.

    A CUDA ``device`` without an index becomes ``cuda:LOCAL_RANK`` (one GPU per
    process).
    """
    group.init(device=device)
    if device is not None:
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", group.local_rank())
    return device
