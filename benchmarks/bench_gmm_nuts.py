"""GaussianMixture(2, 2) by NUTS on Old Faithful: ppgen against NumPyro and PyMC, from process start.

Run:  nice python benchmarks/bench_gmm_nuts.py                (1 and 4 chains; several minutes)
      python benchmarks/bench_gmm_nuts.py --quick --no-write  (tiny settings: checks the script)

One model, three libraries, the same posterior: weights ~ Dirichlet(1, 1), each component's
mean ~ N(0, 100^2 I) and precision ~ Wishart(3, 1000 I) (ppgen's defaults), the 272 points'
assignments summed out. ppgen: ``ppgen.fit(GaussianMixture(2, 2), X, NUTS(...))``. NumPyro:
the same program, assignments enumerated (funsor). PyMC cannot sample a Wishart (its
``pm.Wishart`` is documented as unusable in a model), so its precision is written as the
Wishart density on ``L L^T`` with ``L`` lower triangular (log-diagonal, free off-diagonal)
and the Jacobian of that map, and the mixture marginalised by ``pm.Mixture``: the same
posterior. Every run is a fresh process, float64, 1000 warm-up + 1000 draws per chain;
wall time counts the interpreter's start, imports, building and sampling. ppgen runs with
an empty compile cache ("cold") and again ("warm"); PyMC's first run compiles its C
modules into its own cache, so it runs twice too. Efficiency: the minimum bulk ESS
(``arviz.ess`` over all chains, computed by the parent from the saved draws) over every
scalar of weights, means and precisions, per second of wall time. Several chains: NumPyro
vectorised in one process (``chain_method="vectorized"``), PyMC on ``cores=2`` processes,
ppgen's on 2 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, ess_rate, header, run_cell, table, write_section  # noqa: E402

FAITHFUL = SHARED_DATA / "tables/faithful.csv"
K, D, LOC_SCALE, DF, PSI = 2, 2, 100.0, 3.0, 1e-3


def _data():
    import numpy as np
    import pandas as pd

    return pd.read_csv(FAITHFUL)[["eruptions", "waiting"]].to_numpy(dtype=np.float64)


# ---------------------------------------------------------------- the contenders, each in its own process
def run_ppgen(x, chains, warmup, draws):
    import torch

    import ppgen
    from ppgen.inference import NUTS
    from ppgen.models.mixture import GaussianMixture

    torch.set_default_dtype(torch.float64)
    fit = ppgen.fit(GaussianMixture(K, D), x, NUTS(num_samples=draws, warmup=warmup, chains=chains), seed=0,
                    progress=False)
    return {k: fit.posterior[k].numpy() for k in ("weights", "locs", "precision")}, fit.path


def run_numpyro(x, chains, warmup, draws):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd
    from numpyro.infer import MCMC, NUTS

    def gmm(data):
        weights = numpyro.sample("weights", nd.Dirichlet(jnp.ones(K)))
        with numpyro.plate("components", K):
            locs = numpyro.sample("locs", nd.Normal(0.0, LOC_SCALE).expand([D]).to_event(1))
            precision = numpyro.sample("precision", nd.Wishart(DF, scale_tril=jnp.eye(D) * PSI ** -0.5))
        with numpyro.plate("data", data.shape[0]):
            z = numpyro.sample("assignment", nd.Categorical(weights), infer={"enumerate": "parallel"})
            numpyro.sample("obs", nd.MultivariateNormal(locs[z], precision_matrix=precision[z]), obs=data)

    mcmc = MCMC(NUTS(gmm), num_warmup=warmup, num_samples=draws, num_chains=chains, progress_bar=False,
                chain_method="vectorized" if chains > 1 else "sequential")
    mcmc.run(jax.random.PRNGKey(0), jnp.asarray(x))
    samples = mcmc.get_samples(group_by_chain=True)
    return {k: jax.device_get(samples[k]) for k in ("weights", "locs", "precision")}, {}


def run_pymc(x, chains, warmup, draws):
    import numpy as np
    import pymc as pm
    import pytensor.tensor as pt
    from scipy.special import multigammaln

    # log W(P | df, V) with V = I / PSI, and log|dP / d(log diag L, offdiag L)| for P = L L^T.
    constant = -DF * D / 2 * np.log(2) - DF / 2 * D * np.log(1 / PSI) - multigammaln(DF / 2, D)
    with pm.Model():
        weights = pm.Dirichlet("weights", a=np.ones(K))
        locs = pm.Normal("locs", 0.0, LOC_SCALE, shape=(K, D))
        log_diag = pm.Flat("log_diag", shape=(K, D))
        off = pm.Flat("off", shape=(K,))
        precisions, components, prior = [], [], 0.0
        for k in range(K):
            chol = pt.stack([pt.stack([pt.exp(log_diag[k, 0]), 0.0]),
                             pt.stack([off[k], pt.exp(log_diag[k, 1])])])
            precision = chol @ chol.T
            precisions.append(precision)
            log_det = 2 * log_diag[k].sum()
            prior += (DF - D - 1) / 2 * log_det - PSI * pt.trace(precision) / 2 + constant
            prior += D * np.log(2) + (D + 1) * log_diag[k, 0] + D * log_diag[k, 1]  # Jacobian
            components.append(pm.MvNormal.dist(mu=locs[k], tau=precision))
        pm.Potential("precision_prior", prior)
        pm.Deterministic("precision", pt.stack(precisions))
        pm.Mixture("obs", w=weights, comp_dists=components, observed=x)
        trace = pm.sample(draws, tune=warmup, chains=chains, cores=min(chains, 2), random_seed=0,
                          progressbar=False, compute_convergence_checks=False)
    return {k: trace.posterior[k].values for k in ("weights", "locs", "precision")}, {}


def min_ess(samples):
    """The least bulk ESS over every scalar of ``samples`` (arrays shaped (chains, draws, ...))."""
    import arviz as az
    import numpy as np

    values = []
    for value in samples.values():
        flat = np.asarray(value).reshape(value.shape[0], value.shape[1], -1)
        values += [float(az.ess(flat[..., i], method="bulk")) for i in range(flat.shape[-1])]
    return float(np.min(values))


# ---------------------------------------------------------------- the parent
def fresh(engine, chains, warmup, draws, env, limit):
    start = time.perf_counter()
    saved = os.path.join(env["PPGEN_CACHE_DIR"], f"{engine}_{chains}.npz")
    try:
        out = subprocess.run([sys.executable, __file__, "--one", engine, str(chains), str(warmup), str(draws), saved],
                             env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"stopped": limit}
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    import numpy as np

    with np.load(saved) as draws:  # ESS here: ArviZ's import is not the run's time
        return {"seconds": seconds, "ess": min_ess(dict(draws)), **json.loads(out.stdout.strip().splitlines()[-1])}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--chains", nargs="*", type=int, default=[1, 4])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--limit", type=float, default=900.0)
    args = parser.parse_args()
    warmup = draws = 50 if args.quick else 1000
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "PPGEN_CACHE_DIR": cache}
        for chains in args.chains:
            runs = {}
            for name, engine in (("ppgen cold", "ppgen"), ("ppgen warm", "ppgen"), ("NumPyro", "numpyro"),
                                 ("PyMC first", "pymc"), ("PyMC second", "pymc")):
                runs[name] = fresh(engine, chains, warmup, draws, env, args.limit)
                print(chains, name, json.dumps(runs[name]), flush=True)
            best = max((ess_rate(runs[n]) or 0.0) for n in ("NumPyro", "PyMC second"))
            path = runs["ppgen warm"].get("path") or {}
            for name, run in runs.items():
                ratio = f"{ess_rate(run) / best:.2f}x" if name.startswith("ppgen") and ess_rate(run) and best else ""
                rows.append([chains, name, run_cell(run, counts=True), ratio,
                             f"{path.get('potential', '?')} / {path.get('transitions', '?')}"
                             if name.startswith("ppgen") else ""])
    text = "\n".join([
        "## GaussianMixture(2, 2) NUTS on Old Faithful: ppgen vs NumPyro vs PyMC (`bench_gmm_nuts.py`)", "",
        header(sys.argv, ("torch", "pyro", "numpyro", "jax", "pymc", "pytensor", "arviz")), "",
        f"{warmup} warm-up + {draws} draws per chain, float64, each run a fresh process (wall time from its "
        "start). ESS: minimum bulk ESS over every scalar of weights, means and precisions. The same posterior "
        "in all three (PyMC's Wishart written by hand: see the script). `vs best peer`: ESS/s over the best of "
        "NumPyro and PyMC's second run.", "",
        table(["chains", "run", "wall, ESS, ESS/s", "vs best peer", "ppgen path"], rows)])
    print(text)
    if not args.no_write and not args.quick:
        write_section("bench_gmm_nuts", text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        engine, chains, warmup, draws = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        runner = {"ppgen": run_ppgen, "numpyro": run_numpyro, "pymc": run_pymc}[engine]
        samples, path = runner(_data(), chains, warmup, draws)
        import numpy as np

        np.savez(sys.argv[6], **samples)
        print(json.dumps({"path": path}))
    else:
        main()
