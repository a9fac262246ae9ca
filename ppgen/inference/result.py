"""The ``Fit``: what ``ppgen.fit`` returns, and how it is saved and loaded.

A fit holds its posterior as draws (tensors shaped ``(chains, draws, ...)``;
SVI and MAP fits have one chain of draws from the fitted guide), so everything
downstream (ArviZ, predictive sampling, ``log_prob``) works the same for every
method. ``save`` writes tensors and JSON only; :func:`ppgen.inference.load` reads
them back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pyro.poutine as poutine
import torch

from ..data import as_kwargs
from ..errors import DataError
from .checkpoint import FORMAT, atomic_save
from .likelihood import pointwise_log_likelihood, pointwise_log_prior
from .prior import ReplicateObserved, prior_draws
from .program import Program

VERSION = 1

#: ``ppgen.fit``, set by :mod:`.api` when it loads (which imports this module: the fit
#: function cannot be imported here without a cycle); :meth:`Fit.refit` calls it.
FIT: Any = None


class Fit:
    """The result of :func:`ppgen.fit`.

    What every method gives is an attribute; what one method adds is in ``extras``
    (and read through the properties below).

    Attributes
    ----------
    model : GenerativeModel or callable
    method : the method object that produced it
    posterior : dict of tensors ``(chains, draws, *site_shape)``
    params : dict, the point estimate of the global sites
    losses : training losses per step (SVI/MAP, Adversarial: the generator's) or per
        epoch (ContrastiveDivergence), nats where they are log densities
    sample_stats : dict of ``(chains, draws)`` tensors (MCMC)
    timings : dict of seconds
    seed : int
    progress : bool, whether the fit showed progress bars (later computations on it follow)
    extras : dict of what the method adds: ``val_losses`` and ``guide`` (SVI, MAP),
        ``log_evidence``, ``marginals`` and ``map_assignment`` (Exact), ``path`` (NUTS, HMC),
        ``discriminator_losses`` (Adversarial)
    """

    def __init__(self, *, program: Program, method: Any, posterior: dict, params: dict | None = None,
                 losses: Any = (), sample_stats: dict | None = None, timings: dict | None = None,
                 seed: int = 0, extras: dict | None = None) -> None:
        self.program, self.method, self.posterior = program, method, posterior
        self.params = params or {}
        self.losses = list(losses)
        self.sample_stats = sample_stats or {}
        self.timings = timings or {}
        self.seed = seed
        self.extras = dict(extras or {})
        self.progress = True
        self._log_likelihood: dict | None = None
        self._log_prior: dict | None = None

    @property
    def val_losses(self) -> list:
        """Held-out losses ``[(step, loss)]`` (SVI/MAP with ``validation``)."""
        return list(self.extras.get("val_losses", []))

    @property
    def path(self) -> dict:
        """Which path ppgen's NUTS/HMC engine took: ``{"potential": "compiled" | "jit" |
        "vectorized" | "loop", "reason": why a faster potential was refused, "transitions":
        "c++" | "free-running" | "compiled lockstep" | "reference", "chains": "vectorized" |
        "parallel" | "sequential"}``; ``{}`` for other methods."""
        return dict(self.extras.get("path") or {})

    @property
    def guide(self) -> Any:
        """The fitted guide (SVI/MAP)."""
        return self.extras.get("guide")

    @property
    def log_evidence(self) -> float | None:
        """:math:`\\log p(x)` in nats (Exact)."""
        return self.extras.get("log_evidence")

    @property
    def marginals(self) -> dict:
        """Posterior marginal tables of the discrete sites (Exact)."""
        return self.extras.get("marginals") or {}

    @property
    def map_assignment(self) -> dict:
        """The joint MAP assignment of the discrete sites (Exact)."""
        return self.extras.get("map_assignment") or {}

    @property
    def model(self):
        return self.program.generative or self.program.model

    @property
    def data(self):
        kwargs = self.program.kwargs
        return kwargs["data"] if self.program.generative is not None else kwargs

    # A fit without draws (a neural family's weights are a point estimate, kept
    # in the model) counts as one chain of one draw: the fitted model itself.
    @property
    def num_chains(self):
        return next(iter(self.posterior.values())).shape[0] if self.posterior else 1

    @property
    def num_draws(self):
        return next(iter(self.posterior.values())).shape[1] if self.posterior else 1

    def __repr__(self):
        name = type(self.model).__name__ if self.program.generative is not None else \
            getattr(self.model, "__name__", "program")
        return (f"Fit({name}, method={type(self.method).__name__}, "
                f"chains={self.num_chains}, draws={self.num_draws})")

    def flat_posterior(self):
        """Draws with chains and draws merged into one leading dimension."""
        return {k: v.reshape((-1,) + v.shape[2:]) for k, v in self.posterior.items()}

    # ------------------------------------------------------------ likelihood
    def log_likelihood(self):
        """Pointwise log-likelihood ``{site: (chains, draws, *batch)}``, nats."""
        if self._log_likelihood is None:
            values = pointwise_log_likelihood(self.program, self.flat_posterior(), progress=self.progress)
            self._log_likelihood = self._by_chain(values)
        return self._log_likelihood

    def log_prior(self):
        """Each latent site's prior log density at each draw, ``{site: (chains, draws, *batch)}``,
        nats: :math:`\\log p(\\theta_j \\mid \\mathrm{pa}(\\theta_j))` on the site's own space
        (no Jacobian of an unconstrained parametrisation)."""
        if self._log_prior is None:
            values = pointwise_log_prior(self.program, self.flat_posterior(), progress=self.progress)
            self._log_prior = self._by_chain(values)
        return self._log_prior

    def log_joint(self):
        """The model's log density at each draw with the data, ``(chains, draws)``:
        :math:`\\log p(\\theta, y) = \\sum_j \\log p(\\theta_j \\mid \\mathrm{pa}) + \\sum_i s_i
        \\log p(y_i \\mid \\theta)`, discrete latents summed out, each datum's log-likelihood
        weighted by its site's ``poutine.scale`` :math:`s_i` (the density inference targets)."""
        total = torch.zeros(self.num_chains, self.num_draws, dtype=torch.float64)
        for value in self.log_prior().values():
            total += value.reshape(self.num_chains, self.num_draws, -1).double().sum(-1).cpu()
        for name, value in self.log_likelihood().items():
            info = self.program.observed.get(name)
            scale = torch.as_tensor(1.0 if info is None else info.scale, dtype=torch.float64)
            if scale.dim():
                scale = scale.expand(info.batch_shape).reshape(-1)
                if info.observed_entries is not None:
                    scale = scale[info.observed_entries]
            total += (scale.to(value.device) * value.reshape(self.num_chains, self.num_draws, -1).double()
                      ).sum(-1).cpu()
        return total

    def prior(self, num_draws=None, seed=None):
        """Draws of the program's prior and of data from it, one chain of ``num_draws``
        (default: the fit's draws per chain), seeded by the fit's seed:
        ``({latent or deterministic site: (1, num_draws, *shape)}, {observed site: ...})``."""
        num = self.num_draws if num_draws is None else num_draws
        if not (isinstance(num, int) and not isinstance(num, bool) and num > 0):
            raise DataError(f"prior: num_draws must be a positive integer, got {num_draws!r}")
        latent, data = prior_draws(self.program, num, self.seed if seed is None else seed, self.params)
        return ({k: v.unsqueeze(0) for k, v in latent.items()}, {k: v.unsqueeze(0) for k, v in data.items()})

    def _by_chain(self, values):
        return {k: v.reshape((self.num_chains, self.num_draws) + v.shape[1:]) for k, v in values.items()}

    def log_prob(self, x, chunk=256):
        """Posterior-predictive log density of new data, per datum, in nats:
        :math:`\\log \\frac1S \\sum_s p(x_i \\mid \\theta_s)`.

        ``x`` is data like the training data (a dict of keyword arguments for a
        plain program; then a dict of per-site tensors is returned).
        """
        flat = self.flat_posterior()
        total = self.num_chains * self.num_draws
        if self.program.generative is not None:
            model = self.program.generative
            program = Program(model=model.model, kwargs=model.data_kwargs(x, "x"), generative=model)
            parts = []
            for start in range(0, total, chunk):
                part = {k: v[start:start + chunk] for k, v in flat.items()}
                parts.append(pointwise_log_likelihood(program, part)[model.observed_site])
            return torch.cat(parts).logsumexp(0) - math.log(total)
        program = Program.build(self.program.model, as_kwargs(x))
        values = pointwise_log_likelihood(program, flat)
        return {k: v.logsumexp(0) - math.log(total) for k, v in values.items()}

    def refit(self, data: Any) -> Fit:
        """This fit's model family (a fresh instance with the same settings), method and seed,
        fitted to ``data`` (K-fold cross-validation refits on each fold this way)."""
        model = self.program.generative
        if model is None:
            raise DataError("refit: a plain Pyro program's data cannot be split for it; call "
                            "ppgen.fit(program, data, method) on the part you want")
        fresh = type(model)(**model.get_config())
        return FIT(fresh, data, self.method, seed=self.seed, progress=False, dtype=model.dtype)

    # ------------------------------------------------------------ prediction
    def _draw_indices(self, n, generator):
        total = self.num_chains * self.num_draws
        return torch.randint(total, (n,), generator=generator)

    def sample(self, n, seed=None):
        """``n`` posterior-predictive draws of new data.

        For a ``GenerativeModel``: ``n`` new points, each from a random posterior
        draw. For a plain program: ``{observed site: (n, *shape)}``, ``n``
        replicates of the observed data set.
        """
        if not (isinstance(n, int) and n > 0):
            raise DataError(f"n must be a positive integer, got {n!r}")
        generator = torch.Generator().manual_seed(self.seed if seed is None else seed)
        flat = self.flat_posterior()
        idx = self._draw_indices(n, generator)
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
        model = self.program.generative
        if model is not None:
            counts = torch.bincount(idx, minlength=self.num_chains * self.num_draws)
            chunks = []
            for draw in counts.nonzero().flatten().tolist():
                params = {k: v[draw] for k, v in flat.items() if k in model.global_sites()}
                chunks.append(model.sample(int(counts[draw]), params=params))
            out = torch.cat(chunks)
            return out[torch.randperm(n, generator=generator).to(out.device)]
        return self._replicate(idx)

    def _replicate(self, idx):
        flat = self.flat_posterior()
        names = [s.name for s in self.program.continuous_sites if s.name in flat]
        program = self.program
        model = ReplicateObserved()(program.model)
        out = {n: [] for n in program.observed}
        with torch.no_grad(), poutine.block():
            for i in idx.tolist():
                values = {k: v[i] for k, v in flat.items()}
                conditioned = program.with_params(poutine.condition(model, data={k: values[k] for k in names}),
                                                  values)
                trace = poutine.trace(conditioned).get_trace(**program.kwargs)
                for name in out:
                    out[name].append(trace.nodes[name]["value"])
        return {k: torch.stack(v) for k, v in out.items()}

    def posterior_predictive(self):
        """One replicate of the observed data per posterior draw:
        ``{observed site: (chains, draws, *shape)}``."""
        total = self.num_chains * self.num_draws
        idx = torch.arange(total)
        model = self.program.generative
        if model is not None:
            flat = self.flat_posterior()
            reps = []
            with torch.no_grad():
                for i in idx.tolist():
                    params = {k: v[i] for k, v in flat.items() if k in model.global_sites()}
                    reps.append(model.replicate(params, **self.program.kwargs))
            values = {model.observed_site: torch.stack(reps)}
        else:
            values = self._replicate(idx)
        return {k: v.reshape((self.num_chains, self.num_draws) + v.shape[1:]) for k, v in values.items()}

    # ------------------------------------------------------------ diagnostics
    def to_arviz(self, **kwargs):
        """ArviZ InferenceData; see :func:`ppgen.diagnostics.to_arviz`."""
        from ..diagnostics import to_arviz
        return to_arviz(self, **kwargs)

    def summary(self, **kwargs):
        """ArviZ's summary table of the posterior (a pandas DataFrame)."""
        from ..diagnostics import summary
        return summary(self, **kwargs)

    # ------------------------------------------------------------ persistence
    def save(self, path):
        """Write the fit to ``path`` atomically (tensors and JSON only)."""
        generative = self.program.generative
        meta = {
            "version": VERSION, "method": self.method.name, "method_config": self.method.config(),
            "model_class": type(generative).__name__ if generative is not None else None,
            "model_config": generative.get_config() if generative is not None else None,
            "feature_names_in": getattr(generative, "feature_names_in_", None),
            "program": None if generative is not None else getattr(self.program.model, "__name__", None),
            "losses": self.losses, "val_losses": self.val_losses, "timings": self.timings,
            "log_evidence": self.log_evidence, "seed": self.seed,
            "extras": {k: v for k, v in self.extras.items() if k not in SAVED_APART and _jsonable(v)},
            "data_extra": {k: v for k, v in self.program.kwargs.items()
                           if not isinstance(v, torch.Tensor) and _jsonable(v)},
        }
        tensors = lambda d: {k: v.detach().cpu() for k, v in d.items() if isinstance(v, torch.Tensor)}  # noqa: E731
        payload = {
            "format": FORMAT, "kind": "fit", "meta": json.dumps(meta),
            "model_state": tensors(generative.state_dict()) if generative is not None else {},
            "posterior": tensors(self.posterior), "params": tensors(self.params),
            "sample_stats": tensors(self.sample_stats), "marginals": tensors(self.marginals),
            "map_assignment": tensors(self.map_assignment),
            "data": tensors(self.program.kwargs),
        }
        atomic_save(payload, path)
        return path


#: extras saved under keys of their own (tensors, or for the log evidence an older key)
SAVED_APART = ("val_losses", "log_evidence", "marginals", "map_assignment")


def _jsonable(value):
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False
