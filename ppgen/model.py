"""The protocol every ppgen model implements.

A :class:`GenerativeModel` is a :class:`pyro.nn.PyroModule` with

``model(data=None, *, n=None, subsample_size=None)``
    the Pyro program for :math:`p(x, z)`. It observes ``data`` at the site named
    :attr:`observed_site` inside a ``pyro.plate`` named :attr:`data_plate`, and
    draws ``n`` new points when ``data`` is None. Discrete latents carry
    ``infer={"enumerate": "parallel"}``. ``subsample_size`` turns the data plate
    into a minibatch plate.
``guide``
    ``None`` when the family has no natural guide (the inference method builds
    an autoguide), else a Pyro program for :math:`q(z \\mid x)`.
``sample(n)``, ``log_prob(data)``
    new data and per-datum :math:`\\log p(x)` at the model's current point
    parameters; ``log_prob_kind`` says whether that is ``"exact"``, a
    ``"bound"`` or ``"none"``.
``log_likelihood(data, params)``
    per-datum :math:`\\log p(x_i \\mid \\theta_s)` for a batch of parameter
    draws, local latents summed out: what ArviZ's ``log_likelihood`` group and
    LOO need.

The *point parameters* are the model's current estimate of its global sites
(buffers in ``self.point``, so ``.to(device)`` and ``.double()`` move them and
``state_dict`` saves them). ``ppgen.fit`` writes its estimate back into them, the
way scikit-learn's ``fit`` sets attributes on the estimator.

Optional abilities are the protocols below (:class:`SolvesMAP`,
:class:`ExactPosterior`, :class:`EnergyBased`, :class:`AdversarialPair`,
:class:`OwnObjective`, :class:`TrainingState`, :class:`TracedOnFewRows`): a family
has one by defining its methods, and the inference methods check for it with
``isinstance``. Conditioning data (class labels, context vectors) are ``context=``
in every family's own methods (``sample``, ``log_prob``, ...) and reach every program,
guide and ``log_likelihood`` as the keyword ``condition`` (inside a Pyro program
``context`` is taken: Pyro's messengers reserve it).
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from pyro.nn import PyroModule

from .data import as_tensor
from .errors import ModelError


class PointParams(torch.nn.Module):
    """A bag of named buffers: the point estimate of a model's global sites."""

    def set(self, name, value):
        value = torch.as_tensor(value).detach()
        if name in self._buffers:
            current = self._buffers[name]
            value = value.to(device=current.device, dtype=current.dtype)
        self.register_buffer(name, value.clone())

    def as_dict(self):
        return dict(self._buffers)


class GenerativeModel(PyroModule):
    """Base class of ppgen's model families; see the module docstring."""

    #: ``"exact"``, ``"bound"`` or ``"none"``: what :meth:`log_prob` returns.
    log_prob_kind: ClassVar[str] = "exact"
    #: the inference methods the family supports (names of
    #: :data:`ppgen.inference.methods.METHODS`).
    methods: ClassVar[tuple[str, ...]] = ()
    #: the data are sequences (a table's rows are time steps), not independent rows.
    sequential: ClassVar[bool] = False
    #: the name of the site that observes the data.
    observed_site = "obs"
    #: the name of the plate over data points.
    data_plate = "data"
    #: families with a natural guide override this with a method.
    guide = None

    def __init__(self) -> None:
        super().__init__()
        self.point = PointParams()

    # ----------------------------------------------------------- to override
    def model(self, data=None, *, n=None, subsample_size=None):
        raise NotImplementedError(f"{type(self).__name__} must define model()")

    def log_likelihood(self, data, params, **kwargs):
        """Per-datum log-likelihood, shape ``(S, N)``, for ``S`` parameter draws.

        ``kwargs`` are the other keywords of :meth:`data_kwargs`, if any."""
        raise NotImplementedError(f"{type(self).__name__} must define log_likelihood()")

    def sample(self, n, params=None):
        """``n`` new data points at the point parameters (or at ``params``)."""
        raise NotImplementedError(f"{type(self).__name__} must define sample()")

    def get_config(self):
        """The constructor arguments, as plain JSON-able values (for ``save``)."""
        raise NotImplementedError(f"{type(self).__name__} must define get_config()")

    def initialize(self, data, generator=None, **kwargs):
        """Set the point parameters from data (a sensible start for optimisers)."""

    @classmethod
    def example(cls, seed=0):
        """A small instance and data set for tests and the demo: ``(model, data)``."""
        raise NotImplementedError(f"{cls.__name__} must define example()")

    # ----------------------------------------------------------- shared
    @property
    def dtype(self):
        for tensor in self.buffers():
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.get_default_dtype()

    @property
    def device(self):
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    def check_data(self, data, name="data"):
        """Return ``data`` as a checked tensor on the model's device and dtype."""
        return as_tensor(data, name, dtype=self.dtype, device=self.device)

    def data_kwargs(self, data, name="data"):
        """The keyword arguments of :meth:`model` that carry ``data``.

        ``{"data": checked tensor}`` by default; families whose data need more
        than one tensor (sequences with their lengths) return more keywords,
        and receive them back in :meth:`model`, :meth:`log_likelihood`,
        :meth:`initialize`, :meth:`replicate` and ``fit_map``. Every value's
        first dimension indexes data points.
        """
        return {"data": self.check_data(data, name)}

    def replicate(self, params, **kwargs):
        """One replicate of the observed data set at ``params`` (for predictive checks)."""
        return self.sample(kwargs["data"].shape[0], params=params)

    def point_params(self):
        """The current point estimate of every global site, by site name."""
        params = self.point.as_dict()
        if not params:
            raise ModelError(
                f"{type(self).__name__} has no point parameters yet: fit it, "
                "call initialize(data), or set_params(...)"
            )
        return params

    def set_params(self, params):
        """Set point parameters from a dict of site values (checked by name)."""
        known = set(self.global_sites())
        for name, value in params.items():
            if known and name not in known:
                raise ModelError(
                    f"set_params: unknown site {name!r}; "
                    f"{type(self).__name__} has {sorted(known)}"
                )
            self.point.set(name, value)

    def global_sites(self):
        """Names of the global (per-model, not per-datum) latent sites."""
        return tuple(self.point.as_dict())

    def arviz_dims(self) -> dict[str, list[str]]:
        """Dimension names by concept for ArviZ, ``{site: [name, ...]}`` after chain and draw:
        here the observed site's (``observation``, then ``feature``, or ``channel``, ``height``
        and ``width`` for images); each family adds its global sites' (``component``,
        ``state``, ...). A list longer than a site's rank is cut."""
        image = len(getattr(self, "event_shape", ())) == 3
        return {self.observed_site: ["observation", *(("channel", "height", "width") if image else ("feature",))]}

    def arviz_coords(self) -> dict[str, list]:
        """Coordinates for ArviZ by dimension name: ``feature`` (and ``feature_bis``, the second
        axis of a per-feature matrix) labelled by the columns of the DataFrame the model was
        last fitted to (``feature_names_in_``, as scikit-learn names it)."""
        names = getattr(self, "feature_names_in_", None)
        return {"feature": list(names), "feature_bis": list(names)} if names is not None else {}

    def log_prob(self, data):
        """Per-datum :math:`\\log p(x_i)` in nats at the point parameters."""
        kwargs = self.data_kwargs(data)
        params = {k: v.unsqueeze(0) for k, v in self.point_params().items()}
        return self.log_likelihood(params=params, **kwargs)[0]

    def score(self, data):
        """Mean log-likelihood per datum in nats (scikit-learn's ``score``)."""
        return float(self.log_prob(data).mean())

    def supports(self, method_name: str) -> bool:
        """Whether the family supports the inference method called ``method_name``."""
        return method_name in self.methods

    def extra_repr(self):
        try:
            return ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        except NotImplementedError:
            return ""


# ------------------------------------------------------------ optional abilities
@runtime_checkable
class SolvesMAP(Protocol):
    """A family with its own MAP solver (EM, or a closed form), which ``MAP()`` runs.

    ``fit_map`` sets the point parameters and returns at least ``{"loss": [...],
    "seconds": float}``; ``kwargs`` are the other keywords of ``data_kwargs``. ``n_init``
    (restarts) has the family's own default, which ``MAP(n_init=None)`` keeps.
    """

    def fit_map(self, data: Any, *, max_iter: int, tol: float, n_init: int = ...,
                generator: torch.Generator | None, **kwargs: Any) -> dict[str, Any]: ...


@runtime_checkable
class ExactPosterior(Protocol):
    """A family whose posterior ``Exact()`` gives in closed form (conjugate models), or
    whose local latents it gives exactly at the point parameters (HMM states)."""

    def exact_posterior(self, data: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class EnergyBased(Protocol):
    """An energy-based model that ``ContrastiveDivergence`` trains.

    ``cd_step(v_data, v_start, k, generator)`` returns the CD estimate of the
    gradient of the mean negative log-likelihood, by parameter name, and the
    negative samples after ``k`` Gibbs sweeps; ``cd_monitor(v, generator)`` is a
    per-datum training loss, described by the class attribute ``cd_monitor_name`` where
    the family sets one.
    """

    def cd_step(self, v_data: torch.Tensor, v_start: torch.Tensor | None = None, k: int = 1,
                generator: torch.Generator | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]: ...

    def cd_monitor(self, v: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...


@runtime_checkable
class AdversarialPair(Protocol):
    """A generator and a discriminator that ``Adversarial`` trains against each other.

    ``generate(z)`` is the generator network (the one the Pyro program's ``x = G(z)``
    site calls) on codes ``z`` of ``latent_dim``; ``packed(x)`` groups samples into
    discriminator inputs of ``pack`` samples; ``critic(packed)`` gives one logit per
    input.
    """

    latent_dim: int
    pack: int

    def generate(self, z: torch.Tensor) -> torch.Tensor: ...

    def packed(self, x: torch.Tensor) -> torch.Tensor: ...

    def critic(self, packed: torch.Tensor) -> torch.Tensor: ...

    def generator_parameters(self) -> list[torch.nn.Parameter]: ...

    def discriminator_parameters(self) -> list[torch.nn.Parameter]: ...


@runtime_checkable
class OwnObjective(Protocol):
    """A family trained on an objective of its own rather than the ELBO (a diffusion
    model's noise-prediction loss); ``SVI`` uses it unless told an ``elbo``."""

    def training_objective(self, data: Any, **kwargs: Any) -> torch.Tensor: ...


@runtime_checkable
class TrainingState(Protocol):
    """Training state besides the parameters (a diffusion model's weight average):
    the training loop calls ``after_step()`` after every optimiser step and
    checkpoints ``training_state()``, which ``load_training_state`` restores."""

    def after_step(self) -> None: ...

    def training_state(self) -> dict[str, Any]: ...

    def load_training_state(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class TracedOnFewRows(Protocol):
    """A family whose trace costs much per datum (a diffusion model's reverse chain):
    ``analysis_kwargs`` picks the rows ``ppgen.fit`` traces to learn the sites."""

    def analysis_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]: ...
