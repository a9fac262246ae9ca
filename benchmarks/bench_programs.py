"""Users' own programs: ppgen's NUTS against plain Pyro's and NumPyro's, from process start.

Run:  nice python benchmarks/bench_programs.py                 (the default programs)
      python benchmarks/bench_programs.py --programs schools_vector --no-write
      python benchmarks/bench_programs.py --quick                (tiny settings: checks the script)

The programs are the test corpus (``tests/programs/corpus.py``: Pyro programs written the
ways users write them). Every run is a fresh process, one chain, 1000 warm-up + 1000 kept
draws, float32, one thread; its wall time counts the interpreter's start, the imports,
building the potential (recording, compiling) and sampling. ppgen runs twice: the
program's first fit ("cold": ppgen's cache, ``PPGEN_CACHE_DIR`` a new folder for the
whole run, holds no kernel of it; the first program's cold run starts from an empty
cache, later ones find TorchInductor's one-off host checks done, as any user's second
program does) and its second fit ("warm": the kernel kept by the first). NumPyro runs
where the program translates directly (written below), twice, as its own JIT cache does
not persist across processes. Efficiency: the minimum bulk ESS
(``arviz.ess``, computed by the parent from the saved draws, so ArviZ's import is not
timed) over every scalar of the latent sites, per second of that wall time.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ess_rate, header, run_cell, table, write_section  # noqa: E402

DEFAULT = ("schools_vector", "schools_plate", "logistic_matmul", "nested_plates", "mixture_indexing",
           "hmm_markov", "obs_mask_regression", "lkj_cholesky", "dirichlet_multinomial", "robust_regression")


# ---------------------------------------------------------------- one run, in a fresh process
def run_one(engine, name, warmup, draws):
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from tests.programs.corpus import PROGRAMS

    model, make_data, features = PROGRAMS[name]
    data = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in make_data().items()}
    path = {}
    if engine == "ppgen":
        import ppgen
        from ppgen.inference import NUTS

        fit = ppgen.fit(model, data, NUTS(num_samples=draws, warmup=warmup, chains=1), seed=0, progress=False)
        samples = {k: v[0].numpy() for k, v in fit.posterior.items()}
        path = fit.path
    elif engine == "pyro":
        import pyro
        from pyro.infer import MCMC, NUTS

        pyro.set_rng_seed(0)
        kernel = NUTS(model, max_plate_nesting=2 if "enumerated" in features else None)
        mcmc = MCMC(kernel, num_samples=draws, warmup_steps=warmup, disable_progbar=True)
        mcmc.run(**data)
        samples = {k: v.numpy() for k, v in mcmc.get_samples().items()}
    else:
        import jax
        from numpyro.infer import MCMC, NUTS

        jax.config.update("jax_platform_name", "cpu")
        mcmc = MCMC(NUTS(_numpyro_models()[name]), num_warmup=warmup, num_samples=draws, progress_bar=False)
        mcmc.run(jax.random.PRNGKey(0), **{k: np.asarray(v) for k, v in data.items()})
        samples = {k: np.asarray(v) for k, v in mcmc.get_samples().items()}
    return samples, path


def min_ess(samples, name):
    """The least bulk ESS over the unknowns: every scalar of every continuous latent site, except the
    entries of an ``obs_mask`` site's ``*_unobserved`` at observed positions (no density,
    no effect: Pyro and NumPyro move them, ppgen holds them at the data)."""
    import arviz as az
    import numpy as np
    import torch

    from ppgen.inference.program import Program
    from tests.programs.corpus import PROGRAMS, data

    values = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in data(name).items()}
    latent = {s.name for s in Program.build(PROGRAMS[name][0], values).continuous_sites}
    values = []
    for site, value in samples.items():
        if site not in latent:  # (ppgen's posterior also holds deterministic values)
            continue
        flat = value.reshape(value.shape[0], -1)
        if site.endswith("_unobserved") and "observed" in data(name):
            flat = flat[:, ~data(name)["observed"].reshape(-1).numpy().astype(bool)]
        values += [float(az.ess(flat[None, :, i], method="bulk")) for i in range(flat.shape[1])]
    return float(np.min(values))


# ---------------------------------------------------------------- NumPyro translations
def _numpyro_models():
    try:
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as nd
    except ImportError:
        return {}
    try:
        from numpyro.contrib.funsor import config_enumerate, markov
        from numpyro.ops.indexing import Vindex

        enumerates = True
    except ImportError:
        enumerates = False

    def schools_vector(J, sigma, y):
        mu = numpyro.sample("mu", nd.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", nd.HalfCauchy(5.0))
        eta = numpyro.sample("eta", nd.Normal(jnp.zeros(J), 1.0).to_event(1))
        numpyro.sample("obs", nd.Normal(mu + tau * eta, sigma).to_event(1), obs=y)

    def schools_plate(J, sigma, y):
        mu = numpyro.sample("mu", nd.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", nd.HalfCauchy(5.0))
        with numpyro.plate("schools", J):
            eta = numpyro.sample("eta", nd.Normal(0.0, 1.0))
            numpyro.sample("obs", nd.Normal(mu + tau * eta, sigma), obs=y)

    def logistic_matmul(X, y):
        w = numpyro.sample("w", nd.Normal(jnp.zeros(X.shape[1]), 1.0).to_event(1))
        b = numpyro.sample("b", nd.Normal(0.0, 2.0))
        numpyro.sample("y", nd.Bernoulli(logits=X @ w + b).to_event(1), obs=y)

    def nested_plates(y):
        mu = numpyro.sample("mu", nd.Normal(0.0, 5.0))
        sd_group = numpyro.sample("sd_group", nd.HalfNormal(2.0))
        with numpyro.plate("groups", y.shape[0], dim=-2):
            effect = numpyro.sample("effect", nd.Normal(0.0, sd_group))
            with numpyro.plate("items", y.shape[1], dim=-1):
                numpyro.sample("y", nd.Normal(mu + effect, 1.0), obs=y)

    def obs_mask_regression(x, y, observed):
        a = numpyro.sample("a", nd.Normal(0.0, 5.0))
        b = numpyro.sample("b", nd.Normal(0.0, 5.0))
        sigma = numpyro.sample("sigma", nd.HalfNormal(2.0))
        with numpyro.plate("data", len(x)):
            numpyro.sample("y", nd.Normal(a + b * x, sigma), obs=y, obs_mask=observed)

    def lkj_cholesky(y):
        d = y.shape[1]
        L_corr = numpyro.sample("L_corr", nd.LKJCholesky(d, concentration=2.0))
        scales = numpyro.sample("scales", nd.HalfNormal(jnp.full((d,), 2.0)).to_event(1))
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("obs", nd.MultivariateNormal(jnp.zeros(d), scale_tril=scales[:, None] * L_corr), obs=y)

    def dirichlet_multinomial(counts):
        probs = numpyro.sample("probs", nd.Dirichlet(jnp.ones(counts.shape[-1])))
        numpyro.sample("counts", nd.Multinomial(int(counts.sum()), probs), obs=counts)

    @config_enumerate
    def mixture_indexing(y):
        weights = numpyro.sample("weights", nd.Dirichlet(jnp.ones(2)))
        locs = numpyro.sample("locs", nd.Normal(0.0, 5.0).expand([2]).to_event(1))
        scale = numpyro.sample("scale", nd.LogNormal(0.0, 1.0))
        with numpyro.plate("data", len(y)):
            z = numpyro.sample("z", nd.Categorical(weights))
            numpyro.sample("obs", nd.Normal(locs[z], scale), obs=y)

    def hmm_markov(y):
        transition = numpyro.sample("transition", nd.Dirichlet(jnp.ones((2, 2)) + 2 * jnp.eye(2)).to_event(1))
        locs = numpyro.sample("locs", nd.Normal(jnp.array([-1.0, 1.0]), 1.0).to_event(1))
        z = 0
        for t in markov(range(len(y))):
            z = numpyro.sample(f"z_{t}", nd.Categorical(Vindex(transition)[..., z, :]),
                               infer={"enumerate": "parallel"})
            numpyro.sample(f"y_{t}", nd.Normal(Vindex(locs)[..., z], 0.5), obs=y[t])

    def robust_regression(x, y):
        a = numpyro.sample("a", nd.Normal(0.0, 5.0))
        b = numpyro.sample("b", nd.Normal(0.0, 5.0))
        nu = numpyro.sample("nu", nd.Gamma(2.0, 0.1))
        sigma = numpyro.sample("sigma", nd.HalfNormal(2.0))
        with numpyro.plate("data", len(x)):
            numpyro.sample("y", nd.StudentT(nu, a + b * x, sigma), obs=y)

    models = (schools_vector, schools_plate, logistic_matmul, nested_plates, obs_mask_regression, lkj_cholesky,
              dirichlet_multinomial, robust_regression)
    if enumerates:  # NumPyro enumerates discrete sites through funsor
        models += (mixture_indexing, hmm_markov)
    return {f.__name__: f for f in models}




# ---------------------------------------------------------------- the parent
def fresh_process(engine, name, warmup, draws, env, limit):
    """Wall seconds from process start, the minimum bulk ESS, and ppgen's path; a run still
    going after ``limit`` seconds is stopped."""
    start = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, __file__, "--one", engine, name, str(warmup), str(draws),
                              os.path.join(env["PPGEN_CACHE_DIR"], f"{engine}_{name}.npz")],
                             env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"stopped": limit}
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    import numpy as np

    with np.load(result.pop("draws")) as draws:  # ESS here: ArviZ's import is not the run's time
        result["ess"] = min_ess(dict(draws), name)
    return {"seconds": seconds, **result}


def main():

    parser = argparse.ArgumentParser()
    parser.add_argument("--programs", nargs="*", default=list(DEFAULT))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--no-pyro", action="store_true", help="skip plain Pyro (minutes per program)")
    parser.add_argument("--limit", type=float, default=600.0, help="seconds before a run is stopped")
    args = parser.parse_args()
    warmup = draws = 50 if args.quick else 1000
    translated = set(_numpyro_models())  # (built here and in NumPyro's children: JAX's import is not
    # for the other children to pay)
    rows, raw = [], {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "PPGEN_CACHE_DIR": cache, "OMP_NUM_THREADS": "1"}
        for name in args.programs:
            def run(engine, name=name):
                return fresh_process(engine, name, warmup, draws, env, args.limit)

            runs = {"ppgen cold": run("ppgen"), "ppgen warm": run("ppgen")}
            if not args.no_pyro:
                runs["pyro"] = run("pyro")
            if name in translated:
                runs["numpyro first"] = run("numpyro")
                runs["numpyro second"] = run("numpyro")
            raw[name] = runs
            print(name, json.dumps(runs), flush=True)
            rows.append(_row(name, runs))
    columns = ["program", "ppgen path", "ppgen cold: s, ESS/s", "ppgen warm: s, ESS/s", "Pyro: s, ESS/s",
               "NumPyro (2nd run): s, ESS/s", "ppgen warm / Pyro", "ppgen warm / NumPyro", "ppgen cold / NumPyro"]
    text = "\n".join([
        "## Users' programs: ESS per second from process start (`bench_programs.py`)", "",
        header(sys.argv, ("torch", "pyro", "numpyro", "jax")), "",
        f"One chain, {warmup} warm-up + {draws} draws, float32, one thread, each run a fresh process (wall time "
        "from its start: interpreter, imports, building, sampling). ESS: minimum bulk ESS over every "
        "scalar of the latent sites. Cold: the program's first fit (its kernels built; the first row's from an "
        "empty cache); warm: its second fit (the kept kernel). "
        f"Ratios are of ESS/s. A run still going after {args.limit:.0f} s was stopped (`> {args.limit:.0f} s`).",
        "",
        table(columns, rows)])
    print(text)
    if not args.no_write and not args.quick:
        write_section("bench_programs", text)


def _ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def _row(name, runs):
    cold, warm = ess_rate(runs.get("ppgen cold")), ess_rate(runs.get("ppgen warm"))
    pyro, numpyro = ess_rate(runs.get("pyro")), ess_rate(runs.get("numpyro second"))
    path = runs.get("ppgen warm", {}).get("path") or {}
    return [name, f"{path.get('potential', '?')} / {path.get('transitions', '?')}", run_cell(runs.get("ppgen cold")),
            run_cell(runs.get("ppgen warm")), run_cell(runs.get("pyro")), run_cell(runs.get("numpyro second")),
            _ratio(warm, pyro), _ratio(warm, numpyro), _ratio(cold, numpyro)]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        engine, name, warmup, draws = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        samples, path = run_one(engine, name, warmup, draws)
        import numpy as np

        np.savez(sys.argv[6], **samples)
        print(json.dumps({"draws": sys.argv[6], "path": path}))
    else:
        main()
