"""Pyro programs written the ways users write them, each with its data.

``PROGRAMS[name] = (model, data, features)``: ``features`` names what the program
exercises (for the reader), ``"enumerated"`` where it has discrete latents summed
out, and ``"params"`` where its unknowns are ``pyro.param`` sites (no NUTS).
Data are small and made here from fixed seeds, so that Pyro's NUTS on them runs in
seconds (:mod:`make_references`).
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import config_enumerate
from pyro.nn import PyroModule, PyroSample
from pyro.ops.indexing import Vindex

SCHOOLS_Y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
POISSON_COUNTS = torch.tensor([1.0, 0, 1, 2, 1, 1, 2, 3, 1, 2, 2, 3, 2, 4, 3, 3, 5, 4, 4, 6, 5, 7, 6, 8, 9])
SCHOOLS_SIGMA = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]


def _rng(seed):
    return torch.Generator().manual_seed(seed)


def schools_vector(J, sigma, y):
    """Pyro's eight-schools example style: vector sites, no plate (non-centred)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    eta = pyro.sample("eta", dist.Normal(torch.zeros(J), torch.ones(J)).to_event(1))
    pyro.sample("obs", dist.Normal(mu + tau * eta, sigma).to_event(1), obs=y)


def schools_plate(J, sigma, y):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", J):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * eta, sigma), obs=y)


def logistic_matmul(X, y):
    """Matrix operations, no plate: ``X @ w``."""
    w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[1]), 1.0).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 2.0))
    pyro.sample("y", dist.Bernoulli(logits=X @ w + b).to_event(1), obs=y)


def nested_plates(y):
    """Groups of items: nested plates, a per-group random effect."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    sd_group = pyro.sample("sd_group", dist.HalfNormal(2.0))
    with pyro.plate("groups", y.shape[0], dim=-2):
        effect = pyro.sample("effect", dist.Normal(0.0, sd_group))
        with pyro.plate("items", y.shape[1], dim=-1):
            pyro.sample("y", dist.Normal(mu + effect, 1.0), obs=y)


@config_enumerate
def mixture_indexing(y):
    """Pyro's GMM tutorial style: enumerated assignments, ``locs[z]``."""
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    locs = pyro.sample("locs", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(y)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[z], scale), obs=y)


def mixture_vindex(y):
    """Enumeration marked per site, ``Vindex`` for the component parameters (2-d data)."""
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    locs = pyro.sample("locs", dist.Normal(0.0, 5.0).expand([2, 2]).to_event(2))
    with pyro.plate("data", len(y)):
        z = pyro.sample("z", dist.Categorical(weights), infer={"enumerate": "parallel"})
        pyro.sample("obs", dist.Normal(Vindex(locs)[..., z, :], 1.0).to_event(1), obs=y)


def hmm_markov(y):
    """Pyro's HMM example style: ``pyro.markov`` over time, enumerated states."""
    transition = pyro.sample("transition", dist.Dirichlet(torch.ones(2, 2) + 2 * torch.eye(2)).to_event(1))
    locs = pyro.sample("locs", dist.Normal(torch.tensor([-1.0, 1.0]), 1.0).to_event(1))
    z = 0
    for t in pyro.markov(range(len(y))):
        z = pyro.sample(f"z_{t}", dist.Categorical(Vindex(transition)[..., z, :]),
                        infer={"enumerate": "parallel"})
        pyro.sample(f"y_{t}", dist.Normal(Vindex(locs)[..., z], 0.5), obs=y[t])


def zero_inflated(y):
    """A discrete latent inside a plate, enumerated: zero-inflated Poisson counts."""
    rate = pyro.sample("rate", dist.Gamma(2.0, 0.5))
    pi = pyro.sample("pi", dist.Beta(1.0, 1.0))
    with pyro.plate("data", len(y)):
        zero = pyro.sample("zero", dist.Bernoulli(pi), infer={"enumerate": "parallel"})
        pyro.sample("y", dist.Poisson(rate * (1 - zero) + 1e-6), obs=y)


@config_enumerate
def change_point(counts):
    """A switch point over years, enumerated (the coal-mining-disasters model)."""
    early = pyro.sample("early", dist.Exponential(1.0))
    late = pyro.sample("late", dist.Exponential(1.0))
    T = len(counts)
    switch = pyro.sample("switch", dist.Categorical(torch.ones(T) / T))
    years = torch.arange(T)
    rate = torch.where(years < switch, early, late)  # enumerated: (T, 1) against the plate's (T,)
    with pyro.plate("years", T):
        pyro.sample("counts", dist.Poisson(rate), obs=counts)


def obs_mask_regression(x, y, observed):
    """Missing responses: ``obs_mask`` (the unobserved ones become latent)."""
    a = pyro.sample("a", dist.Normal(0.0, 5.0))
    b = pyro.sample("b", dist.Normal(0.0, 5.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(a + b * x, sigma), obs=y, obs_mask=observed)


def poutine_mask_regression(x, y, observed):
    """The same responses, the missing ones masked out with ``poutine.mask``."""
    a = pyro.sample("a", dist.Normal(0.0, 5.0))
    b = pyro.sample("b", dist.Normal(0.0, 5.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
    with pyro.plate("data", len(x)), pyro.poutine.mask(mask=observed):
        pyro.sample("y", dist.Normal(a + b * x, sigma), obs=y)


def lkj_cholesky(y):
    """A correlated Gaussian: LKJ prior on the Cholesky factor, ``torch.mm`` to a covariance."""
    d = y.shape[1]
    L_corr = pyro.sample("L_corr", dist.LKJCholesky(d, concentration=2.0))
    scales = pyro.sample("scales", dist.HalfNormal(torch.full((d,), 2.0)).to_event(1))
    L = torch.mm(torch.diag(scales), L_corr) if L_corr.dim() == 2 else scales.unsqueeze(-1) * L_corr
    with pyro.plate("data", y.shape[0]):
        pyro.sample("obs", dist.MultivariateNormal(torch.zeros(d), scale_tril=L), obs=y)


def param_regression(x, y):
    """Unknowns as ``pyro.param``: a point fit (MAP/SVI), no prior."""
    a = pyro.param("a", torch.tensor(0.0))
    b = pyro.param("b", torch.tensor(0.0))
    sigma = pyro.param("sigma", torch.tensor(1.0), constraint=dist.constraints.positive)
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(a + b * x, sigma), obs=y)


class BayesianLinear(PyroModule):
    """``PyroModule`` with ``PyroSample`` priors on its weights."""

    def __init__(self, features):
        super().__init__()
        self.linear = PyroModule[torch.nn.Linear](features, 1)
        # priors made when read (a callable), in the default dtype of that moment
        self.linear.weight = PyroSample(lambda _: dist.Normal(0.0, 1.0).expand([1, features]).to_event(2))
        self.linear.bias = PyroSample(lambda _: dist.Normal(0.0, 5.0).expand([1]).to_event(1))

    def forward(self, X, y=None):
        sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
        mean = self.linear(X).squeeze(-1)
        with pyro.plate("data", X.shape[0]):
            return pyro.sample("obs", dist.Normal(mean, sigma), obs=y)


def scaled_likelihood(y):
    """A tempered likelihood: ``poutine.scale`` on the data's log density."""
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(y)), pyro.poutine.scale(scale=0.5):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def with_deterministic(J, sigma, y):
    """The README's eight schools: a ``pyro.deterministic`` site inside the plate."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", J):
        theta_trans = pyro.sample("theta_trans", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + tau * theta_trans)
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def control_flow_on_data(groups, y):
    """A Python loop and branch on the data only (group sizes, an empty group skipped)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
    for g in range(int(groups.max()) + 1):
        members = y[groups == g]
        if len(members) == 0:
            continue
        offset = pyro.sample(f"offset_{g}", dist.Normal(0.0, 1.0))
        with pyro.plate(f"group_{g}", len(members)):
            pyro.sample(f"y_{g}", dist.Normal(mu + offset, sigma), obs=members)


def poisson_regression(x, counts):
    """A log link, exposure offset, plate."""
    a = pyro.sample("a", dist.Normal(0.0, 2.0))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("counts", dist.Poisson(torch.exp(a + b * x + 0.5)), obs=counts)


def dirichlet_multinomial(counts):
    """A simplex, multinomial counts (a Python value read from the data: the total)."""
    probs = pyro.sample("probs", dist.Dirichlet(torch.ones(counts.shape[-1])))
    pyro.sample("counts", dist.Multinomial(int(counts.sum()), probs), obs=counts)


def robust_regression(x, y):
    """Student-t errors, a positive degrees-of-freedom parameter."""
    a = pyro.sample("a", dist.Normal(0.0, 5.0))
    b = pyro.sample("b", dist.Normal(0.0, 5.0))
    nu = pyro.sample("nu", dist.Gamma(2.0, 0.1))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.StudentT(nu, a + b * x, sigma), obs=y)


def _schools():
    return {"J": 8, "sigma": torch.tensor(SCHOOLS_SIGMA), "y": torch.tensor(SCHOOLS_Y)}


def _logistic():
    X = torch.randn(60, 3, generator=_rng(0))
    return {"X": X, "y": (X @ torch.tensor([1.0, -0.5, 0.0]) + 0.3 > 0).float()}


def _mixture():
    g = _rng(1)
    return {"y": torch.cat([torch.randn(30, generator=g) - 2.0, torch.randn(20, generator=g) + 2.0])}


def _mixture_2d():
    g = _rng(2)
    return {"y": torch.cat([torch.randn(25, 2, generator=g) - 2.0, torch.randn(25, 2, generator=g) + 2.0])}


def _hmm():
    states = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0])
    return {"y": torch.tensor([-1.0, 1.0])[states] + 0.5 * torch.randn(15, generator=_rng(3))}


def _regression():
    x = torch.linspace(-2, 2, 30)
    y = 1.0 + 0.7 * x + 0.5 * torch.randn(30, generator=_rng(4))
    observed = torch.ones(30, dtype=torch.bool)
    observed[::4] = False
    return {"x": x, "y": torch.where(observed, y, torch.zeros(30)), "observed": observed}


def _lkj():
    L = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    return {"y": torch.randn(40, 2, generator=_rng(5)) @ L.T * torch.tensor([1.5, 0.7])}


def _robust():
    x = torch.linspace(-2, 2, 25)
    y = 0.5 * x + 0.3 * torch.randn(25, generator=_rng(10))
    y[3], y[17] = y[3] + 6.0, y[17] - 5.0  # outliers
    return {"x": x, "y": y}


def _linear():
    X = torch.randn(40, 2, generator=_rng(6))
    return {"X": X, "y": X @ torch.tensor([0.8, -0.4]) + 0.3 + 0.5 * torch.randn(40, generator=_rng(7))}


PROGRAMS = {
    "schools_vector": (schools_vector, _schools, ("vector sites", "no plate")),
    "schools_plate": (schools_plate, _schools, ("plate",)),
    "logistic_matmul": (logistic_matmul, _logistic, ("matmul", "no plate")),
    "nested_plates": (nested_plates, lambda: {"y": torch.randn(5, 6, generator=_rng(8))
                                              + torch.arange(5.0).unsqueeze(-1)}, ("nested plates",)),
    "mixture_indexing": (mixture_indexing, _mixture, ("enumerated", "config_enumerate", "indexing")),
    "mixture_vindex": (mixture_vindex, _mixture_2d, ("enumerated", "Vindex")),
    "hmm_markov": (hmm_markov, _hmm, ("enumerated", "pyro.markov")),
    "zero_inflated": (zero_inflated, lambda: {"y": torch.tensor([0.0, 0, 3, 5, 0, 4, 2, 0, 6, 3, 0, 0, 4, 5, 3])},
                      ("enumerated", "discrete in a plate")),
    "change_point": (change_point, lambda: {"counts": torch.tensor([4.0, 5, 4, 1, 0, 4, 3, 4, 0, 6, 3, 3, 1, 1,
                                                                     0, 1, 0, 1, 1, 0])}, ("enumerated",)),
    "obs_mask_regression": (obs_mask_regression, _regression, ("obs_mask",)),
    "poutine_mask_regression": (poutine_mask_regression, _regression, ("poutine.mask",)),
    "lkj_cholesky": (lkj_cholesky, _lkj, ("LKJ", "Cholesky", "torch.mm")),
    "param_regression": (param_regression, lambda: {k: v for k, v in _regression().items() if k != "observed"},
                         ("params",)),
    "pyro_module": (BayesianLinear(2), _linear, ("PyroModule", "PyroSample")),
    "scaled_likelihood": (scaled_likelihood, lambda: {"y": torch.randn(20, generator=_rng(9)) + 1.0},
                          ("poutine.scale",)),
    "with_deterministic": (with_deterministic, _schools, ("pyro.deterministic",)),
    "control_flow_on_data": (control_flow_on_data, lambda: {"groups": torch.tensor([0, 0, 0, 2, 2, 2, 2]),
                                                            "y": torch.tensor([0.1, 0.5, -0.2, 2.0, 1.5, 2.5, 1.8])},
                             ("control flow on data",)),
    "poisson_regression": (poisson_regression, lambda: {"x": torch.linspace(-1, 1, 25), "counts": POISSON_COUNTS},
                           ("log link",)),
    "dirichlet_multinomial": (dirichlet_multinomial, lambda: {"counts": torch.tensor([12.0, 30.0, 8.0, 0.0])},
                              ("simplex", "data read as a Python value")),
    "robust_regression": (robust_regression, lambda: _robust(), ("StudentT",)),
}


def data(name):
    """The program's keyword arguments, float64."""
    return {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v
            for k, v in PROGRAMS[name][1]().items()}
