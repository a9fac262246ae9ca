"""Normalizing flows on two moons: a neural spline flow, a conditional MAF, and a
flow as the variational guide of a plain Pyro program.

Run: python examples/flow_2d.py   (PPGEN_QUICK=1 for a fast smoke run)
"""

import math
import os

import pyro
import pyro.distributions as dist
import torch

import ppgen
from ppgen.inference import MAP, SVI
from ppgen.models import MAF, NeuralSplineFlow
from ppgen.models.synthetic import two_moons

quick = os.environ.get("PPGEN_QUICK") == "1"
steps = 30 if quick else 2000
gen = torch.Generator().manual_seed(0)
x, moon = two_moons(5000, generator=gen, labels=True)
x_test = two_moons(5000, generator=gen)

# 1. A density model: exact log p(x), fast sampling, the map itself.
nsf = NeuralSplineFlow(2, num_layers=3, hidden=(64, 64), bins=8)
fit = ppgen.fit(nsf, x, MAP(num_steps=steps, lr=1e-3, batch_size=256), seed=0, progress=not quick)
with torch.no_grad():
    print(f"NSF: held-out -log p(x) {-float(nsf.log_prob(x_test).mean()):.3f} nats per point; the true "
          f"entropy is 1.01 (benchmarks/bench_flows.py); training took {fit.timings['fit']:.1f} s")
    draws = nsf.sample(10000)  # one vectorised call
    print(f"10000 draws: mean ({draws[:, 0].mean():.2f}, {draws[:, 1].mean():.2f}); exact (0.50, 0.25)")
    z = nsf.forward(x_test[:5])  # data -> noise
    print("max |inverse(forward(x)) - x| =", float((nsf.inverse(z) - x_test[:5]).abs().max()))

# 2. A conditional density: which moon a point is on is the context.
maf = MAF(2, num_layers=3, hidden=(32, 32), context_dim=1)
ppgen.fit(maf, (x, moon), MAP(num_steps=steps, lr=3e-3, batch_size=256), seed=0, progress=not quick)
exact_means = {0: (1.0, 0.5 - 2 / math.pi), 1: (0.0, 2 / math.pi)}  # E[arc point] of each moon
with torch.no_grad():
    for label, (ex, ey) in exact_means.items():
        mean = maf.sample(2000, context=torch.tensor([float(label)])).mean(0)
        print(f"MAF given moon {label}: mean of 2000 draws ({mean[0]:.2f}, {mean[1]:.2f}); exact ({ex:.2f}, {ey:.2f})")


# 3. The same flows as a guide: SVI(guide="flow") for any Pyro program.
def banana(y):
    z1 = pyro.sample("z1", dist.Normal(0.0, 1.0))
    z2 = pyro.sample("z2", dist.Normal(0.0, 2.0))
    pyro.sample("y", dist.Normal(z2 - z1 ** 2, 0.3), obs=y)


for guide in ("normal", "flow"):
    svi = ppgen.fit(banana, {"y": torch.tensor(0.0)},
                    SVI(guide=guide, num_steps=30 if quick else 1500, lr=0.01, lr_decay=0.1, num_particles=4),
                    seed=0, progress=not quick)
    final = sum(svi.losses[-100:]) / len(svi.losses[-100:])
    print(f"guide={guide!r}: mean ELBO over the last 100 steps {-final:.3f} nats (log evidence -1.797); "
          f"posterior E[z2] {float(svi.posterior['z2'].mean()):.3f} (exact 0.570)")
