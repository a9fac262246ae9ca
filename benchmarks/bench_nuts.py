"""NUTS, ESS per second: ppgen, plain Pyro (with and without JIT), NumPyro and PyMC.

Run:  nice python benchmarks/bench_nuts.py              (3 seeds, the default; longer still)
      nice python benchmarks/bench_nuts.py --seeds 2    (24 minutes there, load average ~5)
      python benchmarks/bench_nuts.py --quick           (tiny settings, checks the script)
      python benchmarks/bench_nuts.py --problems logistic --seeds 1 --no-write

Three posteriors (``nuts_problems.py``): eight schools noncentred, a logistic
regression (1,000 rows x 25 features, simulated) and posteriordb's
low_dim_gauss_mix. One chain, 1000 warm-up + 1000 kept draws per run; every
sampler gets the same seeds. Efficiency: the minimum bulk ESS (``arviz.ess``)
over every scalar parameter, divided by wall time, with and without the
sampler's compile step. ppgen and Pyro run with ``torch.set_num_threads(1)``.
NumPyro and PyMC run in a fresh process per run (so each pays its own
compilation). Then the chains table: ppgen (its default, every chain's transitions in
C++ on OpenMP threads; free-running chains batched through the potential; worker
processes) and NumPyro (``chain_method="vectorized"``) with 1, 4 and 64 chains on each
problem, on CPU.
The tables are printed and written to the ``bench_nuts`` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, median, table, timed, write_section  # noqa: E402
from nuts_problems import (  # noqa: E402
    PROBLEMS,
    numpy_data,
    numpyro_model,
    pymc_model,
    pyro_model,
    reference_means,
    torch_data,
)

ROWS = ("ppgen NUTS, incl. compile", "ppgen NUTS, excl. compile", "Pyro NUTS",
        "Pyro NUTS, jit_compile=True", "NumPyro NUTS, incl. JIT compile",
        "NumPyro NUTS, excl. JIT compile", "PyMC NUTS, incl. compile", "PyMC NUTS, excl. compile")
PEERS_INCL = ROWS[2], ROWS[3], ROWS[4], ROWS[6]
PEERS_EXCL = ROWS[2], ROWS[5], ROWS[7]


# ---------------------------------------------------------------- torch samplers
@contextlib.contextmanager
def potential_timer():
    """Time every construction of ppgen's ``Potential`` inside ``ppgen.fit``.

    ``accelerate.accelerate`` builds the potential (Pyro's ``initialize_model``,
    the chain-plate check, tracing and compiling) before its first leapfrog step;
    wrapping the name it calls measures exactly that step of the timed fit.
    """
    from ppgen.inference.mcmc import accelerate

    real, built = accelerate.Potential, []

    def timed_potential(*args, **kwargs):
        potential, seconds = timed(real, *args, **kwargs)
        built.append({"compile": seconds, "mode": potential.mode, "reason": potential.reason})
        return potential

    accelerate.Potential = timed_potential
    try:
        yield built
    finally:
        accelerate.Potential = real


def run_ppgen(problem, seed, warmup, draws, chains=1, potential="auto", chain_method="auto", free=True):
    """One timed ``ppgen.fit``; ``free=False``: several chains in lockstep instead of
    free-running (``accelerate.FREE_CHAINS``)."""
    import ppgen
    from ppgen.inference import NUTS
    from ppgen.inference.mcmc import accelerate

    accelerate.FREE_CHAINS = free

    with potential_timer() as built:
        fit, seconds = timed(ppgen.fit, pyro_model(problem.key), torch_data(problem.key),
                             NUTS(num_samples=draws, warmup=warmup, chains=chains, potential=potential,
                                  chain_method=chain_method),
                             seed=seed, progress=False)
    posterior = {k: fit.posterior[k].numpy() for k in problem.sites}
    record = _record(problem, seed, posterior, seconds, int(fit.sample_stats["diverging"].sum()))
    # The fit's own record of building (and compiling) its potential, fit.timings["compile"]
    # (worker processes: the longest build of any of them).
    return {**record, **(built[0] if built else {"mode": "(in workers)", "reason": ""}),
            "compile": fit.timings["compile"]}


def run_pyro(problem, seed, warmup, draws, jit):
    import pyro
    from pyro.infer import MCMC
    from pyro.infer import NUTS as PyroNUTS

    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    kernel = PyroNUTS(pyro_model(problem.key), jit_compile=jit, ignore_jit_warnings=True)
    mcmc = MCMC(kernel, num_samples=draws, warmup_steps=warmup, num_chains=1, disable_progbar=True)
    _, seconds = timed(mcmc.run, **torch_data(problem.key))
    samples = mcmc.get_samples(group_by_chain=True)
    posterior = {k: samples[k].numpy() for k in problem.sites}
    divergences = sum(len(v) for v in mcmc.diagnostics()["divergences"].values())
    return _record(problem, seed, posterior, seconds, divergences)


# ---------------------------------------------------------------- child processes
def run_child(library, problem, seed, warmup, draws, chains=1):
    """A NumPyro or PyMC run in a fresh process; its record (a dict)."""
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", library,
                          "--problems", problem.key, "--child-seed", str(seed), "--warmup",
                          str(warmup), "--draws", str(draws), "--child-chains", str(chains)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{library} run failed ({problem.key}, seed {seed}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def numpyro_child(problem, seed, warmup, draws, chains):
    """Time a fresh NumPyro MCMC's first run (tracing + XLA compile + sampling),
    then the same MCMC run again with the same key: NumPyro re-traces its sampling
    loop on every ``run``, so JAX's persistent compilation cache (an empty
    temporary folder) serves the compiled loop the second time; that run is
    sampling plus tracing and a cache look-up."""
    import jax

    with tempfile.TemporaryDirectory(prefix="ppgen_bench_jax_") as cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
        from numpyro.infer import MCMC
        from numpyro.infer import NUTS as NumpyroNUTS

        data = numpy_data(problem.key)
        mcmc = MCMC(NumpyroNUTS(numpyro_model(problem.key)), num_warmup=warmup, num_samples=draws,
                    num_chains=chains, chain_method="vectorized", progress_bar=False)

        def go():
            mcmc.run(jax.random.PRNGKey(seed), extra_fields=("diverging",), **data)
            return jax.block_until_ready(mcmc.get_samples(group_by_chain=True))

        _, first = timed(go)
        samples, again = timed(go)
        posterior = {k: np.asarray(samples[k]) for k in problem.sites}
        divergences = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    record = _record(problem, seed, posterior, first, divergences)
    print(json.dumps({**record, "again": again}))


def pymc_child(problem, seed, warmup, draws):
    """Time PyMC's model construction plus ``pm.sample`` (compiling the log
    density and its gradient with pytensor, NUTS initialisation, sampling); the
    sampling loop alone is PyMC's own ``sampling_time`` (tuning + draws)."""
    import pymc as pm

    data = numpy_data(problem.key)

    def go():
        model = pymc_model(problem.key, data)
        return pm.sample(draws, tune=warmup, chains=1, cores=1, random_seed=seed, model=model,
                         compute_convergence_checks=False, progressbar=False)

    idata, seconds = timed(go)
    posterior = {k: idata.posterior[k].values for k in problem.sites}
    divergences = int(idata.sample_stats["diverging"].values.sum())
    record = _record(problem, seed, posterior, seconds, divergences)
    print(json.dumps({**record, "sampling": float(idata.sample_stats.attrs["sampling_time"])}))


# ---------------------------------------------------------------- records
def min_bulk_ess(problem, posterior):
    import arviz as az

    ess = az.ess(az.convert_to_dataset(posterior), method="bulk")
    return min(float(ess[k].min()) for k in problem.sites)


def _record(problem, seed, posterior, seconds, divergences):
    ess = min_bulk_ess(problem, posterior)
    means = []
    for site, index in problem.shown:
        draws = np.asarray(posterior[site], dtype=np.float64)
        chains_draws = draws.reshape(draws.shape[:2] + (-1,))
        means.append(float(chains_draws[..., 0 if index is None else index].mean()))
    return {"seed": seed, "ess": ess, "seconds": seconds, "ess_per_s": ess / seconds,
            "m0": means[0], "m1": means[1], "divergences": divergences}


def _excluding(record, seconds):
    return {**record, "seconds": seconds, "ess_per_s": record["ess"] / seconds}


# ---------------------------------------------------------------- benchmark
def bench(problem, seeds, warmup, draws):
    """Every sampler on ``problem`` for each seed: ``{row: [record per seed]}``."""
    records = {row: [] for row in ROWS}
    # Untimed short runs first: imports and first-call overhead of each sampler,
    # and PyMC's on-disk cache of compiled C modules for this model's operations.
    run_ppgen(problem, 0, 20, 20, potential="compiled")  # and TorchInductor's on-disk cache
    run_pyro(problem, 0, 20, 20, False)
    run_pyro(problem, 0, 20, 20, True)
    run_child("pymc", problem, 0, 20, 20)
    for seed in seeds:
        print(f"{problem.key}, seed {seed} ...", file=sys.stderr)
        rec = run_ppgen(problem, seed, warmup, draws)
        records[ROWS[0]].append(rec)
        records[ROWS[1]].append(_excluding(rec, rec["seconds"] - rec["compile"]))
        print(f"  ppgen: {rec['seconds']:.1f} s ({rec['compile']:.2f} s potential, {rec['mode']})",
              file=sys.stderr)
        for row, jit in ((ROWS[2], False), (ROWS[3], True)):
            records[row].append(run_pyro(problem, seed, warmup, draws, jit))
            print(f"  {row}: {records[row][-1]['seconds']:.1f} s", file=sys.stderr)
        rec = run_child("numpyro", problem, seed, warmup, draws)
        records[ROWS[4]].append(rec)
        records[ROWS[5]].append(_excluding(rec, rec["again"]))
        print(f"  NumPyro: {rec['seconds']:.2f} s first run, {rec['again']:.2f} s compiled", file=sys.stderr)
        rec = run_child("pymc", problem, seed, warmup, draws)
        records[ROWS[6]].append(rec)
        records[ROWS[7]].append(_excluding(rec, rec["sampling"]))
        print(f"  PyMC: {rec['seconds']:.2f} s, {rec['sampling']:.2f} s sampling", file=sys.stderr)
    return records


def bench_chains(problem, counts, seed, warmup, draws, one_chain, parallel_counts=(4,)):
    """ppgen (its default, ``chain_method="auto"``: every chain's transitions in C++ on
    OpenMP threads; free-running chains batched through the potential; in worker
    processes for ``parallel_counts``) and NumPyro (vectorized) with each chain count; the
    1-chain runs are ``one_chain`` (the main table's ppgen and NumPyro records for ``seed``)."""
    out = []
    for chains in counts:
        if chains == 1 and one_chain is not None:
            out.append((chains, one_chain[0], None, None, one_chain[1]))
            continue
        print(f"{problem.key}, {chains} chains ...", file=sys.stderr)
        ppgen_rec = run_ppgen(problem, seed, warmup, draws, chains)
        free_rec = run_ppgen(problem, seed, warmup, draws, chains, chain_method="vectorized")
        parallel_rec = (run_ppgen(problem, seed, warmup, draws, chains, chain_method="parallel")
                        if chains in parallel_counts else None)
        numpyro_rec = run_child("numpyro", problem, seed, warmup, draws, chains)
        out.append((chains, ppgen_rec, free_rec, parallel_rec, numpyro_rec))
    return out


# ---------------------------------------------------------------- tables
def _median(records, key):
    return median([r[key] for r in records])


def problem_table(problem, records):
    rows = []
    for name, recs in records.items():
        ess_s = [r["ess_per_s"] for r in recs]
        rows.append([name, f"{_median(recs, 'ess'):.0f}", f"{_median(recs, 'seconds'):.2f}",
                     f"{median(ess_s):.1f}", f"{min(ess_s):.1f}-{max(ess_s):.1f}",
                     f"{_median(recs, 'm0'):.3f}", f"{_median(recs, 'm1'):.3f}",
                     f"{_median(recs, 'divergences'):g}"])
    ref = reference_means(problem)
    if ref:
        rows.append(["posteriordb reference (Stan)", "", "", "", ""]
                    + [f"{m:.3f} (mcse {s:.3f})" for m, s in ref] + [""])
    summary = table(["sampler", "min bulk ESS", "wall (s)", "ESS/s", "ESS/s range",
                     f"mean {problem.label(0)}", f"mean {problem.label(1)}", "divergences"], rows)
    seeds = [r["seed"] for r in records[ROWS[0]]]
    detail = table(["sampler"] + [f"seed {s}: ESS / s" for s in seeds],
                   [[name] + [f"{r['ess']:.0f} / {r['seconds']:.2f}" for r in recs]
                    for name, recs in records.items()])
    return summary, detail


def targets_table(results):
    rows = []
    for key, records in results.items():
        eff = {row: _median(recs, "ess_per_s") for row, recs in records.items()}
        best_incl = max(PEERS_INCL, key=eff.get)
        best_excl = max(PEERS_EXCL, key=eff.get)
        rows.append([key, f"{eff[ROWS[0]]:.1f}", f"{best_incl} ({eff[best_incl]:.1f})",
                     f"{eff[ROWS[0]] / eff[best_incl]:.3f}", f"{eff[ROWS[1]]:.1f}",
                     f"{best_excl} ({eff[best_excl]:.1f})", f"{eff[ROWS[1]] / eff[best_excl]:.3f}",
                     f"{eff[ROWS[0]] / eff[ROWS[2]]:.2f}",
                     f"{records[ROWS[0]][0]['mode']}, {_median(records[ROWS[0]], 'compile'):.2f} s"])
    return table(["problem", "ppgen ESS/s", "best peer, incl. compile (ESS/s)", "ppgen / best",
                  "ppgen ESS/s excl. compile", "best peer, excl. compile (ESS/s)", "ppgen / best",
                  "ppgen / plain Pyro (incl.)", "ppgen potential: mode, build s (median)"], rows)


def chains_table(chain_results):
    rows = []
    for key, results in chain_results.items():
        for chains, p, free, q, n in results:
            def brief(r):
                return (f"{r['seconds']:.1f} / {r['ess']:.0f} / {r['ess_per_s']:.1f} / "
                        f"{r['ess'] / (r['seconds'] - r['compile']):.1f}") if r else ""

            rows.append([key, str(chains), f"{p['seconds']:.1f}", f"{p['compile']:.2f}", f"{p['ess']:.0f}",
                         f"{p['ess_per_s']:.1f}", f"{p['ess'] / (p['seconds'] - p['compile']):.1f}", brief(free),
                         brief(q),
                         f"{n['seconds']:.2f} / {n['again']:.2f}", f"{n['ess']:.0f}",
                         f"{n['ess_per_s']:.1f}", f"{n['ess'] / n['again']:.1f}"])
    return table(["problem", "chains", "ppgen wall (s)", "ppgen build (s)", "ppgen min bulk ESS",
                  "ppgen ESS/s", "ppgen ESS/s excl. compile",
                  "ppgen free-running, batched: wall s / ESS / ESS/s / excl. compile",
                  "ppgen parallel: wall s / ESS / ESS/s / excl. compile",
                  "NumPyro wall (s), first / again",
                  "NumPyro min bulk ESS", "NumPyro ESS/s", "NumPyro ESS/s excl. compile"], rows)


NOTES = (
    "Notes. ppgen: `ppgen.fit(program, data, NUTS(num_samples, warmup, chains), seed=s, "
    "progress=False)`, its own engine (a potential traced from the model; with 1000 + 1000 "
    "iterations `potential='auto'` compiles its fused leapfrog step by TorchInductor, and the "
    "whole NUTS transition runs in C++ around those kernels, `ppgen.inference.mcmc.native`), "
    "starting at the prior median (`init_to_median`). Its `excl. "
    "compile` time is the fit's wall time minus the fit's own `fit.timings['compile']`, the "
    "seconds spent building `ppgen.inference.mcmc.potential.Potential` (Pyro's `initialize_model`, the "
    "check that the model runs under an extra plate over chains, `make_fx` recording, "
    "TorchInductor compiling, and the checks of the compiled graphs against eager evaluation at "
    "seven points) and the C++ transition (compiling it, from TorchInductor's C++ code cache "
    "after the first time, and checking its leaf against the compiled one). The untimed first "
    "ppgen run on each problem compiles too, so TorchInductor's "
    "on-disk cache of compiled kernels is warm, as pytensor's is for PyMC. The potential mode "
    "column says which potential was used (`compiled`: TorchInductor; `jit`: TorchScript) or why "
    "ppgen fell back. "
    "Plain Pyro: `pyro.infer.NUTS` + `MCMC`, default initialisation (uniform in (-2, 2) on the "
    "unconstrained space), as are NumPyro's and PyMC's defaults (PyMC: `jitter+adapt_diag`). "
    "An untimed short run of each torch sampler and of PyMC comes first on each problem "
    "(imports, first-call overhead, pytensor's on-disk cache of compiled C modules); the Pyro JIT "
    "row still includes tracing and compiling in every timed run, since every new kernel compiles "
    "anew, and has no `excl.` row. NumPyro runs in a fresh process per run (after imports): `incl. "
    "JIT compile` is its first `mcmc.run` (tracing, XLA compilation, sampling); `excl. JIT "
    "compile` is the same `MCMC` run again with the same key (identical draws), the compiled loop "
    "coming from JAX's persistent compilation cache (a fresh temporary folder), so that time "
    "still includes tracing and the cache look-up. PyMC 5 runs in a fresh process per run: "
    "`incl. compile` is model construction plus `pm.sample(draws, tune, chains=1, cores=1, "
    "random_seed=s, compute_convergence_checks=False, progressbar=False)` (pytensor graph "
    "rewriting and compilation of the log density and gradient, with the C-module cache on disk "
    "already warm, as it is for a user after a first run; NUTS initialisation; sampling; "
    "conversion to InferenceData); `excl. compile` is PyMC's own `sampling_time` attribute, the "
    "tuning + draw loop alone. PyMC works in float64 (its default `floatX`); torch and JAX in "
    "float32 (their defaults). ESS: `arviz.ess(..., method='bulk')`, the minimum over every "
    "scalar parameter (eight schools: mu, tau, theta_tilde[8]; logistic: w[25], b; gauss_mix: "
    "mu[2], sigma[2], theta). `ESS/s range` is the smallest and largest over seeds; other columns "
    "are medians over seeds.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", choices=sorted(PROBLEMS),
                        default=["eight_schools", "logistic", "gauss_mix"])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..n-1 (default 3)")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--chains", type=int, nargs="*", default=[1, 4, 64],
                        help="chain counts of the chains table (none: skip it)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings (30 + 30 draws, one seed), nothing written")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    parser.add_argument("--chains-only", action="store_true",
                        help="only the chains table (printed, not written): e.g. a rerun with warm caches")
    parser.add_argument("--child", choices=("numpyro", "pymc"), help=argparse.SUPPRESS)
    parser.add_argument("--child-seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child-chains", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        problem = PROBLEMS[args.problems[0]]
        if args.child == "numpyro":
            return numpyro_child(problem, args.child_seed, args.warmup, args.draws, args.child_chains)
        return pymc_child(problem, args.child_seed, args.warmup, args.draws)
    if args.quick:
        args.seeds, args.warmup, args.draws, args.no_write = 1, 30, 30, True

    torch.set_num_threads(1)
    import jax

    seeds = list(range(args.seeds))
    problems = [PROBLEMS[k] for k in args.problems]
    head = header(sys.argv, ["torch", "pyro", "numpyro", "jax", "pymc", "pytensor", "arviz"], extra=[
        "torch threads: 1 (`torch.set_num_threads(1)`) for ppgen and Pyro; "
        f"JAX on {jax.devices()[0].platform} ({jax.device_count()} device), XLA's own threading; "
        "PyMC with pytensor's defaults (C backend, float64)",
        "problems: " + "; ".join(p.title for p in problems),
        f"one chain, {args.warmup} warm-up + {args.draws} draws; seeds {seeds[0]}..{seeds[-1]} for "
        "every sampler (`ppgen.fit(seed=s)`, `pyro.set_rng_seed(s)`, `jax.random.PRNGKey(s)`, "
        "`pm.sample(random_seed=s)`); medians over seeds",
    ])
    results, chain_results = {}, {}
    if args.chains_only:
        for problem in problems:
            chain_results[problem.key] = bench_chains(problem, args.chains, seeds[0], args.warmup, args.draws,
                                                      None)
        print(head + "\n\n" + chains_table(chain_results))
        return
    for problem in problems:
        results[problem.key] = bench(problem, seeds, args.warmup, args.draws)
        if args.chains:
            records = results[problem.key]
            one = records[ROWS[0]][0], records[ROWS[4]][0]
            chain_results[problem.key] = bench_chains(problem, args.chains, seeds[0], args.warmup,
                                                      args.draws, one)
    parts = [f"## NUTS: ESS per second, ppgen vs Pyro vs NumPyro vs PyMC (`bench_nuts.py`)\n\n{head}",
             "ESS/s (median over seeds) against the targets (ppgen at or above the best peer; "
             "at least 10x plain Pyro):\n\n" + targets_table(results)]
    for problem in problems:
        summary, detail = problem_table(problem, results[problem.key])
        modes = {(r["mode"], r["reason"]) for r in results[problem.key][ROWS[0]]}
        why = "; ".join(f"`{m}`" + (f" ({r})" if r else "") for m, r in sorted(modes))
        parts.append(f"### {problem.title}\n\n{summary}\n\nPer seed (min bulk ESS / wall s):\n\n"
                     f"{detail}\n\nppgen potential: {why}.")
    if chain_results:
        parts.append(f"### Several chains (CPU; seed {seeds[0]}; {args.warmup} warm-up + "
                     f"{args.draws} draws per chain; ESS over all chains together)\n\n"
                     + chains_table(chain_results)
                     + "\n\nThe 1-chain rows are the main tables' seed-0 runs. ppgen: its default "
                     "(`chain_method='auto'`): every chain's transitions in C++ on the one-chain "
                     "kernels (`ppgen.inference.mcmc.native`), the chains spread over min(chains, cores) "
                     "OpenMP threads; `chain_method='vectorized'`: free-running chains batched through "
                     "the potential (each its own tree and warm-up, one compiled kernel a leaf for all "
                     "chains; `ppgen.inference.mcmc.free_running`); and `'parallel'` (each chain alone in a "
                     "forked worker process, one per core; its build time is the longest of the "
                     "workers'). NumPyro: "
                     "`MCMC(..., num_chains=C, chain_method='vectorized')`, first and second run as "
                     "above. CPU only: the script has no GPU case (this machine has none).")
    parts.append(NOTES)
    body = "\n\n".join(parts) + "\n"
    print(body)
    if not args.no_write:
        write_section("bench_nuts", body)


if __name__ == "__main__":
    main()
