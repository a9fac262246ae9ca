"""PPCA and factor analysis: closed forms checked against brute force in float64."""

import pyro
import pytest
import torch
from torch.distributions import MultivariateNormal

from ppgen.errors import DataError, ModelError
from ppgen.models.factor import PPCA, FactorAnalysis

D, L = 4, 2
MODELS = [PPCA, FactorAnalysis]


def random_params(cls, draws=None, seed=0):
    """Random site values in float64, with a leading ``draws`` dimension if given."""
    gen = torch.Generator().manual_seed(seed)
    lead = () if draws is None else (draws,)
    noise_shape = lead if cls is PPCA else (*lead, D)
    return {
        "loc": torch.randn(*lead, D, generator=gen, dtype=torch.float64),
        "weight": torch.randn(*lead, D, L, generator=gen, dtype=torch.float64),
        "noise": 0.3 + torch.rand(noise_shape, generator=gen, dtype=torch.float64),
    }


def covariance(cls, params):
    """``W W^T + Psi`` for single-draw params."""
    weight, noise = params["weight"], params["noise"]
    variances = noise.expand(D) ** 2 if cls is PPCA else noise ** 2
    return weight @ weight.T + torch.diag(variances)


def data64(n=30, seed=1):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("cls", MODELS)
def test_log_likelihood_matches_full_covariance_normal(cls):
    model = cls(L, D).double()
    params, x = random_params(cls, draws=3), data64()
    got = model.log_likelihood(x, params)
    assert got.shape == (3, x.shape[0])
    for s in range(3):
        draw = {k: v[s] for k, v in params.items()}
        want = MultivariateNormal(draw["loc"], covariance(cls, draw)).log_prob(x)
        torch.testing.assert_close(got[s], want, rtol=0, atol=1e-10)
    model.set_params({k: v[1] for k, v in params.items()})
    torch.testing.assert_close(model.log_prob(x), got[1], rtol=0, atol=1e-10)


@pytest.mark.parametrize("cls", MODELS)
def test_pyro_program_observes_the_marginal(cls):
    model = cls(L, D).double()
    params, x = random_params(cls), data64()
    model.set_params(params)
    trace = pyro.poutine.trace(pyro.poutine.condition(model.model, data=params)).get_trace(x)
    trace.compute_log_prob()
    assert set(model.global_sites()) <= set(trace.nodes)
    obs = trace.nodes["obs"]
    assert obs["is_observed"] and obs["value"].shape == x.shape
    torch.testing.assert_close(obs["log_prob"].sum(), model.log_prob(x).sum(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("cls", MODELS)
def test_posterior_latents_match_gaussian_conditioning(cls):
    model = cls(L, D).double()
    params, x = random_params(cls), data64(n=7)
    model.set_params(params)
    # joint of (z, x): cov [[I, W^T], [W, C]]; z | x ~ N(W^T C^-1 (x - mu), I - W^T C^-1 W)
    weight, cov_x = params["weight"], covariance(cls, params)
    gain = torch.linalg.solve(cov_x, weight).T  # W^T C^-1
    want_mean = (x - params["loc"]) @ gain.T
    want_cov = torch.eye(L, dtype=torch.float64) - gain @ weight
    post = model.posterior_latents(x)
    assert post.batch_shape == (7,) and post.event_shape == (L,)
    torch.testing.assert_close(post.mean, want_mean, rtol=0, atol=1e-10)
    torch.testing.assert_close(post.covariance_matrix, want_cov.expand(7, L, L), rtol=0, atol=1e-10)
    torch.testing.assert_close(model.transform(x), want_mean, rtol=0, atol=1e-10)


def principal_angles(a, b):
    qa, qb = torch.linalg.qr(a)[0], torch.linalg.qr(b)[0]
    cosines = torch.linalg.svdvals(qa.T @ qb).clamp(max=1.0)
    return torch.arccos(cosines)


def test_initialize_recovers_principal_subspace_and_ml():
    dim, latent, n = 6, 2, 5000
    gen = torch.Generator().manual_seed(123)
    true_weight = 2.0 * torch.randn(dim, latent, generator=gen, dtype=torch.float64)
    true_loc = torch.randn(dim, generator=gen, dtype=torch.float64)
    z = torch.randn(n, latent, generator=gen, dtype=torch.float64)
    x = true_loc + z @ true_weight.T + 0.5 * torch.randn(n, dim, generator=gen, dtype=torch.float64)

    model = PPCA(latent, dim).double().initialize(x)
    fitted = model.point_params()
    assert principal_angles(true_weight, fitted["weight"]).max() < 0.1
    assert abs(float(fitted["noise"]) - 0.5) < 0.05

    best = model.log_prob(x).sum()
    perturb = torch.Generator().manual_seed(7)
    for _ in range(20):
        moved = {k: v + 0.02 * torch.randn(v.shape, generator=perturb, dtype=v.dtype)
                 for k, v in fitted.items()}
        moved["noise"] = moved["noise"].abs()
        stacked = {k: v.unsqueeze(0) for k, v in moved.items()}
        assert model.log_likelihood(x, stacked).sum() <= best + 1e-8

    fa = FactorAnalysis(latent, dim).double().initialize(x)
    assert principal_angles(true_weight, fa.point_params()["weight"]).max() < 0.1
    assert bool((fa.point_params()["noise"] >= 1e-3).all())
    assert torch.isfinite(fa.log_prob(x)).all()


@pytest.mark.parametrize("cls", MODELS)
def test_sample_shapes_dtypes_and_buffers(cls):
    model, data = cls.example(seed=0)
    assert data.shape == (200, 5) and data.dtype == torch.float32
    with pytest.raises(ModelError):
        model.sample(3)  # no point params yet
    model.initialize(data)
    out = model.sample(11)
    assert out.shape == (11, 5) and out.dtype == torch.float32
    assert model.transform(data).shape == (200, 2)
    model.double()
    assert all(b.dtype == torch.float64 for b in model.buffers())
    assert model.sample(3).dtype == torch.float64
    assert model.log_prob(data).dtype == torch.float64
    assert model.model(n=4).shape == (4, 5)
    single = {k: v.float() for k, v in model.point_params().items()}
    assert model.sample(2, params=single).dtype == torch.float64
    rebuilt = type(model)(**model.get_config())
    assert rebuilt.get_config() == model.get_config()
    assert model.global_sites() == ("loc", "weight", "noise")
    assert model.log_prob_kind == "exact" and "nuts" in model.methods


@pytest.mark.parametrize("cls", MODELS)
def test_dim_inferred_from_data(cls):
    _, data = cls.example()
    model = cls(2)
    assert model.dim is None
    model.initialize(data)
    assert model.dim == 5 and model.get_config()["dim"] == 5
    lazy = cls(2)
    trace = pyro.poutine.trace(lazy.model).get_trace(data, subsample_size=10)
    assert lazy.dim == 5 and trace.nodes["obs"]["value"].shape == (10, 5)
    with pytest.raises(ModelError, match="dim"):
        cls(2).model()


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("kwargs, culprit", [
    ({"latent_dim": 0}, "latent_dim"),
    ({"latent_dim": 1.5}, "latent_dim"),
    ({"latent_dim": True}, "latent_dim"),
    ({"latent_dim": 3, "dim": 3}, "latent_dim"),
    ({"latent_dim": 2, "dim": -1}, "dim"),
    ({"latent_dim": 2, "loc_scale": 0.0}, "loc_scale"),
    ({"latent_dim": 2, "weight_scale": -1.0}, "weight_scale"),
    ({"latent_dim": 2, "noise_scale": float("inf")}, "noise_scale"),
])
def test_bad_arguments_raise_model_error(cls, kwargs, culprit):
    with pytest.raises(ModelError, match=culprit):
        cls(**kwargs)


@pytest.mark.parametrize("cls", MODELS)
def test_bad_data_raises_data_error(cls):
    model, data = cls.example()
    model.initialize(data)
    with pytest.raises(DataError, match="features"):
        model.log_prob(data[:, :4])
    with pytest.raises(DataError):
        model.check_data(data.unsqueeze(0))
    bad = data.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        model.log_prob(bad)
    with pytest.raises(ModelError, match="latent_dim"):
        cls(3).check_data(data[:, :2])  # inferred dim too small for the latent space


def test_unidentified_factor_analysis_is_flagged(caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="ppgen"):
        FactorAnalysis(1, dim=2)
    assert "not identified" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ppgen"):
        FactorAnalysis(1, dim=5)
    assert "not identified" not in caplog.text
