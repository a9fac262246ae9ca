"""Restricted Boltzmann machines: exact log Z against brute force, normalisation, Gibbs
sampling against exact probabilities, AIS against the exact value, CD gradients
against autograd, bad input."""

import math

import numpy as np
import pytest
import torch

import ppgen
from ppgen.models import BernoulliRBM, GaussianBernoulliRBM
from ppgen.models.rbm.base import RBMBase
from ppgen.models.rbm.partition import LogPartition, ais_betas, binary_states


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one torch thread (extra threads only add synchronisation, which is
    ruinous on a loaded machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _random_rbm(cls, n_visible, n_hidden, scale=1.0, seed=0, **kwargs):
    torch.manual_seed(seed)
    rbm = cls(n_visible, n_hidden, **kwargs).double()
    with torch.no_grad():
        rbm.weights.normal_(0, scale)
        rbm.visible_bias.normal_(0, 1)
        rbm.hidden_bias.normal_(0, 1)
    return rbm


def _all_states(n):
    return binary_states(n, 0, 2 ** n)


# ---------------------------------------------------------------- exact log Z
@pytest.mark.parametrize("shape", [(5, 4), (3, 6), (4, 4), (1, 1)])
def test_exact_log_partition_equals_brute_force_over_all_v_and_h(shape):
    n_visible, n_hidden = shape  # (3, 6) enumerates the visible layer, the others the hidden one
    rbm = _random_rbm(BernoulliRBM, n_visible, n_hidden)
    v, h = _all_states(n_visible), _all_states(n_hidden)
    with torch.no_grad():
        energies = rbm.energy(v[:, None, :], h[None, :, :])  # (2^V, 2^H)
    brute = float(torch.logsumexp(-energies.reshape(-1), 0))
    result = rbm.log_partition()
    assert result.exact and result.method == "enumeration" and result.stderr == 0
    assert result.value == pytest.approx(brute, abs=1e-10)  # both exact in float64


def test_free_energy_is_minus_log_sum_over_hidden_states():
    rbm = _random_rbm(BernoulliRBM, 4, 5)
    v, h = _all_states(4), _all_states(5)
    with torch.no_grad():
        brute = -torch.logsumexp(-rbm.energy(v[:, None, :], h[None, :, :]), 1)
        assert torch.allclose(rbm.free_energy(v), brute, atol=1e-12)


def test_exact_log_prob_normalises_over_all_visible_states():
    rbm = _random_rbm(BernoulliRBM, 7, 3, scale=1.5)
    v = _all_states(7)
    assert rbm.log_prob_is_exact and rbm.log_prob_kind == "exact"
    assert float(rbm.log_prob(v).exp().sum()) == pytest.approx(1.0, abs=1e-12)


def test_gaussian_log_partition_and_density_against_quadrature():
    """Two visible units: the density on a fine grid integrates to 1, and the grid sum of
    exp(-F) gives log Z. The integrand is smooth with Gaussian tails, so the trapezoid rule
    on [-14, 14]^2 with step 0.035 is accurate far beyond the 1e-8 asked."""
    rbm = _random_rbm(GaussianBernoulliRBM, 2, 3, scale=0.7)
    with torch.no_grad():
        rbm.log_scale.copy_(torch.tensor([0.2, -0.3], dtype=torch.float64))
    grid = torch.linspace(-14, 14, 801, dtype=torch.float64)
    step = float(grid[1] - grid[0])
    points = torch.cartesian_prod(grid, grid)
    density = rbm.log_prob(points).exp()
    assert float(density.sum()) * step ** 2 == pytest.approx(1.0, abs=1e-8)
    with torch.no_grad():
        quadrature = float(torch.logsumexp(-rbm.free_energy(points), 0)) + 2 * math.log(step)
    assert rbm.log_partition().value == pytest.approx(quadrature, abs=1e-8)


def test_gaussian_free_energy_sums_the_hidden_layer():
    rbm = _random_rbm(GaussianBernoulliRBM, 3, 4)
    v = torch.randn(6, 3, dtype=torch.float64)
    h = _all_states(4)
    with torch.no_grad():
        brute = -torch.logsumexp(-rbm.energy(v[:, None, :], h[None, :, :]), 1)
        assert torch.allclose(rbm.free_energy(v), brute, atol=1e-12)


# ---------------------------------------------------------------- sampling
def test_gibbs_sample_frequencies_match_exact_probabilities():
    """20,000 independent chains of 100 sweeps on a 3x2 RBM: the counts of the 8 visible
    states against the exact probabilities by Pearson's chi-square (7 dof; 24.3 is its
    99.9% point, so an honest sampler fails this with probability 1e-3)."""
    rbm = _random_rbm(BernoulliRBM, 3, 2, scale=1.5)
    exact = rbm.log_prob(_all_states(3)).exp()
    generator = torch.Generator().manual_seed(1)
    n = 20_000
    draws = rbm.sample(n, burn_in=100, generator=generator)
    codes = (draws * torch.tensor([1.0, 2.0, 4.0], dtype=draws.dtype)).sum(-1).long()
    counts = torch.bincount(codes, minlength=8).double()
    chi2 = float(((counts - n * exact) ** 2 / (n * exact)).sum())
    assert chi2 < 24.3, (counts / n, exact)


def test_gaussian_gibbs_samples_match_exact_moments():
    """Exact mean of v under a 2x2 Gaussian-Bernoulli RBM (a mixture of 4 Gaussians with
    weights from the hidden enumeration) against 20,000 Gibbs draws, within 4 standard errors."""
    rbm = _random_rbm(GaussianBernoulliRBM, 2, 2, scale=1.0)
    h = _all_states(2)
    with torch.no_grad():
        projected = h @ rbm.weights.T
        log_weights = h @ rbm.hidden_bias + projected @ rbm.visible_bias + 0.5 * (projected ** 2).sum(-1)
        weights = (log_weights - log_weights.logsumexp(0)).exp()
        mean = (weights[:, None] * rbm.visible_mean(h)).sum(0)
    draws = rbm.sample(20_000, burn_in=100, generator=torch.Generator().manual_seed(2))
    stderr = draws.std(0) / math.sqrt(draws.shape[0])
    assert bool(((draws.mean(0) - mean).abs() < 4 * stderr).all()), (draws.mean(0), mean)


# ---------------------------------------------------------------- AIS
@pytest.fixture(scope="module")
def rbm20():
    """A 64-visible, 20-hidden RBM with weights large enough for a multimodal p(v)."""
    return _random_rbm(BernoulliRBM, 64, 20, scale=0.3, seed=3)


def test_ais_estimates_lie_within_their_standard_error_of_exact_log_z(rbm20):
    """Eight independent AIS estimates (100 runs x 2,000 temperatures each) of a 20-hidden
    RBM's log Z against the exact value by enumeration of 2^20 hidden states. Honest
    standard errors give z-scores that look N(0, 1): each |z| < 4 (a 1-in-15,000 event
    per estimate), and the root mean square of the eight z-scores inside [0.33, 1.81], the
    0.1% and 99.9% points of sqrt(chi-square_8 / 8), so standard errors that are much too
    small or too large both fail."""
    exact = rbm20.log_partition()
    assert exact.exact
    z = []
    for seed in range(8):
        estimate = rbm20.log_partition("ais", num_runs=100, num_betas=2000, seed=seed)
        assert not estimate.exact and estimate.method == "ais" and estimate.stderr > 0
        z.append((estimate.value - exact.value) / estimate.stderr)
    z = np.array(z)
    assert np.all(np.abs(z) < 4), z
    assert 0.33 < float(np.sqrt(np.mean(z ** 2))) < 1.81, z


def test_large_hidden_layer_uses_ais_and_says_so():
    rbm = BernoulliRBM(30, 25, exact_limit=20, ais_runs=20, ais_betas=200)
    assert not rbm.log_prob_is_exact and rbm.log_prob_kind == "estimate"
    assert BernoulliRBM.log_prob_kind == "exact"  # the registry's class-level entry
    values = rbm.log_prob(torch.zeros(3, 30))
    result = rbm.log_partition()
    assert not result.exact and result.num_runs == 20 and result.num_betas == 200
    assert torch.allclose(values, -rbm.free_energy(torch.zeros(3, 30)).detach() - result.value)
    assert rbm.log_partition() is result  # cached while the weights do not change
    with torch.no_grad():
        rbm.hidden_bias.add_(0.1)
    assert rbm.log_partition() is not result


def test_gaussian_ais_matches_exact(float64):
    rbm = _random_rbm(GaussianBernoulliRBM, 10, 8, scale=0.3, seed=4)
    exact = rbm.log_partition()
    estimate = rbm.log_partition("ais", num_runs=200, num_betas=2000, seed=0)
    assert abs(estimate.value - exact.value) < 4 * estimate.stderr, (estimate, exact)


def test_ais_schedule_and_interval():
    betas = ais_betas(14500)
    assert len(betas) == 14500 and float(betas[0]) == 0 and float(betas[-1]) == 1
    assert bool((betas[1:] > betas[:-1]).all())
    assert int((betas < 0.5).sum()) == 500 and int((betas >= 0.9).sum()) == 10000
    estimate = LogPartition(value=10.0, stderr=0.01, exact=False, method="ais", num_runs=100, num_betas=10)
    low, high = estimate.interval(3)
    assert low == pytest.approx(10 + math.log(0.97)) and high == pytest.approx(10 + math.log(1.03))


# ---------------------------------------------------------------- CD gradients
@pytest.mark.parametrize("cls,kwargs", [(BernoulliRBM, {}), (GaussianBernoulliRBM, {"learn_scale": True})])
def test_cd_gradients_equal_autograd_of_the_free_energy_gap(cls, kwargs):
    rbm = _random_rbm(cls, 6, 4, scale=0.5, **kwargs)
    data = (torch.rand(10, 6, dtype=torch.float64) < 0.5).double() if cls is BernoulliRBM \
        else torch.randn(10, 6, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    gradients, v_minus = rbm.cd_step(data, None, 3, generator)
    assert v_minus.shape == data.shape and rbm.cd_monitor(data, generator).shape == (10,)
    gap = rbm.free_energy(data).mean() - rbm.free_energy(v_minus).mean()
    names = [name for name, _ in rbm.named_parameters()]
    autograd = torch.autograd.grad(gap, [p for _, p in rbm.named_parameters()])
    assert sorted(gradients) == sorted(names)
    for name, expected in zip(names, autograd):
        assert torch.allclose(gradients[name], expected, atol=1e-12), name


@pytest.mark.parametrize("persistent", [False, True])
def test_fused_bernoulli_cd_step_equals_the_generic_one(persistent):
    rbm = _random_rbm(BernoulliRBM, 7, 5, scale=0.5)
    data = (torch.rand(12, 7, dtype=torch.float64) < 0.4).double()
    start = (torch.rand(12, 7, dtype=torch.float64) < 0.5).double() if persistent else None
    fused = rbm.cd_step(data, start, 2, torch.Generator().manual_seed(7))
    generic = RBMBase.cd_step(rbm, data, start, 2, torch.Generator().manual_seed(7))
    assert torch.equal(fused[1], generic[1])  # the same draws in the same order
    for name in generic[0]:
        assert torch.allclose(fused[0][name], generic[0][name], atol=1e-14), name


def test_pseudo_likelihood_monitor_is_unbiased():
    """The one-unit estimate, averaged over every unit, is the exact pseudo-log-likelihood."""
    rbm = _random_rbm(BernoulliRBM, 5, 3)
    v = _all_states(5)[[3, 17, 30]]
    with torch.no_grad():
        exact = torch.zeros(3, dtype=torch.float64)
        for i in range(5):
            flipped = v.clone()
            flipped[:, i] = 1 - flipped[:, i]
            exact += torch.nn.functional.logsigmoid(rbm.free_energy(flipped) - rbm.free_energy(v))
        draws = torch.stack([rbm.cd_monitor(v, torch.Generator().manual_seed(s)) for s in range(400)])
    # 400 draws of a 5-valued estimate: its mean is within 5 standard errors of -PL.
    stderr = draws.std(0) / math.sqrt(400)
    assert bool(((draws.mean(0) + exact).abs() < 5 * stderr + 1e-12).all())


# ---------------------------------------------------------------- bad input and config
def test_bad_data_raises_data_error_naming_it():
    rbm = BernoulliRBM(4, 2)
    with pytest.raises(ppgen.DataError, match=r"binary.*0\.5.*\(1, 2\)"):
        rbm.log_prob(torch.tensor([[0, 1, 0, 1], [1, 1, 0.5, 0]]))
    with pytest.raises(ppgen.DataError, match="NaN"):
        rbm.log_prob(torch.tensor([[0, 1, float("nan"), 1]]))
    with pytest.raises(ppgen.DataError, match="expected 4 features"):
        rbm.log_prob(torch.zeros(3, 5))
    with pytest.raises(ppgen.DataError, match="x"):
        rbm.check_data(np.full((2, 4), 2.0), "x")
    with pytest.raises(ppgen.DataError, match="inf"):
        GaussianBernoulliRBM(2, 2).log_prob(torch.tensor([[0.0, float("inf")]]))
    assert rbm.check_data(np.array([[True, False, True, True]])).dtype == torch.float32


def test_bad_configuration_raises_model_error():
    with pytest.raises(ppgen.ModelError, match="n_hidden"):
        BernoulliRBM(4, 0)
    with pytest.raises(ppgen.ModelError, match="scale"):
        GaussianBernoulliRBM(4, 2, scale=-1.0)
    with pytest.raises(ppgen.ModelError, match="exact_limit"):
        BernoulliRBM(4, 2, exact_limit=40)
    with pytest.raises(ppgen.ModelError, match="weights"):
        BernoulliRBM(4, 2).set_weights(torch.zeros(2, 4), torch.zeros(4), torch.zeros(2))
    with pytest.raises(ppgen.ModelError, match="out of reach"):
        BernoulliRBM(40, 40, exact_limit=20).log_partition("exact")


def test_map_refuses_large_hidden_layers():
    rbm = BernoulliRBM(30, 25)
    with pytest.raises(ppgen.ModelError, match="ContrastiveDivergence"):
        ppgen.fit(rbm, torch.zeros(10, 30), ppgen.inference.MAP(num_steps=2), progress=False)


# ---------------------------------------------------------------- as a fitted model
def test_exact_maximum_likelihood_by_map_raises_the_likelihood():
    rbm, data = BernoulliRBM.example()
    fit = ppgen.fit(rbm, data, ppgen.inference.MAP(num_steps=150, lr=0.05), seed=0, progress=False)
    assert fit.losses[-1] < fit.losses[0] - 50  # total nats on 120 images
    # the loss is the exact negative log-likelihood of the data
    assert fit.losses[-1] == pytest.approx(-float(rbm.log_prob(data).sum()), rel=0.01)


def test_fit_save_load_keeps_log_prob(tmp_path):
    rbm, data = GaussianBernoulliRBM.example()
    fit = ppgen.fit(rbm, data, ppgen.inference.ContrastiveDivergence(num_epochs=3, batch_size=30),
                    seed=0, progress=False)
    fit.save(tmp_path / "rbm.pt")
    loaded = ppgen.load(tmp_path / "rbm.pt")
    assert torch.equal(loaded.model.log_prob(data), rbm.log_prob(data))
    assert loaded.model.log_prob_is_exact and bool(loaded.model.initialized)


@pytest.mark.peer
def test_free_energy_and_hidden_probabilities_match_scikit_learn():
    """scikit-learn's BernoulliRBM stores W^T as ``components_``: on the same weights its
    free energy and p(h | v) equal ours to float64 rounding."""
    sklearn_rbm = pytest.importorskip("sklearn.neural_network").BernoulliRBM
    rng = np.random.default_rng(0)
    data = (rng.random((50, 12)) < 0.4).astype(np.float64)
    peer = sklearn_rbm(n_components=5, n_iter=3, batch_size=10, random_state=0).fit(data)
    rbm = BernoulliRBM(12, 5).double()
    rbm.set_weights(peer.components_.T, peer.intercept_visible_, peer.intercept_hidden_)
    v = torch.as_tensor(data)
    with torch.no_grad():
        np.testing.assert_allclose(rbm.free_energy(v).numpy(), peer._free_energy(data), rtol=1e-12)
        np.testing.assert_allclose(torch.sigmoid(rbm.hidden_logits(v)).numpy(), peer.transform(data),
                                   rtol=1e-12)
