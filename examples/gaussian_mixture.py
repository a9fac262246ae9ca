"""Old Faithful with a Bayesian Gaussian mixture: MAP by ECM, exact assignments, NUTS.

Run: python examples/gaussian_mixture.py   (PPGEN_QUICK=1 for a fast smoke run)
"""

import os

import torch

import ppgen
from ppgen.inference import MAP, NUTS, Exact
from ppgen.models import GaussianMixture

quick = os.environ.get("PPGEN_QUICK") == "1"
torch.set_default_dtype(torch.float64)

x = torch.tensor(ppgen.datasets.load("faithful").to_numpy())
gmm = GaussianMixture(2, 2, covariance="full")

map_fit = ppgen.fit(gmm, x, MAP(), seed=0)
print(f"MAP: total log-likelihood {float(gmm.log_prob(x).sum()):.2f} nats")
print("component means:\n", gmm.point_params()["locs"])

exact = ppgen.fit(gmm, x, Exact(num_samples=100), seed=0)
print("first five responsibilities:\n", exact.marginals["assignment"][:5])

draws = 40 if quick else 500
nuts = ppgen.fit(gmm, x, NUTS(num_samples=draws, warmup=draws, chains=2), seed=0, progress=not quick)
print(nuts.summary(var_names=["weights", "locs"]))
print("divergences:", int(nuts.sample_stats["diverging"].sum()))
