"""Bayesian networks: exact queries on "asia" (and "alarm"), then learning the CPTs from data.

Run: python examples/bayesian_network.py   (PPGEN_QUICK=1 for a fast smoke run)

Asia (Lauritzen & Spiegelhalter, 1988) is a toy chest clinic: a visit to Asia
raises the risk of tuberculosis, smoking that of lung cancer and bronchitis;
"either" is tuberculosis OR lung cancer (a deterministic node); an x-ray shows
"either", and dyspnoea (shortness of breath) follows bronchitis or "either".
Every answer below is exact: variable elimination, no sampling error.
"""

import os
from pathlib import Path

import pandas as pd
import torch

import ppgen
from ppgen.inference import MAP, Exact
from ppgen.models import BayesianNetwork

quick = os.environ.get("PPGEN_QUICK") == "1"
pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 12)
pd.set_option("display.precision", 4)
gen = torch.Generator().manual_seed(0)

# ---------------------------------------------------------------- 1. the network
bn = BayesianNetwork.asia()  # or BayesianNetwork.from_bif("asia.bif") for a BIF file
print(bn.variables)
print("parents:", {v: p for v, p in bn.parents.items() if p})
print("\nCPT of dysp (one row per parent configuration):\n", bn.cpt("dysp"))

# ---------------------------------------------------------------- 2. exact queries
# Evidence is a dict of state names; the answer is one pandas Series per variable.
evidence = {"smoke": "yes", "dysp": "yes"}
posterior = bn.query(["lung", "tub", "bronc"], evidence=evidence)
print(f"\nP(. = yes | {evidence}):")
for name, series in posterior.items():
    print(f"  {name:6s} {series['yes']:.4f}")
# An x-ray that shows something explains the dyspnoea away from bronchitis ...
more = {**evidence, "xray": "yes"}
print(f"P(. = yes | {more}):")
for name, series in bn.query(["lung", "tub", "bronc"], evidence=more).items():
    print(f"  {name:6s} {series['yes']:.4f}")
# ... and the probability of the evidence itself (missing variables summed out):
print(f"log P({more}) = {float(bn.log_prob(more)[0]):.4f} nats")

# The joint posterior of several variables: a Series over a MultiIndex of states.
joint = bn.query(["lung", "tub"], evidence={"xray": "yes"}, joint=True)
print("\nP(lung, tub | xray=yes):\n", joint.unstack("tub"))

# MAP: the most probable joint assignment of everything not observed, and the
# marginal MAP of a few variables (the others summed out first, pgmpy's convention).
print("\nMAP given dysp=yes, xray=no:", bn.map_query({"dysp": "yes", "xray": "no"}))
print("marginal MAP of (lung, bronc):", bn.map_query({"dysp": "yes", "xray": "no"}, variables=["lung", "bronc"]))

# ---------------------------------------------------------------- 3. many evidence rows at once
# A DataFrame of state names with None for what is unknown: every row is answered in
# one vectorised elimination (no Python loop over rows).
patients = pd.DataFrame(
    {"smoke": ["yes", "no", None, "yes", None],
     "xray": ["yes", "yes", "no", None, None],
     "dysp": ["yes", None, "yes", "no", "yes"],
     "asia": [None, "yes", None, None, "no"]},
    index=pd.Index(["ann", "bob", "cyd", "dee", "eve"], name="patient"))
print("\nevidence rows:\n", patients)
per_row = bn.query(["lung", "tub", "bronc"], evidence=patients)
print("P(. = yes) per patient:\n", pd.DataFrame({v: frame["yes"] for v, frame in per_row.items()}))
print("most probable completion of each row:\n", bn.map_query(patients))
print("log P(row):", bn.log_prob(patients).numpy().round(4))

# ---------------------------------------------------------------- 4. posterior sampling
# Exact draws of all the hidden variables given the evidence (forward filtering,
# backward sampling); their frequencies approach the exact marginals.
n_draws = 2_000 if quick else 20_000
draws = bn.to_frame(bn.sample(n_draws, evidence=more, generator=gen))
print(f"\n{n_draws} posterior draws given {more}; first three:\n", draws.head(3))
check = pd.DataFrame({
    "exact": {v: s["yes"] for v, s in bn.query(["lung", "tub", "bronc", "asia"], evidence=more).items()},
    "sampled": {v: float((draws[v] == "yes").mean()) for v in ["lung", "tub", "bronc", "asia"]},
})
print("P(. = yes), exact vs frequency in the draws:\n", check)

# ---------------------------------------------------------------- 5. a larger network: alarm
# The 37-variable ALARM monitoring network, if the shared BIF files are there.
alarm_path = Path(__file__).resolve().parents[2] / "shared" / "data" / "bif" / "alarm.bif.gz"
if alarm_path.exists():
    alarm = BayesianNetwork.from_bif(alarm_path)
    print(f"\nalarm: {len(alarm.variables)} variables, {sum(map(len, alarm.parents.values()))} edges")
    lv = alarm.query(["LVFAILURE"], evidence={"HR": "HIGH", "BP": "LOW"})["LVFAILURE"]
    print("P(LVFAILURE | HR=HIGH, BP=LOW):", lv.round(4).to_dict())
    # 1,000 (quick: 200) simulated patients, 30% of the readings missing, the cause always hidden
    rows = alarm.sample(200 if quick else 1_000, generator=gen)
    rows = torch.where(torch.rand(rows.shape, generator=gen) < 0.3, torch.full_like(rows, -1), rows)
    rows[:, alarm.variables.index("LVFAILURE")] = -1
    frame = alarm.to_frame(rows)
    p_fail = alarm.query("LVFAILURE", evidence=frame)["LVFAILURE"]["TRUE"]
    print(f"P(LVFAILURE=TRUE) over {len(frame)} patients: mean {p_fail.mean():.4f}, "
          f"max {p_fail.max():.4f}; above 0.5 for {int((p_fail > 0.5).sum())} of them")
else:
    print(f"\n(no {alarm_path}: skipping the alarm network)")

# ---------------------------------------------------------------- 6. learning the CPTs
# Forward-sample a data set from the true network, then learn the tables back for the
# known DAG. Data are DataFrames of state names (or integer codes, -1 for missing).
truth = BayesianNetwork.asia()
n_rows = 500 if quick else 2_000
codes = truth.sample(n_rows, generator=gen)
complete = truth.to_frame(codes)
print(f"\n{n_rows} rows drawn from asia:\n", complete.head(3))

# Complete data: the posterior of each CPT row is Dirichlet(alpha + counts), so Exact
# gives it in closed form (and the log marginal likelihood of the data).
learned = BayesianNetwork(truth.states, truth.parents, prior_concentration=1.0)
exact = ppgen.fit(learned, complete, Exact(num_samples=200 if quick else 1000), seed=0, progress=False)
print(f"log p(data) = {exact.log_evidence:.2f} nats (Dirichlet-multinomial)")

# 20% of the values missing: the posterior has no closed form; MAP by EM sums the
# missing values out exactly in each E-step. (With the default prior_concentration=1
# the MAP is the maximum-likelihood estimate: a state never seen gets probability 0;
# a concentration above 1 smooths it.)
hidden = torch.rand(codes.shape, generator=gen) < 0.2
incomplete = truth.to_frame(torch.where(hidden, torch.full_like(codes, -1), codes))
em_net = BayesianNetwork(truth.states, truth.parents)
em = ppgen.fit(em_net, incomplete, MAP(), seed=0, progress=False)
print(f"EM on {int(hidden.sum())} missing values: {len(em.losses)} iterations, "
      f"negative log posterior {em.losses[0]:.2f} -> {em.losses[-1]:.2f} nats")

# Compare P(first state | parents) entry by entry: truth, exact posterior mean +- sd,
# and the EM estimate from the incomplete data; "rows" counts the complete rows with
# that parent configuration (the Dirichlet's concentration less the prior's).
table = []
for v in truth.variables:
    post = exact.marginals[f"cpt_{v}"]
    mean, sd = post.mean[..., 0].reshape(-1), post.variance[..., 0].sqrt().reshape(-1)
    counts = (post.concentration.sum(-1) - post.concentration.shape[-1] * 1.0).reshape(-1)
    true_cpt, em_cpt = truth.cpt(v), em_net.cpt(v)
    for i, config in enumerate(true_cpt.index):
        label = "" if not truth.parents[v] else ", ".join(
            f"{p}={s}" for p, s in zip(truth.parents[v], config if isinstance(config, tuple) else (config,)))
        table.append({"P(v=yes | parents)": f"{v} | {label}" if label else v,
                      "rows": int(counts[i]), "truth": true_cpt.iloc[i, 0], "exact mean": float(mean[i]),
                      "exact sd": float(sd[i]), "EM, 20% missing": em_cpt.iloc[i, 0]})
table = pd.DataFrame(table).set_index("P(v=yes | parents)")
print("\nlearned CPT entries:\n", table.round(4))
well = table["rows"] >= 50
print(f"over the {int(well.sum())} entries with at least 50 rows: max |exact mean - truth| = "
      f"{(table['exact mean'] - table['truth'])[well].abs().max():.4f}, max |EM - truth| = "
      f"{(table['EM, 20% missing'] - table['truth'])[well].abs().max():.4f}; entries seen in few "
      "rows (tub | asia=yes) stay close to the prior")

# The CPT posteriors go to ArviZ like any fit: one variable per CPT, with dims per axis,
# and the pointwise log-likelihood of every row. (The default posterior_predictive=True
# also simulates one replicate data set per draw: slower, needed for predictive checks.)
idata = exact.to_arviz(posterior_predictive=False)
print("\nArviZ posterior:", dict(idata.posterior["cpt_tub"].sizes))
print(exact.summary(var_names=["cpt_tub", "cpt_lung"], kind="stats"))
print("EM point estimate to ArviZ:", sorted(em.to_arviz(posterior_predictive=False).posterior.data_vars)[:3], "...")
