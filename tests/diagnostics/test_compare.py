"""compare across families and methods: PSIS-LOO with draws, K-fold or held-out log density for
point estimates, each row naming its estimator; never an ArviZ traceback."""

import math

import numpy as np
import pytest
import torch

import ppgen
from ppgen.diagnostics import compare
from ppgen.diagnostics.elpd import k_fold
from ppgen.errors import ModelError, PpgenError
from ppgen.inference import MAP, NUTS, SVI
from ppgen.models import GaussianHMM, GaussianMixture, RealNVP


def sequences(n=60, length=4, seed=0):
    """Sequences from a sticky two-state Gaussian HMM, ``(n, length, 2)``."""
    g = torch.Generator().manual_seed(seed)
    states = torch.zeros(n, length, dtype=torch.long)
    states[:, 0] = torch.randint(2, (n,), generator=g)
    for t in range(1, length):
        stay = torch.rand(n, generator=g) < 0.9
        states[:, t] = torch.where(stay, states[:, t - 1], 1 - states[:, t - 1])
    return torch.tensor([[-1.5, 0.0], [1.5, 1.0]])[states] + 0.5 * torch.randn(n, length, 2, generator=g)


@pytest.fixture(scope="module")
def point_fits():
    data = sequences()
    flat = data.reshape(len(data), -1)
    return data, {"hmm": ppgen.fit(GaussianHMM(2, 2), data, MAP(), seed=0, progress=False),
                  "gmm": ppgen.fit(GaussianMixture(2, 8), flat, MAP(), seed=0, progress=False),
                  "flow": ppgen.fit(RealNVP(8), flat, MAP(num_steps=50), seed=0, progress=False)}


def test_point_estimates_are_cross_validated(point_fits):
    _, fits = point_fits
    table = compare(fits, folds=3)
    assert list(table.index)[0] == "hmm"  # the data are an HMM's
    assert set(table["estimator"]) == {"k-fold (K=3)"}
    assert (table["se"] > 0).all() and table["elpd"].is_monotonic_decreasing
    assert table.loc["hmm", "elpd_diff"] == 0 and table.loc["gmm", "dse"] > 0


def test_k_fold_scores_every_row_by_a_refit_that_did_not_see_it(point_fits):
    data, fits = point_fits
    estimate = k_fold(fits["hmm"], "hmm", folds=3, seed=1)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(1))
    test = order[0::3]
    train = torch.tensor(sorted(set(range(len(data))) - set(test.tolist())))
    refit = fits["hmm"].refit(data[train])
    np.testing.assert_allclose(estimate.pointwise[test.numpy()], refit.log_prob(data[test]).double().numpy(),
                               rtol=1e-6)
    assert estimate.elpd == pytest.approx(estimate.pointwise.sum())


def test_held_out_data_score_every_fit(point_fits):
    _, fits = point_fits
    new = sequences(n=30, seed=5)
    with pytest.raises(PpgenError, match="dimensions"):  # the HMM takes sequences, the others rows
        compare(fits, heldout=new)
    two = {"hmm": fits["hmm"], "hmm again": fits["hmm"]}
    table = compare(two, heldout=new)
    assert set(table["estimator"]) == {"held-out"}
    assert table["elpd"].iloc[0] == pytest.approx(float(fits["hmm"].log_prob(new).sum()), rel=1e-6)


def test_draws_and_points_mixed(float64):
    torch.manual_seed(0)
    x = torch.randn(40, 2, dtype=torch.float64) * torch.tensor([1.0, 2.0], dtype=torch.float64)
    nuts = ppgen.fit(GaussianMixture(1, 2), x, NUTS(num_samples=100, warmup=100), seed=0, progress=False)
    point = ppgen.fit(GaussianMixture(1, 2), x, MAP(), seed=0, progress=False)
    table = compare({"nuts": nuts, "map": point}, folds=4)
    assert table.loc["nuts", "estimator"] == "psis-loo" and table.loc["map", "estimator"] == "k-fold (K=4)"
    assert math.isfinite(table.loc["nuts", "p"]) and all(np.isfinite(table["elpd"]))
    # two fits with draws: ArviZ's own table, its estimator named
    svi = ppgen.fit(GaussianMixture(1, 2), x, SVI(num_steps=200), seed=0, progress=False)
    both = compare({"nuts": nuts, "svi": svi})
    assert both.loc["nuts", "estimator"] == "psis-loo" and "weight" in both.columns
    assert both.loc["svi", "estimator"] == "psis-loo (q-corrected)"  # drawn from the guide


def test_a_plain_program_point_fit_needs_held_out_data(float64):
    import pyro
    import pyro.distributions as dist

    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    y = torch.linspace(-1, 2, 20, dtype=torch.float64)
    fits = {k: ppgen.fit(model, {"y": y}, MAP(num_steps=100), seed=k, progress=False) for k in (0, 1)}
    fits = {"a": fits[0], "b": fits[1]}
    with pytest.raises(ModelError, match="heldout"):
        compare(fits)
    table = compare(fits, heldout={"y": torch.tensor([0.3, 0.9], dtype=torch.float64)})
    assert len(table) == 2 and set(table["estimator"]) == {"held-out"}
