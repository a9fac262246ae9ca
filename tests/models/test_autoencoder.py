"""Autoencoder and DenoisingAutoencoder: MAP with a delta guide is the reconstruction
likelihood, held-out digits against PCA, denoising, no density, save/load."""

import math

import numpy as np
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO

import ppgen
from ppgen.inference import MAP, SVI
from ppgen.models import Autoencoder, DenoisingAutoencoder


@pytest.mark.parametrize("subsample", [None, 5])
def test_map_objective_is_the_reconstruction_log_likelihood(subsample):
    # The delta guide's log q and the masked code site's log p are both zero, so the
    # ELBO is exactly sum_i log p(x_i | f(x_i)) (times N/B on a minibatch); float64.
    ae = Autoencoder(6, latent_dim=2, hidden=(5,), likelihood="gaussian", noise_scale=0.7).double()
    x = torch.randn(12, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    store = {}

    def guide(**kwargs):
        with poutine.trace() as capture:
            ae.guide(**kwargs)
        store["idx"] = capture.trace.nodes["data"]["value"]

    loss = Trace_ELBO().differentiable_loss(ae.model, guide, data=x, subsample_size=subsample).item()
    idx = store["idx"]
    recon = ae.decoder(ae.encoder(x[idx]))
    by_hand = (-0.5 * ((x[idx] - recon) / 0.7).pow(2) - math.log(0.7) - 0.5 * math.log(2 * math.pi)).sum()
    assert abs(-loss - 12 / len(idx) * by_hand.item()) < 1e-9
    if subsample is None:
        assert abs(-loss - ae.reconstruction_log_prob(x).sum().item()) < 1e-9


def test_denoising_objective_encodes_a_corrupted_copy():
    dae = DenoisingAutoencoder(6, latent_dim=2, hidden=(5,), likelihood="gaussian", noise_scale=0.7,
                               corruption="mask", noise_level=0.4).double()
    x = torch.randn(12, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.manual_seed(3)
    loss = Trace_ELBO().differentiable_loss(dae.model, dae.guide, data=x).item()
    torch.manual_seed(3)
    kept = (torch.rand_like(x) >= 0.4).double()  # the guide's first random draw
    assert 0 < kept.mean() < 1
    recon = dae.decoder(dae.encoder(x * kept))
    by_hand = (-0.5 * ((x - recon) / 0.7).pow(2) - math.log(0.7) - 0.5 * math.log(2 * math.pi)).sum()
    assert abs(-loss - by_hand.item()) < 1e-9
    # Using the model never corrupts: the same input gives the same reconstruction.
    assert torch.equal(dae.reconstruct(x), dae.reconstruct(x))


@pytest.fixture(scope="module")
def digits():
    x = ppgen.datasets.load("digits")
    perm = np.random.default_rng(0).permutation(len(x))
    return x[perm[:1500]], x[perm[1500:]]


def _train(model, train):
    method = MAP(solver="gradient", num_steps=600, batch_size=100, lr=1e-2)
    return ppgen.fit(model, train, method, seed=0, progress=False)


@pytest.fixture(scope="module")
def trained(digits):
    train, _ = digits
    ae = Autoencoder(64, latent_dim=4, hidden=(128,), likelihood="continuous_bernoulli")
    fit = _train(ae, train)
    return ae, fit


@pytest.mark.peer
def test_autoencoder_beats_pca_on_held_out_digits(digits, trained):
    from sklearn.decomposition import PCA

    train, test = digits
    ae, fit = trained
    assert np.mean(fit.losses[-50:]) < np.mean(fit.losses[:50])
    mse = float(((ae.reconstruct(test).numpy() - test) ** 2).mean())
    pca = PCA(4).fit(train)
    pca_mse = float(((pca.inverse_transform(pca.transform(test)) - test) ** 2).mean())
    # Seen: 0.023 against 0.038: the nonlinear 4-d code beats the best linear one.
    assert mse < pca_mse


def test_running_code_moments_track_the_training_codes(digits, trained):
    train, _ = digits
    ae, _ = trained
    codes = ae.encode(train)
    # The running moments average the last ~1/momentum = 50 minibatches of a still-moving
    # encoder, so they match the final codes' moments only roughly: within 0.25 code sds
    # (seen: under 0.05).
    assert bool(((ae.code_mean - codes.mean(0)).abs() < 0.25 * codes.std(0)).all())
    ae.fit_code_distribution(train)
    torch.testing.assert_close(ae.code_mean, codes.mean(0))
    torch.manual_seed(0)
    drawn = ae.prior(20000).sample()
    # 20000 draws: the sample mean is within 4 standard errors of the codes' mean.
    assert bool(((drawn.mean(0) - codes.mean(0)).abs() < 4 * codes.std(0) / math.sqrt(20000)).all())
    cov = torch.cov(codes.T)
    torch.testing.assert_close(torch.cov(drawn.T), cov, rtol=0, atol=0.05 * float(cov.diagonal().max()))
    assert ae.sample(7).shape == (7, 64)


def test_denoising_autoencoder_cleans_noisy_digits_better(digits, trained):
    train, test = digits
    ae, _ = trained
    dae = DenoisingAutoencoder(64, latent_dim=4, hidden=(128,), likelihood="continuous_bernoulli",
                               corruption="gaussian", noise_level=0.3)
    _train(dae, train)
    noisy = np.clip(test + 0.3 * np.random.default_rng(1).standard_normal(test.shape), 0, 1).astype(np.float32)
    errors = {name: float(((model.reconstruct(noisy).numpy() - test) ** 2).mean())
              for name, model in (("ae", ae), ("dae", dae))}
    # Seen: 0.033 (denoising) against 0.046 (plain) on the same noisy held-out digits.
    assert errors["dae"] < errors["ae"]
    assert errors["dae"] < float(((noisy - test) ** 2).mean())


def test_there_is_no_density_to_report():
    ae, x = Autoencoder.example()
    fit = ppgen.fit(ae, x, MAP(solver="gradient", num_steps=5), seed=0, progress=False)
    for call in (lambda: ae.log_prob(x), lambda: ae.log_likelihood(x, {}), lambda: ae.score(x),
                 lambda: fit.log_prob(x[:3])):
        with pytest.raises(ppgen.ModelError, match="log_prob_kind='none'.*no density"):
            call()
    assert Autoencoder.log_prob_kind == DenoisingAutoencoder.log_prob_kind == "none"
    assert ae.reconstruction_log_prob(x).shape == (64,)


def test_bad_settings_and_input_are_named():
    ae, x = Autoencoder.example()
    with pytest.raises(ppgen.MethodError, match="Autoencoder does not support SVI"):
        ppgen.fit(ae, x, SVI(num_steps=2))
    with pytest.raises(ppgen.DataError, match=r"expected shape \(N, 16\)"):
        ae.encode(torch.zeros(2, 4))
    with pytest.raises(ppgen.DataError, match="bernoulli"):
        Autoencoder(16, likelihood="bernoulli").encode(torch.full((2, 16), 0.3))
    for bad in (dict(corruption="blur"), dict(corruption="mask", noise_level=1.0), dict(noise_level=0.0),
                dict(code_momentum=0.0), dict(latent_dim=-1)):
        with pytest.raises(ppgen.ModelError):
            DenoisingAutoencoder(16, **bad)


@pytest.mark.parametrize("cls", [Autoencoder, DenoisingAutoencoder])
def test_save_and_load_keep_weights_and_code_moments(cls, tmp_path):
    model, x = cls.example()
    fit = ppgen.fit(model, x, MAP(solver="gradient", num_steps=30, batch_size=16), seed=0, progress=False)
    fit.save(tmp_path / "ae.pt")
    loaded = ppgen.load(tmp_path / "ae.pt").model
    assert loaded.get_config() == model.get_config()
    assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))
    assert torch.equal(loaded.code_second_moment, model.code_second_moment)
    torch.manual_seed(1)
    before = model.sample(4)
    torch.manual_seed(1)
    assert torch.equal(loaded.sample(4), before)
