"""A process group on this machine, for tests and benchmarks: what torchrun does, in one call.

:func:`spawn` starts ``world_size`` fresh Python processes (start method
``spawn``), joins them in a gloo group over the loopback interface on a free
port, runs a function in each and returns every rank's return value. The
function is named by ``"path/to/file.py:name"`` or ``"module:name"``, so a test
file can hold its own workers.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pathlib
import socket
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resolve(target):
    """The function named by ``"file.py:name"`` or ``"package.module:name"``."""
    where, _, name = target.rpartition(":")
    if where.endswith(".py"):
        spec = importlib.util.spec_from_file_location(pathlib.Path(where).stem, where)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    return getattr(module, name)


def _entry(rank, world_size, port, target, args, folder, backend, threads):
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world_size)})
    torch.set_num_threads(threads)
    dist.init_process_group(backend, init_method="env://")
    try:
        result = resolve(target)(*args)
        torch.save(result, os.path.join(folder, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def spawn(target, world_size, *args, backend="gloo", threads=1):
    """Run ``target(*args)`` in each of ``world_size`` local processes forming one group.

    Returns the list of the ranks' return values (tensors, numbers, strings,
    lists and dicts of them), rank 0 first. An exception in any rank is raised
    here (``torch.multiprocessing.ProcessRaisedException``; a rank that exits
    gives ``ProcessExitedException``).
    """
    with tempfile.TemporaryDirectory(prefix="ppgen-spawn-") as folder:
        mp.start_processes(_entry, args=(world_size, free_port(), target, args, folder, backend, threads),
                           nprocs=world_size, join=True, start_method="spawn")
        return [torch.load(os.path.join(folder, f"rank{r}.pt"), weights_only=True) for r in range(world_size)]
