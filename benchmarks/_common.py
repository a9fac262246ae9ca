"""Shared helpers for the benchmark scripts: timing, the machine header, and
writing one section of ``benchmarks/RESULTS.md`` without touching the others."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
#: The shared datasets: ``$PPGEN_SHARED_DATA``, else ``../shared/data`` beside the project root.
SHARED_DATA = Path(os.environ.get("PPGEN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TITLE = ("# ppgen benchmarks\n\nLatest tables from the scripts in `benchmarks/`; "
         "each script replaces only its own section.\n")


def timed(fn, *args, **kwargs):
    """``(result, seconds)`` of one call, wall clock."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def median(values):
    return statistics.median(values)


def versions(*names):
    """``name version`` for each importable module, in order."""
    out = []
    for name in names:
        try:
            module = __import__(name)
            out.append(f"{name} {getattr(module, '__version__', '?')}")
        except ImportError:
            out.append(f"{name} (not installed)")
    return ", ".join(out)


def header(script_argv, modules, extra=()):
    """The lines that say when, where and how a table was made."""
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    lines = [
        f"- date: {datetime.date.today().isoformat()}",
        f"- machine: {platform.processor() or platform.machine()} ({platform.machine()}), "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}; "
        f"load average at start {load}",
        f"- python {platform.python_version()}; {versions(*modules)}",
        f"- command: `python {' '.join(script_argv)}`",
    ]
    lines += [f"- {line}" for line in extra]
    return "\n".join(lines)


def table(columns, rows):
    """A markdown table from column names and rows of already formatted cells."""
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def write_section(key, text, path=RESULTS):
    """Replace (or append) the section between ``<!-- key:start -->`` and
    ``<!-- key:end -->`` in RESULTS.md, leaving the other sections alone."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    current = path.read_text() if path.exists() else TITLE
    if start in current and end in current:
        before, rest = current.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        new = before + block + ("\n" + after if after else "")
    else:
        new = current.rstrip("\n") + "\n\n" + block
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)
    print(f"\n(wrote section '{key}' of {path})", file=sys.stderr)


def ess_rate(run):
    """ESS per second of a fresh-process run (``{"seconds", "ess"}``), or None where it
    stopped or failed."""
    return run["ess"] / run["seconds"] if run and "ess" in run else None


def run_cell(run, counts=False):
    """A table cell for a fresh-process run: ``seconds, ESS/s`` (with the ESS itself when
    ``counts``), or why there is no figure (``{"stopped": limit}``, ``{"error": text}``)."""
    if not run:
        return "-"
    if "stopped" in run:
        return f"> {run['stopped']:.0f} s (stopped)"
    if "error" in run:
        return f"failed: {run['error'][:60]}"
    if counts:
        return f"{run['seconds']:.1f} s, ESS {run['ess']:.0f}, {ess_rate(run):.1f}/s"
    return f"{run['seconds']:.1f}, {ess_rate(run):.1f}"
