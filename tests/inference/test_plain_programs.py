"""Plain Pyro programs through ``fit``: eight schools against posteriordb."""

import json
import math
import zipfile

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppgen
from ppgen.inference import NUTS, SVI, Exact

EIGHT = {"J": 8, "y": [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0],
         "sigma": [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]}


def eight_schools(J, sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("J", J):
        theta_trans = pyro.sample("theta_trans", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + tau * theta_trans)
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def _reference(shared_data):
    path = (shared_data / "posteriordb" / "reference_posteriors" / "draws" / "draws"
            / "eight_schools-eight_schools_noncentered.json.zip")
    with zipfile.ZipFile(path) as archive:
        chains = json.loads(archive.read(archive.namelist()[0]))
    out = {"mu": [], "tau": []}
    out.update({f"theta[{j}]": [] for j in range(8)})
    for chain in chains:
        out["mu"] += chain["mu"]
        out["tau"] += chain["tau"]
        for j in range(8):
            out[f"theta[{j}]"] += chain[f"theta[{j + 1}]"]
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}


def test_eight_schools_nuts_matches_posteriordb(float64, shared_data):
    import arviz as az
    reference = _reference(shared_data)
    fit = ppgen.fit(eight_schools, EIGHT, NUTS(num_samples=1000, warmup=1000, chains=2),
                    seed=0, progress=False)
    idata = fit.to_arviz(posterior_predictive=False, log_likelihood=False)
    mcse_mean = az.mcse(idata, var_names=["mu", "tau", "theta"], method="mean")
    mcse_sd = az.mcse(idata, var_names=["mu", "tau", "theta"], method="sd")
    draws = fit.flat_posterior()
    for name in ["mu", "tau"] + [f"theta[{j}]" for j in range(8)]:
        site, index = (name, None) if "[" not in name else ("theta", int(name[6]))
        ours = draws[site] if index is None else draws[site][:, index]
        sel = {} if index is None else {"J": index}
        ref = reference[name]
        # Reference: 10,000 near-independent draws, its own MC error is small but counted.
        ref_mcse = ref.std() / math.sqrt(ref.numel())
        se_mean = math.hypot(float(mcse_mean[site].sel(sel)), float(ref_mcse))
        se_sd = math.hypot(float(mcse_sd[site].sel(sel)), float(ref.std()) / math.sqrt(2 * ref.numel()))
        assert abs(float(ours.mean() - ref.mean())) < 4 * se_mean, name
        assert abs(float(ours.std() - ref.std())) < 4 * se_sd, name


def test_plain_program_nuts_and_svi_compare_in_arviz(float64):
    nuts = ppgen.fit(eight_schools, EIGHT, NUTS(num_samples=300, warmup=300, chains=2),
                     seed=1, progress=False)
    svi = ppgen.fit(eight_schools, EIGHT, SVI(num_steps=1500, lr=0.02, num_posterior_samples=600),
                    seed=1, progress=False)
    for fit in (nuts, svi):
        idata = fit.to_arviz()
        assert idata.log_likelihood["obs"].shape[-1] == 8
        assert "theta" in idata.posterior
    table = ppgen.diagnostics.compare({"nuts": nuts, "svi": svi})
    assert set(table.index) == {"nuts", "svi"}
    assert list(table["rank"]) == [0, 1]


def test_hand_written_guide(float64):
    def model(x):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(x)):
            pyro.sample("obs", dist.Normal(loc, 1.0), obs=x)

    def guide(x):
        m = pyro.param("m", torch.tensor(0.0))
        s = pyro.param("s", torch.tensor(1.0), constraint=dist.constraints.positive)
        pyro.sample("loc", dist.Normal(m, s))

    x = torch.randn(50, generator=torch.Generator().manual_seed(0)) + 3
    fit = ppgen.fit(model, {"x": x}, SVI(num_steps=3000, lr=0.02, lr_decay=0.01, num_particles=8,
                                         num_posterior_samples=4000), guide=guide, seed=0,
                    progress=False)
    post_var = 1 / (1 / 100 + 50)
    post_mean = post_var * float(x.sum())
    draws = fit.flat_posterior()["loc"]
    tolerance = 0.02 * math.sqrt(post_var) + 4 * math.sqrt(post_var / 4000)  # 2% of sd + 4 MC se
    assert float(draws.mean()) == pytest.approx(post_mean, abs=tolerance)
    assert float(draws.std()) == pytest.approx(math.sqrt(post_var), rel=0.1)


def hmm_program(x):
    """A 2-state HMM with fixed parameters written as a plain program."""
    trans = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    locs = torch.tensor([-1.0, 1.0])
    z = 0
    for t in pyro.markov(range(len(x))):
        probs = trans[z] if t else torch.tensor([0.5, 0.5])
        z = pyro.sample(f"z_{t}", dist.Categorical(probs))
        pyro.sample(f"x_{t}", dist.Normal(locs[z], 1.0), obs=x[t])


def test_exact_on_plain_markov_program_equals_brute_force(float64):
    x = torch.tensor([-1.2, 0.3, 1.5, 0.9, -0.4])
    fit = ppgen.fit(hmm_program, {"x": x}, Exact(num_samples=500), seed=0)
    trans = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    locs = torch.tensor([-1.0, 1.0])
    paths = torch.cartesian_prod(*[torch.arange(2)] * len(x))
    log_joint = torch.zeros(len(paths))
    for i, path in enumerate(paths):
        lp = math.log(0.5)
        for t in range(len(x)):
            if t:
                lp += math.log(trans[path[t - 1], path[t]])
            lp += float(dist.Normal(locs[path[t]], 1.0).log_prob(x[t]))
        log_joint[i] = lp
    assert fit.log_evidence == pytest.approx(float(log_joint.logsumexp(0)), abs=1e-10)
    post = (log_joint - log_joint.logsumexp(0)).exp()
    for t in range(len(x)):
        p1 = float(post[paths[:, t] == 1].sum())
        assert float(fit.marginals[f"z_{t}"][1]) == pytest.approx(p1, abs=1e-10)
    best = paths[log_joint.argmax()]
    assert [int(fit.map_assignment[f"z_{t}"]) for t in range(len(x))] == best.tolist()


def test_exact_refuses_continuous_latents():
    with pytest.raises(ppgen.MethodError, match="mu"):
        ppgen.fit(eight_schools, EIGHT, Exact())


def _mixture_program(x):
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    locs = pyro.sample("locs", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z], 1.0), obs=x)


@pytest.mark.parametrize("program, data", [
    (eight_schools, EIGHT),
    (_mixture_program, {"x": torch.tensor([-2.1, -1.9, 0.3, 2.2, 1.8, 2.5])}),
])
def test_vectorised_log_likelihood_equals_draw_by_draw(float64, program, data):
    from ppgen.inference.likelihood import pointwise_log_likelihood
    fit = ppgen.fit(program, data, NUTS(num_samples=30, warmup=30, chains=1), seed=0, progress=False)
    draws = fit.flat_posterior()
    fast = pointwise_log_likelihood(fit.program, draws, vectorize=True, chunk=7)
    slow = pointwise_log_likelihood(fit.program, draws, vectorize=False)
    assert fast.keys() == slow.keys()
    for name in fast:
        assert fast[name].shape == slow[name].shape
        assert torch.allclose(fast[name], slow[name], atol=1e-10)


def test_markov_program_log_likelihood_vectorised(float64):
    from ppgen.inference.likelihood import pointwise_log_likelihood
    from ppgen.inference.program import Program

    def chain(x, scale=None):
        loc = pyro.sample("loc", dist.Normal(0.0, 3.0))
        hmm_program(x - loc)

    x = torch.tensor([-1.2, 0.3, 1.5, 0.9])
    program = Program.build(chain, {"x": x})
    draws = {"loc": torch.tensor([0.0, 0.5, -0.3])}
    fast = pointwise_log_likelihood(program, draws, vectorize=True)
    slow = pointwise_log_likelihood(program, draws, vectorize=False)
    for name in slow:
        assert torch.allclose(fast[name], slow[name], atol=1e-10)


def test_unplated_program_that_broadcasts_by_accident_is_scored_correctly(float64):
    from ppgen.inference.likelihood import pointwise_log_likelihood
    from ppgen.inference.program import Program

    def unplated(x):
        loc = pyro.sample("loc", dist.Normal(0.0, 3.0))
        pyro.sample("obs", dist.Normal(x - loc, 1.0).to_event(1), obs=torch.zeros(3))

    program = Program.build(unplated, {"x": torch.tensor([1.0, 2.0, 3.0])})
    draws = {"loc": torch.tensor([0.0, 0.5, -0.3])}  # as many draws as data: broadcasts
    fast = pointwise_log_likelihood(program, draws, vectorize=True)
    slow = pointwise_log_likelihood(program, draws, vectorize=False)
    assert torch.allclose(fast["obs"], slow["obs"])
