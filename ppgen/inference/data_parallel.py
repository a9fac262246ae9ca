"""Data-parallel training over the ranks of a ``torch.distributed`` group: SVI and gradient MAP
(:class:`DataParallel`, handed to :func:`~ppgen.inference.svi.run_svi`), and the pieces
adversarial training shares (:mod:`ppgen.inference.adversarial`). Both run the one
training loop (:mod:`ppgen.inference.training`); what is parallel happens inside an
update.

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

import hashlib
import logging

import pyro
import torch

from .. import distributed as group
from ..errors import CheckpointError, DataError, MethodError
from .checkpoint import atomic_save
from .svi import Objective
from .training import OneProcess

log = logging.getLogger("ppgen")


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


class Ranks(OneProcess):
    """The training loop's view of the ranks: rank 0 writes each checkpoint (all ranks then
    wait for it), and all ranks must have resumed from the same one."""

    def __init__(self):
        self.main = group.is_main()

    def save(self, payload, path):
        if self.main:
            atomic_save(payload, path)
        group.barrier()

    def check_resumed(self, path, saved):
        check_same_checkpoint(path, saved)


class DataParallel:
    """What makes :func:`~ppgen.inference.svi.run_svi` data-parallel: this rank's share of
    each minibatch, the gradients all-reduced inside every update (with the interrupt
    flag, so every rank stops after the same update), held-out losses averaged over
    the ranks, and every rank's RNG state in the checkpoint."""

    def __init__(self, seed):
        self.seed, self.rank, self.world = seed, group.rank(), group.world_size()
        self.ranks = Ranks()

    def check(self, program, method):
        """Raise unless ``program`` can be sharded (a ``GenerativeModel`` given the same data on
        every rank, at least one datum per rank in a batch)."""
        self.batch = _check(program, method)

    def objective(self, program, guide, elbo, method):
        """This rank's objective, its lazy parameters built as the single-process run builds them,
        then set to rank 0's on every rank; from there each rank draws from its own stream."""
        local = shard_sizes(self.batch, self.world)[self.rank]
        objective = _ShardedObjective(program, guide, elbo, program.with_kwargs(subsample_size=local), self.batch,
                                      full=method.batch_size is None)
        first = program.with_kwargs(subsample_size=method.batch_size) if method.batch_size else program.kwargs
        objective.loss(first, differentiable=False, capture=True)  # the same draws from the same stream
        group.broadcast_(list(objective.params().values()))
        if self.rank:
            pyro.set_rng_seed(rank_seed(self.seed, self.rank))
        return objective

    def reduce(self, values, weight, loss, interrupted):
        """Sum ``weight`` times the gradients over the ranks; return the union batch's loss and
        whether any rank was interrupted."""
        total, flag = group.reduce_gradients(values, weight, extras=(loss.detach(), float(interrupted)))
        return float(total), float(flag) > 0

    def held_out(self, objective):
        return _Averaged(objective)

    def rng_state(self):
        rng = group.all_gather(torch.get_rng_state())  # collective: every rank saves
        return {"rng": {"torch": rng[0]}, "rank_rng": rng, "world_size": self.world}

    def restore_rng(self, saved):
        restore_rng(saved, self.seed, saved["state"]["step"])

    def agree_on_randomness(self, device):
        sync_rng(device)


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
