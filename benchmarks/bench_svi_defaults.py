"""Where does SVI land? ppgen's default step-size schedule against plain Pyro's constant-rate
Adam, on Gaussian posteriors that ``guide="mvn"`` represents exactly.

A Bayesian linear regression (known noise, N(0, 10^2) priors) has a closed-form Gaussian
posterior. Each run fits ``AutoMultivariateNormal`` with one particle and reads the fitted
guide's mean and standard deviations (exact, from its parameters): the error of the means
in posterior standard deviations and the relative error of the standard deviations, worst
coordinate, over seeds. Two designs: independent columns (well conditioned) and columns
sharing a common factor (correlated posterior, slow to optimise).

    python benchmarks/bench_svi_defaults.py [--seeds 3] [--steps 3000]
"""

from __future__ import annotations

import argparse
import sys
import time

import pyro
import pyro.distributions as dist
import torch
from _common import header, table, write_section
from pyro.infer import SVI as PyroSVI
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal
from pyro.optim import Adam

import ppgen
from ppgen.inference import SVI


def design(kind, seed, n=50, d=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    if kind == "correlated":
        x = x + 2.0 * torch.randn(n, 1, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + torch.randn(n, generator=g)
    cov = torch.linalg.inv(torch.eye(d) / 100 + x.T @ x)
    return x, y, cov @ x.T @ y, cov.diagonal().sqrt()


def regression(X, y=None):
    w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[1]), 10.0).to_event(1))
    with pyro.plate("data", len(X)):
        pyro.sample("y", dist.Normal(X @ w, 1.0), obs=y)


def errors(q, mean, sd):
    return float(((q.mean - mean).abs() / sd).max()), float(((q.stddev - sd).abs() / sd).max())


def run_ppgen(x, y, seed, steps, **settings):
    fit = ppgen.fit(regression, {"X": x, "y": y}, SVI(num_steps=steps, guide="mvn", **settings), seed=seed,
                    progress=False)
    return fit.guide.get_posterior(), fit.extras["converged"]


def run_pyro(x, y, seed, steps):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    with pyro.settings.context(module_local_params=False):  # Pyro's own default (ppgen sets it True)
        guide = AutoMultivariateNormal(regression)
        svi = PyroSVI(regression, guide, Adam({"lr": 0.01}), Trace_ELBO())
        for _ in range(steps):
            svi.step(x, y)
        return guide.get_posterior(), None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    contenders = {
        "plain Pyro, Adam lr=0.01 constant": lambda x, y, s: run_pyro(x, y, s, args.steps),
        "ppgen, constant (lr_decay=1)": lambda x, y, s: run_ppgen(x, y, s, args.steps, lr_decay=1.0),
        "ppgen default (lr 0.01, to 1% over the 2nd half)": lambda x, y, s: run_ppgen(x, y, s, args.steps),
        "ppgen default, 1000 steps": lambda x, y, s: run_ppgen(x, y, s, 1000),
    }
    rows = []
    for kind in ("independent", "correlated"):
        for name, run in contenders.items():
            mean_err, sd_err, flagged, seconds = [], [], 0, 0.0
            for seed in range(args.seeds):
                x, y, mean, sd = design(kind, seed)
                start = time.perf_counter()
                q, converged = run(x, y, seed)
                seconds += time.perf_counter() - start
                m, s = errors(q, mean, sd)
                mean_err.append(m)
                sd_err.append(s)
                flagged += converged is False
            rows.append([kind, name, f"{max(mean_err):.3f}", f"{max(sd_err):.1%}",
                         "-" if name.startswith("plain") else f"{flagged}/{args.seeds}",
                         f"{seconds / args.seeds:.1f}"])
            print(rows[-1], flush=True)
    text = "\n".join([
        "## SVI's default: where the last iterate lands (`bench_svi_defaults.py`)", "",
        header(sys.argv, ["torch", "pyro"], [f"{args.seeds} seeds per cell; {args.steps} steps unless named; "
                                              "float64; one particle; AutoMultivariateNormal"]), "",
        table(["design", "run", "worst mean error (posterior sd)", "worst sd error", "flagged not converged",
               "seconds per fit"], rows), "",
        "Target (issue 19): within 0.05 sd of the exact means and 5% of the sds on Gaussian posteriors. "
        "The correlated design is slow to optimise at lr 0.01 (its scale factor is far from converged after "
        "3000 steps); the convergence check flags it rather than the schedule fixing it.",
    ])
    write_section("bench_svi_defaults", text)


if __name__ == "__main__":
    main()
