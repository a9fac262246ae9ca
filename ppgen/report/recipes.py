"""What the demo fits: for each family its data, a model factory, its methods and settings.

A family without a recipe here is fitted on its own ``example()`` data with
every method it supports, so a new family joins the demo as soon as it is
registered.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np
import torch

from .. import datasets, registry
from ..inference import MAP, NUTS, SVI, Adversarial, ContrastiveDivergence, Exact

#: Settings of the full demo and of ``--quick`` (for tests and smoke runs).
SETTINGS = {
    "full": {"svi_steps": 600, "map_steps": 600, "nuts_samples": 150, "nuts_warmup": 150,
             "chains": 1, "draws": 500, "jit": True,
             "plots": ("loss", "trace", "samples", "ppc")},
    "quick": {"svi_steps": 60, "map_steps": 60, "nuts_samples": 30, "nuts_warmup": 30,
              "chains": 1, "draws": 100, "jit": False, "plots": ("loss", "samples")},
}

#: The order in which a family's methods are run and shown.
METHOD_ORDER = ("map", "exact", "svi", "nuts", "hmc", "cd", "adversarial")


@dataclasses.dataclass
class Recipe:
    """How the demo fits one family: data, a model factory, and its methods."""

    family: str
    dataset: str  # a sentence for the report
    data: object  # what ppgen.fit takes
    make_model: Callable[[], object]
    methods: tuple
    note: str = ""
    settings: dict = dataclasses.field(default_factory=dict)  # overrides for this family
    quality: Callable | None = None  # fit -> {column: value}, sample-quality metrics


# --------------------------------------------------------------------- data
def _standardise(values):
    values = np.asarray(values, dtype=float)
    return (values - values.mean(0)) / values.std(0, ddof=1)


def _tensor(values):
    return torch.tensor(np.array(values), dtype=torch.get_default_dtype())  # a copy: pandas views are read-only


def faithful_standardised():
    """Old Faithful (272 x 2: eruptions, waiting), each column standardised."""
    return _tensor(_standardise(datasets.load("faithful").to_numpy()))


def geyser_lagged():
    """MASS geyser as 298 triples (previous duration, waiting, duration), standardised.

    The waiting time before an eruption follows the previous eruption's duration,
    so one latent factor explains much of the three columns.
    """
    frame = datasets.load("geyser")
    duration, waiting = frame["duration"].to_numpy(), frame["waiting"].to_numpy()
    table = np.column_stack([duration[:-1], waiting[1:], duration[1:]])
    return _tensor(_standardise(table))


def recipes():
    """The demo's recipe for each family it knows (others use ``cls.example``)."""
    families = registry.families()
    faithful = faithful_standardised()
    waiting = datasets.load("faithful")["waiting"].to_numpy()
    recipes = {}
    if "GaussianMixture" in families:
        cls = families["GaussianMixture"]
        recipes["GaussianMixture"] = Recipe(
            "GaussianMixture", "Old Faithful (272 eruptions x [eruptions, waiting]), standardised",
            faithful, functools.partial(cls, 2, 2, covariance="full"), ("map", "exact", "svi", "nuts"),
            note="Exact enumerates the assignments with the weights, means and precisions "
                 "fixed at the MAP estimate, so its draws vary only in the assignments and its "
                 "log evidence is log p(x | MAP parameters).")
    if "PPCA" in families:
        cls = families["PPCA"]
        recipes["PPCA"] = Recipe(
            "PPCA", "Old Faithful (272 x 2), standardised", faithful,
            functools.partial(cls, 1, 2), ("map", "svi", "nuts"))
    if "FactorAnalysis" in families:
        cls = families["FactorAnalysis"]
        recipes["FactorAnalysis"] = Recipe(
            "FactorAnalysis",
            "MASS geyser as 298 triples [previous duration, waiting, duration], standardised",
            geyser_lagged(), functools.partial(cls, 1, 3), ("map", "svi", "nuts"),
            note="One factor in two dimensions is not identified (4 parameters for 3 "
                 "covariances; NUTS stalls on the ridge), so factor analysis gets a "
                 "three-column table.")
    if "ConjugateNormal" in families:
        cls = families["ConjugateNormal"]
        recipes["ConjugateNormal"] = Recipe(
            "ConjugateNormal", "Old Faithful waiting times (272), standardised",
            _tensor(_standardise(waiting)), cls, ("exact", "map", "svi", "nuts"),
            note="Exact is the closed-form Normal-Inverse-Gamma posterior: the reference "
                 "the other methods should match.")
    if "BetaBernoulli" in families:
        cls = families["BetaBernoulli"]
        recipes["BetaBernoulli"] = Recipe(
            "BetaBernoulli", "Old Faithful: waiting > 70 min (272 indicators)",
            _tensor((waiting > 70).astype(float)), cls, ("exact", "svi", "nuts"),
            note="Exact is the closed-form Beta posterior.")
    hmm_settings = {"chains": 1, "svi_steps": 300, "nuts_samples": 80, "nuts_warmup": 80}
    for name in ("CategoricalHMM", "GaussianHMM", "PoissonHMM", "BernoulliHMM"):
        if name in families:
            cls = families[name]
            if name == "GaussianHMM":
                data, described = {"sequences": _tensor(_standardise(waiting))[:, None]}, \
                    "Old Faithful waiting times as one sequence (272 steps), standardised"
                make = functools.partial(cls, 2, 1)
            elif name == "PoissonHMM":
                counts = datasets.load("earthquakes")["count"].to_numpy()
                data, described = {"sequences": _tensor(counts)}, \
                    "yearly counts of major earthquakes 1900-2006 (one sequence, 107 steps)"
                make = functools.partial(cls, 2)
            else:
                data = cls.example(0)[1]
                described = f"{name}.example(seed=0): {data.lengths.numel()} sequences"
                make = functools.partial(lambda c: c.example(0)[0], cls)
            recipes[name] = Recipe(
                name, described, data, make, ("map", "exact", "svi", "nuts"),
                note="States summed out by the forward algorithm; Exact gives the smoothed state "
                     "posterior at the MAP parameters. NUTS with 80 + 80 draws to keep the demo short.",
                settings=hmm_settings)
    if "BayesianNetwork" in families:
        cls = families["BayesianNetwork"]
        _, rows = cls.example(0)
        recipes["BayesianNetwork"] = Recipe(
            "BayesianNetwork", "300 rows forward-sampled from the asia network (8 binary variables)",
            rows, lambda: cls.example(0)[0], ("map", "exact", "svi", "nuts"),
            note="CPT learning with Dirichlet(1) priors on every row: Exact is the conjugate "
                 "posterior; NUTS samples the 18 CPT rows (100 + 100 draws to keep the demo short).",
            settings={"svi_steps": 500, "nuts_samples": 100, "nuts_warmup": 100})
    recipes.update(deep_recipes(families))
    return recipes


def deep_recipes(families):
    """The neural families on the embedded 8x8 digits (and 2-D Old Faithful for flows)."""
    out = {}
    digits, labels = datasets.load("digits", return_labels=True)
    pixels = torch.as_tensor(digits, dtype=torch.get_default_dtype())
    binary = (pixels > 0.5).to(pixels.dtype)
    described = "the embedded 8x8 digits (1,797 images, pixels in [0, 1])"
    adam = {"lr": 3e-3, "batch_size": 128, "svi_steps": 400, "map_steps": 400}
    continuous = {"latent_dim": 4, "likelihood": "continuous_bernoulli"}
    mlp = {"hidden": (128, 64), **continuous}
    makers = {  # family: (constructor arguments, data, method)
        "VAE": ((64,), mlp, pixels, "svi"),
        "ConvVAE": (((1, 8, 8),), {"channels": (16, 32), **continuous}, pixels.reshape(-1, 1, 8, 8), "svi"),
        "ConditionalVAE": ((64,), {"num_classes": 10, **mlp}, (pixels, torch.as_tensor(labels)), "svi"),
        "Autoencoder": ((64,), mlp, pixels, "map"),
        "DenoisingAutoencoder": ((64,), mlp, pixels, "map"),
    }
    for name, (args, kwargs, data, method) in makers.items():
        if name in families:
            make = functools.partial(families[name], *args, **kwargs)
            out[name] = Recipe(name, described + (", with labels" if name == "ConditionalVAE" else ""), data, make,
                               (method,), settings=adam,
                               note="Continuous Bernoulli likelihood (a density on [0, 1]^64, so log p(x) can "
                                    "be positive); a VAE's log p(x) is the IWAE bound (k=100).")
    for name in ("BernoulliRBM", "GaussianBernoulliRBM"):
        if name in families:
            cls = families[name]
            bernoulli = name == "BernoulliRBM"
            out[name] = Recipe(
                name, described + (", binarized at 0.5" if bernoulli else ", standardised"),
                binary if bernoulli else (pixels - pixels.mean(0)) / pixels.std(0).clamp_min(0.1),
                functools.partial(cls, 64, 16), ("cd",),
                settings={"cd_epochs": 20, "batch_size": 32, "lr": 0.05},
                note="16 hidden units: log Z by exact enumeration of the hidden layer.")
    out.update(mixture_recipes(families))
    faithful = faithful_standardised()
    for name in ("RealNVP", "MAF", "NeuralSplineFlow"):
        if name in families:
            out[name] = Recipe(name, "Old Faithful (272 x 2), standardised", faithful,
                               functools.partial(families[name], 2), ("map",),
                               settings={"lr": 5e-3, "map_steps": 500},
                               note="Maximum likelihood by gradient ascent (MAP with no prior on the weights).")
    return out


def ring_quality(fit, n=2500):
    """PacGAN's metrics of ``n`` samples of a fit to the ring of 8: modes captured and the
    percentage of high-quality samples (within 3 sd of a centre)."""
    from ..diagnostics import mode_coverage

    centers, std = datasets.mixture_modes("ring")
    with torch.no_grad():
        samples = fit.sample(n, seed=fit.seed)
    coverage = mode_coverage(samples.reshape(n, -1), centers, std)
    return {"modes": f"{coverage.modes}/{coverage.num_modes}",
            "high_quality": round(100 * coverage.high_quality, 1)}


def mixture_recipes(families):
    """Implicit-density families on PacGAN's ring of 8 Gaussians (radius 1, sd 0.01)."""
    out = {}
    ring = datasets.ring(2000, generator=torch.Generator().manual_seed(0))
    described = "2,000 draws from the ring of 8 Gaussians (radius 1, sd 0.01; PacGAN's target)"
    if "DDPM" in families:
        out["DDPM"] = Recipe(
            "DDPM", described, ring,
            functools.partial(families["DDPM"], data_dim=2, timesteps=100, hidden=(128, 128, 128),
                              variance="posterior", data_scale=4.0),
            ("svi",), settings={"svi_steps": 3000, "lr": 2e-3, "batch_size": 256}, quality=ring_quality,
            note="Trained by the noise-prediction objective through SVI; the samples are ancestral "
                 "(100 steps). log p(x) is the variational bound, not the density.")
    if "GAN" in families:
        out["GAN"] = Recipe(
            "GAN", described, ring,
            functools.partial(families["GAN"], generator="mlp", discriminator="mlp", data_dim=2,
                              generator_hidden=(128, 128, 128), discriminator_hidden=(128, 128),
                              maxout_pieces=5, batch_norm=False, pack=2),
            ("adversarial",), settings={"map_steps": 3000, "lr": 1e-3, "batch_size": 64},
            quality=ring_quality,
            note="PacGAN2 (two samples per discriminator input), non-saturating loss. A GAN has no "
                 "density: it is judged by modes captured and high-quality samples.")
    return out


def example_recipe(name, cls, seed):
    """A family the demo has no recipe for: its own ``example()`` data and all its methods."""
    _, data = cls.example(seed)
    methods = tuple(m for m in METHOD_ORDER if m in cls.methods and m != "hmc")
    return Recipe(name, f"{name}.example(seed={seed}) ({tuple(data.shape)})", data,
                  lambda: cls.example(seed)[0], methods)  # called at once per fit


# --------------------------------------------------------------------- fitting
def method_for(name, settings, previous):
    optimiser = {k: settings[k] for k in ("lr", "batch_size") if k in settings}
    if name == "map":
        return MAP(num_steps=settings["map_steps"], **optimiser)
    if name == "svi":
        return SVI(num_steps=settings["svi_steps"], num_posterior_samples=settings["draws"], **optimiser)
    if name == "cd":
        return ContrastiveDivergence(num_epochs=settings.get("cd_epochs", 5), **optimiser)
    if name == "adversarial":
        lr = settings.get("lr", 2e-4)
        return Adversarial(num_steps=settings["map_steps"], batch_size=settings.get("batch_size", 64),
                           lr_generator=lr, lr_discriminator=lr)
    if name in ("nuts", "hmc"):
        return NUTS(num_samples=settings["nuts_samples"], warmup=settings["nuts_warmup"],
                    chains=settings["chains"], jit_compile=settings["jit"])
    if name == "exact":
        # A posterior conditional on the parameters (mixture assignments, HMM states) is taken at
        # the MAP fit's; a conjugate posterior over the parameters themselves takes none.
        params = previous.get("map") if settings.get("exact_at_map", True) else None
        return Exact(params=params, num_samples=settings["draws"])
    raise ValueError(f"unknown method {name!r}")


