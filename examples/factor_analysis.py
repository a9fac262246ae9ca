"""PPCA and factor analysis: closed-form log-likelihood, MAP and posterior latents.

Run: python examples/factor_analysis.py   (PPGEN_QUICK=1 for a fast smoke run)
"""

import os

import torch

import ppgen
from ppgen.inference import MAP, SVI
from ppgen.models import PPCA, FactorAnalysis

quick = os.environ.get("PPGEN_QUICK") == "1"
model, x = PPCA.example(seed=0)
steps = 200 if quick else 2000

for cls in (PPCA, FactorAnalysis):
    model = cls(latent_dim=2)
    ppgen.fit(model, x, MAP(num_steps=steps, lr=0.02), seed=0, progress=not quick)
    print(f"{cls.__name__}: mean log-likelihood {model.score(x):.3f} nats per point")

svi = ppgen.fit(PPCA(latent_dim=2), x, SVI(num_steps=steps, lr=0.02), seed=0, progress=not quick)
latents = svi.model.posterior_latents(x[:3])
print("posterior latent means of three points:\n", latents.mean)
print(svi.summary(var_names=["noise"]))
_ = torch
