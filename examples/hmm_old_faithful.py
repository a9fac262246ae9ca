"""Hidden Markov models on Old Faithful waiting times and yearly earthquake counts.

GaussianHMM with 2 and 3 states on the 272 waiting times (one sequence), PoissonHMM
with 2 and 3 states on the counts of major earthquakes per year (1900-2006): MAP by
Baum-Welch EM with random restarts, the transition matrices, the Viterbi path, the
smoothed state probabilities, and a short NUTS run with the states summed out.

Run: python examples/hmm_old_faithful.py   (PPGEN_QUICK=1 for a fast smoke run)
"""

import os

import torch

import ppgen
from ppgen.inference import MAP, NUTS
from ppgen.models import GaussianHMM, PoissonHMM

quick = os.environ.get("PPGEN_QUICK") == "1"
torch.set_default_dtype(torch.float64)
torch.set_printoptions(precision=3, sci_mode=False)

waiting = torch.tensor(ppgen.datasets.load("faithful")["waiting"].to_numpy(), dtype=torch.float64)
counts = torch.tensor(ppgen.datasets.load("earthquakes")["count"].to_numpy(), dtype=torch.float64)
x = waiting[:, None]  # one sequence of T steps, D=1
restarts = 2 if quick else 10


def run_lengths(path):
    """Number of runs and mean run length of a state path."""
    changes = int((path[1:] != path[:-1]).sum())
    return changes + 1, len(path) / (changes + 1)


def report(name, model, data, n_states):
    total = float(model.log_prob(data).sum())
    params = model.point_params()
    print(f"\n== {name}, {n_states} states: log-likelihood {total:.2f} nats")
    print("transition matrix:\n", params["transition"])
    path = model.viterbi(data)[0]
    runs, mean_run = run_lengths(path)
    occupancy = torch.bincount(path, minlength=n_states).tolist()
    print(f"Viterbi path: steps per state {occupancy}, {runs} runs, mean run length {mean_run:.2f}")
    print("first 20 states:", path[:20].tolist())
    probs = model.posterior_states(data)[0]
    print("smoothed p(state) for the first 5 steps:\n", probs[:5])
    return total


for k in (2, 3):
    hmm = GaussianHMM(k, 1)
    ppgen.fit(hmm, x, MAP(max_iter=200 if quick else 1000, n_init=restarts), seed=0)
    report("Old Faithful waiting times (GaussianHMM)", hmm, x, k)
    print("state means (min):", hmm.point_params()["locs"][:, 0])
    print("state sds (min):", hmm.point_params()["precision"][:, 0].rsqrt())

for k in (2, 3):
    phmm = PoissonHMM(k)
    ppgen.fit(phmm, counts, MAP(max_iter=200 if quick else 1000, n_init=restarts), seed=0)
    report("Earthquake counts per year (PoissonHMM)", phmm, counts, k)
    print("state rates (per year):", phmm.point_params()["rates"])

# NUTS with the hidden states summed out (Dirichlet priors on the transition rows).
draws = 20 if quick else 500
phmm = PoissonHMM(2)
nuts = ppgen.fit(phmm, counts, NUTS(num_samples=draws, warmup=draws, chains=2),
                 seed=0, progress=not quick)
print("\nNUTS, earthquake counts, 2 states:")
print(nuts.summary(var_names=["transition", "rates"]).to_string())
print("divergences:", int(nuts.sample_stats["diverging"].sum()))
