"""The conjugate reference model: every method against the closed-form posterior.

Run: python examples/conjugate.py   (PPGEN_QUICK=1 for a fast smoke run)
"""

import os

import torch

import ppgen
from ppgen.inference import MAP, NUTS, SVI, Exact
from ppgen.models import ConjugateNormal

quick = os.environ.get("PPGEN_QUICK") == "1"
torch.set_default_dtype(torch.float64)
waiting = ppgen.datasets.load("faithful")["waiting"].to_numpy()
data = (waiting - waiting.mean()) / waiting.std()

model = ConjugateNormal()
n = 200 if quick else 1000
fits = {
    "exact": ppgen.fit(model, data, Exact(num_samples=n), seed=0),
    "nuts": ppgen.fit(model, data, NUTS(num_samples=n, warmup=n, chains=2), seed=0, progress=not quick),
    "svi": ppgen.fit(model, data, SVI(num_steps=5 * n, lr=0.02), seed=0, progress=not quick),
    "map": ppgen.fit(model, data, MAP(num_steps=5 * n, lr=0.02), seed=0, progress=not quick),
}
print(f"log evidence (closed form): {fits['exact'].log_evidence:.3f} nats")
for name, fit in fits.items():
    draws = fit.flat_posterior()
    print(f"{name:>5}: mean {float(draws['mean'].mean()):+.4f}  variance {float(draws['variance'].mean()):.4f}")
print(ppgen.diagnostics.compare({k: fits[k] for k in ("exact", "nuts", "svi")}))
