"""Running ppgen over several processes and machines (``torch.distributed``).

:mod:`ppgen.distributed.group` holds the process-group helpers used by
``ppgen.fit(..., distributed=True)``: data-parallel SVI, MAP and adversarial
training (:mod:`ppgen.inference.data_parallel`). Launch one process per
device with ``torchrun``; see the README, "Running across processes and machines".
:mod:`ppgen.distributed.sharding` splits batched queries over the ranks; its
public names are reachable from here too (imported on first use).
:func:`ppgen.distributed.local.spawn` starts a gloo group of local processes
(what torchrun does), for tests and benchmarks.
"""

import importlib

from .group import (
    LAUNCH_HINT,
    all_gather,
    all_reduce_,
    barrier,
    broadcast_,
    default_backend,
    init,
    is_initialized,
    is_launched,
    is_main,
    local_rank,
    rank,
    reduce_gradients,
    world_size,
)

__all__ = ["LAUNCH_HINT", "all_gather", "all_reduce_", "barrier", "broadcast_", "default_backend", "init",
           "is_initialized", "is_launched", "is_main", "local_rank", "rank", "reduce_gradients", "world_size"]


def __getattr__(name):
    # sharding's names (map_rows, query_rows, ...), imported lazily: a plain fit never needs them.
    if not name.startswith("_") and name != "sharding":
        sharding = importlib.import_module(f"{__name__}.sharding")
        if name in getattr(sharding, "__all__", ()):
            return getattr(sharding, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
