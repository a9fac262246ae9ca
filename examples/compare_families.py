"""Three families on one data set, compared honestly: a GMM, an HMM and a flow.

Short sequences from a sticky two-state process: the HMM sees each as a sequence, the
Gaussian mixture and the RealNVP flow as one vector. All three are point estimates
(MAP), which PSIS-LOO cannot score, so ``compare`` cross-validates them (K-fold: each
model refitted on the other folds, the held-out sequences scored), and then scores
them on new sequences none of them saw. A NUTS fit of the mixture joins the table by
PSIS-LOO. Each row names its estimator; the HMM, the true family, should come first.

Run: python examples/compare_families.py   (PPGEN_QUICK=1 for a fast smoke run)
"""

import os

import torch

import ppgen
from ppgen.datasets import sticky_sequences
from ppgen.diagnostics import compare
from ppgen.inference import MAP, NUTS
from ppgen.models import GaussianHMM, GaussianMixture, RealNVP

quick = os.environ.get("PPGEN_QUICK") == "1"
torch.set_default_dtype(torch.float64)


data = sticky_sequences(60 if quick else 200, generator=torch.Generator().manual_seed(0)).double()
new = sticky_sequences(100, generator=torch.Generator().manual_seed(1)).double()
flat, new_flat = data.reshape(len(data), -1), new.reshape(len(new), -1)
fits = {
    "hmm (MAP)": ppgen.fit(GaussianHMM(2, 2), data, MAP(), seed=0, progress=False),
    "gmm (MAP)": ppgen.fit(GaussianMixture(2, 8), flat, MAP(), seed=0, progress=False),
    "flow (MAP)": ppgen.fit(RealNVP(8), flat, MAP(num_steps=100 if quick else 1000, lr=3e-3), seed=0,
                            progress=False),
}
print("K-fold cross-validated log predictive density (nats, summed over sequences):")
print(compare(fits, folds=3 if quick else 5)[["elpd", "se", "elpd_diff", "dse", "estimator"]].to_string())

fits["gmm (NUTS)"] = ppgen.fit(GaussianMixture(2, 8, covariance="diag"), flat,
                               NUTS(num_samples=50 if quick else 500, warmup=50 if quick else 500),
                               seed=0, progress=False)
print("\nWith a NUTS fit (PSIS-LOO) beside the point estimates (K-fold):")
print(compare(fits, folds=3 if quick else 5)[["elpd", "se", "p", "estimator", "warning"]].to_string())

# New sequences: the HMM is scored on them as sequences, the others as vectors.
held_out = {name: fit.log_prob(new if name.startswith("hmm") else new_flat).sum().item()
            for name, fit in fits.items()}
print("\nLog density of 100 new sequences:", {k: round(v, 1) for k, v in held_out.items()})
