"""Normalizing flows: exact change of variables, invertibility, a goodness-of-fit test
of sample against log_prob, maximum likelihood near the true entropy, errors, save/load."""

import math
from functools import partial

import pytest
import torch
from torch.autograd.functional import jacobian

import ppgen
from ppgen.errors import DataError, ModelError
from ppgen.inference import MAP, SVI
from ppgen.models import MAF, NeuralSplineFlow, RealNVP
from ppgen.nn.flows import standard_normal_log_prob

SplineCoupling = partial(NeuralSplineFlow, structure="coupling")
FAMILIES = {"RealNVP": RealNVP, "MAF": MAF, "NSF": NeuralSplineFlow, "NSF-coupling": SplineCoupling}
CASES = [(name, context_dim) for name in FAMILIES for context_dim in (0, 2)]
IDS = [f"{name}-ctx{c}" for name, c in CASES]


def random_flow(name, dim=2, context_dim=0, seed=0, scale=0.3):
    """A flow whose layers are far from the identity: the zero-initialised output
    layers get N(0, scale^2) weights; standardisation from skewed data."""
    torch.manual_seed(seed)
    model = FAMILIES[name](dim, num_layers=3, hidden=(16, 16), context_dim=context_dim)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(100, dim, generator=gen) * torch.linspace(2.0, 0.5, dim) + 1.0
    context = torch.randn(100, context_dim, generator=gen) if context_dim else None
    model.initialize(x, condition=context)
    with torch.no_grad():
        for param in model.parameters():
            if bool((param == 0).all()):
                param.normal_(0, scale, generator=gen)
    return model


@pytest.mark.parametrize("name,context_dim", CASES, ids=IDS)
def test_log_prob_is_the_change_of_variables_by_brute_force(name, context_dim, float64):
    model = random_flow(name, dim=3, context_dim=context_dim)
    gen = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(6, 3, generator=gen)
    x[0, 0] = 12.0  # beyond the spline interval: the identity tails
    context = torch.randn(6, context_dim, generator=gen) if context_dim else None
    got = model.log_prob(x, context=context)
    for i in range(6):
        row = None if context is None else context[i:i + 1]
        jac = jacobian(lambda v, row=row: model.forward(v[None], row)[0], x[i])
        z = model.forward(x[i:i + 1], row)[0]
        want = standard_normal_log_prob(z) + torch.linalg.slogdet(jac).logabsdet
        # float64, two computations of the same number: only rounding separates them
        assert float(got[i]) == pytest.approx(float(want), abs=1e-9)


@pytest.mark.parametrize("name,context_dim", CASES, ids=IDS)
def test_inverse_undoes_forward_in_float32(name, context_dim):
    model = random_flow(name, dim=3, context_dim=context_dim, scale=0.1)
    gen = torch.Generator().manual_seed(2)
    x = 1.0 + torch.randn(500, 3, generator=gen) * torch.tensor([2.0, 1.25, 0.5])
    context = torch.randn(500, context_dim, generator=gen) if context_dim else None
    with torch.no_grad():
        z = model.forward(x, context)
        assert torch.allclose(model.inverse(z, context), x, rtol=0, atol=1e-5)
        noise = torch.randn(500, 3, generator=gen)
        assert torch.allclose(model.forward(model.inverse(noise, context), context), noise, rtol=0, atol=1e-5)


def chi_square_sf(statistic, dof):
    """P(chi2_dof > statistic), by the regularised upper incomplete gamma function."""
    return float(torch.special.gammaincc(torch.tensor(dof / 2), torch.tensor(statistic / 2)))


def binned_chi_square(samples, log_density, lo, hi, cells=8, sub=16):
    """Pearson's test of ``samples`` against the density ``exp(log_density)`` on a
    ``cells x cells`` grid over the box ``[lo, hi]``.

    Cell probabilities are midpoint-rule integrals on a ``sub x sub`` grid inside
    each cell, renormalised over the box (the samples inside it are compared:
    under H0 they are draws from the density restricted to the box); cells
    expecting fewer than 5 are pooled. Returns ``(p value, box mass, fraction of
    samples in the box)``.
    """
    k = cells * sub
    axes = [lo[d] + (hi[d] - lo[d]) * (torch.arange(k, dtype=samples.dtype) + 0.5) / k for d in range(2)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    area = float((hi - lo).prod()) / k ** 2
    with torch.no_grad():
        mass = (log_density(grid).exp() * area).reshape(cells, sub, cells, sub).sum((1, 3)).reshape(-1)
    index = ((samples - lo) / (hi - lo) * cells).floor().long()
    inside = ((index >= 0) & (index < cells)).all(-1)
    counts = torch.bincount(index[inside, 0] * cells + index[inside, 1], minlength=cells ** 2).to(samples.dtype)
    expected = mass / mass.sum() * counts.sum()
    big = expected >= 5
    observed, expected = counts[big], expected[big]
    if not bool(big.all()):
        observed = torch.cat([observed, counts[~big].sum()[None]])
        expected = torch.cat([expected, (counts.sum() - expected.sum())[None]])
    statistic = float(((observed - expected) ** 2 / expected).sum())
    return chi_square_sf(statistic, len(expected) - 1), float(mass.sum()), float(inside.to(samples.dtype).mean())


def _gof(model, context, log_density=None, n=10000):
    pilot = model.sample(1000, context=context)  # the box, from an independent pilot run
    lo, hi = torch.quantile(pilot, 0.01, dim=0), torch.quantile(pilot, 0.99, dim=0)
    samples = model.sample(n, context=context)
    if log_density is None:
        log_density = lambda p: model.log_prob(p, None if context is None else context.expand(len(p), -1))  # noqa: E731
    return binned_chi_square(samples, log_density, lo, hi)


@pytest.mark.parametrize("name,context_dim", CASES, ids=IDS)
def test_samples_follow_log_prob_chi_square(name, context_dim, float64):
    model = random_flow(name, context_dim=context_dim)
    context = torch.tensor([0.5, -1.0]) if context_dim else None
    torch.manual_seed(3)
    p_value, box_mass, fraction = _gof(model, context)
    # Under H0 the p value is uniform: a fixed seed fails with probability 1e-3.
    assert p_value > 1e-3
    # Normalisation: the box's integral of exp(log_prob) against the binomial share
    # of 10000 samples in it (sd ~0.002), 5 sds; integration error is ~1e-4.
    assert box_mass == pytest.approx(fraction, abs=0.01)


def test_chi_square_test_rejects_a_density_without_its_jacobian(float64):
    """The test has power: the base density at f(x) alone (no log-determinant),
    renormalised over the box, is not the density the samples follow."""
    model = random_flow("NSF")
    torch.manual_seed(3)
    p_value, _, _ = _gof(model, None, log_density=lambda p: standard_normal_log_prob(model.forward(p)))
    assert p_value < 1e-6


def banana(n, generator):
    """x1 ~ N(0, 1), x2 = x1^2 - 1 + N(0, 0.5^2): a volume-preserving bend of a
    Gaussian, so its entropy is the Gaussian's, log(2 pi e) + log 0.5 nats."""
    a = torch.randn(n, generator=generator)
    return torch.stack([a, 0.5 * torch.randn(n, generator=generator) + a ** 2 - 1], -1)


BANANA_ENTROPY = math.log(2 * math.pi * math.e) + math.log(0.5)


@pytest.mark.parametrize("name,steps", [pytest.param("RealNVP", 600, marks=pytest.mark.slow), ("MAF", 600),
                                        ("NSF", 400)])
def test_maximum_likelihood_reaches_the_true_entropy(name, steps):
    gen = torch.Generator().manual_seed(0)
    train, test = banana(4000, gen), banana(20000, gen)
    model = FAMILIES[name](2, num_layers=4, hidden=(32, 32))
    model.initialize(train)
    with torch.no_grad():
        before = -float(model.log_prob(test).mean())
    ppgen.fit(model, train, MAP(num_steps=steps, lr=5e-3, batch_size=256), seed=0, progress=False)
    with torch.no_grad():
        log_p = model.log_prob(test)
    nll, se = -float(log_p.mean()), float(log_p.std()) / math.sqrt(len(log_p))
    # The standardised Gaussian start is ~1.1 nats above the entropy (it misses the bend).
    assert before - BANANA_ENTROPY > 0.9
    # Cross-entropy >= entropy (up to 4 MC sds); the fit gets within 0.15 nats of it
    # (observed 0.01-0.07 with these settings).
    assert -4 * se < nll - BANANA_ENTROPY < 0.15


def test_conditional_flow_learns_the_conditional_density():
    gen = torch.Generator().manual_seed(0)
    context = 4 * torch.rand(3000, 1, generator=gen) - 2
    x = context * torch.tensor([1.0, -1.0]) + 0.3 * torch.randn(3000, 2, generator=gen)
    model = MAF(2, num_layers=2, hidden=(32, 32), context_dim=1)
    ppgen.fit(model, (x, context), MAP(num_steps=400, lr=5e-3, batch_size=256), seed=0, progress=False)
    draws = model.sample(4000, context=torch.tensor([1.5]))
    # x | c = N((c, -c), 0.3^2 I): mean within 0.1 (model error; MC sd 0.005).
    assert torch.allclose(draws.mean(0), torch.tensor([1.5, -1.5]), atol=0.1)
    assert torch.allclose(draws.std(0), torch.tensor([0.3, 0.3]), atol=0.05)
    truth = math.log(2 * math.pi * math.e * 0.09)
    held_out = context[:500] * torch.tensor([1.0, -1.0]) + 0.3 * torch.randn(500, 2, generator=gen)
    with torch.no_grad():
        nll = -float(model.log_prob((held_out, context[:500])).mean())
    assert nll - truth < 0.15  # the MC sd of the held-out mean is 0.045


@pytest.mark.parametrize("method", [MAP(num_steps=1), SVI(num_steps=1)], ids=["map", "svi"])
def test_the_training_loss_is_the_negative_log_likelihood(method, float64):
    model = random_flow("RealNVP")
    data = RealNVP.example()[1].double()
    with torch.no_grad():
        want = -float(model.log_prob(data).sum())
    fit = ppgen.fit(model, data, method, seed=0, progress=False)
    # No latent sites: the ELBO is the log-likelihood, exactly (float64 rounding only).
    assert fit.losses[0] == pytest.approx(want, rel=1e-12)


def test_bad_inputs_name_the_argument():
    model, data = NeuralSplineFlow.example()
    with pytest.raises(DataError, match="data: expected 2 features"):
        model.log_prob(torch.zeros(4, 3))
    bad = data.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(DataError, match="data: contains NaN"):
        ppgen.fit(model, bad, MAP(num_steps=2), progress=False)
    with pytest.raises(DataError, match="context"):
        model.log_prob(data, context=torch.zeros(len(data), 1))
    with pytest.raises(DataError, match="z: expected 2 features"):
        model.inverse(torch.zeros(4, 5))
    with pytest.raises(DataError, match="n must be a positive integer"):
        model.sample(0)
    conditional = MAF(2, context_dim=3)
    with pytest.raises(DataError, match="context: required"):
        conditional.log_prob(data)
    with pytest.raises(DataError, match="context: expected 3 features"):
        conditional.log_prob((data, torch.zeros(len(data), 2)))
    with pytest.raises(DataError, match="context: has 5 rows but the data have 512"):
        conditional.log_prob(data, context=torch.zeros(5, 3))
    with pytest.raises(DataError, match="context: contains inf"):
        conditional.sample(2, context=torch.tensor([0.0, float("inf"), 1.0]))
    with pytest.raises(DataError, match="'x' and 'context'"):
        conditional.log_prob({"y": data})


@pytest.mark.parametrize("kwargs,match", [
    ({"dim": 0}, "dim"), ({"dim": 2, "hidden": ()}, "hidden"), ({"dim": 2, "num_layers": 0}, "num_layers"),
    ({"dim": 2, "context_dim": -1}, "context_dim"), ({"dim": 2, "bins": 1}, "bins"),
    ({"dim": 2, "structure": "conv"}, "structure"), ({"dim": 2, "bound": -1.0}, "bound"),
    ({"dim": 2, "activation": "swish"}, "activation"),
])
def test_bad_configuration_is_a_model_error(kwargs, match):
    with pytest.raises(ModelError, match=match):
        NeuralSplineFlow(**kwargs)


@pytest.mark.parametrize("context_dim", [0, 2])
def test_save_and_load_round_trip(tmp_path, context_dim):
    gen = torch.Generator().manual_seed(0)
    x = 3 + 2 * torch.randn(300, 2, generator=gen)
    context = torch.randn(300, context_dim, generator=gen)
    data = (x, context) if context_dim else x
    model = NeuralSplineFlow(2, num_layers=2, hidden=(8, 8), context_dim=context_dim, bins=5)
    fit = ppgen.fit(model, data, MAP(num_steps=30, lr=1e-2), seed=0, progress=False)
    fit.save(tmp_path / "flow.pt")
    loaded = ppgen.load(tmp_path / "flow.pt").model
    assert loaded.get_config() == model.get_config()
    assert torch.equal(loaded.flow.layers[0].loc, model.flow.layers[0].loc)  # the standardisation
    with torch.no_grad():
        assert torch.equal(loaded.log_prob(data), model.log_prob(data))
    row = context[0] if context_dim else None
    torch.manual_seed(5)
    first = model.sample(10, context=row)
    torch.manual_seed(5)
    assert torch.equal(loaded.sample(10, context=row), first)


def test_standardisation_is_fixed_at_the_first_fit():
    model, data = RealNVP.example()
    ppgen.fit(model, data, MAP(num_steps=5), seed=0, progress=False)
    loc = model.flow.layers[0].loc.clone()
    ppgen.fit(model, data + 10, MAP(num_steps=5), seed=0, progress=False)
    assert torch.equal(model.flow.layers[0].loc, loc)
    assert torch.allclose(loc, data.mean(0))


def test_the_model_draws_data_without_observations():
    model, _ = MAF.example()
    assert model.model(n=7).shape == (7, 2)
    conditional = RealNVP(2, context_dim=1)
    assert conditional.model(condition=torch.zeros(4, 1)).shape == (4, 2)
