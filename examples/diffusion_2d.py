"""A diffusion model (DDPM) on the ring of 8 Gaussians: training, samplers, the bound,
the Pyro programs, and classifier-free guidance.

Run: python examples/diffusion_2d.py   (PPGEN_QUICK=1 for a fast smoke run)
"""

import os

import torch
from pyro.infer import Predictive

import ppgen
from ppgen.diagnostics import mode_coverage
from ppgen.inference import SVI
from ppgen.models import DDPM

torch.set_num_threads(1)  # small networks: a second thread only adds contention on a busy machine
quick = os.environ.get("PPGEN_QUICK") == "1"
steps = 30 if quick else 20000  # about 6 minutes per model on one busy CPU core
timesteps = 50 if quick else 1000
gen = torch.Generator().manual_seed(0)
x = ppgen.datasets.ring(2000 if quick else 20000, generator=gen)  # 8 modes on the unit circle, sd 0.01
centers, std = ppgen.datasets.mixture_modes("ring")

# 1. Fit: SVI minimises the noise-prediction loss (a reweighted variational bound).
# The recipe for sharp mixtures (ppgen.models.diffusion): data at sd 4 in the model's units.
model = DDPM(2, timesteps=timesteps, hidden=(128, 128, 128), variance="posterior", data_scale=4.0)
fit = ppgen.fit(model, x, SVI(num_steps=steps, lr=2e-3, lr_decay=0.1, batch_size=512), seed=0,
                progress=not quick)
print(f"trained {steps} steps in {fit.timings['fit']:.1f} s; last loss {fit.losses[-1]:.1f}")

# 2. Samplers: ancestral (all T steps) and DDIM (50 deterministic steps).
for label, kwargs in [("ancestral", {}), ("DDIM-50", {"sampler": "ddim", "steps": 50})]:
    draws = model.sample(500 if quick else 5000, generator=torch.Generator().manual_seed(1), **kwargs)
    print(f"{label:>9}: {mode_coverage(draws, centers, std)}")

# 3. log_prob is the variational bound (a lower bound on log p(x)), with its terms.
test = ppgen.datasets.ring(100 if quick else 1000, generator=gen)
bound = model.variational_bound(test, seed=0)
print(f"bound on held-out points: {float(bound.log_prob.mean()):.3f} nats per point "
      f"(L_T {float(bound.prior.mean()):.4f}, sum L_t {float(bound.diffusion.mean()):.3f}, "
      f"L_0 {float(bound.decoder.mean()):.3f}); log_prob_kind = {model.log_prob_kind!r}")

# 4. The generator is a Pyro program: sites x_T .. x_1 and obs, usable with Predictive.
small = Predictive(model.model, num_samples=2)(n=3)
print("Predictive sites:", sorted(small, key=lambda k: (k != "obs", len(k), k))[:4], "...",
      f"({len(small)} sites, obs shape {tuple(small['obs'].shape)})")

# 5. Classifier-free guidance: condition on the mode's index; w > 0 sharpens p(x | label).
labels = torch.cdist(x, centers).argmin(1)
conditional = DDPM(2, timesteps=timesteps, hidden=(128, 128, 128), variance="posterior", data_scale=4.0,
                   num_classes=8)
ppgen.fit(conditional, (x, labels), SVI(num_steps=steps, lr=2e-3, lr_decay=0.1, batch_size=512), seed=0,
          progress=not quick)
for w in (0.0, 2.0):
    draws = conditional.sample(500, sampler="ddim", steps=50, context=3, guidance=w,
                               generator=torch.Generator().manual_seed(2))
    share = float((torch.cdist(draws, centers).argmin(1) == 3).double().mean())
    print(f"guidance w={w}: {100 * share:.1f}% of draws for label 3 land on mode 3")
