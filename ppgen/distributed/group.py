"""The process group: who am I, how many are we, and one all-reduce per step.

A run is *launched* when ``torchrun`` (or ``python -m torch.distributed.run``)
set ``RANK`` and ``WORLD_SIZE`` in the environment, with ``MASTER_ADDR`` and
``MASTER_PORT`` for the ``env://`` rendezvous. :func:`init` joins that group
once (NCCL for CUDA, gloo for CPU); everything else here reads it.

Gradients are averaged by :func:`all_reduce_`: every tensor of a step (the
gradients of all parameters, and a few scalars riding along: the loss, an
interrupt flag) is flattened into one buffer per dtype and device and reduced
with one ``all_reduce(SUM)``, so a step costs one collective of
:math:`4P` bytes (float32, :math:`P` parameters) whatever the number of
parameter tensors, as DistributedDataParallel's bucketing does.
"""

from __future__ import annotations

import datetime
import logging
import os

import torch
import torch.distributed as dist

from ..errors import MethodError

#: what a user is told when ``distributed=True`` finds no process group.
LAUNCH_HINT = ("start one process per device with torchrun, e.g. "
               "`torchrun --nproc-per-node 2 script.py` or `torchrun --nproc-per-node 2 -m ppgen.cli fit ...` "
               "(several machines: add --nnodes N --node-rank I --rdzv-endpoint HOST:PORT), "
               "or call torch.distributed.init_process_group yourself first")


def is_launched():
    """True when the environment names this process's place in a group (torchrun's ``RANK``/``WORLD_SIZE``)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_initialized():
    return dist.is_available() and dist.is_initialized()


def default_backend(device=None):
    """``"nccl"`` when ``device`` is a CUDA device (and NCCL is built in), else ``"gloo"``."""
    if device is not None and torch.device(device).type == "cuda" and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def init(backend=None, device=None, timeout_s=1800):
    """Join the launched process group (idempotent); return ``(rank, world_size)``.

    Parameters
    ----------
    backend : {"gloo", "nccl"}, optional
        Default :func:`default_backend` of ``device``.
    device : str or torch.device, optional
        The fit's device; with CUDA each process takes ``cuda:LOCAL_RANK``.
    timeout_s : float
        How long a collective waits for the other ranks before failing.
    """
    if not dist.is_available():
        raise MethodError("distributed=True: this torch build has no torch.distributed")
    if not dist.is_initialized():
        if not is_launched():
            raise MethodError(f"distributed=True: no process group (RANK and WORLD_SIZE are not set); {LAUNCH_HINT}")
        backend = backend or default_backend(device)
        if backend == "nccl":
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend=backend, init_method="env://",
                                timeout=datetime.timedelta(seconds=timeout_s))
    logger = logging.getLogger("ppgen")
    if rank() != 0 and _errors_only not in logger.filters:
        logger.addFilter(_errors_only)  # only rank 0 logs (errors still show everywhere)
    return rank(), world_size()


def _errors_only(record):
    return record.levelno >= logging.ERROR


def local_rank():
    """This process's index on its machine (torchrun's ``LOCAL_RANK``; 0 when not launched)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def rank():
    return dist.get_rank() if is_initialized() else 0


def world_size():
    return dist.get_world_size() if is_initialized() else 1


def is_main():
    """True on rank 0, the one that writes checkpoints, logs and progress bars (and when not distributed)."""
    return rank() == 0


def barrier():
    if is_initialized() and world_size() > 1:
        dist.barrier()


def _comm_device(tensor):
    """Where a collective can read ``tensor``: NCCL reduces CUDA tensors only."""
    if tensor.device.type == "cpu" and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return tensor.device


def _groups(tensors):
    groups = {}
    for index, tensor in enumerate(tensors):
        groups.setdefault((tensor.dtype, tensor.device), []).append(index)
    return groups.values()


def all_reduce_(tensors, scale=1.0):
    """Sum ``scale * tensors`` over the ranks in place, with one collective per dtype and device.

    Each group of tensors of one dtype and device is flattened into one buffer,
    scaled, reduced, and copied back: :math:`t \\leftarrow \\sum_{r} s_r t^{(r)}`.
    """
    tensors = list(tensors)
    if world_size() == 1 or not tensors:
        if scale != 1:
            for tensor in tensors:
                tensor.mul_(scale)
        return tensors
    for indices in _groups(tensors):
        flat = torch.cat([tensors[i].reshape(-1) for i in indices])
        flat = flat.to(_comm_device(flat))
        if scale != 1:
            flat.mul_(scale)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for i in indices:
            size = tensors[i].numel()
            tensors[i].copy_(flat[offset:offset + size].view_as(tensors[i]))
            offset += size
    return tensors


def reduce_gradients(params, weight, extras=()):
    """The weighted sum over ranks of the gradients of ``params``, in place, and of ``extras``.

    Rank :math:`r` contributes :math:`w_r g_r` with ``weight`` :math:`= w_r`. A
    parameter without a gradient on some rank contributes zeros there; one
    without a gradient on every rank keeps ``grad = None`` (so Adam skips it, as
    in a single process). ``extras`` (scalars: a loss, a flag) ride in the same
    buffer, weighted alike, and are returned summed as a tensor. One all-reduce
    per dtype and device.
    """
    params = list(params)
    had = [param.grad is not None for param in params]
    grads = []
    for param in params:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        grads.append(param.grad)
    first = grads[0] if grads else torch.zeros(())
    options = {"dtype": first.dtype, "device": first.device}
    values = [torch.as_tensor(e, **options).detach().reshape(1) for e in extras]
    extra = torch.cat(values + [torch.tensor(had, **options)])
    all_reduce_(grads + [extra], scale=weight)
    if not all(had):
        for param, count in zip(params, extra[len(extras):].tolist()):
            if count == 0:
                param.grad = None
    return extra[:len(extras)]


def broadcast_(tensors, src=0):
    """Copy ``tensors`` from rank ``src`` to every rank, in place (one collective per dtype and device)."""
    tensors = [t for t in tensors if t.numel()]
    if world_size() == 1 or not tensors:
        return
    with torch.no_grad():
        for indices in _groups(tensors):
            flat = torch.cat([tensors[i].detach().reshape(-1) for i in indices])
            flat = flat.to(_comm_device(flat))
            dist.broadcast(flat, src=src)
            offset = 0
            for i in indices:
                size = tensors[i].numel()
                tensors[i].copy_(flat[offset:offset + size].view_as(tensors[i]))
                offset += size


def all_gather(tensor):
    """``[tensor of rank 0, tensor of rank 1, ...]`` on every rank (equal shapes)."""
    if world_size() == 1:
        return [tensor.clone()]
    sent = tensor.contiguous().to(_comm_device(tensor))
    out = [torch.empty_like(sent) for _ in range(world_size())]
    dist.all_gather(out, sent)
    return [t.to(tensor.device) for t in out]
