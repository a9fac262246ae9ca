"""The ``ppgen`` command.

::

    ppgen models                       the registered model families and their methods
    ppgen datasets [NAME]              the embedded datasets (or one's source and licence)
    ppgen fit MODEL --data NAME_OR_CSV --method METHOD --out DIR [...]   (METHOD: see `ppgen fit -h`)
    torchrun --nproc-per-node N -m ppgen.cli fit ...   the same, data-parallel over N processes
    ppgen demo [--out DIR] [--quick]   every family, every method, one report folder

This module is the only place in ppgen that prints. Errors ppgen raises on
purpose (:class:`ppgen.errors.PpgenError`) become one line on stderr and exit
code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time

from .errors import DataError, DatasetError, PpgenError, did_you_mean

#: constructor arguments that take the number of data columns when not given
DATA_WIDTHS = ("dim", "data_dim", "n_visible")

#: ``ppgen fit``'s options that set a method's settings (which method takes which:
#: each method's ``options``), with their help.
METHOD_OPTIONS = {
    "num_steps": "optimisation steps",
    "num_epochs": "passes over the data",
    "num_samples": "posterior draws (guide draws for svi)",
    "warmup": "warm-up steps per chain",
    "chains": "chains",
    "batch_size": "minibatch size; the global batch when distributed",
    "checkpoint": "checkpoint file written and resumed from",
}


class UsageError(PpgenError, ValueError):
    """A command line that cannot be run as given."""


# --------------------------------------------------------------------- helpers
def _use_agg():
    """Plots are written to files: no window, no display needed."""
    import matplotlib

    matplotlib.use("Agg")


def _parse_value(text):
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    return text


def parse_params(items):
    """``["n_components=2", "covariance=diag"]`` -> ``{"n_components": 2, "covariance": "diag"}``.

    Values are read as int, then float, then ``true``/``false``/``none``, else kept as text.
    """
    params = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"--param {item!r}: expected key=value, e.g. --param n_components=2")
        params[key] = _parse_value(value.strip())
    return params


def load_table(spec, columns=None):
    """A DataFrame from an embedded dataset name or a CSV path (numeric columns)."""
    from . import datasets

    if spec.lower() in datasets.names():
        loaded = datasets.load(spec)
        if isinstance(loaded, dict):
            raise DatasetError(f"dataset {spec!r} is not a table (it holds {', '.join(loaded)}); "
                               "`ppgen fit` needs a table of numbers")
        if not hasattr(loaded, "columns"):  # an array, such as the digits' pixels
            import pandas as pd

            loaded = pd.DataFrame(loaded, columns=[f"x{i}" for i in range(loaded.shape[1])])
        return loaded if columns is None else datasets.select_columns(loaded, columns, spec)
    if os.path.exists(spec) or spec.lower().endswith(".csv") or os.sep in spec:
        return datasets.read_csv(spec, columns=columns)
    raise DatasetError(f"unknown dataset {spec!r}{did_you_mean(spec, datasets.names())}: not an embedded "
                       f"dataset ({', '.join(datasets.names())}) nor a CSV file")


def build_model(cls, params, n_columns):
    """``cls(**params)``, with the data's width (``dim``, ``data_dim`` or ``n_visible``, whichever
    the class takes) from the number of data columns when it is not given."""
    signature = inspect.signature(cls.__init__)
    accepted = {name: p for name, p in signature.parameters.items()
                if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        hints = "".join(did_you_mean(name, accepted) for name in unknown)
        raise UsageError(f"{cls.__name__} has no parameter(s) {', '.join(unknown)}{hints}; "
                         f"it takes {', '.join(accepted) or 'none'}")
    params = dict(params)
    for width in DATA_WIDTHS:
        if width in accepted and width not in params:
            params[width] = n_columns
    missing = [name for name, p in accepted.items() if p.default is p.empty and name not in params]
    if missing:
        raise UsageError(f"{cls.__name__} needs " + " ".join(f"--param {m}=..." for m in missing))
    try:
        return cls(**params)
    except TypeError as exc:
        raise UsageError(f"{cls.__name__}: {exc}") from None


def sequences_from_table(cls, frame, name, columns=None, sequence_column=None):
    """A table's rows as time steps of sequences, for a sequence family: ``(observed
    columns, data for fit, a sentence saying how the table was read)``.

    Rows with the same ``sequence_column`` value form one sequence, in row order (without
    it, the whole table is one sequence). The observations are ``columns``; without them,
    every other column, except that a column counting up in steps of one (a year, a time
    index) is read as the time index and left out. A family observing one value per step
    needs exactly one observed column."""
    if sequence_column is not None and sequence_column not in frame.columns:
        raise UsageError(f"--sequence-column {sequence_column}: no such column; the data have "
                         f"{', '.join(map(str, frame.columns))}")
    rest = [c for c in frame.columns if c != sequence_column]
    index_like = []
    if columns:
        chosen = [c.strip() for c in columns.split(",")]
        unknown = [c for c in chosen if c not in rest]
        if unknown:
            raise UsageError(f"--columns: {', '.join(unknown)} not among the data's columns "
                             f"({', '.join(map(str, rest))})")
    else:
        # (a sequence's first row has no step: NaN, dropped)
        steps = frame[rest].diff() if sequence_column is None else frame.groupby(sequence_column)[rest].diff()
        index_like = [c for c in rest if steps[c].notna().any() and bool((steps[c].dropna() == 1).all())]
        chosen = [c for c in rest if c not in index_like] or rest
        index_like = [c for c in index_like if c not in chosen]
    takes_width = any(w in inspect.signature(cls.__init__).parameters for w in DATA_WIDTHS)
    scalar = getattr(cls, "step_shape", ()) == () and not takes_width
    if scalar and len(chosen) != 1:
        raise UsageError(f"{cls.__name__} observes one value per time step; the data have columns "
                         f"{', '.join(map(str, chosen))}: pick one with --columns")
    groups = ([frame] if sequence_column is None else
              [group for _, group in frame.groupby(sequence_column, sort=False)])
    seqs = [group[chosen].to_numpy(dtype=float, copy=True) for group in groups]
    seqs = [s[:, 0] for s in seqs] if scalar else seqs
    how = (f"one sequence of {len(frame)} time steps (the rows in order)" if sequence_column is None else
           f"{len(seqs)} sequences, one per value of {sequence_column!r} (rows in order within each)")
    statement = (f"{cls.__name__} on {name}: {how}; observed: {', '.join(map(str, chosen))}"
                 + (f"; {', '.join(map(repr, index_like))} read as the time index" if index_like else "")
                 + " (choose with --columns and --sequence-column)")
    return frame[chosen], seqs, statement


def build_method(args):
    """The inference method object from ``fit``'s options."""
    from .inference import METHODS

    cls = METHODS[args.method]
    given = {option: getattr(args, option, None) for option in METHOD_OPTIONS}
    extra = [_flag(option) for option, value in given.items() if value is not None and option not in cls.options]
    if extra:
        raise UsageError(f"{', '.join(extra)} do(es) not apply to --method {args.method} "
                         f"(it takes {', '.join(map(_flag, cls.options)) or 'none'})")
    return cls(**{cls.options[option]: value for option, value in given.items() if value is not None})


def _flag(option):
    return "--" + option.replace("_", "-")


def _one_line(exc):
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# --------------------------------------------------------------------- commands
def cmd_models(args, out):
    from . import registry

    rows = registry.table()
    headers = {"model": "model", "methods": "methods", "log_prob": "log_prob", "summary": "summary"}
    widths = {k: max(len(h), *(len(str(r[k])) for r in rows)) for k, h in headers.items()}
    line = "  ".join(f"{headers[k]:<{widths[k]}}" for k in headers)
    print(line.rstrip(), file=out)
    print("  ".join("-" * widths[k] for k in headers), file=out)
    for row in rows:
        print("  ".join(f"{str(row[k]):<{widths[k]}}" for k in headers).rstrip(), file=out)
    return 0


def cmd_datasets(args, out):
    from . import datasets

    if args.name:
        print(datasets.describe(args.name), file=out)
        return 0
    for name in datasets.names():
        print(datasets.describe(name).splitlines()[0], file=out)
    print("\n`ppgen datasets NAME` shows a dataset's source and licence.", file=out)
    return 0


#: The files ``ppgen fit`` may write into ``--out``.
FIT_OUTPUTS = ("fit.pt", "posterior.nc", "summary.csv", "loss.png", "trace.png", "samples.png")


def check_output_folder(folder):
    """Check, before any fitting, that ``--out`` can take the fit's files: an existing
    folder (writable, no folder where a file goes) or one that can be created (the nearest
    existing parent a writable folder). A UsageError names what is in the way."""
    if os.path.exists(folder):
        if not os.path.isdir(folder):
            raise UsageError(f"--out {folder}: exists and is not a folder; name a folder (it is created)")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"--out {folder}: the folder is not writable")
        for name in FIT_OUTPUTS:
            if os.path.isdir(os.path.join(folder, name)):
                raise UsageError(f"--out {folder}: {name} there is a folder; the fit writes a file of that name")
        return
    parent = os.path.dirname(os.path.abspath(folder))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {folder}: cannot be created ({parent} is not a writable folder)")


def cmd_fit(args, out):
    _use_agg()
    import ppgen

    from . import diagnostics, registry
    from . import distributed as dist
    from .inference import MAP, Exact
    from .model import ExactPosterior
    from .report import point_log_likelihood, quiet

    cls = registry.model_class(args.model)
    check_output_folder(args.out)  # before the fit: a run's work is never lost to a bad --out
    if args.sequence_column and not cls.sequential:
        raise UsageError(f"--sequence-column: {cls.__name__} models independent rows, not sequences")
    frame = load_table(args.data, args.columns if not cls.sequential else None)
    if cls.sequential:
        frame, data, statement = sequences_from_table(cls, frame, args.data, args.columns, args.sequence_column)
        print(statement, file=out)
        model = build_model(cls, parse_params(args.param), frame.shape[1])
    else:
        model = build_model(cls, parse_params(args.param), frame.shape[1])
        data = frame.to_numpy(dtype=float, copy=True)
    method = build_method(args)
    progress = not args.no_progress
    # Under torchrun every process fits its shard; rank 0 alone writes the outputs and prints.
    multi = getattr(args, "distributed", False) or dist.is_launched()
    if multi and method.name == "exact":
        raise UsageError("--method exact runs in one process; start it without torchrun")
    start = time.perf_counter()
    try:
        if (isinstance(method, Exact) and model.supports("exact") and model.supports("map")
                and not isinstance(model, ExactPosterior)):
            # Continuous sites cannot be enumerated: fix them at a MAP estimate first.
            print(f"exact: fixing {cls.__name__}'s continuous sites at a MAP estimate first", file=out)
            map_fit = ppgen.fit(model, data, MAP(), seed=args.seed, progress=progress, distributed=multi)
            method = Exact(params=map_fit, num_samples=method.num_samples)
        fit = ppgen.fit(model, data, method, seed=args.seed, progress=progress, distributed=multi)
    except DataError as exc:
        if frame.shape[1] > 1 and "expected" in str(exc):
            raise DataError(f"{_one_line(exc)} (the data have columns {', '.join(frame.columns)}; "
                            "pick some with --columns)") from None
        raise
    seconds = time.perf_counter() - start
    if multi and not dist.is_main():
        return 0

    os.makedirs(args.out, exist_ok=True)
    written = []

    def path(name):
        written.append(os.path.join(args.out, name))
        return written[-1]

    fit.save(path("fit.pt"))  # first: whatever fails below, the trained fit is on disk
    summary = None
    try:
        with quiet():
            idata = fit.to_arviz()
            idata.to_netcdf(path("posterior.nc"))
            # a neural family's weights are a point estimate: no posterior to summarise
            summary = fit.summary() if fit.posterior else None
    except Exception as exc:  # noqa: BLE001 - the fit is saved; say what could not be summarised
        print(f"no posterior.nc/summary for this fit ({type(exc).__name__}: {_one_line(exc)}); "
              f"the fit is saved in {written[0]}", file=out)
    if summary is not None:
        summary.to_csv(path("summary.csv"))
    plots = []
    if fit.losses:
        plots.append(("loss.png", lambda: diagnostics.plot_loss(fit)))
    if method.name in ("nuts", "hmc"):
        sites = [s for s in model.global_sites() if s in fit.posterior] or None
        plots.append(("trace.png", lambda: diagnostics.plot_trace(fit, var_names=sites)))
    if not cls.sequential and (data.ndim == 2 and data.shape[1] <= 2 or data.ndim == 1):
        plots.append(("samples.png", lambda: diagnostics.plot_samples(
            fit.sample(min(2000, 2 * data.shape[0]), seed=args.seed), fit.data)))
    for name, make in plots:
        with quiet():
            diagnostics.save_figure(make(), path(name))

    shown = [s for s in model.global_sites() if s in fit.posterior]
    print(f"{cls.__name__} fitted by {method.name} on {args.data} "
          f"({frame.shape[0]} x {frame.shape[1]}: {', '.join(map(str, frame.columns))}) "
          f"in {seconds:.1f} s", file=out)
    density = point_log_likelihood(fit)
    print("log p(x) per datum at the point estimate: " + (f"{density:.4f} nats" if density is not None else
                                                          f"none ({cls.__name__} has no density)"), file=out)
    if fit.log_evidence is not None:
        print(f"log evidence: {fit.log_evidence:.4f} nats", file=out)
    rows = () if summary is None else \
        summary.loc[[i for i in summary.index if i.split("[")[0] in shown]] if shown else summary
    if 0 < len(rows) <= 40:
        import pandas as pd

        with pd.option_context("display.width", 120, "display.max_columns", 20):
            print(rows.to_string(float_format=lambda v: f"{v:.4g}"), file=out)
    print("wrote " + ", ".join(written), file=out)
    return 0


def cmd_demo(args, out):
    _use_agg()
    from .report import run_demo

    print(f"ppgen demo: fitting every model family ({'quick' if args.quick else 'full'} settings) "
          f"into {args.out}/", file=out)

    def on_fit(record):
        if record["status"] == "ok":
            loglik = record["loglik_point"]
            density = "no density" if loglik is None else f"log p(x)/datum {loglik:9.4f} nats"
            print(f"  {record['family']:<22} {record['method']:<6} {record['seconds']:7.2f} s   {density}",
                  file=out, flush=True)
        else:
            print(f"  {record['family']:<22} {record['method']:<6} {record['status']}", file=out,
                  flush=True)

    result = run_demo(args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress,
                      on_fit=on_fit, jobs=args.jobs)
    print(f"report: {result.report} ({result.seconds:.1f} s)", file=out)
    if result.problems:
        print(f"ppgen demo: {len(result.problems)} problem(s):", file=sys.stderr)
        for problem in result.problems:
            print(f"  {_one_line(problem)}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------- parser
def build_parser():
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="ppgen", description="Generative models as Pyro programs: fit, compare, report.")
    parser.add_argument("--version", action="version", version=f"ppgen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("models", help="list the registered model families and their methods")
    p.set_defaults(run=cmd_models)

    p = sub.add_parser("datasets", help="list the embedded datasets, or describe one")
    p.add_argument("name", nargs="?", help="a dataset to describe (source, columns, licence)")
    p.set_defaults(run=cmd_datasets)

    p = sub.add_parser(
        "fit", help="fit a registered model to a dataset or CSV file",
        description="Fit MODEL to data and write DIR/posterior.nc (ArviZ), DIR/summary.csv, "
                    "DIR/fit.pt (ppgen.load) and PNG plots. With --method exact, a model "
                    "without a closed-form posterior has its continuous sites fixed at a MAP "
                    "estimate first.")
    p.add_argument("model", metavar="MODEL", help="a registered family (see `ppgen models`)")
    p.add_argument("--data", required=True, metavar="NAME_OR_CSV",
                   help="an embedded dataset (see `ppgen datasets`) or a CSV file path")
    from .inference import METHODS

    p.add_argument("--method", required=True, choices=sorted(METHODS))
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a model constructor argument, e.g. --param n_components=2 (repeatable); "
                        f"{', '.join(DATA_WIDTHS)} default to the number of data columns")
    p.add_argument("--columns", metavar="A,B", help="the data columns to use (default: all numeric; for "
                   "sequence families, all but a time-index column)")
    p.add_argument("--sequence-column", metavar="COL",
                   help="sequence families: rows with the same COL value form one sequence (default: the "
                        "whole table is one sequence, rows in order)")
    for option, text in METHOD_OPTIONS.items():
        takers = ", ".join(name for name, cls in sorted(METHODS.items()) if option in cls.options)
        kind = {"type": int} if option != "checkpoint" else {"metavar": "FILE"}
        p.add_argument(_flag(option), **kind, help=f"{text} ({takers})")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over a torchrun process group (implied when launched by torchrun)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=cmd_fit)

    p = sub.add_parser(
        "demo", help="fit every family with each of its methods; write a report folder",
        description="Fit every registered family on embedded data with each method it "
                    "supports, compare the fits (PSIS-LOO), and write DIR/report.md with CSV "
                    "tables and PNG plots. Exit code 1 if any fit, plot or comparison failed.")
    p.add_argument("--out", default="ppgen-report", metavar="DIR",
                   help="report folder (default: ppgen-report)")
    p.add_argument("--quick", action="store_true", help="tiny settings: a smoke run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=_positive_int, default=None, metavar="N",
                   help="families fitted at once in worker processes (default: the CPUs available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=cmd_demo)
    return parser


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def main(argv=None):
    """Run the ``ppgen`` command; return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return args.run(args, sys.stdout)
    except PpgenError as exc:
        print(f"ppgen {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ppgen {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ppgen {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
