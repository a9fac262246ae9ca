"""What is being fit: a ``GenerativeModel`` or a plain Pyro program, made uniform.

A :class:`Program` holds the model callable, its keyword arguments (the data),
an optional guide, and what one trace of the model tells: the latent sites
(continuous and discrete), the observed sites, and the plate nesting depth that
enumeration needs. The inference modules only ever see a ``Program``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import config_enumerate
from pyro.infer.autoguide.initialization import InitMessenger
from torch.distributions import biject_to

from ..errors import MethodError, ModelError
from ..model import GenerativeModel, TracedOnFewRows


def init_to_unconstrained_uniform(site):
    """A point of the site's support without drawing from its distribution:
    :math:`T(u)`, :math:`u \\sim U(-2, 2)` on the unconstrained space, :math:`T` the
    support's bijection (Pyro's ``init_to_uniform`` rule, which needs a draw for the
    shape and so fails on ``ImproperUniform``)."""
    fn = site["fn"]
    transform = biject_to(fn.support)
    return transform(4 * torch.rand(transform.inverse_shape(fn.shape())) - 2)


def _prior_draw_or_feasible(site):
    """A draw from the site's distribution, or (for one that cannot be drawn, an improper
    flat density) :func:`init_to_unconstrained_uniform`."""
    try:
        return site["fn"](*site["args"], **site["kwargs"])
    except NotImplementedError:
        return init_to_unconstrained_uniform(site)


def _observed_entries(mask, batch_shape):
    """The flat indices of the entries a site's ``mask`` observes; None for all of them."""
    if mask is None:
        return None
    mask = torch.as_tensor(mask, dtype=torch.bool).expand(batch_shape).reshape(-1)
    return None if bool(mask.all()) else mask.nonzero().squeeze(-1)


def plate_dims(site):
    """For each dimension of a traced site's value, the name of the plate that holds it, or
    None.

    A sample site's batch dimensions are the value's leading ``value.dim() - event_dim``;
    the one at position ``d`` from their right belongs to the plate with ``dim == d``. A
    ``pyro.deterministic`` value has no batch dimensions of its own (Pyro gives it the
    whole value as its event); it takes a plate's name where its shape lines up with the
    plates around it, as the same computation on a sample site's batch would.
    """
    value = site["value"]
    shape = tuple(getattr(value, "shape", ()))
    frames = [f for f in site["cond_indep_stack"] if f.vectorized and f.dim is not None]
    if site["infer"].get("_deterministic"):
        lined_up = frames and all(-f.dim <= len(shape) and shape[f.dim] == f.size for f in frames)
        batch = len(shape) if lined_up else 0
    else:
        batch = len(shape) - len(site["fn"].event_shape)
    names = [None] * len(shape)
    for frame in frames:
        position = batch + frame.dim
        if 0 <= position < batch and shape[position] == frame.size:
            names[position] = frame.name
    return tuple(names)


@dataclass
class SiteInfo:
    """One sample site as a trace of the model shows it.

    ``observed_entries``: for an observed site under a mask (``obs_mask``,
    ``poutine.mask``) that leaves some entries out, the flat indices (into its batch
    shape) of the entries it observes; None where it observes all.

    ``dims``: for each dimension of the site's value, the name of the plate that holds it,
    or None (an event dimension, or a batch dimension outside every plate); see
    :func:`plate_dims`.

    ``scale``: the site's ``poutine.scale`` factor (a number, or a tensor over its batch).

    ``missing_entries`` and ``filled``: for the latent half ``y_unobserved`` of a site
    ``y`` observed with ``obs_mask`` (elementwise, no event dimensions), the flat indices
    of the entries really missing, and ``y_observed``'s value (the data, whose observed
    entries stand in for the others, which have no density and no effect).
    """

    name: str
    shape: tuple
    discrete: bool
    support: object
    batch_shape: tuple = ()
    dims: tuple = ()
    scale: object = 1.0
    observed_entries: torch.Tensor | None = None
    missing_entries: torch.Tensor | None = None
    filled: torch.Tensor | None = None


@dataclass
class Program:
    model: object
    kwargs: dict
    guide: object = None
    generative: GenerativeModel = None
    latent: dict = field(default_factory=dict)
    observed: dict = field(default_factory=dict)
    deterministic: dict = field(default_factory=dict)
    model_params: dict = field(default_factory=dict)
    max_plate_nesting: int = 0
    plates: dict = field(default_factory=dict)

    @classmethod
    def build(cls, model, kwargs, guide=None, generative=None, at=None):
        program = cls(model=model, kwargs=kwargs, guide=guide, generative=generative)
        program.analyse(at)
        return program

    def analyse(self, at=None):
        """Trace the model once (at the site values ``at``, if given, rather than
        at prior draws, which can be degenerate for vague priors)."""
        model = poutine.condition(self.model, data=at) if at else self.model
        # Prior draws, or a feasible point where a site cannot be drawn (ImproperUniform),
        # as Pyro's initialize_model does.
        model = InitMessenger(_prior_draw_or_feasible)(model)
        # ppgen models check their data themselves; argument validation of every
        # per-datum distribution would dominate this one trace on large data.
        validate = self.generative is None
        kwargs = self.kwargs
        if isinstance(self.generative, TracedOnFewRows):
            # A family whose trace costs much per datum (a diffusion model's reverse chain)
            # names the few rows that show its sites; their shapes then have those rows.
            kwargs = self.generative.analysis_kwargs(kwargs)
        try:
            with pyro.poutine.block(), torch.no_grad(), pyro.validation_enabled(validate):
                trace = poutine.trace(model).get_trace(**kwargs)
        except (TypeError, ValueError, RuntimeError, IndexError, KeyError) as exc:
            raise ModelError(f"running the model with the given data failed: {type(exc).__name__}: {exc}") from exc
        nesting = 0
        for site in trace.nodes.values():
            if site["type"] == "param" and self.generative is None:
                # A plain program's own unknowns as pyro.param: point-estimated by SVI/MAP.
                self.model_params[site["name"]] = tuple(site["value"].shape)
            if site["type"] != "sample":
                continue
            for frame in site["cond_indep_stack"]:
                if frame.vectorized and frame.dim is not None:
                    nesting = max(nesting, -frame.dim)
                    self.plates.setdefault(frame.name, frame.full_size or frame.size)
            if getattr(site["fn"], "__class__", None).__name__ == "_Subsample":
                continue
            support = site["fn"].support
            discrete = bool(getattr(support, "is_discrete", False))
            info = SiteInfo(site["name"], tuple(site["value"].shape), discrete, support,
                            tuple(site["fn"].batch_shape), plate_dims(site), site["scale"])
            if site["infer"].get("_deterministic"):
                self.deterministic[site["name"]] = info
            elif site["is_observed"] and not (at and site["name"] in at):
                info.observed_entries = _observed_entries(site["mask"], info.batch_shape)
                self.observed[site["name"]] = info
            else:
                self.latent[site["name"]] = info
        self.max_plate_nesting = nesting
        self._find_imputed(trace)

    def _find_imputed(self, trace):
        """Mark the latent halves of ``obs_mask`` sites (see :class:`SiteInfo`)."""
        for name, info in self.latent.items():
            base = name.removesuffix("_unobserved")
            observed = trace.nodes.get(f"{base}_observed")
            site = trace.nodes[name]
            if (base == name or observed is None or not observed["is_observed"] or site["mask"] is None
                    or info.discrete or site["fn"].event_dim or info.shape != info.batch_shape):
                continue
            missing = torch.as_tensor(site["mask"], dtype=torch.bool).expand(info.batch_shape).reshape(-1)
            if not bool(missing.all()):
                info.missing_entries = missing.nonzero().squeeze(-1)
                info.filled = observed["value"].detach()

    # ------------------------------------------------------------ site groups
    @property
    def discrete_sites(self):
        return [s for s in self.latent.values() if s.discrete]

    @property
    def continuous_sites(self):
        return [s for s in self.latent.values() if not s.discrete]

    @property
    def scored_sites(self):
        """The observed sites with a pointwise log-likelihood: all but those masked out entirely."""
        return [n for n, s in self.observed.items() if s.observed_entries is None or s.observed_entries.numel()]

    @property
    def has_enumeration(self):
        return any(s.discrete for s in self.latent.values())

    def enumerated_model(self):
        """The model with every discrete latent marked for parallel enumeration.

        Sites a hand-written guide samples are left to the guide.
        """
        guided = self._guide_sites()
        for site in self.discrete_sites:
            if site.name not in guided and not getattr(site.support, "has_enumerate_support", True):
                raise MethodError(
                    f"discrete site {site.name!r} has no finite support to enumerate "
                    f"({site.support}); give it a guide or a finite distribution"
                )

        def enumerate_site(msg):
            if msg["name"] in guided or msg["is_observed"]:
                return {}
            return {"enumerate": "parallel"} if msg["fn"].has_enumerate_support else {}

        return config_enumerate(self.model, default="parallel") if not guided else \
            poutine.infer_config(self.model, enumerate_site)

    def _guide_sites(self):
        if self.guide is None:
            return set()
        with pyro.poutine.block(), torch.no_grad():
            trace = poutine.trace(self.guide).get_trace(**self.kwargs)
        return {n for n, s in trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]}

    def accepts(self, keyword):
        try:
            parameters = inspect.signature(self.model).parameters
        except (TypeError, ValueError):
            return False
        return keyword in parameters or any(p.kind == p.VAR_KEYWORD for p in parameters.values())

    def deterministic_draws(self, draws):
        """Values of the ``pyro.deterministic`` sites for each draw of the latents."""
        if not self.deterministic or not draws:
            return {}
        names = [s.name for s in self.continuous_sites if s.name in draws]
        num = next(iter(draws.values())).shape[0]
        out = {n: [] for n in self.deterministic}
        with torch.no_grad(), poutine.block():
            for i in range(num):
                model = poutine.condition(self.model, data={n: draws[n][i] for n in names})
                trace = poutine.trace(model).get_trace(**self.kwargs)
                for n in out:
                    out[n].append(trace.nodes[n]["value"])
        return {n: torch.stack(v) for n, v in out.items()}

    def with_params(self, model, values):
        """``model`` with its ``pyro.param`` sites taking ``values`` (those named there)."""
        params = {k: v for k, v in values.items() if k in self.model_params}
        return poutine.substitute(model, data=params) if params else model

    def with_kwargs(self, **extra):
        return {**self.kwargs, **extra}
