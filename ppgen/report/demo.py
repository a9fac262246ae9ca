"""The demo report: every registered family, fitted with each of its methods, side by side.

:func:`run_demo` is what ``ppgen demo`` runs. For each family it fits a fresh
model on embedded data with every method the family supports (small settings),
compares the fits that have real posterior
draws by PSIS-LOO (:func:`ppgen.diagnostics.compare`), and writes a folder::

    report.md                 the tables below, as markdown, with the plots inline
    tables/fits.csv           one row per fit: time, log-likelihood per datum, ...
    tables/<family>_compare.csv     the LOO comparison of a family's fits
    tables/families_compare.csv     an HMM, a mixture and a flow on one data set
    tables/<family>_<method>_summary.csv   ArviZ's summary of each fit
    plots/<family>_<method>_{loss,trace,samples,ppc}.png

Families are independent, so they run in ``jobs`` worker processes (spawned,
one torch thread each); the report lists them in name order whatever order
they finish in. Library code never prints: progress goes to tqdm bars
(``progress=True``, in-process runs only), to the ``ppgen`` logger, and to the
``on_fit`` callback the CLI uses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed

import torch

from .. import registry
from ..inference import fit as ppgen_fit
from .markdown import header, markdown_table, section
from .recipes import SETTINGS, example_recipe, method_for, recipes

log = logging.getLogger("ppgen")

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
    """Mean :math:`\\log p(x_i \\mid \\hat\\theta)` over the training data, nats per datum
    (None for a model without a density)."""
    model = fit.program.generative
    if model.log_prob_kind == "none":
        return None
    point = {k: v.detach().unsqueeze(0).to(model.dtype) for k, v in point_estimate(fit).items()}
    kwargs = {k: v for k, v in fit.program.kwargs.items() if k != "subsample_size"}
    with torch.no_grad():
        return float(model.log_likelihood(params=point, **kwargs)[0].mean())


def _fit_record(recipe, name, fit, seconds):
    data = fit.data
    n = data.shape[0]
    loglik_point = point_log_likelihood(fit)
    lppd = None
    if not fit.posterior:  # a point estimate (neural weights): one "draw", the same number
        lppd = loglik_point
    elif fit.program.generative.log_prob_kind != "none":
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


# --------------------------------------------------------------------- the demo
def default_jobs():
    """Worker processes for the demo: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_demo(out, quick=False, seed=0, progress=True, on_fit=None, families=None, jobs=None):
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
        Show tqdm progress bars while fitting (in-process runs, ``jobs=1``).
    on_fit : callable, optional
        Called with each fit's record (a dict) when its family is done.
    families : list of str, optional
        Only these registered families (default all).
    jobs : int, optional
        Families fitted at once in worker processes (default: the CPUs
        available); 1 runs everything in this process.

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
    names = sorted(registry.families())
    if families is not None:
        wanted = {registry.model_class(f).__name__ for f in families}
        names = [n for n in names if n in wanted]
    jobs = min(jobs or default_jobs(), len(names)) or 1
    results = {}

    def collect(family, result):
        results[family] = result
        if on_fit is not None:
            for record in result[0]:
                on_fit(record)

    if jobs == 1:
        for family in names:
            collect(family, run_family(family, out, quick, seed, progress))
    else:
        # Spawned workers: a fresh interpreter each, safe with torch's thread pools.
        os.environ.setdefault("MPLBACKEND", "Agg")
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {pool.submit(run_family, family, out, quick, seed, False): family for family in names}
            for future in as_completed(futures):
                family = futures[future]
                try:
                    collect(family, future.result())
                except Exception as exc:  # a worker that died: report it and carry on
                    record = {"family": family, "method": "-", "status": f"failed: {type(exc).__name__}: {exc}"}
                    collect(family, ([record], [f"{family}: {type(exc).__name__}: {exc}"], f"## {family}\n\nFailed."))
    records = [r for name in names for r in results[name][0]]
    problems = [p for name in names for p in results[name][1]]
    across = families_compared(out, quick, seed, problems) if families is None else ""
    seconds = time.perf_counter() - started
    _write_fits_csv(records, os.path.join(out, "tables", "fits.csv"))
    report = os.path.join(out, "report.md")
    with open(report, "w", encoding="utf-8") as handle:
        handle.write(header(settings, quick, seed, seconds, records, problems, jobs))
        handle.write("\n\n".join([results[name][2] for name in names] + ([across] if across else [])))
        handle.write("\n")
    return DemoResult(out=out, report=report, records=records, problems=problems, seconds=seconds)


def run_family(family, out, quick, seed, progress):
    """Fit one family with each of its methods: ``(records, problems, markdown section)``.

    Runs in a worker process; everything it returns is plain data.
    """
    from .. import diagnostics

    torch.set_num_threads(1)
    settings = SETTINGS["quick" if quick else "full"]
    cls = registry.families()[family]
    recipe = recipes().get(family) or example_recipe(family, cls, seed)
    fits, rows, plots, problems = {}, [], [], []
    for method_name in recipe.methods:
        if method_name not in cls.methods:
            continue
        label = f"{family}/{method_name}"
        try:
            # Per-family overrides shorten the full demo; --quick is short already.
            overrides = {k: v for k, v in recipe.settings.items() if not quick or k not in SETTINGS["quick"]}
            exact_at_map = "params" in inspect.signature(getattr(cls, "exact_posterior", lambda params: 0)).parameters
            method = method_for(method_name, {**settings, **overrides, "exact_at_map": exact_at_map}, fits)
            start = time.perf_counter()
            fit = ppgen_fit(recipe.make_model(), recipe.data, method, seed=seed, progress=progress)
            seconds = time.perf_counter() - start
            record = _fit_record(recipe, method_name, fit, seconds)
            if recipe.quality is not None:
                record.update(recipe.quality(fit))
        except Exception as exc:  # a demo reports every failure and carries on
            log.debug("demo: %s failed", label, exc_info=True)
            record = {"family": family, "method": method_name,
                      "status": f"failed: {type(exc).__name__}: {exc}"}
            problems.append(f"{label}: {type(exc).__name__}: {exc}")
            rows.append(record)
            continue
        fits[method_name] = fit
        stem = f"{family}_{method_name}"
        if fit.posterior:
            try:
                with quiet():
                    summary = diagnostics.summary(fit, var_names=_global_sites(fit) or None)
                summary.to_csv(os.path.join(out, "tables", f"{stem}_summary.csv"))
                if method_name in ("nuts", "hmc"):
                    record["max_rhat"] = float(summary["r_hat"].max())
                    record["min_ess_bulk"] = float(summary["ess_bulk"].min())
            except Exception as exc:
                problems.append(f"{label} summary: {type(exc).__name__}: {exc}")
        plots.extend(_plots(diagnostics, fit, method_name, out, stem, label, problems, settings["plots"]))
        rows.append(record)
    comparison = _compare(diagnostics, family, fits, out, problems)
    return rows, problems, section(recipe, cls, rows, comparison, plots)


def _plots(diagnostics, fit, method_name, out, stem, label, problems, kinds):
    """Save this fit's plots; return ``[(caption, relative path)]``."""
    jobs = []
    if fit.losses:
        jobs.append(("loss", "training loss", lambda: diagnostics.plot_loss(fit)))
    if method_name in ("nuts", "hmc"):
        jobs.append(("trace", "trace", lambda: diagnostics.plot_trace(fit, var_names=_global_sites(fit) or None)))
    if _looks_like_images(fit.data):
        jobs.append(("samples", "samples",
                     lambda: diagnostics.image_grid(fit.sample(36), nrow=6, title="samples")))
    else:
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


def _looks_like_images(data):
    """Batches of square pictures: ``(N, C, H, H)`` or flat ``(N, H*H)`` with ``H >= 4``."""
    if not isinstance(data, torch.Tensor):
        return False
    if data.dim() == 4:
        return data.shape[-1] == data.shape[-2]
    side = int(round(data.shape[-1] ** 0.5)) if data.dim() == 2 else 0
    return side >= 4 and side * side == data.shape[-1]


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


def families_compared(out, quick, seed, problems):
    """A Gaussian HMM, a Gaussian mixture and a RealNVP flow fitted (MAP) to the same short
    sequences (:func:`~ppgen.datasets.sticky_sequences`; the mixture and the flow see each
    as one vector) and compared by K-fold cross-validation: a markdown section, the table
    in ``tables/families_compare.csv``."""
    import torch

    import ppgen
    from ppgen.datasets import sticky_sequences
    from ppgen.inference import MAP
    from ppgen.models import GaussianHMM, GaussianMixture, RealNVP

    from .. import diagnostics

    data = sticky_sequences(60 if quick else 150, generator=torch.Generator().manual_seed(seed))
    flat = data.reshape(len(data), -1)
    try:
        with quiet():
            fits = {"GaussianHMM(2, 2)": ppgen.fit(GaussianHMM(2, 2), data, MAP(), seed=seed, progress=False),
                    "GaussianMixture(2, 8)": ppgen.fit(GaussianMixture(2, 8), flat, MAP(), seed=seed, progress=False),
                    "RealNVP(8)": ppgen.fit(RealNVP(8), flat, MAP(num_steps=100 if quick else 500, lr=3e-3),
                                            seed=seed, progress=False)}
            table = diagnostics.compare(fits, folds=3 if quick else 5, seed=seed)
    except Exception as exc:
        problems.append(f"families compared: {type(exc).__name__}: {exc}")
        return f"## Families compared on one data set\n\nFailed: {type(exc).__name__}: {exc}"
    table.index.name = "model"
    table.to_csv(os.path.join(out, "tables", "families_compare.csv"))
    return ("## Families compared on one data set\n\n"
            f"{len(data)} sequences of 4 steps from a sticky two-state HMM; the mixture and the flow see each "
            "as a vector of 8. All three are MAP point estimates, which PSIS-LOO cannot score: each row is "
            "cross-validated (`estimator`), its standard error from the per-sequence values.\n\n"
            + markdown_table(table[["elpd", "se", "elpd_diff", "dse", "estimator"]]))


def _write_fits_csv(records, path):
    import pandas as pd

    pd.DataFrame(records).to_csv(path, index=False)


