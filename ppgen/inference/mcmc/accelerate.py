"""ppgen's NUTS engine, accelerated: the one entry that builds what a run samples with.

:func:`accelerate` builds the run's :class:`~.potential.Potential` (its leapfrog leaf
compiled by TorchInductor or TorchScript where that is checked safe) and then tries the
accelerators that apply, in order; each comes back as a kernel or as None with the
reason logged (:func:`attempt`), and the reference sampler (:class:`~.nuts.Sampler`)
does whatever they do not:

1. NUTS transitions in C++ (:mod:`.native`): NUTS with a diagonal metric on the CPU,
   over a compiled one-chain potential whose leaf is nothing but TorchInductor's C++
   kernels; several chains each on their own row, on OpenMP threads.
2. Free-running batched chains (:mod:`.free_running`): several NUTS chains with a
   diagonal metric on a compiled potential, where C++ does not apply (CUDA, leaves
   calling ATen) or ``chain_method="vectorized"`` asks for batching.
3. Compiled lockstep subtrees (:mod:`.lockstep`): the same chains, where the
   free-running step does not compile; each leaf and its bookkeeping one kernel.

Every accelerator is checked against eager evaluation before use (the C++ leaf against
the compiled leaf, compiled steps at probe points: :func:`.inductor.compiled_and_checked`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import torch

from .fallback import attempt
from .free_running import compile_free_step
from .lockstep import compile_lockstep
from .native import NativeNUTS, compile_native_nuts, kept_native_nuts
from .potential import Potential

log = logging.getLogger("ppgen")

#: Runs of at least this many transitions (warm-up + draws) let ``potential="auto"`` compile
#: with TorchInductor: seconds to build (less from its on-disk cache), then several times
#: faster leapfrog steps; shorter runs (tests, quick looks) use the TorchScript graph.
COMPILE_MIN_ITERATIONS = 1000

#: Several NUTS chains on a compiled potential run free (:mod:`.free_running`) where C++ does
#: not apply; ``False`` leaves them to the reference sampler, in lockstep.
FREE_CHAINS = True

#: NUTS on a compiled potential runs its transitions in C++ where the leaf allows
#: (:mod:`.native`); ``False`` keeps them in Python.
NATIVE_NUTS = True


@dataclass
class Accelerated:
    """What one run samples with: the potential, the chains' starting points, the random
    generator of the transitions, and the accelerators that apply (None: the reference)."""

    potential: Potential
    start: torch.Tensor
    generator: torch.Generator
    native: NativeNUTS | None = None
    free_step: Callable | None = None
    lockstep: Callable | None = None


def accelerate(program: Any, method: Any, seed: int, init_strategy: Any) -> Accelerated:
    """Build the potential of ``program`` and the accelerators ``method``'s run can use."""
    long_run = method.warmup + method.num_samples >= COMPILE_MIN_ITERATIONS
    chains = method.chains
    in_cpp = _cpp_wanted(program, method, long_run)
    potential = Potential(program, 1 if in_cpp else chains, mode=method.potential, init_strategy=init_strategy,
                          compile_hint=long_run, build=False)
    generator = torch.Generator(device=potential.initial.device).manual_seed(seed)
    native = None
    if in_cpp and potential.may_compile:  # built by an earlier process? (nothing recorded yet)
        native = kept_native_nuts(potential, method.max_tree_depth, generator)
    if native is None:
        potential.build()
    if native is None and in_cpp and potential.mode == "compiled":
        native, _ = attempt(lambda: compile_native_nuts(potential, method.max_tree_depth, generator),
                            "NUTS transitions: Python ({})")
    if native is not None:
        log.info("NUTS transitions: C++ (%d chain%s)", chains, "s" * (chains > 1))
    if native is None and potential.chains != chains:  # several chains, not in C++: batch them
        pyro.set_rng_seed(seed)
        potential = Potential(program, chains, mode=method.potential, init_strategy=init_strategy,
                              compile_hint=long_run)
        generator.manual_seed(seed)
    start = potential.initial
    if native is not None and chains > 1:
        start = potential.starting_points(chains)
        native.threads = min(chains, os.cpu_count() or 1) if native.thread_safe else 1
    free = lockstep = None
    if potential.chains > 1 and potential.mode == "compiled" and method.name == "nuts" and not method.dense_mass:
        if FREE_CHAINS:
            free, _ = attempt(lambda: compile_free_step(potential, method.max_tree_depth),
                              "NUTS: free-running chains not used ({}); chains move in lockstep")
        if free is None:
            lockstep, _ = attempt(lambda: compile_lockstep(potential, method.max_tree_depth + 1),
                                  "NUTS: compiled lockstep subtrees not used ({}); eager bookkeeping")
    return Accelerated(potential, start, generator, native, free, lockstep)


def _cpp_wanted(program: Any, method: Any, long_run: bool) -> bool:
    """Whether to try NUTS transitions in C++ over a compiled one-chain potential: a diagonal
    metric on the CPU, one chain, or several with ``chain_method="auto"``
    (``"vectorized"`` batches them through the potential), in a run long enough to compile:
    each chain's C++ transitions cost less than its share of a batched leaf called from
    Python, and the chains spread over the cores (``benchmarks/bench_chain_kernels.py``)."""
    on_cpu = all(t.device.type == "cpu" for t in program.kwargs.values() if torch.is_tensor(t))
    wanted = method.potential == "compiled" or (method.potential == "auto" and long_run)
    return (NATIVE_NUTS and method.name == "nuts" and not method.dense_mass and on_cpu and wanted
            and (method.chains == 1 or method.chain_method == "auto"))
