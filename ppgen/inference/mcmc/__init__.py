"""NUTS and HMC: ppgen's engine, its accelerators, and how chains run.

- :mod:`.chains`: the switch for how chains run (here, worker processes, ranks);
  :mod:`.sample` runs the chains of one process on ppgen's engine (:mod:`.engine`) or
  Pyro's kernels (:mod:`.pyro_engine`); :mod:`.processes`, :mod:`.ranks`.
- The engine: the model traced into a flat potential (:mod:`.potential`), NUTS and HMC
  transitions (:mod:`.nuts`, the reference tree builder), Stan's warm-up
  (:mod:`.adaptation`).
- Accelerators: TorchInductor kernels (:mod:`.inductor`) after graph rewrites
  (:mod:`.broadcasts`); whole transitions in C++ (:mod:`.native`, ``native_nuts.cpp``);
  free-running batched chains (:mod:`.free_running`); compiled lockstep subtrees
  (:mod:`.lockstep`).
"""
