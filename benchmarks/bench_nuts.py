"""NUTS on eight schools (noncentred): ppgen, plain Pyro (with and without JIT), NumPyro.

Run:  python benchmarks/bench_nuts.py             (about 3-4 minutes)
      python benchmarks/bench_nuts.py --seeds 1   (one seed, quicker)

One chain, 1000 warm-up + 1000 kept draws per run; every sampler gets the same
seeds. Efficiency: the minimum bulk ESS (``arviz.ess``) over mu, tau and the
eight theta_tilde, divided by wall time. Pyro rows run with
``torch.set_num_threads(1)`` (ppgen's default too). NumPyro runs in a fresh
process per seed and is timed twice: the first ``run`` (tracing, XLA compile,
sampling) and the same ``MCMC`` run again with the compiled sampling loop served
by JAX's persistent compilation cache; the difference is the JIT compile time.
The table is printed and written to the ``bench_nuts`` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, median, table, timed, write_section  # noqa: E402

J = 8
Y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
SIGMA = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]
SITES = ("mu", "tau", "theta_tilde")
REFERENCE = Path("/work/shared/data/posteriordb/reference_posteriors/summary_statistics/mean_value/"
                 "mean_value/eight_schools-eight_schools_noncentered.json")


# ---------------------------------------------------------------- models
def pyro_eight_schools(J, sigma, y=None):
    import pyro
    import pyro.distributions as dist

    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", J):
        theta_tilde = pyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = mu + tau * theta_tilde
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def numpyro_eight_schools(J, sigma, y=None):
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("schools", J):
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = mu + tau * theta_tilde
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def torch_data():
    return {"J": J, "sigma": torch.tensor(SIGMA), "y": torch.tensor(Y)}


# ---------------------------------------------------------------- samplers
def run_ppgen(seed, warmup, draws):
    import ppgen
    from ppgen.inference import NUTS

    fit, seconds = timed(ppgen.fit, pyro_eight_schools, torch_data(),
                         NUTS(num_samples=draws, warmup=warmup, chains=1), seed=seed,
                         progress=False)
    posterior = {k: fit.posterior[k].numpy() for k in SITES}
    divergences = int(fit.sample_stats["diverging"].sum()) if "diverging" in fit.sample_stats else None
    return posterior, seconds, divergences


def run_pyro(seed, warmup, draws, jit):
    import pyro
    from pyro.infer import MCMC
    from pyro.infer import NUTS as PyroNUTS

    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    kernel = PyroNUTS(pyro_eight_schools, jit_compile=jit, ignore_jit_warnings=True)
    mcmc = MCMC(kernel, num_samples=draws, warmup_steps=warmup, num_chains=1, disable_progbar=True)
    data = torch_data()
    _, seconds = timed(mcmc.run, data["J"], data["sigma"], data["y"])
    samples = mcmc.get_samples(group_by_chain=True)
    posterior = {k: samples[k].numpy() for k in SITES}
    divergences = sum(len(v) for v in mcmc.diagnostics()["divergences"].values())
    return posterior, seconds, divergences


def run_numpyro(seed, warmup, draws):
    """NumPyro in a fresh process (so every seed pays its own compilation):
    (record of the first run, its seconds, seconds of the second run)."""
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--numpyro-child",
                          str(seed), "--warmup", str(warmup), "--draws", str(draws)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"NumPyro run failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["record"], result["first"], result["again"]


def numpyro_child(seed, warmup, draws):
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

        sigma, y = np.array(SIGMA, dtype=np.float32), np.array(Y, dtype=np.float32)
        mcmc = MCMC(NumpyroNUTS(numpyro_eight_schools), num_warmup=warmup, num_samples=draws,
                    num_chains=1, progress_bar=False)

        def go():
            mcmc.run(jax.random.PRNGKey(seed), J, sigma, y, extra_fields=("diverging",))
            return jax.block_until_ready(mcmc.get_samples(group_by_chain=True))

        _, first = timed(go)
        samples, again = timed(go)
        posterior = {k: np.asarray(samples[k]) for k in SITES}
        divergences = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    record = _record(seed, posterior, first, divergences)
    print(json.dumps({"record": record, "first": first, "again": again}))


def min_bulk_ess(posterior):
    import arviz as az

    ess = az.ess(az.convert_to_dataset(posterior), method="bulk")
    return min(float(ess[k].min()) for k in SITES)


# ---------------------------------------------------------------- benchmark
ROWS = ("ppgen NUTS", "Pyro NUTS", "Pyro NUTS, jit_compile=True",
        "NumPyro NUTS, incl. JIT compile", "NumPyro NUTS, excl. JIT compile")


def bench(seeds, warmup, draws):
    records = {row: [] for row in ROWS}
    compile_times = []
    # warm-up: imports and first-call overhead (not JIT compile of the timed runs)
    run_ppgen(0, 20, 20)
    run_pyro(0, 20, 20, False)
    run_pyro(0, 20, 20, True)
    for seed in seeds:
        print(f"seed {seed} ...", file=sys.stderr)
        for name, fn, extra in [("ppgen NUTS", run_ppgen, ()),
                                ("Pyro NUTS", run_pyro, (False,)),
                                ("Pyro NUTS, jit_compile=True", run_pyro, (True,))]:
            posterior, seconds, div = fn(seed, warmup, draws, *extra)
            records[name].append(_record(seed, posterior, seconds, div))
            print(f"  {name}: {seconds:.1f} s", file=sys.stderr)
        record, first, again = run_numpyro(seed, warmup, draws)
        records["NumPyro NUTS, incl. JIT compile"].append(record)
        records["NumPyro NUTS, excl. JIT compile"].append(
            {**record, "seconds": again, "ess_per_s": record["ess"] / again})
        compile_times.append(first - again)
        print(f"  NumPyro: {first:.2f} s first run, {again:.2f} s compiled", file=sys.stderr)
    return records, compile_times


def _record(seed, posterior, seconds, divergences):
    ess = min_bulk_ess(posterior)
    return {"seed": seed, "ess": ess, "seconds": seconds, "ess_per_s": ess / seconds,
            "mu": float(posterior["mu"].mean()), "tau": float(posterior["tau"].mean()),
            "divergences": divergences}


def summarise(records, compile_times):
    rows = []
    for name, recs in records.items():
        rows.append([
            name,
            f"{median([r['ess'] for r in recs]):.0f}",
            f"{median([r['seconds'] for r in recs]):.2f}",
            f"{median([r['ess_per_s'] for r in recs]):.1f}",
            f"{median([r['mu'] for r in recs]):.2f}",
            f"{median([r['tau'] for r in recs]):.2f}",
            f"{median([r['divergences'] for r in recs]):g}",
        ])
    if REFERENCE.exists():
        ref = json.loads(REFERENCE.read_text())
        means = dict(zip(ref["names"], ref["mean_value"]))
        mcse = dict(zip(ref["names"], ref["mcse_mean"]))
        rows.append(["posteriordb reference (Stan)", "", "", "",
                     f"{means['mu']:.2f} (mcse {mcse['mu']:.2f})",
                     f"{means['tau']:.2f} (mcse {mcse['tau']:.2f})", ""])
    summary = table(["sampler", "min bulk ESS (median)", "wall median (s)",
                     "ESS/s (median)", "posterior mean mu", "posterior mean tau",
                     "divergences (median)"], rows)
    seeds = [r["seed"] for r in records[ROWS[0]]]
    detail_rows = []
    for i, seed in enumerate(seeds):
        row = [str(seed)]
        for name in ROWS:
            r = records[name][i]
            row.append(f"{r['mu']:.2f} / {r['tau']:.2f} / {r['ess']:.0f} / {r['seconds']:.2f}")
        detail_rows.append(row)
    detail = table(["seed"] + [f"{n}: mean mu / mean tau / ESS / s" for n in ROWS], detail_rows)
    return summary, detail, median(compile_times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..n-1 (default 3)")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    parser.add_argument("--numpyro-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.numpyro_child is not None:
        return numpyro_child(args.numpyro_child, args.warmup, args.draws)

    torch.set_num_threads(1)
    import jax

    seeds = list(range(args.seeds))
    head = header(sys.argv, ["torch", "pyro", "numpyro", "jax", "arviz"], extra=[
        "torch threads: 1 (`torch.set_num_threads(1)`) for ppgen and Pyro; "
        f"JAX on {jax.devices()[0].platform} ({jax.device_count()} device), XLA's own threading; "
        "float32 everywhere (the torch and JAX defaults)",
        f"eight schools, noncentred (J=8); one chain, {args.warmup} warm-up + {args.draws} draws; "
        f"seeds {seeds[0]}..{seeds[-1]} for every sampler (`ppgen.fit(seed=s)`, "
        "`pyro.set_rng_seed(s)`, `jax.random.PRNGKey(s)`); medians over seeds",
    ])
    records, compile_times = bench(seeds, args.warmup, args.draws)
    summary, detail, compile_s = summarise(records, compile_times)
    numpyro_fast = median([r["ess_per_s"] for r in records["NumPyro NUTS, excl. JIT compile"]])
    ppgen_eff = median([r["ess_per_s"] for r in records["ppgen NUTS"]])
    pyro_eff = median([r["ess_per_s"] for r in records["Pyro NUTS"]])
    wall_ratio = median([a["seconds"] / b["seconds"]
                         for a, b in zip(records["ppgen NUTS"], records["Pyro NUTS"])])
    notes = (
        f"NumPyro JIT compile time (first run minus compiled run, median): {compile_s:.2f} s.\n\n"
        f"ESS/s ratios (medians): ppgen / Pyro = {ppgen_eff / pyro_eff:.2f}; "
        f"ppgen / NumPyro (compiled) = {ppgen_eff / numpyro_fast:.3f}. Wall time ppgen / plain "
        f"Pyro, same seed (median of per-seed ratios): {wall_ratio:.2f}.\n\n"
        "Notes: ppgen wraps Pyro's NUTS (`ppgen.fit(program, data, NUTS(num_samples, warmup, "
        "chains=1), progress=False)`), starts at the prior median (`init_to_median`) and records "
        "per-draw sampler statistics; plain Pyro and NumPyro use their default initialisation "
        "(uniform in (-2, 2) on the unconstrained space). An untimed short run of each torch "
        "sampler comes first (imports, first-call overhead); the Pyro JIT row still includes "
        "tracing and compiling in each timed run, since every new kernel compiles anew. "
        "NumPyro runs in a fresh process per seed (after imports): `incl. JIT compile` is its first "
        "`mcmc.run` (JAX start-up, tracing, XLA compilation, sampling); `excl. JIT compile` is the "
        "same `MCMC` run again with the same key (identical draws): NumPyro re-traces its sampling "
        "loop on every `run`, so the compiled loop comes from JAX's persistent compilation cache "
        "(a fresh temporary folder), and that time still includes tracing and the cache look-up. "
        "ESS: `arviz.ess(..., method='bulk')`, the minimum over mu, tau and theta_tilde[0..7]."
    )
    body = (f"## NUTS: eight schools, ppgen vs Pyro vs NumPyro (`bench_nuts.py`)\n\n{head}\n\n"
            f"{summary}\n\nPer seed (posterior mean mu / mean tau / min bulk ESS / wall s):\n\n"
            f"{detail}\n\n{notes}\n")
    print(body)
    if not args.no_write:
        write_section("bench_nuts", body)


if __name__ == "__main__":
    main()
