"""The per-datum IWAE / Renyi bounds, against exact answers."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppgen
from ppgen.errors import MethodError
from ppgen.inference import SVI
from ppgen.inference.elbos import PerDatumRenyi

X = torch.tensor([-1.3, 0.2, 0.9, 2.4, -0.4, 1.1], dtype=torch.float64)


def model(x, subsample_size=None):
    with pyro.plate("data", len(x), subsample_size=subsample_size) as idx:
        z = pyro.sample("z", dist.Normal(torch.zeros(()).double(), 1.0))
        pyro.sample("obs", dist.Normal(z, 1.0), obs=x[idx])


def guide_with(loc_scale, scale):
    def guide(x, subsample_size=None):
        with pyro.plate("data", len(x), subsample_size=subsample_size) as idx:
            pyro.sample("z", dist.Normal(loc_scale * x[idx], scale))
    return guide


EXACT_POSTERIOR = guide_with(0.5, math.sqrt(0.5))  # z | x ~ N(x/2, 1/2)
LOG_EVIDENCE = dist.Normal(torch.zeros((), dtype=torch.float64), math.sqrt(2.0)).log_prob(X)  # x ~ N(0, 2)


@pytest.mark.parametrize("alpha", [0.0, 0.5, -1.0])
@pytest.mark.parametrize("k", [1, 7])
def test_exact_guide_gives_the_exact_evidence(alpha, k):
    # With q = p(z | x) every weight equals p(x_i): the bound is exact for any K and alpha.
    elbo = PerDatumRenyi(alpha=alpha, num_particles=k, max_plate_nesting=1, data_plate="data")
    loss = elbo.loss(model, EXACT_POSTERIOR, x=X)
    assert loss == pytest.approx(-float(LOG_EVIDENCE.sum()), abs=1e-10)


def test_subsampled_bound_is_scaled_to_the_full_data():
    pyro.set_rng_seed(0)
    elbo = PerDatumRenyi(alpha=0.0, num_particles=3, max_plate_nesting=1, data_plate="data")
    trace = pyro.poutine.trace(EXACT_POSTERIOR).get_trace(x=X, subsample_size=2)
    idx = trace.nodes["data"]["value"]
    loss = elbo.loss(model, pyro.poutine.replay(EXACT_POSTERIOR, trace=trace), x=X, subsample_size=2)
    assert loss == pytest.approx(-3.0 * float(LOG_EVIDENCE[idx].sum()), abs=1e-10)


def test_bounds_are_ordered_by_alpha_for_the_same_draws():
    # For fixed weights the power mean rises with 1 - alpha: L_{-1} >= L_0 (IWAE) >= L_0.5 >= ELBO.
    rough = guide_with(0.2, 1.3)
    values = {}
    for alpha in (-1.0, 0.0, 0.5, 0.999999):
        pyro.set_rng_seed(3)
        values[alpha] = -PerDatumRenyi(alpha, 16, 1, "data").loss(model, rough, x=X)
    assert values[-1.0] > values[0.0] > values[0.5] > values[0.999999]
    assert values[-1.0] < float(LOG_EVIDENCE.sum()) + 5  # loose sanity: near the evidence


def test_iwae_tightens_with_k():
    rough = guide_with(0.2, 1.3)
    means = {}
    for k in (1, 10, 100):
        vals = []
        for seed in range(40):
            pyro.set_rng_seed(seed)
            vals.append(-PerDatumRenyi(0.0, k, 1, "data").loss(model, rough, x=X))
        means[k] = sum(vals) / len(vals)
    truth = float(LOG_EVIDENCE.sum())
    assert means[1] < means[10] < means[100] < truth


def test_global_site_outside_the_plate_is_refused():
    def global_model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=x)

    def global_guide(x):
        pyro.sample("mu", dist.Normal(0.0, 1.0))

    with pytest.raises(MethodError, match="'mu' is outside the data plate"):
        PerDatumRenyi(0.0, 4, 1, "data").loss(global_model, global_guide, x=X.float())


def test_plain_program_is_one_datum_and_fit_accepts_iwae():
    def program(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(x)):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=x)

    fit = ppgen.fit(program, {"x": X.float()}, SVI(num_steps=400, elbo="iwae", num_particles=8, lr=0.05),
                    seed=0, progress=False)
    # Conjugate: x ~ N(0, I + 100 11^T). The trained bound sits below log p(x) and close to it
    # (the last 100 losses average out the estimator's noise, sd ~0.3 per step here).
    cov = torch.eye(len(X), dtype=torch.float64) + 100.0
    log_evidence = float(dist.MultivariateNormal(torch.zeros(len(X), dtype=torch.float64), cov).log_prob(X))
    tail = sum(fit.losses[-100:]) / 100
    assert -log_evidence - 0.1 < tail < -log_evidence + 0.5
    with pytest.raises(MethodError, match="renyi_alpha=1"):
        SVI(elbo="renyi", renyi_alpha=1.0)


def test_reparameterised_trace_elbo_equals_pyros_value_and_gradient(float64):
    """The lean one-particle ELBO used for ppgen models: the same loss and the same gradient
    as Pyro's ``Trace_ELBO`` on the same draws (a subsampled, scaled plate, a beta-weighted
    latent, a VAE's amortised guide)."""
    from pyro.infer import Trace_ELBO

    from ppgen.inference.elbos import ReparamTrace_ELBO
    from ppgen.models import VAE

    vae = VAE(6, 2, hidden=(5,), likelihood="bernoulli", beta=0.5).double()
    x = (torch.rand(40, 6, generator=torch.Generator().manual_seed(0)) < 0.4).double()
    idx = torch.tensor([3, 17, 25, 8, 31])
    model = pyro.poutine.condition(vae.model, data={vae.data_plate: idx})
    guide = pyro.poutine.condition(vae.guide, data={vae.data_plate: idx})
    params = list(vae.parameters())
    results = []
    for elbo in (Trace_ELBO(), ReparamTrace_ELBO(fallback=Trace_ELBO())):
        torch.manual_seed(7)
        with pyro.validation_enabled(False):
            loss = elbo.differentiable_loss(model, guide, x, subsample_size=5)
        results.append((loss.detach(), torch.autograd.grad(loss, params)))
    (expected, expected_grad), (got, got_grad) = results
    assert torch.allclose(got, expected, rtol=1e-12)
    for a, b in zip(got_grad, expected_grad):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_reparameterised_trace_elbo_falls_back_for_discrete_guides():
    """A guide site without ``rsample`` (a Bernoulli) sends every call to the fallback."""
    from ppgen.inference.elbos import ReparamTrace_ELBO

    calls = []

    class Fallback:
        def differentiable_loss(self, model, guide, *args, **kwargs):
            calls.append(1)
            return torch.tensor(0.0)

    def model():
        pyro.sample("b", dist.Bernoulli(0.3))

    def guide():
        pyro.sample("b", dist.Bernoulli(0.6))

    elbo = ReparamTrace_ELBO(fallback=Fallback())
    elbo.differentiable_loss(model, guide)
    elbo.differentiable_loss(model, guide)
    assert len(calls) == 2 and not elbo.reparameterised
