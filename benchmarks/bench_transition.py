"""One chain's NUTS transition: in Python around the compiled leaf, and in C++
(``ppgen.inference.mcmc.native``), on the three posteriors of ``bench_nuts.py``.

    python benchmarks/bench_transition.py [--problems eight_schools logistic gauss_mix] [--no-write]

For each problem: a compiled one-chain potential (float32, one torch thread), the step
size a 1000 + 1000 fit adapted and its draws' variances (unconstrained) as the diagonal
metric, its last draw the starting point; 200 untimed transitions, then 2000 timed ones
by each path from the same state (the best of three runs). Printed, and written to the
``bench_transition`` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import header, table, write_section  # noqa: E402


def measure(problem, transitions=2000, repeats=3):
    import torch
    from nuts_problems import pyro_model, torch_data

    import ppgen
    from ppgen.inference import NUTS
    from ppgen.inference.mcmc.fallback import attempt
    from ppgen.inference.mcmc.native import compile_native_nuts
    from ppgen.inference.mcmc.nuts import Metric, Sampler, State
    from ppgen.inference.mcmc.potential import Potential
    from ppgen.inference.program import Program

    fit = ppgen.fit(pyro_model(problem), torch_data(problem), NUTS(num_samples=1000, warmup=1000, chains=1),
                    seed=0, progress=False)
    step = float(fit.sample_stats["step_size"][0, -1])
    potential = Potential(Program.build(pyro_model(problem), torch_data(problem)), 1, mode="compiled")
    generator = torch.Generator().manual_seed(0)
    native, why = attempt(lambda: compile_native_nuts(potential, 10, generator))
    if native is None:
        raise RuntimeError(f"{problem}: no C++ transition ({why})")
    # the fit's posterior variances on the unconstrained scale stand for its adapted metric,
    # and its last draw is the starting point
    draws = torch.cat([s.to_constrained.inv(fit.posterior[s.name].reshape((-1,) + tuple(s.shape)))
                       .reshape(fit.posterior[s.name].shape[1], -1) for s in potential.sites], -1)
    z = draws[-1:].contiguous()
    value, grad = potential.value_and_grad(z)
    start, metric = State(z, value, grad), Metric(draws.var(0, keepdim=True))
    step_size = z.new_full((1, 1), step)
    python = Sampler(potential.value_and_grad, 10, generator, fused_leaf=potential.leaf)
    paths = {"Python": python.transition, "C++": native.transition}
    out = {"dim": potential.dim, "step": step}
    for name, transition in paths.items():
        state = start
        for _ in range(200):
            state, _ = transition(state, step_size, metric)
        best = None
        for _ in range(repeats):
            leaves, began = 0, time.perf_counter()
            for _ in range(transitions):
                state, stats = transition(state, step_size, metric)
                leaves += int(stats["leapfrogs"])
            seconds = time.perf_counter() - began
            if best is None or seconds < best[0]:
                best = (seconds, leaves)
        out[name] = {"us_transition": best[0] / transitions * 1e6, "us_leaf": best[0] / best[1] * 1e6,
                     "leaves": best[1] / transitions}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", default=["eight_schools", "logistic", "gauss_mix"])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows = []
    for problem in args.problems:
        r = measure(problem)
        py, cpp = r["Python"], r["C++"]
        rows.append([problem, str(r["dim"]), f"{r['step']:.3f}",
                     f"{py['us_transition']:.1f} / {py['us_leaf']:.2f} ({py['leaves']:.1f})",
                     f"{cpp['us_transition']:.1f} / {cpp['us_leaf']:.2f} ({cpp['leaves']:.1f})",
                     f"{py['us_transition'] / cpp['us_transition']:.1f}x"])
    head = header(sys.argv, ["torch", "pyro"],
                  ["torch threads: 1; float32; one chain, the fit's step size and posterior variances"])
    body = ("## One chain's NUTS transition, Python vs C++ (`bench_transition.py`)\n\n" + head + "\n\n"
            + table(["problem", "D", "step size", "Python: us a transition / us a leaf (leaves)",
                     "C++: us a transition / us a leaf (leaves)", "speed-up"], rows)
            + "\n\nPython: `Sampler._transition_single` around the compiled leaf (TorchInductor's "
            "kernel through its generated wrapper). C++: `ppgen.inference.mcmc.native`, the same "
            "algorithm and the same kernels called directly. The two draw different random numbers, "
            "so their trees differ in length; the per-leaf column compares like with like.\n")
    print(body)
    if not args.no_write:
        write_section("bench_transition", body)


if __name__ == "__main__":
    main()
