"""Gaussian mixture models, Bayesian, with the assignments summed out exactly.

.. math::
    w \\sim \\mathrm{Dir}(\\alpha 1_K), \\quad
    \\mu_k \\sim N(m_0, s_0^2 I), \\quad
    \\Lambda_k \\sim \\mathrm{Wishart}(\\nu_0, \\psi^{-1} I) \\ (\\text{full}) \\ \\text{or}\\
    \\Lambda_{kd} \\sim \\mathrm{Gamma}(\\nu_0 / 2, \\psi / 2) \\ (\\text{diag}),

    z_i \\sim \\mathrm{Cat}(w), \\quad x_i \\mid z_i \\sim N(\\mu_{z_i}, \\Lambda_{z_i}^{-1}).

The defaults (:math:`\\alpha = 1`, :math:`\\nu_0 = D + 1` or 2, small :math:`\\psi`,
wide :math:`s_0`) are nearly flat, so the MAP estimate is the maximum-likelihood
one up to a ridge of :math:`\\psi / N_k` on each covariance, as in scikit-learn's
``reg_covar``. Because these priors are conditionally conjugate, MAP has a
closed-form expectation-conditional-maximisation (ECM) solver, :meth:`fit_map`,
which ``ppgen.fit(..., method=MAP())`` uses; NUTS sums the assignments out and
samples the same posterior.
"""

from __future__ import annotations

import math
import time

import pyro
import pyro.distributions as dist
import torch

from ...data import as_tensor, check_second_moments
from ...errors import DataError, ModelError
from ...model import GenerativeModel
from .. import transforms  # noqa: F401  (registers biject_to(positive_definite))

#: The least (expected count + prior degrees of freedom) an M-step divides by: a component
#: with no data at the boundary prior would otherwise get an infinite covariance.
EMPTY_COUNT = 1e-3


class GaussianMixture(GenerativeModel):
    """A K-component Gaussian mixture in D dimensions with full or diagonal covariances.

    Parameters
    ----------
    n_components, dim : int
    covariance : {"full", "diag"}
    weight_concentration : float
        :math:`\\alpha`, the symmetric Dirichlet concentration (>= 1 for MAP).
    loc_mean, loc_scale : float
        :math:`m_0`, :math:`s_0` of the Normal prior on each mean.
    precision_df : float, optional
        :math:`\\nu_0`; default ``dim + 1`` (full) or 2 (diag).
    precision_rate : float
        :math:`\\psi`, the prior's ridge on the covariances.

    Sites: ``weights`` (K,), ``locs`` (K, D), ``precision`` (K, D, D) or (K, D),
    ``assignment`` (enumerated), ``obs``.
    """

    methods = ("svi", "map", "nuts", "hmc", "exact")

    def __init__(self, n_components: int, dim: int, covariance: str = "full", *, weight_concentration: float = 1.0,
                 loc_mean: float = 0.0, loc_scale: float = 100.0, precision_df: float | None = None,
                 precision_rate: float = 1e-3) -> None:
        super().__init__()
        for name, count in [("n_components", n_components), ("dim", dim)]:
            if not (isinstance(count, int) and count >= 1):
                raise ModelError(f"{name} must be a positive integer, got {count!r}")
        if covariance not in ("full", "diag"):
            raise ModelError(f"covariance must be 'full' or 'diag', got {covariance!r}")
        self.n_components, self.dim, self.covariance = n_components, dim, covariance
        default_df = dim + 1 if covariance == "full" else 2.0
        precision_df = float(default_df if precision_df is None else precision_df)
        minimum_df = dim - 1 if covariance == "full" else 0
        if precision_df <= minimum_df:
            raise ModelError(f"precision_df must exceed {minimum_df}, got {precision_df}")
        for name, value in [("weight_concentration", weight_concentration),
                            ("loc_scale", loc_scale), ("precision_rate", precision_rate)]:
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ModelError(f"{name} must be a positive number, got {value!r}")
        self.register_buffer("weight_concentration", torch.tensor(float(weight_concentration)))
        self.register_buffer("loc_mean", torch.tensor(float(loc_mean)))
        self.register_buffer("loc_scale", torch.tensor(float(loc_scale)))
        self.register_buffer("precision_df", torch.tensor(precision_df))
        self.register_buffer("precision_rate", torch.tensor(float(precision_rate)))

    def get_config(self):
        return {"n_components": self.n_components, "dim": self.dim,
                "covariance": self.covariance,
                "weight_concentration": float(self.weight_concentration),
                "loc_mean": float(self.loc_mean), "loc_scale": float(self.loc_scale),
                "precision_df": float(self.precision_df),
                "precision_rate": float(self.precision_rate)}

    def arviz_dims(self):
        return {**super().arviz_dims(), "weights": ["component"], "locs": ["component", "feature"],
                "precision": ["component", "feature", "feature_bis"]}

    def global_sites(self):
        return ("weights", "locs", "precision")

    def check_data(self, data, name="data"):
        return check_second_moments(as_tensor(data, name, dtype=self.dtype, device=self.device, ndim=2,
                                              dim=self.dim), name)

    # ------------------------------------------------------------ priors
    def _priors(self, validate=None):
        K, D = self.n_components, self.dim
        weights = dist.Dirichlet(self.weight_concentration.expand(K), validate_args=validate)
        locs = dist.Normal(self.loc_mean, self.loc_scale, validate_args=validate).expand([D]).to_event(1)
        if self.covariance == "full":
            eye = torch.eye(D, dtype=self.dtype, device=self.device)
            precision = dist.Wishart(self.precision_df, scale_tril=eye * self.precision_rate.rsqrt(),
                                     validate_args=validate)
        else:
            precision = dist.Gamma(self.precision_df / 2, self.precision_rate / 2,
                                   validate_args=validate).expand([D]).to_event(1)
        return weights, locs, precision

    def _component(self, locs, precision):
        if self.covariance == "full":
            return dist.MultivariateNormal(locs, precision_matrix=precision)
        return dist.Normal(locs, precision.rsqrt()).to_event(1)

    def model(self, data=None, *, n=None, subsample_size=None):
        weights_prior, locs_prior, precision_prior = self._priors()
        weights = pyro.sample("weights", weights_prior)
        with pyro.plate("components", self.n_components):
            locs = pyro.sample("locs", locs_prior)
            precision = pyro.sample("precision", precision_prior)
        size = data.shape[0] if data is not None else (n or 1)
        with pyro.plate("data", size, subsample_size=subsample_size) as idx:
            z = pyro.sample("assignment", dist.Categorical(weights),
                            infer={"enumerate": "parallel"})
            obs = data[idx] if data is not None else None
            return pyro.sample("obs", self._component(locs[z], precision[z]), obs=obs)

    # ------------------------------------------------------------ densities
    def component_log_prob(self, data, params):
        """:math:`\\log w_k + \\log N(x_i; \\mu_k, \\Lambda_k^{-1})`, shape ``(S, N, K)``."""
        locs, precision = params["locs"], params["precision"]  # (S,K,D), (S,K,D,D)|(S,K,D)
        if self.covariance == "full":
            tril = torch.linalg.cholesky(precision)  # Lambda = L L^T
            half_logdet = tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (S,K)
            # ||L^T (x - mu)||^2 as one batched matmul: (x L) - (mu L), shape (S,K,N,D)
            proj = data @ tril - (locs.unsqueeze(-2) @ tril)
            maha = proj.pow(2).sum(-1).transpose(-1, -2)  # (S,N,K)
        else:
            half_logdet = 0.5 * precision.log().sum(-1)
            diff = data.unsqueeze(-2).unsqueeze(0) - locs.unsqueeze(-3)  # (S,N,K,D)
            maha = (diff.pow(2) * precision.unsqueeze(-3)).sum(-1)
        log_norm = half_logdet.unsqueeze(-2) - 0.5 * self.dim * math.log(2 * math.pi)
        return params["weights"].log().unsqueeze(-2) + log_norm - 0.5 * maha

    def log_likelihood(self, data, params):
        return self.component_log_prob(data, params).logsumexp(-1)

    def predict_proba(self, data, params=None):
        """Posterior assignment probabilities (responsibilities), shape ``(N, K)``."""
        data = self.check_data(data)
        params = params or self.point_params()
        joint = self.component_log_prob(data, {k: v.unsqueeze(0) for k, v in params.items()})[0]
        return (joint - joint.logsumexp(-1, keepdim=True)).exp()

    def predict(self, data, params=None):
        """The most probable component of each point, shape ``(N,)``."""
        return self.predict_proba(data, params).argmax(-1)

    def sample(self, n, params=None):
        params = params or self.point_params()
        z = dist.Categorical(params["weights"]).sample((n,))
        return self._component(params["locs"][z], params["precision"][z]).sample()

    def log_prior(self, params, priors=None):
        weights_prior, locs_prior, precision_prior = priors or self._priors()
        return (weights_prior.log_prob(params["weights"])
                + locs_prior.log_prob(params["locs"]).sum(-1)
                + precision_prior.log_prob(params["precision"]).sum(-1))

    # ------------------------------------------------------------ MAP by ECM
    def _m_step(self, data, resp, locs):
        """Conditional maximisation: weights, then means given the old precisions,
        then precisions given the new means. Each step raises the log posterior."""
        counts = resp.sum(0)  # (K,)
        alpha, K = self.weight_concentration, self.n_components
        weights = (counts + alpha - 1).clamp_min(1e-300) / (data.shape[0] + K * (alpha - 1))
        weighted_sum = resp.T @ data  # (K, D)
        prior_precision = self.loc_scale.pow(-2)
        if self.covariance == "full":
            eye = torch.eye(self.dim, dtype=data.dtype, device=data.device)
            system = counts[:, None, None] * self._precision + prior_precision * eye
            rhs = (self._precision @ weighted_sum.unsqueeze(-1)).squeeze(-1) + prior_precision * self.loc_mean
            locs = torch.linalg.solve(system, rhs)
            diff = data.unsqueeze(0) - locs.unsqueeze(1)  # (K,N,D)
            scatter = (resp.T.unsqueeze(-1) * diff).mT @ diff  # (K,D,D)
            # a component left without data (repeated points, underflowed responsibilities)
            # has no finite mode at the default prior: it keeps a wide, finite covariance
            denom = (counts + self.precision_df - self.dim - 1).clamp_min(EMPTY_COUNT)
            covariance = (scatter + self.precision_rate * eye) / denom[:, None, None]
            factor, info = torch.linalg.cholesky_ex(covariance)
            if bool((info > 0).any()):
                k = int((info > 0).nonzero()[0])
                scale = float(data.abs().max())
                raise ModelError(
                    f"the MAP covariance of component {k} is not positive definite in "
                    f"{str(data.dtype).replace('torch.', '')}: data of scale {scale:.3g} against the prior "
                    f"(loc_scale={float(self.loc_scale):g}, precision_rate={float(self.precision_rate):g}); "
                    "standardise the data, or set loc_scale and precision_rate to the data's scale")
            precision = torch.cholesky_inverse(factor)
        else:
            locs = ((self._precision * weighted_sum + prior_precision * self.loc_mean)
                    / (counts[:, None] * self._precision + prior_precision))
            scatter = torch.einsum("kn,knd->kd", resp.T, (data.unsqueeze(0) - locs.unsqueeze(1)) ** 2)
            precision = ((counts + self.precision_df - 2).clamp_min(EMPTY_COUNT)[:, None]
                         / (scatter + self.precision_rate))
        return {"weights": weights, "locs": locs, "precision": 0.5 * (precision + precision.mT)
                if self.covariance == "full" else precision}

    def _kmeans_start(self, data, generator):
        """Greedy k-means++ seeding (2 + log K candidates per centre, the best kept)
        and Lloyd's iterations to convergence; returns hard responsibilities."""
        N, K = data.shape[0], self.n_components
        if K > N:
            raise DataError(f"n_components={K} is more than the {N} data points; use at most {N} components")
        # one global scale (the choices do not change) keeps squared distances of huge data finite
        data = data / data.abs().max().clamp_min(torch.finfo(data.dtype).tiny)
        candidates = 2 + int(math.log(K))
        first = torch.randint(N, (1,), generator=generator).to(data.device)
        centers = data[first]
        closest = torch.cdist(data, centers).pow(2).min(-1).values
        for _ in range(1, K):
            total = closest.sum()
            # every point sits on a centre already (repeated points): any point will do
            probs = (closest / total if total > 0 else torch.ones_like(closest)).cpu()
            picks = torch.multinomial(probs, candidates, replacement=True, generator=generator)
            dist_to_picks = torch.cdist(data, data[picks.to(data.device)]).pow(2)  # (N, C)
            potentials = torch.minimum(closest.unsqueeze(-1), dist_to_picks).sum(0)
            best = int(potentials.argmin())
            closest = torch.minimum(closest, dist_to_picks[:, best])
            centers = torch.cat([centers, data[picks[best].to(data.device)].unsqueeze(0)])
        labels = None
        for _ in range(100):
            new_labels = torch.cdist(data, centers).argmin(-1)
            if labels is not None and torch.equal(new_labels, labels):
                break
            labels = new_labels
            resp = torch.nn.functional.one_hot(labels, K).to(data.dtype)
            counts = resp.sum(0)
            centers = torch.where(counts[:, None] > 0, (resp.T @ data) / counts.clamp_min(1)[:, None], centers)
        return torch.nn.functional.one_hot(labels, K).to(data.dtype)

    def initialize(self, data, generator=None):
        data = self.check_data(data)
        resp = self._kmeans_start(data, generator)
        self._set_start_precision(data)
        self.set_params(self._m_step(data, resp, None))

    def _set_start_precision(self, data):
        # The first mean update needs precisions; the pooled data precision is neutral.
        var = data.var(0) + 1e-6
        if self.covariance == "full":
            self._precision = torch.diag(1 / var).expand(self.n_components, -1, -1)
        else:
            self._precision = (1 / var).expand(self.n_components, -1)

    def fit_map(self, data, *, max_iter=1000, tol=1e-10, n_init=1, generator=None):
        """MAP estimate by ECM with ``n_init`` k-means++ restarts; keeps the best.

        Stops when the log posterior per datum changes by less than ``tol``.
        Sets the point parameters and returns a dict with the per-iteration
        negative log posterior of the best run (``loss``, nats), ``n_iter``,
        ``converged`` and ``seconds``.
        """
        start = time.perf_counter()
        data = self.check_data(data)
        priors = self._priors(validate=False)  # ECM's own iterates are valid by construction
        best = None
        for _ in range(n_init):
            resp = self._kmeans_start(data, generator)
            self._set_start_precision(data)
            params = self._m_step(data, resp, None)
            history = []
            converged = False
            for _ in range(max_iter):
                self._precision = params["precision"]
                joint = self.component_log_prob(data, {k: v.unsqueeze(0) for k, v in params.items()})[0]
                loglik = joint.logsumexp(-1, keepdim=True)
                objective = float(loglik.sum() + self.log_prior(params, priors))
                history.append(-objective)
                if len(history) > 1 and abs(history[-2] - history[-1]) < tol * data.shape[0]:
                    converged = True
                    break
                params = self._m_step(data, (joint - loglik).exp(), params["locs"])
            if best is None or history[-1] < best[1][-1]:
                best = (params, history, converged)
        del self._precision
        params, history, converged = best
        self.set_params(params)
        return {"loss": history, "n_iter": len(history), "converged": converged,
                "seconds": time.perf_counter() - start}

    @classmethod
    def example(cls, seed=0):
        gen = torch.Generator().manual_seed(seed)
        centers = torch.tensor([[-2.0, 0.0], [2.0, 1.0]])
        z = torch.randint(2, (120,), generator=gen)
        data = centers[z] + 0.6 * torch.randn(120, 2, generator=gen)
        return cls(2, 2, covariance="full", loc_scale=10.0), data
