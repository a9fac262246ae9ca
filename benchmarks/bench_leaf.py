"""One fused leapfrog step of a compiled NUTS potential: microseconds a call, with and
without the graph rewrites (``ppgen.inference.mcmc.broadcasts``) and the reused buffers
(``ppgen.inference.mcmc.inductor._reusing_buffers``), on the three posteriors of
``bench_nuts.py``, one chain, float32, one torch thread.

    python benchmarks/bench_leaf.py [--problems eight_schools logistic gauss_mix]

Each variant is built in a fresh process (TorchInductor's on-disk cache may hold it
from an earlier run: the build column is then a warm build); the call time is the
best of three runs of 3000 calls after 200 untimed ones.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = {
    "as recorded": {"rewrites": False, "reuse": False},
    "buffers reused": {"rewrites": False, "reuse": True},
    "rewrites + buffers reused (ppgen)": {"rewrites": True, "reuse": True},
}


def child(problem, rewrites, reuse):
    import torch

    torch.set_num_threads(1)
    from nuts_problems import pyro_model, torch_data

    from ppgen.inference.mcmc import inductor
    from ppgen.inference.mcmc.potential import Potential
    from ppgen.inference.program import Program

    if not rewrites:
        inductor.simplify_for_inductor = lambda graph, example: graph
    if not reuse:
        inductor._reusing_buffers = lambda call: call
    start = time.perf_counter()
    potential = Potential(Program.build(pyro_model(problem), torch_data(problem)), 1, mode="compiled")
    build = time.perf_counter() - start
    z = potential.initial
    args = (z, torch.zeros_like(z) + 0.1, torch.zeros_like(z), torch.zeros_like(z), z.new_full((1, 1), 0.01),
            z.new_full((1, 1), 0.005), torch.ones_like(z))
    for _ in range(200):
        potential.leaf(*args)
    best = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(3000):
            potential.leaf(*args)
        best.append((time.perf_counter() - start) / 3000 * 1e6)
    print(json.dumps({"build": build, "us": min(best), "dim": potential.dim}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", default=["eight_schools", "logistic", "gauss_mix"])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        problem, rewrites, reuse = args.child
        return child(problem, rewrites == "1", reuse == "1")
    print("| problem | D | " + " | ".join(f"{name}: us a step (build s)" for name in VARIANTS) + " | speed-up |")
    print("|---|---|" + "---|" * (len(VARIANTS) + 1))
    for problem in args.problems:
        cells, times, dim = [], [], None
        for flags in VARIANTS.values():
            out = subprocess.run([sys.executable, __file__, "--child", problem, str(int(flags["rewrites"])),
                                  str(int(flags["reuse"]))], capture_output=True, text=True, check=True)
            record = json.loads(out.stdout.strip().splitlines()[-1])
            dim = record["dim"]
            times.append(record["us"])
            cells.append(f"{record['us']:.1f} ({record['build']:.1f})")
        print(f"| {problem} | {dim} | " + " | ".join(cells) + f" | {times[0] / times[-1]:.2f}x |")


if __name__ == "__main__":
    main()
