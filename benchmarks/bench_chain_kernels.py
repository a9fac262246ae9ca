"""Several NUTS chains in one process: C++ chains, free-running batched chains, lockstep chains.

Run:  python benchmarks/bench_chain_kernels.py                 (about ten minutes on 2 cores)
      python benchmarks/bench_chain_kernels.py --chains 4 --no-write

The three ways ppgen's engine can move several chains of one compiled potential,
side by side on the problems of ``bench_nuts.py`` (1000 warm-up + 1000 draws per
chain, seed 0): ``chain_method="auto"`` (every chain's transitions in C++ on OpenMP
threads), ``chain_method="vectorized"`` (free-running chains batched through the
potential, one compiled step a leaf for all chains) and the same with
``FREE_CHAINS = False`` (chains in lockstep: every chain waits for the longest tree).
The figure is ESS per second, the minimum bulk ESS over every scalar parameter (all
chains together) over the wall time, with and without building the potential.
Which paths the engine keeps is decided by this table (issue "One inference core").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, table, write_section  # noqa: E402
from bench_nuts import run_ppgen  # noqa: E402
from nuts_problems import PROBLEMS  # noqa: E402

WAYS = (("C++ chains (auto)", {"chain_method": "auto"}),
        ("free-running, batched", {"chain_method": "vectorized"}),
        ("lockstep, batched", {"chain_method": "vectorized", "free": False}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", choices=sorted(PROBLEMS), default=sorted(PROBLEMS))
    parser.add_argument("--chains", type=int, nargs="+", default=[4, 64])
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows = []
    for key in args.problems:
        problem = PROBLEMS[key]
        for chains in args.chains:
            cells = []
            for name, options in WAYS:
                print(f"{key}, {chains} chains, {name} ...", file=sys.stderr)
                rec = run_ppgen(problem, 0, args.warmup, args.draws, chains, **options)
                excl = rec["ess"] / max(rec["seconds"] - rec["compile"], 1e-9)
                cells.append(f"{rec['ess_per_s']:.0f} / {excl:.0f} ({rec['seconds']:.1f} s)")
            rows.append([key, chains, *cells])
    text = "\n".join([
        "## Several chains in one process: C++, free-running, lockstep (`bench_chain_kernels.py`)", "",
        header(sys.argv, ("torch", "pyro", "arviz")), "",
        "ESS/s including / excluding the potential's build (wall time in brackets); seed 0, "
        f"{args.warmup} warm-up + {args.draws} draws per chain, torch on one thread (the C++ chains "
        "use min(chains, cores) OpenMP threads).", "",
        table(["problem", "chains", *(name for name, _ in WAYS)], rows)])
    print(text)
    if not args.no_write:
        write_section("bench_chain_kernels", text)


if __name__ == "__main__":
    main()
