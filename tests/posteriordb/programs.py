"""Seven posteriordb posteriors as Pyro programs, each the same density as its Stan model.

"The same density" means: on the same parameter space (the same constraints,
so NUTS works in the same unconstrained coordinates up to the choice of
bijection), the log joint differs from Stan's ``target`` by a constant only.
Stan's ``real<lower=0> s; s ~ cauchy(0, c)`` is a half-Cauchy (the factor 2 is
a constant), a parameter with no prior statement gets a flat improper prior,
a ``simplex`` with none a uniform Dirichlet, and a prior on a constrained
vector (``ordered``, ``positive_ordered``) is that density restricted to the
constrained set, unnormalised (:class:`Restricted`).

Sample sites carry Stan's parameter names; transformed parameters the reference
reports (eight schools' ``theta``, the GP's ``f``) are ``pyro.deterministic``
sites. Every program is vectorised (plates, matrix lags), and broadcasts over a
leading batch of draws, so a sampler may evaluate several chains at once.

``data(name)`` reads a posterior's data from the shared posteriordb folder and
returns the keyword arguments of its program (arrays as float64 tensors).
"""

from __future__ import annotations

import math
import os
import pathlib

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.ops.indexing import Vindex
from torch.distributions import biject_to

from ppgen.datasets import load_posteriordb

ROOT = pathlib.Path(os.environ.get(
    "PPGEN_SHARED_DATA", pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "data")) / "posteriordb"


class Restricted(dist.ImproperUniform):
    """The density ``base`` restricted to ``support``, unnormalised; flat when ``base`` is None.

    :math:`\\log p(x) = \\log p_{base}(x)` for :math:`x` in the support, the
    normalising mass of the support being a constant (e.g. 1/2 for an ordered
    pair of iid normals). ``sample`` gives a placeholder, not a draw from the
    density: a point :math:`T(u)`, :math:`u \\sim U(-2, 2)^d`, with :math:`T` the
    support's bijection (Pyro's ``init_to_uniform`` rule). ppgen traces a plain
    program once at prior draws, and ``dist.ImproperUniform`` cannot be drawn.
    """

    def __init__(self, support, event_shape, base=None, batch_shape=()):
        if base is not None:
            batch_shape = base.batch_shape
            if base.event_shape != torch.Size(event_shape):
                raise ValueError(f"base event_shape {tuple(base.event_shape)} != {tuple(event_shape)}")
        self.base = base
        super().__init__(support, torch.Size(batch_shape), torch.Size(event_shape))

    def log_prob(self, value):
        if self.base is not None:
            return self.base.log_prob(value)
        # Zeros by arithmetic, not ImproperUniform's shape comparisons: those read
        # as data-dependent branches to torch.jit.trace.
        zeros = value.new_zeros(value.shape[:value.dim() - len(self.event_shape)])
        return zeros + value.new_zeros(self.batch_shape) if self.batch_shape else zeros

    def sample(self, sample_shape=()):
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        like = self.base.mean if self.base is not None else torch.empty(())
        return biject_to(self.support)(torch.rand(shape, dtype=like.dtype, device=like.device) * 4 - 2)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        if self.base is None:
            return Restricted(self.support, self.event_shape, batch_shape=batch_shape)
        return Restricted(self.support, self.event_shape, self.base.expand(batch_shape))


def _normal(like, loc, scale):
    """A normal with parameters on ``like``'s dtype and device."""
    return dist.Normal(like.new_tensor(loc), like.new_tensor(scale))


# --------------------------------------------------------------------------- eight schools
def eight_schools_noncentered(J, y, sigma):
    """theta_trans ~ N(0, 1), mu ~ N(0, 5), tau ~ C+(0, 5); theta = mu + tau theta_trans;
    y_j ~ N(theta_j, sigma_j)."""
    mu = pyro.sample("mu", _normal(y, 0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(y.new_tensor(5.0)))
    with pyro.plate("J", J):
        theta_trans = pyro.sample("theta_trans", _normal(y, 0.0, 1.0))
        theta = pyro.deterministic("theta", theta_trans * tau + mu)
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def eight_schools_centered(J, y, sigma):
    """The centred form, theta_j ~ N(mu, tau): a funnel that NUTS cannot explore
    without divergences."""
    mu = pyro.sample("mu", _normal(y, 0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(y.new_tensor(5.0)))
    with pyro.plate("J", J):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


# --------------------------------------------------------------------------- mixture
def low_dim_gauss_mix(N, y):
    """mu (ordered) ~ N(0, 2) each, sigma_k ~ N+(0, 2), theta ~ Beta(5, 5);
    y_n ~ theta N(mu_1, sigma_1) + (1 - theta) N(mu_2, sigma_2)."""
    base = _normal(y, 0.0, 2.0).expand([2]).to_event(1)
    mu = pyro.sample("mu", Restricted(constraints.ordered_vector, (2,), base))
    sigma = pyro.sample("sigma", dist.HalfNormal(y.new_tensor(2.0)).expand([2]).to_event(1))
    theta = pyro.sample("theta", dist.Beta(y.new_tensor(5.0), y.new_tensor(5.0)))
    with pyro.plate("N", N):
        weights = dist.Categorical(probs=torch.stack([theta, 1 - theta], -1))
        pyro.sample("y", dist.MixtureSameFamily(weights, dist.Normal(mu, sigma)), obs=y)


# --------------------------------------------------------------------------- HMM
def _hmm_parameters(K, y):
    if K != 2:
        raise ValueError(f"hmm_example: K={K}, but the model's priors name exactly two states")
    theta1 = pyro.sample("theta1", dist.Dirichlet(y.new_ones(K)))
    theta2 = pyro.sample("theta2", dist.Dirichlet(y.new_ones(K)))
    base = dist.Normal(y.new_tensor([3.0, 10.0]), y.new_ones(K)).to_event(1)
    mu = pyro.sample("mu", Restricted(constraints.positive_ordered_vector, (K,), base))
    return torch.stack([theta1, theta2], -2), mu  # transition matrix (..., from, to)


def hmm_example(N, K, y):
    """A 2-state HMM: z_1 uniform, z_t | z_{t-1} = j ~ Cat(theta_j) with rows
    theta1, theta2 ~ Dirichlet(1, 1); y_t ~ N(mu_{z_t}, 1); mu positive-ordered
    with mu_1 ~ N(3, 1), mu_2 ~ N(10, 1).

    The states are discrete sites under ``pyro.markov``, enumerated in parallel, so
    a sampler sums them out (the forward algorithm by variable elimination).
    Stan's forward recursion has no initial-state term, so its target is this
    log joint plus log K.
    """
    transition, mu = _hmm_parameters(K, y)
    z = None
    for t in pyro.markov(range(N)):
        probs = y.new_full((K,), 1.0 / K) if z is None else Vindex(transition)[..., z, :]
        z = pyro.sample(f"z_{t}", dist.Categorical(probs), infer={"enumerate": "parallel"})
        pyro.sample(f"y_{t}", dist.Normal(Vindex(mu)[..., z], 1.0), obs=y[t])


def hmm_example_marginal(N, K, y):
    """:func:`hmm_example` with the states summed out inside one site, by Pyro's
    parallel-scan forward algorithm (``dist.DiscreteHMM``): the same log joint.

    ``DiscreteHMM`` emits y_1 after one transition from its initial state, so the
    first transition is uniform (every state moves to each with 1/K), making z_1
    uniform as in :func:`hmm_example`. Enumerating 100 sequential sites costs
    Pyro about 0.1-0.5 s per gradient, too slow for a reference run; this costs
    a few milliseconds.
    """
    transition, mu = _hmm_parameters(K, y)
    batch = transition.shape[:-2]
    first = y.new_full((1, K, K), -math.log(K)).expand(batch + (1, K, K))
    rest = transition.log().unsqueeze(-3).expand(batch + (N - 1, K, K))
    emission = dist.Normal(mu.unsqueeze(-2), 1.0)  # batch (..., 1, K): the same for every step
    pyro.sample("y", dist.DiscreteHMM(y.new_zeros(K), torch.cat([first, rest], -3), emission), obs=y)


# --------------------------------------------------------------------------- GP
def gp_pois_regr(N, x, k):
    """rho ~ Gamma(25, rate 4), alpha ~ N+(0, 2), f_tilde ~ N(0, I);
    f = L f_tilde with L L^T = alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2)) + 1e-10 I;
    k_n ~ Poisson(exp(f_n))."""
    rho = pyro.sample("rho", dist.Gamma(x.new_tensor(25.0), x.new_tensor(4.0)))
    alpha = pyro.sample("alpha", dist.HalfNormal(x.new_tensor(2.0)))
    f_tilde = pyro.sample("f_tilde", _normal(x, 0.0, 1.0).expand([N]).to_event(1))
    sq_dist = (x[:, None] - x[None, :]) ** 2
    rho, alpha = rho[..., None, None], alpha[..., None, None]
    cov = alpha**2 * torch.exp(-0.5 * sq_dist / rho**2) + 1e-10 * torch.eye(N, dtype=x.dtype, device=x.device)
    f = pyro.deterministic("f", (torch.linalg.cholesky(cov) @ f_tilde[..., None]).squeeze(-1))
    pyro.sample("k", dist.Poisson(f.exp()).to_event(1), obs=k)


# --------------------------------------------------------------------------- regressions
def kidscore_momiq(N, kid_score, mom_iq):
    """beta flat (improper), sigma ~ C+(0, 2.5); kid_score_n ~ N(beta_1 + beta_2 mom_iq_n, sigma)."""
    beta = pyro.sample("beta", Restricted(constraints.real_vector, (2,)))
    sigma = pyro.sample("sigma", dist.HalfCauchy(mom_iq.new_tensor(2.5)))
    with pyro.plate("N", N):
        loc = beta[..., 0] + beta[..., 1] * mom_iq
        pyro.sample("kid_score", dist.Normal(loc, sigma), obs=kid_score)


def blr(N, D, X, y):
    """beta_d ~ N(0, 10), sigma ~ N+(0, 10); y ~ N(X beta, sigma)."""
    beta = pyro.sample("beta", _normal(y, 0.0, 10.0).expand([D]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(y.new_tensor(10.0)))
    with pyro.plate("N", N):
        # (X * beta).sum(-1) rather than X @ beta: it broadcasts over a batch of betas.
        pyro.sample("y", dist.Normal((X * beta).sum(-1), sigma), obs=y)


def arK(K, T, y):
    """AR(K): alpha, beta_k ~ N(0, 10), sigma ~ C+(0, 2.5);
    y_t ~ N(alpha + sum_k beta_k y_{t-k}, sigma) for t > K."""
    alpha = pyro.sample("alpha", _normal(y, 0.0, 10.0))
    beta = pyro.sample("beta", _normal(y, 0.0, 10.0).expand([K]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfCauchy(y.new_tensor(2.5)))
    # Row t - K holds y_{t-1}, ..., y_{t-K}: windows of K values, newest first.
    lags = y.unfold(0, K, 1)[:-1].flip(-1)
    with pyro.plate("T", T - K):
        pyro.sample("y", dist.Normal(alpha + (lags * beta).sum(-1), sigma), obs=y[K:])


#: posterior name -> (program, the data keys it takes)
PROGRAMS = {
    "eight_schools-eight_schools_noncentered": (eight_schools_noncentered, ("J", "y", "sigma")),
    "low_dim_gauss_mix-low_dim_gauss_mix": (low_dim_gauss_mix, ("N", "y")),
    "hmm_example-hmm_example": (hmm_example, ("N", "K", "y")),
    "gp_pois_regr-gp_pois_regr": (gp_pois_regr, ("N", "x", "k")),
    "kidiq-kidscore_momiq": (kidscore_momiq, ("N", "kid_score", "mom_iq")),
    "sblrc-blr": (blr, ("N", "D", "X", "y")),
    "arK-arK": (arK, ("K", "T", "y")),
}


def data(name, root=ROOT):
    """Keyword arguments of posterior ``name``'s program: arrays as float64 tensors, ints kept."""
    posterior = load_posteriordb(name, root)
    out = {}
    for key in PROGRAMS[posterior.name][1]:
        value = posterior.data[key]
        out[key] = torch.as_tensor(value, dtype=torch.float64) if hasattr(value, "shape") else value
    return out
