"""SVI options: minibatches, early stopping, guides, clipping; PPCA subspace by MAP."""

import math

import pytest
import torch

import ppgen
from ppgen.inference import MAP, SVI
from ppgen.models import PPCA, ConjugateNormal


def _normal_data(n=400, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return 2.0 + 1.5 * torch.randn(n, generator=gen, dtype=torch.float64)


def test_minibatch_svi_targets_the_full_data_posterior(float64):
    model, data = ConjugateNormal(), _normal_data()
    fit = ppgen.fit(model, data, SVI(num_steps=3000, lr=0.02, lr_decay=0.02, batch_size=40,
                                     num_particles=4, num_posterior_samples=4000),
                    seed=0, progress=False)
    m_n, kappa_n, a_n, b_n = model.posterior_parameters(data)
    sd = math.sqrt(float(b_n / ((a_n - 1) * kappa_n)))
    draws = fit.flat_posterior()["mean"]
    # Minibatch noise leaves the guide within a few posterior sds; without the N/B
    # plate scaling the posterior would be sqrt(10) times wider.
    assert abs(float(draws.mean()) - float(m_n)) < 3 * sd
    assert float(draws.std()) == pytest.approx(sd, rel=0.5)


def test_early_stopping_keeps_the_best_held_out_parameters(float64):
    model, data = ConjugateNormal(), _normal_data()
    fit = ppgen.fit(model, data, SVI(num_steps=20000, lr=0.05, validation=0.2, eval_every=20,
                                     patience=3), seed=0, progress=False)
    assert len(fit.losses) < 20000
    steps, losses = zip(*fit.val_losses)
    assert steps[-1] == len(fit.losses)
    assert min(losses) < losses[0]


def test_plain_program_validation_dict(float64):
    import pyro
    import pyro.distributions as dist

    def model(x):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(x)):
            pyro.sample("obs", dist.Normal(loc, 1.0), obs=x)

    data = _normal_data(200)
    fit = ppgen.fit(model, {"x": data[:150]}, SVI(num_steps=3000, lr=0.05, eval_every=25,
                                                   patience=4, validation={"x": data[150:]}),
                    seed=0, progress=False)
    assert fit.val_losses
    with pytest.raises(ppgen.MethodError, match="validation"):
        ppgen.fit(model, {"x": data}, SVI(validation=0.2))


@pytest.mark.parametrize("guide", ["normal", "mvn", "delta", "flow"])
def test_every_autoguide_runs(guide):
    model, data = ConjugateNormal.example()
    fit = ppgen.fit(model, data, SVI(num_steps=30, guide=guide, clip_norm=10.0,
                                     num_posterior_samples=10), seed=0, progress=False)
    assert fit.posterior["mean"].shape == (1, 10)
    assert all(math.isfinite(v) for v in fit.losses)


def test_same_seed_same_result():
    model, data = ConjugateNormal.example()
    a = ppgen.fit(ConjugateNormal(), data, SVI(num_steps=50), seed=7, progress=False)
    b = ppgen.fit(ConjugateNormal(), data, SVI(num_steps=50), seed=7, progress=False)
    assert a.losses == b.losses
    assert torch.equal(a.posterior["mean"], b.posterior["mean"])


def _principal_angles(a, b):
    qa, _ = torch.linalg.qr(a)
    qb, _ = torch.linalg.qr(b)
    return torch.linalg.svdvals(qa.T @ qb).clamp(max=1).acos()


def test_ppca_map_recovers_the_principal_subspace(float64):
    gen = torch.Generator().manual_seed(0)
    w_true = torch.randn(6, 2, generator=gen, dtype=torch.float64) * 2
    z = torch.randn(2000, 2, generator=gen, dtype=torch.float64)
    x = 1.0 + z @ w_true.T + 0.3 * torch.randn(2000, 6, generator=gen, dtype=torch.float64)
    model = PPCA(latent_dim=2)
    model.initialize(x + 5 * torch.randn(x.shape, generator=gen))  # start far from the answer
    ppgen.fit(model, x, MAP(num_steps=3000, lr=0.02), seed=0, progress=False)
    angles = _principal_angles(w_true, model.point_params()["weight"])
    assert float(angles.max()) < 0.05
    assert float(model.point_params()["noise"]) == pytest.approx(0.3, rel=0.05)
