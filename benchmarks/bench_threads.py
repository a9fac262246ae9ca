"""Torch threads for small models: eight schools NUTS and SVI with 1 and 2 threads.

Run: python benchmarks/bench_threads.py   (prints a table; paste into RESULTS.md by hand)
"""

import time

import pyro
import pyro.distributions as dist

import ppgen
from ppgen.inference import NUTS, SVI


def eight_schools(J, sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("J", J):
        theta_trans = pyro.sample("theta_trans", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * theta_trans, sigma), obs=y)


def main():
    data = ppgen.datasets.load("eight_schools")
    print("| threads | NUTS 300+300 (s) | SVI 1000 steps (s) |\n|---|---|---|")
    for threads in (1, 2, 1, 2):
        start = time.perf_counter()
        ppgen.fit(eight_schools, data, NUTS(num_samples=300, warmup=300, chains=1), seed=0,
                  progress=False, threads=threads)
        nuts = time.perf_counter() - start
        start = time.perf_counter()
        ppgen.fit(eight_schools, data, SVI(num_steps=1000), seed=0, progress=False, threads=threads)
        svi = time.perf_counter() - start
        print(f"| {threads} | {nuts:.2f} | {svi:.2f} |")


if __name__ == "__main__":
    main()
