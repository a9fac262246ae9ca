"""A plain Pyro program through ppgen: eight schools with NUTS and SVI, compared by LOO.

Run: python examples/eight_schools.py   (PPGEN_QUICK=1 for a fast smoke run)
"""

import os

import pyro
import pyro.distributions as dist

import ppgen
from ppgen.inference import NUTS, SVI

quick = os.environ.get("PPGEN_QUICK") == "1"


def eight_schools(J, sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", J):
        theta_trans = pyro.sample("theta_trans", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + tau * theta_trans)
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


data = ppgen.datasets.load("eight_schools")
n = 200 if quick else 1000
nuts = ppgen.fit(eight_schools, data, NUTS(num_samples=n, warmup=n, chains=2), seed=0, progress=not quick)
svi = ppgen.fit(eight_schools, data, SVI(num_steps=2 * n, lr=0.02), seed=0, progress=not quick)
print(nuts.summary(var_names=["mu", "tau", "theta"]))
print(ppgen.diagnostics.compare({"nuts": nuts, "svi": svi}))
