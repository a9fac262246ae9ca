"""Chains where the potential cannot be vectorised: lockstep vs one process per chain.

Run:  python benchmarks/bench_chain_methods.py            (about 8 minutes on 2 cores)
      python benchmarks/bench_chain_methods.py --quick    (tiny settings, checks the script)

The model is posteriordb's low_dim_gauss_mix (N = 1000) written with explicit
component assignments ``z_n`` that Pyro enumerates (``config_enumerate``), so
ppgen's potential is Pyro's own, chain by chain (``potential`` mode ``loop``).
Four chains, 300 warm-up + 300 draws, with each ``chain_method``:
``vectorized`` (lockstep in one process), ``sequential`` and ``parallel`` (one
worker process per chain, at most one per core). Efficiency: the minimum bulk
ESS over parameters per wall second. Results go to the ``bench_chain_methods``
section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, table, timed, write_section  # noqa: E402
from nuts_problems import _ordered_normal_class, torch_data  # noqa: E402


def enumerated_gauss_mix():
    import pyro
    import pyro.distributions as dist
    from pyro.infer import config_enumerate

    ordered_normal = _ordered_normal_class()

    @config_enumerate
    def gauss_mix(N, y=None):
        mu = pyro.sample("mu", ordered_normal(0.0, 2.0, 2))
        sigma = pyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
        theta = pyro.sample("theta", dist.Beta(5.0, 5.0))
        with pyro.plate("data", N):
            z = pyro.sample("z", dist.Categorical(probs=torch.stack([theta, 1 - theta], -1)))
            pyro.sample("y", dist.Normal(mu[..., z], sigma[..., z]), obs=y)

    return gauss_mix


def min_bulk_ess(posterior):
    import arviz as az

    ess = az.ess(az.convert_to_dataset({k: v.numpy() for k, v in posterior.items()}), method="bulk")
    return min(float(ess[k].min()) for k in ("mu", "sigma", "theta"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    import ppgen
    from ppgen.inference import NUTS

    torch.set_num_threads(1)
    steps = 30 if args.quick else 300
    data = torch_data("gauss_mix")
    rows, lockstep = [], None
    for method in ("vectorized", "sequential", "parallel"):
        nuts = NUTS(num_samples=steps, warmup=steps, chains=args.chains, chain_method=method)
        fit, seconds = timed(ppgen.fit, enumerated_gauss_mix(), data, nuts, seed=0, progress=False)
        ess = min_bulk_ess(fit.posterior)
        leapfrogs = int(fit.sample_stats["n_steps"].sum())
        lockstep = lockstep or seconds
        rows.append([method, f"{seconds:.1f}", f"{leapfrogs}", f"{ess:.0f}", f"{ess / seconds:.1f}",
                     f"{lockstep / seconds:.2f}x",
                     f"{float(np.mean(fit.posterior['theta'].numpy())):.3f}"])
        print(rows[-1], file=sys.stderr)
    text = "\n\n".join([
        "## NUTS chains that cannot be vectorised: `chain_method` (`bench_chain_methods.py`)",
        header(sys.argv, ["ppgen", "torch", "pyro", "arviz"],
               extra=[f"{os.cpu_count()} cores; {args.chains} chains, {steps} warm-up + {steps} draws, seed 0; "
                      "low_dim_gauss_mix with its assignments enumerated (potential mode `loop`)"]),
        table(["chain_method", "wall s", "leapfrog steps (draws)", "min bulk ESS", "ESS/s",
               "speed-up over lockstep", "mean theta"], rows),
    ])
    print(text)
    if not (args.quick or args.no_write):
        write_section("bench_chain_methods", text)


if __name__ == "__main__":
    main()
