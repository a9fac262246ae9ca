"""Binarized 8x8 digits with Bernoulli RBMs: contrastive divergence, the exact
log-likelihood by enumeration, AIS with its standard error, and Gibbs samples.

Run: python examples/rbm_digits.py   (PPGEN_QUICK=1 for a fast smoke run)
"""

import math
import os
import tempfile

import torch

import ppgen
from ppgen.inference import ContrastiveDivergence
from ppgen.models import BernoulliRBM

quick = os.environ.get("PPGEN_QUICK") == "1"
torch.set_num_threads(1)

x = torch.as_tensor(ppgen.datasets.load("digits", binarize=0.5))  # (1797, 64) of 0/1
order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
train, test = x[order[:1500]], x[order[1500:]]

# Independent pixels (the RBM with no hidden units) as the yardstick.
rate = (train.sum(0) + 0.5) / (len(train) + 1)
baseline = float((test * rate.log() + (1 - test) * (1 - rate).log()).sum(1).mean())
print(f"independent pixels: test log p(x) {baseline:.2f} nats per image")

# 1. 20 hidden units: log Z sums 2^20 hidden states exactly, so log p(x) is exact.
rbm = BernoulliRBM(64, 8 if quick else 20)
method = ContrastiveDivergence(num_epochs=2 if quick else 200, batch_size=20, lr=0.05, momentum=0.5,
                               persistent=True)
fit = ppgen.fit(rbm, train, method, seed=0, progress=not quick)
exact = rbm.log_partition()
print(f"RBM({rbm.n_hidden} hidden), PCD-1 for {method.num_epochs} epochs in {fit.timings['fit']:.1f} s: "
      f"test log p(x) {float(rbm.log_prob(test).mean()):.2f} nats per image ({rbm.log_prob_kind}); {exact}")
print(f"  training loss ({rbm.cd_monitor_name}): {fit.losses[0]:.2f} -> {fit.losses[-1]:.2f}")

# The same log Z by annealed importance sampling: the estimate should sit within a few
# standard errors of the exact value.
estimate = rbm.log_partition("ais", num_runs=100, num_betas=500 if quick else 14500)
print(f"  {estimate}; (estimate - exact) / stderr = {(estimate.value - exact.value) / estimate.stderr:+.2f}")

# 2. 100 hidden units: 2^64 visible or 2^100 hidden states are out of reach, so log p(x)
# uses the AIS estimate of log Z; its standard error applies to every log p(x) alike.
big = BernoulliRBM(64, 24 if quick else 100, ais_runs=50 if quick else 100, ais_betas=300 if quick else 14500)
ppgen.fit(big, train, ContrastiveDivergence(num_epochs=2 if quick else 200, batch_size=20, lr=0.05,
                                            persistent=True), seed=0, progress=not quick)
log_z = big.log_partition(progress=not quick)
print(f"RBM({big.n_hidden} hidden): test log p(x) {float(big.log_prob(test).mean()):.2f} "
      f"+- {log_z.stderr:.2f} nats per image ({big.log_prob_kind}: {log_z})")

# 3. New digits by block Gibbs sampling: 64 chains of 1,000 sweeps each.
samples = rbm.sample(64, burn_in=50 if quick else 1000, generator=torch.Generator().manual_seed(1), mean=True)
path = os.path.join(tempfile.gettempdir(), "ppgen_rbm_digits_samples.png")
ppgen.diagnostics.save_figure(ppgen.diagnostics.image_grid(samples, nrow=8, title="RBM samples"), path)
print(f"Gibbs samples (p(v | h) of the last sweep) written to {path}")
assert math.isfinite(float(rbm.log_prob(test).mean()))
