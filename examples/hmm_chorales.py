"""A BernoulliHMM on the JSB chorales piano rolls (88 binary notes per step).

Fits the HMM by MAP (Baum-Welch EM) on the training chorales and reports the
negative log-likelihood per time step (nats) on the train, validation and test
sets, plus the Viterbi path of one test chorale. The data are read from
``../shared/data/polyphonic/JSB_Chorales.mat`` beside the project (or ``$PPGEN_JSB``) when it exists; otherwise the
script says so and uses ``BernoulliHMM.example()``'s synthetic sequences.

Run: python examples/hmm_chorales.py   (PPGEN_QUICK=1 for a fast smoke run:
a few chorales, 4 states, few iterations)
"""

import os
import time
from pathlib import Path

import numpy as np
import torch

import ppgen
from ppgen.inference import MAP
from ppgen.models import BernoulliHMM

quick = os.environ.get("PPGEN_QUICK") == "1"
torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)
JSB = Path(os.environ.get("PPGEN_JSB", Path(__file__).resolve().parents[2] / "shared/data/polyphonic/JSB_Chorales.mat"))


def load_jsb(path):
    import scipy.io

    mat = scipy.io.loadmat(path)
    return {name: [torch.as_tensor(np.asarray(s, dtype=np.float64)) for s in mat[key][0]]
            for name, key in (("train", "traindata"), ("valid", "validdata"), ("test", "testdata"))}


if JSB.exists():
    splits = load_jsb(JSB)
    dim = 88
    print(f"JSB chorales from {JSB}: " + ", ".join(f"{k} {len(v)} chorales" for k, v in splits.items()))
else:
    print(f"{JSB} not found: using BernoulliHMM.example() synthetic data instead")
    _, example = BernoulliHMM.example()
    seqs = [s[:n] for s, n in zip(example.padded, example.lengths.tolist())]
    half = len(seqs) // 2
    splits = {"train": seqs[:half], "valid": seqs[half:], "test": seqs[half:]}
    dim = seqs[0].shape[-1]

if quick:
    splits = {k: v[:10] for k, v in splits.items()}
    n_states, max_iter, restarts = 4, 10, 1
else:
    n_states, max_iter, restarts = 16, 60, 1  # about 1.6 s per EM iteration on one CPU thread

hmm = BernoulliHMM(n_states, dim)
start = time.perf_counter()
fit = ppgen.fit(hmm, splits["train"], MAP(max_iter=max_iter, tol=1e-6, n_init=restarts), seed=0)
seconds = time.perf_counter() - start
print(f"BernoulliHMM(K={n_states}, {dim}): {len(fit.losses)} EM iterations, {restarts} restart(s), "
      f"{seconds:.1f} s")

for name, seqs in splits.items():
    steps = sum(len(s) for s in seqs)
    nll = -float(hmm.log_prob(seqs).sum()) / steps
    print(f"{name:5s}: {len(seqs):3d} sequences, {steps:5d} steps, NLL {nll:.3f} nats per step")

path = hmm.viterbi(splits["test"][:1])[0]
print("Viterbi states of the first test sequence (first 30 steps):", path[:30].tolist())
probs = hmm.point_params()["probs"]
print("notes most often on in each state (index of the 88 keys):")
for k in range(n_states):
    print(f"  state {k}: {torch.topk(probs[k], 4).indices.tolist()}")
