"""The demo report: every registered family, fitted with each of its methods, side by side.

:func:`run_demo` is what ``ppgen demo`` runs. For each family it fits a fresh
model on embedded data with every method the family supports (small settings,
under two minutes on a 2-core CPU), compares the fits that have real posterior
draws by PSIS-LOO (:func:`ppgen.diagnostics.compare`), and writes a folder::

    report.md                 the tables below, as markdown, with the plots inline
    tables/fits.csv           one row per fit: time, log-likelihood per datum, ...
    tables/<family>_compare.csv     the LOO comparison of a family's fits
    tables/<family>_<method>_summary.csv   ArviZ's summary of each fit
    plots/<family>_<method>_{loss,trace,samples,ppc}.png

Library code never prints: progress goes to tqdm bars (``progress=True``), to
the ``ppgen`` logger, and to the ``on_fit`` callback the CLI uses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import platform
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from . import datasets
from .inference import MAP, NUTS, SVI, Exact
from .inference import fit as ppgen_fit
from .models import registry

log = logging.getLogger("ppgen")

#: Settings of the full demo and of ``--quick`` (for tests and smoke runs).
SETTINGS = {
    "full": {"svi_steps": 600, "map_steps": 600, "nuts_samples": 150, "nuts_warmup": 150,
             "chains": 1, "draws": 500, "jit": True,
             "plots": ("loss", "trace", "samples", "ppc")},
    "quick": {"svi_steps": 60, "map_steps": 60, "nuts_samples": 30, "nuts_warmup": 30,
              "chains": 1, "draws": 100, "jit": False, "plots": ("loss", "samples")},
}

#: The order in which a family's methods are run and shown.
METHOD_ORDER = ("map", "exact", "svi", "nuts", "hmc")


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


@dataclasses.dataclass
class DemoResult:
    """What :func:`run_demo` did: where it wrote, one record per fit, and the problems."""

    out: str
    report: str
    records: list
    problems: list
    seconds: float

    @property
    def ok(self):
        return not self.problems


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


def _recipes():
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
    return recipes


def _example_recipe(name, cls, seed):
    """A family the demo has no recipe for: its own ``example()`` data and all its methods."""
    _, data = cls.example(seed)
    methods = tuple(m for m in METHOD_ORDER if m in cls.methods and m != "hmc")
    return Recipe(name, f"{name}.example(seed={seed}) ({tuple(data.shape)})", data,
                  lambda: cls.example(seed)[0], methods)  # called at once per fit


# --------------------------------------------------------------------- fitting
def _method(name, settings, previous):
    if name == "map":
        return MAP(num_steps=settings["map_steps"])
    if name == "svi":
        return SVI(num_steps=settings["svi_steps"], num_posterior_samples=settings["draws"])
    if name in ("nuts", "hmc"):
        return NUTS(num_samples=settings["nuts_samples"], warmup=settings["nuts_warmup"],
                    chains=settings["chains"], jit_compile=settings["jit"])
    if name == "exact":
        return Exact(params=previous.get("map"), num_samples=settings["draws"])
    raise ValueError(f"unknown method {name!r}")


def _global_sites(fit):
    model = fit.program.generative
    names = model.global_sites() if model is not None else ()
    return [n for n in names if n in fit.posterior]


def has_posterior_draws(fit):
    """True when the fit's global sites vary across draws (not MAP, not fixed-parameter Exact)."""
    if fit.num_chains * fit.num_draws < 2:
        return False
    for name in _global_sites(fit) or list(fit.posterior):
        flat = fit.posterior[name].reshape(fit.num_chains * fit.num_draws, -1)
        if bool((flat != flat[:1]).any()):
            return True
    return False


def point_estimate(fit):
    """The fit's point estimate of the model's global sites (its params, else the draws' mean)."""
    out = {}
    for name in _global_sites(fit):
        if name in fit.params:
            out[name] = torch.as_tensor(fit.params[name])
        else:
            out[name] = fit.posterior[name].reshape((-1,) + fit.posterior[name].shape[2:]).float().mean(0)
    return out


def point_log_likelihood(fit):
    """Mean :math:`\\log p(x_i \\mid \\hat\\theta)` over the training data, nats per datum."""
    model = fit.program.generative
    point = {k: v.detach().unsqueeze(0).to(model.dtype) for k, v in point_estimate(fit).items()}
    kwargs = {k: v for k, v in fit.program.kwargs.items() if k != "subsample_size"}
    with torch.no_grad():
        return float(model.log_likelihood(params=point, **kwargs)[0].mean())


def _fit_record(recipe, name, fit, seconds):
    data = fit.data
    n = data.shape[0]
    loglik_point = point_log_likelihood(fit)
    with torch.no_grad():
        lppd = float(fit.log_prob(recipe.data).mean())
    record = {
        "family": recipe.family, "method": name, "status": "ok", "seconds": round(seconds, 2),
        "draws": fit.num_chains * fit.num_draws,
        "loglik_point": loglik_point, "lppd": lppd,
        "log_evidence": fit.log_evidence if fit.log_evidence is None else float(fit.log_evidence),
        "log_evidence_per_datum": None if fit.log_evidence is None else float(fit.log_evidence) / n,
        "divergences": None, "max_rhat": None, "min_ess_bulk": None,
    }
    if "diverging" in fit.sample_stats:
        record["divergences"] = int(fit.sample_stats["diverging"].sum())
    return record


@contextlib.contextmanager
def quiet():
    """ArviZ and numpy warn about one-draw fits and short chains; the report says it all."""
    import arviz

    # ArviZ 0.x logs through its own Logger("arviz") object, not logging.getLogger("arviz").
    loggers = {logging.getLogger("arviz"), getattr(arviz, "_log", None)} - {None}
    levels = {logger: logger.level for logger in loggers}
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in levels.items():
            logger.setLevel(level)


# --------------------------------------------------------------------- tables
def _fmt(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"
        return f"{value:.3e}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame, index=True):
    """A pandas DataFrame as a markdown pipe table (``tabulate`` when installed)."""
    try:
        import tabulate  # noqa: F401
    except ImportError:
        pass
    else:
        return frame.to_markdown(index=index, floatfmt=".4g")
    columns = ([frame.index.name or ""] if index else []) + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for key, row in frame.iterrows():
        cells = ([_fmt(key)] if index else []) + [_fmt(v) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


COLUMNS = {
    "method": "method", "status": "status", "seconds": "time (s)", "draws": "draws",
    "loglik_point": "log p(x) per datum at point estimate (nats)",
    "lppd": "posterior predictive log p(x) per datum (nats)",
    "log_evidence_per_datum": "log evidence per datum (nats)",
    "divergences": "divergences", "max_rhat": "max R-hat", "min_ess_bulk": "min bulk ESS",
}


# --------------------------------------------------------------------- the demo
def run_demo(out, quick=False, seed=0, progress=True, on_fit=None, families=None):
    """Fit every registered family with each of its methods and write a report folder.

    Parameters
    ----------
    out : str or os.PathLike
        The folder to write (created; files in it are overwritten).
    quick : bool
        Much smaller settings (:data:`SETTINGS` ``["quick"]``): a smoke run.
    seed : int
        Passed to every fit.
    progress : bool
        Show tqdm progress bars while fitting.
    on_fit : callable, optional
        Called with each fit's record (a dict) as soon as it is done.
    families : list of str, optional
        Only these registered families (default all).

    Returns
    -------
    DemoResult
        ``report`` is the path of ``report.md``; ``problems`` lists fits, plots or
        comparisons that failed (the report shows them too).
    """
    started = time.perf_counter()
    settings = SETTINGS["quick" if quick else "full"]
    out = os.fspath(out)
    os.makedirs(os.path.join(out, "tables"), exist_ok=True)
    os.makedirs(os.path.join(out, "plots"), exist_ok=True)
    from . import diagnostics

    known = _recipes()
    names = sorted(registry.families())
    if families is not None:
        wanted = {registry.model_class(f).__name__ for f in families}
        names = [n for n in names if n in wanted]
    records, problems, sections = [], [], []
    for family in names:
        cls = registry.families()[family]
        recipe = known.get(family) or _example_recipe(family, cls, seed)
        fits, rows, plots = {}, [], []
        for method_name in recipe.methods:
            if method_name not in cls.methods:
                continue
            label = f"{family}/{method_name}"
            try:
                # Per-family overrides shorten the full demo; --quick is short already.
                overrides = {} if quick else recipe.settings
                method = _method(method_name, {**settings, **overrides}, fits)
                start = time.perf_counter()
                fit = ppgen_fit(recipe.make_model(), recipe.data, method, seed=seed, progress=progress)
                seconds = time.perf_counter() - start
                record = _fit_record(recipe, method_name, fit, seconds)
            except Exception as exc:  # a demo reports every failure and carries on
                log.debug("demo: %s failed", label, exc_info=True)
                record = {"family": family, "method": method_name,
                          "status": f"failed: {type(exc).__name__}: {exc}"}
                problems.append(f"{label}: {type(exc).__name__}: {exc}")
                rows.append(record)
                records.append(record)
                if on_fit is not None:
                    on_fit(record)
                continue
            fits[method_name] = fit
            stem = f"{family}_{method_name}"
            try:
                with quiet():
                    summary = diagnostics.summary(fit, var_names=_global_sites(fit) or None)
                summary.to_csv(os.path.join(out, "tables", f"{stem}_summary.csv"))
                if method_name in ("nuts", "hmc"):
                    record["max_rhat"] = float(summary["r_hat"].max())
                    record["min_ess_bulk"] = float(summary["ess_bulk"].min())
            except Exception as exc:
                problems.append(f"{label} summary: {type(exc).__name__}: {exc}")
            plots.extend(_plots(diagnostics, fit, method_name, out, stem, label, problems,
                                settings["plots"]))
            rows.append(record)
            records.append(record)
            if on_fit is not None:
                on_fit(record)
        comparison = _compare(diagnostics, family, fits, out, problems)
        sections.append(_section(recipe, cls, rows, comparison, plots))
    seconds = time.perf_counter() - started
    _write_fits_csv(records, os.path.join(out, "tables", "fits.csv"))
    report = os.path.join(out, "report.md")
    with open(report, "w", encoding="utf-8") as handle:
        handle.write(_header(settings, quick, seed, seconds, records, problems))
        handle.write("\n\n".join(sections))
        handle.write("\n")
    return DemoResult(out=out, report=report, records=records, problems=problems, seconds=seconds)


def _plots(diagnostics, fit, method_name, out, stem, label, problems, kinds):
    """Save this fit's plots; return ``[(caption, relative path)]``."""
    jobs = []
    if fit.losses:
        jobs.append(("loss", "training loss", lambda: diagnostics.plot_loss(fit)))
    if method_name in ("nuts", "hmc"):
        jobs.append(("trace", "trace", lambda: diagnostics.plot_trace(fit, var_names=_global_sites(fit) or None)))
    jobs.append(("samples", "samples vs data",
                 lambda: diagnostics.plot_samples(fit.sample(min(1000, 2 * fit.data.shape[0])), fit.data)))
    if method_name in ("nuts", "hmc") or (method_name == "exact" and has_posterior_draws(fit)):
        jobs.append(("ppc", "posterior predictive check", lambda: diagnostics.plot_ppc(fit)))
    saved = []
    for kind, caption, make in [job for job in jobs if job[0] in kinds]:
        relative = f"plots/{stem}_{kind}.png"
        try:
            with quiet():
                diagnostics.save_figure(make(), os.path.join(out, relative))
            saved.append((f"{method_name}: {caption}", relative))
        except Exception as exc:
            log.debug("demo: %s %s plot failed", label, kind, exc_info=True)
            problems.append(f"{label} {kind} plot: {type(exc).__name__}: {exc}")
    return saved


def _compare(diagnostics, family, fits, out, problems):
    """LOO comparison of the fits with real posterior draws; a DataFrame, a reason, or None."""
    usable = {name: fit for name, fit in fits.items() if has_posterior_draws(fit)}
    if len(usable) < 2:
        return (f"Not compared: {len(usable)} fit(s) with posterior draws "
                "(MAP and fixed-parameter Exact fits have no posterior spread).")
    try:
        with quiet():
            table = diagnostics.compare(usable)
    except Exception as exc:
        problems.append(f"{family} compare: {type(exc).__name__}: {exc}")
        return f"Comparison failed: {type(exc).__name__}: {exc}"
    table.index.name = "method"
    table.to_csv(os.path.join(out, "tables", f"{family}_compare.csv"))
    return table


def _write_fits_csv(records, path):
    import pandas as pd

    pd.DataFrame(records).to_csv(path, index=False)


def _fits_table(rows):
    import pandas as pd

    frame = pd.DataFrame(rows)
    keep = [c for c in COLUMNS if c in frame.columns and (c in ("method", "status")
                                                          or frame[c].notna().any())]
    frame = frame[keep].rename(columns=COLUMNS)
    return frame


def _section(recipe, cls, rows, comparison, plots):
    lines = [f"## {recipe.family}", "",
             f"{(cls.__doc__ or '').strip().splitlines()[0]}", "",
             f"- data: {recipe.dataset}",
             f"- model: `{_model_repr(recipe)}`",
             f"- `log_prob` kind: {cls.log_prob_kind}"]
    if recipe.note:
        lines.append(f"- note: {recipe.note}")
    lines += ["", "### Fits", ""]
    lines.append(markdown_table(_fits_table(rows), index=False) if rows else "No fits.")
    lines += ["", "### Comparison (PSIS-LOO, `ppgen.diagnostics.compare`)", ""]
    lines.append(comparison if isinstance(comparison, str) else markdown_table(comparison))
    if plots:
        lines += ["", "### Plots", ""]
        lines += [f"![{caption}]({path})" for caption, path in plots]
    return "\n".join(lines)


def _model_repr(recipe):
    try:
        model = recipe.make_model()
        config = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v!r}"
                           for k, v in model.get_config().items())
        return f"{type(model).__name__}({config})"
    except Exception:  # only for the report's text
        return recipe.family


def _header(settings, quick, seed, seconds, records, problems):
    import arviz
    import pyro

    from . import __version__

    lines = [
        "# ppgen demo report", "",
        f"Every registered model family fitted on embedded data with each method it supports "
        f"({'quick' if quick else 'full'} settings), generated by `ppgen demo` in {seconds:.1f} s.", "",
        f"- versions: ppgen {__version__}, torch {torch.__version__}, pyro {pyro.__version__}, "
        f"arviz {arviz.__version__}, Python {platform.python_version()}",
        f"- settings: SVI {settings['svi_steps']} steps ({settings['draws']} guide draws), "
        f"MAP {settings['map_steps']} gradient steps (or the family's EM solver), "
        f"NUTS {settings['nuts_warmup']} warm-up + {settings['nuts_samples']} draws x "
        f"{settings['chains']} chain(s), Exact {settings['draws']} draws; seed {seed}",
        f"- fits: {sum(r['status'] == 'ok' for r in records)} of {len(records)} succeeded",
        "",
        "Columns: *log p(x) per datum at point estimate* is the mean of log p(x_i | theta-hat) "
        "(theta-hat: the MAP/guide median/posterior mean); *posterior predictive log p(x) per "
        "datum* is the mean over data of log (1/S) sum_s p(x_i | theta_s) over the fit's draws; "
        "both in nats, higher is better, on the training data. Models are compared by the "
        "expected log predictive density from PSIS-LOO (`elpd_loo`, nats, on the whole data set).",
        "",
    ]
    if problems:
        lines += ["## Problems", ""] + [f"- {p}" for p in problems] + [""]
    return "\n".join(lines) + "\n"
